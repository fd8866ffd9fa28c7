//! Checks run before forking, so that a bad spec fails with a clear error
//! instead of half-way through the container's setup.

use std::path::Path;

use oci_spec::runtime::Spec;

use super::mounts::{is_bind, mount_options};
use super::{devices, root_propagation, sysctl, Namespaces, RootfsError};

/// Filesystem types every container runtime setup uses; others are looked
/// up in `/proc/filesystems`.
const KNOWN_TYPES: &[&str] = &[
    "bind", "none", "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2",
];

/// Checks the parts of `spec` this module will use: the rootfs, mounts,
/// devices, sysctls and rootfs propagation.
pub fn validate(spec: &Spec, rootfs: &Path) -> Result<(), RootfsError> {
    let meta = std::fs::metadata(rootfs).map_err(|source| RootfsError::RootfsMissing {
        path: rootfs.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(RootfsError::RootfsNotDirectory {
            path: rootfs.to_path_buf(),
        });
    }
    root_propagation(spec)?;

    let mut filesystems: Option<String> = None;
    for m in spec.mounts().iter().flatten() {
        let destination = m.destination();
        if !destination.is_absolute() {
            return Err(RootfsError::RelativeDestination {
                destination: destination.to_path_buf(),
            });
        }
        let opts = mount_options(m)?;
        if is_bind(m, &opts) {
            if m.source().is_none() {
                return Err(RootfsError::MissingSource {
                    destination: destination.to_path_buf(),
                });
            }
            continue;
        }
        let Some(fstype) = m.typ().as_deref().filter(|t| !t.is_empty()) else {
            return Err(RootfsError::MissingMountType {
                destination: destination.to_path_buf(),
            });
        };
        if KNOWN_TYPES.contains(&fstype) {
            continue;
        }
        let list = match &filesystems {
            Some(l) => l,
            None => filesystems.insert(std::fs::read_to_string("/proc/filesystems").map_err(
                |source| RootfsError::ReadProcFile {
                    path: "/proc/filesystems",
                    source,
                },
            )?),
        };
        // Lines are "nodev\tproc" or "\text4".
        let known = list.lines().any(|l| l.rsplit('\t').next() == Some(fstype));
        if !known {
            return Err(RootfsError::UnknownMountType {
                destination: destination.to_path_buf(),
                fstype: fstype.to_string(),
            });
        }
    }

    if let Some(linux) = spec.linux() {
        for d in linux.devices().iter().flatten() {
            devices::check_device(d)?;
        }
        let ns = Namespaces::of(spec);
        for key in linux.sysctl().iter().flat_map(|s| s.keys()) {
            sysctl::check(key, ns)?;
        }
    }
    Ok(())
}
