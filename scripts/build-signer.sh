#!/usr/bin/env bash
# Builds wasm/signer.wasm from pinned sources, byte for byte the same on any
# Debian 12 machine and from any checkout directory.
#
#   scripts/build-signer.sh           build and write wasm/signer.wasm(.sha256)
#   scripts/build-signer.sh --check   rebuild into a temp file; fail if it
#                                     differs from the committed module
#   scripts/build-signer.sh --wide [--check]
#                                     the same for wasm/signer-wide.wasm:
#                                     64-bit limbs whose 64x64->128 products
#                                     are wasm wide-arithmetic i64.mul_wide_u
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

MODE=build
VARIANT=narrow
for arg in "$@"; do
  case "$arg" in
    --check) MODE=check ;;
    --wide) VARIANT=wide ;;
    *) echo "usage: $0 [--wide] [--check]" >&2; exit 2 ;;
  esac
done

# BoringSSL as Debian ships it (Android 13.0.0+r24, upstream 1530333b). The
# .dsc hash pins the orig and debian tarballs through their listed checksums,
# which dpkg-source verifies on unpacking; they are checked here as well.
BSSL_PKG=android-platform-external-boringssl
BSSL_VERSION=13.0.0+r24-2
BSSL_DSC=${BSSL_PKG}_${BSSL_VERSION}.dsc
BSSL_DSC_SHA256=7da1c07f669b05f417cbf3e0a784a1a9d844ce138616e02b3a228fc20645ef37
BSSL_ORIG_SHA256=583b7aeee1fca68b8244d086cea6fca23bd19d517bd63f0b9de714e048f92a7d
BSSL_DEBIAN_SHA256=f82d14420e2f4153c5e8be888e95a311c6a592806b3a2c64d920a35400dfd038

# C is compiled with clang-19: its wasm32 code signs 10-12% faster than
# clang-14's for RSA and P-384, 4% for P-256 (per CPU-second, same run). The
# link stays with rustc 1.63's rust-lld, which is lld-14.
APT_PACKAGES=(rustc cargo libstd-rust-dev-wasm32 clang-19 llvm-19 lld-14 wasi-libc dpkg-dev)
CC=clang-19
AR=llvm-ar-19
OBJDUMP=llvm-objdump-19
WASI_SYSROOT=/usr/lib/wasm32-wasi
WASI_INCLUDE=/usr/include/wasm32-wasi
DENO=tools/deno/node_modules/.bin/deno

# The packages whose exact versions decide the module's bytes, recorded in
# wasm/toolchain.txt by a build and compared by --check, so a new Debian point
# release shows up as what it is rather than as a bare byte mismatch.
TOOLCHAIN_PACKAGES=(rustc libstd-rust-dev-wasm32 clang-19 llvm-19 lld-14 wasi-libc)

CACHE=.cache/boringssl
# Per variant: BoringSSL tree and objects (under $CACHE), native archives and
# cargo target directory (under rust-signer/), and the module.
if [[ $VARIANT == wide ]]; then
  SRC_NAME=src-wide OBJ_NAME=obj-wide NATIVE_NAME=kc-native-wide CARGO_TARGET=target/wide MODULE=signer-wide.wasm FLAGS=" --wide"
else
  SRC_NAME=src OBJ_NAME=obj NATIVE_NAME=kc-native CARGO_TARGET=target MODULE=signer.wasm FLAGS=""
fi
NATIVE=rust-signer/target/$NATIVE_NAME
EXPORTS=kc_load,kc_generate,kc_public_key,kc_sign,kc_drop,kc_list,kc_tag,kc_trap,kc_master_new,kc_master_load,kc_master_previous,kc_unseal,kc_reseal,kc_import,kc_stats,kc_verify
JOBS=${JOBS:-2}

# -D__TRUSTY__ removes /dev/urandom, sockets and threads; -DNDEBUG removes
# assert(), whose stderr path would import WASI fd_* functions. No -g: debug
# info would carry paths.
CFLAGS_COMMON=(--target=wasm32-wasi -nostdlibinc -isystem "$WASI_INCLUDE"
  -O3 -DNDEBUG -fvisibility=hidden -DOPENSSL_NO_ASM -D__TRUSTY__ -std=gnu11 -w)

toolchain() {
  local p
  for p in "${TOOLCHAIN_PACKAGES[@]}"; do dpkg-query -W -f='${Package} ${Version}\n' "$p"; done
}

log() { echo "build-signer: $*" >&2; }
die() { echo "build-signer: ERROR: $*" >&2; exit 1; }

ensure_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  if [[ ! -x $DENO ]]; then
    # Same pinned Deno that ./keycell installs.
    log "installing Deno (tools/deno/package-lock.json)"
    (cd tools/deno && npm ci --no-audit --no-fund --loglevel=error) >&2
  fi
}

ensure_deb_src() {
  if apt-cache showsrc "$BSSL_PKG" 2>/dev/null | grep -qx "Version: $BSSL_VERSION"; then
    return
  fi
  if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src ' /etc/apt/sources.list; then
    log "adding a deb-src entry for bookworm"
    cat >/etc/apt/sources.list.d/keycell-deb-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  apt-get update -qq
  apt-cache showsrc "$BSSL_PKG" 2>/dev/null | grep -qx "Version: $BSSL_VERSION" ||
    die "apt does not offer $BSSL_PKG $BSSL_VERSION"
}

check_sha256() { # file expected
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [[ $got == "$2" ]] || die "$1: sha256 $got, pinned $2"
}

fetch_boringssl() {
  local stamp="$CACHE/src/.keycell-unpacked-$BSSL_VERSION"
  [[ -f $stamp ]] && return
  mkdir -p "$CACHE"
  if [[ ! -f $CACHE/$BSSL_DSC ]]; then
    ensure_deb_src
    log "fetching $BSSL_PKG=$BSSL_VERSION"
    (cd "$CACHE" && apt-get source -qq --download-only "$BSSL_PKG=$BSSL_VERSION")
  fi
  check_sha256 "$CACHE/$BSSL_DSC" "$BSSL_DSC_SHA256"
  check_sha256 "$CACHE/${BSSL_PKG}_${BSSL_VERSION%-*}.orig.tar.xz" "$BSSL_ORIG_SHA256"
  check_sha256 "$CACHE/${BSSL_PKG}_${BSSL_VERSION}.debian.tar.xz" "$BSSL_DEBIAN_SHA256"
  rm -rf "$CACHE/src" "$CACHE/obj" "$CACHE/src-wide" "$CACHE/obj-wide"
  log "unpacking"
  (cd "$CACHE" && dpkg-source -q -x "$BSSL_DSC" src >/dev/null)
  touch "$stamp"
}

# The wide variant's tree: the same sources with one line of base.h changed,
# so that wasm32 gets BoringSSL's 64-bit limbs (BN_ULONG uint64_t, products
# through unsigned __int128, which clang lowers to calls to __multi3).
prepare_wide_source() {
  local stamp="$CACHE/src-wide/.keycell-wide-$BSSL_VERSION" base="$CACHE/src-wide/src/include/openssl/base.h"
  [[ -f $stamp ]] && return
  rm -rf "$CACHE/src-wide" "$CACHE/obj-wide"
  cp -a "$CACHE/src" "$CACHE/src-wide"
  sed -i '/^#elif defined(__wasm__)$/{n;s/^#define OPENSSL_32_BIT$/#define OPENSSL_64_BIT/}' "$base"
  grep -A1 -x '#elif defined(__wasm__)' "$base" | grep -qx '#define OPENSSL_64_BIT' ||
    die "base.h: the __wasm__ branch no longer reads as expected"
  touch "$stamp"
}

build_crypto() {
  local src="$CACHE/$SRC_NAME" obj="$CACHE/$OBJ_NAME" flags_id
  # Objects are reused only if they were built with these exact flags.
  flags_id=$(printf '%s\n' "$CC" "${CFLAGS_COMMON[@]}" "$($CC --version | head -1)" | sha256sum | cut -c1-16)
  if [[ ! -f $obj/.flags-$flags_id ]]; then
    rm -rf "$obj"
    mkdir -p "$obj"
    touch "$obj/.flags-$flags_id"
  fi
  # The package's own list of libcrypto sources (generated upstream);
  # bcm.c includes the fipsmodule files.
  (cd "$src" && printf 'include sources.mk\nall:\n\t@echo $(crypto_sources)\n' | make -s -f - all) |
    tr ' ' '\n' | grep '\.c$' | LC_ALL=C sort >"$obj/sources.txt"
  local abs_src
  abs_src=$(cd "$src" && pwd)
  log "compiling $(wc -l <"$obj/sources.txt") BoringSSL sources (-P$JOBS)"
  # Compiled from inside the source tree with relative paths, and the tree's
  # absolute location mapped away, so __FILE__ is the same in every checkout.
  (cd "$src" && xargs -P"$JOBS" -I{} sh -c '
      c=$1; shift
      o="../'"$OBJ_NAME"'/$c.o"
      [ -f "$o" ] && exit 0
      mkdir -p "$(dirname "$o")"
      '"$CC"' "$@" -c "$c" -o "$o.tmp" && mv "$o.tmp" "$o"
    ' sh {} "${CFLAGS_COMMON[@]}" -Isrc/include -Isrc/crypto "-ffile-prefix-map=$abs_src/=" \
    <"../$OBJ_NAME/sources.txt") || die "BoringSSL compilation failed"
}

build_native() {
  mkdir -p "$NATIVE"
  local obj="$CACHE/$OBJ_NAME"
  rm -f "$NATIVE"/*.a "$NATIVE"/*.o
  (cd "$obj" && sed 's/$/.o/' sources.txt | LC_ALL=C sort | xargs "$AR" rcsD "$ROOT/$NATIVE/libkc_crypto.a")
  local c objs=()
  for c in $(printf '%s\n' rust-signer/c/*.c | LC_ALL=C sort); do
    "$CC" "${CFLAGS_COMMON[@]}" -Wall -Wno-unused-function -I"$CACHE/$SRC_NAME/src/include" "-ffile-prefix-map=$ROOT/=" \
      -c "$c" -o "$NATIVE/$(basename "$c" .c).o"
    objs+=("$NATIVE/$(basename "$c" .c).o")
  done
  "$AR" rcsD "$NATIVE/libkc_driver.a" "${objs[@]}"
  # OPENSSL_free must still clear a block before free(): without the asm
  # barrier (OPENSSL_NO_ASM) nothing but the compiler's choice keeps that
  # memset, so the build checks the object code for it.
  local calls
  calls=$("$OBJDUMP" -d "$obj/src/crypto/mem.c.o" | awk '/<OPENSSL_free>:/{f=1;next} f&&/^$/{exit} f' | grep -c 'call' || true)
  ((calls >= 2)) || die "OPENSSL_free in crypto/mem.c no longer calls memset before free"
}

build_rust() { # out.wasm
  log "building rust-signer"
  # RUSTC_BOOTSTRAP: rustc 1.63 needs #[alloc_error_handler] (unstable) for
  # no_std + alloc. --remap-path-prefix keeps the checkout path out of the
  # module; the link search path is relative for the same reason. The clean
  # forces a relink, since cargo does not see the native archives change.
  local target=rust-signer/$CARGO_TARGET linked
  local target_env=()
  [[ $CARGO_TARGET == target ]] || target_env=(CARGO_TARGET_DIR="$CARGO_TARGET")
  (cd rust-signer &&
    env "${target_env[@]}" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_INCREMENTAL=0 \
      RUSTFLAGS="-L native=target/$NATIVE_NAME -l static=kc_driver -l static=kc_crypto -C link-arg=$WASI_SYSROOT/crt1-reactor.o -C link-arg=-L$WASI_SYSROOT -C link-arg=-lc --remap-path-prefix=$ROOT/=" \
      /usr/bin/cargo clean -q --release --target wasm32-wasi -p keycell-signer &&
    env "${target_env[@]}" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_INCREMENTAL=0 \
      RUSTFLAGS="-L native=target/$NATIVE_NAME -l static=kc_driver -l static=kc_crypto -C link-arg=$WASI_SYSROOT/crt1-reactor.o -C link-arg=-L$WASI_SYSROOT -C link-arg=-lc --remap-path-prefix=$ROOT/=" \
      /usr/bin/cargo build -q --offline --release --target wasm32-wasi)
  linked=$target/wasm32-wasi/release/keycell_signer.wasm
  if [[ $VARIANT == wide ]]; then
    "$DENO" run --no-config --no-lock --allow-read --allow-write scripts/wasm_wide.ts \
      "$linked" "$target/keycell_signer.wide.wasm"
    linked=$target/keycell_signer.wide.wasm
  fi
  "$DENO" run --no-config --no-lock --allow-read --allow-write scripts/wasm_sections.ts \
    rewrite "$linked" "$1" "$EXPORTS"
  local imports
  imports=$("$DENO" run --no-config --no-lock --allow-read scripts/wasm_sections.ts imports "$1" | LC_ALL=C sort | tr '\n' ' ')
  [[ $imports == "keycell.in_len func keycell.in_read1 func keycell.in_read8 func keycell.out_write1 func keycell.out_write8 func keycell.rand8 func " ]] ||
    die "unexpected imports: $imports"
}

start=$(date +%s)
ensure_packages
if [[ $MODE == check && -f wasm/toolchain.txt ]] && ! diff -q wasm/toolchain.txt <(toolchain) >/dev/null; then
  die "this machine's toolchain differs from the one wasm/signer.wasm was built with, so its bytes cannot be reproduced here:
$(diff wasm/toolchain.txt <(toolchain) | grep '^[<>]' | sed 's/^</  built with:/; s/^>/  installed: /')"
fi
fetch_boringssl
[[ $VARIANT == wide ]] && prepare_wide_source
build_crypto
build_native
mkdir -p wasm
if [[ $MODE == check ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  build_rust "$tmp/$MODULE"
  [[ -f wasm/$MODULE ]] || die "wasm/$MODULE is missing"
  want=$(sha256sum "wasm/$MODULE" | cut -d' ' -f1)
  got=$(sha256sum "$tmp/$MODULE" | cut -d' ' -f1)
  recorded=$(cut -d' ' -f1 "wasm/$MODULE.sha256" 2>/dev/null || true)
  if [[ $got != "$want" ]]; then
    die "rebuilt $MODULE ($got) differs from the committed wasm/$MODULE ($want): the build is not reproducible here, or the module is stale (run $0$FLAGS and commit)"
  fi
  [[ $recorded == "$want" ]] || die "wasm/$MODULE.sha256 ($recorded) does not match wasm/$MODULE ($want)"
  log "check OK: $got ($(($(date +%s) - start)) s)"
else
  build_rust "wasm/$MODULE.tmp"
  mv "wasm/$MODULE.tmp" "wasm/$MODULE"
  (cd wasm && sha256sum "$MODULE" >"$MODULE.sha256")
  toolchain >wasm/toolchain.txt
  log "wrote wasm/$MODULE $(stat -c %s "wasm/$MODULE") bytes, $(cut -d' ' -f1 "wasm/$MODULE.sha256") ($(($(date +%s) - start)) s)"
fi
