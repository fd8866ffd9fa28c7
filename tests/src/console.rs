//! The receiving end of `--console-socket`: a Unix socket that accepts one connection, takes
//! the pty master the runtime sends with SCM_RIGHTS, and reads the container's terminal
//! output from it until the container closes its side.

use std::fs::File;
use std::io::{IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// A listening console socket; the received terminal is read on a background thread.
pub struct ConsoleSocket {
    pub path: PathBuf,
    rx: Receiver<Result<Vec<u8>, String>>,
}

impl ConsoleSocket {
    /// Binds `path` and starts waiting for the runtime to connect.
    pub fn bind(path: &Path) -> Self {
        let listener = UnixListener::bind(path)
            .unwrap_or_else(|e| panic!("bind console socket {}: {e}", path.display()));
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let _ = tx.send(receive_and_read(&listener));
        });
        ConsoleSocket {
            path: path.to_path_buf(),
            rx,
        }
    }

    /// Everything the container wrote to its terminal, once it closed it (exited).
    #[track_caller]
    pub fn output(&self, timeout: Duration) -> String {
        match self.rx.recv_timeout(timeout) {
            Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            Ok(Err(e)) => panic!("console socket: {e}"),
            Err(e) => panic!("no terminal output on the console socket within {timeout:?}: {e}"),
        }
    }
}

fn receive_and_read(listener: &UnixListener) -> Result<Vec<u8>, String> {
    let (conn, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 2]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("recvmsg: {e}"))?;
    let mut master: Option<OwnedFd> = None;
    for cmsg in msg.cmsgs().map_err(|e| format!("cmsgs: {e}"))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel just installed `fd` in our table for this message; nothing
                // else owns it, so taking ownership here is sound.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                master.get_or_insert(owned);
            }
        }
    }
    let master = master.ok_or("the runtime connected but sent no file descriptor")?;
    let mut file = File::from(master);
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            // The pty master reports EIO once every slave fd is closed.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read pty master: {e}")),
        }
    }
    Ok(out)
}
