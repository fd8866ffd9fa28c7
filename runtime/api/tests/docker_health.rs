//! Health checks through the real `docker` CLI: states in inspect and ps,
//! streaks, and a check disabled with --no-healthcheck.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Server;

fn import_busybox(server: &Server) {
    let root = server.busybox_rootfs(&["sh", "sleep", "test", "touch", "rm", "echo"]);
    server.import_rootfs(&root);
}

/// Polls the container's health status until it is `want` (bounded).
fn wait_for_health(server: &Server, name: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = server.docker_ok(&["inspect", "-f", "{{.State.Health.Status}}", name]);
        if status.trim() == want {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {want}; last: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn health_states_follow_the_check() {
    let server = Server::start();
    import_busybox(&server);
    server.docker_ok(&[
        "run",
        "-d",
        "--name",
        "probe",
        "--health-cmd",
        "echo probing; test -f /ok",
        "--health-interval",
        "100ms",
        "--health-retries",
        "2",
        "busybox",
        "sleep",
        "60",
    ]);
    // Failing check: starting, then unhealthy after two failures.
    wait_for_health(&server, "probe", "unhealthy");
    let streak = server.docker_ok(&["inspect", "-f", "{{.State.Health.FailingStreak}}", "probe"]);
    assert!(streak.trim().parse::<u32>().unwrap() >= 2, "{streak}");
    let output = server.docker_ok(&[
        "inspect",
        "-f",
        "{{(index .State.Health.Log 0).Output}}",
        "probe",
    ]);
    assert!(output.contains("probing"), "{output}");
    let ps = server.docker_ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains("(unhealthy)"), "{ps}");

    // Passing check: healthy, streak reset.
    server.docker_ok(&["exec", "probe", "touch", "/ok"]);
    wait_for_health(&server, "probe", "healthy");
    let ps = server.docker_ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains("probe Up") && ps.contains("(healthy)"), "{ps}");
    let streak = server.docker_ok(&["inspect", "-f", "{{.State.Health.FailingStreak}}", "probe"]);
    assert_eq!(streak.trim(), "0");

    // --no-healthcheck: no health state at all.
    server.docker_ok(&[
        "run",
        "-d",
        "--name",
        "unchecked",
        "--no-healthcheck",
        "busybox",
        "sleep",
        "60",
    ]);
    let health = server.docker_ok(&["inspect", "-f", "{{json .State.Health}}", "unchecked"]);
    assert_eq!(health.trim(), "null");

    // An invalid check fails the create with a clear error.
    let bad = server.docker(&[
        "create",
        "--health-cmd",
        "true",
        "--health-interval",
        "1ns",
        "busybox",
        "true",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("interval"), "{err}");

    server.docker_ok(&["rm", "-f", "probe", "unchecked"]);
}
