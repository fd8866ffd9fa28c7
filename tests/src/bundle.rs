//! OCI bundles whose root filesystem is busybox-static.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::spec::Spec;

/// Where the static busybox comes from (Debian's `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// Applets every rootfs has, whatever `busybox --list` says.
const REQUIRED_APPLETS: &[&str] = &[
    "sh", "true", "false", "cat", "echo", "ls", "id", "ps", "sleep", "mkdir", "hostname", "head",
    "tail", "grep", "dd", "wc", "env", "pwd", "readlink", "stat", "mount", "touch", "kill", "test",
    "yes", "nproc", "uname", "tty", "seq", "awk", "usleep", "rm", "sort",
];

fn applets() -> &'static [String] {
    static LIST: OnceLock<Vec<String>> = OnceLock::new();
    LIST.get_or_init(|| {
        let out = std::process::Command::new(BUSYBOX)
            .arg("--list")
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {BUSYBOX} --list (install busybox-static): {e}")
            });
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        for a in REQUIRED_APPLETS {
            if !names.iter().any(|n| n == a) {
                names.push((*a).to_owned());
            }
        }
        names.retain(|n| !n.is_empty() && n != "busybox" && !n.contains('/'));
        names
    })
}

/// Writes a busybox root filesystem into `rootfs`: `/bin/busybox`, a symlink per applet in
/// `/bin`, the usual empty directories, and `/etc/passwd` + `/etc/group` with root, nobody and
/// a few groups.
pub fn make_busybox_rootfs(rootfs: &Path) {
    for d in [
        "bin", "etc", "proc", "sys", "dev", "tmp", "root", "home", "var", "run",
    ] {
        fs::create_dir_all(rootfs.join(d)).expect("create rootfs dir");
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    fs::copy(BUSYBOX, rootfs.join("bin/busybox"))
        .unwrap_or_else(|e| panic!("copy {BUSYBOX} into the rootfs (install busybox-static): {e}"));
    for name in applets() {
        symlink("busybox", rootfs.join("bin").join(name)).expect("applet symlink");
    }
    symlink("bin", rootfs.join("sbin")).expect("sbin symlink");
    fs::create_dir_all(rootfs.join("usr")).expect("usr");
    symlink("../bin", rootfs.join("usr/bin")).expect("usr/bin symlink");
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .expect("passwd");
    fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\ntty:x:5:\naudio:x:29:\nstaff:x:50:\nnogroup:x:65534:\n",
    )
    .expect("group");
    fs::write(rootfs.join("etc/hostname"), "berth\n").expect("hostname");
}

/// A bundle directory: `config.json` (from [`Bundle::spec`]) plus `rootfs/`.
#[derive(Debug)]
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
}

impl Bundle {
    /// Makes `dir/rootfs` from busybox and starts from the default spec (not yet written).
    pub fn create(dir: &Path) -> Self {
        fs::create_dir_all(dir).expect("create bundle dir");
        // World-traversable, so a container in a user namespace can reach its rootfs.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod bundle");
        make_busybox_rootfs(&dir.join("rootfs"));
        Bundle {
            dir: dir.to_path_buf(),
            spec: Spec::default(),
        }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// Writes `config.json` from the current spec.
    pub fn write_config(&self) {
        fs::write(self.config_path(), self.spec.to_json()).expect("write config.json");
    }
}
