//! Writes a root filesystem tree as a tar stream (`docker export`, and the copy fallback).
//!
//! Deterministic: entries sorted by name bytes, depth first; no root entry; ustar headers with a
//! PAX header only when needed (long names, large ids or sizes, xattrs). Hard links are found by
//! (device, inode) and written as link entries to the first path seen. The walk uses directory
//! fds and never follows symlinks. `trusted.overlay.*` xattrs are not exported.

use std::collections::HashMap;
use std::ffi::CStr;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use crate::mounts::{self, MountError, MountGuard, Mounts};
use crate::sys;

/// Errors from [`export_tar`] / [`export_mounts`].
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading {path:?} failed")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("writing the tar stream failed")]
    Write(#[source] io::Error),
    #[error("mounting the tree to export failed")]
    Mount(#[from] MountError),
    #[error("creating a temporary mount point failed")]
    TempDir(#[source] io::Error),
}

const BLOCK: usize = 512;

/// Writes the tree under `dir` to `writer` as a tar stream.
pub fn export_tar(dir: &Path, writer: impl Write) -> Result<(), ExportError> {
    let root = sys::open_dir(dir).map_err(|source| ExportError::Read {
        path: dir.display().to_string(),
        source,
    })?;
    let mut ex = Exporter {
        out: BufWriter::with_capacity(1 << 20, writer),
        links: HashMap::new(),
        buf: vec![0u8; 1 << 20],
        path: Vec::new(),
    };
    ex.walk(root.as_fd())?;
    ex.out
        .write_all(&[0u8; BLOCK * 2])
        .map_err(ExportError::Write)?;
    ex.out.flush().map_err(ExportError::Write)
}

/// Exports what `mounts` describe. A bind is exported directly; an overlay is mounted read-only
/// on a temporary directory (with its upper dir, if any, as the top lower layer, so a running
/// container's own mount is not disturbed), exported and unmounted.
pub fn export_mounts(m: &Mounts, writer: impl Write) -> Result<(), ExportError> {
    match m {
        Mounts::Bind { source, .. } => export_tar(source, writer),
        Mounts::Overlay {
            lowerdirs,
            upperdir,
            ..
        } => {
            let mut lowers: Vec<PathBuf> = upperdir.iter().cloned().collect();
            lowers.extend(lowerdirs.iter().cloned());
            let ro = if lowers.len() == 1 {
                Mounts::Bind {
                    source: lowers.remove(0),
                    readonly: true,
                }
            } else {
                Mounts::Overlay {
                    lowerdirs: lowers,
                    upperdir: None,
                    workdir: None,
                }
            };
            if let Mounts::Bind { source, .. } = &ro {
                return export_tar(source, writer);
            }
            let tmp = std::env::temp_dir().join(format!("berth-export-{}", sys::random_hex()));
            std::fs::create_dir(&tmp).map_err(ExportError::TempDir)?;
            let result = (|| {
                mounts::mount(&ro, &tmp)?;
                let _guard = MountGuard(tmp.clone());
                export_tar(&tmp, writer)
            })();
            let _ = std::fs::remove_dir(&tmp);
            result
        }
    }
}

/// Writes the single entry `name` of the directory `parent` (a file, a symlink, or a directory
/// with everything below it) as a tar stream whose entries are named `archive_name` and
/// `archive_name/…` (`docker cp` out of a container). `name` may be `.` for `parent` itself.
/// Nothing is followed: `parent` is the caller's already-resolved directory fd.
pub fn export_entry(
    parent: BorrowedFd<'_>,
    name: &CStr,
    archive_name: &[u8],
    writer: impl Write,
) -> Result<(), ExportError> {
    let mut ex = Exporter {
        out: BufWriter::with_capacity(1 << 20, writer),
        links: HashMap::new(),
        buf: vec![0u8; 1 << 20],
        path: archive_name.to_vec(),
    };
    ex.entry(parent, name)?;
    ex.out
        .write_all(&[0u8; BLOCK * 2])
        .map_err(ExportError::Write)?;
    ex.out.flush().map_err(ExportError::Write)
}

struct Exporter<W: Write> {
    out: BufWriter<W>,
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
    path: Vec<u8>,
}

fn octal(field: &mut [u8], v: u64) {
    // Width-1 digits, NUL terminated.
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()] = 0;
}

fn fits(v: u64, field_len: usize) -> bool {
    v < 1u64 << (3 * (field_len - 1))
}

fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // "<len> key=value\n" where len counts itself.
    let base = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = base + 1;
    while len != base + len.to_string().len() {
        len = base + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

struct Meta<'a> {
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    link: &'a [u8],
    dev: (u32, u32),
}

impl<W: Write> Exporter<W> {
    fn read_err(&self, source: io::Error) -> ExportError {
        ExportError::Read {
            path: String::from_utf8_lossy(&self.path).into_owned(),
            source,
        }
    }

    fn header(
        &mut self,
        name: &[u8],
        m: &Meta<'_>,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), ExportError> {
        let mut pax = Vec::new();
        if name.len() > 100 || !name.is_ascii() {
            pax_record(&mut pax, b"path", name);
        }
        if m.link.len() > 100 || !m.link.is_ascii() {
            pax_record(&mut pax, b"linkpath", m.link);
        }
        if !fits(m.uid, 8) {
            pax_record(&mut pax, b"uid", m.uid.to_string().as_bytes());
        }
        if !fits(m.gid, 8) {
            pax_record(&mut pax, b"gid", m.gid.to_string().as_bytes());
        }
        if !fits(m.size, 12) {
            pax_record(&mut pax, b"size", m.size.to_string().as_bytes());
        }
        if m.mtime_nsec != 0 && m.mtime >= 0 {
            let t = format!("{}.{:09}", m.mtime, m.mtime_nsec);
            pax_record(&mut pax, b"mtime", t.as_bytes());
        }
        for (k, v) in xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax_record(&mut pax, &key, v);
        }
        if !pax.is_empty() {
            let mut pname = b"PaxHeaders/".to_vec();
            pname.extend_from_slice(&name[..name.len().min(80)]);
            let pm = Meta {
                kind: b'x',
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: pax.len() as u64,
                mtime: m.mtime,
                mtime_nsec: 0,
                link: b"",
                dev: (0, 0),
            };
            self.raw_header(&pname, &pm)?;
            self.out.write_all(&pax).map_err(ExportError::Write)?;
            self.pad(pax.len() as u64)?;
        }
        self.raw_header(name, m)
    }

    fn raw_header(&mut self, name: &[u8], m: &Meta<'_>) -> Result<(), ExportError> {
        let mut h = [0u8; BLOCK];
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        octal(&mut h[100..108], u64::from(m.mode & 0o7777));
        octal(&mut h[108..116], if fits(m.uid, 8) { m.uid } else { 0 });
        octal(&mut h[116..124], if fits(m.gid, 8) { m.gid } else { 0 });
        octal(&mut h[124..136], if fits(m.size, 12) { m.size } else { 0 });
        octal(&mut h[136..148], (m.mtime.max(0) as u64).min((1 << 33) - 1));
        h[156] = m.kind;
        let l = m.link.len().min(100);
        h[157..157 + l].copy_from_slice(&m.link[..l]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        octal(&mut h[329..337], u64::from(m.dev.0));
        octal(&mut h[337..345], u64::from(m.dev.1));
        h[148..156].fill(b' ');
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        octal(&mut h[148..155], sum);
        h[155] = b' ';
        self.out.write_all(&h).map_err(ExportError::Write)
    }

    fn pad(&mut self, size: u64) -> Result<(), ExportError> {
        let p = ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize;
        self.out
            .write_all(&[0u8; BLOCK][..p])
            .map_err(ExportError::Write)
    }

    fn xattrs(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<sys::Xattrs, ExportError> {
        let mut x = sys::lxattrs_at(dir, name).map_err(|e| self.read_err(e))?;
        x.retain(|(k, _)| !k.starts_with(b"trusted.overlay."));
        Ok(x)
    }

    fn walk(&mut self, dir: BorrowedFd<'_>) -> Result<(), ExportError> {
        let mut names = sys::read_dir_names(dir).map_err(|e| self.read_err(e))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let base_len = self.path.len();
        for name in names {
            self.path.truncate(base_len);
            if base_len > 0 {
                self.path.push(b'/');
            }
            self.path.extend_from_slice(name.to_bytes());
            self.entry(dir, &name)?;
        }
        self.path.truncate(base_len);
        Ok(())
    }

    /// Writes the entry `name` of `dir` under the archive path `self.path`
    /// (a directory with everything below it).
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &CStr) -> Result<(), ExportError> {
        {
            let name = name.to_owned();
            let st = sys::lstatat(dir, &name).map_err(|e| self.read_err(e))?;
            let fmt = st.st_mode & libc::S_IFMT;
            let mut m = Meta {
                kind: b'0',
                mode: st.st_mode & 0o7777,
                uid: u64::from(st.st_uid),
                gid: u64::from(st.st_gid),
                size: 0,
                mtime: st.st_mtime,
                mtime_nsec: st.st_mtime_nsec,
                link: b"",
                dev: (0, 0),
            };
            let path = self.path.clone();
            match fmt {
                libc::S_IFDIR => {
                    let x = self.xattrs(dir, &name)?;
                    m.kind = b'5';
                    let mut p = path.clone();
                    p.push(b'/');
                    self.header(&p, &m, &x)?;
                    let sub = sys::openat(
                        dir,
                        &name,
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                        0,
                    )
                    .map_err(|e| self.read_err(e))?;
                    self.walk(sub.as_fd())?;
                }
                libc::S_IFREG => {
                    let key = (st.st_dev, st.st_ino);
                    if st.st_nlink > 1 {
                        if let Some(first) = self.links.get(&key).cloned() {
                            m.kind = b'1';
                            m.link = &first;
                            self.header(&path, &m, &[])?;
                            return Ok(());
                        }
                        self.links.insert(key, path.clone());
                    }
                    let x = self.xattrs(dir, &name)?;
                    let size = st.st_size.max(0) as u64;
                    m.size = size;
                    self.header(&path, &m, &x)?;
                    let fd = sys::openat(dir, &name, libc::O_RDONLY | libc::O_NOFOLLOW, 0)
                        .map_err(|e| self.read_err(e))?;
                    let mut f = std::fs::File::from(fd);
                    self.copy_data(&mut f, size)?;
                    self.pad(size)?;
                }
                libc::S_IFLNK => {
                    let target = sys::readlinkat(dir, &name).map_err(|e| self.read_err(e))?;
                    m.kind = b'2';
                    m.link = &target;
                    let x = self.xattrs(dir, &name)?;
                    self.header(&path, &m, &x)?;
                }
                libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                    m.kind = match fmt {
                        libc::S_IFCHR => b'3',
                        libc::S_IFBLK => b'4',
                        _ => b'6',
                    };
                    if fmt != libc::S_IFIFO {
                        m.dev = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
                    }
                    let x = self.xattrs(dir, &name)?;
                    self.header(&path, &m, &x)?;
                }
                _ => {} // sockets: not representable, skipped (as tar does)
            }
        }
        Ok(())
    }

    /// Copies exactly `size` bytes (zero-filling if the file shrank meanwhile).
    fn copy_data(&mut self, f: &mut std::fs::File, size: u64) -> Result<(), ExportError> {
        let mut left = size;
        while left > 0 {
            let want = (self.buf.len() as u64).min(left) as usize;
            let n = match f.read(&mut self.buf[..want]) {
                Ok(0) => {
                    self.buf[..want].fill(0);
                    want
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_err(e)),
            };
            self.out
                .write_all(&self.buf[..n])
                .map_err(ExportError::Write)?;
            left -= n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_len_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, b"path", b"a/b/c.d");
        assert_eq!(v, b"16 path=a/b/c.d\n");
        v.clear();
        pax_record(&mut v, b"k", &[b'x'; 95]);
        assert_eq!(v.len(), 102);
        assert!(v.starts_with(b"102 "));
    }
}
