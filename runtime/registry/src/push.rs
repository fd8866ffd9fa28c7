//! Push: blobs (existence check, cross-repository mount, monolithic or
//! chunked upload), then the manifest (and an index's child manifests); tag.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use berth_image::{ContentStore, Digest, Reference};
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;

use crate::client::{resolve_location, Endpoint, RegistryClient, Subject};
use crate::error::RegistryError;
use crate::manifest::{is_foreign_layer, parse_manifest, AnyManifest, Descriptor, MANIFEST_ACCEPT};
use crate::{ref_string, Progress, ProgressFn, SkipReason};

/// Options for [`RegistryClient::push`].
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Repositories on the same registry the image's blobs came from; blobs
    /// missing from the target are mounted from the first one instead of
    /// uploaded (the registry falls back to an upload when it cannot).
    pub mount_from: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PushedImage {
    pub digest: Digest,
    pub media_type: String,
    /// Where it was stored: the tag, or the digest.
    pub reference: String,
}

impl RegistryClient {
    /// Pushes the manifest (or index) `manifest` and every blob it references
    /// from `store` to `reference` (under its tag, or by digest).
    pub async fn push(
        &self,
        reference: &Reference,
        manifest: &Digest,
        store: &ContentStore,
        options: &PushOptions,
        progress: ProgressFn<'_>,
    ) -> Result<PushedImage, RegistryError> {
        let ep = self.endpoint(&reference.registry).await;
        let repo = reference.repository.as_str();
        let mut scopes = vec![format!("repository:{repo}:pull,push")];
        let mount_from: Vec<&String> = options
            .mount_from
            .iter()
            .filter(|r| r.as_str() != repo)
            .collect();
        scopes.extend(mount_from.iter().map(|r| format!("repository:{r}:pull")));
        let display = ref_string(reference);
        let bytes = read_local(store, manifest)?;
        let (parsed, media_type) = parse_manifest(&display, None, &bytes)?;
        let ctx = PushCtx {
            ep: &ep,
            scopes: &scopes,
            repo,
            mount_from: mount_from.first().map(|s| s.as_str()),
            progress,
        };
        match parsed {
            AnyManifest::Index(index) => {
                for child in &index.manifests {
                    let child_bytes = read_local(store, &child.digest)?;
                    let (child_parsed, child_type) = parse_manifest(&display, None, &child_bytes)?;
                    let AnyManifest::Manifest(m) = child_parsed else {
                        return Err(RegistryError::InvalidManifest {
                            reference: display,
                            reason: "nested indexes are not supported for push".into(),
                        });
                    };
                    self.push_blobs(&ctx, store, &m.config, &m.layers).await?;
                    self.put_manifest(
                        &ctx,
                        &child.digest.to_string(),
                        &child_type,
                        child_bytes,
                        &child.digest,
                    )
                    .await?;
                }
            }
            AnyManifest::Manifest(m) => self.push_blobs(&ctx, store, &m.config, &m.layers).await?,
        }
        let target = reference
            .tag
            .clone()
            .unwrap_or_else(|| manifest.to_string());
        self.put_manifest(&ctx, &target, &media_type, bytes, manifest)
            .await?;
        progress(Progress::Done {
            digest: manifest.clone(),
        });
        Ok(PushedImage {
            digest: manifest.clone(),
            media_type,
            reference: target,
        })
    }

    /// Tags the manifest `source` points at as `new_tag` in the same
    /// repository (the same bytes PUT under another name).
    pub async fn tag(&self, source: &Reference, new_tag: &str) -> Result<Digest, RegistryError> {
        let ep = self.endpoint(&source.registry).await;
        let repo = source.repository.as_str();
        let scopes = vec![format!("repository:{repo}:pull,push")];
        let display = ref_string(source);
        let src = match (&source.digest, &source.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        };
        let url = ep.url(&format!("/v2/{repo}/manifests/{src}"));
        let response = self
            .send(&ep, &scopes, &display, &|c| {
                c.get(&url).header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        if !response.status().is_success() {
            return Err(self
                .error_for(&ep, response, Subject::Manifest, &display, repo)
                .await);
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response
            .bytes()
            .await
            .map_err(|source| RegistryError::Http {
                url: url.clone(),
                attempts: 1,
                source,
            })?;
        let (_, media_type) = parse_manifest(&display, content_type.as_deref(), &bytes)?;
        let digest = Digest::sha256_of(&bytes);
        let ctx = PushCtx {
            ep: &ep,
            scopes: &scopes,
            repo,
            mount_from: None,
            progress: &|_| {},
        };
        self.put_manifest(&ctx, new_tag, &media_type, bytes.to_vec(), &digest)
            .await?;
        Ok(digest)
    }

    async fn push_blobs(
        &self,
        ctx: &PushCtx<'_>,
        store: &ContentStore,
        config: &Descriptor,
        layers: &[Descriptor],
    ) -> Result<(), RegistryError> {
        let blobs: Vec<&Descriptor> = std::iter::once(config)
            .chain(layers.iter().filter(|l| {
                !(is_foreign_layer(&l.media_type) && l.urls.as_ref().is_some_and(|u| !u.is_empty()))
            }))
            .collect();
        let mut jobs = futures_util::stream::iter(blobs)
            .map(|d| self.push_blob(ctx, store, d))
            .buffer_unordered(self.inner.config.concurrency.max(1));
        while let Some(result) = jobs.next().await {
            result?;
        }
        Ok(())
    }

    async fn push_blob(
        &self,
        ctx: &PushCtx<'_>,
        store: &ContentStore,
        desc: &Descriptor,
    ) -> Result<(), RegistryError> {
        let digest = &desc.digest;
        let what = format!("blob {digest}");
        let skipped = |reason| {
            (ctx.progress)(Progress::LayerSkipped {
                digest: digest.clone(),
                reason,
            })
        };
        let head_url = ctx.ep.url(&format!("/v2/{}/blobs/{digest}", ctx.repo));
        let head = self
            .send(ctx.ep, ctx.scopes, &what, &|c| c.head(&head_url))
            .await?;
        if head.status().is_success() {
            skipped(SkipReason::ExistsInRegistry);
            return Ok(());
        }
        if matches!(
            head.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Err(self
                .error_for(ctx.ep, head, Subject::Blob, &what, ctx.repo)
                .await);
        }
        let size = store
            .info(digest)
            .map_err(RegistryError::content(format!("looking up {digest}")))?
            .ok_or_else(|| RegistryError::MissingLocalBlob {
                digest: digest.clone(),
            })?;

        // Start an upload session, or mount.
        let mut start = ctx.ep.url(&format!("/v2/{}/blobs/uploads/", ctx.repo));
        if let Some(from) = ctx.mount_from {
            start.push_str(&format!("?mount={digest}&from={from}"));
        }
        let response = self
            .send(ctx.ep, ctx.scopes, &what, &|c| {
                c.post(&start).header(CONTENT_LENGTH, "0")
            })
            .await?;
        if response.status() == StatusCode::CREATED && ctx.mount_from.is_some() {
            skipped(SkipReason::Mounted {
                from: ctx.mount_from.unwrap_or_default().to_string(),
            });
            return Ok(());
        }
        if response.status() != StatusCode::ACCEPTED {
            return Err(self
                .error_for(ctx.ep, response, Subject::Blob, &what, ctx.repo)
                .await);
        }
        let mut location = self.location(ctx.ep, &response)?;
        (ctx.progress)(Progress::LayerStarted {
            digest: digest.clone(),
            size,
            offset: 0,
        });
        let file = Arc::new(
            store
                .open_blob(digest)
                .map_err(RegistryError::content(format!("opening {digest}")))?,
        );
        let done_so_far = |done: u64| {
            (ctx.progress)(Progress::LayerProgress {
                digest: digest.clone(),
                done,
                total: size,
            })
        };
        let final_body = if size <= self.inner.config.chunked_upload_threshold {
            read_chunk(&file, 0, size).await?
        } else {
            let chunk = self.inner.config.chunk_size.max(1);
            let mut offset = 0;
            while offset < size {
                let len = chunk.min(size - offset);
                let body = read_chunk(&file, offset, len).await?;
                let range = format!("{}-{}", offset, offset + len - 1);
                let url = location.clone();
                let response = self
                    .send(ctx.ep, ctx.scopes, &what, &|c| {
                        c.patch(&url)
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_RANGE, range.clone())
                            .header(CONTENT_LENGTH, len.to_string())
                            .body(body.clone())
                    })
                    .await?;
                if response.status() != StatusCode::ACCEPTED {
                    return Err(self
                        .error_for(ctx.ep, response, Subject::Blob, &what, ctx.repo)
                        .await);
                }
                location = self.location(ctx.ep, &response)?;
                offset += len;
                done_so_far(offset);
            }
            Bytes::new()
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put_url = format!("{location}{sep}digest={digest}");
        let body_len = final_body.len();
        let response = self
            .send(ctx.ep, ctx.scopes, &what, &|c| {
                c.put(&put_url)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, body_len.to_string())
                    .body(final_body.clone())
            })
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(self
                .error_for(ctx.ep, response, Subject::Blob, &what, ctx.repo)
                .await);
        }
        done_so_far(size);
        (ctx.progress)(Progress::LayerDone {
            digest: digest.clone(),
        });
        Ok(())
    }

    async fn put_manifest(
        &self,
        ctx: &PushCtx<'_>,
        target: &str,
        media_type: &str,
        bytes: Vec<u8>,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let url = ctx.ep.url(&format!("/v2/{}/manifests/{target}", ctx.repo));
        let what = format!("manifest {}/{}:{target}", ctx.ep.host, ctx.repo);
        let body = Bytes::from(bytes);
        let response = self
            .send(ctx.ep, ctx.scopes, &what, &|c| {
                c.put(&url)
                    .header(CONTENT_TYPE, media_type)
                    .body(body.clone())
            })
            .await?;
        if !response.status().is_success() {
            return Err(self
                .error_for(ctx.ep, response, Subject::Other, &what, ctx.repo)
                .await);
        }
        if let Some(returned) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            if returned.trim() != digest.to_string() {
                return Err(RegistryError::DigestMismatch {
                    what: format!("{what} (digest the registry computed)"),
                    expected: digest.to_string(),
                    actual: returned.trim().to_string(),
                });
            }
        }
        (ctx.progress)(Progress::ManifestPushed {
            digest: digest.clone(),
            reference: target.to_string(),
        });
        Ok(())
    }

    fn location(
        &self,
        ep: &Endpoint,
        response: &reqwest::Response,
    ) -> Result<String, RegistryError> {
        response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| resolve_location(ep, l))
            .ok_or_else(|| RegistryError::Protocol {
                registry: ep.host.clone(),
                detail: "upload response without Location".into(),
            })
    }
}

struct PushCtx<'a> {
    ep: &'a Endpoint,
    scopes: &'a [String],
    repo: &'a str,
    mount_from: Option<&'a str>,
    progress: ProgressFn<'a>,
}

fn read_local(store: &ContentStore, digest: &Digest) -> Result<Vec<u8>, RegistryError> {
    match store.info(digest) {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(RegistryError::MissingLocalBlob {
                digest: digest.clone(),
            })
        }
        Err(e) => return Err(RegistryError::content(format!("looking up {digest}"))(e)),
    }
    store
        .read_all(digest)
        .map_err(RegistryError::content(format!("reading {digest}")))
}

async fn read_chunk(
    file: &Arc<std::fs::File>,
    offset: u64,
    len: u64,
) -> Result<Bytes, RegistryError> {
    let file = Arc::clone(file);
    let result = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)
            .map(|()| Bytes::from(buf))
    })
    .await;
    match result {
        Ok(r) => r.map_err(RegistryError::io(format!("reading blob at {offset}"))),
        Err(e) => Err(RegistryError::io("reading blob")(std::io::Error::other(
            e.to_string(),
        ))),
    }
}
