#!/usr/bin/env python3
"""Network benchmark: host -> container through a port published on 127.0.0.1,
Berth vs dockerd, in one run, interleaved, medians of N.

  throughput   MiB/s of one TCP stream host -> container (iperf3, 3 s per sample)
  conn_rate    TCP connections per second (connect, read 1 byte, close), one client
  run_setup    `docker run --rm busybox true`: bridge (default) minus --network none, in ms
               (the network setup a container start pays), plus the -p variant

Both daemons run inside one network namespace this script makes (only `lo`, then the
daemons' own bridges), so no rule, link or packet touches the host's network:
  - berth daemon with its own bridge/subnet/nft table (kernel DNAT, no proxy process);
  - dockerd (Debian docker.io) on a bridge made here with a private range, iptables on,
    and its userland proxy as shipped (docker-proxy carries 127.0.0.1 traffic).
The server inside each container (iperf3 for throughput, a small Python accept loop for
connections) runs from the host's filesystem in the container's network namespace
(`nsenter --net=/proc/<pid>/ns/net`), so both engines serve the very same program and only
the path differs.

--big-tcp raises loopback's GSO limit in that namespace to 512 KiB (IPv4 and IPv6 "BIG TCP",
what `ip link set lo gso_max_size … gso_ipv4_max_size …` does on a host whose admin chose it),
for both daemons: the client's packets to 127.0.0.1 are built for loopback's limit.

Needs root, docker (client), docker.io (dockerd, docker-proxy), iperf3, iproute2, nsenter,
busybox-static, and a built `berth` (target/release or target/debug, or $BERTH).
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS = f"berthnetbench{os.getpid()}"
MIB = 1 << 20

SERVER = r"""
import socket, sys
port = int(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(512)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"."); c.close()
"""


def find_berth():
    if os.environ.get("BERTH"):
        return os.environ["BERTH"]
    for base in (os.environ.get("CARGO_TARGET_DIR"), os.path.join(REPO, "target")):
        if not base:
            continue
        for p in ("x86_64-unknown-linux-gnu/release/berth", "release/berth", "debug/berth"):
            path = os.path.join(base, p)
            if os.path.isfile(path):
                return path
    sys.exit("build berth first: cargo build --release -p berth (or set BERTH)")


# Sets IFLA_GSO_MAX_SIZE (41) and IFLA_GSO_IPV4_MAX_SIZE (63) of a link over rtnetlink
# (iproute2 6.1 has no gso_ipv4_max_size).
SET_GSO = r"""
import socket, struct, sys
name, size = sys.argv[1], int(sys.argv[2])
attrs = b"".join(struct.pack("HHI", 8, t, size) for t in (41, 63))
body = struct.pack("BxHiII", 0, 0, socket.if_nametoindex(name), 0, 0) + attrs
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
s.send(struct.pack("IHHII", 16 + len(body), 16, 0x5, 1, 0) + body)
err = struct.unpack("i", s.recv(4096)[16:20])[0]
sys.exit(f"setting the GSO limit of {name}: errno {-err}" if err else 0)
"""


def in_ns(cmd):
    return ["nsenter", f"--net=/run/netns/{NS}", *cmd]


def sh(*cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


class Engine:
    def __init__(self, name, sock, proc):
        self.name, self.sock, self.proc = name, sock, proc

    def docker(self, *args, check=True):
        r = subprocess.run(["docker", "-H", f"unix://{self.sock}", *args], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"{self.name}: docker {' '.join(args)} failed: {r.stderr.strip()}")
        return r


def wait_for_socket(sock, proc, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited during startup (status {proc.returncode})")
        if subprocess.run(["docker", "-H", f"unix://{sock}", "version"], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    sys.exit(f"{what} did not answer on {sock} within {timeout}s")


def start_berth(work):
    root = os.path.join(work, "berth")
    os.makedirs(root)
    sock = os.path.join(root, "berth.sock")
    with open(os.path.join(root, "c.json"), "w") as f:
        f.write("{}")
    proc = subprocess.Popen(
        in_ns([find_berth(), "daemon", "--host", f"unix://{sock}", "--data-root", os.path.join(root, "data"),
               "--config", os.path.join(root, "c.json"), "--bridge", "bbench0", "--bip", "10.231.0.1/24",
               "--nft-table", "berthbench", "--dns-upstream", "127.0.0.1:9"]),
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(root, "daemon.log"), "w"),
        env={**os.environ, "BERTH_NET_TIMING": "1"})
    wait_for_socket(sock, proc, "berth daemon")
    return Engine("berth", sock, proc)


def start_dockerd(work):
    root = os.path.join(work, "docker")
    os.makedirs(root)
    sock = os.path.join(root, "docker.sock")
    # dockerd's own bridge, made here so it never goes near docker0 or the host's ranges.
    sh(*in_ns(["ip", "link", "add", "dbench0", "type", "bridge"]))
    sh(*in_ns(["ip", "addr", "add", "10.232.0.1/24", "dev", "dbench0"]))
    sh(*in_ns(["ip", "link", "set", "dbench0", "up"]))
    proc = subprocess.Popen(
        in_ns(["dockerd", "--data-root", os.path.join(root, "data"), "--exec-root", os.path.join(root, "exec"),
               "--pidfile", os.path.join(root, "docker.pid"), "--host", f"unix://{sock}",
               "--bridge", "dbench0", "--storage-driver", "overlay2"]),
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(root, "dockerd.log"), "w"))
    wait_for_socket(sock, proc, "dockerd")
    return Engine("dockerd", sock, proc)


def busybox_tar(work):
    path = os.path.join(work, "busybox.tar")
    with tarfile.open(path, "w") as t:
        t.add("/bin/busybox", arcname="bin/busybox")
        for applet in ("sh", "true", "sleep"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            t.addfile(info)
    return path


class Target:
    """A container with a published port and our server in its network namespace."""

    def __init__(self, engine, mode, work, argv=None):
        self.engine = engine
        cid = engine.docker("run", "-d", "-p", "127.0.0.1::7000", "busybox", "sleep", "3600").stdout.strip()
        self.cid = cid
        port = engine.docker("port", cid, "7000/tcp").stdout.split("\n")[0]
        self.port = int(port.rsplit(":", 1)[1])
        pid = engine.docker("inspect", "-f", "{{.State.Pid}}", cid).stdout.strip()
        if argv is None:
            script = os.path.join(work, "server.py")
            with open(script, "w") as f:
                f.write(SERVER)
            argv = [sys.executable, script, mode, "7000"]
        self.server = subprocess.Popen(["nsenter", f"--net=/proc/{pid}/ns/net", *argv],
                                       stdout=subprocess.PIPE, text=True)
        if argv[0] == sys.executable:
            if self.server.stdout.readline().strip() != "ready":
                raise RuntimeError("server did not start")

    def close(self):
        self.server.kill()
        self.server.wait()
        self.engine.docker("rm", "-f", self.cid, check=False)


CLIENT = r"""
import socket, sys, time
port, seconds = int(sys.argv[2]), float(sys.argv[3])
deadline = time.time() + 10
while True:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.05)
n = 0
t = time.perf_counter()
end = t + seconds
while time.perf_counter() < end:
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    c.recv(1)
    c.close()
    n += 1
print(n / (time.perf_counter() - t))
"""


def client(work, mode, port, arg):
    """Runs the client on the 'host' side: in the benchmark namespace, outside containers."""
    script = os.path.join(work, "client.py")
    with open(script, "w") as f:
        f.write(CLIENT)
    r = sh(*in_ns([sys.executable, script, mode, str(port), str(arg)]))
    return float(r.stdout.strip())


def iperf(port, seconds):
    """MiB/s of one iperf3 stream from the benchmark namespace to 127.0.0.1:port."""
    deadline = time.time() + 10
    while True:
        r = sh(*in_ns(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"]), check=False)
        if r.returncode == 0:
            break
        if time.time() > deadline:
            raise RuntimeError(f"iperf3: {r.stdout[-300:]} {r.stderr.strip()}")
        time.sleep(0.1)
    import json
    return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 8 / MIB


def timed(fn):
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5, help="samples per measurement")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per conn_rate sample")
    ap.add_argument("--big-tcp", action="store_true", help="loopback GSO limit 512 KiB in the namespace")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    work = tempfile.mkdtemp(prefix="berth-bench-net-")
    engines, targets = [], []
    sh("ip", "netns", "add", NS)
    try:
        sh(*in_ns(["ip", "link", "set", "lo", "up"]))
        if args.big_tcp:
            sh(*in_ns([sys.executable, "-c", SET_GSO, "lo", "524280"]))
        engines = [start_berth(work), start_dockerd(work)]
        tar = busybox_tar(work)
        for e in engines:
            e.docker("import", tar, "busybox:latest")
        res = {e.name: {} for e in engines}

        def rec(e, k, v):
            res[e.name].setdefault(k, []).append(v)

        # run setup cost: interleaved, bridge vs none vs bridge with -p.
        for e in engines:
            e.docker("run", "--rm", "busybox", "true")  # warm-up (creates the default network)
        for _ in range(max(args.n, 20)):
            for e in engines:
                rec(e, "run_none", timed(lambda: e.docker("run", "--rm", "--network", "none", "busybox", "true")))
                rec(e, "run_bridge", timed(lambda: e.docker("run", "--rm", "busybox", "true")))
                rec(e, "run_publish", timed(lambda: e.docker("run", "--rm", "-p", "127.0.0.1::80", "busybox", "true")))

        bulk = {e.name: Target(e, "iperf", work, ["iperf3", "-s", "-p", "7000"]) for e in engines}
        targets += bulk.values()
        for _ in range(args.n):
            for e in engines:
                rec(e, "throughput", iperf(bulk[e.name].port, args.seconds + 1))
        for t in bulk.values():
            t.close()
        targets.clear()
        conn = {e.name: Target(e, "conn", work) for e in engines}
        targets += conn.values()
        for _ in range(args.n):
            for e in engines:
                rec(e, "conn_rate", client(work, "conn", conn[e.name].port, args.seconds))

        med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in res.items()}
        b, d = med["berth"], med["dockerd"]
        lo = "loopback GSO 512 KiB (--big-tcp)" if args.big_tcp else "loopback GSO 64 KiB (default)"
        print(f"{args.n} samples; medians; ratio = berth / dockerd (higher is better for rates); {lo}")
        print(f"{'measurement':<22} {'berth':>10} {'dockerd':>10} {'ratio':>8}")
        print(f"{'throughput MiB/s':<22} {b['throughput']:>10.0f} {d['throughput']:>10.0f} {b['throughput'] / d['throughput']:>8.2f}")
        print(f"{'connections/s':<22} {b['conn_rate']:>10.0f} {d['conn_rate']:>10.0f} {b['conn_rate'] / d['conn_rate']:>8.2f}")
        for k in ("run_none", "run_bridge", "run_publish"):
            print(f"{k + ' ms':<22} {b[k]:>10.1f} {d[k]:>10.1f} {b[k] / d[k]:>8.2f}")
        for n, m in med.items():
            print(f"{n}: run wall-time difference to --network none: bridge {m['run_bridge'] - m['run_none']:+.1f} ms, "
                  f"bridge with -p {m['run_publish'] - m['run_none']:+.1f} ms (noisy)")
        # The daemon's own account (BERTH_NET_TIMING): what the network adds on the start and
        # remove paths, without the noise of whole `docker run`s.
        setup, rules, release = [], [], []
        for line in open(os.path.join(work, "berth", "daemon.log")):
            f = line.split()
            if line.startswith("berth-net-timing setup"):
                setup.append(float(f[2]))
                if float(f[6]) > 0:
                    rules.append(float(f[6]))
            elif line.startswith("berth-net-timing release"):
                release.append(float(f[2]))
        if setup:
            print(f"berth daemon: network setup on start median {statistics.median(setup):.2f} ms "
                  f"(n={len(setup)}), release on remove median {statistics.median(release or [0]):.2f} ms; "
                  f"firewall rules for -p {statistics.median(rules or [0]):.1f} ms, overlapped with the container's create")
    finally:
        for t in targets:
            try:
                t.close()
            except Exception:
                pass
        for e in engines:
            out = e.docker("ps", "-aq", check=False).stdout.split()
            if out:
                e.docker("rm", "-f", *out, check=False)
            e.proc.terminate()
            try:
                e.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                e.proc.kill()
        subprocess.run(["umount", "-R", "-l", work], capture_output=True)
        for d in ("berth/data/netns",):
            p = os.path.join(work, d)
            if os.path.isdir(p):
                for f in os.listdir(p):
                    subprocess.run(["umount", "-l", os.path.join(p, f)], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
