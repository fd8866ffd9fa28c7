//! Pull: resolve a reference to a manifest (selecting the platform in an
//! index), verify and store manifests and config, and stream layers into the
//! content store concurrently, resuming partial ingests with Range requests.

use berth_image::{ContentError, ContentStore, Digest, Reference};
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::StatusCode;
use tokio::sync::{mpsc, oneshot};

use crate::client::{Endpoint, RegistryClient, Subject};
use crate::error::RegistryError;
use crate::manifest::{
    is_foreign_layer, normalize_platform, parse_manifest, select_platform, AnyManifest, Descriptor,
    Platform, MANIFEST_ACCEPT,
};
use crate::{ref_string, Progress, ProgressFn, SkipReason};

/// Largest manifest accepted (as containerd).
const MAX_MANIFEST: usize = 4 << 20;

/// How much of a blob the ingest writer hashes between two looks at its queue.
const HASH_STEP: u64 = 256 << 10;
/// How far hashing may fall behind the bytes written before the writer hashes
/// even while chunks are waiting.
const MAX_HASH_LAG: u64 = 32 << 20;

/// The outcome of a pull: everything is in the content store except layers
/// with `skipped` set.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The normalised reference pulled.
    pub reference: String,
    /// The registry or mirror that served it (`https://host`).
    pub endpoint: String,
    /// The index / manifest list the tag pointed at, if any.
    pub index: Option<Descriptor>,
    /// The platform's image manifest.
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<PulledLayer>,
}

#[derive(Debug, Clone)]
pub struct PulledLayer {
    pub descriptor: Descriptor,
    /// Set for foreign layers that were not fetched (not in the store).
    pub skipped: Option<SkipReason>,
}

struct Fetched {
    descriptor: Descriptor,
    manifest: AnyManifest,
}

enum WriterMsg {
    Data(Bytes),
    Reset,
    Commit,
}

impl RegistryClient {
    /// Pulls `reference` for `platform` (default: linux and the host's
    /// architecture) into `store`. For docker.io the configured mirrors are
    /// tried first, each failure falling back to the next endpoint.
    pub async fn pull(
        &self,
        reference: &Reference,
        platform: Option<&Platform>,
        store: &ContentStore,
        progress: ProgressFn<'_>,
    ) -> Result<PulledImage, RegistryError> {
        let wanted = normalize_platform(&platform.cloned().unwrap_or_else(Platform::host));
        let endpoints = self.pull_endpoints(&reference.registry).await;
        let count = endpoints.len();
        let mut last = None;
        for (i, ep) in endpoints.iter().enumerate() {
            match self
                .pull_from(ep, reference, &wanted, store, progress)
                .await
            {
                Ok(image) => return Ok(image),
                Err(e) if i + 1 < count && !e.is_local() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Protocol {
            registry: reference.registry.clone(),
            detail: "no endpoint to pull from".into(),
        }))
    }

    async fn pull_from(
        &self,
        ep: &Endpoint,
        reference: &Reference,
        wanted: &Platform,
        store: &ContentStore,
        progress: ProgressFn<'_>,
    ) -> Result<PulledImage, RegistryError> {
        let repo = reference.repository.as_str();
        let scopes = vec![format!("repository:{repo}:pull")];
        let display = ref_string(reference);
        let top_ref = match (&reference.digest, &reference.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        };
        let top = self
            .fetch_manifest(
                ep,
                &scopes,
                repo,
                &top_ref,
                reference.digest.as_ref(),
                store,
                &display,
            )
            .await?;
        progress(Progress::Resolved {
            reference: display.clone(),
            digest: top.descriptor.digest.clone(),
            media_type: top.descriptor.media_type.clone(),
            endpoint: ep.base.clone(),
        });
        let (index, image) = match &top.manifest {
            AnyManifest::Index(idx) => {
                let chosen = select_platform(&display, idx, wanted)?;
                let child = self
                    .fetch_manifest(
                        ep,
                        &scopes,
                        repo,
                        &chosen.digest.to_string(),
                        Some(&chosen.digest),
                        store,
                        &display,
                    )
                    .await?;
                (Some(top.descriptor.clone()), child)
            }
            AnyManifest::Manifest(_) => (None, top),
        };
        let AnyManifest::Manifest(manifest) = &image.manifest else {
            return Err(RegistryError::InvalidManifest {
                reference: display,
                reason: "the index entry for the platform is itself an index".into(),
            });
        };
        let blob_url = |d: &Digest| ep.url(&format!("/v2/{repo}/blobs/{d}"));
        self.download_blob(
            ep,
            &scopes,
            &blob_url(&manifest.config.digest),
            &manifest.config,
            store,
            None,
        )
        .await?;

        let concurrency = self.inner.config.concurrency.max(1);
        let mut jobs = futures_util::stream::iter(manifest.layers.iter().cloned().enumerate())
            .map(|(i, layer)| {
                let scopes = &scopes;
                let url = blob_url(&layer.digest);
                async move {
                    (
                        i,
                        self.pull_layer(ep, scopes, url, layer, store, progress)
                            .await,
                    )
                }
            })
            .buffer_unordered(concurrency);
        let mut layers: Vec<Option<PulledLayer>> = vec![None; manifest.layers.len()];
        while let Some((i, result)) = jobs.next().await {
            let layer = result?;
            if let Some(slot) = layers.get_mut(i) {
                *slot = Some(layer);
            }
        }
        drop(jobs);
        progress(Progress::Done {
            digest: index
                .as_ref()
                .map(|d| d.digest.clone())
                .unwrap_or_else(|| image.descriptor.digest.clone()),
        });
        Ok(PulledImage {
            reference: display,
            endpoint: ep.base.clone(),
            index,
            manifest: image.descriptor.clone(),
            config: manifest.config.clone(),
            layers: layers.into_iter().flatten().collect(),
        })
    }

    async fn pull_layer(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        url: String,
        layer: Descriptor,
        store: &ContentStore,
        progress: ProgressFn<'_>,
    ) -> Result<PulledLayer, RegistryError> {
        if !is_foreign_layer(&layer.media_type) {
            self.download_blob(ep, scopes, &url, &layer, store, Some(progress))
                .await?;
            return Ok(PulledLayer {
                descriptor: layer,
                skipped: None,
            });
        }
        let urls: Vec<&String> = layer
            .urls
            .iter()
            .flatten()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .collect();
        let mut detail = "no URL to fetch it from".to_string();
        for u in urls {
            let foreign = RegistryClient::foreign_endpoint(u);
            match self
                .download_blob(&foreign, &[], u, &layer, store, Some(progress))
                .await
            {
                Ok(()) => {
                    return Ok(PulledLayer {
                        descriptor: layer,
                        skipped: None,
                    })
                }
                Err(e) if e.is_local() => return Err(e),
                Err(e) => detail = format!("fetching {u} failed: {e}"),
            }
        }
        let reason = SkipReason::Foreign { detail };
        progress(Progress::LayerSkipped {
            digest: layer.digest.clone(),
            reason: reason.clone(),
        });
        Ok(PulledLayer {
            descriptor: layer,
            skipped: Some(reason),
        })
    }

    /// Gets a manifest by tag or digest, verifies its digest, stores it.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_manifest(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        repo: &str,
        reference: &str,
        expected: Option<&Digest>,
        store: &ContentStore,
        display: &str,
    ) -> Result<Fetched, RegistryError> {
        let url = ep.url(&format!("/v2/{repo}/manifests/{reference}"));
        let what = if expected.is_some() && !display.contains('@') {
            format!("{display}@{reference}")
        } else {
            display.to_string()
        };
        // Already stored (by digest, or the tag's HEAD digest): no GET needed,
        // which also spares rate-limited manifest GETs on Docker Hub.
        let known = match expected {
            Some(d) => Some(d.clone()),
            None => {
                let head = self
                    .send(ep, scopes, &what, &|c| {
                        c.head(&url).header(ACCEPT, MANIFEST_ACCEPT)
                    })
                    .await?;
                if head.status().is_success() {
                    header_digest(head.headers())
                } else {
                    None
                }
            }
        };
        if let Some(d) = known {
            if store
                .info(&d)
                .map_err(RegistryError::content(format!("looking up {d}")))?
                .is_some()
            {
                let bytes = store
                    .read_all(&d)
                    .map_err(RegistryError::content(format!("reading manifest {d}")))?;
                let (manifest, media_type) = parse_manifest(&what, None, &bytes)?;
                return Ok(Fetched {
                    descriptor: descriptor(media_type, d, bytes.len()),
                    manifest,
                });
            }
        }
        let response = self
            .send(ep, scopes, &what, &|c| {
                c.get(&url).header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        if !response.status().is_success() {
            return Err(self
                .error_for(ep, response, Subject::Manifest, &what, repo)
                .await);
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let header = header_digest(response.headers());
        if response
            .content_length()
            .is_some_and(|l| l > MAX_MANIFEST as u64)
        {
            return Err(RegistryError::InvalidManifest {
                reference: what,
                reason: format!("larger than {MAX_MANIFEST} bytes"),
            });
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|source| RegistryError::Http {
                url: url.clone(),
                attempts: 1,
                source,
            })?;
        if bytes.len() > MAX_MANIFEST {
            return Err(RegistryError::InvalidManifest {
                reference: what,
                reason: format!("larger than {MAX_MANIFEST} bytes"),
            });
        }
        let actual = Digest::sha256_of(&bytes);
        let claimed = expected.cloned().or(header);
        if let Some(claimed) = &claimed {
            if claimed.algorithm() == "sha256" && *claimed != actual {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest of {what}"),
                    expected: claimed.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        let digest = claimed.unwrap_or(actual);
        let (manifest, media_type) = parse_manifest(&what, content_type.as_deref(), &bytes)?;
        store
            .write_all(&bytes, Some(&digest))
            .map_err(RegistryError::content(format!("storing manifest {digest}")))?;
        Ok(Fetched {
            descriptor: descriptor(media_type, digest, bytes.len()),
            manifest,
        })
    }

    /// Streams one blob from `url` into the store, resuming a partial ingest
    /// with a Range request and retrying cut connections from where they
    /// stopped. Skips blobs already committed.
    pub(crate) async fn download_blob(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        url: &str,
        desc: &Descriptor,
        store: &ContentStore,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<(), RegistryError> {
        let digest = &desc.digest;
        let size = desc.size;
        let report = |p: Progress| {
            if let Some(f) = progress {
                f(p)
            }
        };
        let skip_present = || {
            report(Progress::LayerSkipped {
                digest: digest.clone(),
                reason: SkipReason::AlreadyPresent,
            })
        };
        if store
            .info(digest)
            .map_err(RegistryError::content(format!("looking up {digest}")))?
            .is_some()
        {
            skip_present();
            return Ok(());
        }
        // The ingest is written (and hashed) on a blocking thread fed through a
        // bounded channel: network and hashing overlap, and dropping this future
        // closes the channel, which keeps the partial data for a resume.
        // Few chunks in flight: whatever sits in this queue at a crash is
        // downloaded again on resume.
        let (tx, rx) = mpsc::channel::<WriterMsg>(8);
        let (ready_tx, ready_rx) = oneshot::channel();
        let mut writer = Some({
            let store = store.clone();
            let digest = digest.clone();
            tokio::task::spawn_blocking(move || write_ingest(store, digest, size, ready_tx, rx))
        });
        let mut written = match ready_rx.await {
            Ok(Some(offset)) => offset,
            Ok(None) => {
                skip_present();
                return Ok(());
            }
            Err(_) => {
                return Err(finish_writer(digest, writer.take())
                    .await
                    .err()
                    .unwrap_or_else(|| writer_gone(digest)))
            }
        };
        report(Progress::LayerStarted {
            digest: digest.clone(),
            size,
            offset: written,
        });
        let what = format!("blob {digest}");
        let attempts_allowed = self.inner.config.retries + 1;
        let mut attempts = 0;
        // On any early return below, `tx` is dropped first, so the writer
        // stops and keeps what it has.
        while written < size {
            attempts += 1;
            if attempts > attempts_allowed {
                drop(tx);
                let _ = finish_writer(digest, writer.take()).await;
                return Err(RegistryError::Truncated {
                    digest: digest.clone(),
                    received: written,
                    expected: size,
                    attempts: attempts_allowed,
                });
            }
            if attempts > 1 {
                tokio::time::sleep(self.backoff(attempts - 1)).await;
            }
            let from = written;
            let response = self
                .send(ep, scopes, &what, &|c| {
                    let r = c.get(url);
                    if from > 0 {
                        r.header(RANGE, format!("bytes={from}-"))
                    } else {
                        r
                    }
                })
                .await?;
            let status = response.status();
            let reset = match status {
                StatusCode::PARTIAL_CONTENT
                    if content_range_start(response.headers()) == Some(from) =>
                {
                    false
                }
                // A range we did not ask for, or the whole blob (200), or
                // "not satisfiable" (416): start over from byte 0.
                StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE => {
                    written = 0;
                    if tx.send(WriterMsg::Reset).await.is_err() {
                        return Err(finish_writer(digest, writer.take())
                            .await
                            .err()
                            .unwrap_or_else(|| writer_gone(digest)));
                    }
                    continue;
                }
                s if s.is_success() => from > 0,
                _ => {
                    let repo = url
                        .split("/v2/")
                        .nth(1)
                        .and_then(|r| r.split("/blobs/").next())
                        .unwrap_or("");
                    let err = self
                        .error_for(ep, response, Subject::Blob, &what, repo)
                        .await;
                    return Err(match err {
                        RegistryError::UnexpectedStatus { status: 404, .. } => {
                            RegistryError::BlobUnknown {
                                repository: repo.to_string(),
                                digest: digest.clone(),
                            }
                        }
                        other => other,
                    });
                }
            };
            if reset {
                written = 0;
                if tx.send(WriterMsg::Reset).await.is_err() {
                    return Err(finish_writer(digest, writer.take())
                        .await
                        .err()
                        .unwrap_or_else(|| writer_gone(digest)));
                }
                report(Progress::LayerProgress {
                    digest: digest.clone(),
                    done: 0,
                    total: size,
                });
            }
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                // A cut connection: retry from `written`.
                let Ok(chunk) = chunk else { break };
                let len = chunk.len() as u64;
                if written + len > size {
                    let _ = tx.send(WriterMsg::Reset).await;
                    drop(tx);
                    let _ = finish_writer(digest, writer.take()).await;
                    return Err(RegistryError::DigestMismatch {
                        what: format!("blob {digest} (size)"),
                        expected: format!("{size} bytes"),
                        actual: format!("more than {size} bytes"),
                    });
                }
                if tx.send(WriterMsg::Data(chunk)).await.is_err() {
                    return Err(finish_writer(digest, writer.take())
                        .await
                        .err()
                        .unwrap_or_else(|| writer_gone(digest)));
                }
                written += len;
                report(Progress::LayerProgress {
                    digest: digest.clone(),
                    done: written,
                    total: size,
                });
            }
        }
        let _ = tx.send(WriterMsg::Commit).await;
        drop(tx);
        match finish_writer(digest, writer.take()).await {
            Ok(true) => {}
            Ok(false) => return Err(writer_gone(digest)),
            Err(e) => return Err(e),
        }
        report(Progress::LayerDone {
            digest: digest.clone(),
        });
        Ok(())
    }
}

fn writer_gone(digest: &Digest) -> RegistryError {
    RegistryError::io(format!("writing blob {digest}"))(std::io::Error::other(
        "the ingest writer stopped",
    ))
}

/// Waits for the writer thread; maps its errors (a failed verification at
/// commit becomes [`RegistryError::DigestMismatch`]).
async fn finish_writer(
    digest: &Digest,
    writer: Option<tokio::task::JoinHandle<Result<bool, ContentError>>>,
) -> Result<bool, RegistryError> {
    let Some(writer) = writer else {
        return Ok(false);
    };
    match writer.await {
        Ok(Ok(committed)) => Ok(committed),
        Ok(Err(ContentError::DigestMismatch { expected, actual })) => {
            Err(RegistryError::DigestMismatch {
                what: format!("blob {digest}"),
                expected: expected.to_string(),
                actual: actual.to_string(),
            })
        }
        Ok(Err(ContentError::SizeMismatch {
            expected, actual, ..
        })) => Err(RegistryError::DigestMismatch {
            what: format!("blob {digest} (size)"),
            expected: format!("{expected} bytes"),
            actual: format!("{actual} bytes"),
        }),
        Ok(Err(e)) => Err(RegistryError::content(format!("ingesting blob {digest}"))(
            e,
        )),
        Err(_) => Err(writer_gone(digest)),
    }
}

/// The blocking side of a blob download: owns the ingest. Returns `Ok(true)`
/// once committed, `Ok(false)` when abandoned (partial data kept).
fn write_ingest(
    store: ContentStore,
    digest: Digest,
    size: u64,
    ready: oneshot::Sender<Option<u64>>,
    mut rx: mpsc::Receiver<WriterMsg>,
) -> Result<bool, ContentError> {
    // Waits while another ingest of this digest (a concurrent pull, or the
    // writer of a cancelled one still draining) holds it.
    let mut ingest = match store.ingest(&digest, Some(size)) {
        Ok(i) => i,
        Err(ContentError::AlreadyExists { .. }) => {
            let _ = ready.send(None);
            return Ok(true);
        }
        Err(e) => return Err(e),
    };
    if ready.send(Some(ingest.offset())).is_err() {
        return Ok(false);
    }
    loop {
        // Persisting comes first: each chunk is written to the file as soon
        // as it arrives, so a SIGKILL loses only what is still queued here.
        // Hashing trails behind from the page cache while no chunk waits.
        let msg = match rx.try_recv() {
            Ok(msg) => msg,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                if ingest.unhashed() > 0 {
                    ingest.hash_behind(HASH_STEP)?;
                    continue;
                }
                match rx.blocking_recv() {
                    Some(msg) => msg,
                    None => break,
                }
            }
        };
        match msg {
            WriterMsg::Data(bytes) => {
                ingest.append_persisted(&bytes)?;
                // Bounded lag: the tail to hash stays in the page cache and
                // the hash left for commit stays short.
                if ingest.unhashed() > MAX_HASH_LAG {
                    ingest.hash_behind(HASH_STEP)?;
                }
            }
            WriterMsg::Reset => ingest.reset()?,
            WriterMsg::Commit => {
                ingest.commit()?;
                return Ok(true);
            }
        }
    }
    // Abandoned: dropping the ingest flushes it, keeping the partial data.
    Ok(false)
}

fn descriptor(media_type: String, digest: Digest, size: usize) -> Descriptor {
    Descriptor::new(&media_type, digest, size as u64)
}

fn header_digest(headers: &reqwest::header::HeaderMap) -> Option<Digest> {
    headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| Digest::parse(s.trim()).ok())
}

/// `Content-Range: bytes 100-199/200` → 100.
fn content_range_start(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let v = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let range = v.trim().strip_prefix("bytes")?.trim();
    range.split('-').next()?.trim().parse().ok()
}
