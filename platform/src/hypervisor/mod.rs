//! Hypervisor backends behind one interface, in the shape of
//! cloud-hypervisor's `hypervisor` crate: [`probe`] lists the backends this
//! host can use, a backend [`Hypervisor::launch`]es a [`Vm`], and differences
//! show up in [`Capabilities`] and [`HypervisorError::Unsupported`], never in
//! a panic.
//!
//! - `qemu` (Linux): QEMU `microvm` with TCG (or KVM when asked), vsock
//!   through the `vhost-device-vsock` backend as hybrid vsock.
//! - `vz` (macOS, Virtualization.framework) and `hcs` (Windows, Host Compute
//!   Service): thin OS calls over descriptions built by shared, tested code:
//!   [`vz_config`] (the framework's configuration as data), [`hcs_doc`] (the
//!   HCS compute-system JSON), [`hns_doc`] (the HNS NAT network and
//!   endpoint for outbound traffic) and [`vhd`] (the data disk as a fixed VHD).

#[cfg(target_os = "linux")]
#[path = "qemu.rs"]
pub mod qemu;

#[cfg(not(target_os = "linux"))]
#[path = "stub.rs"]
pub mod qemu;

#[cfg(target_os = "macos")]
pub mod vz;

#[cfg(target_os = "windows")]
pub mod hcs;

#[cfg(target_os = "windows")]
pub mod hns;

pub mod hcs_doc;
pub mod hns_doc;
pub mod vhd;
pub mod vz_config;

use std::path::PathBuf;
use std::time::Duration;

use crate::machine::{Accel, GuestArch, Share};
use crate::protocol::ShareFs;
use crate::vsock::HostVsock;

#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error("{what} not found: {hint}")]
    Missing { what: String, hint: String },
    #[error("starting {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} exited during start-up ({status}); see {log}")]
    EarlyExit {
        program: String,
        status: String,
        log: String,
    },
    #[error("{what} did not appear within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    #[error("{0} is not supported by this backend")]
    Unsupported(&'static str),
    #[error("this hypervisor backend is not built for this platform")]
    NotEnabled,
    /// A Host Compute Service or Host Networking Service call failed;
    /// `detail` is the service's own error document, if it sent one.
    #[error("{call} failed (HRESULT {hresult:#010x}) {detail}")]
    Hcs {
        call: &'static str,
        hresult: i32,
        detail: String,
    },
    /// A Virtualization.framework call failed; `detail` is its NSError.
    #[error("{call} failed: {detail}")]
    Vz { call: &'static str, detail: String },
    #[error("preparing the data disk")]
    Disk(#[from] vhd::VhdError),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Everything a backend needs to boot the guest.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// Raw data disk for the engine's state (virtio-blk).
    pub disk: Option<PathBuf>,
    pub cid: u32,
    /// Where the backend may create its sockets.
    pub vhost_socket: PathBuf,
    pub vsock_socket: PathBuf,
    pub console_log: PathBuf,
    /// Backend logs (vsock backend, VMM stderr).
    pub vmm_log: PathBuf,
    /// Host directories shared into the guest, with their mount tags.
    pub shares: Vec<(String, Share)>,
    /// How to share them; `None` lets the backend pick its best. The backend
    /// adds the shares to the command line ([`shares_cmdline`]) with the
    /// filesystem it used, so the agent mounts what was attached.
    pub share_fs: Option<ShareFs>,
    /// QEMU user-network `hostfwd` rules; user networking (restricted) is
    /// only attached when this is non-empty.
    pub hostfwd: Vec<String>,
    pub accel: Accel,
    /// The guest's architecture (the kernel, the initramfs and QEMU's machine follow it).
    pub arch: GuestArch,
    /// A network device with outbound access through the host (NAT), where
    /// the guest cannot reach the host's own loopback services.
    pub outbound_network: bool,
}

/// What a backend can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub vsock: bool,
    /// Host directory sharing: virtiofs (Virtualization.framework; QEMU with
    /// virtiofsd) or 9p (QEMU without it).
    pub shares: bool,
    /// Host-forwarded ports on the VMM's own user network (for comparison).
    pub user_net_hostfwd: bool,
}

pub trait Hypervisor: Send + Sync {
    fn name(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    /// Starts the VM; returns once the VMM runs (not once the guest is up).
    fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn Vm>, HypervisorError>;
}

/// A launched VM.
pub trait Vm: Send {
    /// The host processes that make up the VM (VMM, device backends).
    fn pids(&self) -> Vec<u32>;
    /// The host side of the guest's vsock.
    fn vsock(&self) -> HostVsock;
    /// `Some(description)` once the VMM has exited.
    fn try_exited(&mut self) -> Option<String>;
    /// Stops every process of the VM now.
    fn kill(&mut self);
}

/// The backends available on this host, preferred first.
pub fn probe() -> Vec<Box<dyn Hypervisor>> {
    let mut found: Vec<Box<dyn Hypervisor>> = Vec::new();
    if let Ok(q) = qemu::Qemu::locate() {
        found.push(Box::new(q));
    }
    #[cfg(target_os = "macos")]
    found.push(Box::new(vz::Vz));
    #[cfg(target_os = "windows")]
    found.push(Box::new(hcs::Hcs));
    found
}

/// The tag a share is mounted by in the guest.
pub fn share_tag(index: usize) -> String {
    format!("berthshare{index}")
}

/// `berth.shares=<tag>:<guest path>:<fs>,…` for the agent.
pub fn shares_cmdline(shares: &[(String, Share)], fs: ShareFs) -> Option<String> {
    if shares.is_empty() {
        return None;
    }
    let list: Vec<String> = shares
        .iter()
        .map(|(tag, s)| crate::protocol::share_entry(tag, &s.guest.display().to_string(), fs))
        .collect();
    Some(format!(
        "{}={}",
        crate::protocol::CMDLINE_SHARES,
        list.join(",")
    ))
}

/// `cmdline` with the shares appended as mounted over `fs`.
pub fn with_shares(cmdline: &str, shares: &[(String, Share)], fs: ShareFs) -> String {
    match shares_cmdline(shares, fs) {
        Some(s) => format!("{cmdline} {s}"),
        None => cmdline.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_on_the_command_line() {
        assert_eq!(shares_cmdline(&[], ShareFs::Virtiofs), None);
        let s = vec![(
            share_tag(0),
            Share {
                host: "/srv/a".into(),
                guest: "/srv/a".into(),
            },
        )];
        assert_eq!(
            shares_cmdline(&s, ShareFs::Virtiofs).as_deref(),
            Some("berth.shares=berthshare0:/srv/a:virtiofs")
        );
        // What the agent reads back.
        let line = shares_cmdline(&s, ShareFs::NineP).expect("line");
        let value = line.split_once('=').expect("key").1;
        assert_eq!(
            crate::protocol::parse_share_entries(value),
            vec![("berthshare0".into(), "/srv/a".into(), ShareFs::NineP)]
        );
    }
}
