//! Linux security modules: AppArmor profiles and SELinux labels, applied when
//! the host has them enabled.
//!
//! Both work the same way: the label is written to a `/proc/self/attr/...`
//! file and the kernel applies it at the next `execve`.
//! - AppArmor: `exec <profile>` to `/proc/self/attr/apparmor/exec` (Linux
//!   5.8+ with stacked LSMs) or `/proc/self/attr/exec`. Asking for a profile
//!   on a host without AppArmor is an error, except `unconfined`.
//! - SELinux: the label to `/proc/self/attr/exec` and
//!   `/proc/self/attr/keycreate`. On a host without SELinux labels are
//!   ignored, as runc does.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

const APPARMOR_ENABLED: &str = "/sys/module/apparmor/parameters/enabled";
const APPARMOR_SECURITYFS: &str = "/sys/kernel/security/apparmor";
const APPARMOR_EXEC: &str = "/proc/self/attr/apparmor/exec";
const LSM_EXEC: &str = "/proc/self/attr/exec";
const LSM_KEYCREATE: &str = "/proc/self/attr/keycreate";
const SELINUX_ENFORCE: &str = "/sys/fs/selinux/enforce";
const UNCONFINED: &str = "unconfined";

#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    #[error("AppArmor profile {profile:?} requested, but AppArmor is not enabled on this host")]
    AppArmorNotEnabled { profile: String },
    #[error("applying AppArmor profile {profile:?} through {path} failed")]
    AppArmorApply {
        profile: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("setting SELinux label {label:?} through {path} failed")]
    SelinuxApply {
        label: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid {what} {value:?}: contains a NUL byte or newline")]
    InvalidLabel { what: &'static str, value: String },
}

/// Whether AppArmor is enabled in the running kernel (module parameter `Y`
/// and its securityfs directory present).
pub fn apparmor_enabled() -> bool {
    let param = std::fs::read_to_string(APPARMOR_ENABLED).unwrap_or_default();
    param.trim_start().starts_with('Y') && Path::new(APPARMOR_SECURITYFS).exists()
}

/// Whether SELinux is enabled (selinuxfs mounted with its `enforce` file).
pub fn selinux_enabled() -> bool {
    Path::new(SELINUX_ENFORCE).exists()
}

/// The mount data option carrying `label`, for tmpfs/mqueue/devpts mounts:
/// `context="<label>"` when SELinux is enabled, `None` otherwise (or when
/// `label` is empty).
pub fn mount_label_option(label: &str) -> Option<String> {
    if label.is_empty() || !selinux_enabled() {
        return None;
    }
    Some(format!("context=\"{label}\""))
}

fn check_label(what: &'static str, value: &str) -> Result<(), LsmError> {
    if value.contains(['\0', '\n']) {
        return Err(LsmError::InvalidLabel {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

/// Arranges for `profile` to be applied at the next execve. Errors when a
/// profile is asked for and AppArmor is not enabled on the host.
pub fn apply_apparmor(profile: &str) -> Result<(), LsmError> {
    if profile.is_empty() {
        return Ok(());
    }
    check_label("AppArmor profile", profile)?;
    if !apparmor_enabled() {
        if profile == UNCONFINED {
            return Ok(());
        }
        return Err(LsmError::AppArmorNotEnabled {
            profile: profile.to_string(),
        });
    }
    let path = if Path::new(APPARMOR_EXEC).exists() {
        APPARMOR_EXEC
    } else {
        LSM_EXEC
    };
    write_attr(path, &format!("exec {profile}")).map_err(|source| LsmError::AppArmorApply {
        profile: profile.to_string(),
        path: PathBuf::from(path),
        source,
    })
}

/// Sets the SELinux label the next execve runs under. A no-op when the label
/// is empty or SELinux is not enabled.
pub fn set_selinux_exec_label(label: &str) -> Result<(), LsmError> {
    if label.is_empty() || !selinux_enabled() {
        return Ok(());
    }
    check_label("SELinux label", label)?;
    for path in [LSM_EXEC, LSM_KEYCREATE] {
        write_attr(path, label).map_err(|source| LsmError::SelinuxApply {
            label: label.to_string(),
            path: PathBuf::from(path),
            source,
        })?;
    }
    Ok(())
}

/// Writes `value` to a `/proc/self/attr` file in a single write, as the
/// kernel requires.
fn write_attr(path: &str, value: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).open(path)?;
    let written = file.write(value.as_bytes())?;
    if written != value.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("short write: {written} of {} bytes", value.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apparmor_unconfined_and_empty_are_no_ops() {
        if apparmor_enabled() {
            // On an AppArmor host these would change the next exec; skip.
            return;
        }
        apply_apparmor(UNCONFINED).expect("unconfined is a no-op");
        apply_apparmor("").expect("empty is a no-op");
    }

    #[test]
    fn apparmor_profile_without_apparmor_names_the_profile() {
        if apparmor_enabled() {
            return;
        }
        let err = apply_apparmor("docker-default").expect_err("no AppArmor here");
        let text = err.to_string();
        assert!(text.contains("docker-default"), "{text}");
        assert!(text.contains("not enabled"), "{text}");
    }

    #[test]
    fn apparmor_profile_with_newline_is_rejected() {
        let err = apply_apparmor("evil\nchangeprofile x").expect_err("newline");
        assert!(matches!(err, LsmError::InvalidLabel { .. }), "{err}");
    }

    #[test]
    fn selinux_is_a_no_op_without_selinux() {
        if selinux_enabled() {
            return;
        }
        set_selinux_exec_label("system_u:system_r:container_t:s0:c1,c2").expect("no-op");
        assert_eq!(
            mount_label_option("system_u:object_r:container_file_t:s0"),
            None
        );
    }

    #[test]
    fn mount_label_option_format() {
        assert_eq!(mount_label_option(""), None);
        if selinux_enabled() {
            assert_eq!(
                mount_label_option("system_u:object_r:container_file_t:s0").as_deref(),
                Some("context=\"system_u:object_r:container_file_t:s0\"")
            );
        }
    }
}
