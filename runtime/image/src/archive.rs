//! Image archives: `docker save` / `docker load` tarballs, OCI image layouts,
//! and `import` of a root filesystem tarball as a new image.
//!
//! What `save` writes is readable by every Docker version and by OCI tools at
//! once: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`)
//! plus Docker's `manifest.json` and `repositories` pointing into the same
//! blobs (the layout Docker 25 and later write). `load` reads that, plain OCI
//! layouts, and the older Docker format (`<id>/layer.tar`, `<hex>.json`).
//!
//! Archives come from users: extraction accepts only regular files,
//! directories and symlinks that stay inside the scratch directory, and every
//! blob goes through the content store's verified ingest.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::content::{ContentError, ContentStore};
use crate::digest::{Digest, Hasher};
use crate::images::{rfc3339_now, ImageRecord, ImageStore, ImageStoreError};
use crate::manifest::{
    media_types, AnyManifest, Descriptor, History, ImageConfig, ImageManifest, ManifestError,
    Platform, RootFs,
};
use crate::reference::Reference;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("no such image: {0}")]
    NoSuchImage(String),
    #[error("reading the archive: {0}")]
    Read(#[source] io::Error),
    #[error("writing the archive: {0}")]
    Write(#[source] io::Error),
    #[error("archive entry {name:?} is not allowed: {reason}")]
    BadEntry { name: String, reason: &'static str },
    #[error("archive has neither index.json nor manifest.json: not a docker save or OCI layout")]
    UnknownFormat,
    #[error("archive file {0:?} is missing")]
    Missing(String),
    #[error("archive file {name}: {source}")]
    BadJson {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("image {image}: no manifest for platform {platform}")]
    NoPlatform { image: String, platform: String },
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Images(#[from] ImageStoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("invalid image name {name:?} in archive: {reason}")]
    BadName { name: String, reason: String },
}

/// One entry of Docker's `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

const CONTAINERD_NAME: &str = "io.containerd.image.name";
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The manifest (not index) of an image record for `platform`, and its bytes.
fn resolve_manifest(
    store: &ContentStore,
    record: &ImageRecord,
    platform: &Platform,
) -> Result<(Descriptor, ImageManifest), ArchiveError> {
    let mut descriptor = Descriptor::new(&record.media_type, record.digest.clone(), record.size);
    loop {
        let bytes = store.read_all(&descriptor.digest)?;
        match AnyManifest::parse(Some(&descriptor.media_type), &bytes)? {
            AnyManifest::Manifest(m) => return Ok((descriptor, m)),
            AnyManifest::Index(index) => {
                descriptor =
                    index
                        .select(platform)
                        .cloned()
                        .ok_or_else(|| ArchiveError::NoPlatform {
                            image: record.name.clone(),
                            platform: format!("{}/{}", platform.os, platform.architecture),
                        })?;
            }
        }
    }
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.hex())
}

/// Writes `names` (normalised references or image ids) as one archive.
pub fn save(
    store: &ContentStore,
    images: &ImageStore,
    names: &[String],
    out: impl Write,
) -> Result<(), ArchiveError> {
    let platform = Platform::host();
    let mut builder = tar::Builder::new(out);
    let mut written: std::collections::HashSet<Digest> = std::collections::HashSet::new();
    let mut index_entries = Vec::new();
    let mut docker_entries: Vec<DockerManifestEntry> = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();

    append_bytes(
        &mut builder,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    for name in names {
        let record = find_record(images, name)?;
        let (mut descriptor, manifest) = resolve_manifest(store, &record, &platform)?;
        for d in std::iter::once(&descriptor)
            .chain(std::iter::once(&manifest.config))
            .chain(manifest.layers.iter())
        {
            if written.insert(d.digest.clone()) {
                let file = store.open_blob(&d.digest)?;
                append_file(&mut builder, &blob_path(&d.digest), file, d.size)?;
            }
        }
        let reference = Reference::parse(&record.name).ok();
        let familiar = reference.as_ref().map(|r| r.familiar());
        let mut annotations = BTreeMap::new();
        if let Some(r) = &reference {
            annotations.insert(CONTAINERD_NAME.to_string(), r.to_string());
            annotations.insert(OCI_REF_NAME.to_string(), r.tag_or_latest().to_string());
        }
        descriptor.annotations = Some(annotations);
        descriptor.platform = None;
        index_entries.push(descriptor);
        docker_entries.push(DockerManifestEntry {
            config: blob_path(&manifest.config.digest),
            repo_tags: familiar.iter().cloned().collect(),
            layers: manifest
                .layers
                .iter()
                .map(|l| blob_path(&l.digest))
                .collect(),
        });
        if let (Some(r), Some(top)) = (&reference, manifest.layers.last()) {
            repositories
                .entry(r.familiar_name())
                .or_default()
                .insert(r.tag_or_latest().to_string(), top.digest.hex().to_string());
        }
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": index_entries,
    });
    append_bytes(&mut builder, "index.json", &to_json(&index))?;
    append_bytes(&mut builder, "manifest.json", &to_json(&docker_entries))?;
    append_bytes(&mut builder, "repositories", &to_json(&repositories))?;
    builder
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(ArchiveError::Write)
}

/// Serialising plain maps and vectors of strings and digests cannot fail.
fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn find_record(images: &ImageStore, name: &str) -> Result<ImageRecord, ArchiveError> {
    if let Some(record) = images.get(name)? {
        return Ok(record);
    }
    if let Ok(reference) = Reference::parse(name) {
        if let Some(record) = images.get(&reference.to_string())? {
            return Ok(record);
        }
    }
    Err(ArchiveError::NoSuchImage(name.to_string()))
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn append_bytes<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
) -> Result<(), ArchiveError> {
    let mut h = header(bytes.len() as u64);
    b.append_data(&mut h, path, bytes)
        .map_err(ArchiveError::Write)
}

fn append_file<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    file: File,
    size: u64,
) -> Result<(), ArchiveError> {
    let mut h = header(size);
    b.append_data(&mut h, path, BufReader::with_capacity(1 << 20, file))
        .map_err(ArchiveError::Write)
}

/// Extracts an archive into `scratch` (an empty directory), accepting only
/// regular files, directories, and symlinks whose target stays inside.
fn extract(input: impl Read, scratch: &Path) -> Result<(), ArchiveError> {
    let mut archive = tar::Archive::new(input);
    let mut links = Vec::new();
    for entry in archive.entries().map_err(ArchiveError::Read)? {
        let mut entry = entry.map_err(ArchiveError::Read)?;
        let raw = entry.path().map_err(ArchiveError::Read)?.into_owned();
        let name = raw.to_string_lossy().into_owned();
        let rel = clean_relative(&raw).ok_or(ArchiveError::BadEntry {
            name: name.clone(),
            reason: "path leaves the archive (absolute or ..)",
        })?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = scratch.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target).map_err(ArchiveError::Read)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(ArchiveError::Read)?;
                }
                let mut file = File::create(&target).map_err(ArchiveError::Read)?;
                io::copy(&mut entry, &mut file).map_err(ArchiveError::Read)?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(ArchiveError::Read)?
                    .ok_or(ArchiveError::BadEntry {
                        name: name.clone(),
                        reason: "symlink without a target",
                    })?
                    .into_owned();
                // Old Docker archives share layers through relative links
                // (`../<id>/layer.tar`): resolve them here, inside the archive.
                let parent = rel.parent().unwrap_or(Path::new(""));
                let resolved =
                    clean_relative(&parent.join(&link)).ok_or(ArchiveError::BadEntry {
                        name: name.clone(),
                        reason: "symlink points outside the archive",
                    })?;
                links.push((rel, resolved));
            }
            // PAX/GNU extension headers are consumed by the tar crate.
            tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => {}
            _ => {
                return Err(ArchiveError::BadEntry {
                    name,
                    reason: "only files, directories and symlinks belong in an image archive",
                })
            }
        }
    }
    for (link, target) in links {
        let from = scratch.join(&target);
        let to = scratch.join(&link);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(ArchiveError::Read)?;
        }
        // A hard link to the extracted file: no symlink exists on disk.
        fs::hard_link(&from, &to)
            .map_err(|_| ArchiveError::Missing(target.to_string_lossy().into_owned()))?;
    }
    Ok(())
}

/// `path` without `.`, refusing absolute paths and any `..` that climbs
/// above the start.
fn clean_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Reads a file of the extracted archive, naming it in errors.
fn read_json<T: serde::de::DeserializeOwned>(
    scratch: &Path,
    name: &str,
) -> Result<T, ArchiveError> {
    let path = scratch.join(name);
    let bytes = fs::read(&path).map_err(|_| ArchiveError::Missing(name.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|source| ArchiveError::BadJson {
        name: name.to_string(),
        source,
    })
}

/// Ingests a file into the content store, verifying it hashes to `digest`
/// (or computing the digest when none is claimed).
fn ingest_file(
    store: &ContentStore,
    path: &Path,
    claimed: Option<&Digest>,
) -> Result<(Digest, u64), ArchiveError> {
    let name = path.to_string_lossy().into_owned();
    let digest = match claimed {
        Some(d) => d.clone(),
        None => {
            let mut hasher = Hasher::new();
            let mut file = File::open(path).map_err(|_| ArchiveError::Missing(name.clone()))?;
            io::copy(&mut file, &mut hasher).map_err(ArchiveError::Read)?;
            hasher.finish()
        }
    };
    let size = fs::metadata(path)
        .map_err(|_| ArchiveError::Missing(name.clone()))?
        .len();
    if store.info(&digest)?.is_some() {
        return Ok((digest, size));
    }
    let mut ingest = store.ingest(&digest, Some(size))?;
    ingest.reset()?;
    let mut file = File::open(path).map_err(|_| ArchiveError::Missing(name))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(ArchiveError::Read)?;
        if n == 0 {
            break;
        }
        ingest.append(&buf[..n])?;
    }
    ingest.commit()?;
    Ok((digest, size))
}

/// Loads every image in a `docker save` archive or OCI layout tarball.
/// `scratch` is an empty directory on the store's filesystem, removed by
/// the caller. Returns the names recorded.
pub fn load(
    store: &ContentStore,
    images: &ImageStore,
    input: impl Read,
    scratch: &Path,
) -> Result<Vec<String>, ArchiveError> {
    extract(input, scratch)?;
    let mut names = Vec::new();
    let docker: Option<Vec<DockerManifestEntry>> = if scratch.join("manifest.json").is_file() {
        Some(read_json(scratch, "manifest.json")?)
    } else {
        None
    };
    if scratch.join("index.json").is_file() {
        let index: crate::manifest::ImageIndex = read_json(scratch, "index.json")?;
        // Docker's manifest.json names images by config path: map config
        // digests to the RepoTags it lists.
        let mut tags_by_config: HashMap<String, Vec<String>> = HashMap::new();
        for entry in docker.iter().flatten() {
            tags_by_config
                .entry(
                    entry
                        .config
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                )
                .or_default()
                .extend(entry.repo_tags.iter().cloned());
        }
        for descriptor in &index.manifests {
            let config = load_oci_tree(store, scratch, descriptor)?;
            let mut image_names: Vec<String> = Vec::new();
            let annotations = descriptor.annotations.clone().unwrap_or_default();
            if let Some(full) = annotations.get(CONTAINERD_NAME) {
                image_names.push(full.clone());
            } else if let Some(tag) = annotations.get(OCI_REF_NAME) {
                // A bare tag names nothing on its own; a full reference does.
                if tag.contains('/') || tag.contains(':') {
                    image_names.push(tag.clone());
                }
            }
            if let Some(config) = &config {
                image_names.extend(
                    tags_by_config
                        .get(config.hex())
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            let id = config.as_ref().unwrap_or(&descriptor.digest).to_string();
            names.extend(record_names(images, descriptor, &image_names, &id)?);
        }
    } else if let Some(entries) = docker {
        for entry in entries {
            names.extend(load_legacy_entry(store, images, scratch, &entry)?);
        }
    } else {
        return Err(ArchiveError::UnknownFormat);
    }
    Ok(names)
}

/// Ingests a manifest or index and everything below it from an extracted
/// OCI layout; returns the config digest of a (first) manifest.
fn load_oci_tree(
    store: &ContentStore,
    scratch: &Path,
    root: &Descriptor,
) -> Result<Option<Digest>, ArchiveError> {
    let mut config = None;
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let path = scratch.join(blob_path(&d.digest));
        if media_types::is_foreign_layer(&d.media_type) && !path.is_file() {
            continue;
        }
        ingest_file(store, &path, Some(&d.digest))?;
        if media_types::is_index(&d.media_type) || media_types::is_manifest(&d.media_type) {
            let bytes = store.read_all(&d.digest)?;
            let doc = AnyManifest::parse(Some(&d.media_type), &bytes)?;
            if let AnyManifest::Manifest(m) = &doc {
                config.get_or_insert_with(|| m.config.digest.clone());
            }
            stack.extend(doc.children().into_iter().cloned());
        }
    }
    Ok(config)
}

fn record_names(
    images: &ImageStore,
    target: &Descriptor,
    names: &[String],
    id: &str,
) -> Result<Vec<String>, ArchiveError> {
    let mut recorded = Vec::new();
    let names: Vec<String> = if names.is_empty() {
        // Untagged: known by its id, as `docker load` lists `<none>` images.
        vec![id.to_string()]
    } else {
        names
            .iter()
            .map(|n| {
                Reference::parse(n)
                    .map(|r| r.to_string())
                    .map_err(|e| ArchiveError::BadName {
                        name: n.clone(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?
    };
    for name in names {
        if recorded.contains(&name) {
            continue;
        }
        images.put(&ImageRecord {
            name: name.clone(),
            digest: target.digest.clone(),
            media_type: target.media_type.clone(),
            size: target.size,
            created: rfc3339_now(),
        })?;
        recorded.push(name);
    }
    Ok(recorded)
}

/// The pre-OCI Docker format: config `<hex>.json`, layers `<id>/layer.tar`
/// (uncompressed, or compressed in some writers).
fn load_legacy_entry(
    store: &ContentStore,
    images: &ImageStore,
    scratch: &Path,
    entry: &DockerManifestEntry,
) -> Result<Vec<String>, ArchiveError> {
    let config_rel = clean_relative(Path::new(&entry.config)).ok_or(ArchiveError::BadEntry {
        name: entry.config.clone(),
        reason: "path leaves the archive",
    })?;
    let (config_digest, config_size) = ingest_file(store, &scratch.join(config_rel), None)?;
    let mut layers = Vec::new();
    for layer in &entry.layers {
        let rel = clean_relative(Path::new(layer)).ok_or(ArchiveError::BadEntry {
            name: layer.clone(),
            reason: "path leaves the archive",
        })?;
        let path = scratch.join(rel);
        let media_type = layer_media_type(&path)?;
        let (digest, size) = ingest_file(store, &path, None)?;
        layers.push(Descriptor::new(media_type, digest, size));
    }
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(media_types::OCI_MANIFEST.to_string()),
        artifact_type: None,
        config: Descriptor::new(media_types::OCI_CONFIG, config_digest.clone(), config_size),
        layers,
        subject: None,
        annotations: None,
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|source| ArchiveError::BadJson {
        name: "manifest".into(),
        source,
    })?;
    let digest = store.write_all(&bytes, None)?;
    let target = Descriptor::new(media_types::OCI_MANIFEST, digest, bytes.len() as u64);
    record_names(
        images,
        &target,
        &entry.repo_tags,
        &config_digest.to_string(),
    )
}

/// A layer file's media type from its first bytes (gzip, zstd or plain tar).
fn layer_media_type(path: &Path) -> Result<&'static str, ArchiveError> {
    let mut magic = [0u8; 4];
    let mut file =
        File::open(path).map_err(|_| ArchiveError::Missing(path.to_string_lossy().into_owned()))?;
    let n = file.read(&mut magic).map_err(ArchiveError::Read)?;
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => media_types::OCI_LAYER_GZIP,
        [0x28, 0xb5, 0x2f, 0xfd] => media_types::OCI_LAYER_ZSTD,
        _ => media_types::OCI_LAYER,
    })
}

/// What `import` records about the new image.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Normalised reference to tag the image with, if any.
    pub name: Option<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub comment: Option<String>,
}

/// Imports a root filesystem tarball (plain or gzip) as a one-layer image.
/// The tarball is stored as given; its diff_id is computed while reading.
/// Returns the image id (config digest).
pub fn import(
    store: &ContentStore,
    images: &ImageStore,
    input: impl Read,
    scratch: &Path,
    opts: &ImportOptions,
) -> Result<Digest, ArchiveError> {
    // Spool to disk while hashing the stored bytes.
    let spool = scratch.join("layer");
    let mut file = File::create(&spool).map_err(ArchiveError::Write)?;
    let mut blob_hasher = Hasher::new();
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(ArchiveError::Read)?;
        if n == 0 {
            break;
        }
        blob_hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(ArchiveError::Write)?;
    }
    drop(file);
    let blob_digest = blob_hasher.finish();
    let media_type = layer_media_type(&spool)?;
    let diff_id = if media_type == media_types::OCI_LAYER_GZIP {
        let mut hasher = Hasher::new();
        let file = File::open(&spool).map_err(ArchiveError::Read)?;
        let mut decoder = flate2::read::GzDecoder::new(BufReader::with_capacity(1 << 20, file));
        io::copy(&mut decoder, &mut hasher).map_err(ArchiveError::Read)?;
        hasher.finish()
    } else if media_type == media_types::OCI_LAYER {
        blob_digest.clone()
    } else {
        return Err(ArchiveError::BadEntry {
            name: "import".into(),
            reason: "only plain or gzip-compressed tarballs can be imported",
        });
    };
    let (layer_digest, layer_size) = ingest_file(store, &spool, Some(&blob_digest))?;
    let platform = Platform::host();
    let mut config = ImageConfig {
        created: Some(rfc3339_now()),
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![diff_id],
        },
        history: vec![History {
            created: Some(rfc3339_now()),
            created_by: Some("berth import".into()),
            comment: opts.comment.clone(),
            ..History::default()
        }],
        ..ImageConfig::default()
    };
    let container = config.config.get_or_insert_with(Default::default);
    container.cmd = opts.cmd.clone();
    container.entrypoint = opts.entrypoint.clone();
    container.env = (!opts.env.is_empty()).then(|| opts.env.clone());
    container.working_dir = opts.working_dir.clone();
    let config_bytes = serde_json::to_vec(&config).map_err(|source| ArchiveError::BadJson {
        name: "config".into(),
        source,
    })?;
    let config_digest = store.write_all(&config_bytes, None)?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(media_types::OCI_MANIFEST.to_string()),
        artifact_type: None,
        config: Descriptor::new(
            media_types::OCI_CONFIG,
            config_digest.clone(),
            config_bytes.len() as u64,
        ),
        layers: vec![Descriptor::new(media_type, layer_digest, layer_size)],
        subject: None,
        annotations: None,
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|source| ArchiveError::BadJson {
        name: "manifest".into(),
        source,
    })?;
    let manifest_digest = store.write_all(&manifest_bytes, None)?;
    let target = Descriptor::new(
        media_types::OCI_MANIFEST,
        manifest_digest,
        manifest_bytes.len() as u64,
    );
    let names: Vec<String> = opts.name.iter().cloned().collect();
    record_names(images, &target, &names, &config_digest.to_string())?;
    Ok(config_digest)
}
