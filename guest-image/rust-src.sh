#!/usr/bin/env bash
# Prints the path of the Rust standard library's sources (`library/`) for the machine's
# compiler, from Debian's rust-src package of exactly that version (rustup cannot fetch the
# rust-src component here; Debian's archive can). Unpacked once per compiler under
# ~/.cache/berth/rust-src/. Used with cargo's -Z build-std for targets without a prebuilt std.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rustc_version=$(rustc -V | awk '{print $2}')
commit=$(rustc -vV | awk '/^commit-hash:/ {print $2}')
dir=${XDG_CACHE_HOME:-$HOME/.cache}/berth/rust-src/$commit
if [ -f "$dir/library/Cargo.lock" ]; then
  echo "$dir/library"
  exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-rust-src.XXXXXX")
trap 'rm -rf "$work"' EXIT
# rust-src is architecture-independent; backports and the newer suites keep recent versions.
deb=$("$here/debian-fetch.sh" amd64 "trixie-backports forky sid" "$work" "rust-src=$rustc_version")
dpkg-deb -x "$deb" "$work/tree"
src=$work/tree/usr/lib/rustlib/src/rust/library
[ -f "$src/Cargo.lock" ] || { echo "$0: $deb holds no library sources" >&2; exit 1; }
mkdir -p "$(dirname "$dir")"
rm -rf "$dir.tmp" && mkdir -p "$dir.tmp" && mv "$src" "$dir.tmp/library"
rm -rf "$dir" && mv "$dir.tmp" "$dir"
echo "$dir/library"
