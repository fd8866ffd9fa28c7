//! `/_ping`, `/version`, `/info` and `/system/df`.

use std::path::Path;
use std::sync::Arc;

use hyper::header::{HeaderValue, CACHE_CONTROL, PRAGMA};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::body::{self, ApiResponse};
use crate::error::ApiError;
use crate::time::{format_rfc3339_nanos, now_nanos};
use crate::{ApiState, API_VERSION, MIN_API_VERSION};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn git_commit() -> &'static str {
    option_env!("BERTH_GIT_COMMIT").unwrap_or("unknown")
}

fn build_time() -> &'static str {
    option_env!("BERTH_BUILD_TIME").unwrap_or("unknown")
}

/// `GET`/`HEAD /_ping`.
pub fn ping(method: &Method) -> ApiResponse {
    let mut response = if method == Method::HEAD {
        body::empty(StatusCode::OK)
    } else {
        body::text(StatusCode::OK, "OK")
    };
    let h = response.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn kernel_version() -> String {
    read_trimmed("/proc/sys/kernel/osrelease")
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `GET /version`.
pub async fn version(_state: &Arc<ApiState>) -> Result<ApiResponse, ApiError> {
    let kernel = kernel_version();
    let value = json!({
        "Platform": { "Name": "Berth" },
        "Components": [{
            "Name": "Engine",
            "Version": VERSION,
            "Details": {
                "ApiVersion": API_VERSION,
                "Arch": arch(),
                "BuildTime": build_time(),
                "Experimental": "false",
                "GitCommit": git_commit(),
                "GoVersion": "rustc",
                "KernelVersion": kernel,
                "MinAPIVersion": MIN_API_VERSION,
                "Os": "linux",
            },
        }],
        "Version": VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": git_commit(),
        "GoVersion": "rustc",
        "Os": "linux",
        "Arch": arch(),
        "KernelVersion": kernel,
        "BuildTime": build_time(),
    });
    Ok(body::json(StatusCode::OK, &value))
}

/// A stable id for this engine, kept in `<data_root>/engine-id`.
pub fn engine_id(data_root: &Path) -> std::io::Result<String> {
    let path = data_root.join("engine-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_string());
        }
    }
    let id = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("{:032x}", now_nanos()));
    std::fs::create_dir_all(data_root)?;
    let tmp = data_root.join(".engine-id.tmp");
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

struct Host {
    cgroup_version: &'static str,
    memory_limit: bool,
    swap_limit: bool,
    cpu_cfs: bool,
    pids_limit: bool,
    ip_forward: bool,
    mem_total: u64,
    os_name: String,
    os_version: String,
    hostname: String,
    threads: u64,
    fds: u64,
}

fn os_release() -> (String, String) {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_string())
    };
    (
        field("PRETTY_NAME").unwrap_or_else(|| "Linux".into()),
        field("VERSION_ID").unwrap_or_default(),
    )
}

fn probe_host() -> Host {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let controllers = read_trimmed("/sys/fs/cgroup/cgroup.controllers");
    let has = |c: &str| {
        if v2 {
            controllers.split_whitespace().any(|x| x == c)
        } else {
            Path::new("/sys/fs/cgroup").join(c).exists()
        }
    };
    let memory = has("memory");
    let swap = if v2 {
        memory
    } else {
        Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
    };
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    let (os_name, os_version) = os_release();
    Host {
        cgroup_version: if v2 { "2" } else { "1" },
        memory_limit: memory,
        swap_limit: swap,
        cpu_cfs: has("cpu"),
        pids_limit: has("pids"),
        ip_forward: read_trimmed("/proc/sys/net/ipv4/ip_forward") == "1",
        mem_total,
        os_name,
        os_version,
        hostname: read_trimmed("/proc/sys/kernel/hostname"),
        threads,
        fds,
    }
}

/// `GET /info`.
pub async fn info(state: &Arc<ApiState>) -> Result<ApiResponse, ApiError> {
    let images = Arc::clone(&state.images);
    let (image_count, copy_mode) = tokio::task::spawn_blocking(move || {
        let count = images.list().map(|l| l.len()).unwrap_or(0);
        (count, images.snapshots().is_copy_mode())
    })
    .await?;
    let host = tokio::task::spawn_blocking(probe_host).await?;
    let d = &state.daemon;
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let driver = if copy_mode { "copy" } else { "overlayfs" };
    let mirrors: Vec<String> = d.registry_mirrors.clone();
    let mut insecure_cidrs = vec!["127.0.0.0/8".to_string(), "::1/128".to_string()];
    insecure_cidrs.extend(
        d.insecure_registries
            .iter()
            .filter(|r| r.contains('/'))
            .cloned(),
    );
    let mut index_configs = serde_json::Map::new();
    index_configs.insert(
        "docker.io".into(),
        json!({"Name": "docker.io", "Mirrors": mirrors, "Secure": true, "Official": true}),
    );
    for r in d.insecure_registries.iter().filter(|r| !r.contains('/')) {
        index_configs.insert(
            r.clone(),
            json!({"Name": r, "Mirrors": [], "Secure": false, "Official": false}),
        );
    }
    let value = json!({
        "ID": d.id,
        "Containers": 0,
        "ContainersRunning": 0,
        "ContainersPaused": 0,
        "ContainersStopped": 0,
        "Images": image_count,
        "Driver": driver,
        "DriverStatus": [
            ["Backing Filesystem", "extfs"],
            ["Snapshotter", driver],
        ],
        "Plugins": {
            "Volume": ["local"],
            "Network": ["bridge", "host", "none"],
            "Authorization": null,
            "Log": ["json-file"],
        },
        "MemoryLimit": host.memory_limit,
        "SwapLimit": host.swap_limit,
        "KernelMemory": false,
        "KernelMemoryTCP": false,
        "CpuCfsPeriod": host.cpu_cfs,
        "CpuCfsQuota": host.cpu_cfs,
        "CPUShares": host.cpu_cfs,
        "CPUSet": true,
        "PidsLimit": host.pids_limit,
        "OomKillDisable": host.cgroup_version == "1",
        "IPv4Forwarding": host.ip_forward,
        "BridgeNfIptables": false,
        "BridgeNfIp6tables": false,
        "Debug": d.debug,
        "NFd": host.fds,
        "NGoroutines": host.threads,
        "SystemTime": format_rfc3339_nanos(now_nanos()),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": host.cgroup_version,
        "NEventsListener": 0,
        "KernelVersion": kernel_version(),
        "OperatingSystem": host.os_name,
        "OSVersion": host.os_version,
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": null,
            "AllowNondistributableArtifactsHostnames": null,
            "InsecureRegistryCIDRs": insecure_cidrs,
            "IndexConfigs": index_configs,
            "Mirrors": d.registry_mirrors,
        },
        "NCPU": ncpu,
        "MemTotal": host.mem_total,
        "GenericResources": null,
        "DockerRootDir": d.data_root.display().to_string(),
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": host.hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": VERSION,
        "Runtimes": { "berth": { "path": d.runtime_path } },
        "DefaultRuntime": "berth",
        "Swarm": {
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": false,
            "Error": "",
            "RemoteManagers": null,
        },
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "docker-init",
        "ContainerdCommit": { "ID": "" },
        "RuncCommit": { "ID": "" },
        "InitCommit": { "ID": "" },
        "SecurityOptions": ["name=seccomp,profile=builtin", "name=cgroupns"],
        "ProductLicense": "",
        "DefaultAddressPools": [],
        "CDISpecDirs": [],
        "Warnings": [],
    });
    Ok(body::json(StatusCode::OK, &value))
}

/// `GET /system/df`.
pub async fn df(state: &Arc<ApiState>) -> Result<ApiResponse, ApiError> {
    let images = Arc::clone(&state.images);
    let (summaries, layers_size) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let summaries = crate::images::summaries(&images, &crate::query::Filters::default())?;
        let layers_size: u64 = images
            .snapshots()
            .usage()
            .map(|u| {
                u.iter()
                    .filter(|x| x.kind == berth_snapshot::UsageKind::Layer)
                    .map(|x| x.size)
                    .sum()
            })
            .unwrap_or(0);
        Ok((summaries, layers_size))
    })
    .await??;
    let images: Vec<Value> = summaries
        .into_iter()
        .map(|mut s| {
            s["Containers"] = json!(0);
            s
        })
        .collect();
    let value = json!({
        "LayersSize": layers_size,
        "Images": images,
        "Containers": [],
        "Volumes": crate::volumes::df_entries(state).await?,
        "BuildCache": [],
    });
    Ok(body::json(StatusCode::OK, &value))
}
