#!/usr/bin/env bash
# Installs the load generators the HTTP benchmark drives, when missing:
#   wrk (Debian package)  closed-loop saturation runs, with bench/sign.lua
#   vegeta (Go module)    open-loop runs at fixed request rates, into .cache/bin
#   time (Debian package) GNU time, for the load generators' own CPU per request
# A tool that cannot be installed is reported; the benchmark then marks its rows as not measured.
set -uo pipefail
cd "$(dirname "$0")/.."

VEGETA_MODULE=github.com/tsenart/vegeta/v12@v12.12.0

if ! command -v wrk >/dev/null 2>&1; then
  echo "bench: installing wrk (apt)" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get install -y wrk >/dev/null 2>&1 || { $sudo apt-get update >/dev/null 2>&1 && $sudo apt-get install -y wrk >/dev/null 2>&1; } ||
    echo "bench: could not install wrk" >&2
fi

if [ ! -x /usr/bin/time ]; then
  echo "bench: installing GNU time (apt)" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get install -y time >/dev/null 2>&1 || echo "bench: could not install GNU time" >&2
fi

if [ ! -x .cache/bin/vegeta ]; then
  go=$(command -v go || echo /usr/local/go/bin/go)
  if [ -x "$go" ]; then
    echo "bench: installing vegeta ($VEGETA_MODULE)" >&2
    mkdir -p .cache/bin
    GOBIN="$PWD/.cache/bin" GOFLAGS=-mod=mod "$go" install "$VEGETA_MODULE" >&2 || echo "bench: could not install vegeta" >&2
  else
    echo "bench: no Go toolchain, so no vegeta: fixed-rate rows will be skipped" >&2
  fi
fi
exit 0
