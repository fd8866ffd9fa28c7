//! A config.json builder whose default is what `runc spec` writes, tuned for tests (no
//! terminal, a cgroup namespace), with small methods to change each part.

use serde_json::{json, Value};

/// The default capability set of `runc spec`.
pub const DEFAULT_CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

/// The namespaces of the default spec.
pub const DEFAULT_NAMESPACES: [&str; 6] = ["pid", "network", "ipc", "uts", "mount", "cgroup"];

/// Kernel capability numbers for the names the tests use.
pub fn cap_number(name: &str) -> u32 {
    match name {
        "CAP_CHOWN" => 0,
        "CAP_DAC_OVERRIDE" => 1,
        "CAP_FOWNER" => 3,
        "CAP_KILL" => 5,
        "CAP_SETGID" => 6,
        "CAP_SETUID" => 7,
        "CAP_NET_BIND_SERVICE" => 10,
        "CAP_NET_RAW" => 13,
        "CAP_SYS_CHROOT" => 18,
        "CAP_SYS_ADMIN" => 21,
        "CAP_MKNOD" => 27,
        "CAP_AUDIT_WRITE" => 29,
        "CAP_SETFCAP" => 31,
        other => panic!("cap_number: add {other}"),
    }
}

/// The 16-hex-digit mask `/proc/<pid>/status` prints for a set of capabilities.
pub fn cap_mask_hex(caps: &[&str]) -> String {
    let mask = caps.iter().fold(0u64, |m, c| m | (1u64 << cap_number(c)));
    format!("{mask:016x}")
}

/// An OCI runtime spec (config.json) as JSON, with builder-style setters.
#[derive(Debug, Clone)]
pub struct Spec {
    pub value: Value,
}

impl Default for Spec {
    fn default() -> Self {
        Self::runc_default()
    }
}

impl Spec {
    /// `runc spec`'s default, with `terminal: false`, args `["sh"]` and the namespaces of
    /// [`DEFAULT_NAMESPACES`].
    pub fn runc_default() -> Self {
        let caps = json!(DEFAULT_CAPS);
        let value = json!({
            "ociVersion": "1.0.2-dev",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": ["sh"],
                "env": [
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"
                ],
                "cwd": "/",
                "capabilities": {
                    "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps
                },
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "berth",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                 "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                 "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                 "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
            ],
            "linux": {
                "resources": {"devices": [{"allow": false, "access": "rwm"}]},
                "namespaces": DEFAULT_NAMESPACES.iter().map(|t| json!({"type": t})).collect::<Vec<_>>(),
                "maskedPaths": [
                    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                    "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
                ],
                "readonlyPaths": [
                    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
                ]
            }
        });
        Spec { value }
    }

    /// The JSON text of config.json.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.value).expect("a JSON value serializes")
    }

    /// Mutable access to the object at a JSON pointer, creating objects on the way.
    pub fn at(&mut self, pointer: &str) -> &mut Value {
        let mut cur = &mut self.value;
        for key in pointer.split('/').filter(|k| !k.is_empty()) {
            if !cur.is_object() {
                *cur = json!({});
            }
            cur = cur
                .as_object_mut()
                .expect("made an object above")
                .entry(key.to_string())
                .or_insert(Value::Null);
        }
        cur
    }

    /// Sets the value at a JSON pointer (e.g. `/linux/resources/memory`).
    pub fn set(&mut self, pointer: &str, v: Value) -> &mut Self {
        *self.at(pointer) = v;
        self
    }

    /// Removes the key at a JSON pointer, if present.
    pub fn remove(&mut self, pointer: &str) -> &mut Self {
        let (parent, key) = pointer.rsplit_once('/').expect("pointer has a /");
        if let Some(obj) = self
            .value
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
        {
            obj.remove(key);
        }
        self
    }

    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.set("/process/args", json!(args))
    }

    /// `sh -c SCRIPT`.
    pub fn shell(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    pub fn env(&mut self, env: &[&str]) -> &mut Self {
        self.set("/process/env", json!(env))
    }

    pub fn add_env(&mut self, kv: &str) -> &mut Self {
        let env = self.at("/process/env");
        match env.as_array_mut() {
            Some(a) => a.push(json!(kv)),
            None => *env = json!([kv]),
        }
        self
    }

    pub fn cwd(&mut self, cwd: &str) -> &mut Self {
        self.set("/process/cwd", json!(cwd))
    }

    pub fn user(&mut self, uid: u32, gid: u32, additional_gids: &[u32]) -> &mut Self {
        let mut user = json!({"uid": uid, "gid": gid});
        if !additional_gids.is_empty() {
            user["additionalGids"] = json!(additional_gids);
        }
        self.set("/process/user", user)
    }

    pub fn umask(&mut self, umask: u32) -> &mut Self {
        self.set("/process/user/umask", json!(umask))
    }

    pub fn terminal(&mut self, on: bool) -> &mut Self {
        self.set("/process/terminal", json!(on))
    }

    pub fn hostname(&mut self, name: &str) -> &mut Self {
        self.set("/hostname", json!(name))
    }

    pub fn readonly_rootfs(&mut self, ro: bool) -> &mut Self {
        self.set("/root/readonly", json!(ro))
    }

    pub fn root_path(&mut self, path: &str) -> &mut Self {
        self.set("/root/path", json!(path))
    }

    pub fn no_new_privileges(&mut self, on: bool) -> &mut Self {
        self.set("/process/noNewPrivileges", json!(on))
    }

    /// Sets all four capability sets (bounding, effective, permitted, ambient) to `caps`.
    pub fn capabilities(&mut self, caps: &[&str]) -> &mut Self {
        let c = json!(caps);
        self.set(
            "/process/capabilities",
            json!({"bounding": c, "effective": c, "permitted": c, "ambient": c}),
        )
    }

    pub fn rlimit(&mut self, kind: &str, soft: u64, hard: u64) -> &mut Self {
        let rl = self.at("/process/rlimits");
        if !rl.is_array() {
            *rl = json!([]);
        }
        let arr = rl.as_array_mut().expect("made an array above");
        arr.retain(|r| r["type"] != kind);
        arr.push(json!({"type": kind, "soft": soft, "hard": hard}));
        self
    }

    /// Replaces the namespace list with these types (no paths).
    pub fn namespaces(&mut self, types: &[&str]) -> &mut Self {
        let ns: Vec<Value> = types.iter().map(|t| json!({"type": t})).collect();
        self.set("/linux/namespaces", json!(ns))
    }

    /// Adds a namespace entry, replacing one of the same type; `path` joins an existing one.
    pub fn namespace(&mut self, kind: &str, path: Option<&str>) -> &mut Self {
        let list = self.at("/linux/namespaces");
        if !list.is_array() {
            *list = json!([]);
        }
        let arr = list.as_array_mut().expect("made an array above");
        arr.retain(|n| n["type"] != kind);
        let mut entry = json!({"type": kind});
        if let Some(p) = path {
            entry["path"] = json!(p);
        }
        arr.push(entry);
        self
    }

    /// Appends a raw namespace entry, without de-duplicating (for invalid-config tests).
    pub fn push_namespace_raw(&mut self, entry: Value) -> &mut Self {
        let list = self.at("/linux/namespaces");
        if let Some(arr) = list.as_array_mut() {
            arr.push(entry);
        }
        self
    }

    pub fn remove_namespace(&mut self, kind: &str) -> &mut Self {
        if let Some(arr) = self
            .value
            .pointer_mut("/linux/namespaces")
            .and_then(Value::as_array_mut)
        {
            arr.retain(|n| n["type"] != kind);
        }
        self
    }

    /// Sets `linux.resources.<key>` (e.g. `"memory"`, `json!({"limit": 33554432})`).
    pub fn resource(&mut self, key: &str, v: Value) -> &mut Self {
        self.set(&format!("/linux/resources/{key}"), v)
    }

    pub fn cgroups_path(&mut self, path: &str) -> &mut Self {
        self.set("/linux/cgroupsPath", json!(path))
    }

    /// Adds a hook of `kind` (`prestart`, `createRuntime`, `createContainer`, `startContainer`,
    /// `poststart`, `poststop`).
    pub fn hook(
        &mut self,
        kind: &str,
        path: &str,
        args: &[&str],
        timeout: Option<u32>,
    ) -> &mut Self {
        let list = self.at(&format!("/hooks/{kind}"));
        if !list.is_array() {
            *list = json!([]);
        }
        let mut h = json!({"path": path, "args": args});
        if let Some(t) = timeout {
            h["timeout"] = json!(t);
        }
        list.as_array_mut().expect("made an array above").push(h);
        self
    }

    /// Adds a `/bin/sh -c SCRIPT` hook.
    pub fn shell_hook(&mut self, kind: &str, script: &str, timeout: Option<u32>) -> &mut Self {
        self.hook(kind, "/bin/sh", &["sh", "-c", script], timeout)
    }

    pub fn seccomp(&mut self, profile: Value) -> &mut Self {
        self.set("/linux/seccomp", profile)
    }

    /// Uid and gid mappings of one contiguous range each.
    pub fn id_mappings(&mut self, container_id: u32, host_id: u32, size: u32) -> &mut Self {
        let m = json!([{"containerID": container_id, "hostID": host_id, "size": size}]);
        self.set("/linux/uidMappings", m.clone());
        self.set("/linux/gidMappings", m)
    }

    pub fn add_mount(&mut self, mount: Value) -> &mut Self {
        let list = self.at("/mounts");
        if let Some(arr) = list.as_array_mut() {
            arr.push(mount);
        }
        self
    }

    /// Removes mounts whose destination is `dest`.
    pub fn remove_mount(&mut self, dest: &str) -> &mut Self {
        if let Some(arr) = self
            .value
            .pointer_mut("/mounts")
            .and_then(Value::as_array_mut)
        {
            arr.retain(|m| m["destination"] != dest);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_caps_mask() {
        assert_eq!(cap_mask_hex(&DEFAULT_CAPS), "0000000020000420");
    }

    #[test]
    fn setters_edit_the_json() {
        let mut s = Spec::default();
        s.args(&["true"])
            .namespace("uts", Some("/proc/1/ns/uts"))
            .remove_namespace("cgroup");
        s.resource("pids", json!({"limit": 10}))
            .hook("poststop", "/bin/true", &["true"], Some(3));
        let v = &s.value;
        assert_eq!(v["process"]["args"], json!(["true"]));
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], 10);
        assert_eq!(v["hooks"]["poststop"][0]["timeout"], 3);
        let ns = v["linux"]["namespaces"].as_array().expect("array");
        assert!(ns.iter().any(|n| n["path"] == "/proc/1/ns/uts"));
        assert!(!ns.iter().any(|n| n["type"] == "cgroup"));
        s.remove("/hostname");
        assert!(s.value.get("hostname").is_none());
    }
}
