#!/usr/bin/env bash
# Headless Chromium for keycell's browser test of the API reference page (/docs), from Debian's
# package, so the test needs nothing downloaded by a test tool.
#
#   scripts/chromium-test.sh path    installs chromium if missing, prints the binary's path
set -euo pipefail

die() { echo "chromium-test: ERROR: $*" >&2; exit 1; }

BIN=/usr/bin/chromium

case "${1:-}" in
  path)
    if [[ ! -x $BIN ]]; then
      echo "chromium-test: installing chromium" >&2
      [[ $(id -u) == 0 ]] || die "chromium is not installed and installing it needs root"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2 ||
        { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2; }
    fi
    [[ -x $BIN ]] || die "no $BIN after installing chromium"
    echo "$BIN"
    ;;
  *) echo "usage: $0 path" >&2; exit 2 ;;
esac
