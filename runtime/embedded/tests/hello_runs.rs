//! The `hello` program really runs: on the host, and as pid 1 of a container started by the
//! workspace's own runtime, `berth-runc`.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Runs `cmd` with stdout and stderr going to files in `dir`, killing it after `timeout`.
/// Returns its status and both outputs.
fn run_captured(mut cmd: Command, dir: &Path, timeout: Duration) -> (ExitStatus, String, String) {
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let out = File::create(&out_path).expect("stdout file");
    let err = File::create(&err_path).expect("stderr file");
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
    (status, read(&out_path), read(&err_path))
}

#[test]
fn hello_runs_on_the_host() {
    assert!(
        berth_embedded::is_available(),
        "no hello program for this target"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("hello");
    fs::write(&bin, berth_embedded::hello_binary()).expect("writing hello");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
    let (status, out, err) = run_captured(Command::new(&bin), dir.path(), Duration::from_secs(10));
    assert!(status.success(), "hello failed ({status}): {out}{err}");
    assert!(out.starts_with("Hello from Berth! I am pid "), "{out}");
    assert!(!out.contains("I am pid 1 "), "{out}");
    assert!(out.contains("not pid 1"), "{out}");
}

/// The workspace's `berth-runc`, next to the directory holding this test executable
/// (`target/<profile>/deps/…` → `target/<profile>/berth-runc`), or `$BERTH_RUNC`.
fn berth_runc() -> PathBuf {
    if let Some(path) = std::env::var_os("BERTH_RUNC") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let runc = profile_dir.join("berth-runc");
    assert!(
        runc.exists(),
        "{} is missing: build it first with `cargo build -p berth-runtime --bin berth-runc` \
         (or point BERTH_RUNC at a runc-compatible runtime)",
        runc.display()
    );
    runc
}

fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        == Some("0")
}

/// Deletes the container when dropped, so a failing assertion does not leak it.
struct Cleanup<'a> {
    runc: &'a Path,
    state: &'a Path,
    id: &'a str,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.runc)
            .arg("--root")
            .arg(self.state)
            .args(["delete", "--force", self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn hello_runs_as_pid_1_in_a_container() {
    assert!(
        berth_embedded::is_available(),
        "no hello program for this target"
    );
    if !is_root() {
        eprintln!("note: not root; skipping the container run");
        return;
    }
    let runc = berth_runc();
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    let state = dir.path().join("state");
    fs::create_dir_all(&rootfs).expect("rootfs dir");

    let image = berth_embedded::hello_image();
    tar::Archive::new(image.layer_tar())
        .unpack(&rootfs)
        .expect("unpacking the layer");
    let mode = fs::metadata(rootfs.join("hello"))
        .expect("/hello")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "/hello is executable");

    let caps = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["/hello"],
            "env": ["PATH=/"],
            "cwd": "/",
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "berth-hello",
        "mounts": [{ "destination": "/proc", "type": "proc", "source": "proc" }],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "mount" }, { "type": "uts" },
                { "type": "ipc" }, { "type": "network" }
            ]
        }
    });
    fs::write(bundle.join("config.json"), spec.to_string()).expect("config.json");

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let id = format!("berth-hello-{}-{nanos}", std::process::id());
    let _cleanup = Cleanup {
        runc: &runc,
        state: &state,
        id: &id,
    };

    let mut cmd = Command::new(&runc);
    cmd.arg("--root")
        .arg(&state)
        .arg("run")
        .arg("--bundle")
        .arg(&bundle)
        .arg(&id);
    let (status, out, err) = run_captured(cmd, dir.path(), Duration::from_secs(60));
    assert!(
        status.success(),
        "berth-runc run failed ({status}):\n{out}{err}"
    );
    assert!(out.contains("I am pid 1 "), "{out}{err}");
    assert!(out.contains("on host \"berth-hello\""), "{out}{err}");
    assert!(out.contains("running in a container"), "{out}{err}");
    assert!(out.contains("3 effective capabilities"), "{out}{err}");
}
