//! Finding what a container may leave behind: state, cgroups, processes, mounts.

use std::fs;
use std::path::{Path, PathBuf};

use crate::CGROUP_PARENT;

/// Every cgroup directory `/berth-test/<id>` could have on this host: one per v1 hierarchy,
/// the v2 one (hybrid `unified`), and a pure v2 `/sys/fs/cgroup/berth-test/<id>`.
pub fn cgroup_candidates(cgroup_root: &Path, id: &str) -> Vec<PathBuf> {
    let mut out = vec![cgroup_root.join(CGROUP_PARENT).join(id)];
    if let Ok(entries) = fs::read_dir(cgroup_root) {
        for e in entries.flatten() {
            let p = e.path();
            // Only directories that are mounted hierarchies (v1 controllers, unified).
            if p.join("cgroup.procs").exists() {
                out.push(p.join(CGROUP_PARENT).join(id));
            }
        }
    }
    out
}

/// The cgroup directories of `id` that exist under `/sys/fs/cgroup`.
pub fn existing_cgroups(id: &str) -> Vec<PathBuf> {
    existing_cgroups_under(Path::new("/sys/fs/cgroup"), id)
}

/// The cgroup directories of `id` that exist under `cgroup_root`.
pub fn existing_cgroups_under(cgroup_root: &Path, id: &str) -> Vec<PathBuf> {
    cgroup_candidates(cgroup_root, id)
        .into_iter()
        .filter(|p| p.is_dir())
        .collect()
}

/// Host pids whose cgroup (any hierarchy) is `/berth-test/<id>` or below it.
pub fn processes_in_cgroup(id: &str) -> Vec<u32> {
    let needle = format!("/{CGROUP_PARENT}/{id}");
    let mut pids = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cg) = fs::read_to_string(e.path().join("cgroup")) else {
            continue;
        };
        if cg
            .lines()
            .any(|l| l.ends_with(&needle) || l.contains(&format!("{needle}/")))
        {
            pids.push(pid);
        }
    }
    pids
}

/// Lines of the host's `/proc/self/mountinfo` that mention `needle` (a test dir or an id).
pub fn mounts_mentioning(needle: &str) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Paths under `root` (recursively) whose file name contains `id`.
pub fn files_naming(root: &Path, id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().contains(id) {
                found.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    found
}

/// Kills every process in the cgroup dirs and removes them, deepest first (best effort).
pub fn force_remove_cgroups(dirs: &[PathBuf]) {
    for dir in dirs {
        let mut subdirs = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            if let Ok(entries) = fs::read_dir(&d) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
            subdirs.push(d);
        }
        for d in subdirs.iter().rev() {
            for procs in ["cgroup.procs", "tasks"] {
                if let Ok(list) = fs::read_to_string(d.join(procs)) {
                    for pid in list.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
            // A frozen cgroup keeps killed processes around; thaw it.
            let _ = fs::write(d.join("freezer.state"), "THAWED");
            let _ = fs::write(d.join("cgroup.freeze"), "0");
            let _ = crate::poll::try_wait_until(std::time::Duration::from_secs(5), || {
                fs::remove_dir(d)
                    .ok()
                    .or_else(|| (!d.exists()).then_some(()))
            });
        }
    }
}
