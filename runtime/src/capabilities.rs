//! Process capabilities: bounding, effective, permitted, inheritable, ambient.
//!
//! Capabilities the running kernel does not know (above
//! `/proc/sys/kernel/cap_last_cap`) are ignored, as runc does: a spec written
//! for a newer kernel still runs, without the capability.

use std::str::FromStr;

use caps::{CapSet, Capability as KernelCap, CapsHashSet};
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

/// Every capability the kernel defines, in number order (0..=40); the
/// runc CLI's `features` and the engine's `--cap-add ALL` use it.
pub const ALL_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    #[error("unknown capability {name:?}")]
    UnknownName { name: String },
    #[error("dropping {cap} from the bounding set failed")]
    DropBounding {
        cap: String,
        source: caps::errors::CapsError,
    },
    #[error("setting the effective, permitted and inheritable sets failed (asked for permitted {permitted})")]
    SetSets {
        permitted: String,
        source: std::io::Error,
    },
    #[error("clearing the ambient set failed")]
    ClearAmbient(#[source] caps::errors::CapsError),
    #[error("raising {cap} in the ambient set failed (it must be permitted and inheritable)")]
    RaiseAmbient {
        cap: String,
        source: caps::errors::CapsError,
    },
}

/// Parses a capability name as the CLI accepts it: `CAP_NET_ADMIN`,
/// `NET_ADMIN`, in any case.
pub fn parse_capability(name: &str) -> Result<Capability, CapabilityError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(bare).map_err(|_| CapabilityError::UnknownName {
        name: name.to_string(),
    })
}

/// The `caps` crate's value for an oci-spec capability.
pub fn to_kernel_cap(cap: Capability) -> KernelCap {
    match cap {
        Capability::AuditControl => KernelCap::CAP_AUDIT_CONTROL,
        Capability::AuditRead => KernelCap::CAP_AUDIT_READ,
        Capability::AuditWrite => KernelCap::CAP_AUDIT_WRITE,
        Capability::BlockSuspend => KernelCap::CAP_BLOCK_SUSPEND,
        Capability::Bpf => KernelCap::CAP_BPF,
        Capability::CheckpointRestore => KernelCap::CAP_CHECKPOINT_RESTORE,
        Capability::Chown => KernelCap::CAP_CHOWN,
        Capability::DacOverride => KernelCap::CAP_DAC_OVERRIDE,
        Capability::DacReadSearch => KernelCap::CAP_DAC_READ_SEARCH,
        Capability::Fowner => KernelCap::CAP_FOWNER,
        Capability::Fsetid => KernelCap::CAP_FSETID,
        Capability::IpcLock => KernelCap::CAP_IPC_LOCK,
        Capability::IpcOwner => KernelCap::CAP_IPC_OWNER,
        Capability::Kill => KernelCap::CAP_KILL,
        Capability::Lease => KernelCap::CAP_LEASE,
        Capability::LinuxImmutable => KernelCap::CAP_LINUX_IMMUTABLE,
        Capability::MacAdmin => KernelCap::CAP_MAC_ADMIN,
        Capability::MacOverride => KernelCap::CAP_MAC_OVERRIDE,
        Capability::Mknod => KernelCap::CAP_MKNOD,
        Capability::NetAdmin => KernelCap::CAP_NET_ADMIN,
        Capability::NetBindService => KernelCap::CAP_NET_BIND_SERVICE,
        Capability::NetBroadcast => KernelCap::CAP_NET_BROADCAST,
        Capability::NetRaw => KernelCap::CAP_NET_RAW,
        Capability::Perfmon => KernelCap::CAP_PERFMON,
        Capability::Setgid => KernelCap::CAP_SETGID,
        Capability::Setfcap => KernelCap::CAP_SETFCAP,
        Capability::Setpcap => KernelCap::CAP_SETPCAP,
        Capability::Setuid => KernelCap::CAP_SETUID,
        Capability::SysAdmin => KernelCap::CAP_SYS_ADMIN,
        Capability::SysBoot => KernelCap::CAP_SYS_BOOT,
        Capability::SysChroot => KernelCap::CAP_SYS_CHROOT,
        Capability::SysModule => KernelCap::CAP_SYS_MODULE,
        Capability::SysNice => KernelCap::CAP_SYS_NICE,
        Capability::SysPacct => KernelCap::CAP_SYS_PACCT,
        Capability::SysPtrace => KernelCap::CAP_SYS_PTRACE,
        Capability::SysRawio => KernelCap::CAP_SYS_RAWIO,
        Capability::SysResource => KernelCap::CAP_SYS_RESOURCE,
        Capability::SysTime => KernelCap::CAP_SYS_TIME,
        Capability::SysTtyConfig => KernelCap::CAP_SYS_TTY_CONFIG,
        Capability::Syslog => KernelCap::CAP_SYSLOG,
        Capability::WakeAlarm => KernelCap::CAP_WAKE_ALARM,
    }
}

/// The highest capability number the running kernel knows.
fn last_cap() -> u8 {
    if let Some(last) = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
    {
        return last;
    }
    // No procfs: PR_CAPBSET_READ fails for capabilities the kernel lacks.
    caps::runtime::thread_all_supported()
        .iter()
        .map(KernelCap::index)
        .max()
        .unwrap_or(0)
}

/// `set` mapped to kernel capabilities, without the ones this kernel lacks.
fn known(set: Option<&Capabilities>, last: u8) -> CapsHashSet {
    set.into_iter()
        .flatten()
        .map(|cap| to_kernel_cap(*cap))
        .filter(|cap| cap.index() <= last)
        .collect()
}

fn mask(set: &CapsHashSet) -> u64 {
    set.iter().fold(0, |bits, cap| bits | cap.bitmask())
}

/// Drops every capability not in `caps.bounding` from the bounding set.
/// Called while still privileged, before switching user.
pub fn drop_bounding(caps: &LinuxCapabilities) -> Result<(), CapabilityError> {
    let last = last_cap();
    let keep = known(caps.bounding().as_ref(), last);
    for cap in caps::all() {
        if cap.index() > last || keep.contains(&cap) {
            continue;
        }
        caps::drop(None, CapSet::Bounding, cap).map_err(|source| {
            CapabilityError::DropBounding {
                cap: cap.to_string(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Sets effective, permitted, inheritable and ambient sets. Called after the
/// uid/gid switch (with PR_SET_KEEPCAPS held across it).
pub fn apply(caps: &LinuxCapabilities) -> Result<(), CapabilityError> {
    let last = last_cap();
    let effective = known(caps.effective().as_ref(), last);
    let permitted = known(caps.permitted().as_ref(), last);
    let inheritable = known(caps.inheritable().as_ref(), last);
    let ambient = known(caps.ambient().as_ref(), last);

    // One capset for the three sets: setting them one at a time would drop
    // CAP_SETPCAP (or permitted bits) before the later sets are written.
    capset(mask(&effective), mask(&permitted), mask(&inheritable)).map_err(|source| {
        CapabilityError::SetSets {
            permitted: names(&permitted),
            source,
        }
    })?;

    caps::clear(None, CapSet::Ambient).map_err(CapabilityError::ClearAmbient)?;
    // The kernel only allows ambient capabilities that are both permitted
    // and inheritable. runc's default spec lists ambient ones without
    // inheritable; like runc, skip those instead of failing the container.
    for cap in ambient
        .into_iter()
        .filter(|c| permitted.contains(c) && inheritable.contains(c))
    {
        caps::raise(None, CapSet::Ambient, cap).map_err(|source| {
            CapabilityError::RaiseAmbient {
                cap: cap.to_string(),
                source,
            }
        })?;
    }
    Ok(())
}

fn names(set: &CapsHashSet) -> String {
    let mut names: Vec<String> = set.iter().map(ToString::to_string).collect();
    names.sort();
    names.join(",")
}

/// `capset(2)` header and data, version 3 (64-bit sets in two halves).
#[repr(C)]
struct CapUserHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapUserData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn capset(effective: u64, permitted: u64, inheritable: u64) -> std::io::Result<()> {
    let mut header = CapUserHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let half = |bits: u64, high: bool| -> u32 {
        let shifted = if high { bits >> 32 } else { bits };
        // Truncation to the low 32 bits is the point.
        (shifted & 0xffff_ffff) as u32
    };
    let data = [false, true].map(|high| CapUserData {
        effective: half(effective, high),
        permitted: half(permitted, high),
        inheritable: half(inheritable, high),
    });
    // SAFETY: `header` and `data` are valid for the duration of the call and
    // laid out as the kernel's v3 `__user_cap_header_struct` and two
    // `__user_cap_data_struct`s; capset only reads `data`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capset,
            std::ptr::addr_of_mut!(header),
            data.as_ptr(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::{FromRawFd, OwnedFd};

    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::Pid;

    use super::*;

    #[test]
    fn parses_both_name_forms() {
        for name in ["CAP_NET_ADMIN", "NET_ADMIN", "net_admin", "cap_net_admin"] {
            assert_eq!(parse_capability(name).expect(name), Capability::NetAdmin);
        }
        assert_eq!(
            parse_capability("CAP_CHECKPOINT_RESTORE").expect("cr"),
            Capability::CheckpointRestore
        );
        let err = parse_capability("CAP_FLY").expect_err("unknown");
        assert!(err.to_string().contains("CAP_FLY"), "{err}");
        assert!(parse_capability("").is_err());
    }

    #[test]
    fn every_oci_capability_maps_to_the_same_name() {
        for cap in caps::all() {
            let oci = parse_capability(&cap.to_string()).expect("known to oci-spec");
            assert_eq!(to_kernel_cap(oci), cap);
        }
    }

    /// Runs `body` in a forked child and returns what it wrote to the pipe.
    fn in_child(body: impl FnOnce() -> Result<String, String>) -> String {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid two-element array for pipe2 to fill.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both fds were just created and are owned here only.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child runs `body`, writes its report and `_exit`s; it
        // never returns into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            drop(read_end);
            let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body))
                .unwrap_or_else(|_| Err("child panicked".to_string()));
            let (code, text) = match report {
                Ok(text) => (0, text),
                Err(text) => (1, text),
            };
            let mut pipe = std::fs::File::from(write_end);
            let _ = pipe.write_all(text.as_bytes());
            drop(pipe);
            // SAFETY: child-only exit.
            unsafe { libc::_exit(code) };
        }
        drop(write_end);
        let mut out = String::new();
        std::fs::File::from(read_end)
            .read_to_string(&mut out)
            .expect("read child report");
        let status = waitpid(Pid::from_raw(pid), None).expect("waitpid");
        assert_eq!(
            status,
            WaitStatus::Exited(Pid::from_raw(pid), 0),
            "child: {out}"
        );
        out
    }

    fn status_caps() -> Result<String, String> {
        let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
        Ok(status
            .lines()
            .filter(|l| l.starts_with("Cap"))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    fn field(report: &str, name: &str) -> u64 {
        let line = report
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing in {report}"));
        let hex = line.split_whitespace().nth(1).expect("value");
        u64::from_str_radix(hex, 16).expect("hex")
    }

    #[test]
    fn drop_bounding_then_apply_leaves_exactly_the_requested_sets() {
        let small: Capabilities = [Capability::Chown, Capability::Kill].into_iter().collect();
        let mut spec = LinuxCapabilities::default();
        spec.set_bounding(Some(small.clone()))
            .set_effective(Some(small.clone()))
            .set_permitted(Some(small.clone()))
            .set_inheritable(Some(small.clone()))
            .set_ambient(Some(small));
        let report = in_child(|| {
            drop_bounding(&spec).map_err(|e| format!("drop_bounding: {e:?}"))?;
            apply(&spec).map_err(|e| format!("apply: {e:?}"))?;
            status_caps()
        });
        let expected = KernelCap::CAP_CHOWN.bitmask() | KernelCap::CAP_KILL.bitmask();
        for name in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(field(&report, name), expected, "{name} in\n{report}");
        }
    }

    #[test]
    fn different_sets_and_empty_ambient() {
        let bounding: Capabilities = [Capability::Chown, Capability::Kill, Capability::NetRaw]
            .into_iter()
            .collect();
        let permitted: Capabilities = [Capability::Chown, Capability::Kill].into_iter().collect();
        let effective: Capabilities = [Capability::Kill].into_iter().collect();
        let mut spec = LinuxCapabilities::default();
        spec.set_bounding(Some(bounding))
            .set_effective(Some(effective))
            .set_permitted(Some(permitted))
            .set_inheritable(None)
            .set_ambient(None);
        let report = in_child(|| {
            drop_bounding(&spec).map_err(|e| format!("drop_bounding: {e:?}"))?;
            apply(&spec).map_err(|e| format!("apply: {e:?}"))?;
            status_caps()
        });
        assert_eq!(
            field(&report, "CapBnd"),
            KernelCap::CAP_CHOWN.bitmask()
                | KernelCap::CAP_KILL.bitmask()
                | KernelCap::CAP_NET_RAW.bitmask()
        );
        assert_eq!(
            field(&report, "CapPrm"),
            KernelCap::CAP_CHOWN.bitmask() | KernelCap::CAP_KILL.bitmask()
        );
        assert_eq!(field(&report, "CapEff"), KernelCap::CAP_KILL.bitmask());
        assert_eq!(field(&report, "CapInh"), 0);
        assert_eq!(field(&report, "CapAmb"), 0);
    }

    #[test]
    fn ambient_without_inheritable_is_skipped() {
        let kill: Capabilities = [Capability::Kill].into_iter().collect();
        let mut spec = LinuxCapabilities::default();
        spec.set_bounding(Some(kill.clone()))
            .set_effective(Some(kill.clone()))
            .set_permitted(Some(kill.clone()))
            .set_inheritable(None)
            .set_ambient(Some(kill));
        let report = in_child(|| {
            apply(&spec).map_err(|e| e.to_string())?;
            std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())
        });
        assert_eq!(field(&report, "CapAmb"), 0);
        assert_eq!(field(&report, "CapEff"), KernelCap::CAP_KILL.bitmask());
    }
}
