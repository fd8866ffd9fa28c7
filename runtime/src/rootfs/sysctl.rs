//! `linux.sysctl`: only sysctls that belong to a namespace the container
//! has of its own may be set (otherwise they would change the host).

use std::collections::HashMap;
use std::io::Write;

use super::{Namespaces, RootfsError};

const PROC_SYS: &str = "/proc/sys/";

/// The namespace a sysctl belongs to, from its dotted (or slashed) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Ipc,
    Net,
    Uts,
}

fn owner(key: &str) -> Option<Owner> {
    // A slashed key ("net/ipv4/ip_forward") is classified like a dotted one.
    let is = |prefix: &str| {
        key.len() >= prefix.len()
            && key
                .bytes()
                .zip(prefix.bytes())
                .all(|(k, p)| k == p || (p == b'.' && k == b'/'))
    };
    if is("kernel.msg")
        || is("kernel.shm")
        || is("fs.mqueue.")
        || key == "kernel.sem"
        || key == "kernel/sem"
    {
        return Some(Owner::Ipc);
    }
    if is("net.") {
        return Some(Owner::Net);
    }
    if matches!(
        key,
        "kernel.hostname" | "kernel/hostname" | "kernel.domainname" | "kernel/domainname"
    ) {
        return Some(Owner::Uts);
    }
    None
}

/// Checks that `key` is well formed and namespaced, and that the spec gives
/// the container that namespace.
pub(crate) fn check(key: &str, ns: Namespaces) -> Result<(), RootfsError> {
    let sep = if key.contains('/') { '/' } else { '.' };
    let well_formed = !key.is_empty()
        && !key.starts_with('/')
        && !key.contains('\0')
        && key
            .split(sep)
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !well_formed {
        return Err(RootfsError::InvalidSysctlKey {
            key: key.to_string(),
        });
    }
    let not_allowed = |reason| RootfsError::SysctlNotAllowed {
        key: key.to_string(),
        reason,
    };
    match owner(key) {
        None => Err(not_allowed("not a namespaced sysctl")),
        Some(Owner::Ipc) if !ns.ipc => Err(not_allowed("needs an IPC namespace of its own")),
        Some(Owner::Net) if !ns.net => Err(not_allowed("needs a network namespace of its own")),
        Some(Owner::Uts) if !ns.uts => Err(not_allowed("needs a UTS namespace of its own")),
        Some(_) => Ok(()),
    }
}

/// Writes each sysctl to `/proc/sys/<key with . replaced by />`.
pub(crate) fn apply(sysctls: &HashMap<String, String>, ns: Namespaces) -> Result<(), RootfsError> {
    let mut path = String::with_capacity(64);
    for (key, value) in sysctls {
        check(key, ns)?;
        path.clear();
        path.push_str(PROC_SYS);
        if key.contains('/') {
            path.push_str(key);
        } else {
            path.extend(key.chars().map(|c| if c == '.' { '/' } else { c }));
        }
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value.as_bytes()))
            .map_err(|source| RootfsError::WriteSysctl {
                key: key.clone(),
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Namespaces = Namespaces {
        net: true,
        ipc: true,
        uts: true,
    };

    #[test]
    fn rootfs_sysctl_allowed() {
        for key in [
            "kernel.shmmax",
            "kernel.msgmnb",
            "kernel.sem",
            "fs.mqueue.msg_max",
            "net.ipv4.ip_forward",
            "net/ipv4/conf/eth0.100/forwarding",
            "kernel.hostname",
        ] {
            assert!(check(key, ALL).is_ok(), "{key}");
        }
    }

    #[test]
    fn rootfs_sysctl_rejected() {
        for key in [
            "kernel.pid_max",
            "vm.swappiness",
            "kernel.semx",
            "fs.file-max",
        ] {
            let e = check(key, ALL).expect_err("must fail").to_string();
            assert!(e.contains(key) && e.contains("not a namespaced"), "{e}");
        }
        for key in ["", "/etc/passwd", "net..ipv4", "net/../../etc", ".net"] {
            assert!(
                matches!(check(key, ALL), Err(RootfsError::InvalidSysctlKey { .. })),
                "{key}"
            );
        }
        let no_net = Namespaces { net: false, ..ALL };
        let e = check("net.ipv4.ip_forward", no_net)
            .expect_err("must fail")
            .to_string();
        assert!(e.contains("network namespace"), "{e}");
    }
}
