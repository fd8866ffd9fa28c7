#!/usr/bin/env bash
# Builds berth-agent as a static executable (glibc static-pie, libseccomp
# linked in) for the VM's initramfs. The release profile is used without LTO
# and with parallel codegen: the agent is rebuilt often and its size matters
# less than the runtime's. Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBSECCOMP_LINK_TYPE=static
export LIBSECCOMP_LIB_PATH="${LIBSECCOMP_LIB_PATH:-/usr/lib/x86_64-linux-gnu}"
export CARGO_PROFILE_RELEASE_LTO=off
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
export CARGO_PROFILE_RELEASE_PANIC=unwind
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --target x86_64-unknown-linux-gnu -p berth-guest-agent --bin berth-agent "$@" >&2
echo "${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/berth-agent"
