//! Making the rootfs the process's root.
//!
//! pivot_root(".", "."): with the rootfs as working directory, the old root
//! ends up stacked on top of the new one, where a lazy unmount removes it
//! without needing a directory for it inside the rootfs. The old root's
//! mounts are made slaves first so that the unmount does not propagate back
//! to the host. When pivot_root is impossible (the host root is the
//! initramfs, or `no_pivot`), the rootfs mount is moved onto `/` and the
//! process chroots into it.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, chroot, fchdir, pivot_root};

use super::RootfsError;

pub(crate) fn enter(rootfs: &Path, no_pivot: bool) -> Result<(), RootfsError> {
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let chdir_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RootfsError::Chdir { path, source }
    };
    let new_root = open(rootfs, dir_flags, Mode::empty()).map_err(chdir_err(rootfs))?;
    fchdir(&new_root).map_err(chdir_err(rootfs))?;
    if !no_pivot {
        let old_root = open("/", dir_flags, Mode::empty()).map_err(chdir_err(Path::new("/")))?;
        match pivot_root(".", ".") {
            Ok(()) => return detach_old_root(&old_root),
            // The current root is the initramfs (rootfs/ramfs), which
            // cannot be pivoted away from: fall back to MS_MOVE + chroot.
            Err(Errno::EINVAL) => {}
            Err(source) => {
                return Err(RootfsError::PivotRoot {
                    path: rootfs.to_path_buf(),
                    source,
                })
            }
        }
    }
    move_root(rootfs)
}

fn detach_old_root(old_root: &std::os::fd::OwnedFd) -> Result<(), RootfsError> {
    // The old root is now mounted on top of the new one; step onto it.
    fchdir(old_root).map_err(|source| RootfsError::DetachOldRoot { source })?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|source| RootfsError::DetachOldRoot { source })?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|source| RootfsError::DetachOldRoot { source })?;
    chdir("/").map_err(|source| RootfsError::Chdir {
        path: PathBuf::from("/"),
        source,
    })
}

/// `mount --move <rootfs> /`, then chroot into it. The working directory is
/// already the rootfs.
fn move_root(rootfs: &Path) -> Result<(), RootfsError> {
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(|source| {
        RootfsError::MoveRoot {
            path: rootfs.to_path_buf(),
            source,
        }
    })?;
    chroot(".").map_err(|source| RootfsError::Chroot {
        path: rootfs.to_path_buf(),
        source,
    })?;
    chdir("/").map_err(|source| RootfsError::Chdir {
        path: PathBuf::from("/"),
        source,
    })
}
