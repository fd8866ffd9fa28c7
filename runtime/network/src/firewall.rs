//! NAT, isolation and published-port rules.
//!
//! The whole rule set is generated from the network state and applied in one atomic transaction
//! each time something changes: with nftables, `nft -f -` replaces Berth's own `table ip berth`;
//! with iptables, `iptables-restore --noflush` rewrites the `BERTH-*` chains. Rules never drift
//! from the state, and removing the last network removes the table/chains entirely.
//!
//! What the rules do, per network (IPv4):
//! - outbound NAT: masquerade the subnet leaving through any interface but its bridge
//!   (not for `internal` networks, which instead may not forward past their bridge);
//! - isolation: drop forwarding between two different Berth bridges;
//! - published ports: DNAT to the container for traffic to a local address of the host, both
//!   arriving (prerouting) and locally originated (output, including 127.0.0.1, which needs
//!   `route_localnet=1` on the bridge), then masquerade what comes from loopback or from the
//!   network itself (hairpin) so replies come back through the host.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{NetworkError, Result};
use crate::store::State;

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
    /// `nft` with Berth's own `table ip berth`.
    Nftables,
    /// `iptables-restore` (iptables-nft or legacy, whichever `iptables` is) with `BERTH-*` chains.
    Iptables,
}

impl FirewallBackend {
    /// `nft` when it can list the ruleset, else `iptables-restore` when it runs, else an error.
    pub fn detect() -> Result<Self> {
        let ok = |cmd: &str, args: &[&str]| {
            Command::new(cmd)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if ok("nft", &["list", "tables"]) {
            Ok(Self::Nftables)
        } else if ok("iptables", &["-t", "nat", "-S", "POSTROUTING"]) {
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

    /// Makes the kernel's rules match `state` (removing everything when it has no networks),
    /// in the default table `berth` (chains `BERTH-*`).
    pub fn apply(self, state: &State) -> Result<()> {
        self.apply_in(DEFAULT_TABLE, state)
    }

    /// Like [`apply`](Self::apply), in nftables table `ip <table>` (iptables chains
    /// `<TABLE>-*`), so two engines (or parallel tests) in one namespace never share rules.
    pub fn apply_in(self, table: &str, state: &State) -> Result<()> {
        match self {
            Self::Nftables => run_stdin(self, "nft", &["-f", "-"], &nft_ruleset_in(table, state)),
            Self::Iptables => apply_iptables(&table.to_ascii_uppercase(), state),
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

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', ""))
}

/// A DNAT rule target for one published port.
struct Dnat {
    host_ip: Option<std::net::Ipv4Addr>,
    host_port: u16,
    proto: &'static str,
    target: std::net::Ipv4Addr,
    container_port: u16,
}

fn dnats(state: &State) -> Vec<Dnat> {
    let mut out = Vec::new();
    for net in state.networks.values() {
        for ep in net.endpoints.values() {
            let Some(std::net::IpAddr::V4(target)) = ep.ipv4() else {
                continue;
            };
            for b in &ep.ports {
                let host_ip = match b.host_ip {
                    std::net::IpAddr::V4(v4) if v4.is_unspecified() => None,
                    std::net::IpAddr::V4(v4) => Some(v4),
                    // IPv6 host addresses are not NATed to IPv4 containers.
                    std::net::IpAddr::V6(_) => continue,
                };
                out.push(Dnat {
                    host_ip,
                    host_port: b.host_port,
                    proto: b.proto.as_str(),
                    target,
                    container_port: b.container_port,
                });
            }
        }
    }
    out
}

/// The complete nftables script for `state`: create-then-delete-then-define makes it idempotent
/// and atomic (one transaction), and with no networks it only deletes the table.
pub fn nft_ruleset(state: &State) -> String {
    nft_ruleset_in(DEFAULT_TABLE, state)
}

/// [`nft_ruleset`] for table `ip <table>`.
pub fn nft_ruleset_in(table: &str, state: &State) -> String {
    let mut s = format!("table ip {table}\ndelete table ip {table}\n");
    if state.networks.is_empty() {
        return s;
    }
    let bridges: Vec<String> = state.networks.values().map(|n| quote(&n.bridge)).collect();
    s.push_str(&format!("table ip {table} {{\n"));
    s.push_str("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    fib daddr type local jump publish\n  }\n");
    s.push_str("  chain output {\n    type nat hook output priority -100; policy accept;\n    fib daddr type local jump publish\n  }\n");
    s.push_str("  chain publish {\n");
    for d in dnats(state) {
        let daddr = d
            .host_ip
            .map(|ip| format!("ip daddr {ip} "))
            .unwrap_or_default();
        s.push_str(&format!(
            "    {daddr}{} dport {} dnat to {}:{}\n",
            d.proto, d.host_port, d.target, d.container_port
        ));
    }
    s.push_str("  }\n");
    s.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    for n in state.networks.values() {
        let br = quote(&n.bridge);
        let Some(pool) = n.ipv4() else { continue };
        let subnet = pool.subnet;
        s.push_str(&format!(
            "    oifname {br} ip saddr 127.0.0.0/8 masquerade\n"
        ));
        s.push_str(&format!(
            "    oifname {br} ip saddr {subnet} ct status dnat masquerade\n"
        ));
        if !n.internal {
            s.push_str(&format!(
                "    ip saddr {subnet} oifname != {br} masquerade\n"
            ));
        }
    }
    s.push_str("  }\n");
    s.push_str("  chain forward {\n    type filter hook forward priority filter; policy accept;\n");
    for n in state.networks.values() {
        let br = quote(&n.bridge);
        let others: Vec<&String> = bridges.iter().filter(|b| **b != br).collect();
        if !others.is_empty() {
            let set = others
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            s.push_str(&format!("    iifname {br} oifname {{ {set} }} drop\n"));
        }
        if n.internal {
            s.push_str(&format!("    iifname {br} oifname != {br} drop\n"));
            s.push_str(&format!("    oifname {br} iifname != {br} drop\n"));
        }
    }
    s.push_str("  }\n}\n");
    s
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
    for d in dnats(state) {
        let daddr = d
            .host_ip
            .map(|ip| format!("-d {ip}/32 "))
            .unwrap_or_default();
        nat.push_str(&format!(
            "-A BERTH-PUBLISH {daddr}-p {p} -m {p} --dport {} -j DNAT --to-destination {}:{}\n",
            d.host_port,
            d.target,
            d.container_port,
            p = d.proto
        ));
    }
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
    nat.push_str("COMMIT\n");
    filter.push_str("COMMIT\n");
    nat + &filter
}

fn iptables_ok(args: &[&str]) -> bool {
    Command::new("iptables")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn apply_iptables(prefix: &str, state: &State) -> Result<()> {
    let backend = FirewallBackend::Iptables;
    let fail = |detail: String| NetworkError::Firewall {
        backend: backend.name(),
        detail,
    };
    let publish = format!("{prefix}-PUBLISH");
    if state.networks.is_empty() {
        for (table, builtin, suffix) in IPT_CHAINS {
            let chain = format!("{prefix}-{suffix}");
            while iptables_ok(&["-t", table, "-D", builtin, "-j", &chain]) {}
            iptables_ok(&["-t", table, "-F", &chain]);
            iptables_ok(&["-t", table, "-X", &chain]);
        }
        iptables_ok(&["-t", "nat", "-F", &publish]);
        iptables_ok(&["-t", "nat", "-X", &publish]);
        return Ok(());
    }
    run_stdin(
        backend,
        "iptables-restore",
        &["--noflush"],
        &iptables_rules_in(prefix, state),
    )?;
    for (table, builtin, suffix) in IPT_CHAINS {
        let chain = format!("{prefix}-{suffix}");
        let chain = chain.as_str();
        if !iptables_ok(&["-t", table, "-C", builtin, "-j", chain])
            && !iptables_ok(&["-t", table, "-I", builtin, "-j", chain])
        {
            return Err(fail(format!("cannot hook {chain} into {table}/{builtin}")));
        }
    }
    Ok(())
}
