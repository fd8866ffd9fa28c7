//! Unix: signals.

use std::io;
use std::process::{Child, Command};

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Spawns `cmd` in a process group of its own, so the terminal's Ctrl-C
/// does not reach it.
pub fn spawn_detached(cmd: &mut Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    cmd.spawn()
}

/// Asks the supervisor `pid` to stop cleanly (SIGTERM).
pub fn request_stop(pid: u32, _machine: &str) -> io::Result<()> {
    send(pid, libc::SIGTERM)
}

/// Kills `pid` now (SIGKILL).
pub fn kill(pid: u32) -> io::Result<()> {
    send(pid, libc::SIGKILL)
}

fn send(pid: u32, sig: libc::c_int) -> io::Result<()> {
    // 0 and negative pids name process groups, never one process.
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("pid {pid}")))?;
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `pid` exists (a zombie still does).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// The supervisor's side of [`request_stop`]: SIGTERM, or SIGINT when it
/// runs in a terminal.
pub struct StopRequests {
    term: Signal,
    int: Signal,
}

impl StopRequests {
    /// Must be called inside a tokio runtime; from then on the signals no
    /// longer end the process.
    pub fn new(_machine: &str) -> io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves when a stop was requested (also one that came before).
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
