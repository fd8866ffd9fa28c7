//! NAT, isolation and published-port rules.
//!
//! The whole rule set is generated from the network state and applied in one atomic transaction
//! each time something changes: with nftables, one netlink transaction replaces Berth's own
//! `table ip berth` (see [`crate::nftables`]); with iptables, `iptables-restore --noflush`
//! rewrites the `BERTH-*` chains. Rules never drift from the state, and removing the last
//! network removes the table/chains entirely.
//!
//! IPv6 networks get the same isolation, outbound NAT and DNAT in `table ip6 berth`
//! (ip6tables `BERTH-*` chains), present only while some network has IPv6.
//!
//! What the rules do, per network (IPv4):
//! - outbound NAT: masquerade the subnet leaving through any interface but its bridge
//!   (not for `internal` networks, which instead may not forward past their bridge);
//! - isolation: drop forwarding between two different Berth bridges;
//! - published ports: DNAT to the container for traffic to a local address of the host, both
//!   arriving (prerouting) and locally originated (output, including 127.0.0.1, which needs
//!   `route_localnet=1` on the bridge), then masquerade what comes from loopback or from the
//!   network itself (hairpin) so replies come back through the host;
//! - published ports on IPv6 host addresses: DNAT to the container's IPv6 address, except for
//!   `::1` (the kernel drops IPv6 loopback traffic routed off `lo`); what has no rule here (an
//!   endpoint without IPv6, `::1`) reaches the host socket that `crate::proxy` serves.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use crate::error::{NetworkError, Result};
use crate::ports::Proto;
use crate::store::State;
use crate::Network;

/// The nftables table (and, upper-cased, the iptables chain prefix) used unless configured.
pub const DEFAULT_TABLE: &str = "berth";

/// Whether `name` can be a table name here: it is pasted into rule scripts unquoted.
pub fn valid_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && name.len() <= 20
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Which tool programs the kernel's packet filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallBackend {
    /// nf_tables over netlink, with Berth's own `table ip berth`.
    Nftables,
    /// `iptables-restore` (iptables-nft or legacy, whichever `iptables` is) with `BERTH-*` chains.
    Iptables,
}

impl FirewallBackend {
    /// nftables when the kernel answers over netlink, else `iptables-restore` when `iptables`
    /// runs, else an error.
    pub fn detect() -> Result<Self> {
        if crate::nftables::available() {
            Ok(Self::Nftables)
        } else if iptables_ok(Family::V4, &["-t", "nat", "-S", "POSTROUTING"]) {
            Ok(Self::Iptables)
        } else {
            Err(NetworkError::NoFirewall)
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Nftables => "nftables",
            Self::Iptables => "iptables",
        }
    }
}

/// The packet filter as one network manager programs it.
pub(crate) struct Firewall {
    backend: FirewallBackend,
    nftables: crate::nftables::Nftables,
}

impl Firewall {
    pub fn new(backend: FirewallBackend) -> Self {
        Self {
            backend,
            nftables: crate::nftables::Nftables::new(),
        }
    }

    pub fn backend(&self) -> FirewallBackend {
        self.backend
    }

    /// Makes the kernel's rules match `state` (removing everything when it has no networks)
    /// in nftables table `ip <table>` (iptables chains `<TABLE>-*`), so two engines (or
    /// parallel tests) in one namespace never share rules.
    pub fn apply_in(&self, table: &str, state: &State) -> Result<()> {
        match self.backend {
            FirewallBackend::Nftables => self.nftables.apply(table, state),
            FirewallBackend::Iptables => {
                let prefix = table.to_ascii_uppercase();
                apply_iptables(Family::V4, &prefix, state)?;
                apply_iptables(Family::V6, &prefix, state)
            }
        }
    }
}

fn run_stdin(backend: FirewallBackend, cmd: &str, args: &[&str], input: &str) -> Result<()> {
    let fail = |detail: String| NetworkError::Firewall {
        backend: backend.name(),
        detail,
    };
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {cmd}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| fail(format!("writing to {cmd}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for {cmd}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(format!(
            "{cmd} {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A DNAT rule for one published port, in one address family.
pub(crate) struct Dnat {
    /// `None`: every local address of the family (but `::1`, see [`dnats`]).
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub proto: Proto,
    target: IpAddr,
    container_port: u16,
}

impl Dnat {
    /// The container's address and port the traffic is translated to.
    pub fn to(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.target, self.container_port)
    }
}

/// The DNAT rules of one family: each binding on an address of that family (or on all), to the
/// container's address of the same family. IPv6 bindings of an endpoint without IPv6, and
/// bindings on `::1`, have none: nftables cannot translate families, and the kernel does not
/// route `::1` off the loopback device; the proxy serves those (see `crate::proxy`).
pub(crate) fn dnats(state: &State, v6: bool) -> Vec<Dnat> {
    let mut out = Vec::new();
    for net in state.networks.values() {
        for ep in net.endpoints.values() {
            let Some(target) = (if v6 { ep.ipv6() } else { ep.ipv4() }) else {
                continue;
            };
            for b in ep.ports.iter().filter(|b| b.host_ip.is_ipv6() == v6) {
                if b.host_ip.is_loopback() && v6 {
                    continue;
                }
                out.push(Dnat {
                    host_ip: (!b.host_ip.is_unspecified()).then_some(b.host_ip),
                    host_port: b.host_port,
                    proto: b.proto,
                    target,
                    container_port: b.container_port,
                });
            }
        }
    }
    out
}

/// Whether some network has IPv6 (and so needs the `ip6` rules).
fn has_ipv6(state: &State) -> bool {
    state.networks.values().any(|n| n.ipv6().is_some())
}

const IPT_CHAINS: [(&str, &str, &str); 4] = [
    ("nat", "PREROUTING", "PREROUTING"),
    ("nat", "OUTPUT", "OUTPUT"),
    ("nat", "POSTROUTING", "POSTROUTING"),
    ("filter", "FORWARD", "FORWARD"),
];

/// `iptables-restore --noflush` input defining (and so flushing) the `BERTH-*` chains.
pub fn iptables_rules(state: &State) -> String {
    iptables_rules_in("BERTH", state)
}

/// [`iptables_rules`] with chains `<prefix>-*`.
pub fn iptables_rules_in(prefix: &str, state: &State) -> String {
    iptables_rules_berth(state).replace("BERTH-", &format!("{prefix}-"))
}

fn iptables_rules_berth(state: &State) -> String {
    let mut nat = String::from("*nat\n:BERTH-PREROUTING - [0:0]\n:BERTH-OUTPUT - [0:0]\n:BERTH-POSTROUTING - [0:0]\n:BERTH-PUBLISH - [0:0]\n");
    nat.push_str("-A BERTH-PREROUTING -m addrtype --dst-type LOCAL -j BERTH-PUBLISH\n");
    nat.push_str("-A BERTH-OUTPUT -m addrtype --dst-type LOCAL -j BERTH-PUBLISH\n");
    push_ipt_dnats(&mut nat, state, false);
    let mut filter = String::from("*filter\n:BERTH-FORWARD - [0:0]\n");
    for n in state.networks.values() {
        let Some(pool) = n.ipv4() else { continue };
        let (br, subnet) = (&n.bridge, pool.subnet);
        nat.push_str(&format!(
            "-A BERTH-POSTROUTING -o {br} -s 127.0.0.0/8 -j MASQUERADE\n"
        ));
        nat.push_str(&format!(
            "-A BERTH-POSTROUTING -o {br} -s {subnet} -m conntrack --ctstate DNAT -j MASQUERADE\n"
        ));
        if !n.internal {
            nat.push_str(&format!(
                "-A BERTH-POSTROUTING -s {subnet} ! -o {br} -j MASQUERADE\n"
            ));
        }
        push_isolation(&mut filter, n, state);
    }
    nat.push_str("COMMIT\n");
    filter.push_str("COMMIT\n");
    nat + &filter
}

/// `BERTH-PUBLISH` DNAT rules of one family.
fn push_ipt_dnats(nat: &mut String, state: &State, v6: bool) {
    let len = if v6 { 128 } else { 32 };
    for d in dnats(state, v6) {
        let daddr = d
            .host_ip
            .map(|ip| format!("-d {ip}/{len} "))
            .unwrap_or_default();
        nat.push_str(&format!(
            "-A BERTH-PUBLISH {daddr}-p {p} -m {p} --dport {} -j DNAT --to-destination {}\n",
            d.host_port,
            d.to(),
            p = d.proto.as_str()
        ));
    }
}

/// iptables isolation for network `n` (the same for both address families): no
/// forwarding to other Berth bridges, and none past its own bridge when internal.
fn push_isolation(filter: &mut String, n: &Network, state: &State) {
    let br = &n.bridge;
    for other in state.networks.values().filter(|o| o.bridge != n.bridge) {
        filter.push_str(&format!(
            "-A BERTH-FORWARD -i {br} -o {} -j DROP\n",
            other.bridge
        ));
    }
    if n.internal {
        filter.push_str(&format!("-A BERTH-FORWARD -i {br} ! -o {br} -j DROP\n"));
        filter.push_str(&format!("-A BERTH-FORWARD -o {br} ! -i {br} -j DROP\n"));
    }
}

/// `ip6tables-restore --noflush` input for the IPv6 networks: outbound NAT and isolation in
/// `<prefix>-POSTROUTING` and `<prefix>-FORWARD`.
pub fn ip6tables_rules_in(prefix: &str, state: &State) -> String {
    let mut nat = String::from("*nat\n:BERTH-PREROUTING - [0:0]\n:BERTH-OUTPUT - [0:0]\n:BERTH-POSTROUTING - [0:0]\n:BERTH-PUBLISH - [0:0]\n");
    nat.push_str("-A BERTH-PREROUTING -m addrtype --dst-type LOCAL -j BERTH-PUBLISH\n");
    // Local traffic to ::1 is the proxy's (the kernel does not route ::1 off loopback).
    nat.push_str("-A BERTH-OUTPUT ! -d ::1/128 -m addrtype --dst-type LOCAL -j BERTH-PUBLISH\n");
    push_ipt_dnats(&mut nat, state, true);
    let mut filter = String::from("*filter\n:BERTH-FORWARD - [0:0]\n");
    for n in state.networks.values() {
        let br = &n.bridge;
        if let Some(pool) = n.ipv6() {
            nat.push_str(&format!(
                "-A BERTH-POSTROUTING -o {br} -s {} -m conntrack --ctstate DNAT -j MASQUERADE\n",
                pool.subnet
            ));
            if !n.internal {
                nat.push_str(&format!(
                    "-A BERTH-POSTROUTING -s {} ! -o {br} -j MASQUERADE\n",
                    pool.subnet
                ));
            }
        }
        push_isolation(&mut filter, n, state);
    }
    nat.push_str("COMMIT\n");
    filter.push_str("COMMIT\n");
    (nat + &filter).replace("BERTH-", &format!("{prefix}-"))
}

/// The address family an iptables tool programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn tool(self) -> &'static str {
        match self {
            Self::V4 => "iptables",
            Self::V6 => "ip6tables",
        }
    }

    fn restore(self) -> &'static str {
        match self {
            Self::V4 => "iptables-restore",
            Self::V6 => "ip6tables-restore",
        }
    }

    /// The chains hooked into built-in ones: (table, built-in chain, suffix).
    fn chains(self) -> &'static [(&'static str, &'static str, &'static str)] {
        match self {
            Self::V4 => &IPT_CHAINS,
            Self::V6 => &IPT6_CHAINS,
        }
    }
}

const IPT6_CHAINS: [(&str, &str, &str); 4] = [
    ("nat", "PREROUTING", "PREROUTING"),
    ("nat", "OUTPUT", "OUTPUT"),
    ("nat", "POSTROUTING", "POSTROUTING"),
    ("filter", "FORWARD", "FORWARD"),
];

fn iptables_ok(family: Family, args: &[&str]) -> bool {
    Command::new(family.tool())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn apply_iptables(family: Family, prefix: &str, state: &State) -> Result<()> {
    let backend = FirewallBackend::Iptables;
    let fail = |detail: String| NetworkError::Firewall {
        backend: backend.name(),
        detail,
    };
    let publish = format!("{prefix}-PUBLISH");
    let (active, rules) = match family {
        Family::V4 => (!state.networks.is_empty(), iptables_rules_in(prefix, state)),
        Family::V6 => (has_ipv6(state), ip6tables_rules_in(prefix, state)),
    };
    let ok = |args: &[&str]| iptables_ok(family, args);
    if !active {
        for (table, builtin, suffix) in family.chains() {
            let chain = format!("{prefix}-{suffix}");
            while ok(&["-t", table, "-D", builtin, "-j", &chain]) {}
            ok(&["-t", table, "-F", &chain]);
            ok(&["-t", table, "-X", &chain]);
        }
        ok(&["-t", "nat", "-F", &publish]);
        ok(&["-t", "nat", "-X", &publish]);
        return Ok(());
    }
    run_stdin(backend, family.restore(), &["--noflush"], &rules)?;
    for (table, builtin, suffix) in family.chains() {
        let chain = format!("{prefix}-{suffix}");
        let chain = chain.as_str();
        if !ok(&["-t", table, "-C", builtin, "-j", chain])
            && !ok(&["-t", table, "-I", builtin, "-j", chain])
        {
            return Err(fail(format!(
                "cannot hook {chain} into {} {table}/{builtin}",
                family.tool()
            )));
        }
    }
    Ok(())
}
