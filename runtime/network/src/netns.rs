//! Network-namespace helpers: open a namespace by path, run a closure inside one on a dedicated
//! thread (so no long-lived thread ever switches namespace), and write per-namespace sysctls.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::sched::{setns, CloneFlags};

use crate::error::{NetworkError, Result};

/// Opens a network namespace handle (`/proc/<pid>/ns/net`, `/run/netns/<name>`, …).
pub fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| NetworkError::Netns {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs `f` on a new thread that first joins network namespace `ns`; the thread (and with it
/// the namespace switch) ends when `f` returns. Sockets created by `f` stay in `ns`.
pub fn run_in<T, F>(ns: BorrowedFd<'_>, f: F) -> io::Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("namespace worker thread panicked"))?
    })
}

/// Writes `value` to `/proc/sys/<key with dots as slashes>` for the calling thread's network
/// namespace (`/proc/sys/net` resolves per the opening task's namespace). Skips the write when
/// the value is already set, so read-only `/proc/sys` setups that are pre-configured still work.
pub fn sysctl(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    if let Ok(cur) = std::fs::read_to_string(&path) {
        if cur.trim() == value {
            return Ok(());
        }
    }
    std::fs::write(&path, value).map_err(|source| NetworkError::Sysctl { path, source })
}
