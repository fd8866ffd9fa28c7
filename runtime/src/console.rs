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
