//! The crate's error type: every variant names the network, address, port or interface involved.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Errors from network management.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network {0:?} not found")]
    NotFound(String),
    #[error("network name {0:?} is ambiguous: it matches more than one network id")]
    Ambiguous(String),
    #[error("network with name {0:?} already exists")]
    NameInUse(String),
    #[error("invalid network name {0:?}: use 1-64 characters from [a-zA-Z0-9_.-], starting alphanumeric")]
    InvalidName(String),
    #[error(
        "network {network:?}: subnet {subnet} overlaps subnet {other_subnet} of network {other:?}"
    )]
    SubnetOverlap {
        network: String,
        subnet: String,
        other: String,
        other_subnet: String,
    },
    #[error("network {network:?}: invalid configuration: {reason}")]
    InvalidConfig { network: String, reason: String },
    #[error("no free subnet for network {0:?}: every candidate collides with a route, an address or another network")]
    NoFreeSubnet(String),
    #[error("network {network:?} has active endpoints ({containers}); disconnect them first")]
    InUse { network: String, containers: String },
    #[error("network {0:?} is a predefined network and cannot be removed")]
    Predefined(String),
    #[error("network {network:?}: address pool {pool} is exhausted")]
    PoolExhausted { network: String, pool: String },
    #[error("network {network:?}: address {address} is not in subnet {subnet} or ip-range")]
    AddressOutOfRange {
        network: String,
        address: IpAddr,
        subnet: String,
    },
    #[error("network {network:?}: address {address} is already in use")]
    AddressInUse { network: String, address: IpAddr },
    #[error("container {container:?} is already attached to network {network:?}")]
    AlreadyAttached { network: String, container: String },
    #[error("container {container:?} is not attached to network {network:?}")]
    NotAttached { network: String, container: String },
    #[error("invalid port specification {spec:?}: {reason}")]
    InvalidPortSpec { spec: String, reason: String },
    #[error("host port {}/{proto} is already in use: {source}", SocketAddr::new(*host_ip, *port))]
    PortInUse {
        host_ip: IpAddr,
        port: u16,
        proto: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot bind host port {host}/{proto}: {source}")]
    PortUnavailable {
        host: SocketAddr,
        proto: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot serve host port {host}/{proto}: {source}")]
    Proxy {
        host: SocketAddr,
        proto: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("netlink {op} on interface {interface:?} failed: {source}")]
    Netlink {
        op: &'static str,
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("network namespace {path:?}: {source}")]
    Netns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("firewall ({backend}) update failed: {detail}")]
    Firewall {
        backend: &'static str,
        detail: String,
    },
    #[error("no firewall backend: the kernel answers no nf_tables request and `iptables` could not be run")]
    NoFirewall,
    #[error("sysctl {path}: {source}")]
    Sysctl {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("network store {path:?}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("network store {path:?} is corrupt: {source}")]
    StoreCorrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("DNS server for network {network:?} on {address}: {source}")]
    Dns {
        network: String,
        address: String,
        #[source]
        source: io::Error,
    },
}

/// Result alias for this crate.
pub type Result<T, E = NetworkError> = std::result::Result<T, E>;
