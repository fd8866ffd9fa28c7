//! Handing the `SCMP_ACT_NOTIFY` listener fd to the seccomp agent.
//!
//! Per the runtime spec, the runtime connects to `listenerPath` (an
//! `AF_UNIX`/`SOCK_STREAM` socket), sends exactly one container process state
//! (JSON) with the listener fd attached as `SCM_RIGHTS`, then closes the
//! connection. The state's `fds` names the attached fd `seccompFd`.
//!
//! The sender needs `connect`/`sendmsg`; when called in the container's init
//! after the filter is loaded, the profile must allow those, so the usual
//! place to call it is the runtime process, after init passed the fd back.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use oci_spec::runtime::{ContainerProcessState, State, SECCOMP_FD_NAME};

use super::SeccompError;

/// Sends `fd` (the seccomp listener) and `state_json` (a serialized
/// [`ContainerProcessState`], see [`process_state_json`]) to the seccomp agent
/// listening on the unix socket at `listener_path`.
pub fn send_notify_fd(
    listener_path: &Path,
    fd: BorrowedFd<'_>,
    state_json: &[u8],
) -> Result<(), SeccompError> {
    let stream =
        UnixStream::connect(listener_path).map_err(|source| SeccompError::ListenerConnect {
            path: listener_path.to_path_buf(),
            source,
        })?;
    let fds = [fd.as_raw_fd()];
    let cmsgs = [ControlMessage::ScmRights(&fds)];
    let mut offset = 0;
    let mut first = true;
    // The fd rides on the first message; the rest of the JSON (if the kernel
    // took only part of it) follows as plain data.
    while offset < state_json.len() || first {
        let iov = [IoSlice::new(&state_json[offset..])];
        let control: &[ControlMessage<'_>] = if first { &cmsgs } else { &[] };
        let sent = loop {
            match sendmsg::<()>(stream.as_raw_fd(), &iov, control, MsgFlags::empty(), None) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other,
            }
        }
        .map_err(|source| SeccompError::ListenerSend {
            path: listener_path.to_path_buf(),
            source,
        })?;
        if sent == 0 && offset < state_json.len() {
            return Err(SeccompError::ListenerShortWrite {
                path: listener_path.to_path_buf(),
                sent: offset,
                len: state_json.len(),
            });
        }
        offset += sent;
        first = false;
    }
    Ok(())
}

/// Serializes the container process state the seccomp agent receives: the
/// container `state`, the `pid` of the process whose listener is sent, the
/// profile's `listenerMetadata`, and `fds: ["seccompFd"]`.
pub fn process_state_json(
    state: &State,
    pid: i32,
    metadata: Option<&str>,
) -> Result<Vec<u8>, SeccompError> {
    let mut process_state = ContainerProcessState::default();
    process_state
        .set_version(state.version().clone())
        .set_fds(vec![SECCOMP_FD_NAME.to_string()])
        .set_pid(pid)
        .set_metadata(metadata.map(str::to_owned))
        .set_state(state.clone());
    serde_json::to_vec(&process_state).map_err(SeccompError::StateJson)
}
