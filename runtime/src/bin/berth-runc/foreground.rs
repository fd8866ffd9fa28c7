//! Staying with a container process until it exits (`run` and `exec`
//! without `--detach`): forward the signals we get to it, reap it (we are a
//! child subreaper, so it is our child even when the library double-forks),
//! copy terminal bytes both ways, and report its exit code.
//!
//! No threads: signal handlers write the signal number into a pipe
//! ("self-pipe"), and one `poll` loop watches that pipe, stdin and the pty
//! master. Handlers, unlike a blocked signal mask, do not leak into the
//! container process: execve resets them.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::tty;

/// Write end of the signal pipe, for the handler (-1: not installed).
static SIGNAL_PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn signal_to_pipe(sig: libc::c_int) {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: reading/writing our own thread's errno through a valid pointer.
    let saved = unsafe { *errno };
    let fd = SIGNAL_PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        // Signal numbers are 1..=64, so they fit in a byte.
        let byte = sig as u8;
        // SAFETY: write(2) is async-signal-safe and reads one byte from a
        // live local; the pipe is non-blocking, so a full pipe drops the byte.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
    // SAFETY: as above; restores errno for the interrupted code.
    unsafe { *errno = saved };
}

/// Signals we catch and (but for SIGCHLD, SIGWINCH and SIGPIPE) forward.
/// Faults (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS) are ours alone,
/// and SIGKILL/SIGSTOP cannot be caught.
fn caught_signals() -> impl Iterator<Item = libc::c_int> {
    let not_caught = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGTRAP,
        libc::SIGSYS,
    ];
    (1..=31)
        .filter(move |s| !not_caught.contains(s))
        .chain(libc::SIGRTMIN()..=libc::SIGRTMAX())
}

/// The read end of the signal pipe, once the handlers are installed.
#[derive(Debug)]
pub struct SignalPipe {
    read: OwnedFd,
}

impl SignalPipe {
    /// Installs the handlers. Call it once, after the library has created
    /// the process (so its own syscalls see no EINTR from us).
    pub fn install() -> Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .context("creating the signal pipe")?;
        // The write end lives as long as the process: the handler uses it.
        SIGNAL_PIPE_WRITE.store(write.into_raw_fd(), Ordering::Relaxed);
        for sig in caught_signals() {
            // SAFETY: an all-zero sigaction is a valid value to fill in.
            let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
            sa.sa_sigaction = signal_to_pipe as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            // SAFETY: sa_mask is a valid sigset_t to initialise.
            unsafe { libc::sigemptyset(&mut sa.sa_mask) };
            // SAFETY: `sa` is fully initialised and the handler only does
            // async-signal-safe work; the old action is not asked for.
            let rc = unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) };
            if rc != 0 {
                return Err(Errno::last()).with_context(|| format!("catching signal {sig}"));
            }
        }
        Ok(Self { read })
    }

    /// Signals received since the last call.
    fn take(&self) -> Vec<libc::c_int> {
        let mut buf = [0u8; 64];
        let mut out = Vec::new();
        loop {
            match nix::unistd::read(self.read.as_fd(), &mut buf) {
                Ok(0) | Err(_) => return out,
                Ok(n) => out.extend(buf[..n].iter().map(|b| libc::c_int::from(*b))),
            }
        }
    }
}

/// Makes orphaned descendants (the container process when the library forks
/// twice) our children, so we can wait for them. Call before creating.
pub fn become_subreaper() -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true).context("becoming a child subreaper")
}

/// Exit status as a shell reports it: the code, or 128 + the signal.
fn exit_code(status: libc::c_int) -> Option<i32> {
    if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Some(128 + libc::WTERMSIG(status))
    } else {
        None
    }
}

/// Reaps every exited child; returns `pid`'s exit code once it has exited.
fn reap(pid: i32) -> Result<Option<i32>> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid out-pointer; WNOHANG never blocks.
        let got = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        match got {
            0 => return Ok(None),
            -1 => match Errno::last() {
                Errno::EINTR => continue,
                Errno::ECHILD => {
                    bail!("process {pid} is not a child of berth-runc; cannot wait for it")
                }
                e => return Err(e).context("waiting for the container process"),
            },
            p if p == pid => {
                if let Some(code) = exit_code(status) {
                    return Ok(Some(code));
                }
            }
            _ => {}
        }
    }
}

/// Forwards signals to `pid`, copies between our stdio and `terminal` (the
/// pty master, if the process has one), and returns `pid`'s exit code.
pub fn supervise(pid: i32, signals: &SignalPipe, terminal: Option<&OwnedFd>) -> Result<i32> {
    let stdin = std::io::stdin();
    let stdin = stdin.as_fd();
    let mut stdin_open = terminal.is_some();
    let mut master_open = terminal.is_some();
    if let Some(master) = terminal {
        tty::copy_window_size(stdin, master.as_fd());
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        if let Some(code) = reap(pid)? {
            if let Some(master) = terminal.filter(|_| master_open) {
                drain(master.as_fd(), &mut buf)?;
            }
            return Ok(code);
        }
        let mut fds = vec![PollFd::new(signals.read.as_fd(), PollFlags::POLLIN)];
        let master = terminal.map(|m| m.as_fd());
        if let (Some(m), true) = (master, master_open) {
            fds.push(PollFd::new(m, PollFlags::POLLIN));
        }
        if let (Some(_), true) = (master, stdin_open) {
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("polling"),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);

        if ready.first().copied().unwrap_or(false) {
            for sig in signals.take() {
                match sig {
                    libc::SIGCHLD | libc::SIGPIPE => {}
                    libc::SIGWINCH => {
                        if let Some(m) = master {
                            tty::copy_window_size(stdin, m);
                        }
                    }
                    // SAFETY: kill(2) with a pid we have not reaped yet (so
                    // it cannot have been reused) and a valid signal number.
                    s => unsafe {
                        libc::kill(pid, s);
                    },
                }
            }
        }
        let Some(m) = master else { continue };
        let mut i = 1;
        if master_open {
            if ready.get(i).copied().unwrap_or(false) {
                master_open = copy_once(m, &mut std::io::stdout(), &mut buf)?;
            }
            i += 1;
        }
        if stdin_open && ready.get(i).copied().unwrap_or(false) {
            stdin_open = copy_to_fd(stdin, m, &mut buf)?;
        }
    }
}

/// Copies one read's worth from `from` to `to`; false on end of input (or
/// EIO, which a pty master reports once every slave is closed).
fn copy_once(from: BorrowedFd<'_>, to: &mut impl Write, buf: &mut [u8]) -> Result<bool> {
    match nix::unistd::read(from, buf) {
        Ok(0) | Err(Errno::EIO) => Ok(false),
        Ok(n) => {
            to.write_all(&buf[..n])
                .and_then(|()| to.flush())
                .context("writing the terminal output")?;
            Ok(true)
        }
        Err(Errno::EINTR | Errno::EAGAIN) => Ok(true),
        Err(e) => Err(e).context("reading the terminal"),
    }
}

/// Copies one read's worth of our stdin to the pty master.
fn copy_to_fd(from: BorrowedFd<'_>, to: BorrowedFd<'_>, buf: &mut [u8]) -> Result<bool> {
    let n = match nix::unistd::read(from, buf) {
        Ok(0) => return Ok(false),
        Ok(n) => n,
        Err(Errno::EINTR | Errno::EAGAIN) => return Ok(true),
        Err(e) => return Err(e).context("reading stdin"),
    };
    let mut rest = &buf[..n];
    while !rest.is_empty() {
        match nix::unistd::write(to, rest) {
            Ok(w) => rest = &rest[w..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("writing to the terminal"),
        }
    }
    Ok(true)
}

/// After the process exited: copy whatever output is still buffered.
fn drain(master: BorrowedFd<'_>, buf: &mut [u8]) -> Result<()> {
    let flags = fcntl(master, FcntlArg::F_GETFL).context("reading terminal flags")?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(master, FcntlArg::F_SETFL(flags)).context("setting the terminal non-blocking")?;
    let mut out = std::io::stdout();
    loop {
        match nix::unistd::read(master, buf) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => out
                .write_all(&buf[..n])
                .and_then(|()| out.flush())
                .context("writing the terminal output")?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        // Encoded as wait(2) does: code << 8, or the signal number.
        assert_eq!(exit_code(0), Some(0));
        assert_eq!(exit_code(3 << 8), Some(3));
        assert_eq!(exit_code(libc::SIGKILL), Some(137));
    }

    #[test]
    fn caught_signals_exclude_faults() {
        let caught: Vec<i32> = caught_signals().collect();
        assert!(caught.contains(&libc::SIGTERM));
        assert!(caught.contains(&libc::SIGINT));
        assert!(caught.contains(&libc::SIGCHLD));
        assert!(caught.contains(&libc::SIGRTMAX()));
        assert!(!caught.contains(&libc::SIGKILL));
        assert!(!caught.contains(&libc::SIGSEGV));
    }

    /// One test for the whole loop, since it installs process-wide
    /// handlers and reaps any child: a plain exit code, then a SIGTERM we
    /// receive forwarded to the child (which dies of it: 128 + 15).
    #[test]
    // `supervise` reaps the children with waitpid(2), unseen by clippy.
    #[allow(clippy::zombie_processes)]
    fn supervise_reaps_and_forwards() {
        let signals = SignalPipe::install().expect("install");
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .expect("spawn sh");
        let pid = i32::try_from(child.id()).expect("pid");
        assert_eq!(supervise(pid, &signals, None).expect("supervise"), 3);

        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = i32::try_from(child.id()).expect("pid");
        // SAFETY: raise(2) with a caught signal; the handler only writes to
        // the signal pipe.
        unsafe { libc::raise(libc::SIGTERM) };
        assert_eq!(supervise(pid, &signals, None).expect("supervise"), 128 + 15);
    }
}
