//! File helpers shared by the v1 and v2 code: one `open`+`write` per value,
//! errors that name the file, and a missing file turned into "controller not
//! available" where that is what it means.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::CgroupError;

/// Writes `value` to an existing cgroup file with a single `write(2)`
/// (cgroup files take one value per write; no `O_CREAT`, no `O_TRUNC`).
pub(super) fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    try_write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

fn try_write(path: &Path, value: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    let n = f.write(value.as_bytes())?;
    if n != value.len() {
        return Err(std::io::Error::new(
            ErrorKind::WriteZero,
            "short write to a cgroup file",
        ));
    }
    Ok(())
}

/// Writes `dir/file` for resource `field`. If the file does not exist while
/// `dir` does, the controller is missing: the error names `controller`.
pub(super) fn write_controller(
    dir: &Path,
    file: &str,
    value: &str,
    controller: &str,
    field: &str,
) -> Result<(), CgroupError> {
    let path = dir.join(file);
    match try_write(&path, value) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound && dir.is_dir() => {
            Err(CgroupError::ControllerUnavailable {
                controller: controller.to_string(),
                field: field.to_string(),
                path: dir.to_path_buf(),
            })
        }
        Err(source) => Err(CgroupError::Write {
            path,
            value: value.to_string(),
            source,
        }),
    }
}

/// Like [`write_controller`] but a missing file is `Ok(false)` (for files
/// with a fallback, such as `blkio.weight` vs `blkio.bfq.weight`).
pub(super) fn write_if_present(path: &Path, value: &str) -> Result<bool, CgroupError> {
    match try_write(path, value) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(source) => Err(CgroupError::Write {
            path: path.to_path_buf(),
            value: value.to_string(),
            source,
        }),
    }
}

pub(super) fn read_file(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a file; a missing file is `None`.
pub(super) fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads `path`; a missing file means `controller` is not available.
pub(super) fn read_file_controller(
    path: &Path,
    controller: &str,
    field: &str,
) -> Result<String, CgroupError> {
    match read_optional(path)? {
        Some(s) => Ok(s),
        None => Err(CgroupError::ControllerUnavailable {
            controller: controller.to_string(),
            field: field.to_string(),
            path: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        }),
    }
}

/// Parses a single number; `max` is `u64::MAX`.
pub(super) fn parse_u64(path: &Path, text: &str) -> Result<u64, CgroupError> {
    let t = text.trim();
    if t == "max" {
        return Ok(u64::MAX);
    }
    t.parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        detail: format!("expected a number, found {t:?}"),
    })
}

/// Reads a single-number file; a missing file is `None`.
pub(super) fn read_u64_optional(path: &Path) -> Result<Option<u64>, CgroupError> {
    match read_optional(path)? {
        Some(t) => parse_u64(path, &t).map(Some),
        None => Ok(None),
    }
}

/// The value of `key` in a flat-keyed file (`key value` per line).
pub(super) fn flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// Appends the pids in `dir/cgroup.procs` and in every descendant cgroup.
pub(super) fn collect_pids(dir: &Path, out: &mut Vec<Pid>) -> Result<(), CgroupError> {
    let procs = dir.join("cgroup.procs");
    let text = match read_optional(&procs)? {
        Some(t) => t,
        None => return Ok(()),
    };
    for line in text.lines() {
        let pid: i32 = line.trim().parse().map_err(|_| CgroupError::Parse {
            path: procs.clone(),
            detail: format!("expected a pid, found {line:?}"),
        })?;
        out.push(Pid::from_raw(pid));
    }
    for sub in subdirs(dir)? {
        collect_pids(&sub, out)?;
    }
    Ok(())
}

/// The child cgroups of `dir` (a missing `dir` has none).
pub(super) fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CgroupError::ReadDir {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CgroupError::ReadDir {
            path: dir.to_path_buf(),
            source,
        })?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// `rmdir` once: `Ok(true)` when gone (or never there), `Ok(false)` when busy.
pub(super) fn rmdir_fast(dir: &Path) -> Result<bool, CgroupError> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
        Err(e) if is_busy(&e) => Ok(false),
        Err(source) => Err(CgroupError::RemoveDir {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn is_busy(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::ENOTEMPTY))
}

/// How often `remove_tree` retries a busy `rmdir`, and the longest pause
/// between tries: about a second in all.
const RMDIR_ATTEMPTS: u32 = 16;
const RMDIR_MAX_PAUSE: Duration = Duration::from_millis(100);

/// Removes `dir` and its descendant cgroups, deepest first. While a
/// directory is busy, its remaining processes get SIGKILL and `rmdir` is
/// retried with a growing pause.
pub(super) fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    for sub in subdirs(dir)? {
        remove_tree(&sub)?;
    }
    let mut pause = Duration::from_millis(1);
    for _ in 0..RMDIR_ATTEMPTS {
        if rmdir_fast(dir)? {
            return Ok(());
        }
        let mut pids = Vec::new();
        // Only this directory: the descendants are gone already.
        if let Some(text) = read_optional(&dir.join("cgroup.procs"))? {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(RMDIR_MAX_PAUSE);
    }
    Err(CgroupError::StillBusy {
        path: dir.to_path_buf(),
        attempts: RMDIR_ATTEMPTS,
    })
}

/// Polls `check` with a growing pause (up to `budget` in total) until it
/// returns `Some`.
pub(super) fn poll<T>(
    budget: Duration,
    mut check: impl FnMut() -> Result<Option<T>, CgroupError>,
) -> Result<Option<T>, CgroupError> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_micros(100);
    loop {
        if let Some(v) = check()? {
            return Ok(Some(v));
        }
        if start.elapsed() >= budget {
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
