#!/usr/bin/env bash
# schemathesis, at the version tools/schemathesis/requirements.txt pins (with hashes), in a
# git-ignored virtualenv beside it, for the property-based test of the API against /openapi.json.
#
#   scripts/schemathesis-env.sh path    makes or updates the virtualenv if needed, prints the
#                                       schemathesis command's path
set -euo pipefail

die() { echo "schemathesis-env: ERROR: $*" >&2; exit 1; }

DIR=$(cd "$(dirname "$0")/../tools/schemathesis" && pwd)
VENV=$DIR/.venv
REQUIREMENTS=$DIR/requirements.txt

case "${1:-}" in
  path)
    # The virtualenv is remade whenever the pinned requirements change.
    want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
    if [[ ! -x $VENV/bin/schemathesis || $(cat "$VENV/.requirements.sha256" 2>/dev/null) != "$want" ]]; then
      echo "schemathesis-env: installing schemathesis into $VENV" >&2
      # Debian's python3 makes virtualenvs only with python3-venv (ensurepip) installed.
      if ! python3 -c 'import ensurepip' 2>/dev/null; then
        [[ $(id -u) == 0 ]] || die "python3 with its venv module is needed, and installing it needs root"
        echo "schemathesis-env: installing python3-venv" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >&2 ||
          { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >&2; }
      fi
      rm -rf "$VENV"
      python3 -m venv "$VENV" >&2 || die "python3 -m venv failed"
      "$VENV/bin/pip" install --quiet --disable-pip-version-check --require-hashes --no-deps -r "$REQUIREMENTS" >&2 ||
        die "pip install failed"
      echo "$want" >"$VENV/.requirements.sha256"
    fi
    echo "$VENV/bin/schemathesis"
    ;;
  *) echo "usage: $0 path" >&2; exit 2 ;;
esac
