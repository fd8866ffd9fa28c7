//! docker-py (from PyPI) against Berth: a Python script
//! (`tests/py/docker_py_check.py`) creates, starts, waits for, reads logs
//! of, execs into and removes containers through `docker.DockerClient`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::Server;

/// Removes every container and volume of the server, even on failure.
struct Cleanup<'a>(&'a Server);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let out = self.0.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = self.0.docker(&["rm", "-f", "-v", id]);
        }
    }
}

fn docker_py_available() -> bool {
    Command::new("python3")
        .args(["-c", "import docker"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn docker_py_drives_containers() {
    if !docker_py_available() {
        // CI installs it (.ci/run); a bare machine may not have it.
        eprintln!("skipping: the Python docker package is not installed (pip install docker)");
        return;
    }
    let server = Server::start();
    let _cleanup = Cleanup(&server);
    let root = server.dir.path().join("bbroot");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static installed");
    for applet in ["sh", "sleep", "echo", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let tar = server.dir.path().join("bb.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    server.docker_ok(&["import", tar.to_str().unwrap(), "busybox:latest"]);

    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/docker_py_check.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&server.socket)
        .arg("busybox:latest")
        .output()
        .expect("running python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "docker-py checks failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("docker-py checks passed"), "{stdout}");
    // The script removed what it made.
    assert_eq!(server.docker_ok(&["ps", "-aq"]).trim(), "");
    assert_eq!(server.docker_ok(&["volume", "ls", "-q"]).trim(), "");
}
