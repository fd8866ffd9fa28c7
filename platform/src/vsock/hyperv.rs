//! Windows: Hyper-V sockets (`AF_HYPERV`). The host connects to
//! `(vm id, service GUID)`, the service GUID being
//! [`super::hyperv_service_guid`] of the guest's vsock port. The socket
//! calls themselves (through the `windows` crate) are not written yet, so
//! connecting reports [`VsockError::NotEnabled`].

use std::time::Duration;

use super::{VsockError, VsockStream};

#[derive(Debug, Clone)]
pub struct HyperVVsock {
    /// The utility VM's id, as HCS reports it.
    pub vm_id: String,
}

impl HyperVVsock {
    pub async fn connect(&self, port: u32, _timeout: Duration) -> Result<VsockStream, VsockError> {
        let _service = super::hyperv_service_guid(port);
        Err(VsockError::NotEnabled)
    }
}
