#!/usr/bin/env bash
# Prints a Rust sysroot holding the standard library for TARGET (e.g. aarch64-unknown-linux-gnu),
# built once per compiler from Debian's rust-src of the same version. This is how the agent is
# built for a guest architecture the machine's toolchain has no prebuilt std for: rustup cannot
# fetch one here, Debian's archive can. Cached under ~/.cache/berth/rust-sysroot/.
#
# The std is compiled with crt-static (the agent links glibc statically), with bitcode (the
# embedded programs link it with LTO, as they do rustup's std) and the target's gcc
# (Debian: gcc-<arch>-linux-gnu) as linker.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 TARGET" >&2; exit 2; }
target=$1
here=$(cd "$(dirname "$0")" && pwd)
commit=$(rustc -vV | awk '/^commit-hash:/ {print $2}')
# The suffix changes with how std is built here: cargo does not see a rebuilt sysroot, and
# crates compiled against the old one would no longer link.
sysroot=${XDG_CACHE_HOME:-$HOME/.cache}/berth/rust-sysroot/$commit-2
libdir=$sysroot/lib/rustlib/$target/lib
if compgen -G "$libdir/libstd-*.rlib" >/dev/null; then
  echo "$sysroot"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-sysroot.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$("$here/rust-src.sh")

mkdir -p "$work/stub/src"
printf '[package]\nname = "stub"\nversion = "0.0.0"\nedition = "2021"\n[workspace]\n' >"$work/stub/Cargo.toml"
echo 'fn main() {}' >"$work/stub/src/main.rs"
linker_var=CARGO_TARGET_$(echo "$target" | tr 'a-z-.' 'A-Z__')_LINKER
arch=${target%%-*}
export "$linker_var=${!linker_var:-$arch-linux-gnu-gcc}"
# build-std is unstable: RUSTC_BOOTSTRAP admits it on the stable compiler, and cargo's source
# override points it at Debian's copy of the library.
(cd "$work/stub" && RUSTC_BOOTSTRAP=1 __CARGO_TESTS_ONLY_SRC_ROOT=$src \
  RUSTFLAGS="-C target-feature=+crt-static -C embed-bitcode=yes" CARGO_TARGET_DIR="$work/target" \
  cargo build --release -q -Z build-std=std,panic_unwind,panic_abort --target "$target" >&2)
mkdir -p "$libdir.tmp"
cp "$work/target/$target/release/deps/"*.rlib "$libdir.tmp/"
rm -rf "$libdir" && mv "$libdir.tmp" "$libdir"
echo "$sysroot"
