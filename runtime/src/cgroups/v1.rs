//! cgroup v1: one directory per mounted hierarchy.

use std::io::ErrorKind;
use std::path::{Component, Path};
use std::time::Duration;

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxResources,
};

use super::fs::{self, write_controller};
use super::{CgroupError, CgroupMode, FreezerState, V1Hierarchy};

/// The directory of `controller`'s hierarchy, or an error naming the
/// controller (it is not mounted under `root`) and the `field` that needs it.
pub(super) fn require<'a>(
    hs: &'a [V1Hierarchy],
    root: &Path,
    controller: &str,
    field: &str,
) -> Result<&'a Path, CgroupError> {
    hs.iter()
        .find(|h| h.has(controller))
        .map(|h| h.dir.as_path())
        .ok_or_else(|| CgroupError::ControllerUnavailable {
            controller: controller.to_string(),
            field: field.to_string(),
            path: root.to_path_buf(),
        })
}

fn mkdir_p(dir: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(dir).map_err(|source| CgroupError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })
}

pub(super) fn create(hs: &[V1Hierarchy]) -> Result<(), CgroupError> {
    for h in hs {
        if h.has("cpuset") {
            create_cpuset(h)?;
        } else {
            mkdir_p(&h.dir)?;
        }
    }
    Ok(())
}

/// A new v1 cpuset starts with empty `cpuset.cpus`/`cpuset.mems`, and no
/// task can join it until they are set: copy them down level by level.
fn create_cpuset(h: &V1Hierarchy) -> Result<(), CgroupError> {
    let rel = h.dir.strip_prefix(&h.mount_point).unwrap_or(&h.dir);
    let mut cur = h.mount_point.clone();
    let mut parent: Option<(String, String)> = None;
    for comp in rel
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
    {
        let parent_vals = match parent.take() {
            Some(v) => v,
            None => read_cpuset(&cur)?,
        };
        cur.push(comp);
        match std::fs::create_dir(&cur) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(CgroupError::CreateDir {
                    path: cur.clone(),
                    source,
                })
            }
        }
        let (mut cpus, mut mems) = read_cpuset(&cur)?;
        if cpus.is_empty() {
            fs::write_file(&cur.join("cpuset.cpus"), &parent_vals.0)?;
            cpus = parent_vals.0.clone();
        }
        if mems.is_empty() {
            fs::write_file(&cur.join("cpuset.mems"), &parent_vals.1)?;
            mems = parent_vals.1;
        }
        parent = Some((cpus, mems));
    }
    Ok(())
}

fn read_cpuset(dir: &Path) -> Result<(String, String), CgroupError> {
    let cpus = fs::read_file(&dir.join("cpuset.cpus"))?.trim().to_string();
    let mems = fs::read_file(&dir.join("cpuset.mems"))?.trim().to_string();
    Ok((cpus, mems))
}

/// v1 spelling of a limit: `-1` stays `-1` (unlimited).
fn limit_value(v: i64) -> String {
    v.to_string()
}

pub(super) fn apply(
    hs: &[V1Hierarchy],
    root: &Path,
    r: &LinuxResources,
) -> Result<(), CgroupError> {
    if let Some(m) = r.memory() {
        memory(hs, root, m)?;
    }
    if let Some(c) = r.cpu() {
        cpu(hs, root, c)?;
    }
    if let Some(p) = r.pids() {
        let dir = require(hs, root, "pids", "pids.limit")?;
        let v = if p.limit() <= 0 {
            "max".to_string()
        } else {
            p.limit().to_string()
        };
        write_controller(dir, "pids.max", &v, "pids", "pids.limit")?;
    }
    if let Some(b) = r.block_io() {
        blkio(hs, root, b)?;
    }
    for h in r.hugepage_limits().iter().flatten() {
        let dir = require(hs, root, "hugetlb", "hugepageLimits")?;
        let file = format!("hugetlb.{}.limit_in_bytes", h.page_size());
        write_controller(
            dir,
            &file,
            &limit_value(h.limit()),
            "hugetlb",
            "hugepageLimits",
        )?;
    }
    if let Some(n) = r.network() {
        if let Some(id) = n.class_id() {
            let dir = require(hs, root, "net_cls", "network.classID")?;
            write_controller(
                dir,
                "net_cls.classid",
                &id.to_string(),
                "net_cls",
                "network.classID",
            )?;
        }
        for p in n.priorities().iter().flatten() {
            let dir = require(hs, root, "net_prio", "network.priorities")?;
            let line = format!("{} {}", p.name(), p.priority());
            write_controller(
                dir,
                "net_prio.ifpriomap",
                &line,
                "net_prio",
                "network.priorities",
            )?;
        }
    }
    if let Some(rdma) = r.rdma() {
        for (dev, l) in rdma {
            if let Some(line) = super::v2::rdma_line(dev, l.hca_handles(), l.hca_objects()) {
                let dir = require(hs, root, "rdma", "rdma")?;
                write_controller(dir, "rdma.max", &line, "rdma", "rdma")?;
            }
        }
    }
    if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(CgroupError::Unsupported {
            field: "unified".into(),
            mode: CgroupMode::V1,
        });
    }
    if let Some(rules) = r.devices() {
        if !rules.is_empty() {
            let dir = require(hs, root, "devices", "devices")?;
            for rule in rules {
                if let Some(line) = device_line(rule) {
                    let file = if rule.allow() {
                        "devices.allow"
                    } else {
                        "devices.deny"
                    };
                    write_controller(dir, file, &line, "devices", "devices")?;
                }
            }
        }
    }
    Ok(())
}

fn memory(hs: &[V1Hierarchy], root: &Path, m: &LinuxMemory) -> Result<(), CgroupError> {
    let limit = m.limit().filter(|&v| v != 0);
    let swap = m.swap().filter(|&v| v != 0);
    let reservation = m.reservation().filter(|&v| v != 0);
    let any = limit.is_some()
        || swap.is_some()
        || reservation.is_some()
        || m.swappiness().is_some()
        || m.disable_oom_killer().is_some()
        || m.kernel_tcp().is_some()
        || m.use_hierarchy().is_some();
    if !any {
        return Ok(());
    }
    let dir = require(hs, root, "memory", "memory")?;
    let wr = |file: &str, v: &str, field: &str| write_controller(dir, file, v, "memory", field);
    match (limit, swap) {
        (Some(l), Some(s)) => limit_and_swap(dir, l, s)?,
        (Some(l), None) => wr("memory.limit_in_bytes", &limit_value(l), "memory.limit")?,
        (None, Some(s)) => write_controller(
            dir,
            "memory.memsw.limit_in_bytes",
            &limit_value(s),
            "memory (swap accounting)",
            "memory.swap",
        )?,
        (None, None) => {}
    }
    if let Some(v) = reservation {
        wr(
            "memory.soft_limit_in_bytes",
            &limit_value(v),
            "memory.reservation",
        )?;
    }
    if let Some(v) = m.swappiness() {
        wr("memory.swappiness", &v.to_string(), "memory.swappiness")?;
    }
    if let Some(v) = m.disable_oom_killer() {
        wr(
            "memory.oom_control",
            if v { "1" } else { "0" },
            "memory.disableOOMKiller",
        )?;
    }
    if let Some(v) = m.kernel_tcp() {
        wr(
            "memory.kmem.tcp.limit_in_bytes",
            &limit_value(v),
            "memory.kernelTCP",
        )?;
    }
    if let Some(v) = m.use_hierarchy() {
        wr(
            "memory.use_hierarchy",
            if v { "1" } else { "0" },
            "memory.useHierarchy",
        )?;
    }
    // memory.kernel is deprecated and ignored (the kernel dropped kmem limits).
    Ok(())
}

/// The kernel keeps `limit <= memsw` after every write: when lowering, the
/// limit goes first; when raising, memsw goes first. Try the lowering order
/// and fall back to the other on `EINVAL`.
fn limit_and_swap(dir: &Path, limit: i64, swap: i64) -> Result<(), CgroupError> {
    let (l, s) = (limit_value(limit), limit_value(swap));
    let write_swap = || {
        write_controller(
            dir,
            "memory.memsw.limit_in_bytes",
            &s,
            "memory (swap accounting)",
            "memory.swap",
        )
    };
    match fs::write_if_present(&dir.join("memory.limit_in_bytes"), &l) {
        Ok(true) => write_swap(),
        Ok(false) => Err(CgroupError::ControllerUnavailable {
            controller: "memory".into(),
            field: "memory.limit".into(),
            path: dir.to_path_buf(),
        }),
        Err(CgroupError::Write { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
            write_swap()?;
            write_controller(dir, "memory.limit_in_bytes", &l, "memory", "memory.limit")
        }
        Err(e) => Err(e),
    }
}

fn cpu(hs: &[V1Hierarchy], root: &Path, c: &LinuxCpu) -> Result<(), CgroupError> {
    let shares = c.shares().filter(|&v| v != 0);
    let quota = c.quota().filter(|&v| v != 0);
    let period = c.period().filter(|&v| v != 0);
    let any_cpu = shares.is_some()
        || quota.is_some()
        || period.is_some()
        || c.burst().is_some()
        || c.idle().is_some()
        || c.realtime_period().is_some()
        || c.realtime_runtime().is_some();
    if any_cpu {
        let dir = require(hs, root, "cpu", "cpu")?;
        let wr = |file: &str, v: String, field: &str| write_controller(dir, file, &v, "cpu", field);
        if let Some(v) = shares {
            wr("cpu.shares", v.to_string(), "cpu.shares")?;
        }
        if let Some(v) = period {
            wr("cpu.cfs_period_us", v.to_string(), "cpu.period")?;
        }
        if let Some(v) = quota {
            wr("cpu.cfs_quota_us", v.to_string(), "cpu.quota")?;
        }
        if let Some(v) = c.burst() {
            wr("cpu.cfs_burst_us", v.to_string(), "cpu.burst")?;
        }
        if let Some(v) = c.idle() {
            wr("cpu.idle", v.to_string(), "cpu.idle")?;
        }
        if let Some(v) = c.realtime_period().filter(|&v| v != 0) {
            write_controller(
                dir,
                "cpu.rt_period_us",
                &v.to_string(),
                "cpu (realtime)",
                "cpu.realtimePeriod",
            )?;
        }
        if let Some(v) = c.realtime_runtime().filter(|&v| v != 0) {
            write_controller(
                dir,
                "cpu.rt_runtime_us",
                &v.to_string(),
                "cpu (realtime)",
                "cpu.realtimeRuntime",
            )?;
        }
    }
    for (file, field, v) in [
        ("cpuset.cpus", "cpu.cpus", c.cpus()),
        ("cpuset.mems", "cpu.mems", c.mems()),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            let dir = require(hs, root, "cpuset", field)?;
            write_controller(dir, file, v, "cpuset", field)?;
        }
    }
    Ok(())
}

fn blkio(hs: &[V1Hierarchy], root: &Path, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    let weight = b.weight().filter(|&w| w != 0);
    let leaf = b.leaf_weight().filter(|&w| w != 0);
    let devices = b.weight_device().iter().flatten();
    let throttles = [
        (
            "blkio.throttle.read_bps_device",
            b.throttle_read_bps_device(),
        ),
        (
            "blkio.throttle.write_bps_device",
            b.throttle_write_bps_device(),
        ),
        (
            "blkio.throttle.read_iops_device",
            b.throttle_read_iops_device(),
        ),
        (
            "blkio.throttle.write_iops_device",
            b.throttle_write_iops_device(),
        ),
    ];
    let any = weight.is_some()
        || leaf.is_some()
        || devices.clone().next().is_some()
        || throttles
            .iter()
            .any(|(_, l)| l.as_ref().is_some_and(|l| !l.is_empty()));
    if !any {
        return Ok(());
    }
    let dir = require(hs, root, "blkio", "blockIO")?;
    if let Some(w) = weight {
        weight_file(dir, "weight", &w.to_string(), "blockIO.weight")?;
    }
    if let Some(w) = leaf {
        write_controller(
            dir,
            "blkio.leaf_weight",
            &w.to_string(),
            "blkio (CFQ)",
            "blockIO.leafWeight",
        )?;
    }
    for d in devices {
        if let Some(w) = d.weight().filter(|&w| w != 0) {
            let line = format!("{}:{} {}", d.major(), d.minor(), w);
            weight_file(dir, "weight_device", &line, "blockIO.weightDevice")?;
        }
        if let Some(w) = d.leaf_weight().filter(|&w| w != 0) {
            let line = format!("{}:{} {}", d.major(), d.minor(), w);
            write_controller(
                dir,
                "blkio.leaf_weight_device",
                &line,
                "blkio (CFQ)",
                "blockIO.weightDevice.leafWeight",
            )?;
        }
    }
    for (file, list) in throttles {
        for d in list.iter().flatten() {
            let line = format!("{}:{} {}", d.major(), d.minor(), d.rate());
            write_controller(dir, file, &line, "blkio", "blockIO.throttle")?;
        }
    }
    Ok(())
}

/// CFQ's `blkio.<name>`, else BFQ's `blkio.bfq.<name>`.
fn weight_file(dir: &Path, name: &str, value: &str, field: &str) -> Result<(), CgroupError> {
    if fs::write_if_present(&dir.join(format!("blkio.{name}")), value)? {
        return Ok(());
    }
    if fs::write_if_present(&dir.join(format!("blkio.bfq.{name}")), value)? {
        return Ok(());
    }
    Err(CgroupError::ControllerUnavailable {
        controller: "blkio (CFQ or BFQ weights)".into(),
        field: field.to_string(),
        path: dir.to_path_buf(),
    })
}

/// `type major:minor access` for `devices.allow`/`devices.deny`; None for
/// FIFO rules, which the device controller does not cover.
pub(super) fn device_line(rule: &LinuxDeviceCgroup) -> Option<String> {
    let ty = match rule.typ().unwrap_or_default() {
        LinuxDeviceType::A => 'a',
        LinuxDeviceType::B => 'b',
        LinuxDeviceType::C | LinuxDeviceType::U => 'c',
        LinuxDeviceType::P => return None,
    };
    let num = |v: Option<i64>| match v {
        Some(n) if n >= 0 => n.to_string(),
        _ => "*".to_string(),
    };
    let access = match rule.access().as_deref() {
        None | Some("") => "rwm",
        Some(a) => a,
    };
    Some(format!(
        "{ty} {}:{} {access}",
        num(rule.major()),
        num(rule.minor())
    ))
}

/// How long a freeze may take to settle before it is reported as stuck.
const FREEZE_BUDGET: Duration = Duration::from_secs(2);

pub(super) fn set_freezer(
    hs: &[V1Hierarchy],
    root: &Path,
    state: FreezerState,
) -> Result<(), CgroupError> {
    let dir = require(hs, root, "freezer", "freezer")?;
    let path = dir.join("freezer.state");
    let want = match state {
        FreezerState::Frozen => "FROZEN",
        FreezerState::Thawed => "THAWED",
    };
    fs::write_file(&path, want)?;
    let mut polls = 0u32;
    let done = fs::poll(FREEZE_BUDGET, || {
        let now = fs::read_file(&path)?;
        if now.trim() == want {
            return Ok(Some(()));
        }
        polls += 1;
        // A task in an uninterruptible sleep can keep the cgroup FREEZING;
        // asking again makes the kernel retry the stragglers.
        if polls & 7 == 0 {
            fs::write_file(&path, want)?;
        }
        Ok(None)
    })?;
    match done {
        Some(()) => Ok(()),
        None => {
            if state == FreezerState::Frozen {
                // Do not leave the container half frozen.
                let _ = fs::write_file(&path, "THAWED");
            }
            Err(CgroupError::FreezeTimeout { path, state: want })
        }
    }
}

pub(super) fn freezer_state(hs: &[V1Hierarchy], root: &Path) -> Result<FreezerState, CgroupError> {
    let dir = require(hs, root, "freezer", "freezer")?;
    let text = fs::read_file(&dir.join("freezer.state"))?;
    Ok(if text.trim() == "FROZEN" {
        FreezerState::Frozen
    } else {
        FreezerState::Thawed
    })
}

/// The hierarchy to list processes from: pids, freezer or memory, whichever
/// is mounted first in that order, else any.
pub(super) fn pids_dir(hs: &[V1Hierarchy]) -> Option<&Path> {
    ["pids", "freezer", "memory"]
        .iter()
        .find_map(|c| hs.iter().find(|h| h.has(c)))
        .or_else(|| hs.first())
        .map(|h| h.dir.as_path())
}

#[cfg(test)]
mod unit {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    #[test]
    fn device_lines() {
        let deny_all = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .expect("builds");
        assert_eq!(device_line(&deny_all).as_deref(), Some("a *:* rwm"));
        let null = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(1i64)
            .minor(3i64)
            .access("rw")
            .build()
            .expect("builds");
        assert_eq!(device_line(&null).as_deref(), Some("c 1:3 rw"));
        let any_block = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::B)
            .major(-1i64)
            .build()
            .expect("builds");
        assert_eq!(device_line(&any_block).as_deref(), Some("b *:* rwm"));
        let fifo = LinuxDeviceCgroupBuilder::default()
            .typ(LinuxDeviceType::P)
            .build()
            .expect("builds");
        assert_eq!(device_line(&fifo), None);
    }
}
