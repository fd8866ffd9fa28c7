//! What the container process does between fork and `execve`: the steps
//! shared by a container's init and by processes exec'd into it.
//!
//! Everything here runs in a freshly forked, single-threaded child.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{PosixRlimitType, Process};

use crate::capabilities;
use crate::lsm;
use crate::seccomp::SeccompFilter;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("setting rlimit {kind:?}: {source}")]
    Rlimit {
        kind: PosixRlimitType,
        source: nix::Error,
    },
    #[error("writing oom_score_adj {value}: {source}")]
    OomScoreAdj { value: i32, source: std::io::Error },
    #[error("switching to uid {uid} gid {gid}: {source}")]
    SetUser {
        uid: u32,
        gid: u32,
        source: nix::Error,
    },
    #[error("setting additional groups {gids:?}: {source}")]
    SetGroups { gids: Vec<u32>, source: nix::Error },
    #[error("setting no_new_privileges: {0}")]
    NoNewPrivileges(nix::Error),
    #[error("changing to working directory {path}: {source}")]
    Chdir { path: PathBuf, source: nix::Error },
    #[error("exec: {program:?}: executable file not found in $PATH")]
    NotFound { program: String },
    /// A program named by a path that is missing, a directory or not
    /// executable (`reason` as runc words it: `stat /x: no such file or
    /// directory`, `permission denied`, `is a directory`).
    #[error("exec: {program:?}: {reason}")]
    CannotExecute { program: String, reason: String },
    #[error("exec {program:?}: {source}")]
    Exec { program: String, source: nix::Error },
    #[error("argument or environment contains a NUL byte: {0:?}")]
    Nul(String),
    #[error("{what}: {source}")]
    Prctl {
        what: &'static str,
        source: nix::Error,
    },
    #[error(transparent)]
    Capability(#[from] capabilities::CapabilityError),
    #[error(transparent)]
    Lsm(#[from] lsm::LsmError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
}

fn rlimit_resource(kind: PosixRlimitType) -> libc::__rlimit_resource_t {
    match kind {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// Applies rlimits and oom_score_adj. Runs while still privileged in the
/// host's user namespace: raising a hard limit or lowering oom_score_adj
/// needs CAP_SYS_RESOURCE there.
pub fn apply_resource_limits(process: &Process) -> Result<(), ProcessError> {
    for rlimit in process.rlimits().as_deref().unwrap_or_default() {
        let limit = libc::rlimit {
            rlim_cur: rlimit.soft(),
            rlim_max: rlimit.hard(),
        };
        // SAFETY: a valid resource number and a pointer to an initialised rlimit.
        if unsafe { libc::setrlimit(rlimit_resource(rlimit.typ()), &limit) } < 0 {
            return Err(ProcessError::Rlimit {
                kind: rlimit.typ(),
                source: nix::Error::last(),
            });
        }
    }
    if let Some(value) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", value.to_string())
            .map_err(|source| ProcessError::OomScoreAdj { value, source })?;
    }
    Ok(())
}

/// Marks the process non-dumpable so that other processes in the container
/// cannot open its `/proc/<pid>` files (exe, mem, fds) while it still runs
/// the runtime's code. `execve` resets this for the user's program.
pub fn make_non_dumpable() -> Result<(), ProcessError> {
    // SAFETY: PR_SET_DUMPABLE takes an integer argument.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } < 0 {
        return Err(ProcessError::Prctl {
            what: "marking the process non-dumpable",
            source: nix::Error::last(),
        });
    }
    Ok(())
}

/// Becomes uid/gid 0 of a user namespace just entered (mapped or joined).
pub fn become_namespace_root() -> Result<(), ProcessError> {
    let err = |source| ProcessError::SetUser {
        uid: 0,
        gid: 0,
        source,
    };
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0)).map_err(err)?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).map_err(err)?;
    Ok(())
}

/// Everything after the namespaces and root filesystem are in place:
/// security labels, no_new_privileges, seccomp, user, capabilities, umask
/// and working directory. Returns the seccomp notify fd if the filter was
/// loaded here and uses one; see [`seccomp_deferred`] for when it is not.
pub fn drop_privileges(
    process: &Process,
    seccomp: Option<&SeccompFilter>,
) -> Result<Option<std::os::fd::OwnedFd>, ProcessError> {
    if let Some(profile) = process.apparmor_profile().as_deref() {
        if !profile.is_empty() {
            lsm::apply_apparmor(profile)?;
        }
    }
    if let Some(label) = process.selinux_label().as_deref() {
        if !label.is_empty() {
            lsm::set_selinux_exec_label(label)?;
        }
    }
    let no_new_privs = process.no_new_privileges().unwrap_or(false);
    if no_new_privs {
        // SAFETY: PR_SET_NO_NEW_PRIVS takes the integer 1.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            return Err(ProcessError::NoNewPrivileges(nix::Error::last()));
        }
    }
    // Without no_new_privileges loading needs CAP_SYS_ADMIN, so it happens
    // before capabilities are dropped. A notify filter is loaded here too,
    // so its fd can be handed to the runtime before the process is released.
    let mut notify_fd = None;
    if let Some(filter) = seccomp.filter(|f| !no_new_privs || f.uses_notify()) {
        notify_fd = filter.load()?;
    }
    if let Some(caps) = process.capabilities() {
        capabilities::drop_bounding(caps)?;
    }
    switch_user(process)?;
    if let Some(caps) = process.capabilities() {
        capabilities::apply(caps)?;
    }
    if let Some(mask) = process.user().umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    let cwd = process.cwd();
    nix::unistd::chdir(cwd).map_err(|source| ProcessError::Chdir {
        path: cwd.clone(),
        source,
    })?;
    Ok(notify_fd)
}

/// Whether the filter is still to be loaded right before execve (the
/// no_new_privileges case, which needs no privilege and blocks the fewest
/// of the runtime's own syscalls).
pub fn seccomp_deferred(process: &Process, seccomp: Option<&SeccompFilter>) -> bool {
    seccomp.is_some_and(|f| process.no_new_privileges().unwrap_or(false) && !f.uses_notify())
}

fn switch_user(process: &Process) -> Result<(), ProcessError> {
    let user = process.user();
    let (uid, gid) = (user.uid(), user.gid());
    // Keep the permitted set across the uid change; capabilities::apply
    // then sets exactly the configured sets.
    // SAFETY: PR_SET_KEEPCAPS takes an integer flag.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } < 0 {
        return Err(ProcessError::Prctl {
            what: "keeping capabilities across setuid",
            source: nix::Error::last(),
        });
    }
    let gids: Vec<Gid> = user
        .additional_gids()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    if can_setgroups() {
        nix::unistd::setgroups(&gids).map_err(|source| ProcessError::SetGroups {
            gids: gids.iter().map(|g| g.as_raw()).collect(),
            source,
        })?;
    }
    let err = |source| ProcessError::SetUser { uid, gid, source };
    let g = Gid::from_raw(gid);
    nix::unistd::setresgid(g, g, g).map_err(err)?;
    let u = Uid::from_raw(uid);
    nix::unistd::setresuid(u, u, u).map_err(err)?;
    // SAFETY: PR_SET_KEEPCAPS takes an integer flag.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) } < 0 {
        return Err(ProcessError::Prctl {
            what: "clearing keep-capabilities",
            source: nix::Error::last(),
        });
    }
    Ok(())
}

/// setgroups is refused in a user namespace whose setgroups file says "deny".
fn can_setgroups() -> bool {
    std::fs::read("/proc/self/setgroups")
        .map(|c| !c.starts_with(b"deny"))
        .unwrap_or(true)
}

/// Finds `program` the way execvp would, in the container's `PATH`. A
/// program named by a path must exist, not be a directory and be executable;
/// the errors read like runc's (Go's `exec.LookPath`), which is what Docker
/// clients match on to choose their exit code (127 not found, 126 cannot be
/// run).
pub fn find_executable(program: &str, env: &[String]) -> Result<PathBuf, ProcessError> {
    if program.contains('/') {
        return match check_executable(Path::new(program)) {
            Ok(()) => Ok(PathBuf::from(program)),
            Err(reason) => Err(ProcessError::CannotExecute {
                program: program.to_string(),
                reason,
            }),
        };
    }
    let path_var = env
        .iter()
        .find_map(|v| v.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path_var
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| check_executable(candidate).is_ok())
        .ok_or_else(|| ProcessError::NotFound {
            program: program.to_string(),
        })
}

/// Why `path` cannot be executed, worded as Go's `exec.LookPath` words it.
fn check_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        let errno = e.raw_os_error().map(nix::Error::from_raw).map(|e| e.desc());
        format!(
            "stat {}: {}",
            path.display(),
            errno.map_or_else(|| e.to_string(), |d| d.to_ascii_lowercase())
        )
    })?;
    if meta.is_dir() {
        return Err("is a directory".into());
    }
    match nix::unistd::access(path, nix::unistd::AccessFlags::X_OK) {
        Ok(()) => Ok(()),
        // Like Go: a kernel that cannot tell falls back to the mode bits.
        Err(nix::Error::ENOSYS | nix::Error::EPERM) if meta.permissions().mode() & 0o111 != 0 => {
            Ok(())
        }
        Err(nix::Error::ENOSYS | nix::Error::EPERM) => Err("permission denied".into()),
        Err(e) => Err(e.desc().to_ascii_lowercase()),
    }
}

/// Prepared argv/envp, built before the last privilege drop so nothing is
/// allocated after seccomp is loaded.
pub struct ExecImage {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    program: String,
}

impl ExecImage {
    pub fn new(path: &Path, process: &Process) -> Result<Self, ProcessError> {
        let cstr = |s: &[u8]| {
            CString::new(s).map_err(|_| ProcessError::Nul(String::from_utf8_lossy(s).into()))
        };
        let args = process.args().as_deref().unwrap_or_default();
        Ok(Self {
            path: cstr(path.as_os_str().as_bytes())?,
            argv: args
                .iter()
                .map(|a| cstr(a.as_bytes()))
                .collect::<Result<_, _>>()?,
            envp: process
                .env()
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|e| cstr(e.as_bytes()))
                .collect::<Result<_, _>>()?,
            program: OsStr::new(args.first().map(String::as_str).unwrap_or_default())
                .to_string_lossy()
                .into_owned(),
        })
    }

    /// Replaces the process image. Returns only on failure.
    ///
    /// The program starts with an empty signal mask and SIGPIPE at its
    /// default, whatever the runtime had (ignored dispositions and the mask
    /// survive execve).
    pub fn exec(&self) -> ProcessError {
        use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
        // SAFETY: setting SIG_DFL installs no handler code.
        let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
        match nix::unistd::execve(&self.path, &self.argv, &self.envp) {
            Ok(never) => match never {},
            Err(source) => ProcessError::Exec {
                program: self.program.clone(),
                source,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn lookup_errors_read_like_runc() {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "data").expect("write");
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let path_env = vec![format!("PATH=/nonexistent-dir:{}", dir.path().display())];
        let show = |p: &Path| p.display().to_string();

        assert_eq!(find_executable(&show(&script), &[]).expect("found"), script);
        assert_eq!(find_executable("script", &path_env).expect("found"), script);
        // A file that is not executable is skipped in PATH, like execvp.
        let err = find_executable("plain", &path_env).expect_err("not executable");
        assert_eq!(
            err.to_string(),
            "exec: \"plain\": executable file not found in $PATH"
        );
        let missing = dir.path().join("missing");
        let err = find_executable(&show(&missing), &[]).expect_err("missing");
        assert_eq!(
            err.to_string(),
            format!(
                "exec: \"{0}\": stat {0}: no such file or directory",
                show(&missing)
            )
        );
        let err = find_executable(&show(dir.path()), &[]).expect_err("a directory");
        assert!(err.to_string().ends_with(": is a directory"), "{err}");
        // Root passes the X_OK check only when some execute bit is set.
        let err = find_executable(&show(&plain), &[]).expect_err("not executable");
        assert_eq!(
            err.to_string(),
            format!("exec: \"{}\": permission denied", show(&plain))
        );
    }
}
