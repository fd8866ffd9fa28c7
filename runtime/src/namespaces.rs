//! Which namespaces a container creates and which it joins.
//!
//! Joined namespaces are opened in the runtime process, before any fork, so a
//! wrong path is reported early and the fds stay valid whatever the child's
//! mount namespace later looks like.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("opening {kind} namespace {path}: {source}")]
    Open {
        kind: String,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("joining {kind} namespace: {source}")]
    Join { kind: String, source: nix::Error },
    #[error("bringing up the loopback interface: {source}")]
    Loopback { source: nix::Error },
    #[error("creating namespaces ({flags:?}): {source}")]
    Unshare {
        flags: CloneFlags,
        source: nix::Error,
    },
}

/// The kernel flag of a namespace type.
pub fn clone_flag(kind: LinuxNamespaceType) -> CloneFlags {
    match kind {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// Name of the namespace's file under `/proc/<pid>/ns/`.
pub fn proc_name(kind: LinuxNamespaceType) -> &'static str {
    match kind {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// A namespace to join, already opened.
#[derive(Debug)]
pub struct JoinedNamespace {
    pub kind: LinuxNamespaceType,
    pub fd: OwnedFd,
}

/// What the container's process must do to end up in its namespaces.
#[derive(Debug)]
pub struct NamespacePlan {
    /// Namespaces to join, user namespace first (joining it grants the
    /// capabilities needed to join the others), mount namespace last.
    pub join: Vec<JoinedNamespace>,
    /// A new user namespace is created (before the other new ones).
    pub new_user: bool,
    /// The other namespaces to create.
    pub new_flags: CloneFlags,
}

impl NamespacePlan {
    fn empty() -> Self {
        Self {
            join: Vec::new(),
            new_user: false,
            new_flags: CloneFlags::empty(),
        }
    }

    pub fn from_spec(namespaces: &[LinuxNamespace]) -> Result<Self, NamespaceError> {
        let mut plan = NamespacePlan::empty();
        for ns in namespaces {
            match ns.path() {
                Some(path) => plan.join.push(open_namespace(ns.typ(), path)?),
                None if ns.typ() == LinuxNamespaceType::User => plan.new_user = true,
                None => plan.new_flags |= clone_flag(ns.typ()),
            }
        }
        plan.join.sort_by_key(|j| join_order(j.kind));
        Ok(plan)
    }

    /// The plan for entering the namespaces of a running process (exec):
    /// every namespace in `kinds` is joined through `/proc/<pid>/ns`.
    pub fn for_exec(pid: i32, kinds: &[LinuxNamespaceType]) -> Result<Self, NamespaceError> {
        let mut plan = NamespacePlan::empty();
        for &kind in kinds {
            let path = PathBuf::from(format!("/proc/{pid}/ns/{}", proc_name(kind)));
            plan.join.push(open_namespace(kind, &path)?);
        }
        plan.join.sort_by_key(|j| join_order(j.kind));
        Ok(plan)
    }

    pub fn creates(&self, kind: LinuxNamespaceType) -> bool {
        if kind == LinuxNamespaceType::User {
            self.new_user
        } else {
            self.new_flags.contains(clone_flag(kind))
        }
    }

    pub fn joins(&self, kind: LinuxNamespaceType) -> bool {
        self.join.iter().any(|j| j.kind == kind)
    }

    /// Joins every namespace of `join` whose kind satisfies `filter`.
    pub fn join_where(
        &self,
        filter: impl Fn(LinuxNamespaceType) -> bool,
    ) -> Result<(), NamespaceError> {
        for ns in self.join.iter().filter(|j| filter(j.kind)) {
            setns(ns.fd.as_fd(), clone_flag(ns.kind)).map_err(|source| NamespaceError::Join {
                kind: proc_name(ns.kind).to_string(),
                source,
            })?;
        }
        Ok(())
    }

    /// Creates the new non-user namespaces. The pid and time namespaces
    /// only apply to children created afterwards.
    pub fn unshare_new(&self) -> Result<(), NamespaceError> {
        if self.new_flags.is_empty() {
            return Ok(());
        }
        unshare(self.new_flags).map_err(|source| NamespaceError::Unshare {
            flags: self.new_flags,
            source,
        })
    }
}

fn join_order(kind: LinuxNamespaceType) -> u8 {
    match kind {
        LinuxNamespaceType::User => 0,
        LinuxNamespaceType::Mount => 2,
        _ => 1,
    }
}

fn open_namespace(
    kind: LinuxNamespaceType,
    path: &Path,
) -> Result<JoinedNamespace, NamespaceError> {
    let fd = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|source| {
        NamespaceError::Open {
            kind: proc_name(kind).to_string(),
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(JoinedNamespace { kind, fd })
}

/// Creates a new user namespace for the calling (single-threaded) process.
pub fn unshare_user() -> Result<(), NamespaceError> {
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|source| NamespaceError::Unshare {
        flags: CloneFlags::CLONE_NEWUSER,
        source,
    })
}

/// Brings up `lo` in a new network namespace, as users of runc and Docker
/// expect (a fresh namespace has it down).
pub fn bring_up_loopback() -> Result<(), NamespaceError> {
    let err = |source| NamespaceError::Loopback { source };
    // SAFETY: socket() with constant arguments returns a new fd or -1.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(err(nix::Error::last()));
    }
    // SAFETY: the fd was just created and is owned here.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(err(nix::Error::last()));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(err(nix::Error::last()));
        }
    }
    Ok(())
}
