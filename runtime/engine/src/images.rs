//! The image service: references in, root filesystems out.
//!
//! It ties the content store (blobs), the image records (names), the
//! registry client (pull/push) and the snapshotter (unpacked layers)
//! together, behind the operations the engine's API and CLI expose: pull,
//! push, list, inspect, history, tag, remove, save, load, import, and the
//! root filesystem of a new container.
//!
//! Layout under the engine's data root:
//! `content/` blobs, `images/` records, `snapshots/` unpacked layers and
//! container upper dirs, `tmp/` scratch space on the same filesystem.

use std::collections::{BTreeSet, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_image::archive::{self, ArchiveError, ImportOptions};
use berth_image::manifest::{media_types, AnyManifest, Descriptor, History, ImageConfig, Platform};
use berth_image::{
    ContentError, ContentStore, Digest, ImageRecord, ImageStore, ImageStoreError, Reference,
    ReferenceError,
};
use berth_registry::{ClientConfig, ProgressFn, RegistryClient, RegistryError};
pub use berth_snapshot::SnapshotMode;
use berth_snapshot::{chain_id, Mounts, SnapshotError, Snapshotter, UnpackOptions};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("No such image: {0}")]
    NotFound(String),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Records(#[from] ImageStoreError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("image {image}: {detail}")]
    Corrupt { image: String, detail: String },
    #[error("image {image}: layer {digest} is not in the store (a foreign layer?)")]
    MissingLayer { image: String, digest: Digest },
    #[error("unable to remove {name}: image is used by container {container}")]
    InUse { name: String, container: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("background task failed: {0}")]
    Task(String),
}

/// One image as `images` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// The config digest (Docker's image id).
    pub id: Digest,
    /// Normalised references pointing at it.
    pub names: Vec<String>,
    /// The digest the names point at (manifest or index), for RepoDigests.
    pub target: Digest,
    /// Sum of the layer blobs' sizes.
    pub size: u64,
    /// From the image config.
    pub created: Option<String>,
}

/// What `inspect` shows.
#[derive(Debug, Clone)]
pub struct ImageDetails {
    pub summary: ImageSummary,
    pub config: ImageConfig,
    pub manifest: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// What `remove` did, in Docker's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    Untagged(String),
    Deleted(Digest),
}

pub struct ImageService {
    root: PathBuf,
    content: ContentStore,
    records: ImageStore,
    snapshots: Arc<Snapshotter>,
    registry: RegistryClient,
}

impl ImageService {
    /// Opens (creating) the stores under `root`.
    pub fn open(root: &Path, registry: ClientConfig) -> Result<Self, ImageError> {
        Self::open_with_snapshots(root, registry, SnapshotMode::Auto)
    }

    /// Like [`open`](Self::open), with the snapshot mode decided by the caller (the VM's
    /// agent knows its kernel and disk take overlay, and skips the test mount).
    pub fn open_with_snapshots(
        root: &Path,
        registry: ClientConfig,
        snapshot_mode: SnapshotMode,
    ) -> Result<Self, ImageError> {
        let io = |context: &str| {
            let context = format!("{context} {}", root.display());
            move |source| ImageError::Io { context, source }
        };
        std::fs::create_dir_all(root.join("tmp")).map_err(io("creating"))?;
        Ok(Self {
            root: root.to_path_buf(),
            content: ContentStore::open(&root.join("content"))?,
            records: ImageStore::open(&root.join("images"))?,
            snapshots: Arc::new(Snapshotter::new(root.join("snapshots"), snapshot_mode)?),
            registry: RegistryClient::new(registry)?,
        })
    }

    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    pub fn records(&self) -> &ImageStore {
        &self.records
    }

    pub fn snapshots(&self) -> &Snapshotter {
        &self.snapshots
    }

    pub fn registry(&self) -> &RegistryClient {
        &self.registry
    }

    fn scratch(&self) -> Result<TempDir, ImageError> {
        TempDir::new(&self.root.join("tmp"))
    }

    /// Pulls `reference` and unpacks its layers; returns the image id.
    pub async fn pull(
        &self,
        reference: &str,
        platform: Option<&Platform>,
        progress: ProgressFn<'_>,
    ) -> Result<Digest, ImageError> {
        let reference = Reference::parse(reference)?;
        let pulled = self
            .registry
            .pull(&reference, platform, &self.content, progress)
            .await?;
        let name = reference.to_string();
        let target = pulled
            .index
            .clone()
            .unwrap_or_else(|| pulled.manifest.clone());
        self.unpack(&name, &pulled.manifest).await?;
        // The record goes last: a name never points at an image whose layers
        // are not all there.
        self.records.put(&ImageRecord {
            name: name.clone(),
            digest: target.digest.clone(),
            media_type: target.media_type.clone(),
            size: target.size,
            created: berth_image::images::rfc3339_now(),
        })?;
        // A pull by tag also makes the image reachable by digest (RepoDigests).
        Ok(pulled.config.digest)
    }

    /// Pushes the image named `reference` to its registry.
    pub async fn push(
        &self,
        reference: &str,
        progress: ProgressFn<'_>,
    ) -> Result<Digest, ImageError> {
        let record = self.find(reference)?;
        let reference = Reference::parse(&record.name)?;
        let pushed = self
            .registry
            .push(
                &reference,
                &record.digest,
                &self.content,
                &berth_registry::PushOptions::default(),
                progress,
            )
            .await?;
        Ok(pushed.digest)
    }

    /// Unpacks every layer of `manifest` (bottom first: each layer's
    /// snapshot names its parent), checking each diff_id against the config.
    async fn unpack(&self, image: &str, manifest: &Descriptor) -> Result<String, ImageError> {
        let (m, config) = self.manifest_and_config(image, manifest)?;
        if config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(ImageError::Corrupt {
                image: image.to_string(),
                detail: format!(
                    "{} layers but {} diff_ids in the config",
                    m.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            });
        }
        let mut parent: Option<String> = None;
        for (layer, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
            let chain = chain_id(parent.as_deref(), &diff_id.to_string());
            if !self.snapshots.exists(&chain) {
                if self.content.info(&layer.digest)?.is_none() {
                    return Err(ImageError::MissingLayer {
                        image: image.to_string(),
                        digest: layer.digest.clone(),
                    });
                }
                let blob = self.content.open_blob(&layer.digest)?;
                let snapshots = Arc::clone(&self.snapshots);
                let opts = UnpackOptions {
                    expected_diff_id: Some(diff_id.to_string()),
                    ..UnpackOptions::default()
                };
                let media_type = layer.media_type.clone();
                let (chain_for_task, parent_for_task) = (chain.clone(), parent.clone());
                tokio::task::spawn_blocking(move || {
                    snapshots.prepare_layer_from(
                        &chain_for_task,
                        parent_for_task.as_deref(),
                        std::io::BufReader::with_capacity(1 << 20, blob),
                        &media_type,
                        &opts,
                    )
                })
                .await
                .map_err(|e| ImageError::Task(e.to_string()))??;
            }
            parent = Some(chain);
        }
        Ok(parent.unwrap_or_default())
    }

    fn manifest_and_config(
        &self,
        image: &str,
        manifest: &Descriptor,
    ) -> Result<(berth_image::manifest::ImageManifest, ImageConfig), ImageError> {
        let corrupt = |detail: String| ImageError::Corrupt {
            image: image.to_string(),
            detail,
        };
        let bytes = self.content.read_all(&manifest.digest)?;
        let m = match AnyManifest::parse(Some(&manifest.media_type), &bytes)
            .map_err(|e| corrupt(e.to_string()))?
        {
            AnyManifest::Manifest(m) => m,
            AnyManifest::Index(_) => {
                return Err(corrupt("expected a manifest, found an index".into()))
            }
        };
        let config = ImageConfig::parse(&self.content.read_all(&m.config.digest)?)
            .map_err(|e| corrupt(e.to_string()))?;
        Ok((m, config))
    }

    /// A record by name (any form Docker accepts), image id or id prefix.
    pub fn find(&self, name: &str) -> Result<ImageRecord, ImageError> {
        if let Ok(reference) = Reference::parse(name) {
            if let Some(r) = self.records.get(&reference.to_string())? {
                return Ok(r);
            }
        }
        if let Some(r) = self.records.get(name)? {
            return Ok(r);
        }
        // An image id (config digest), full or a prefix of at least 4 hex digits.
        let wanted = name.strip_prefix("sha256:").unwrap_or(name);
        if wanted.len() >= 4 && wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            for record in self.records.list()? {
                if let Ok(id) = self.image_id(&record) {
                    if id.hex().starts_with(wanted) {
                        return Ok(record);
                    }
                }
            }
        }
        Err(ImageError::NotFound(name.to_string()))
    }

    /// The platform manifest of a record (resolving an index for the host).
    pub fn manifest_of(&self, record: &ImageRecord) -> Result<Descriptor, ImageError> {
        let mut d = Descriptor::new(&record.media_type, record.digest.clone(), record.size);
        for _ in 0..4 {
            if !media_types::is_index(&d.media_type) {
                return Ok(d);
            }
            let bytes = self.content.read_all(&d.digest)?;
            let AnyManifest::Index(index) = AnyManifest::parse(Some(&d.media_type), &bytes)
                .map_err(|e| ImageError::Corrupt {
                    image: record.name.clone(),
                    detail: e.to_string(),
                })?
            else {
                return Ok(d);
            };
            d = index
                .select(&Platform::host())
                .cloned()
                .ok_or_else(|| ImageError::Corrupt {
                    image: record.name.clone(),
                    detail: "no manifest for this platform".into(),
                })?;
        }
        Err(ImageError::Corrupt {
            image: record.name.clone(),
            detail: "indexes nested too deep".into(),
        })
    }

    fn image_id(&self, record: &ImageRecord) -> Result<Digest, ImageError> {
        let manifest = self.manifest_of(record)?;
        let (m, _) = self.manifest_and_config(&record.name, &manifest)?;
        Ok(m.config.digest)
    }

    /// Every image, one entry per image id, names sorted.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let mut by_id: Vec<ImageSummary> = Vec::new();
        for record in self.records.list()? {
            let Ok(details) = self.inspect_record(&record) else {
                continue;
            };
            match by_id.iter_mut().find(|s| s.id == details.summary.id) {
                Some(existing) => existing.names.push(record.name.clone()),
                None => by_id.push(details.summary),
            }
        }
        for s in &mut by_id {
            s.names.sort();
        }
        Ok(by_id)
    }

    pub fn inspect(&self, name: &str) -> Result<ImageDetails, ImageError> {
        let record = self.find(name)?;
        let mut details = self.inspect_record(&record)?;
        details.summary.names = self
            .records
            .find_by_digest(&record.digest)?
            .into_iter()
            .map(|r| r.name)
            .filter(|n| Reference::parse(n).is_ok())
            .collect();
        Ok(details)
    }

    fn inspect_record(&self, record: &ImageRecord) -> Result<ImageDetails, ImageError> {
        let manifest = self.manifest_of(record)?;
        let (m, config) = self.manifest_and_config(&record.name, &manifest)?;
        let names = if Reference::parse(&record.name).is_ok() {
            vec![record.name.clone()]
        } else {
            Vec::new()
        };
        Ok(ImageDetails {
            summary: ImageSummary {
                id: m.config.digest.clone(),
                names,
                target: record.digest.clone(),
                size: m.layers.iter().map(|l| l.size).sum(),
                created: config.created.clone(),
            },
            config,
            manifest,
            layers: m.layers,
        })
    }

    pub fn history(&self, name: &str) -> Result<Vec<History>, ImageError> {
        Ok(self.inspect(name)?.config.history)
    }

    /// Points `target` (a reference) at the image `source` names.
    pub fn tag(&self, source: &str, target: &str) -> Result<String, ImageError> {
        let record = self.find(source)?;
        let name = Reference::parse(target)?.to_string();
        self.records.put(&ImageRecord {
            name: name.clone(),
            created: berth_image::images::rfc3339_now(),
            ..record
        })?;
        Ok(name)
    }

    /// Removes a name; when no name is left for the image (or `by id`), its
    /// layers and blobs go too, unless another image shares them.
    /// `containers` are the images in use by containers: (image id, container id).
    pub fn remove(
        &self,
        name: &str,
        force: bool,
        containers: &[(Digest, String)],
    ) -> Result<Vec<Removed>, ImageError> {
        let record = self.find(name)?;
        let id = self.image_id(&record)?;
        let by_id = name.trim_start_matches("sha256:").len() >= 4
            && id.hex().starts_with(name.trim_start_matches("sha256:"));
        let siblings: Vec<ImageRecord> = self
            .records
            .list()?
            .into_iter()
            .filter(|r| self.image_id(r).is_ok_and(|i| i == id))
            .collect();
        let to_untag: Vec<ImageRecord> = if by_id {
            siblings.clone()
        } else {
            vec![record]
        };
        let last_name = to_untag.len() == siblings.len();
        if last_name && !force {
            if let Some((_, container)) = containers.iter().find(|(image, _)| *image == id) {
                return Err(ImageError::InUse {
                    name: name.to_string(),
                    container: container.clone(),
                });
            }
        }
        if by_id && siblings.len() > 1 && !force {
            // Docker refuses to delete by id an image with several tags.
            return Err(ImageError::Corrupt {
                image: name.to_string(),
                detail: "image is referenced in multiple repositories (use force)".into(),
            });
        }
        let mut removed = Vec::new();
        for r in &to_untag {
            self.records.remove(&r.name)?;
            if Reference::parse(&r.name).is_ok() {
                removed.push(Removed::Untagged(
                    Reference::parse(&r.name)
                        .map(|x| x.familiar())
                        .unwrap_or_default(),
                ));
            }
        }
        if last_name && !containers.iter().any(|(image, _)| *image == id) {
            self.collect_garbage()?;
            removed.push(Removed::Deleted(id));
        }
        Ok(removed)
    }

    /// Deletes blobs and layer snapshots no image record reaches.
    pub fn collect_garbage(&self) -> Result<u64, ImageError> {
        let records = self.records.list()?;
        let keep = self.content.referenced_by_records(&records)?;
        let mut live_chains: HashSet<String> = HashSet::new();
        for record in &records {
            if let Ok(chains) = self.chain_ids(record) {
                live_chains.extend(chains);
            }
        }
        // Children first, so a layer is never removed under a live child.
        let mut layers: Vec<String> = self.snapshots.layers()?;
        layers.retain(|c| !live_chains.contains(c));
        let mut removed_bytes = 0;
        let mut progress = true;
        while progress && !layers.is_empty() {
            progress = false;
            layers.retain(|c| match self.snapshots.remove_layer(c) {
                Ok(()) => {
                    progress = true;
                    false
                }
                Err(_) => true,
            });
        }
        let report = self.content.gc(&keep)?;
        removed_bytes += report_bytes(&report);
        Ok(removed_bytes)
    }

    /// Chain ids of every layer of an image, bottom first.
    pub fn chain_ids(&self, record: &ImageRecord) -> Result<Vec<String>, ImageError> {
        let manifest = self.manifest_of(record)?;
        let (_, config) = self.manifest_and_config(&record.name, &manifest)?;
        let mut out = Vec::new();
        let mut parent: Option<String> = None;
        for diff_id in &config.rootfs.diff_ids {
            let c = chain_id(parent.as_deref(), &diff_id.to_string());
            out.push(c.clone());
            parent = Some(c);
        }
        Ok(out)
    }

    /// A writable root filesystem for container `key` from `image`
    /// (unpacking any layer that is missing, e.g. after `load`).
    pub async fn prepare_rootfs(
        &self,
        key: &str,
        image: &str,
    ) -> Result<(Mounts, ImageDetails), ImageError> {
        let record = self.find(image)?;
        let manifest = self.manifest_of(&record)?;
        let top = self.unpack(&record.name, &manifest).await?;
        let details = self.inspect_record(&record)?;
        let top = (!top.is_empty()).then_some(top);
        Ok((
            self.snapshots.prepare_container(key, top.as_deref())?,
            details,
        ))
    }

    pub fn remove_rootfs(&self, key: &str) -> Result<(), ImageError> {
        Ok(self.snapshots.remove_container(key)?)
    }

    pub fn save(&self, names: &[String], out: impl Write) -> Result<(), ImageError> {
        let resolved: Vec<String> = names
            .iter()
            .map(|n| self.find(n).map(|r| r.name))
            .collect::<Result<_, _>>()?;
        Ok(archive::save(&self.content, &self.records, &resolved, out)?)
    }

    /// Loads an archive; returns the names (or ids) loaded.
    pub async fn load(&self, input: impl Read) -> Result<Vec<String>, ImageError> {
        let scratch = self.scratch()?;
        let names = archive::load(&self.content, &self.records, input, scratch.path())?;
        for name in &names {
            let record = self.find(name)?;
            let manifest = self.manifest_of(&record)?;
            self.unpack(name, &manifest).await?;
        }
        Ok(names)
    }

    pub fn import(&self, input: impl Read, opts: &ImportOptions) -> Result<Digest, ImageError> {
        let scratch = self.scratch()?;
        Ok(archive::import(
            &self.content,
            &self.records,
            input,
            scratch.path(),
            opts,
        )?)
    }

    /// Makes the image embedded in this binary (`hello:latest`) available
    /// without any registry. Idempotent.
    pub async fn ensure_embedded_hello(&self) -> Result<Option<Digest>, ImageError> {
        if !berth_embedded::is_available() {
            return Ok(None);
        }
        let image = berth_embedded::hello_image();
        if self
            .records
            .get(berth_embedded::NORMALIZED_REFERENCE)?
            .is_none()
        {
            for blob in image.blobs() {
                let digest = Digest::parse(&blob.digest).map_err(|e| ImageError::Corrupt {
                    image: berth_embedded::REFERENCE.into(),
                    detail: e.to_string(),
                })?;
                self.content.write_all(&blob.bytes, Some(&digest))?;
            }
            let manifest_digest =
                Digest::parse(&image.manifest.digest).map_err(|e| ImageError::Corrupt {
                    image: berth_embedded::REFERENCE.into(),
                    detail: e.to_string(),
                })?;
            let manifest = Descriptor::new(
                image.manifest.media_type,
                manifest_digest.clone(),
                image.manifest.size(),
            );
            self.unpack(berth_embedded::NORMALIZED_REFERENCE, &manifest)
                .await?;
            self.records.put(&ImageRecord {
                name: berth_embedded::NORMALIZED_REFERENCE.to_string(),
                digest: manifest_digest,
                media_type: image.manifest.media_type.to_string(),
                size: image.manifest.size(),
                created: berth_image::images::rfc3339_now(),
            })?;
        }
        Ok(Digest::parse(&image.config.digest).ok())
    }

    /// Names of every image, for completion and `images -q`.
    pub fn names(&self) -> Result<BTreeSet<String>, ImageError> {
        Ok(self.records.list()?.into_iter().map(|r| r.name).collect())
    }
}

fn report_bytes(report: &berth_image::content::GcReport) -> u64 {
    report.freed_bytes + report.freed_ingest_bytes
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path) -> Result<Self, ImageError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!("scratch-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|source| ImageError::Io {
            context: format!("creating {}", path.display()),
            source,
        })?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
