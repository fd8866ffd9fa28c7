//! The channel between the runtime process and the processes it forks.
//!
//! A `SOCK_SEQPACKET` socket pair keeps message boundaries, so each message
//! is one JSON packet. When every child has exited without a final message
//! the parent reads end-of-file and reports that instead of hanging.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};

/// Everything that crosses the channel, in either direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Child: I unshared a new user namespace; write my uid/gid maps.
    UsernsCreated,
    /// Parent: maps are written.
    UsernsMapped,
    /// Child: host pid of the container process (sent by the intermediate).
    Pid(i32),
    /// Child: the container's environment exists; run createRuntime hooks.
    RunCreateRuntimeHooks,
    /// Parent: createRuntime hooks are done.
    CreateRuntimeHooksDone,
    /// Child: set up and waiting for `start` (or, for exec, about to execve).
    Ready,
    /// Child: the seccomp notify fd rides along this message.
    SeccompFd,
    /// Either side: something failed; the text names what.
    Error(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("creating the sync socket pair: {0}")]
    Create(nix::Error),
    #[error("sending {what} on the sync socket: {source}")]
    Send { what: String, source: nix::Error },
    #[error("receiving from the sync socket: {0}")]
    Receive(nix::Error),
    #[error("the container process exited before it was set up")]
    Closed,
    #[error("malformed sync message: {0}")]
    Malformed(serde_json::Error),
    #[error("expected {expected}, got {got:?}")]
    Unexpected {
        expected: &'static str,
        got: Message,
    },
    #[error("{0}")]
    Remote(String),
}

/// One end of the channel.
#[derive(Debug)]
pub struct SyncSocket {
    fd: OwnedFd,
}

/// Creates the pair: (parent end, child end). Both are close-on-exec.
pub fn pair() -> Result<(SyncSocket, SyncSocket), SyncError> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(SyncError::Create)?;
    Ok((SyncSocket { fd: a }, SyncSocket { fd: b }))
}

impl SyncSocket {
    pub fn send(&self, message: &Message) -> Result<(), SyncError> {
        // Keep every packet within the receiver's buffer.
        let truncated;
        let message = match message {
            Message::Error(text) if text.len() > 4000 => {
                let mut end = 4000;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                truncated = Message::Error(format!("{}…", &text[..end]));
                &truncated
            }
            other => other,
        };
        let bytes = serde_json::to_vec(message).map_err(SyncError::Malformed)?;
        loop {
            match nix::unistd::write(self.fd.as_fd(), &bytes) {
                Ok(_) => return Ok(()),
                Err(nix::Error::EINTR) => continue,
                Err(source) => {
                    return Err(SyncError::Send {
                        what: format!("{message:?}"),
                        source,
                    })
                }
            }
        }
    }

    /// Sends `message` with `fd` attached (`SCM_RIGHTS`).
    pub fn send_with_fd(&self, message: &Message, fd: &OwnedFd) -> Result<(), SyncError> {
        let bytes = serde_json::to_vec(message).map_err(SyncError::Malformed)?;
        let fds = [fd.as_raw_fd()];
        let iov = [IoSlice::new(&bytes)];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        loop {
            match sendmsg::<()>(self.fd.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None) {
                Ok(_) => return Ok(()),
                Err(nix::Error::EINTR) => continue,
                Err(source) => {
                    return Err(SyncError::Send {
                        what: format!("{message:?}"),
                        source,
                    })
                }
            }
        }
    }

    /// Receives one message. A remote `Error` becomes `SyncError::Remote`.
    pub fn receive(&self) -> Result<Message, SyncError> {
        self.receive_with_fd().map(|(message, _)| message)
    }

    /// Receives one message and the fd attached to it, if any.
    pub fn receive_with_fd(&self) -> Result<(Message, Option<OwnedFd>), SyncError> {
        let mut buf = [0u8; 8192];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let (n, fd) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut fd = None;
                    for cmsg in msg.cmsgs().map_err(SyncError::Receive)? {
                        if let ControlMessageOwned::ScmRights(fds) = cmsg {
                            // SAFETY: the kernel just installed these fds for us.
                            fd = fds.first().map(|&raw| unsafe { OwnedFd::from_raw_fd(raw) });
                        }
                    }
                    break (msg.bytes, fd);
                }
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(SyncError::Receive(e)),
            }
        };
        if n == 0 {
            return Err(SyncError::Closed);
        }
        match serde_json::from_slice(&buf[..n]).map_err(SyncError::Malformed)? {
            Message::Error(text) => Err(SyncError::Remote(text)),
            message => Ok((message, fd)),
        }
    }

    /// Receives a message and checks it is `expected`.
    pub fn expect(&self, expected: &Message, name: &'static str) -> Result<(), SyncError> {
        let got = self.receive()?;
        if &got == expected {
            Ok(())
        } else {
            Err(SyncError::Unexpected {
                expected: name,
                got,
            })
        }
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}
