//! Process capabilities: bounding, effective, permitted, inheritable, ambient.
//!
//! OWNER: security helper. Keep these signatures.

use oci_spec::runtime::LinuxCapabilities;

#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    #[error("capabilities not implemented yet")]
    NotImplemented,
}

/// Drops every capability not in `caps.bounding` from the bounding set.
/// Called while still privileged, before switching user.
pub fn drop_bounding(_caps: &LinuxCapabilities) -> Result<(), CapabilityError> {
    Err(CapabilityError::NotImplemented)
}

/// Sets effective, permitted, inheritable and ambient sets. Called after the
/// uid/gid switch (with PR_SET_KEEPCAPS held across it).
pub fn apply(_caps: &LinuxCapabilities) -> Result<(), CapabilityError> {
    Err(CapabilityError::NotImplemented)
}
