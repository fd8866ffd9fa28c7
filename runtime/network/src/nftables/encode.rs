//! [`rules`](super::rules) as nf_tables expressions: each match loads a packet or connection
//! property into register 1 and compares it; actions set the verdict or translate addresses.
//! The attribute numbers are those of `linux/netfilter/nf_tables.h`.

use std::net::IpAddr;

use super::rules::{Action, Cmp, Match, Rule};
use super::wire::Attrs;
use crate::ports::Proto;

// enum nft_list_attributes, nft_expr_attributes, nft_data_attributes, nft_verdict_attributes
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
// enum nft_immediate_attributes, nft_cmp_attributes, nft_meta_attributes
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
// enum nft_payload_attributes, nft_bitwise_attributes, nft_ct_attributes
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
// enum nft_fib_attributes (and its result and flag values), nft_nat_attributes
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFT_FIB_F_DADDR: u32 = 1 << 1;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;

/// `IFNAMSIZ`: interface names compare over the whole, NUL-padded, buffer.
const IFNAMSIZ: usize = 16;
/// `RTN_LOCAL`, the address type `fib` reports for the host's own addresses.
const RTN_LOCAL: u32 = 2;
/// `IPS_DST_NAT`, the conntrack status bit of destination-NATed connections.
const IPS_DST_NAT: u32 = 1 << 5;

const REG_VERDICT: u32 = libc::NFT_REG_VERDICT as u32;
/// The 16-byte register that every match loads into (an IPv6 address or a name fits).
const REG_1: u32 = libc::NFT_REG_1 as u32;
const REG_2: u32 = libc::NFT_REG_2 as u32;

/// A value nf_tables cannot express.
#[derive(Debug, thiserror::Error)]
#[error("interface name {0:?} is longer than {max} bytes", max = IFNAMSIZ - 1)]
pub struct NameTooLong(String);

/// The `NFTA_RULE_EXPRESSIONS` list of `rule`.
pub fn expressions(rule: &Rule) -> Result<Attrs, NameTooLong> {
    let mut list = Attrs::new();
    for m in &rule.matches {
        for e in match_exprs(m)? {
            list.nested(NFTA_LIST_ELEM, &e);
        }
    }
    for e in action_exprs(&rule.action) {
        list.nested(NFTA_LIST_ELEM, &e);
    }
    Ok(list)
}

/// One expression: its kind's name and (optionally) its data.
fn expr(name: &str, data: Option<Attrs>) -> Attrs {
    let mut e = Attrs::new();
    e.str(NFTA_EXPR_NAME, name);
    if let Some(data) = data {
        e.nested(NFTA_EXPR_DATA, &data);
    }
    e
}

fn value(bytes: &[u8]) -> Attrs {
    let mut v = Attrs::new();
    v.bytes(NFTA_DATA_VALUE, bytes);
    v
}

fn cmp(op: Cmp, bytes: &[u8]) -> Attrs {
    let op = match op {
        Cmp::Eq => libc::NFT_CMP_EQ,
        Cmp::Ne => libc::NFT_CMP_NEQ,
    };
    let mut data = Attrs::new();
    data.u32(NFTA_CMP_SREG, REG_1)
        .u32(NFTA_CMP_OP, op as u32)
        .nested(NFTA_CMP_DATA, &value(bytes));
    expr("cmp", Some(data))
}

fn meta(key: i32) -> Attrs {
    let mut data = Attrs::new();
    data.u32(NFTA_META_DREG, REG_1)
        .u32(NFTA_META_KEY, key as u32);
    expr("meta", Some(data))
}

fn payload(base: i32, offset: u32, len: u32) -> Attrs {
    let mut data = Attrs::new();
    data.u32(NFTA_PAYLOAD_DREG, REG_1)
        .u32(NFTA_PAYLOAD_BASE, base as u32)
        .u32(NFTA_PAYLOAD_OFFSET, offset)
        .u32(NFTA_PAYLOAD_LEN, len);
    expr("payload", Some(data))
}

/// Register 1 = register 1 & `mask`.
fn and(mask: &[u8]) -> Attrs {
    let mut data = Attrs::new();
    data.u32(NFTA_BITWISE_SREG, REG_1)
        .u32(NFTA_BITWISE_DREG, REG_1)
        .u32(NFTA_BITWISE_LEN, mask.len() as u32)
        .nested(NFTA_BITWISE_MASK, &value(mask))
        .nested(NFTA_BITWISE_XOR, &value(&vec![0; mask.len()]));
    expr("bitwise", Some(data))
}

fn ifname(name: &str) -> Result<[u8; IFNAMSIZ], NameTooLong> {
    let mut buf = [0u8; IFNAMSIZ];
    if name.len() >= IFNAMSIZ {
        return Err(NameTooLong(name.to_owned()));
    }
    buf[..name.len()].copy_from_slice(name.as_bytes());
    Ok(buf)
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Loads the source (`source`) or destination address of the packet's IP header.
fn load_address(v4: bool, source: bool) -> Attrs {
    let net = libc::NFT_PAYLOAD_NETWORK_HEADER;
    match (v4, source) {
        (true, true) => payload(net, 12, 4),
        (true, false) => payload(net, 16, 4),
        (false, true) => payload(net, 8, 16),
        (false, false) => payload(net, 24, 16),
    }
}

fn match_exprs(m: &Match) -> Result<Vec<Attrs>, NameTooLong> {
    Ok(match m {
        Match::Iifname(op, name) => vec![meta(libc::NFT_META_IIFNAME), cmp(*op, &ifname(name)?)],
        Match::Oifname(op, name) => vec![meta(libc::NFT_META_OIFNAME), cmp(*op, &ifname(name)?)],
        Match::Saddr(net) => {
            let mut exprs = vec![load_address(net.addr().is_ipv4(), true)];
            if net.prefix_len() < net.max_prefix_len() {
                exprs.push(and(&ip_bytes(net.netmask())));
            }
            exprs.push(cmp(Cmp::Eq, &ip_bytes(net.network())));
            exprs
        }
        Match::Daddr(op, ip) => vec![load_address(ip.is_ipv4(), false), cmp(*op, &ip_bytes(*ip))],
        Match::Dport(proto, port) => {
            let number = match proto {
                Proto::Tcp => libc::IPPROTO_TCP,
                Proto::Udp => libc::IPPROTO_UDP,
            };
            vec![
                meta(libc::NFT_META_L4PROTO),
                cmp(Cmp::Eq, &[number as u8]),
                payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2),
                cmp(Cmp::Eq, &port.to_be_bytes()),
            ]
        }
        Match::CtStatusDnat => {
            let mut data = Attrs::new();
            data.u32(NFTA_CT_DREG, REG_1)
                .u32(NFTA_CT_KEY, libc::NFT_CT_STATUS as u32);
            // The status word is in host byte order in the register.
            vec![
                expr("ct", Some(data)),
                and(&IPS_DST_NAT.to_ne_bytes()),
                cmp(Cmp::Ne, &[0; 4]),
            ]
        }
        Match::FibDaddrLocal => {
            let mut data = Attrs::new();
            data.u32(NFTA_FIB_DREG, REG_1)
                .u32(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE)
                .u32(NFTA_FIB_FLAGS, NFT_FIB_F_DADDR);
            vec![
                expr("fib", Some(data)),
                cmp(Cmp::Eq, &RTN_LOCAL.to_ne_bytes()),
            ]
        }
    })
}

/// Sets the verdict register to `code` (jumping to `chain` for `NFT_JUMP`).
fn verdict(code: i32, chain: Option<&str>) -> Attrs {
    let mut v = Attrs::new();
    v.u32(NFTA_VERDICT_CODE, code as u32);
    if let Some(chain) = chain {
        v.str(NFTA_VERDICT_CHAIN, chain);
    }
    let mut d = Attrs::new();
    d.nested(NFTA_DATA_VERDICT, &v);
    let mut data = Attrs::new();
    data.u32(NFTA_IMMEDIATE_DREG, REG_VERDICT)
        .nested(NFTA_IMMEDIATE_DATA, &d);
    expr("immediate", Some(data))
}

fn immediate(reg: u32, bytes: &[u8]) -> Attrs {
    let mut data = Attrs::new();
    data.u32(NFTA_IMMEDIATE_DREG, reg)
        .nested(NFTA_IMMEDIATE_DATA, &value(bytes));
    expr("immediate", Some(data))
}

fn action_exprs(action: &Action) -> Vec<Attrs> {
    match action {
        Action::Jump(chain) => vec![verdict(libc::NFT_JUMP, Some(chain))],
        Action::Drop => vec![verdict(libc::NF_DROP, None)],
        Action::Masquerade => vec![expr("masq", None)],
        Action::Dnat(to) => {
            let family = if to.is_ipv4() {
                libc::NFPROTO_IPV4
            } else {
                libc::NFPROTO_IPV6
            };
            let mut nat = Attrs::new();
            nat.u32(NFTA_NAT_TYPE, libc::NFT_NAT_DNAT as u32)
                .u32(NFTA_NAT_FAMILY, family as u32)
                .u32(NFTA_NAT_REG_ADDR_MIN, REG_1)
                .u32(NFTA_NAT_REG_PROTO_MIN, REG_2);
            vec![
                immediate(REG_1, &ip_bytes(to.ip())),
                immediate(REG_2, &to.port().to_be_bytes()),
                expr("nat", Some(nat)),
            ]
        }
    }
}
