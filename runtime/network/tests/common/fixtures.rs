//! Network states built by hand, for tests of what is derived from them.

use std::collections::BTreeMap;

use berth_network::{Endpoint, IpamConfig, Network, PortBinding, Proto, State};

/// Network `name` on bridge `br-<name>` with the given subnets (IPv6 enabled when one is).
pub fn network(name: &str, subnets: &[&str], internal: bool) -> Network {
    Network {
        id: format!("{name}-id"),
        name: name.into(),
        driver: "bridge".into(),
        bridge: format!("br-{name}"),
        ipam: subnets
            .iter()
            .map(|s| IpamConfig::new(name, s.parse().expect("subnet"), None, None))
            .collect::<Result<_, _>>()
            .expect("ipam"),
        enable_ipv6: subnets.iter().any(|s| s.contains(':')),
        internal,
        dns: true,
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
        created: 0,
        endpoints: BTreeMap::new(),
    }
}

/// Container `id`'s endpoint with `addrs` and published ports `(host ip, host port,
/// container port, protocol)`.
pub fn endpoint(id: &str, addrs: &[&str], ports: &[(&str, u16, u16, Proto)]) -> Endpoint {
    Endpoint {
        id: format!("{id}-ep"),
        network_id: String::new(),
        container_id: id.into(),
        container_name: None,
        aliases: Vec::new(),
        addresses: addrs.iter().map(|a| a.parse().expect("addr")).collect(),
        gateways: Vec::new(),
        mac: String::new(),
        host_veth: format!("vb{id}"),
        ifname: "eth0".into(),
        ports: ports
            .iter()
            .map(|(ip, h, c, proto)| PortBinding {
                host_ip: ip.parse().expect("ip"),
                host_port: *h,
                container_port: *c,
                proto: *proto,
            })
            .collect(),
    }
}

pub fn state(nets: Vec<Network>) -> State {
    State {
        networks: nets.into_iter().map(|n| (n.id.clone(), n)).collect(),
    }
}
