//! Container networking: the container service's side of `berth-network`.
//!
//! Where things happen, and why:
//! - A container in bridge mode (the default network, or a user network) gets a network
//!   namespace of its own that is *not* tied to a process: it is bind-mounted at
//!   `<root>/netns/<id>` and named in the OCI spec's `network` namespace `path`. The veth,
//!   address, routes and published ports are set up there by the daemon just before the
//!   monitor is started ([`ContainerService::start_networked`]), so restarts by a restart policy
//!   (inside the monitor, without the daemon) keep the same interfaces and ports.
//! - Everything is released when the container stops for good: by `stop` (synchronously, so
//!   the port is free when the CLI returns), by `rm`, and, for containers that exit on their
//!   own, by a watcher thread that waits on the monitor's pidfd (the monitor exits exactly when
//!   no restart will follow).
//! - A generation number per container keeps a late watcher of an earlier run from tearing
//!   down a newer run's setup.
//! - When the daemon is killed, containers keep running with their namespaces, veths and
//!   DNAT rules (the kernel holds them); [`ContainerService::restore_networks`] on the next
//!   start drops what belongs to containers that are gone and holds the host ports of the
//!   live ones again.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::net::IpAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use berth_network::files::ResolverFiles;
use berth_network::{
    AttachRequest, Endpoint, ManagerConfig, Network, NetworkError, NetworkManager, PortMapping,
    Proto,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ContainerError;
use super::store;
use super::types::{ContainerRecord, Status};
use super::{lock, ContainerService, Result};

/// The daemon's network settings (`berth daemon --bridge/--bip/--nft-table`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Bridge device of the default network.
    pub bridge: String,
    /// Subnet of the default network (`10.88.0.1/24`: gateway/prefix); `None` picks a free one.
    pub default_subnet: Option<String>,
    /// nftables table holding every rule of this daemon.
    pub firewall_table: String,
    /// Upstream resolvers of the embedded DNS; `None`: the host's `/etc/resolv.conf`.
    pub dns_upstreams: Option<Vec<String>>,
    /// MTU of the default network (`--mtu`); `None`: see `berth_network::DEFAULT_MTU`.
    pub mtu: Option<u32>,
    /// The packet filter's backend; `None`: detected at start (an nf_tables probe over
    /// netlink, then `iptables`), which can be skipped where the answer is known, as in the VM.
    pub firewall: Option<berth_network::FirewallBackend>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            bridge: "berth0".into(),
            default_subnet: None,
            firewall_table: "berth".into(),
            dns_upstreams: None,
            mtu: None,
            firewall: None,
        }
    }
}

/// One `-p` entry as Docker's API carries it (`PortBindings["80/tcp"][i]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostBinding {
    /// Empty: every address.
    pub host_ip: String,
    /// Empty: any free port; `8000-8010`: the first free one of the range.
    pub host_port: String,
}

/// Per-network settings of a container (Docker's `EndpointSettings`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointOptions {
    pub aliases: Vec<String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
}

/// A container's network options (from `Config`, `HostConfig` and `NetworkingConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerNetwork {
    /// `"80/tcp"` → bindings.
    pub port_bindings: BTreeMap<String, Vec<HostBinding>>,
    /// `-P`: every exposed port on a free host port.
    pub publish_all_ports: bool,
    /// `"80/tcp"` (the container's own, added to the image's).
    pub exposed_ports: Vec<String>,
    /// `--add-host name:ip` (`host-gateway` is the network's gateway).
    pub extra_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    pub domainname: Option<String>,
    /// Networks to join (by name) with their options; the network mode's network is joined
    /// even when absent here.
    pub endpoints: BTreeMap<String, EndpointOptions>,
}

/// What a network mode asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A network by name (`bridge` is the default network).
    Network(String),
    Host,
    None,
    /// `container:<name or id>`.
    Container(String),
}

impl Mode {
    pub fn parse(mode: &str, default_network: &str) -> Self {
        match mode {
            "" | "default" | "bridge" => Mode::Network(default_network.to_string()),
            "host" => Mode::Host,
            "none" => Mode::None,
            m => match m.strip_prefix("container:") {
                Some(c) => Mode::Container(c.to_string()),
                None => Mode::Network(m.to_string()),
            },
        }
    }
}

/// The daemon's networking: the manager plus per-container bookkeeping.
pub struct Networking {
    mgr: NetworkManager,
    cfg: NetworkConfig,
    netns_dir: PathBuf,
    /// Generation of each container's current setup; guarded operations run under this lock.
    generations: Mutex<HashMap<String, u64>>,
    /// `BERTH_NET_TIMING=1`: log how long each setup and release takes (bench/network.py).
    timing: bool,
}

impl std::fmt::Debug for Networking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Networking")
            .field("cfg", &self.cfg)
            .finish()
    }
}

fn net_err(e: NetworkError) -> ContainerError {
    ContainerError::Network(Box::new(e))
}

fn invalid(msg: impl Into<String>) -> ContainerError {
    ContainerError::InvalidParameter(msg.into())
}

impl Networking {
    /// Opens the network store under `<root>/network`; touches no kernel state.
    pub fn open(root: &Path, cfg: NetworkConfig) -> Result<Self> {
        let mut mc = ManagerConfig::new(root.join("network"));
        mc.default_bridge = cfg.bridge.clone();
        mc.firewall_table = cfg.firewall_table.clone();
        mc.firewall = cfg.firewall;
        if let Some(mtu) = cfg.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(invalid(format!("invalid MTU {mtu}: use 68-65535")));
            }
            mc.default_mtu = Some(mtu);
        }
        if let Some(s) = &cfg.default_subnet {
            mc.default_subnet = Some(
                s.parse()
                    .map_err(|_| invalid(format!("invalid default subnet {s:?}")))?,
            );
        }
        if let Some(ups) = &cfg.dns_upstreams {
            let mut v = Vec::new();
            for u in ups {
                let addr = u
                    .parse::<std::net::SocketAddr>()
                    .or_else(|_| u.parse::<IpAddr>().map(|ip| (ip, 53).into()))
                    .map_err(|_| invalid(format!("invalid DNS upstream {u:?}")))?;
                v.push(addr);
            }
            mc.dns_upstreams = Some(v);
        }
        let mgr = NetworkManager::open(mc).map_err(net_err)?;
        let netns_dir = root.join("netns");
        fs::create_dir_all(&netns_dir).map_err(ContainerError::io(format!(
            "creating {}",
            netns_dir.display()
        )))?;
        Ok(Self {
            mgr,
            cfg,
            netns_dir,
            generations: Mutex::new(HashMap::new()),
            timing: std::env::var_os("BERTH_NET_TIMING").is_some_and(|v| v == "1"),
        })
    }

    /// The network manager (for the `/networks` endpoints).
    pub fn manager(&self) -> &NetworkManager {
        &self.mgr
    }

    /// Name of the default network.
    pub fn default_network(&self) -> &'static str {
        "bridge"
    }

    fn netns_path(&self, id: &str) -> PathBuf {
        self.netns_dir.join(id)
    }

    /// Looks a network up, creating the default one on first use.
    pub fn network(&self, name: &str) -> std::result::Result<Network, NetworkError> {
        if name == self.default_network() {
            return self.mgr.ensure_default();
        }
        self.mgr.inspect(name)
    }
}

/// Creates a network namespace bound at `path` (a thread unshares, binds its namespace, ends).
fn create_netns(path: &Path) -> std::io::Result<()> {
    fs::File::create(path)?;
    let target = path.to_path_buf();
    let result = std::thread::spawn(move || -> std::io::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )?;
        Ok(())
    })
    .join()
    .map_err(|_| std::io::Error::other("namespace thread panicked"))?;
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

fn is_netns_mounted(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == 0x6e73_6673)
}

fn remove_netns(path: &Path) {
    if path.exists() {
        let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
        let _ = fs::remove_file(path);
    }
}

/// `80/tcp` → (80, tcp).
pub fn parse_port_key(key: &str) -> Option<(u16, Proto)> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = match proto {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => return None,
    };
    Some((port.parse().ok().filter(|p| *p != 0)?, proto))
}

/// The host-port mappings the container asks for (bindings, then `-P` for the rest).
pub fn port_mappings(net: &ContainerNetwork, image_exposed: &[String]) -> Result<Vec<PortMapping>> {
    let mut out = Vec::new();
    for (key, bindings) in &net.port_bindings {
        let (container_port, proto) =
            parse_port_key(key).ok_or_else(|| invalid(format!("invalid port {key:?}")))?;
        let bindings: Vec<HostBinding> = if bindings.is_empty() {
            vec![HostBinding::default()]
        } else {
            bindings.clone()
        };
        for b in bindings {
            let host_ip = match b.host_ip.trim_matches(|c| c == '[' || c == ']') {
                "" => None,
                ip => Some(ip.parse::<IpAddr>().map_err(|_| {
                    invalid(format!("invalid host IP {:?} for port {key}", b.host_ip))
                })?),
            };
            let bad = || {
                invalid(format!(
                    "invalid host port {:?} for port {key}",
                    b.host_port
                ))
            };
            let (lo, hi) = match b.host_port.as_str() {
                "" => (0, 0),
                p => match p.split_once('-') {
                    Some((a, z)) => (
                        a.parse::<u16>().map_err(|_| bad())?,
                        z.parse::<u16>().map_err(|_| bad())?,
                    ),
                    None => {
                        let v = p.parse::<u16>().map_err(|_| bad())?;
                        (v, v)
                    }
                },
            };
            if hi < lo {
                return Err(bad());
            }
            out.push(PortMapping {
                host_ip,
                host_port: lo,
                host_port_end: hi,
                container_port,
                proto,
            });
        }
    }
    if net.publish_all_ports {
        for key in image_exposed.iter().chain(net.exposed_ports.iter()) {
            let Some((port, proto)) = parse_port_key(key) else {
                continue;
            };
            if !out
                .iter()
                .any(|m| m.container_port == port && m.proto == proto)
            {
                out.push(PortMapping::any_host_port(port, proto));
            }
        }
    }
    Ok(out)
}

fn parse_extra_host(entry: &str, gateway: Option<IpAddr>) -> Result<(String, IpAddr)> {
    // `name:ip`, `name=ip` (newer CLIs); IPv6 addresses contain ':' so split at the first.
    let (name, ip) = entry
        .split_once('=')
        .or_else(|| entry.split_once(':'))
        .ok_or_else(|| invalid(format!("invalid --add-host {entry:?}: expected name:ip")))?;
    let ip = ip.trim_matches(|c| c == '[' || c == ']');
    let ip = if ip == "host-gateway" {
        gateway.ok_or_else(|| {
            invalid(format!(
                "--add-host {entry:?}: host-gateway needs a bridge network"
            ))
        })?
    } else {
        ip.parse()
            .map_err(|_| invalid(format!("invalid IP address in --add-host {entry:?}")))?
    };
    if name.is_empty() {
        return Err(invalid(format!("invalid --add-host {entry:?}: empty name")));
    }
    Ok((name.to_string(), ip))
}

/// Sets the `network` namespace of a spec: joined at `path`, or new (`None`), or removed.
/// Returns whether the spec changed.
fn set_spec_netns(spec: &mut Value, ns: Option<Option<&Path>>) -> bool {
    let Some(list) = spec
        .pointer_mut("/linux/namespaces")
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let want = match ns {
        Some(Some(p)) => Some(serde_json::json!({"type": "network", "path": p})),
        Some(None) => Some(serde_json::json!({"type": "network"})),
        None => None,
    };
    let current: Vec<Value> = list
        .iter()
        .filter(|n| n.get("type").and_then(Value::as_str) == Some("network"))
        .cloned()
        .collect();
    if current == want.iter().cloned().collect::<Vec<_>>() {
        return false;
    }
    list.retain(|n| n.get("type").and_then(Value::as_str) != Some("network"));
    list.extend(want);
    true
}

/// [`set_spec_netns`] on the bundle's `config.json`, rewritten only when it changes.
fn patch_spec_netns(dir: &Path, ns: Option<Option<&Path>>) -> Result<()> {
    let path = dir.join("config.json");
    let mut spec: Value = serde_json::from_slice(
        &fs::read(&path).map_err(ContainerError::io("reading config.json"))?,
    )
    .map_err(|source| ContainerError::CorruptState {
        path: path.clone(),
        source,
    })?;
    if !set_spec_netns(&mut spec, ns) {
        return Ok(());
    }
    let data = serde_json::to_vec_pretty(&spec)
        .map_err(|e| invalid(format!("serializing config.json: {e}")))?;
    store::write_file(&path, &data, store::Durability::Replace)
}

/// Rewrites a file in place (same inode: it is bind-mounted into a running container).
fn write_in_place(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(ContainerError::io(format!("writing {}", path.display())))
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    // SAFETY: a fresh fd from the kernel, owned by nothing else.
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
}

fn wait_pidfd(fd: &OwnedFd) {
    use std::os::fd::AsRawFd;
    loop {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut p, 1, -1) };
        if n > 0 || (n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
            return;
        }
    }
}

impl ContainerService {
    fn networking(&self) -> Option<&Networking> {
        self.inner.net.as_ref()
    }

    /// The daemon's networking, when enabled (for the `/networks` endpoints).
    pub fn network_service(&self) -> Option<&Networking> {
        self.networking()
    }

    /// Create-time checks of the network options: the mode names a known network or container
    /// and every option parses.
    pub(super) fn check_network(&self, req: &super::ContainerCreate) -> Result<()> {
        let hc = &req.host_config;
        let opts = &req.network;
        let Some(net) = self.networking() else {
            return match hc.network_mode.as_str() {
                "" | "default" | "bridge" | "none" | "host" => Ok(()),
                m if m.starts_with("container:") => Err(invalid(
                    "network mode container:<id> needs the daemon's networking".to_string(),
                )),
                m => Err(ContainerError::NetworkNotFound(m.to_string())),
            };
        };
        match Mode::parse(&hc.network_mode, net.default_network()) {
            Mode::Network(name) => {
                // 400, not 404: the docker CLI answers a 404 from create by pulling the image.
                if name != net.default_network() {
                    net.mgr.inspect(&name).map_err(|e| match e {
                        NetworkError::NotFound(n) => invalid(format!("network {n} not found")),
                        e => net_err(e),
                    })?;
                }
            }
            Mode::Container(c) => {
                self.resolve(&c)?;
                if !opts.port_bindings.is_empty() || opts.publish_all_ports {
                    return Err(invalid(
                        "conflicting options: port publishing and the container type network mode",
                    ));
                }
                if req.hostname.as_deref().is_some_and(|h| !h.is_empty()) {
                    return Err(invalid(
                        "conflicting options: hostname and the network mode",
                    ));
                }
            }
            Mode::Host | Mode::None => {}
        }
        for name in opts.endpoints.keys() {
            if matches!(Mode::parse(name, net.default_network()), Mode::Network(_))
                && name != net.default_network()
                && name != &hc.network_mode
            {
                net.mgr.inspect(name).map_err(|e| match e {
                    NetworkError::NotFound(n) => invalid(format!("network {n} not found")),
                    e => net_err(e),
                })?;
            }
        }
        port_mappings(opts, &[])?;
        for h in &opts.extra_hosts {
            parse_extra_host(h, Some(IpAddr::from([0, 0, 0, 0])))?;
        }
        for d in &opts.dns {
            d.parse::<IpAddr>()
                .map_err(|_| invalid(format!("invalid --dns address {d:?}")))?;
        }
        Ok(())
    }

    /// At create: a bridge-mode spec joins the namespace `start` will make, so starting needs
    /// no rewrite of `config.json`.
    pub(super) fn net_spec(
        &self,
        mut spec: Value,
        id: &str,
        req: &super::ContainerCreate,
    ) -> Value {
        if let Some(net) = self.networking() {
            if let Mode::Network(_) =
                Mode::parse(&req.host_config.network_mode, net.default_network())
            {
                set_spec_netns(&mut spec, Some(Some(&net.netns_path(id))));
            }
        }
        spec
    }

    /// Starts a container with its network set up first and released again if the start
    /// fails; on success, a watcher releases it when the container stops for good.
    pub(super) fn start_networked(
        &self,
        id: &str,
        dir: &Path,
        record: &ContainerRecord,
    ) -> Result<()> {
        let Some(net) = self.networking() else {
            return self.start_blocking(id, dir, record);
        };
        let t = std::time::Instant::now();
        let (gen, published) = self.net_setup(id, dir, record)?;
        let setup = t.elapsed();
        // The DNAT rules (a netlink transaction) go in while the monitor creates the container, which
        // cannot take traffic before it starts anyway.
        let (result, firewall) = std::thread::scope(|s| {
            let fw = published.then(|| {
                s.spawn(|| {
                    let t = std::time::Instant::now();
                    net.mgr.sync_firewall().map(|()| t.elapsed())
                })
            });
            let result = self.start_blocking(id, dir, record);
            let firewall = match fw.map(|h| h.join()) {
                Some(Ok(r)) => r.map(Some).map_err(net_err),
                Some(Err(_)) => Err(ContainerError::Task("firewall thread panicked".into())),
                None => Ok(None),
            };
            (result, firewall)
        });
        if net.timing {
            // The rules ran alongside the monitor's create, off the critical path.
            let rules = firewall.as_ref().ok().copied().flatten();
            eprintln!(
                "berth-net-timing setup {:.3} ms, rules (overlapped) {:.3} ms",
                setup.as_secs_f64() * 1e3,
                rules.map_or(0.0, |d| d.as_secs_f64() * 1e3)
            );
        }
        match (result, firewall) {
            (Ok(()), Ok(_)) => {
                self.watch_monitor(id, gen);
                Ok(())
            }
            (Ok(()), Err(e)) => {
                // Published ports are part of a successful start: undo it.
                let _ = store::update_record(dir, |r| r.state.manual_stop = true);
                let _ = self.send_signal(id, nix::sys::signal::Signal::SIGKILL);
                self.net_after_stop(id, dir);
                Err(e)
            }
            (Err(e), _) => {
                self.net_release(id, Some(gen));
                Err(e)
            }
        }
    }

    /// Attaches the container's networks and reserves its ports; returns the setup's
    /// generation and whether ports await their DNAT rules (`sync_firewall`). On failure
    /// nothing is left (no veth, namespace, rule or reservation).
    fn net_setup(&self, id: &str, dir: &Path, record: &ContainerRecord) -> Result<(u64, bool)> {
        let Some(net) = self.networking() else {
            return Ok((0, false));
        };
        let mut gens = lock(&net.generations);
        let gen = gens.get(id).copied().unwrap_or(0) + 1;
        gens.insert(id.to_string(), gen);
        // Leftovers of a run whose release was missed (a daemon killed mid-way).
        self.net_release_locked(net, id);
        let result = self.net_setup_locked(net, id, dir, record);
        if result.is_err() {
            self.net_release_locked(net, id);
        }
        result.map(|published| (gen, published))
    }

    fn net_setup_locked(
        &self,
        net: &Networking,
        id: &str,
        dir: &Path,
        record: &ContainerRecord,
    ) -> Result<bool> {
        let opts = &record.config.network;
        let mode = Mode::parse(
            &record.config.host_config.network_mode,
            net.default_network(),
        );
        let primary = match mode {
            Mode::Host => return patch_spec_netns(dir, None).map(|()| false),
            Mode::None => return patch_spec_netns(dir, Some(None)).map(|()| false),
            Mode::Container(other) => return self.join_container(dir, &other).map(|()| false),
            Mode::Network(name) => name,
        };
        let primary_net = net.network(&primary).map_err(|e| match e {
            NetworkError::NotFound(n) => ContainerError::NetworkNotFound(n),
            e => net_err(e),
        })?;
        let ns = net.netns_path(id);
        create_netns(&ns).map_err(ContainerError::io(format!(
            "creating the network namespace {}",
            ns.display()
        )))?;
        patch_spec_netns(dir, Some(Some(&ns)))?;
        let mut networks = vec![primary_net.name.clone()];
        for name in opts.endpoints.keys() {
            let n = match name.as_str() {
                "" | "default" | "bridge" => net.default_network().to_string(),
                n => n.to_string(),
            };
            if !networks.contains(&n) && !matches!(n.as_str(), "host" | "none") {
                networks.push(n);
            }
        }
        let name = record.name.trim_start_matches('/').to_string();
        let mut endpoints = Vec::new();
        for n in &networks {
            let network = net.network(n).map_err(|e| match e {
                NetworkError::NotFound(n) => ContainerError::NetworkNotFound(n),
                e => net_err(e),
            })?;
            let eo = opts
                .endpoints
                .get(n)
                .or_else(|| {
                    (n == net.default_network())
                        .then(|| opts.endpoints.get("default"))
                        .flatten()
                })
                .cloned()
                .unwrap_or_default();
            endpoints.push(self.attach_endpoint(net, id, &name, &ns, &network, &eo)?);
        }
        let mappings = port_mappings(opts, &record.resolved.exposed_ports)?;
        if !mappings.is_empty() {
            net.mgr
                .publish_with(&primary_net.id, id, &mappings, false)
                .map_err(net_err)?;
        }
        self.write_resolver_files(net, dir, record, &primary_net, &endpoints)?;
        Ok(!mappings.is_empty())
    }

    fn attach_endpoint(
        &self,
        net: &Networking,
        id: &str,
        name: &str,
        ns: &Path,
        network: &Network,
        eo: &EndpointOptions,
    ) -> Result<Endpoint> {
        let mut req = AttachRequest::new(network.id.clone(), id, ns);
        req.container_name = Some(name.to_string());
        // Docker adds the short id as an alias on user networks; the manager resolves it too.
        req.aliases = eo.aliases.clone();
        let parse = |s: &Option<String>| -> Result<Option<IpAddr>> {
            match s.as_deref().filter(|s| !s.is_empty()) {
                Some(a) => a
                    .parse()
                    .map(Some)
                    .map_err(|_| invalid(format!("invalid IP address {a:?}"))),
                None => Ok(None),
            }
        };
        req.ipv4 = parse(&eo.ipv4_address)?;
        req.ipv6 = parse(&eo.ipv6_address)?;
        let endpoint = net.mgr.attach(&req).map_err(net_err)?;
        self.network_event("connect", network, id);
        Ok(endpoint)
    }

    /// `network connect`/`disconnect` events (Docker's attributes).
    fn network_event(&self, action: &str, network: &Network, container: &str) {
        let attributes = BTreeMap::from([
            ("container".to_string(), container.to_string()),
            ("name".to_string(), network.name.clone()),
            ("type".to_string(), network.driver.clone()),
        ]);
        self.events()
            .publish("network", action, &network.id, attributes);
    }

    fn write_resolver_files(
        &self,
        net: &Networking,
        dir: &Path,
        record: &ContainerRecord,
        primary: &Network,
        endpoints: &[Endpoint],
    ) -> Result<()> {
        let opts = &record.config.network;
        let gateway = primary.ipv4().map(|p| p.gateway);
        let mut extra = Vec::new();
        for h in &opts.extra_hosts {
            extra.push(parse_extra_host(h, gateway)?);
        }
        let mut dns = Vec::new();
        for d in &opts.dns {
            dns.push(
                d.parse::<IpAddr>()
                    .map_err(|_| invalid(format!("invalid --dns address {d:?}")))?,
            );
        }
        let files = ResolverFiles {
            hostname: record.resolved.hostname.clone(),
            domainname: opts.domainname.clone(),
            // Every network's addresses, the primary's first (as Docker's sandbox does).
            addresses: endpoints
                .iter()
                .flat_map(|e| e.addresses.iter().map(|a| a.addr()))
                .collect(),
            extra_hosts: extra,
            dns,
            dns_search: opts.dns_search.clone(),
            dns_options: opts.dns_options.clone(),
            network_dns: net.mgr.dns_address(&primary.id).map_err(net_err)?,
        };
        let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        write_in_place(&dir.join("hostname"), &files.hostname_file())?;
        write_in_place(&dir.join("hosts"), &files.hosts_file())?;
        write_in_place(&dir.join("resolv.conf"), &files.resolv_conf(&host_resolv))
    }

    /// Adds (`join`) or removes the container's own `/etc/hosts` lines for an endpoint's
    /// addresses, as Docker does when a running container joins or leaves a network. The
    /// other lines stay, edits made inside the container included; the file keeps its inode
    /// (it is bind-mounted).
    fn update_own_hosts(
        &self,
        dir: &Path,
        record: &ContainerRecord,
        endpoint: &Endpoint,
        join: bool,
    ) -> Result<()> {
        let path = dir.join("hosts");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            // Not written yet: the next start writes it whole.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ContainerError::io(format!("reading {}", path.display()))(e)),
        };
        let entries = ResolverFiles {
            hostname: record.resolved.hostname.clone(),
            domainname: record.config.network.domainname.clone(),
            addresses: endpoint.addresses.iter().map(|a| a.addr()).collect(),
            ..ResolverFiles::default()
        }
        .own_entries();
        let mut out = String::with_capacity(text.len() + 64);
        for line in text.lines().filter(|l| !entries.iter().any(|e| e == l)) {
            out.push_str(line);
            out.push('\n');
        }
        if join {
            for e in &entries {
                out.push_str(e);
                out.push('\n');
            }
        }
        write_in_place(&path, &out)
    }

    /// `container:<ref>`: join the running container's namespace and share its name files.
    fn join_container(&self, dir: &Path, other: &str) -> Result<()> {
        let (oid, odir, orec) = self.load(other)?;
        if !matches!(orec.state.status, Status::Running | Status::Paused) || orec.state.pid <= 0 {
            return Err(ContainerError::Conflict(format!(
                "cannot join the network of container {oid}: it is not running"
            )));
        }
        let ns = PathBuf::from(format!("/proc/{}/ns/net", orec.state.pid));
        patch_spec_netns(dir, Some(Some(&ns)))?;
        for f in ["hosts", "resolv.conf", "hostname"] {
            if let Ok(text) = fs::read_to_string(odir.join(f)) {
                write_in_place(&dir.join(f), &text)?;
            }
        }
        Ok(())
    }

    /// Releases the container's endpoints, ports and namespace — if `generation` is still
    /// current (or always, with `None`).
    pub(super) fn net_release(&self, id: &str, generation: Option<u64>) {
        let Some(net) = self.networking() else {
            return;
        };
        let mut gens = lock(&net.generations);
        if let Some(g) = generation {
            if gens.get(id).copied() != Some(g) {
                return;
            }
        }
        gens.remove(id);
        self.net_release_locked(net, id);
    }

    fn net_release_locked(&self, net: &Networking, id: &str) {
        let t = std::time::Instant::now();
        let mut had_ports = false;
        for (n, ep) in net.mgr.endpoints_of(id) {
            had_ports |= !ep.ports.is_empty();
            // The veth goes with the namespace, which is let go right below.
            match net.mgr.release(&n.id, id) {
                Ok(()) => self.network_event("disconnect", &n, id),
                Err(e) => eprintln!(
                    "berth: detaching container {id} from network {}: {e}",
                    n.name
                ),
            }
        }
        let ns = net.netns_path(id);
        let had_netns = ns.exists();
        remove_netns(&ns);
        if net.timing && (had_netns || had_ports) {
            eprintln!(
                "berth-net-timing release {:.3} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
        }
        if had_ports {
            // The host ports are free already; the stale DNAT rules go off the stop/remove
            // path. Each sync applies the state current at that moment, so a late one can
            // never undo a newer publish.
            let this = self.clone();
            let spawned = std::thread::Builder::new()
                .name("berth-net-fw".into())
                .spawn(move || {
                    if let Some(net) = this.networking() {
                        if let Err(e) = net.mgr.sync_firewall() {
                            eprintln!("berth: updating the firewall: {e}");
                        }
                    }
                });
            if spawned.is_err() {
                let _ = net.mgr.sync_firewall();
            }
        }
    }

    /// After `stop`: waits (bounded) for the monitor to finish, then releases the network,
    /// so the ports are free when the client hears back.
    pub(super) fn net_after_stop(&self, id: &str, dir: &Path) {
        let Some(net) = self.networking() else {
            return;
        };
        let deadline = std::time::Instant::now() + super::MONITOR_FINISH;
        if !super::wait::block_until(dir, deadline, |r| !Self::monitor_alive(r)) {
            return;
        }
        let gen = lock(&net.generations).get(id).copied();
        self.net_release(id, gen);
    }

    /// Releases the network once the container's monitor exits (no restart follows).
    fn watch_monitor(&self, id: &str, generation: u64) {
        let Ok(record) = store::read_record(&self.dir(id)) else {
            self.net_release(id, Some(generation));
            return;
        };
        let pid = record.state.monitor_pid;
        let fd = (pid > 0).then(|| pidfd_open(pid)).flatten();
        // The pidfd names the process we saw in the record, unless the pid was reused before
        // it was opened: check the start time after opening.
        let alive = fd.is_some() && Self::monitor_alive(&record);
        match (fd, alive) {
            (Some(fd), true) => {
                let this = self.clone();
                let id = id.to_string();
                let spawned = std::thread::Builder::new()
                    .name("berth-net-watch".into())
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        wait_pidfd(&fd);
                        this.net_release(&id, Some(generation));
                    });
                if spawned.is_err() {
                    eprintln!("berth: cannot watch container {}'s monitor", record.id);
                }
            }
            _ => self.net_release(id, Some(generation)),
        }
    }

    /// After a daemon restart: keeps the networks of containers whose monitor still runs
    /// (watching them again), releases everything else.
    pub(super) fn restore_networks(&self) {
        let Some(net) = self.networking() else {
            return;
        };
        let mut live = HashMap::new();
        for id in self.ids() {
            if let Ok(r) = store::read_record(&self.dir(&id)) {
                if Self::monitor_alive(&r) {
                    live.insert(id, r);
                }
            }
        }
        match net.mgr.restore(|ep| live.contains_key(&ep.container_id)) {
            Ok(dropped) => {
                for (n, c) in dropped {
                    eprintln!("berth: released container {c}'s endpoint on network {n}");
                }
            }
            Err(e) => eprintln!("berth: restoring networks: {e}"),
        }
        if let Ok(entries) = fs::read_dir(&net.netns_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !live.contains_key(&name) {
                    remove_netns(&e.path());
                }
            }
        }
        let ids: Vec<String> = live
            .keys()
            .filter(|id| {
                is_netns_mounted(&net.netns_path(id)) || !net.mgr.endpoints_of(id).is_empty()
            })
            .cloned()
            .collect();
        for id in ids {
            let gen = {
                let mut gens = lock(&net.generations);
                let g = gens.get(&id).copied().unwrap_or(0) + 1;
                gens.insert(id.clone(), g);
                g
            };
            self.watch_monitor(&id, gen);
        }
    }

    /// The container's endpoints (network, endpoint), primary network first.
    pub fn container_endpoints(&self, id: &str) -> Vec<(Network, Endpoint)> {
        match store::read_record(&self.dir(id)) {
            Ok(r) => self.record_endpoints(&r),
            Err(_) => self
                .networking()
                .map(|net| net.mgr.endpoints_of(id))
                .unwrap_or_default(),
        }
    }

    /// [`Self::record_endpoints`] of many records, in their order, looked up at once.
    pub fn records_endpoints(&self, records: &[ContainerRecord]) -> Vec<Vec<(Network, Endpoint)>> {
        let Some(net) = self.networking() else {
            return vec![Vec::new(); records.len()];
        };
        let mut all = net.mgr.endpoints_by_container();
        records
            .iter()
            .map(|r| {
                let mut eps = all.remove(&r.id).unwrap_or_default();
                if let Mode::Network(primary) =
                    Mode::parse(&r.config.host_config.network_mode, net.default_network())
                {
                    eps.sort_by_key(|(n, _)| n.name != primary && n.id != primary);
                }
                eps
            })
            .collect()
    }

    /// [`Self::container_endpoints`] of a record already read.
    pub fn record_endpoints(&self, r: &ContainerRecord) -> Vec<(Network, Endpoint)> {
        let Some(net) = self.networking() else {
            return Vec::new();
        };
        let mut eps = net.mgr.endpoints_of(&r.id);
        if let Mode::Network(primary) =
            Mode::parse(&r.config.host_config.network_mode, net.default_network())
        {
            eps.sort_by_key(|(n, _)| n.name != primary && n.id != primary);
        }
        eps
    }

    /// The namespace path of a container in bridge mode (Docker's `SandboxKey`).
    pub fn sandbox_key(&self, id: &str) -> Option<PathBuf> {
        let p = self.networking()?.netns_path(id);
        p.exists().then_some(p)
    }

    /// `network connect`: joins a network now (running) and on every later start.
    pub fn connect(&self, reference: &str, network: &str, eo: EndpointOptions) -> Result<()> {
        let net = self
            .networking()
            .ok_or_else(|| invalid("networking is disabled in this daemon"))?;
        let (id, dir, record) = self.load(reference)?;
        let n = net.network(network).map_err(|e| match e {
            NetworkError::NotFound(n) => ContainerError::NetworkNotFound(n),
            e => net_err(e),
        })?;
        match Mode::parse(&record.config.host_config.network_mode, net.default_network()) {
            Mode::Network(_) => {}
            _ => {
                return Err(ContainerError::Forbidden(format!(
                    "container {} is not in a bridge network mode; it cannot be connected to network {}",
                    record.name.trim_start_matches('/'),
                    n.name
                )))
            }
        }
        let ns = net.netns_path(&id);
        if record.state.status.is_active() && is_netns_mounted(&ns) {
            let _gens = lock(&net.generations);
            let name = record.name.trim_start_matches('/').to_string();
            let endpoint = self.attach_endpoint(net, &id, &name, &ns, &n, &eo)?;
            if let Err(e) = self.update_own_hosts(&dir, &record, &endpoint, true) {
                // Joined completely or not at all.
                if net.mgr.detach(&n.id, &id).is_ok() {
                    self.network_event("disconnect", &n, &id);
                }
                return Err(e);
            }
        } else if record.config.network.endpoints.contains_key(&n.name)
            || Mode::parse(
                &record.config.host_config.network_mode,
                net.default_network(),
            ) == Mode::Network(n.name.clone())
        {
            return Err(ContainerError::Forbidden(format!(
                "endpoint with name {} already exists in network {}",
                record.name.trim_start_matches('/'),
                n.name
            )));
        }
        store::update_record(&dir, |r| {
            r.config
                .network
                .endpoints
                .insert(n.name.clone(), eo.clone());
        })?;
        Ok(())
    }

    /// `network disconnect`.
    pub fn disconnect(&self, reference: &str, network: &str) -> Result<()> {
        let net = self
            .networking()
            .ok_or_else(|| invalid("networking is disabled in this daemon"))?;
        let (id, dir, record) = self.load(reference)?;
        let n = net.network(network).map_err(|e| match e {
            NetworkError::NotFound(n) => ContainerError::NetworkNotFound(n),
            e => net_err(e),
        })?;
        let attached = net
            .mgr
            .endpoints_of(&id)
            .into_iter()
            .find(|(x, _)| x.id == n.id)
            .map(|(_, ep)| ep);
        let configured = record.config.network.endpoints.contains_key(&n.name);
        if attached.is_none() && !configured {
            return Err(ContainerError::Forbidden(format!(
                "container {} is not connected to network {}",
                record.name.trim_start_matches('/'),
                n.name
            )));
        }
        if let Some(endpoint) = attached {
            let _gens = lock(&net.generations);
            net.mgr.detach(&n.id, &id).map_err(net_err)?;
            self.network_event("disconnect", &n, &id);
            if let Err(e) = self.update_own_hosts(&dir, &record, &endpoint, false) {
                // The container has left the network; only a stale line remains.
                eprintln!("berth: container {id}: /etc/hosts after disconnect: {e}");
            }
        }
        store::update_record(&dir, |r| {
            r.config.network.endpoints.remove(&n.name);
            // Disconnecting the mode's own network leaves the container without it next time.
            if Mode::parse(&r.config.host_config.network_mode, "bridge")
                == Mode::Network(n.name.clone())
            {
                r.config.host_config.network_mode = "none".into();
            }
        })?;
        Ok(())
    }
}
