//! `exec`: a new process inside a running container.
//!
//! Same two-fork layout as create: the intermediate joins the container's
//! cgroup and namespaces (a joined pid namespace only applies to children),
//! the grandchild drops privileges and execs. The sync socket is
//! close-on-exec, so end-of-file on it means the exec succeeded; an `Error`
//! message means it did not.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;

use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::{LinuxNamespaceType, Process};

use super::create::write_pid_file;
use super::lifecycle::wait_exit_code;
use super::{Container, ExecOptions};
use crate::cgroups::CgroupManager;
use crate::console;
use crate::error::RuntimeError;
use crate::namespaces::NamespacePlan;
use crate::process::{self, ExecImage};
use crate::seccomp::{self, SeccompFilter};
use crate::state::Status;
use crate::sync::{self, Message, SyncSocket};

/// What `exec` returns.
#[derive(Debug, Clone, Copy)]
pub enum ExecOutcome {
    /// Detached: the new process's host pid.
    Detached(Pid),
    /// Waited for: its exit code (128+signal when killed).
    Exited(i32),
}

struct ExecContext<'a> {
    process: &'a Process,
    plan: &'a NamespacePlan,
    cgroup: &'a CgroupManager,
    seccomp: Option<&'a SeccompFilter>,
    console: Option<&'a UnixStream>,
    /// The exec'd process's channel; closes on a successful execve.
    sync: &'a SyncSocket,
    /// The intermediate's channel: its error or the new process's pid.
    intermediate_sync: &'a SyncSocket,
    preserve_fds: u32,
}

impl Container {
    /// Runs `process` inside the running container. Returns the new
    /// process's host pid when detached, else waits and returns its exit code.
    pub fn exec(&self, process: &Process, opts: &ExecOptions) -> Result<ExecOutcome, RuntimeError> {
        crate::spec::validate_process(process)?;
        if !matches!(self.state.status, Status::Created | Status::Running) {
            return Err(RuntimeError::WrongStatus {
                id: self.state.id.clone(),
                operation: "exec in",
                status: self.state.status,
            });
        }
        let terminal = process.terminal().unwrap_or(false);
        match (terminal, &opts.console_socket) {
            (true, None) => return Err(RuntimeError::ConsoleSocketRequired),
            (false, Some(_)) => return Err(RuntimeError::ConsoleSocketUnused),
            _ => {}
        }
        let spec = self.spec()?;
        let linux = spec.linux().as_ref();
        let kinds: Vec<LinuxNamespaceType> = linux
            .and_then(|l| l.namespaces().as_deref())
            .unwrap_or_default()
            .iter()
            .map(|ns| ns.typ())
            .collect();
        let plan = NamespacePlan::for_exec(self.state.pid, &kinds)?;
        let seccomp = linux
            .and_then(|l| l.seccomp().as_ref())
            .map(|s| match self.dir.parent() {
                // The container's directory is in the runtime root.
                Some(root) => seccomp::compile_cached(s, &root.join(super::SECCOMP_CACHE)),
                None => seccomp::compile(s),
            })
            .transpose()?;
        let cgroup = self.cgroup()?;
        let console = opts
            .console_socket
            .as_deref()
            .map(console::connect)
            .transpose()?;
        if !opts.detach {
            // The process is our grandchild: become its reaper to wait for it.
            // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag.
            if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
                return Err(RuntimeError::sys("becoming a child subreaper")(
                    nix::Error::last(),
                ));
            }
        }
        let (parent_sock, child_sock) = sync::pair()?;
        let (parent_isock, child_isock) = sync::pair()?;
        let ctx = ExecContext {
            process,
            plan: &plan,
            cgroup: &cgroup,
            seccomp: seccomp.as_ref(),
            console: console.as_ref(),
            sync: &child_sock,
            intermediate_sync: &child_isock,
            preserve_fds: opts.preserve_fds,
        };
        let cgroup_dir = super::create::open_v2_cgroup_dir(&cgroup)?;
        // SAFETY: berth-runc is single-threaded here.
        let (forked, placement) =
            unsafe { crate::fork::fork_into_cgroup(cgroup_dir.as_ref().map(|d| d.as_fd())) }
                .map_err(RuntimeError::sys("forking the exec process"))?;
        let intermediate = match forked {
            ForkResult::Child => {
                drop(parent_sock);
                drop(parent_isock);
                let in_cgroup = matches!(placement, crate::fork::Placement::InCgroup);
                exit_child(intermediate_steps(&ctx, in_cgroup), &child_isock)
            }
            ForkResult::Parent { child } => child,
        };
        drop(cgroup_dir);
        // Only the children keep their ends: end-of-file then means they exited.
        drop(child_isock);
        drop(child_sock);
        drop(console);
        let pid = match parent_isock.receive() {
            Ok(Message::Pid(pid)) => Pid::from_raw(pid),
            Ok(other) => {
                return Err(RuntimeError::Child(format!(
                    "unexpected message from exec process: {other:?}"
                )))
            }
            Err(sync::SyncError::Remote(text)) => {
                let _ = wait_exit_code(intermediate);
                return Err(RuntimeError::Child(text));
            }
            Err(e) => {
                let _ = wait_exit_code(intermediate);
                return Err(e.into());
            }
        };
        let _ = wait_exit_code(intermediate);
        let mut outcome = parent_sock.receive_with_fd();
        if let Ok((Message::SeccompFd, Some(fd))) = &outcome {
            if let Some(filter) = &seccomp {
                super::create::hand_over_notify_fd(
                    filter,
                    fd,
                    &self.state.id,
                    pid,
                    &self.state.bundle,
                )?;
            }
            outcome = parent_sock.receive_with_fd();
        }
        match outcome.map(|(m, _)| m) {
            // The socket closed on execve: the program runs.
            Err(sync::SyncError::Closed) => {}
            Err(sync::SyncError::Remote(text)) => {
                let _ = wait_exit_code(pid);
                return Err(RuntimeError::Child(text));
            }
            Err(e) => return Err(e.into()),
            Ok(other) => {
                return Err(RuntimeError::Child(format!(
                    "unexpected message from exec process: {other:?}"
                )))
            }
        }
        if let Some(pid_file) = &opts.pid_file {
            write_pid_file(pid_file, pid.as_raw())?;
        }
        if opts.detach {
            Ok(ExecOutcome::Detached(pid))
        } else {
            Ok(ExecOutcome::Exited(wait_exit_code(pid)?))
        }
    }
}

fn exit_child(result: Result<(), RuntimeError>, sync: &SyncSocket) -> ! {
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            let _ = sync.send(&Message::Error(crate::error::describe(&e)));
            1
        }
    };
    // SAFETY: ends the forked child without unwinding into the parent's frames.
    unsafe { libc::_exit(code) }
}

fn intermediate_steps(ctx: &ExecContext<'_>, in_cgroup: bool) -> Result<(), RuntimeError> {
    // Before joining: processes already in the container must not be able
    // to reach into this one while it runs the runtime's code.
    process::make_non_dumpable()?;
    if !in_cgroup {
        ctx.cgroup.join_single_threaded()?;
    }
    process::apply_resource_limits(ctx.process)?;
    ctx.plan.join_where(|k| k == LinuxNamespaceType::User)?;
    if ctx.plan.joins(LinuxNamespaceType::User) {
        process::become_namespace_root()?;
    }
    ctx.plan.join_where(|k| k != LinuxNamespaceType::User)?;
    // SAFETY: single-threaded child.
    match unsafe { fork() }.map_err(RuntimeError::sys("forking the exec process"))? {
        ForkResult::Child => {
            let result = exec_steps(ctx);
            exit_child(result, ctx.sync)
        }
        ForkResult::Parent { child } => {
            ctx.intermediate_sync.send(&Message::Pid(child.as_raw()))?
        }
    }
    Ok(())
}

/// In the container: terminal, privileges, then execve. Returns only on error.
fn exec_steps(ctx: &ExecContext<'_>) -> Result<(), RuntimeError> {
    nix::unistd::setsid().map_err(RuntimeError::sys("creating a new session"))?;
    if let Some(socket) = ctx.console {
        let size = ctx.process.console_size().as_ref().map(|b| {
            (
                u16::try_from(b.height()).unwrap_or(u16::MAX),
                u16::try_from(b.width()).unwrap_or(u16::MAX),
            )
        });
        let pty = console::open(size)?;
        console::send_master(socket.as_raw_fd(), &pty.master, &pty.slave_path)?;
        console::attach_stdio(&pty.slave)?;
    }
    if let Some(fd) = process::drop_privileges(ctx.process, ctx.seccomp)? {
        ctx.sync.send_with_fd(&Message::SeccompFd, &fd)?;
    }
    let env = ctx.process.env().as_deref().unwrap_or_default();
    let args = ctx.process.args().as_deref().unwrap_or_default();
    let program = args.first().map(String::as_str).unwrap_or_default();
    let path = process::find_executable(program, env)?;
    let image = ExecImage::new(&path, ctx.process)?;
    let first = 3 + ctx.preserve_fds;
    for fd in 3..first {
        let raw = i32::try_from(fd).unwrap_or(i32::MAX);
        // SAFETY: F_SETFD on a possibly-closed fd only fails with EBADF.
        unsafe { libc::fcntl(raw, libc::F_SETFD, 0) };
    }
    if let (Some(filter), true) = (
        ctx.seccomp,
        ctx.process.no_new_privileges().unwrap_or(false),
    ) {
        filter.load()?;
    }
    Err(image.exec().into())
}
