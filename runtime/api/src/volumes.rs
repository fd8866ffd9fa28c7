//! The `/volumes` endpoints (the local driver) over the engine's volume
//! service, plus the volume parts of `system df` and container inspect.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_engine::containers::{ContainerError, ContainerRecord};
use berth_engine::volumes::{Volume, VolumeCreate, VolumeError, VolumeFilters};
use hyper::body::Incoming;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::{self, ApiResponse};
use crate::error::ApiError;
use crate::query::Query;
use crate::ApiState;

impl From<VolumeError> for ApiError {
    fn from(err: VolumeError) -> Self {
        ContainerError::Volume(err).into()
    }
}

/// Docker's `Volume` object; `usage` (size, containers) only for `df`.
pub fn volume_json(v: &Volume, usage: Option<(u64, usize)>) -> Value {
    let mut out = json!({
        "Name": v.name,
        "Driver": v.driver,
        "Mountpoint": v.mountpoint,
        "CreatedAt": v.created_at,
        "Labels": v.labels,
        "Scope": "local",
        "Options": if v.options.is_empty() { Value::Null } else { json!(v.options) },
        "UsageData": Value::Null,
    });
    if let Some((size, refs)) = usage {
        out["UsageData"] = json!({"Size": size, "RefCount": refs});
    }
    out
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await?
}

fn filters(query: &Query, prune: bool) -> Result<VolumeFilters, ApiError> {
    let f = query.filters()?;
    if prune {
        f.only(&["label", "label!", "all"])?;
    } else {
        f.only(&["dangling", "name", "label", "driver"])?;
    }
    Ok(VolumeFilters {
        dangling: f.bool("dangling")?,
        name: f.get("name").to_vec(),
        label: f.get("label").to_vec(),
        label_not: f.get("label!").to_vec(),
        driver: f.get("driver").to_vec(),
        all: f.bool("all")?.unwrap_or(false),
    })
}

/// `GET /volumes`.
pub async fn list(state: &Arc<ApiState>, query: &Query) -> Result<ApiResponse, ApiError> {
    let f = filters(query, false)?;
    let state = Arc::clone(state);
    let volumes = blocking(move || Ok(state.containers.volume_list(&f))).await?;
    let items: Vec<Value> = volumes.iter().map(|v| volume_json(v, None)).collect();
    Ok(body::json(
        StatusCode::OK,
        &json!({"Volumes": items, "Warnings": []}),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: Option<String>,
    driver: Option<String>,
    driver_opts: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

/// `POST /volumes/create`.
pub async fn create(state: &Arc<ApiState>, body: Incoming) -> Result<ApiResponse, ApiError> {
    let bytes = body::collect(body, 1 << 20).await?;
    let parsed: CreateBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        CreateBody::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad(format!("invalid JSON in the volume create request: {e}")))?
    };
    let req = VolumeCreate {
        name: parsed.name.filter(|n| !n.is_empty()),
        driver: parsed.driver.unwrap_or_default(),
        driver_opts: parsed.driver_opts.unwrap_or_default(),
        labels: parsed.labels.unwrap_or_default(),
    };
    let st = Arc::clone(state);
    let (volume, _) = blocking(move || Ok(st.containers.volumes().create(req)?)).await?;
    Ok(body::json(StatusCode::CREATED, &volume_json(&volume, None)))
}

/// `GET /volumes/{name}`.
pub async fn inspect(state: &Arc<ApiState>, name: &str) -> Result<ApiResponse, ApiError> {
    let volume = state.containers.volumes().inspect(name)?;
    Ok(body::json(StatusCode::OK, &volume_json(&volume, None)))
}

/// `DELETE /volumes/{name}`: 409 while a container uses it.
pub async fn remove(
    state: &Arc<ApiState>,
    name: &str,
    query: &Query,
) -> Result<ApiResponse, ApiError> {
    let force = query.flag("force");
    let st = Arc::clone(state);
    let owned = name.to_string();
    blocking(move || Ok(st.containers.volume_remove(&owned, force)?)).await?;
    Ok(body::empty(StatusCode::NO_CONTENT))
}

/// `POST /volumes/prune`: unused anonymous volumes (all unused ones with
/// the `all=true` filter), as Docker 23+ does.
pub async fn prune(state: &Arc<ApiState>, query: &Query) -> Result<ApiResponse, ApiError> {
    let f = filters(query, true)?;
    let st = Arc::clone(state);
    let report = blocking(move || Ok(st.containers.volume_prune(&f)?)).await?;
    Ok(body::json(
        StatusCode::OK,
        &json!({"VolumesDeleted": report.deleted, "SpaceReclaimed": report.space_reclaimed}),
    ))
}

/// The `Volumes` list of `GET /system/df`, with usage data.
pub async fn df_entries(state: &Arc<ApiState>) -> Result<Vec<Value>, ApiError> {
    let st = Arc::clone(state);
    let usage = blocking(move || Ok(st.containers.volume_usage())).await?;
    Ok(usage
        .iter()
        .map(|u| volume_json(&u.volume, Some((u.size, u.ref_count))))
        .collect())
}

/// A container's `Mounts` (inspect and list).
pub fn mounts_json(record: &ContainerRecord) -> Vec<Value> {
    record.mounts.iter().map(|m| m.to_json()).collect()
}
