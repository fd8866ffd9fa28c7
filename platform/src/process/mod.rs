//! The machine's supervisor as a process, the same five operations on every
//! host OS: started detached ([`spawn_detached`]), asked to stop cleanly
//! ([`request_stop`], which the supervisor awaits with [`StopRequests`]),
//! checked ([`process_alive`]) and, as a last resort, killed ([`kill`]).
//!
//! - Unix (`unix.rs`): a process group of its own; SIGTERM or SIGINT;
//!   `kill(pid, 0)`; SIGKILL. The VMM's processes die with the supervisor
//!   (`PR_SET_PDEATHSIG`, see the QEMU backend).
//! - Windows (`windows.rs`), which has no signals: `DETACHED_PROCESS` in a
//!   new process group, out of the caller's job where the job allows it (a
//!   console or CI job may kill its processes when it closes); the stop
//!   request is the named event [`stop_event_name`], which the supervisor
//!   creates and waits on; `OpenProcess` + `GetExitCodeProcess`;
//!   `TerminateProcess`. The VM dies with the supervisor because its compute
//!   system is created with `ShouldTerminateOnLastHandleClosed` (the
//!   process's handles close when it ends), and a system left under the
//!   machine's id is terminated before the next start (see `hcs.rs`).
//!   The event (and the API pipe) is created by an elevated supervisor (HCS
//!   needs one) and grants access to SYSTEM, Administrators and the user who
//!   started it ([`owner_only_sddl`]), so that user's unelevated `berth` and
//!   `docker` reach them and nobody else does.

#[cfg(unix)]
#[path = "unix.rs"]
mod os;
#[cfg(windows)]
#[path = "windows.rs"]
mod os;

#[cfg(windows)]
pub(crate) use os::OwnerOnly;
pub use os::{kill, process_alive, request_stop, spawn_detached, StopRequests};

use crate::machine::{MachineConfig, MachineError};

/// `Local\berth-machine-<machine>-stop`: the event a Windows supervisor
/// waits on (in the session's namespace, like the user's own processes).
pub fn stop_event_name(machine: &str) -> Result<String, MachineError> {
    MachineConfig::new(machine)?;
    Ok(format!(r"Local\berth-machine-{machine}-stop"))
}

/// The security descriptor (SDDL) of the supervisor's event and pipe: full
/// access for SYSTEM, the Administrators and `user_sid`, nobody else, and no
/// inherited entries (`P`); labelled medium integrity (`ML;;NW;;;ME`), so an
/// object an elevated (high integrity) supervisor makes stays writable by its
/// user's unelevated processes whatever label the creator's would be.
pub fn owner_only_sddl(user_sid: &str) -> String {
    format!("D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;{user_sid})S:(ML;;NW;;;ME)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_event_follows_the_machine_name() {
        assert_eq!(
            stop_event_name("dev_1").expect("name"),
            r"Local\berth-machine-dev_1-stop"
        );
        for bad in ["", r"a\b", "a/b", "x y", &"n".repeat(33)] {
            assert!(stop_event_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sddl_grants_the_user_system_and_administrators_only() {
        let sddl = owner_only_sddl("S-1-5-21-1-2-3-1001");
        assert_eq!(
            sddl,
            "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;S-1-5-21-1-2-3-1001)S:(ML;;NW;;;ME)"
        );
        // No entry for everyone (WD), authenticated or interactive users.
        for broad in [";WD)", ";AU)", ";IU)"] {
            assert!(!sddl.contains(broad), "{sddl}");
        }
    }

    #[test]
    fn this_process_is_alive_and_pid_zero_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
    }

    /// A detached child is found alive, is killed, and once reaped is gone.
    #[cfg(unix)]
    #[test]
    fn detached_child_is_seen_and_killed() {
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        let mut child = spawn_detached(&mut cmd).expect("spawn sleep");
        let pid = child.id();
        assert!(process_alive(pid));
        kill(pid).expect("kill");
        let status = child.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(!process_alive(pid));
        assert!(kill(0).is_err(), "pid 0 would be the whole process group");
    }

    /// A stop request for this process reaches its own [`StopRequests`].
    #[tokio::test]
    async fn a_stop_request_is_received() {
        let name = format!("stoptest{}", std::process::id());
        let mut stop = StopRequests::new(&name).expect("listen for stop requests");
        request_stop(std::process::id(), &name).expect("request stop");
        tokio::time::timeout(std::time::Duration::from_secs(10), stop.wait())
            .await
            .expect("the stop request arrives");
    }

    /// Only one supervisor per machine may wait for stop requests.
    #[cfg(windows)]
    #[tokio::test]
    async fn a_second_supervisor_of_a_machine_is_refused() {
        let name = format!("dup{}", std::process::id());
        let _first = StopRequests::new(&name).expect("first");
        let second = StopRequests::new(&name).err().expect("second refused");
        assert_eq!(second.kind(), std::io::ErrorKind::AlreadyExists);
    }
}
