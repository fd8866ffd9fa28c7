//! `berth daemon` as a process: socket permissions, refusing a second
//! daemon, stale sockets, graceful shutdown. Needs the `berth` binary built
//! in the same profile (`cargo build -p berth`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{berth_binary, docker_at, http, wait_for_socket};

struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn daemon_serves_refuses_a_second_and_stops_cleanly() {
    let binary = berth_binary();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run").join("berth.sock");
    let config = dir.path().join("daemon.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"data-root": "{}", "registry-mirrors": [], "insecure-registries": ["10.0.0.0/8"], "debug": false}}"#,
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let host = format!("unix://{}", socket.display());
    let start = || {
        Command::new(&binary)
            .args(["daemon", "--host", &host, "--config"])
            .arg(&config)
            .env("DOCKER_CONFIG", dir.path().join("docker-config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting berth daemon")
    };

    let mut first = Daemon(start());
    wait_for_socket(&socket, &mut first.0);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let dir_mode = std::fs::metadata(socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o755);

    let r = http(&socket, "GET", "/_ping", &[]);
    assert_eq!(r.status, 200);
    let out = docker_at(
        &socket,
        &dir.path().join("docker-config"),
        &["images", "--format", "{{.Repository}}"],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello"));
    let info = http(&socket, "GET", "/info", &[]).json();
    assert_eq!(
        info["DockerRootDir"],
        dir.path().join("data").display().to_string()
    );

    // A second daemon on the same socket refuses to start.
    let second = start().wait_with_output().unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("already listening"), "{err}");

    // SIGTERM: exits 0 and removes the socket.
    let pid = first.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = first.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!socket.exists());

    // A stale socket file (nobody listening) is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    drop(stale);
    assert!(socket.exists());
    let mut third = Daemon(start());
    wait_for_socket(&socket, &mut third.0);
    assert_eq!(http(&socket, "GET", "/_ping", &[]).status, 200);
}

#[test]
fn version_flag_prints_the_client_version() {
    let out = Command::new(berth_binary())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("berth {}", env!("CARGO_PKG_VERSION"))
    );
}
