#!/usr/bin/env python3
"""Engine benchmark: the same `docker` CLI against Berth's socket and against dockerd.

Measured in one run, interleaved, medians of N:
  run_rm       docker run --rm busybox true
  run_d_rm     docker run -d busybox sleep 60, then docker rm -f
  ps_50        docker ps with 50 running containers
  start_50     50 `docker run -d` started concurrently (wall time of the batch)
and the daemons' idle memory (PSS of berth daemon + its helpers vs dockerd + containerd).

ps_50 also runs against a stub that answers /_ping and /containers/json instantly with the
bytes Berth sent: the docker CLI's own time, which no daemon can go below (its ratio to
dockerd is the best ps_50 ratio any engine can reach).

Both engines get private sockets and data roots; dockerd runs with networking off
(--bridge none, no iptables), containers with --network none, so nothing leaves the
machine. busybox is imported into both from the host's busybox-static.

Needs root, docker (client), docker.io (dockerd), busybox-static, and a built
`berth` (target/release or target/debug, or $BERTH).
"""

import argparse
import concurrent.futures
import os
import shutil
import socket
import socketserver
import threading
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_berth():
    """$BERTH, else the most recently built berth (static release, release, debug)."""
    if os.environ.get("BERTH"):
        return os.environ["BERTH"]
    found = [os.path.join(REPO, p) for p in (
        "target/x86_64-unknown-linux-gnu/release/berth", "target/release/berth", "target/debug/berth")]
    found = [p for p in found if os.path.isfile(p)]
    if not found:
        sys.exit("build berth first: cargo build --release -p berth -p berth-engine --bins")
    return max(found, key=os.path.getmtime)


def wait_for_socket(sock, proc, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited during startup (status {proc.returncode})")
        r = subprocess.run(["docker", "-H", f"unix://{sock}", "version"], capture_output=True)
        if r.returncode == 0:
            return
        time.sleep(0.1)
    sys.exit(f"{what} did not answer on {sock} within {timeout}s")


class Engine:
    def __init__(self, name, sock, proc, pids_fn):
        self.name, self.sock, self.proc, self.pids_fn = name, sock, proc, pids_fn

    def docker(self, *args, check=True):
        r = subprocess.run(["docker", "-H", f"unix://{self.sock}", *args], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"{self.name}: docker {' '.join(args)} failed: {r.stderr.strip()}")
        return r


def start_stub(work, list_body):
    """A Docker API stub on a Unix socket: /_ping and /containers/json, answered at once."""
    sock = os.path.join(work, "stub.sock")

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                method, path = line.split(b" ")[:2]
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass
                ping = b"/_ping" in path
                body = b"OK" if ping else list_body
                head = (b"HTTP/1.1 200 OK\r\nApi-Version: 1.45\r\nOstype: linux\r\n"
                        b"Content-Type: " + (b"text/plain" if ping else b"application/json") +
                        b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
                self.wfile.write(head + (b"" if method == b"HEAD" else body))
                self.wfile.flush()

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    server = Server(sock, Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return sock, server


def containers_json(sock):
    """GET /containers/json from the engine at `sock`, the body's bytes."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(b"GET /v1.45/containers/json HTTP/1.0\r\nHost: x\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return data.split(b"\r\n\r\n", 1)[1]


def start_berth(work):
    root = os.path.join(work, "berth")
    os.makedirs(root)
    sock = os.path.join(root, "berth.sock")
    proc = subprocess.Popen(
        [find_berth(), "daemon", "--host", f"unix://{sock}", "--data-root", os.path.join(root, "data")],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(root, "daemon.log"), "w"))
    wait_for_socket(sock, proc, "berth daemon")
    return Engine("berth", sock, proc, lambda: descendants(proc.pid, include_self=True))


def start_dockerd(work):
    root = os.path.join(work, "docker")
    os.makedirs(root)
    sock = os.path.join(root, "docker.sock")
    proc = subprocess.Popen(
        ["dockerd", "--data-root", os.path.join(root, "data"), "--exec-root", os.path.join(root, "exec"),
         "--pidfile", os.path.join(root, "docker.pid"), "--host", f"unix://{sock}",
         "--bridge", "none", "--iptables=false", "--ip-masq=false", "--ip-forward=false",
         "--storage-driver", "overlay2"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(root, "dockerd.log"), "w"))
    wait_for_socket(sock, proc, "dockerd")
    return Engine("dockerd", sock, proc, lambda: descendants(proc.pid, include_self=True))


def descendants(pid, include_self=False):
    out = [pid] if include_self else []
    try:
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return out
    for c in children:
        out.extend(descendants(int(c), include_self=True))
    return out


def pss_kib(pids):
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def busybox_tar(work):
    path = os.path.join(work, "busybox.tar")
    with tarfile.open(path, "w") as t:
        t.add("/bin/busybox", arcname="bin/busybox")
        for applet in ("sh", "true", "sleep", "echo"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            t.addfile(info)
    return path


def timed(fn):
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10, help="iterations per measurement")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    work = tempfile.mkdtemp(prefix="berth-bench-engine-")
    engines = []
    try:
        engines = [start_berth(work), start_dockerd(work)]
        tar = busybox_tar(work)
        for e in engines:
            e.docker("import", tar, "busybox:latest")
        time.sleep(1)
        idle = {e.name: pss_kib(e.pids_fn()) for e in engines}
        results = {e.name: {} for e in engines}

        def record(e, key, ms):
            results[e.name].setdefault(key, []).append(ms)

        for _ in range(args.n):
            for e in engines:
                record(e, "run_rm", timed(lambda: e.docker("run", "--rm", "--network", "none", "busybox", "true")))
                def run_d_rm():
                    cid = e.docker("run", "-d", "--network", "none", "busybox", "sleep", "60").stdout.strip()
                    e.docker("rm", "-f", cid)
                record(e, "run_d_rm", timed(run_d_rm))
        for e in engines:
            def one(_):
                return e.docker("run", "-d", "--network", "none", "busybox", "sleep", "300").stdout.strip()
            with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
                t = time.perf_counter()
                ids = list(pool.map(one, range(50)))
                record(e, "start_50", (time.perf_counter() - t) * 1000)
            for _ in range(args.n):
                record(e, "ps_50", timed(lambda: e.docker("ps")))
            if e.name == "berth":
                stub_sock, stub = start_stub(work, containers_json(e.sock))
                floor = []
                for _ in range(args.n):
                    floor.append(timed(lambda: subprocess.run(
                        ["docker", "-H", f"unix://{stub_sock}", "ps"], capture_output=True, check=True)))
                stub.shutdown()
            e.docker("rm", "-f", *ids, check=False)

        print(f"{args.n} iterations; medians in ms; ratio = berth / dockerd")
        print(f"{'measurement':<12} {'berth':>10} {'dockerd':>10} {'ratio':>8}")
        for key in ("run_rm", "run_d_rm", "ps_50", "start_50"):
            b = statistics.median(results["berth"][key])
            d = statistics.median(results["dockerd"][key])
            print(f"{key:<12} {b:>10.1f} {d:>10.1f} {b / d:>8.2f}")
        f = statistics.median(floor)
        d = statistics.median(results["dockerd"]["ps_50"])
        print(f"{'ps_50 floor':<12} {f:>10.1f} {d:>10.1f} {f / d:>8.2f}   (docker CLI against an instant stub)")
        b, d = idle["berth"], idle["dockerd"]
        print(f"{'idle PSS KiB':<12} {b:>10} {d:>10} {b / d:>8.2f}   (dockerd includes its containerd)")
    finally:
        for e in engines:
            e.proc.terminate()
            try:
                e.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                e.proc.kill()
        subprocess.run(["umount", "-R", "-l", work], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
