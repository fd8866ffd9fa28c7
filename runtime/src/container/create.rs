//! `create`: the runtime (parent) side.
//!
//! Process layout, chosen so that a new pid or time namespace applies to the
//! container's first process and so that user-namespace maps can be written
//! by a privileged parent:
//!
//! ```text
//! runtime (parent) ──fork──▶ intermediate ──fork──▶ init (pid 1 of the container)
//!     writes uid/gid maps      joins cgroup,            mounts, pivot_root,
//!     runs createRuntime       namespaces, rlimits      drops privileges,
//!     hooks, records state     then exits               waits for `start`
//! ```
//!
//! Everything that can be checked is checked before the first fork. On any
//! failure the parent kills what it forked and removes the cgroup and the
//! state directory; mounts live in the container's mount namespace and
//! vanish with it.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::os::fd::AsFd;

use super::init::{run_init, InitContext};
use super::{validate_id, Container, CreateOptions, Runtime, EXEC_FIFO};
use crate::cgroups::{self, CgroupManager};
use crate::error::RuntimeError;
use crate::hooks::{self, HookState};
use crate::namespaces::{self, NamespacePlan};
use crate::process;
use crate::seccomp::{self, SeccompFilter};
use crate::spec::Bundle;
use crate::state::{self, ContainerState, Status};
use crate::sync::{self, Message, SyncSocket};

const OCI_VERSION: &str = "1.2.0";

impl Runtime {
    /// Creates the container: namespaces, cgroup, rootfs, hooks up to
    /// createContainer; the user process waits for `start`.
    pub fn create(&self, id: &str, opts: &CreateOptions) -> Result<Container, RuntimeError> {
        validate_id(id)?;
        let bundle = Bundle::load(&opts.bundle)?;
        let process = bundle.process();
        let terminal = process.terminal().unwrap_or(false);
        match (terminal, &opts.console_socket) {
            (true, None) => return Err(RuntimeError::ConsoleSocketRequired),
            (false, Some(_)) => return Err(RuntimeError::ConsoleSocketUnused),
            _ => {}
        }
        let linux = bundle
            .spec
            .linux()
            .as_ref()
            .ok_or_else(|| RuntimeError::Child("config.json: \"linux\" is missing".into()))?;
        let plan = NamespacePlan::from_spec(linux.namespaces().as_deref().unwrap_or_default())?;
        let seccomp_cache = self.root.join(super::SECCOMP_CACHE);
        let seccomp = linux
            .seccomp()
            .as_ref()
            .map(|s| seccomp::compile_cached(s, &seccomp_cache))
            .transpose()?;
        let cgroup_root = Path::new(super::CGROUP_ROOT);
        let cgroup_mode = cgroups::detect_mode(cgroup_root)?;
        crate::rootfs::validate(&bundle.spec, &bundle.rootfs)?;
        let console = opts
            .console_socket
            .as_deref()
            .map(crate::console::connect)
            .transpose()?;

        let dir = self.root.join(id);
        self.make_container_dir(id, &dir)?;
        let mut guard = CreateGuard {
            dir: dir.clone(),
            cgroup: None,
            children: Vec::new(),
        };

        let cgroup_path = cgroup_path_for(&bundle.spec, id);
        let cgroup = CgroupManager::with_mode(cgroup_root, &cgroup_path, cgroup_mode)?;
        cgroup.create()?;
        guard.cgroup = Some(cgroup.clone());
        if let Some(resources) = crate::spec::effective_resources(&bundle.spec) {
            cgroup.apply(&resources)?;
        }

        let fifo_path = dir.join(EXEC_FIFO);
        nix::unistd::mkfifo(&fifo_path, Mode::from_bits_truncate(0o600)).map_err(
            RuntimeError::sys(format!("creating {}", fifo_path.display())),
        )?;
        // Opened read-write so the init can wait on it without a writer;
        // `start` writes one byte to let it go.
        let fifo: OwnedFd =
            nix::fcntl::open(&fifo_path, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()).map_err(
                RuntimeError::sys(format!("opening {}", fifo_path.display())),
            )?;

        // One channel per forked process, so the intermediate's messages
        // (user namespace, init pid) are always read before the init's.
        let (parent_sock, child_sock) = sync::pair()?;
        let (parent_isock, child_isock) = sync::pair()?;
        let ctx = InitContext {
            id,
            bundle: &bundle,
            plan: &plan,
            cgroup: &cgroup,
            cgroup_mode,
            seccomp: seccomp.as_ref(),
            console: console.as_ref(),
            fifo: &fifo,
            sync: &child_sock,
            intermediate_sync: &child_isock,
            no_pivot: opts.no_pivot,
            no_new_keyring: opts.no_new_keyring,
            preserve_fds: opts.preserve_fds,
        };
        let cgroup_dir = open_v2_cgroup_dir(&cgroup)?;
        // SAFETY: berth-runc is single-threaded here, so the child may run
        // arbitrary code after fork.
        let (forked, placement) =
            unsafe { crate::fork::fork_into_cgroup(cgroup_dir.as_ref().map(|d| d.as_fd())) }
                .map_err(RuntimeError::sys("forking the container process"))?;
        let intermediate = match forked {
            ForkResult::Child => {
                drop(parent_sock);
                drop(parent_isock);
                let in_cgroup = matches!(placement, crate::fork::Placement::InCgroup);
                run_intermediate(&ctx, in_cgroup)
            }
            ForkResult::Parent { child } => child,
        };
        drop(cgroup_dir);
        // Only the children keep their ends: end-of-file then means they exited.
        drop(child_isock);
        drop(child_sock);
        drop(fifo);
        drop(console);
        guard.children.push(intermediate);

        let init_pid = receive_init_pid(&parent_isock, intermediate, linux, &mut guard)?;
        drive_setup(&parent_sock, init_pid, &bundle, id, seccomp.as_ref())?;

        let state = ContainerState {
            id: id.to_string(),
            status: Status::Created,
            pid: init_pid.as_raw(),
            pid_start_time: super::process_start_time(init_pid.as_raw()).unwrap_or(0),
            bundle: bundle.path.clone(),
            rootfs: bundle.rootfs.clone(),
            created: state::now_rfc3339(),
            owner: owner_name(),
            annotations: bundle.spec.annotations().clone().unwrap_or_default(),
            cgroup_path,
            oci_version: bundle.spec.version().clone(),
            hooks: bundle.spec.hooks().clone(),
        };
        let config_copy = dir.join(super::CONFIG_COPY);
        fs::write(&config_copy, &bundle.raw_config).map_err(RuntimeError::io(format!(
            "writing {}",
            config_copy.display()
        )))?;
        state.save(&dir)?;
        if let Some(pid_file) = &opts.pid_file {
            write_pid_file(pid_file, init_pid.as_raw())?;
        }
        guard.disarm();
        Ok(Container { state, dir })
    }

    fn make_container_dir(&self, id: &str, dir: &Path) -> Result<(), RuntimeError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.root)
            .map_err(RuntimeError::io(format!(
                "creating state root {}",
                self.root.display()
            )))?;
        match fs::DirBuilder::new().mode(0o711).create(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(RuntimeError::AlreadyExists(id.to_string()))
            }
            Err(e) => Err(RuntimeError::io(format!("creating {}", dir.display()))(e)),
        }
    }
}

fn child_error(e: sync::SyncError) -> RuntimeError {
    match e {
        sync::SyncError::Closed => {
            RuntimeError::Child("the container's init process exited during setup".into())
        }
        sync::SyncError::Remote(text) => RuntimeError::Child(text),
        e => e.into(),
    }
}

/// Serves the intermediate: user-namespace maps, then the init's host pid.
fn receive_init_pid(
    sock: &SyncSocket,
    intermediate: Pid,
    linux: &oci_spec::runtime::Linux,
    guard: &mut CreateGuard,
) -> Result<Pid, RuntimeError> {
    loop {
        match sock.receive().map_err(child_error)? {
            Message::UsernsCreated => {
                write_id_maps(intermediate, linux)?;
                sock.send(&Message::UsernsMapped)?;
            }
            Message::Pid(pid) => {
                let pid = Pid::from_raw(pid);
                guard.children.push(pid);
                // The intermediate exits right after sending the pid.
                let _ = waitpid(intermediate, None);
                guard.children.retain(|p| *p != intermediate);
                return Ok(pid);
            }
            other => {
                return Err(RuntimeError::Child(format!(
                    "unexpected message from the intermediate process: {other:?}"
                )))
            }
        }
    }
}

/// Serves the init until it reports ready: hooks and the seccomp fd.
fn drive_setup(
    sock: &SyncSocket,
    init_pid: Pid,
    bundle: &Bundle,
    id: &str,
    seccomp: Option<&SeccompFilter>,
) -> Result<(), RuntimeError> {
    loop {
        let (message, fd) = sock.receive_with_fd().map_err(child_error)?;
        match message {
            Message::RunCreateRuntimeHooks => {
                if let Some(hooks_cfg) = bundle.spec.hooks() {
                    let state = HookState {
                        oci_version: OCI_VERSION,
                        id,
                        status: "creating",
                        pid: Some(init_pid.as_raw()),
                        bundle: &bundle.path,
                        annotations: bundle.spec.annotations().as_ref(),
                    };
                    hooks::run_all(
                        "prestart",
                        hooks_cfg.prestart().as_deref().unwrap_or_default(),
                        &state,
                    )?;
                    hooks::run_all(
                        "createRuntime",
                        hooks_cfg.create_runtime().as_deref().unwrap_or_default(),
                        &state,
                    )?;
                }
                sock.send(&Message::CreateRuntimeHooksDone)?;
            }
            Message::SeccompFd => {
                let (Some(fd), Some(filter)) = (fd, seccomp) else {
                    return Err(RuntimeError::Child(
                        "seccomp notify fd announced but not received".into(),
                    ));
                };
                hand_over_notify_fd(filter, &fd, id, init_pid, &bundle.path)?;
            }
            Message::Ready => return Ok(()),
            other => {
                return Err(RuntimeError::Child(format!(
                    "unexpected message during setup: {other:?}"
                )))
            }
        }
    }
}

/// Sends a seccomp notify fd and the process state to the profile's
/// listener (the seccomp agent), as the OCI runtime spec describes.
pub(crate) fn hand_over_notify_fd(
    filter: &SeccompFilter,
    fd: &OwnedFd,
    id: &str,
    pid: Pid,
    bundle: &Path,
) -> Result<(), RuntimeError> {
    use std::os::fd::AsFd;
    let Some(listener) = filter.listener_path() else {
        return Err(RuntimeError::Child(
            "seccomp profile uses SCMP_ACT_NOTIFY but sets no listenerPath".into(),
        ));
    };
    let state = oci_spec::runtime::StateBuilder::default()
        .version(OCI_VERSION)
        .id(id)
        .status(oci_spec::runtime::ContainerState::Creating)
        .pid(pid.as_raw())
        .bundle(bundle)
        .build()
        .map_err(|e| RuntimeError::Child(format!("building the seccomp agent's state: {e}")))?;
    let json = seccomp::process_state_json(&state, pid.as_raw(), filter.listener_metadata())?;
    seccomp::send_notify_fd(listener, fd.as_fd(), &json)?;
    Ok(())
}

fn write_id_maps(pid: Pid, linux: &oci_spec::runtime::Linux) -> Result<(), RuntimeError> {
    let format = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.as_deref()
            .unwrap_or_default()
            .iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    for (file, content) in [
        ("uid_map", format(linux.uid_mappings())),
        ("gid_map", format(linux.gid_mappings())),
    ] {
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, content.as_bytes()).map_err(RuntimeError::io(format!(
            "writing {path} ({})",
            content.trim()
        )))?;
    }
    Ok(())
}

/// The intermediate process: enters the cgroup and namespaces, forks the
/// init, reports its pid and exits. Never returns.
fn run_intermediate(ctx: &InitContext<'_>, in_cgroup: bool) -> ! {
    let result = intermediate_steps(ctx, in_cgroup);
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            let _ = ctx
                .intermediate_sync
                .send(&Message::Error(crate::error::describe(&e)));
            1
        }
    };
    // SAFETY: _exit ends the forked child without running the parent's
    // atexit handlers or destructors.
    unsafe { libc::_exit(code) }
}

fn intermediate_steps(ctx: &InitContext<'_>, in_cgroup: bool) -> Result<(), RuntimeError> {
    if !in_cgroup {
        ctx.cgroup.join_single_threaded()?;
    }
    process::apply_resource_limits(ctx.bundle.process())?;
    ctx.plan.join_where(|k| k == LinuxNamespaceType::User)?;
    if ctx.plan.new_user {
        namespaces::unshare_user()?;
        ctx.intermediate_sync.send(&Message::UsernsCreated)?;
        ctx.intermediate_sync
            .expect(&Message::UsernsMapped, "UsernsMapped")?;
    }
    if ctx.plan.new_user || ctx.plan.joins(LinuxNamespaceType::User) {
        process::become_namespace_root()?;
    }
    ctx.plan.join_where(|k| k != LinuxNamespaceType::User)?;
    ctx.plan.unshare_new()?;
    if ctx.plan.creates(LinuxNamespaceType::Time) {
        write_time_offsets(ctx.bundle)?;
    }
    // SAFETY: single-threaded child; the grandchild runs init code only.
    match unsafe { fork() }.map_err(RuntimeError::sys("forking the container init"))? {
        ForkResult::Child => run_init(ctx),
        ForkResult::Parent { child } => {
            ctx.intermediate_sync.send(&Message::Pid(child.as_raw()))?
        }
    }
    Ok(())
}

fn write_time_offsets(bundle: &Bundle) -> Result<(), RuntimeError> {
    let offsets = bundle
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().clone())
        .unwrap_or_default();
    let mut content = String::new();
    for (clock, offset) in &offsets {
        if clock != "monotonic" && clock != "boottime" {
            return Err(RuntimeError::Child(format!(
                "config.json: unknown clock {clock:?} in timeOffsets (monotonic or boottime)"
            )));
        }
        content.push_str(&format!(
            "{clock} {} {}\n",
            offset.secs().unwrap_or(0),
            offset.nanosecs().unwrap_or(0)
        ));
    }
    if content.is_empty() {
        return Ok(());
    }
    fs::write("/proc/self/timens_offsets", content)
        .map_err(RuntimeError::io("writing /proc/self/timens_offsets"))
}

/// On cgroup v2, the container's cgroup directory, to fork straight into it.
pub(crate) fn open_v2_cgroup_dir(cgroup: &CgroupManager) -> Result<Option<OwnedFd>, RuntimeError> {
    let Some(dir) = cgroup.v2_dir() else {
        return Ok(None);
    };
    nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(Some)
    .map_err(RuntimeError::sys(format!("opening {}", dir.display())))
}

/// The cgroup path for a container: the spec's, or `/berth/<id>`.
pub(crate) fn cgroup_path_for(spec: &Spec, id: &str) -> PathBuf {
    spec.linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .unwrap_or_else(|| PathBuf::from(format!("/berth/{id}")))
}

/// The creating user's name from /etc/passwd (no NSS: the static build must
/// not load shared libraries), or the numeric uid.
fn owner_name() -> String {
    let uid = nix::unistd::geteuid().as_raw();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| user_name_for(&passwd, uid))
        .unwrap_or_else(|| uid.to_string())
}

fn user_name_for(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

/// Writes the pid file atomically, as containerd reads it right after create.
pub(crate) fn write_pid_file(path: &Path, pid: i32) -> Result<(), RuntimeError> {
    let tmp = path.with_extension("berth-tmp");
    fs::write(&tmp, pid.to_string())
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(RuntimeError::io(format!(
            "writing pid file {}",
            path.display()
        )))
}

/// Undoes a half-made container unless disarmed.
struct CreateGuard {
    dir: PathBuf,
    cgroup: Option<CgroupManager>,
    children: Vec<Pid>,
}

impl CreateGuard {
    fn disarm(&mut self) {
        self.cgroup = None;
        self.children.clear();
        self.dir = PathBuf::new();
    }
}

impl Drop for CreateGuard {
    fn drop(&mut self) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        for pid in &self.children {
            let _ = kill(*pid, Signal::SIGKILL);
            let _ = waitpid(*pid, None);
        }
        if let Some(cgroup) = &self.cgroup {
            let _ = cgroup.kill_all(Signal::SIGKILL);
            let _ = cgroup.remove();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::user_name_for;

    #[test]
    fn passwd_lookup() {
        let passwd =
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbad line\n";
        assert_eq!(user_name_for(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(user_name_for(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_name_for(passwd, 5), None);
    }
}
