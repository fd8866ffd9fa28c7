//! A newc ("070701") cpio writer: what the kernel unpacks as initramfs.
//! Entries are kept sorted by path (parents before children) with fixed
//! owner and mtime, so the same entries always give the same bytes.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{io, GuestImageError};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

struct Entry {
    mode: u32,
    rdev: (u32, u32),
    data: Vec<u8>,
}

#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn dir(&mut self, path: &str, perm: u32) {
        self.entries.entry(path.to_string()).or_insert(Entry {
            mode: S_IFDIR | perm,
            rdev: (0, 0),
            data: Vec::new(),
        });
    }

    /// Adds every parent directory of `path` (mode 0755) that is not there yet.
    pub fn parents(&mut self, path: &str) {
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent {
            if p.as_os_str().is_empty() {
                break;
            }
            self.dir(&p.to_string_lossy(), 0o755);
            parent = p.parent();
        }
    }

    pub fn file(&mut self, path: &str, perm: u32, data: Vec<u8>) {
        self.entries.insert(
            path.to_string(),
            Entry {
                mode: S_IFREG | perm,
                rdev: (0, 0),
                data,
            },
        );
    }

    pub fn file_from(
        &mut self,
        path: &str,
        perm: u32,
        source: &Path,
    ) -> Result<(), GuestImageError> {
        let data = std::fs::read(source).map_err(io("reading", source))?;
        self.file(path, perm, data);
        Ok(())
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entries.insert(
            path.to_string(),
            Entry {
                mode: S_IFLNK | 0o777,
                rdev: (0, 0),
                data: target.as_bytes().to_vec(),
            },
        );
    }

    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.entries.insert(
            path.to_string(),
            Entry {
                mode: S_IFCHR | perm,
                rdev: (major, minor),
                data: Vec::new(),
            },
        );
    }

    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (name, e)) in (1u32..).zip(self.entries.iter()) {
            let nlink = if e.mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
            header(&mut out, ino, e.mode, nlink, e.data.len(), e.rdev, name);
            out.extend_from_slice(&e.data);
            pad4(&mut out);
        }
        header(&mut out, 0, 0, 1, 0, (0, 0), "TRAILER!!!");
        out
    }
}

fn header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    rdev: (u32, u32),
    name: &str,
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        u32::try_from(size).unwrap_or(u32::MAX),
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout_sorted_and_padded() {
        let mut a = Archive::default();
        a.file("bin/x", 0o755, b"hello".to_vec());
        a.dir("bin", 0o755);
        a.symlink("bin/y", "x");
        let out = a.finish();
        assert_eq!(out.len() % 4, 0);
        // 110-byte header + "bin\0" padded to 4-byte alignment.
        assert_eq!(&out[..6], b"070701");
        assert_eq!(&out[110..114], b"bin\0");
        // Mode of the first entry is a directory.
        assert_eq!(&out[14..22], b"000041ED");
        let text = String::from_utf8_lossy(&out);
        let (bin, x, y, trailer) = (
            text.find("bin\0").expect("bin"),
            text.find("bin/x\0").expect("x"),
            text.find("bin/y\0").expect("y"),
            text.find("TRAILER!!!").expect("trailer"),
        );
        assert!(bin < x && x < y && y < trailer);
        assert!(text.contains("hello"));
        // Deterministic.
        let mut b = Archive::default();
        b.dir("bin", 0o755);
        b.symlink("bin/y", "x");
        b.file("bin/x", 0o755, b"hello".to_vec());
        assert_eq!(b.finish(), out);
    }
}
