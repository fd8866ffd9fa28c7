//! Mount descriptions returned by the snapshotter, and helpers that perform them.
//!
//! Overlay mounts use the new mount API with one `lowerdir+` per layer (kernel 6.8+), which has
//! no limit on the total length of the layer list. On older kernels the classic `mount(2)` data
//! string is used; when it would exceed a page, and all lower dirs share one parent directory
//! (the snapshotter's short `l/<id>` links do), a forked child `chdir`s there and mounts with
//! relative names, as the data string is resolved against the mounting process' cwd.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

/// Errors from [`mount`] / [`unmount`].
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mounting {target:?} ({what}) failed")]
    Mount {
        target: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("unmounting {target:?} failed")]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("overlay option string too long ({0} bytes) and the lower dirs have no common parent")]
    TooLong(usize),
    #[error("invalid mount path {0:?}")]
    BadPath(PathBuf),
}

/// How to assemble a root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Mounts {
    /// An overlay: `lowerdirs` top-most first. Without `upperdir` it is read-only.
    Overlay {
        lowerdirs: Vec<PathBuf>,
        upperdir: Option<PathBuf>,
        workdir: Option<PathBuf>,
    },
    /// A bind mount of a single directory.
    Bind { source: PathBuf, readonly: bool },
}

impl Mounts {
    /// The filesystem type, as in `mount -t`.
    pub fn fstype(&self) -> &'static str {
        match self {
            Mounts::Overlay { .. } => "overlay",
            Mounts::Bind { .. } => "bind",
        }
    }

    /// The mount source, as in `/proc/mounts`.
    pub fn source(&self) -> PathBuf {
        match self {
            Mounts::Overlay { .. } => PathBuf::from("overlay"),
            Mounts::Bind { source, .. } => source.clone(),
        }
    }

    /// containerd-style option list (`lowerdir=a:b`, `upperdir=…`, `workdir=…`, or `rbind`,
    /// `ro`), for a runtime that performs the mount itself.
    pub fn options(&self) -> Vec<String> {
        match self {
            Mounts::Overlay {
                lowerdirs,
                upperdir,
                workdir,
            } => {
                let mut o = vec![format!(
                    "lowerdir={}",
                    lowerdirs
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                )];
                if let Some(u) = upperdir {
                    o.push(format!("upperdir={}", u.display()));
                }
                if let Some(w) = workdir {
                    o.push(format!("workdir={}", w.display()));
                }
                o
            }
            Mounts::Bind { readonly, .. } => {
                let mut o = vec!["rbind".to_string()];
                o.push(if *readonly { "ro" } else { "rw" }.to_string());
                o
            }
        }
    }

    /// Whether the mounted tree is read-only.
    pub fn readonly(&self) -> bool {
        match self {
            Mounts::Overlay { upperdir, .. } => upperdir.is_none(),
            Mounts::Bind { readonly, .. } => *readonly,
        }
    }
}

fn cpath(p: &Path) -> Result<CString, MountError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| MountError::BadPath(p.to_path_buf()))
}

fn check_overlay_path(p: &Path) -> Result<(), MountError> {
    let b = p.as_os_str().as_bytes();
    if b.is_empty() || b.iter().any(|c| matches!(c, b':' | b',' | b'\\' | 0)) {
        return Err(MountError::BadPath(p.to_path_buf()));
    }
    Ok(())
}

/// Whether overlay may still take its layers through the new mount API
/// (`lowerdir+`, kernel 6.5+); cleared the first time the kernel refuses it.
static NEW_OVERLAY_API: AtomicBool = AtomicBool::new(true);

/// Mounts `m` on `target` (an existing directory).
pub fn mount(m: &Mounts, target: &Path) -> Result<(), MountError> {
    match m {
        Mounts::Bind { source, readonly } => bind(source, target, *readonly),
        Mounts::Overlay { .. } if !NEW_OVERLAY_API.load(Ordering::Relaxed) => {
            mount_overlay_legacy(m, target)
        }
        Mounts::Overlay { .. } => match mount_overlay_fsconfig(m, target) {
            Ok(()) => Ok(()),
            Err(FsconfigError::Unsupported) => {
                // A property of the running kernel: later mounts go the legacy way at
                // once (and the kernel does not log its refusal for each of them).
                NEW_OVERLAY_API.store(false, Ordering::Relaxed);
                mount_overlay_legacy(m, target)
            }
            Err(FsconfigError::Failed(what, source)) => Err(MountError::Mount {
                target: target.to_path_buf(),
                what,
                source,
            }),
        },
    }
}

/// Mounts an overlay with the classic `mount(2)` data string (exposed for tests; [`mount`]
/// uses it only when the new mount API is missing).
#[doc(hidden)]
pub fn mount_overlay_legacy(m: &Mounts, target: &Path) -> Result<(), MountError> {
    let Mounts::Overlay {
        lowerdirs,
        upperdir,
        workdir,
    } = m
    else {
        return mount(m, target);
    };
    for p in lowerdirs
        .iter()
        .chain(upperdir.iter())
        .chain(workdir.iter())
    {
        check_overlay_path(p)?;
    }
    let page = page_size();
    let data = m.options().join(",");
    let flags = if upperdir.is_none() {
        libc::MS_RDONLY
    } else {
        0
    };
    let ctarget = cpath(target)?;
    if data.len() < page {
        let cdata = CString::new(data).map_err(|_| MountError::BadPath(target.to_path_buf()))?;
        return sys_mount(c"overlay", &ctarget, c"overlay", flags, Some(&cdata)).map_err(
            |source| MountError::Mount {
                target: target.to_path_buf(),
                what: "overlay",
                source,
            },
        );
    }
    // Too long: mount from the lower dirs' common parent with relative names.
    let parent = lowerdirs
        .first()
        .and_then(|p| p.parent())
        .ok_or(MountError::TooLong(data.len()))?;
    if !lowerdirs.iter().all(|p| p.parent() == Some(parent)) {
        return Err(MountError::TooLong(data.len()));
    }
    let rel: Vec<String> = lowerdirs
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    let mut o = vec![format!("lowerdir={}", rel.join(":"))];
    if let Some(u) = upperdir {
        o.push(format!("upperdir={}", u.display()));
    }
    if let Some(w) = workdir {
        o.push(format!("workdir={}", w.display()));
    }
    let data = o.join(",");
    if data.len() >= page {
        return Err(MountError::TooLong(data.len()));
    }
    let cdata = CString::new(data).map_err(|_| MountError::BadPath(target.to_path_buf()))?;
    let cparent = cpath(parent)?;
    mount_in_child(&cparent, &ctarget, &cdata, flags).map_err(|source| MountError::Mount {
        target: target.to_path_buf(),
        what: "overlay (relative lowerdirs)",
        source,
    })
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// Forks a child that chdirs to `dir` and mounts; the mount lands in our (shared) namespace.
fn mount_in_child(
    dir: &CString,
    target: &CString,
    data: &CString,
    flags: libc::c_ulong,
) -> io::Result<()> {
    // SAFETY: between fork and _exit the child only makes raw syscalls (chdir, mount, _exit)
    // on memory prepared before the fork; no allocation or locking happens there.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; async-signal-safe calls only, on valid NUL-terminated strings.
        unsafe {
            if libc::chdir(dir.as_ptr()) != 0 {
                libc::_exit(*libc::__errno_location());
            }
            let r = libc::mount(
                c"overlay".as_ptr(),
                target.as_ptr(),
                c"overlay".as_ptr(),
                flags,
                data.as_ptr().cast(),
            );
            libc::_exit(if r == 0 { 0 } else { *libc::__errno_location() });
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out pointer; `pid` is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else if libc::WIFEXITED(status) {
        Err(io::Error::from_raw_os_error(libc::WEXITSTATUS(status)))
    } else {
        Err(io::Error::other("mount helper child died"))
    }
}

fn sys_mount(
    source: &std::ffi::CStr,
    target: &std::ffi::CStr,
    fstype: &std::ffi::CStr,
    flags: libc::c_ulong,
    data: Option<&std::ffi::CStr>,
) -> io::Result<()> {
    let d = data.map_or(std::ptr::null(), |d| d.as_ptr().cast());
    // SAFETY: all strings are NUL-terminated and outlive the call; `d` is null or valid.
    let r = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), flags, d) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn bind(source: &Path, target: &Path, readonly: bool) -> Result<(), MountError> {
    let s = cpath(source)?;
    let t = cpath(target)?;
    let err = |what, source| MountError::Mount {
        target: target.to_path_buf(),
        what,
        source,
    };
    sys_mount(&s, &t, c"none", libc::MS_BIND | libc::MS_REC, None).map_err(|e| err("bind", e))?;
    if readonly {
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        if let Err(e) = sys_mount(c"none", &t, c"none", flags, None) {
            let _ = unmount(target);
            return Err(err("read-only remount", e));
        }
    }
    Ok(())
}

enum FsconfigError {
    /// No new mount API or no `lowerdir+`: use the legacy path.
    Unsupported,
    Failed(&'static str, io::Error),
}

fn raw_fd(ret: libc::c_long) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a non-negative return of these syscalls is a new fd we exclusively own.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(ret as std::os::fd::RawFd) })
    }
}

fn fsconfig_str(
    fd: &std::os::fd::OwnedFd,
    key: &std::ffi::CStr,
    value: &std::ffi::CStr,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: strings are NUL-terminated and outlive the call; `fd` is an fs context fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fd.as_raw_fd(),
            libc::FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn mount_overlay_fsconfig(m: &Mounts, target: &Path) -> Result<(), FsconfigError> {
    use std::os::fd::AsRawFd;
    let Mounts::Overlay {
        lowerdirs,
        upperdir,
        workdir,
    } = m
    else {
        return Err(FsconfigError::Unsupported);
    };
    let fail = |what| move |e| FsconfigError::Failed(what, e);
    let cp = |p: &Path| {
        check_overlay_path(p)
            .and_then(|_| cpath(p))
            .map_err(|_| FsconfigError::Failed("path", io::ErrorKind::InvalidInput.into()))
    };
    // SAFETY: the name is NUL-terminated; fsopen returns a new fd or -1.
    let fs = raw_fd(unsafe {
        libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), libc::FSOPEN_CLOEXEC)
    })
    .map_err(|_| FsconfigError::Unsupported)?;
    fsconfig_str(&fs, c"source", c"overlay").map_err(fail("fsconfig source"))?;
    for (i, l) in lowerdirs.iter().enumerate() {
        let c = cp(l)?;
        if let Err(e) = fsconfig_str(&fs, c"lowerdir+", &c) {
            if i == 0 && e.raw_os_error() == Some(libc::EINVAL) {
                return Err(FsconfigError::Unsupported);
            }
            return Err(FsconfigError::Failed("fsconfig lowerdir+", e));
        }
    }
    if let Some(u) = upperdir {
        fsconfig_str(&fs, c"upperdir", &cp(u)?).map_err(fail("fsconfig upperdir"))?;
    }
    if let Some(w) = workdir {
        fsconfig_str(&fs, c"workdir", &cp(w)?).map_err(fail("fsconfig workdir"))?;
    }
    // SAFETY: plain syscall on our fs context fd with null key/value, as CMD_CREATE requires.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        // Before 6.5 overlay parsed options the legacy way: fsconfig accepts any key and
        // `lowerdir+` is only rejected here (seen on Debian 12's 6.1 kernel in the VM).
        if e.raw_os_error() == Some(libc::EINVAL) {
            return Err(FsconfigError::Unsupported);
        }
        return Err(FsconfigError::Failed("fsconfig create", e));
    }
    let attrs = if upperdir.is_none() {
        libc::MOUNT_ATTR_RDONLY
    } else {
        0
    };
    // SAFETY: plain syscall on our fs context fd.
    let mnt = raw_fd(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attrs as libc::c_uint,
        )
    })
    .map_err(fail("fsmount"))?;
    let t = cpath(target)
        .map_err(|_| FsconfigError::Failed("path", io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: strings are NUL-terminated; `mnt` is a detached mount fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(FsconfigError::Failed(
            "move_mount",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Whether `path` is the root of a mount. Comparing device numbers with the parent misses bind
/// mounts within one filesystem (the copy-mode rootfs, volumes on the data disk), so this asks
/// the kernel (`STATX_ATTR_MOUNT_ROOT`, Linux 5.8+) and falls back to `/proc/self/mountinfo`.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(c) = cpath(path) else {
        return false;
    };
    // SAFETY: an all-zero statx is a valid out-buffer.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `stx` is a writable statx for the call.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            0,
            &mut stx,
        )
    };
    if r == 0 && stx.stx_attributes_mask & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0 {
        return stx.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0;
    }
    let Ok(canonical) = std::fs::canonicalize(path) else {
        return false;
    };
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|info| {
            info.lines()
                .filter_map(|l| l.split(' ').nth(4))
                .any(|mp| unescape_mountinfo(mp) == canonical)
        })
        .unwrap_or(false)
}

/// Mount points in mountinfo escape space, tab, newline and backslash as octal.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

/// Unmounts every mount stacked on `target` (lazily when busy), so the directory can be removed.
pub fn unmount_all(target: &Path) -> Result<(), MountError> {
    while is_mount_point(target) {
        unmount(target)?;
    }
    Ok(())
}

/// Unmounts `target`; lazily (MNT_DETACH) when busy. Not being a mount point is not an error.
pub fn unmount(target: &Path) -> Result<(), MountError> {
    let t = cpath(target)?;
    // SAFETY: `t` is NUL-terminated and outlives the call.
    let r = unsafe { libc::umount2(t.as_ptr(), 0) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
        Some(libc::EBUSY) => {
            // SAFETY: as above.
            let r = unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
            if r == 0 {
                Ok(())
            } else {
                Err(MountError::Unmount {
                    target: target.to_path_buf(),
                    source: io::Error::last_os_error(),
                })
            }
        }
        _ => Err(MountError::Unmount {
            target: target.to_path_buf(),
            source: e,
        }),
    }
}

/// Unmounts a target when dropped (for tests and short-lived mounts).
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = unmount(&self.0);
    }
}

#[cfg(test)]
mod mount_point_tests {
    use super::*;

    #[test]
    fn mount_points_and_mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b/c"), PathBuf::from("/a b/c"));
        assert!(is_mount_point(Path::new("/proc")));
        assert!(!is_mount_point(Path::new("/proc/self")));
    }
}
