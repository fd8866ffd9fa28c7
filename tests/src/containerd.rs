//! A private containerd (Debian's 1.6) for tests: its own root, state and socket in a temp
//! dir, the CRI plugin and the snapshotters this host lacks disabled. Dropping it removes its
//! tasks and containers, stops it, kills its shims and unmounts what it left.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::poll::try_wait_until;
use crate::runtime::{run_command, try_run_command, CmdOutput};

/// The containerd namespace the tests use.
pub const NAMESPACE: &str = "berth-test";

pub struct Containerd {
    child: Option<Child>,
    pub socket: PathBuf,
    dir: TempDir,
}

impl Containerd {
    /// Starts containerd and waits until `ctr version` answers (bounded).
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-containerd-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display()
        );
        std::fs::write(d.join("config.toml"), config).expect("write config.toml");
        let log = std::fs::File::create(d.join("containerd.log")).expect("log file");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start containerd (apt-get install containerd)");
        let mut c = Containerd {
            child: Some(child),
            socket,
            dir,
        };
        let up = try_wait_until(Duration::from_secs(30), || {
            let out = c.ctr_quiet(&["version"]).ok()?;
            out.success().then_some(())
        });
        if up.is_none() {
            let log =
                std::fs::read_to_string(c.dir.path().join("containerd.log")).unwrap_or_default();
            if let Some(mut ch) = c.child.take() {
                let _ = ch.kill();
                let _ = ch.wait();
            }
            panic!("containerd did not answer within 30 s; its log:\n{log}");
        }
        c
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", NAMESPACE])
            .args(args);
        cmd
    }

    /// Runs `ctr -a SOCKET -n berth-test ARGS`.
    #[track_caller]
    pub fn ctr(&self, args: &[&str]) -> CmdOutput {
        run_command(
            self.command(args),
            &self.dir().join("out"),
            Duration::from_secs(120),
        )
    }

    fn ctr_quiet(&self, args: &[&str]) -> Result<CmdOutput, String> {
        try_run_command(
            self.command(args),
            &self.dir().join("out"),
            Duration::from_secs(20),
        )
    }

    /// containerd's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("containerd.log")).unwrap_or_default()
    }

    fn cleanup_containers(&self) {
        if let Ok(tasks) = self.ctr_quiet(&["task", "ls", "-q"]) {
            for id in tasks.stdout.split_whitespace() {
                let _ = self.ctr_quiet(&["task", "kill", "-s", "SIGKILL", id]);
                let _ = try_wait_until(Duration::from_secs(10), || {
                    self.ctr_quiet(&["task", "delete", id])
                        .ok()
                        .filter(|o| o.success())
                        .map(|_| ())
                });
                let _ = self.ctr_quiet(&["task", "delete", "--force", id]);
            }
        }
        if let Ok(cs) = self.ctr_quiet(&["container", "ls", "-q"]) {
            for id in cs.stdout.split_whitespace() {
                let _ = self.ctr_quiet(&["container", "rm", id]);
            }
        }
    }
}

/// Pids of processes whose command line mentions `needle`.
fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(pid);
        }
    }
    out
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.cleanup_containers();
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)),
                nix::sys::signal::Signal::SIGTERM,
            );
            if crate::runtime::wait_child(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Shims outlive containerd; they carry our socket path on their command line.
        for pid in pids_with_cmdline(&self.socket.to_string_lossy()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let dir = self.dir().to_string_lossy().into_owned();
        let mut mounts: Vec<String> = crate::leaks::mounts_mentioning(&dir)
            .iter()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| m.starts_with(&dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
