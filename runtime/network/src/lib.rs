//! `berth-network`: bridge networks for Berth containers (Linux).
//!
//! - [`NetworkManager`]: networks (create/list/inspect/remove/prune, a default `bridge` network
//!   on `berth0` whose subnet avoids the namespace's routes), endpoints ([`NetworkManager::attach`]
//!   / [`NetworkManager::detach`]: veth pairs made over netlink), published ports
//!   ([`NetworkManager::publish`]) and an embedded DNS server per user-defined network.
//! - [`NetworkStore`]: the persisted JSON state, written atomically.
//! - [`firewall`]: outbound NAT, isolation and DNAT, as one atomically replaced nftables table
//!   (`table ip berth`, and `table ip6 berth` with IPv6 networks) programmed over netlink
//!   ([`nftables`]) or, on kernels without nf_tables, `BERTH-*` iptables chains.
//! - `proxy`: the IPv6 side of published ports where DNAT cannot take it (`[::1]`, containers
//!   without IPv6), relayed in userland.
//! - [`files`]: a container's `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`.
//!
//! Everything runs in the network namespace of the calling thread, which is the "host" side.
//! Container namespaces are reached by path (`/proc/<pid>/ns/net`), through netlink sockets
//! opened on a short-lived thread that joined the namespace.

pub mod dns;
pub mod error;
pub mod files;
pub mod firewall;
pub mod ipam;
mod manager;
pub mod netlink;
pub mod netns;
pub mod nftables;
pub mod ports;
mod proxy;
pub mod store;

pub use error::{NetworkError, Result};
pub use firewall::FirewallBackend;
pub use ipam::IpamConfig;
pub use manager::{
    AttachRequest, CreateOptions, ManagerConfig, NetworkManager, SubnetRequest, OPT_BRIDGE_NAME,
    OPT_MTU,
};
pub use ports::{parse_port_spec, PortBinding, PortMapping, Proto};
pub use store::{Endpoint, Network, NetworkStore, State};
