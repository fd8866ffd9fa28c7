#!/usr/bin/env bash
# Type-checks berth-platform, berth-guest-image and the `berth` binary (host/, with the CLI
# crate host/cli), tests included, for the macOS and Windows targets, clippy -D warnings, on a
# Linux host: the Virtualization.framework backend, the Host Compute Service backend, AF_HYPERV
# sockets, the named-pipe endpoint, the supervisor's process control and `berth machine` are
# compiled for real against their targets' std, built here from Debian's rust-src of the machine's
# compiler (cargo -Z build-std, admitted on the stable compiler by RUSTC_BOOTSTRAP). Nothing is
# linked or run: that needs the hosted macOS and Windows workflows.
# Usage: check-os-backends.sh [mac|win]…
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
src=$("$repo/guest-image/rust-src.sh")
export RUSTC_BOOTSTRAP=1 __CARGO_TESTS_ONLY_SRC_ROOT=$src
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}/os-check
check() { # name target
    (cd "$repo" && cargo clippy -q -Z build-std=std,panic_abort --target "$2" \
        -p berth-platform -p berth-guest-image -p berth -p berth-cli --all-targets -- -D warnings)
    echo "$1: berth-platform, berth-guest-image, berth and berth-cli check clean for $2"
}
for which in "${@:-mac win}"; do
    for w in $which; do
        case $w in
        mac) check mac aarch64-apple-darwin ;;
        win) check win x86_64-pc-windows-msvc ;;
        *) echo "usage: $0 [mac|win]…" >&2; exit 2 ;;
        esac
    done
done
