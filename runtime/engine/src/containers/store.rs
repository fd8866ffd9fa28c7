//! On-disk layout and crash-safe updates.
//!
//! ```text
//! <root>/containers/<id>/state.json    the ContainerRecord (atomic replace)
//! <root>/containers/<id>/lock          flock(2) around read-modify-write
//! <root>/containers/<id>/config.json   the OCI bundle's spec
//! <root>/containers/<id>/rootfs        the snapshot mount point
//! <root>/containers/<id>/<id>-json.log logs (json-file), rotated .1 .2 …
//! <root>/containers/<id>/attach.sock   the monitor's attach socket
//! <root>/names/<name>                  name reservations (O_EXCL), content: id
//! ```
//!
//! The daemon and the container's monitor both update `state.json`; every
//! update takes the directory's lock, re-reads, changes and atomically
//! replaces the file, so neither loses the other's fields. Run-time updates
//! are synced but their rename is not made durable ([`Durability`]): a
//! power failure may bring back the state before them, which a reboot makes
//! stale anyway (the daemon reconciles it with the dead monitors on start).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::error::ContainerError;
use super::types::ContainerRecord;

pub const STATE_FILE: &str = "state.json";
pub const LOCK_FILE: &str = "lock";
pub const ATTACH_SOCKET: &str = "attach.sock";

pub fn log_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}-json.log"))
}

/// Calls `f` with a short path to `dir/name` (`/proc/self/fd/N/name`), for
/// unix sockets whose full path would exceed `sun_path`'s 108 bytes.
pub fn with_short_path<T>(
    dir: &Path,
    name: &str,
    f: impl FnOnce(&Path) -> T,
) -> std::io::Result<T> {
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}/{name}", handle.as_raw_fd()));
    let out = f(&short);
    drop(handle);
    Ok(out)
}

/// Connects to the unix socket `dir/name`, however long the path.
pub fn connect_socket(dir: &Path, name: &str) -> std::io::Result<std::os::unix::net::UnixStream> {
    with_short_path(dir, name, |p| std::os::unix::net::UnixStream::connect(p))?
}

/// What a write of a whole file must survive. Every kind replaces the file
/// atomically for readers (temp file, rename): a process that dies half-way
/// leaves the old content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The file is synced before the rename: after a power failure it holds
    /// the old or the new content, never a torn one, but the new content
    /// may be lost. For run-time state (pid, status, exit code), which a
    /// reboot makes stale anyway: what Docker does for its container files.
    Replace,
    /// Also the directory is synced: once the call returned, the new content
    /// survives a power failure. For what a client was told exists (a
    /// created container, a new name).
    Durable,
    /// Nothing is synced: for files nobody reads after a reboot (an exec's
    /// process spec).
    Volatile,
}

/// Writes `data` to `path` atomically and durably (see [`Durability::Durable`]).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ContainerError> {
    write_file(path, data, Durability::Durable)
}

/// Writes `data` to `path` atomically (temp file, rename), synced per `durability`.
pub fn write_file(path: &Path, data: &[u8], durability: Durability) -> Result<(), ContainerError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let ctx = || format!("writing {}", path.display());
    let mut file = File::create(&tmp).map_err(ContainerError::io(ctx()))?;
    file.write_all(data).map_err(ContainerError::io(ctx()))?;
    if durability != Durability::Volatile {
        file.sync_all().map_err(ContainerError::io(ctx()))?;
    }
    drop(file);
    fs::rename(&tmp, path).map_err(ContainerError::io(ctx()))?;
    if durability == Durability::Durable {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// An exclusive flock on `<dir>/lock`, released on drop.
pub struct DirLock {
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<Self, ContainerError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(ContainerError::io(format!("opening {}", path.display())))?;
        loop {
            // SAFETY: flock on a valid, owned fd.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                return Ok(DirLock { _file: file });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(ContainerError::io(format!("locking {}", path.display()))(e));
            }
        }
    }
}

pub fn read_record(dir: &Path) -> Result<ContainerRecord, ContainerError> {
    let path = dir.join(STATE_FILE);
    let mut data = Vec::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(ContainerError::io(format!("reading {}", path.display())))?;
    serde_json::from_slice(&data).map_err(|source| ContainerError::CorruptState { path, source })
}

pub fn write_record(
    dir: &Path,
    record: &ContainerRecord,
    durability: Durability,
) -> Result<(), ContainerError> {
    let data =
        serde_json::to_vec_pretty(record).map_err(|source| ContainerError::CorruptState {
            path: dir.join(STATE_FILE),
            source,
        })?;
    write_file(&dir.join(STATE_FILE), &data, durability)
}

/// Read-modify-write of the record under the directory lock, for run-time
/// state ([`Durability::Replace`]).
pub fn update_record<T>(
    dir: &Path,
    f: impl FnOnce(&mut ContainerRecord) -> T,
) -> Result<(T, ContainerRecord), ContainerError> {
    update_record_with(dir, Durability::Replace, f)
}

/// [`update_record`] with a choice of durability.
pub fn update_record_with<T>(
    dir: &Path,
    durability: Durability,
    f: impl FnOnce(&mut ContainerRecord) -> T,
) -> Result<(T, ContainerRecord), ContainerError> {
    let _lock = DirLock::acquire(dir)?;
    let mut record = read_record(dir)?;
    let out = f(&mut record);
    write_record(dir, &record, durability)?;
    Ok((out, record))
}

/// 64 random hex digits.
pub fn random_id() -> Result<String, ContainerError> {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(ContainerError::io("reading /dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A random number below `n` (for generated names).
pub fn random_below(n: usize) -> usize {
    let mut bytes = [0u8; 8];
    let _ = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    (u64::from_le_bytes(bytes) % n.max(1) as u64) as usize
}

/// Unix time now in nanoseconds.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// RFC 3339 with nine fractional digits, UTC (Docker's RFC3339Nano is
/// trimmed of trailing zeros; clients parse both).
pub fn format_time(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000) as u32;
    berth_runtime::state::rfc3339(secs, frac)
}

pub fn now_rfc3339() -> String {
    format_time(now_nanos())
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` to Unix nanoseconds.
pub fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut frac: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = s.get(start..i)?;
        let mut padded: String = digits.chars().take(9).collect();
        while padded.len() < 9 {
            padded.push('0');
        }
        frac = padded.parse().ok()?;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = (oh * 60 + om) * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset;
    Some(secs * 1_000_000_000 + frac)
}

/// Field 22 (start time) of `/proc/<pid>/stat`, and whether it is a zombie.
pub fn proc_start_time(pid: i32) -> Option<(u64, bool)> {
    if pid <= 0 {
        return None;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, state == "Z" || state == "X"))
}

/// Whether the process `pid` that started at `start_time` still lives.
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    matches!(proc_start_time(pid), Some((start, false)) if start_time == 0 || start == start_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trip() {
        let t = 1_700_000_000_123_456_789;
        let s = format_time(t);
        assert_eq!(parse_time(&s), Some(t));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(parse_time("1970-01-01T01:00:00.5+01:00"), Some(500_000_000));
        assert_eq!(parse_time("garbage"), None);
    }

    #[test]
    fn ids_are_hex() {
        let id = random_id().expect("id");
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
