"""docker-py (from PyPI) against Berth: create, start, wait, logs, exec,
archives, volumes and remove, through docker.DockerClient on a Unix socket.

Usage: docker_py_check.py SOCKET IMAGE. Exits non-zero with a message on the
first check that fails; every container and volume it made is removed.
"""

import io
import sys
import tarfile
import time

import docker

SOCKET, IMAGE = sys.argv[1], sys.argv[2]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def poll(fn, what, timeout=30.0):
    """Polls fn() until it is truthy, with a deadline (no blind sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


client = docker.DockerClient(base_url="unix://" + SOCKET, timeout=60)
made_containers, made_volumes = [], []
try:
    check(client.ping(), "ping")
    check(client.version()["ApiVersion"], "version")

    # create + start + logs + exec + wait + remove
    c = client.containers.create(
        IMAGE,
        ["sh", "-c", "echo hello-from-py; echo oops >&2; sleep 30"],
        name="pycheck",
        volumes={"pyvol": {"bind": "/data", "mode": "rw"}},
        labels={"suite": "docker-py"},
    )
    made_containers.append(c)
    made_volumes.append("pyvol")
    c.start()
    c.reload()
    check(c.status == "running", "status running, got %r" % c.status)
    poll(lambda: b"hello-from-py" in c.logs(stdout=True, stderr=False), "stdout in logs")
    check(b"oops" in c.logs(stdout=False, stderr=True), "stderr in logs")
    code, out = c.exec_run(["sh", "-c", "echo in-volume > /data/f; cat /data/f"])
    check(code == 0 and out == b"in-volume\n", "exec: %r %r" % (code, out))
    code, out = c.exec_run(["sh", "-c", "exit 3"])
    check(code == 3, "exec exit code %r" % code)
    check(
        any(m["Name"] == "pyvol" for m in c.attrs["Mounts"]),
        "Mounts in inspect: %r" % c.attrs["Mounts"],
    )
    listed = client.containers.list(filters={"label": "suite=docker-py"})
    check([x.id for x in listed] == [c.id], "list with a label filter")

    # archives both ways
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"put by docker-py\n"
        info = tarfile.TarInfo("put.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    check(c.put_archive("/data", buf.getvalue()), "put_archive")
    bits, stat = c.get_archive("/data/put.txt")
    check(stat["name"] == "put.txt", "stat %r" % stat)
    got = tarfile.open(fileobj=io.BytesIO(b"".join(bits)))
    check(got.extractfile("put.txt").read() == b"put by docker-py\n", "get_archive content")

    c.stop(timeout=1)
    result = c.wait(timeout=30)
    check(result["StatusCode"] == 137, "wait: %r" % result)
    c.remove()
    made_containers.remove(c)

    # run (create + start + wait + logs) with remove
    out = client.containers.run(IMAGE, ["echo", "run-ok"], remove=True)
    check(out == b"run-ok\n", "run output %r" % out)

    # volumes
    v = client.volumes.create("pyvol2", labels={"k": "v"})
    made_volumes.append("pyvol2")
    check(v.attrs["Mountpoint"], "volume mountpoint")
    names = [x.name for x in client.volumes.list(filters={"label": "k=v"})]
    check(names == ["pyvol2"], "volume list %r" % names)
    v.remove()
    made_volumes.remove("pyvol2")
    print("docker-py checks passed")
finally:
    for c in made_containers:
        try:
            c.remove(force=True)
        except Exception:
            pass
    for name in made_volumes:
        try:
            client.volumes.get(name).remove(force=True)
        except Exception:
            pass
