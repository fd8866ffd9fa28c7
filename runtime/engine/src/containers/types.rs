//! The public data types: what `create` takes, what `inspect` and `list`
//! return, and what is persisted in each container's `state.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The body of a create request (Docker's `ContainerConfig` + `HostConfig`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerCreate {
    /// Without the leading `/`; generated when absent.
    pub name: Option<String>,
    pub image: String,
    /// `None`: the image's Cmd (unless `entrypoint` is given).
    pub cmd: Option<Vec<String>>,
    /// `None`: the image's Entrypoint; `Some(vec![])` clears it.
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=value` entries, merged over the image's.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`.
    pub user: Option<String>,
    /// Container hostname; the first 12 characters of the id by default.
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub tty: bool,
    pub open_stdin: bool,
    /// Close the container's stdin when the first attached client detaches.
    pub stdin_once: bool,
    /// e.g. `SIGTERM`, `TERM` or `15`; the image's, else SIGTERM.
    pub stop_signal: Option<String>,
    /// Seconds `stop` waits before SIGKILL when the caller gives none.
    pub stop_timeout: Option<u64>,
    /// Over the image's `HEALTHCHECK`; `Test: ["NONE"]` disables it.
    pub healthcheck: Option<berth_image::manifest::HealthConfig>,
    /// Anonymous volumes (`Config.Volumes`, from `-v /path`).
    pub volumes: Vec<String>,
    pub host_config: HostConfig,
    /// Ports, DNS, extra hosts and networks to join.
    pub network: super::network::ContainerNetwork,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostConfig {
    /// `host-path:container-path[:ro|rw]`.
    pub binds: Vec<String>,
    /// `--mount` specs.
    pub mounts: Vec<super::mounts::MountSpec>,
    /// Container path to tmpfs options (`size=64m,mode=1777`).
    pub tmpfs: BTreeMap<String, String>,
    /// Bytes; 0 = unlimited.
    pub memory: i64,
    /// Memory + swap in bytes; 0 = unset, -1 = unlimited swap.
    pub memory_swap: i64,
    /// CPUs × 10⁹.
    pub nano_cpus: i64,
    pub cpu_shares: u64,
    /// 0 or negative = unlimited.
    pub pids_limit: i64,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub read_only_rootfs: bool,
    /// `seccomp=unconfined`, `no-new-privileges[:true|false]`,
    /// `apparmor=…` and `label=…` (accepted, ignored).
    pub security_opt: Vec<String>,
    pub auto_remove: bool,
    pub restart_policy: RestartPolicy,
    /// Run an init as pid 1 (not supported yet: rejected when true).
    pub init: bool,
    /// `none`, `host` or `bridge`/`default`/empty. For now `bridge` is a new
    /// network namespace with only loopback (networking comes later).
    pub network_mode: String,
    pub oom_score_adj: i32,
    /// Initial terminal size (height, width) of a TTY container.
    pub console_size: Option<(u16, u16)>,
    /// json-file log cap per file in bytes (default 10 MiB) and file count
    /// (default 3).
    pub log_max_size: Option<u64>,
    pub log_max_files: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestartPolicy {
    /// `""`/`no`, `always`, `unless-stopped`, `on-failure`.
    pub name: String,
    /// For `on-failure`: 0 = unlimited.
    pub maximum_retry_count: u32,
}

/// Docker's container states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// Running, paused or restarting: a monitor is responsible for it.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Running | Status::Paused | Status::Restarting)
    }
}

/// The command, environment and identity after merging the image's config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResolvedConfig {
    /// Entrypoint + Cmd after the merge (Docker's `Path` + `Args`).
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: String,
    pub hostname: String,
    pub exposed_ports: Vec<String>,
    /// The health check in effect (the container's over the image's).
    pub healthcheck: Option<berth_image::manifest::HealthConfig>,
}

/// The mutable part of the record: written by the monitor while one runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunState {
    pub status: Status,
    /// Host pid of the container's init (0 when not running).
    pub pid: i32,
    pub exit_code: i32,
    /// RFC 3339 with nanoseconds; empty when never.
    pub started_at: String,
    pub finished_at: String,
    pub oom_killed: bool,
    /// A start failure or the reason the container is dead.
    pub error: String,
    pub restart_count: u32,
    /// Exits observed since creation (for `wait` with `next-exit`).
    pub exits: u64,
    /// Set by stop/kill through the API: restart policies do not apply.
    pub manual_stop: bool,
    /// The monitor process (pid and /proc start time, 0 when none).
    pub monitor_pid: i32,
    pub monitor_start_time: u64,
    /// Present while a health check runs (Docker's `State.Health`).
    pub health: Option<super::health::Health>,
}

/// Everything persisted about a container (`<root>/containers/<id>/state.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerRecord {
    pub id: String,
    /// With the leading `/`.
    pub name: String,
    pub created: String,
    /// As given to create.
    pub image: String,
    /// `sha256:…`.
    pub image_id: String,
    pub config: ContainerCreate,
    pub resolved: ResolvedConfig,
    pub state: RunState,
    pub log_path: String,
    /// How the root filesystem is assembled (mounted at `<dir>/rootfs`).
    pub rootfs: Option<berth_snapshot::Mounts>,
    /// Binds, volumes and tmpfs mounts, resolved at create.
    pub mounts: Vec<super::mounts::MountPoint>,
}

/// What `inspect` returns: the record plus a few derived fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerInspect {
    #[serde(flatten)]
    pub record: ContainerRecord,
    /// The data directory (`<root>/containers/<id>`).
    pub dir: String,
    /// The bundle's `config.json`.
    pub bundle_config: String,
}

/// Filters of `list`, each a set of accepted values (an empty list does not
/// filter). Labels are `key` or `key=value`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilters {
    pub label: Vec<String>,
    /// Substring of the name (Docker matches a regexp; we match substrings).
    pub name: Vec<String>,
    pub status: Vec<String>,
    /// Image name as given, or image id (prefix).
    pub ancestor: Vec<String>,
    /// Id prefix.
    pub id: Vec<String>,
}

/// `wait` conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitCondition {
    #[default]
    NotRunning,
    NextExit,
    Removed,
}

/// Options of `logs`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    pub stdout: bool,
    pub stderr: bool,
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// Unix time in nanoseconds; entries at or after it.
    pub since: Option<i64>,
    /// Unix time in nanoseconds; entries before it.
    pub until: Option<i64>,
    /// Prefix each line with its RFC 3339 timestamp in [`LogEntry::render`].
    pub timestamps: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdin,
    Stdout,
    Stderr,
}

/// One line of a container's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub stream: Stream,
    /// RFC 3339 with nanoseconds, as written.
    pub time: String,
    /// Unix time in nanoseconds.
    pub time_nanos: i64,
    /// The bytes, with the trailing newline when the line had one.
    pub line: Vec<u8>,
}

impl LogEntry {
    /// The bytes Docker's logs endpoint sends (timestamp prefix on request).
    pub fn render(&self, timestamps: bool) -> Vec<u8> {
        if !timestamps {
            return self.line.clone();
        }
        let mut out = Vec::with_capacity(self.time.len() + 1 + self.line.len());
        out.extend_from_slice(self.time.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&self.line);
        out
    }
}

/// One row of `top`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopResult {
    pub titles: Vec<String>,
    pub processes: Vec<Vec<String>>,
}

/// What `exec_create` takes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecConfig {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub tty: bool,
    /// Initial terminal size (height, width) for a TTY.
    pub console_size: Option<(u16, u16)>,
    pub attach_stdin: bool,
    pub privileged: bool,
    /// The keys that detach a client from the exec's terminal (Docker's
    /// notation; empty for the default). Kept for the API server, which
    /// applies them to the session it relays.
    pub detach_keys: String,
}

/// What `exec_inspect` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecInspect {
    pub id: String,
    pub container_id: String,
    pub running: bool,
    pub exit_code: Option<i32>,
    pub pid: i32,
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub containers_deleted: Vec<String>,
    pub space_reclaimed: u64,
}
