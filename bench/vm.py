#!/usr/bin/env python3
"""VM backend benchmark (QEMU microvm, TCG here), in one run:

  ready        `berth machine start` → engine API answering (launch to first
               agent ping, from the machine's status), median of N boots of a
               machine as users make it (outbound network through passt, a
               virtiofs share), after a first boot (formatting the disk) that
               is not counted
  plain        the same QEMU command line and kernel booting a busybox-only
               initramfs whose /init prints a marker (launch → marker on the
               console), each boot alternated with one of the machine's: the
               agent's overhead is ready / plain (target <= 1.2x)
  run_rm       `berth run --rm hello` through the VM endpoint vs against a
               `berth daemon` on the host (median of N)
  forward      GET of a 64 MiB file from busybox httpd in the VM through the
               vsock port forward vs through QEMU's user-net hostfwd on the
               same VM, a machine with QEMU's user network in place of passt
               (MB/s; target vsock >= 2x hostfwd)
  share        a container reads a 64 MiB host file (MB/s) and 2000 small host
               files (ms) from a --share directory, the guest's page cache
               dropped first: virtiofs (virtiofsd) on the machine above vs 9p
               on a second machine (--share-fs 9p) started after it

Needs root, qemu-system-x86_64, vhost-device-vsock, virtiofsd, busybox-static, a built
`berth` (target/debug or release) and the static agent
(guest-image/build-agent.sh). Everything runs in a private temp dir; nothing
leaves loopback (user networking is restrict=on).

Usage: bench/vm.py [-n BOOTS] [--target DIR] [--cid CID] [--only PART[,PART…]]
(PART: ready, run_rm, forward, share; ready includes plain)
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find(target, name):
    for p in (f"{target}/debug/{name}", f"{target}/release/{name}"):
        if os.path.isfile(p):
            return p
    sys.exit(f"build {name} first (cargo build -p berth)")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run(cmd, env=None, check=True, **kw):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        logs = ""
        home = (env or {}).get("BERTH_MACHINE_HOME")
        if home and os.path.isdir(home):
            for name in sorted(os.listdir(home)):
                for log in ("console.log", "machine.log"):
                    path = os.path.join(home, name, log)
                    if os.path.isfile(path):
                        tail = open(path, errors="replace").read().splitlines()[-25:]
                        logs += f"\n--- {path}\n" + "\n".join(tail)
        sys.exit(f"{' '.join(cmd)} failed: {r.stdout}\n{r.stderr}{logs}")
    return r


def cpio_newc(entries):
    """entries: list of (name, mode, data bytes)."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], 1):
        nb = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + nb
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def plain_initrd(path):
    busybox = open("/bin/busybox", "rb").read()
    script = b"#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs dev /dev\n/bin/busybox echo BERTH-PLAIN-INIT > /dev/ttyS0\n/bin/busybox poweroff -f\n"
    entries = [
        ("bin", 0o040755, b""),
        ("dev", 0o040755, b""),
        ("bin/busybox", 0o100755, busybox),
        ("init", 0o100755, script),
    ]
    with open(path, "wb") as f:
        data = cpio_newc(entries)
        f.write(data)


def machine_qemu_arg(status, flag):
    """The value of `flag` on the machine's QEMU command line."""
    for pid in status["status"].get("vmm_pids", []):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if flag.encode() in argv:
            return argv[argv.index(flag.encode()) + 1].decode()
    sys.exit(f"cannot read {flag} from the machine's QEMU process")


def machine_kernel_args(status):
    """The kernel command line QEMU was given for the machine (TCG clock arguments
    included), without Berth's own berth.* keys: the plain boot uses the same."""
    for pid in status["status"].get("vmm_pids", []):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"-append" in argv:
            words = argv[argv.index(b"-append") + 1].decode().split()
            return " ".join(w for w in words if not w.startswith("berth."))
    sys.exit("cannot read the machine's kernel command line from its QEMU process")


def plain_boot(kernel, cpu, initrd, memory, work, cmdline):
    """QEMU launch → the marker on the console, in ms (same CPU model as the machine)."""
    console = os.path.join(work, "plain-console.log")
    if os.path.exists(console):
        os.unlink(console)
    args = [
        "qemu-system-x86_64", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-M", "microvm,acpi=on,rtc=on,isa-serial=on,memory-backend=mem",
        "-accel", "tcg", "-cpu", cpu, "-smp", "2", "-m", f"{memory}M",
        "-object", f"memory-backend-memfd,id=mem,size={memory}M,share=on",
        "-kernel", kernel, "-initrd", initrd,
        "-append", cmdline,
        "-chardev", f"file,id=con,path={console}", "-serial", "chardev:con",
    ]
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = t0 + 120
        while time.monotonic() < deadline:
            try:
                if b"BERTH-PLAIN-INIT" in open(console, "rb").read():
                    return (time.monotonic() - t0) * 1000
            except FileNotFoundError:
                pass
            time.sleep(0.005)
        sys.exit("plain boot did not reach init")
    finally:
        p.kill()
        p.wait()


def busybox_tar(path):
    with tarfile.open(path, "w") as t:
        for d in ("bin", "etc", "tmp", "proc", "sys", "dev"):
            i = tarfile.TarInfo(d)
            i.type = tarfile.DIRTYPE
            i.mode = 0o755
            t.addfile(i)
        t.add("/bin/busybox", arcname="bin/busybox")
        for a in ("sh", "httpd", "dd", "mkdir", "true", "echo", "cat", "time"):
            i = tarfile.TarInfo(f"bin/{a}")
            i.type = tarfile.SYMTYPE
            i.linkname = "busybox"
            t.addfile(i)


def get_throughput(port, size):
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(b"GET /big HTTP/1.0\r\nHost: x\r\n\r\n")
    n = 0
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        n += len(b)
    s.close()
    dt = time.monotonic() - t0
    if n < size:
        sys.exit(f"short read on port {port}: {n} bytes")
    return n / dt / 1e6


def share_reads(berth, sock, share, n):
    """(MB/s reading big.bin, ms reading the small files) in a container, medians of n,
    each with the guest's page cache dropped (busybox `time`: 10 ms resolution)."""
    script = ("echo 3 > /proc/sys/vm/drop_caches && time cat /data/big.bin > /dev/null && "
              "echo 3 > /proc/sys/vm/drop_caches && time cat /data/small/* > /dev/null")
    big, small = [], []
    for _ in range(n):
        out = run([berth, "-H", sock, "run", "--rm", "--privileged", "-v", f"{share}:/data",
                   "busybox", "sh", "-c", script]).stderr
        secs = [parse_time(line) for line in out.splitlines() if line.startswith("real")]
        if len(secs) != 2:
            sys.exit(f"unexpected `time` output: {out}")
        big.append((64 << 20) / max(secs[0], 0.01) / 1e6)
        small.append(secs[1] * 1000)
    return median(big), median(small)


def parse_time(line):
    """busybox `time`: "real\t0m 0.54s" → 0.54."""
    words = line.split()[1:]
    mins = int(words[0].rstrip("m"))
    return mins * 60 + float(words[1].rstrip("s"))


def median(xs):
    return statistics.median(xs)


def plain_setup(berth, env, work):
    """The running machine's kernel and command line, and a bare initramfs, for the
    plain boot."""
    cfg = json.loads(run([berth, "machine", "status", "b", "--json"], env=env).stdout)
    # The kernel the machine booted (the newest cached image may be another
    # architecture's).
    kernel = machine_qemu_arg(cfg, "-kernel")
    cpu = machine_qemu_arg(cfg, "-cpu")
    initrd = os.path.join(work, "plain.cpio")
    plain_initrd(initrd)
    return kernel, cpu, initrd, machine_kernel_args(cfg)


def measure_run_rm(berth, sock, a, work, results):
    """`run --rm hello` in the VM vs against a host daemon; returns the daemon."""
    vm_runs = []
    for _ in range(a.n):
        t0 = time.monotonic()
        run([berth, "-H", sock, "run", "--rm", "hello"])
        vm_runs.append((time.monotonic() - t0) * 1000)
    hsock = f"{work}/host.sock"
    daemon = subprocess.Popen([berth, "daemon", "--host", f"unix://{hsock}", "--data-root", f"{work}/hostdata"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not os.path.exists(hsock) and time.monotonic() < deadline:
        time.sleep(0.02)
    host_runs = []
    for _ in range(a.n):
        t0 = time.monotonic()
        run([berth, "-H", f"unix://{hsock}", "run", "--rm", "hello"])
        host_runs.append((time.monotonic() - t0) * 1000)
    results["run_rm_vm_ms"] = median(vm_runs)
    results["run_rm_host_ms"] = median(host_runs)
    results["run_rm_ratio"] = results["run_rm_vm_ms"] / results["run_rm_host_ms"]
    return daemon


def measure_forward(berth, sock, a, fwd_port, hostfwd_port, results):
    """Forwarding throughput: vsock forward vs hostfwd, same server."""
    size = 64 << 20
    script = (f"mkdir -p /www && dd if=/dev/zero of=/www/big bs=1M count=64 2>/dev/null && "
              f"exec httpd -f -p {fwd_port} -h /www")
    cid = run([berth, "-H", sock, "run", "-d", "--network", "host", "--tmpfs", "/www", "busybox", "sh", "-c", script]).stdout.strip()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", fwd_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    # Alternated, so both see the same load on the host.
    vs, hf = [], []
    for _ in range(a.n):
        vs.append(get_throughput(fwd_port, size))
        hf.append(get_throughput(hostfwd_port, size))
    results["forward_vsock_MBps"] = median(vs)
    results["forward_hostfwd_MBps"] = median(hf)
    results["forward_ratio"] = results["forward_vsock_MBps"] / results["forward_hostfwd_MBps"]
    run([berth, "-H", sock, "rm", "-f", cid], check=False)


def measure_share(berth, sock, env, a, work, share, tar, results):
    """Share reads: virtiofs here, then 9p on a second machine with the same share."""
    big, small = share_reads(berth, sock, share, a.n)
    results["share_read_virtiofs_MBps"] = big
    results["share_small_virtiofs_ms"] = small
    run([berth, "machine", "stop", "b"], env=env)
    run([berth, "machine", "init", "b9", "--memory", str(a.memory), "--disk", "2",
         "--cid", str(a.cid + 1), "--share", share, "--share-fs", "9p", "--no-network"], env=env)
    # bf (forwarding) reuses the CID once b9 is gone.
    run([berth, "machine", "start", "b9"], env=env)
    sock9 = f"unix://{work}/b9/berth.sock"
    run([berth, "-H", sock9, "import", tar, "busybox:latest"])
    big, small = share_reads(berth, sock9, share, a.n)
    results["share_read_9p_MBps"] = big
    results["share_small_9p_ms"] = small
    results["share_read_ratio"] = results["share_read_virtiofs_MBps"] / big
    results["share_small_ratio"] = small / results["share_small_virtiofs_ms"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=3, help="boots and runs to take the median of")
    ap.add_argument("--target", default=os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")))
    ap.add_argument("--memory", type=int, default=1024)
    # Hybrid vsock CIDs are private to each machine's vhost-device-vsock, but keep to the
    # range this script is given (300-399 by default; two machines) so concurrent runs stay apart.
    ap.add_argument("--cid", type=int, default=300 + os.getpid() % 50 * 2,
                    help="the first machine's vsock CID, the 9p one's is the next "
                         "(default: an even one in 300-398)")
    ap.add_argument("--only", default="ready,run_rm,forward,share",
                    help="comma-separated parts to measure (ready, run_rm, forward, share)")
    a = ap.parse_args()
    parts = set(a.only.split(","))
    unknown = parts - {"ready", "run_rm", "forward", "share"}
    if unknown:
        sys.exit(f"unknown part(s): {', '.join(sorted(unknown))}")
    berth = find(a.target, "berth")
    agent = os.environ.get("BERTH_AGENT") or f"{a.target}/x86_64-unknown-linux-gnu/release/berth-agent"
    if not os.path.isfile(agent):
        sys.exit("build the static agent first: guest-image/build-agent.sh")
    work = tempfile.mkdtemp(prefix="bvmb", dir="/tmp")
    # passt runs as nobody and must reach its socket directory inside.
    os.chmod(work, 0o755)
    env = dict(os.environ, BERTH_MACHINE_HOME=work, BERTH_AGENT=agent)
    fwd_port, hostfwd_port = free_port(), free_port()
    results = {}
    daemon = None
    try:
        share = f"{work}/share"
        os.makedirs(f"{share}/small")
        with open(f"{share}/big.bin", "wb") as f:
            f.write(os.urandom(64 << 20))
        for i in range(2000):
            with open(f"{share}/small/f{i}", "w") as f:
                f.write(f"{i}\n")
        # The machine as users make it (outbound network through passt, a shared directory).
        run([berth, "machine", "init", "b", "--memory", str(a.memory), "--disk", "2",
             "--cid", str(a.cid), "--share", share], env=env)
        sock = f"unix://{work}/b/berth.sock"
        # The first boot formats the data disk: not counted.
        run([berth, "machine", "start", "b"], env=env)
        if "ready" in parts:
            kernel, cpu, initrd, cmdline = plain_setup(berth, env, work)
            ready, plain, start_wall = [], [], []
            # Alternated, so both see the same load on the host.
            for _ in range(a.n):
                run([berth, "machine", "stop", "b"], env=env)
                plain.append(plain_boot(kernel, cpu, initrd, a.memory, work, cmdline))
                t0 = time.monotonic()
                run([berth, "machine", "start", "b"], env=env)
                start_wall.append((time.monotonic() - t0) * 1000)
                st = json.loads(run([berth, "machine", "status", "b", "--json"], env=env).stdout)
                ready.append(st["status"]["ready_ms"])
            results["ready_ms"] = median(ready)
            results["start_wall_ms"] = median(start_wall)
            results["plain_ms"] = median(plain)
            results["agent_overhead_ratio"] = results["ready_ms"] / results["plain_ms"]
            # Each boot against the plain boot just before it (load drifts over a run).
            results["agent_overhead_ratio_paired"] = median([r / p for r, p in zip(ready, plain)])
            results["ready_each_ms"] = " ".join(str(r) for r in ready)
            results["plain_each_ms"] = " ".join(f"{p:.0f}" for p in plain)
        if "run_rm" in parts:
            daemon = measure_run_rm(berth, sock, a, work, results)
        tar = f"{work}/bb.tar"
        busybox_tar(tar)
        run([berth, "-H", sock, "import", tar, "busybox:latest"])
        if "share" in parts:
            measure_share(berth, sock, env, a, work, share, tar, results)
        if "forward" in parts:
            # QEMU's user network (for its hostfwd) replaces passt, on a machine of its own;
            # one VM runs at a time.
            for name in ("b", "b9"):
                run([berth, "machine", "stop", name], env=env, check=False)
            run([berth, "machine", "init", "bf", "--memory", str(a.memory), "--disk", "2",
                 "--cid", str(a.cid + 1),
                 "--hostfwd", f"tcp:127.0.0.1:{hostfwd_port}-:{fwd_port}"], env=env)
            run([berth, "machine", "start", "bf"], env=env)
            sockf = f"unix://{work}/bf/berth.sock"
            run([berth, "-H", sockf, "import", tar, "busybox:latest"])
            measure_forward(berth, sockf, a, fwd_port, hostfwd_port, results)
    finally:
        if daemon:
            daemon.terminate()
            daemon.wait()
            subprocess.run(["umount", "-R", "-l", f"{work}/hostdata"], capture_output=True)
        for name in ("b", "b9", "bf"):
            run([berth, "machine", "stop", name], env=env, check=False)
        shutil.rmtree(work, ignore_errors=True)
    for k, v in results.items():
        print(f"{k:24} {v:10.2f}" if isinstance(v, float) else f"{k:24} {v:>10}")


if __name__ == "__main__":
    main()
