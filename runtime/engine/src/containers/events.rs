//! Container events, as Docker emits them: the actor is the container's id;
//! its attributes are the container's labels, `image` (as given to create)
//! and `name`, plus what the action adds (`exitCode` for `die`, `signal` for
//! `kill`, `oldName` for `rename`, `execID` for exec events).
//!
//! Most events are emitted where the action happens. What a container does
//! on its own — exiting, and being restarted by its restart policy inside
//! its monitor — is seen in the state the monitor writes: one thread watches
//! every container directory with inotify and [`ContainerService::observe`]s
//! the container whose `state.json` was replaced. `observe` compares the
//! state with what was last reported: a run not reported yet gives `start`,
//! exits not reported yet give `die` (after `oom` when the kernel killed it).
//! The number of exits reported is kept in the container's directory
//! (`events.exits`), so a restarted daemon reports the exits that happened
//! while it was away, once, and no exit twice.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::{lock, store, ContainerRecord, ContainerService, Inner, Status};

/// The number of exits `die` was emitted for, in the container's directory.
const EXITS_FILE: &str = "events.exits";

/// What was last reported per container (started_at of the reported run).
#[derive(Default)]
pub(super) struct Reported {
    started_at: HashMap<String, String>,
}

/// One inotify instance watching every container directory.
pub(super) struct ExitWatch {
    fd: OwnedFd,
    /// Watch descriptor → container id.
    wds: Mutex<HashMap<i32, String>>,
}

impl ExitWatch {
    pub(super) fn new() -> std::io::Result<Self> {
        // SAFETY: inotify_init1 takes flags and returns a new fd or -1.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: a fresh fd from the kernel, owned by nothing else.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
            wds: Mutex::new(HashMap::new()),
        })
    }

    fn add(&self, id: &str, dir: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return;
        };
        let mask = libc::IN_MOVED_TO | libc::IN_DELETE_SELF;
        // SAFETY: a valid inotify fd and a NUL-terminated path for the call.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), path.as_ptr(), mask) };
        if wd >= 0 {
            lock(&self.wds).insert(wd, id.to_string());
        } else {
            eprintln!(
                "berth: cannot watch {} for container events: {}",
                dir.display(),
                std::io::Error::last_os_error()
            );
        }
    }

    /// Waits up to `timeout` for changes; returns the containers whose
    /// state was replaced (`None`: events were lost, look at all of them).
    fn changed(&self, timeout: Duration) -> Option<Vec<String>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd that lives for the call.
        if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
            return Some(Vec::new());
        }
        let mut ids = Vec::new();
        let mut overflow = false;
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: reading into a buffer we own, of its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let Ok(n) = usize::try_from(n) else { break };
            if n == 0 {
                break;
            }
            let header = std::mem::size_of::<libc::inotify_event>();
            let mut off = 0;
            while off + header <= n {
                // SAFETY: the kernel wrote a whole inotify_event at `off`
                // (read_unaligned: the buffer has no alignment guarantee).
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf.as_ptr().add(off).cast()) };
                let name_len = ev.len as usize;
                let name = buf
                    .get(off + header..off + header + name_len)
                    .map(|b| {
                        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                        &b[..end]
                    })
                    .unwrap_or(&[]);
                off += header + name_len;
                if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                    overflow = true;
                    continue;
                }
                let mut wds = lock(&self.wds);
                if ev.mask & libc::IN_IGNORED != 0 {
                    // The directory is gone (the container was removed).
                    wds.remove(&ev.wd);
                    continue;
                }
                if name == store::STATE_FILE.as_bytes() {
                    if let Some(id) = wds.get(&ev.wd) {
                        if !ids.contains(id) {
                            ids.push(id.clone());
                        }
                    }
                }
            }
        }
        if overflow {
            None
        } else {
            Some(ids)
        }
    }
}

/// The watcher thread: ends when the service is dropped.
pub(super) fn spawn_watcher(inner: Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("berth-events".into())
        .stack_size(256 * 1024)
        .spawn(move || loop {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            let Some(watch) = strong.exit_watch.as_ref().map(Arc::clone) else {
                return;
            };
            drop(strong);
            // Wakes up now and then to notice that the service is gone.
            let changed = watch.changed(Duration::from_secs(1));
            let Some(strong) = inner.upgrade() else {
                return;
            };
            let service = ContainerService { inner: strong };
            match changed {
                Some(ids) => ids.iter().for_each(|id| service.observe(id)),
                None => service.ids().iter().for_each(|id| service.observe(id)),
            }
        });
    if let Err(e) = spawned {
        eprintln!("berth: cannot start the container event watcher: {e}");
    }
}

fn read_reported_exits(dir: &Path) -> Option<u64> {
    fs::read_to_string(dir.join(EXITS_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Not fsynced: after a power loss the worst outcome is a `die` reported twice.
fn write_reported_exits(dir: &Path, exits: u64) {
    let tmp = dir.join(format!(".{EXITS_FILE}.tmp"));
    if fs::write(&tmp, exits.to_string()).is_ok() {
        let _ = fs::rename(&tmp, dir.join(EXITS_FILE));
    }
}

/// The signal number Docker puts in a `kill` event's `signal` attribute.
pub(super) fn signal_number(signal: nix::sys::signal::Signal) -> String {
    (signal as i32).to_string()
}

impl ContainerService {
    /// The engine's event log (containers, volumes, networks; the API adds
    /// image events).
    pub fn events(&self) -> &crate::events::EventBus {
        &self.inner.events
    }

    /// Docker's attributes of a container event.
    fn attributes(record: &ContainerRecord, extra: &[(&str, String)]) -> BTreeMap<String, String> {
        let mut a = record.resolved.labels.clone();
        a.insert("image".into(), record.image.clone());
        a.insert(
            "name".into(),
            record.name.trim_start_matches('/').to_string(),
        );
        for (k, v) in extra {
            a.insert((*k).to_string(), v.clone());
        }
        a
    }

    /// Emits a container event for `record`.
    pub(super) fn emit(&self, record: &ContainerRecord, action: &str, extra: &[(&str, String)]) {
        self.inner.events.publish(
            "container",
            action,
            &record.id,
            Self::attributes(record, extra),
        );
    }

    /// Emits a container event from outside the service (the API's attach
    /// and exec streams: `detach`, `exec_detach`), with the container's
    /// attributes and `extra`.
    pub fn container_event(&self, id: &str, action: &str, extra: &[(&str, String)]) {
        self.emit_for(id, action, extra);
    }

    /// Emits an event for the container `id` as its record is now (nothing
    /// if it is gone).
    pub(super) fn emit_for(&self, id: &str, action: &str, extra: &[(&str, String)]) {
        if let Ok(record) = store::read_record(&self.dir(id)) {
            self.emit(&record, action, extra);
        }
    }

    /// Starts watching a container's directory for exits and restarts.
    pub(super) fn watch_events(&self, id: &str) {
        if let Some(w) = &self.inner.exit_watch {
            w.add(id, &self.dir(id));
        }
    }

    /// A new container: nothing to report about its past.
    pub(super) fn events_created(&self, id: &str) {
        write_reported_exits(&self.dir(id), 0);
        self.watch_events(id);
    }

    /// After a daemon restart: the run in progress was reported by the
    /// daemon that saw it start. Exits are reported from `events.exits`.
    pub(super) fn events_adopt(&self, id: &str) {
        let dir = self.dir(id);
        let Ok(record) = store::read_record(&dir) else {
            return;
        };
        lock(&self.inner.reported)
            .started_at
            .insert(id.to_string(), record.state.started_at.clone());
        if read_reported_exits(&dir).is_none() {
            // Made before events were tracked: start counting from here.
            write_reported_exits(&dir, record.state.exits);
        }
        self.watch_events(id);
    }

    /// Reports what the container did since it was last looked at: a new
    /// run (`start`), exits (`oom`, `die`). Safe to call any time, from any
    /// thread: each run and each exit is reported once.
    pub(super) fn observe(&self, id: &str) {
        let mut reported = lock(&self.inner.reported);
        let dir = self.dir(id);
        let Ok(record) = store::read_record(&dir) else {
            reported.started_at.remove(id);
            return;
        };
        let s = &record.state;
        let new_run = !s.started_at.is_empty()
            && reported.started_at.get(id).map(String::as_str) != Some(s.started_at.as_str());
        let reported_exits = read_reported_exits(&dir).unwrap_or(s.exits);
        let new_exit = s.exits > reported_exits;
        // The exit seen ended the run seen, unless the run began after it
        // (a restart by the restart policy): then `die` comes first.
        let exit_first = new_exit
            && new_run
            && store::parse_time(&s.finished_at) < store::parse_time(&s.started_at);
        let die = |this: &Self| {
            if s.oom_killed {
                this.emit(&record, "oom", &[]);
            }
            let mut extra = vec![("exitCode", s.exit_code.to_string())];
            if let (Some(a), Some(b)) = (
                store::parse_time(&s.started_at),
                store::parse_time(&s.finished_at),
            ) {
                if b >= a {
                    extra.push(("execDuration", ((b - a) / 1_000_000_000).to_string()));
                }
            }
            this.emit(&record, "die", &extra);
            write_reported_exits(&dir, s.exits);
        };
        if exit_first {
            die(self);
        }
        if new_run && (s.status != Status::Created) {
            self.emit(&record, "start", &[]);
            reported
                .started_at
                .insert(id.to_string(), s.started_at.clone());
        }
        if new_exit && !exit_first {
            die(self);
        }
    }
}
