//! Image endpoints that answer from the local store: list, inspect,
//! history, tag, remove, prune; and the registry-facing `search` and `/auth`.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_engine::{ImageDetails, ImageService, ImageSummary, Removed};
use berth_image::Reference;
use hyper::body::Incoming;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::{self, ApiResponse};
use crate::error::ApiError;
use crate::query::{glob, Filters, Query};
use crate::time::parse_rfc3339;
use crate::ApiState;

/// Runs store work (file I/O) on a blocking thread.
pub(crate) async fn blocking<T, F>(state: &Arc<ApiState>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&ImageService) -> Result<T, ApiError> + Send + 'static,
{
    let images = Arc::clone(&state.images);
    tokio::task::spawn_blocking(move || f(&images)).await?
}

/// Tags (`hello:latest`) and digests (`hello@sha256:…`) in Docker's short form.
fn repo_tags_and_digests(s: &ImageSummary) -> (Vec<String>, Vec<String>) {
    let mut tags = Vec::new();
    let mut digests = Vec::new();
    for name in &s.names {
        let Ok(r) = Reference::parse(name) else {
            continue;
        };
        if r.digest.is_none() {
            tags.push(r.familiar());
        }
        let d = format!("{}@{}", r.familiar_name(), s.target);
        if !digests.contains(&d) {
            digests.push(d);
        }
    }
    (tags, digests)
}

fn labels_of(details: &ImageDetails) -> BTreeMap<String, String> {
    details
        .config
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
}

fn created_secs(created: Option<&str>) -> i64 {
    created.and_then(parse_rfc3339).unwrap_or(0)
}

fn reference_matches(pattern: &str, names: &[String]) -> bool {
    names
        .iter()
        .filter_map(|n| Reference::parse(n).ok())
        .any(|r| {
            let familiar = r.familiar();
            let short = r.familiar_name();
            glob(pattern, &familiar)
                || glob(pattern, &short)
                || glob(pattern, &r.to_string())
                || glob(pattern, &r.repository_name())
        })
}

/// Image list entries (`GET /images/json` shape), filtered.
pub(crate) fn summaries(images: &ImageService, filters: &Filters) -> Result<Vec<Value>, ApiError> {
    filters.only(&["dangling", "reference", "label"])?;
    let dangling = filters.bool("dangling")?;
    let mut out = Vec::new();
    for s in images.list()? {
        let labels = images
            .inspect(&s.id.to_string())
            .map(|d| labels_of(&d))
            .unwrap_or_default();
        let (mut tags, mut digests) = repo_tags_and_digests(&s);
        if dangling.is_some_and(|want| want != tags.is_empty()) {
            continue;
        }
        let references = filters.get("reference");
        if !references.is_empty() {
            // As Docker: only the names that match are shown.
            let matching: Vec<String> = s
                .names
                .iter()
                .filter(|n| {
                    references
                        .iter()
                        .any(|p| reference_matches(p, std::slice::from_ref(n)))
                })
                .cloned()
                .collect();
            if matching.is_empty() {
                continue;
            }
            let only = ImageSummary {
                names: matching,
                ..s.clone()
            };
            (tags, digests) = repo_tags_and_digests(&only);
        }
        if !filters.labels_match("label", &labels) {
            continue;
        }
        out.push(json!({
            "Id": s.id.to_string(),
            "ParentId": "",
            "RepoTags": tags,
            "RepoDigests": digests,
            "Created": created_secs(s.created.as_deref()),
            "Size": s.size,
            "SharedSize": -1,
            "VirtualSize": s.size,
            "Labels": labels,
            "Containers": -1,
        }));
    }
    out.sort_by_key(|v| std::cmp::Reverse(v["Created"].as_i64().unwrap_or(0)));
    Ok(out)
}

/// `GET /images/json`.
pub async fn list(state: &Arc<ApiState>, q: &Query) -> Result<ApiResponse, ApiError> {
    let filters = q.filters()?;
    let list = blocking(state, move |images| summaries(images, &filters)).await?;
    Ok(body::json(StatusCode::OK, &list))
}

/// `GET /images/{name}/json`.
pub async fn inspect(state: &Arc<ApiState>, name: &str) -> Result<ApiResponse, ApiError> {
    let name = name.to_string();
    let details = blocking(state, move |images| Ok(images.inspect(&name)?)).await?;
    Ok(body::json(StatusCode::OK, &inspect_json(&details)))
}

fn inspect_json(d: &ImageDetails) -> Value {
    let (tags, digests) = repo_tags_and_digests(&d.summary);
    let c = d.config.config.clone().unwrap_or_default();
    let config = json!({
        "Hostname": "",
        "Domainname": "",
        "User": c.user.unwrap_or_default(),
        "AttachStdin": false,
        "AttachStdout": false,
        "AttachStderr": false,
        "ExposedPorts": c.exposed_ports,
        "Tty": false,
        "OpenStdin": false,
        "StdinOnce": false,
        "Env": c.env,
        "Cmd": c.cmd,
        "Healthcheck": c.healthcheck,
        "ArgsEscaped": c.args_escaped,
        "Image": "",
        "Volumes": c.volumes,
        "WorkingDir": c.working_dir.unwrap_or_default(),
        "Entrypoint": c.entrypoint,
        "OnBuild": c.on_build,
        "Labels": c.labels,
        "StopSignal": c.stop_signal,
        "Shell": c.shell,
    });
    let comment = d
        .config
        .history
        .last()
        .and_then(|h| h.comment.clone())
        .unwrap_or_default();
    let layers: Vec<String> = d
        .config
        .rootfs
        .diff_ids
        .iter()
        .map(|x| x.to_string())
        .collect();
    json!({
        "Id": d.summary.id.to_string(),
        "RepoTags": tags,
        "RepoDigests": digests,
        "Parent": "",
        "Comment": comment,
        "Created": d.config.created.clone().unwrap_or_default(),
        "DockerVersion": "",
        "Author": d.config.author.clone().unwrap_or_default(),
        "Config": config,
        "Architecture": d.config.architecture,
        "Variant": d.config.variant,
        "Os": d.config.os,
        "OsVersion": d.config.os_version,
        "Size": d.summary.size,
        "VirtualSize": d.summary.size,
        "GraphDriver": { "Name": "overlayfs", "Data": null },
        "RootFS": { "Type": "layers", "Layers": layers },
        "Metadata": { "LastTagTime": "0001-01-01T00:00:00Z" },
        "Descriptor": {
            "mediaType": d.manifest.media_type,
            "digest": d.manifest.digest.to_string(),
            "size": d.manifest.size,
        },
    })
}

/// `GET /images/{name}/history`, newest first.
pub async fn history(state: &Arc<ApiState>, name: &str) -> Result<ApiResponse, ApiError> {
    let name = name.to_string();
    let details = blocking(state, move |images| Ok(images.inspect(&name)?)).await?;
    let (tags, _) = repo_tags_and_digests(&details.summary);
    let mut sizes = details.layers.iter().map(|l| l.size);
    let mut entries: Vec<Value> = details
        .config
        .history
        .iter()
        .map(|h| {
            let size = if h.empty_layer.unwrap_or(false) {
                0
            } else {
                sizes.next().unwrap_or(0)
            };
            json!({
                "Id": "<missing>",
                "Created": created_secs(h.created.as_deref()),
                "CreatedBy": h.created_by.clone().unwrap_or_default(),
                "Tags": null,
                "Size": size,
                "Comment": h.comment.clone().unwrap_or_default(),
            })
        })
        .collect();
    if entries.is_empty() {
        entries.push(json!({
            "Id": "<missing>",
            "Created": created_secs(details.config.created.as_deref()),
            "CreatedBy": "",
            "Tags": null,
            "Size": details.summary.size,
            "Comment": "",
        }));
    }
    entries.reverse();
    if let Some(top) = entries.first_mut() {
        top["Id"] = json!(details.summary.id.to_string());
        top["Tags"] = json!(tags);
    }
    Ok(body::json(StatusCode::OK, &entries))
}

/// `POST /images/{name}/tag?repo=&tag=`.
pub async fn tag(state: &Arc<ApiState>, name: &str, q: &Query) -> Result<ApiResponse, ApiError> {
    let repo = q
        .get("repo")
        .ok_or_else(|| ApiError::bad("repository name must have at least one component"))?;
    let target = match q.get("tag") {
        Some(tag) => format!("{repo}:{tag}"),
        None => repo.to_string(),
    };
    let reference = Reference::parse(&target).map_err(|e| ApiError::bad(e.to_string()))?;
    if reference.digest.is_some() {
        return Err(ApiError::bad(
            "refusing to create a tag with a digest reference",
        ));
    }
    let source = name.to_string();
    let (id, tagged) = blocking(state, move |images| {
        let details = images.inspect(&source)?;
        let tagged = images.tag(&source, &target)?;
        Ok((details.summary.id.to_string(), tagged))
    })
    .await?;
    let familiar = Reference::parse(&tagged)
        .map(|r| r.familiar())
        .unwrap_or(tagged);
    state.events.image("tag", &id, Some(&familiar));
    Ok(body::empty(StatusCode::CREATED))
}

fn removed_json(removed: &[Removed]) -> Vec<Value> {
    removed
        .iter()
        .map(|r| match r {
            Removed::Untagged(n) => json!({ "Untagged": n }),
            Removed::Deleted(d) => json!({ "Deleted": d.to_string() }),
        })
        .collect()
}

fn publish_removed(state: &ApiState, id: &str, removed: &[Removed]) {
    for r in removed {
        match r {
            Removed::Untagged(n) => state.events.image("untag", id, Some(n)),
            Removed::Deleted(d) => {
                let d = d.to_string();
                state.events.image("delete", &d, Some(&d))
            }
        }
    }
}

/// `DELETE /images/{name}?force=`.
pub async fn remove(state: &Arc<ApiState>, name: &str, q: &Query) -> Result<ApiResponse, ApiError> {
    let name = name.to_string();
    let force = q.flag("force");
    let (id, removed) = blocking(state, move |images| {
        let id = images.inspect(&name)?.summary.id.to_string();
        // Containers are not tracked yet: no image is in use.
        Ok((id, images.remove(&name, force, &[])?))
    })
    .await?;
    publish_removed(state, &id, &removed);
    Ok(body::json(StatusCode::OK, &removed_json(&removed)))
}

/// `POST /images/prune?filters=`: dangling images by default, every image
/// with `dangling=false`.
pub async fn prune(state: &Arc<ApiState>, q: &Query) -> Result<ApiResponse, ApiError> {
    let filters = q.filters()?;
    filters.only(&["dangling", "label"])?;
    let dangling_only = filters.bool("dangling")?.unwrap_or(true);
    let results = blocking(state, move |images| {
        let mut out: Vec<(String, Vec<Removed>, u64)> = Vec::new();
        for s in images.list()? {
            let (tags, _) = repo_tags_and_digests(&s);
            if dangling_only && !tags.is_empty() {
                continue;
            }
            let labels = images
                .inspect(&s.id.to_string())
                .map(|d| labels_of(&d))
                .unwrap_or_default();
            if !filters.labels_match("label", &labels) {
                continue;
            }
            let id = s.id.to_string();
            match images.remove(&id, true, &[]) {
                Ok(removed) => out.push((id, removed, s.size)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    })
    .await?;
    let mut deleted = Vec::new();
    let mut reclaimed = 0u64;
    for (id, removed, size) in &results {
        publish_removed(state, id, removed);
        if removed.iter().any(|r| matches!(r, Removed::Deleted(_))) {
            reclaimed += size;
        }
        deleted.extend(removed_json(removed));
    }
    if !results.is_empty() {
        state.events.image("prune", "", None);
    }
    Ok(body::json(
        StatusCode::OK,
        &json!({ "ImagesDeleted": deleted, "SpaceReclaimed": reclaimed }),
    ))
}

/// Whether the first component of `term` names a registry host.
fn registry_of(term: &str) -> Option<(&str, &str)> {
    let (first, rest) = term.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some((first, rest))
}

/// `GET /images/search?term=&limit=`: through a registry's catalog when the
/// term names a registry (`127.0.0.1:5000/name`); Docker Hub's search API is
/// not offered.
pub async fn search(state: &Arc<ApiState>, q: &Query) -> Result<ApiResponse, ApiError> {
    let term = q.get("term").unwrap_or("");
    let Some((registry, needle)) = registry_of(term) else {
        return Err(ApiError::NotImplemented(format!(
            "search for {term:?}: Berth does not offer Docker Hub's search; the configured registries do not provide a search endpoint. To search a registry's catalog, prefix the term with its host, e.g. 127.0.0.1:5000/{term}"
        )));
    };
    let limit: usize = q
        .get("limit")
        .map(|l| {
            l.parse()
                .map_err(|_| ApiError::bad(format!("invalid limit {l:?}")))
        })
        .transpose()?
        .unwrap_or(25);
    let repositories = state.images.registry().catalog(registry).await?;
    let results: Vec<Value> = repositories
        .into_iter()
        .filter(|r| r.contains(needle))
        .take(limit)
        .map(|r| {
            json!({
                "name": format!("{registry}/{r}"),
                "description": "",
                "star_count": 0,
                "is_official": false,
                "is_automated": false,
            })
        })
        .collect();
    Ok(body::json(StatusCode::OK, &results))
}

#[derive(Debug, Default, Deserialize)]
struct AuthRequest {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default, rename = "serveraddress")]
    server_address: String,
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/x` → `host:5000`.
pub(crate) fn registry_host(server: &str) -> String {
    let s = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or("");
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        h => h.to_string(),
    }
}

/// `POST /auth`: checks the credentials against the registry and stores
/// them for the daemon's own pulls and pushes.
pub async fn auth(state: &Arc<ApiState>, body: Incoming) -> Result<ApiResponse, ApiError> {
    let request: AuthRequest = body::collect_json(body, 64 << 10).await?;
    if request.username.is_empty() {
        return Err(ApiError::bad("username is required"));
    }
    let host = registry_host(&request.server_address);
    state
        .images
        .registry()
        .login(&host, &request.username, &request.password)
        .await?;
    Ok(body::json(
        StatusCode::OK,
        &json!({ "Status": "Login Succeeded", "IdentityToken": "" }),
    ))
}
