//! Terminal plumbing for `run` and `exec` in the foreground: flag checks, a
//! console socket in a private directory (the library's
//! [`ConsoleReceiver`](berth_runtime::console::ConsoleReceiver) listening
//! on it), and window-size copying.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use berth_runtime::console::ConsoleReceiver;

/// Checks that the terminal flags make sense together, as runc does: a
/// detached process with a terminal needs somewhere to send it, and a console
/// socket is only used by a detached process that has a terminal.
pub fn check_terminal(detach: bool, terminal: bool, console_socket: bool) -> Result<()> {
    if detach && terminal && !console_socket {
        bail!("cannot allocate a terminal for a detached process without --console-socket");
    }
    if console_socket && !(detach && terminal) {
        bail!(
            "--console-socket is only used when the process is detached and has a terminal \
             (terminal: true, with --detach or create)"
        );
    }
    Ok(())
}

/// A console socket of our own, in a fresh 0700 directory under the temp
/// directory; both go away on drop.
pub struct PrivateConsole {
    dir: PathBuf,
    receiver: ConsoleReceiver,
}

impl PrivateConsole {
    pub fn new() -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("berth-runc-console-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        match ConsoleReceiver::bind(&dir.join("console.sock")) {
            Ok(receiver) => Ok(Self { dir, receiver }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e).context("listening for the container's terminal")
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.receiver.path()
    }

    /// The pty master the library sent while creating the process.
    pub fn receive(&self) -> Result<OwnedFd> {
        self.receiver
            .receive_master()
            .context("receiving the container's terminal")
    }
}

impl Drop for PrivateConsole {
    fn drop(&mut self) {
        // The receiver removes its socket only after this runs.
        let _ = std::fs::remove_file(self.receiver.path());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Gives `to` (a pty master) the window size of `from` (our terminal), if
/// `from` is a terminal.
pub fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the valid pointer; a
    // descriptor that is not a terminal just makes it fail.
    let got = unsafe { libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    if got == 0 {
        // SAFETY: TIOCSWINSZ reads one `winsize` from the valid pointer.
        unsafe { libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_flag_combinations() {
        // detach, terminal, console socket
        assert!(check_terminal(false, false, false).is_ok());
        assert!(check_terminal(false, true, false).is_ok());
        assert!(check_terminal(true, false, false).is_ok());
        assert!(check_terminal(true, true, true).is_ok());
        assert!(check_terminal(true, true, false).is_err());
        assert!(check_terminal(false, true, true).is_err());
        assert!(check_terminal(true, false, true).is_err());
        assert!(check_terminal(false, false, true).is_err());
    }

    #[test]
    fn private_console_cleans_up() {
        let pc = PrivateConsole::new().expect("console");
        let dir = pc.dir.clone();
        assert!(pc.path().starts_with(&dir));
        assert!(pc.path().exists());
        drop(pc);
        assert!(!dir.exists());
    }
}
