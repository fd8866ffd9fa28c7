//! macOS: Virtualization.framework (`VZVirtualMachine` with a
//! `VZVirtioSocketDevice` for vsock and `VZVirtioFileSystemDevice` for
//! shares), through `objc2-virtualization`. Not built yet: the backend
//! reports itself as not enabled, so `berth machine start` fails with a
//! clear error instead of a panic.

use super::{Capabilities, Hypervisor, HypervisorError, LaunchSpec, Vm};

pub struct Vz;

impl Hypervisor for Vz {
    fn name(&self) -> &'static str {
        "vz"
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
