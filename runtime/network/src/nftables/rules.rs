//! The rules Berth wants, derived from the network state: tables of chains of rules, each rule
//! a list of matches and one action. `Display` writes them in nft's syntax, for errors, logs
//! and tests; [`super::encode`] turns them into nf_tables expressions.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net};

use crate::ports::Proto;
use crate::store::State;

/// The address family of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Ip,
    Ip6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Ip6 => "ip6",
        }
    }

    /// `NFPROTO_*`.
    pub fn nfproto(self) -> u8 {
        match self {
            Self::Ip => libc::NFPROTO_IPV4 as u8,
            Self::Ip6 => libc::NFPROTO_IPV6 as u8,
        }
    }
}

/// One table, replaced whole: `chains` is `None` when it should only be deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    pub chains: Option<Vec<Chain>>,
}

/// A chain; base chains hook into the packet path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: &'static str,
    pub hook: Option<Hook>,
    pub rules: Vec<Rule>,
}

/// Where a base chain hooks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    pub kind: ChainKind,
    pub point: HookPoint,
    pub priority: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    Nat,
    Filter,
}

impl ChainKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Nat => "nat",
            Self::Filter => "filter",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    Prerouting,
    Forward,
    Output,
    Postrouting,
}

impl HookPoint {
    pub fn name(self) -> &'static str {
        match self {
            Self::Prerouting => "prerouting",
            Self::Forward => "forward",
            Self::Output => "output",
            Self::Postrouting => "postrouting",
        }
    }

    /// `NF_INET_*`.
    pub fn number(self) -> u32 {
        let n = match self {
            Self::Prerouting => libc::NF_INET_PRE_ROUTING,
            Self::Forward => libc::NF_INET_FORWARD,
            Self::Output => libc::NF_INET_LOCAL_OUT,
            Self::Postrouting => libc::NF_INET_POST_ROUTING,
        };
        n as u32
    }
}

const LOOPBACK: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8);

/// Standard priorities, as nft names them.
const PRIORITY_DSTNAT: i32 = -100;
const PRIORITY_FILTER: i32 = 0;
const PRIORITY_SRCNAT: i32 = 100;

/// Equal or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
}

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// The input interface's name.
    Iifname(Cmp, String),
    /// The output interface's name.
    Oifname(Cmp, String),
    /// The source address lies in the subnet.
    Saddr(IpNet),
    /// The destination address.
    Daddr(Cmp, IpAddr),
    /// The transport protocol and destination port.
    Dport(Proto, u16),
    /// The connection was destination-NATed.
    CtStatusDnat,
    /// The destination address is one of this host's.
    FibDaddrLocal,
}

/// What a rule does to a matching packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Jump(&'static str),
    Drop,
    Masquerade,
    Dnat(SocketAddr),
}

/// Matches, all of which must hold, and the action then taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub action: Action,
}

fn rule(matches: Vec<Match>, action: Action) -> Rule {
    Rule { matches, action }
}

/// The tables for `state` in the order they are replaced: `ip6 <name>` (present only while a
/// network has IPv6), then `ip <name>` (present while any network exists).
pub fn tables(name: &str, state: &State) -> [Table; 2] {
    let has_ipv6 = state.networks.values().any(|n| n.ipv6().is_some());
    let build = |family: Family, present: bool| Table {
        family,
        name: name.to_owned(),
        chains: present.then(|| chains(family, state)),
    };
    [
        build(Family::Ip6, has_ipv6),
        build(Family::Ip, !state.networks.is_empty()),
    ]
}

fn chains(family: Family, state: &State) -> Vec<Chain> {
    let nat = |point, priority| {
        Some(Hook {
            kind: ChainKind::Nat,
            point,
            priority,
        })
    };
    // Locally originated traffic to ::1 is the proxy's: the kernel does not route ::1 off lo.
    let mut to_publish = vec![Match::FibDaddrLocal];
    if family == Family::Ip6 {
        to_publish.insert(
            0,
            Match::Daddr(Cmp::Ne, IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])),
        );
    }
    vec![
        Chain {
            name: "prerouting",
            hook: nat(HookPoint::Prerouting, PRIORITY_DSTNAT),
            rules: vec![rule(vec![Match::FibDaddrLocal], Action::Jump("publish"))],
        },
        Chain {
            name: "output",
            hook: nat(HookPoint::Output, PRIORITY_DSTNAT),
            rules: vec![rule(to_publish, Action::Jump("publish"))],
        },
        Chain {
            name: "publish",
            hook: None,
            rules: publish_rules(family, state),
        },
        Chain {
            name: "postrouting",
            hook: nat(HookPoint::Postrouting, PRIORITY_SRCNAT),
            rules: postrouting_rules(family, state),
        },
        Chain {
            name: "forward",
            hook: Some(Hook {
                kind: ChainKind::Filter,
                point: HookPoint::Forward,
                priority: PRIORITY_FILTER,
            }),
            rules: isolation_rules(state),
        },
    ]
}

/// One DNAT per published port of the family (see [`dnats`] for which ports have one).
fn publish_rules(family: Family, state: &State) -> Vec<Rule> {
    dnats(state, family == Family::Ip6)
        .into_iter()
        .map(|d| {
            let mut matches = Vec::new();
            if let Some(ip) = d.host_ip {
                matches.push(Match::Daddr(Cmp::Eq, ip));
            }
            matches.push(Match::Dport(d.proto, d.host_port));
            rule(matches, Action::Dnat(d.to()))
        })
        .collect()
}

/// Outbound NAT (not for internal networks), and masquerading of what reaches a published
/// port from loopback (IPv4) or from the network itself (hairpin), so replies come back here.
fn postrouting_rules(family: Family, state: &State) -> Vec<Rule> {
    let mut rules = Vec::new();
    for n in state.networks.values() {
        let pool = match family {
            Family::Ip => n.ipv4(),
            Family::Ip6 => n.ipv6(),
        };
        let Some(pool) = pool else { continue };
        let out_bridge = || Match::Oifname(Cmp::Eq, n.bridge.clone());
        if family == Family::Ip {
            rules.push(rule(
                vec![out_bridge(), Match::Saddr(IpNet::V4(LOOPBACK))],
                Action::Masquerade,
            ));
        }
        rules.push(rule(
            vec![out_bridge(), Match::Saddr(pool.subnet), Match::CtStatusDnat],
            Action::Masquerade,
        ));
        if !n.internal {
            rules.push(rule(
                vec![
                    Match::Saddr(pool.subnet),
                    Match::Oifname(Cmp::Ne, n.bridge.clone()),
                ],
                Action::Masquerade,
            ));
        }
    }
    rules
}

/// No forwarding between two Berth bridges; an internal network's traffic stays on its bridge.
fn isolation_rules(state: &State) -> Vec<Rule> {
    let mut rules = Vec::new();
    for n in state.networks.values() {
        let br = || n.bridge.clone();
        for other in state.networks.values().filter(|o| o.bridge != n.bridge) {
            rules.push(rule(
                vec![
                    Match::Iifname(Cmp::Eq, br()),
                    Match::Oifname(Cmp::Eq, other.bridge.clone()),
                ],
                Action::Drop,
            ));
        }
        if n.internal {
            rules.push(rule(
                vec![Match::Iifname(Cmp::Eq, br()), Match::Oifname(Cmp::Ne, br())],
                Action::Drop,
            ));
            rules.push(rule(
                vec![Match::Oifname(Cmp::Eq, br()), Match::Iifname(Cmp::Ne, br())],
                Action::Drop,
            ));
        }
    }
    rules
}

impl fmt::Display for Cmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Eq => Ok(()),
            Self::Ne => f.write_str("!= "),
        }
    }
}

fn family_of(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "ip"
    } else {
        "ip6"
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Iifname(op, name) => write!(f, "iifname {op}{name:?}"),
            Self::Oifname(op, name) => write!(f, "oifname {op}{name:?}"),
            Self::Saddr(net) => write!(f, "{} saddr {net}", family_of(net.addr())),
            Self::Daddr(op, ip) => write!(f, "{} daddr {op}{ip}", family_of(*ip)),
            Self::Dport(proto, port) => write!(f, "{proto} dport {port}"),
            Self::CtStatusDnat => f.write_str("ct status dnat"),
            Self::FibDaddrLocal => f.write_str("fib daddr type local"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Jump(chain) => write!(f, "jump {chain}"),
            Self::Drop => f.write_str("drop"),
            Self::Masquerade => f.write_str("masquerade"),
            Self::Dnat(to) => write!(f, "dnat to {to}"),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            write!(f, "{m} ")?;
        }
        write!(f, "{}", self.action)
    }
}

/// The table as `nft list table` would show it.
impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(chains) = &self.chains else {
            return writeln!(f, "# table {} {} absent", self.family.name(), self.name);
        };
        writeln!(f, "table {} {} {{", self.family.name(), self.name)?;
        for chain in chains {
            writeln!(f, "\tchain {} {{", chain.name)?;
            if let Some(h) = chain.hook {
                writeln!(
                    f,
                    "\t\ttype {} hook {} priority {}; policy accept;",
                    h.kind.name(),
                    h.point.name(),
                    h.priority
                )?;
            }
            for r in &chain.rules {
                writeln!(f, "\t\t{r}")?;
            }
            writeln!(f, "\t}}")?;
        }
        writeln!(f, "}}")
    }
}

/// A DNAT rule for one published port, in one address family.
struct Dnat {
    /// `None`: every local address of the family (but `::1`, see [`dnats`]).
    host_ip: Option<IpAddr>,
    host_port: u16,
    proto: Proto,
    target: IpAddr,
    container_port: u16,
}

impl Dnat {
    /// The container's address and port the traffic is translated to.
    fn to(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.target, self.container_port)
    }
}

/// The DNAT rules of one family: each binding on an address of that family (or on all), to the
/// container's address of the same family. IPv6 bindings of an endpoint without IPv6, and
/// bindings on `::1`, have none: nftables cannot translate families, and the kernel does not
/// route `::1` off the loopback device; the proxy serves those (see `crate::proxy`).
fn dnats(state: &State, v6: bool) -> Vec<Dnat> {
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
