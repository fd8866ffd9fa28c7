//! The real `docker` CLI running containers through Berth's API: the
//! embedded `hello` image offline, and a busybox image imported from the
//! host's busybox-static.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Server;

/// Removes every container of the server when the test ends, even on failure.
struct Cleanup<'a>(&'a Server);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let out = self.0.docker(&["ps", "-aq"]);
        let ids = String::from_utf8_lossy(&out.stdout).into_owned();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = self.0.docker(&args);
        }
    }
}

fn import_busybox(server: &Server) {
    let root = server.busybox_rootfs(&["sh", "sleep", "echo", "cat", "true"]);
    server.import_rootfs(&root);
}

#[test]
fn docker_run_rm_hello_prints_its_greeting() {
    let server = Server::start();
    let _cleanup = Cleanup(&server);
    let out = server.docker_ok(&["run", "--rm", "hello"]);
    assert!(out.contains("Hello from Berth!"), "{out}");
    assert!(out.contains("pid 1"), "{out}");
    // --rm: nothing is left.
    assert_eq!(server.docker_ok(&["ps", "-aq"]).trim(), "");
}

#[test]
fn docker_container_lifecycle_with_busybox() {
    let server = Server::start();
    let _cleanup = Cleanup(&server);
    import_busybox(&server);

    // Exit codes and both streams come through.
    let out = server.docker(&[
        "run",
        "--name",
        "codes",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err"));
    let logs = server.docker(&["logs", "codes"]);
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "out\n");
    assert!(String::from_utf8_lossy(&logs.stderr).contains("err"));

    // Output of a container that exits at once is never lost (the attach
    // connection is made before start, and survives the client's
    // half-close): a race shows up within a few runs.
    for i in 0..5 {
        let text = format!("run {i}");
        let out = server.docker(&["run", "--rm", "busybox", "echo", &text]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), text);
    }

    // A detached container: ps, exec, inspect, top, stop, start, rm -f.
    let id = server.docker_ok(&["run", "-d", "--name", "sleeper", "busybox", "sleep", "60"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let ps = server.docker_ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains("sleeper Up"), "{ps}");
    assert_eq!(server.docker_ok(&["exec", "sleeper", "echo", "hi"]), "hi\n");
    // The exec's exit code reaches the client (asked right after the stream ends).
    for _ in 0..3 {
        let failed = server.docker(&["exec", "sleeper", "sh", "-c", "exit 7"]);
        assert_eq!(failed.status.code(), Some(7));
    }
    let status = server.docker_ok(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.Pid}}",
        "sleeper",
    ]);
    assert!(status.starts_with("running "), "{status}");
    let top = server.docker_ok(&["top", "sleeper"]);
    assert!(top.contains("sleep 60"), "{top}");
    server.docker_ok(&["stop", "-t", "1", "sleeper"]);
    let status = server.docker_ok(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}}",
        "sleeper",
    ]);
    assert_eq!(status.trim(), "exited 137");
    server.docker_ok(&["start", "sleeper"]);
    server.docker_ok(&["rm", "-f", "sleeper"]);
    let err = server.docker(&["inspect", "sleeper"]);
    assert!(!err.status.success());

    // export: the container's filesystem, as docker export writes it.
    server.docker_ok(&["create", "--name", "exp", "busybox", "true"]);
    let tar = server.dir.path().join("exp.tar");
    server.docker_ok(&["export", "-o", tar.to_str().unwrap(), "exp"]);
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(
        listing
            .lines()
            .any(|l| l.trim_start_matches("./") == "bin/busybox"),
        "{listing}"
    );

    // Name conflicts are refused with Docker's wording.
    server.docker_ok(&["create", "--name", "dup", "busybox", "true"]);
    let dup = server.docker(&["create", "--name", "dup", "busybox", "true"]);
    assert!(!dup.status.success());
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains("dup"),
        "{}",
        String::from_utf8_lossy(&dup.stderr)
    );
}
