#!/usr/bin/env bash
# The main job, offline: start a private Berth engine, run the image that is
# embedded in the berth binary, and stop the engine again. Needs root.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
bin=""
for dir in "$repo/target/release" "$repo/target/debug"; do
  if [ -x "$dir/berth" ] && [ -x "$dir/berth-monitor" ]; then bin="$dir"; break; fi
done
[ -n "$bin" ] || { echo "build first: cargo build --release --workspace --bins" >&2; exit 1; }

work="$(mktemp -d)"
sock="$work/berth.sock"
"$bin/berth" daemon --host "unix://$sock" --data-root "$work/data" >/dev/null 2>"$work/daemon.log" </dev/null &
daemon=$!
cleanup() {
  kill "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
  umount -R -l "$work/data" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { cat "$work/daemon.log" >&2; exit 1; }

"$bin/berth" -H "unix://$sock" run --rm hello
