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

/// Docker's exit codes for a command that cannot run: 127 when it is
/// missing, 126 when it cannot be executed (the engine fails the start with
/// runc's wording, which the docker CLI reads), 125 when the engine refuses
/// the request itself.
#[test]
fn docker_exit_codes_for_commands_that_cannot_run() {
    let server = Server::start();
    let _cleanup = Cleanup(&server);
    let root = server.busybox_rootfs(&["sh", "sleep", "true"]);
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    server.import_rootfs(&root);
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();

    // A missing file, named by path or looked up in PATH: 127.
    let out = server.docker(&["run", "--rm", "busybox", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent: no such file or directory"),
        "{}",
        stderr(&out)
    );
    let out = server.docker(&["run", "--name", "nosuch", "busybox", "nosuch"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exec: \"nosuch\": executable file not found in $PATH"),
        "{}",
        stderr(&out)
    );
    // The container stays created, with the code and the reason recorded.
    let state = server.docker_ok(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}} {{.State.Error}}",
        "nosuch",
    ]);
    assert!(
        state.starts_with("created 127 ") && state.contains("executable file not found"),
        "{state}"
    );
    // The API answers the start with 400, as Docker does for a bad command.
    let start = server.http("POST", "/containers/nosuch/start");
    assert_eq!(start.status, 400, "{}", start.body);
    assert!(
        start.body.contains("executable file not found"),
        "{}",
        start.body
    );

    // A file that is not executable, or a directory: 126.
    let out = server.docker(&["run", "--rm", "busybox", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exec: \"/etc/passwd\": permission denied"),
        "{}",
        stderr(&out)
    );
    let out = server.docker(&["run", "--rm", "busybox", "/etc"]);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(stderr(&out).contains("is a directory"), "{}", stderr(&out));

    // --rm removed the containers that never ran.
    assert_eq!(server.docker_ok(&["ps", "-aq"]).trim().lines().count(), 1);

    // The same codes for exec.
    server.docker_ok(&["run", "-d", "--name", "box", "busybox", "sleep", "60"]);
    let out = server.docker(&["exec", "box", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    let out = server.docker(&["exec", "box", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );

    // Requests the engine refuses: 125, with its reason.
    let out = server.docker(&["run", "--rm", "--cap-add", "bogus", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("CAP_BOGUS"), "{}", stderr(&out));
    let out = server.docker(&["run", "--rm", "--stop-signal", "NOPE", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("NOPE"), "{}", stderr(&out));
    server.docker_ok(&["rm", "-f", "box", "nosuch"]);
    assert_eq!(server.docker_ok(&["ps", "-aq"]).trim(), "");
}

/// `docker stop x && docker start x`, and a start right after the container
/// exited on its own, start it again every time: the engine waits for the
/// previous run's monitor to finish instead of answering "already running"
/// (a 304 the CLI reports as success, with nothing started).
#[test]
fn docker_start_right_after_stop_kill_or_exit_starts_it_again() {
    let server = Server::start();
    let _cleanup = Cleanup(&server);
    import_busybox(&server);
    let state = |name: &str| {
        server.docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.Pid}} {{.State.StartedAt}}",
            name,
        ])
    };

    server.docker_ok(&["run", "-d", "--name", "looper", "busybox", "sleep", "60"]);
    let mut last = state("looper");
    for i in 0..10 {
        server.docker_ok(&["stop", "-t", "0", "looper"]);
        assert!(state("looper").starts_with("exited "), "round {i}");
        server.docker_ok(&["start", "looper"]);
        let now = state("looper");
        assert!(now.starts_with("running "), "round {i}: {now}");
        assert_ne!(now, last, "round {i}: the same run as before");
        last = now;
    }

    // `docker kill` (SIGKILL) returns once the container is down, as dockerd's does.
    for i in 0..5 {
        server.docker_ok(&["kill", "looper"]);
        let now = state("looper");
        assert!(now.starts_with("exited "), "round {i}: {now}");
        server.docker_ok(&["start", "looper"]);
        let now = state("looper");
        assert!(now.starts_with("running "), "round {i}: {now}");
        assert_ne!(now, last, "round {i}: the same run as before");
        last = now;
    }

    // `docker wait` answers once the exit is recorded, while the monitor
    // may still be cleaning up: each start must still run the command.
    server.docker_ok(&["run", "-d", "--name", "quick", "busybox", "echo", "ran"]);
    for i in 0..10 {
        assert_eq!(
            server.docker_ok(&["wait", "quick"]).trim(),
            "0",
            "round {i}"
        );
        server.docker_ok(&["start", "quick"]);
    }
    server.docker_ok(&["wait", "quick"]);
    let logs = server.docker_ok(&["logs", "quick"]);
    assert_eq!(logs, "ran\n".repeat(11), "every start ran the command");
}
