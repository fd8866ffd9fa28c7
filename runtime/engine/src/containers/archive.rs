//! `docker cp`: stat, read (as tar) and write (from tar) paths of a
//! container, running or not, from the host side.
//!
//! A container path is cleaned lexically, mapped to the volume or bind
//! mount that holds it (else the container's root filesystem), and then
//! resolved inside that root with `openat2(RESOLVE_IN_ROOT)`: `..` and
//! symlinks (absolute or relative) never lead out of it. The last component
//! is not followed (a symlink is copied as a symlink), as Docker does. The
//! tar is written from directory fds ([`berth_snapshot::export_entry`]) and
//! extracted with the layer extractor, which resolves every parent in-root
//! the same way.
//!
//! Known limit: a symlink inside a volume is resolved inside that volume,
//! not across the container's other mounts.

use std::ffi::{CString, OsStr};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, FileStat};

use super::error::ContainerError;
use super::mounts::mount_for;
use super::types::ContainerRecord;
use super::ContainerService;

type Result<T, E = ContainerError> = std::result::Result<T, E>;

/// What the `X-Docker-Container-Path-Stat` header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    /// Go's `os.FileMode` bits (what the docker CLI decodes).
    pub mode: u32,
    /// RFC 3339 with nanoseconds.
    pub mtime: String,
    /// For a symlink: its target as a container path.
    pub link_target: String,
}

impl PathStat {
    pub fn is_dir(&self) -> bool {
        self.mode & GO_MODE_DIR != 0
    }
}

const GO_MODE_DIR: u32 = 1 << 31;

/// Unix `st_mode` to Go's `os.FileMode`.
fn go_mode(st_mode: u32) -> u32 {
    let mut mode = st_mode & 0o777;
    if st_mode & libc::S_ISUID != 0 {
        mode |= 1 << 23;
    }
    if st_mode & libc::S_ISGID != 0 {
        mode |= 1 << 22;
    }
    if st_mode & libc::S_ISVTX != 0 {
        mode |= 1 << 20;
    }
    mode |= match st_mode & libc::S_IFMT {
        libc::S_IFDIR => GO_MODE_DIR,
        libc::S_IFLNK => 1 << 27,
        libc::S_IFIFO => 1 << 25,
        libc::S_IFSOCK => 1 << 24,
        libc::S_IFBLK => 1 << 26,
        libc::S_IFCHR => (1 << 26) | (1 << 21),
        _ => 0,
    };
    mode
}

/// Opens `rel` (relative) inside `root` with RESOLVE_IN_ROOT; `.` when empty.
fn open_in_root(root: BorrowedFd<'_>, rel: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let mut attempts = 0;
    loop {
        match openat2(root, rel, how) {
            // A concurrent rename raced with `..` resolution.
            Err(Errno::EAGAIN) if attempts < 16 => attempts += 1,
            other => return other,
        }
    }
}

fn open_root(path: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(io::Error::from)
}

fn proc_fd(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// A container path after cleaning: the parts the archive endpoints need.
struct CleanPath {
    /// Absolute, cleaned (`/a/b`).
    path: String,
    /// The path ended in `/.` (copy a directory's content).
    dot: bool,
}

fn clean(path: &str) -> CleanPath {
    let dot = path.ends_with("/.") || path == ".";
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            n => parts.push(n),
        }
    }
    CleanPath {
        path: format!("/{}", parts.join("/")),
        dot,
    }
}

/// Where a container path lives on the host.
struct Located {
    /// The host directory that is `/` for the resolution.
    root: PathBuf,
    /// The path below `root` (relative, cleaned).
    rel: PathBuf,
    read_only: bool,
    /// On a volume or bind mount (not the root filesystem).
    on_mount: bool,
}

/// A path ready to be archived: its parent directory and its name there.
pub struct ArchiveSource {
    parent: OwnedFd,
    name: CString,
    archive_name: Vec<u8>,
    pub stat: PathStat,
}

impl ArchiveSource {
    /// Writes the tar stream (blocking).
    pub fn write_to(self, writer: impl io::Write) -> Result<(), berth_snapshot::ExportError> {
        berth_snapshot::export_entry(self.parent.as_fd(), &self.name, &self.archive_name, writer)
    }
}

impl ContainerService {
    /// Maps a container path to a host root and a path inside it; mounts
    /// the container's root filesystem when it is not (a stopped container
    /// after a reboot).
    fn locate(&self, record: &ContainerRecord, dir: &Path, path: &str) -> Result<Located> {
        let hc = &record.config.host_config;
        for t in hc.tmpfs.keys() {
            if Path::new(path).starts_with(t) {
                return Err(ContainerError::InvalidParameter(format!(
                    "{path} is on the tmpfs mount {t}, which only exists inside the container: copying to or from it is not supported"
                )));
            }
        }
        if let Some((m, rest)) = mount_for(&record.mounts, path) {
            if m.kind == "tmpfs" {
                return Err(ContainerError::InvalidParameter(format!(
                    "{path} is on the tmpfs mount {}, which only exists inside the container: copying to or from it is not supported",
                    m.destination
                )));
            }
            return Ok(Located {
                root: PathBuf::from(&m.source),
                rel: rest,
                read_only: !m.rw,
                on_mount: true,
            });
        }
        let rootfs = dir.join("rootfs");
        if !berth_snapshot::is_mount_point(&rootfs) {
            match &record.rootfs {
                Some(m) => berth_snapshot::mount(m, &rootfs)?,
                None => {
                    return Err(ContainerError::Conflict(format!(
                        "container {} has no root filesystem",
                        record.id
                    )))
                }
            }
        }
        Ok(Located {
            root: rootfs,
            rel: PathBuf::from(path.trim_start_matches('/')),
            read_only: hc.read_only_rootfs,
            on_mount: false,
        })
    }

    /// The parent directory fd and the last component of `path`.
    fn open_parent(
        &self,
        reference: &str,
        path: &str,
    ) -> Result<(ContainerRecord, CleanPath, OwnedFd, CString)> {
        let (_, dir, record) = self.load(reference)?;
        let cp = clean(path);
        let not_found = || ContainerError::NoSuchPath {
            container: reference.to_string(),
            path: path.to_string(),
        };
        let located = self.locate(&record, &dir, &cp.path)?;
        let root = open_root(&located.root).map_err(ContainerError::io(format!(
            "opening {}",
            located.root.display()
        )))?;
        let (parent_rel, name) = match (cp.dot, located.rel.parent(), located.rel.file_name()) {
            (false, Some(parent), Some(name)) => (parent.to_path_buf(), name.to_os_string()),
            _ => (located.rel.clone(), OsStr::new(".").to_os_string()),
        };
        let parent = open_in_root(
            root.as_fd(),
            &parent_rel,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        )
        .map_err(|e| match e {
            Errno::ENOENT | Errno::ENOTDIR => not_found(),
            e => ContainerError::io(format!("resolving {path}"))(e.into()),
        })?;
        let name = CString::new(name.as_bytes())
            .map_err(|_| ContainerError::InvalidParameter(format!("invalid path {path:?}")))?;
        Ok((record, cp, parent, name))
    }

    /// Stats a container path (`HEAD /containers/{id}/archive`).
    pub fn archive_stat(&self, reference: &str, path: &str) -> Result<PathStat> {
        self.archive_source(reference, path).map(|s| s.stat)
    }

    /// Opens a container path for `GET /containers/{id}/archive`.
    pub fn archive_source(&self, reference: &str, path: &str) -> Result<ArchiveSource> {
        let (_, cp, parent, name) = self.open_parent(reference, path)?;
        let st: FileStat = fstatat(
            parent.as_fd(),
            name.as_c_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| match e {
            Errno::ENOENT | Errno::ENOTDIR => ContainerError::NoSuchPath {
                container: reference.to_string(),
                path: path.to_string(),
            },
            e => ContainerError::io(format!("stat {path}"))(e.into()),
        })?;
        let base = if cp.dot {
            ".".to_string()
        } else {
            cp.path
                .rsplit('/')
                .next()
                .filter(|b| !b.is_empty())
                .unwrap_or("/")
                .to_string()
        };
        let mut link_target = String::new();
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            if let Ok(target) = nix::fcntl::readlinkat(parent.as_fd(), name.as_c_str()) {
                let target = target.to_string_lossy().into_owned();
                let parent_path = cp.path.rsplit_once('/').map_or("", |(p, _)| p);
                link_target = if target.starts_with('/') {
                    clean(&target).path
                } else {
                    clean(&format!("{parent_path}/{target}")).path
                };
            }
        }
        let stat = PathStat {
            name: base.clone(),
            size: st.st_size,
            mode: go_mode(st.st_mode),
            mtime: super::store::format_time(
                st.st_mtime
                    .saturating_mul(1_000_000_000)
                    .saturating_add(st.st_mtime_nsec),
            ),
            link_target,
        };
        let archive_name = if base == "/" { ".".into() } else { base };
        Ok(ArchiveSource {
            parent,
            name,
            archive_name: archive_name.into_bytes(),
            stat,
        })
    }

    /// Extracts a tar stream into the directory `path` of the container
    /// (`PUT /containers/{id}/archive`); blocking.
    pub fn archive_extract(
        &self,
        reference: &str,
        path: &str,
        reader: impl Read + Send,
    ) -> Result<()> {
        let (_, dir, record) = self.load(reference)?;
        let cp = clean(path);
        let located = self.locate(&record, &dir, &cp.path)?;
        if located.read_only {
            return Err(ContainerError::InvalidParameter(if located.on_mount {
                "mounted volume is marked read-only".into()
            } else {
                "container rootfs is marked read-only".into()
            }));
        }
        let root = open_root(&located.root).map_err(ContainerError::io(format!(
            "opening {}",
            located.root.display()
        )))?;
        let target = open_in_root(
            root.as_fd(),
            &located.rel,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        )
        .map_err(|e| match e {
            Errno::ENOENT => ContainerError::NoSuchPath {
                container: reference.to_string(),
                path: path.to_string(),
            },
            Errno::ENOTDIR => {
                ContainerError::InvalidParameter("extraction point is not a directory".into())
            }
            e => ContainerError::io(format!("resolving {path}"))(e.into()),
        })?;
        extract_into(&target, reader).map_err(|e| {
            ContainerError::InvalidParameter(format!(
                "extracting the archive into {path}: {}",
                error_chain(&e)
            ))
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Unpacks a tar into the directory `target` (an fd already resolved
/// in-root), over what is there.
fn extract_into(
    target: &OwnedFd,
    reader: impl Read + Send,
) -> Result<(), berth_snapshot::UnpackError> {
    let opts = berth_snapshot::UnpackOptions {
        whiteouts: berth_snapshot::WhiteoutMode::Delete,
        pipelined: false,
        ..Default::default()
    };
    berth_snapshot::unpack_layer(reader, "", &proc_fd(target), &opts).map(drop)
}

/// Copies the directory `container_path` of `rootfs` (resolved in-root)
/// into `target` with its owner and mode; nothing when it does not exist
/// or is not a directory.
pub(super) fn copy_dir_in_root(
    rootfs: &Path,
    container_path: &str,
    target: &Path,
) -> io::Result<()> {
    let root = open_root(rootfs)?;
    let cp = clean(container_path);
    let source = match open_in_root(
        root.as_fd(),
        Path::new(cp.path.trim_start_matches('/')),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let st = nix::sys::stat::fstat(&source)?;
    let (mut tx, rx) = std::os::unix::net::UnixStream::pair()?;
    let source_path = proc_fd(&source);
    let writer = std::thread::spawn(move || {
        let result = berth_snapshot::export_tar(&source_path, &mut tx);
        drop(tx);
        result
    });
    let dest = open_root(target)?;
    let unpacked = extract_into(&dest, rx);
    let exported = writer
        .join()
        .map_err(|_| io::Error::other("the copy thread panicked"))?;
    exported.map_err(|e| io::Error::other(error_chain(&e)))?;
    unpacked.map_err(|e| io::Error::other(error_chain(&e)))?;
    nix::unistd::fchown(&dest, Some(st.st_uid.into()), Some(st.st_gid.into()))?;
    nix::sys::stat::fchmod(
        &dest,
        nix::sys::stat::Mode::from_bits_truncate(st.st_mode & 0o7777),
    )?;
    drop(source);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_and_modes() {
        let c = clean("/a/../../etc/./x/");
        assert_eq!((c.path.as_str(), c.dot), ("/etc/x", false));
        let c = clean("/data/.");
        assert_eq!((c.path.as_str(), c.dot), ("/data", true));
        assert_eq!(clean("rel/x").path, "/rel/x");
        assert_eq!(go_mode(libc::S_IFDIR | 0o755), GO_MODE_DIR | 0o755);
        assert_eq!(go_mode(libc::S_IFREG | 0o644), 0o644);
        assert_eq!(go_mode(libc::S_IFLNK | 0o777), (1 << 27) | 0o777);
    }

    #[test]
    fn copy_stays_inside_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("data/sub")).expect("mkdir");
        std::fs::write(root.join("data/sub/f"), b"hi").expect("write");
        std::os::unix::fs::symlink("/", root.join("up")).expect("symlink");
        let target = dir.path().join("vol");
        std::fs::create_dir(&target).expect("mkdir");
        copy_dir_in_root(&root, "/data", &target).expect("copy");
        assert_eq!(std::fs::read(target.join("sub/f")).expect("read"), b"hi");
        // `/up/..` is the root itself, never the host's /.
        let fd = open_root(&root).expect("root");
        let got = open_in_root(fd.as_fd(), Path::new("up/../up/data"), OFlag::O_RDONLY)
            .expect("resolves in root");
        let st = nix::sys::stat::fstat(&got).expect("fstat");
        let want = std::fs::metadata(root.join("data")).expect("meta");
        assert_eq!(st.st_ino, std::os::unix::fs::MetadataExt::ino(&want));
    }
}
