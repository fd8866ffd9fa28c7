//! Volumes with Docker's `local` driver: a directory per volume under the
//! data root, optionally backed by a mount the driver options describe
//! (`type`, `device`, `o`: a tmpfs, or a bind of a host directory).
//!
//! ```text
//! <root>/volumes/<name>/volume.json   the Volume record (atomic replace)
//! <root>/volumes/<name>/_data         the data (or the driver mount's mount point)
//! ```
//!
//! A volume exists once its `volume.json` does: creation makes the
//! directory, then writes the record atomically, so a crash in between
//! leaves a directory without a record, which [`VolumeService::open`]
//! removes. Which containers use a volume is not stored here: the container
//! records are the truth, and the caller passes a lookup in (evaluated under
//! this service's lock, so a remove cannot race a container taking a hold).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// The label Docker (23+) puts on anonymous volumes; `prune` removes only
/// these unless told `all`.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

const RECORD: &str = "volume.json";
const DATA: &str = "_data";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// 404.
    #[error("get {0}: no such volume")]
    NotFound(String),
    /// 400.
    #[error("create {0}: \"{0}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path")]
    InvalidName(String),
    /// 400.
    #[error("create {name}: {message}")]
    InvalidOption { name: String, message: String },
    /// 400.
    #[error("{0}")]
    InvalidParameter(String),
    /// 409.
    #[error("remove {name}: volume is in use - [{}]", .users.join(", "))]
    InUse { name: String, users: Vec<String> },
    /// 409: create of an existing name with another driver.
    #[error("create {0}: a volume with the same name already exists with a different driver")]
    Conflict(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: corrupt volume record", .path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl VolumeError {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| VolumeError::Io { context, source }
    }

    /// The HTTP status the Docker Engine API uses for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            VolumeError::NotFound(_) => 404,
            VolumeError::InvalidName(_)
            | VolumeError::InvalidOption { .. }
            | VolumeError::InvalidParameter(_) => 400,
            VolumeError::InUse { .. } | VolumeError::Conflict(_) => 409,
            _ => 500,
        }
    }
}

type Result<T, E = VolumeError> = std::result::Result<T, E>;

/// What `create` takes (Docker's `VolumeCreateBody`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeCreate {
    /// Generated (64 hex digits) when absent: an anonymous volume.
    pub name: Option<String>,
    /// Empty or `local`.
    pub driver: String,
    /// The local driver's `type`, `device`, `o`.
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// A volume as persisted and inspected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Volume {
    pub name: String,
    pub driver: String,
    /// The host path containers bind (`…/volumes/<name>/_data`).
    pub mountpoint: String,
    /// RFC 3339.
    pub created_at: String,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
}

impl Volume {
    /// Created without a name (`-v /path`, an image VOLUME).
    pub fn is_anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS_LABEL)
    }

    /// Backed by a driver mount (`type`/`device` options).
    fn has_mount(&self) -> bool {
        self.options.contains_key("device") || self.options.contains_key("type")
    }
}

/// `list` and `prune` filters; empty lists do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeFilters {
    /// Only volumes no container uses (`true`) or only used ones (`false`).
    pub dangling: Option<bool>,
    /// Substrings of the name.
    pub name: Vec<String>,
    /// `key` or `key=value`; all must match.
    pub label: Vec<String>,
    /// `label!=`: none may match.
    pub label_not: Vec<String>,
    pub driver: Vec<String>,
    /// `prune` only: also named volumes.
    pub all: bool,
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumePrune {
    pub deleted: Vec<String>,
    pub space_reclaimed: u64,
}

/// A volume with its usage (`system df`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeUsage {
    pub volume: Volume,
    pub size: u64,
    pub ref_count: usize,
}

/// Containers using each volume, by volume name.
pub type Users = BTreeMap<String, Vec<String>>;

/// The volume store; cheap to clone.
#[derive(Clone)]
pub struct VolumeService {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// Serializes create/remove/prune and holds.
    ops: Mutex<()>,
    /// Volumes a container being created is about to use (not yet in its
    /// record): never removed meanwhile.
    held: Mutex<HashMap<String, usize>>,
    /// `create` and `destroy` events go here.
    events: crate::events::EventBus,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps a volume from being removed until dropped.
pub struct VolumeHold {
    service: VolumeService,
    name: String,
}

impl Drop for VolumeHold {
    fn drop(&mut self) {
        let mut held = lock(&self.service.inner.held);
        if let Some(n) = held.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.name);
            }
        }
    }
}

/// Docker's rule for local volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn random_name() -> Result<String> {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(VolumeError::io("reading /dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{RECORD}.tmp{}", std::process::id()));
    let ctx = || format!("writing {}", path.display());
    let mut file = File::create(&tmp).map_err(VolumeError::io(ctx()))?;
    file.write_all(data).map_err(VolumeError::io(ctx()))?;
    file.sync_all().map_err(VolumeError::io(ctx()))?;
    drop(file);
    fs::rename(&tmp, path).map_err(VolumeError::io(ctx()))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// RFC 3339 to the second (`2026-01-02T03:04:05Z`), as Docker shows a
/// volume's CreatedAt.
fn now_seconds_rfc3339() -> String {
    let secs = crate::containers::store::now_nanos().div_euclid(1_000_000_000);
    let full = crate::containers::store::format_time(secs * 1_000_000_000);
    match full.find('.') {
        Some(dot) => format!("{}Z", &full[..dot]),
        None => full,
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Bytes used under `path`, not crossing into other file systems and
/// counting hard-linked files once.
pub fn disk_usage(path: &Path) -> u64 {
    fn walk(path: &Path, dev: u64, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
        let Ok(entries) = fs::read_dir(path) else {
            return 0;
        };
        let mut total = 0;
        for e in entries.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.dev() != dev {
                continue;
            }
            if md.is_dir() {
                total += walk(&e.path(), dev, seen);
            } else if md.nlink() <= 1 || seen.insert((md.dev(), md.ino())) {
                total += md.blocks() * 512;
            }
        }
        total
    }
    match fs::symlink_metadata(path) {
        Ok(md) => walk(path, md.dev(), &mut Default::default()),
        Err(_) => 0,
    }
}

/// The `o` option split into mount flags and the data string (`mount -o`).
fn mount_flags(o: &str) -> Result<(nix::mount::MsFlags, String), String> {
    use nix::mount::MsFlags;
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for opt in o.split(',').filter(|s| !s.is_empty()) {
        match opt {
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => {}
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "defaults" | "suid" | "dev" | "exec" | "async" => {}
            other if other.starts_with("addr=") => {
                return Err(format!(
                    "mount option {other:?} (network file systems) is not supported"
                ))
            }
            other => data.push(other.to_string()),
        }
    }
    Ok((flags, data.join(",")))
}

/// Checks the local driver's options as Docker does.
fn validate_options(name: &str, opts: &BTreeMap<String, String>) -> Result<()> {
    let bad = |message: String| VolumeError::InvalidOption {
        name: name.to_string(),
        message,
    };
    for key in opts.keys() {
        if !matches!(key.as_str(), "type" | "device" | "o") {
            return Err(bad(format!("invalid option key: {key:?}")));
        }
    }
    let ty = opts.get("type").map(String::as_str).unwrap_or("");
    let device = opts.get("device").map(String::as_str).unwrap_or("");
    let o = opts.get("o").map(String::as_str).unwrap_or("");
    if !opts.is_empty() && ty.is_empty() {
        return Err(bad("missing required option: \"type\"".into()));
    }
    if !ty.is_empty() && device.is_empty() {
        return Err(bad("missing required option: \"device\"".into()));
    }
    let (flags, _) = mount_flags(o).map_err(bad)?;
    if flags.contains(nix::mount::MsFlags::MS_BIND) && !Path::new(device).is_absolute() {
        return Err(bad(format!(
            "bind device {device:?} must be an absolute host path"
        )));
    }
    Ok(())
}

impl VolumeService {
    /// Opens `<data_root>/volumes`, removing what a crash left half-made.
    pub fn open(data_root: &Path) -> Result<Self> {
        Self::open_with_events(data_root, crate::events::EventBus::new())
    }

    /// [`VolumeService::open`], reporting volume events to `events`.
    pub fn open_with_events(data_root: &Path, events: crate::events::EventBus) -> Result<Self> {
        let root = data_root.join("volumes");
        fs::create_dir_all(&root)
            .map_err(VolumeError::io(format!("creating {}", root.display())))?;
        if let Ok(entries) = fs::read_dir(&root) {
            for e in entries.flatten() {
                let dir = e.path();
                if dir.is_dir() && !dir.join(RECORD).exists() {
                    // Created but never recorded: nothing can use it yet.
                    let _ = fs::remove_dir(dir.join(DATA));
                    let _ = fs::remove_dir_all(&dir);
                }
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                ops: Mutex::new(()),
                held: Mutex::new(HashMap::new()),
                events,
            }),
        })
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.inner.root.join(name)
    }

    /// Creates a volume; an existing one of that name (same driver) is
    /// returned as it is, as Docker does. The flag tells if it is new.
    pub fn create(&self, req: VolumeCreate) -> Result<(Volume, bool)> {
        let _ops = lock(&self.inner.ops);
        self.create_locked(req)
    }

    fn create_locked(&self, req: VolumeCreate) -> Result<(Volume, bool)> {
        let driver = if req.driver.is_empty() {
            "local".to_string()
        } else {
            req.driver.clone()
        };
        let (name, anonymous) = match req.name.filter(|n| !n.is_empty()) {
            Some(n) => (n, false),
            None => (random_name()?, true),
        };
        if !valid_name(&name) {
            return Err(VolumeError::InvalidName(name));
        }
        if driver != "local" {
            return Err(VolumeError::InvalidOption {
                name,
                message: format!(
                    "error looking up volume plugin {driver}: plugin \"{driver}\" not found"
                ),
            });
        }
        if let Ok(existing) = self.read(&name) {
            if existing.driver != driver {
                return Err(VolumeError::Conflict(name));
            }
            return Ok((existing, false));
        }
        validate_options(&name, &req.driver_opts)?;
        let dir = self.dir(&name);
        let data = dir.join(DATA);
        fs::create_dir_all(&data)
            .map_err(VolumeError::io(format!("creating {}", data.display())))?;
        let mut labels = req.labels;
        if anonymous {
            labels.insert(ANONYMOUS_LABEL.into(), String::new());
        }
        let volume = Volume {
            name: name.clone(),
            driver,
            mountpoint: data.display().to_string(),
            created_at: now_seconds_rfc3339(),
            labels,
            options: req.driver_opts,
        };
        let written = serde_json::to_vec_pretty(&volume)
            .map_err(|source| VolumeError::Corrupt {
                path: dir.join(RECORD),
                source,
            })
            .and_then(|bytes| write_atomic(&dir.join(RECORD), &bytes));
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        sync_dir(&self.inner.root);
        self.event("create", &volume);
        Ok((volume, true))
    }

    fn read(&self, name: &str) -> Result<Volume> {
        if !valid_name(name) {
            return Err(VolumeError::NotFound(name.to_string()));
        }
        let path = self.dir(name).join(RECORD);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VolumeError::NotFound(name.to_string()))
            }
            Err(e) => return Err(VolumeError::io(format!("reading {}", path.display()))(e)),
        };
        serde_json::from_slice(&data).map_err(|source| VolumeError::Corrupt { path, source })
    }

    /// One volume (`GET /volumes/{name}`).
    pub fn inspect(&self, name: &str) -> Result<Volume> {
        self.read(name)
    }

    fn names(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.inner.root) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| valid_name(n))
            .collect();
        names.sort();
        names
    }

    fn matches(v: &Volume, users: &Users, f: &VolumeFilters) -> bool {
        let label_match = |l: &String| match l.split_once('=') {
            Some((k, val)) => v.labels.get(k).is_some_and(|x| x == val),
            None => v.labels.contains_key(l.as_str()),
        };
        let in_use = users.get(&v.name).is_some_and(|u| !u.is_empty());
        f.dangling.is_none_or(|d| d != in_use)
            && (f.name.is_empty() || f.name.iter().any(|n| v.name.contains(n.as_str())))
            && (f.driver.is_empty() || f.driver.contains(&v.driver))
            && f.label.iter().all(label_match)
            && !f.label_not.iter().any(label_match)
    }

    /// Volumes matching `filters`, by name.
    pub fn list(&self, filters: &VolumeFilters, users: &Users) -> Vec<Volume> {
        self.names()
            .iter()
            .filter_map(|n| self.read(n).ok())
            .filter(|v| Self::matches(v, users, filters))
            .collect()
    }

    /// Every volume with its size and the number of containers using it.
    pub fn usage(&self, users: &Users) -> Vec<VolumeUsage> {
        self.list(&VolumeFilters::default(), users)
            .into_iter()
            .map(|v| VolumeUsage {
                size: disk_usage(Path::new(&v.mountpoint)),
                ref_count: users.get(&v.name).map_or(0, Vec::len),
                volume: v,
            })
            .collect()
    }

    /// Keeps `name` from being removed until the hold is dropped (while a
    /// container that uses it is being created).
    pub fn hold(&self, name: &str) -> VolumeHold {
        let _ops = lock(&self.inner.ops);
        *lock(&self.inner.held).entry(name.to_string()).or_default() += 1;
        VolumeHold {
            service: self.clone(),
            name: name.to_string(),
        }
    }

    /// Creates (or finds) a volume and holds it, atomically with respect to
    /// removes.
    pub fn create_and_hold(&self, req: VolumeCreate) -> Result<(Volume, bool, VolumeHold)> {
        let _ops = lock(&self.inner.ops);
        let (volume, created) = self.create_locked(req)?;
        *lock(&self.inner.held)
            .entry(volume.name.clone())
            .or_default() += 1;
        let hold = VolumeHold {
            service: self.clone(),
            name: volume.name.clone(),
        };
        Ok((volume, created, hold))
    }

    /// Removes a volume; refused while a container uses it (`users` lists
    /// them; Docker refuses even with force). With `force` a missing volume
    /// is not an error.
    pub fn remove(&self, name: &str, force: bool, users: impl FnOnce() -> Users) -> Result<()> {
        let _ops = lock(&self.inner.ops);
        let volume = match self.read(name) {
            Ok(v) => v,
            Err(VolumeError::NotFound(_)) if force => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut using = users().remove(name).unwrap_or_default();
        if lock(&self.inner.held).contains_key(name) {
            using.push("a container being created".into());
        }
        if !using.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                users: using,
            });
        }
        self.delete(&volume)
    }

    fn delete(&self, volume: &Volume) -> Result<()> {
        let dir = self.dir(&volume.name);
        let data = dir.join(DATA);
        // Never recurse into a mounted device or bind source: unmount every
        // layer first (mounts may have been stacked by hand).
        while berth_snapshot::is_mount_point(&data) {
            nix::mount::umount2(&data, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| VolumeError::io(format!("unmounting {}", data.display()))(e.into()))?;
        }
        // The record goes first: a crash mid-way leaves an unrecorded
        // directory, which `open` cleans up.
        fs::remove_file(dir.join(RECORD))
            .map_err(VolumeError::io(format!("removing volume {}", volume.name)))?;
        sync_dir(&dir);
        self.event("destroy", volume);
        fs::remove_dir_all(&dir).map_err(VolumeError::io(format!("removing {}", dir.display())))
    }

    fn event(&self, action: &str, volume: &Volume) {
        let attributes = BTreeMap::from([("driver".to_string(), volume.driver.clone())]);
        self.inner
            .events
            .publish("volume", action, &volume.name, attributes);
    }

    /// Removes unused volumes: anonymous ones only, unless `filters.all`.
    pub fn prune(
        &self,
        filters: &VolumeFilters,
        users: impl FnOnce() -> Users,
    ) -> Result<VolumePrune> {
        let _ops = lock(&self.inner.ops);
        let users = users();
        let held = lock(&self.inner.held).clone();
        let mut report = VolumePrune::default();
        let f = VolumeFilters {
            dangling: Some(true),
            ..filters.clone()
        };
        for v in self.list(&f, &users) {
            if (!filters.all && !v.is_anonymous()) || held.contains_key(&v.name) {
                continue;
            }
            let size = disk_usage(Path::new(&v.mountpoint));
            if self.delete(&v).is_ok() {
                report.space_reclaimed += size;
                report.deleted.push(v.name);
            }
        }
        Ok(report)
    }

    /// The host path to bind for `volume`, with the driver's mount in
    /// place when it has one (mounted on first use, kept until removed).
    pub fn mount(&self, volume: &Volume) -> Result<PathBuf> {
        let data = PathBuf::from(&volume.mountpoint);
        if !volume.has_mount() || berth_snapshot::is_mount_point(&data) {
            return Ok(data);
        }
        let _ops = lock(&self.inner.ops);
        if berth_snapshot::is_mount_point(&data) {
            return Ok(data);
        }
        let ty = volume.options.get("type").map(String::as_str).unwrap_or("");
        let device = volume
            .options
            .get("device")
            .map(String::as_str)
            .unwrap_or("");
        let o = volume.options.get("o").map(String::as_str).unwrap_or("");
        let fail = |message: String| VolumeError::InvalidOption {
            name: volume.name.clone(),
            message,
        };
        let (flags, options) = mount_flags(o).map_err(fail)?;
        let fstype = (!matches!(ty, "" | "none")).then_some(ty);
        let data_opt = (!options.is_empty()).then_some(options.as_str());
        nix::mount::mount(Some(device), &data, fstype, flags, data_opt).map_err(|e| {
            fail(format!(
                "error while mounting volume '{}': failed to mount local volume: mount {device}:{} (type {ty}, options {o}): {e}",
                data.display(),
                data.display()
            ))
        })?;
        Ok(data)
    }

    /// True when the volume's data directory holds nothing yet.
    pub fn is_empty(&self, volume: &Volume) -> bool {
        fs::read_dir(&volume.mountpoint).is_ok_and(|mut d| d.next().is_none())
    }

    /// Removes a volume without checks (a create that failed, `rm -v`),
    /// unless a container still uses it.
    pub fn remove_if_unused(&self, name: &str, users: impl FnOnce() -> Users) {
        let _ = self.remove(name, true, users);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Users {
        Users::new()
    }

    #[test]
    fn create_list_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = VolumeService::open(dir.path()).expect("open");
        let (v, created) = svc
            .create(VolumeCreate {
                name: Some("data1".into()),
                labels: [("a".to_string(), "1".to_string())].into(),
                ..Default::default()
            })
            .expect("create");
        assert!(created && !v.is_anonymous());
        assert!(Path::new(&v.mountpoint).is_dir());
        let (again, created) = svc
            .create(VolumeCreate {
                name: Some("data1".into()),
                ..Default::default()
            })
            .expect("create again");
        assert!(!created);
        assert_eq!(again, v);
        let (anon, _) = svc.create(VolumeCreate::default()).expect("anonymous");
        assert!(anon.is_anonymous() && anon.name.len() == 64);
        assert!(matches!(
            svc.create(VolumeCreate {
                name: Some("bad/name".into()),
                ..Default::default()
            }),
            Err(VolumeError::InvalidName(_))
        ));
        assert!(matches!(
            svc.create(VolumeCreate {
                name: Some("opts".into()),
                driver_opts: [("bogus".to_string(), "x".to_string())].into(),
                ..Default::default()
            }),
            Err(VolumeError::InvalidOption { .. })
        ));
        let f = VolumeFilters {
            label: vec!["a=1".into()],
            ..Default::default()
        };
        assert_eq!(svc.list(&f, &none()).len(), 1);
        let users: Users = [("data1".to_string(), vec!["c1".to_string()])].into();
        let f = VolumeFilters {
            dangling: Some(true),
            ..Default::default()
        };
        assert_eq!(svc.list(&f, &users).len(), 1);
        assert!(matches!(
            svc.remove("data1", false, || users.clone()),
            Err(VolumeError::InUse { .. })
        ));
        // Prune: only the anonymous one by default.
        let report = svc.prune(&VolumeFilters::default(), none).expect("prune");
        assert_eq!(report.deleted, vec![anon.name.clone()]);
        assert!(svc.inspect("data1").is_ok());
        {
            let _hold = svc.hold("data1");
            assert!(svc.remove("data1", false, none).is_err());
        }
        svc.remove("data1", false, none).expect("remove");
        assert!(matches!(
            svc.inspect("data1"),
            Err(VolumeError::NotFound(_))
        ));
        assert!(svc.remove("data1", true, none).is_ok());
        // A half-made volume (no record) is cleaned up on open.
        fs::create_dir_all(dir.path().join("volumes/half/_data")).expect("mkdir");
        let svc = VolumeService::open(dir.path()).expect("reopen");
        assert!(!dir.path().join("volumes/half").exists());
        assert!(svc.list(&VolumeFilters::default(), &none()).is_empty());
    }
}
