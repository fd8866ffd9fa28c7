//! The OCI runtime features document (`berth-runc features`): which spec
//! version, hooks, mount options, namespaces, capabilities and security
//! facilities this runtime understands.

use std::collections::HashMap;

use anyhow::{Context, Result};
use oci_spec::runtime::{
    Apparmor, Arch, Cgroup, Features, IDMap, IntelRdt, LinuxFeature, LinuxNamespaceType,
    LinuxSeccompAction, MemoryPolicy, MountExtensions, NetDevices, Seccomp, Selinux,
};

/// Hooks, in the order they run.
const HOOKS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// Mount options the rootfs code understands: mount(2) flags and their
/// negations, recursive bind, and propagation types.
const MOUNT_OPTIONS: [&str; 43] = [
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "iversion",
    "lazytime",
    "loud",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "noiversion",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "rbind",
    "relatime",
    "remount",
    "ro",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "symfollow",
    "sync",
    "unbindable",
    "acl",
    "noacl",
];

/// Every capability the kernel defines, in number order.
pub const CAPABILITIES: [&str; 41] = berth_runtime::capabilities::ALL_NAMES;

const SECCOMP_OPERATORS: [&str; 7] = [
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];

const SECCOMP_KNOWN_FLAGS: [&str; 4] = [
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

const SECCOMP_SUPPORTED_FLAGS: [&str; 3] = [
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
];

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The features document.
pub fn features() -> Features {
    use LinuxNamespaceType as Ns;
    use LinuxSeccompAction as Act;

    let mut cgroup = Cgroup::default();
    cgroup.set_v1(Some(true));
    cgroup.set_v2(Some(true));
    cgroup.set_systemd(Some(false));
    cgroup.set_systemd_user(Some(false));
    cgroup.set_rdma(Some(false));

    let mut seccomp = Seccomp::default();
    seccomp.set_enabled(Some(true));
    seccomp.set_actions(Some(vec![
        Act::ScmpActAllow,
        Act::ScmpActErrno,
        Act::ScmpActKill,
        Act::ScmpActKillProcess,
        Act::ScmpActKillThread,
        Act::ScmpActLog,
        Act::ScmpActNotify,
        Act::ScmpActTrace,
        Act::ScmpActTrap,
    ]));
    seccomp.set_operators(Some(strings(&SECCOMP_OPERATORS)));
    seccomp.set_archs(Some(vec![
        Arch::ScmpArchX86,
        Arch::ScmpArchX86_64,
        Arch::ScmpArchX32,
        Arch::ScmpArchArm,
        Arch::ScmpArchAarch64,
        Arch::ScmpArchMips,
        Arch::ScmpArchMips64,
        Arch::ScmpArchMips64n32,
        Arch::ScmpArchMipsel,
        Arch::ScmpArchMipsel64,
        Arch::ScmpArchMipsel64n32,
        Arch::ScmpArchPpc,
        Arch::ScmpArchPpc64,
        Arch::ScmpArchPpc64le,
        Arch::ScmpArchS390,
        Arch::ScmpArchS390x,
    ]));
    seccomp.set_known_flags(Some(strings(&SECCOMP_KNOWN_FLAGS)));
    seccomp.set_supported_flags(Some(strings(&SECCOMP_SUPPORTED_FLAGS)));

    let mut apparmor = Apparmor::default();
    apparmor.set_enabled(Some(true));
    let mut selinux = Selinux::default();
    selinux.set_enabled(Some(true));
    let mut intel_rdt = IntelRdt::default();
    intel_rdt.set_enabled(Some(false));
    let mut idmap = IDMap::default();
    idmap.set_enabled(Some(false));
    let mut mount_ext = MountExtensions::default();
    mount_ext.set_idmap(Some(idmap));
    // Every field is set: an unset one would print as null ("unknown").
    let mut memory_policy = MemoryPolicy::default();
    memory_policy.set_modes(Some(Vec::new()));
    memory_policy.set_flags(Some(Vec::new()));
    let mut net_devices = NetDevices::default();
    net_devices.set_enabled(Some(false));

    let mut linux = LinuxFeature::default();
    linux.set_namespaces(Some(vec![
        Ns::Cgroup,
        Ns::Ipc,
        Ns::Mount,
        Ns::Network,
        Ns::Pid,
        Ns::User,
        Ns::Uts,
    ]));
    linux.set_capabilities(Some(strings(&CAPABILITIES)));
    linux.set_cgroup(Some(cgroup));
    linux.set_seccomp(Some(seccomp));
    linux.set_apparmor(Some(apparmor));
    linux.set_selinux(Some(selinux));
    linux.set_intel_rdt(Some(intel_rdt));
    linux.set_mount_extensions(Some(mount_ext));
    linux.set_memory_policy(Some(memory_policy));
    linux.set_net_devices(Some(net_devices));

    let annotations = HashMap::from([
        (
            "org.opencontainers.runc.checkpoint.enabled".to_string(),
            "false".to_string(),
        ),
        (
            "io.berth.runc.version".to_string(),
            crate::VERSION.to_string(),
        ),
    ]);

    let mut f = Features::default();
    f.set_oci_version_min("1.0.0".to_string());
    f.set_oci_version_max(crate::OCI_VERSION.to_string());
    f.set_hooks(Some(strings(&HOOKS)));
    f.set_mount_options(Some(strings(&MOUNT_OPTIONS)));
    f.set_linux(Some(linux));
    f.set_annotations(Some(annotations));
    // We interpret no annotation that could weaken the container.
    f.set_potentially_unsafe_config_annotations(Some(Vec::new()));
    f
}

/// The document as pretty JSON, fields in the spec's order.
pub fn features_json() -> Result<String> {
    serde_json::to_string_pretty(&features()).context("serialising features")
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability;
    use serde_json::Value;

    #[test]
    fn shape() {
        let text = features_json().expect("features");
        // Every field is known: nothing prints as null.
        assert!(!text.contains("null"), "{text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["ociVersionMin"], "1.0.0");
        assert_eq!(v["ociVersionMax"], crate::OCI_VERSION);
        assert_eq!(v["hooks"].as_array().map(Vec::len), Some(6));
        assert!(v["mountOptions"]
            .as_array()
            .is_some_and(|o| o.iter().any(|x| x == "rbind")));
        let linux = &v["linux"];
        assert_eq!(linux["namespaces"][0], "cgroup");
        assert!(linux["namespaces"]
            .as_array()
            .is_some_and(|n| n.iter().any(|x| x == "network")));
        assert_eq!(linux["capabilities"].as_array().map(Vec::len), Some(41));
        assert_eq!(linux["cgroup"]["v1"], true);
        assert_eq!(linux["cgroup"]["v2"], true);
        assert_eq!(linux["cgroup"]["systemd"], false);
        assert_eq!(linux["cgroup"]["systemdUser"], false);
        assert_eq!(linux["cgroup"]["rdma"], false);
        assert_eq!(linux["seccomp"]["enabled"], true);
        assert!(linux["seccomp"]["actions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "SCMP_ACT_ERRNO")));
        assert!(linux["seccomp"]["archs"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "SCMP_ARCH_X86_64")));
        assert_eq!(linux["apparmor"]["enabled"], true);
        assert_eq!(linux["selinux"]["enabled"], true);
        assert_eq!(linux["intelRdt"]["enabled"], false);
        assert_eq!(linux["mountExtensions"]["idmap"]["enabled"], false);
        assert_eq!(
            v["annotations"]["org.opencontainers.runc.checkpoint.enabled"],
            "false"
        );
        // And it reads back as a features document.
        let back: Features = serde_json::from_value(v).expect("parse back");
        assert_eq!(back, features());
    }

    #[test]
    fn capability_names_are_known_to_oci_spec() {
        for name in CAPABILITIES {
            let parsed: Result<Capability, _> = serde_json::from_value(Value::from(name));
            assert!(parsed.is_ok(), "{name}");
        }
        let mut sorted = CAPABILITIES.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), CAPABILITIES.len());
    }
}
