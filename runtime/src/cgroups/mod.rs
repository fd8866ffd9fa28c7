//! cgroups v1 (legacy and hybrid hosts) and v2 (unified hosts).
//!
//! OWNER: cgroups helper. Public API below is what the rest of the runtime
//! calls; keep these signatures.

use std::path::{Path, PathBuf};

use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

/// Errors from cgroup operations; each names the file or directory involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup operation not implemented yet: {0}")]
    NotImplemented(&'static str),
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

/// Resource usage in the shape runc's `events --stats` prints under `data`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {}

/// Handle on one container's cgroup (all v1 controller directories, or one v2 directory).
#[derive(Debug, Clone)]
pub struct CgroupManager {
    mode: CgroupMode,
    relative_path: PathBuf,
}

/// Detects the cgroup layout mounted at `root` (normally `/sys/fs/cgroup`).
pub fn detect_mode(_root: &Path) -> Result<CgroupMode, CgroupError> {
    Err(CgroupError::NotImplemented("detect_mode"))
}

impl CgroupManager {
    /// `cgroups_path` is `linux.cgroupsPath` (absolute paths are relative to
    /// the hierarchy root; relative ones to the runtime's own cgroup) or, when
    /// the spec has none, `/berth/<container id>`. `root` is the cgroup mount
    /// point, normally `/sys/fs/cgroup`.
    pub fn new(root: &Path, cgroups_path: &Path) -> Result<Self, CgroupError> {
        let _ = root;
        Ok(Self {
            mode: CgroupMode::V2,
            relative_path: cgroups_path.to_path_buf(),
        })
    }
    pub fn mode(&self) -> CgroupMode {
        self.mode
    }
    pub fn relative_path(&self) -> &Path {
        &self.relative_path
    }
    /// Creates the directories (all controllers on v1; enabling controllers in parents on v2).
    pub fn create(&self) -> Result<(), CgroupError> {
        Err(CgroupError::NotImplemented("create"))
    }
    /// Applies limits; used at create and by `update`.
    pub fn apply(&self, _resources: &LinuxResources) -> Result<(), CgroupError> {
        Err(CgroupError::NotImplemented("apply"))
    }
    pub fn add_task(&self, _pid: Pid) -> Result<(), CgroupError> {
        Err(CgroupError::NotImplemented("add_task"))
    }
    pub fn freeze(&self) -> Result<(), CgroupError> {
        Err(CgroupError::NotImplemented("freeze"))
    }
    pub fn thaw(&self) -> Result<(), CgroupError> {
        Err(CgroupError::NotImplemented("thaw"))
    }
    pub fn freezer_state(&self) -> Result<FreezerState, CgroupError> {
        Err(CgroupError::NotImplemented("freezer_state"))
    }
    /// All processes in the cgroup and its descendants.
    pub fn pids(&self) -> Result<Vec<Pid>, CgroupError> {
        Err(CgroupError::NotImplemented("pids"))
    }
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        Err(CgroupError::NotImplemented("stats"))
    }
    /// Number of OOM kills the kernel recorded in this cgroup.
    pub fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        Err(CgroupError::NotImplemented("oom_kill_count"))
    }
    /// Removes the directories; processes must be gone already.
    pub fn remove(&self) -> Result<(), CgroupError> {
        Err(CgroupError::NotImplemented("remove"))
    }
}
