//! Loading a bundle and rejecting configurations that cannot work before
//! anything is created: every error here names the field or path at fault.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxDeviceCgroup, LinuxDeviceType, LinuxNamespaceType, LinuxResources, Process, Spec,
};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("bundle {path}: {source}")]
    Bundle {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid {path}: {source}")]
    ParseConfig {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("config.json: {0}")]
    Invalid(String),
    #[error("root filesystem {path} does not exist or is not a directory")]
    RootfsMissing { path: PathBuf },
}

/// A loaded bundle: canonical paths plus the parsed spec.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub path: PathBuf,
    pub rootfs: PathBuf,
    pub spec: Spec,
    /// The config.json bytes the spec was parsed from.
    pub raw_config: Vec<u8>,
}

impl Bundle {
    /// Reads and validates `<bundle>/config.json` for creating a container.
    pub fn load(bundle: &Path) -> Result<Self, SpecError> {
        let path = bundle.canonicalize().map_err(|source| SpecError::Bundle {
            path: bundle.to_path_buf(),
            source,
        })?;
        let config_path = path.join("config.json");
        let raw_config = std::fs::read(&config_path).map_err(|source| SpecError::ReadConfig {
            path: config_path.clone(),
            source,
        })?;
        let spec = parse_config(&config_path, &raw_config)?;
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| SpecError::Invalid("\"root\" is missing".into()))?;
        let rootfs_configured = path.join(root.path());
        let rootfs = rootfs_configured
            .canonicalize()
            .ok()
            .filter(|p| p.is_dir())
            .ok_or(SpecError::RootfsMissing {
                path: rootfs_configured,
            })?;
        validate(&spec)?;
        Ok(Self {
            path,
            rootfs,
            spec,
            raw_config,
        })
    }

    pub fn process(&self) -> &Process {
        // `validate` rejected specs without a process.
        self.spec
            .process()
            .as_ref()
            .expect("validated spec has a process")
    }
}

/// Parses a config.json with serde directly so that errors carry line and column.
pub fn read_config(path: &Path) -> Result<Spec, SpecError> {
    let bytes = std::fs::read(path).map_err(|source| SpecError::ReadConfig {
        path: path.to_path_buf(),
        source,
    })?;
    parse_config(path, &bytes)
}

fn parse_config(path: &Path, bytes: &[u8]) -> Result<Spec, SpecError> {
    serde_json::from_slice(bytes).map_err(|source| SpecError::ParseConfig {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(msg: impl Into<String>) -> SpecError {
    SpecError::Invalid(msg.into())
}

/// Structural checks that need no access to the host.
pub fn validate(spec: &Spec) -> Result<(), SpecError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("\"process\" is missing"))?;
    validate_process(process)?;
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| invalid("\"linux\" is missing"))?;

    let namespaces = linux.namespaces().as_deref().unwrap_or_default();
    let mut seen = HashSet::new();
    for ns in namespaces {
        if !seen.insert(ns.typ()) {
            return Err(invalid(format!(
                "namespace \"{}\" is listed more than once",
                ns.typ()
            )));
        }
        if let Some(path) = ns.path() {
            if !path.is_absolute() {
                return Err(invalid(format!(
                    "path of namespace \"{}\" must be absolute: {}",
                    ns.typ(),
                    path.display()
                )));
            }
        }
    }
    let has = |t: LinuxNamespaceType| seen.contains(&t);
    let has_mappings = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if has_mappings && !has(LinuxNamespaceType::User) {
        return Err(invalid(
            "uidMappings/gidMappings are set but there is no user namespace",
        ));
    }
    let new_userns = namespaces
        .iter()
        .any(|ns| ns.typ() == LinuxNamespaceType::User && ns.path().is_none());
    if new_userns && !has_mappings {
        return Err(invalid(
            "a new user namespace needs uidMappings and gidMappings",
        ));
    }
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !has(LinuxNamespaceType::Uts) {
        return Err(invalid(
            "\"hostname\" is set but the container has no uts namespace of its own",
        ));
    }
    if spec.domainname().as_deref().is_some_and(|h| !h.is_empty()) && !has(LinuxNamespaceType::Uts)
    {
        return Err(invalid(
            "\"domainname\" is set but the container has no uts namespace of its own",
        ));
    }
    if linux.time_offsets().as_ref().is_some_and(|t| !t.is_empty())
        && !has(LinuxNamespaceType::Time)
    {
        return Err(invalid(
            "\"timeOffsets\" are set but the container has no time namespace",
        ));
    }
    if !has(LinuxNamespaceType::Mount) && spec.mounts().as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(invalid(
            "\"mounts\" are set but the container has no mount namespace",
        ));
    }
    Ok(())
}

/// Checks a process definition (also used for `exec`).
pub fn validate_process(process: &Process) -> Result<(), SpecError> {
    let args = process.args().as_deref().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(invalid("process.args must name a program to run"));
    }
    if !process.cwd().is_absolute() {
        return Err(invalid(format!(
            "process.cwd must be an absolute path: {:?}",
            process.cwd()
        )));
    }
    for var in process.env().as_deref().unwrap_or_default() {
        if !var.contains('=') || var.starts_with('=') {
            return Err(invalid(format!(
                "process.env entry {var:?} is not of the form KEY=value"
            )));
        }
        if var.contains('\0') {
            return Err(invalid(format!("process.env entry {var:?} contains NUL")));
        }
    }
    if let Some(adj) = process.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(invalid(format!(
                "process.oomScoreAdj {adj} is outside -1000..=1000"
            )));
        }
    }
    let mut rlimit_types = HashSet::new();
    for rlimit in process.rlimits().as_deref().unwrap_or_default() {
        if !rlimit_types.insert(format!("{:?}", rlimit.typ())) {
            return Err(invalid(format!(
                "rlimit {:?} is listed more than once",
                rlimit.typ()
            )));
        }
        if rlimit.soft() > rlimit.hard() {
            return Err(invalid(format!(
                "rlimit {:?}: soft limit {} is above hard limit {}",
                rlimit.typ(),
                rlimit.soft(),
                rlimit.hard()
            )));
        }
    }
    Ok(())
}

/// Device nodes every container gets, as (type, major, minor); the cgroup
/// must allow them or the init could not even create them.
const DEFAULT_ALLOWED_DEVICES: &[(LinuxDeviceType, Option<i64>, Option<i64>)] = &[
    (LinuxDeviceType::C, Some(1), Some(3)), // null
    (LinuxDeviceType::C, Some(1), Some(5)), // zero
    (LinuxDeviceType::C, Some(1), Some(7)), // full
    (LinuxDeviceType::C, Some(1), Some(8)), // random
    (LinuxDeviceType::C, Some(1), Some(9)), // urandom
    (LinuxDeviceType::C, Some(5), Some(0)), // tty
    (LinuxDeviceType::C, Some(5), Some(1)), // console
    (LinuxDeviceType::C, Some(5), Some(2)), // ptmx
    (LinuxDeviceType::C, Some(136), None),  // pts/*
];

/// The resources to apply to the container's cgroup: the spec's, with the
/// device rules extended (after the spec's own, since the last match wins)
/// by mknod permission, the default devices and the spec's device nodes.
pub fn effective_resources(spec: &Spec) -> Option<LinuxResources> {
    let linux = spec.linux().as_ref()?;
    let mut resources = linux.resources().clone()?;
    let mut rules = resources.devices().clone().unwrap_or_default();
    if rules.is_empty() {
        // No rules at all means no device restriction: keep it that way.
        return Some(resources);
    }
    let rule = |typ, major, minor, access: &str| {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true)
            .set_typ(Some(typ))
            .set_major(major)
            .set_minor(minor)
            .set_access(Some(access.to_string()));
        r
    };
    rules.push(rule(LinuxDeviceType::C, None, None, "m"));
    rules.push(rule(LinuxDeviceType::B, None, None, "m"));
    for &(typ, major, minor) in DEFAULT_ALLOWED_DEVICES {
        rules.push(rule(typ, major, minor, "rwm"));
    }
    for device in linux.devices().as_deref().unwrap_or_default() {
        let typ = match device.typ() {
            LinuxDeviceType::B => LinuxDeviceType::B,
            LinuxDeviceType::P => continue,
            _ => LinuxDeviceType::C,
        };
        rules.push(rule(typ, Some(device.major()), Some(device.minor()), "rwm"));
    }
    resources.set_devices(Some(rules));
    Some(resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).expect("test spec parses")
    }

    const BASE: &str = r#"{"ociVersion":"1.2.0","root":{"path":"rootfs"},
        "process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},
        "linux":{"namespaces":[{"type":"pid"},{"type":"mount"}]}}"#;

    #[test]
    fn base_spec_is_valid() {
        validate(&spec(BASE)).expect("valid");
    }

    #[test]
    fn duplicate_namespace_is_named() {
        let s = BASE.replace(r#"{"type":"mount"}"#, r#"{"type":"pid"}"#);
        let err = validate(&spec(&s)).expect_err("duplicate");
        assert!(
            err.to_string().contains("\"pid\" is listed more than once"),
            "{err}"
        );
    }

    #[test]
    fn mappings_without_userns_are_rejected() {
        let s = BASE.replace(
            r#""linux":{"#,
            r#""linux":{"uidMappings":[{"containerID":0,"hostID":1000,"size":1}],"#,
        );
        let err = validate(&spec(&s)).expect_err("no userns");
        assert!(err.to_string().contains("no user namespace"), "{err}");
    }

    #[test]
    fn hostname_needs_uts() {
        let s = BASE.replace(r#""root""#, r#""hostname":"x","root""#);
        let err = validate(&spec(&s)).expect_err("no uts");
        assert!(err.to_string().contains("hostname"), "{err}");
    }

    #[test]
    fn unknown_namespace_type_fails_to_parse_with_its_name() {
        let s = BASE.replace(r#"{"type":"mount"}"#, r#"{"type":"bogus"}"#);
        let err = serde_json::from_str::<Spec>(&s).expect_err("unknown ns");
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn empty_args_rejected() {
        let s = BASE.replace(r#""args":["sh"]"#, r#""args":[]"#);
        let err = validate(&spec(&s)).expect_err("no args");
        assert!(err.to_string().contains("process.args"), "{err}");
    }

    #[test]
    fn default_devices_follow_the_spec_rules() {
        let s = BASE.replace(
            r#""linux":{"#,
            r#""linux":{"resources":{"devices":[{"allow":false,"access":"rwm"}]},"devices":[{"path":"/dev/fuse","type":"c","major":10,"minor":229}],"#,
        );
        let resources = effective_resources(&spec(&s)).expect("resources");
        let rules = resources.devices().clone().expect("rules");
        assert!(!rules[0].allow(), "the spec's deny-all stays first");
        let allows = |major: i64, minor: i64| {
            rules
                .iter()
                .any(|r| r.allow() && r.major() == Some(major) && r.minor() == Some(minor))
        };
        assert!(allows(1, 3), "/dev/null allowed");
        assert!(allows(10, 229), "the spec's own device node allowed");
    }

    #[test]
    fn no_device_rules_stay_unrestricted() {
        let resources = effective_resources(&spec(BASE));
        assert!(resources.is_none_or(|r| r.devices().as_ref().is_none_or(|d| d.is_empty())));
    }
}
