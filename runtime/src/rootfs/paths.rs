//! Resolving and creating paths inside the rootfs so that no symlink in the
//! container image can lead outside it.
//!
//! Every path is resolved relative to an `O_PATH` fd of the rootfs with
//! `openat2(RESOLVE_IN_ROOT)`, which treats absolute symlinks and `..` as if
//! the rootfs were `/`. Kernels without `openat2` (before 5.6) fall back to
//! a component-by-component walk doing the same thing in userspace. Mounts
//! then target `/proc/self/fd/N` of the resolved fd, so the kernel mounts on
//! exactly the inode that was checked.

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};

/// Set once `openat2` turned out to be missing (ENOSYS).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Most symlinks followed while resolving one path (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

/// Cleans an absolute container path lexically into a path relative to the
/// rootfs: drops `.`, applies `..` without ever going above the root, and
/// strips the leading `/`. An empty result means the rootfs itself.
pub(crate) fn clean_relative(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// `/proc/self/fd/<fd>` as a C string, without allocating.
pub(crate) struct ProcFdPath {
    buf: [u8; 40],
}

impl ProcFdPath {
    pub(crate) fn new(fd: RawFd) -> Self {
        const PREFIX: &[u8] = b"/proc/self/fd/";
        let mut buf = [0u8; 40];
        buf[..PREFIX.len()].copy_from_slice(PREFIX);
        let mut digits = [0u8; 12];
        let mut n = fd.unsigned_abs();
        let mut len = 0;
        loop {
            // n % 10 < 10, so the cast cannot truncate.
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            buf[PREFIX.len() + i] = digits[len - 1 - i];
        }
        // buf[PREFIX.len() + len] is already the terminating NUL.
        Self { buf }
    }

    pub(crate) fn as_cstr(&self) -> &CStr {
        // The buffer always holds a NUL after the digits (40 > 14 + 10 + 1).
        CStr::from_bytes_until_nul(&self.buf).unwrap_or(c"/proc/self/fd/")
    }
}

fn path_flags(extra: OFlag) -> OFlag {
    OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | extra
}

/// Opens `rel` (relative, cleaned) inside `root` as an `O_PATH` fd,
/// following symlinks as if `root` were `/`.
pub(crate) fn open_in_root(
    root: BorrowedFd<'_>,
    rel: &Path,
    extra: OFlag,
) -> Result<OwnedFd, Errno> {
    if rel.as_os_str().is_empty() {
        return openat(root, c".", path_flags(extra), Mode::empty());
    }
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        // O_NOFOLLOW is not wanted here: RESOLVE_IN_ROOT handles symlinks.
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | extra)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let mut attempts = 0;
        loop {
            match openat2(root, rel, how) {
                // EAGAIN: a concurrent rename raced with `..` resolution.
                Err(Errno::EAGAIN) if attempts < 16 => attempts += 1,
                Err(Errno::ENOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    break;
                }
                other => return other,
            }
        }
    }
    walk_in_root(root, rel, extra, None)
}

/// What to create when a path is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
}

/// Userspace `RESOLVE_IN_ROOT`: one component at a time, never letting the
/// kernel follow a symlink, restarting absolute targets at `root` and never
/// letting `..` climb above it. With `create`, missing components are made
/// on the way (directories, mode 0755; the last one as `create` says, a file
/// being empty with mode 0644), including the targets of dangling symlinks,
/// which therefore also end up inside the root.
pub(crate) fn walk_in_root(
    root: BorrowedFd<'_>,
    rel: &Path,
    extra: OFlag,
    create: Option<Kind>,
) -> Result<OwnedFd, Errno> {
    // Directories entered so far, below root.
    let mut stack: Vec<OwnedFd> = Vec::new();
    // Components still to walk, the next one last.
    let mut pending: Vec<Vec<u8>> = rel
        .components()
        .rev()
        .map(|c| c.as_os_str().as_bytes().to_vec())
        .collect();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        match name.as_slice() {
            b"" | b"." | b"/" => continue,
            b".." => {
                stack.pop();
                continue;
            }
            _ => {}
        }
        let name = OsStr::from_bytes(&name);
        let cur = stack.last().map_or(root, |f| f.as_fd());
        let fd = match openat(cur, name, path_flags(OFlag::empty()), Mode::empty()) {
            Err(Errno::ENOENT) if create.is_some() => {
                let last = pending
                    .iter()
                    .all(|c| matches!(c.as_slice(), b"" | b"." | b"/"));
                let made = if last && create == Some(Kind::File) {
                    let flags = OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_WRONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC;
                    openat(cur, name, flags, Mode::from_bits_truncate(0o644)).map(drop)
                } else {
                    mkdirat(cur, name, Mode::from_bits_truncate(0o755))
                };
                match made {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                openat(cur, name, path_flags(OFlag::empty()), Mode::empty())?
            }
            other => other?,
        };
        let st = fstat(&fd)?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFLNK {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Errno::ELOOP);
            }
            let target = readlinkat(cur, name)?;
            let target = Path::new(&target);
            if target.is_absolute() {
                stack.clear();
            }
            for c in target.components().rev() {
                pending.push(c.as_os_str().as_bytes().to_vec());
            }
            continue;
        }
        if !pending.is_empty() && kind != SFlag::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
        stack.push(fd);
    }
    match stack.pop() {
        Some(fd) if extra.contains(OFlag::O_DIRECTORY) => {
            let st = fstat(&fd)?;
            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
                return Err(Errno::ENOTDIR);
            }
            Ok(fd)
        }
        Some(fd) => Ok(fd),
        None => openat(root, c".", path_flags(extra), Mode::empty()),
    }
}

/// Opens `rel` inside `root`, creating what is missing (see
/// [`walk_in_root`]). The common case, an existing path, costs one
/// `openat2`.
pub(crate) fn ensure_in_root(
    root: BorrowedFd<'_>,
    rel: &Path,
    kind: Kind,
) -> Result<OwnedFd, Errno> {
    match open_in_root(root, rel, OFlag::empty()) {
        Err(Errno::ENOENT) => walk_in_root(root, rel, OFlag::empty(), Some(kind)),
        other => other,
    }
}

/// The raw fd as a `/proc/self/fd` path, for mount(2) targets.
pub(crate) fn fd_path(fd: &impl AsRawFd) -> ProcFdPath {
    ProcFdPath::new(fd.as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_clean_relative_never_climbs() {
        assert_eq!(clean_relative(Path::new("/a/./b/../c")), Path::new("a/c"));
        assert_eq!(clean_relative(Path::new("/../../etc")), Path::new("etc"));
        assert_eq!(clean_relative(Path::new("/")), Path::new(""));
    }

    #[test]
    fn rootfs_proc_fd_path() {
        assert_eq!(ProcFdPath::new(0).as_cstr(), c"/proc/self/fd/0");
        assert_eq!(ProcFdPath::new(1234567).as_cstr(), c"/proc/self/fd/1234567");
        assert_eq!(
            ProcFdPath::new(i32::MAX).as_cstr().to_bytes().len(),
            "/proc/self/fd/".len() + 10
        );
    }
}
