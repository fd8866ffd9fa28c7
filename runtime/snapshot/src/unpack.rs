//! Layer extraction: decompress an OCI/Docker layer, compute its diff_id while reading, and
//! extract it into a directory that becomes an overlayfs lower dir (or, in
//! [`WhiteoutMode::Delete`], apply it over an existing tree).
//!
//! Safety: every path is cleaned lexically (`..` refused, leading `/` dropped, NUL refused) and
//! every parent directory is then opened with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! on an fd of the destination, so symlinks in the tree (whatever they point to) resolve inside
//! it. Leaves are created relative to the parent's fd with `O_NOFOLLOW`/`O_EXCL`-style calls, and
//! an existing entry is removed first through fds that never follow symlinks.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use crate::pipe::chunk_pipe;
use crate::sys;
use crate::tarstream::{Entry, Kind, TarReader};

/// Buffer size for the tar reader and the decompression pipeline.
const BUF_SIZE: usize = 1 << 20;
/// At most this many warning messages are kept in [`UnpackStats::warnings`] (all are counted).
const MAX_WARNINGS: usize = 32;

/// Errors from [`unpack_layer`].
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("unsupported layer media type {0:?}")]
    MediaType(String),
    #[error("reading the layer stream failed")]
    Read(#[source] io::Error),
    #[error("layer stream ended in the middle of an entry")]
    Truncated,
    #[error("malformed tar: {0}")]
    Malformed(String),
    #[error("unsupported tar feature: {0}")]
    Unsupported(String),
    #[error("layer expands beyond the {limit} byte limit (decompression bomb?)")]
    TooLarge { limit: u64 },
    #[error("layer has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("entry {path:?} escapes the layer directory")]
    PathEscape { path: String },
    #[error("entry name {path:?} contains a NUL byte")]
    NulInName { path: String },
    #[error(
        "hard link {path:?} points to {target:?}, which is not an earlier entry of this layer"
    )]
    HardlinkTarget { path: String, target: String },
    #[error("device node {path:?} refused by policy")]
    DeviceRefused { path: String },
    #[error("id {id} of {path:?} has no mapping")]
    UnmappedId { path: String, id: u64 },
    #[error("invalid whiteout {path:?}")]
    BadWhiteout { path: String },
    #[error("extracting {path:?}: {op} failed")]
    Fs {
        path: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("opening the destination {0:?} failed")]
    Dest(String, #[source] io::Error),
    #[error("layer diff_id is {actual}, expected {expected}")]
    DiffIdMismatch { expected: String, actual: String },
}

/// What happens to whiteout entries (`.wh.<name>`, `.wh..wh..opq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// Convert to overlayfs format: a 0/0 char device, `trusted.overlay.opaque=y`.
    #[default]
    Overlay,
    /// Apply by deleting from the tree being unpacked over (the copy-based fallback).
    Delete,
}

/// What happens to char/block device entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevicePolicy {
    /// mknod them; when not permitted (EPERM, e.g. in a user namespace) skip with a warning.
    #[default]
    Create,
    /// Never create them; skip with a warning.
    Skip,
    /// Fail the unpack.
    Refuse,
}

/// One contiguous id mapping range (like a line of /proc/PID/uid_map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

/// Maps the uids/gids in a layer to host ids (user namespaces).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
}

fn map_id(ranges: &[IdRange], id: u64) -> Option<u32> {
    ranges.iter().find_map(|r| {
        let start = u64::from(r.container_id);
        if id >= start && id < start + u64::from(r.size) {
            u32::try_from(u64::from(r.host_id) + (id - start)).ok()
        } else {
            None
        }
    })
}

/// Options for [`unpack_layer`].
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Cap on the uncompressed tar stream, and on the file data written (default 64 GiB).
    pub max_bytes: u64,
    /// Cap on the number of entries (default 10 million).
    pub max_entries: u64,
    pub id_map: Option<IdMap>,
    pub devices: DevicePolicy,
    pub whiteouts: WhiteoutMode,
    /// When set (`sha256:<hex>`), the computed diff_id must match or the unpack fails.
    pub expected_diff_id: Option<String>,
    /// Decompress on a second thread, overlapping it with the file writes (default true).
    pub pipelined: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            max_bytes: 64 << 30,
            max_entries: 10_000_000,
            id_map: None,
            devices: DevicePolicy::Create,
            whiteouts: WhiteoutMode::Overlay,
            expected_diff_id: None,
            pipelined: true,
        }
    }
}

/// The compression found in a layer stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// What [`unpack_layer`] did.
#[derive(Debug, Clone)]
pub struct UnpackStats {
    /// `sha256:<hex>` of the uncompressed tar stream.
    pub diff_id: String,
    pub compression: Compression,
    /// Length of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// Regular-file bytes written.
    pub file_bytes: u64,
    pub entries: u64,
    pub skipped_devices: u64,
    pub ignored_xattrs: u64,
    pub skipped_entries: u64,
    /// The first few warnings, for logs (all of them are counted above).
    pub warnings: Vec<String>,
}

/// Maps a layer media type to its declared compression.
pub fn media_type_compression(media_type: &str) -> Result<Compression, UnpackError> {
    let mt = media_type.trim();
    Ok(match mt {
        "" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar"
        | "application/x-tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
        _ => return Err(UnpackError::MediaType(media_type.to_string())),
    })
}

/// Picks the decompressor: the magic bytes win over the media type (a registry or a
/// `docker save` file that labels a gzip layer as plain tar still unpacks).
fn sniff(head: &[u8], declared: Compression) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else if head.len() >= 4 {
        Compression::None
    } else {
        declared
    }
}

fn decoder<'a, R: BufRead + Send + 'a>(
    r: R,
    c: Compression,
) -> Result<Box<dyn Read + Send + 'a>, UnpackError> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(UnpackError::Read)?)
        }
    })
}

/// Unpacks one layer from `reader` into `dest` (which must exist; normally empty).
///
/// Returns the diff_id and counters. On error `dest` may hold a partial tree: the caller removes
/// it (the [`crate::Snapshotter`] does so for its temp dirs).
pub fn unpack_layer(
    reader: impl Read + Send,
    media_type: &str,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let declared = media_type_compression(media_type)?;
    let root = sys::open_dir(dest).map_err(|e| UnpackError::Dest(dest.display().to_string(), e))?;
    let mut input = BufReader::with_capacity(256 * 1024, reader);
    let head = input.fill_buf().map_err(UnpackError::Read)?;
    let compression = sniff(head, declared);

    let mut ex = Extractor::new(root, opts);
    let (digest, tar_bytes) = if opts.pipelined && compression != Compression::None {
        std::thread::scope(|s| -> Result<([u8; 32], u64), UnpackError> {
            let (sender, chunks) = chunk_pipe(4);
            let producer = s.spawn(move || {
                let mut dec = match decoder(input, compression) {
                    Ok(d) => d,
                    Err(UnpackError::Read(e)) => {
                        sender.send(Err(e));
                        return;
                    }
                    Err(_) => return,
                };
                loop {
                    let mut chunk = sender.buffer();
                    chunk.resize(BUF_SIZE, 0);
                    let mut filled = 0;
                    // Fill most of a chunk before sending, to keep channel traffic low.
                    while filled < BUF_SIZE / 2 {
                        match dec.read(&mut chunk[filled..]) {
                            Ok(0) => break,
                            Ok(n) => filled += n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) => {
                                sender.send(Err(e));
                                return;
                            }
                        }
                    }
                    if filled == 0 {
                        return;
                    }
                    chunk.truncate(filled);
                    if !sender.send(Ok(chunk)) {
                        return; // the consumer stopped (error or cap reached)
                    }
                }
            });
            let r = ex.run(TarReader::new(chunks, BUF_SIZE, opts.max_bytes));
            // `run` consumed (and so dropped) the reader, so a producer blocked in `send` wakes
            // up with an error and exits: joining cannot hang.
            let _ = producer.join();
            r
        })?
    } else {
        let dec = decoder(input, compression)?;
        ex.run(TarReader::new(dec, BUF_SIZE, opts.max_bytes))?
    };

    let diff_id = format!("sha256:{}", hex::encode(digest));
    if let Some(expected) = &opts.expected_diff_id {
        if !expected.eq_ignore_ascii_case(&diff_id) {
            return Err(UnpackError::DiffIdMismatch {
                expected: expected.clone(),
                actual: diff_id,
            });
        }
    }
    let mut stats = ex.stats;
    stats.diff_id = diff_id;
    stats.compression = compression;
    stats.tar_bytes = tar_bytes;
    Ok(stats)
}

/// Lexically cleans an entry path into `out`: drops a leading `/`, `.` and empty components;
/// refuses `..` and NUL. An empty result means the root itself.
fn clean_path(raw: &[u8], out: &mut Vec<u8>) -> Result<(), UnpackError> {
    out.clear();
    if raw.contains(&0) {
        return Err(UnpackError::NulInName { path: lossy(raw) });
    }
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err(UnpackError::PathEscape { path: lossy(raw) }),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// A directory's path with its mtime and atime (seconds, nanoseconds).
type DirTime = (Vec<u8>, (i64, u32), Option<(i64, u32)>);

const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY;

struct Extractor<'o> {
    root: OwnedFd,
    opts: &'o UnpackOptions,
    /// The last parent directory opened (`None` = root), keyed by its cleaned path.
    cur_path: Vec<u8>,
    cur_fd: Option<OwnedFd>,
    cur_valid: bool,
    /// Directory times, applied after everything else.
    dir_times: Vec<DirTime>,
    /// Paths this layer created (only tracked in Delete mode, for whiteout semantics).
    created: HashSet<Vec<u8>>,
    stats: UnpackStats,
    path: Vec<u8>,
    link: Vec<u8>,
    parent_buf: Vec<u8>,
}

impl<'o> Extractor<'o> {
    fn new(root: OwnedFd, opts: &'o UnpackOptions) -> Self {
        Extractor {
            root,
            opts,
            cur_path: Vec::new(),
            cur_fd: None,
            cur_valid: false,
            dir_times: Vec::new(),
            created: HashSet::new(),
            stats: UnpackStats {
                diff_id: String::new(),
                compression: Compression::None,
                tar_bytes: 0,
                file_bytes: 0,
                entries: 0,
                skipped_devices: 0,
                ignored_xattrs: 0,
                skipped_entries: 0,
                warnings: Vec::new(),
            },
            path: Vec::new(),
            link: Vec::new(),
            parent_buf: Vec::new(),
        }
    }

    fn warn(&mut self, msg: impl FnOnce() -> String) {
        if self.stats.warnings.len() < MAX_WARNINGS {
            self.stats.warnings.push(msg());
        }
    }

    fn run<R: Read>(&mut self, mut tar: TarReader<R>) -> Result<([u8; 32], u64), UnpackError> {
        let mut e = Entry::default();
        while tar.next_entry(&mut e)? {
            self.stats.entries += 1;
            if self.stats.entries > self.opts.max_entries {
                return Err(UnpackError::TooManyEntries {
                    limit: self.opts.max_entries,
                });
            }
            self.entry(&e, &mut tar)?;
        }
        self.apply_dir_times();
        tar.finish()
    }

    fn cur(&self) -> BorrowedFd<'_> {
        match &self.cur_fd {
            Some(fd) => fd.as_fd(),
            None => self.root.as_fd(),
        }
    }

    fn invalidate(&mut self) {
        self.cur_valid = false;
        self.cur_fd = None;
    }

    fn fs_err(&self, op: &'static str, source: io::Error) -> UnpackError {
        UnpackError::Fs {
            path: lossy(&self.path),
            op,
            source,
        }
    }

    /// Host uid/gid for an entry's ids.
    fn owner(&self, uid: u64, gid: u64) -> Result<(u32, u32), UnpackError> {
        match &self.opts.id_map {
            None => {
                let u = u32::try_from(uid).map_err(|_| UnpackError::UnmappedId {
                    path: lossy(&self.path),
                    id: uid,
                })?;
                let g = u32::try_from(gid).map_err(|_| UnpackError::UnmappedId {
                    path: lossy(&self.path),
                    id: gid,
                })?;
                Ok((u, g))
            }
            Some(m) => {
                let u = map_id(&m.uids, uid).ok_or_else(|| UnpackError::UnmappedId {
                    path: lossy(&self.path),
                    id: uid,
                })?;
                let g = map_id(&m.gids, gid).ok_or_else(|| UnpackError::UnmappedId {
                    path: lossy(&self.path),
                    id: gid,
                })?;
                Ok((u, g))
            }
        }
    }

    /// Opens (creating missing directories) the parent `parent` as the current dir.
    fn open_parent(&mut self, parent: &[u8]) -> Result<(), UnpackError> {
        if self.cur_valid && self.cur_path == parent {
            return Ok(());
        }
        self.invalidate();
        if parent.is_empty() {
            self.cur_path.clear();
            self.cur_valid = true;
            return Ok(());
        }
        let c = sys::cstr(parent).map_err(|e| self.fs_err("path", e))?;
        let fd = match sys::open_in_root(self.root.as_fd(), &c, DIR_FLAGS, 0) {
            Ok(fd) => fd,
            Err(e) if errno(&e) == libc::ENOENT => self.create_parents(parent)?,
            Err(e) => return Err(self.fs_err("open parent directory", e)),
        };
        self.cur_path.clear();
        self.cur_path.extend_from_slice(parent);
        self.cur_fd = Some(fd);
        self.cur_valid = true;
        Ok(())
    }

    /// Walks `parent` component by component from the root, creating what is missing.
    fn create_parents(&mut self, parent: &[u8]) -> Result<OwnedFd, UnpackError> {
        let (uid, gid) = self.owner(0, 0)?;
        let mut fd: Option<OwnedFd> = None;
        let mut end = 0;
        let comps: Vec<&[u8]> = parent.split(|b| *b == b'/').collect();
        for comp in comps {
            end += comp.len();
            let prefix = &parent[..end];
            end += 1; // the following '/'
            let cp = sys::cstr(prefix).map_err(|e| self.fs_err("path", e))?;
            match sys::open_in_root(self.root.as_fd(), &cp, DIR_FLAGS, 0) {
                Ok(f) => {
                    fd = Some(f);
                    continue;
                }
                Err(e) if errno(&e) == libc::ENOENT => {}
                Err(e) => return Err(self.fs_err("open parent directory", e)),
            }
            let base = match &fd {
                Some(f) => f.as_fd(),
                None => self.root.as_fd(),
            };
            let cc = sys::cstr(comp).map_err(|e| self.fs_err("path", e))?;
            match sys::mkdirat(base, &cc, 0o755) {
                Ok(()) => {
                    if let Ok(st) = sys::lstatat(base, &cc) {
                        if st.st_uid != uid || st.st_gid != gid {
                            sys::lchownat(base, &cc, uid, gid)
                                .map_err(|e| self.fs_err("chown", e))?;
                        }
                    }
                }
                Err(e) if errno(&e) == libc::EEXIST => {}
                Err(e) => return Err(self.fs_err("create parent directory", e)),
            }
            if self.opts.whiteouts == WhiteoutMode::Delete {
                self.created.insert(prefix.to_vec());
            }
            // Re-resolve through the root: if a (dangling) symlink sat there, this fails.
            let f = sys::open_in_root(self.root.as_fd(), &cp, DIR_FLAGS, 0)
                .map_err(|e| self.fs_err("open created parent directory", e))?;
            fd = Some(f);
        }
        fd.ok_or_else(|| self.fs_err("open parent directory", io::ErrorKind::NotFound.into()))
    }

    /// Removes whatever is at `cur/name` (recursively, within the tree). The single cached
    /// parent stays valid: removing one of its children cannot change what its path resolves to.
    fn remove_existing(&mut self, name: &CStr) -> Result<(), UnpackError> {
        sys::remove_all_at(self.cur(), name).map_err(|e| self.fs_err("remove existing entry", e))
    }

    fn entry<R: Read>(&mut self, e: &Entry, tar: &mut TarReader<R>) -> Result<(), UnpackError> {
        let mut path = std::mem::take(&mut self.path);
        let r = clean_path(&e.path, &mut path);
        self.path = path;
        r?;
        let kind = e.kind();

        let (plen, nstart) = match self.path.iter().rposition(|b| *b == b'/') {
            Some(i) => (i, i + 1),
            None => (0, 0),
        };
        let mut parent = std::mem::take(&mut self.parent_buf);
        parent.clear();
        parent.extend_from_slice(&self.path[..plen]);
        let result = if self.path[nstart..].starts_with(b".wh.") {
            let name = self.path[nstart..].to_vec();
            self.whiteout(&parent, &name)
        } else {
            self.open_parent(&parent).and_then(|()| {
                let cname = sys::cstr(&self.path[nstart..]).map_err(|e| self.fs_err("path", e))?;
                match kind {
                    Kind::Regular => self.regular(&cname, e, tar),
                    Kind::Dir => self.dir(&cname, e),
                    Kind::Symlink => self.symlink(&cname, e),
                    Kind::HardLink => self.hardlink(&cname, e),
                    Kind::Char | Kind::Block | Kind::Fifo => self.node(&cname, e, kind),
                    Kind::Other(flag) => {
                        self.stats.skipped_entries += 1;
                        self.warn(|| format!("skipped entry of type {:?}", flag as char));
                        Ok(())
                    }
                }
            })
        };
        self.parent_buf = parent;
        if result.is_ok() && self.opts.whiteouts == WhiteoutMode::Delete {
            self.created.insert(self.path.clone());
        }
        result
    }

    fn whiteout(&mut self, parent: &[u8], name: &[u8]) -> Result<(), UnpackError> {
        self.open_parent(parent)?;
        if name == b".wh..wh..opq" {
            match self.opts.whiteouts {
                WhiteoutMode::Overlay => {
                    sys::fsetxattr(self.cur(), c"trusted.overlay.opaque", b"y")
                        .map_err(|e| self.fs_err("set opaque xattr", e))?;
                }
                WhiteoutMode::Delete => {
                    let names = sys::read_dir_names(self.cur())
                        .map_err(|e| self.fs_err("read directory", e))?;
                    let mut child = Vec::new();
                    for n in names {
                        child.clear();
                        child.extend_from_slice(parent);
                        if !child.is_empty() {
                            child.push(b'/');
                        }
                        child.extend_from_slice(n.to_bytes());
                        if !self.created.contains(&child) {
                            self.remove_existing(&n)?;
                        }
                    }
                }
            }
            return Ok(());
        }
        if name.starts_with(b".wh..wh.") {
            // Other AUFS metadata (`.wh..wh.plnk`, `.wh..wh.aufs`): not part of the rootfs.
            self.stats.skipped_entries += 1;
            return Ok(());
        }
        let real = &name[4..];
        if real.is_empty() || real == b"." || real == b".." || real.contains(&b'/') {
            return Err(UnpackError::BadWhiteout {
                path: lossy(&self.path),
            });
        }
        let creal = sys::cstr(real).map_err(|e| self.fs_err("path", e))?;
        match self.opts.whiteouts {
            WhiteoutMode::Overlay => {
                if sys::lstatat(self.cur(), &creal).is_ok() {
                    // The same layer has this name: a whiteout only hides lower layers, and
                    // the entry in this layer already does.
                    self.warn(|| {
                        format!("whiteout for an entry of the same layer: {}", lossy(real))
                    });
                    return Ok(());
                }
                sys::mknodat(self.cur(), &creal, libc::S_IFCHR, 0)
                    .map_err(|e| self.fs_err("create overlay whiteout", e))?;
                let (uid, gid) = self.owner(0, 0)?;
                if uid != 0 || gid != 0 {
                    sys::lchownat(self.cur(), &creal, uid, gid)
                        .map_err(|e| self.fs_err("chown whiteout", e))?;
                }
            }
            WhiteoutMode::Delete => {
                let mut full = parent.to_vec();
                if !full.is_empty() {
                    full.push(b'/');
                }
                full.extend_from_slice(real);
                if !self.created.contains(&full) {
                    self.remove_existing(&creal)?;
                }
            }
        }
        Ok(())
    }

    /// Sets xattrs on an fd (or, with `name`, on `cur/name` without following it).
    fn xattrs(
        &mut self,
        fd: Option<BorrowedFd<'_>>,
        name: &CStr,
        e: &Entry,
    ) -> Result<(), UnpackError> {
        for (k, v) in &e.xattrs {
            if k.starts_with(b"trusted.overlay.") {
                self.stats.ignored_xattrs += 1;
                let k = lossy(k);
                self.warn(|| format!("ignored xattr {k} on {}", lossy(&e.path)));
                continue;
            }
            let ck = match CString::new(k.as_slice()) {
                Ok(c) => c,
                Err(_) => {
                    self.stats.ignored_xattrs += 1;
                    continue;
                }
            };
            let r = match fd {
                Some(fd) => sys::fsetxattr(fd, &ck, v),
                None => sys::lsetxattrat(self.cur(), name, &ck, v),
            };
            if let Err(err) = r {
                match errno(&err) {
                    libc::EPERM | libc::ENOTSUP | libc::EACCES => {
                        self.stats.ignored_xattrs += 1;
                        let k = lossy(k);
                        self.warn(|| {
                            format!("could not set xattr {k} on {}: {err}", lossy(&e.path))
                        });
                    }
                    _ => return Err(self.fs_err("set xattr", err)),
                }
            }
        }
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        name: &CStr,
        e: &Entry,
        tar: &mut TarReader<R>,
    ) -> Result<(), UnpackError> {
        if name.is_empty() {
            return Err(UnpackError::Malformed(
                "regular file at the root path".into(),
            ));
        }
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = match sys::openat(self.cur(), name, flags, 0o600) {
            Ok(fd) => fd,
            Err(err) if errno(&err) == libc::EEXIST => {
                self.remove_existing(name)?;
                sys::openat(self.cur(), name, flags, 0o600)
                    .map_err(|e| self.fs_err("create file", e))?
            }
            Err(err) => return Err(self.fs_err("create file", err)),
        };
        if e.size > 0 {
            let mut file = std::fs::File::from(fd);
            let limit = self.opts.max_bytes;
            let mut written = self.stats.file_bytes;
            let path = &self.path;
            tar.read_data(|chunk| {
                written += chunk.len() as u64;
                if written > limit {
                    return Err(UnpackError::TooLarge { limit });
                }
                file.write_all(chunk).map_err(|source| UnpackError::Fs {
                    path: lossy(path),
                    op: "write file",
                    source,
                })
            })?;
            self.stats.file_bytes = written;
            let fd = OwnedFd::from(file);
            self.finish_fd(fd.as_fd(), e)
        } else {
            self.finish_fd(fd.as_fd(), e)
        }
    }

    /// Ownership, xattrs, mode (after chown, which clears setuid bits) and times, via an fd.
    fn finish_fd(&mut self, fd: BorrowedFd<'_>, e: &Entry) -> Result<(), UnpackError> {
        let (uid, gid) = self.owner(e.uid, e.gid)?;
        sys::fchown(fd, uid, gid).map_err(|err| self.fs_err("chown", err))?;
        self.xattrs(Some(fd), c"", e)?;
        sys::fchmod(fd, e.mode).map_err(|err| self.fs_err("chmod", err))?;
        sys::futimens(fd, Some(e.atime.unwrap_or(e.mtime)), e.mtime)
            .map_err(|err| self.fs_err("set times", err))
    }

    fn dir(&mut self, name: &CStr, e: &Entry) -> Result<(), UnpackError> {
        let fd = if name.is_empty() {
            // The root itself (`./`).
            sys::openat(self.root.as_fd(), c".", DIR_FLAGS, 0)
                .map_err(|err| self.fs_err("open root", err))?
        } else {
            match sys::mkdirat(self.cur(), name, 0o700) {
                Ok(()) => {}
                Err(err) if errno(&err) == libc::EEXIST => {
                    let st = sys::lstatat(self.cur(), name).map_err(|e| self.fs_err("stat", e))?;
                    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                        self.remove_existing(name)?;
                        sys::mkdirat(self.cur(), name, 0o700)
                            .map_err(|e| self.fs_err("mkdir", e))?;
                    }
                }
                Err(err) => return Err(self.fs_err("mkdir", err)),
            }
            sys::openat(self.cur(), name, DIR_FLAGS | libc::O_NOFOLLOW, 0)
                .map_err(|err| self.fs_err("open directory", err))?
        };
        let (uid, gid) = self.owner(e.uid, e.gid)?;
        sys::fchown(fd.as_fd(), uid, gid).map_err(|err| self.fs_err("chown", err))?;
        self.xattrs(Some(fd.as_fd()), c"", e)?;
        sys::fchmod(fd.as_fd(), e.mode).map_err(|err| self.fs_err("chmod", err))?;
        self.dir_times.push((self.path.clone(), e.mtime, e.atime));
        Ok(())
    }

    fn symlink(&mut self, name: &CStr, e: &Entry) -> Result<(), UnpackError> {
        if name.is_empty() {
            return Err(UnpackError::Malformed("symlink at the root path".into()));
        }
        let target = CString::new(e.link.as_slice()).map_err(|_| UnpackError::NulInName {
            path: lossy(&e.link),
        })?;
        if target.is_empty() {
            return Err(UnpackError::Malformed(format!(
                "symlink {:?} has an empty target",
                lossy(&self.path)
            )));
        }
        match sys::symlinkat(&target, self.cur(), name) {
            Ok(()) => {}
            Err(err) if errno(&err) == libc::EEXIST => {
                self.remove_existing(name)?;
                sys::symlinkat(&target, self.cur(), name).map_err(|e| self.fs_err("symlink", e))?;
            }
            Err(err) => return Err(self.fs_err("symlink", err)),
        }
        self.finish_at(name, e, false)
    }

    /// Ownership, xattrs, mode and times by name (for symlinks and device nodes).
    fn finish_at(&mut self, name: &CStr, e: &Entry, chmod: bool) -> Result<(), UnpackError> {
        let (uid, gid) = self.owner(e.uid, e.gid)?;
        sys::lchownat(self.cur(), name, uid, gid).map_err(|err| self.fs_err("chown", err))?;
        self.xattrs(None, name, e)?;
        if chmod {
            // Not a symlink: this process just created the node at `name`.
            sys::fchmodat(self.cur(), name, e.mode).map_err(|err| self.fs_err("chmod", err))?;
        }
        sys::lutimensat(self.cur(), name, Some(e.atime.unwrap_or(e.mtime)), e.mtime)
            .map_err(|err| self.fs_err("set times", err))
    }

    fn hardlink(&mut self, name: &CStr, e: &Entry) -> Result<(), UnpackError> {
        let mut link = std::mem::take(&mut self.link);
        let r = clean_path(&e.link, &mut link).map_err(|err| match err {
            UnpackError::PathEscape { .. } => UnpackError::HardlinkTarget {
                path: lossy(&self.path),
                target: lossy(&e.link),
            },
            other => other,
        });
        let result = r.and_then(|()| self.hardlink_to(name, &link, e));
        self.link = link;
        result
    }

    fn hardlink_to(&mut self, name: &CStr, link: &[u8], e: &Entry) -> Result<(), UnpackError> {
        let (epath, elink) = (lossy(&self.path), lossy(&e.link));
        let target_err = || UnpackError::HardlinkTarget {
            path: epath.clone(),
            target: elink.clone(),
        };
        let (tparent, tname) = split_parent(link);
        if tname.is_empty() || name.is_empty() {
            return Err(target_err());
        }
        let tp = if tparent.is_empty() {
            sys::openat(self.root.as_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0)
        } else {
            let c = sys::cstr(tparent).map_err(|e| self.fs_err("path", e))?;
            sys::open_in_root(self.root.as_fd(), &c, libc::O_PATH | libc::O_DIRECTORY, 0)
        }
        .map_err(|_| target_err())?;
        let ctname = sys::cstr(tname).map_err(|e| self.fs_err("path", e))?;
        match sys::linkat(tp.as_fd(), &ctname, self.cur(), name) {
            Ok(()) => Ok(()),
            Err(err) if errno(&err) == libc::EEXIST => {
                let a = sys::lstatat(tp.as_fd(), &ctname).map_err(|_| target_err())?;
                if let Ok(b) = sys::lstatat(self.cur(), name) {
                    if a.st_dev == b.st_dev && a.st_ino == b.st_ino {
                        return Ok(());
                    }
                }
                self.remove_existing(name)?;
                sys::linkat(tp.as_fd(), &ctname, self.cur(), name).map_err(|_| target_err())
            }
            Err(err) if matches!(errno(&err), libc::ENOENT | libc::EPERM | libc::EXDEV) => {
                Err(target_err())
            }
            Err(err) => Err(self.fs_err("link", err)),
        }
    }

    fn node(&mut self, name: &CStr, e: &Entry, kind: Kind) -> Result<(), UnpackError> {
        if name.is_empty() {
            return Err(UnpackError::Malformed("device at the root path".into()));
        }
        let is_dev = kind != Kind::Fifo;
        if is_dev {
            match self.opts.devices {
                DevicePolicy::Refuse => {
                    return Err(UnpackError::DeviceRefused {
                        path: lossy(&self.path),
                    })
                }
                DevicePolicy::Skip => {
                    self.stats.skipped_devices += 1;
                    self.warn(|| format!("skipped device node {}", lossy(&e.path)));
                    return Ok(());
                }
                DevicePolicy::Create => {}
            }
        }
        let ty = match kind {
            Kind::Char => libc::S_IFCHR,
            Kind::Block => libc::S_IFBLK,
            _ => libc::S_IFIFO,
        };
        let dev = libc::makedev(e.dev_major, e.dev_minor);
        let mut r = sys::mknodat(self.cur(), name, ty | 0o600, dev);
        if matches!(&r, Err(err) if errno(err) == libc::EEXIST) {
            self.remove_existing(name)?;
            r = sys::mknodat(self.cur(), name, ty | 0o600, dev);
        }
        match r {
            Ok(()) => self.finish_at(name, e, true),
            Err(err) if is_dev && errno(&err) == libc::EPERM => {
                self.stats.skipped_devices += 1;
                self.warn(|| format!("device node {} not permitted, skipped", lossy(&e.path)));
                Ok(())
            }
            Err(err) => Err(self.fs_err("mknod", err)),
        }
    }

    fn apply_dir_times(&mut self) {
        let times = std::mem::take(&mut self.dir_times);
        for (path, mtime, atime) in times.iter().rev() {
            let fd = if path.is_empty() {
                sys::openat(self.root.as_fd(), c".", DIR_FLAGS, 0)
            } else {
                match sys::cstr(path) {
                    Ok(c) => sys::open_in_root(
                        self.root.as_fd(),
                        &c,
                        DIR_FLAGS | libc::O_NOFOLLOW,
                        libc::RESOLVE_NO_SYMLINKS,
                    ),
                    Err(e) => Err(e),
                }
            };
            // A directory replaced later in the archive is simply skipped.
            if let Ok(fd) = fd {
                let _ = sys::futimens(fd.as_fd(), Some(atime.unwrap_or(*mtime)), *mtime);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean() {
        let mut out = Vec::new();
        assert!(clean_path(b"./a//b/./c/", &mut out).is_ok());
        assert_eq!(out, b"a/b/c");
        assert!(clean_path(b"/abs/x", &mut out).is_ok());
        assert_eq!(out, b"abs/x");
        assert!(clean_path(b"./", &mut out).is_ok());
        assert!(out.is_empty());
        assert!(matches!(
            clean_path(b"a/../../x", &mut out),
            Err(UnpackError::PathEscape { .. })
        ));
        assert!(matches!(
            clean_path(b"a\0b", &mut out),
            Err(UnpackError::NulInName { .. })
        ));
    }

    #[test]
    fn media_types() {
        assert!(matches!(
            media_type_compression("application/vnd.oci.image.layer.v1.tar+zstd"),
            Ok(Compression::Zstd)
        ));
        assert!(matches!(
            media_type_compression("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Ok(Compression::Gzip)
        ));
        assert!(media_type_compression("text/plain").is_err());
        assert_eq!(
            sniff(&[0x1f, 0x8b, 8, 0], Compression::None),
            Compression::Gzip
        );
        assert_eq!(sniff(b"etc/\0\0", Compression::Gzip), Compression::None);
    }

    #[test]
    fn id_mapping() {
        let r = [IdRange {
            container_id: 0,
            host_id: 100000,
            size: 65536,
        }];
        assert_eq!(map_id(&r, 0), Some(100000));
        assert_eq!(map_id(&r, 65535), Some(165535));
        assert_eq!(map_id(&r, 65536), None);
    }
}
