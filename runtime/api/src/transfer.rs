//! Moving images in and out: pull and push (Docker's JSON progress stream),
//! save (a tar stream), load and import (a tar request body). Tar work runs
//! on blocking threads, connected to the connection by channels.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_image::archive::ImportOptions;
use berth_image::{Digest, Reference};
use berth_registry::{Progress, SkipReason};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::body::{self, json_line, ApiResponse, ChannelWriter};
use crate::error::{chain, ApiError};
use crate::images::blocking;
use crate::query::Query;
use crate::ApiState;

/// Smallest interval between two progress lines for one layer.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Docker's human sizes: decimal units, four significant digits.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let whole_digits = if v >= 100.0 {
        3
    } else if v >= 10.0 {
        2
    } else {
        1
    };
    let mut s = format!("{v:.prec$}", prec = 4 - whole_digits);
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[i])
}

/// The `progress` text: `[=====>      ]  1.2MB/3.4MB`.
pub fn progress_bar(current: u64, total: u64) -> String {
    if total == 0 {
        return format!("{:>8}", human_size(current));
    }
    let pct = (current.min(total).saturating_mul(100) / total) as usize;
    let filled = (pct / 2).min(49);
    format!(
        "[{}>{}] {:>8}/{}",
        "=".repeat(filled),
        " ".repeat(49 - filled),
        human_size(current),
        human_size(total)
    )
}

fn status(status: &str, id: Option<&str>) -> Bytes {
    match id {
        Some(id) => json_line(&json!({ "status": status, "progressDetail": {}, "id": id })),
        None => json_line(&json!({ "status": status })),
    }
}

fn progress_line(status: &str, id: &str, current: u64, total: u64) -> Bytes {
    json_line(&json!({
        "status": status,
        "progressDetail": { "current": current, "total": total },
        "progress": progress_bar(current, total),
        "id": id,
    }))
}

fn error_line(message: &str) -> Bytes {
    json_line(&json!({ "errorDetail": { "message": message }, "error": message }))
}

/// Turns registry progress events into Docker's progress lines.
struct ProgressLines {
    /// Pull or push wording.
    push: bool,
    /// Push: only these blobs are shown (layers, not the config).
    only: Option<Vec<Digest>>,
    /// Layers transferred, in the order they started.
    transferred: Vec<Digest>,
    last_line: HashMap<Digest, Instant>,
    resolved: Option<Digest>,
}

impl ProgressLines {
    fn new(push: bool, only: Option<Vec<Digest>>) -> Self {
        ProgressLines {
            push,
            only,
            transferred: Vec::new(),
            last_line: HashMap::new(),
            resolved: None,
        }
    }

    fn shown(&self, digest: &Digest) -> bool {
        self.only.as_ref().is_none_or(|o| o.contains(digest))
    }

    fn lines(&mut self, event: Progress) -> Vec<Bytes> {
        let verb = if self.push { "Pushing" } else { "Downloading" };
        match event {
            Progress::Resolved { digest, .. } => {
                self.resolved.get_or_insert(digest);
                Vec::new()
            }
            Progress::Done { digest } => {
                self.resolved.get_or_insert(digest);
                Vec::new()
            }
            Progress::LayerStarted {
                digest,
                size,
                offset,
            } if self.shown(&digest) => {
                let id = digest.short().to_string();
                self.transferred.push(digest.clone());
                self.last_line.insert(digest, Instant::now());
                let mut out = Vec::new();
                if !self.push {
                    out.push(status("Pulling fs layer", Some(&id)));
                }
                out.push(progress_line(verb, &id, offset, size));
                out
            }
            Progress::LayerProgress {
                digest,
                done,
                total,
            } if self.shown(&digest) => {
                let now = Instant::now();
                let due = self
                    .last_line
                    .get(&digest)
                    .is_none_or(|t| now.duration_since(*t) >= PROGRESS_EVERY);
                if !due && done < total {
                    return Vec::new();
                }
                self.last_line.insert(digest.clone(), now);
                vec![progress_line(verb, digest.short(), done, total)]
            }
            Progress::LayerDone { digest } if self.shown(&digest) => {
                let id = digest.short();
                if self.push {
                    vec![status("Pushed", Some(id))]
                } else {
                    vec![
                        status("Verifying Checksum", Some(id)),
                        status("Download complete", Some(id)),
                    ]
                }
            }
            Progress::LayerSkipped { digest, reason } if self.shown(&digest) => {
                let id = digest.short();
                let text = match reason {
                    SkipReason::AlreadyPresent => "Already exists".to_string(),
                    SkipReason::ExistsInRegistry => "Layer already exists".to_string(),
                    SkipReason::Mounted { from } => format!("Mounted from {from}"),
                    SkipReason::Foreign { .. } => "Skipped foreign layer".to_string(),
                };
                vec![status(&text, Some(id))]
            }
            _ => Vec::new(),
        }
    }
}

/// A progress callback feeding a channel, and its receiving end.
fn progress_channel() -> (
    impl Fn(Progress) + Send + Sync + 'static,
    mpsc::UnboundedReceiver<Progress>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        move |p: Progress| {
            let _ = tx.send(p);
        },
        rx,
    )
}

/// `fromImage` + `tag` → the reference to pull.
fn pull_reference(from: &str, tag: Option<&str>) -> Result<Reference, ApiError> {
    let last = from.rsplit('/').next().unwrap_or(from);
    let explicit = last.contains(':') || from.contains('@');
    let text = match tag {
        Some(t) if !explicit && t.contains(':') => format!("{from}@{t}"),
        Some(t) if !explicit => format!("{from}:{t}"),
        _ => from.to_string(),
    };
    Reference::parse(&text).map_err(|e| ApiError::bad(chain(&e)))
}

/// `POST /images/create`: pull (`fromImage`) or import (`fromSrc`).
pub async fn create(
    state: &Arc<ApiState>,
    q: &Query,
    body: Incoming,
) -> Result<ApiResponse, ApiError> {
    if let Some(src) = q.get("fromSrc") {
        return import(state, q, src, body).await;
    }
    let from = q
        .get("fromImage")
        .ok_or_else(|| ApiError::bad("fromImage or fromSrc is required"))?;
    let reference = pull_reference(from, q.get("tag"))?;
    let platform = q
        .get("platform")
        .map(berth_registry::parse_platform)
        .transpose()?;
    pull(state, reference, platform).await
}

async fn pull(
    state: &Arc<ApiState>,
    reference: Reference,
    platform: Option<berth_registry::Platform>,
) -> Result<ApiResponse, ApiError> {
    let name = reference.to_string();
    let familiar = reference.familiar();
    let was_present = {
        let name = name.clone();
        blocking(state, move |images| Ok(images.find(&name).ok())).await?
    };
    let (callback, mut events) = progress_channel();
    let (result_tx, mut result_rx) = oneshot::channel();
    let images = Arc::clone(&state.images);
    let pull_name = name.clone();
    tokio::spawn(async move {
        let result = images.pull(&pull_name, platform.as_ref(), &callback).await;
        drop(callback);
        let _ = result_tx.send(result);
    });

    // Until the registry answers, a failure is a plain HTTP error (the CLI
    // acts on 404); after that, errors go into the stream as Docker's do.
    let mut lines = ProgressLines::new(false, None);
    let mut early = Vec::new();
    let mut finished = None;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(e) => {
                    let resolved = matches!(e, Progress::Resolved { .. });
                    early.extend(lines.lines(e));
                    if resolved {
                        break;
                    }
                }
                None => break,
            },
            result = &mut result_rx => {
                match result {
                    Ok(Err(e)) => return Err(e.into()),
                    Ok(Ok(id)) => {
                        finished = Some(id);
                        break;
                    }
                    Err(_) => return Err(ApiError::Internal("the pull task ended unexpectedly".into())),
                }
            }
        }
    }

    let (tx, response) = body::stream("application/json");
    let state = Arc::clone(state);
    let tag_or_digest = reference
        .digest
        .as_ref()
        .map(|d| d.to_string())
        .unwrap_or_else(|| reference.tag_or_latest().to_string());
    tokio::spawn(async move {
        let send = |b: Bytes| {
            let tx = tx.clone();
            async move { tx.send(b).await.is_ok() }
        };
        let header = json_line(&json!({
            "status": format!("Pulling from {}", reference.repository),
            "id": tag_or_digest,
        }));
        send(header).await;
        for line in early {
            send(line).await;
        }
        while let Some(e) = events.recv().await {
            for line in lines.lines(e) {
                send(line).await;
            }
        }
        let result = match finished {
            Some(id) => Ok(id),
            None => match result_rx.await {
                Ok(r) => r.map_err(|e| chain(&e)),
                Err(_) => Err("the pull task ended unexpectedly".to_string()),
            },
        };
        match result {
            Err(message) => {
                send(error_line(&message)).await;
            }
            Ok(_) => {
                for d in &lines.transferred {
                    send(status("Pull complete", Some(d.short()))).await;
                }
                let record = {
                    let images = Arc::clone(&state.images);
                    let name = name.clone();
                    tokio::task::spawn_blocking(move || images.find(&name).ok())
                        .await
                        .ok()
                        .flatten()
                };
                if let Some(digest) = record
                    .as_ref()
                    .map(|r| r.digest.clone())
                    .or(lines.resolved.clone())
                {
                    send(status(&format!("Digest: {digest}"), None)).await;
                }
                let up_to_date = lines.transferred.is_empty()
                    && was_present.as_ref().map(|r| &r.digest)
                        == record.as_ref().map(|r| &r.digest);
                let text = if up_to_date {
                    format!("Status: Image is up to date for {familiar}")
                } else {
                    format!("Status: Downloaded newer image for {familiar}")
                };
                send(status(&text, None)).await;
                state
                    .events
                    .image("pull", &familiar, Some(&reference.familiar_name()));
            }
        }
    });
    Ok(response)
}

/// `POST /images/{name}/push?tag=`.
pub async fn push(
    state: &Arc<ApiState>,
    name: &str,
    q: &Query,
    _headers: &HeaderMap,
) -> Result<ApiResponse, ApiError> {
    let base = Reference::parse(name).map_err(|e| ApiError::bad(chain(&e)))?;
    let explicit_tag = name.rsplit('/').next().is_some_and(|l| l.contains(':'));
    let wanted: Option<String> = match q.get("tag") {
        Some(t) => Some(
            base.with_tag(t)
                .map_err(|e| ApiError::bad(chain(&e)))?
                .to_string(),
        ),
        None if explicit_tag => Some(base.to_string()),
        None => None,
    };
    let repository = base.repository_name();
    // (reference, layer digests, manifest size)
    let targets = {
        let name = name.to_string();
        blocking(state, move |images| {
            let names: Vec<String> = match wanted {
                Some(w) => vec![w],
                None => images
                    .names()?
                    .into_iter()
                    .filter(|n| {
                        Reference::parse(n)
                            .is_ok_and(|r| r.repository_name() == repository && r.digest.is_none())
                    })
                    .collect(),
            };
            if names.is_empty() {
                return Err(ApiError::NotFound(format!(
                    "An image does not exist locally with the tag: {name}"
                )));
            }
            names
                .into_iter()
                .map(|n| {
                    let record = images.find(&n).map_err(|_| {
                        ApiError::NotFound(format!(
                            "An image does not exist locally with the tag: {n}"
                        ))
                    })?;
                    let details = images.inspect(&n)?;
                    let layers = details.layers.iter().map(|l| l.digest.clone()).collect();
                    Ok((n, layers, record.size))
                })
                .collect::<Result<Vec<(String, Vec<Digest>, u64)>, ApiError>>()
        })
        .await?
    };

    let (tx, response) = body::stream("application/json");
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let header = format!("The push refers to repository [{}]", base.familiar_name());
        if tx.send(status(&header, None)).await.is_err() {
            return;
        }
        for (name, layers, size) in targets {
            let tag = Reference::parse(&name)
                .map(|r| r.tag_or_latest().to_string())
                .unwrap_or_default();
            for d in &layers {
                let _ = tx.send(status("Preparing", Some(d.short()))).await;
            }
            let mut lines = ProgressLines::new(true, Some(layers));
            let (callback, mut events) = progress_channel();
            let images = Arc::clone(&state.images);
            let push_name = name.clone();
            // On a blocking thread with `block_on`: the registry client's push
            // future is not provably `Send` (a higher-ranked closure inside),
            // so it cannot go to `tokio::spawn`.
            let handle = tokio::runtime::Handle::current();
            let task = tokio::task::spawn_blocking(move || {
                let r = handle.block_on(images.push(&push_name, &callback));
                drop(callback);
                r.map_err(|e| chain(&e))
            });
            while let Some(e) = events.recv().await {
                for line in lines.lines(e) {
                    let _ = tx.send(line).await;
                }
            }
            match task.await {
                Ok(Ok(digest)) => {
                    let _ = tx
                        .send(status(
                            &format!("{tag}: digest: {digest} size: {size}"),
                            None,
                        ))
                        .await;
                    let aux = json!({
                        "progressDetail": {},
                        "aux": { "Tag": tag, "Digest": digest.to_string(), "Size": size },
                    });
                    let _ = tx.send(json_line(&aux)).await;
                    let familiar = Reference::parse(&name)
                        .map(|r| r.familiar())
                        .unwrap_or(name.clone());
                    state.events.image("push", &familiar, Some(&familiar));
                }
                Ok(Err(message)) => {
                    let _ = tx.send(error_line(&message)).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(error_line(&format!("push task failed: {e}"))).await;
                    return;
                }
            }
        }
    });
    Ok(response)
}

/// `GET /images/get?names=…` and `GET /images/{name}/get`: a tar stream.
pub async fn save(state: &Arc<ApiState>, names: Vec<String>) -> Result<ApiResponse, ApiError> {
    if names.is_empty() {
        return Err(ApiError::bad("no image names given"));
    }
    // Unknown names are a 404 before any byte is sent.
    let names = {
        let names = names.clone();
        blocking(state, move |images| {
            for n in &names {
                images.find(n)?;
            }
            Ok(names)
        })
        .await?
    };
    let (tx, response) = body::stream("application/x-tar");
    let images = Arc::clone(&state.images);
    let saved = names.clone();
    let task = tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter::new(tx);
        images.save(&saved, &mut out)?;
        std::io::Write::flush(&mut out).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok::<(), ApiError>(())
    });
    let state = Arc::clone(state);
    tokio::spawn(async move {
        match task.await {
            Ok(Ok(())) => {
                for n in &names {
                    state.events.image("save", n, Some(n));
                }
            }
            Ok(Err(e)) => eprintln!("berth-api: save of {names:?} failed: {e}"),
            Err(e) => eprintln!("berth-api: save of {names:?} failed: {e}"),
        }
    });
    Ok(response)
}

fn loaded_line(name: &str) -> String {
    match Reference::parse(name) {
        Ok(r) if !name.starts_with("sha256:") => format!("Loaded image: {}\n", r.familiar()),
        _ => format!("Loaded image ID: {name}\n"),
    }
}

/// `POST /images/load`: a `docker save` archive (or OCI layout tar) in the body.
pub async fn load(
    state: &Arc<ApiState>,
    _q: &Query,
    body: Incoming,
) -> Result<ApiResponse, ApiError> {
    let reader = body::blocking_reader(body);
    let images = Arc::clone(&state.images);
    let handle = tokio::runtime::Handle::current();
    let names = tokio::task::spawn_blocking(move || {
        handle
            .block_on(images.load(reader))
            .map_err(|e| match ApiError::from(e) {
                ApiError::Internal(m) => ApiError::BadRequest(m),
                other => other,
            })
    })
    .await??;
    let mut out = Vec::new();
    for n in &names {
        let line = loaded_line(n);
        let familiar = line.trim_end().rsplit(": ").next().unwrap_or(n).to_string();
        state.events.image("load", &familiar, Some(&familiar));
        out.extend_from_slice(&json_line(&json!({ "stream": line })));
    }
    let mut response = body::empty(StatusCode::OK);
    *response.body_mut() = body::ResponseBody::Full(Some(Bytes::from(out)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Parses `--change` instructions `docker import` accepts.
fn apply_changes(changes: &[&str], opts: &mut ImportOptions) -> Result<(), ApiError> {
    fn words(args: &str) -> Result<Vec<String>, ApiError> {
        let args = args.trim();
        if args.starts_with('[') {
            serde_json::from_str::<Vec<String>>(args)
                .map_err(|e| ApiError::bad(format!("invalid JSON array {args:?}: {e}")))
        } else {
            Ok(vec!["/bin/sh".into(), "-c".into(), args.to_string()])
        }
    }
    for change in changes {
        let (instruction, args) = change
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((change, ""));
        match instruction.to_ascii_uppercase().as_str() {
            "CMD" => opts.cmd = Some(words(args)?),
            "ENTRYPOINT" => opts.entrypoint = Some(words(args)?),
            "ENV" => {
                let args = args.trim();
                let pair = match args.split_once('=') {
                    Some(_) => args.to_string(),
                    None => match args.split_once(char::is_whitespace) {
                        Some((k, v)) => format!("{k}={}", v.trim()),
                        None => return Err(ApiError::bad(format!("invalid ENV {args:?}"))),
                    },
                };
                opts.env.push(pair);
            }
            "WORKDIR" => opts.working_dir = Some(args.trim().to_string()),
            other => {
                return Err(ApiError::bad(format!(
                "{other} is not a valid change command (supported: CMD, ENTRYPOINT, ENV, WORKDIR)"
            )))
            }
        }
    }
    Ok(())
}

/// `POST /images/create?fromSrc=-&repo=&tag=&message=&changes=`: a root
/// filesystem tarball in the body becomes a one-layer image.
async fn import(
    state: &Arc<ApiState>,
    q: &Query,
    src: &str,
    body: Incoming,
) -> Result<ApiResponse, ApiError> {
    if src != "-" {
        return Err(ApiError::NotImplemented(format!(
            "importing from {src:?}: Berth imports only from the request body (fromSrc=-)"
        )));
    }
    let mut opts = ImportOptions {
        comment: q.get("message").map(str::to_string),
        ..ImportOptions::default()
    };
    if let Some(repo) = q.get("repo") {
        let reference = pull_reference(repo, q.get("tag"))?;
        opts.name = Some(reference.to_string());
    }
    apply_changes(&q.all("changes"), &mut opts)?;
    let reader = body::blocking_reader(body);
    let images = Arc::clone(&state.images);
    let name = opts.name.clone();
    let id = tokio::task::spawn_blocking(move || {
        images
            .import(reader, &opts)
            .map_err(|e| match ApiError::from(e) {
                ApiError::Internal(m) => ApiError::BadRequest(m),
                other => other,
            })
    })
    .await??;
    let shown = name
        .and_then(|n| Reference::parse(&n).ok().map(|r| r.familiar()))
        .unwrap_or_else(|| id.to_string());
    state.events.image("import", &id.to_string(), Some(&shown));
    let line: Value = json!({ "status": id.to_string() });
    let mut response = body::empty(StatusCode::OK);
    *response.body_mut() = body::ResponseBody::Full(Some(json_line(&line)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(500), "500B");
        assert_eq!(human_size(1024), "1.024kB");
        assert_eq!(human_size(772_800), "772.8kB");
        assert_eq!(human_size(3_410_000), "3.41MB");
        assert_eq!(human_size(0), "0B");
    }

    #[test]
    fn bars() {
        assert!(progress_bar(50, 100).starts_with("[=========================>"));
        assert!(progress_bar(100, 100).ends_with("100B/100B"));
    }

    #[test]
    fn references() {
        let r = pull_reference("busybox", Some("1.36")).map(|r| r.to_string());
        assert_eq!(r.ok().as_deref(), Some("docker.io/library/busybox:1.36"));
        let r = pull_reference("127.0.0.1:5000/a/b", Some("v1")).map(|r| r.to_string());
        assert_eq!(r.ok().as_deref(), Some("127.0.0.1:5000/a/b:v1"));
        assert!(pull_reference("Bad Name", None).is_err());
    }
}
