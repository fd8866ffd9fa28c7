//! The OCI seccomp section compiled to a BPF filter (through libseccomp) and
//! loaded into the container's init process.
//!
//! OWNER: security helper. Keep these signatures.

use std::os::fd::OwnedFd;

use oci_spec::runtime::LinuxSeccomp;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp not implemented yet")]
    NotImplemented,
}

/// A compiled filter, built in the runtime process before fork so that a bad
/// profile is reported before anything is created.
pub struct SeccompFilter {}

/// Validates and compiles `config` (actions, args, architectures, flags).
pub fn compile(_config: &LinuxSeccomp) -> Result<SeccompFilter, SeccompError> {
    Err(SeccompError::NotImplemented)
}

impl SeccompFilter {
    /// Loads the filter into the calling thread. Returns the notify fd when
    /// the profile uses `SCMP_ACT_NOTIFY`.
    pub fn load(&self) -> Result<Option<OwnedFd>, SeccompError> {
        Err(SeccompError::NotImplemented)
    }
}
