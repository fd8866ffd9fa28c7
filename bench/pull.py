#!/usr/bin/env python3
"""Image pull benchmark: Berth's ImageService against dockerd, in one run.

1. Generates (deterministically, cached) a multi-layer image of ~250 MB compressed in 6
   gzip layers, as an OCI layout: incompressible pseudo-random files of several sizes,
   compressible log-like text, and one layer of ~4000 small files with symlinks, a
   hardlink and a whiteout. diff_ids and digests are computed here.
2. Starts Debian's docker-registry on a free 127.0.0.1 port and pushes the image to it
   with skopeo (as Docker schema 2; blobs are copied unchanged).
3. Starts a private containerd and dockerd (own sockets, data roots, config file,
   containerd namespace; nothing outside 127.0.0.1 is reachable: no mirrors, and the
   image lives on a loopback registry, which Docker treats as insecure by default).
4. N interleaved iterations (order alternating): a cold Berth pull
   (`runtime/engine/examples/pull.rs`, a fresh data root each time) and a cold
   `docker pull` (a fresh dockerd data root each time; dockerd's start is not timed).
   Page cache is flushed to disk (`sync`) before each timed pull so neither side pays
   for the other's writeback. Both download 3 layers at a time (the two defaults).
5. Berth's phases: the example reports when every blob is in the content store
   (registry client's `Done`) and when the layers are unpacked; ImageService::pull does
   the two one after the other, so unpack MB/s = uncompressed bytes / unpack phase. As a
   cross-check, a "content present" pull on the same data root after deleting
   snapshots/ and images/ (keeping content/) times the unpack alone.
6. Resume: a Berth pull through a byte-counting TCP proxy is killed with SIGKILL once
   50% of the image's bytes went through the proxy, then run again on the same data
   root. Re-downloaded = (bytes of run 1 + bytes of run 2) - bytes of a clean pull
   through the same proxy, all counted on the wire (headers included). The proxy's
   client sockets get a small send buffer (--proxy-sndbuf) so that a byte counts when
   it is handed to Berth, not when it is queued in the proxy's own socket.

Needs root (dockerd), docker.io (dockerd 20.10 + CLI), containerd, docker-registry,
skopeo, and the example built:
    cargo build --release -p berth-engine --example pull
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_VERSION = "v1"  # bump when the generator changes
MTIME = 1700000000
MB = 1e6


# ---------------------------------------------------------------------------
# Image generation


def words_text(rng, size):
    """Log-like text: compresses about 5x with gzip."""
    levels = ["INFO", "DEBUG", "WARN", "ERROR", "TRACE"]
    verbs = ["accepted", "rejected", "queued", "flushed", "opened", "closed", "retried",
             "scheduled", "evicted", "committed", "resolved", "timed out"]
    nouns = ["connection", "request", "segment", "snapshot", "lease", "blob", "manifest",
             "session", "worker", "volume", "task", "checkpoint"]
    out = io.StringIO()
    n = 0
    t = 1700000000
    while n < size:
        t += rng.randrange(0, 3)
        line = "%d.%03d %s [%s-%d] %s %s id=%08x bytes=%d peer=10.%d.%d.%d\n" % (
            t, rng.randrange(1000), rng.choice(levels), rng.choice(nouns), rng.randrange(64),
            rng.choice(nouns), rng.choice(verbs), rng.getrandbits(32), rng.randrange(1 << 20),
            rng.randrange(256), rng.randrange(256), rng.randrange(256))
        out.write(line)
        n += len(line)
    return out.getvalue().encode()[:size]


def layer_specs():
    """(name, function(rng) -> list of entries). Entry: (kind, path, data-or-target)."""

    def base(rng):
        entries = [("dir", "usr", None), ("dir", "usr/lib", None), ("dir", "usr/lib/bench", None),
                   ("dir", "bin", None), ("dir", "etc", None)]
        for d in range(40):
            entries.append(("dir", "usr/lib/bench/d%02d" % d, None))
            for f in range(100):
                size = rng.randrange(512, 8192)
                if f % 2:
                    data = rng.randbytes(size)
                else:
                    data = words_text(rng, size)
                entries.append(("file", "usr/lib/bench/d%02d/f%03d" % (d, f), data))
        entries.append(("file", "etc/os-release", b"NAME=bench\nID=bench\n"))
        entries.append(("symlink", "bin/sh", "/usr/lib/bench/d00/f000"))
        entries.append(("symlink", "usr/lib/bench/latest", "d39"))
        entries.append(("hardlink", "usr/lib/bench/d00/f000.link", "usr/lib/bench/d00/f000"))
        return entries

    def big_blobs(rng):
        entries = [("dir", "opt", None), ("dir", "opt/data", None)]
        for i in range(4):
            entries.append(("file", "opt/data/blob-%d.bin" % i, rng.randbytes(16 << 20)))
        return entries

    def assets(rng):
        entries = [("dir", "opt", None), ("dir", "opt/assets", None)]
        for i in range(64):
            entries.append(("file", "opt/assets/asset-%03d.bin" % i, rng.randbytes(800 << 10)))
        entries.append(("file", "opt/assets/index.txt", words_text(rng, 256 << 10)))
        return entries

    def logs(rng):
        entries = [("dir", "usr", None), ("dir", "usr/share", None), ("dir", "usr/share/doc", None),
                   ("dir", "usr/share/doc/bench", None)]
        for i in range(8):
            entries.append(("file", "usr/share/doc/bench/log-%d.txt" % i, words_text(rng, 5 << 20)))
        return entries

    def model(rng):
        entries = [("dir", "opt", None), ("dir", "opt/model", None)]
        for i in range(2):
            entries.append(("file", "opt/model/weights-%d.bin" % i, rng.randbytes(32 << 20)))
        return entries

    def app(rng):
        entries = [("dir", "srv", None), ("dir", "srv/app", None), ("dir", "opt", None),
                   ("dir", "opt/assets", None)]
        for i in range(200):
            entries.append(("file", "srv/app/chunk-%03d.bin" % i,
                            rng.randbytes(rng.randrange(64 << 10, 512 << 10))))
        entries.append(("file", "srv/app/config.txt", words_text(rng, 64 << 10)))
        entries.append(("file", "opt/assets/.wh.asset-000.bin", b""))
        return entries

    return [("base", base), ("big-blobs", big_blobs), ("assets", assets), ("logs", logs),
            ("model", model), ("app", app)]


class HashingWriter:
    def __init__(self, f):
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)

    def flush(self):
        self.f.flush()


def write_blob(blobs, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def build_layer(blobs, seed, make):
    """Returns (digest, size, diff_id, uncompressed size)."""
    rng = random.Random(seed)
    tmp = os.path.join(blobs, "layer.tmp")
    with open(tmp, "wb") as raw:
        compressed = HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, compresslevel=6, mtime=0) as gz:
            uncompressed = HashingWriter(gz)
            with tarfile.open(fileobj=uncompressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for kind, path, data in make(rng):
                    ti = tarfile.TarInfo(path)
                    ti.mtime = MTIME
                    ti.uid = ti.gid = 0
                    ti.uname = ti.gname = "root"
                    if kind == "dir":
                        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                        tar.addfile(ti)
                    elif kind == "file":
                        ti.size, ti.mode = len(data), 0o644
                        tar.addfile(ti, io.BytesIO(data))
                    elif kind == "symlink":
                        ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, data, 0o777
                        tar.addfile(ti)
                    elif kind == "hardlink":
                        ti.type, ti.linkname, ti.mode = tarfile.LNKTYPE, data, 0o644
                        tar.addfile(ti)
    digest = compressed.h.hexdigest()
    os.replace(tmp, os.path.join(blobs, digest))
    return ("sha256:" + digest, compressed.n, "sha256:" + uncompressed.h.hexdigest(), uncompressed.n)


def generate_image(cache):
    """An OCI layout in `cache` (reused when complete). Returns its summary dict."""
    marker = os.path.join(cache, "summary.json")
    if os.path.exists(marker):
        with open(marker) as f:
            return json.load(f)
    if os.path.exists(cache):
        shutil.rmtree(cache)
    blobs = os.path.join(cache, "blobs", "sha256")
    os.makedirs(blobs)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    layers = []
    t0 = time.time()
    for i, (name, make) in enumerate(layer_specs()):
        digest, size, diff_id, usize = build_layer(blobs, "berth-bench-%s-%d" % (IMAGE_VERSION, i), make)
        layers.append({"name": name, "digest": digest, "size": size, "diff_id": diff_id,
                       "uncompressed": usize})
        print("  layer %d %-10s %7.1f MB gz, %7.1f MB tar  %s" % (i, name, size / MB, usize / MB,
                                                                digest[:19]), flush=True)
    created = "2023-11-14T22:13:20Z"
    config = {
        "architecture": arch, "os": "linux", "created": created,
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [l["diff_id"] for l in layers]},
        "history": [{"created": created, "created_by": "bench/pull.py layer %s" % l["name"]} for l in layers],
    }
    config_digest, config_size = write_blob(blobs, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l["digest"],
                    "size": l["size"]} for l in layers],
    }
    manifest_digest, manifest_size = write_blob(blobs, json.dumps(manifest, sort_keys=True).encode())
    with open(os.path.join(cache, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(cache, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
            "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": "big"}}]}, f)
    summary = {"layers": layers, "config": config_digest,
               "compressed": sum(l["size"] for l in layers),
               "uncompressed": sum(l["uncompressed"] for l in layers)}
    with open(marker + ".tmp", "w") as f:
        json.dump(summary, f)
    os.replace(marker + ".tmp", marker)
    print("  generated in %.1f s" % (time.time() - t0), flush=True)
    return summary


# ---------------------------------------------------------------------------
# Processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what, timeout=60.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s exited with %s" % (what, proc.returncode))
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("%s did not come up in %.0f s" % (what, timeout))


def http_ok(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"GET /v2/ HTTP/1.0\r\n\r\n")
        return s.recv(16).startswith(b"HTTP/1.")


def unix_ping(path):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(1)
        s.connect(path)
        s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
        return b"200 OK" in s.recv(64)


def stop(proc, grace=15.0):
    """SIGTERM, wait, then SIGKILL: only this process."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def unmount_under(path):
    """Lazily unmounts every mount point under `path`, deepest first."""
    path = os.path.realpath(path)
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == path or mp.startswith(path + "/"):
                points.append(mp)
    for mp in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], stderr=subprocess.DEVNULL)


def remove_tree(path):
    if os.path.exists(path):
        unmount_under(path)
        shutil.rmtree(path, ignore_errors=True)


class Registry:
    def __init__(self, base):
        self.dir = os.path.join(base, "registry")
        os.makedirs(self.dir)
        self.port = free_port()
        cfg = os.path.join(self.dir, "config.yml")
        with open(cfg, "w") as f:
            f.write("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                    "storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n"
                    "http:\n  addr: 127.0.0.1:%d\n" % (os.path.join(self.dir, "data"), self.port))
        self.proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "log"), "wb"))
        wait_for(lambda: http_ok(self.port), "docker-registry", proc=self.proc)

    def close(self):
        stop(self.proc, 5)


class Docker:
    """A private containerd + dockerd. `restart()` gives dockerd a fresh data root."""

    def __init__(self, base, dockerd, docker_cli, containerd):
        self.base = os.path.join(base, "docker")
        self.dockerd_bin, self.cli, self.containerd_bin = dockerd, docker_cli, containerd
        self.ctr_dir = os.path.join(self.base, "containerd")
        os.makedirs(self.ctr_dir)
        self.ctr_sock = os.path.join(self.ctr_dir, "c.sock")
        cfg = os.path.join(self.ctr_dir, "config.toml")
        with open(cfg, "w") as f:
            f.write('version = 2\nroot = "%s"\nstate = "%s"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    '[grpc]\n  address = "%s"\n[ttrpc]\n  address = "%s.ttrpc"\n[debug]\n  address = ""\n'
                    '[metrics]\n  address = ""\n' % (os.path.join(self.ctr_dir, "root"),
                                                    os.path.join(self.ctr_dir, "state"),
                                                    self.ctr_sock, self.ctr_sock))
        self.containerd = subprocess.Popen([containerd, "--config", cfg], stdout=subprocess.DEVNULL,
                                           stderr=open(os.path.join(self.ctr_dir, "log"), "wb"))
        wait_for(lambda: os.path.exists(self.ctr_sock), "containerd", proc=self.containerd)
        self.client_config = os.path.join(self.base, "client")
        os.makedirs(self.client_config)
        with open(os.path.join(self.client_config, "config.json"), "w") as f:
            f.write("{}")
        self.daemon_config = os.path.join(self.base, "daemon.json")
        with open(self.daemon_config, "w") as f:
            # Not /etc/docker/key.json (dockerd 20.10's libtrust key): nothing outside our dirs.
            json.dump({"deprecated-key-path": os.path.join(self.base, "key.json")}, f)
        self.proc = None
        self.generation = 0

    def env(self):
        e = dict(os.environ)
        e["DOCKER_HOST"] = "unix://" + self.sock
        e["DOCKER_CONFIG"] = self.client_config
        e.pop("DOCKER_CONTEXT", None)
        return e

    def start(self):
        self.generation += 1
        d = os.path.join(self.base, "d%d" % self.generation)
        self.root, self.exec_root = os.path.join(d, "data"), os.path.join(d, "exec")
        os.makedirs(self.root)
        os.makedirs(self.exec_root)
        self.sock = os.path.join(d, "docker.sock")
        self.proc = subprocess.Popen(
            [self.dockerd_bin, "--data-root", self.root, "--exec-root", self.exec_root,
             "--pidfile", os.path.join(d, "docker.pid"), "--host", "unix://" + self.sock,
             "--config-file", self.daemon_config, "--containerd", self.ctr_sock,
             "--containerd-namespace", "berth-bench", "--containerd-plugins-namespace", "berth-bench-plugins",
             "--bridge", "none", "--iptables=false", "--ip-masq=false", "--storage-driver", "overlay2",
             "--log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "dockerd.log"), "wb"))
        wait_for(lambda: unix_ping(self.sock), "dockerd", proc=self.proc)

    def stop(self):
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
            d = os.path.dirname(self.root)
            remove_tree(d)

    def restart(self):
        self.stop()
        self.start()

    def pull(self, ref):
        t0 = time.perf_counter()
        r = subprocess.run([self.cli, "pull", "-q", ref], env=self.env(), capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError("docker pull failed: %s" % (r.stderr.strip() or r.stdout.strip()))
        return elapsed

    def close(self):
        self.stop()
        stop(self.containerd, 10)
        remove_tree(self.base)


class CountingProxy:
    """127.0.0.1:<port> -> 127.0.0.1:<upstream>, counting bytes sent to clients.

    A byte counts once sendall() returned, i.e. once it is in the client socket's send
    buffer. With the kernel's default (autotuned up to tcp_wmem's 4 MiB per socket) the
    proxy runs megabytes ahead of a reader that pauses for a moment, and those bytes,
    never delivered, were counted as downloaded; it also lets the reader's receive queue
    grow. `sndbuf` (bytes; 0 = kernel default) keeps "counted" within that much of
    "handed to the reader", and paces the proxy with its reader as a network path would."""

    def __init__(self, upstream, sndbuf):
        self.upstream = upstream
        self.sndbuf = sndbuf
        self.lock = threading.Lock()
        self.down = 0
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def reset(self):
        with self.lock:
            self.down = 0

    def bytes(self):
        with self.lock:
            return self.down

    def accept_loop(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            if self.sndbuf:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
            threading.Thread(target=self.pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self.pipe, args=(server, client, True), daemon=True).start()

    def pipe(self, src, dst, count):
        try:
            while True:
                data = src.recv(1 << 18)
                if not data:
                    break
                dst.sendall(data)
                if count:
                    with self.lock:
                        self.down += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            src.close()

    def close(self):
        self.listener.close()


# ---------------------------------------------------------------------------
# Berth


def parse_result(line):
    return {k: v for k, v in (kv.split("=", 1) for kv in line.split()[1:])}


def berth_pull(example, root, ref, kill_when=None):
    """Runs the example; returns (wall seconds, result dict or None if killed, lines)."""
    os.sync()
    t0 = time.perf_counter()
    proc = subprocess.Popen([example, root, ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = False
    if kill_when is not None:
        while proc.poll() is None:
            if kill_when():
                proc.kill()
                killed = True
                break
            time.sleep(0.002)
    out, err = proc.communicate()
    elapsed = time.perf_counter() - t0
    lines = out.splitlines()
    if killed:
        return elapsed, None, lines
    if proc.returncode != 0:
        raise RuntimeError("berth pull failed (%s): %s" % (proc.returncode, err.strip()))
    results = [parse_result(l) for l in lines if l.startswith("result ")]
    if not results:
        raise RuntimeError("berth pull printed no result: %s" % err.strip())
    return elapsed, results[0], lines


def default_example():
    for profile in ("release", "debug"):
        p = os.path.join(REPO, "target", profile, "examples", "pull")
        if os.path.isfile(p):
            return p
    return os.path.join(REPO, "target", "release", "examples", "pull")


def p90(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=5, help="iterations of each (default 5)")
    ap.add_argument("--example", default=default_example(), help="the berth-engine `pull` example binary")
    ap.add_argument("--dockerd", default="/usr/sbin/dockerd")
    ap.add_argument("--docker", default="/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker",
                    help="docker CLI (default: docker.io's, matching dockerd 20.10)")
    ap.add_argument("--containerd", default=shutil.which("containerd") or "/usr/bin/containerd")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "berth-bench-pull-image-" + IMAGE_VERSION),
                    help="where the generated image is kept between runs")
    ap.add_argument("--workdir", default="/var/tmp", help="data roots go in a fresh directory under this")
    ap.add_argument("--no-docker", action="store_true", help="Berth only")
    ap.add_argument("--no-resume", action="store_true", help="skip the resume measurement")
    ap.add_argument("--resume-runs", type=int, default=3, help="repetitions of the resume measurement (default 3)")
    ap.add_argument("--kill-at", type=float, default=0.5, help="fraction of bytes at which the resume run is killed")
    ap.add_argument("--proxy-sndbuf", type=int, default=64 << 10,
                    help="SO_SNDBUF of the counting proxy's client sockets, bytes (default 64 KiB; "
                         "0 = kernel default, which over-counts: see CountingProxy)")
    args = ap.parse_args()

    if not os.path.isfile(args.example):
        sys.exit("%s not found: cargo build --release -p berth-engine --example pull" % args.example)
    use_docker = not args.no_docker
    if use_docker and os.geteuid() != 0:
        sys.exit("dockerd needs root (or use --no-docker)")
    if use_docker and not os.path.isfile(args.dockerd):
        print("note: %s not found; Berth only" % args.dockerd)
        use_docker = False

    print("image (cache %s):" % args.cache, flush=True)
    image = generate_image(args.cache)
    total_gz, total_tar = image["compressed"], image["uncompressed"]
    print("  %d layers, %.1f MB compressed, %.1f MB uncompressed" % (len(image["layers"]), total_gz / MB,
                                                                      total_tar / MB), flush=True)

    base = tempfile.mkdtemp(prefix="berth-bench-pull-", dir=args.workdir)
    registry = docker = proxy = None
    try:
        registry = Registry(base)
        ref = "127.0.0.1:%d/bench/big:1" % registry.port
        r = subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
                            "--format", "v2s2", "oci:%s:big" % args.cache, "docker://" + ref],
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit("skopeo copy failed: %s" % r.stderr.strip())
        print("registry 127.0.0.1:%d, pushed %s" % (registry.port, ref), flush=True)

        if use_docker:
            docker = Docker(base, args.dockerd, args.docker, args.containerd)
        berth_times, berth_download, berth_unpack, berth_warm, docker_times = [], [], [], [], []
        for i in range(args.n):
            order = ["berth", "docker"] if i % 2 == 0 else ["docker", "berth"]
            for who in order:
                if who == "berth":
                    root = os.path.join(base, "berth-%d" % i)
                    wall, res, _ = berth_pull(args.example, root, ref)
                    berth_times.append(wall)
                    berth_download.append(float(res["download"]))
                    berth_unpack.append(float(res["unpack"]))
                    # Content present: only the unpack runs.
                    shutil.rmtree(os.path.join(root, "snapshots"))
                    shutil.rmtree(os.path.join(root, "images"))
                    _, warm, _ = berth_pull(args.example, root, ref)
                    if int(warm["transferred"]) != 0:
                        raise RuntimeError("content-present pull downloaded %s bytes" % warm["transferred"])
                    berth_warm.append(float(warm["unpack"]))
                    remove_tree(root)
                    print("  %d berth  %.2f s (download %.2f + unpack %.2f; content-present unpack %.2f)" % (
                        i, wall, berth_download[-1], berth_unpack[-1], berth_warm[-1]), flush=True)
                elif docker is not None:
                    docker.restart()
                    os.sync()
                    docker_times.append(docker.pull(ref))
                    print("  %d docker %.2f s" % (i, docker_times[-1]), flush=True)
        if docker is not None:
            docker.close()
            docker = None

        resumes = []
        if not args.no_resume:
            proxy = CountingProxy(registry.port, args.proxy_sndbuf)
            pref = "127.0.0.1:%d/bench/big:1" % proxy.port
            root = os.path.join(base, "berth-resume")
            _, res0, _ = berth_pull(args.example, root, pref)
            clean = proxy.bytes()
            through_proxy = clean / MB / float(res0["download"])
            print("  clean pull through the proxy: download %.2f s = %.1f MB/s" % (
                float(res0["download"]), through_proxy), flush=True)
            remove_tree(root)
            for i in range(args.resume_runs):
                proxy.reset()
                target = args.kill_at * total_gz
                _, res1, lines1 = berth_pull(args.example, root, pref, kill_when=lambda: proxy.bytes() >= target)
                time.sleep(0.2)  # let the proxy threads finish counting what they already sent
                first = proxy.bytes()
                if res1 is not None:
                    print("note: resume run %d finished before it could be killed" % i)
                progress = [int(l.split()[1]) for l in lines1 if l.startswith("progress ")]
                proxy.reset()
                _, res2, lines2 = berth_pull(args.example, root, pref)
                second = proxy.bytes()
                remove_tree(root)
                r = {"clean": clean, "first": first, "second": second,
                     # What the killed process had read from its sockets (to within 1 MiB).
                     "received": progress[-1] if progress else 0,
                     "kept": int(res2["resumed"]) + int(res2["skipped"]),
                     "partial_layers": sum(1 for l in lines2 if l.startswith("started ") and l.split()[3] != "0"),
                     "whole_layers": sum(1 for l in lines2 if l.startswith("skipped "))}
                r["again"] = first + second - clean
                r["lost_in_process"] = max(0, r["received"] - r["kept"])
                r["lost_in_flight"] = max(0, first - r["received"])
                resumes.append(r)
                print("  resume %d: killed at %.1f MB on the wire (%.1f MB read by berth), kept %.1f MB, "
                      "downloaded again %.1f MB" % (i, first / MB, r["received"] / MB, r["kept"] / MB,
                                                   r["again"] / MB), flush=True)
            proxy.close()
            proxy = None
    finally:
        if docker is not None:
            docker.close()
        if proxy is not None:
            proxy.close()
        if registry is not None:
            registry.close()
        remove_tree(base)

    print()
    print("== cold pull of %s: %d layers, %.1f MB compressed, %.1f MB uncompressed ==" % (
        "bench/big:1", len(image["layers"]), total_gz / MB, total_tar / MB))
    print("%d iterations each, interleaved; a fresh data root per pull; 3 concurrent layer downloads" % args.n)
    if docker_times:
        print("dockerd decompresses layers with %s" % ("unpigz (%s)" % shutil.which("unpigz") if shutil.which("unpigz")
                                                     else "Go's compress/gzip (no unpigz in PATH; apt-get install pigz)"))
    base_med = statistics.median(docker_times) if docker_times else None
    print("%-16s %10s %10s %14s %16s" % ("puller", "median s", "p90 s", "ratio/dockerd", "MB/s (tar/wall)"))
    rows = [("berth", berth_times)]
    if docker_times:
        rows.append(("dockerd 20.10", docker_times))
    for name, xs in rows:
        med = statistics.median(xs)
        print("%-16s %10.2f %10.2f %14s %16.1f" % (name, med, p90(xs),
                                                   "%.2f" % (med / base_med) if base_med else "-",
                                                   total_tar / MB / med))
    print()
    print("Berth phases (medians): download %.2f s = %.1f MB/s compressed; unpack %.2f s = %.1f MB/s uncompressed"
          % (statistics.median(berth_download), total_gz / MB / statistics.median(berth_download),
             statistics.median(berth_unpack), total_tar / MB / statistics.median(berth_unpack)))
    print("Berth unpack with the content already present: %.2f s = %.1f MB/s uncompressed" % (
        statistics.median(berth_warm), total_tar / MB / statistics.median(berth_warm)))
    if resumes:
        clean = resumes[0]["clean"]
        med = lambda key: statistics.median(r[key] for r in resumes)
        print()
        print("== resume: a Berth pull killed (SIGKILL) at %.0f%% of the bytes, then run again; "
              "%d runs, medians ==" % (args.kill_at * 100, len(resumes)))
        print("wire bytes (through a counting proxy, SO_SNDBUF %s, clean pull at %.0f MB/s): clean pull %.1f MB; "
              "killed run %.1f MB; resumed run %.1f MB" % (
                  "%d KiB" % (args.proxy_sndbuf >> 10) if args.proxy_sndbuf else "kernel default",
                  through_proxy, clean / MB, med("first") / MB, med("second") / MB))
        print("kept by the killed run: %.1f MB (whole layers %s, partial layers resumed with Range %s)" % (
            med("kept") / MB, "/".join(str(r["whole_layers"]) for r in resumes),
            "/".join(str(r["partial_layers"]) for r in resumes)))
        print("lost at the kill: %.1f MB read by berth but not yet on disk (the ingest writers' queues),"
              % (med("lost_in_process") / MB))
        print("  %.1f MB counted by the proxy but not yet read by berth (socket buffers)" % (
            med("lost_in_flight") / MB))
        print("downloaded again: %.2f MB = %.2f%% of the image (each run: %s; target < 5%%)" % (
            med("again") / MB, 100.0 * med("again") / clean,
            ", ".join("%.2f%%" % (100.0 * r["again"] / clean) for r in resumes)))


if __name__ == "__main__":
    main()
