//! The container's terminal: a new pty whose master goes to whoever listens on
//! `--console-socket` (as an `SCM_RIGHTS` message, the protocol runc and
//! containerd use), and whose slave becomes the process's stdio and
//! controlling terminal.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::pty::{openpty, OpenptyResult};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("connecting to console socket {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("creating a pseudo-terminal: {0}")]
    Openpty(nix::Error),
    #[error("naming the pseudo-terminal: {0}")]
    PtsName(nix::Error),
    #[error("sending the terminal to the console socket: {0}")]
    Send(nix::Error),
    #[error("making the terminal the controlling terminal: {0}")]
    SetControlling(nix::Error),
    #[error("setting the terminal size: {0}")]
    Resize(nix::Error),
}

/// Connects to the console socket in the runtime process, so a wrong path is
/// reported before anything is created.
pub fn connect(path: &Path) -> Result<UnixStream, ConsoleError> {
    UnixStream::connect(path).map_err(|source| ConsoleError::Connect {
        path: path.to_path_buf(),
        source,
    })
}

/// A fresh pty: the master to hand over, the slave to use, and the slave's path.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub slave_path: PathBuf,
}

/// Opens a pty pair (in the caller's mount namespace, so on the container's
/// devpts once it is mounted) with an optional initial size.
pub fn open(size: Option<(u16, u16)>) -> Result<Pty, ConsoleError> {
    let winsize = size.map(|(rows, cols)| nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    });
    let OpenptyResult { master, slave } =
        openpty(winsize.as_ref(), None).map_err(ConsoleError::Openpty)?;
    let slave_path = nix::unistd::ttyname(&slave).map_err(ConsoleError::PtsName)?;
    Ok(Pty {
        master,
        slave,
        slave_path,
    })
}

/// Sends `master` over `socket`; the payload is the terminal's name.
pub fn send_master(socket: RawFd, master: &OwnedFd, name: &Path) -> Result<(), ConsoleError> {
    let fds = [master.as_raw_fd()];
    let name = name.as_os_str().as_encoded_bytes();
    let iov = [IoSlice::new(name)];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(socket, &iov, &cmsg, MsgFlags::empty(), None).map_err(ConsoleError::Send)?;
    Ok(())
}

/// Makes `slave` the calling process's stdin/stdout/stderr and controlling
/// terminal. The caller must be a session leader.
pub fn attach_stdio(slave: &OwnedFd) -> Result<(), ConsoleError> {
    let fd = slave.as_raw_fd();
    // SAFETY: TIOCSCTTY takes an int argument; fd is a valid open tty.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
    if rc < 0 {
        return Err(ConsoleError::SetControlling(nix::Error::last()));
    }
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors; fd stays open.
        if unsafe { libc::dup2(fd, target) } < 0 {
            return Err(ConsoleError::SetControlling(nix::Error::last()));
        }
    }
    Ok(())
}

/// A private console socket for a foreground `run`/`exec -t` without
/// `--console-socket`: the runtime itself receives the master and relays it
/// to its own terminal (see [`relay`]).
pub struct ConsoleReceiver {
    path: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleReceiver {
    /// Listens on `path` (which must not exist); the socket is removed on drop.
    pub fn bind(path: &Path) -> Result<Self, ConsoleError> {
        let listener = std::os::unix::net::UnixListener::bind(path).map_err(|source| {
            ConsoleError::Connect {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            listener,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts one connection and returns the pty master it carries.
    pub fn receive_master(&self) -> Result<OwnedFd, ConsoleError> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned};
        use std::os::fd::FromRawFd;
        let (stream, _) = self
            .listener
            .accept()
            .map_err(|source| ConsoleError::Connect {
                path: self.path.clone(),
                source,
            })?;
        let mut name = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(ConsoleError::Send)?;
        for cmsg in msg.cmsgs().map_err(ConsoleError::Send)? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                if let Some(&fd) = fds.first() {
                    // SAFETY: the kernel just installed this fd for us.
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        Err(ConsoleError::Send(nix::Error::EBADMSG))
    }
}

impl std::os::fd::AsRawFd for ConsoleReceiver {
    /// The listening socket, to poll for the runtime's connection.
    fn as_raw_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }
}

impl Drop for ConsoleReceiver {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Puts our stdin in raw mode (when it is a terminal) for the lifetime of
/// the guard, so keystrokes reach the container's terminal unprocessed.
pub struct RawMode {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawMode {
    pub fn enter() -> Self {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else {
            return Self { saved: None };
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        Self { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

/// Copies our stdin to the pty master and the master to our stdout until
/// the container side closes (EOF or EIO once every slave fd is gone).
/// Copies the terminal size once at the start.
pub fn relay(master: &OwnedFd) -> Result<(), ConsoleError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    copy_window_size(master);
    let stdin = std::io::stdin();
    let mut stdin_open = true;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(ConsoleError::Send(e)),
        }
        let master_ready = fds[0].revents().unwrap_or(PollFlags::empty());
        let stdin_ready = fds
            .get(1)
            .and_then(|f| f.revents())
            .unwrap_or(PollFlags::empty());
        if master_ready.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            match nix::unistd::read(master.as_fd(), &mut buf) {
                Ok(0) | Err(nix::Error::EIO) => return Ok(()),
                Ok(n) => write_all(std::io::stdout().as_fd(), &buf[..n]),
                Err(nix::Error::EINTR) => {}
                Err(e) => return Err(ConsoleError::Send(e)),
            }
        }
        if stdin_ready.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
            match nix::unistd::read(stdin.as_fd(), &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => write_all(master.as_fd(), &buf[..n]),
            }
        }
    }
}

fn write_all(fd: std::os::fd::BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EINTR) => {}
            Err(_) => return,
        }
    }
}

fn copy_window_size(master: &OwnedFd) {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ read/write one winsize struct.
    unsafe {
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut size) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size);
        }
    }
}
