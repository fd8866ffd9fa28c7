//! cgroup v2: one directory in the unified hierarchy.
//!
//! The value conversions from OCI (v1-flavoured) numbers to v2 file contents
//! are small pure functions, tested on their own.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::path::{Component, Path};
use std::time::Duration;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use super::fs::{self, write_controller};
use super::{devices_bpf, CgroupError, CgroupMode, FreezerState};

/// Creates `dir` below `root`, enabling in every ancestor's
/// `cgroup.subtree_control` each controller its `cgroup.controllers` offers.
pub(super) fn create(root: &Path, dir: &Path) -> Result<(), CgroupError> {
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    let mut cur = root.to_path_buf();
    for comp in rel
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
    {
        enable_controllers(&cur)?;
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
    }
    Ok(())
}

/// Enables in `dir`'s children every controller `dir` has and does not yet
/// pass down. All at once first (one write); if the kernel refuses, one by
/// one, skipping those it refuses (a parent with processes of its own, a
/// threaded subtree): `apply` reports a missing controller when a limit
/// actually needs it.
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let available = fs::read_file(&dir.join("cgroup.controllers"))?;
    if available.trim().is_empty() {
        return Ok(());
    }
    let control = dir.join("cgroup.subtree_control");
    let enabled = fs::read_file(&control)?;
    let enabled: HashSet<&str> = enabled.split_whitespace().collect();
    let missing: Vec<&str> = available
        .split_whitespace()
        .filter(|c| !enabled.contains(c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let all = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    if fs::write_file(&control, &all).is_ok() {
        return Ok(());
    }
    for c in missing {
        let _ = fs::write_file(&control, &format!("+{c}"));
    }
    Ok(())
}

pub(super) fn apply(dir: &Path, r: &LinuxResources) -> Result<(), CgroupError> {
    if let Some(m) = r.memory() {
        memory(dir, m)?;
    }
    if let Some(c) = r.cpu() {
        cpu(dir, c)?;
    }
    if let Some(p) = r.pids() {
        write_controller(dir, "pids.max", &pids_max(p.limit()), "pids", "pids.limit")?;
    }
    if let Some(b) = r.block_io() {
        io(dir, b)?;
    }
    for h in r.hugepage_limits().iter().flatten() {
        let file = format!("hugetlb.{}.max", h.page_size());
        write_controller(
            dir,
            &file,
            &max_value(h.limit()),
            "hugetlb",
            "hugepageLimits",
        )?;
    }
    if let Some(n) = r.network() {
        if n.class_id().is_some() || n.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(CgroupError::Unsupported {
                field: "network".into(),
                mode: CgroupMode::V2,
            });
        }
    }
    if let Some(rdma) = r.rdma() {
        for (dev, l) in rdma {
            if let Some(line) = rdma_line(dev, l.hca_handles(), l.hca_objects()) {
                write_controller(dir, "rdma.max", &line, "rdma", "rdma")?;
            }
        }
    }
    if let Some(unified) = r.unified() {
        for (key, value) in unified {
            let controller = key.split('.').next().unwrap_or(key);
            write_controller(dir, key, value, controller, &format!("unified[{key:?}]"))?;
        }
    }
    if let Some(rules) = r.devices() {
        if !rules.is_empty() {
            devices_bpf::apply(dir, rules)?;
        }
    }
    Ok(())
}

/// Memory on v2. `swappiness`, `disableOOMKiller`, `kernel` and `kernelTCP`
/// have no v2 file and are ignored, as runc does.
fn memory(dir: &Path, m: &LinuxMemory) -> Result<(), CgroupError> {
    let limit = m.limit().filter(|&v| v != 0);
    if let Some(l) = limit {
        write_controller(dir, "memory.max", &max_value(l), "memory", "memory.limit")?;
    }
    if let Some(s) = m.swap().filter(|&v| v != 0) {
        let v = swap_max(limit, s)?;
        write_controller(dir, "memory.swap.max", &v, "memory (swap)", "memory.swap")?;
    }
    if let Some(v) = m.reservation().filter(|&v| v != 0) {
        write_controller(
            dir,
            "memory.low",
            &max_value(v),
            "memory",
            "memory.reservation",
        )?;
    }
    Ok(())
}

fn cpu(dir: &Path, c: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(s) = c.shares().filter(|&v| v != 0) {
        let w = shares_to_weight(s).to_string();
        write_controller(dir, "cpu.weight", &w, "cpu", "cpu.shares")?;
    }
    if let Some(v) = cpu_max(c.quota(), c.period()) {
        write_controller(dir, "cpu.max", &v, "cpu", "cpu.quota")?;
    }
    if let Some(b) = c.burst() {
        write_controller(dir, "cpu.max.burst", &b.to_string(), "cpu", "cpu.burst")?;
    }
    if let Some(i) = c.idle() {
        write_controller(dir, "cpu.idle", &i.to_string(), "cpu", "cpu.idle")?;
    }
    if c.realtime_period().is_some_and(|v| v != 0) || c.realtime_runtime().is_some_and(|v| v != 0) {
        return Err(CgroupError::Unsupported {
            field: "cpu.realtimeRuntime/realtimePeriod".into(),
            mode: CgroupMode::V2,
        });
    }
    if let Some(v) = c.cpus().as_deref().filter(|v| !v.is_empty()) {
        write_controller(dir, "cpuset.cpus", v, "cpuset", "cpu.cpus")?;
    }
    if let Some(v) = c.mems().as_deref().filter(|v| !v.is_empty()) {
        write_controller(dir, "cpuset.mems", v, "cpuset", "cpu.mems")?;
    }
    Ok(())
}

fn io(dir: &Path, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    if b.leaf_weight().is_some_and(|w| w != 0)
        || b.weight_device()
            .iter()
            .flatten()
            .any(|d| d.leaf_weight().is_some_and(|w| w != 0))
    {
        return Err(CgroupError::Unsupported {
            field: "blockIO.leafWeight".into(),
            mode: CgroupMode::V2,
        });
    }
    if let Some(w) = b.weight().filter(|&w| w != 0) {
        io_weight(dir, "", w, "blockIO.weight")?;
    }
    for d in b.weight_device().iter().flatten() {
        if let Some(w) = d.weight().filter(|&w| w != 0) {
            let dev = format!("{}:{} ", d.major(), d.minor());
            io_weight(dir, &dev, w, "blockIO.weightDevice")?;
        }
    }
    for (key, list) in [
        ("rbps", b.throttle_read_bps_device()),
        ("wbps", b.throttle_write_bps_device()),
        ("riops", b.throttle_read_iops_device()),
        ("wiops", b.throttle_write_iops_device()),
    ] {
        for d in list.iter().flatten() {
            let line = io_max_line(d.major(), d.minor(), key, d.rate());
            write_controller(dir, "io.max", &line, "io", "blockIO.throttle")?;
        }
    }
    Ok(())
}

/// BFQ's `io.bfq.weight` takes the OCI (blkio) weight as is; otherwise
/// `io.weight` takes it converted. `dev` is `"maj:min "` or empty for the default.
fn io_weight(dir: &Path, dev: &str, weight: u16, field: &str) -> Result<(), CgroupError> {
    let bfq = if dev.is_empty() {
        weight.to_string()
    } else {
        format!("{dev}{weight}")
    };
    if fs::write_if_present(&dir.join("io.bfq.weight"), &bfq)? {
        return Ok(());
    }
    let plain = if dev.is_empty() {
        format!("default {}", blkio_weight_to_io_weight(weight))
    } else {
        format!("{dev}{}", blkio_weight_to_io_weight(weight))
    };
    write_controller(dir, "io.weight", &plain, "io", field)
}

/// `-1` (or any negative) is `max`.
pub(super) fn max_value(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// `pids.max`: zero or negative means no limit.
pub(super) fn pids_max(limit: i64) -> String {
    if limit <= 0 {
        "max".to_string()
    } else {
        limit.to_string()
    }
}

/// `memory.swap.max` from OCI's `swap`, which is memory plus swap:
/// `swap - limit`; `-1` is `max`. A positive `swap` needs a positive limit.
pub(super) fn swap_max(limit: Option<i64>, swap: i64) -> Result<String, CgroupError> {
    if swap < 0 {
        return Ok("max".to_string());
    }
    match limit {
        Some(l) if l > 0 => {
            if swap < l {
                Err(CgroupError::InvalidResource {
                    field: "memory.swap".into(),
                    reason: format!("{swap} is below memory.limit {l} (swap is memory plus swap)"),
                })
            } else {
                Ok((swap - l).to_string())
            }
        }
        _ => Err(CgroupError::InvalidResource {
            field: "memory.swap".into(),
            reason: "on cgroup v2 a swap limit needs a positive memory.limit".into(),
        }),
    }
}

/// v1 `cpu.shares` (2..=262144) to v2 `cpu.weight` (1..=10000).
pub(super) fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// `cpu.max` ("$QUOTA $PERIOD", `max` for no quota) from OCI quota/period,
/// where `0` means unset. With only a quota, the period is left as it is;
/// with only a period, the quota becomes `max`.
pub(super) fn cpu_max(quota: Option<i64>, period: Option<u64>) -> Option<String> {
    let quota = quota.filter(|&q| q != 0);
    let period = period.filter(|&p| p != 0);
    let q = |q: i64| {
        if q < 0 {
            "max".to_string()
        } else {
            q.to_string()
        }
    };
    match (quota, period) {
        (None, None) => None,
        (Some(qv), None) => Some(q(qv)),
        (None, Some(p)) => Some(format!("max {p}")),
        (Some(qv), Some(p)) => Some(format!("{} {p}", q(qv))),
    }
}

/// blkio weight (10..=1000) to `io.weight` (1..=10000).
pub(super) fn blkio_weight_to_io_weight(w: u16) -> u64 {
    let w = u64::from(w.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

/// One `io.max` line; a rate of 0 removes the limit (`max`), as writing 0
/// does on v1.
pub(super) fn io_max_line(major: i64, minor: i64, key: &str, rate: u64) -> String {
    if rate == 0 {
        format!("{major}:{minor} {key}=max")
    } else {
        format!("{major}:{minor} {key}={rate}")
    }
}

/// One `rdma.max` line (None when neither limit is set).
pub(super) fn rdma_line(dev: &str, handles: Option<u32>, objects: Option<u32>) -> Option<String> {
    if handles.is_none() && objects.is_none() {
        return None;
    }
    let mut line = dev.to_string();
    if let Some(h) = handles {
        line.push_str(&format!(" hca_handle={h}"));
    }
    if let Some(o) = objects {
        line.push_str(&format!(" hca_object={o}"));
    }
    Some(line)
}

/// How long a freeze may take to settle before it is reported as stuck.
const FREEZE_BUDGET: Duration = Duration::from_secs(2);

pub(super) fn set_freezer(dir: &Path, state: FreezerState) -> Result<(), CgroupError> {
    let (value, frozen) = match state {
        FreezerState::Frozen => ("1", true),
        FreezerState::Thawed => ("0", false),
    };
    write_controller(
        dir,
        "cgroup.freeze",
        value,
        "freezer (cgroup.freeze)",
        "freeze",
    )?;
    let events = dir.join("cgroup.events");
    let done = fs::poll(FREEZE_BUDGET, || {
        let text = fs::read_file(&events)?;
        Ok((fs::flat_keyed(&text, "frozen") == Some(u64::from(frozen))).then_some(()))
    })?;
    if done.is_some() {
        return Ok(());
    }
    if frozen {
        let _ = fs::write_file(&dir.join("cgroup.freeze"), "0");
    }
    Err(CgroupError::FreezeTimeout {
        path: events,
        state: if frozen { "frozen" } else { "thawed" },
    })
}

pub(super) fn freezer_state(dir: &Path) -> Result<FreezerState, CgroupError> {
    let path = dir.join("cgroup.events");
    let text = fs::read_file_controller(&path, "freezer (cgroup.events)", "freezer state")?;
    Ok(if fs::flat_keyed(&text, "frozen") == Some(1) {
        FreezerState::Frozen
    } else {
        FreezerState::Thawed
    })
}

/// Writes `cgroup.kill` (Linux 5.14+). `Ok(false)` when the kernel lacks it
/// or the cgroup is gone.
pub(super) fn kill_via_file(dir: &Path) -> Result<bool, CgroupError> {
    fs::write_if_present(&dir.join("cgroup.kill"), "1")
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn memory_values() {
        assert_eq!(max_value(-1), "max");
        assert_eq!(max_value(16 << 20), "16777216");
        assert_eq!(swap_max(Some(100), 300).expect("valid"), "200");
        assert_eq!(swap_max(Some(100), 100).expect("valid"), "0");
        assert_eq!(swap_max(Some(100), -1).expect("valid"), "max");
        assert_eq!(swap_max(None, -1).expect("valid"), "max");
        assert!(swap_max(Some(100), 50).is_err());
        assert!(swap_max(None, 50).is_err());
        assert!(swap_max(Some(-1), 50).is_err());
    }

    #[test]
    fn cpu_values() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(shares_to_weight(1 << 40), 10_000);
        assert_eq!(
            cpu_max(Some(50_000), Some(100_000)).as_deref(),
            Some("50000 100000")
        );
        assert_eq!(
            cpu_max(Some(-1), Some(100_000)).as_deref(),
            Some("max 100000")
        );
        assert_eq!(cpu_max(Some(20_000), None).as_deref(), Some("20000"));
        assert_eq!(cpu_max(None, Some(50_000)).as_deref(), Some("max 50000"));
        assert_eq!(cpu_max(Some(0), Some(0)), None);
        assert_eq!(cpu_max(None, None), None);
    }

    #[test]
    fn pids_and_io_values() {
        assert_eq!(pids_max(0), "max");
        assert_eq!(pids_max(-1), "max");
        assert_eq!(pids_max(32), "32");
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(io_max_line(8, 0, "rbps", 1_048_576), "8:0 rbps=1048576");
        assert_eq!(io_max_line(8, 16, "wiops", 0), "8:16 wiops=max");
        assert_eq!(
            rdma_line("mlx4_0", Some(2), None).as_deref(),
            Some("mlx4_0 hca_handle=2")
        );
        assert_eq!(rdma_line("mlx4_0", None, None), None);
    }
}
