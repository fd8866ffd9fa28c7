//! The content-addressed blob store, crash-safe at any moment.
//!
//! Layout under the root:
//!
//! ```text
//! blobs/<alg>/<hex>            committed, verified blobs (read-only once there)
//! ingest/<alg>/<hex>/data      partial data of an ingest in progress or interrupted
//! ingest/<alg>/<hex>/size      expected size, when known (informational)
//! ingest/<alg>/<hex>/lock      flock(2)ed exclusively by the one writer
//! ```
//!
//! Promises:
//! - A blob appears under `blobs/` only by `rename(2)` of a file whose size
//!   and digest were verified and whose data was fsynced; the directory is
//!   fsynced after the rename. So after a crash at any moment a blob is either
//!   absent or complete and correct.
//! - An interrupted ingest (error, drop, kill, power loss) keeps its partial
//!   file. The next [`ContentStore::ingest`] of the same digest re-hashes the
//!   bytes on disk and reports them as [`Ingest::offset`], so the caller can
//!   ask the registry for the rest with a `Range` request. Data is not fsynced
//!   while streaming (only at commit), so after a power loss the tail of a
//!   partial file may be wrong: the digest check at commit catches that and
//!   discards it, it never reaches `blobs/`.
//! - One writer per digest: an ingest holds an exclusive `flock` on its lock
//!   file, across threads and processes. [`ContentStore::ingest`] (also
//!   spelled [`ContentStore::ingest_blocking`]) waits for the current holder
//!   to finish; [`ContentStore::try_ingest`] returns [`ContentError::Busy`]
//!   instead. When the holder committed, the waiter gets
//!   [`ContentError::AlreadyExists`].
//! - A digest mismatch discards the partial data. A short blob (size below
//!   the expected size, e.g. a truncated download) keeps its data for resume.
//! - A full disk fails the write with an [`std::io::Error`] of kind
//!   `StorageFull` (wrapping [`ContentError::NoSpace`]); what reached the disk
//!   stays and is resumed later.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::digest::{Digest, Hasher};
use crate::images::ImageRecord;
use crate::manifest::{media_types, AnyManifest, ManifestError};

/// Write buffer of an ingest; writes this large or larger go straight through.
const BUF_SIZE: usize = 1 << 20;

/// Partial ingests untouched this long are removed by [`ContentStore::gc`].
pub const DEFAULT_INGEST_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("opening content store at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading size of blob {digest} at {path}: {source}")]
    Info {
        digest: Digest,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob {digest} not found in the content store")]
    NotFound { digest: Digest },
    #[error("opening blob {digest} at {path}: {source}")]
    OpenBlob {
        digest: Digest,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading blob {digest} at {path}: {source}")]
    Read {
        digest: Digest,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob {digest} at {path} is corrupt: its content hashes to {actual}")]
    Corrupt {
        digest: Digest,
        path: PathBuf,
        actual: Digest,
    },
    #[error("blob {digest} is already in the content store")]
    AlreadyExists { digest: Digest },
    #[error("blob {digest} is being written by another ingest (lock {path} is held)")]
    Busy { digest: Digest, path: PathBuf },
    #[error("starting ingest of {digest} in {path}: {source}")]
    Ingest {
        digest: Digest,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("resuming ingest of {digest}: reading partial data {path}: {source}")]
    Resume {
        digest: Digest,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("hashing ingest of {digest}: reading {path} at offset {offset}: {source}")]
    Hash {
        digest: Digest,
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("writing blob {digest} to {path} at offset {offset}: {source}")]
    Write {
        digest: Digest,
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error(
        "no space left on device while writing blob {digest} to {path}; the {offset} bytes \
         already written are kept and the download resumes from there once space is freed"
    )]
    NoSpace {
        digest: Digest,
        path: PathBuf,
        offset: u64,
    },
    #[error("blob {digest}: received more than the expected {expected} bytes")]
    TooLarge { digest: Digest, expected: u64 },
    #[error(
        "ingest of {digest}: an earlier write to {path} failed; call recover() or start the \
         ingest again to resume from what is on disk"
    )]
    Poisoned { digest: Digest, path: PathBuf },
    #[error("blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("digest mismatch: expected {expected}, got {actual}; the data was discarded")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("committing blob {digest} to {path}: {source}")]
    Commit {
        digest: Digest,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("discarding ingest of {digest} at {path}: {source}")]
    Discard {
        digest: Digest,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("truncating ingest of {digest} at {path} to {offset} bytes: {source}")]
    Truncate {
        digest: Digest,
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("cannot truncate ingest of {digest} to {offset} bytes: only {len} bytes are on disk")]
    TruncateBeyond {
        digest: Digest,
        offset: u64,
        len: u64,
    },
    #[error("deleting blob {digest} at {path}: {source}")]
    Delete {
        digest: Digest,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("listing {path}: {source}")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("garbage collection: removing {path}: {source}")]
    Gc {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob {digest} is not a manifest or index we can walk: {source}")]
    BadManifest {
        digest: Digest,
        #[source]
        source: ManifestError,
    },
}

impl ContentError {
    /// Recovers a `ContentError` carried inside an `io::Error` returned by
    /// [`Ingest`]'s `Write` impl; other errors become [`ContentError::Write`].
    pub fn from_ingest_io(ingest: &Ingest, e: io::Error) -> Self {
        let write = |source| ContentError::Write {
            digest: ingest.digest.clone(),
            path: ingest.data_path.clone(),
            offset: ingest.offset(),
            source,
        };
        if !e.get_ref().is_some_and(|r| r.is::<ContentError>()) {
            return write(e);
        }
        match e.into_inner().map(|inner| inner.downcast::<ContentError>()) {
            Some(Ok(ce)) => *ce,
            _ => write(io::Error::other("unrecognised ingest error")),
        }
    }

    /// The `io::Error` kind that fits this error.
    fn io_kind(&self) -> io::ErrorKind {
        match self {
            Self::NoSpace { .. } => io::ErrorKind::StorageFull,
            Self::TooLarge { .. } | Self::DigestMismatch { .. } | Self::SizeMismatch { .. } => {
                io::ErrorKind::InvalidData
            }
            Self::Write { source, .. } => source.kind(),
            _ => io::ErrorKind::Other,
        }
    }
}

fn is_enospc(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT)
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and parents) and makes its entry durable.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

fn remove_if_exists(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `flock(LOCK_EX)`, waiting or not. `Ok(false)`: held by someone else.
fn flock_exclusive(f: &File, wait: bool) -> io::Result<bool> {
    let op = libc::LOCK_EX | if wait { 0 } else { libc::LOCK_NB };
    loop {
        // SAFETY: flock only operates on the descriptor, which `f` keeps open
        // for the duration of the call.
        let r = unsafe { libc::flock(f.as_raw_fd(), op) };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Hashes the first `len` bytes of `file` with the algorithm of `digest`.
fn hash_prefix(file: &File, digest: &Digest, len: u64) -> io::Result<Hasher> {
    let mut h = Hasher::for_digest(digest);
    let mut buf = vec![0u8; BUF_SIZE];
    let mut pos = 0u64;
    while pos < len {
        let want = usize::try_from((len - pos).min(BUF_SIZE as u64)).unwrap_or(BUF_SIZE);
        let n = file.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file ended at {pos} bytes, expected {len}"),
            ));
        }
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(h)
}

/// Found `(digest, path)` entries and stray paths of a directory scan.
type Scan = (Vec<(Digest, PathBuf)>, Vec<PathBuf>);

/// Blobs under `<root>/blobs/<alg>/<hex>`; partial ingests under
/// `<root>/ingest/<alg>/<hex>` until verified.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

/// A partial ingest found on disk (see [`ContentStore::list_ingests`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestStatus {
    pub digest: Digest,
    /// Bytes on disk.
    pub offset: u64,
    /// Expected size, if the ingest was started with one.
    pub size: Option<u64>,
    pub modified: SystemTime,
}

/// What [`ContentStore::gc_with`] does with partial ingests.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Remove partial ingests not written to for this long; `None`: remove
    /// every partial ingest that is not in use right now.
    pub ingest_max_age: Option<Duration>,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            ingest_max_age: Some(DEFAULT_INGEST_MAX_AGE),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed_blobs: Vec<Digest>,
    pub freed_bytes: u64,
    pub removed_ingests: Vec<Digest>,
    pub freed_ingest_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blobs whose content was hashed.
    pub checked: usize,
    /// `(name, actual digest)` of blobs whose content does not match their name.
    pub corrupt: Vec<(Digest, Digest)>,
    /// Files under `blobs/` that are not named like a blob.
    pub stray: Vec<PathBuf>,
}

impl VerifyReport {
    pub fn is_consistent(&self) -> bool {
        self.corrupt.is_empty() && self.stray.is_empty()
    }
}

/// A blob being written. Resumes where an earlier ingest of the same digest
/// stopped (even in another process, after a crash): `offset()` bytes are
/// already there and hashed. Nothing is visible in the store until `commit`
/// verified size and digest.
///
/// Writes are buffered (1 MiB) and hashed as they reach the file; nothing is
/// fsynced before `commit`. [`Ingest::append_persisted`] is the other way to
/// write: straight to the file, hashed later from the file itself
/// ([`Ingest::hash_behind`], at the latest by `commit`), for a writer that
/// must keep everything it received if it is killed the next moment. After a write error the ingest is *poisoned*:
/// further writes and `commit` fail until [`Ingest::recover`] (or
/// [`Ingest::truncate_to`]/[`Ingest::reset`]) re-reads the file, or the ingest
/// is dropped and started again. Dropping an ingest flushes its buffer (so
/// the next ingest resumes after every byte written) and releases the lock.
pub struct Ingest {
    digest: Digest,
    size: Option<u64>,
    dir: PathBuf,
    data_path: PathBuf,
    blob_path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// Hash of the first `hashed` bytes in the file (never of `buf`).
    hasher: Hasher,
    hashed: u64,
    /// Read buffer of `hash_behind`, kept between calls.
    scratch: Vec<u8>,
    /// Bytes in the file.
    written: u64,
    poisoned: bool,
    done: bool,
    _lock: File,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("offset", &self.offset())
            .field("path", &self.data_path)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl ContentStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Self, ContentError> {
        let s = Self {
            root: root.to_path_buf(),
        };
        let open_err = |path: &Path, source| ContentError::Open {
            path: path.to_path_buf(),
            source,
        };
        for dir in [
            s.root.clone(),
            s.root.join("blobs"),
            s.root.join("ingest"),
            s.root.join("blobs").join("sha256"),
        ] {
            ensure_dir(&dir).map_err(|e| open_err(&dir, e))?;
        }
        Ok(s)
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Size of a committed blob, or None.
    pub fn info(&self, digest: &Digest) -> Result<Option<u64>, ContentError> {
        let path = self.path(digest);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ContentError::Info {
                digest: digest.clone(),
                path,
                source,
            }),
        }
    }
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }
    fn ingest_dir(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("ingest")
            .join(digest.algorithm())
            .join(digest.hex())
    }
    pub fn open_blob(&self, digest: &Digest) -> Result<std::fs::File, ContentError> {
        let path = self.path(digest);
        File::open(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                ContentError::NotFound {
                    digest: digest.clone(),
                }
            } else {
                ContentError::OpenBlob {
                    digest: digest.clone(),
                    path,
                    source,
                }
            }
        })
    }
    /// Reads a whole blob and checks its digest (meant for manifests and
    /// configs; stream layers with [`ContentStore::open_blob`]).
    pub fn read_all(&self, digest: &Digest) -> Result<Vec<u8>, ContentError> {
        let mut f = self.open_blob(digest)?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)
            .map_err(|source| ContentError::Read {
                digest: digest.clone(),
                path: self.path(digest),
                source,
            })?;
        let actual = digest.compute_same(&bytes);
        if actual != *digest {
            return Err(ContentError::Corrupt {
                digest: digest.clone(),
                path: self.path(digest),
                actual,
            });
        }
        Ok(bytes)
    }
    /// Writes a whole small blob (manifests, configs) and commits it.
    /// Verifies `expected` if given; returns the digest. A blob that is
    /// already there is not an error.
    pub fn write_all(
        &self,
        bytes: &[u8],
        expected: Option<&Digest>,
    ) -> Result<Digest, ContentError> {
        let digest = match expected {
            Some(d) => {
                let actual = d.compute_same(bytes);
                if actual != *d {
                    return Err(ContentError::DigestMismatch {
                        expected: d.clone(),
                        actual,
                    });
                }
                d.clone()
            }
            None => Digest::sha256_of(bytes),
        };
        if self.info(&digest)?.is_some() {
            return Ok(digest);
        }
        let mut ingest = match self.ingest_blocking(&digest, Some(bytes.len() as u64)) {
            Ok(i) => i,
            Err(ContentError::AlreadyExists { .. }) => return Ok(digest),
            Err(e) => return Err(e),
        };
        if ingest.offset() > 0 {
            ingest.reset()?;
        }
        ingest.append(bytes)?;
        ingest.commit()?;
        Ok(digest)
    }
    /// Starts or resumes the ingest of `expected` (size if known). Waits while
    /// another ingest of the same digest is in progress (same as
    /// [`ContentStore::ingest_blocking`]). Fails with
    /// [`ContentError::AlreadyExists`] if the blob is committed (also when
    /// the ingest waited for finished by committing it).
    pub fn ingest(&self, expected: &Digest, size: Option<u64>) -> Result<Ingest, ContentError> {
        self.start_ingest(expected, size, true)
    }
    /// [`ContentStore::ingest`]: waits for a concurrent ingest of the same digest.
    pub fn ingest_blocking(
        &self,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<Ingest, ContentError> {
        self.start_ingest(expected, size, true)
    }
    /// Like [`ContentStore::ingest`] but fails with [`ContentError::Busy`]
    /// instead of waiting when another ingest of the digest is in progress.
    pub fn try_ingest(&self, expected: &Digest, size: Option<u64>) -> Result<Ingest, ContentError> {
        self.start_ingest(expected, size, false)
    }

    /// Takes the lock of the ingest directory of `digest`; `Ok(None)` if it is
    /// held and `wait` is false.
    fn lock_ingest(&self, digest: &Digest, wait: bool) -> Result<Option<File>, ContentError> {
        let dir = self.ingest_dir(digest);
        let lock_path = dir.join("lock");
        let err = |source| ContentError::Ingest {
            digest: digest.clone(),
            path: lock_path.clone(),
            source,
        };
        loop {
            match fs::create_dir_all(&dir) {
                Ok(()) => {}
                // A finishing ingest removed the directory between our mkdir finding it
                // there and create_dir_all checking that it is one: try again (unless
                // something other than a directory is in the way).
                Err(e)
                    if e.kind() == io::ErrorKind::AlreadyExists
                        && fs::symlink_metadata(&dir).map_or(true, |m| m.is_dir()) =>
                {
                    continue
                }
                Err(e) => return Err(err(e)),
            }
            let f = match OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&lock_path)
            {
                Ok(f) => f,
                // The directory was removed by a finishing ingest: try again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(err(e)),
            };
            if !flock_exclusive(&f, wait).map_err(err)? {
                return Ok(None);
            }
            // The previous holder may have removed (unlinked) the lock file
            // before releasing it; then our lock is on a dead inode.
            let ours = f.metadata().map_err(err)?;
            match fs::metadata(&lock_path) {
                Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => return Ok(Some(f)),
                _ => continue,
            }
        }
    }

    fn start_ingest(
        &self,
        expected: &Digest,
        size: Option<u64>,
        wait: bool,
    ) -> Result<Ingest, ContentError> {
        let exists = || ContentError::AlreadyExists {
            digest: expected.clone(),
        };
        if self.info(expected)?.is_some() {
            return Err(exists());
        }
        let dir = self.ingest_dir(expected);
        let Some(lock) = self.lock_ingest(expected, wait)? else {
            return Err(ContentError::Busy {
                digest: expected.clone(),
                path: dir.join("lock"),
            });
        };
        if self.info(expected)?.is_some() {
            // Committed by the ingest we waited for; tidy up our new directory.
            let _ = remove_ingest_dir(&dir);
            return Err(exists());
        }
        let data_path = dir.join("data");
        let ingest_err = |source| ContentError::Ingest {
            digest: expected.clone(),
            path: data_path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data_path)
            .map_err(ingest_err)?;
        let mut len = file.metadata().map_err(ingest_err)?.len();
        if size.is_some_and(|s| len > s) {
            // Longer than the blob can be: useless.
            file.set_len(0).map_err(ingest_err)?;
            len = 0;
        }
        let hasher = hash_prefix(&file, expected, len).map_err(|source| ContentError::Resume {
            digest: expected.clone(),
            path: data_path.clone(),
            source,
        })?;
        file.seek(SeekFrom::Start(len)).map_err(ingest_err)?;
        if let Some(s) = size {
            // Informational (list_ingests); not needed for correctness.
            let _ = fs::write(dir.join("size"), s.to_string());
        }
        Ok(Ingest {
            digest: expected.clone(),
            size,
            blob_path: self.path(expected),
            dir,
            data_path,
            file,
            buf: Vec::new(),
            hasher,
            hashed: len,
            scratch: Vec::new(),
            written: len,
            poisoned: false,
            done: false,
            _lock: lock,
        })
    }

    /// Deletes a committed blob.
    pub fn delete(&self, digest: &Digest) -> Result<(), ContentError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ContentError::NotFound {
                    digest: digest.clone(),
                })
            }
            Err(source) => {
                return Err(ContentError::Delete {
                    digest: digest.clone(),
                    path,
                    source,
                })
            }
        }
        if let Some(parent) = path.parent() {
            fsync_dir(parent).map_err(|source| ContentError::Delete {
                digest: digest.clone(),
                path: parent.to_path_buf(),
                source,
            })?;
        }
        Ok(())
    }

    /// Entries `(digest, path)` of `<root>/<top>/<alg>/<hex>`, plus paths
    /// that are not named like a digest.
    fn scan(&self, top: &str) -> Result<Scan, ContentError> {
        let base = self.root.join(top);
        let list_err = |path: &Path, source| ContentError::List {
            path: path.to_path_buf(),
            source,
        };
        let mut found = Vec::new();
        let mut stray = Vec::new();
        let algs = match fs::read_dir(&base) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((found, stray)),
            Err(e) => return Err(list_err(&base, e)),
        };
        for alg in algs {
            let alg = alg.map_err(|e| list_err(&base, e))?;
            let alg_path = alg.path();
            if !alg_path.is_dir() {
                stray.push(alg_path);
                continue;
            }
            let alg_name = alg.file_name().to_string_lossy().into_owned();
            for entry in fs::read_dir(&alg_path).map_err(|e| list_err(&alg_path, e))? {
                let entry = entry.map_err(|e| list_err(&alg_path, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                match Digest::parse(&format!("{alg_name}:{name}")) {
                    Ok(d) => found.push((d, entry.path())),
                    Err(_) => stray.push(entry.path()),
                }
            }
        }
        found.sort();
        stray.sort();
        Ok((found, stray))
    }

    /// Committed blobs with sizes, sorted by digest.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>, ContentError> {
        let (found, _) = self.scan("blobs")?;
        let mut out = Vec::with_capacity(found.len());
        for (d, path) in found {
            match fs::metadata(&path) {
                Ok(m) if m.is_file() => out.push((d, m.len())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ContentError::Info {
                        digest: d,
                        path,
                        source,
                    })
                }
            }
        }
        Ok(out)
    }

    /// Partial ingests on disk (in progress or interrupted), sorted by digest.
    pub fn list_ingests(&self) -> Result<Vec<IngestStatus>, ContentError> {
        let (found, _) = self.scan("ingest")?;
        let mut out = Vec::new();
        for (digest, dir) in found {
            let (offset, modified) =
                match fs::metadata(dir.join("data")).or_else(|_| fs::metadata(&dir)) {
                    Ok(m) => (
                        if m.is_file() { m.len() } else { 0 },
                        m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    ),
                    Err(_) => continue,
                };
            let size = fs::read_to_string(dir.join("size"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            out.push(IngestStatus {
                digest,
                offset,
                size,
                modified,
            });
        }
        Ok(out)
    }

    /// Every blob reachable from `roots` (manifests or indexes, with their
    /// media types if known): the roots, the manifests an index lists, and
    /// the config and layers of each manifest. Blobs that are not in the
    /// store (other platforms' manifests, foreign layers) are still listed
    /// but not walked. A root or child manifest that cannot be parsed is an
    /// error, so that garbage collection never runs on a partial answer.
    pub fn referenced<'a>(
        &self,
        roots: impl IntoIterator<Item = (&'a Digest, Option<&'a str>)>,
    ) -> Result<HashSet<Digest>, ContentError> {
        let mut keep = HashSet::new();
        let mut stack: Vec<(Digest, Option<String>)> = roots
            .into_iter()
            .map(|(d, mt)| (d.clone(), mt.map(str::to_string)))
            .collect();
        while let Some((digest, media_type)) = stack.pop() {
            if !keep.insert(digest.clone()) {
                continue;
            }
            let bytes = match self.read_all(&digest) {
                Ok(b) => b,
                Err(ContentError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let doc = AnyManifest::parse(media_type.as_deref(), &bytes)
                .map_err(|source| ContentError::BadManifest { digest, source })?;
            for child in doc.children() {
                let mt = child.media_type.as_str();
                if media_types::is_index(mt) || media_types::is_manifest(mt) {
                    stack.push((child.digest.clone(), Some(mt.to_string())));
                } else {
                    keep.insert(child.digest.clone());
                }
            }
        }
        Ok(keep)
    }

    /// [`ContentStore::referenced`] from image records (their digests and
    /// media types): the `keep` set for [`ContentStore::gc`].
    pub fn referenced_by_records(
        &self,
        records: &[ImageRecord],
    ) -> Result<HashSet<Digest>, ContentError> {
        self.referenced(
            records
                .iter()
                .map(|r| (&r.digest, Some(r.media_type.as_str()))),
        )
    }

    /// Deletes every committed blob not in `keep`, and partial ingests older
    /// than [`DEFAULT_INGEST_MAX_AGE`]. The caller must make sure no pull is
    /// between committing blobs and recording its image (hold the engine's
    /// image lock).
    pub fn gc(&self, keep: &HashSet<Digest>) -> Result<GcReport, ContentError> {
        self.gc_with(keep, &GcOptions::default())
    }

    /// [`ContentStore::gc`] with a choice of which partial ingests to remove.
    /// Ingests in use (locked) are never touched; ingests whose blob is
    /// already committed (left over by a crash) are always removed.
    pub fn gc_with(
        &self,
        keep: &HashSet<Digest>,
        options: &GcOptions,
    ) -> Result<GcReport, ContentError> {
        let mut report = GcReport::default();
        for (digest, size) in self.list()? {
            if keep.contains(&digest) {
                continue;
            }
            match self.delete(&digest) {
                Ok(()) | Err(ContentError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            report.removed_blobs.push(digest);
            report.freed_bytes += size;
        }
        let now = SystemTime::now();
        for status in self.list_ingests()? {
            let committed = self.info(&status.digest)?.is_some();
            let age = now.duration_since(status.modified).unwrap_or_default();
            let stale = match options.ingest_max_age {
                None => true,
                Some(max) => age >= max,
            };
            if !(committed || stale) {
                continue;
            }
            let Some(_lock) = self.lock_ingest(&status.digest, false)? else {
                continue; // in use
            };
            let dir = self.ingest_dir(&status.digest);
            remove_ingest_dir(&dir).map_err(|source| ContentError::Gc { path: dir, source })?;
            report.removed_ingests.push(status.digest);
            report.freed_ingest_bytes += status.offset;
        }
        Ok(report)
    }

    /// Re-hashes every committed blob; reports blobs whose content does not
    /// match their name and stray files. Partial ingests are not checked
    /// (they are verified at commit).
    pub fn verify(&self) -> Result<VerifyReport, ContentError> {
        let (found, stray) = self.scan("blobs")?;
        let mut report = VerifyReport {
            stray,
            ..VerifyReport::default()
        };
        for (digest, path) in found {
            let file = File::open(&path).map_err(|source| ContentError::OpenBlob {
                digest: digest.clone(),
                path: path.clone(),
                source,
            })?;
            let len = file
                .metadata()
                .map_err(|source| ContentError::Read {
                    digest: digest.clone(),
                    path: path.clone(),
                    source,
                })?
                .len();
            let actual = hash_prefix(&file, &digest, len)
                .map_err(|source| ContentError::Read {
                    digest: digest.clone(),
                    path: path.clone(),
                    source,
                })?
                .finish();
            report.checked += 1;
            if actual != digest {
                report.corrupt.push((digest, actual));
            }
        }
        Ok(report)
    }
}

/// Removes an ingest directory: data first, the lock file last.
fn remove_ingest_dir(dir: &Path) -> io::Result<()> {
    remove_if_exists(&dir.join("data"))?;
    remove_if_exists(&dir.join("size"))?;
    remove_if_exists(&dir.join("lock"))?;
    match fs::remove_dir(dir) {
        // Another ingest may already have started afresh in it.
        Err(e)
            if e.kind() != io::ErrorKind::NotFound && e.raw_os_error() != Some(libc::ENOTEMPTY) =>
        {
            Err(e)
        }
        _ => Ok(()),
    }
}

impl Ingest {
    /// Bytes accepted so far, including earlier attempts: where the download
    /// should continue (`Range: bytes=<offset>-`). Equal to the bytes on
    /// disk after `flush()`.
    pub fn offset(&self) -> u64 {
        self.written + self.buf.len() as u64
    }
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
    /// The expected size given to `ingest`, if any.
    pub fn expected_size(&self) -> Option<u64> {
        self.size
    }
    /// The partial data file.
    pub fn path(&self) -> &Path {
        &self.data_path
    }

    fn write_error(&self, source: io::Error) -> ContentError {
        if is_enospc(&source) {
            ContentError::NoSpace {
                digest: self.digest.clone(),
                path: self.data_path.clone(),
                offset: self.written,
            }
        } else {
            ContentError::Write {
                digest: self.digest.clone(),
                path: self.data_path.clone(),
                offset: self.written,
                source,
            }
        }
    }

    fn poisoned_error(&self) -> ContentError {
        ContentError::Poisoned {
            digest: self.digest.clone(),
            path: self.data_path.clone(),
        }
    }

    /// Writes `data` to the file and hashes it. On error the ingest is
    /// poisoned: part of `data` may be on disk.
    fn write_through(&mut self, data: &[u8]) -> Result<(), ContentError> {
        // The hasher must cover the file up to here before it takes `data`.
        self.hash_behind(u64::MAX)?;
        self.write_unhashed(data)?;
        self.hasher.update(data);
        self.hashed += data.len() as u64;
        Ok(())
    }

    /// Writes `data` to the file without hashing it. On error the ingest is
    /// poisoned: part of `data` may be on disk.
    fn write_unhashed(&mut self, data: &[u8]) -> Result<(), ContentError> {
        if let Err(e) = self.file.write_all(data) {
            self.poisoned = true;
            // What reached the disk before the error (e.g. ENOSPC) is a valid
            // prefix; report how much, for the message.
            if let Ok(pos) = self.file.stream_position() {
                self.written = pos;
            }
            return Err(self.write_error(e));
        }
        self.written += data.len() as u64;
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<(), ContentError> {
        if self.poisoned {
            return Err(self.poisoned_error());
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let r = self.write_through(&buf);
        self.buf = buf;
        self.buf.clear();
        r
    }

    /// Appends `data` (the typed-error form of `Write::write_all`).
    pub fn append(&mut self, data: &[u8]) -> Result<(), ContentError> {
        if self.poisoned {
            return Err(self.poisoned_error());
        }
        if let Some(expected) = self.size {
            if self.offset() + data.len() as u64 > expected {
                return Err(ContentError::TooLarge {
                    digest: self.digest.clone(),
                    expected,
                });
            }
        }
        if self.buf.len() + data.len() > BUF_SIZE {
            self.flush_buf()?;
        }
        if data.len() >= BUF_SIZE {
            self.write_through(data)
        } else {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(BUF_SIZE);
            }
            self.buf.extend_from_slice(data);
            Ok(())
        }
    }

    /// Appends `data` straight to the file (a `write(2)`, no buffering and no
    /// hashing): once this returns, the bytes survive the process being
    /// killed and the next ingest resumes after them. The hash is computed
    /// later from the file ([`Ingest::hash_behind`]; `commit` finishes it),
    /// which also means the digest check covers what is really on disk.
    pub fn append_persisted(&mut self, data: &[u8]) -> Result<(), ContentError> {
        if self.poisoned {
            return Err(self.poisoned_error());
        }
        if let Some(expected) = self.size {
            if self.offset() + data.len() as u64 > expected {
                return Err(ContentError::TooLarge {
                    digest: self.digest.clone(),
                    expected,
                });
            }
        }
        self.flush_buf()?;
        self.write_unhashed(data)
    }

    /// Bytes in the file not hashed yet (written with
    /// [`Ingest::append_persisted`]).
    pub fn unhashed(&self) -> u64 {
        self.written - self.hashed
    }

    /// Hashes up to `max` of the [`Ingest::unhashed`] bytes, reading them
    /// back from the file (the page cache, normally); returns how many.
    pub fn hash_behind(&mut self, max: u64) -> Result<u64, ContentError> {
        let end = self.written.min(self.hashed.saturating_add(max));
        let start = self.hashed;
        if end <= start {
            return Ok(0);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = self.hash_range(&mut scratch, end);
        self.scratch = scratch;
        r.map(|()| end - start)
    }

    fn hash_range(&mut self, scratch: &mut Vec<u8>, end: u64) -> Result<(), ContentError> {
        let len = usize::try_from(end - self.hashed)
            .unwrap_or(BUF_SIZE)
            .min(BUF_SIZE);
        if scratch.len() < len {
            scratch.resize(len, 0);
        }
        while self.hashed < end {
            let want = usize::try_from(end - self.hashed)
                .unwrap_or(scratch.len())
                .min(scratch.len());
            let n = match self.file.read_at(&mut scratch[..want], self.hashed) {
                Ok(0) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "file ended at {} bytes, {} were written",
                        self.hashed, self.written
                    ),
                )),
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            }
            .map_err(|source| ContentError::Hash {
                digest: self.digest.clone(),
                path: self.data_path.clone(),
                offset: self.hashed,
                source,
            })?;
            self.hasher.update(&scratch[..n]);
            self.hashed += n as u64;
        }
        Ok(())
    }

    /// Re-reads the first `offset` bytes on disk (dropping any buffered
    /// bytes) and continues from there; clears a poisoned state.
    fn rehash_from_disk(&mut self, offset: Option<u64>) -> Result<u64, ContentError> {
        self.buf.clear();
        let truncate_err = |source, offset| ContentError::Truncate {
            digest: self.digest.clone(),
            path: self.data_path.clone(),
            offset,
            source,
        };
        let len = self
            .file
            .metadata()
            .map_err(|e| truncate_err(e, offset.unwrap_or(0)))?
            .len();
        let target = match offset {
            Some(o) if o > len => {
                return Err(ContentError::TruncateBeyond {
                    digest: self.digest.clone(),
                    offset: o,
                    len,
                })
            }
            Some(o) => o,
            None => match self.size {
                Some(s) if len > s => 0,
                _ => len,
            },
        };
        if target != len {
            self.file
                .set_len(target)
                .map_err(|e| truncate_err(e, target))?;
        }
        self.hasher = hash_prefix(&self.file, &self.digest, target).map_err(|source| {
            ContentError::Resume {
                digest: self.digest.clone(),
                path: self.data_path.clone(),
                source,
            }
        })?;
        self.file
            .seek(SeekFrom::Start(target))
            .map_err(|e| truncate_err(e, target))?;
        self.written = target;
        self.hashed = target;
        self.poisoned = false;
        Ok(target)
    }

    /// Cuts the data back to `offset` bytes (at most what is on disk) and
    /// continues from there, e.g. to realign with a server's `Content-Range`.
    /// Buffered bytes are flushed first unless the ingest is poisoned.
    pub fn truncate_to(&mut self, offset: u64) -> Result<(), ContentError> {
        if !self.poisoned {
            self.flush_buf()?;
        }
        self.rehash_from_disk(Some(offset)).map(|_| ())
    }

    /// Starts over from byte 0 (the server ignored our `Range` and sent the
    /// whole blob with 200).
    pub fn reset(&mut self) -> Result<(), ContentError> {
        self.rehash_from_disk(Some(0)).map(|_| ())
    }

    /// After a write error (e.g. a full disk, once space is freed): drops
    /// buffered bytes, re-hashes what is on disk and returns the new offset.
    pub fn recover(&mut self) -> Result<u64, ContentError> {
        self.rehash_from_disk(None)
    }

    /// Verifies size and digest, fsyncs, and makes the blob visible atomically.
    ///
    /// Fewer bytes than the expected size: [`ContentError::SizeMismatch`],
    /// and the data is kept for a later resume. More bytes, or a wrong
    /// digest: the data is discarded.
    pub fn commit(mut self) -> Result<(), ContentError> {
        self.flush_buf()?;
        self.hash_behind(u64::MAX)?;
        let actual_len = self.written;
        if let Some(expected) = self.size {
            if actual_len != expected {
                if actual_len > expected {
                    self.done = true;
                    let _ = remove_ingest_dir(&self.dir);
                }
                return Err(ContentError::SizeMismatch {
                    digest: self.digest.clone(),
                    expected,
                    actual: actual_len,
                });
            }
        }
        let actual = self.hasher.current();
        if actual != self.digest {
            self.done = true;
            let _ = remove_ingest_dir(&self.dir);
            return Err(ContentError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        let commit_err = |this: &Self, path: &Path, source: io::Error| {
            if is_enospc(&source) {
                this.write_error(source)
            } else {
                ContentError::Commit {
                    digest: this.digest.clone(),
                    path: path.to_path_buf(),
                    source,
                }
            }
        };
        if let Err(e) = self.file.sync_data() {
            return Err(commit_err(&self, &self.data_path, e));
        }
        let blob_dir = self
            .blob_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        if let Err(e) = ensure_dir(&blob_dir) {
            return Err(commit_err(&self, &blob_dir, e));
        }
        if let Err(e) = fs::rename(&self.data_path, &self.blob_path) {
            return Err(commit_err(&self, &self.blob_path, e));
        }
        self.done = true;
        if let Err(e) = fsync_dir(&blob_dir) {
            return Err(commit_err(&self, &blob_dir, e));
        }
        // Leftovers are harmless (gc removes them) — the blob is committed.
        let _ = remove_ingest_dir(&self.dir);
        Ok(())
    }

    /// Throws the partial data away (e.g. after the server sent the wrong bytes).
    pub fn discard(mut self) -> Result<(), ContentError> {
        self.done = true;
        self.buf.clear();
        remove_ingest_dir(&self.dir).map_err(|source| ContentError::Discard {
            digest: self.digest.clone(),
            path: self.dir.clone(),
            source,
        })
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if !self.done && !self.poisoned {
            // Keep every byte written for the next attempt; an ingest that got
            // none (its download failed at once) leaves nothing behind.
            let _ = self.flush_buf();
            if self.offset() == 0 {
                let _ = remove_ingest_dir(&self.dir);
            }
        }
    }
}

impl std::io::Write for Ingest {
    /// Appends all of `buf` or fails; errors carry a [`ContentError`]
    /// (`ContentError::from_ingest_io` gets it back), with kind
    /// `StorageFull` for a full disk.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.append(buf)
            .map(|()| buf.len())
            .map_err(|e| io::Error::new(e.io_kind(), e))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_buf().map_err(|e| io::Error::new(e.io_kind(), e))
    }
}

#[cfg(test)]
#[path = "content_tests.rs"]
mod tests;
