#!/usr/bin/env bash
# Builds rust-signer/wasmtime-host (KEYCELL_ENGINE=wasmtime) with the machine's Rust toolchain,
# from crates.io at the versions its Cargo.lock pins, into rust-signer/target/wasmtime-host/.
# Cargo rebuilds only what changed: a built host costs a second, a cold build some minutes.
#
#   scripts/build-wasmtime-host.sh   build (or check it is up to date)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT/rust-signer/wasmtime-host"

# wasmtime 48 needs Rust 1.95 (the Cargo.toml's rust-version). Debian's own cargo (1.63, which the
# guest's reproducible build uses) is too old, and its rustc-web conflicts with that rustc: the host
# is built with rustup's toolchain, which the machine provides.
NEED=1.95
version=$(cargo --version 2>/dev/null | sed -E 's/^cargo ([0-9]+\.[0-9]+).*/\1/' || true)
if [[ -z $version ]] || [[ $(printf '%s\n%s\n' "$NEED" "$version" | sort -V | head -1) != "$NEED" ]]; then
  echo "build-wasmtime-host: needs cargo >= $NEED (rustup's stable toolchain); found ${version:-none} ($(command -v cargo || echo 'not on PATH'))" >&2
  exit 1
fi
if [[ ! -x ../target/wasmtime-host/release/keycell-wasmtime-host ]]; then
  echo "build-wasmtime-host: building the wasmtime host (a few minutes the first time) ..." >&2
fi
exec cargo build --release --locked --quiet
