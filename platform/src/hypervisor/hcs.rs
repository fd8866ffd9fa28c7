//! Windows: the Host Compute Service creates a utility VM; the host reaches
//! guest vsock port P as the Hyper-V socket service
//! [`crate::vsock::hyperv_service_guid`]`(P)`. Not built yet: the backend
//! reports itself as not enabled.

use super::{Capabilities, Hypervisor, HypervisorError, LaunchSpec, Vm};

pub struct Hcs;

impl Hypervisor for Hcs {
    fn name(&self) -> &'static str {
        "hcs"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            vsock: true,
            shares: true,
            user_net_hostfwd: false,
        }
    }
    fn launch(&self, _spec: &LaunchSpec) -> Result<Box<dyn Vm>, HypervisorError> {
        Err(HypervisorError::NotEnabled)
    }
}
