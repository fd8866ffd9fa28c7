//! `berth daemon`: configuration (flags over `daemon.json` over defaults),
//! the API socket (permissions, stale-socket handling), the image store, and
//! a graceful shutdown on SIGTERM/SIGINT.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use berth_api::{ApiState, DaemonInfo};
use berth_engine::ImageService;
use serde::Deserialize;

const DEFAULT_HOST: &str = "unix:///run/berth/berth.sock";
const DEFAULT_DATA_ROOT: &str = "/var/lib/berth";
const DEFAULT_CONFIG: &str = "/etc/berth/daemon.json";
/// The group given access to the socket, when it exists.
const SOCKET_GROUP: &str = "berth";

#[derive(clap::Args, Debug)]
pub struct DaemonArgs {
    /// Socket to listen on (`unix:///path`); may be repeated.
    #[arg(short = 'H', long = "host")]
    hosts: Vec<String>,
    /// Where images (and later containers and volumes) are kept.
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// The daemon configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log every request.
    #[arg(short = 'D', long)]
    debug: bool,
    /// Bridge device of the default network; `none` turns networking off (loopback only).
    #[arg(short = 'b', long, default_value = "berth0")]
    bridge: String,
    /// Address of the default network's bridge, e.g. `10.88.0.1/24`; free one picked if unset.
    #[arg(long)]
    bip: Option<String>,
    /// nftables table (iptables chain prefix) for this daemon's rules.
    #[arg(long, default_value = "berth")]
    nft_table: String,
    /// Upstream resolver of the embedded DNS (repeatable); default: the host's resolv.conf.
    #[arg(long = "dns-upstream")]
    dns_upstreams: Vec<String>,
    /// MTU of the default network's links and containers (as dockerd's `--mtu`); unset: the
    /// links are 65535 and the containers' default routes 1500 (see docs/network.md).
    #[arg(long)]
    mtu: Option<u32>,
}

/// `daemon.json` (the keys dockerd uses).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ConfigFile {
    data_root: Option<PathBuf>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    registry_mirrors: Vec<String>,
    #[serde(default)]
    insecure_registries: Vec<String>,
    #[serde(default)]
    debug: bool,
    mtu: Option<u32>,
}

fn load_config(args: &DaemonArgs) -> Result<ConfigFile> {
    let (path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("invalid daemon configuration {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            Ok(ConfigFile::default())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn socket_path(host: &str) -> Result<PathBuf> {
    if let Some(path) = host.strip_prefix("unix://") {
        return Ok(PathBuf::from(path));
    }
    if host.starts_with('/') {
        return Ok(PathBuf::from(host));
    }
    bail!("unsupported host {host:?}: berth daemon listens on unix:///path sockets only")
}

fn group_id(name: &str) -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then(|| fields.nth(1)?.parse().ok())?
    })
}

/// Binds the socket: refuses if a daemon answers there, removes a stale
/// socket file, creates the directory (0755), sets mode 0660 and the
/// `berth` group when it exists.
fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            );
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another daemon is already listening on {}; stop it first or choose another --host",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
        eprintln!("berth daemon: removed stale socket {}", path.display());
    }
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("setting the mode of {}", dir.display()))?;
        }
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    if let Some(gid) = group_id(SOCKET_GROUP) {
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("giving {} to group {SOCKET_GROUP}", path.display()))?;
    }
    Ok(listener)
}

fn runtime_path() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("berth-runc")))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "berth-runc".into())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => eprintln!("berth daemon: SIGTERM, shutting down"),
                _ = int.recv() => eprintln!("berth daemon: SIGINT, shutting down"),
            }
        }
        _ => {
            eprintln!("berth daemon: cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

pub fn run(args: DaemonArgs) -> Result<()> {
    let config = load_config(&args)?;
    let data_root = args
        .data_root
        .clone()
        .or(config.data_root.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_ROOT));
    let hosts = if !args.hosts.is_empty() {
        args.hosts.clone()
    } else if !config.hosts.is_empty() {
        config.hosts.clone()
    } else {
        vec![DEFAULT_HOST.to_string()]
    };
    let sockets: Vec<PathBuf> = hosts
        .iter()
        .map(|h| socket_path(h))
        .collect::<Result<_>>()?;
    let debug = args.debug || config.debug;

    // Two workers keep the idle daemon small; blocking store work has its
    // own pool.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("berth-daemon")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        std::fs::create_dir_all(&data_root)
            .with_context(|| format!("creating {}", data_root.display()))?;
        let registry = berth_registry::ClientConfig {
            mirrors: config.registry_mirrors.clone(),
            insecure_registries: config.insecure_registries.clone(),
            ..berth_registry::ClientConfig::default()
        };
        let images = ImageService::open(&data_root, registry)
            .with_context(|| format!("opening the image store in {}", data_root.display()))?;
        match images.ensure_embedded_hello().await {
            Ok(Some(id)) => eprintln!("berth daemon: embedded image hello:latest is {id}"),
            Ok(None) => {}
            Err(e) => eprintln!("berth daemon: loading the embedded hello image failed: {e}"),
        }
        let info = DaemonInfo {
            id: berth_api::system::engine_id(&data_root)
                .with_context(|| format!("writing the engine id in {}", data_root.display()))?,
            data_root: data_root.clone(),
            debug,
            registry_mirrors: config.registry_mirrors.clone(),
            insecure_registries: config.insecure_registries.clone(),
            runtime_path: runtime_path(),
            network: (args.bridge != "none").then(|| berth_engine::containers::NetworkConfig {
                bridge: args.bridge.clone(),
                default_subnet: args.bip.clone(),
                firewall_table: args.nft_table.clone(),
                dns_upstreams: (!args.dns_upstreams.is_empty()).then(|| args.dns_upstreams.clone()),
                mtu: args.mtu.or(config.mtu),
                firewall: None,
            }),
        };
        let state = Arc::new(ApiState::new(images, info)?);

        let mut listeners = Vec::new();
        for path in &sockets {
            listeners.push(bind(path)?);
            eprintln!(
                "berth daemon {}: API {} listening on unix://{} (data root {})",
                env!("CARGO_PKG_VERSION"),
                berth_api::API_VERSION,
                path.display(),
                data_root.display()
            );
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut servers = tokio::task::JoinSet::new();
        for listener in listeners {
            let state = Arc::clone(&state);
            let mut stop = stop_rx.clone();
            servers.spawn(berth_api::serve_unix_until(listener, state, async move {
                let _ = stop.wait_for(|s| *s).await.is_ok();
            }));
        }
        shutdown_signal().await;
        stop_tx.send_replace(true);
        while servers.join_next().await.is_some() {}
        for path in &sockets {
            if let Err(e) = std::fs::remove_file(path) {
                eprintln!("berth daemon: removing {}: {e}", path.display());
            }
        }
        eprintln!("berth daemon: stopped");
        Ok(())
    })
}
