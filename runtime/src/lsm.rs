//! Linux security modules: AppArmor profiles and SELinux labels, applied when
//! the host has them enabled.
//!
//! OWNER: security helper. Keep these signatures.

#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    #[error("lsm not implemented yet")]
    NotImplemented,
}

/// Arranges for `profile` to be applied at the next execve. Errors when a
/// profile is asked for and AppArmor is not enabled on the host.
pub fn apply_apparmor(_profile: &str) -> Result<(), LsmError> {
    Err(LsmError::NotImplemented)
}

/// Sets the SELinux label the next execve runs under.
pub fn set_selinux_exec_label(_label: &str) -> Result<(), LsmError> {
    Err(LsmError::NotImplemented)
}
