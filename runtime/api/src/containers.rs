//! The `/containers` and `/exec` endpoints over [`ContainerService`]:
//! Docker's request and response shapes in, the engine's types out.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_engine::containers::{
    ContainerCreate, ContainerError, ContainerRecord, ExecConfig, HostConfig, ListFilters,
    LogOptions, RestartPolicy, StatsSample, Status, Stream, WaitCondition,
};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::body::{self, ApiResponse};
use crate::error::{chain, ApiError};
use crate::query::Query;
use crate::ApiState;
use berth_detach_keys::DetachScanner;

impl From<ContainerError> for ApiError {
    fn from(err: ContainerError) -> Self {
        let message = chain(&err);
        match err.http_status() {
            404 => ApiError::NotFound(message),
            409 => ApiError::Conflict(message),
            403 => ApiError::Forbidden(message),
            400 => ApiError::BadRequest(message),
            _ => ApiError::Internal(message),
        }
    }
}

/// 304 for "already in that state", as Docker answers start/stop.
fn not_modified_or(err: ContainerError) -> Result<ApiResponse, ApiError> {
    if err.http_status() == 304 {
        Ok(body::empty(StatusCode::NOT_MODIFIED))
    } else {
        Err(err.into())
    }
}

fn service(state: &ApiState) -> &berth_engine::containers::ContainerService {
    &state.containers
}

/// Docker's create body (the fields Berth acts on; others are ignored, as
/// an older daemon ignores newer fields).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    image: String,
    cmd: Option<StringOrList>,
    entrypoint: Option<StringOrList>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    hostname: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    tty: bool,
    open_stdin: bool,
    stdin_once: bool,
    stop_signal: Option<String>,
    stop_timeout: Option<u64>,
    healthcheck: Option<berth_image::manifest::HealthConfig>,
    /// Anonymous volumes (`-v /path`): the keys matter.
    volumes: Option<BTreeMap<String, Value>>,
    host_config: Option<HostConfigBody>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s],
            StringOrList::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct HostConfigBody {
    binds: Option<Vec<String>>,
    mounts: Option<Vec<berth_engine::containers::MountSpec>>,
    tmpfs: Option<BTreeMap<String, String>>,
    memory: i64,
    memory_swap: i64,
    nano_cpus: i64,
    cpu_shares: u64,
    pids_limit: Option<i64>,
    cap_add: Option<Vec<String>>,
    cap_drop: Option<Vec<String>>,
    privileged: bool,
    readonly_rootfs: bool,
    security_opt: Option<Vec<String>>,
    auto_remove: bool,
    restart_policy: Option<RestartPolicyBody>,
    init: Option<bool>,
    network_mode: Option<String>,
    oom_score_adj: i32,
    console_size: Option<Vec<u16>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RestartPolicyBody {
    name: String,
    maximum_retry_count: u32,
}

impl CreateBody {
    fn into_request(self, name: Option<String>) -> ContainerCreate {
        let host = self.host_config.unwrap_or_default();
        ContainerCreate {
            name,
            image: self.image,
            cmd: self.cmd.map(StringOrList::into_vec),
            entrypoint: self.entrypoint.map(StringOrList::into_vec),
            env: self.env.unwrap_or_default(),
            working_dir: self.working_dir.filter(|w| !w.is_empty()),
            user: self.user.filter(|u| !u.is_empty()),
            hostname: self.hostname.filter(|h| !h.is_empty()),
            labels: self.labels.unwrap_or_default(),
            tty: self.tty,
            open_stdin: self.open_stdin,
            stdin_once: self.stdin_once,
            stop_signal: self.stop_signal,
            stop_timeout: self.stop_timeout,
            healthcheck: self.healthcheck,
            network: Default::default(),
            volumes: self
                .volumes
                .map(|v| v.into_keys().collect())
                .unwrap_or_default(),
            host_config: HostConfig {
                binds: host.binds.unwrap_or_default(),
                mounts: host.mounts.unwrap_or_default(),
                tmpfs: host.tmpfs.unwrap_or_default(),
                memory: host.memory,
                memory_swap: host.memory_swap,
                nano_cpus: host.nano_cpus,
                cpu_shares: host.cpu_shares,
                pids_limit: host.pids_limit.unwrap_or(0),
                cap_add: host.cap_add.unwrap_or_default(),
                cap_drop: host.cap_drop.unwrap_or_default(),
                privileged: host.privileged,
                read_only_rootfs: host.readonly_rootfs,
                security_opt: host.security_opt.unwrap_or_default(),
                auto_remove: host.auto_remove,
                restart_policy: host
                    .restart_policy
                    .map(|r| RestartPolicy {
                        name: r.name,
                        maximum_retry_count: r.maximum_retry_count,
                    })
                    .unwrap_or_default(),
                init: host.init.unwrap_or(false),
                network_mode: host.network_mode.unwrap_or_default(),
                oom_score_adj: host.oom_score_adj,
                console_size: console_size(host.console_size.as_deref()),
                log_max_size: None,
                log_max_files: None,
            },
        }
    }
}

pub async fn create(
    state: &ApiState,
    query: &Query,
    body: Incoming,
) -> Result<ApiResponse, ApiError> {
    let bytes = body::collect(body, 4 << 20).await?;
    let parsed: CreateBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad(format!("invalid JSON in the create request: {e}")))?;
    if parsed.image.is_empty() {
        return Err(ApiError::bad(
            "config cannot be empty in order to create a container",
        ));
    }
    let image = parsed.image.clone();
    let name = query
        .get("name")
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let mut request = parsed.into_request(name);
    request.network = crate::networks::container_options(&bytes)?;
    let id = match service(state).create(request).await {
        Ok(id) => id,
        // The docker CLI reacts to exactly this 404 by pulling, then retrying.
        Err(ContainerError::ImageNotFound(_)) => {
            return Err(ApiError::NotFound(format!("No such image: {image}")))
        }
        Err(e) => return Err(e.into()),
    };
    Ok(body::json(
        StatusCode::CREATED,
        &json!({"Id": id, "Warnings": []}),
    ))
}

/// The 12-character form Docker uses in events and hostnames.
fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn status_text(record: &ContainerRecord) -> String {
    let s = &record.state;
    let now = crate::time::now_nanos().div_euclid(1_000_000_000) as i64;
    let since = |t: &str| human_duration(now - unix_seconds(t));
    match s.status {
        Status::Running => format!(
            "Up {}{}",
            since(&s.started_at),
            s.health.as_ref().map_or("", |h| h.status.ps_suffix())
        ),
        Status::Paused => format!("Up {} (Paused)", since(&s.started_at)),
        Status::Restarting => format!("Restarting ({}) {} ago", s.exit_code, since(&s.finished_at)),
        Status::Exited => format!("Exited ({}) {} ago", s.exit_code, since(&s.finished_at)),
        Status::Created => "Created".to_string(),
        Status::Removing => "Removal In Progress".to_string(),
        Status::Dead => "Dead".to_string(),
    }
}

/// `State.Health` in Docker's shape.
fn health_json(h: &berth_engine::containers::Health) -> Value {
    let log: Vec<Value> = h
        .log
        .iter()
        .map(|r| json!({"Start": r.start, "End": r.end, "ExitCode": r.exit_code, "Output": r.output}))
        .collect();
    json!({"Status": h.status.as_str(), "FailingStreak": h.failing_streak, "Log": log})
}

/// Docker's `units.HumanDuration` wording.
fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        172_800..=1_209_599 => format!("{} days", s / 86_400),
        1_209_600..=5_183_999 => format!("{} weeks", s / 604_800),
        5_184_000..=63_071_999 => format!("{} months", s / 2_592_000),
        _ => format!("{} years", s / 31_536_000),
    }
}

/// Host memory in bytes (what Docker reports as the limit of an unlimited container).
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(u64::MAX)
}

fn unix_seconds(rfc3339: &str) -> i64 {
    crate::time::parse_rfc3339(rfc3339).unwrap_or(0)
}

fn command_line(record: &ContainerRecord) -> String {
    record
        .resolved
        .entrypoint
        .iter()
        .chain(record.resolved.cmd.iter())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn list(state: &ApiState, query: &Query) -> Result<ApiResponse, ApiError> {
    let filters = query.filters()?;
    let all = query.flag("all");
    let list_filters = ListFilters {
        label: filters.get("label").to_vec(),
        name: filters.get("name").to_vec(),
        status: filters.get("status").to_vec(),
        ancestor: filters.get("ancestor").to_vec(),
        id: filters.get("id").to_vec(),
    };
    let records = service(state).list(all, &list_filters)?;
    let endpoints = service(state).records_endpoints(&records);
    let items: Vec<Value> = records
        .iter()
        .zip(endpoints)
        .map(|(r, eps)| {
            json!({
                "Id": r.id,
                "Names": [r.name],
                "Image": r.image,
                "ImageID": r.image_id,
                "Command": command_line(r),
                "Created": unix_seconds(&r.created),
                "Ports": crate::networks::list_ports(r, &eps),
                "Labels": r.resolved.labels,
                "State": r.state.status.as_str(),
                "Status": status_text(r),
                "HostConfig": {"NetworkMode": network_mode(r)},
                "NetworkSettings": crate::networks::list_settings(r, &eps),
                "Mounts": crate::volumes::mounts_json(r),
            })
        })
        .collect();
    Ok(body::json(StatusCode::OK, &items))
}

fn network_mode(r: &ContainerRecord) -> String {
    match r.config.host_config.network_mode.as_str() {
        "" | "default" => "bridge".to_string(),
        other => other.to_string(),
    }
}

pub async fn inspect(state: &ApiState, reference: &str) -> Result<ApiResponse, ApiError> {
    let info = service(state).inspect(reference)?;
    let r = &info.record;
    let s = &r.state;
    let hc = &r.config.host_config;
    let path = r
        .resolved
        .entrypoint
        .first()
        .or(r.resolved.cmd.first())
        .cloned()
        .unwrap_or_default();
    let args: Vec<String> = r
        .resolved
        .entrypoint
        .iter()
        .chain(r.resolved.cmd.iter())
        .skip(1)
        .cloned()
        .collect();
    let value = json!({
        "Id": r.id,
        "Created": r.created,
        "Path": path,
        "Args": args,
        "State": {
            "Status": s.status.as_str(),
            "Running": matches!(s.status, Status::Running | Status::Paused),
            "Paused": s.status == Status::Paused,
            "Restarting": s.status == Status::Restarting,
            "OOMKilled": s.oom_killed,
            "Dead": s.status == Status::Dead,
            "Pid": s.pid,
            "ExitCode": s.exit_code,
            "Error": s.error,
            "StartedAt": if s.started_at.is_empty() { "0001-01-01T00:00:00Z" } else { &s.started_at },
            "FinishedAt": if s.finished_at.is_empty() { "0001-01-01T00:00:00Z" } else { &s.finished_at },
            "Health": s.health.as_ref().map(health_json),
        },
        "Image": r.image_id,
        "ResolvConfPath": format!("{}/resolv.conf", info.dir),
        "HostnamePath": format!("{}/hostname", info.dir),
        "HostsPath": format!("{}/hosts", info.dir),
        "LogPath": r.log_path,
        "Name": r.name,
        "RestartCount": s.restart_count,
        "Driver": "overlayfs",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "HostConfig": {
            "Binds": hc.binds,
            "Mounts": hc.mounts,
            "NetworkMode": network_mode(r),
            "RestartPolicy": {"Name": hc.restart_policy.name, "MaximumRetryCount": hc.restart_policy.maximum_retry_count},
            "AutoRemove": hc.auto_remove,
            "CapAdd": hc.cap_add,
            "CapDrop": hc.cap_drop,
            "Privileged": hc.privileged,
            "ReadonlyRootfs": hc.read_only_rootfs,
            // Docker's is null unless set.
            "Init": hc.init.then_some(true),
            "SecurityOpt": hc.security_opt,
            "Tmpfs": hc.tmpfs,
            "Memory": hc.memory,
            "MemorySwap": hc.memory_swap,
            "NanoCpus": hc.nano_cpus,
            "CpuShares": hc.cpu_shares,
            "PidsLimit": hc.pids_limit,
            "OomScoreAdj": hc.oom_score_adj,
            "LogConfig": {"Type": "json-file", "Config": {}},
        },
        "Mounts": crate::volumes::mounts_json(r),
        "Config": {
            "Hostname": r.resolved.hostname,
            "Domainname": "",
            "User": r.resolved.user,
            "AttachStdin": false,
            "AttachStdout": true,
            "AttachStderr": true,
            "Tty": r.config.tty,
            "OpenStdin": r.config.open_stdin,
            "StdinOnce": r.config.stdin_once,
            "Env": r.resolved.env,
            "Cmd": r.resolved.cmd,
            "Image": r.image,
            "WorkingDir": r.resolved.working_dir,
            "Entrypoint": if r.resolved.entrypoint.is_empty() { Value::Null } else { json!(r.resolved.entrypoint) },
            "Labels": r.resolved.labels,
            "StopSignal": r.resolved.stop_signal,
            "Healthcheck": r.resolved.healthcheck,
        },
        "NetworkSettings": crate::networks::inspect_settings(service(state), r),
    });
    Ok(body::json(StatusCode::OK, &value))
}

pub async fn start(state: &ApiState, reference: &str) -> Result<ApiResponse, ApiError> {
    match service(state).start(reference).await {
        Ok(()) => Ok(body::empty(StatusCode::NO_CONTENT)),
        Err(e) => not_modified_or(e),
    }
}

fn timeout(query: &Query) -> Result<Option<u64>, ApiError> {
    query
        .get("t")
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<i64>()
                .map(|v| u64::try_from(v.max(0)).unwrap_or(0))
                .map_err(|_| ApiError::bad(format!("invalid timeout {t:?}")))
        })
        .transpose()
}

pub async fn stop(
    state: &ApiState,
    reference: &str,
    query: &Query,
) -> Result<ApiResponse, ApiError> {
    match service(state).stop(reference, timeout(query)?).await {
        Ok(()) => Ok(body::empty(StatusCode::NO_CONTENT)),
        Err(e) => not_modified_or(e),
    }
}

pub async fn restart(
    state: &ApiState,
    reference: &str,
    query: &Query,
) -> Result<ApiResponse, ApiError> {
    service(state).restart(reference, timeout(query)?).await?;
    Ok(body::empty(StatusCode::NO_CONTENT))
}

pub async fn kill(
    state: &ApiState,
    reference: &str,
    query: &Query,
) -> Result<ApiResponse, ApiError> {
    service(state)
        .kill(reference, query.get("signal").filter(|s| !s.is_empty()))
        .await?;
    Ok(body::empty(StatusCode::NO_CONTENT))
}

pub async fn pause(
    state: &ApiState,
    reference: &str,
    pause: bool,
) -> Result<ApiResponse, ApiError> {
    if pause {
        service(state).pause(reference)?;
    } else {
        service(state).unpause(reference)?;
    }
    Ok(body::empty(StatusCode::NO_CONTENT))
}

pub async fn remove(
    state: &ApiState,
    reference: &str,
    query: &Query,
) -> Result<ApiResponse, ApiError> {
    service(state)
        .remove(reference, query.flag("force"), query.flag("v"))
        .await?;
    Ok(body::empty(StatusCode::NO_CONTENT))
}

pub async fn rename(
    state: &ApiState,
    reference: &str,
    query: &Query,
) -> Result<ApiResponse, ApiError> {
    let name = query
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad("missing the new name (?name=)"))?;
    service(state).rename(reference, name)?;
    Ok(body::empty(StatusCode::NO_CONTENT))
}

/// Headers go out at once (clients rely on that to start the container
/// afterwards); the status follows when the condition is met.
pub async fn wait(
    state: &ApiState,
    reference: &str,
    query: &Query,
) -> Result<ApiResponse, ApiError> {
    let condition = match query.get("condition").unwrap_or("not-running") {
        "" | "not-running" => WaitCondition::NotRunning,
        "next-exit" => WaitCondition::NextExit,
        "removed" => WaitCondition::Removed,
        other => return Err(ApiError::bad(format!("invalid condition: {other:?}"))),
    };
    // Resolve first so an unknown container is a 404, not a streamed error.
    let id = service(state).resolve(reference)?;
    let (tx, response) = body::stream("application/json");
    let containers = service(state).clone();
    tokio::spawn(async move {
        let result = tokio::select! {
            r = containers.wait(&id, condition) => r,
            // The client went away (`docker run -d` asks, then leaves): stop
            // waiting, which also ends the waiter's thread.
            () = tx.closed() => return,
        };
        let value = match result {
            Ok(code) => json!({"StatusCode": code, "Error": null}),
            Err(e) => json!({"StatusCode": -1, "Error": {"Message": chain(&e)}}),
        };
        let _ = tx.send(body::json_line(&value)).await;
    });
    Ok(response)
}

/// Docker's multiplexed frame: stream byte, 3 zero bytes, big-endian length.
fn frame(stream: u8, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.push(stream);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
    Bytes::from(out)
}

fn since_nanos(value: Option<&str>) -> Option<i64> {
    let v = value.filter(|v| !v.is_empty() && *v != "0")?;
    if let Ok(secs) = v.parse::<f64>() {
        return Some((secs * 1e9) as i64);
    }
    crate::time::parse_rfc3339(v).map(|s| s * 1_000_000_000)
}

pub async fn logs(
    state: &ApiState,
    reference: &str,
    query: &Query,
) -> Result<ApiResponse, ApiError> {
    let info = service(state).inspect(reference)?;
    let tty = info.record.config.tty;
    let (stdout, stderr) = (query.flag("stdout"), query.flag("stderr"));
    if !stdout && !stderr {
        return Err(ApiError::bad("you must choose at least one stream"));
    }
    let opts = LogOptions {
        stdout,
        stderr,
        follow: query.flag("follow"),
        tail: query
            .get("tail")
            .filter(|t| *t != "all" && !t.is_empty())
            .and_then(|t| t.parse().ok()),
        since: since_nanos(query.get("since")),
        until: since_nanos(query.get("until")),
        timestamps: query.flag("timestamps"),
    };
    let timestamps = opts.timestamps;
    let mut entries = service(state).logs(reference, opts)?;
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let (tx, response) = body::stream(content_type);
    tokio::spawn(async move {
        while let Some(entry) = entries.recv().await {
            let bytes = entry.render(timestamps);
            let chunk = if tty {
                Bytes::from(bytes)
            } else {
                frame(if entry.stream == Stream::Stderr { 2 } else { 1 }, &bytes)
            };
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    Ok(response)
}

pub async fn top(state: &ApiState, reference: &str) -> Result<ApiResponse, ApiError> {
    let top = service(state).top(reference)?;
    Ok(body::json(
        StatusCode::OK,
        &json!({"Titles": top.titles, "Processes": top.processes}),
    ))
}

/// Cumulative CPU time of the whole host in nanoseconds (from /proc/stat),
/// which clients divide container usage by.
/// Docker's `cpu_stats` / `precpu_stats` of one sample.
fn cpu_json(s: &StatsSample) -> Value {
    let cpu = s.cgroup.cpu.clone().unwrap_or_default();
    let mut usage = json!({
        "total_usage": cpu.usage.total,
        "usage_in_kernelmode": cpu.usage.kernel,
        "usage_in_usermode": cpu.usage.user,
    });
    if !cpu.usage.percpu.is_empty() {
        usage["percpu_usage"] = json!(cpu.usage.percpu);
    }
    json!({
        "cpu_usage": usage,
        "system_cpu_usage": s.system_cpu_usage,
        "online_cpus": s.online_cpus,
        "throttling_data": {
            "periods": cpu.throttling.periods,
            "throttled_periods": cpu.throttling.throttled_periods,
            "throttled_time": cpu.throttling.throttled_time,
        },
    })
}

/// One stats object as Docker sends it; `prev` (the sample before, a
/// second earlier) fills `precpu_stats`, from which clients compute the
/// CPU percentage.
fn stats_json(s: &StatsSample, prev: Option<&StatsSample>) -> Value {
    const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
    let precpu = match prev {
        Some(p) => cpu_json(p),
        None => json!({
            "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        }),
    };
    let mut value = json!({
        "read": if s.running { s.read.as_str() } else { ZERO_TIME },
        "preread": prev.filter(|p| p.running).map_or(ZERO_TIME, |p| p.read.as_str()),
        "id": s.id,
        "name": s.name,
        "num_procs": 0,
        "pids_stats": {},
        "cpu_stats": if s.running { cpu_json(s) } else { json!({"cpu_usage": {"total_usage": 0}, "throttling_data": {}}) },
        "precpu_stats": precpu,
        "memory_stats": {},
        "blkio_stats": {
            "io_service_bytes_recursive": null,
            "io_serviced_recursive": null,
            "io_queue_recursive": null,
            "io_service_time_recursive": null,
            "io_wait_time_recursive": null,
            "io_merged_recursive": null,
            "io_time_recursive": null,
            "sectors_recursive": null,
        },
        "storage_stats": {},
    });
    if !s.running {
        return value;
    }
    if let Some(p) = &s.cgroup.pids {
        value["pids_stats"] = json!({"current": p.current});
        if p.limit > 0 {
            value["pids_stats"]["limit"] = json!(p.limit);
        }
    }
    if let Some(m) = &s.cgroup.memory {
        let mut memory = json!({
            "usage": m.usage.usage,
            "limit": m.usage.limit.min(host_memory()),
            "stats": m.raw,
        });
        // v1 only (v2 has no such counters), as in Docker.
        if m.usage.max > 0 {
            memory["max_usage"] = json!(m.usage.max);
        }
        if m.raw.contains_key("total_inactive_file") {
            memory["failcnt"] = json!(m.usage.failcnt);
        }
        value["memory_stats"] = memory;
    }
    if let Some(b) = &s.cgroup.blkio {
        let entries = |list: &[berth_engine::containers::BlkioEntry]| -> Value {
            if list.is_empty() {
                return Value::Null;
            }
            json!(list
                .iter()
                .map(|e| json!({"major": e.major, "minor": e.minor, "op": e.op, "value": e.value}))
                .collect::<Vec<_>>())
        };
        value["blkio_stats"]["io_service_bytes_recursive"] = entries(&b.io_service_bytes_recursive);
        value["blkio_stats"]["io_serviced_recursive"] = entries(&b.io_serviced_recursive);
    }
    if let Some(networks) = &s.networks {
        let map: serde_json::Map<String, Value> = networks
            .iter()
            .map(|(name, n)| {
                (
                    name.clone(),
                    json!({
                        "rx_bytes": n.rx_bytes, "rx_packets": n.rx_packets,
                        "rx_errors": n.rx_errors, "rx_dropped": n.rx_dropped,
                        "tx_bytes": n.tx_bytes, "tx_packets": n.tx_packets,
                        "tx_errors": n.tx_errors, "tx_dropped": n.tx_dropped,
                    }),
                )
            })
            .collect();
        value["networks"] = Value::Object(map);
    }
    value
}

/// How often a stats stream samples (Docker's collector interval).
const STATS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

async fn stats_sample(state: &Arc<ApiState>, id: &str) -> Result<StatsSample, ApiError> {
    let st = Arc::clone(state);
    let id = id.to_string();
    tokio::task::spawn_blocking(move || service(&st).stats_sample(&id))
        .await
        .map_err(|e| ApiError::Internal(format!("stats task: {e}")))?
        .map_err(ApiError::from)
}

/// `GET /containers/{id}/stats?stream=&one-shot=`: with `stream` (the
/// default) one object per second until the container stops or the client
/// goes away; otherwise one object, a second after a first sample so that
/// `precpu_stats` is filled (at once, with empty `precpu_stats`, with
/// `one-shot`).
pub async fn stats(
    state: &Arc<ApiState>,
    reference: &str,
    query: &Query,
) -> Result<ApiResponse, ApiError> {
    let stream = query
        .get("stream")
        .is_none_or(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
    let one_shot = query.flag("one-shot");
    if stream && one_shot {
        return Err(ApiError::bad("cannot have stream=true and one-shot=true"));
    }
    let first = stats_sample(state, reference).await?;
    let id = first.id.clone();
    if !stream {
        if one_shot || !first.running {
            return Ok(body::json(StatusCode::OK, &stats_json(&first, None)));
        }
        tokio::time::sleep(STATS_INTERVAL).await;
        let second = stats_sample(state, &id).await?;
        return Ok(body::json(
            StatusCode::OK,
            &stats_json(&second, Some(&first)),
        ));
    }
    let (tx, response) = body::stream("application/json");
    let state = Arc::clone(state);
    tokio::spawn(async move {
        if tx
            .send(body::json_line(&stats_json(&first, None)))
            .await
            .is_err()
        {
            return;
        }
        let mut prev = first;
        while prev.running {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(STATS_INTERVAL) => {}
            }
            // Removed meanwhile: the stream ends.
            let Ok(sample) = stats_sample(&state, &id).await else {
                return;
            };
            if !sample.running {
                // Stopped: the stream ends, as Docker's does.
                return;
            }
            if tx
                .send(body::json_line(&stats_json(&sample, Some(&prev))))
                .await
                .is_err()
            {
                return;
            }
            prev = sample;
        }
    });
    Ok(response)
}

/// `POST /containers/{id}/attach` with an HTTP upgrade: bytes from the
/// client become the container's stdin; its output comes back multiplexed
/// (or raw for a TTY).
pub async fn attach(
    state: Arc<ApiState>,
    reference: &str,
    query: &Query,
    request: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let info = service(&state).inspect(reference)?;
    let tty = info.record.config.tty;
    let want_stdin = query.flag("stdin");
    let want = [false, query.flag("stdout"), query.flag("stderr")];
    let keys = query.get("detachKeys").unwrap_or_default();
    let detach_keys = berth_detach_keys::parse_keys(keys)
        .map_err(|_| ApiError::bad(format!("Invalid detach keys ({keys}) provided")))?;
    let id = info.record.id.clone();
    // Register before answering 101 (an unknown container is a 404): the
    // client starts the container as soon as this request returned, and
    // `start` hands the monitor's socket to the clients registered by then.
    let pending = service(&state).attach(reference)?;
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(request).await else {
            return;
        };
        let client = TokioIo::new(upgraded);
        let socket = match pending.connected().await {
            Ok(s) => s,
            Err(_) => return,
        };
        if socket.set_nonblocking(true).is_err() {
            return;
        }
        let Ok(socket) = tokio::net::UnixStream::from_std(socket) else {
            return;
        };
        // Detach keys apply to a terminal, as in Docker.
        let stdin = want_stdin.then(|| tty.then(|| DetachScanner::new(detach_keys)));
        if relay_attach(client, socket, tty, stdin, want).await {
            service(&state).container_event(&id, "detach", &[]);
        }
    });
    Ok(upgrade_response(tty))
}

fn upgrade_response(tty: bool) -> ApiResponse {
    let mut response = body::empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(
        "Connection",
        hyper::header::HeaderValue::from_static("Upgrade"),
    );
    headers.insert("Upgrade", hyper::header::HeaderValue::from_static("tcp"));
    headers.insert(
        "Content-Type",
        hyper::header::HeaderValue::from_static(if tty {
            "application/vnd.docker.raw-stream"
        } else {
            "application/vnd.docker.multiplexed-stream"
        }),
    );
    response
}

/// Moves bytes between an attached client and the monitor's attach socket
/// (whose frames have Docker's 8-byte header: 0 stdin, 1 stdout, 2 stderr,
/// 4 exit). The client's input goes to the container when `stdin` is given,
/// through it: it watches for the detach keys. Returns true when the client
/// detached (the container runs on).
async fn relay_attach<C>(
    client: C,
    socket: tokio::net::UnixStream,
    tty: bool,
    stdin: Option<Option<DetachScanner>>,
    want: [bool; 3],
) -> bool
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut sock_read, mut sock_write) = socket.into_split();
    let detached = Arc::new(tokio::sync::Notify::new());
    // Without stdin the write half is kept to the end: dropping it would
    // half-close the connection, which the monitor reads as stdin closed.
    let mut idle_write = None;
    let input = match stdin {
        None => {
            idle_write = Some(sock_write);
            None
        }
        Some(mut scanner) => {
            let detached = Arc::clone(&detached);
            Some(tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    let n = match client_read.read(&mut buf).await {
                        Ok(0) | Err(_) => 0,
                        Ok(n) => n,
                    };
                    if n == 0 {
                        let held = scanner.as_mut().map(DetachScanner::finish);
                        if let Some(held) = held.filter(|h| !h.is_empty()) {
                            let _ = sock_write.write_all(&frame(0, &held)).await;
                        }
                        // Half-close: an empty stdin frame closes the container's stdin.
                        let _ = sock_write.write_all(&frame(0, &[])).await;
                        return;
                    }
                    let (data, detach) = match scanner.as_mut() {
                        Some(s) => {
                            let scanned = s.scan(&buf[..n]);
                            (scanned.forward, scanned.detach)
                        }
                        None => (buf[..n].to_vec(), false),
                    };
                    if !data.is_empty() && sock_write.write_all(&frame(0, &data)).await.is_err() {
                        return;
                    }
                    if detach {
                        detached.notify_one();
                        return;
                    }
                }
            }))
        }
    };
    let mut header = [0u8; 8];
    let mut was_detached = false;
    loop {
        let read = async {
            sock_read.read_exact(&mut header).await?;
            let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
            let mut payload = vec![0u8; len];
            sock_read.read_exact(&mut payload).await?;
            Ok::<_, std::io::Error>((header[0], payload))
        };
        let (kind, payload) = tokio::select! {
            frame = read => match frame {
                Ok(frame) => frame,
                Err(_) => break,
            },
            () = detached.notified() => {
                was_detached = true;
                break;
            }
        };
        if kind == 4 {
            break;
        }
        if !matches!(kind, 1 | 2) || !want[usize::from(kind)] {
            continue;
        }
        let out = if tty {
            Bytes::from(payload)
        } else {
            frame(kind, &payload)
        };
        if client_write.write_all(&out).await.is_err() {
            break;
        }
    }
    let _ = client_write.shutdown().await;
    if let Some(input) = input {
        input.abort();
    }
    drop(idle_write);
    was_detached
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ExecBody {
    cmd: Vec<String>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    tty: bool,
    console_size: Option<Vec<u16>>,
    attach_stdin: bool,
    privileged: bool,
    detach_keys: String,
}

/// Docker's `ConsoleSize`: `[height, width]`; zeros mean unset.
fn console_size(size: Option<&[u16]>) -> Option<(u16, u16)> {
    match size {
        Some(&[h, w]) if h > 0 && w > 0 => Some((h, w)),
        _ => None,
    }
}

pub async fn exec_create(
    state: &ApiState,
    reference: &str,
    body: Incoming,
) -> Result<ApiResponse, ApiError> {
    let bytes = body::collect(body, 1 << 20).await?;
    let parsed: ExecBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad(format!("invalid JSON in the exec request: {e}")))?;
    if parsed.cmd.is_empty() {
        return Err(ApiError::bad("No exec command specified"));
    }
    if berth_detach_keys::parse_keys(&parsed.detach_keys).is_err() {
        return Err(ApiError::bad(format!(
            "Invalid escape keys ({}) provided",
            parsed.detach_keys
        )));
    }
    let id = service(state).exec_create(
        reference,
        ExecConfig {
            cmd: parsed.cmd,
            env: parsed.env.unwrap_or_default(),
            working_dir: parsed.working_dir.filter(|w| !w.is_empty()),
            user: parsed.user.filter(|u| !u.is_empty()),
            tty: parsed.tty,
            console_size: console_size(parsed.console_size.as_deref()),
            attach_stdin: parsed.attach_stdin,
            privileged: parsed.privileged,
            detach_keys: parsed.detach_keys,
        },
    )?;
    Ok(body::json(StatusCode::CREATED, &json!({"Id": id})))
}

pub async fn exec_inspect(state: &ApiState, exec_id: &str) -> Result<ApiResponse, ApiError> {
    let info = service(state).exec_inspect(exec_id)?;
    Ok(body::json(
        StatusCode::OK,
        &json!({
            "ID": info.id,
            "ContainerID": info.container_id,
            "Running": info.running,
            "ExitCode": info.exit_code,
            "Pid": info.pid,
        }),
    ))
}

/// `h` and `w` of a resize request.
fn terminal_size(query: &Query) -> Result<(u16, u16), ApiError> {
    let dim = |key: &str| -> Result<u16, ApiError> {
        let value = query.get(key).unwrap_or("0");
        value
            .parse()
            .map_err(|_| ApiError::bad(format!("invalid {key} for a resize: {value:?}")))
    };
    Ok((dim("h")?, dim("w")?))
}

/// `POST /containers/{id}/resize?h=&w=`.
pub async fn resize(
    state: &ApiState,
    reference: &str,
    query: &Query,
) -> Result<ApiResponse, ApiError> {
    let (h, w) = terminal_size(query)?;
    service(state).resize(reference, h, w)?;
    Ok(body::empty(StatusCode::OK))
}

/// `POST /exec/{id}/resize?h=&w=`.
pub async fn exec_resize(
    state: &ApiState,
    exec_id: &str,
    query: &Query,
) -> Result<ApiResponse, ApiError> {
    let (h, w) = terminal_size(query)?;
    service(state).exec_resize(exec_id, h, w)?;
    Ok(body::empty(StatusCode::CREATED))
}

/// `POST /exec/{id}/start`: detached, or upgraded with the process's stdio
/// relayed as multiplexed frames.
pub async fn exec_start(
    state: Arc<ApiState>,
    exec_id: &str,
    request: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = body::collect(body, 1 << 20).await?;
    let detach = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("Detach").and_then(Value::as_bool))
        .unwrap_or(false);
    let mut session = service(&state).exec_start(exec_id)?;
    if detach {
        std::thread::spawn(move || {
            let _ = session.stdin.take();
            let _ = session.wait();
        });
        return Ok(body::empty(StatusCode::OK));
    }
    let request = Request::from_parts(parts, http_body_util::Empty::<Bytes>::new());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let stdin = session.stdin.take();
    let tty = session.tty;
    // Detach keys apply to a terminal, as in Docker (checked at create).
    let mut scanner = match tty {
        true => Some(DetachScanner::new(
            berth_detach_keys::parse_keys(&session.detach_keys)
                .map_err(|e| ApiError::bad(e.to_string()))?,
        )),
        false => None,
    };
    let container_id = service(&state).exec_inspect(exec_id)?.container_id;
    let exec_id = exec_id.to_string();
    let spawn_reader = |mut reader: Box<dyn std::io::Read + Send>,
                        kind: u8,
                        tx: tokio::sync::mpsc::Sender<Bytes>| {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            let mut connected = true;
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let chunk = if tty {
                            Bytes::copy_from_slice(&buf[..n])
                        } else {
                            frame(kind, &buf[..n])
                        };
                        // Once the client is gone (or detached) the output is
                        // still read, and dropped: the process must not block on a
                        // full pipe, nor lose its terminal.
                        if connected && tx.blocking_send(chunk).is_err() {
                            connected = false;
                        }
                    }
                }
            }
        })
    };
    let mut readers = Vec::new();
    if let Some(out) = session.stdout.take() {
        readers.push(spawn_reader(out, 1, tx.clone()));
    }
    if let Some(err) = session.stderr.take() {
        readers.push(spawn_reader(err, 2, tx.clone()));
    }
    // The stream ends only once the exit code is recorded: clients ask for
    // it (GET /exec/{id}/json) as soon as the stream closes.
    std::thread::spawn(move || {
        for r in readers {
            let _ = r.join();
        }
        let _ = session.wait();
        drop(tx);
    });
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(request).await else {
            return;
        };
        let (mut client_read, mut client_write) = tokio::io::split(TokioIo::new(upgraded));
        let detached = Arc::new(tokio::sync::Notify::new());
        let input_detached = Arc::clone(&detached);
        let input = tokio::spawn(async move {
            let Some(mut stdin) = stdin else { return };
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = client_read.read(&mut buf).await {
                let (data, detach) = match (n, scanner.as_mut()) {
                    (0, Some(s)) => (s.finish(), false),
                    (0, None) => (Vec::new(), false),
                    (n, Some(s)) => {
                        let scanned = s.scan(&buf[..n]);
                        (scanned.forward, scanned.detach)
                    }
                    (n, None) => (buf[..n].to_vec(), false),
                };
                let result = tokio::task::spawn_blocking(move || {
                    use std::io::Write;
                    stdin.write_all(&data).map(|()| stdin)
                })
                .await;
                match result {
                    Ok(Ok(s)) => stdin = s,
                    _ => break,
                }
                if detach {
                    input_detached.notify_one();
                    break;
                }
                if n == 0 {
                    break;
                }
            }
        });
        loop {
            tokio::select! {
                chunk = rx.recv() => match chunk {
                    Some(chunk) => {
                        if client_write.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                () = detached.notified() => {
                    service(&state).container_event(
                        &container_id,
                        "exec_detach",
                        &[("execID", exec_id.clone())],
                    );
                    break;
                }
            }
        }
        let _ = client_write.shutdown().await;
        input.abort();
    });
    Ok(upgrade_response(tty))
}

/// `GET /containers/{id}/export`: the container's filesystem as a tar stream.
pub async fn export(state: &ApiState, reference: &str) -> Result<ApiResponse, ApiError> {
    let info = service(state).inspect(reference)?;
    let mounts = info.record.rootfs.clone().ok_or_else(|| {
        ApiError::Conflict(format!(
            "container {} has no root filesystem to export",
            info.record.id
        ))
    })?;
    let (tx, response) = body::stream("application/x-tar");
    tokio::task::spawn_blocking(move || {
        let mut writer = body::ChannelWriter::new(tx);
        // A failure mid-stream can only end the stream early (headers are out).
        let _ = berth_snapshot::export_mounts(&mounts, &mut writer);
        let _ = std::io::Write::flush(&mut writer);
    });
    Ok(response)
}

pub async fn prune(state: &ApiState) -> Result<ApiResponse, ApiError> {
    let report = service(state).prune().await?;
    Ok(body::json(
        StatusCode::OK,
        &json!({"ContainersDeleted": report.containers_deleted, "SpaceReclaimed": report.space_reclaimed}),
    ))
}

/// Used by events: a short id for the actor.
pub fn event_id(id: &str) -> &str {
    short(id)
}
