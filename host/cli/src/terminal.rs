//! The local terminal while a container's TTY is attached: raw mode (so
//! keys reach the container's line discipline, not ours), the window size
//! and its changes (SIGWINCH), and one reader of our stdin per process.

use std::io::IsTerminal;

use bytes::Bytes;
use tokio::sync::mpsc;

/// Puts stdin's terminal in raw mode; restores the saved settings on drop
/// (also when the attach ends with an error).
pub struct RawMode {
    #[cfg(unix)]
    saved: Option<nix::sys::termios::Termios>,
}

impl RawMode {
    /// Raw mode when stdin is a terminal; a no-op guard otherwise.
    pub fn enter() -> Self {
        #[cfg(unix)]
        {
            use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
            let stdin = std::io::stdin();
            if !stdin.is_terminal() {
                return Self { saved: None };
            }
            let Ok(saved) = tcgetattr(&stdin) else {
                return Self { saved: None };
            };
            let mut raw = saved.clone();
            cfmakeraw(&mut raw);
            if tcsetattr(&stdin, SetArg::TCSANOW, &raw).is_err() {
                return Self { saved: None };
            }
            Self { saved: Some(saved) }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

/// The terminal's size as `(rows, columns)`: stdout's, else stdin's (what
/// the user sees is what the container should fill).
pub fn size() -> Option<(u16, u16)> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let fds = [std::io::stdout().as_raw_fd(), std::io::stdin().as_raw_fd()];
        for fd in fds {
            let mut ws = libc::winsize {
                ws_row: 0,
                ws_col: 0,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCGWINSZ only writes a `winsize` into the pointer we
            // pass, which points at a live, properly aligned local; an fd
            // that is not a terminal makes it fail with ENOTTY.
            let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
            if rc == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
                return Some((ws.ws_row, ws.ws_col));
            }
        }
        None
    }
    #[cfg(not(unix))]
    {
        None
    }
}

pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Our stdin as a channel of chunks, ended (the sender dropped) at EOF.
///
/// Read on a plain thread, not tokio's blocking pool: a read that never
/// returns (nobody types) must not keep the runtime from shutting down
/// when the container has exited.
pub fn stdin_chunks() -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
    rx
}

/// Calls `resize(rows, cols)` now and on every SIGWINCH until the returned
/// task is aborted.
pub fn follow_size<F, Fut>(resize: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(u16, u16) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    // The handler is installed before this returns (not in the task): a
    // SIGWINCH before it would be lost, its default action being to ignore.
    #[cfg(unix)]
    let mut winch = {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::window_change()).ok()
    };
    tokio::spawn(async move {
        if let Some((h, w)) = size() {
            resize(h, w).await;
        }
        #[cfg(unix)]
        if let Some(winch) = winch.as_mut() {
            while winch.recv().await.is_some() {
                if let Some((h, w)) = size() {
                    resize(h, w).await;
                }
            }
        }
    })
}
