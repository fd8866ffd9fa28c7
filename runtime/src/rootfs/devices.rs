//! Device nodes under `<rootfs>/dev`, the standard `/dev` symlinks, and the
//! console bind mount.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{open, openat, AtFlags, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknodat, umask, Mode, SFlag};
use nix::unistd::{fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Spec};

use super::mounts::path_error;
use super::paths::{ensure_in_root, fd_path, Kind};
use super::RootfsError;

/// A device node to create.
struct Node<'a> {
    /// Container path, e.g. "/dev/null".
    path: &'a Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
}

/// The devices every container gets (OCI runtime spec, "Default Devices").
const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// Checks a `linux.devices` entry: type c/b/u/p, a path under `/dev`
/// without `..`, and non-negative numbers for device types.
pub(crate) fn check_device(d: &LinuxDevice) -> Result<SFlag, RootfsError> {
    let path = d.path();
    let invalid = |reason| RootfsError::InvalidDevice {
        path: path.to_path_buf(),
        reason,
    };
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => return Err(invalid("type must be c, b, u or p")),
    };
    let under_dev = path.strip_prefix("/dev").is_ok_and(|rest| {
        !rest.as_os_str().is_empty() && rest.components().all(|c| matches!(c, Component::Normal(_)))
    });
    if !under_dev {
        return Err(invalid("path must be under /dev"));
    }
    if kind != SFlag::S_IFIFO && (d.major() < 0 || d.minor() < 0) {
        return Err(invalid("major and minor must not be negative"));
    }
    Ok(kind)
}

/// Creates the default and `linux.devices` nodes and the `/dev` symlinks.
pub(crate) fn setup_dev(
    root: BorrowedFd<'_>,
    spec: &Spec,
    in_userns: bool,
    devpts_at_dev_pts: bool,
) -> Result<(), RootfsError> {
    let dev_path = Path::new("/dev");
    let dev = ensure_in_root(root, Path::new("dev"), Kind::Dir).map_err(path_error(dev_path))?;
    let devices: &[LinuxDevice] = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_deref())
        .unwrap_or_default();

    // Modes are exact: the umask must not trim them.
    let old_mask = umask(Mode::empty());
    let result = (|| {
        for &(path, major, minor) in &DEFAULT_DEVICES {
            let path = Path::new(path);
            if devices.iter().any(|d| d.path() == path) {
                continue;
            }
            let node = Node {
                path,
                kind: SFlag::S_IFCHR,
                major,
                minor,
                mode: 0o666,
                uid: None,
                gid: None,
            };
            create_node(root, dev.as_fd(), &node, in_userns)?;
        }
        for d in devices {
            let kind = check_device(d)?;
            let node = Node {
                path: d.path(),
                kind,
                major: u64::try_from(d.major()).unwrap_or(0),
                minor: u64::try_from(d.minor()).unwrap_or(0),
                mode: d.file_mode().unwrap_or(0o666) & 0o7777,
                uid: d.uid(),
                gid: d.gid(),
            };
            create_node(root, dev.as_fd(), &node, in_userns)?;
        }
        Ok(())
    })();
    umask(old_mask);
    result?;

    let mut links: [(&'static str, &'static str); 6] = [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("", ""),
        ("", ""),
    ];
    let mut n = 4;
    if Path::new("/proc/kcore").exists() {
        links[n] = ("core", "/proc/kcore");
        n += 1;
    }
    for &(link, target) in &links[..n] {
        match symlinkat(target, &dev, link) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(source) => {
                return Err(RootfsError::Symlink {
                    link,
                    target,
                    source,
                })
            }
        }
    }
    if devpts_at_dev_pts {
        // The devpts instance's own ptmx, replacing any node the image has.
        let (link, target) = ("ptmx", "pts/ptmx");
        let mut result = symlinkat(target, &dev, link);
        if result == Err(Errno::EEXIST) {
            result = unlinkat(&dev, link, UnlinkatFlags::NoRemoveDir)
                .and_then(|()| symlinkat(target, &dev, link));
        }
        result.map_err(|source| RootfsError::Symlink {
            link,
            target,
            source,
        })?;
    }
    Ok(())
}

/// The directory that will hold `path` (a `/dev/...` path) and its last
/// component; `/dev` itself needs no lookup.
fn parent_dir<'p>(
    root: BorrowedFd<'_>,
    path: &'p Path,
) -> Result<(Option<OwnedFd>, &'p std::ffi::OsStr), RootfsError> {
    let invalid = || RootfsError::InvalidDevice {
        path: path.to_path_buf(),
        reason: "path must be under /dev",
    };
    let name = path.file_name().ok_or_else(invalid)?;
    let parent = path.parent().ok_or_else(invalid)?;
    if parent == Path::new("/dev") {
        return Ok((None, name));
    }
    let rel = parent.strip_prefix("/").map_err(|_| invalid())?;
    let fd = ensure_in_root(root, rel, Kind::Dir).map_err(path_error(parent))?;
    Ok((Some(fd), name))
}

fn create_node(
    root: BorrowedFd<'_>,
    dev: BorrowedFd<'_>,
    node: &Node<'_>,
    in_userns: bool,
) -> Result<(), RootfsError> {
    let (owned, name) = parent_dir(root, node.path)?;
    let dir = owned.as_ref().map_or(dev, |fd| fd.as_fd());
    let create_err = |source| RootfsError::CreateDevice {
        path: node.path.to_path_buf(),
        source,
    };
    if in_userns {
        // mknod is not allowed in a user namespace: bind the host's node
        // onto an empty file.
        let file = openat(
            dir,
            name,
            OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(create_err)?;
        return mount(
            Some(node.path),
            fd_path(&file).as_cstr(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(create_err);
    }
    let perm = Mode::from_bits_truncate(node.mode);
    let devno = makedev(node.major, node.minor);
    let mut made = mknodat(dir, name, node.kind, perm, devno);
    if made == Err(Errno::EEXIST) {
        made = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
            .and_then(|()| mknodat(dir, name, node.kind, perm, devno));
    }
    made.map_err(create_err)?;
    if node.uid.is_some() || node.gid.is_some() {
        fchownat(
            dir,
            name,
            node.uid.map(Uid::from_raw),
            node.gid.map(Gid::from_raw),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|source| RootfsError::ChownDevice {
            path: node.path.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Bind-mounts `pty_slave` onto `<rootfs>/dev/console`.
pub(crate) fn bind_console(rootfs: &Path, pty_slave: &Path) -> Result<(), RootfsError> {
    let console = Path::new("/dev/console");
    let err = |source| RootfsError::Console {
        pty: pty_slave.to_path_buf(),
        path: rootfs.join("dev/console"),
        source,
    };
    let root = open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err)?;
    let target = ensure_in_root(root.as_fd(), Path::new("dev/console"), Kind::File)
        .map_err(path_error(console))?;
    mount(
        Some(pty_slave),
        fd_path(&target).as_cstr(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err)
}
