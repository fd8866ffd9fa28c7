//! The embedded DNS server: one UDP server per user-defined network, bound to the network's
//! gateway address port 53 in the host namespace. It answers A/AAAA for container names and
//! aliases on that network and forwards every other query to upstream resolvers.
//!
//! Wire format per RFC 1035 §4 (header, question, resource records; name compression pointer
//! `0xC00C` to the question name in answers).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{NetworkError, Result};

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const TTL: u32 = 600;
const RCODE_SERVFAIL: u8 = 2;
const RCODE_NXDOMAIN: u8 = 3;

/// Names (lower-case, no trailing dot) to addresses.
pub type Records = HashMap<String, Vec<IpAddr>>;

/// A running DNS server; dropping it stops the server thread.
pub struct DnsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    records: Arc<RwLock<Records>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addr", &self.addr)
            .finish()
    }
}

/// The upstream resolvers listed in a resolv.conf text (port 53).
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            match (it.next(), it.next()) {
                (Some("nameserver"), Some(ip)) => ip.parse::<IpAddr>().ok(),
                _ => None,
            }
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

impl DnsServer {
    /// Binds `addr` (in the calling thread's network namespace) and serves on a new thread.
    pub fn start(network: &str, addr: SocketAddr, upstreams: Vec<SocketAddr>) -> Result<Self> {
        let err = |source| NetworkError::Dns {
            network: network.to_string(),
            address: addr.to_string(),
            source,
        };
        let socket = UdpSocket::bind(addr).map_err(err)?;
        let addr = socket.local_addr().unwrap_or(addr);
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(RwLock::new(Records::new()));
        let (stop2, records2) = (stop.clone(), records.clone());
        let upstreams = Arc::new(upstreams);
        let thread = std::thread::Builder::new()
            .name(format!("berth-dns-{network}"))
            .spawn(move || serve(socket, stop2, records2, upstreams))
            .map_err(err)?;
        Ok(Self {
            addr,
            stop,
            records,
            thread: Some(thread),
        })
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the name table.
    pub fn set_records(&self, records: Records) {
        let mut guard = self.records.write().unwrap_or_else(|p| p.into_inner());
        *guard = records;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking recv with an empty datagram to our own address.
        let wake = if self.addr.is_ipv4() {
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        } else {
            UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 0))
        };
        if let Ok(s) = wake {
            let _ = s.send_to(&[], self.addr);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    socket: UdpSocket,
    stop: Arc<AtomicBool>,
    records: Arc<RwLock<Records>>,
    upstreams: Arc<Vec<SocketAddr>>,
) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let query = &buf[..n];
        let Some(q) = parse_query(query) else {
            continue;
        };
        let answer = {
            let table = records.read().unwrap_or_else(|p| p.into_inner());
            table.get(&q.name).map(|addrs| {
                addrs
                    .iter()
                    .copied()
                    .filter(|a| match q.qtype {
                        TYPE_A => a.is_ipv4(),
                        TYPE_AAAA => a.is_ipv6(),
                        _ => false,
                    })
                    .collect::<Vec<_>>()
            })
        };
        match answer {
            Some(addrs) => {
                let _ = socket.send_to(&build_answer(query, &q, &addrs), peer);
            }
            None if !q.name.contains('.') || upstreams.is_empty() => {
                let code = if upstreams.is_empty() {
                    RCODE_SERVFAIL
                } else {
                    RCODE_NXDOMAIN
                };
                let _ = socket.send_to(&build_error(query, &q, code), peer);
            }
            None => {
                let (Ok(reply_socket), packet) = (socket.try_clone(), query.to_vec()) else {
                    continue;
                };
                let ups = upstreams.clone();
                let _ = std::thread::Builder::new()
                    .name("berth-dns-fwd".into())
                    .spawn(move || forward(reply_socket, peer, packet, &ups));
            }
        }
    }
}

/// Relays `packet` to the first upstream that answers within 2 s each; SERVFAIL otherwise.
fn forward(reply: UdpSocket, peer: SocketAddr, packet: Vec<u8>, upstreams: &[SocketAddr]) {
    let mut buf = [0u8; 4096];
    for up in upstreams {
        let local: SocketAddr = if up.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(s) = UdpSocket::bind(local) else {
            continue;
        };
        if s.set_read_timeout(Some(Duration::from_secs(2))).is_err()
            || s.connect(up).is_err()
            || s.send(&packet).is_err()
        {
            continue;
        }
        if let Ok(n) = s.recv(&mut buf) {
            if n >= 2 && buf[..2] == packet[..2] {
                let _ = reply.send_to(&buf[..n], peer);
                return;
            }
        }
    }
    if let Some(q) = parse_query(&packet) {
        let _ = reply.send_to(&build_error(&packet, &q, RCODE_SERVFAIL), peer);
    }
}

struct Query {
    name: String,
    qtype: u16,
    /// Offset just past the question section.
    end: usize,
}

fn parse_query(p: &[u8]) -> Option<Query> {
    if p.len() < 12 || p[2] & 0x80 != 0 || (p[2] >> 3) & 0x0f != 0 {
        return None; // too short, a response, or not a standard query
    }
    if u16::from_be_bytes([p[4], p[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *p.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None; // no compression in a question we accept
        }
        let label = p.get(i..i + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]);
    let qclass = u16::from_be_bytes([*p.get(i + 2)?, *p.get(i + 3)?]);
    if qclass != CLASS_IN {
        return None;
    }
    Some(Query {
        name: labels.join("."),
        qtype,
        end: i + 4,
    })
}

fn header(query: &[u8], rcode: u8, ancount: u16) -> Vec<u8> {
    let rd = query[2] & 0x01;
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[..2]);
    out.push(0x84 | rd); // QR=1, AA=1, RD copied
    out.push(0x80 | rcode); // RA=1
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&ancount.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

fn build_error(query: &[u8], q: &Query, rcode: u8) -> Vec<u8> {
    let mut out = header(query, rcode, 0);
    out.extend_from_slice(&query[12..q.end]);
    out
}

fn build_answer(query: &[u8], q: &Query, addrs: &[IpAddr]) -> Vec<u8> {
    let count = addrs.len().min(32) as u16;
    let mut out = header(query, 0, count);
    out.extend_from_slice(&query[12..q.end]);
    for a in addrs.iter().take(count as usize) {
        out.extend_from_slice(&[0xc0, 0x0c]);
        let (ty, data) = match a {
            IpAddr::V4(v4) => (TYPE_A, v4.octets().to_vec()),
            IpAddr::V6(v6) => (TYPE_AAAA, v6.octets().to_vec()),
        };
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    out
}

/// A minimal A/AAAA query packet (used by tests and health checks).
pub fn build_query(id: u16, name: &str, qtype_aaaa: bool) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        let bytes = label.as_bytes();
        out.push(bytes.len().min(63) as u8);
        out.extend_from_slice(&bytes[..bytes.len().min(63)]);
    }
    out.push(0);
    let ty = if qtype_aaaa { TYPE_AAAA } else { TYPE_A };
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out
}

/// The addresses in a response (A and AAAA answers) and its rcode.
pub fn parse_response(p: &[u8]) -> Option<(u8, Vec<IpAddr>)> {
    let q = {
        // Reuse the question parser on a copy with QR cleared.
        let mut c = p.to_vec();
        *c.get_mut(2)? &= 0x7f;
        parse_query(&c)?
    };
    let rcode = p[3] & 0x0f;
    let ancount = u16::from_be_bytes([p[6], p[7]]);
    let mut i = q.end;
    let mut out = Vec::new();
    for _ in 0..ancount {
        // Name: a pointer (2 bytes) or labels.
        if *p.get(i)? & 0xc0 == 0xc0 {
            i += 2;
        } else {
            while *p.get(i)? != 0 {
                i += *p.get(i)? as usize + 1;
            }
            i += 1;
        }
        let ty = u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]);
        let len = u16::from_be_bytes([*p.get(i + 8)?, *p.get(i + 9)?]) as usize;
        let data = p.get(i + 10..i + 10 + len)?;
        match (ty, len) {
            (TYPE_A, 4) => out.push(IpAddr::from(<[u8; 4]>::try_from(data).ok()?)),
            (TYPE_AAAA, 16) => out.push(IpAddr::from(<[u8; 16]>::try_from(data).ok()?)),
            _ => {}
        }
        i += 10 + len;
    }
    Some((rcode, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_known_names_on_loopback() {
        let server =
            DnsServer::start("t", "127.0.0.1:0".parse().expect("addr"), vec![]).expect("start");
        let mut records = Records::new();
        records.insert("web".into(), vec!["10.1.2.3".parse().expect("ip")]);
        server.set_records(records);
        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = [0u8; 512];
        client
            .send_to(&build_query(1, "WEB", false), server.addr())
            .expect("send");
        let n = client.recv(&mut buf).expect("answer");
        let (rcode, addrs) = parse_response(&buf[..n]).expect("parse");
        assert_eq!((rcode, addrs.len()), (0, 1));
        client
            .send_to(&build_query(2, "nothere.example", false), server.addr())
            .expect("send");
        let n = client.recv(&mut buf).expect("answer");
        assert_eq!(parse_response(&buf[..n]).expect("parse").0, RCODE_SERVFAIL);
        drop(server);
    }

    #[test]
    fn encode_decode_round_trip() {
        let q = build_query(7, "Web.Example", false);
        let parsed = parse_query(&q).expect("parse");
        assert_eq!(parsed.name, "web.example");
        let a = build_answer(&q, &parsed, &["10.0.0.5".parse().expect("ip")]);
        let (rcode, addrs) = parse_response(&a).expect("response");
        assert_eq!(rcode, 0);
        assert_eq!(addrs, vec!["10.0.0.5".parse::<IpAddr>().expect("ip")]);
        let e = build_error(&q, &parsed, RCODE_NXDOMAIN);
        assert_eq!(parse_response(&e).expect("nx").0, RCODE_NXDOMAIN);
        let ups = upstreams_from_resolv_conf("# c\nnameserver 1.2.3.4\nsearch x\nnameserver ::1\n");
        assert_eq!(ups.len(), 2);
    }
}
