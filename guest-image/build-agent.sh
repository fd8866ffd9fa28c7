#!/usr/bin/env bash
# Builds berth-agent as a static executable (glibc static-pie, libseccomp linked in) for the
# VM's initramfs. The release profile is used with fat LTO and one codegen unit: the kernel
# copies every byte of the initramfs at each boot, and under emulation that is boot time
# (10.6 MB instead of 16.3 MB for about 90 s more build). Unwinding stays on, so a panicking
# task does not take PID 1 down with it. For quicker local iterations set
# CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16. Prints the binary's path.
#
# Usage: build-agent.sh [--target TRIPLE] [CARGO ARGS...]
#   The target defaults to x86_64-unknown-linux-gnu. For another architecture
#   (aarch64-unknown-linux-gnu: the arm64 guest of Apple silicon Macs) the standard library
#   comes from cross-sysroot.sh, libseccomp and the linker from Debian's packages
#   (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross).
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
if [ "${1:-}" = "--target" ]; then
  target=$2
  shift 2
fi
host=$(rustc -vV | awk '/^host:/ {print $2}')
arch=${target%%-*}
rustflags="${RUSTFLAGS:-} -C target-feature=+crt-static"
export LIBSECCOMP_LINK_TYPE=static
if [ "$target" = "$host" ] || rustc --print target-libdir --target "$target" 2>/dev/null | xargs -I{} test -d {}; then
  export LIBSECCOMP_LIB_PATH="${LIBSECCOMP_LIB_PATH:-/usr/lib/$arch-linux-gnu}"
else
  sysroot=$(guest-image/cross-sysroot.sh "$target")
  rustflags="$rustflags --sysroot=$sysroot"
  linker_var=CARGO_TARGET_$(echo "$target" | tr 'a-z-.' 'A-Z__')_LINKER
  export "$linker_var=${!linker_var:-$arch-linux-gnu-gcc}"
  if [ -z "${LIBSECCOMP_LIB_PATH:-}" ]; then
    case $arch in aarch64) debarch=arm64 ;; x86_64) debarch=amd64 ;; *) debarch=$arch ;; esac
    seccomp=${XDG_CACHE_HOME:-$HOME/.cache}/berth/libseccomp-$debarch
    if [ ! -f "$seccomp/lib/libseccomp.a" ]; then
      deb=$(guest-image/debian-fetch.sh "$debarch" bookworm "$seccomp/debs" libseccomp-dev)
      dpkg-deb -x "$deb" "$seccomp/tree"
      mkdir -p "$seccomp/lib"
      cp "$seccomp/tree/usr/lib/$arch-linux-gnu/libseccomp.a" "$seccomp/lib/"
    fi
    export LIBSECCOMP_LIB_PATH=$seccomp/lib
  fi
fi
export CARGO_PROFILE_RELEASE_LTO=${CARGO_PROFILE_RELEASE_LTO:-fat}
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=${CARGO_PROFILE_RELEASE_CODEGEN_UNITS:-1}
export CARGO_PROFILE_RELEASE_PANIC=unwind
RUSTFLAGS="$rustflags" \
  cargo build --release --target "$target" -p berth-guest-agent --bin berth-agent "$@" >&2
echo "${CARGO_TARGET_DIR:-target}/$target/release/berth-agent"
