//! A container's mounts: `-v` binds (`src:dst[:mode]`), `--mount` specs
//! (bind, volume, tmpfs), anonymous volumes (`-v /path`, image VOLUMEs),
//! turned at create time into the [`MountPoint`]s kept in the record, the
//! OCI mount entries, and the volume bookkeeping (users, `rm -v`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::ContainerError;
use super::types::{ContainerCreate, ContainerRecord};
use super::ContainerService;
use crate::volumes::{
    Users, Volume, VolumeCreate, VolumeError, VolumeFilters, VolumeHold, VolumePrune,
    VolumeService, VolumeUsage,
};

type Result<T, E = ContainerError> = std::result::Result<T, E>;

/// Docker's `HostConfig.Mounts[]` entry (the `--mount` flag).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MountSpec {
    /// `bind`, `volume` or `tmpfs`.
    #[serde(rename = "Type")]
    pub kind: String,
    pub source: String,
    pub target: String,
    pub read_only: bool,
    pub bind_options: Option<BindOptions>,
    pub volume_options: Option<VolumeOptions>,
    pub tmpfs_options: Option<TmpfsOptions>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct BindOptions {
    pub propagation: String,
    pub create_mountpoint: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeOptions {
    pub no_copy: bool,
    pub labels: Option<BTreeMap<String, String>>,
    pub driver_config: Option<DriverConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DriverConfig {
    pub name: String,
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TmpfsOptions {
    pub size_bytes: i64,
    /// Permission bits (Go's FileMode, which for plain modes is the same).
    pub mode: u32,
}

/// One mount of a created container, as kept in its record and shown in
/// inspect's `Mounts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MountPoint {
    /// `bind`, `volume` or `tmpfs`.
    pub kind: String,
    /// The volume's name (volumes only).
    pub name: String,
    /// The host path (the volume's data directory for volumes).
    pub source: String,
    pub destination: String,
    pub driver: String,
    /// The mode as given (`ro`, `rw,z`, …).
    pub mode: String,
    pub rw: bool,
    pub propagation: String,
    /// An anonymous volume this container created (removed by `rm -v`).
    pub anonymous: bool,
    /// tmpfs mount options.
    pub options: Vec<String>,
}

impl MountPoint {
    /// Inspect's JSON for it.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "Type": self.kind,
            "Source": self.source,
            "Destination": self.destination,
            "Mode": self.mode,
            "RW": self.rw,
            "Propagation": self.propagation,
        });
        if self.kind == "volume" {
            v["Name"] = json!(self.name);
            v["Driver"] = json!(self.driver);
        }
        v
    }
}

fn invalid(message: impl Into<String>) -> ContainerError {
    ContainerError::InvalidParameter(message.into())
}

/// Cleans an absolute container path (`/a/./b/` → `/a/b`); `None` if it is
/// not absolute.
fn clean_absolute(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str()?),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    Some(format!("/{}", parts.join("/")))
}

const PROPAGATIONS: &[&str] = &[
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

/// What a create asks for, before volumes are looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wanted {
    Bind {
        source: String,
        create_source: bool,
    },
    Volume {
        /// Empty: anonymous.
        name: String,
        no_copy: bool,
        labels: BTreeMap<String, String>,
        driver: String,
        driver_opts: BTreeMap<String, String>,
    },
    Tmpfs {
        options: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    wanted: Wanted,
    destination: String,
    rw: bool,
    mode: String,
    propagation: String,
}

/// `src:dst[:mode]` from `-v` / `HostConfig.Binds`.
fn parse_bind(spec: &str) -> Result<Request> {
    let bad = || invalid(format!("invalid volume specification: '{spec}'"));
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [s, d] => (*s, *d, ""),
        [s, d, m] => (*s, *d, *m),
        _ => return Err(bad()),
    };
    if src.is_empty() || dst.is_empty() {
        return Err(bad());
    }
    let destination = clean_absolute(dst).ok_or_else(|| {
        invalid(format!(
            "invalid volume specification: '{spec}': invalid mount config for type \"{}\": invalid mount path: '{dst}' mount path must be absolute",
            if src.starts_with('/') { "bind" } else { "volume" }
        ))
    })?;
    let mut rw = true;
    let mut no_copy = false;
    let mut propagation = String::new();
    for m in mode.split(',').filter(|m| !m.is_empty()) {
        match m {
            "ro" => rw = false,
            "rw" | "z" | "Z" | "consistent" | "cached" | "delegated" => {}
            "nocopy" => no_copy = true,
            p if PROPAGATIONS.contains(&p) => propagation = p.to_string(),
            _ => return Err(invalid(format!("invalid mode: {m}"))),
        }
    }
    let wanted = if src.starts_with('/') {
        if no_copy {
            return Err(invalid(format!("invalid mode: {mode}")));
        }
        Wanted::Bind {
            source: clean_absolute(src).ok_or_else(bad)?,
            create_source: true,
        }
    } else {
        if !propagation.is_empty() {
            return Err(invalid(format!("invalid mode: {mode}")));
        }
        if !crate::volumes::valid_name(src) {
            return Err(VolumeError::InvalidName(src.to_string()).into());
        }
        Wanted::Volume {
            name: src.to_string(),
            no_copy,
            labels: BTreeMap::new(),
            driver: String::new(),
            driver_opts: BTreeMap::new(),
        }
    };
    if matches!(wanted, Wanted::Bind { .. }) && propagation.is_empty() {
        propagation = "rprivate".into();
    }
    Ok(Request {
        wanted,
        destination,
        rw,
        mode: mode.to_string(),
        propagation,
    })
}

/// A `--mount` spec, validated with Docker's messages.
fn parse_mount(m: &MountSpec) -> Result<Request> {
    let kind = m.kind.as_str();
    let bad = |what: String| invalid(format!("invalid mount config for type \"{kind}\": {what}"));
    if m.target.is_empty() {
        return Err(bad("field Target must not be empty".into()));
    }
    let destination = clean_absolute(&m.target).ok_or_else(|| {
        bad(format!(
            "invalid mount path: '{}' mount path must be absolute",
            m.target
        ))
    })?;
    let mut propagation = String::new();
    let wanted = match kind {
        "bind" => {
            if m.source.is_empty() {
                return Err(bad("field Source must not be empty".into()));
            }
            if m.volume_options.is_some() {
                return Err(bad("field VolumeOptions must not be specified".into()));
            }
            if m.tmpfs_options.is_some() {
                return Err(bad("field TmpfsOptions must not be specified".into()));
            }
            let source = clean_absolute(&m.source).ok_or_else(|| {
                bad(format!(
                    "invalid mount path: '{}' mount path must be absolute",
                    m.source
                ))
            })?;
            let opts = m.bind_options.clone().unwrap_or_default();
            if !opts.propagation.is_empty() && !PROPAGATIONS.contains(&opts.propagation.as_str()) {
                return Err(bad(format!(
                    "invalid propagation mode: {}",
                    opts.propagation
                )));
            }
            propagation = if opts.propagation.is_empty() {
                "rprivate".into()
            } else {
                opts.propagation
            };
            if !opts.create_mountpoint && !Path::new(&source).exists() {
                return Err(bad(format!("bind source path does not exist: {source}")));
            }
            Wanted::Bind {
                source,
                create_source: opts.create_mountpoint,
            }
        }
        "volume" => {
            if m.bind_options.is_some() {
                return Err(bad("field BindOptions must not be specified".into()));
            }
            if m.tmpfs_options.is_some() {
                return Err(bad("field TmpfsOptions must not be specified".into()));
            }
            if !m.source.is_empty() && !crate::volumes::valid_name(&m.source) {
                return Err(VolumeError::InvalidName(m.source.clone()).into());
            }
            let opts = m.volume_options.clone().unwrap_or_default();
            let driver = opts.driver_config.clone().unwrap_or_default();
            Wanted::Volume {
                name: m.source.clone(),
                no_copy: opts.no_copy,
                labels: opts.labels.unwrap_or_default(),
                driver: driver.name,
                driver_opts: driver.options.unwrap_or_default(),
            }
        }
        "tmpfs" => {
            if !m.source.is_empty() {
                return Err(bad("field Source must not be specified".into()));
            }
            if m.bind_options.is_some() || m.volume_options.is_some() {
                return Err(bad(
                    "field BindOptions/VolumeOptions must not be specified".into()
                ));
            }
            let t = m.tmpfs_options.clone().unwrap_or_default();
            let mut options: Vec<String> = vec!["nosuid".into(), "nodev".into(), "noexec".into()];
            if t.size_bytes < 0 {
                return Err(bad(format!("invalid tmpfs size {}", t.size_bytes)));
            }
            if t.size_bytes > 0 {
                options.push(format!("size={}", t.size_bytes));
            }
            if t.mode != 0 {
                options.push(format!("mode={:o}", t.mode & 0o7777));
            }
            Wanted::Tmpfs { options }
        }
        "" => {
            return Err(invalid(
                "invalid mount config: mount type must be specified",
            ))
        }
        other => {
            return Err(invalid(format!(
                "invalid mount config: mount type unknown: \"{other}\""
            )))
        }
    };
    Ok(Request {
        wanted,
        destination,
        rw: !m.read_only,
        mode: String::new(),
        propagation,
    })
}

/// Everything a create asks to mount, checked, in Docker's precedence:
/// binds and `--mount`s first (a duplicate target among them is an error),
/// then anonymous volumes from `-v /path` and the image's VOLUMEs where
/// nothing else is mounted.
fn requests(create: &ContainerCreate, image_volumes: &[String]) -> Result<Vec<Request>> {
    let hc = &create.host_config;
    let mut out: Vec<Request> = Vec::new();
    let mut seen = BTreeSet::new();
    let explicit = hc
        .binds
        .iter()
        .map(|b| parse_bind(b))
        .chain(hc.mounts.iter().map(parse_mount));
    for r in explicit {
        let r = r?;
        if r.destination == "/" {
            return Err(invalid("invalid specification: destination can't be '/'"));
        }
        if !seen.insert(r.destination.clone()) || hc.tmpfs.contains_key(&r.destination) {
            return Err(invalid(format!("Duplicate mount point: {}", r.destination)));
        }
        out.push(r);
    }
    for path in create.volumes.iter().chain(image_volumes) {
        let Some(destination) = clean_absolute(path) else {
            return Err(invalid(format!(
                "invalid volume specification: '{path}': invalid mount config for type \"volume\": invalid mount path: '{path}' mount path must be absolute"
            )));
        };
        if destination == "/" {
            return Err(invalid("invalid specification: destination can't be '/'"));
        }
        if hc.tmpfs.contains_key(&destination) || !seen.insert(destination.clone()) {
            continue;
        }
        out.push(Request {
            wanted: Wanted::Volume {
                name: String::new(),
                no_copy: false,
                labels: BTreeMap::new(),
                driver: String::new(),
                driver_opts: BTreeMap::new(),
            },
            destination,
            rw: true,
            mode: String::new(),
            propagation: String::new(),
        });
    }
    Ok(out)
}

/// The cheap checks, before anything is unpacked.
pub(super) fn validate(create: &ContainerCreate) -> Result<()> {
    requests(create, &[]).map(drop)
}

/// What [`ContainerService::prepare_mounts`] made: the mount points and
/// what to undo if the create fails later.
pub(super) struct Prepared {
    pub mounts: Vec<MountPoint>,
    /// Volumes this create made (removed again on failure).
    created: Vec<String>,
    /// Keeps the volumes from removal until the record is written.
    _holds: Vec<VolumeHold>,
}

impl Prepared {
    /// Undoes a failed create: removes the volumes it made.
    pub fn discard(self, volumes: &VolumeService) {
        let created = self.created.clone();
        drop(self);
        for name in created {
            volumes.remove_if_unused(&name, Users::new);
        }
    }
}

/// Copies the image's content at the mount point into a new, empty volume,
/// as Docker does, with the directory's owner and mode.
fn copy_image_content(rootfs: &Path, destination: &str, volume: &Volume) -> Result<()> {
    let target = Path::new(&volume.mountpoint);
    super::archive::copy_dir_in_root(rootfs, destination, target).map_err(|e| ContainerError::Io {
        context: format!(
            "copying the image's {destination} into volume {}",
            volume.name
        ),
        source: e,
    })
}

impl ContainerService {
    /// The volume store.
    pub fn volumes(&self) -> &VolumeService {
        &self.inner.volumes
    }

    /// Creates the volumes a create needs (named ones on demand, anonymous
    /// ones always), fills new ones from the image, checks bind sources,
    /// and returns the mount points. `rootfs` is the mounted root.
    pub(super) fn prepare_mounts(
        &self,
        create: &ContainerCreate,
        image_volumes: &[String],
        rootfs: &Path,
    ) -> Result<Prepared> {
        let mut prepared = Prepared {
            mounts: Vec::new(),
            created: Vec::new(),
            _holds: Vec::new(),
        };
        match self.prepare_into(create, image_volumes, rootfs, &mut prepared) {
            Ok(()) => Ok(prepared),
            Err(e) => {
                prepared.discard(&self.inner.volumes);
                Err(e)
            }
        }
    }

    fn prepare_into(
        &self,
        create: &ContainerCreate,
        image_volumes: &[String],
        rootfs: &Path,
        prepared: &mut Prepared,
    ) -> Result<()> {
        let volumes = &self.inner.volumes;
        for r in requests(create, image_volumes)? {
            let mut point = MountPoint {
                destination: r.destination.clone(),
                mode: r.mode.clone(),
                rw: r.rw,
                propagation: r.propagation.clone(),
                ..Default::default()
            };
            match r.wanted {
                Wanted::Bind {
                    source,
                    create_source,
                } => {
                    if create_source && !Path::new(&source).exists() {
                        // Docker creates a missing host directory for -v.
                        fs::create_dir_all(&source)
                            .map_err(ContainerError::io(format!("creating {source}")))?;
                    }
                    point.kind = "bind".into();
                    point.source = source;
                }
                Wanted::Volume {
                    name,
                    no_copy,
                    labels,
                    driver,
                    driver_opts,
                } => {
                    let anonymous = name.is_empty();
                    let (volume, created, hold) = volumes.create_and_hold(VolumeCreate {
                        name: (!anonymous).then_some(name),
                        driver,
                        driver_opts,
                        labels,
                    })?;
                    prepared._holds.push(hold);
                    if created {
                        prepared.created.push(volume.name.clone());
                    }
                    volumes.mount(&volume)?;
                    if !no_copy && volumes.is_empty(&volume) {
                        copy_image_content(rootfs, &r.destination, &volume)?;
                    }
                    point.kind = "volume".into();
                    point.name = volume.name.clone();
                    point.source = volume.mountpoint.clone();
                    point.driver = volume.driver.clone();
                    point.anonymous = anonymous && created;
                    if point.mode.is_empty() && !anonymous {
                        point.mode = "z".into();
                    }
                }
                Wanted::Tmpfs { options } => {
                    point.kind = "tmpfs".into();
                    point.options = options;
                }
            }
            prepared.mounts.push(point);
        }
        Ok(())
    }

    /// Mounts the driver mounts of the record's volumes (before a start: a
    /// tmpfs-backed volume does not survive a reboot).
    pub(super) fn mount_volumes(&self, record: &ContainerRecord) -> Result<()> {
        for m in record.mounts.iter().filter(|m| m.kind == "volume") {
            let volume = self.inner.volumes.inspect(&m.name)?;
            self.inner.volumes.mount(&volume)?;
            let attributes = [
                ("container", record.id.clone()),
                ("destination", m.destination.clone()),
                ("driver", volume.driver.clone()),
                ("propagation", m.propagation.clone()),
                ("read/write", m.rw.to_string()),
            ];
            self.inner.events.publish(
                "volume",
                "mount",
                &volume.name,
                attributes
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            );
        }
        Ok(())
    }

    /// Volume name → ids of the containers whose records mount it.
    pub fn volume_users(&self) -> Users {
        let mut users = Users::new();
        for id in self.ids() {
            if let Ok(r) = super::store::read_record(&self.dir(&id)) {
                for m in r.mounts.iter().filter(|m| m.kind == "volume") {
                    users.entry(m.name.clone()).or_default().push(r.id.clone());
                }
            }
        }
        users
    }

    /// Removes a volume unless a container uses it.
    pub fn volume_remove(&self, name: &str, force: bool) -> Result<()> {
        Ok(self
            .inner
            .volumes
            .remove(name, force, || self.volume_users())?)
    }

    pub fn volume_list(&self, filters: &VolumeFilters) -> Vec<Volume> {
        self.inner.volumes.list(filters, &self.volume_users())
    }

    pub fn volume_prune(&self, filters: &VolumeFilters) -> Result<VolumePrune> {
        Ok(self.inner.volumes.prune(filters, || self.volume_users())?)
    }

    pub fn volume_usage(&self) -> Vec<VolumeUsage> {
        self.inner.volumes.usage(&self.volume_users())
    }

    /// `rm -v`: the anonymous volumes the removed container created, when
    /// no other container uses them.
    pub(super) fn remove_anonymous_volumes(&self, mounts: &[MountPoint]) {
        for m in mounts.iter().filter(|m| m.kind == "volume" && m.anonymous) {
            self.inner
                .volumes
                .remove_if_unused(&m.name, || self.volume_users());
        }
    }
}

/// The OCI mount entries, parents before children.
pub(super) fn oci_mounts(mounts: &[MountPoint]) -> Vec<Value> {
    let mut sorted: Vec<&MountPoint> = mounts.iter().collect();
    sorted.sort_by_key(|m| m.destination.matches('/').count());
    sorted
        .into_iter()
        .map(|m| match m.kind.as_str() {
            "tmpfs" => {
                let mut options = m.options.clone();
                if !m.rw {
                    options.push("ro".into());
                }
                json!({ "destination": m.destination, "type": "tmpfs", "source": "tmpfs", "options": options })
            }
            _ => {
                let mut options = vec!["rbind".to_string()];
                if !m.rw {
                    options.push("ro".into());
                }
                options.push(if m.propagation.is_empty() {
                    "rprivate".to_string()
                } else {
                    m.propagation.clone()
                });
                json!({ "destination": m.destination, "type": "bind", "source": m.source, "options": options })
            }
        })
        .collect()
}

/// The image's VOLUME paths.
pub(super) fn image_volumes(config: &berth_image::manifest::ContainerConfig) -> Vec<String> {
    config
        .volumes
        .as_ref()
        .map(|v| v.keys().cloned().collect())
        .unwrap_or_default()
}

/// The mount that holds container path `path` (cleaned, absolute) and the
/// rest of the path below it: the longest destination that is a prefix.
pub(super) fn mount_for<'a>(
    mounts: &'a [MountPoint],
    path: &str,
) -> Option<(&'a MountPoint, PathBuf)> {
    mounts
        .iter()
        .filter_map(|m| {
            let rest = Path::new(path).strip_prefix(&m.destination).ok()?;
            Some((m, rest.to_path_buf()))
        })
        .max_by_key(|(m, _)| m.destination.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_and_mounts_parse() {
        let r = parse_bind("data:/x/:ro").expect("volume bind");
        assert!(matches!(r.wanted, Wanted::Volume { ref name, .. } if name == "data"));
        assert_eq!((r.destination.as_str(), r.rw), ("/x", false));
        let r = parse_bind("/host:/c:rshared").expect("bind");
        assert_eq!(r.propagation, "rshared");
        assert!(parse_bind("/host:rel").is_err());
        assert!(parse_bind("/host:/c:bogus").is_err());
        assert!(parse_bind("bad!name:/c").is_err());
        assert!(parse_bind("a:b:c:d").is_err());
        let m = MountSpec {
            kind: "tmpfs".into(),
            target: "/t".into(),
            tmpfs_options: Some(TmpfsOptions {
                size_bytes: 1 << 20,
                mode: 0o1770,
            }),
            ..Default::default()
        };
        let r = parse_mount(&m).expect("tmpfs");
        assert!(
            matches!(r.wanted, Wanted::Tmpfs { ref options } if options.contains(&"size=1048576".to_string()) && options.contains(&"mode=1770".to_string()))
        );
        let m = MountSpec {
            kind: "bind".into(),
            source: "/nonexistent-berth-test".into(),
            target: "/t".into(),
            ..Default::default()
        };
        let e = parse_mount(&m).expect_err("missing source");
        assert!(
            e.to_string().contains("bind source path does not exist"),
            "{e}"
        );
        let mut c = ContainerCreate::default();
        c.host_config.binds = vec!["aa:/d".into(), "bb:/d".into()];
        assert!(validate(&c).is_err());
        c.host_config.binds = vec!["aa:/d".into()];
        c.volumes = vec!["/d".into(), "/e".into()];
        let r = requests(&c, &["/e".into(), "/f".into()]).expect("requests");
        let dests: Vec<&str> = r.iter().map(|r| r.destination.as_str()).collect();
        assert_eq!(dests, vec!["/d", "/e", "/f"]);
    }

    #[test]
    fn mount_lookup() {
        let mounts = vec![
            MountPoint {
                destination: "/data".into(),
                ..Default::default()
            },
            MountPoint {
                destination: "/data/sub".into(),
                ..Default::default()
            },
        ];
        let (m, rest) = mount_for(&mounts, "/data/sub/x").expect("found");
        assert_eq!(
            (m.destination.as_str(), rest),
            ("/data/sub", PathBuf::from("x"))
        );
        assert!(mount_for(&mounts, "/datax").is_none());
        assert_eq!(clean_absolute("/a/./b/../c/"), Some("/a/c".into()));
    }
}
