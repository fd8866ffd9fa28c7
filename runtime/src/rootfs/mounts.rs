//! One spec mount at a time: resolve the destination inside the rootfs,
//! create it, mount, then remount / propagation / recursive attributes.

use std::borrow::Cow;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{stat, SFlag};
use nix::sys::statvfs::{fstatvfs, Statvfs};
use oci_spec::runtime::{Mount, Spec};

use super::cgroupfs::{self, Hierarchy};
use super::options::{self, MountOptions, OptionError, BIND_REMOUNT_FLAGS, LOCKABLE_FLAGS};
use super::paths::{clean_relative, ensure_in_root, fd_path, open_in_root, Kind};
use super::{mountinfo, Namespaces, RootfsContext, RootfsError};

/// Mounts the spec's entries into one rootfs, remembering what later steps
/// need to know.
pub(crate) struct Mounter<'a> {
    pub(crate) ctx: &'a RootfsContext<'a>,
    pub(crate) root: BorrowedFd<'a>,
    ns: Namespaces,
    /// `context="..."` for tmpfs/devpts/mqueue when SELinux is enabled and
    /// the spec has a mount label.
    label_option: Option<String>,
    /// Host cgroup v1 hierarchies, read on first use.
    pub(crate) hierarchies: Option<Vec<Hierarchy>>,
    /// A bind mount covers `/dev`: leave device nodes to it.
    pub(crate) dev_is_bind: bool,
    /// A devpts is mounted at `/dev/pts` (so `/dev/ptmx` links to it).
    pub(crate) devpts_at_dev_pts: bool,
}

/// Maps an option parse error to the error naming the mount.
pub(crate) fn option_error(destination: &Path, e: OptionError<'_>) -> RootfsError {
    match e {
        OptionError::Unknown(option) => RootfsError::UnknownOption {
            destination: destination.to_path_buf(),
            option: option.to_string(),
        },
        OptionError::Unsupported(option, reason) => RootfsError::UnsupportedOption {
            destination: destination.to_path_buf(),
            option: option.to_string(),
            reason,
        },
    }
}

/// Maps a resolve/create error to the error naming the path.
pub(crate) fn path_error(path: &Path) -> impl FnOnce(Errno) -> RootfsError + '_ {
    move |source| RootfsError::ResolveInRoot {
        path: path.to_path_buf(),
        source,
    }
}

/// The SELinux mount data option for the spec's `linux.mountLabel`, if any
/// (`None` without a label or when SELinux is off).
pub(crate) fn mount_label_option(spec: &Spec) -> Option<String> {
    let label = spec.linux().as_ref()?.mount_label().as_deref()?;
    crate::lsm::mount_label_option(label)
}

/// Parses a mount's options (an absent list is empty).
pub(crate) fn mount_options(m: &Mount) -> Result<MountOptions, RootfsError> {
    match m.options() {
        Some(list) => options::parse(list).map_err(|e| option_error(m.destination(), e)),
        None => Ok(MountOptions::default()),
    }
}

/// Whether a spec mount is a bind mount (OCI: a `bind`/`rbind` option;
/// runc also accepts type "bind" alone).
pub(crate) fn is_bind(m: &Mount, opts: &MountOptions) -> bool {
    opts.is_bind() || m.typ().as_deref() == Some("bind")
}

impl<'a> Mounter<'a> {
    pub(crate) fn new(ctx: &'a RootfsContext<'a>, root: BorrowedFd<'a>) -> Self {
        Self {
            ctx,
            root,
            ns: Namespaces::of(ctx.spec),
            hierarchies: None,
            label_option: mount_label_option(ctx.spec),
            dev_is_bind: false,
            devpts_at_dev_pts: false,
        }
    }

    pub(crate) fn mount_entry(&mut self, m: &Mount) -> Result<(), RootfsError> {
        let destination = m.destination();
        if !destination.is_absolute() {
            return Err(RootfsError::RelativeDestination {
                destination: destination.to_path_buf(),
            });
        }
        let rel = clean_relative(destination);
        let mut opts = mount_options(m)?;
        let typ = m.typ().as_deref().unwrap_or("");

        if is_bind(m, &opts) {
            if rel.as_os_str() == "dev" {
                self.dev_is_bind = true;
            }
            let source = m
                .source()
                .as_deref()
                .ok_or_else(|| RootfsError::MissingSource {
                    destination: destination.to_path_buf(),
                })?;
            let source: Cow<'_, Path> = if source.is_absolute() {
                Cow::Borrowed(source)
            } else {
                Cow::Owned(self.ctx.bundle.join(source))
            };
            return self.bind(&source, destination, &rel, &opts);
        }
        match typ {
            "" => Err(RootfsError::MissingMountType {
                destination: destination.to_path_buf(),
            }),
            "cgroup" => cgroupfs::mount_cgroup(self, destination, &rel, &opts),
            // Without a network namespace of its own the container may not
            // mount a fresh sysfs (and it would show the host's devices
            // anyway): bind the host's /sys like runc.
            "sysfs" if !self.ns.net => {
                opts.flags.insert(MsFlags::MS_BIND | MsFlags::MS_REC);
                self.bind(Path::new("/sys"), destination, &rel, &opts)
            }
            _ => {
                if typ == "devpts" {
                    opts.add_data_default("newinstance", "newinstance");
                    opts.add_data_default("ptmxmode", "ptmxmode=0666");
                    if rel.as_os_str() == "dev/pts" {
                        self.devpts_at_dev_pts = true;
                    }
                }
                if let Some(label) = &self.label_option {
                    if matches!(typ, "tmpfs" | "devpts" | "mqueue") {
                        opts.add_data_default("context", label);
                    }
                }
                let source = m.source().as_deref().unwrap_or(Path::new(typ));
                self.mount_fs(source, typ, destination, &rel, &opts)
            }
        }
    }

    /// A new filesystem instance (proc, tmpfs, devpts, mqueue, ...).
    pub(crate) fn mount_fs(
        &self,
        source: &Path,
        typ: &str,
        destination: &Path,
        rel: &Path,
        opts: &MountOptions,
    ) -> Result<(), RootfsError> {
        let fd = ensure_in_root(self.root, rel, Kind::Dir).map_err(path_error(destination))?;
        let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
        let flags = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        mount(Some(source), fd_path(&fd).as_cstr(), Some(typ), flags, data).map_err(
            |source_err| RootfsError::Mount {
                source_path: source.to_path_buf(),
                destination: destination.to_path_buf(),
                fstype: typ.to_string(),
                source: source_err,
            },
        )?;
        drop(fd);
        if !opts.propagation.is_empty() || opts.has_rec_attrs() {
            let top =
                open_in_root(self.root, rel, OFlag::empty()).map_err(path_error(destination))?;
            apply_after_mount(&top, destination, opts)?;
        }
        Ok(())
    }

    /// A bind mount of a host path, then the remount a bind needs for its
    /// per-mount flags.
    pub(crate) fn bind(
        &self,
        source: &Path,
        destination: &Path,
        rel: &Path,
        opts: &MountOptions,
    ) -> Result<(), RootfsError> {
        let st = stat(source).map_err(|source_err| RootfsError::BindSource {
            source_path: source.to_path_buf(),
            destination: destination.to_path_buf(),
            source: source_err,
        })?;
        let kind = if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            Kind::Dir
        } else {
            Kind::File
        };
        let fd = ensure_in_root(self.root, rel, kind).map_err(path_error(destination))?;
        let flags = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        mount(
            Some(source),
            fd_path(&fd).as_cstr(),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(|source_err| RootfsError::Mount {
            source_path: source.to_path_buf(),
            destination: destination.to_path_buf(),
            fstype: "bind".to_string(),
            source: source_err,
        })?;
        drop(fd);
        let remount = opts.flags & BIND_REMOUNT_FLAGS;
        if remount.is_empty() && opts.propagation.is_empty() && !opts.has_rec_attrs() {
            return Ok(());
        }
        // The fd above is the covered directory; the new mount's root is
        // what the path resolves to now.
        let top = open_in_root(self.root, rel, OFlag::empty()).map_err(path_error(destination))?;
        if !remount.is_empty() {
            remount_bind(&top, destination, remount, opts.cleared)?;
        }
        apply_after_mount(&top, destination, opts)
    }
}

/// The flags for a `MS_REMOUNT|MS_BIND` that sets `wanted` on a mount now
/// carrying `current`'s flags: ro/nosuid/nodev/noexec already on the mount
/// are kept unless the spec cleared them. Inside a user namespace those are
/// locked and dropping them fails with EPERM; outside one keeping them is
/// what the source mount asked for.
pub(crate) fn bind_remount_flags(current: &Statvfs, wanted: MsFlags, cleared: MsFlags) -> MsFlags {
    // ST_RDONLY/ST_NOSUID/ST_NODEV/ST_NOEXEC have the MS_* bit values.
    let have = MsFlags::from_bits_truncate(current.flags().bits()) & LOCKABLE_FLAGS;
    MsFlags::MS_REMOUNT | MsFlags::MS_BIND | wanted | (have - cleared)
}

/// Remounts the bind whose root is `top` with `wanted` (see
/// [`bind_remount_flags`]).
pub(crate) fn remount_bind(
    top: &OwnedFd,
    destination: &Path,
    wanted: MsFlags,
    cleared: MsFlags,
) -> Result<(), RootfsError> {
    let current = fstatvfs(top).map_err(|source| RootfsError::Remount {
        destination: destination.to_path_buf(),
        flags: wanted,
        source,
    })?;
    let flags = bind_remount_flags(&current, wanted, cleared);
    mount(
        None::<&str>,
        fd_path(top).as_cstr(),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(|source| RootfsError::Remount {
        destination: destination.to_path_buf(),
        flags,
        source,
    })
}

/// Propagation changes, then recursive attributes, on a mount's root fd.
pub(crate) fn apply_after_mount(
    top: &OwnedFd,
    destination: &Path,
    opts: &MountOptions,
) -> Result<(), RootfsError> {
    for &flags in &opts.propagation {
        mount(
            None::<&str>,
            fd_path(top).as_cstr(),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(|source| RootfsError::SetPropagation {
            path: destination.to_path_buf(),
            flags,
            source,
        })?;
    }
    if opts.has_rec_attrs() {
        mount_setattr_recursive(top.as_fd(), opts.rec_set, opts.rec_clr).map_err(|source| {
            RootfsError::MountSetattr {
                destination: destination.to_path_buf(),
                source,
            }
        })?;
    }
    Ok(())
}

/// `struct mount_attr` (linux/mount.h, MOUNT_ATTR_SIZE_VER0 = 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, ...)` (Linux 5.12+).
fn mount_setattr_recursive(fd: BorrowedFd<'_>, set: u64, clr: u64) -> Result<(), Errno> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH | libc::AT_RECURSIVE;
    // SAFETY: the path is a valid NUL-terminated string, `attr` lives across
    // the call and its size is passed, and `fd` is a borrowed open fd; the
    // kernel only reads these.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(ret).map(drop)
}

/// Makes the mount holding the rootfs's parent directory private, so that
/// pivot_root accepts the rootfs bind (it refuses shared parents).
pub(crate) fn make_parent_private(rootfs: &Path) -> Result<(), RootfsError> {
    let parent = rootfs.parent().unwrap_or(Path::new("/"));
    let text = mountinfo::read()?;
    let mut best: Option<PathBuf> = None;
    for e in mountinfo::entries(&text) {
        let mp = mountinfo::unescape(e.mount_point);
        let mp = Path::new(mp.as_ref());
        if parent.starts_with(mp)
            && best
                .as_ref()
                .is_none_or(|b| mp.as_os_str().len() >= b.as_os_str().len())
        {
            best = Some(mp.to_path_buf());
        }
    }
    let target = best.unwrap_or_else(|| PathBuf::from("/"));
    mount(
        None::<&str>,
        &target,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|source| RootfsError::SetPropagation {
        path: target.clone(),
        flags: MsFlags::MS_PRIVATE,
        source,
    })
}
