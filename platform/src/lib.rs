//! Operating-system specific pieces of Berth: data and runtime paths,
//! hypervisor backends, vsock transports, the host endpoint that forwards to
//! the VM, and port forwarding. Shared code asks this crate instead of
//! matching on `cfg` itself.
//!
//! Modules:
//! - [`vsock`]: `connect(port)`/`listen(port)` over hybrid vsock (a Unix
//!   socket, QEMU + vhost-user-vsock), plus the Hyper-V service GUIDs.
//! - [`protocol`]: what the host and the guest agent say to each other on
//!   the control and port-forward vsock ports.
//! - [`machine`]: a machine's settings and state files.
//! - [`hypervisor`]: backends that boot the VM (QEMU on Linux,
//!   Virtualization.framework on macOS, HCS on Windows).
//! - [`forward`]: the host endpoint and the published-port listeners.
//! - [`endpoint`]: the names of the Windows named pipes (API, console) and
//!   a machine's `DOCKER_HOST`.
//! - [`process`]: the supervisor's process: detached start, stop request,
//!   liveness, kill (signals on Unix, a named event on Windows).

pub mod clock;
pub mod endpoint;
pub mod forward;
pub mod host_services;
pub mod hypervisor;
pub mod machine;
#[cfg(windows)]
pub mod pipe_endpoint;
pub mod process;
pub mod protocol;
pub mod vsock;
#[cfg(windows)]
mod win;

use std::path::PathBuf;

/// Default state directory of `berth-runc` (the role runc's `/run/runc` has).
/// Unprivileged users get a directory under `$XDG_RUNTIME_DIR`.
pub fn default_runtime_root() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !is_root() => PathBuf::from(dir).join("berth-runc"),
        _ => PathBuf::from("/run/berth-runc"),
    }
}

/// Where `berth machine` keeps machines: `$BERTH_MACHINE_HOME`, else
/// `$XDG_DATA_HOME/berth/machines`, else `~/.local/share/berth/machines`.
pub fn machines_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_MACHINE_HOME") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("berth/machines");
    }
    home_dir().join(".local/share/berth/machines")
}

/// The user's cache directory for built guest images:
/// `$XDG_CACHE_HOME/berth`, else `~/.cache/berth`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("berth");
    }
    home_dir().join(".cache/berth")
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
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
