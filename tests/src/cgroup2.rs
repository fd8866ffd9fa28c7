//! A private mount namespace in which cgroup2 alone is mounted on /sys/fs/cgroup, to test the
//! runtime in pure cgroup v2 mode on a hybrid host. A sleeping process holds the namespace;
//! runtime commands enter it with `nsenter -t PID -m`, and the test reads files in it through
//! `/proc/PID/root`.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Holds the namespace; kills the holder on drop.
pub struct Cgroup2Namespace {
    child: Child,
}

impl Cgroup2Namespace {
    /// Starts the holder and waits (by reading its "ready" line) until cgroup2 is mounted.
    pub fn new() -> Self {
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "/bin/sh", "-c"])
            .arg("umount -l /sys/fs/cgroup 2>/dev/null; mount -t cgroup2 none /sys/fs/cgroup && echo ready && exec sleep 100000")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start unshare (util-linux)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        // Blocks until the holder prints (or exits, giving EOF).
        let _ = BufReader::new(stdout).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            panic!("could not mount cgroup2 alone in a private mount namespace");
        }
        Cgroup2Namespace { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command prefix that runs a program in the namespace.
    pub fn prefix(&self) -> Vec<OsString> {
        ["nsenter", "-t", &self.pid().to_string(), "-m"]
            .iter()
            .map(OsString::from)
            .collect()
    }

    /// Where the namespace's /sys/fs/cgroup can be read from the host.
    pub fn cgroup_root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root/sys/fs/cgroup", self.pid()))
    }
}

impl Default for Cgroup2Namespace {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Cgroup2Namespace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
