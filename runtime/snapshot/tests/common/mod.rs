//! Shared helpers: a raw tar writer that will write any (hostile) header, compression helpers
//! and tree comparison.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Hand-assembled tar: every header field is written as given, no path checks.
#[derive(Default)]
pub struct RawTar {
    pub buf: Vec<u8>,
    pub mtime: u64,
}

pub struct H<'a> {
    pub name: &'a [u8],
    pub kind: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub link: &'a [u8],
    pub dev: (u32, u32),
}

impl Default for H<'_> {
    fn default() -> Self {
        H {
            name: b"",
            kind: b'0',
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            link: b"",
            dev: (0, 0),
        }
    }
}

fn octal(f: &mut [u8], v: u64) {
    let s = format!("{:0w$o}", v, w = f.len() - 1);
    f[..s.len()].copy_from_slice(s.as_bytes());
}

impl RawTar {
    pub fn new() -> Self {
        RawTar {
            buf: Vec::new(),
            mtime: 1_600_000_000,
        }
    }

    pub fn header(&mut self, h: &H<'_>) {
        let mut b = [0u8; 512];
        let n = h.name.len().min(100);
        b[..n].copy_from_slice(&h.name[..n]);
        octal(&mut b[100..108], u64::from(h.mode));
        octal(&mut b[108..116], h.uid);
        octal(&mut b[116..124], h.gid);
        octal(&mut b[124..136], h.size);
        octal(&mut b[136..148], self.mtime);
        b[156] = h.kind;
        let l = h.link.len().min(100);
        b[157..157 + l].copy_from_slice(&h.link[..l]);
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        octal(&mut b[329..337], u64::from(h.dev.0));
        octal(&mut b[337..345], u64::from(h.dev.1));
        b[148..156].fill(b' ');
        let sum: u64 = b.iter().map(|x| u64::from(*x)).sum();
        octal(&mut b[148..155], sum);
        self.buf.extend_from_slice(&b);
    }

    pub fn data(&mut self, d: &[u8]) {
        self.buf.extend_from_slice(d);
        let pad = (512 - d.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.file_b(name.as_bytes(), data, 0o644)
    }

    pub fn file_b(&mut self, name: &[u8], data: &[u8], mode: u32) -> &mut Self {
        self.header(&H {
            name,
            mode,
            size: data.len() as u64,
            ..H::default()
        });
        self.data(data);
        self
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.header(&H {
            name: name.as_bytes(),
            kind: b'5',
            mode: 0o755,
            ..H::default()
        });
        self
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.header(&H {
            name: name.as_bytes(),
            kind: b'2',
            mode: 0o777,
            link: target.as_bytes(),
            ..H::default()
        });
        self
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.header(&H {
            name: name.as_bytes(),
            kind: b'1',
            link: target.as_bytes(),
            ..H::default()
        });
        self
    }

    pub fn chardev(&mut self, name: &str, major: u32, minor: u32) -> &mut Self {
        self.header(&H {
            name: name.as_bytes(),
            kind: b'3',
            mode: 0o666,
            dev: (major, minor),
            ..H::default()
        });
        self
    }

    /// A PAX local header with the given records, applying to the next entry.
    pub fn pax(&mut self, records: &[(&[u8], &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let base = k.len() + v.len() + 3;
            let mut len = base + 1;
            while len != base + len.to_string().len() {
                len = base + len.to_string().len();
            }
            body.extend_from_slice(len.to_string().as_bytes());
            body.push(b' ');
            body.extend_from_slice(k);
            body.push(b'=');
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.header(&H {
            name: b"PaxHeaders/x",
            kind: b'x',
            size: body.len() as u64,
            ..H::default()
        });
        self.data(&body);
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.buf);
        v.extend_from_slice(&[0u8; 1024]);
        v
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Everything about one entry of a tree that a round trip must keep.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub content: Option<Vec<u8>>,
    pub link: Option<PathBuf>,
    pub rdev: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Index of the first path sharing this inode (hard links), or None.
    pub link_group: Option<String>,
}

pub fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut list = vec![0u8; 4096];
    // SAFETY: valid C string and buffer.
    let n = unsafe { libc::llistxattr(c.as_ptr(), list.as_mut_ptr().cast(), list.len()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for k in list[..n as usize]
        .split(|b| *b == 0)
        .filter(|k| !k.is_empty())
    {
        if k.starts_with(b"trusted.overlay.") {
            continue;
        }
        let ck = std::ffi::CString::new(k).unwrap();
        let mut v = vec![0u8; 4096];
        // SAFETY: valid C strings and buffer.
        let r = unsafe { libc::lgetxattr(c.as_ptr(), ck.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if r >= 0 {
            v.truncate(r as usize);
            out.push((k.to_vec(), v));
        }
    }
    out.sort();
    out
}

pub fn xattr(p: &Path, key: &str) -> Option<Vec<u8>> {
    xattrs(p)
        .into_iter()
        .find(|(k, _)| k == key.as_bytes())
        .map(|(_, v)| v)
        .or_else(|| {
            // trusted.overlay.* are filtered by xattrs(); read directly.
            let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
            let ck = std::ffi::CString::new(key).unwrap();
            let mut v = vec![0u8; 256];
            // SAFETY: valid C strings and buffer.
            let r =
                unsafe { libc::lgetxattr(c.as_ptr(), ck.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
            (r >= 0).then(|| {
                v.truncate(r as usize);
                v
            })
        })
}

/// Walks a tree into a map path → Node (symlinks not followed).
pub fn snapshot_tree(root: &Path, with_dir_mtime: bool) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut all = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = p.symlink_metadata().unwrap();
            if md.is_dir() {
                stack.push(p.clone());
            }
            all.push(p);
        }
    }
    all.sort();
    for p in all {
        let md = p.symlink_metadata().unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = md.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let link_group = if ft.is_file() && md.nlink() > 1 {
            Some(
                inodes
                    .entry((md.dev(), md.ino()))
                    .or_insert_with(|| rel.clone())
                    .clone(),
            )
        } else {
            None
        };
        out.insert(
            rel,
            Node {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: if ft.is_file() { md.size() } else { 0 },
                mtime: if ft.is_dir() && !with_dir_mtime {
                    0
                } else {
                    md.mtime()
                },
                content: ft.is_file().then(|| std::fs::read(&p).unwrap()),
                link: ft.is_symlink().then(|| std::fs::read_link(&p).unwrap()),
                rdev: md.rdev(),
                xattrs: xattrs(&p),
                link_group,
            },
        );
    }
    out
}

/// Entries anywhere under `dir` (for canary checks).
pub fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = snapshot_tree(dir, false).into_keys().collect();
    v.sort();
    v
}
