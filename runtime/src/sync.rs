//! The channel between the runtime process and the processes it forks.
//!
//! A `SOCK_SEQPACKET` socket pair keeps message boundaries, so each message
//! is one JSON packet. When every child has exited without a final message
//! the parent reads end-of-file and reports that instead of hanging.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
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
        // Serialising an enum of plain strings and integers cannot fail.
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

    /// Receives one message. A remote `Error` becomes `SyncError::Remote`.
    pub fn receive(&self) -> Result<Message, SyncError> {
        let mut buf = [0u8; 8192];
        let n = loop {
            match nix::unistd::read(self.fd.as_fd(), &mut buf) {
                Ok(n) => break n,
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(SyncError::Receive(e)),
            }
        };
        if n == 0 {
            return Err(SyncError::Closed);
        }
        match serde_json::from_slice(&buf[..n]).map_err(SyncError::Malformed)? {
            Message::Error(text) => Err(SyncError::Remote(text)),
            message => Ok(message),
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
