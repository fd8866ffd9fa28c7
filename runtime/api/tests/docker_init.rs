//! `docker run --init` through the real docker CLI: the engine's init runs as pid 1
//! (`/sbin/docker-init`), forwards signals to the command, reaps orphans and exits with the
//! command's status.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `docker …` killed after `limit` (a hang fails the test instead of stalling it).
fn docker_within(server: &Server, limit: Duration, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg(format!("{}", limit.as_secs()))
        .arg("docker")
        .args(args)
        .env("DOCKER_HOST", format!("unix://{}", server.socket.display()))
        .env("DOCKER_CONFIG", server.dir.path().join("docker-config"))
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null())
        .output()
        .expect("coreutils timeout and docker")
}

/// Runs `ps` in `container` until `done(output)` holds; returns that output.
fn ps_until(server: &Server, container: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = server.docker_ok(&["exec", container, "ps", "-o", "pid,stat,args"]);
        if done(&out) {
            return out;
        }
        assert!(Instant::now() < deadline, "ps never showed it:\n{out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn docker_run_init() {
    let server = Server::start();
    let _cleanup = Cleanup(&server);
    let root = server.busybox_rootfs(&["sh", "ps", "sleep", "cat"]);
    server.import_rootfs(&root);

    // The init is pid 1 and the command its child.
    let out = server.docker_ok(&["run", "--rm", "--init", "busybox", "ps", "-o", "pid,comm"]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![vec!["1", "docker-init"], vec!["2", "ps"]],
        "{out}"
    );

    // The command's exit status is the container's, also when a signal ended it.
    let out = server.docker(&["run", "--rm", "--init", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = server.docker(&[
        "run",
        "--rm",
        "--init",
        "busybox",
        "sh",
        "-c",
        "kill -KILL $$",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    // A command that cannot run: the init says why and exits 127.
    let out = server.docker(&["run", "--rm", "--init", "busybox", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).contains("/nonexistent") && text(&out.stderr).contains("no such file"),
        "{}",
        text(&out.stderr)
    );

    // `docker stop`: the init passes SIGTERM on to `sleep`, which ends at once. Without the
    // init, `sleep` as pid 1 would ignore it and wait out the whole timeout.
    server.docker_ok(&[
        "run", "-d", "--init", "--name", "sleeper", "busybox", "sleep", "1000",
    ]);
    let started = Instant::now();
    server.docker_ok(&["stop", "-t", "30", "sleeper"]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "docker stop took {took:?}");
    let code = server.docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", "sleeper"]);
    assert_eq!(code.trim(), "143");
    let config = server.docker_ok(&["inspect", "-f", "{{.HostConfig.Init}}", "sleeper"]);
    assert_eq!(config.trim(), "true");

    // Other signals reach the command too.
    server.docker_ok(&[
        "run",
        "-d",
        "--init",
        "--name",
        "trapper",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got-usr1; exit 7' USR1; echo ready; while :; do sleep 0.1; done",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.docker_ok(&["logs", "trapper"]).contains("ready") {
        assert!(Instant::now() < deadline, "the trap was never set");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.docker_ok(&["kill", "-s", "USR1", "trapper"]);
    let waited = docker_within(&server, Duration::from_secs(30), &["wait", "trapper"]);
    assert_eq!(text(&waited.stdout).trim(), "7", "{}", text(&waited.stderr));
    assert!(server.docker_ok(&["logs", "trapper"]).contains("got-usr1"));

    // Orphans are reaped. Without the init the orphan stays a zombie under `sleep` as pid 1
    // (which shows the test can tell); with it, the orphan disappears once it has exited.
    let orphan = "(sleep 0.2 &); exec sleep 1000";
    server.docker_ok(&[
        "run", "-d", "--name", "plain", "busybox", "sh", "-c", orphan,
    ]);
    ps_until(&server, "plain", |ps| {
        ps.lines().any(|l| l.split_whitespace().nth(1) == Some("Z"))
    });
    server.docker_ok(&[
        "run", "-d", "--init", "--name", "reaped", "busybox", "sh", "-c", orphan,
    ]);
    // The orphan is forked before the shell execs `sleep 1000`, so once only the init, that
    // `sleep` and `ps` are left, the orphan has exited and been reaped.
    ps_until(&server, "reaped", |ps| {
        let commands: Vec<&str> = ps
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(2))
            .collect();
        commands == ["/sbin/docker-init", "sleep", "ps"]
    });
    server.docker_ok(&["rm", "-f", "plain", "reaped", "sleeper", "trapper"]);
}
