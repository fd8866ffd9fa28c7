//! Published ports: parsing `-p [ip:][hostport:]containerport[/tcp|/udp]` (with ranges), and
//! host-port reservations (a bound, non-listening socket held for the life of the mapping, so
//! nothing else can take the port and a conflict is detected by the bind itself).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;

use nix::sys::socket::{
    bind, getsockname, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType,
    SockaddrStorage,
};

use crate::error::{NetworkError, Result};
use crate::proxy::{Proxy, ProxyRuntime};

/// Transport protocol of a published port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One requested mapping before host ports are chosen. `host_port == 0` means "any free port"
/// (`-P`, or `-p 80`); `host_port_end > host_port` means "any free port in that range".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub host_port_end: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl PortMapping {
    /// A `-P` style mapping: container port published on a free ephemeral host port.
    pub fn any_host_port(container_port: u16, proto: Proto) -> Self {
        Self {
            host_ip: None,
            host_port: 0,
            host_port_end: 0,
            container_port,
            proto,
        }
    }
}

/// A mapping in force: what `docker port` shows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PortBinding {
    /// `0.0.0.0` when published on all host addresses.
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl fmt::Display for PortBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} -> {}:{}",
            self.container_port, self.proto, self.host_ip, self.host_port
        )
    }
}

fn parse_range(spec: &str, s: &str) -> Result<(u16, u16)> {
    let bad = |reason: &str| NetworkError::InvalidPortSpec {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a, b),
        None => (s, s),
    };
    let a: u16 = a.parse().map_err(|_| bad("port is not a number 1-65535"))?;
    let b: u16 = b.parse().map_err(|_| bad("port is not a number 1-65535"))?;
    if a == 0 || b < a {
        return Err(bad("invalid port or range"));
    }
    Ok((a, b))
}

/// Parses one `-p` value into mappings (a range of N container ports gives N mappings).
pub fn parse_port_spec(spec: &str) -> Result<Vec<PortMapping>> {
    let bad = |reason: &str| NetworkError::InvalidPortSpec {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, "tcp")) => (r, Proto::Tcp),
        Some((r, "udp")) => (r, Proto::Udp),
        Some(_) => return Err(bad("protocol must be tcp or udp")),
        None => (spec, Proto::Tcp),
    };
    // An IPv6 host address is written in brackets: [::1]:8080:80.
    let (host_ip, rest) = if let Some(stripped) = rest.strip_prefix('[') {
        let (ip, after) = stripped
            .split_once(']')
            .ok_or_else(|| bad("unterminated [ in IPv6 address"))?;
        let ip: Ipv6Addr = ip.parse().map_err(|_| bad("invalid IPv6 address"))?;
        let after = after
            .strip_prefix(':')
            .ok_or_else(|| bad("expected : after the host address"))?;
        (Some(IpAddr::V6(ip)), after)
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.len() {
            1 | 2 => (None, rest),
            3 => {
                let ip = if parts[0].is_empty() {
                    None
                } else {
                    Some(
                        parts[0]
                            .parse::<Ipv4Addr>()
                            .map_err(|_| bad("invalid host IP address"))?
                            .into(),
                    )
                };
                let idx = parts[0].len() + 1;
                (ip, &rest[idx..])
            }
            _ => return Err(bad("too many ':'")),
        }
    };
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (Some(h), c),
        None => (None, rest),
    };
    let (c_lo, c_hi) = parse_range(spec, container)?;
    let (h_lo, h_hi) = match host {
        Some(h) if !h.is_empty() => parse_range(spec, h)?,
        _ => (0, 0),
    };
    let count = c_hi - c_lo;
    let mut out = Vec::new();
    if h_lo == 0 {
        for c in c_lo..=c_hi {
            out.push(PortMapping {
                host_ip,
                host_port: 0,
                host_port_end: 0,
                container_port: c,
                proto,
            });
        }
    } else if h_hi - h_lo == count {
        for i in 0..=count {
            out.push(PortMapping {
                host_ip,
                host_port: h_lo + i,
                host_port_end: h_lo + i,
                container_port: c_lo + i,
                proto,
            });
        }
    } else if count == 0 {
        out.push(PortMapping {
            host_ip,
            host_port: h_lo,
            host_port_end: h_hi,
            container_port: c_lo,
            proto,
        });
    } else {
        return Err(bad("host and container port ranges differ in size"));
    }
    Ok(out)
}

/// A held host port: its socket stays bound (not listening) for the life of the mapping, or,
/// for an IPv6 binding, is served by a [`Proxy`] (see [`crate::proxy`]).
#[derive(Debug)]
pub struct Reservation {
    pub binding: PortBinding,
    held: Held,
}

#[derive(Debug)]
enum Held {
    Socket(OwnedFd),
    /// Held for its `Drop`, which closes the socket.
    Served {
        _proxy: Proxy,
    },
}

impl Reservation {
    /// Serves the held socket, relaying to `target` (the container's address and port).
    pub(crate) fn serve(self, rt: &ProxyRuntime, target: SocketAddr) -> Result<Self> {
        let Held::Socket(fd) = self.held else {
            return Ok(self);
        };
        let b = self.binding;
        let proxy = match b.proto {
            Proto::Tcp => Proxy::tcp(rt, fd, target),
            Proto::Udp => Proxy::udp(rt, fd, target),
        }
        .map_err(|source| NetworkError::Proxy {
            host: SocketAddr::new(b.host_ip, b.host_port),
            proto: b.proto.as_str(),
            source,
        })?;
        Ok(Self {
            binding: b,
            held: Held::Served { _proxy: proxy },
        })
    }
}

fn bind_port(ip: IpAddr, port: u16, proto: Proto) -> std::io::Result<(OwnedFd, u16)> {
    let family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let ty = match proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let fd = socket(family, ty, SockFlag::SOCK_CLOEXEC, None)?;
    // An IPv6 TCP port is served by the proxy, whose accepted connections linger in TIME_WAIT
    // after it closes them; without SO_REUSEADDR those would keep the port from being
    // published again for a minute after the container stops. It listens right away: a
    // listening socket conflicts with every other bind, SO_REUSEADDR or not.
    let listen = proto == Proto::Tcp && ip.is_ipv6();
    // Otherwise no SO_REUSEADDR: with it Linux lets two non-listening sockets share a port,
    // and the bind would no longer detect a conflict with another reservation.
    if listen {
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    if ip.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    let addr = SockaddrStorage::from(SocketAddr::new(ip, port));
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)?;
    if listen {
        nix::sys::socket::listen(&fd, nix::sys::socket::Backlog::MAXCONN)?;
    }
    let bound: SockaddrStorage = getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd))?;
    let port = bound
        .as_sockaddr_in()
        .map(|a| a.port())
        .or_else(|| bound.as_sockaddr_in6().map(|a| a.port()))
        .unwrap_or(port);
    Ok((fd, port))
}

/// Whether the calling thread's network namespace has IPv6, so that a binding on every address
/// includes `[::]` (as Docker's default bindings do); not with IPv6 disabled.
pub fn ipv6_available() -> bool {
    let disabled = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        .map_or(true, |v| v.trim() == "1");
    !disabled
        && socket(
            AddressFamily::Inet6,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .is_ok()
}

/// How many kernel-chosen ports are tried for a binding on both families before giving up.
const EPHEMERAL_TRIES: usize = 32;

/// The host addresses of a mapping: the one given, or every IPv4 and (when the host has IPv6)
/// every IPv6 address, at the same port, as Docker binds `0.0.0.0` and `::`.
fn host_ips(m: &PortMapping) -> Vec<IpAddr> {
    match m.host_ip {
        Some(ip) => vec![ip],
        None if ipv6_available() => {
            vec![Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()]
        }
        None => vec![Ipv4Addr::UNSPECIFIED.into()],
    }
}

fn held(ip: IpAddr, fd: OwnedFd, port: u16, m: &PortMapping) -> Reservation {
    Reservation {
        binding: PortBinding {
            host_ip: ip,
            host_port: port,
            container_port: m.container_port,
            proto: m.proto,
        },
        held: Held::Socket(fd),
    }
}

/// Binds every address of `ips` at `port` (0: a kernel-chosen port for the first, the same for
/// the rest); on failure, the address that failed and why (nothing stays bound).
fn bind_all(
    ips: &[IpAddr],
    port: u16,
    m: &PortMapping,
) -> std::result::Result<Vec<Reservation>, (IpAddr, std::io::Error)> {
    let mut out: Vec<Reservation> = Vec::new();
    for &ip in ips {
        let want = out.first().map_or(port, |r| r.binding.host_port);
        let (fd, got) = bind_port(ip, want, m.proto).map_err(|e| (ip, e))?;
        out.push(held(ip, fd, got, m));
    }
    Ok(out)
}

/// Reserves the host side of `m` in the calling thread's network namespace: the exact port, the
/// first port of its range free on every address, or (port 0) a kernel-chosen ephemeral port.
/// Without a host address that is one reservation per address family, at the same port.
pub fn reserve(m: &PortMapping) -> Result<Vec<Reservation>> {
    let ips = host_ips(m);
    let in_use = |ip: IpAddr, port: u16, source: std::io::Error| {
        if source.raw_os_error() == Some(libc::EADDRINUSE) {
            NetworkError::PortInUse {
                host_ip: ip,
                port,
                proto: m.proto.as_str(),
                source,
            }
        } else {
            // Not a conflict: e.g. an address that is not the host's (EADDRNOTAVAIL).
            NetworkError::PortUnavailable {
                host: SocketAddr::new(ip, port),
                proto: m.proto.as_str(),
                source,
            }
        }
    };
    let (lo, hi) = (m.host_port, m.host_port_end.max(m.host_port));
    if lo == 0 {
        // The kernel's choice for the first family may be taken in another: choose again.
        let mut last = None;
        for _ in 0..EPHEMERAL_TRIES {
            match bind_all(&ips, 0, m) {
                Ok(r) => return Ok(r),
                Err((ip, e)) if e.raw_os_error() == Some(libc::EADDRINUSE) && ip != ips[0] => {
                    last = Some((ip, e));
                }
                Err((ip, e)) => return Err(in_use(ip, 0, e)),
            }
        }
        let (ip, e) = last.unwrap_or_else(|| (ips[0], std::io::Error::other("no free port")));
        return Err(in_use(ip, 0, e));
    }
    let mut first_err = None;
    for port in lo..=hi {
        match bind_all(&ips, port, m) {
            Ok(r) => return Ok(r),
            Err((ip, e)) => {
                first_err.get_or_insert((ip, e));
            }
        }
    }
    let (ip, e) = first_err.unwrap_or_else(|| (ips[0], std::io::Error::other("empty port range")));
    Err(in_use(ip, lo, e))
}

/// Holds a binding recorded earlier again (after a daemon restart): its exact address and port.
pub fn reserve_binding(b: &PortBinding) -> Result<Reservation> {
    let m = PortMapping {
        host_ip: Some(b.host_ip),
        host_port: b.host_port,
        host_port_end: b.host_port,
        container_port: b.container_port,
        proto: b.proto,
    };
    let mut r = reserve(&m)?;
    r.pop().ok_or_else(|| NetworkError::PortInUse {
        host_ip: b.host_ip,
        port: b.host_port,
        proto: b.proto.as_str(),
        source: std::io::Error::other("nothing reserved"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let m = parse_port_spec("8080:80").expect("spec");
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].host_port, m[0].container_port), (8080, 80));
        assert_eq!(m[0].proto, Proto::Tcp);
        let m = parse_port_spec("127.0.0.1:5353:53/udp").expect("spec");
        assert_eq!(m[0].host_ip, Some("127.0.0.1".parse().expect("ip")));
        assert_eq!(m[0].proto, Proto::Udp);
        let m = parse_port_spec("9000-9002:7000-7002").expect("spec");
        assert_eq!(m.len(), 3);
        assert_eq!((m[2].host_port, m[2].container_port), (9002, 7002));
        let m = parse_port_spec("80").expect("spec");
        assert_eq!(m[0].host_port, 0);
        let m = parse_port_spec("[::1]:8080:80/tcp").expect("spec");
        assert_eq!(m[0].host_ip, Some("::1".parse().expect("ip")));
        let m = parse_port_spec("127.0.0.1::80").expect("spec");
        assert_eq!((m[0].host_port, m[0].container_port), (0, 80));
        let m = parse_port_spec("8000-8010:80").expect("spec");
        assert_eq!((m[0].host_port, m[0].host_port_end), (8000, 8010));
        for bad in [
            "", "x", "80/sctp", "1:2:3:4", "0", "90-80", "1-3:1-2", "a.b:1:2",
        ] {
            assert!(parse_port_spec(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn reserve_detects_conflict_on_loopback() {
        let m = PortMapping {
            host_ip: Some("127.0.0.1".parse().expect("ip")),
            ..PortMapping::any_host_port(80, Proto::Tcp)
        };
        let r = reserve(&m).expect("ephemeral").remove(0);
        assert_ne!(r.binding.host_port, 0);
        let again = PortMapping {
            host_port: r.binding.host_port,
            host_port_end: r.binding.host_port,
            ..m
        };
        assert!(matches!(
            reserve(&again),
            Err(NetworkError::PortInUse { .. })
        ));
    }
}
