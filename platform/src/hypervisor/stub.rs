//! QEMU is only driven on Linux hosts.

use super::{Capabilities, Hypervisor, HypervisorError, LaunchSpec, Vm};

pub struct Qemu;

impl Qemu {
    pub fn locate() -> Result<Self, HypervisorError> {
        Err(HypervisorError::NotEnabled)
    }
}

impl Hypervisor for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            vsock: false,
            shares: false,
            user_net_hostfwd: false,
        }
    }
    fn launch(&self, _spec: &LaunchSpec) -> Result<Box<dyn Vm>, HypervisorError> {
        Err(HypervisorError::NotEnabled)
    }
}
