//! Forking the container's first process straight into its cgroup.
//!
//! Moving a running process into a cgroup (a write to `cgroup.procs`) makes
//! the kernel wait for an RCU grace period, several milliseconds on an idle
//! host: the biggest single cost of creating a container. On cgroup v2,
//! `clone3(CLONE_INTO_CGROUP)` creates the process in the cgroup instead, at
//! no such cost.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::unistd::{ForkResult, Pid};

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` up to and including `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// How the child ended up in its cgroup.
pub enum Placement {
    /// Born in the cgroup.
    InCgroup,
    /// A plain fork: the child must still join the cgroup.
    Inherited,
}

/// Forks, into the v2 cgroup `cgroup_dir` when given and the kernel allows
/// it, else like `fork()`.
///
/// # Safety
/// As for `fork()`: the caller must be single-threaded (or the child must
/// only use async-signal-safe functions). The child of a raw `clone3` has
/// glibc's cached thread id of its parent; glibc (2.34 and later) does not
/// use it for signals sent to itself, and the child here only forks again
/// with glibc's `fork`, which refreshes it.
pub unsafe fn fork_into_cgroup(
    cgroup_dir: Option<BorrowedFd<'_>>,
) -> nix::Result<(ForkResult, Placement)> {
    if let Some(dir) = cgroup_dir {
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: dir.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM and without a stack behaves like
        // fork; `args` is a valid clone_args of the size passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match rc {
            0 => return Ok((ForkResult::Child, Placement::InCgroup)),
            pid if pid > 0 => {
                let child = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
                return Ok((ForkResult::Parent { child }, Placement::InCgroup));
            }
            // Old kernel or a cgroup the flag does not accept: fall back.
            _ => {}
        }
    }
    // SAFETY: forwarded from the caller's contract.
    unsafe { nix::unistd::fork() }.map(|r| (r, Placement::Inherited))
}
