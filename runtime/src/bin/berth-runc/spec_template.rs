//! The `config.json` that `berth-runc spec` writes: runc's default bundle
//! configuration (hostname aside), and its rootless variant.

use serde_json::{json, Value};

/// The default spec: a `sh` on a terminal, a read-only `rootfs`, the usual
/// pseudo-filesystems, new namespaces (but no user namespace), three
/// capabilities, and all device access denied.
pub fn default_spec() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": crate::OCI_VERSION,
        "process": {
            "terminal": true,
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps
            },
            "rlimits": [
                { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }
            ],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "berth",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            {
                "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]
            },
            {
                "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
            },
            {
                "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
            },
            {
                "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"]
            },
            {
                "destination": "/sys", "type": "sysfs", "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"]
            },
            {
                "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]
            }
        ],
        "linux": {
            "resources": {
                "devices": [ { "allow": false, "access": "rwm" } ]
            },
            "namespaces": [
                { "type": "pid" },
                { "type": "network" },
                { "type": "ipc" },
                { "type": "uts" },
                { "type": "mount" },
                { "type": "cgroup" }
            ],
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger"
            ]
        }
    })
}

/// Turns `spec` into one an unprivileged user can run: a user namespace
/// mapping root to `uid`/`gid`, no network namespace, `/sys` bound from the
/// host instead of a new sysfs, no `uid=`/`gid=` mount options (those ids do
/// not exist in the namespace), and no cgroup limits.
pub fn make_rootless(spec: &mut Value, uid: u32, gid: u32) {
    if let Some(linux) = spec.get_mut("linux").and_then(Value::as_object_mut) {
        if let Some(ns) = linux.get_mut("namespaces").and_then(Value::as_array_mut) {
            ns.retain(|n| n["type"] != "network" && n["type"] != "user");
            ns.push(json!({ "type": "user" }));
        }
        linux.insert(
            "uidMappings".into(),
            json!([{ "containerID": 0, "hostID": uid, "size": 1 }]),
        );
        linux.insert(
            "gidMappings".into(),
            json!([{ "containerID": 0, "hostID": gid, "size": 1 }]),
        );
        linux.remove("resources");
    }
    if let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) {
        for m in mounts.iter_mut() {
            if m["destination"] == "/sys" {
                *m = json!({
                    "destination": "/sys", "type": "none", "source": "/sys",
                    "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]
                });
                continue;
            }
            if let Some(opts) = m.get_mut("options").and_then(Value::as_array_mut) {
                opts.retain(|o| {
                    o.as_str()
                        .is_none_or(|o| !o.starts_with("uid=") && !o.starts_with("gid="))
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Capability, LinuxNamespaceType, Spec};

    fn parse(v: &Value) -> Spec {
        match serde_json::from_value(v.clone()) {
            Ok(s) => s,
            Err(e) => panic!("spec does not parse: {e}"),
        }
    }

    #[test]
    fn default_round_trips_through_oci_spec() {
        let v = default_spec();
        let spec = parse(&v);
        let process = spec.process().as_ref().expect("process");
        assert_eq!(process.terminal(), Some(true));
        assert_eq!(process.args().as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!(process.cwd().to_str(), Some("/"));
        assert_eq!(process.no_new_privileges(), Some(true));
        let caps = process.capabilities().as_ref().expect("caps");
        let bounding = caps.bounding().as_ref().expect("bounding");
        assert_eq!(bounding.len(), 3);
        assert!(bounding.contains(&Capability::NetBindService));
        assert!(caps.inheritable().is_none() && caps.ambient().is_none());
        let rl = &process.rlimits().as_ref().expect("rlimits")[0];
        assert_eq!((rl.hard(), rl.soft()), (1024, 1024));

        let root = spec.root().as_ref().expect("root");
        assert_eq!(root.path().to_str(), Some("rootfs"));
        assert_eq!(root.readonly(), Some(true));
        assert_eq!(spec.hostname().as_deref(), Some("berth"));
        assert_eq!(spec.mounts().as_ref().map(Vec::len), Some(7));

        let linux = spec.linux().as_ref().expect("linux");
        let ns: Vec<LinuxNamespaceType> = linux
            .namespaces()
            .as_ref()
            .expect("namespaces")
            .iter()
            .map(|n| n.typ())
            .collect();
        assert_eq!(ns.len(), 6);
        assert!(!ns.contains(&LinuxNamespaceType::User));
        assert_eq!(linux.masked_paths().as_ref().map(Vec::len), Some(10));
        assert_eq!(linux.readonly_paths().as_ref().map(Vec::len), Some(5));
        let devices = linux
            .resources()
            .as_ref()
            .and_then(|r| r.devices().as_ref())
            .expect("devices");
        assert_eq!(devices.len(), 1);
        assert!(!devices[0].allow());

        // What oci_spec writes back parses to the same thing.
        let again = serde_json::to_value(&spec).expect("serialise");
        assert_eq!(parse(&again), spec);
    }

    #[test]
    fn rootless_variant() {
        let mut v = default_spec();
        make_rootless(&mut v, 1000, 1001);
        let spec = parse(&v);
        let linux = spec.linux().as_ref().expect("linux");
        let ns: Vec<LinuxNamespaceType> = linux
            .namespaces()
            .as_ref()
            .expect("namespaces")
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(ns.contains(&LinuxNamespaceType::User));
        assert!(!ns.contains(&LinuxNamespaceType::Network));
        let uid = &linux.uid_mappings().as_ref().expect("uid map")[0];
        assert_eq!(
            (uid.host_id(), uid.container_id(), uid.size()),
            (1000, 0, 1)
        );
        let gid = &linux.gid_mappings().as_ref().expect("gid map")[0];
        assert_eq!(gid.host_id(), 1001);
        assert!(linux.resources().is_none());

        let mounts = spec.mounts().as_ref().expect("mounts");
        let sys = mounts
            .iter()
            .find(|m| m.destination().to_str() == Some("/sys"))
            .expect("/sys");
        assert_eq!(sys.typ().as_deref(), Some("none"));
        assert!(sys
            .options()
            .as_ref()
            .expect("opts")
            .contains(&"rbind".to_string()));
        let pts = mounts
            .iter()
            .find(|m| m.destination().to_str() == Some("/dev/pts"))
            .expect("/dev/pts");
        assert!(!pts
            .options()
            .as_ref()
            .expect("opts")
            .iter()
            .any(|o| o.starts_with("gid=")));
    }
}
