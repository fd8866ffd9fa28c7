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
use std::process::{Command, Stdio};

use crate::error::{NetworkError, Result};
use crate::nftables::rules::{self, Action, ChainKind, Cmp, Family, Match, Rule, Table};
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
        } else if iptables_ok(Family::Ip, &["-t", "nat", "-S", "POSTROUTING"]) {
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
                let [v6, v4] = rules::tables(&prefix, state);
                apply_iptables(&prefix, &v4)?;
                apply_iptables(&prefix, &v6)
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

/// The chains hooked into built-in ones: (table, built-in chain, suffix of ours).
const HOOKED_CHAINS: [(&str, &str, &str); 4] = [
    ("nat", "PREROUTING", "PREROUTING"),
    ("nat", "OUTPUT", "OUTPUT"),
    ("nat", "POSTROUTING", "POSTROUTING"),
    ("filter", "FORWARD", "FORWARD"),
];

/// `iptables-restore --noflush` input defining (and so flushing) the `<prefix>-*` chains:
/// the rules of [`rules::tables`]' `ip` table, in iptables' words.
pub fn iptables_rules_in(prefix: &str, state: &State) -> String {
    let [_, v4] = rules::tables(prefix, state);
    restore_input(prefix, &v4)
}

/// [`iptables_rules_in`] for `ip6tables-restore`: the `ip6` table's rules.
pub fn ip6tables_rules_in(prefix: &str, state: &State) -> String {
    let [v6, _] = rules::tables(prefix, state);
    restore_input(prefix, &v6)
}

/// The chains of `table` as `<prefix>-<CHAIN>`: the filter chain in `*filter`, the others
/// (nat base chains and `publish`, which they jump to) in `*nat`.
fn restore_input(prefix: &str, table: &Table) -> String {
    let mut nat = String::from("*nat\n");
    for chain in ["PREROUTING", "OUTPUT", "POSTROUTING", "PUBLISH"] {
        nat.push_str(&format!(":{prefix}-{chain} - [0:0]\n"));
    }
    let mut filter = format!("*filter\n:{prefix}-FORWARD - [0:0]\n");
    for chain in table.chains.iter().flatten() {
        let filtering = chain.hook.is_some_and(|h| h.kind == ChainKind::Filter);
        let out = if filtering { &mut filter } else { &mut nat };
        let name = chain.name.to_ascii_uppercase();
        for rule in &chain.rules {
            out.push_str(&format!(
                "-A {prefix}-{name} {}\n",
                iptables_args(prefix, rule)
            ));
        }
    }
    nat.push_str("COMMIT\n");
    filter.push_str("COMMIT\n");
    nat + &filter
}

/// One rule as iptables arguments, e.g. `-o br0 -s 10.1.0.0/24 -j MASQUERADE`.
fn iptables_args(prefix: &str, rule: &Rule) -> String {
    let not = |op: Cmp| if op == Cmp::Ne { "! " } else { "" };
    let mut args: Vec<String> = rule
        .matches
        .iter()
        .map(|m| match m {
            Match::Iifname(op, name) => format!("{}-i {name}", not(*op)),
            Match::Oifname(op, name) => format!("{}-o {name}", not(*op)),
            Match::Saddr(net) => format!("-s {net}"),
            Match::Daddr(op, ip) => {
                let len = if ip.is_ipv4() { 32 } else { 128 };
                format!("{}-d {ip}/{len}", not(*op))
            }
            Match::Dport(proto, port) => format!("-p {proto} -m {proto} --dport {port}"),
            Match::CtStatusDnat => "-m conntrack --ctstate DNAT".into(),
            Match::FibDaddrLocal => "-m addrtype --dst-type LOCAL".into(),
        })
        .collect();
    args.push(match &rule.action {
        Action::Jump(chain) => format!("-j {prefix}-{}", chain.to_ascii_uppercase()),
        Action::Drop => "-j DROP".into(),
        Action::Masquerade => "-j MASQUERADE".into(),
        Action::Dnat(to) => format!("-j DNAT --to-destination {to}"),
    });
    args.join(" ")
}

/// The iptables tool of a family, and its restore tool.
fn tools(family: Family) -> (&'static str, &'static str) {
    match family {
        Family::Ip => ("iptables", "iptables-restore"),
        Family::Ip6 => ("ip6tables", "ip6tables-restore"),
    }
}

fn iptables_ok(family: Family, args: &[&str]) -> bool {
    Command::new(tools(family).0)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Makes the `<prefix>-*` chains of `table`'s family hold its rules, hooked into the
/// built-in chains, or removes them when the table is absent.
fn apply_iptables(prefix: &str, table: &Table) -> Result<()> {
    let backend = FirewallBackend::Iptables;
    let fail = |detail: String| NetworkError::Firewall {
        backend: backend.name(),
        detail,
    };
    let (tool, restore) = tools(table.family);
    let ok = |args: &[&str]| iptables_ok(table.family, args);
    let publish = format!("{prefix}-PUBLISH");
    if table.chains.is_none() {
        for (kind, builtin, suffix) in HOOKED_CHAINS {
            let chain = format!("{prefix}-{suffix}");
            while ok(&["-t", kind, "-D", builtin, "-j", &chain]) {}
            ok(&["-t", kind, "-F", &chain]);
            ok(&["-t", kind, "-X", &chain]);
        }
        ok(&["-t", "nat", "-F", &publish]);
        ok(&["-t", "nat", "-X", &publish]);
        return Ok(());
    }
    run_stdin(
        backend,
        restore,
        &["--noflush"],
        &restore_input(prefix, table),
    )?;
    for (kind, builtin, suffix) in HOOKED_CHAINS {
        let chain = format!("{prefix}-{suffix}");
        let chain = chain.as_str();
        if !ok(&["-t", kind, "-C", builtin, "-j", chain])
            && !ok(&["-t", kind, "-I", builtin, "-j", chain])
        {
            return Err(fail(format!(
                "cannot hook {chain} into {tool} {kind}/{builtin}"
            )));
        }
    }
    Ok(())
}
