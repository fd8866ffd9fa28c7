//! A machine's settings (`machine.json`, written by `berth machine init`)
//! and the files of its directory: data disk, console log, sockets, and the
//! status the supervisor keeps up to date.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::protocol::ShareFs;

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("invalid machine name {0:?}: use letters, digits, '-' and '_' (at most 32)")]
    BadName(String),
    #[error("invalid setting: {0}")]
    BadSetting(String),
    #[error("machine {0:?} does not exist; create it with `berth machine init`")]
    NotFound(String),
    #[error("machine {0:?} already exists")]
    Exists(String),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid machine file")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

type Result<T, E = MachineError> = std::result::Result<T, E>;

/// Which accelerator QEMU uses. `Auto` means TCG unless `/dev/kvm` was
/// explicitly chosen: a nested `/dev/kvm` may exist yet fail to boot a stock
/// kernel, and a hung boot is worse than a slow one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// The guest's CPU architecture. It is the host's wherever the VM runs on a hypervisor
/// (Apple silicon: aarch64); QEMU can also emulate the other one, which is how the arm64
/// guest is tested on x86_64 hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestArch {
    X86_64,
    Aarch64,
}

impl GuestArch {
    pub fn host() -> Self {
        if cfg!(target_arch = "aarch64") {
            Self::Aarch64
        } else {
            Self::X86_64
        }
    }

    /// Accepts the Rust/kernel name and Debian's (`aarch64`/`arm64`, `x86_64`/`amd64`).
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "x86_64" | "amd64" => Ok(Self::X86_64),
            "aarch64" | "arm64" => Ok(Self::Aarch64),
            other => Err(MachineError::BadSetting(format!(
                "unknown architecture {other:?} (x86_64 or aarch64)"
            ))),
        }
    }

    /// The name Debian's packages use.
    pub fn debian(self) -> &'static str {
        match self {
            Self::X86_64 => "amd64",
            Self::Aarch64 => "arm64",
        }
    }

    /// The Rust target the static agent is built for.
    pub fn rust_target(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-unknown-linux-gnu",
            Self::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// The kernel's first serial console.
    pub fn serial_console(self) -> &'static str {
        match self {
            Self::X86_64 => "ttyS0",
            Self::Aarch64 => "ttyAMA0",
        }
    }
}

impl Default for GuestArch {
    fn default() -> Self {
        Self::host()
    }
}

/// A host directory shared into the VM at the same path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub host: PathBuf,
    /// The mount point in the guest (the host path by default, so that
    /// `-v /host/path:/c` means the same thing on both sides).
    pub guest: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfig {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    /// The guest's vsock context id (3 and up; unique among running VMs).
    pub cid: u32,
    #[serde(default)]
    pub accel: Accel,
    /// Machines made before the architecture was recorded are the host's.
    #[serde(default)]
    pub arch: GuestArch,
    #[serde(default)]
    pub shares: Vec<Share>,
    /// Boot artefacts to use instead of the built guest image.
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Extra QEMU user-network `hostfwd` rules (`tcp::HOST-:GUEST`), for
    /// comparing against vsock forwarding; user networking is always
    /// `restrict=on` when this is set, and absent otherwise.
    #[serde(default)]
    pub hostfwd: Vec<String>,
    /// Ports of the host's loopback that the guest reaches on its own
    /// 127.0.0.1 (a registry on the host, say). Nothing else on the host is
    /// reachable from the guest.
    #[serde(default)]
    pub host_ports: Vec<u16>,
    /// Outbound network for the guest (pulls from public registries,
    /// containers' own traffic), through the host's NAT; never the host's
    /// loopback.
    #[serde(default = "outbound_by_default")]
    pub outbound_network: bool,
    /// The share transport; `None` is the backend's best (virtiofs where it
    /// can). 9p is for comparisons and hosts without virtiofsd.
    #[serde(default)]
    pub share_fs: Option<ShareFs>,
}

fn outbound_by_default() -> bool {
    true
}

impl MachineConfig {
    pub fn new(name: &str) -> Result<Self> {
        validate_name(name)?;
        Ok(Self {
            name: name.to_string(),
            cpus: 2,
            memory_mib: 2048,
            disk_gib: 20,
            cid: 3,
            accel: Accel::Auto,
            arch: GuestArch::host(),
            shares: Vec::new(),
            kernel: None,
            initrd: None,
            hostfwd: Vec::new(),
            host_ports: Vec::new(),
            outbound_network: true,
            share_fs: None,
        })
    }

    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        let bad = |m: String| Err(MachineError::BadSetting(m));
        if !(1..=64).contains(&self.cpus) {
            return bad(format!("cpus must be 1..64, not {}", self.cpus));
        }
        if !(256..=1 << 20).contains(&self.memory_mib) {
            return bad(format!(
                "memory must be 256 MiB..1 TiB, not {} MiB",
                self.memory_mib
            ));
        }
        if !(1..=16384).contains(&self.disk_gib) {
            return bad(format!("disk must be 1..16384 GiB, not {}", self.disk_gib));
        }
        if self.cid < 3 {
            return bad(format!("cid must be 3 or more, not {}", self.cid));
        }
        for share in &self.shares {
            if !share.host.is_absolute() || !share.guest.is_absolute() {
                return bad(format!(
                    "shared directories must be absolute paths: {}",
                    share.host.display()
                ));
            }
            if share
                .guest
                .to_str()
                .is_none_or(|g| g.contains([',', ':', ' ']))
            {
                return bad(format!(
                    "shared directory path {} may not contain ',', ':' or spaces",
                    share.guest.display()
                ));
            }
        }
        Ok(())
    }
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(MachineError::BadName(name.to_string()))
    }
}

/// The files of one machine, under `<machines dir>/<name>/`.
#[derive(Debug, Clone)]
pub struct MachineDir {
    pub dir: PathBuf,
}

impl MachineDir {
    pub fn new(machines: &Path, name: &str) -> Result<Self> {
        validate_name(name)?;
        Ok(Self {
            dir: machines.join(name),
        })
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("machine.json")
    }
    pub fn status(&self) -> PathBuf {
        self.dir.join("status.json")
    }
    pub fn disk(&self) -> PathBuf {
        self.dir.join("data.img")
    }
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join("machine.log")
    }
    /// The vhost-user socket QEMU and the vsock backend share.
    pub fn vhost_socket(&self) -> PathBuf {
        self.dir.join("vhost.sock")
    }
    /// The hybrid vsock socket (host side of the guest's vsock).
    pub fn vsock_socket(&self) -> PathBuf {
        self.dir.join("vsock.sock")
    }
    /// The Docker API endpoint on the host.
    pub fn api_socket(&self) -> PathBuf {
        self.dir.join("berth.sock")
    }

    pub fn exists(&self) -> bool {
        self.config().is_file()
    }

    pub fn load(&self) -> Result<MachineConfig> {
        let path = self.config();
        let bytes = std::fs::read(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                MachineError::NotFound(self.name())
            } else {
                MachineError::Io {
                    what: "reading",
                    path: path.clone(),
                    source,
                }
            }
        })?;
        let config: MachineConfig = serde_json::from_slice(&bytes)
            .map_err(|source| MachineError::Corrupt { path, source })?;
        config.validate()?;
        Ok(config)
    }

    pub fn save(&self, config: &MachineConfig) -> Result<()> {
        config.validate()?;
        write_json_atomic(&self.config(), config)
    }

    pub fn load_status(&self) -> Option<MachineStatus> {
        let bytes = std::fs::read(self.status()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn save_status(&self, status: &MachineStatus) -> Result<()> {
        write_json_atomic(&self.status(), status)
    }

    fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let io = |what, source| MachineError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| io("encoding", e.into()))?;
    std::fs::write(&tmp, bytes).map_err(|e| io("writing", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("renaming into", e))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineState {
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
}

/// What the machine's supervisor process reports about the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineStatus {
    pub state: MachineState,
    /// The supervisor (`berth machine` in the background).
    pub pid: u32,
    #[serde(default)]
    pub vmm_pids: Vec<u32>,
    /// Milliseconds from launching the VMM to the API answering.
    #[serde(default)]
    pub ready_ms: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub ports: Vec<crate::protocol::ForwardedPort>,
}

impl MachineStatus {
    /// Whether the supervisor named in the status still runs.
    pub fn supervisor_alive(&self) -> bool {
        crate::process::process_alive(self.pid)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn architectures_by_either_name() {
        assert_eq!(GuestArch::parse("arm64").ok(), Some(GuestArch::Aarch64));
        assert_eq!(GuestArch::parse("aarch64").ok(), Some(GuestArch::Aarch64));
        assert_eq!(GuestArch::parse("amd64").ok(), Some(GuestArch::X86_64));
        let err = GuestArch::parse("sparc64").expect_err("unknown");
        assert!(err.to_string().contains("sparc64"), "{err}");
        assert_eq!(GuestArch::Aarch64.debian(), "arm64");
        assert_eq!(GuestArch::Aarch64.serial_console(), "ttyAMA0");
        // A config written before the field existed is the host's architecture.
        let old = r#"{"name":"m","cpus":1,"memory_mib":512,"disk_gib":1,"cid":3}"#;
        let c: MachineConfig = serde_json::from_str(old).expect("old config");
        assert_eq!(c.arch, GuestArch::host());
    }

    use super::*;

    #[test]
    fn names_and_settings_are_checked() {
        assert!(MachineConfig::new("default").is_ok());
        for bad in ["", "a/b", "..", "x y", &"n".repeat(33)] {
            assert!(MachineConfig::new(bad).is_err(), "{bad:?}");
        }
        let mut c = MachineConfig::new("m").expect("name");
        c.cpus = 0;
        assert!(c.validate().is_err());
        c.cpus = 1;
        c.memory_mib = 64;
        assert!(c.validate().is_err());
        c.memory_mib = 512;
        c.cid = 2;
        assert!(c.validate().is_err());
        c.cid = 7;
        c.shares.push(Share {
            host: "relative".into(),
            guest: "/x".into(),
        });
        assert!(c.validate().is_err());
        c.shares[0].host = "/tmp/a".into();
        c.shares[0].guest = "/tmp/a,b".into();
        assert!(c.validate().is_err());
        c.shares[0].guest = "/tmp/a".into();
        c.validate().expect("valid");
    }

    #[test]
    fn config_and_status_round_trip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = MachineDir::new(tmp.path(), "m1").expect("dir");
        assert!(matches!(dir.load(), Err(MachineError::NotFound(n)) if n == "m1"));
        std::fs::create_dir_all(&dir.dir).expect("mkdir");
        let mut c = MachineConfig::new("m1").expect("name");
        c.cpus = 1;
        dir.save(&c).expect("save");
        assert_eq!(dir.load().expect("load"), c);
        std::fs::write(dir.config(), b"{").expect("corrupt");
        assert!(matches!(dir.load(), Err(MachineError::Corrupt { .. })));

        assert!(dir.load_status().is_none());
        let status = MachineStatus {
            state: MachineState::Running,
            pid: std::process::id(),
            vmm_pids: vec![],
            ready_ms: Some(5),
            error: None,
            ports: vec![],
        };
        dir.save_status(&status).expect("status");
        let back = dir.load_status().expect("status back");
        assert_eq!(back, status);
        assert!(back.supervisor_alive());
    }
}
