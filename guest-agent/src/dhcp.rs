//! Busybox `udhcpc` speaks the protocol (retransmits, renews, rebinds) and
//! runs this binary at each event, as `berth-agent <event>` with
//! [`HOOK_ENV`] set and the lease in its environment; [`hook`] applies the
//! lease with busybox `ip` and writes `/etc/resolv.conf`. PID 1 starts it
//! ([`start`]), the server waits a bounded time for the first lease before
//! the API answers ([`wait_for_first_lease`]); udhcpc stays behind (PID 1
//! reaps it if it dies) and keeps the lease renewed.
//!
//! Where the host's network has no DHCP server (an HNS NAT network on
//! Windows), or the host knows the address anyway (passt under QEMU, given
//! fixed addresses), the host puts eth0's address on the command line
//! ([`berth_platform::protocol::CMDLINE_NET`]): PID 1 applies it as a lease
//! that never expires ([`configure_link`], [`static_plan`]) and starts no udhcpc.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use berth_network::netlink::Netlink;
use berth_platform::protocol::StaticNet;

use crate::init::BUSYBOX;
use crate::vmbus;

pub const INTERFACE: &str = "eth0";
/// Set in udhcpc's environment, so that its script invocation of this
/// binary is recognised as one.
pub const HOOK_ENV: &str = "BERTH_DHCP_HOOK";
/// The applied lease's `address/prefix`, written by the hook once eth0 is
/// configured: PID 1 waits for it and a renewal compares against it.
const LEASE_FILE: &str = "/run/berth-dhcp.lease";
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// How long after udhcpc starts the API waits for the first lease. passt
/// answers within milliseconds; a network without DHCP costs at most this
/// much once, after which udhcpc goes on trying in the background.
const FIRST_LEASE_WAIT: Duration = Duration::from_secs(3);
/// Hyper-V offers its network adapter on the VMBus asynchronously: eth0
/// may appear a little after `hv_netvsc` has loaded.
const NIC_APPEAR_WAIT: Duration = Duration::from_secs(2);

/// A udhcpc event (its script's first argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Starting, or the lease is lost: drop the address, keep the link up.
    Deconfig,
    Bound,
    Renew,
    /// No lease this round (udhcpc retries).
    LeaseFail,
    /// The server refused; udhcpc deconfigures and restarts by itself.
    Nak,
}

impl Event {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "deconfig" => Self::Deconfig,
            "bound" => Self::Bound,
            "renew" => Self::Renew,
            "leasefail" => Self::LeaseFail,
            "nak" => Self::Nak,
            _ => return None,
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum LeaseError {
    Missing(&'static str),
    Bad { key: &'static str, value: String },
}

impl fmt::Display for LeaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(key) => write!(f, "the lease has no {key}"),
            Self::Bad { key, value } => write!(f, "the lease's {key} {value:?} is not valid"),
        }
    }
}

impl std::error::Error for LeaseError {}

/// What udhcpc passes the script (`ip`, `mask` or `subnet`, `router`,
/// `dns`, `domain`, `mtu`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub mtu: Option<u16>,
}

impl Lease {
    /// Reads the lease from udhcpc's variables (`var` looks one up).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, LeaseError> {
        let bad = |key, value: &str| LeaseError::Bad {
            key,
            value: value.to_string(),
        };
        let ip = var("ip").ok_or(LeaseError::Missing("address (ip)"))?;
        let address: Ipv4Addr = ip.trim().parse().map_err(|_| bad("address", &ip))?;
        let prefix = match (var("mask"), var("subnet")) {
            (Some(m), _) => match m.trim().parse::<u8>() {
                Ok(p) if p <= 32 => p,
                _ => return Err(bad("prefix length (mask)", &m)),
            },
            (None, Some(s)) => {
                let mask: Ipv4Addr = s.trim().parse().map_err(|_| bad("subnet mask", &s))?;
                prefix_of(mask).ok_or_else(|| bad("subnet mask", &s))?
            }
            // RFC 2131 leaves it to the client: the address's class.
            (None, None) => match address.octets()[0] {
                0..=127 => 8,
                128..=191 => 16,
                _ => 24,
            },
        };
        let list = |key: &'static str| -> Result<Vec<Ipv4Addr>, LeaseError> {
            var(key)
                .unwrap_or_default()
                .split_whitespace()
                .map(|a| a.parse().map_err(|_| bad(key, a)))
                .collect()
        };
        let mtu = match var("mtu") {
            None => None,
            Some(m) => match m.trim().parse::<u16>() {
                // The IPv4 minimum; a smaller value would cut the guest off.
                Ok(v) if v >= 576 => Some(v),
                _ => return Err(bad("MTU", &m)),
            },
        };
        let domain = var("domain")
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty());
        if let Some(d) = &domain {
            if d.chars().any(|c| c.is_control()) {
                return Err(bad("domain", d));
            }
        }
        Ok(Self {
            address,
            prefix,
            routers: list("router")?,
            dns: list("dns")?,
            domain,
            mtu,
        })
    }

    /// `address/prefix`, as `ip` takes it and [`LEASE_FILE`] holds it.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.address, self.prefix)
    }

    fn resolv_conf(&self) -> String {
        let mut out = String::new();
        if let Some(d) = &self.domain {
            out.push_str(&format!("search {d}\n"));
        }
        for ns in &self.dns {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        out
    }
}

/// The prefix length of a contiguous netmask.
fn prefix_of(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    if bits.checked_shl(ones).unwrap_or(0) == 0 {
        u8::try_from(ones).ok()
    } else {
        None
    }
}

/// One thing the hook does.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// `busybox ip <args>`.
    Ip(Vec<String>),
    ResolvConf(String),
    /// Records the applied `address/prefix` (None: forgets it).
    Record(Option<String>),
}

fn ip(args: &[&str]) -> Step {
    Step::Ip(args.iter().map(|s| s.to_string()).collect())
}

/// What the hook does for `event`, given the lease and the `address/prefix`
/// applied before. udhcpc deconfigures before every bound, so there is
/// nothing to flush unless an address was applied; a renewal of the same
/// address leaves it in place, so open connections survive. (Each step is
/// a process: tens of milliseconds of boot under emulation.)
pub fn plan(event: Event, lease: Option<&Lease>, applied: Option<&str>) -> Vec<Step> {
    let flush = || ip(&["-4", "addr", "flush", "dev", INTERFACE]);
    match (event, lease) {
        (Event::Deconfig, _) => {
            let mut steps = Vec::new();
            if applied.is_some() {
                steps.push(flush());
            }
            steps.push(ip(&["link", "set", INTERFACE, "up"]));
            steps.push(Step::Record(None));
            steps
        }
        (Event::Bound | Event::Renew, Some(lease)) => {
            let cidr = lease.cidr();
            let mut steps = Vec::new();
            if let Some(mtu) = lease.mtu {
                steps.push(ip(&["link", "set", INTERFACE, "mtu", &mtu.to_string()]));
            }
            if applied != Some(cidr.as_str()) {
                if applied.is_some() {
                    steps.push(flush());
                }
                steps.push(ip(&["addr", "add", &cidr, "dev", INTERFACE]));
            }
            if let Some(router) = lease.routers.first() {
                steps.push(ip(&[
                    "route",
                    "replace",
                    "default",
                    "via",
                    &router.to_string(),
                    "dev",
                    INTERFACE,
                ]));
            }
            if !lease.dns.is_empty() {
                steps.push(Step::ResolvConf(lease.resolv_conf()));
            }
            steps.push(Step::Record(Some(cidr)));
            steps
        }
        _ => Vec::new(),
    }
}

/// What follows eth0's configuration from the host's fixed address: the
/// resolvers, and the address recorded as if leased (so the server's wait
/// for the first lease ends at once).
pub fn static_plan(net: &StaticNet) -> Vec<Step> {
    let lease = Lease {
        address: net.address,
        prefix: net.prefix,
        routers: vec![net.gateway],
        dns: net.dns.clone(),
        domain: None,
        mtu: None,
    };
    plan(Event::Bound, Some(&lease), None)
        .into_iter()
        .filter(|step| !matches!(step, Step::Ip(_)))
        .collect()
}

/// Gives `interface` the host's fixed address over netlink, in this
/// process: up, the address, the default route. (`ip` would be three
/// processes, each tens of milliseconds of boot under emulation.)
pub fn configure_link(interface: &str, net: &StaticNet) -> std::io::Result<()> {
    let mut netlink = Netlink::new()?;
    let index = set_up(&mut netlink, interface)?;
    let exists_already = |r: std::io::Result<()>| match r {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    };
    exists_already(netlink.add_address(index, IpAddr::V4(net.address), net.prefix))?;
    exists_already(netlink.add_default_route(index, IpAddr::V4(net.gateway), None))
}

/// Sets the loopback interface up (port forwarding connects to 127.0.0.1).
pub fn loopback_up() -> std::io::Result<()> {
    set_up(&mut Netlink::new()?, "lo").map(drop)
}

/// Sets `interface` up over netlink; returns its index.
fn set_up(netlink: &mut Netlink, interface: &str) -> std::io::Result<u32> {
    let index = netlink.link_index(interface)?.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no interface {interface}"),
        )
    })?;
    netlink.set_up(index)?;
    Ok(index)
}

/// Whether this process is udhcpc running its script.
pub fn is_hook() -> bool {
    std::env::var_os(HOOK_ENV).is_some()
}

/// The script udhcpc runs: applies `event`. Errors are reported by the caller.
pub fn hook(event: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let event = Event::parse(event).with_context(|| format!("unknown udhcpc event {event:?}"))?;
    let lease = match event {
        Event::Bound | Event::Renew => Some(Lease::from_vars(|k| std::env::var(k).ok())?),
        _ => None,
    };
    let applied = std::fs::read_to_string(LEASE_FILE).ok();
    run(plan(
        event,
        lease.as_ref(),
        applied.as_deref().map(str::trim),
    ))?;
    if let (Event::Bound, Some(l)) = (event, &lease) {
        let routers: Vec<String> = l.routers.iter().map(Ipv4Addr::to_string).collect();
        let dns: Vec<String> = l.dns.iter().map(Ipv4Addr::to_string).collect();
        eprintln!(
            "berth-agent: {INTERFACE} {} by DHCP (router {}, dns {})",
            l.cidr(),
            routers.join(" "),
            dns.join(" ")
        );
    }
    Ok(())
}

fn run(steps: Vec<Step>) -> anyhow::Result<()> {
    use anyhow::Context;
    for step in steps {
        match step {
            Step::Ip(args) => {
                let status = Command::new(BUSYBOX)
                    .arg("ip")
                    .args(&args)
                    .stdin(Stdio::null())
                    .status()
                    .context("running busybox ip")?;
                anyhow::ensure!(status.success(), "ip {} failed ({status})", args.join(" "));
            }
            Step::ResolvConf(text) => {
                let _ = std::fs::create_dir_all("/etc");
                write_atomically(Path::new(RESOLV_CONF), &text)?;
            }
            Step::Record(None) => {
                let _ = std::fs::remove_file(LEASE_FILE);
            }
            Step::Record(Some(cidr)) => write_atomically(Path::new(LEASE_FILE), &cidr)?,
        }
    }
    Ok(())
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// When udhcpc started (set in PID 1 before it forks the server, which
/// inherits it): [`wait_for_first_lease`] measures its bound from here.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Starts udhcpc on eth0 when there is one (none with `--no-network`), or
/// applies `fixed` (the host's address from the command line) instead. It
/// does not wait: the lease arrives while the server prepares the data
/// disk, and the server waits for it ([`wait_for_first_lease`]) before it
/// serves the API.
pub fn start(fixed: Option<&StaticNet>) {
    let sys = Path::new("/sys");
    let nic = sys.join("class/net").join(INTERFACE);
    if !nic.exists() && vmbus::offers(sys, vmbus::NETWORK_CLASS) {
        let deadline = Instant::now() + NIC_APPEAR_WAIT;
        while !nic.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if !nic.exists() {
        return;
    }
    if let Some(net) = fixed {
        let configured = configure_link(INTERFACE, net)
            .map_err(anyhow::Error::from)
            .and_then(|()| run(static_plan(net)));
        match configured {
            Ok(()) => eprintln!(
                "berth-agent: {INTERFACE} {}/{} from the host (router {}, dns {})",
                net.address,
                net.prefix,
                net.gateway,
                net.dns
                    .iter()
                    .map(Ipv4Addr::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Err(e) => eprintln!("berth-agent: configuring {INTERFACE}: {e:#}"),
        }
        return;
    }
    let started = Instant::now();
    let exe = std::env::current_exe().unwrap_or_else(|_| "/init".into());
    // -f: stays our child (PID 1 reaps it); -t/-T: three discovers a second
    // apart, then -A: a pause of 5 s before the next round, forever.
    let spawned = Command::new(BUSYBOX)
        .args([
            "udhcpc", "-f", "-i", INTERFACE, "-t", "3", "-T", "1", "-A", "5",
        ])
        .args(["-O", "mtu", "-s"])
        .arg(&exe)
        .env(HOOK_ENV, "1")
        .stdin(Stdio::null())
        .spawn();
    match spawned {
        Ok(_) => {
            let _ = STARTED.set(started);
        }
        Err(e) => eprintln!("berth-agent: starting udhcpc: {e}"),
    }
}

/// Waits until the first lease is applied, at most [`FIRST_LEASE_WAIT`]
/// after udhcpc started; returns at once when it was not started.
pub fn wait_for_first_lease() {
    let Some(started) = STARTED.get() else {
        return;
    };
    let deadline = *started + FIRST_LEASE_WAIT;
    while !Path::new(LEASE_FILE).exists() {
        if Instant::now() > deadline {
            eprintln!(
                "berth-agent: no DHCP lease for {INTERFACE} within {} s; udhcpc keeps trying",
                FIRST_LEASE_WAIT.as_secs()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "berth-agent: DHCP lease {} ms after udhcpc started",
        started.elapsed().as_millis()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn passt_lease() -> Lease {
        Lease::from_vars(vars(&[
            ("interface", "eth0"),
            ("ip", "10.0.2.15"),
            ("subnet", "255.255.255.0"),
            ("mask", "24"),
            ("router", "10.0.2.2"),
            ("dns", "10.0.2.3"),
            ("lease", "4294967295"),
        ]))
        .expect("lease")
    }

    #[test]
    fn a_lease_is_read_from_udhcpc_variables() {
        let l = passt_lease();
        assert_eq!(l.cidr(), "10.0.2.15/24");
        assert_eq!(l.routers, vec![Ipv4Addr::new(10, 0, 2, 2)]);
        assert_eq!(l.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!((l.domain.as_deref(), l.mtu), (None, None));

        // Virtualization.framework's NAT: only `subnet`, two DNS servers, a domain.
        let l = Lease::from_vars(vars(&[
            ("ip", "192.168.64.7"),
            ("subnet", "255.255.255.0"),
            ("router", "192.168.64.1 192.168.64.254"),
            ("dns", "192.168.64.1  1.1.1.1"),
            ("domain", "localdomain"),
            ("mtu", "1500"),
        ]))
        .expect("lease");
        assert_eq!(l.cidr(), "192.168.64.7/24");
        assert_eq!(l.routers.len(), 2);
        assert_eq!(
            l.resolv_conf(),
            "search localdomain\nnameserver 192.168.64.1\nnameserver 1.1.1.1\n"
        );
        assert_eq!(l.mtu, Some(1500));

        // No mask at all: the address's class.
        let l = Lease::from_vars(vars(&[("ip", "172.20.1.5")])).expect("lease");
        assert_eq!(l.cidr(), "172.20.1.5/16");
        assert!(l.routers.is_empty() && l.dns.is_empty());
    }

    #[test]
    fn bad_leases_name_the_bad_field() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("subnet", "255.0.0.0")], "no address"),
            (&[("ip", "10.0.2.300")], "address \"10.0.2.300\""),
            (&[("ip", "10.0.0.1"), ("mask", "33")], "mask) \"33\""),
            (
                &[("ip", "10.0.0.1"), ("subnet", "255.0.255.0")],
                "subnet mask",
            ),
            (
                &[("ip", "10.0.0.1"), ("router", "10.0.0.2 x")],
                "router \"x\"",
            ),
            (&[("ip", "10.0.0.1"), ("dns", "::1")], "dns \"::1\""),
            (&[("ip", "10.0.0.1"), ("mtu", "68")], "MTU \"68\""),
            (
                &[("ip", "10.0.0.1"), ("domain", "a\nnameserver 6.6.6.6")],
                "domain",
            ),
        ];
        for (pairs, want) in cases {
            let err = Lease::from_vars(vars(pairs)).expect_err(want);
            assert!(err.to_string().contains(want), "{err} lacks {want}");
        }
    }

    #[test]
    fn netmasks_become_prefixes() {
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 240, 0)), Some(20));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_of(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 0, 255, 0)), None);
    }

    fn ip_lines(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Ip(a) => Some(a.join(" ")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn bound_configures_address_route_and_dns() {
        let lease = passt_lease();
        let steps = plan(Event::Bound, Some(&lease), None);
        assert_eq!(
            ip_lines(&steps),
            [
                "addr add 10.0.2.15/24 dev eth0",
                "route replace default via 10.0.2.2 dev eth0",
            ]
        );
        assert!(steps.contains(&Step::ResolvConf("nameserver 10.0.2.3\n".into())));
        assert_eq!(
            steps.last(),
            Some(&Step::Record(Some("10.0.2.15/24".into())))
        );
    }

    #[test]
    fn a_renewal_keeps_the_same_address_in_place() {
        let lease = passt_lease();
        let steps = plan(Event::Renew, Some(&lease), Some("10.0.2.15/24"));
        let lines = ip_lines(&steps);
        assert!(!lines
            .iter()
            .any(|l| l.contains("flush") || l.contains("addr add")));
        assert!(lines.iter().any(|l| l.starts_with("route replace default")));
        // A new address replaces the old one.
        let lines = ip_lines(&plan(Event::Renew, Some(&lease), Some("10.0.2.16/24")));
        assert_eq!(
            lines[..2],
            ["-4 addr flush dev eth0", "addr add 10.0.2.15/24 dev eth0"]
        );
    }

    #[test]
    fn deconfig_drops_the_address_and_no_lease_changes_nothing() {
        let steps = plan(Event::Deconfig, None, Some("10.0.2.15/24"));
        assert_eq!(
            ip_lines(&steps),
            ["-4 addr flush dev eth0", "link set eth0 up"]
        );
        assert_eq!(steps.last(), Some(&Step::Record(None)));
        // At start nothing was applied: only the link comes up.
        assert_eq!(
            ip_lines(&plan(Event::Deconfig, None, None)),
            ["link set eth0 up"]
        );
        assert!(plan(Event::LeaseFail, None, None).is_empty());
        assert!(plan(Event::Nak, None, None).is_empty());
        // bound without a lease (cannot happen with udhcpc) does nothing either.
        assert!(plan(Event::Bound, None, None).is_empty());
        assert_eq!(Event::parse("bound"), Some(Event::Bound));
        assert_eq!(Event::parse("serve"), None);
    }

    #[test]
    fn the_hosts_fixed_address_is_applied_like_a_lease() {
        let net = StaticNet::parse("172.29.0.5/24,172.29.0.1,192.168.1.1,172.29.0.1").expect("net");
        let steps = static_plan(&net);
        assert_eq!(
            steps,
            [
                Step::ResolvConf("nameserver 192.168.1.1\nnameserver 172.29.0.1\n".into()),
                // Recorded, so the API's wait for the first lease ends at once.
                Step::Record(Some("172.29.0.5/24".into())),
            ]
        );
    }

    /// In a network namespace of its own (a thread's), a link that starts
    /// down gets the address and a default route through the gateway, which
    /// the kernel accepts only on a link that is up.
    #[test]
    fn the_link_is_configured_over_netlink() {
        let outcome = std::thread::spawn(|| -> Result<String, String> {
            // SAFETY: unshare affects only this thread, which ends with the test.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(format!("unshare: {}", std::io::Error::last_os_error()));
            }
            let added = Command::new("ip")
                .args([
                    "link",
                    "add",
                    "berthtest0",
                    "type",
                    "veth",
                    "peer",
                    "berthtest1",
                ])
                .status()
                .map_err(|e| format!("ip: {e}"))?;
            if !added.success() {
                return Err(format!("ip link add: {added}"));
            }
            let net = StaticNet::parse("10.77.0.5/24,10.77.0.1,10.77.0.1").expect("net");
            configure_link("berthtest0", &net).map_err(|e| format!("configure: {e}"))?;
            // Applying it again (a restarted agent) is not an error.
            configure_link("berthtest0", &net).map_err(|e| format!("again: {e}"))?;
            std::net::UdpSocket::bind("10.77.0.5:0").map_err(|e| format!("bind: {e}"))?;
            let err = configure_link("nosuch0", &net).expect_err("no such link");
            assert!(err.to_string().contains("nosuch0"), "{err}");
            std::fs::read_to_string("/proc/thread-self/net/route").map_err(|e| e.to_string())
        })
        .join()
        .expect("test thread");
        let routes = outcome.expect("configured");
        // Destination 0.0.0.0 via 10.77.0.1, little-endian hex as /proc shows it.
        assert!(
            routes
                .lines()
                .any(|l| l.starts_with("berthtest0\t00000000\t01004D0A")),
            "{routes}"
        );
    }

    #[test]
    fn a_lease_without_dns_or_router_leaves_them_alone() {
        let lease = Lease::from_vars(vars(&[("ip", "10.1.0.9"), ("mask", "16")])).expect("lease");
        let steps = plan(Event::Bound, Some(&lease), None);
        assert!(!steps.iter().any(|s| matches!(s, Step::ResolvConf(_))));
        assert!(!ip_lines(&steps).iter().any(|l| l.contains("route")));
    }
}
