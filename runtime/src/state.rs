//! The on-disk record of a container: `<root>/<id>/state.json`, written
//! atomically.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Hooks;
use serde::{Deserialize, Serialize};

const STATE_FILE: &str = "state.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container \"{0}\" does not exist")]
    NotFound(String),
    #[error("reading state of container \"{id}\": {source}")]
    Read { id: String, source: std::io::Error },
    #[error("state of container \"{id}\" is corrupt: {source}")]
    Corrupt {
        id: String,
        source: serde_json::Error,
    },
    #[error("writing state of container \"{id}\": {source}")]
    Write { id: String, source: std::io::Error },
}

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
    /// The cgroup path the container's manager was built from.
    pub cgroup_path: PathBuf,
    /// `ociVersion` of the spec the container was created from.
    pub oci_version: String,
    /// The spec's hooks (poststart and poststop run from later commands).
    /// The whole spec is kept beside this file as `config.json`, read only
    /// by the operations that need it (exec), so that start/delete/state
    /// stay cheap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Hooks>,
}

impl ContainerState {
    /// Writes `<dir>/state.json` atomically (temp file, fsync, rename).
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            id: self.id.clone(),
            source,
        };
        let tmp = dir.join(".state.json.tmp");
        let bytes = serde_json::to_vec(self).map_err(|e| err(e.into()))?;
        let mut file = fs::File::create(&tmp).map_err(err)?;
        file.write_all(&bytes).map_err(err)?;
        file.sync_data().map_err(err)?;
        fs::rename(&tmp, dir.join(STATE_FILE)).map_err(err)
    }

    pub fn load(dir: &Path, id: &str) -> Result<Self, StateError> {
        let bytes = match fs::read(dir.join(STATE_FILE)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(id.to_string()))
            }
            Err(source) => {
                return Err(StateError::Read {
                    id: id.to_string(),
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
            id: id.to_string(),
            source,
        })
    }
}

/// Formats seconds+nanoseconds since the epoch as RFC 3339 in UTC, with
/// nanoseconds, the way runc prints `created`.
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Current time in RFC 3339.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(
        i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        now.subsec_nanos(),
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's published algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(rfc3339(1_795_000_000, 0), "2026-11-18T11:06:40.000000000Z");
    }
}
