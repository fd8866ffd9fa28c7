//! `create`: the container's init process (pid 1 of a new pid namespace),
//! from fork to `execve`. Until it reports `Ready`, every failure is sent to
//! the runtime process, which cleans up; after that there is nobody to tell
//! but the container's own stderr.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use oci_spec::runtime::LinuxNamespaceType;

use crate::cgroups::{CgroupManager, CgroupMode};
use crate::console;
use crate::error::RuntimeError;
use crate::hooks::{self, HookState};
use crate::namespaces::NamespacePlan;
use crate::process::{self, ExecImage};
use crate::rootfs::{self, RootfsContext};
use crate::seccomp::SeccompFilter;
use crate::spec::Bundle;
use crate::sync::{Message, SyncSocket};

/// What the forked processes of `create` borrow from the runtime process.
pub(crate) struct InitContext<'a> {
    pub id: &'a str,
    pub bundle: &'a Bundle,
    pub plan: &'a NamespacePlan,
    pub cgroup: &'a CgroupManager,
    pub cgroup_mode: CgroupMode,
    pub seccomp: Option<&'a SeccompFilter>,
    pub console: Option<&'a UnixStream>,
    pub fifo: &'a OwnedFd,
    /// The init's channel to the runtime process.
    pub sync: &'a SyncSocket,
    /// The intermediate's channel to the runtime process.
    pub intermediate_sync: &'a SyncSocket,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
}

/// Runs the init process. Never returns.
pub(crate) fn run_init(ctx: &InitContext<'_>) -> ! {
    let image = match setup(ctx) {
        Ok(image) => image,
        Err(e) => {
            let _ = ctx.sync.send(&Message::Error(crate::error::describe(&e)));
            // SAFETY: ends the forked child without unwinding into the parent's frames.
            unsafe { libc::_exit(1) }
        }
    };
    let err = match wait_for_start_then_exec(ctx, &image) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = writeln!(std::io::stderr(), "berth-runc: container init: {err}");
    // SAFETY: as above.
    unsafe { libc::_exit(127) }
}

/// Everything up to `Ready`; returns the prepared exec image.
fn setup(ctx: &InitContext<'_>) -> Result<ExecImage, RuntimeError> {
    let spec = &ctx.bundle.spec;
    let process = ctx.bundle.process();
    process::make_non_dumpable()?;
    nix::unistd::setsid().map_err(RuntimeError::sys("creating a new session"))?;

    if ctx.plan.creates(LinuxNamespaceType::Network) {
        crate::namespaces::bring_up_loopback()?;
    }
    let new_mount_ns = ctx.plan.creates(LinuxNamespaceType::Mount);
    if new_mount_ns {
        rootfs::prepare(&RootfsContext {
            spec,
            rootfs: &ctx.bundle.rootfs,
            bundle: &ctx.bundle.path,
            cgroup_mode: ctx.cgroup_mode,
            new_cgroupns: ctx.plan.creates(LinuxNamespaceType::Cgroup),
            in_userns: ctx.plan.new_user || ctx.plan.joins(LinuxNamespaceType::User),
        })?;
    }
    if ctx.plan.creates(LinuxNamespaceType::Uts) {
        if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
            nix::unistd::sethostname(hostname)
                .map_err(RuntimeError::sys(format!("setting hostname {hostname:?}")))?;
        }
        if let Some(domain) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
            set_domainname(domain)?;
        }
    }

    ctx.sync.send(&Message::RunCreateRuntimeHooks)?;
    ctx.sync
        .expect(&Message::CreateRuntimeHooksDone, "CreateRuntimeHooksDone")?;
    if let Some(hooks_cfg) = spec.hooks() {
        let pid = host_pid();
        hooks::run_all(
            "createContainer",
            hooks_cfg.create_container().as_deref().unwrap_or_default(),
            &hook_state(ctx, "created", pid),
        )?;
    }

    if new_mount_ns {
        rootfs::enter(&ctx.bundle.rootfs, ctx.no_pivot)?;
    }
    if let Some(socket) = ctx.console {
        let size = process
            .console_size()
            .as_ref()
            .map(|b| (clamp_u16(b.height()), clamp_u16(b.width())));
        let pty = console::open(size)?;
        if new_mount_ns {
            rootfs::bind_console(Path::new("/"), &pty.slave_path)?;
        }
        console::send_master(socket.as_raw_fd(), &pty.master, &pty.slave_path)?;
        console::attach_stdio(&pty.slave)?;
    }
    if new_mount_ns {
        // Like runc, create a missing working directory (before the root
        // may become read-only), as root, inside the new root.
        let cwd = process.cwd();
        if !cwd.exists() {
            std::fs::create_dir_all(cwd).map_err(RuntimeError::io(format!(
                "creating working directory {}",
                cwd.display()
            )))?;
        }
        rootfs::finish(spec)?;
    }
    if !ctx.no_new_keyring {
        join_session_keyring(ctx.id);
    }
    set_personality(spec)?;
    if let Some(fd) = process::drop_privileges(process, ctx.seccomp)? {
        ctx.sync.send_with_fd(&Message::SeccompFd, &fd)?;
    }
    let env = process.env().as_deref().unwrap_or_default();
    let args = process.args().as_deref().unwrap_or_default();
    let program = args.first().map(String::as_str).unwrap_or_default();
    let path = process::find_executable(program, env)?;
    let image = ExecImage::new(&path, process)?;
    mark_inherited_fds(ctx.preserve_fds)?;
    ctx.sync.send(&Message::Ready)?;
    Ok(image)
}

fn wait_for_start_then_exec(
    ctx: &InitContext<'_>,
    image: &ExecImage,
) -> Result<std::convert::Infallible, RuntimeError> {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(ctx.fifo.as_fd(), &mut byte) {
            Ok(_) => break,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(RuntimeError::sys("waiting for start on exec.fifo")(e)),
        }
    }
    if let Some(hooks_cfg) = ctx.bundle.spec.hooks() {
        hooks::run_all(
            "startContainer",
            hooks_cfg.start_container().as_deref().unwrap_or_default(),
            &hook_state(ctx, "running", host_pid()),
        )?;
    }
    let process = ctx.bundle.process();
    if let Some(filter) = ctx
        .seccomp
        .filter(|_| process::seccomp_deferred(process, ctx.seccomp))
    {
        filter.load()?;
    }
    Err(image.exec().into())
}

fn hook_state<'a>(ctx: &'a InitContext<'_>, status: &'a str, pid: Option<i32>) -> HookState<'a> {
    HookState {
        oci_version: "1.2.0",
        id: ctx.id,
        status,
        pid,
        bundle: &ctx.bundle.path,
        annotations: ctx.bundle.spec.annotations().as_ref(),
    }
}

/// Our pid as the host sees it. Before pivot_root `/proc` is still the
/// host's, whose `self` link names the host pid.
fn host_pid() -> Option<i32> {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
}

fn clamp_u16(v: u64) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

fn set_domainname(name: &str) -> Result<(), RuntimeError> {
    // SAFETY: pointer and length describe a valid byte buffer.
    let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    if rc < 0 {
        return Err(RuntimeError::sys(format!("setting domainname {name:?}"))(
            nix::Error::last(),
        ));
    }
    Ok(())
}

/// A session keyring of its own, so containers do not share the host's
/// (best effort: kernels without keyrings simply skip it, as runc does).
fn join_session_keyring(id: &str) {
    let Ok(name) = std::ffi::CString::new(format!("_ses.{id}")) else {
        return;
    };
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl(JOIN_SESSION_KEYRING, name) reads a NUL-terminated string.
    unsafe {
        libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr());
    }
}

fn set_personality(spec: &oci_spec::runtime::Spec) -> Result<(), RuntimeError> {
    use oci_spec::runtime::LinuxPersonalityDomain;
    let Some(personality) = spec.linux().as_ref().and_then(|l| l.personality().as_ref()) else {
        return Ok(());
    };
    let domain: libc::c_ulong = match personality.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    };
    // SAFETY: personality takes a plain integer.
    if unsafe { libc::personality(domain) } < 0 {
        return Err(RuntimeError::sys("setting personality")(nix::Error::last()));
    }
    Ok(())
}

/// Leaves fds 0..3+preserve_fds open across execve and closes the rest on
/// exec (our own fds are close-on-exec already; this catches anything the
/// caller leaked to us).
fn mark_inherited_fds(preserve_fds: u32) -> Result<(), RuntimeError> {
    let first = 3 + preserve_fds;
    for fd in 3..first {
        let raw = i32::try_from(fd).unwrap_or(i32::MAX);
        // SAFETY: F_SETFD on a possibly-closed fd only fails with EBADF.
        unsafe { libc::fcntl(raw, libc::F_SETFD, 0) };
    }
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOEXEC only sets flags on the given range.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc < 0 {
        return Err(RuntimeError::sys("marking inherited fds close-on-exec")(
            nix::Error::last(),
        ));
    }
    Ok(())
}
