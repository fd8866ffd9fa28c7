//! Parsed container records kept in memory for `list` (`docker ps`), so a
//! listing does not read and parse every `state.json` each time.
//!
//! Records are written by the daemon and by the monitors (other processes),
//! always by renaming a new file into the container's directory. The cache
//! has an inotify instance of its own watching every cached container's
//! directory for renames into it and for its deletion, and it drains that
//! queue at the start of each lookup. The kernel queues an event before the
//! rename returns, so any write that finished before a `list` began has
//! invalidated its entry by the time the entry is used: a listing never
//! shows a state older than one already written. A watch is placed before
//! the record is read, so a write between the two is not missed either.
//! When the queue overflows everything is dropped; a directory that cannot
//! be watched (inotify limits) is simply not cached.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::{store, ContainerRecord};

pub(super) struct RecordCache {
    /// `None`: no inotify here; nothing is cached.
    fd: Option<OwnedFd>,
    /// Watch descriptor → container id, and back.
    ids: HashMap<i32, String>,
    wds: HashMap<String, i32>,
    records: HashMap<String, ContainerRecord>,
}

impl RecordCache {
    pub(super) fn new() -> Self {
        // SAFETY: inotify_init1 takes flags and returns a new fd or -1.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        Self {
            // SAFETY: a fresh fd from the kernel, owned by nothing else.
            fd: (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) }),
            ids: HashMap::new(),
            wds: HashMap::new(),
            records: HashMap::new(),
        }
    }

    /// The records of `ids` (in `<root>/containers/<id>`), from memory where
    /// nothing changed; unreadable ones are left out. Forgets the others.
    pub(super) fn records(&mut self, containers: &Path, ids: &[String]) -> Vec<ContainerRecord> {
        self.drain();
        if self.records.len() > ids.len() {
            let keep: std::collections::HashSet<&String> = ids.iter().collect();
            self.records.retain(|id, _| keep.contains(id));
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = self.records.get(id) {
                out.push(r.clone());
                continue;
            }
            let dir = containers.join(id);
            let watched = self.watch(id, &dir);
            let Ok(record) = store::read_record(&dir) else {
                continue;
            };
            if watched {
                self.records.insert(id.clone(), record.clone());
            }
            out.push(record);
        }
        out
    }

    fn watch(&mut self, id: &str, dir: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        if self.wds.contains_key(id) {
            return true;
        }
        let Some(fd) = &self.fd else {
            return false;
        };
        let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return false;
        };
        let mask = libc::IN_MOVED_TO | libc::IN_DELETE_SELF | libc::IN_ONLYDIR;
        // SAFETY: a valid inotify fd and a NUL-terminated path for the call.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
        if wd < 0 {
            return false;
        }
        self.ids.insert(wd, id.to_string());
        self.wds.insert(id.to_string(), wd);
        true
    }

    /// Applies every queued event: the containers concerned are read again.
    fn drain(&mut self) {
        let Some(fd) = &self.fd else {
            return;
        };
        let header = std::mem::size_of::<libc::inotify_event>();
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: reading into a buffer we own, of its length.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let Ok(n) = usize::try_from(n) else { break };
            if n == 0 {
                break;
            }
            let mut off = 0;
            while off + header <= n {
                // SAFETY: the kernel wrote a whole inotify_event at `off`
                // (read_unaligned: the buffer has no alignment guarantee).
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf.as_ptr().add(off).cast()) };
                off += header + ev.len as usize;
                if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                    self.records.clear();
                    continue;
                }
                let Some(id) = self.ids.get(&ev.wd) else {
                    continue;
                };
                self.records.remove(id);
                if ev.mask & libc::IN_IGNORED != 0 {
                    // The directory is gone; the watch with it.
                    self.wds.remove(id);
                    self.ids.remove(&ev.wd);
                }
            }
        }
    }
}
