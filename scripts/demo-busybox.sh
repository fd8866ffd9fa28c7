#!/usr/bin/env bash
# Builds a throwaway OCI bundle from the host's busybox-static and runs it with
# berth-runc: the runtime's main job, offline. Needs root.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
runc="${BERTH_RUNC:-}"
if [ -z "$runc" ]; then
  for candidate in "$repo/target/x86_64-unknown-linux-gnu/release/berth-runc" "$repo/target/release/berth-runc" "$repo/target/debug/berth-runc"; do
    [ -x "$candidate" ] && { runc="$candidate"; break; }
  done
fi
busybox="$(command -v busybox)"
[ -n "$runc" ] && [ -x "$runc" ] || { echo "build first: scripts/build-static.sh" >&2; exit 1; }
case "$(file -b "$busybox" 2>/dev/null || echo static)" in
  *dynamic*) echo "need a static busybox (apt-get install busybox-static)" >&2; exit 1 ;;
esac

work="$(mktemp -d)"
id="berth-demo-$$"
trap '"$runc" --root "$work/state" delete --force "$id" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/etc"
cp "$busybox" "$work/bundle/rootfs/bin/busybox"
for applet in sh echo id hostname cat ps ls; do ln -s busybox "$work/bundle/rootfs/bin/$applet"; done
echo 'root:x:0:0:root:/:/bin/sh' > "$work/bundle/rootfs/etc/passwd"
echo 'root:x:0:' > "$work/bundle/rootfs/etc/group"

cd "$work/bundle"
"$runc" spec
# Not on a terminal, run a greeting instead of an interactive shell.
sed -i 's/"terminal": true/"terminal": false/; s/"sh"$/"sh", "-c", "echo Hello from Berth: pid $$ on $(hostname) as $(id -un); ps"/' config.json
"$runc" --root "$work/state" run "$id"
