//! cgroups v1 (legacy and hybrid hosts) and v2 (unified hosts).
//!
//! [`CgroupManager`] is the handle on one container's cgroup. It is built once
//! per runtime operation by [`CgroupManager::new`], which detects the layout
//! ([`detect_mode`]) and, on v1, reads `/proc/self/mountinfo` once to find the
//! controller hierarchies; every later call reuses that.
//!
//! Files:
//! - `paths.rs`: `linux.cgroupsPath` normalisation, mountinfo and `/proc/self/cgroup`.
//! - `fs.rs`: the small read/write helpers every other file uses.
//! - `validate.rs`: checks on `LinuxResources` that do not depend on the version.
//! - `v1.rs`, `v2.rs`: the per-version implementation.
//! - `devices_bpf.rs`: the v2 device filter (an eBPF `CGROUP_DEVICE` program).
//! - `stats.rs`: the runc-shaped `Stats` and its readers.
//!
//! Semantics worth knowing:
//! - Only fields that are set are written; a set field whose controller the
//!   host lacks is an error naming that controller ([`CgroupError::ControllerUnavailable`]).
//! - `0` means "unset" for memory limit/reservation/swap, cpu shares/quota/period,
//!   as in runc; `-1` means unlimited.
//! - Device rules are evaluated last-match-wins on both versions.

mod devices_bpf;
mod fs;
mod paths;
mod stats;
mod v1;
mod v2;
mod validate;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::sys::statfs;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

pub use stats::{
    BlkioEntry, BlkioStats, CpuStats, CpuUsage, HugetlbStats, MemoryEntry, MemoryStats, PidsStats,
    Stats, Throttling,
};

/// Errors from cgroup operations; each names the file or directory involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// `statfs` on the cgroup mount point failed.
    #[error("cannot statfs cgroup root {path}")]
    Statfs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    /// The cgroup root is neither cgroup2 nor a tmpfs holding v1 hierarchies.
    #[error("{path} is neither a cgroup2 mount nor a tmpfs holding cgroup v1 hierarchies")]
    UnknownLayout { path: PathBuf },
    /// Reading a cgroup or proc file failed.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing a cgroup file failed.
    #[error("cannot write {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    /// A cgroup or proc file did not have the expected format.
    #[error("cannot parse {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    /// `mkdir` of a cgroup directory failed.
    #[error("cannot create cgroup directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `rmdir` of a cgroup directory failed.
    #[error("cannot remove cgroup directory {path}")]
    RemoveDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Listing a cgroup directory (for descendants) failed.
    #[error("cannot list cgroup directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Processes stayed in the cgroup although they were killed.
    #[error("cgroup directory {path} still has processes after {attempts} attempts to remove it")]
    StillBusy { path: PathBuf, attempts: u32 },
    /// `linux.cgroupsPath` is not acceptable.
    #[error("invalid cgroups path {path:?}: {reason}")]
    InvalidPath { path: PathBuf, reason: &'static str },
    /// `/proc/self/cgroup` has no line for a hierarchy (needed for relative paths).
    #[error("/proc/self/cgroup has no entry for the {hierarchy} hierarchy")]
    OwnCgroupUnknown { hierarchy: String },
    /// A resource value is out of range or inconsistent.
    #[error("invalid {field}: {reason}")]
    InvalidResource { field: String, reason: String },
    /// A resource is set but its controller is not available on this host.
    #[error("{field} needs the {controller} controller, which is not available in {path}")]
    ControllerUnavailable {
        controller: String,
        field: String,
        path: PathBuf,
    },
    /// A resource is set that this cgroup version cannot express at all.
    #[error("{field} is not supported with cgroup {mode:?}")]
    Unsupported { field: String, mode: CgroupMode },
    /// The freezer did not reach the requested state in time.
    #[error("timed out waiting for {path} to become {state}")]
    FreezeTimeout { path: PathBuf, state: &'static str },
    /// Sending a signal to a process of the cgroup failed.
    #[error("cannot send {signal} to process {pid} of cgroup {path}")]
    Signal {
        pid: i32,
        signal: Signal,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    /// Opening a cgroup directory (for eBPF attach/query) failed.
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused the eBPF device program.
    #[error("cannot load the eBPF device filter for {path} (verifier log: {log:?})")]
    BpfLoad {
        path: PathBuf,
        log: String,
        #[source]
        source: std::io::Error,
    },
    /// `BPF_PROG_ATTACH` failed.
    #[error("cannot attach the eBPF device filter to {path}")]
    BpfAttach {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `BPF_PROG_QUERY` failed.
    #[error("cannot list the eBPF device programs attached to {path}")]
    BpfQuery {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Detaching an earlier device program failed.
    #[error("cannot detach eBPF program {id} from {path}")]
    BpfDetach {
        path: PathBuf,
        id: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Which cgroup layout the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CgroupMode {
    /// Controllers are v1 hierarchies under `<root>/<controller>` (legacy or hybrid).
    V1,
    /// A single cgroup2 hierarchy at `<root>`.
    V2,
}

/// Freezer state of a container's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezerState {
    Thawed,
    Frozen,
}

/// One v1 hierarchy and the container's directory in it.
#[derive(Debug, Clone)]
pub struct V1Hierarchy {
    /// Controllers bound to the hierarchy, e.g. `["cpu", "cpuacct"]` or `["name=systemd"]`.
    pub controllers: Vec<String>,
    /// Where the hierarchy is mounted, e.g. `/sys/fs/cgroup/cpu,cpuacct`.
    pub mount_point: PathBuf,
    /// The container's cgroup directory inside it.
    pub dir: PathBuf,
}

impl V1Hierarchy {
    /// Whether `controller` is bound to this hierarchy.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

#[derive(Debug, Clone)]
enum Layout {
    V1(Vec<V1Hierarchy>),
    V2 { dir: PathBuf },
}

/// Handle on one container's cgroup (all v1 controller directories, or one v2 directory).
#[derive(Debug, Clone)]
pub struct CgroupManager {
    mode: CgroupMode,
    relative_path: PathBuf,
    root: PathBuf,
    layout: Layout,
}

/// Detects the cgroup layout mounted at `root` (normally `/sys/fs/cgroup`).
///
/// cgroup2 at `root` is [`CgroupMode::V2`]; a tmpfs holding at least one v1
/// hierarchy is [`CgroupMode::V1`] (this includes "hybrid" hosts, where an
/// empty cgroup2 sits at `<root>/unified`).
pub fn detect_mode(root: &Path) -> Result<CgroupMode, CgroupError> {
    let fs = statfs::statfs(root).map_err(|source| CgroupError::Statfs {
        path: root.to_path_buf(),
        source,
    })?;
    let ty = fs.filesystem_type();
    if ty == statfs::CGROUP2_SUPER_MAGIC {
        return Ok(CgroupMode::V2);
    }
    if ty == statfs::TMPFS_MAGIC {
        let entries = std::fs::read_dir(root).map_err(|source| CgroupError::ReadDir {
            path: root.to_path_buf(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if let Ok(sub) = statfs::statfs(&path) {
                if sub.filesystem_type() == statfs::CGROUP_SUPER_MAGIC {
                    return Ok(CgroupMode::V1);
                }
            }
        }
    }
    Err(CgroupError::UnknownLayout {
        path: root.to_path_buf(),
    })
}

/// The host's v1 hierarchies under `/sys/fs/cgroup`, as `(mount directory name,
/// mount point)`, e.g. `("cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct")` or
/// `("systemd", "/sys/fs/cgroup/systemd")`, in mountinfo order.
///
/// Lets the rootfs code mirror the host's v1 layout in the container.
pub fn v1_mounted_controllers() -> Result<Vec<(String, PathBuf)>, CgroupError> {
    let mounts = paths::v1_mounts(Path::new(paths::DEFAULT_ROOT))?;
    Ok(mounts
        .into_iter()
        .map(|m| {
            let name = m
                .mount_point
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, m.mount_point)
        })
        .collect())
}

impl CgroupManager {
    /// `cgroups_path` is `linux.cgroupsPath` (absolute paths are relative to
    /// the hierarchy root; relative ones to the runtime's own cgroup) or, when
    /// the spec has none, `/berth/<container id>`. `root` is the cgroup mount
    /// point, normally `/sys/fs/cgroup`.
    ///
    /// A systemd-style `slice:prefix:name` is mapped to the plain path
    /// `/slice/prefix-name.scope`. Paths with `..`, and paths naming the
    /// hierarchy root itself, are rejected.
    pub fn new(root: &Path, cgroups_path: &Path) -> Result<Self, CgroupError> {
        let mode = detect_mode(root)?;
        Self::with_mode(root, cgroups_path, mode)
    }

    /// Like [`CgroupManager::new`] with the layout already known (saves a few `statfs`).
    pub fn with_mode(
        root: &Path,
        cgroups_path: &Path,
        mode: CgroupMode,
    ) -> Result<Self, CgroupError> {
        let spec = paths::normalize(cgroups_path)?;
        let layout = match mode {
            CgroupMode::V2 => {
                let base = if spec.absolute {
                    root.to_path_buf()
                } else {
                    root.join(paths::own_cgroup_v2()?)
                };
                Layout::V2 {
                    dir: base.join(&spec.path),
                }
            }
            CgroupMode::V1 => {
                let mounts = paths::v1_mounts(root)?;
                let own = if spec.absolute {
                    None
                } else {
                    Some(paths::own_cgroups_v1()?)
                };
                let mut hierarchies = Vec::with_capacity(mounts.len());
                for m in mounts {
                    let base = match &own {
                        None => m.mount_point.clone(),
                        Some(own) => m.mount_point.join(paths::own_path_in(own, &m)?),
                    };
                    hierarchies.push(V1Hierarchy {
                        dir: base.join(&spec.path),
                        controllers: m.controllers,
                        mount_point: m.mount_point,
                    });
                }
                Layout::V1(hierarchies)
            }
        };
        Ok(Self {
            mode,
            relative_path: spec.display,
            root: root.to_path_buf(),
            layout,
        })
    }

    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    /// The normalised cgroups path (systemd form already mapped), absolute
    /// when it is relative to the hierarchy root.
    pub fn relative_path(&self) -> &Path {
        &self.relative_path
    }

    /// The cgroup mount point this manager was built for.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The container's directory holding `controller`'s files: on v1 the
    /// directory in that controller's hierarchy (None when not mounted), on
    /// v2 the one cgroup directory whatever the controller.
    pub fn path_in(&self, controller: &str) -> Option<&Path> {
        match &self.layout {
            Layout::V1(hs) => hs
                .iter()
                .find(|h| h.has(controller))
                .map(|h| h.dir.as_path()),
            Layout::V2 { dir } => Some(dir),
        }
    }

    /// Every directory of the container's cgroup (one per v1 hierarchy, or the v2 one).
    pub fn paths(&self) -> Vec<&Path> {
        match &self.layout {
            Layout::V1(hs) => hs.iter().map(|h| h.dir.as_path()).collect(),
            Layout::V2 { dir } => vec![dir.as_path()],
        }
    }

    /// The cgroup directory on a v2 host (None on v1), e.g. for
    /// `clone3(CLONE_INTO_CGROUP)`.
    pub fn v2_dir(&self) -> Option<&Path> {
        match &self.layout {
            Layout::V1(_) => None,
            Layout::V2 { dir } => Some(dir),
        }
    }

    /// The v1 hierarchies (empty on v2).
    pub fn v1_hierarchies(&self) -> &[V1Hierarchy] {
        match &self.layout {
            Layout::V1(hs) => hs,
            Layout::V2 { .. } => &[],
        }
    }

    /// Whether the cgroup exists (on v1: in at least one hierarchy).
    pub fn exists(&self) -> bool {
        self.paths().iter().any(|p| p.is_dir())
    }

    /// Creates the directories (all controllers on v1; enabling controllers in parents on v2).
    pub fn create(&self) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V1(hs) => v1::create(hs),
            Layout::V2 { dir } => v2::create(&self.root, dir),
        }
    }

    /// Applies limits; used at create and by `update`. Everything is
    /// validated before the first file is written.
    pub fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        validate::resources(resources)?;
        match &self.layout {
            Layout::V1(hs) => v1::apply(hs, &self.root, resources),
            Layout::V2 { dir } => v2::apply(dir, resources),
        }
    }

    /// Moves the calling process, which must be single-threaded (a freshly
    /// forked child), into the cgroup. On v1 this writes `0` (the caller) to
    /// each hierarchy's `tasks`: moving one thread that is `current` spares
    /// the kernel the global threadgroup lock, whose write side waits for an
    /// RCU grace period (5–18 ms measured here per process moved through
    /// `cgroup.procs`, ≈0.5 ms this way). For a single-threaded process,
    /// moving its thread is moving the process.
    pub fn join_single_threaded(&self) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V1(hs) => {
                let pid = nix::unistd::getpid().as_raw().to_string();
                for h in hs {
                    let tasks = h.dir.join("tasks");
                    if tasks.exists() {
                        fs::write_file(&tasks, "0")?;
                    } else {
                        fs::write_file(&h.dir.join("cgroup.procs"), &pid)?;
                    }
                }
                Ok(())
            }
            Layout::V2 { .. } => self.add_task(nix::unistd::getpid()),
        }
    }

    /// Moves `pid` into the cgroup (every hierarchy on v1).
    pub fn add_task(&self, pid: Pid) -> Result<(), CgroupError> {
        let value = pid.as_raw().to_string();
        for dir in self.paths() {
            fs::write_file(&dir.join("cgroup.procs"), &value)?;
        }
        Ok(())
    }

    /// Freezes every process of the cgroup and waits (bounded) until the kernel reports it frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V1(hs) => v1::set_freezer(hs, &self.root, FreezerState::Frozen),
            Layout::V2 { dir } => v2::set_freezer(dir, FreezerState::Frozen),
        }
    }

    /// Thaws the cgroup.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V1(hs) => v1::set_freezer(hs, &self.root, FreezerState::Thawed),
            Layout::V2 { dir } => v2::set_freezer(dir, FreezerState::Thawed),
        }
    }

    /// The freezer state (a cgroup still freezing counts as thawed).
    pub fn freezer_state(&self) -> Result<FreezerState, CgroupError> {
        match &self.layout {
            Layout::V1(hs) => v1::freezer_state(hs, &self.root),
            Layout::V2 { dir } => v2::freezer_state(dir),
        }
    }

    /// All processes in the cgroup and its descendants.
    pub fn pids(&self) -> Result<Vec<Pid>, CgroupError> {
        let dir = match &self.layout {
            Layout::V1(hs) => v1::pids_dir(hs),
            Layout::V2 { dir } => Some(dir.as_path()),
        };
        let mut out = Vec::new();
        if let Some(dir) = dir {
            fs::collect_pids(dir, &mut out)?;
        }
        Ok(out)
    }

    /// Resource usage; controllers the host lacks are left out.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        match &self.layout {
            Layout::V1(hs) => stats::v1(hs),
            Layout::V2 { dir } => stats::v2(dir),
        }
    }

    /// Number of OOM kills the kernel recorded in this cgroup.
    pub fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        let (path, field) = match &self.layout {
            Layout::V1(hs) => {
                let dir = v1::require(hs, &self.root, "memory", "oom_kill_count")?;
                (dir.join("memory.oom_control"), "oom_kill")
            }
            Layout::V2 { dir } => (dir.join("memory.events"), "oom_kill"),
        };
        let text = fs::read_file_controller(&path, "memory", "oom_kill_count")?;
        Ok(fs::flat_keyed(&text, field).unwrap_or(0))
    }

    /// Sends `signal` to every process of the cgroup and its descendants.
    ///
    /// On v2, SIGKILL goes through `cgroup.kill` when the kernel has it. On v1,
    /// SIGKILL is sent with the cgroup frozen (when the freezer is mounted) so
    /// that no process can fork past it.
    pub fn kill_all(&self, signal: Signal) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V2 { dir } => {
                if signal == Signal::SIGKILL && v2::kill_via_file(dir)? {
                    return Ok(());
                }
                self.signal_each(signal)
            }
            Layout::V1(hs) => {
                let use_freezer = signal == Signal::SIGKILL
                    && hs.iter().any(|h| h.has("freezer") && h.dir.is_dir());
                if use_freezer {
                    // Best effort: a freeze that does not settle thaws itself,
                    // and the processes are signalled either way.
                    let _ = self.freeze();
                    let sent = self.signal_each(signal);
                    let thawed = self.thaw();
                    sent.and(thawed)
                } else {
                    self.signal_each(signal)
                }
            }
        }
    }

    fn signal_each(&self, signal: Signal) -> Result<(), CgroupError> {
        for pid in self.pids()? {
            match nix::sys::signal::kill(pid, signal) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(source) => {
                    return Err(CgroupError::Signal {
                        pid: pid.as_raw(),
                        signal,
                        path: self
                            .paths()
                            .first()
                            .map(|p| p.to_path_buf())
                            .unwrap_or_default(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Removes the directories (and any sub-cgroups the container made).
    ///
    /// A missing directory is not an error. If processes remain they are
    /// killed (`cgroup.kill` on v2 when present, else SIGKILL to each), and
    /// `rmdir` is retried for about a second.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut killed = false;
        for dir in self.paths() {
            if fs::rmdir_fast(dir)? {
                continue;
            }
            // Slow path: sub-cgroups or live processes.
            if !killed {
                self.kill_remaining()?;
                killed = true;
            }
            fs::remove_tree(dir)?;
        }
        Ok(())
    }

    fn kill_remaining(&self) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V2 { dir } => {
                if v2::kill_via_file(dir)? {
                    return Ok(());
                }
                // Frozen tasks do not die until thawed.
                let _ = fs::write_file(&dir.join("cgroup.freeze"), "0");
                self.signal_each(Signal::SIGKILL)
            }
            Layout::V1(hs) => {
                if let Some(h) = hs.iter().find(|h| h.has("freezer")) {
                    let _ = fs::write_file(&h.dir.join("freezer.state"), "THAWED");
                }
                self.signal_each(Signal::SIGKILL)
            }
        }
    }
}
