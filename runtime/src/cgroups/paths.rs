//! Where a container's cgroup lives: `linux.cgroupsPath` normalisation,
//! v1 hierarchies from `/proc/self/mountinfo`, and the caller's own cgroup
//! from `/proc/self/cgroup`.

use std::path::{Component, Path, PathBuf};

use super::CgroupError;

pub(super) const DEFAULT_ROOT: &str = "/sys/fs/cgroup";
const MOUNTINFO: &str = "/proc/self/mountinfo";
const SELF_CGROUP: &str = "/proc/self/cgroup";

/// Controller names a v1 mount's super options may carry. Anything else in
/// the options (`rw`, `xattr`, `release_agent=...`) is not a controller.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "debug",
];

/// A normalised `linux.cgroupsPath`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct CgroupPath {
    /// Relative to the hierarchy root (`absolute`) or to the caller's cgroup.
    pub absolute: bool,
    /// The components, without a leading `/`.
    pub path: PathBuf,
    /// What `relative_path()` reports: `path` with a leading `/` when absolute.
    pub display: PathBuf,
}

/// Normalises `linux.cgroupsPath`: maps systemd's `slice:prefix:name` to
/// `/slice/prefix-name.scope`, drops `.` components and rejects `..`, an
/// empty path and the hierarchy root.
pub(super) fn normalize(raw: &Path) -> Result<CgroupPath, CgroupError> {
    let invalid = |reason| CgroupError::InvalidPath {
        path: raw.to_path_buf(),
        reason,
    };
    let text = raw
        .to_str()
        .ok_or_else(|| invalid("the path is not valid UTF-8"))?;
    let mapped;
    let (absolute, source) = if !text.starts_with('/') && !text.contains('/') {
        match systemd_to_path(text) {
            Some(p) => {
                mapped = p;
                (true, Path::new(&mapped))
            }
            None => (false, raw),
        }
    } else {
        (raw.is_absolute(), raw)
    };
    let mut path = PathBuf::new();
    for comp in source.components() {
        match comp {
            Component::Normal(c) => path.push(c),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(invalid("\"..\" components are not allowed")),
            Component::Prefix(_) => return Err(invalid("unexpected path prefix")),
        }
    }
    if path.as_os_str().is_empty() {
        return Err(invalid(
            "the path names the hierarchy root or the runtime's own cgroup",
        ));
    }
    let display = if absolute {
        Path::new("/").join(&path)
    } else {
        path.clone()
    };
    Ok(CgroupPath {
        absolute,
        path,
        display,
    })
}

/// `slice:prefix:name` → `slice/prefix-name.scope` (None when `text` is not
/// in that form). An empty slice is `system.slice`, as with runc.
fn systemd_to_path(text: &str) -> Option<String> {
    let mut parts = text.split(':');
    let (slice, prefix, name) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || name.is_empty() {
        return None;
    }
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let unit = if name.ends_with(".slice") {
        // runc lets the name be a slice of its own: no prefix, no `.scope`.
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    Some(format!("{slice}/{unit}"))
}

/// A v1 hierarchy as mountinfo describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct V1Mount {
    pub controllers: Vec<String>,
    pub mount_point: PathBuf,
    /// The mount's root inside the hierarchy (`/` unless bind-mounted from below).
    pub mount_root: PathBuf,
}

/// The v1 hierarchies mounted under `root`, one per controller set (first mount wins).
pub(super) fn v1_mounts(root: &Path) -> Result<Vec<V1Mount>, CgroupError> {
    let text = std::fs::read_to_string(MOUNTINFO).map_err(|source| CgroupError::Read {
        path: PathBuf::from(MOUNTINFO),
        source,
    })?;
    Ok(parse_v1_mounts(&text, root))
}

pub(super) fn parse_v1_mounts(mountinfo: &str, root: &Path) -> Vec<V1Mount> {
    let mut out: Vec<V1Mount> = Vec::new();
    for line in mountinfo.lines() {
        // id parent maj:min root mountpoint opts [optional...] - fstype source superopts
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post_fields = post.split(' ');
        if post_fields.next() != Some("cgroup") {
            continue;
        }
        let super_opts = post_fields.nth(1).unwrap_or("");
        let mut pre_fields = pre.split(' ');
        let (Some(mount_root), Some(mount_point)) = (pre_fields.nth(3), pre_fields.next()) else {
            continue;
        };
        let mount_point = PathBuf::from(unescape(mount_point));
        if !mount_point.starts_with(root) {
            continue;
        }
        let controllers: Vec<String> = super_opts
            .split(',')
            .filter(|o| o.starts_with("name=") || V1_CONTROLLERS.contains(o))
            .map(str::to_string)
            .collect();
        if controllers.is_empty() || out.iter().any(|m| m.controllers == controllers) {
            continue;
        }
        out.push(V1Mount {
            controllers,
            mount_point,
            mount_root: PathBuf::from(unescape(mount_root)),
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_string();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `(controllers, path)` per line of `/proc/self/cgroup`, v1 lines only.
pub(super) type OwnCgroups = Vec<(Vec<String>, String)>;

pub(super) fn own_cgroups_v1() -> Result<OwnCgroups, CgroupError> {
    let text = read_self_cgroup()?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut f = line.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            if ctrls.is_empty() {
                return None;
            }
            Some((
                ctrls.split(',').map(str::to_string).collect(),
                path.to_string(),
            ))
        })
        .collect())
}

/// The caller's v2 cgroup (the `0::` line), without the leading `/`.
pub(super) fn own_cgroup_v2() -> Result<PathBuf, CgroupError> {
    let text = read_self_cgroup()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| PathBuf::from(p.trim_start_matches('/')))
        .ok_or_else(|| CgroupError::OwnCgroupUnknown {
            hierarchy: "cgroup2".into(),
        })
}

/// The caller's cgroup in hierarchy `m`, relative to the mount point.
pub(super) fn own_path_in(own: &OwnCgroups, m: &V1Mount) -> Result<PathBuf, CgroupError> {
    let (_, path) = own
        .iter()
        .find(|(ctrls, _)| *ctrls == m.controllers)
        .ok_or_else(|| CgroupError::OwnCgroupUnknown {
            hierarchy: m.controllers.join(","),
        })?;
    let path = Path::new(path);
    // When the hierarchy is mounted from below its root (a bind mount in a
    // container), /proc/self/cgroup still shows the full path.
    let inside = path.strip_prefix(&m.mount_root).unwrap_or(path);
    Ok(inside
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect())
}

fn read_self_cgroup() -> Result<String, CgroupError> {
    std::fs::read_to_string(SELF_CGROUP).map_err(|source| CgroupError::Read {
        path: PathBuf::from(SELF_CGROUP),
        source,
    })
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn normalize_plain_and_relative() {
        let p = normalize(Path::new("/berth/abc")).expect("valid");
        assert!(p.absolute);
        assert_eq!(p.path, Path::new("berth/abc"));
        assert_eq!(p.display, Path::new("/berth/abc"));
        let p = normalize(Path::new("sub/./x")).expect("valid");
        assert!(!p.absolute);
        assert_eq!(p.path, Path::new("sub/x"));
    }

    #[test]
    fn normalize_rejects_dotdot_and_root() {
        for bad in ["/a/../b", "../x", "/", "", "a/.."] {
            let err = normalize(Path::new(bad)).expect_err(bad);
            assert!(
                matches!(err, CgroupError::InvalidPath { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn normalize_systemd() {
        let p = normalize(Path::new("system.slice:docker:abc")).expect("valid");
        assert!(p.absolute);
        assert_eq!(p.path, Path::new("system.slice/docker-abc.scope"));
        let p = normalize(Path::new(":berth:x")).expect("valid");
        assert_eq!(p.path, Path::new("system.slice/berth-x.scope"));
        let p = normalize(Path::new("user.slice::x")).expect("valid");
        assert_eq!(p.path, Path::new("user.slice/x.scope"));
        // `..` smuggled through the slice is still refused.
        assert!(normalize(Path::new("..:a:b")).is_err());
        // Not three fields: an ordinary relative path.
        let p = normalize(Path::new("a:b")).expect("valid");
        assert!(!p.absolute);
    }

    #[test]
    fn mountinfo_v1() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 /docker/x /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:32 / /other/memory rw,relatime - cgroup cgroup rw,memory
43 31 0:32 / /sys/fs/cgroup/mem\\040dup rw,relatime - cgroup cgroup rw,memory
";
        let m = parse_v1_mounts(text, Path::new("/sys/fs/cgroup"));
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(m[0].mount_point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m[1].mount_root, Path::new("/docker/x"));
        assert_eq!(m[2].controllers, ["name=systemd"]);
        assert_eq!(unescape("a\\040b\\134"), "a b\\");
    }

    #[test]
    fn own_path_strips_mount_root() {
        let m = V1Mount {
            controllers: vec!["memory".into()],
            mount_point: "/sys/fs/cgroup/memory".into(),
            mount_root: "/docker/x".into(),
        };
        let own = vec![(vec!["memory".to_string()], "/docker/x/sub".to_string())];
        assert_eq!(own_path_in(&own, &m).expect("found"), Path::new("sub"));
    }
}
