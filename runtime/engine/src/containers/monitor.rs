//! The per-container monitor process (`berth-monitor run`), and the exec
//! helper (`berth-monitor exec`).
//!
//! The runtime library forks and runs setup code in the child, which is only
//! sound in a single-threaded process, and a container must outlive the
//! daemon: so each container gets a process of its own. The monitor:
//!
//! 1. re-executes from a sealed copy of itself (CVE-2019-5736), forks once so
//!    the daemon need not reap it, starts a session and becomes a child
//!    subreaper (the container's init is reparented to it);
//! 2. creates the container with pipes (or, with a TTY, a pty received over
//!    the console socket) as its stdio, reports `created` on its stdout,
//!    waits for `start` on its stdin (the daemon connects early attach
//!    clients in between), starts it and reports `running <pid>`;
//! 3. runs a single-threaded `poll(2)` loop: container output to the
//!    json-file log and to attach clients, attach input to the container's
//!    stdin, until the init exits;
//! 4. records the exit (code, OOM kill from the cgroup's counters read before
//!    the runtime container is deleted, time), deletes the runtime container,
//!    and restarts it in place per the restart policy (with a backoff), or
//!    exits.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_runtime::container::{CreateOptions, ExecOptions, ExecOutcome, Runtime};

use super::attach;
use super::logs::{LogWriter, DEFAULT_MAX_FILES, DEFAULT_MAX_SIZE};
use super::store;
use super::types::{ContainerRecord, Status, Stream};

/// Entry point of the `berth-monitor` binary (and of any binary that wants
/// to serve as the monitor: call it with `std::env::args()` and exit with
/// the returned code). Arguments:
///
/// - `run <container-dir> <runtime-root>`
/// - `exec <runtime-root> <id> <process.json> <pid-file> [<console-socket>]`
///   (the socket a TTY exec's pty master is sent to)
pub fn main_with_args(args: &[String]) -> i32 {
    // Started from the daemon's in-memory copy, the kernel names the process
    // after the fd (`/proc/self/fd/N`): give it its own name for ps and top.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"berth-monitor".as_ptr(), 0, 0, 0) };
    match args.get(1).map(String::as_str) {
        Some("run") if args.len() == 4 => run(Path::new(&args[2]), Path::new(&args[3])),
        Some("exec") if args.len() == 6 || args.len() == 7 => exec(
            Path::new(&args[2]),
            &args[3],
            Path::new(&args[4]),
            Path::new(&args[5]),
            args.get(6).map(Path::new),
        ),
        _ => {
            eprintln!(
                "usage: berth-monitor run <container-dir> <runtime-root>\n       berth-monitor exec <runtime-root> <id> <process.json> <pid-file> [<console-socket>]"
            );
            2
        }
    }
}

fn ensure_cloned() -> Result<(), String> {
    berth_runtime::cloned_binary::ensure_cloned().map_err(|e| e.to_string())
}

// ---- exec helper ------------------------------------------------------------

fn exec(
    runtime_root: &Path,
    id: &str,
    process_json: &Path,
    pid_file: &Path,
    console_socket: Option<&Path>,
) -> i32 {
    if let Err(e) = ensure_cloned() {
        eprintln!("berth-monitor: {e}");
        return 126;
    }
    let result = (|| -> Result<i32, String> {
        let data = std::fs::read(process_json).map_err(|e| format!("reading process: {e}"))?;
        let process: oci_spec::runtime::Process =
            serde_json::from_slice(&data).map_err(|e| format!("parsing process: {e}"))?;
        let container = Runtime::new(runtime_root, false)
            .load(id)
            .map_err(|e| e.to_string())?;
        let mut opts = ExecOptions {
            pid_file: Some(pid_file.to_path_buf()),
            ..ExecOptions::default()
        };
        let outcome = match console_socket {
            // The socket's path may be too long for sun_path.
            Some(p) => {
                let dir = p.parent().unwrap_or(Path::new("/"));
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default();
                store::with_short_path(dir, &name, |short| {
                    opts.console_socket = Some(short.to_path_buf());
                    container.exec(&process, &opts)
                })
                .map_err(|e| format!("opening {}: {e}", dir.display()))?
            }
            None => container.exec(&process, &opts),
        };
        match outcome {
            Ok(ExecOutcome::Exited(code)) => Ok(code),
            Ok(ExecOutcome::Detached(_)) => Ok(0),
            Err(e) => {
                let text = e.to_string();
                eprintln!("OCI runtime exec failed: {text}");
                let lower = text.to_ascii_lowercase();
                Ok(
                    if lower.contains("no such file") || lower.contains("not found") {
                        127
                    } else {
                        126
                    },
                )
            }
        }
    })();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth-monitor: {e}");
            126
        }
    }
}

// ---- monitor ----------------------------------------------------------------

/// fds the monitor keeps for itself once 0/1/2 are lent to the container.
struct Control {
    /// Commands from the daemon (only `start`), then closed.
    input: Option<BufReader<File>>,
    /// Status lines to the daemon, then closed.
    output: Option<File>,
}

impl Control {
    fn report(&mut self, line: &str) {
        if let Some(out) = self.output.as_mut() {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    fn close(&mut self) {
        self.input = None;
        self.output = None;
    }
}

/// Moves `fd` above the stdio range, close-on-exec.
fn move_high(fd: RawFd) -> Option<File> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd we then own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
    // SAFETY: `new` was just returned to us and is owned by nothing else.
    (new >= 0).then(|| unsafe { File::from_raw_fd(new) })
}

fn dup2(from: RawFd, to: RawFd) -> std::io::Result<()> {
    // SAFETY: dup2 only manipulates the fd table; both fds are valid or the
    // call fails.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn log_line(msg: &str) {
    eprintln!(
        "{} berth-monitor[{}]: {msg}",
        store::now_rfc3339(),
        std::process::id()
    );
}

fn run(dir: &Path, runtime_root: &Path) -> i32 {
    if let Err(e) = ensure_cloned() {
        println!("error: {e}");
        return 1;
    }
    // Detach: the daemon reaps this process; the child carries on.
    // SAFETY: single-threaded at this point; the child only continues in
    // Rust code of this program.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => return 0,
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(e) => {
            println!("error: fork: {e}");
            return 1;
        }
    }
    let _ = nix::unistd::setsid();
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // Keep stderr (the monitor log) at 2 for eprintln; move the control pipes
    // away from 0 and 1.
    let mut control = Control {
        input: move_high(0).map(BufReader::new),
        output: move_high(1),
    };
    let _ = std::io::stderr().flush();
    let stderr_copy = move_high(2);
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        let _ = dup2(null.as_raw_fd(), 0);
        let _ = dup2(null.as_raw_fd(), 1);
    }
    match Monitor::new(dir, runtime_root, stderr_copy) {
        Ok(mut m) => {
            let code = m.run(&mut control);
            m.finish();
            code
        }
        Err(e) => {
            control.report(&format!("error: {e}"));
            1
        }
    }
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    /// False once the client half-closed: it sends nothing more but still
    /// receives the output.
    reading: bool,
}

struct Monitor {
    dir: PathBuf,
    id: String,
    runtime: Runtime,
    log: LogWriter,
    listener: UnixListener,
    clients: Vec<Client>,
    stderr_fd: Option<File>,
    record: ContainerRecord,
    /// The record says this monitor is gone (`monitor_pid` 0).
    released: bool,
}

/// What one run of the container produced.
struct Exit {
    code: i32,
    oom: bool,
}

impl Monitor {
    fn new(dir: &Path, runtime_root: &Path, stderr_fd: Option<File>) -> Result<Self, String> {
        let record = store::read_record(dir).map_err(|e| e.to_string())?;
        let hc = &record.config.host_config;
        let log = LogWriter::open(
            store::log_path(dir, &record.id),
            hc.log_max_size.unwrap_or(DEFAULT_MAX_SIZE),
            hc.log_max_files.unwrap_or(DEFAULT_MAX_FILES),
        )
        .map_err(|e| format!("opening the log: {e}"))?;
        let sock = dir.join(store::ATTACH_SOCKET);
        let _ = std::fs::remove_file(&sock);
        let listener = store::with_short_path(dir, store::ATTACH_SOCKET, |p| UnixListener::bind(p))
            .and_then(|r| r)
            .map_err(|e| format!("binding {}: {e}", sock.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("attach socket: {e}"))?;
        // Recorded once the attach socket exists: the daemon connects
        // clients directly to a monitor it sees alive.
        let pid = std::process::id() as i32;
        let start = store::proc_start_time(pid).map(|(s, _)| s).unwrap_or(0);
        let (_, record) = store::update_record(dir, |r| {
            r.state.monitor_pid = pid;
            r.state.monitor_start_time = start;
        })
        .map_err(|e| e.to_string())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            id: record.id.clone(),
            runtime: Runtime::new(runtime_root, false),
            log,
            listener,
            clients: Vec::new(),
            stderr_fd,
            record,
            released: false,
        })
    }

    fn finish(&mut self) {
        if self.released {
            // The exit record released us (and a new monitor may own the
            // socket by now).
            return;
        }
        let _ = std::fs::remove_file(self.dir.join(store::ATTACH_SOCKET));
        let _ = store::update_record(&self.dir, |r| {
            r.state.monitor_pid = 0;
            r.state.monitor_start_time = 0;
        });
    }

    fn run(&mut self, control: &mut Control) -> i32 {
        let mut first = true;
        let mut backoff = Duration::from_millis(100);
        loop {
            let exit = match self.run_once(control, first) {
                Ok(exit) => exit,
                Err(e) => {
                    log_line(&format!("container {}: {e}", self.id));
                    if first {
                        control.report(&format!("error: {e}"));
                        control.close();
                        let _ = store::update_record(&self.dir, |r| {
                            r.state.error = e.clone();
                            if r.state.status != Status::Created {
                                r.state.status = Status::Exited;
                            }
                            r.state.pid = 0;
                        });
                        return 1;
                    }
                    Exit {
                        code: 128,
                        oom: false,
                    }
                }
            };
            first = false;
            control.close();
            let finished = store::now_rfc3339();
            let policy = self.record.config.host_config.restart_policy.clone();
            let sock = &self.dir.join(store::ATTACH_SOCKET);
            let result = store::update_record(&self.dir, |r| {
                r.state.pid = 0;
                r.state.exit_code = exit.code;
                r.state.oom_killed = exit.oom;
                r.state.finished_at = finished.clone();
                r.state.exits += 1;
                let restart = !r.state.manual_stop
                    && match policy.name.as_str() {
                        "always" | "unless-stopped" => true,
                        "on-failure" => {
                            exit.code != 0
                                && (policy.maximum_retry_count == 0
                                    || r.state.restart_count < policy.maximum_retry_count)
                        }
                        _ => false,
                    };
                if restart {
                    r.state.status = Status::Restarting;
                    r.state.restart_count += 1;
                } else {
                    r.state.status = Status::Exited;
                    // Done (the runtime's container is deleted, clients are
                    // told): the monitor lets go in this same write instead
                    // of a second one, so `wait`, `rm` and a new `start` need
                    // not wait for another. The socket goes first: a new
                    // monitor may bind its own as soon as this is written.
                    let _ = std::fs::remove_file(sock);
                    r.state.monitor_pid = 0;
                    r.state.monitor_start_time = 0;
                }
                restart
            });
            let restart = match result {
                Ok((restart, record)) => {
                    self.record = record;
                    self.released = !restart;
                    restart
                }
                Err(e) => {
                    log_line(&format!("recording the exit: {e}"));
                    false
                }
            };
            if !restart {
                return 0;
            }
            // Back off, unless stopped in the meantime.
            let until = Instant::now() + backoff;
            backoff = (backoff * 2).min(Duration::from_secs(60));
            while Instant::now() < until {
                self.serve_idle(Duration::from_millis(20));
                if store::read_record(&self.dir).is_ok_and(|r| r.state.manual_stop) {
                    let _ = store::update_record(&self.dir, |r| r.state.status = Status::Exited);
                    return 0;
                }
            }
        }
    }

    /// Accepts and drops attach clients while the container is not running
    /// (they would get nothing).
    fn serve_idle(&mut self, wait: Duration) {
        std::thread::sleep(wait);
        while let Ok((s, _)) = self.listener.accept() {
            drop(s);
        }
    }

    fn accept_clients(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(true).is_ok() {
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                self.clients.push(Client {
                    stream,
                    buf: Vec::new(),
                    reading: true,
                });
            }
        }
    }

    fn run_once(&mut self, control: &mut Control, first: bool) -> Result<Exit, String> {
        let tty = self.record.config.tty;
        let open_stdin = self.record.config.open_stdin;
        // A runtime container left over by a monitor that died.
        if let Ok(stale) = self.runtime.load(&self.id) {
            let _ = stale.delete(true);
        }
        let null = File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("opening /dev/null: {e}"))?;
        let mut console = None;
        // Keeps /proc/self/fd/N valid for the console socket's short path.
        let _dir_handle = File::options()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&self.dir)
            .map_err(|e| format!("opening {}: {e}", self.dir.display()))?;
        let mut stdin_w: Option<OwnedFd> = None;
        let mut out_r: Option<OwnedFd> = None;
        let mut err_r: Option<OwnedFd> = None;
        let pipe =
            || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
        if tty {
            let _ = std::fs::remove_file(self.dir.join("console.sock"));
            let path = PathBuf::from(format!(
                "/proc/self/fd/{}/console.sock",
                _dir_handle.as_raw_fd()
            ));
            console = Some(
                berth_runtime::console::ConsoleReceiver::bind(&path).map_err(|e| e.to_string())?,
            );
            for fd in 0..3 {
                dup2(null.as_raw_fd(), fd).map_err(|e| format!("dup2: {e}"))?;
            }
        } else {
            if open_stdin {
                let (r, w) = pipe()?;
                dup2(r.as_raw_fd(), 0).map_err(|e| format!("dup2: {e}"))?;
                stdin_w = Some(w);
            } else {
                dup2(null.as_raw_fd(), 0).map_err(|e| format!("dup2: {e}"))?;
            }
            let (r, w) = pipe()?;
            dup2(w.as_raw_fd(), 1).map_err(|e| format!("dup2: {e}"))?;
            out_r = Some(r);
            let (r, w) = pipe()?;
            let _ = std::io::stderr().flush();
            dup2(w.as_raw_fd(), 2).map_err(|e| format!("dup2: {e}"))?;
            err_r = Some(r);
        }
        let opts = CreateOptions {
            bundle: self.dir.clone(),
            console_socket: console.as_ref().map(|c| c.path().to_path_buf()),
            ..CreateOptions::default()
        };
        let created = self.runtime.create(&self.id, &opts);
        // Take 0/1/2 back: the container holds its own copies now.
        let _ = dup2(null.as_raw_fd(), 0);
        let _ = dup2(null.as_raw_fd(), 1);
        if let Some(e) = self.stderr_fd.as_ref() {
            let _ = dup2(e.as_raw_fd(), 2);
        }
        let mut container = created.map_err(|e| e.to_string())?;
        let master = match console.as_ref() {
            Some(c) => match c.receive_master() {
                Ok(m) => Some(m),
                Err(e) => {
                    let _ = container.delete(true);
                    return Err(e.to_string());
                }
            },
            None => None,
        };
        drop(console);
        let init = container.state().pid;

        if first {
            control.report("created");
            let mut line = String::new();
            let go = control
                .input
                .as_mut()
                .is_some_and(|i| i.read_line(&mut line).is_ok_and(|n| n > 0))
                && line.trim() == "start";
            if !go {
                let _ = container.delete(true);
                return Err("start cancelled by the daemon".into());
            }
        }
        self.accept_clients();
        if let Err(e) = container.start() {
            let _ = container.delete(true);
            return Err(e.to_string());
        }
        let started = store::now_rfc3339();
        let restarting = !first;
        let _ = store::update_record(&self.dir, |r| {
            r.state.status = Status::Running;
            r.state.pid = init;
            r.state.started_at = started.clone();
            r.state.error.clear();
            r.state.oom_killed = false;
            if !restarting {
                r.state.manual_stop = false;
            }
        });
        if first {
            control.report(&format!("running {init}"));
            control.close();
        }

        let code = self.pump(init, master, out_r, err_r, stdin_w);
        let oom = container.oom_kill_count().is_ok_and(|n| n > 0);
        if let Err(e) = container.delete(true) {
            log_line(&format!("deleting the runtime container: {e}"));
        }
        let _ = self.log.flush();
        // Tell attached clients and let them go.
        for c in self.clients.iter_mut() {
            let _ = c.stream.set_nonblocking(false);
            let _ = attach::write_frame(&mut c.stream, attach::EXIT, &code.to_be_bytes());
        }
        self.clients.clear();
        Ok(Exit { code, oom })
    }

    /// The event loop of one run; returns the init's exit code.
    fn pump(
        &mut self,
        init: i32,
        master: Option<OwnedFd>,
        out_r: Option<OwnedFd>,
        err_r: Option<OwnedFd>,
        stdin_w: Option<OwnedFd>,
    ) -> i32 {
        let tty = master.is_some();
        let stdin_once = self.record.config.stdin_once;
        // Outputs: (fd, stream); with a TTY the master is both ways.
        let mut outputs: Vec<(Option<OwnedFd>, Stream)> = match master {
            Some(m) => vec![(Some(m), Stream::Stdout)],
            None => vec![(out_r, Stream::Stdout), (err_r, Stream::Stderr)],
        };
        // Where stdin goes: the pty master (a dup) or the pipe.
        let mut input: Option<OwnedFd> = if tty {
            outputs[0]
                .0
                .as_ref()
                .and_then(|m| m.try_clone().ok())
                .filter(|_| self.record.config.open_stdin)
        } else {
            stdin_w
        };
        if let Some(fd) = input.as_ref() {
            set_nonblocking(fd.as_raw_fd());
        }
        for (fd, _) in outputs.iter() {
            if let Some(fd) = fd {
                set_nonblocking(fd.as_raw_fd());
            }
        }
        let mut pending_in: Vec<u8> = Vec::new();
        // SAFETY: pidfd_open takes a pid and flags; returns a new fd or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, init, 0) } as RawFd;
        // SAFETY: a fresh fd from the kernel, owned by nothing else.
        let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) });
        let mut exit: Option<i32> = None;
        let mut drain_deadline: Option<Instant> = None;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if exit.is_none() {
                exit = reap(init);
                if exit.is_none() && store::proc_start_time(init).is_none() {
                    // Not our child after all, and gone: nothing to reap.
                    exit = Some(137);
                }
                if exit.is_some() {
                    drain_deadline = Some(Instant::now() + Duration::from_secs(2));
                }
            }
            let outputs_open = outputs.iter().any(|(fd, _)| fd.is_some());
            if let Some(deadline) = drain_deadline {
                if !outputs_open || Instant::now() >= deadline {
                    break;
                }
            }
            let mut fds: Vec<libc::pollfd> = Vec::new();
            let pfd = |fd: RawFd, events: libc::c_short| libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            for (fd, _) in outputs.iter() {
                fds.push(pfd(fd.as_ref().map_or(-1, |f| f.as_raw_fd()), libc::POLLIN));
            }
            fds.push(pfd(self.listener.as_raw_fd(), libc::POLLIN));
            fds.push(pfd(
                if exit.is_none() {
                    pidfd.as_ref().map_or(-1, |f| f.as_raw_fd())
                } else {
                    -1
                },
                libc::POLLIN,
            ));
            fds.push(pfd(
                match (&input, pending_in.is_empty()) {
                    (Some(fd), false) => fd.as_raw_fd(),
                    _ => -1,
                },
                libc::POLLOUT,
            ));
            let client_base = fds.len();
            let reading_clients = pending_in.len() < (1 << 20);
            for c in &self.clients {
                fds.push(pfd(
                    if reading_clients && c.reading {
                        c.stream.as_raw_fd()
                    } else {
                        -1
                    },
                    libc::POLLIN,
                ));
            }
            let timeout = if pidfd.is_some() { 1000 } else { 100 };
            // SAFETY: `fds` is a valid array of pollfd for the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                continue;
            }
            // Container output.
            for (i, (fd, stream)) in outputs.iter_mut().enumerate() {
                if fds[i].revents == 0 {
                    continue;
                }
                let Some(f) = fd.as_ref() else { continue };
                loop {
                    // SAFETY: reading into a buffer we own, of its length.
                    let r =
                        unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                    if r > 0 {
                        let data = &buf[..r as usize];
                        let _ = self.log.write(*stream, data);
                        let kind = if *stream == Stream::Stderr {
                            attach::STDERR
                        } else {
                            attach::STDOUT
                        };
                        self.clients.retain_mut(|c| {
                            let _ = c.stream.set_nonblocking(false);
                            let ok = attach::write_frame(&mut c.stream, kind, data).is_ok();
                            let _ = c.stream.set_nonblocking(true);
                            ok
                        });
                        continue;
                    }
                    let err = std::io::Error::last_os_error();
                    if r < 0 && err.kind() == std::io::ErrorKind::WouldBlock {
                        break;
                    }
                    if r < 0 && err.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    // EOF, or EIO from a pty whose slaves are all closed.
                    *fd = None;
                    break;
                }
            }
            let base = outputs.len();
            if fds[base].revents != 0 {
                self.accept_clients();
            }
            // stdin writes.
            if fds[base + 2].revents != 0 {
                if let Some(fd) = input.as_ref() {
                    // SAFETY: writing from a buffer we own, of its length.
                    let w = unsafe {
                        libc::write(fd.as_raw_fd(), pending_in.as_ptr().cast(), pending_in.len())
                    };
                    if w > 0 {
                        pending_in.drain(..w as usize);
                    } else if w < 0
                        && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock
                    {
                        input = None;
                        pending_in.clear();
                    }
                }
            }
            // Client input.
            let mut close_stdin = false;
            let mut gone = Vec::new();
            for (i, c) in self.clients.iter_mut().enumerate() {
                if fds.get(client_base + i).is_none_or(|p| p.revents == 0) {
                    continue;
                }
                let mut chunk = [0u8; 16 * 1024];
                match c.stream.read(&mut chunk) {
                    Ok(0) => {
                        c.reading = false;
                        if stdin_once {
                            close_stdin = true;
                        }
                    }
                    Ok(n) => {
                        c.buf.extend_from_slice(&chunk[..n]);
                        match attach::take_frames(&mut c.buf) {
                            Ok(frames) => {
                                for (kind, payload) in frames {
                                    match kind {
                                        attach::STDIN if payload.is_empty() => close_stdin = true,
                                        attach::STDIN => pending_in.extend_from_slice(&payload),
                                        attach::RESIZE if tty && payload.len() == 4 => {
                                            let rows = u16::from_be_bytes([payload[0], payload[1]]);
                                            let cols = u16::from_be_bytes([payload[2], payload[3]]);
                                            if let Some((Some(m), _)) = outputs.first() {
                                                resize(m.as_raw_fd(), rows, cols);
                                            }
                                        }
                                        _ => {}
                                    }
                                }
                            }
                            Err(_) => gone.push(i),
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => gone.push(i),
                }
            }
            for i in gone.into_iter().rev() {
                self.clients.remove(i);
            }
            if close_stdin && !tty {
                // Flush what is pending first (best effort), then close.
                if let Some(fd) = input.as_ref() {
                    clear_nonblocking(fd.as_raw_fd());
                    let mut f = File::from(fd.try_clone().unwrap_or_else(|_| null_fd()));
                    let _ = f.write_all(&pending_in);
                }
                pending_in.clear();
                input = None;
            }
        }
        exit.unwrap_or(137)
    }
}

fn null_fd() -> OwnedFd {
    match File::open("/dev/null") {
        Ok(f) => OwnedFd::from(f),
        // /dev/null always exists on a working system; fall back to a pipe.
        Err(_) => match nix::unistd::pipe() {
            Ok((r, _)) => r,
            Err(_) => std::process::abort(),
        },
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: F_GETFL/F_SETFL on a valid fd.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

fn clear_nonblocking(fd: RawFd) {
    // SAFETY: F_GETFL/F_SETFL on a valid fd.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
}

fn resize(fd: RawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize that lives for the call.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

/// Reaps every exited child; returns the init's exit code once it exited.
fn reap(init: i32) -> Option<i32> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let mut result = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == init => result = Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == init => {
                result = Some(128 + sig as i32)
            }
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    result
}
