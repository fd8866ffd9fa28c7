//! Inside the new root: read-only paths, masked paths, read-only root.
//!
//! These run after pivot_root, so every path is already confined to the
//! container's tree. Missing paths are skipped (the spec lists paths that
//! not every kernel has).

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::statvfs::statvfs;

use super::mounts::bind_remount_flags;
use super::RootfsError;

/// Binds `path` onto itself and remounts the bind read-only, keeping its
/// nosuid/nodev/noexec flags.
pub(crate) fn readonly_path(path: &Path) -> Result<(), RootfsError> {
    let err = |source| RootfsError::ReadonlyPath {
        path: path.to_path_buf(),
        source,
    };
    match mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    ) {
        Ok(()) => {}
        Err(Errno::ENOENT) => return Ok(()),
        Err(source) => return Err(err(source)),
    }
    remount_readonly(path).map_err(err)
}

/// `MS_REMOUNT|MS_BIND|MS_RDONLY` on the mount at `path`, keeping its
/// locked flags.
fn remount_readonly(path: &Path) -> Result<(), Errno> {
    let current = statvfs(path)?;
    let flags = bind_remount_flags(&current, MsFlags::MS_RDONLY, MsFlags::empty());
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
}

/// Hides `path`: /dev/null over a file, an empty read-only tmpfs over a
/// directory (`label` is the SELinux mount data option, if any).
pub(crate) fn mask_path(path: &Path, label: Option<&str>) -> Result<(), RootfsError> {
    // Most masked paths are files: try the file case first, it fails with
    // ENOTDIR on a directory.
    let result = match mount(
        Some("/dev/null"),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    ) {
        Err(Errno::ENOTDIR) => mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            label,
        ),
        other => other,
    };
    match result {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(source) => Err(RootfsError::MaskPath {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Remounts `/` read-only, keeping its other locked flags.
pub(crate) fn readonly_root() -> Result<(), RootfsError> {
    remount_readonly(Path::new("/")).map_err(|source| RootfsError::ReadonlyRoot { source })
}
