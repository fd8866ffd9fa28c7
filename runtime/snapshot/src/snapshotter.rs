//! Committed layers by chain id, and per-container root filesystems.
//!
//! Layout under the root directory:
//! - `snapshots/<hex>/fs`: a committed layer (overlay mode: the layer alone, a lower dir; copy
//!   mode: the whole tree up to this layer), `snapshots/<hex>/parent`: the parent chain id.
//! - `snapshots/.tmp-<random>`: unpacks in progress, renamed into place on success.
//! - `l/<short>`: a short symlink to each `snapshots/<hex>/fs`, used in overlay lowerdir lists.
//! - `active/<key>/{upper,work}` (overlay) or `active/<key>/fs` (copy), `active/<key>/parent`.
//!
//! The chain id is `sha256:<hex>` (OCI: `chainid(1) = diffid(1)`,
//! `chainid(n) = sha256(chainid(n-1) + " " + diffid(n))`); directories use the hex part.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::export::export_tar;
use crate::mounts::{self, Mounts};
use crate::pipe::chunk_pipe;
use crate::sys;
use crate::unpack::{unpack_layer, UnpackError, UnpackOptions, UnpackStats, WhiteoutMode};

/// Errors from the [`Snapshotter`].
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("invalid chain id {0:?}")]
    BadChainId(String),
    #[error("invalid snapshot key {0:?}")]
    BadKey(String),
    #[error("layer {0} not found")]
    NotFound(String),
    #[error("active snapshot {0} not found")]
    KeyNotFound(String),
    #[error("active snapshot {0} already exists")]
    KeyExists(String),
    #[error("layer {id} is in use by {user}")]
    InUse { id: String, user: String },
    #[error("unpacking layer {id} failed")]
    Unpack {
        id: String,
        #[source]
        source: UnpackError,
    },
    #[error("copying layer {id} for the copy-based fallback failed")]
    Copy {
        id: String,
        #[source]
        source: io::Error,
    },
    #[error("{op} {path:?} failed")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// How root filesystems are assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    Overlay,
    /// Layers applied over one another by copying (for filesystems without overlayfs).
    Copy,
    /// Overlay if a test mount works under the root directory, else copy.
    Auto,
}

/// Whether a [`SnapshotUsage`] is a committed layer or a container's writable snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageKind {
    Layer,
    Container,
}

/// Disk usage of one snapshot (apparent bytes; hard-linked inodes counted once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotUsage {
    /// The chain id (`sha256:…`) or the container key.
    pub id: String,
    pub kind: UsageKind,
    pub parent: Option<String>,
    pub size: u64,
    pub inodes: u64,
}

/// Result of [`Snapshotter::prepare_layer`].
#[derive(Debug, Clone)]
pub struct LayerOutcome {
    pub chain_id: String,
    /// False when the layer was already there (or another unpack won the race).
    pub created: bool,
    /// Stats of our unpack, if one ran.
    pub stats: Option<UnpackStats>,
}

/// Computes the OCI chain id of a layer from its parent's chain id and its diff_id.
pub fn chain_id(parent: Option<&str>, diff_id: &str) -> String {
    match parent {
        None => diff_id.to_string(),
        Some(p) => {
            let mut h = Sha256::new();
            h.update(p.as_bytes());
            h.update(b" ");
            h.update(diff_id.as_bytes());
            format!("sha256:{}", hex::encode(h.finalize()))
        }
    }
}

fn chain_hex(id: &str) -> Result<&str, SnapshotError> {
    let hex = id
        .strip_prefix("sha256:")
        .ok_or_else(|| SnapshotError::BadChainId(id.to_string()))?;
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(hex)
    } else {
        Err(SnapshotError::BadChainId(id.to_string()))
    }
}

fn check_key(key: &str) -> Result<(), SnapshotError> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::BadKey(key.to_string()))
    }
}

/// Short link name for a layer: 16 hex chars of its chain id.
fn short(hex: &str) -> &str {
    &hex[..16]
}

/// The snapshotter. Cheap to share behind an `Arc`; metadata changes are serialised by an
/// internal lock, unpacks run concurrently.
pub struct Snapshotter {
    root: PathBuf,
    copy: bool,
    lock: Mutex<()>,
}

impl Snapshotter {
    /// Opens (creating) a snapshotter rooted at `root`, and cleans up leftover temp dirs.
    pub fn new(root: impl Into<PathBuf>, mode: SnapshotMode) -> Result<Self, SnapshotError> {
        let root: PathBuf = root.into();
        for d in ["snapshots", "active", "l"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io_err("create", &p))?;
        }
        let copy = match mode {
            SnapshotMode::Overlay => false,
            SnapshotMode::Copy => true,
            SnapshotMode::Auto => {
                match probe_overlay(&root) {
                    Ok(()) => false,
                    Err(why) => {
                        // Rare and costly (every container copies its layers): say so once.
                        eprintln!("berth: overlayfs is not usable under {} ({why}); layers will be copied", root.display());
                        true
                    }
                }
            }
        };
        let s = Snapshotter {
            root,
            copy,
            lock: Mutex::new(()),
        };
        s.remove_stale_temps();
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True in the copy-based fallback mode.
    pub fn is_copy_mode(&self) -> bool {
        self.copy
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes `.tmp-*` dirs left by a crash. Only call when no unpack of this root is running
    /// (at construction).
    fn remove_stale_temps(&self) {
        let dir = self.root.join("snapshots");
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    fn snap_dir(&self, hex: &str) -> PathBuf {
        self.root.join("snapshots").join(hex)
    }

    /// The directory holding a committed layer's tree.
    pub fn layer_dir(&self, chain_id: &str) -> Result<PathBuf, SnapshotError> {
        Ok(self.snap_dir(chain_hex(chain_id)?).join("fs"))
    }

    /// Whether a layer with this chain id is committed.
    pub fn exists(&self, chain_id: &str) -> bool {
        chain_hex(chain_id)
            .map(|h| self.snap_dir(h).join("fs").is_dir())
            .unwrap_or(false)
    }

    /// The parent chain id recorded for a committed layer.
    pub fn parent_of(&self, chain_id: &str) -> Result<Option<String>, SnapshotError> {
        let p = self.snap_dir(chain_hex(chain_id)?).join("parent");
        match std::fs::read_to_string(&p) {
            Ok(s) if s.trim().is_empty() => Ok(None),
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(SnapshotError::NotFound(chain_id.to_string()))
            }
            Err(e) => Err(io_err("read", &p)(e)),
        }
    }

    /// Makes sure layer `chain_id` (whose parent is `parent`) is committed, calling `unpack`
    /// to fill a fresh temp directory if not. `unpack` gets the directory and the whiteout mode
    /// to use (Delete in copy mode, where the directory already holds the parent's tree).
    /// On error nothing is left behind; if another caller commits the same layer first, our
    /// temp dir is discarded and `created` is false.
    pub fn prepare_layer<F>(
        &self,
        chain_id: &str,
        parent: Option<&str>,
        unpack: F,
    ) -> Result<LayerOutcome, SnapshotError>
    where
        F: FnOnce(&Path, WhiteoutMode) -> Result<UnpackStats, UnpackError>,
    {
        let hex = chain_hex(chain_id)?;
        if let Some(p) = parent {
            chain_hex(p)?;
        }
        let done = |created, stats| LayerOutcome {
            chain_id: chain_id.to_string(),
            created,
            stats,
        };
        if self.exists(chain_id) {
            self.ensure_link(hex)?;
            return Ok(done(false, None));
        }
        if let Some(p) = parent {
            if !self.exists(p) {
                return Err(SnapshotError::NotFound(p.to_string()));
            }
        }
        let tmp = self
            .root
            .join("snapshots")
            .join(format!(".tmp-{}", sys::random_hex()));
        let result = self.fill_temp(&tmp, chain_id, parent, unpack);
        let stats = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let _g = self.guard();
        let dest = self.snap_dir(hex);
        match sys::rename_noreplace(&tmp, &dest) {
            Ok(()) => {
                self.ensure_link(hex)?;
                Ok(done(true, Some(stats)))
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY)) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(done(false, Some(stats)))
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(io_err("rename", &dest)(e))
            }
        }
    }

    fn fill_temp<F>(
        &self,
        tmp: &Path,
        chain_id: &str,
        parent: Option<&str>,
        unpack: F,
    ) -> Result<UnpackStats, SnapshotError>
    where
        F: FnOnce(&Path, WhiteoutMode) -> Result<UnpackStats, UnpackError>,
    {
        std::fs::create_dir(tmp).map_err(io_err("create", tmp))?;
        let fs = tmp.join("fs");
        std::fs::create_dir(&fs).map_err(io_err("create", &fs))?;
        let pfile = tmp.join("parent");
        std::fs::write(&pfile, parent.unwrap_or("")).map_err(io_err("write", &pfile))?;
        let mode = if self.copy {
            if let Some(p) = parent {
                copy_tree(&self.layer_dir(p)?, &fs).map_err(|source| SnapshotError::Copy {
                    id: p.to_string(),
                    source,
                })?;
            }
            WhiteoutMode::Delete
        } else {
            WhiteoutMode::Overlay
        };
        unpack(&fs, mode).map_err(|source| SnapshotError::Unpack {
            id: chain_id.to_string(),
            source,
        })
    }

    /// [`prepare_layer`](Self::prepare_layer) with [`unpack_layer`] from a reader.
    pub fn prepare_layer_from(
        &self,
        chain_id: &str,
        parent: Option<&str>,
        reader: impl std::io::Read + Send,
        media_type: &str,
        opts: &UnpackOptions,
    ) -> Result<LayerOutcome, SnapshotError> {
        self.prepare_layer(chain_id, parent, |dir, mode| {
            let mut o = opts.clone();
            o.whiteouts = mode;
            unpack_layer(reader, media_type, dir, &o)
        })
    }

    fn ensure_link(&self, hex: &str) -> Result<(), SnapshotError> {
        let link = self.root.join("l").join(short(hex));
        let target = PathBuf::from("../snapshots").join(hex).join("fs");
        match std::fs::read_link(&link) {
            Ok(t) if t == target => return Ok(()),
            Ok(_) => {
                // A short-id collision: extremely unlikely; keep the first, the long path is
                // used for this layer instead (see `lower_path`).
                return Ok(());
            }
            Err(_) => {}
        }
        match std::os::unix::fs::symlink(&target, &link) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_err("symlink", &link)(e)),
        }
    }

    /// The path used for a layer in an overlay lowerdir list: the short link when it is ours.
    fn lower_path(&self, hex: &str) -> Result<PathBuf, SnapshotError> {
        self.ensure_link(hex)?;
        let link = self.root.join("l").join(short(hex));
        let target = PathBuf::from("../snapshots").join(hex).join("fs");
        match std::fs::read_link(&link) {
            Ok(t) if t == target => Ok(link),
            _ => Ok(self.snap_dir(hex).join("fs")),
        }
    }

    /// Chain ids from `top` down to the base layer.
    fn chain(&self, top: &str) -> Result<Vec<String>, SnapshotError> {
        let mut out = Vec::new();
        let mut cur = Some(top.to_string());
        while let Some(c) = cur {
            if !self.exists(&c) {
                return Err(SnapshotError::NotFound(c));
            }
            if out.len() > 4096 || out.contains(&c) {
                return Err(SnapshotError::BadChainId(c));
            }
            cur = self.parent_of(&c)?;
            out.push(c);
        }
        Ok(out)
    }

    fn active_dir(&self, key: &str) -> PathBuf {
        self.root.join("active").join(key)
    }

    /// Creates a container's writable snapshot on top of `top` (None: an empty rootfs) and
    /// returns how to mount it.
    pub fn prepare_container(&self, key: &str, top: Option<&str>) -> Result<Mounts, SnapshotError> {
        self.prepare_active(key, top, false)
    }

    /// Creates a read-only view of `top`: a single bind for one layer (or in copy mode), else an
    /// overlay without an upper dir.
    pub fn prepare_view(&self, key: &str, top: &str) -> Result<Mounts, SnapshotError> {
        self.prepare_active(key, Some(top), true)
    }

    fn prepare_active(
        &self,
        key: &str,
        top: Option<&str>,
        readonly: bool,
    ) -> Result<Mounts, SnapshotError> {
        check_key(key)?;
        let _g = self.guard();
        let chain = match top {
            Some(t) => {
                chain_hex(t)?;
                self.chain(t)?
            }
            None => Vec::new(),
        };
        let dir = self.active_dir(key);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(SnapshotError::KeyExists(key.to_string()))
            }
            Err(e) => return Err(io_err("create", &dir)(e)),
        }
        let r = self.fill_active(&dir, top, &chain, readonly);
        if r.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        r
    }

    fn fill_active(
        &self,
        dir: &Path,
        top: Option<&str>,
        chain: &[String],
        readonly: bool,
    ) -> Result<Mounts, SnapshotError> {
        let pfile = dir.join("parent");
        std::fs::write(&pfile, top.unwrap_or("")).map_err(io_err("write", &pfile))?;
        if readonly {
            std::fs::write(dir.join("view"), "").map_err(io_err("write", dir))?;
        }
        let mkdir = |name: &str| -> Result<PathBuf, SnapshotError> {
            let p = dir.join(name);
            std::fs::create_dir(&p).map_err(io_err("create", &p))?;
            Ok(p)
        };
        if self.copy {
            if readonly {
                if let Some(t) = top {
                    return Ok(Mounts::Bind {
                        source: self.layer_dir(t)?,
                        readonly: true,
                    });
                }
            }
            let fs = mkdir("fs")?;
            if let Some(t) = top {
                copy_tree(&self.layer_dir(t)?, &fs).map_err(|source| SnapshotError::Copy {
                    id: t.to_string(),
                    source,
                })?;
            }
            return Ok(Mounts::Bind {
                source: fs,
                readonly,
            });
        }
        let mut lowers = Vec::with_capacity(chain.len());
        for c in chain {
            lowers.push(self.lower_path(chain_hex(c)?)?);
        }
        if readonly {
            if lowers.len() == 1 {
                return Ok(Mounts::Bind {
                    source: self.layer_dir(&chain[0])?,
                    readonly: true,
                });
            }
            return Ok(Mounts::Overlay {
                lowerdirs: lowers,
                upperdir: None,
                workdir: None,
            });
        }
        let upper = mkdir("upper")?;
        let work = mkdir("work")?;
        if lowers.is_empty() {
            return Ok(Mounts::Bind {
                source: upper,
                readonly: false,
            });
        }
        Ok(Mounts::Overlay {
            lowerdirs: lowers,
            upperdir: Some(upper),
            workdir: Some(work),
        })
    }

    /// The mounts of an existing active snapshot (e.g. after a daemon restart).
    pub fn mounts(&self, key: &str) -> Result<Mounts, SnapshotError> {
        check_key(key)?;
        let dir = self.active_dir(key);
        let top = std::fs::read_to_string(dir.join("parent"))
            .map_err(|_| SnapshotError::KeyNotFound(key.to_string()))?;
        let top = top.trim();
        let top = (!top.is_empty()).then_some(top);
        let readonly = dir.join("view").exists();
        let chain = match top {
            Some(t) => self.chain(t)?,
            None => Vec::new(),
        };
        if self.copy {
            return Ok(match (readonly, top) {
                (true, Some(t)) => Mounts::Bind {
                    source: self.layer_dir(t)?,
                    readonly: true,
                },
                _ => Mounts::Bind {
                    source: dir.join("fs"),
                    readonly,
                },
            });
        }
        let mut lowers = Vec::new();
        for c in &chain {
            lowers.push(self.lower_path(chain_hex(c)?)?);
        }
        Ok(match (readonly, lowers.len()) {
            (true, 1) => Mounts::Bind {
                source: self.layer_dir(&chain[0])?,
                readonly: true,
            },
            (true, _) => Mounts::Overlay {
                lowerdirs: lowers,
                upperdir: None,
                workdir: None,
            },
            (false, 0) => Mounts::Bind {
                source: dir.join("upper"),
                readonly: false,
            },
            (false, _) => Mounts::Overlay {
                lowerdirs: lowers,
                upperdir: Some(dir.join("upper")),
                workdir: Some(dir.join("work")),
            },
        })
    }

    /// Removes a container's snapshot (it must not be mounted any more).
    pub fn remove_container(&self, key: &str) -> Result<(), SnapshotError> {
        check_key(key)?;
        let _g = self.guard();
        let dir = self.active_dir(key);
        if !dir.is_dir() {
            return Err(SnapshotError::KeyNotFound(key.to_string()));
        }
        let gone = self
            .root
            .join("active")
            .join(format!(".rm-{}", sys::random_hex()));
        std::fs::rename(&dir, &gone).map_err(io_err("rename", &dir))?;
        std::fs::remove_dir_all(&gone).map_err(io_err("remove", &gone))
    }

    /// Removes a committed layer; refused while a child layer or a container uses it.
    pub fn remove_layer(&self, chain_id: &str) -> Result<(), SnapshotError> {
        let hex = chain_hex(chain_id)?;
        let _g = self.guard();
        if !self.exists(chain_id) {
            return Err(SnapshotError::NotFound(chain_id.to_string()));
        }
        for (kind, dir) in [("layer", "snapshots"), ("container", "active")] {
            let base = self.root.join(dir);
            let rd = std::fs::read_dir(&base).map_err(io_err("read", &base))?;
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                if let Ok(p) = std::fs::read_to_string(e.path().join("parent")) {
                    if p.trim() == chain_id {
                        let user = if kind == "layer" {
                            format!("layer sha256:{name}")
                        } else {
                            format!("container {name}")
                        };
                        return Err(SnapshotError::InUse {
                            id: chain_id.to_string(),
                            user,
                        });
                    }
                }
            }
        }
        let link = self.root.join("l").join(short(hex));
        let ours = PathBuf::from("../snapshots").join(hex).join("fs");
        if std::fs::read_link(&link)
            .map(|t| t == ours)
            .unwrap_or(false)
        {
            let _ = std::fs::remove_file(&link);
        }
        let dir = self.snap_dir(hex);
        let gone = self
            .root
            .join("snapshots")
            .join(format!(".tmp-rm-{}", sys::random_hex()));
        std::fs::rename(&dir, &gone).map_err(io_err("rename", &dir))?;
        std::fs::remove_dir_all(&gone).map_err(io_err("remove", &gone))
    }

    /// Committed layer chain ids.
    pub fn layers(&self) -> Result<Vec<String>, SnapshotError> {
        let base = self.root.join("snapshots");
        let rd = std::fs::read_dir(&base).map_err(io_err("read", &base))?;
        let mut v: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .map(|n| format!("sha256:{n}"))
            .collect();
        v.sort();
        Ok(v)
    }

    /// Disk usage per layer and per container snapshot (for `system df`).
    pub fn usage(&self) -> Result<Vec<SnapshotUsage>, SnapshotError> {
        let mut out = Vec::new();
        for id in self.layers()? {
            let (size, inodes) = du(&self.layer_dir(&id)?);
            let parent = self.parent_of(&id).ok().flatten();
            out.push(SnapshotUsage {
                id,
                kind: UsageKind::Layer,
                parent,
                size,
                inodes,
            });
        }
        let base = self.root.join("active");
        let rd = std::fs::read_dir(&base).map_err(io_err("read", &base))?;
        let mut keys: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        keys.sort();
        for key in keys {
            let dir = self.active_dir(&key);
            let tree = if self.copy {
                dir.join("fs")
            } else {
                dir.join("upper")
            };
            let (size, inodes) = if tree.is_dir() { du(&tree) } else { (0, 0) };
            let parent = std::fs::read_to_string(dir.join("parent"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty());
            out.push(SnapshotUsage {
                id: key,
                kind: UsageKind::Container,
                parent,
                size,
                inodes,
            });
        }
        Ok(out)
    }

    /// Mounts an active snapshot at `target` (convenience over [`mounts::mount`]).
    pub fn mount(&self, m: &Mounts, target: &Path) -> Result<(), mounts::MountError> {
        mounts::mount(m, target)
    }
}

/// Apparent size and inode count of a tree, hard links counted once, symlinks not followed.
fn du(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    let (mut size, mut inodes) = (0u64, 0u64);
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.path().symlink_metadata() else {
                continue;
            };
            if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            inodes += 1;
            if md.is_dir() {
                stack.push(e.path());
            } else {
                size += md.len();
            }
        }
    }
    (size, inodes)
}

/// Copies a tree (everything: hard links, xattrs, devices, owners, modes, times) by streaming
/// an export into an unpack on two threads.
fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let opts = UnpackOptions {
        max_bytes: u64::MAX,
        max_entries: u64::MAX,
        pipelined: false,
        ..UnpackOptions::default()
    };
    std::thread::scope(|s| {
        let (sender, reader) = chunk_pipe(4);
        let producer = s.spawn(move || {
            let mut w = sender.into_writer(1 << 20);
            match export_tar(src, &mut w) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let msg = e.to_string();
                    w.fail(io::Error::other(msg.clone()));
                    Err(io::Error::other(msg))
                }
            }
        });
        let r = unpack_layer(reader, "", dst, &opts);
        let p = producer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("export thread panicked")));
        p?;
        r.map(drop).map_err(io::Error::other)
    })
}

/// Tries an overlay mount (with an upper dir and a whiteout) under `root`; on failure says
/// which step failed, so the fallback to copying is explained in the daemon's log.
fn probe_overlay(root: &Path) -> Result<(), String> {
    let probe = root.join(format!(".probe-{}", sys::random_hex()));
    let result = (|| -> Result<(), String> {
        for d in ["l1", "l2", "u", "w", "m"] {
            std::fs::create_dir_all(probe.join(d))
                .map_err(|e| format!("creating probe dirs: {e}"))?;
        }
        // A whiteout (0/0 char device) must be creatable for overlay-format layers.
        let l1 = sys::open_dir(&probe.join("l1")).map_err(|e| format!("opening probe dir: {e}"))?;
        use std::os::fd::AsFd;
        sys::mknodat(l1.as_fd(), c"wh", libc::S_IFCHR, 0)
            .map_err(|e| format!("creating a whiteout device: {e}"))?;
        let m = Mounts::Overlay {
            lowerdirs: vec![probe.join("l1"), probe.join("l2")],
            upperdir: Some(probe.join("u")),
            workdir: Some(probe.join("w")),
        };
        mounts::mount(&m, &probe.join("m")).map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            format!("{e}{cause}")
        })?;
        let _ = mounts::unmount(&probe.join("m"));
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&probe);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids() {
        let d1 = format!("sha256:{}", "a".repeat(64));
        let d2 = format!("sha256:{}", "b".repeat(64));
        assert_eq!(chain_id(None, &d1), d1);
        let c2 = chain_id(Some(&d1), &d2);
        let expect = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(format!("{d1} {d2}")))
        );
        assert_eq!(c2, expect);
        assert!(chain_hex(&c2).is_ok());
        assert!(chain_hex("sha256:../../x").is_err());
        assert!(check_key("abc-1.2_x").is_ok());
        assert!(check_key("../x").is_err());
        assert!(check_key(".hidden").is_err());
    }
}
