//! Persistent network state: one JSON document under the data root, replaced atomically
//! (write to a temporary file, fsync, rename over the old one).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::error::{NetworkError, Result};
use crate::ipam::IpamConfig;
use crate::ports::PortBinding;

/// A network, as `docker network inspect` would describe it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Network {
    /// 64 hex digits.
    pub id: String,
    pub name: String,
    /// Always `bridge` for now.
    pub driver: String,
    /// The Linux bridge device (`berth0` for the default network, `br-<id12>` otherwise).
    pub bridge: String,
    /// Address pools: one IPv4, plus one IPv6 when `enable_ipv6`.
    pub ipam: Vec<IpamConfig>,
    pub enable_ipv6: bool,
    /// No outbound NAT and no forwarding to or from anything but the network's own bridge.
    pub internal: bool,
    /// Whether the embedded DNS server serves this network (user-defined networks).
    pub dns: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// Attached containers, by container id.
    pub endpoints: BTreeMap<String, Endpoint>,
}

impl Network {
    /// A copy with an empty endpoint map.
    pub fn clone_without_endpoints(&self) -> Network {
        Network {
            id: self.id.clone(),
            name: self.name.clone(),
            driver: self.driver.clone(),
            bridge: self.bridge.clone(),
            ipam: self.ipam.clone(),
            enable_ipv6: self.enable_ipv6,
            internal: self.internal,
            dns: self.dns,
            labels: self.labels.clone(),
            options: self.options.clone(),
            created: self.created,
            endpoints: BTreeMap::new(),
        }
    }

    /// The IPv4 pool (every network has one).
    pub fn ipv4(&self) -> Option<&IpamConfig> {
        self.ipam.iter().find(|p| p.subnet.network().is_ipv4())
    }

    /// The IPv6 pool, when IPv6 is enabled.
    pub fn ipv6(&self) -> Option<&IpamConfig> {
        self.ipam.iter().find(|p| p.subnet.network().is_ipv6())
    }
}

/// A container's attachment to a network.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    /// 64 hex digits.
    pub id: String,
    pub network_id: String,
    pub container_id: String,
    /// The container's name, resolvable through the network's DNS.
    pub container_name: Option<String>,
    /// Further names resolvable on this network.
    pub aliases: Vec<String>,
    /// Addresses with the subnet prefix length (IPv4 first).
    pub addresses: Vec<IpNet>,
    /// Gateways, one per address family, in the order of `addresses`.
    pub gateways: Vec<IpAddr>,
    /// `02:42:…` style, lower-case hex with colons.
    pub mac: String,
    /// The veth end in the host (bridge) namespace.
    pub host_veth: String,
    /// The interface name inside the container.
    pub ifname: String,
    /// Published ports in force.
    #[serde(default)]
    pub ports: Vec<PortBinding>,
}

impl Endpoint {
    /// The endpoint's IPv4 address.
    pub fn ipv4(&self) -> Option<IpAddr> {
        self.addresses
            .iter()
            .map(|n| n.addr())
            .find(|a| a.is_ipv4())
    }

    /// The endpoint's IPv6 address, on a network with IPv6.
    pub fn ipv6(&self) -> Option<IpAddr> {
        self.addresses
            .iter()
            .map(|n| n.addr())
            .find(|a| a.is_ipv6())
    }
}

/// The whole persisted document.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub networks: BTreeMap<String, Network>,
}

/// Reads and atomically replaces `<root>/networks.json`.
#[derive(Debug, Clone)]
pub struct NetworkStore {
    path: PathBuf,
}

impl NetworkStore {
    /// A store under `data_root` (created if missing).
    pub fn open(data_root: &Path) -> Result<Self> {
        fs::create_dir_all(data_root).map_err(|source| NetworkError::Store {
            path: data_root.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: data_root.join("networks.json"),
        })
    }

    /// Path of the JSON document.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the state; a missing file is an empty state.
    pub fn load(&self) -> Result<State> {
        match fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| NetworkError::StoreCorrupt {
                    path: self.path.clone(),
                    source,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(NetworkError::Store {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Writes the state atomically: readers see the old or the new document, never a mix.
    pub fn save(&self, state: &State) -> Result<()> {
        self.save_with(state, true)
    }

    /// [`save`](Self::save), with the data synced to disk before the rename only if `durable`
    /// (the rename alone is atomic for readers, but not across a power loss).
    pub fn save_with(&self, state: &State, durable: bool) -> Result<()> {
        let err = |source| NetworkError::Store {
            path: self.path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| err(std::io::Error::other(e)))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        if durable {
            f.sync_data().map_err(err)?;
        }
        drop(f);
        fs::rename(&tmp, &self.path).map_err(err)
    }
}

/// 64 random hex digits (from the kernel's CSPRNG).
pub fn random_id() -> String {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `bytes`, which we own.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n <= 0 {
            // getrandom only fails with EINTR/EAGAIN here; fall back to time-derived bytes.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            for (i, b) in bytes[filled..].iter_mut().enumerate() {
                *b = (t >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
            }
            break;
        }
        filled += n as usize;
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NetworkStore::open(dir.path()).expect("open");
        assert_eq!(store.load().expect("empty"), State::default());
        let mut state = State::default();
        let subnet: IpNet = "10.9.0.0/24".parse().expect("net");
        state.networks.insert(
            "abc".into(),
            Network {
                id: "abc".into(),
                name: "n".into(),
                driver: "bridge".into(),
                bridge: "br-abc".into(),
                ipam: vec![IpamConfig::new("n", subnet, None, None).expect("pool")],
                enable_ipv6: false,
                internal: false,
                dns: true,
                labels: BTreeMap::new(),
                options: BTreeMap::new(),
                created: 1,
                endpoints: BTreeMap::new(),
            },
        );
        store.save(&state).expect("save");
        assert_eq!(store.load().expect("load"), state);
        assert!(!store.path().with_extension("json.tmp").exists());
        assert_eq!(random_id().len(), 64);
        assert_ne!(random_id(), random_id());
    }
}
