#!/usr/bin/env bash
# Type-checks (cargo clippy -D warnings) the macOS and Windows backend files
# of berth-platform on a Linux host, where neither target's std is
# available: a copy of the crate with those modules' `cfg` switched to
# `unix`, built against the real declarations of
#   mac: objc2-virtualization (its framework link removed) on objc2's
#        GNUstep flavour,
#   win: windows-sys (whose declarations build on any host).
# It proves that names, signatures and types match those crates; it does
# not link, run, or check tokio's Windows-only named pipes
# (src/pipe_endpoint.rs). Needs crates.io. Usage: check-os-backends.sh [mac|win]…
set -euo pipefail

src=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CARGO_TARGET_DIR="$work/target"

manifest() { # name features extra-dependencies
    cat <<TOML
[package]
name = "berth-platform-check-$1"
version = "0.1.0"
edition = "2021"
[lib]
path = "src/lib.rs"
[dependencies]
libc = "0.2"
thiserror = "2"
serde = { version = "1", features = ["derive"] }
serde_json = "1"
tokio = { version = "1", features = ["rt", "net", "io-util", "macros", "time", "sync", "process", "fs"] }
$2
[lints.rust]
unsafe_op_in_unsafe_fn = "deny"
[lints.clippy]
undocumented_unsafe_blocks = "warn"
unwrap_used = "warn"
[workspace]
TOML
}

check_mac() {
    local dir="$work/mac"
    mkdir -p "$dir" && cp -r "$src/src" "$dir/src"
    sed -i 's/#\[cfg(target_os = "macos")\]/#[cfg(unix)]/' "$dir/src/hypervisor/mod.rs"
    local vz
    vz=$(grep '^objc2-virtualization' "$src/Cargo.toml")
    local deps='objc2 = { version = "0.6", features = ["gnustep-2-1"] }
block2 = { version = "0.6", features = ["gnustep-2-1"] }
dispatch2 = "0.3"
objc2-foundation = { version = "0.3", default-features = false, features = ["std", "NSArray", "NSError", "NSString", "NSURL", "NSObject"] }'
    manifest mac "$deps
$vz" >"$dir/Cargo.toml"
    # Fetch the real crate, then patch in a copy without the framework link.
    (cd "$dir" && cargo fetch -q)
    local real
    real=$(cd "$dir" && cargo metadata --format-version 1 | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(next(p["manifest_path"] for p in m["packages"] if p["name"] == "objc2-virtualization"))')
    cp -r "$(dirname "$real")" "$work/objc2-virtualization"
    sed -i 's/^#\[link(name = "Virtualization", kind = "framework")\]$//' \
        "$work/objc2-virtualization/src/generated/mod.rs"
    printf '[patch.crates-io]\nobjc2-virtualization = { path = "%s" }\n' "$work/objc2-virtualization" >>"$dir/Cargo.toml"
    (cd "$dir" && cargo clippy -q --lib -- -D warnings)
    echo "mac: vz.rs type-checks against objc2-virtualization"
}

check_win() {
    local dir="$work/win"
    mkdir -p "$dir" && cp -r "$src/src" "$dir/src"
    sed -i 's/#\[cfg(target_os = "windows")\]/#[cfg(unix)]/' "$dir/src/hypervisor/mod.rs"
    sed -i 's/#\[cfg(windows)\]/#[cfg(unix)]/' "$dir/src/vsock/mod.rs"
    manifest win "$(grep '^windows-sys' "$src/Cargo.toml")" >"$dir/Cargo.toml"
    (cd "$dir" && cargo clippy -q --lib -- -D warnings)
    echo "win: hcs.rs and vsock/hyperv.rs type-check against windows-sys"
}

for which in "${@:-mac win}"; do
    for w in $which; do
        "check_$w"
    done
done
