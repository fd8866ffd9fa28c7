//! From a create request and an image config to a resolved configuration
//! (Docker's merge rules) and to the OCI bundle's `config.json` (Docker's
//! defaults: capabilities, masked paths, mounts, seccomp, devices).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use berth_image::manifest::ContainerConfig;
use serde_json::{json, Value};

use super::error::ContainerError;
use super::types::{ContainerCreate, ContainerRecord, ResolvedConfig};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The 14 capabilities Docker grants by default.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const ALL_CAPS: &[&str] = &berth_runtime::capabilities::ALL_NAMES;

const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Docker's entrypoint/cmd/env/workdir/user/labels merge.
pub fn resolve(
    create: &ContainerCreate,
    image: &ContainerConfig,
    id: &str,
) -> Result<ResolvedConfig, ContainerError> {
    let (entrypoint, cmd) = match &create.entrypoint {
        // An explicit entrypoint resets the image's Cmd.
        Some(ep) => (ep.clone(), create.cmd.clone().unwrap_or_default()),
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            create
                .cmd
                .clone()
                .or_else(|| image.cmd.clone())
                .unwrap_or_default(),
        ),
    };
    if entrypoint.is_empty() && cmd.is_empty() {
        return Err(ContainerError::InvalidParameter(
            "No command specified".into(),
        ));
    }
    let hostname = match &create.hostname {
        Some(h) if !h.is_empty() => h.clone(),
        _ if create.host_config.network_mode == "host" => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| id.chars().take(12).collect()),
        _ => id.chars().take(12).collect(),
    };
    let mut env = merge_env(image.env.as_deref().unwrap_or_default(), &create.env)?;
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.insert(1.min(env.len()), format!("HOSTNAME={hostname}"));
    }
    if create.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let mut labels: BTreeMap<String, String> = image.labels.clone().unwrap_or_default();
    labels.extend(create.labels.clone());
    let working_dir = create
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| image.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    if !working_dir.starts_with('/') {
        return Err(ContainerError::InvalidParameter(format!(
            "the working directory '{working_dir}' is invalid, it needs to be an absolute path"
        )));
    }
    let stop_signal = create
        .stop_signal
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| image.stop_signal.clone().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "SIGTERM".into());
    parse_signal(&stop_signal)?;
    Ok(ResolvedConfig {
        entrypoint,
        cmd,
        env,
        working_dir,
        user: create
            .user
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| image.user.clone())
            .unwrap_or_default(),
        labels,
        stop_signal,
        hostname,
        exposed_ports: image
            .exposed_ports
            .as_ref()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default(),
        healthcheck: super::health::merge(create.healthcheck.as_ref(), image.healthcheck.as_ref())?,
    })
}

/// Image env, then the request's: same key replaces, a bare `KEY` is dropped
/// unless it names a variable (Docker takes it from the client env; the API
/// gets it already resolved).
fn merge_env(image: &[String], request: &[String]) -> Result<Vec<String>, ContainerError> {
    let mut out: Vec<String> = image.to_vec();
    for e in request {
        let key = e.split('=').next().unwrap_or_default();
        if key.is_empty() {
            return Err(ContainerError::InvalidParameter(format!(
                "invalid environment variable: {e}"
            )));
        }
        if !e.contains('=') {
            continue;
        }
        match out.iter_mut().find(|x| x.split('=').next() == Some(key)) {
            Some(slot) => *slot = e.clone(),
            None => out.push(e.clone()),
        }
    }
    Ok(out)
}

/// `SIGTERM`, `TERM`, `term` or `15`.
pub fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal, ContainerError> {
    use std::str::FromStr;
    let bad = || ContainerError::InvalidParameter(format!("Invalid signal: {s}"));
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name).map_err(|_| bad())
}

/// Numeric uid, gid and supplementary groups for `user` (`name`, `uid`,
/// `name:group`, `uid:gid`) from the container's /etc/passwd and /etc/group.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32, Vec<u32>), ContainerError> {
    if user.is_empty() {
        return Ok((0, 0, Vec::new()));
    }
    let passwd = fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let group = fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == u || f[2] == u));
    let (uid, mut gid, name) = match (u.parse::<u32>(), &entry) {
        (_, Some(f)) => (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            Some(f[0].to_string()),
        ),
        (Ok(uid), None) => (uid, 0, None),
        (Err(_), None) => {
            return Err(ContainerError::InvalidParameter(format!(
                "unable to find user {u}: no matching entries in passwd file"
            )))
        }
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    ContainerError::InvalidParameter(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        };
    }
    let mut extra = Vec::new();
    if let Some(name) = name {
        for f in group.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(n) = f[2].parse::<u32>() {
                    if n != gid {
                        extra.push(n);
                    }
                }
            }
        }
    }
    Ok((uid, gid, extra))
}

fn normalize_cap(c: &str) -> String {
    let upper = c.to_ascii_uppercase();
    if upper.starts_with("CAP_") || upper == "ALL" {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// Docker's capability arithmetic: defaults (or all when privileged), then
/// drops, then adds (`ALL` allowed in both).
pub fn capabilities(create: &ContainerCreate) -> Result<Vec<String>, ContainerError> {
    let hc = &create.host_config;
    if hc.privileged {
        return Ok(ALL_CAPS.iter().map(|s| s.to_string()).collect());
    }
    let known = |c: &str| c == "ALL" || ALL_CAPS.contains(&c);
    let mut set: BTreeSet<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    for c in hc.cap_drop.iter().map(|c| normalize_cap(c)) {
        if !known(&c) {
            return Err(ContainerError::InvalidParameter(format!(
                "unknown capability: \"{c}\""
            )));
        }
        if c == "ALL" {
            set.clear();
        } else {
            set.remove(&c);
        }
    }
    for c in hc.cap_add.iter().map(|c| normalize_cap(c)) {
        if !known(&c) {
            return Err(ContainerError::InvalidParameter(format!(
                "unknown capability: \"{c}\""
            )));
        }
        if c == "ALL" {
            set.extend(ALL_CAPS.iter().map(|s| s.to_string()));
        } else {
            set.insert(c);
        }
    }
    Ok(set.into_iter().collect())
}

/// Security options we understand: (seccomp unconfined, no_new_privileges).
pub fn security_options(opts: &[String]) -> Result<(bool, bool), ContainerError> {
    let mut unconfined = false;
    let mut nnp = false;
    for o in opts {
        let (k, v) = match o.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (o.as_str(), None),
        };
        match (k, v) {
            ("seccomp", Some("unconfined")) => unconfined = true,
            ("no-new-privileges", None | Some("true")) => nnp = true,
            ("no-new-privileges", Some("false")) => nnp = false,
            // AppArmor/SELinux labels: accepted and not enforced yet.
            ("apparmor", Some(_)) | ("label", Some(_)) => {}
            _ => {
                return Err(ContainerError::InvalidParameter(format!(
                    "invalid --security-opt: {o:?}"
                )))
            }
        }
    }
    Ok((unconfined, nnp))
}

fn default_devices() -> Value {
    let c = |major: i64, minor: Option<i64>| json!({ "allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm" });
    json!([
        { "allow": false, "access": "rwm" },
        { "allow": true, "type": "c", "access": "m" },
        { "allow": true, "type": "b", "access": "m" },
        c(1, Some(3)),
        c(1, Some(5)),
        c(1, Some(7)),
        c(1, Some(8)),
        c(1, Some(9)),
        c(5, Some(0)),
        c(5, Some(1)),
        c(5, Some(2)),
        c(136, None),
        c(10, Some(200)),
    ])
}

/// Writes /etc/hostname, /etc/hosts and /etc/resolv.conf for the container
/// into its directory.
pub fn write_etc_files(
    dir: &Path,
    resolved: &ResolvedConfig,
    host_net: bool,
) -> Result<(), ContainerError> {
    let io = |p: &Path| ContainerError::io(format!("writing {}", p.display()));
    let p = dir.join("hostname");
    fs::write(&p, format!("{}\n", resolved.hostname)).map_err(io(&p))?;
    let p = dir.join("hosts");
    let hosts = if host_net {
        fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t{}\n",
            resolved.hostname
        )
    };
    fs::write(&p, hosts).map_err(io(&p))?;
    let p = dir.join("resolv.conf");
    let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv: String = if host_net {
        host_resolv
    } else {
        // Like Docker: a loopback nameserver of the host is useless in a
        // network namespace of its own.
        host_resolv
            .lines()
            .filter(|l| {
                let mut f = l.split_whitespace();
                !(f.next() == Some("nameserver")
                    && f.next()
                        .is_some_and(|a| a.starts_with("127.") || a == "::1"))
            })
            .map(|l| format!("{l}\n"))
            .collect()
    };
    fs::write(&p, resolv).map_err(io(&p))?;
    Ok(())
}

/// The OCI `config.json` for the record (its rootfs must be mounted: the
/// user is resolved from its /etc/passwd). `init` is the installed init
/// program ([`super::init::install`]) when the container runs with `--init`.
pub fn build(
    record: &ContainerRecord,
    dir: &Path,
    init: Option<&Path>,
) -> Result<Value, ContainerError> {
    let create = &record.config;
    let hc = &create.host_config;
    let resolved = &record.resolved;
    let rootfs = dir.join("rootfs");
    let net = hc.network_mode.as_str();
    let host_net = match net {
        "host" => true,
        // Other modes (networks, container:<id>) are checked by the network module.
        _ => false,
    };
    write_etc_files(dir, resolved, host_net)?;
    let (uid, gid, extra_gids) = resolve_user(&rootfs, &resolved.user)?;
    let caps = capabilities(create)?;
    let (unconfined, nnp) = security_options(&hc.security_opt)?;

    // With --init, as Docker: the init runs the command as its child.
    let mut args: Vec<String> = match init {
        Some(_) => vec![super::init::CONTAINER_PATH.into(), "--".into()],
        None => Vec::new(),
    };
    args.extend(resolved.entrypoint.iter().cloned());
    args.extend(resolved.cmd.iter().cloned());
    let mut process = json!({
        "terminal": create.tty,
        "user": { "uid": uid, "gid": gid },
        "args": args,
        "env": resolved.env,
        "cwd": resolved.working_dir,
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps
        },
        "noNewPrivileges": nnp,
    });
    if let Some((height, width)) = hc.console_size.filter(|_| create.tty) {
        process["consoleSize"] = json!({ "height": height, "width": width });
    }
    if !extra_gids.is_empty() {
        process["user"]["additionalGids"] = json!(extra_gids);
    }
    if hc.oom_score_adj != 0 {
        process["oomScoreAdj"] = json!(hc.oom_score_adj);
    }

    let sys_ro = if hc.privileged { "rw" } else { "ro" };
    let mut mounts = vec![
        json!({ "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }),
        json!({ "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] }),
        json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", sys_ro] }),
        json!({ "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", sys_ro] }),
        json!({ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] }),
    ];
    for f in ["hostname", "hosts", "resolv.conf"] {
        mounts.push(json!({
            "destination": format!("/etc/{f}"),
            "type": "bind",
            "source": dir.join(f),
            "options": ["rbind", "rprivate"],
        }));
    }
    if let Some(init) = init {
        mounts.push(json!({
            "destination": super::init::CONTAINER_PATH,
            "type": "bind",
            "source": init,
            "options": ["bind", "ro"],
        }));
    }
    mounts.extend(super::mounts::oci_mounts(&record.mounts));
    for (dst, opts) in &hc.tmpfs {
        if !dst.starts_with('/') {
            return Err(ContainerError::InvalidParameter(format!(
                "invalid tmpfs mount point: {dst}"
            )));
        }
        let mut options: Vec<String> = vec!["noexec".into(), "nosuid".into(), "nodev".into()];
        options.extend(opts.split(',').filter(|o| !o.is_empty()).map(String::from));
        mounts.push(
            json!({ "destination": dst, "type": "tmpfs", "source": "tmpfs", "options": options }),
        );
    }

    let mut namespaces = vec![
        json!({ "type": "pid" }),
        json!({ "type": "ipc" }),
        json!({ "type": "uts" }),
        json!({ "type": "mount" }),
        json!({ "type": "cgroup" }),
    ];
    if !host_net {
        namespaces.push(json!({ "type": "network" }));
    }

    let mut resources = json!({});
    if hc.privileged {
        resources["devices"] = json!([{ "allow": true, "access": "rwm" }]);
    } else {
        resources["devices"] = default_devices();
    }
    if hc.memory > 0 {
        resources["memory"] = json!({ "limit": hc.memory });
        if hc.memory_swap > 0 || hc.memory_swap == -1 {
            resources["memory"]["swap"] = json!(hc.memory_swap);
        }
    } else if hc.memory < 0 {
        return Err(ContainerError::InvalidParameter(
            "invalid memory limit".into(),
        ));
    }
    if hc.nano_cpus != 0 || hc.cpu_shares != 0 {
        let mut cpu = json!({});
        if hc.nano_cpus > 0 {
            let period: i64 = 100_000;
            cpu["period"] = json!(period);
            cpu["quota"] = json!(hc.nano_cpus * period / 1_000_000_000);
        } else if hc.nano_cpus < 0 {
            return Err(ContainerError::InvalidParameter("invalid NanoCPUs".into()));
        }
        if hc.cpu_shares != 0 {
            cpu["shares"] = json!(hc.cpu_shares);
        }
        resources["cpu"] = cpu;
    }
    if hc.pids_limit > 0 {
        resources["pids"] = json!({ "limit": hc.pids_limit });
    }

    let mut linux = json!({
        "resources": resources,
        "cgroupsPath": format!("/berth/{}", record.id),
        "namespaces": namespaces,
    });
    if !hc.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
        if !unconfined {
            let set: oci_spec::runtime::Capabilities = caps
                .iter()
                .filter_map(|c| serde_json::from_value(json!(c)).ok())
                .collect();
            let profile = berth_runtime::seccomp::docker_default_profile_for(&set);
            linux["seccomp"] = serde_json::to_value(&profile)
                .map_err(|e| ContainerError::InvalidParameter(format!("seccomp profile: {e}")))?;
        }
    }

    Ok(json!({
        "ociVersion": "1.2.0",
        "process": process,
        "root": { "path": rootfs, "readonly": hc.read_only_rootfs },
        "hostname": resolved.hostname,
        "mounts": mounts,
        "linux": linux,
        "annotations": { "org.berth.container.name": record.name },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entrypoint_cmd_rules() {
        let image = ContainerConfig {
            entrypoint: Some(vec!["/ep".into()]),
            cmd: Some(vec!["a".into()]),
            env: Some(vec!["A=1".into(), "PATH=/x".into()]),
            ..Default::default()
        };
        let mut c = ContainerCreate {
            env: vec!["A=2".into(), "B=3".into()],
            ..Default::default()
        };
        let r = resolve(&c, &image, "0123456789abcdef").expect("resolve");
        assert_eq!(
            (r.entrypoint.clone(), r.cmd.clone()),
            (vec!["/ep".into()], vec!["a".into()])
        );
        assert!(r.env.contains(&"A=2".into()) && r.env.contains(&"B=3".into()));
        assert!(r.env.contains(&"PATH=/x".into()));
        assert!(r.env.contains(&"HOSTNAME=0123456789ab".into()));
        c.cmd = Some(vec!["b".into()]);
        let r = resolve(&c, &image, "x").expect("resolve");
        assert_eq!(r.cmd, vec!["b".to_string()]);
        c.entrypoint = Some(vec!["/other".into()]);
        c.cmd = None;
        let r = resolve(&c, &image, "x").expect("resolve");
        assert_eq!((r.entrypoint, r.cmd), (vec!["/other".into()], vec![]));
        c.entrypoint = Some(vec![]);
        assert!(resolve(&c, &image, "x").is_err());
    }

    #[test]
    fn caps_and_signals() {
        let mut c = ContainerCreate::default();
        assert_eq!(capabilities(&c).expect("caps").len(), 14);
        c.host_config.cap_drop = vec!["ALL".into()];
        c.host_config.cap_add = vec!["net_admin".into()];
        assert_eq!(
            capabilities(&c).expect("caps"),
            vec!["CAP_NET_ADMIN".to_string()]
        );
        c.host_config.cap_add = vec!["bogus".into()];
        assert!(capabilities(&c).is_err());
        assert_eq!(
            parse_signal("TERM").ok(),
            Some(nix::sys::signal::Signal::SIGTERM)
        );
        assert_eq!(
            parse_signal("9").ok(),
            Some(nix::sys::signal::Signal::SIGKILL)
        );
        assert!(parse_signal("NOPE").is_err());
        assert_eq!(
            security_options(&["seccomp=unconfined".into()]).ok(),
            Some((true, false))
        );
        assert!(security_options(&["bogus".into()]).is_err());
    }
}
