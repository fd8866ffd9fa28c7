//! The container's root filesystem: mounts, device nodes, pivot_root,
//! masked and read-only paths, sysctls.
//!
//! OWNER: rootfs helper. Keep these signatures; the init process calls them
//! in this order: `prepare` (new mount namespace, before pivot), hooks,
//! `enter` (pivot_root or chroot), `finish` (inside the new root).
//!
//! Files:
//! - `options.rs`: mount option strings to flags, propagation and data.
//! - `paths.rs`: resolving mount destinations inside the rootfs (symlink-safe).
//! - `mounts.rs`: one spec mount (bind, proc, sysfs, tmpfs, devpts, ...).
//! - `cgroupfs.rs`: the `cgroup` mount type (v1 hierarchies or cgroup2).
//! - `devices.rs`: device nodes and the `/dev` symlinks.
//! - `pivot.rs`: pivot_root, or MS_MOVE + chroot.
//! - `protect.rs`: read-only paths, masked paths, read-only root.
//! - `sysctl.rs`: namespaced sysctls.
//! - `validate.rs`: checks done before forking.

mod cgroupfs;
mod devices;
mod mountinfo;
mod mounts;
mod options;
mod paths;
mod pivot;
mod protect;
mod sysctl;
mod validate;

#[cfg(test)]
mod tests;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::cgroups::CgroupMode;

pub use validate::validate;

/// Errors from setting up the root filesystem; each names the path or mount
/// involved. Display text leaves out the underlying error (see `source()`).
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("rootfs {path} does not exist or cannot be read")]
    RootfsMissing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("rootfs {path} is not a directory")]
    RootfsNotDirectory { path: PathBuf },
    #[error("invalid linux.rootfsPropagation {value:?}")]
    InvalidPropagation { value: String },
    #[error("setting mount propagation {flags:?} on {path}")]
    SetPropagation {
        path: PathBuf,
        flags: MsFlags,
        #[source]
        source: Errno,
    },
    #[error("reading {path}")]
    ReadProcFile {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("bind-mounting the rootfs {path} onto itself")]
    BindRootfs {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("opening the rootfs {path}")]
    OpenRootfs {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("mount destination {destination} is not an absolute path")]
    RelativeDestination { destination: PathBuf },
    #[error("mount {destination} has no type and is not a bind mount")]
    MissingMountType { destination: PathBuf },
    #[error("mount {destination}: filesystem type {fstype:?} is not known to this kernel")]
    UnknownMountType {
        destination: PathBuf,
        fstype: String,
    },
    #[error("bind mount {destination} has no source")]
    MissingSource { destination: PathBuf },
    #[error("mount {destination}: unknown mount option {option:?}")]
    UnknownOption {
        destination: PathBuf,
        option: String,
    },
    #[error("mount {destination}: mount option {option:?} is not supported ({reason})")]
    UnsupportedOption {
        destination: PathBuf,
        option: String,
        reason: &'static str,
    },
    #[error("resolving or creating {path} inside the rootfs")]
    ResolveInRoot {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("bind mount source {source_path} for {destination}")]
    BindSource {
        source_path: PathBuf,
        destination: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("mounting {fstype} from {source_path} on {destination}")]
    Mount {
        source_path: PathBuf,
        destination: PathBuf,
        fstype: String,
        #[source]
        source: Errno,
    },
    #[error("remounting {destination} with {flags:?}")]
    Remount {
        destination: PathBuf,
        flags: MsFlags,
        #[source]
        source: Errno,
    },
    #[error("setting recursive mount attributes on {destination}")]
    MountSetattr {
        destination: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("cgroup mount {destination}: creating {entry}")]
    CgroupEntry {
        destination: PathBuf,
        entry: String,
        #[source]
        source: Errno,
    },
    #[error("device {path}: {reason}")]
    InvalidDevice { path: PathBuf, reason: &'static str },
    #[error("creating device node {path}")]
    CreateDevice {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("changing the owner of device node {path}")]
    ChownDevice {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("creating symlink /dev/{link} -> {target}")]
    Symlink {
        link: &'static str,
        target: &'static str,
        #[source]
        source: Errno,
    },
    #[error("bind-mounting the console {pty} onto {path}")]
    Console {
        pty: PathBuf,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("changing directory to {path}")]
    Chdir {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("pivot_root into {path}")]
    PivotRoot {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("detaching the old root after pivot_root")]
    DetachOldRoot {
        #[source]
        source: Errno,
    },
    #[error("moving {path} onto / (no pivot_root)")]
    MoveRoot {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("chroot into {path}")]
    Chroot {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("invalid sysctl key {key:?}")]
    InvalidSysctlKey { key: String },
    #[error("sysctl {key} is not allowed: {reason}")]
    SysctlNotAllowed { key: String, reason: &'static str },
    #[error("setting sysctl {key}")]
    WriteSysctl {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("making {path} read-only")]
    ReadonlyPath {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("masking {path}")]
    MaskPath {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("remounting the root filesystem read-only")]
    ReadonlyRoot {
        #[source]
        source: Errno,
    },
}

/// What `prepare` needs besides the spec.
#[derive(Debug, Clone, Copy)]
pub struct RootfsContext<'a> {
    pub spec: &'a Spec,
    /// Absolute, canonical path of the root filesystem on the host.
    pub rootfs: &'a Path,
    /// Absolute path of the bundle (relative mount sources resolve against it).
    pub bundle: &'a Path,
    pub cgroup_mode: CgroupMode,
    /// The container has a cgroup namespace of its own.
    pub new_cgroupns: bool,
    /// The container has a user namespace (mknod is not allowed; bind device nodes instead).
    pub in_userns: bool,
}

/// Sets up everything under the rootfs while the host's tree is still visible.
///
/// Order: propagation of `/`, the rootfs bound onto itself, each spec mount
/// in order, then device nodes and `/dev` symlinks.
pub fn prepare(ctx: &RootfsContext<'_>) -> Result<(), RootfsError> {
    let spec = ctx.spec;
    let (propagation, explicit) = root_propagation(spec)?;
    mount(None::<&str>, "/", None::<&str>, propagation, None::<&str>).map_err(|source| {
        RootfsError::SetPropagation {
            path: PathBuf::from("/"),
            flags: propagation,
            source,
        }
    })?;
    // pivot_root refuses a new root whose parent mount is shared. The
    // default (rslave) leaves no shared mount; other choices may.
    if explicit && needs_private_parent(propagation) {
        mounts::make_parent_private(ctx.rootfs)?;
    }

    let rec_bind = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(
        Some(ctx.rootfs),
        ctx.rootfs,
        None::<&str>,
        rec_bind,
        None::<&str>,
    )
    .map_err(|source| RootfsError::BindRootfs {
        path: ctx.rootfs.to_path_buf(),
        source,
    })?;
    let root = open(
        ctx.rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| RootfsError::OpenRootfs {
        path: ctx.rootfs.to_path_buf(),
        source,
    })?;

    let mut mounter = mounts::Mounter::new(ctx, root.as_fd());
    if let Some(list) = spec.mounts() {
        for m in list {
            mounter.mount_entry(m)?;
        }
    }
    if !mounter.dev_is_bind {
        devices::setup_dev(root.as_fd(), spec, ctx.in_userns, mounter.devpts_at_dev_pts)?;
    }
    Ok(())
}

/// Bind-mounts the pty slave at `<rootfs>/dev/console`.
pub fn bind_console(rootfs: &Path, pty_slave: &Path) -> Result<(), RootfsError> {
    devices::bind_console(rootfs, pty_slave)
}

/// Makes `rootfs` the process's root: pivot_root, or MS_MOVE + chroot when
/// `no_pivot` is set or the current root is a ramfs/initramfs.
pub fn enter(rootfs: &Path, no_pivot: bool) -> Result<(), RootfsError> {
    pivot::enter(rootfs, no_pivot)
}

/// Inside the new root: sysctls, read-only and masked paths, read-only root.
pub fn finish(spec: &Spec) -> Result<(), RootfsError> {
    if let Some(linux) = spec.linux() {
        if let Some(sysctls) = linux.sysctl() {
            sysctl::apply(sysctls, Namespaces::of(spec))?;
        }
        if let Some(paths) = linux.readonly_paths() {
            for p in paths {
                protect::readonly_path(Path::new(p))?;
            }
        }
        if let Some(paths) = linux.masked_paths() {
            let label = mounts::mount_label_option(spec);
            for p in paths {
                protect::mask_path(Path::new(p), label.as_deref())?;
            }
        }
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        protect::readonly_root()?;
    }
    // Re-apply an explicitly chosen propagation to the new root (the rootfs
    // bind started out with whatever its parent mount had).
    let (propagation, explicit) = root_propagation(spec)?;
    if explicit {
        mount(None::<&str>, "/", None::<&str>, propagation, None::<&str>).map_err(|source| {
            RootfsError::SetPropagation {
                path: PathBuf::from("/"),
                flags: propagation,
                source,
            }
        })?;
    }
    Ok(())
}

/// Parses `linux.rootfsPropagation`; returns the flags and whether the spec
/// set it (the default is `rslave`).
fn root_propagation(spec: &Spec) -> Result<(MsFlags, bool), RootfsError> {
    let value = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
        .unwrap_or("");
    let rec = MsFlags::MS_REC;
    let flags = match value {
        "" => return Ok((MsFlags::MS_SLAVE | rec, false)),
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | rec,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | rec,
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | rec,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | rec,
        other => {
            return Err(RootfsError::InvalidPropagation {
                value: other.to_string(),
            })
        }
    };
    Ok((flags, true))
}

/// Only a recursive slave/private/unbindable change guarantees that no
/// mount above the rootfs is still shared.
fn needs_private_parent(flags: MsFlags) -> bool {
    flags.contains(MsFlags::MS_SHARED) || !flags.contains(MsFlags::MS_REC)
}

/// The namespaces the spec gives the container (new or joined).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Namespaces {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
}

impl Namespaces {
    pub(crate) fn of(spec: &Spec) -> Self {
        let mut ns = Namespaces::default();
        let list = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
        for n in list.into_iter().flatten() {
            match n.typ() {
                LinuxNamespaceType::Network => ns.net = true,
                LinuxNamespaceType::Ipc => ns.ipc = true,
                LinuxNamespaceType::Uts => ns.uts = true,
                _ => {}
            }
        }
        ns
    }
}
