//! The Host Networking Service's documents for the Linux VM's outbound
//! network on Windows: one NAT network shared by every machine
//! ([`NETWORK_NAME`], [`NAT_SUBNET`]), one endpoint per machine with a MAC
//! address derived from the machine's name, the queries that find them
//! again, and the guest's fixed address read back from HNS's replies.
//! Field names are HCN schema 2.0's (as in hcsshim's `hcn` package and
//! Microsoft's "HCN JSON document schemas"). HNS hands an endpoint its
//! address from the network's static IPAM but runs no DHCP server on a NAT
//! network, so the address reaches the guest on the kernel command line
//! ([`crate::protocol::CMDLINE_NET`]). Pure data, tested on Linux; the
//! calls are in `hns.rs`.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::hcs_doc::Version;
use crate::protocol::StaticNet;

/// The HNS network every Berth machine's endpoint joins.
pub const NETWORK_NAME: &str = "berth-nat";
/// The NAT network's subnet: in 172.16/12 like Docker's and WSL's, but
/// above the 172.17-172.2x range Docker and Docker Desktop take first.
pub const NAT_SUBNET: (Ipv4Addr, u8) = (Ipv4Addr::new(172, 29, 0, 0), 24);
/// The host's side of the NAT network (the guest's default route).
pub const NAT_GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 29, 0, 1);
/// First three octets of every machine's MAC: the locally administered bit
/// set, the group bit clear, then "be" (Berth).
pub const MAC_PREFIX: [u8; 3] = [0x02, 0x62, 0x65];

fn schema() -> Version {
    Version { major: 2, minor: 0 }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Network {
    pub name: String,
    #[serde(rename = "Type")]
    pub kind: String,
    pub ipams: Vec<Ipam>,
    pub mac_pool: MacPool,
    pub schema_version: Version,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    #[serde(rename = "Type")]
    pub kind: String,
    pub subnets: Vec<Subnet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Subnet {
    #[serde(default)]
    pub ip_address_prefix: String,
    #[serde(default)]
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Route {
    #[serde(default)]
    pub next_hop: String,
    #[serde(default)]
    pub destination_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MacPool {
    pub ranges: Vec<MacRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MacRange {
    pub start_mac_address: String,
    pub end_mac_address: String,
}

/// The NAT network: HNS's static IPAM over [`NAT_SUBNET`], the default
/// route through [`NAT_GATEWAY`], and a MAC pool that holds every
/// machine's [`mac_address`].
pub fn network() -> Network {
    let (net, prefix) = NAT_SUBNET;
    let [a, b, c] = MAC_PREFIX;
    Network {
        name: NETWORK_NAME.into(),
        kind: "NAT".into(),
        ipams: vec![Ipam {
            kind: "Static".into(),
            subnets: vec![Subnet {
                ip_address_prefix: format!("{net}/{prefix}"),
                routes: vec![Route {
                    next_hop: NAT_GATEWAY.to_string(),
                    destination_prefix: "0.0.0.0/0".into(),
                }],
            }],
        }],
        mac_pool: MacPool {
            ranges: vec![MacRange {
                start_mac_address: mac_text([a, b, c, 0, 0, 0]),
                end_mac_address: mac_text([a, b, c, 0xff, 0xff, 0xff]),
            }],
        },
        schema_version: schema(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Endpoint {
    pub name: String,
    /// The network's id.
    pub host_compute_network: String,
    pub mac_address: String,
    pub schema_version: Version,
}

/// The endpoint's name for `machine`: how a stale one is found again.
pub fn endpoint_name(machine: &str) -> String {
    format!("berth-{machine}")
}

/// `machine`'s endpoint on the network `network_id`; HNS picks its address.
pub fn endpoint(machine: &str, network_id: &str) -> Endpoint {
    Endpoint {
        name: endpoint_name(machine),
        host_compute_network: network_id.into(),
        mac_address: mac_text(mac_address(machine)),
        schema_version: schema(),
    }
}

/// `machine`'s MAC: [`MAC_PREFIX`] and 24 bits of an FNV-1a hash of the
/// name, so a machine keeps its MAC (and the guest its interface identity)
/// from one start to the next.
pub fn mac_address(machine: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in machine.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let [_, _, _, _, _, x, y, z] = h.to_be_bytes();
    let [a, b, c] = MAC_PREFIX;
    [a, b, c, x, y, z]
}

/// `02-62-65-0A-1B-2C`, the form HNS and HCS write MACs in.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join("-")
}

/// An HCN query (`HcnEnumerateNetworks`, `HcnEnumerateEndpoints`,
/// `Hcn*Properties`), filtered to objects named `name` when given.
pub fn query(name: Option<&str>) -> String {
    let mut q = serde_json::json!({
        "SchemaVersion": {"Major": 2, "Minor": 0},
        "Flags": 0,
    });
    if let Some(name) = name {
        q["Filter"] = serde_json::json!({ "Name": name }).to_string().into();
    }
    q.to_string()
}

/// The ids an `HcnEnumerate*` call returns (a JSON array of GUID strings).
pub fn parse_ids(json: &str) -> Result<Vec<String>, serde_json::Error> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(json)
}

/// What `HcnQueryNetworkProperties` returns (the fields Berth reads).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkProperties {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "Type", default)]
    pub kind: String,
    #[serde(default)]
    pub ipams: Vec<IpamProperties>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamProperties {
    #[serde(default)]
    pub subnets: Vec<Subnet>,
}

/// What `HcnQueryEndpointProperties` returns (the fields Berth reads).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointProperties {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(default)]
    pub ip_configurations: Vec<IpConfig>,
    #[serde(default)]
    pub dns: Dns,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub mac_address: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpConfig {
    #[serde(default)]
    pub ip_address: String,
    #[serde(default)]
    pub prefix_length: u8,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Dns {
    #[serde(default)]
    pub server_list: Vec<String>,
}

impl NetworkProperties {
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The default route's next hop in the network's IPAM, if it names one.
    fn gateway(&self) -> Option<Ipv4Addr> {
        self.ipams
            .iter()
            .flat_map(|i| &i.subnets)
            .flat_map(|s| &s.routes)
            .find(|r| r.destination_prefix == "0.0.0.0/0")
            .and_then(|r| r.next_hop.parse().ok())
    }
}

impl EndpointProperties {
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

/// Why the guest's address could not be read from HNS's replies.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GuestNetError {
    #[error("HNS gave the endpoint no IPv4 address ({0:?})")]
    NoAddress(Vec<IpConfig>),
    #[error("the network {0} names no gateway for the guest")]
    NoGateway(String),
}

/// eth0's configuration from the endpoint HNS made and its network: the
/// endpoint's IPv4 address; the endpoint's default route, else the
/// network's; as DNS the endpoint's servers, else `host_dns` (the host's
/// own resolvers, reached through the NAT like any address), else the
/// gateway. Loopback and link-local resolvers of the host are useless to
/// the guest and left out.
pub fn guest_net(
    endpoint: &EndpointProperties,
    network: &NetworkProperties,
    host_dns: &[Ipv4Addr],
) -> Result<StaticNet, GuestNetError> {
    let (address, prefix) = endpoint
        .ip_configurations
        .iter()
        .find_map(|c| {
            let ip: Ipv4Addr = c.ip_address.parse().ok()?;
            (1..=32)
                .contains(&c.prefix_length)
                .then_some((ip, c.prefix_length))
        })
        .ok_or_else(|| GuestNetError::NoAddress(endpoint.ip_configurations.clone()))?;
    let gateway = endpoint
        .routes
        .iter()
        .find(|r| r.destination_prefix == "0.0.0.0/0")
        .and_then(|r| r.next_hop.parse().ok())
        .or_else(|| network.gateway())
        .ok_or_else(|| GuestNetError::NoGateway(network.name.clone()))?;
    let usable = |ip: &Ipv4Addr| !ip.is_loopback() && !ip.is_link_local() && !ip.is_unspecified();
    let mut dns: Vec<Ipv4Addr> = endpoint
        .dns
        .server_list
        .iter()
        .filter_map(|s| s.parse().ok())
        .filter(usable)
        .collect();
    if dns.is_empty() {
        dns = host_dns.iter().copied().filter(usable).collect();
    }
    if dns.is_empty() {
        dns.push(gateway);
    }
    dns.dedup();
    dns.truncate(3);
    Ok(StaticNet {
        address,
        prefix,
        gateway,
        dns,
    })
}

/// What to do about an HNS call's failure, by HRESULT: the service is
/// missing, stopped or refuses an unelevated caller.
pub fn hint(hresult: i32) -> Option<&'static str> {
    // HRESULT_FROM_WIN32(code) as the i32 the calls return.
    let win32 = |code: u32| (0x8007_0000 | code) as i32;
    match hresult {
        h if h == win32(5) => Some(
            "the Host Networking Service needs an elevated prompt (Administrators or Hyper-V Administrators)",
        ),
        h if h == win32(1058) || h == win32(1060) || h == win32(1722) || h == win32(1062) => Some(
            "the Host Networking Service (hns) is not running or not installed: enable Hyper-V (or the Containers feature) and start it, or create the machine with --no-network",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_network_uses_the_schema_field_names() {
        let doc = serde_json::to_value(network()).expect("json");
        assert_eq!(
            doc,
            json!({
                "Name": "berth-nat",
                "Type": "NAT",
                "Ipams": [{"Type": "Static", "Subnets": [{
                    "IpAddressPrefix": "172.29.0.0/24",
                    "Routes": [{"NextHop": "172.29.0.1", "DestinationPrefix": "0.0.0.0/0"}]
                }]}],
                "MacPool": {"Ranges": [{
                    "StartMacAddress": "02-62-65-00-00-00",
                    "EndMacAddress": "02-62-65-FF-FF-FF"
                }]},
                "SchemaVersion": {"Major": 2, "Minor": 0}
            })
        );
    }

    #[test]
    fn endpoints_have_stable_local_macs_in_the_pool() {
        let doc = serde_json::to_value(endpoint("dev-1", "3f1a7c9e-0000-4000-8000-000000000001"))
            .expect("json");
        let mac = doc["MacAddress"].as_str().expect("mac").to_string();
        assert_eq!(
            doc,
            json!({
                "Name": "berth-dev-1",
                "HostComputeNetwork": "3f1a7c9e-0000-4000-8000-000000000001",
                "MacAddress": mac,
                "SchemaVersion": {"Major": 2, "Minor": 0}
            })
        );
        assert!(mac.starts_with("02-62-65-"), "{mac}");
        assert_eq!(mac.len(), 17);
        assert_eq!(mac_address("dev-1"), mac_address("dev-1"));
        assert_ne!(mac_address("dev-1"), mac_address("dev-2"));
        for name in ["default", "a", "dev-1", "x-y-z-0123456789"] {
            let m = mac_address(name);
            // Locally administered, unicast.
            assert_eq!(m[0] & 0b11, 0b10, "{name}: {m:02x?}");
            assert_eq!(&m[..3], &MAC_PREFIX);
        }
        assert_eq!(
            mac_text([2, 0x62, 0x65, 0, 0x0a, 0xff]),
            "02-62-65-00-0A-FF"
        );
    }

    #[test]
    fn queries_filter_by_name() {
        let q: serde_json::Value = serde_json::from_str(&query(Some("berth-nat"))).expect("json");
        assert_eq!(q["SchemaVersion"], json!({"Major": 2, "Minor": 0}));
        // The filter is itself a JSON document, as a string.
        let filter: serde_json::Value =
            serde_json::from_str(q["Filter"].as_str().expect("filter")).expect("filter json");
        assert_eq!(filter, json!({"Name": "berth-nat"}));
        let all: serde_json::Value = serde_json::from_str(&query(None)).expect("json");
        assert!(all.get("Filter").is_none());
        assert_eq!(
            parse_ids(r#"["3f1a7c9e-0000-4000-8000-000000000001"]"#).expect("ids"),
            vec!["3f1a7c9e-0000-4000-8000-000000000001".to_string()]
        );
        assert!(parse_ids("").expect("empty").is_empty());
        assert!(parse_ids("{").is_err());
    }

    fn replies() -> (EndpointProperties, NetworkProperties) {
        let endpoint = EndpointProperties::parse(
            r#"{"ID":"9e0c1d2e-0000-4000-8000-000000000002","Name":"berth-dev-1",
                "HostComputeNetwork":"3f1a7c9e-0000-4000-8000-000000000001",
                "IpConfigurations":[{"IpAddress":"172.29.0.5","PrefixLength":24}],
                "MacAddress":"02-62-65-12-34-56","Flags":0,
                "SchemaVersion":{"Major":2,"Minor":0}}"#,
        )
        .expect("endpoint");
        let network = NetworkProperties::parse(
            r#"{"ID":"3f1a7c9e-0000-4000-8000-000000000001","Name":"berth-nat","Type":"NAT",
                "Ipams":[{"Type":"Static","Subnets":[{"IpAddressPrefix":"172.29.0.0/24",
                "Routes":[{"NextHop":"172.29.0.1","DestinationPrefix":"0.0.0.0/0"}]}]}],
                "Flags":0,"SchemaVersion":{"Major":2,"Minor":0}}"#,
        )
        .expect("network");
        (endpoint, network)
    }

    #[test]
    fn the_guest_address_comes_from_the_endpoint_and_its_network() {
        let (endpoint, network) = replies();
        assert_eq!(endpoint.id, "9e0c1d2e-0000-4000-8000-000000000002");
        let host_dns = [
            "127.0.0.1".parse().expect("ip"),
            "192.168.1.1".parse().expect("ip"),
        ];
        let net = guest_net(&endpoint, &network, &host_dns).expect("net");
        assert_eq!(net.cmdline_value(), "172.29.0.5/24,172.29.0.1,192.168.1.1");

        // The endpoint's own route and DNS win; no DNS at all: the gateway.
        let mut e = endpoint.clone();
        e.routes = vec![Route {
            next_hop: "172.29.0.254".into(),
            destination_prefix: "0.0.0.0/0".into(),
        }];
        e.dns.server_list = vec!["10.9.9.9".into(), "fe80::1".into()];
        let net = guest_net(&e, &network, &host_dns).expect("net");
        assert_eq!(net.cmdline_value(), "172.29.0.5/24,172.29.0.254,10.9.9.9");
        let net = guest_net(&endpoint, &network, &[]).expect("net");
        assert_eq!(net.dns, vec![NAT_GATEWAY]);
    }

    #[test]
    fn replies_without_an_address_or_gateway_are_errors() {
        let (endpoint, network) = replies();
        let mut e = endpoint.clone();
        e.ip_configurations = vec![IpConfig {
            ip_address: "fd00::5".into(),
            prefix_length: 64,
        }];
        let err = guest_net(&e, &network, &[]).expect_err("no v4");
        assert!(err.to_string().contains("no IPv4 address"), "{err}");
        let mut n = network.clone();
        n.ipams.clear();
        let err = guest_net(&endpoint, &n, &[]).expect_err("no gateway");
        assert!(err.to_string().contains("berth-nat"), "{err}");
    }

    #[test]
    fn failures_name_the_fix() {
        let denied = 0x8007_0005_u32 as i32;
        assert!(hint(denied).expect("hint").contains("elevated"));
        let not_installed = 0x8007_0424_u32 as i32; // ERROR_SERVICE_DOES_NOT_EXIST
        assert!(hint(not_installed).expect("hint").contains("--no-network"));
        assert_eq!(hint(0x8000_4005_u32 as i32), None);
    }
}
