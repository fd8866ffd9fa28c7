#!/usr/bin/env python3
"""Container lifecycle benchmark: berth-runc against runc and crun, in one run.

Each iteration runs, for every runtime in turn (round-robin, so noise hits all of them
alike):  create -> start -> wait until the container's /bin/true exited -> delete,
on a busybox bundle with the `runc spec` default config (terminal false, args
["/bin/true"], a fresh cgroupsPath per iteration). Every runtime gets its own --root.

Reported per runtime: median and p90 wall time of the whole sequence, the ratio to
berth-runc, and the peak RSS of the runtime processes: ru_maxrss from wait4 of each runtime
invocation, taken in a separate untimed pass through GNU time (`/usr/bin/time -f %M`, which
calls wait4). Not from Python's own wait4: a child forked from Python carries Python's RSS
high-water mark (~15 MiB) into ru_maxrss across exec, hiding anything smaller. The script
is not a subreaper, so container processes are not counted.

Two tables: pure cgroup v2 (a private mount namespace with cgroup2 alone on
/sys/fs/cgroup; all three runtimes; crun refuses hybrid mode) and the host's own
hybrid cgroups (berth-runc and runc). Needs root, busybox-static, util-linux.
"""

import argparse
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUSYBOX = "/bin/busybox"


def default_berth():
    # Prefer the static release build (scripts/build-static.sh): what we ship.
    candidates = [os.path.join(REPO, "target", "x86_64-unknown-linux-gnu", "release", "berth-runc")]
    candidates += [os.path.join(REPO, "target", profile, "berth-runc") for profile in ("release", "debug")]
    for p in candidates:
        if os.path.isfile(p):
            return p
    return os.path.join(REPO, "target", "release", "berth-runc")


def spec(cgroups_path, device_rules=True):
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    s = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/true"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }
    if not device_rules:
        del s["linux"]["resources"]["devices"]
    return s


def make_bundle(path):
    rootfs = os.path.join(path, "rootfs")
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    shutil.copy(BUSYBOX, os.path.join(rootfs, "bin", "busybox"))
    for applet in ("true", "sh"):
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))


class Failure(Exception):
    pass


GNU_TIME = "/usr/bin/time"


def invoke(argv, measure_rss=False):
    """Runs argv, returns (exit code, ru_maxrss KiB or 0, stderr text)."""
    err = tempfile.TemporaryFile()
    rss_file = None
    if measure_rss:
        rss_file = tempfile.NamedTemporaryFile(prefix="rss-")
        argv = [GNU_TIME, "-f", "%M", "-o", rss_file.name, *argv]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    code = proc.wait()
    err.seek(0)
    rss = 0
    if rss_file:
        text = open(rss_file.name).read().split()
        rss = int(text[-1]) if text and text[-1].isdigit() else 0
        rss_file.close()
    return code, rss, err.read().decode(errors="replace")


class Runtime:
    def __init__(self, name, binary, workdir, device_rules):
        self.device_rules = device_rules
        self.name = name
        self.binary = binary
        self.root = os.path.join(workdir, "root-" + name)
        self.bundle = os.path.join(workdir, "bundle-" + name)
        os.makedirs(self.root)
        make_bundle(self.bundle)
        self.times = []
        self.peak_rss = {}  # command -> KiB
        self.measure_rss = False
        self.counter = 0

    def rt(self, *args):
        argv = [self.binary, "--root", self.root, *args]
        code, rss, err = invoke(argv, self.measure_rss)
        if self.measure_rss:
            self.peak_rss[args[0]] = max(self.peak_rss.get(args[0], 0), rss)
        if code != 0:
            raise Failure("`%s` exited %d: %s" % (" ".join(argv), code, err.strip()[-500:]))

    def iteration(self, record=True):
        self.counter += 1
        cid = "bench-%s-%d-%d" % (self.name, os.getpid(), self.counter)
        with open(os.path.join(self.bundle, "config.json"), "w") as f:
            json.dump(spec("/berth-bench/" + cid, self.device_rules), f)
        pidfile = os.path.join(self.bundle, "init.pid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        t0 = time.perf_counter()
        try:
            self.rt("create", "--bundle", self.bundle, "--pid-file", pidfile, cid)
            with open(pidfile) as f:
                pid = int(f.read().strip())
            pidfd = os.pidfd_open(pid)
            try:
                self.rt("start", cid)
                # The pidfd turns readable when the container's process exits.
                if not select.select([pidfd], [], [], 30)[0]:
                    raise Failure("container %s did not exit within 30 s" % cid)
            finally:
                os.close(pidfd)
            self.rt("delete", cid)
        except Failure:
            invoke([self.binary, "--root", self.root, "delete", "--force", cid])
            raise
        elapsed = time.perf_counter() - t0
        if record:
            self.times.append(elapsed)


def p90(xs):
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


def bench(title, candidates, iterations, workdir, device_rules):
    print("\n== %s ==" % title, flush=True)
    runtimes = []
    for name, binary in candidates:
        if not binary or not os.path.isfile(binary) or not os.access(binary, os.X_OK):
            print("skipped %s: binary %s not found" % (name, binary or "(none)"))
            continue
        r = Runtime(name, binary, os.path.join(workdir, title.split()[0]), device_rules)
        try:
            r.iteration(record=False)  # warm-up, and a check that it works at all
        except (Failure, OSError) as e:
            hint = ""
            if "RLIM_MEMLOCK" in str(e):
                hint = ("\n  (crun raises RLIMIT_MEMLOCK before loading its eBPF device filter; this "
                        "process lacks CAP_SYS_RESOURCE. Rerun with --no-device-rules to compare "
                        "all runtimes without device cgroup rules.)")
            print("skipped %s: %s%s" % (name, e, hint))
            continue
        runtimes.append(r)
    if not runtimes:
        print("no runtime works here")
        return
    for i in range(iterations):
        k = i % len(runtimes)
        for r in runtimes[k:] + runtimes[:k]:
            r.iteration()
    rss_note = ""
    if os.access(GNU_TIME, os.X_OK):
        for r in runtimes:
            r.measure_rss = True
            for _ in range(3):
                r.iteration(record=False)
            r.measure_rss = False
    else:
        rss_note = " (no RSS: install GNU time, Debian package `time`)"
    base = next((r for r in runtimes if r.name == "berth-runc"), None)
    base_label = "berth-runc" if base else runtimes[0].name + " (berth-runc skipped)"
    base = base or runtimes[0]
    base_median = statistics.median(base.times)
    print("%d iterations each, create+start+wait+delete of /bin/true; ratio = median / median of %s%s"
          % (iterations, base_label, rss_note))
    print("%-12s %10s %10s %8s %14s  %s" % ("runtime", "median ms", "p90 ms", "ratio", "peak RSS KiB", "(peak RSS per command)"))
    for r in runtimes:
        med = statistics.median(r.times)
        per_cmd = ", ".join("%s %d" % kv for kv in sorted(r.peak_rss.items()))
        print("%-12s %10.1f %10.1f %8.2f %14d  (%s)" % (
            r.name, med * 1e3, p90(r.times) * 1e3, med / base_median,
            max(r.peak_rss.values(), default=0), per_cmd))
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--iterations", type=int, default=30)
    ap.add_argument("--berth", default=default_berth(), help="berth-runc binary")
    ap.add_argument("--runc", default=shutil.which("runc"))
    ap.add_argument("--crun", default=shutil.which("crun"))
    ap.add_argument("--no-device-rules", action="store_true",
                    help="leave linux.resources.devices out of the config (for every runtime)")
    ap.add_argument("--only", choices=["v2", "hybrid"], help="run one of the two tables")
    ap.add_argument("--inner-v2", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    device_rules = not args.no_device_rules
    if not device_rules and not args.inner_v2:
        print("config: no linux.resources.devices rules (--no-device-rules)")

    if args.inner_v2:
        # In our own mount namespace: make it private, then put cgroup2 alone on /sys/fs/cgroup.
        subprocess.run(["mount", "--make-rprivate", "/"], check=True)
        subprocess.run(["mount", "-t", "cgroup2", "none", "/sys/fs/cgroup"], check=True)
        with tempfile.TemporaryDirectory(prefix="berth-bench-") as work:
            bench("cgroup v2 (private mount namespace, cgroup2 alone on /sys/fs/cgroup)",
                  [("berth-runc", args.berth), ("runc", args.runc), ("crun", args.crun)],
                  args.iterations, work, device_rules)
        return

    if args.only in (None, "v2"):
        inner = ["unshare", "-m", sys.executable, os.path.abspath(__file__), "--inner-v2",
                 "-n", str(args.iterations), "--berth", args.berth or "",
                 "--runc", args.runc or "", "--crun", args.crun or ""]
        if args.no_device_rules:
            inner.append("--no-device-rules")
        subprocess.run(inner, check=True)
    if args.only in (None, "hybrid"):
        with tempfile.TemporaryDirectory(prefix="berth-bench-") as work:
            bench("hybrid cgroups (the host's v1 controllers + unified)",
                  [("berth-runc", args.berth), ("runc", args.runc)], args.iterations, work,
                  device_rules)


if __name__ == "__main__":
    main()
