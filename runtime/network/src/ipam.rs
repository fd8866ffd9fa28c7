//! Address management: subnet arithmetic, address allocation inside a pool, and the candidate
//! pools for networks created without an explicit subnet.
//!
//! Pure functions over `ipnet` types; the store keeps what is allocated (the endpoints), so
//! there is no second source of truth to drift.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::error::{NetworkError, Result};

/// One address pool of a network (one per address family).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IpamConfig {
    /// The subnet, e.g. `172.18.0.0/16`.
    pub subnet: IpNet,
    /// The gateway: the bridge's own address. Never handed to an endpoint.
    pub gateway: IpAddr,
    /// Dynamic allocations come only from here (must lie inside `subnet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<IpNet>,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(v: u128, v4: bool) -> IpAddr {
    if v4 {
        // Only called with values inside an IPv4 subnet, which fit in 32 bits.
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// First and last address an endpoint may have in `net`: IPv4 skips the network and broadcast
/// addresses (except /31 and /32), IPv6 skips the subnet-router anycast address.
pub fn host_bounds(net: &IpNet) -> (u128, u128) {
    let first = to_u128(net.network());
    let last = to_u128(net.broadcast());
    match net {
        IpNet::V4(n) if n.prefix_len() >= 31 => (first, last),
        IpNet::V4(_) => (first + 1, last - 1),
        IpNet::V6(n) if n.prefix_len() == 128 => (first, last),
        IpNet::V6(_) => (first + 1, last),
    }
}

/// Whether two subnets share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The default gateway of a subnet: its first host address.
pub fn default_gateway(subnet: &IpNet) -> IpAddr {
    from_u128(host_bounds(subnet).0, matches!(subnet, IpNet::V4(_)))
}

impl IpamConfig {
    /// Builds and checks a pool: the gateway and ip-range must lie inside the subnet.
    pub fn new(
        network: &str,
        subnet: IpNet,
        gateway: Option<IpAddr>,
        ip_range: Option<IpNet>,
    ) -> Result<Self> {
        let subnet = subnet.trunc();
        let invalid = |reason: String| NetworkError::InvalidConfig {
            network: network.to_string(),
            reason,
        };
        let (lo, hi) = host_bounds(&subnet);
        if lo > hi || (matches!(subnet, IpNet::V4(_)) && subnet.prefix_len() > 30) {
            return Err(invalid(format!("subnet {subnet} is too small")));
        }
        let gateway = gateway.unwrap_or_else(|| default_gateway(&subnet));
        if !subnet.contains(&gateway) || gateway.is_ipv4() != subnet.network().is_ipv4() {
            return Err(invalid(format!(
                "gateway {gateway} is not in subnet {subnet}"
            )));
        }
        let g = to_u128(gateway);
        if g < lo || g > hi {
            return Err(invalid(format!(
                "gateway {gateway} is the network or broadcast address of {subnet}"
            )));
        }
        if let Some(range) = ip_range {
            if !subnet.contains(&range) {
                return Err(invalid(format!(
                    "ip-range {range} is not inside subnet {subnet}"
                )));
            }
        }
        Ok(Self {
            subnet,
            gateway,
            ip_range: ip_range.map(|r| r.trunc()),
        })
    }

    /// Allocates an address: `requested` if given (must be in the subnet, not the gateway and not
    /// taken), otherwise the lowest free address of the ip-range (or of the subnet).
    pub fn allocate(
        &self,
        network: &str,
        used: &HashSet<IpAddr>,
        requested: Option<IpAddr>,
    ) -> Result<IpAddr> {
        let (lo, hi) = host_bounds(&self.subnet);
        if let Some(ip) = requested {
            let v = to_u128(ip);
            if !self.subnet.contains(&ip) || v < lo || v > hi {
                return Err(NetworkError::AddressOutOfRange {
                    network: network.to_string(),
                    address: ip,
                    subnet: self.subnet.to_string(),
                });
            }
            if ip == self.gateway || used.contains(&ip) {
                return Err(NetworkError::AddressInUse {
                    network: network.to_string(),
                    address: ip,
                });
            }
            return Ok(ip);
        }
        let (mut start, mut end) = (lo, hi);
        if let Some(range) = &self.ip_range {
            let (rlo, rhi) = (to_u128(range.network()), to_u128(range.broadcast()));
            start = start.max(rlo);
            end = end.min(rhi);
        }
        let v4 = matches!(self.subnet, IpNet::V4(_));
        let mut v = start;
        // Bounded by the number of used addresses + 2: every step past `start` skips a taken one.
        while v <= end {
            let ip = from_u128(v, v4);
            if ip != self.gateway && !used.contains(&ip) {
                return Ok(ip);
            }
            v += 1;
        }
        Err(NetworkError::PoolExhausted {
            network: network.to_string(),
            pool: self
                .ip_range
                .map_or_else(|| self.subnet.to_string(), |r| r.to_string()),
        })
    }
}

/// Candidate IPv4 subnets for networks created without `--subnet`, in order: 172.17-31.0.0/16,
/// then 192.168.{0,16,…,240}.0/20, then 10.{89..=127}.0.0/16 (Docker users expect the first two).
pub fn default_candidates() -> Vec<IpNet> {
    let mut out = Vec::new();
    for b in 17..=31u8 {
        out.push(v4net([172, b, 0, 0], 16));
    }
    for c in (0..=240u8).step_by(16) {
        out.push(v4net([192, 168, c, 0], 20));
    }
    for b in 89..=127u8 {
        out.push(v4net([10, b, 0, 0], 16));
    }
    out
}

fn v4net(octets: [u8; 4], prefix: u8) -> IpNet {
    // Prefix lengths used here are constants ≤ 32, so `new` cannot fail; fall back to /32.
    IpNet::V4(
        Ipv4Net::new(Ipv4Addr::from(octets), prefix)
            .unwrap_or_else(|_| Ipv4Net::from(Ipv4Addr::from(octets))),
    )
}

/// The first candidate that overlaps none of `taken`.
pub fn pick_free_subnet(taken: &[IpNet]) -> Option<IpNet> {
    default_candidates()
        .into_iter()
        .find(|c| !taken.iter().any(|t| overlaps(c, t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test subnet")
    }

    #[test]
    fn allocates_after_gateway_and_skips_broadcast() {
        let pool = IpamConfig::new("n", net("10.0.0.0/30"), None, None).expect("pool");
        assert_eq!(pool.gateway.to_string(), "10.0.0.1");
        let mut used = HashSet::new();
        let a = pool.allocate("n", &used, None).expect("first");
        assert_eq!(a.to_string(), "10.0.0.2");
        used.insert(a);
        let err = pool.allocate("n", &used, None).expect_err("exhausted");
        assert!(matches!(err, NetworkError::PoolExhausted { .. }), "{err}");
    }

    #[test]
    fn honours_ip_range_and_static() {
        let pool = IpamConfig::new(
            "n",
            net("172.20.0.0/16"),
            Some("172.20.0.254".parse().expect("ip")),
            Some(net("172.20.5.0/24")),
        )
        .expect("pool");
        let used = HashSet::new();
        assert_eq!(
            pool.allocate("n", &used, None).expect("ip").to_string(),
            "172.20.5.0"
        );
        let stat: IpAddr = "172.20.9.9".parse().expect("ip");
        assert_eq!(pool.allocate("n", &used, Some(stat)).expect("static"), stat);
        let gw = pool.gateway;
        assert!(matches!(
            pool.allocate("n", &used, Some(gw)),
            Err(NetworkError::AddressInUse { .. })
        ));
        let outside: IpAddr = "172.21.0.9".parse().expect("ip");
        assert!(matches!(
            pool.allocate("n", &used, Some(outside)),
            Err(NetworkError::AddressOutOfRange { .. })
        ));
        assert!(IpamConfig::new("n", net("10.0.0.0/24"), None, Some(net("10.0.1.0/24"))).is_err());
        assert!(IpamConfig::new(
            "n",
            net("10.0.0.0/24"),
            Some("10.0.0.255".parse().expect("ip")),
            None
        )
        .is_err());
    }

    #[test]
    fn ipv6_pool() {
        let pool = IpamConfig::new("n", net("fd00:b::/64"), None, None).expect("pool");
        assert_eq!(pool.gateway.to_string(), "fd00:b::1");
        let ip = pool.allocate("n", &HashSet::new(), None).expect("ip");
        assert_eq!(ip.to_string(), "fd00:b::2");
    }

    #[test]
    fn picks_first_free_candidate() {
        let taken = vec![net("172.17.5.0/24"), net("172.16.0.0/12")];
        assert_eq!(
            pick_free_subnet(&taken).expect("free").to_string(),
            "192.168.0.0/20"
        );
        assert_eq!(
            pick_free_subnet(&[]).expect("free").to_string(),
            "172.17.0.0/16"
        );
    }
}
