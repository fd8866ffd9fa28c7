//! The agent's server: the engine (as `berth daemon` builds it) served on
//! vsock, plus the control channel and port forwarding.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use berth_api::{ApiState, DaemonInfo};
use berth_engine::images::SnapshotMode;
use berth_engine::ImageService;
use berth_platform::protocol::{
    parse_forward_header, ControlReply, ControlRequest, ForwardedPort, Proto, ShareFs, StreamFrame,
    UdpFrame, API_PORT, CONTROL_PORT, FORWARD_PORT, FRAMED_API_PORT, READY_PORT,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tokio_vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY, VMADDR_CID_HOST};

use crate::cmdline::BootArgs;
use crate::{dhcp, disk, host_services, modules, ports, share};

/// How often the published ports are rescanned.
const PORT_SCAN: Duration = Duration::from_millis(250);
/// How long containers get to stop at shutdown.
const STOP_TIMEOUT: u64 = 10;

pub struct Options {
    pub data_root: PathBuf,
    /// Inside the VM: prepare the data disk first.
    pub in_vm: bool,
    /// Host loopback ports the guest reaches through the host service port
    /// (from the kernel command line, which PID 1 parsed).
    pub host_ports: Vec<u16>,
    /// Host directories to mount (tag, guest path, filesystem), also from the command line.
    pub shares: Vec<(String, PathBuf, ShareFs)>,
    /// On Hyper-V (9p shares are reached over a socket there).
    pub hyperv: bool,
}

impl Options {
    pub fn vm(boot: &BootArgs, hyperv: bool) -> Self {
        Self {
            data_root: PathBuf::from(disk::MOUNT_POINT),
            in_vm: true,
            host_ports: boot.host_ports.clone(),
            shares: boot.shares.clone(),
            hyperv,
        }
    }

    pub fn from_env() -> Self {
        Self {
            data_root: std::env::var_os("BERTH_AGENT_DATA_ROOT")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(disk::MOUNT_POINT)),
            in_vm: false,
            host_ports: Vec::new(),
            shares: Vec::new(),
            hyperv: false,
        }
    }
}

pub fn uptime_ms() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

pub fn run(options: Options) -> Result<()> {
    // The modules the boot did not need (bridge, netfilter, …) load while the data disk
    // mounts, DHCP answers and the image store opens (about a second under TCG, the
    // longest of these); bridge networking needs them before the engine starts.
    let later_modules = options
        .in_vm
        .then(|| std::thread::spawn(|| modules::load_groups(&[modules::LATER])));
    if options.in_vm {
        disk::prepare()?;
        eprintln!(
            "berth-agent: data disk ready at {} ms",
            uptime_ms().unwrap_or(0)
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("berth-agent")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(options, later_modules));
    drop(runtime);
    disk::release();
    result
}

/// Host ports the engine publishes on all addresses or on loopback: bridge containers'
/// ports are NAT rules, not listening sockets, so the socket scan does not see them.
fn published_ports(state: &ApiState) -> BTreeSet<ForwardedPort> {
    let engine = &state.containers;
    let Ok(running) = engine.list(false, &Default::default()) else {
        return BTreeSet::new();
    };
    let mut out = BTreeSet::new();
    for endpoints in engine.records_endpoints(&running) {
        for (_, endpoint) in endpoints {
            for binding in endpoint
                .ports
                .iter()
                .filter(|b| b.host_ip.is_unspecified() || b.host_ip.is_loopback())
            {
                let proto = match binding.proto.as_str() {
                    "udp" => Proto::Udp,
                    _ => Proto::Tcp,
                };
                out.insert(ForwardedPort {
                    proto,
                    port: binding.host_port,
                });
            }
        }
    }
    out
}

/// One [`FRAMED_API_PORT`] connection: the host's frames are unpacked into
/// one end of a socket pair that the API server reads, so the client's
/// half-close arrives as a real one; the server's bytes go back raw.
async fn serve_framed(vsock: VsockStream, state: Arc<ApiState>) {
    let Ok((ours, server_end)) = tokio::net::UnixStream::pair() else {
        return;
    };
    let server = tokio::spawn(berth_api::serve_connection(server_end, state));
    let (mut vr, mut vw) = tokio::io::split(vsock);
    let (mut or, mut ow) = ours.into_split();
    let from_host = async {
        if let Ok(true) = StreamFrame::copy_unframed(&mut vr, &mut ow).await {
            let _ = ow.shutdown().await;
            // Half-closed: the answer may still be streaming.
            std::future::pending::<()>().await
        }
        // The host went away: nothing more to answer.
    };
    let to_host = async {
        let _ = tokio::io::copy(&mut or, &mut vw).await;
        let _ = vw.shutdown().await;
    };
    tokio::select! { _ = from_host => {}, _ = to_host => {} }
    server.abort();
}

async fn serve(
    options: Options,
    later_modules: Option<std::thread::JoinHandle<usize>>,
) -> Result<()> {
    let data_root = options.data_root;
    std::fs::create_dir_all(&data_root)
        .with_context(|| format!("creating {}", data_root.display()))?;
    // In the VM the data disk is ext4 and overlay loaded with it: no test mount needed
    // (tens of milliseconds before the API answers under emulation).
    let snapshot_mode = if options.in_vm && Path::new("/sys/module/overlay").exists() {
        SnapshotMode::Overlay
    } else {
        SnapshotMode::Auto
    };
    let images = ImageService::open_with_snapshots(
        &data_root,
        berth_registry::ClientConfig::default(),
        snapshot_mode,
    )
    .with_context(|| format!("opening the image store in {}", data_root.display()))?;
    let opened_ms = uptime_ms();
    match images.ensure_embedded_hello().await {
        Ok(_) => {}
        Err(e) => eprintln!("berth-agent: loading the embedded hello image failed: {e}"),
    }
    let hello_ms = uptime_ms();
    // Here rather than in PID 1: the bridge and netfilter modules, loading meanwhile, take
    // longer than the disk and the image store, so the shares come at no cost to readiness.
    share::mount_all(&options.shares, options.hyperv);
    if let Some(loading) = later_modules {
        let failed = tokio::task::spawn_blocking(move || loading.join().unwrap_or(0))
            .await
            .unwrap_or(0);
        if failed > 0 {
            eprintln!("berth-agent: {failed} later modules failed to load");
        }
    }
    let modules_ms = uptime_ms();
    let info = DaemonInfo {
        id: berth_api::system::engine_id(&data_root)
            .with_context(|| format!("writing the engine id in {}", data_root.display()))?,
        data_root: data_root.clone(),
        debug: false,
        runtime_path: "berth-agent (in-process)".into(),
        // The same bridge networking as `berth daemon` on a Linux host: the default bridge,
        // nftables rules in table `berth`, DNS forwarded to the guest's resolv.conf.
        // (Outside a VM, as in the agent's own tests, the host's networking is left alone.)
        // The guest kernel has nf_tables (the image packs its modules), so no need to probe.
        network: options
            .in_vm
            .then(|| berth_engine::containers::NetworkConfig {
                firewall: Some(berth_network::FirewallBackend::Nftables),
                ..Default::default()
            }),
        ..DaemonInfo::default()
    };
    if options.in_vm {
        // Containers the engine restarts, and those started through the API, get the
        // guest's network and DNS; the image store opened while the lease was coming.
        let _ = tokio::task::spawn_blocking(dhcp::wait_for_first_lease).await;
    }
    let state = Arc::new(ApiState::new(images, info)?);
    let engine_ms = uptime_ms();

    let bind = |port| {
        VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port))
            .with_context(|| format!("listening on vsock port {port}"))
    };
    let api = bind(API_PORT)?;
    let framed_api = bind(FRAMED_API_PORT)?;
    let control = bind(CONTROL_PORT)?;
    let forward = bind(FORWARD_PORT)?;
    let ready_ms = uptime_ms();
    // Where the time to ready went (guest uptime), to see what varies between boots.
    eprintln!(
        "berth-agent {}: API on vsock port {API_PORT} ({} ms after boot; image store open at {}, \
         hello at {}, later modules at {}, engine at {})",
        env!("CARGO_PKG_VERSION"),
        ready_ms.unwrap_or(0),
        opened_ms.unwrap_or(0),
        hello_ms.unwrap_or(0),
        modules_ms.unwrap_or(0),
        engine_ms.unwrap_or(0),
    );

    if options.in_vm {
        tokio::spawn(announce_ready(ready_ms));
    }

    // Host services listen on the guest's loopback; forwarding those ports back to the
    // host would loop, so they are left out of the forwarded set.
    let host_ports = options.host_ports;
    host_services::serve(&host_ports).await;
    let forwarded = {
        let state = Arc::clone(&state);
        move || {
            let mut ports = ports::scan();
            ports.extend(published_ports(&state));
            ports.retain(|p| !(p.proto == Proto::Tcp && host_ports.contains(&p.port)));
            ports
        }
    };
    let (ports_tx, ports_rx) = watch::channel(forwarded());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PORT_SCAN).await;
            let now = forwarded();
            ports_tx.send_if_modified(|p| {
                let changed = *p != now;
                *p = now;
                changed
            });
        }
    });

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let api_task = {
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let api = api;
            loop {
                let Ok((stream, _)) = api.accept().await else {
                    continue;
                };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let _ = berth_api::serve_connection(stream, state).await;
                });
            }
        })
    };
    let framed_api_task = {
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let framed_api = framed_api;
            loop {
                let Ok((stream, _)) = framed_api.accept().await else {
                    continue;
                };
                tokio::spawn(serve_framed(stream, Arc::clone(&state)));
            }
        })
    };
    let forward_task = tokio::spawn(async move {
        let forward = forward;
        loop {
            let Ok((stream, _)) = forward.accept().await else {
                continue;
            };
            tokio::spawn(handle_forward(stream));
        }
    });
    let control_task = {
        let ctx = Arc::new(ControlCtx {
            ready_ms,
            ports: ports_rx,
            stop: stop_tx,
        });
        tokio::spawn(async move {
            let control = control;
            loop {
                let Ok((stream, _)) = control.accept().await else {
                    continue;
                };
                tokio::spawn(handle_control(stream, Arc::clone(&ctx)));
            }
        })
    };

    let _ = stop_rx.wait_for(|s| *s).await;
    eprintln!("berth-agent: shutting down: stopping containers");
    api_task.abort();
    framed_api_task.abort();
    forward_task.abort();
    stop_containers(&state).await;
    control_task.abort();
    Ok(())
}

/// Tells the host the API is up ([`READY_PORT`]): the host waits for this
/// instead of probing, as a probe that arrives before the guest's vsock
/// queues are ready kills the hybrid vsock backend. A refused connection
/// (the host's listener not there yet) is retried for a while.
async fn announce_ready(ready_ms: Option<u64>) {
    let mut line = serde_json::to_vec(&ControlReply {
        version: Some(env!("CARGO_PKG_VERSION").into()),
        ready_ms,
        ..ControlReply::ok()
    })
    .unwrap_or_default();
    line.push(b'\n');
    let mut last_error = None;
    for _ in 0..50 {
        match VsockStream::connect(VsockAddr::new(VMADDR_CID_HOST, READY_PORT)).await {
            Ok(mut host) => {
                if let Err(e) = host.write_all(&line).await {
                    eprintln!("berth-agent: announcing readiness: {e}");
                }
                return;
            }
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(e) = last_error {
        eprintln!("berth-agent: announcing readiness on host vsock port {READY_PORT}: {e}");
    }
}

async fn stop_containers(state: &ApiState) {
    let running = match state.containers.list(false, &Default::default()) {
        Ok(list) => list,
        Err(e) => {
            eprintln!("berth-agent: listing containers: {e}");
            return;
        }
    };
    let stops = running
        .iter()
        .map(|c| state.containers.stop(&c.id, Some(STOP_TIMEOUT)));
    for (c, result) in running.iter().zip(futures_join_all(stops).await) {
        if let Err(e) = result {
            eprintln!("berth-agent: stopping {}: {e}", c.id);
        }
    }
}

/// Awaits futures concurrently without another dependency.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out = Vec::with_capacity(set.len());
    for f in set {
        out.push(f.await);
    }
    out
}

struct ControlCtx {
    ready_ms: Option<u64>,
    ports: watch::Receiver<std::collections::BTreeSet<ForwardedPort>>,
    stop: watch::Sender<bool>,
}

async fn reply<W: AsyncWrite + Unpin>(w: &mut W, reply: &ControlReply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
}

async fn handle_control(stream: VsockStream, ctx: Arc<ControlCtx>) {
    let (r, mut w) = tokio::io::split(stream);
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let request: ControlRequest = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                let _ = reply(&mut w, &ControlReply::error(format!("bad request: {e}"))).await;
                continue;
            }
        };
        let answer = match request {
            ControlRequest::Ping => ControlReply {
                version: Some(env!("CARGO_PKG_VERSION").into()),
                ready_ms: ctx.ready_ms,
                ..ControlReply::ok()
            },
            ControlRequest::SetTime { unix_secs, nanos } => {
                match crate::init::set_clock_from(unix_secs, nanos) {
                    Ok(()) => ControlReply::ok(),
                    Err(e) => ControlReply::error(format!("setting the clock: {e}")),
                }
            }
            ControlRequest::Shutdown => {
                let _ = reply(&mut w, &ControlReply::ok()).await;
                ctx.stop.send_replace(true);
                return;
            }
            ControlRequest::WatchPorts => {
                let mut rx = ctx.ports.clone();
                loop {
                    let ports: Vec<ForwardedPort> =
                        rx.borrow_and_update().iter().copied().collect();
                    let msg = ControlReply {
                        ports: Some(ports),
                        ..ControlReply::ok()
                    };
                    if reply(&mut w, &msg).await.is_err() || rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        };
        if reply(&mut w, &answer).await.is_err() {
            return;
        }
    }
}

async fn handle_forward(mut stream: VsockStream) {
    let mut header = Vec::new();
    loop {
        let mut b = [0u8; 1];
        match stream.read(&mut b).await {
            Ok(1) if b[0] != b'\n' && header.len() < 64 => header.push(b[0]),
            Ok(1) => break,
            _ => return,
        }
    }
    let port = match parse_forward_header(&String::from_utf8_lossy(&header)) {
        Ok(p) => p,
        Err(e) => {
            let _ = stream.write_all(format!("ERR {e}\n").as_bytes()).await;
            return;
        }
    };
    match port.proto {
        Proto::Tcp => {
            let target = match tokio::net::TcpStream::connect(("127.0.0.1", port.port)).await {
                Ok(t) => Ok(t),
                Err(_) => tokio::net::TcpStream::connect(("::1", port.port)).await,
            };
            match target {
                Ok(target) => {
                    let _ = target.set_nodelay(true);
                    if stream.write_all(b"OK\n").await.is_ok() {
                        let _ = StreamFrame::splice(target, stream).await;
                    }
                }
                Err(e) => {
                    let _ = stream.write_all(format!("ERR {e}\n").as_bytes()).await;
                }
            }
        }
        Proto::Udp => {
            let socket = match udp_socket(port.port).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = stream.write_all(format!("ERR {e}\n").as_bytes()).await;
                    return;
                }
            };
            if stream.write_all(b"OK\n").await.is_err() {
                return;
            }
            let (mut r, mut w) = tokio::io::split(stream);
            let to_target = async {
                let mut buf = Vec::new();
                while let Ok(Some(n)) = UdpFrame::read(&mut r, &mut buf).await {
                    let _ = socket.send(&buf[..n]).await;
                }
            };
            let from_target = async {
                let mut buf = vec![0u8; UdpFrame::MAX];
                while let Ok(n) = socket.recv(&mut buf).await {
                    let Some(frame) = UdpFrame::encode(&buf[..n]) else {
                        continue;
                    };
                    if w.write_all(&frame).await.is_err() {
                        break;
                    }
                }
            };
            tokio::select! { _ = to_target => {}, _ = from_target => {} }
        }
    }
}

async fn udp_socket(port: u16) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = tokio::net::UdpSocket::bind(("127.0.0.1", 0)).await?;
    socket.connect(("127.0.0.1", port)).await?;
    Ok(socket)
}
