//! The OCI `cgroup` mount type.
//!
//! - cgroup v2: a `cgroup2` mount (in a new cgroup namespace it shows the
//!   container's own subtree); if the kernel refuses it outside a cgroup
//!   namespace, a bind of the process's own cgroup directory instead.
//! - cgroup v1: a tmpfs at the destination, and in it one directory per host
//!   hierarchy: a fresh `cgroup` mount when the container has its own cgroup
//!   namespace, otherwise a bind of the process's cgroup directory in that
//!   hierarchy. Co-mounted controllers get symlinks (`cpu -> cpu,cpuacct`).

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{mkdirat, Mode};
use nix::unistd::symlinkat;

use super::mounts::{apply_after_mount, path_error, Mounter};
use super::options::{MountOptions, BIND_REMOUNT_FLAGS};
use super::paths::{ensure_in_root, fd_path, open_in_root, Kind};
use super::{mountinfo, RootfsError};
use crate::cgroups::CgroupMode;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const PROC_SELF_CGROUP: &str = "/proc/self/cgroup";

/// One host cgroup hierarchy mounted under `/sys/fs/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    /// Directory name under `/sys/fs/cgroup` ("cpu,cpuacct", "systemd", "unified").
    pub name: String,
    /// A cgroup2 hierarchy (the hybrid layout's "unified").
    pub v2: bool,
    /// Controllers and `name=` option, as mount data ("cpu,cpuacct", "name=systemd").
    pub controllers: String,
    /// Host directory to bind when there is no cgroup namespace: this
    /// process's cgroup in that hierarchy.
    pub bind_source: PathBuf,
}

/// Super options of a v1 cgroup mount that are not controllers.
fn is_controller(opt: &str) -> bool {
    if opt.starts_with("name=") {
        return true;
    }
    !opt.contains('=')
        && !matches!(
            opt,
            "rw" | "ro"
                | "xattr"
                | "noprefix"
                | "clone_children"
                | "cpuset_v2_mode"
                | "favordynmods"
                | "nsdelegate"
                | "memory_localevents"
                | "memory_recursiveprot"
                | "none"
        )
}

/// Host hierarchies from mountinfo text and `/proc/self/cgroup` text.
pub(crate) fn parse_hierarchies(mountinfo_text: &str, self_cgroup: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for e in mountinfo::entries(mountinfo_text) {
        let v2 = match e.fstype {
            "cgroup" => false,
            "cgroup2" => true,
            _ => continue,
        };
        let mount_point = mountinfo::unescape(e.mount_point);
        let Some(name) = mount_point
            .strip_prefix(CGROUP_ROOT)
            .and_then(|n| n.strip_prefix('/'))
            .filter(|n| !n.is_empty() && !n.contains('/'))
        else {
            continue;
        };
        if out.iter().any(|h| h.name == name) {
            continue;
        }
        let controllers = if v2 {
            String::new()
        } else {
            let mut c = String::new();
            for opt in e.super_options.split(',').filter(|o| is_controller(o)) {
                if !c.is_empty() {
                    c.push(',');
                }
                c.push_str(opt);
            }
            c
        };
        // Our own cgroup in this hierarchy, relative to the mount's root.
        let own = self_cgroup.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let id = parts.next()?;
            let ctrls = parts.next()?;
            let path = parts.next()?;
            let matches = if v2 {
                id == "0" && ctrls.is_empty()
            } else {
                !ctrls.is_empty() && ctrls == controllers
            };
            matches.then_some(path)
        });
        let root = mountinfo::unescape(e.root);
        let bind_source = match own.and_then(|p| Path::new(p).strip_prefix(root.as_ref()).ok()) {
            Some(rel) => Path::new(mount_point.as_ref()).join(rel),
            None => PathBuf::from(mount_point.as_ref()),
        };
        out.push(Hierarchy {
            name: name.to_string(),
            v2,
            controllers,
            bind_source,
        });
    }
    out
}

fn host_hierarchies() -> Result<Vec<Hierarchy>, RootfsError> {
    let text = mountinfo::read()?;
    let own =
        std::fs::read_to_string(PROC_SELF_CGROUP).map_err(|source| RootfsError::ReadProcFile {
            path: PROC_SELF_CGROUP,
            source,
        })?;
    Ok(parse_hierarchies(&text, &own))
}

/// Mounts a spec entry of type `cgroup`.
pub(crate) fn mount_cgroup(
    m: &mut Mounter<'_>,
    destination: &Path,
    rel: &Path,
    opts: &MountOptions,
) -> Result<(), RootfsError> {
    match m.ctx.cgroup_mode {
        CgroupMode::V2 => mount_v2(m, destination, rel, opts),
        CgroupMode::V1 => mount_v1(m, destination, rel, opts),
    }
}

fn mount_v2(
    m: &Mounter<'_>,
    destination: &Path,
    rel: &Path,
    opts: &MountOptions,
) -> Result<(), RootfsError> {
    let fd = ensure_in_root(m.root, rel, Kind::Dir).map_err(path_error(destination))?;
    let flags = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
    let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
    let mount_cgroup2 = |target: &std::ffi::CStr| {
        nix::mount::mount(Some("cgroup2"), target, Some("cgroup2"), flags, data)
    };
    let mut mounted = mount_cgroup2(fd_path(&fd).as_cstr());
    if mounted == Err(Errno::EBUSY) && m.ctx.new_cgroupns {
        // The kernel refuses to stack cgroup2 on a mount of the same superblock, which is
        // what the destination already is when /sys came with a cgroup2 mount below it.
        // A tmpfs in between takes the old mount out of the way (as crun does).
        let _ = nix::mount::mount(
            Some("tmpfs"),
            fd_path(&fd).as_cstr(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=755"),
        );
        drop(fd);
        let fd_again = ensure_in_root(m.root, rel, Kind::Dir).map_err(path_error(destination))?;
        mounted = mount_cgroup2(fd_path(&fd_again).as_cstr());
        return finish_v2(m, destination, rel, opts, mounted, fd_again);
    }
    finish_v2(m, destination, rel, opts, mounted, fd)
}

/// The rest of [`mount_v2`] once the cgroup2 mount was tried: the fallback without a cgroup
/// namespace, the error, or the propagation and recursive attributes.
fn finish_v2(
    m: &Mounter<'_>,
    destination: &Path,
    rel: &Path,
    opts: &MountOptions,
    mounted: nix::Result<()>,
    fd: std::os::fd::OwnedFd,
) -> Result<(), RootfsError> {
    match mounted {
        Ok(()) => {}
        // Without a cgroup namespace an unprivileged container may not mount
        // cgroup2; bind our own cgroup directory instead.
        Err(Errno::EPERM | Errno::EBUSY) if !m.ctx.new_cgroupns => {
            drop(fd);
            let own = std::fs::read_to_string(PROC_SELF_CGROUP).map_err(|source| {
                RootfsError::ReadProcFile {
                    path: PROC_SELF_CGROUP,
                    source,
                }
            })?;
            let path = own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or("/")
                .trim_start_matches('/');
            let source = Path::new(CGROUP_ROOT).join(path);
            let mut bind_opts = opts.clone();
            bind_opts.flags.insert(MsFlags::MS_BIND | MsFlags::MS_REC);
            return m.bind(&source, destination, rel, &bind_opts);
        }
        Err(source) => {
            return Err(RootfsError::Mount {
                source_path: PathBuf::from("cgroup2"),
                destination: destination.to_path_buf(),
                fstype: "cgroup2".to_string(),
                source,
            })
        }
    }
    drop(fd);
    if !opts.propagation.is_empty() || opts.has_rec_attrs() {
        let top = open_in_root(m.root, rel, OFlag::empty()).map_err(path_error(destination))?;
        apply_after_mount(&top, destination, opts)?;
    }
    Ok(())
}

fn entry_error<'a>(
    destination: &'a Path,
    entry: &'a str,
) -> impl FnOnce(Errno) -> RootfsError + 'a {
    move |source| RootfsError::CgroupEntry {
        destination: destination.to_path_buf(),
        entry: entry.to_string(),
        source,
    }
}

fn mount_v1(
    m: &mut Mounter<'_>,
    destination: &Path,
    rel: &Path,
    opts: &MountOptions,
) -> Result<(), RootfsError> {
    if m.hierarchies.is_none() {
        m.hierarchies = Some(host_hierarchies()?);
    }
    let hierarchies = m.hierarchies.as_deref().unwrap_or_default();

    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let fd = ensure_in_root(m.root, rel, Kind::Dir).map_err(path_error(destination))?;
    nix::mount::mount(
        Some("tmpfs"),
        fd_path(&fd).as_cstr(),
        Some("tmpfs"),
        base,
        Some("mode=755"),
    )
    .map_err(|source| RootfsError::Mount {
        source_path: PathBuf::from("tmpfs"),
        destination: destination.to_path_buf(),
        fstype: "tmpfs".to_string(),
        source,
    })?;
    drop(fd);
    let top = open_in_root(m.root, rel, OFlag::O_DIRECTORY).map_err(path_error(destination))?;

    // cgroupfs has no use for suid, devices or exec: always set those three,
    // so the bind remount never needs to look at the source's flags.
    let sub_flags = (opts.flags & BIND_REMOUNT_FLAGS) | base;
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    for h in hierarchies {
        let name = h.name.as_str();
        match mkdirat(&top, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(entry_error(destination, name)(e)),
        }
        let sub =
            openat(&top, name, dir_flags, Mode::empty()).map_err(entry_error(destination, name))?;
        if m.ctx.new_cgroupns {
            let (fstype, data) = if h.v2 {
                ("cgroup2", None)
            } else {
                ("cgroup", Some(h.controllers.as_str()))
            };
            mount(
                Some(fstype),
                fd_path(&sub).as_cstr(),
                Some(fstype),
                sub_flags,
                data,
            )
            .map_err(entry_error(destination, name))?;
        } else {
            mount(
                Some(h.bind_source.as_path()),
                fd_path(&sub).as_cstr(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(entry_error(destination, name))?;
            drop(sub);
            // Opening the name again crosses into the new bind mount.
            let bound = openat(&top, name, dir_flags, Mode::empty())
                .map_err(entry_error(destination, name))?;
            let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | sub_flags;
            mount(
                None::<&str>,
                fd_path(&bound).as_cstr(),
                None::<&str>,
                flags,
                None::<&str>,
            )
            .map_err(entry_error(destination, name))?;
        }
        if !h.v2 && h.controllers.contains(',') {
            for c in h.controllers.split(',') {
                if c == name || c.starts_with("name=") {
                    continue;
                }
                match symlinkat(name, &top, c) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(entry_error(destination, c)(e)),
                }
            }
        }
    }
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | base;
        mount(
            None::<&str>,
            fd_path(&top).as_cstr(),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(|source| RootfsError::Remount {
            destination: destination.to_path_buf(),
            flags,
            source,
        })?;
    }
    apply_after_mount(&top, destination, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_cgroup_hierarchies_from_hybrid_host() {
        let mi = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                  35 31 0:32 /docker /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                  40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n\
                  42 27 0:39 / /mnt/other rw - cgroup cgroup rw,pids\n";
        let own = "4:memory:/docker/c1\n3:cpu,cpuacct:/c1\n1:name=systemd:/x\n0::/u\n";
        let h = parse_hierarchies(mi, own);
        let names: Vec<_> = h.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["cpu,cpuacct", "memory", "systemd", "unified"]);
        assert_eq!(h[0].controllers, "cpu,cpuacct");
        assert_eq!(h[0].bind_source, Path::new("/sys/fs/cgroup/cpu,cpuacct/c1"));
        assert_eq!(h[1].bind_source, Path::new("/sys/fs/cgroup/memory/c1"));
        assert_eq!(h[2].controllers, "name=systemd");
        assert_eq!(h[2].bind_source, Path::new("/sys/fs/cgroup/systemd/x"));
        assert!(h[3].v2);
        assert_eq!(h[3].bind_source, Path::new("/sys/fs/cgroup/unified/u"));
    }
}
