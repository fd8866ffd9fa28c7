//! Operating-system specific pieces of Berth: data and runtime paths, and (as
//! the VM backends land) hypervisor backends, vsock transports and local
//! listeners. Shared code asks this crate instead of matching on `cfg` itself.

use std::path::PathBuf;

/// Default state directory of `berth-runc` (the role runc's `/run/runc` has).
/// Unprivileged users get a directory under `$XDG_RUNTIME_DIR`.
pub fn default_runtime_root() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !is_root() => PathBuf::from(dir).join("berth-runc"),
        _ => PathBuf::from("/run/berth-runc"),
    }
}

#[cfg(unix)]
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(not(unix))]
fn is_root() -> bool {
    false
}
