//! The on-disk record of a container: `<root>/<id>/state.json`, written
//! atomically.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Lifecycle status as the OCI runtime spec names it (plus `paused`, as runc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// Everything the runtime keeps about one container between invocations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub status: Status,
    /// Host pid of the container's init process (0 once stopped).
    pub pid: i32,
    /// Start time of the init process (field 22 of /proc/<pid>/stat), to tell
    /// a recycled pid from ours.
    pub pid_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 creation time.
    pub created: String,
    /// User name (or uid) of whoever created the container.
    pub owner: String,
    #[serde(default)]
    pub annotations: std::collections::HashMap<String, String>,
}
