//! `wait`: until a container stops, exits again, or is removed.
//!
//! The state is written by the container's monitor, another process, with
//! an atomic rename; an inotify watch on the container's directory wakes the
//! waiter at once instead of a poll interval later (this is on the path of
//! every `docker run`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{blocking, store, ContainerError, ContainerRecord, ContainerService, WaitCondition};

/// How often a waiter re-reads the state even without a notification (a
/// safety net, and how soon an abandoned waiter notices).
const RECHECK: Duration = Duration::from_millis(500);

/// An inotify watch on one directory: renames into it (the atomic state
/// writes), writes, and its removal.
struct DirWatch {
    fd: OwnedFd,
}

impl DirWatch {
    fn new(dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: inotify_init1 takes flags and returns a new fd or -1.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd from the kernel, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let mask = libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE | libc::IN_DELETE_SELF;
        // SAFETY: a valid inotify fd and a NUL-terminated path for the call.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    /// Blocks until something changed or `timeout` passed; drains events.
    fn wait(&self, timeout: Duration) {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd that lives for the call.
        if unsafe { libc::poll(&mut pfd, 1, ms) } > 0 {
            let mut buf = [0u8; 4096];
            // SAFETY: reading into a buffer we own, of its length.
            while unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0
            {
            }
        }
    }
}

/// Blocks until `done` holds for the container's record (or the record is
/// gone), or until `deadline`; returns whether it held.
pub(super) fn block_until(
    dir: &Path,
    deadline: Instant,
    done: impl Fn(&ContainerRecord) -> bool,
) -> bool {
    let watch = DirWatch::new(dir).ok();
    loop {
        match store::read_record(dir) {
            Ok(r) if !done(&r) => {}
            _ => return true,
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let left = (deadline - now).min(RECHECK);
        match &watch {
            Some(w) => w.wait(left),
            None => std::thread::sleep(left.min(Duration::from_millis(20))),
        }
    }
}

/// Set when the waiting request goes away, so its thread stops too.
struct Abandon(Arc<AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl ContainerService {
    /// Waits for `condition`; returns the exit code.
    pub async fn wait(
        &self,
        reference: &str,
        condition: WaitCondition,
    ) -> Result<i32, ContainerError> {
        let (_, dir, record) = self.load(reference)?;
        let abandoned = Arc::new(AtomicBool::new(false));
        let _guard = Abandon(Arc::clone(&abandoned));
        blocking(move || {
            // Watch before the first read, so no change falls in between.
            let watch = DirWatch::new(&dir).ok();
            let exits = record.state.exits;
            let mut last = record;
            loop {
                let current = match store::read_record(&dir) {
                    Ok(r) => r,
                    // Removed: the state file goes with the container (it is
                    // replaced by rename, so never missing while it exists).
                    Err(_) if !dir.join(store::STATE_FILE).exists() => {
                        return Ok(last.state.exit_code)
                    }
                    Err(_) => last.clone(),
                };
                let done = match condition {
                    WaitCondition::NotRunning => !current.state.status.is_active(),
                    WaitCondition::NextExit => current.state.exits > exits,
                    WaitCondition::Removed => false,
                };
                if done {
                    return Ok(current.state.exit_code);
                }
                if abandoned.load(Ordering::Relaxed) {
                    return Err(ContainerError::Task("the waiter went away".into()));
                }
                last = current;
                match &watch {
                    Some(w) => w.wait(RECHECK),
                    // No inotify (limits reached): poll.
                    None => std::thread::sleep(Duration::from_millis(25)),
                }
            }
        })
        .await
    }
}
