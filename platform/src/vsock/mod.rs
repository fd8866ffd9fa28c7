//! Host-side vsock transports behind one small interface:
//! [`HostVsock::connect`] opens a stream to a guest port, [`HostVsock::listen`]
//! accepts streams the guest opens towards the host. The guest side is always
//! plain `AF_VSOCK` (see `berth-agent`).
//!
//! - [`hybrid`]: hybrid vsock over a Unix socket (QEMU + vhost-user-vsock,
//!   Firecracker, cloud-hypervisor).
//! - [`bridge`]: hybrid vsock served by Berth for hypervisors that hand out
//!   one descriptor per connection (Virtualization.framework).
//! - [`hyperv_service_guid`] and [`guid`]: the `AF_HYPERV` service id of a
//!   vsock port; [`threaded`] turns the blocking Hyper-V socket into a stream.

#[cfg(unix)]
pub mod bridge;
pub mod guid;
#[cfg(unix)]
pub mod hybrid;
#[cfg(windows)]
pub mod hyperv;
pub mod threaded;

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// A connected byte stream to or from the guest.
pub trait VsockIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> VsockIo for T {}
pub type VsockStream = Pin<Box<dyn VsockIo>>;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("connecting to the vsock endpoint {path}")]
    Endpoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the guest refused vsock port {port}: {reply:?}")]
    Refused { port: u32, reply: String },
    #[error("no answer on vsock port {port} within {timeout:?}")]
    Timeout { port: u32, timeout: Duration },
    #[error("vsock port {port} is already taken on the host ({path})")]
    PortTaken { port: u32, path: PathBuf },
    #[error("vsock i/o on port {port}")]
    Io {
        port: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("this vsock transport is not available on this platform")]
    NotEnabled,
}

/// The host's side of a VM's vsock device.
#[derive(Debug, Clone)]
pub enum HostVsock {
    /// Hybrid vsock: the Unix socket the VMM (or vhost-user-vsock backend)
    /// exposes; guest-initiated connections arrive on `<path>_<port>`.
    #[cfg(unix)]
    Hybrid(hybrid::HybridVsock),
    /// Hyper-V sockets to a utility VM (Windows).
    #[cfg(windows)]
    HyperV(hyperv::HyperVVsock),
}

impl HostVsock {
    /// Opens a stream to the guest's `port`, failing within `timeout`.
    pub async fn connect(&self, port: u32, timeout: Duration) -> Result<VsockStream, VsockError> {
        match self {
            #[cfg(unix)]
            HostVsock::Hybrid(h) => Ok(Box::pin(h.connect(port, timeout).await?)),
            #[cfg(windows)]
            HostVsock::HyperV(h) => h.connect(port, timeout).await,
        }
    }

    /// Accepts streams the guest opens to the host's `port`.
    pub fn listen(&self, port: u32) -> Result<VsockListener, VsockError> {
        match self {
            #[cfg(unix)]
            HostVsock::Hybrid(h) => Ok(VsockListener::Hybrid(h.listen(port)?)),
            #[cfg(windows)]
            HostVsock::HyperV(h) => Ok(VsockListener::HyperV(h.listen(port)?)),
        }
    }
}

/// Connections the guest opens to one host port.
pub enum VsockListener {
    #[cfg(unix)]
    Hybrid(hybrid::HybridListener),
    #[cfg(windows)]
    HyperV(hyperv::HyperVListener),
}

impl VsockListener {
    pub async fn accept(&self) -> std::io::Result<VsockStream> {
        match self {
            #[cfg(unix)]
            VsockListener::Hybrid(l) => Ok(Box::pin(l.accept().await?)),
            #[cfg(windows)]
            VsockListener::HyperV(l) => l.accept().await,
        }
    }
}

/// Hyper-V sockets name a guest's vsock port `P` by the service GUID
/// `P-facb-11e6-bd58-64006a7986d3` (the "vsock template"), `P` as 8 hex digits.
pub fn hyperv_service_guid(port: u32) -> String {
    format!("{port:08x}-facb-11e6-bd58-64006a7986d3")
}

/// The inverse of [`hyperv_service_guid`]: the vsock port a service GUID
/// stands for, if it follows the template.
pub fn port_from_hyperv_service_guid(guid: &str) -> Option<u32> {
    let guid = guid
        .trim_matches(|c| c == '{' || c == '}')
        .to_ascii_lowercase();
    let (port, rest) = guid.split_once('-')?;
    if rest != "facb-11e6-bd58-64006a7986d3" || port.len() != 8 {
        return None;
    }
    u32::from_str_radix(port, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyperv_guid_round_trip() {
        assert_eq!(
            hyperv_service_guid(2375),
            "00000947-facb-11e6-bd58-64006a7986d3"
        );
        assert_eq!(
            port_from_hyperv_service_guid("{00000947-FACB-11E6-BD58-64006A7986D3}"),
            Some(2375)
        );
        assert_eq!(
            port_from_hyperv_service_guid("00000947-0000-11e6-bd58-64006a7986d3"),
            None
        );
        assert_eq!(
            port_from_hyperv_service_guid("947-facb-11e6-bd58-64006a7986d3"),
            None
        );
    }
}
