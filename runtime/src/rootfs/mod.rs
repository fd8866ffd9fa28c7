//! The container's root filesystem: mounts, device nodes, pivot_root,
//! masked and read-only paths, sysctls.
//!
//! OWNER: rootfs helper. Keep these signatures; the init process calls them
//! in this order: `prepare` (new mount namespace, before pivot), hooks,
//! `enter` (pivot_root or chroot), `finish` (inside the new root).

use std::path::Path;

use oci_spec::runtime::Spec;

use crate::cgroups::CgroupMode;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("rootfs operation not implemented yet: {0}")]
    NotImplemented(&'static str),
}

/// What `prepare` needs besides the spec.
#[derive(Debug, Clone, Copy)]
pub struct RootfsContext<'a> {
    pub spec: &'a Spec,
    /// Absolute, canonical path of the root filesystem on the host.
    pub rootfs: &'a Path,
    /// Absolute path of the bundle (relative mount sources resolve against it).
    pub bundle: &'a Path,
    pub cgroup_mode: CgroupMode,
    /// The container has a cgroup namespace of its own.
    pub new_cgroupns: bool,
    /// The container has a user namespace (mknod is not allowed; bind device nodes instead).
    pub in_userns: bool,
}

/// Sets up everything under the rootfs while the host's tree is still visible.
pub fn prepare(_ctx: &RootfsContext<'_>) -> Result<(), RootfsError> {
    Err(RootfsError::NotImplemented("prepare"))
}

/// Bind-mounts the pty slave at `<rootfs>/dev/console`.
pub fn bind_console(_rootfs: &Path, _pty_slave: &Path) -> Result<(), RootfsError> {
    Err(RootfsError::NotImplemented("bind_console"))
}

/// Makes `rootfs` the process's root: pivot_root, or MS_MOVE + chroot when
/// `no_pivot` is set or the current root is a ramfs/initramfs.
pub fn enter(_rootfs: &Path, _no_pivot: bool) -> Result<(), RootfsError> {
    Err(RootfsError::NotImplemented("enter"))
}

/// Inside the new root: sysctls, read-only and masked paths, read-only root.
pub fn finish(_spec: &Spec) -> Result<(), RootfsError> {
    Err(RootfsError::NotImplemented("finish"))
}
