//! [`NetworkManager`]: networks, endpoints, published ports and DNS, kept consistent with the
//! kernel. Every operation either completes or undoes what it did (links, rules, allocations).
//!
//! The manager works in the network namespace of the thread that calls it (the "host"
//! namespace: the daemon's, or a test's private one).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use ipnet::IpNet;

use crate::dns::{self, DnsServer, Records};
use crate::error::{NetworkError, Result};
use crate::firewall::{Firewall, FirewallBackend};
use crate::ipam::{self, IpamConfig};
use crate::netlink::Netlink;
use crate::netns;
use crate::ports::{self, PortBinding, PortMapping, Reservation};
use crate::proxy::ProxyRuntime;
use crate::store::{random_id, Endpoint, Network, NetworkStore, State};

/// Option naming the bridge device (Docker's key, so compose files keep working).
pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// Option setting the MTU of the bridge and veths.
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";

/// The largest GSO packet our bridges and host-side veths pass on whole: the kernel's limit
/// (`GSO_MAX_SIZE`, 512 KiB less 8). A sender builds packets for the route its socket has; for a
/// published port on 127.0.0.1 that is loopback, whose packets are then DNATed onto the bridge.
/// Were our devices' limit (64 KiB by default) below the sender's, the kernel would cut every
/// such packet down to MSS-sized segments in software (half the throughput measured here on a
/// host with "BIG TCP" on loopback). The container's own end keeps the default, so its traffic
/// out through the host's NIC is built for that NIC as before.
const BIG_GSO_SIZE: u32 = 524_280;

/// The MTU of a network that sets none (Docker's default): what its containers' default routes
/// carry, so their traffic beyond the host is sized as before.
pub const DEFAULT_MTU: u32 = 1500;

/// The MTU of the links of a network that sets none: the bridge, the host's veth ends and the
/// containers' interfaces. Every hop between them is virtual, so nothing here has to fit a
/// wire; only the containers' default routes keep [`DEFAULT_MTU`] (a route MTU, which the
/// kernel uses for TCP's MSS and fragmentation, and lowers further by path MTU discovery).
/// What this buys is the host-to-container path of a published port: the host's client
/// socket is routed over loopback, and the container advertises an MSS from its route back (the
/// gateway, on the bridge's subnet); with 1500 every 64 KiB packet the client builds is a
/// 44-segment GSO packet, with this it is one segment, which the stacks on both sides handle
/// at about 30% less CPU per byte (bench/network.py: ~1.4x the throughput on this 2-core
/// machine; 9000 or 16384 gained nothing: the packets stay multi-segment).
/// A network created with an MTU option (`com.docker.network.driver.mtu`) gets exactly that
/// MTU on its links and no route MTU, as in Docker.
const JUMBO_MTU: u32 = 65535;

/// (MTU of the network's links, MTU of its containers' default routes).
fn mtus(net: &Network) -> (u32, Option<u32>) {
    match net.options.get(OPT_MTU).and_then(|m| m.parse().ok()) {
        Some(mtu) => (mtu, None),
        None => (JUMBO_MTU, Some(DEFAULT_MTU)),
    }
}

/// How the manager is set up.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Where `networks.json` lives.
    pub data_root: PathBuf,
    /// Name of the default network (`bridge`).
    pub default_network: String,
    /// Bridge device of the default network (`berth0`).
    pub default_bridge: String,
    /// Firewall backend; `None` detects it.
    pub firewall: Option<FirewallBackend>,
    /// Upstream resolvers for the embedded DNS; `None` reads the host's `/etc/resolv.conf`.
    pub dns_upstreams: Option<Vec<SocketAddr>>,
    /// Subnet of the default network; `None` picks one that collides with no route.
    pub default_subnet: Option<IpNet>,
    /// The nftables table (upper-cased: the iptables chain prefix) holding every rule.
    pub firewall_table: String,
    /// MTU of the default network (`berth daemon --mtu`); `None`: see [`DEFAULT_MTU`].
    pub default_mtu: Option<u32>,
}

impl ManagerConfig {
    /// Defaults: network `bridge` on device `berth0`, detected firewall, host resolvers.
    pub fn new(data_root: impl Into<PathBuf>) -> Self {
        Self {
            data_root: data_root.into(),
            default_network: "bridge".into(),
            default_bridge: "berth0".into(),
            firewall: None,
            dns_upstreams: None,
            default_subnet: None,
            firewall_table: crate::firewall::DEFAULT_TABLE.into(),
            default_mtu: None,
        }
    }
}

/// One subnet of `network create --subnet … [--gateway …] [--ip-range …]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetRequest {
    pub subnet: IpNet,
    pub gateway: Option<IpAddr>,
    pub ip_range: Option<IpNet>,
}

/// `network create` options.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub name: String,
    /// Only `bridge` (the default) is supported.
    pub driver: Option<String>,
    /// At most one IPv4 and one IPv6 subnet; an IPv4 one is chosen when none is given.
    pub subnets: Vec<SubnetRequest>,
    pub enable_ipv6: bool,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
}

impl CreateOptions {
    /// Options for a network called `name` with everything else default.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }
}

/// `network connect` (or container start) parameters.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    /// Network name, id or unique id prefix.
    pub network: String,
    pub container_id: String,
    pub container_name: Option<String>,
    /// The container's network namespace: `/proc/<pid>/ns/net` or a bind-mounted path.
    pub netns: PathBuf,
    pub aliases: Vec<String>,
    pub ipv4: Option<IpAddr>,
    pub ipv6: Option<IpAddr>,
    pub mac: Option<[u8; 6]>,
    /// Interface name in the container; default the first free `ethN`.
    pub ifname: Option<String>,
}

impl AttachRequest {
    /// A request with no static address, alias or MAC.
    pub fn new(
        network: impl Into<String>,
        container_id: impl Into<String>,
        netns: impl Into<PathBuf>,
    ) -> Self {
        Self {
            network: network.into(),
            container_id: container_id.into(),
            container_name: None,
            netns: netns.into(),
            aliases: Vec::new(),
            ipv4: None,
            ipv6: None,
            mac: None,
            ifname: None,
        }
    }
}

struct Inner {
    state: State,
    /// Held host ports, by (network id, container id).
    reservations: HashMap<(String, String), Vec<Reservation>>,
    /// Running DNS servers, by network id.
    dns: HashMap<String, DnsServer>,
    /// The thread serving IPv6 host ports (see [`crate::proxy`]), started on first use.
    proxies: Option<ProxyRuntime>,
}

/// Bridge networks for containers.
pub struct NetworkManager {
    cfg: ManagerConfig,
    store: NetworkStore,
    firewall: Firewall,
    inner: Mutex<Inner>,
}

fn netlink_err(op: &'static str, interface: &str) -> impl FnOnce(std::io::Error) -> NetworkError {
    let interface = interface.to_string();
    move |source| NetworkError::Netlink {
        op,
        interface,
        source,
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `02:42:` followed by the IPv4 address (Docker's scheme: stable and unique per network).
fn mac_for(ip: Option<IpAddr>) -> [u8; 6] {
    match ip {
        Some(IpAddr::V4(v4)) => {
            let o = v4.octets();
            [0x02, 0x42, o[0], o[1], o[2], o[3]]
        }
        _ => {
            let id = random_id();
            let b = id.as_bytes();
            [0x02, 0x42, b[0], b[1], b[2], b[3]]
        }
    }
}

fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn random_ula() -> IpNet {
    let id = random_id();
    let hex = &id[..10];
    let s = format!("fd{}:{}:{}::/64", &hex[0..2], &hex[2..6], &hex[6..10]);
    s.parse()
        .unwrap_or_else(|_| IpNet::V6(ipnet::Ipv6Net::default()))
}

impl NetworkManager {
    /// Opens the store; touches no kernel state until a network is used.
    pub fn open(cfg: ManagerConfig) -> Result<Self> {
        if !crate::firewall::valid_table_name(&cfg.firewall_table) {
            return Err(NetworkError::InvalidConfig {
                network: cfg.default_network.clone(),
                reason: format!(
                    "invalid firewall table name {:?}: use up to 20 letters, digits and _",
                    cfg.firewall_table
                ),
            });
        }
        let store = NetworkStore::open(&cfg.data_root)?;
        let state = store.load()?;
        let firewall = Firewall::new(match cfg.firewall {
            Some(f) => f,
            None => FirewallBackend::detect()?,
        });
        Ok(Self {
            cfg,
            store,
            firewall,
            inner: Mutex::new(Inner {
                state,
                reservations: HashMap::new(),
                dns: HashMap::new(),
                proxies: None,
            }),
        })
    }

    /// The firewall backend in use.
    pub fn firewall_backend(&self) -> FirewallBackend {
        self.firewall.backend()
    }

    /// The store's data root.
    pub fn data_root(&self) -> &Path {
        &self.cfg.data_root
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn find<'a>(state: &'a State, key: &str) -> Result<&'a Network> {
        if let Some(n) = state.networks.values().find(|n| n.name == key) {
            return Ok(n);
        }
        if let Some(n) = state.networks.get(key) {
            return Ok(n);
        }
        let mut matches = state.networks.values().filter(|n| n.id.starts_with(key));
        match (matches.next(), matches.next()) {
            (Some(n), None) if !key.is_empty() => Ok(n),
            (Some(_), Some(_)) => Err(NetworkError::Ambiguous(key.to_string())),
            _ => Err(NetworkError::NotFound(key.to_string())),
        }
    }

    /// Commits `new` as the state: firewall first (atomic), then the file. On a save failure
    /// the old rules are put back, so the kernel never runs ahead of what is recorded.
    fn commit(&self, inner: &mut Inner, new: State, firewall: bool) -> Result<()> {
        if firewall {
            self.firewall.apply_in(&self.cfg.firewall_table, &new)?;
        }
        // Networks themselves are synced to disk; endpoint changes are not worth an fsync on
        // every container start: after a power loss no endpoint survives anyway (the bridges
        // and namespaces are gone), and `restore` drops whatever the file still lists.
        // An unchanged state (a restore that drops nothing) is not written again: in the VM
        // that rewrite was ~30 ms of every boot.
        if new == inner.state {
            return Ok(());
        }
        let structural = new.networks.len() != inner.state.networks.len()
            || new.networks.keys().ne(inner.state.networks.keys());
        if let Err(e) = self.store.save_with(&new, structural) {
            if firewall {
                let _ = self
                    .firewall
                    .apply_in(&self.cfg.firewall_table, &inner.state);
            }
            return Err(e);
        }
        inner.state = new;
        Ok(())
    }

    /// Re-applies the firewall rules for the recorded state (after a daemon restart).
    pub fn sync_firewall(&self) -> Result<()> {
        let inner = self.lock();
        self.firewall
            .apply_in(&self.cfg.firewall_table, &inner.state)
    }

    /// The default network, created on first use with a subnet that collides with no route or
    /// address in this namespace and no other network.
    pub fn ensure_default(&self) -> Result<Network> {
        {
            let inner = self.lock();
            if let Ok(n) = Self::find(&inner.state, &self.cfg.default_network) {
                return Ok(n.clone());
            }
        }
        let mut opts = CreateOptions::named(self.cfg.default_network.clone());
        opts.options
            .insert(OPT_BRIDGE_NAME.into(), self.cfg.default_bridge.clone());
        opts.options.insert(
            "com.docker.network.bridge.default_bridge".into(),
            "true".into(),
        );
        if let Some(mtu) = self.cfg.default_mtu {
            opts.options.insert(OPT_MTU.into(), mtu.to_string());
        }
        if let Some(subnet) = self.cfg.default_subnet {
            // `--bip 10.1.0.1/24` style: a host address names the gateway too.
            let gateway = (subnet.addr() != subnet.network()).then(|| subnet.addr());
            opts.subnets.push(SubnetRequest {
                subnet: subnet.trunc(),
                gateway,
                ip_range: None,
            });
        }
        self.create_inner(opts, true)
    }

    /// `network create`.
    pub fn create_network(&self, opts: CreateOptions) -> Result<Network> {
        if opts.name == self.cfg.default_network {
            return Err(NetworkError::NameInUse(opts.name));
        }
        self.create_inner(opts, false)
    }

    fn create_inner(&self, opts: CreateOptions, default: bool) -> Result<Network> {
        let name = opts.name.clone();
        if !valid_name(&name) {
            return Err(NetworkError::InvalidName(name));
        }
        let invalid = |reason: String| NetworkError::InvalidConfig {
            network: name.clone(),
            reason,
        };
        if let Some(d) = &opts.driver {
            if d != "bridge" {
                return Err(invalid(format!(
                    "driver {d:?} is not supported (only bridge)"
                )));
            }
        }
        let mut inner = self.lock();
        if Self::find(&inner.state, &name).is_ok_and(|n| n.name == name) {
            return Err(NetworkError::NameInUse(name));
        }
        let id = random_id();
        let bridge = opts
            .options
            .get(OPT_BRIDGE_NAME)
            .cloned()
            .unwrap_or_else(|| format!("br-{}", &id[..12]));
        if !valid_ifname(&bridge) {
            return Err(invalid(format!("invalid bridge name {bridge:?}")));
        }
        if inner.state.networks.values().any(|n| n.bridge == bridge) {
            return Err(invalid(format!(
                "bridge {bridge:?} is used by another network"
            )));
        }
        if let Some(mtu) = opts.options.get(OPT_MTU) {
            if mtu
                .parse::<u32>()
                .map_or(true, |m| !(68..=65535).contains(&m))
            {
                return Err(invalid(format!("invalid MTU {mtu:?}")));
            }
        }
        let mut ipam_cfg = Vec::new();
        let (mut have4, mut have6) = (false, false);
        for req in &opts.subnets {
            let v4 = req.subnet.network().is_ipv4();
            if (v4 && have4) || (!v4 && have6) {
                return Err(invalid("more than one subnet per address family".into()));
            }
            if !v4 && !opts.enable_ipv6 {
                return Err(invalid("IPv6 subnet given without enable_ipv6".into()));
            }
            have4 |= v4;
            have6 |= !v4;
            ipam_cfg.push(IpamConfig::new(
                &name,
                req.subnet,
                req.gateway,
                req.ip_range,
            )?);
        }
        // Overlap with other networks: name both.
        for pool in &ipam_cfg {
            for other in inner.state.networks.values() {
                for op in &other.ipam {
                    if ipam::overlaps(&pool.subnet, &op.subnet) {
                        return Err(NetworkError::SubnetOverlap {
                            network: name.clone(),
                            subnet: pool.subnet.to_string(),
                            other: other.name.clone(),
                            other_subnet: op.subnet.to_string(),
                        });
                    }
                }
            }
        }
        if !have4 {
            let mut taken: Vec<IpNet> = Netlink::new()
                .and_then(|mut nl| nl.used_ipv4_subnets())
                .map_err(netlink_err("dump routes", "*"))?;
            taken.extend(
                inner
                    .state
                    .networks
                    .values()
                    .flat_map(|n| n.ipam.iter().map(|p| p.subnet)),
            );
            let subnet = ipam::pick_free_subnet(&taken)
                .ok_or_else(|| NetworkError::NoFreeSubnet(name.clone()))?;
            ipam_cfg.insert(0, IpamConfig::new(&name, subnet, None, None)?);
        }
        if opts.enable_ipv6 && !have6 {
            ipam_cfg.push(IpamConfig::new(&name, random_ula(), None, None)?);
        }
        let net = Network {
            id: id.clone(),
            name,
            driver: "bridge".into(),
            bridge,
            ipam: ipam_cfg,
            enable_ipv6: opts.enable_ipv6,
            internal: opts.internal,
            dns: !default,
            labels: opts.labels,
            options: opts.options,
            created: now_secs(),
            endpoints: BTreeMap::new(),
        };
        let mut new = inner.state.clone();
        new.networks.insert(id, net.clone());
        self.commit(&mut inner, new, true)?;
        Ok(net)
    }

    /// `network ls`.
    pub fn list(&self) -> Vec<Network> {
        self.lock().state.networks.values().cloned().collect()
    }

    /// `network inspect` by name, id or unique id prefix.
    pub fn inspect(&self, key: &str) -> Result<Network> {
        Self::find(&self.lock().state, key).cloned()
    }

    /// `network rm`: refused while containers are attached, and for the default network.
    pub fn remove_network(&self, key: &str) -> Result<()> {
        let mut inner = self.lock();
        let net = Self::find(&inner.state, key)?.clone();
        if net.name == self.cfg.default_network {
            return Err(NetworkError::Predefined(net.name));
        }
        self.remove_locked(&mut inner, &net)
    }

    fn remove_locked(&self, inner: &mut Inner, net: &Network) -> Result<()> {
        if !net.endpoints.is_empty() {
            return Err(NetworkError::InUse {
                network: net.name.clone(),
                containers: net
                    .endpoints
                    .values()
                    .map(|e| {
                        e.container_name
                            .clone()
                            .unwrap_or_else(|| e.container_id.clone())
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let mut new = inner.state.clone();
        new.networks.remove(&net.id);
        self.commit(inner, new, true)?;
        inner.dns.remove(&net.id);
        let mut nl = Netlink::new().map_err(netlink_err("open", &net.bridge))?;
        nl.delete_link(&net.bridge)
            .map_err(netlink_err("delete bridge", &net.bridge))?;
        Ok(())
    }

    /// `network prune`: removes user networks without endpoints; returns their names.
    pub fn prune(&self) -> Result<Vec<String>> {
        let mut inner = self.lock();
        let victims: Vec<Network> = inner
            .state
            .networks
            .values()
            .filter(|n| n.endpoints.is_empty() && n.name != self.cfg.default_network)
            .cloned()
            .collect();
        let mut out = Vec::new();
        for n in victims {
            self.remove_locked(&mut inner, &n)?;
            out.push(n.name);
        }
        Ok(out)
    }

    /// Removes everything Berth made: every endpoint's veth, every bridge, the firewall table,
    /// DNS servers, and the recorded state (also the default network).
    pub fn remove_all(&self) -> Result<()> {
        let mut inner = self.lock();
        inner.reservations.clear();
        inner.dns.clear();
        let mut nl = Netlink::new().map_err(netlink_err("open", "*"))?;
        let mut first_err = None;
        for net in inner.state.networks.values() {
            for ep in net.endpoints.values() {
                if let Err(e) = nl.delete_link(&ep.host_veth) {
                    first_err.get_or_insert(netlink_err("delete veth", &ep.host_veth)(e));
                }
            }
            if let Err(e) = nl.delete_link(&net.bridge) {
                first_err.get_or_insert(netlink_err("delete bridge", &net.bridge)(e));
            }
        }
        self.commit(&mut inner, State::default(), true)?;
        first_err.map_or(Ok(()), Err)
    }

    /// Creates the bridge if missing (address = gateway, up, forwarding on). Returns its index
    /// and whether it was created here.
    fn ensure_bridge(&self, nl: &mut Netlink, net: &Network) -> Result<(u32, bool)> {
        let br = &net.bridge;
        if let Some(idx) = nl.link_index(br).map_err(netlink_err("get link", br))? {
            return Ok((idx, false));
        }
        let idx = nl
            .create_bridge(br, Some(mtus(net).0))
            .map_err(netlink_err("create bridge", br))?;
        let mut setup = || -> Result<()> {
            for pool in &net.ipam {
                nl.add_address(idx, pool.gateway, pool.subnet.prefix_len())
                    .map_err(netlink_err("add address", br))?;
            }
            netns::sysctl("net.ipv4.ip_forward", "1")?;
            // DNAT of locally originated 127.0.0.1 traffic to containers needs this.
            netns::sysctl(&format!("net.ipv4.conf.{br}.route_localnet"), "1")?;
            if net.enable_ipv6 {
                netns::sysctl("net.ipv6.conf.all.forwarding", "1")?;
            }
            Ok(())
        };
        if let Err(e) = setup() {
            let _ = nl.delete_link(br);
            return Err(e);
        }
        Ok((idx, true))
    }

    fn records(net: &Network) -> Records {
        let mut r = Records::new();
        for ep in net.endpoints.values() {
            let addrs: Vec<IpAddr> = ep.addresses.iter().map(|a| a.addr()).collect();
            let mut names: Vec<String> = ep.aliases.clone();
            names.extend(ep.container_name.clone());
            names.push(ep.container_id.chars().take(12).collect());
            for n in names {
                let key = n.trim_start_matches('/').to_ascii_lowercase();
                r.entry(key).or_default().extend(addrs.iter().copied());
            }
        }
        r
    }

    fn dns_upstreams(&self) -> Vec<SocketAddr> {
        match &self.cfg.dns_upstreams {
            Some(u) => u.clone(),
            None => std::fs::read_to_string("/etc/resolv.conf")
                .map(|t| dns::upstreams_from_resolv_conf(&t))
                .unwrap_or_default(),
        }
    }

    /// Starts the network's DNS server if it serves DNS and none runs, then loads its names.
    fn refresh_dns(&self, inner: &mut Inner, net_id: &str) -> Result<()> {
        let Some(net) = inner.state.networks.get(net_id) else {
            return Ok(());
        };
        if !net.dns {
            return Ok(());
        }
        let records = Self::records(net);
        if !inner.dns.contains_key(net_id) {
            let Some(pool) = net.ipv4() else {
                return Ok(());
            };
            let server = DnsServer::start(
                &net.name,
                SocketAddr::new(pool.gateway, 53),
                self.dns_upstreams(),
            )?;
            inner.dns.insert(net_id.to_string(), server);
        }
        if let Some(server) = inner.dns.get(net_id) {
            server.set_records(records);
        }
        Ok(())
    }

    /// The address of a network's embedded DNS server, for the container's resolv.conf.
    pub fn dns_address(&self, network: &str) -> Result<Option<IpAddr>> {
        let inner = self.lock();
        let net = Self::find(&inner.state, network)?;
        Ok(if net.dns {
            net.ipv4().map(|p| p.gateway)
        } else {
            None
        })
    }

    /// Connects a container's network namespace to a network: a veth pair (host end on the
    /// bridge, container end `ethN` with the allocated address), `lo` up, default route via the
    /// gateway. On failure nothing is left: no veth, no new bridge, no allocation.
    pub fn attach(&self, req: &AttachRequest) -> Result<Endpoint> {
        let mut inner = self.lock();
        let net = Self::find(&inner.state, &req.network)?.clone();
        if net.endpoints.contains_key(&req.container_id) {
            return Err(NetworkError::AlreadyAttached {
                network: net.name,
                container: req.container_id.clone(),
            });
        }
        if let Some(ifname) = &req.ifname {
            if !valid_ifname(ifname) {
                return Err(NetworkError::InvalidConfig {
                    network: net.name,
                    reason: format!("invalid interface name {ifname:?}"),
                });
            }
        }
        let used: HashSet<IpAddr> = net
            .endpoints
            .values()
            .flat_map(|e| e.addresses.iter().map(|a| a.addr()))
            .collect();
        let mut addresses = Vec::new();
        let mut gateways = Vec::new();
        for pool in &net.ipam {
            let requested = if pool.subnet.network().is_ipv4() {
                req.ipv4
            } else {
                req.ipv6
            };
            let ip = pool.allocate(&net.name, &used, requested)?;
            addresses.push(IpNet::new(ip, pool.subnet.prefix_len()).map_err(|e| {
                NetworkError::InvalidConfig {
                    network: net.name.clone(),
                    reason: e.to_string(),
                }
            })?);
            gateways.push(pool.gateway);
        }
        let mac = req
            .mac
            .unwrap_or_else(|| mac_for(addresses.first().map(|a| a.addr())));
        let ep_id = random_id();
        let host_veth = format!("vb{}", &ep_id[..12]);
        let ns = netns::open(&req.netns)?;
        let mut host = Netlink::new().map_err(netlink_err("open", &net.bridge))?;
        let (bridge_idx, bridge_created) = self.ensure_bridge(&mut host, &net)?;
        let (mtu, route_mtu) = mtus(&net);

        let mut veth_created = false;
        let mut plumb = |veth_created: &mut bool| -> Result<String> {
            let mut ctr = Netlink::in_netns(ns.as_fd()).map_err(|source| NetworkError::Netns {
                path: req.netns.clone(),
                source,
            })?;
            let ifname = match &req.ifname {
                Some(n) => n.clone(),
                None => {
                    let links = ctr
                        .links()
                        .map_err(netlink_err("list links", "container"))?;
                    (0..)
                        .map(|i| format!("eth{i}"))
                        .find(|n| !links.iter().any(|l| &l.name == n))
                        .unwrap_or_else(|| "eth0".into())
                }
            };
            host.create_veth(&host_veth, bridge_idx, Some(mtu), &ifname, ns.as_fd(), mac)
                .map_err(netlink_err("create veth", &host_veth))?;
            *veth_created = true;
            host.set_hairpin(&host_veth)
                .map_err(netlink_err("set hairpin", &host_veth))?;
            // Best effort: only a kernel too old for large GSO packets refuses. The bridge's
            // limit can only rise once it has a port that allows it (a bridge without ports
            // is held at 64 KiB), so it is raised here, after the veth.
            let _ = host.set_gso_max_size(&host_veth, BIG_GSO_SIZE);
            let _ = host.set_gso_max_size(&net.bridge, BIG_GSO_SIZE);
            let idx = ctr
                .link_index(&ifname)
                .map_err(netlink_err("get link", &ifname))?
                .ok_or_else(|| {
                    netlink_err("get link", &ifname)(std::io::Error::from_raw_os_error(
                        libc::ENODEV,
                    ))
                })?;
            ctr.set_up(idx).map_err(netlink_err("set up", &ifname))?;
            for a in &addresses {
                ctr.add_address(idx, a.addr(), a.prefix_len())
                    .map_err(netlink_err("add address", &ifname))?;
            }
            if let Some(lo) = ctr
                .link_index("lo")
                .map_err(netlink_err("get link", "lo"))?
            {
                ctr.set_up(lo).map_err(netlink_err("set up", "lo"))?;
            }
            // Internal networks get no default route (as in Docker): they reach only each other.
            if !net.internal {
                for gw in &gateways {
                    match ctr.add_default_route(idx, *gw, route_mtu) {
                        Ok(()) => {}
                        // A second network: the container keeps its first default route.
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => return Err(netlink_err("add default route", &ifname)(e)),
                    }
                }
            }
            Ok(ifname)
        };
        let result = plumb(&mut veth_created).and_then(|ifname| {
            let endpoint = Endpoint {
                id: ep_id.clone(),
                network_id: net.id.clone(),
                container_id: req.container_id.clone(),
                container_name: req.container_name.clone(),
                aliases: req.aliases.clone(),
                addresses: addresses.clone(),
                gateways: gateways.clone(),
                mac: format_mac(&mac),
                host_veth: host_veth.clone(),
                ifname,
                ports: Vec::new(),
            };
            let mut new = inner.state.clone();
            if let Some(n) = new.networks.get_mut(&net.id) {
                n.endpoints
                    .insert(req.container_id.clone(), endpoint.clone());
            }
            self.commit(&mut inner, new, false)?;
            Ok(endpoint)
        });
        match result {
            Ok(endpoint) => {
                // DNS is best effort: a container without name resolution still runs.
                let _ = self.refresh_dns(&mut inner, &net.id);
                Ok(endpoint)
            }
            Err(e) => {
                if veth_created {
                    let _ = host.delete_link(&host_veth);
                }
                if bridge_created {
                    let _ = host.delete_link(&net.bridge);
                }
                Err(e)
            }
        }
    }

    /// Disconnects a container: removes its veth (and so the container's interface), releases
    /// its address and published ports.
    pub fn detach(&self, network: &str, container_id: &str) -> Result<()> {
        self.detach_with(network, container_id, true)
    }

    /// Like [`detach`](Self::detach) for a container whose namespace the caller is about to let
    /// go, off the container's critical path: the veth is left for the kernel to delete with
    /// the namespace (deleting a link waits for RCU grace periods; the namespace's cleanup does
    /// it in the background), and the firewall is *not* updated — the caller runs
    /// [`sync_firewall`](Self::sync_firewall) afterwards, possibly on another thread. The host
    /// ports are free when this returns.
    pub fn release(&self, network: &str, container_id: &str) -> Result<()> {
        self.detach_with(network, container_id, false)
    }

    fn detach_with(&self, network: &str, container_id: &str, delete_link: bool) -> Result<()> {
        let mut inner = self.lock();
        let net = Self::find(&inner.state, network)?.clone();
        let ep =
            net.endpoints
                .get(container_id)
                .cloned()
                .ok_or_else(|| NetworkError::NotAttached {
                    network: net.name.clone(),
                    container: container_id.to_string(),
                })?;
        let mut new = inner.state.clone();
        if let Some(n) = new.networks.get_mut(&net.id) {
            n.endpoints.remove(container_id);
        }
        self.commit(&mut inner, new, delete_link && !ep.ports.is_empty())?;
        inner
            .reservations
            .remove(&(net.id.clone(), container_id.to_string()));
        let _ = self.refresh_dns(&mut inner, &net.id);
        if delete_link {
            let mut nl = Netlink::new().map_err(netlink_err("open", &ep.host_veth))?;
            nl.delete_link(&ep.host_veth)
                .map_err(netlink_err("delete veth", &ep.host_veth))?;
        }
        Ok(())
    }

    /// Publishes ports of an attached container: reserves each host port (a conflict is an
    /// error naming it, and nothing is published), then installs the DNAT rules.
    pub fn publish(
        &self,
        network: &str,
        container_id: &str,
        mappings: &[PortMapping],
    ) -> Result<Vec<PortBinding>> {
        self.publish_with(network, container_id, mappings, true)
    }

    /// [`publish`](Self::publish) with the DNAT rules installed now (`apply_firewall`) or by
    /// the caller's later [`sync_firewall`](Self::sync_firewall) (e.g. while the container
    /// starts, which it must before traffic matters). The ports are reserved either way.
    pub fn publish_with(
        &self,
        network: &str,
        container_id: &str,
        mappings: &[PortMapping],
        apply_firewall: bool,
    ) -> Result<Vec<PortBinding>> {
        let mut inner = self.lock();
        let net = Self::find(&inner.state, network)?.clone();
        let ep =
            net.endpoints
                .get(container_id)
                .cloned()
                .ok_or_else(|| NetworkError::NotAttached {
                    network: net.name.clone(),
                    container: container_id.to_string(),
                })?;
        if ep.ipv4().is_none() {
            return Err(NetworkError::InvalidConfig {
                network: net.name.clone(),
                reason: "published ports need an IPv4 address".into(),
            });
        }
        let mut reserved = Vec::new();
        for m in mappings {
            reserved.extend(ports::reserve(m)?);
        }
        let reserved = Self::serve_ipv6(&mut inner, &ep, reserved)?;
        let bindings: Vec<PortBinding> = reserved.iter().map(|r| r.binding.clone()).collect();
        let mut new = inner.state.clone();
        if let Some(e) = new
            .networks
            .get_mut(&net.id)
            .and_then(|n| n.endpoints.get_mut(container_id))
        {
            e.ports.extend(bindings.iter().cloned());
        }
        self.commit(&mut inner, new, apply_firewall)?;
        inner
            .reservations
            .entry((net.id, container_id.to_string()))
            .or_default()
            .extend(reserved);
        Ok(bindings)
    }

    /// Serves the IPv6 host bindings among `reserved` with the proxy: relayed to the endpoint's
    /// IPv6 address when it has one (the DNAT rules take all but `[::1]` before the proxy sees
    /// them), else to its IPv4 address (no NAT64 in the kernel). Others are returned as they are.
    fn serve_ipv6(
        inner: &mut Inner,
        ep: &Endpoint,
        reserved: Vec<Reservation>,
    ) -> Result<Vec<Reservation>> {
        let target = ep.ipv6().or_else(|| ep.ipv4());
        let mut out = Vec::with_capacity(reserved.len());
        for r in reserved {
            let (host, port) = (r.binding.host_ip, r.binding.container_port);
            let Some(target) = target.filter(|_| host.is_ipv6()) else {
                out.push(r);
                continue;
            };
            let rt = match &mut inner.proxies {
                Some(rt) => rt,
                slot => {
                    slot.insert(ProxyRuntime::start().map_err(|source| NetworkError::Proxy {
                        host: SocketAddr::new(host, r.binding.host_port),
                        proto: r.binding.proto.as_str(),
                        source,
                    })?)
                }
            };
            out.push(r.serve(rt, SocketAddr::new(target, port))?);
        }
        Ok(out)
    }

    /// Every container's endpoints at once, each with its network (in network-id order;
    /// the networks without their own endpoint maps): for listing many containers, where
    /// [`Self::endpoints_of`] per container would copy every network's map each time.
    pub fn endpoints_by_container(&self) -> HashMap<String, Vec<(Network, Endpoint)>> {
        let inner = self.lock();
        let mut out: HashMap<String, Vec<(Network, Endpoint)>> = HashMap::new();
        for n in inner.state.networks.values() {
            if n.endpoints.is_empty() {
                continue;
            }
            let bare = n.clone_without_endpoints();
            for (cid, e) in &n.endpoints {
                out.entry(cid.clone())
                    .or_default()
                    .push((bare.clone(), e.clone()));
            }
        }
        out
    }

    /// Every endpoint of a container, with its network (in network-id order).
    pub fn endpoints_of(&self, container_id: &str) -> Vec<(Network, Endpoint)> {
        let inner = self.lock();
        inner
            .state
            .networks
            .values()
            .filter_map(|n| {
                n.endpoints
                    .get(container_id)
                    .map(|e| (n.clone(), e.clone()))
            })
            .collect()
    }

    /// After a restart of the caller (the daemon): drops the endpoints `keep` rejects (their
    /// veths, addresses and ports), holds the host ports of the others again, restarts the DNS
    /// servers of networks in use and re-applies the firewall. Returns the dropped endpoints as
    /// (network name, container id). A port another program took meanwhile is reported in the
    /// error but does not stop the rest.
    pub fn restore(&self, keep: impl Fn(&Endpoint) -> bool) -> Result<Vec<(String, String)>> {
        let mut inner = self.lock();
        let mut new = inner.state.clone();
        let mut dropped = Vec::new();
        let mut veths = Vec::new();
        for net in new.networks.values_mut() {
            net.endpoints.retain(|cid, ep| {
                let k = keep(ep);
                if !k {
                    dropped.push((net.name.clone(), cid.clone()));
                    veths.push(ep.host_veth.clone());
                }
                k
            });
        }
        self.commit(&mut inner, new, true)?;
        let mut first_err = None;
        if !veths.is_empty() {
            let mut nl = Netlink::new().map_err(netlink_err("open", "*"))?;
            for v in veths {
                // Already gone when the container's namespace died with it.
                let _ = nl.delete_link(&v);
            }
        }
        // Ports of dropped endpoints are free; kept ones not held yet (a new process) are
        // taken again.
        let live: HashSet<(String, String)> = inner
            .state
            .networks
            .values()
            .flat_map(|n| n.endpoints.keys().map(|c| (n.id.clone(), c.clone())))
            .collect();
        inner.reservations.retain(|k, _| live.contains(k));
        let mut held = Vec::new();
        for net in inner.state.networks.values() {
            for ep in net.endpoints.values() {
                let key = (net.id.clone(), ep.container_id.clone());
                if inner.reservations.contains_key(&key) {
                    continue;
                }
                for b in &ep.ports {
                    match ports::reserve_binding(b) {
                        Ok(r) => held.push((key.clone(), ep.clone(), r)),
                        Err(e) => {
                            first_err.get_or_insert(e);
                        }
                    }
                }
            }
        }
        for (key, ep, r) in held {
            match Self::serve_ipv6(&mut inner, &ep, vec![r]) {
                Ok(r) => inner.reservations.entry(key).or_default().extend(r),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let in_use: Vec<String> = inner
            .state
            .networks
            .values()
            .filter(|n| !n.endpoints.is_empty())
            .map(|n| n.id.clone())
            .collect();
        for id in in_use {
            if let Err(e) = self.refresh_dns(&mut inner, &id) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(dropped), Err)
    }

    /// Removes all published ports of a container on a network.
    pub fn unpublish(&self, network: &str, container_id: &str) -> Result<()> {
        let mut inner = self.lock();
        let net = Self::find(&inner.state, network)?.clone();
        if !net.endpoints.contains_key(container_id) {
            return Err(NetworkError::NotAttached {
                network: net.name,
                container: container_id.to_string(),
            });
        }
        let mut new = inner.state.clone();
        if let Some(e) = new
            .networks
            .get_mut(&net.id)
            .and_then(|n| n.endpoints.get_mut(container_id))
        {
            e.ports.clear();
        }
        self.commit(&mut inner, new, true)?;
        inner
            .reservations
            .remove(&(net.id, container_id.to_string()));
        Ok(())
    }
}
