//! Resource usage in the JSON shape of runc's `events --stats` (`data`).
//!
//! Field names and "omitempty" behaviour follow runc's `types/events.go`;
//! sections for controllers the host lacks are left out entirely.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::fs::{self, flat_keyed, read_optional, read_u64_optional};
use super::{CgroupError, V1Hierarchy};

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Resource usage in the shape runc's `events --stats` prints under `data`.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Stats {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<PidsStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blkio: Option<BlkioStats>,
    /// Keyed by page size, e.g. `"2MB"`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub hugetlb: BTreeMap<String, HugetlbStats>,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct CpuStats {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

/// CPU time in nanoseconds.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct CpuUsage {
    #[serde(skip_serializing_if = "is_zero")]
    pub total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Throttling {
    #[serde(skip_serializing_if = "is_zero")]
    pub periods: u64,
    #[serde(rename = "throttledPeriods", skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    /// Nanoseconds.
    #[serde(rename = "throttledTime", skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct MemoryStats {
    #[serde(skip_serializing_if = "is_zero")]
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    /// `memory.stat`, key by key.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct PidsStats {
    #[serde(skip_serializing_if = "is_zero")]
    pub current: u64,
    /// 0 when unlimited.
    #[serde(skip_serializing_if = "is_zero")]
    pub limit: u64,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct BlkioEntry {
    #[serde(skip_serializing_if = "is_zero")]
    pub major: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub minor: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub op: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub value: u64,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct BlkioStats {
    #[serde(
        rename = "ioServiceBytesRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioServicedRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct HugetlbStats {
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

/// Parses `key value` lines into a map (non-numeric values are skipped).
fn flat_map(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn u64_or_zero(path: &Path) -> Result<u64, CgroupError> {
    Ok(read_u64_optional(path)?.unwrap_or(0))
}

/// Hugepage sizes the kernel offers, named as in `hugetlb.<size>.*`.
fn hugepage_sizes() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(page_size_name(kb))
        })
        .collect();
    out.sort();
    out
}

/// 2048 → "2MB", 1048576 → "1GB", 64 → "64KB".
pub(super) fn page_size_name(kb: u64) -> String {
    if kb >= 1 << 20 && kb & ((1 << 20) - 1) == 0 {
        format!("{}GB", kb >> 20)
    } else if kb >= 1 << 10 && kb & ((1 << 10) - 1) == 0 {
        format!("{}MB", kb >> 10)
    } else {
        format!("{kb}KB")
    }
}

/// Clock ticks per second, for `cpuacct.stat`.
fn clock_ticks() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => u64::try_from(t).unwrap_or(100),
        _ => 100,
    }
}

/// Stats from the v1 hierarchies.
pub(super) fn v1(hs: &[V1Hierarchy]) -> Result<Stats, CgroupError> {
    let dir = |c: &str| hs.iter().find(|h| h.has(c)).map(|h| h.dir.as_path());
    let mut stats = Stats::default();

    let cpuacct = dir("cpuacct");
    let cpu = dir("cpu");
    if cpuacct.is_some() || cpu.is_some() {
        let mut s = CpuStats::default();
        if let Some(d) = cpuacct {
            s.usage.total = u64_or_zero(&d.join("cpuacct.usage"))?;
            if let Some(t) = read_optional(&d.join("cpuacct.usage_percpu"))? {
                s.usage.percpu = t
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect();
            }
            if let Some(t) = read_optional(&d.join("cpuacct.stat"))? {
                let to_ns = |ticks: u64| ticks.saturating_mul(1_000_000_000) / clock_ticks();
                s.usage.user = to_ns(flat_keyed(&t, "user").unwrap_or(0));
                s.usage.kernel = to_ns(flat_keyed(&t, "system").unwrap_or(0));
            }
        }
        if let Some(d) = cpu {
            if let Some(t) = read_optional(&d.join("cpu.stat"))? {
                s.throttling = Throttling {
                    periods: flat_keyed(&t, "nr_periods").unwrap_or(0),
                    throttled_periods: flat_keyed(&t, "nr_throttled").unwrap_or(0),
                    throttled_time: flat_keyed(&t, "throttled_time").unwrap_or(0),
                };
            }
        }
        stats.cpu = Some(s);
    }

    if let Some(d) = dir("memory") {
        let entry = |prefix: &str| -> Result<MemoryEntry, CgroupError> {
            Ok(MemoryEntry {
                usage: u64_or_zero(&d.join(format!("{prefix}.usage_in_bytes")))?,
                max: u64_or_zero(&d.join(format!("{prefix}.max_usage_in_bytes")))?,
                limit: u64_or_zero(&d.join(format!("{prefix}.limit_in_bytes")))?,
                failcnt: u64_or_zero(&d.join(format!("{prefix}.failcnt")))?,
            })
        };
        let raw = read_optional(&d.join("memory.stat"))?
            .map(|t| flat_map(&t))
            .unwrap_or_default();
        stats.memory = Some(MemoryStats {
            cache: raw.get("cache").copied().unwrap_or(0),
            usage: entry("memory")?,
            swap: entry("memory.memsw")?,
            kernel: entry("memory.kmem")?,
            kernel_tcp: entry("memory.kmem.tcp")?,
            raw,
        });
    }

    if let Some(d) = dir("pids") {
        stats.pids = Some(pids(d)?);
    }

    if let Some(d) = dir("blkio") {
        let mut b = BlkioStats::default();
        for prefix in ["blkio.throttle.", "blkio.bfq."] {
            let bytes = read_optional(&d.join(format!("{prefix}io_service_bytes_recursive")))?;
            let ops = read_optional(&d.join(format!("{prefix}io_serviced_recursive")))?;
            if bytes.is_some() || ops.is_some() {
                b.io_service_bytes_recursive = bytes.map(|t| blkio_v1(&t)).unwrap_or_default();
                b.io_serviced_recursive = ops.map(|t| blkio_v1(&t)).unwrap_or_default();
                break;
            }
        }
        stats.blkio = Some(b);
    }

    if let Some(d) = dir("hugetlb") {
        for size in hugepage_sizes() {
            let f = |name: &str| d.join(format!("hugetlb.{size}.{name}"));
            let h = HugetlbStats {
                usage: u64_or_zero(&f("usage_in_bytes"))?,
                max: u64_or_zero(&f("max_usage_in_bytes"))?,
                failcnt: u64_or_zero(&f("failcnt"))?,
            };
            stats.hugetlb.insert(size, h);
        }
    }
    Ok(stats)
}

fn pids(d: &Path) -> Result<PidsStats, CgroupError> {
    let limit = match read_u64_optional(&d.join("pids.max"))? {
        Some(u64::MAX) | None => 0,
        Some(v) => v,
    };
    Ok(PidsStats {
        current: u64_or_zero(&d.join("pids.current"))?,
        limit,
    })
}

/// `8:0 Read 4096` lines (the `Total` lines are skipped).
pub(super) fn blkio_v1(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, op, value) = (f.next()?, f.next()?, f.next()?);
            let (major, minor) = dev.split_once(':')?;
            Some(BlkioEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: op.to_string(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// `io.stat` (`8:0 rbytes=1 wbytes=2 rios=3 wios=4 ...`) as v1-style entries.
pub(super) fn io_stat_v2(text: &str) -> BlkioStats {
    let mut b = BlkioStats::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some((major, minor)) = f.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u64>(), minor.parse::<u64>()) else {
            continue;
        };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(value) = v.parse() else { continue };
            let (list, op) = match k {
                "rbytes" => (&mut b.io_service_bytes_recursive, "Read"),
                "wbytes" => (&mut b.io_service_bytes_recursive, "Write"),
                "rios" => (&mut b.io_serviced_recursive, "Read"),
                "wios" => (&mut b.io_serviced_recursive, "Write"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.to_string(),
                value,
            });
        }
    }
    b
}

/// Stats from a v2 directory. Which controllers are there comes from
/// `cgroup.controllers`; `cpu.stat` is always present.
pub(super) fn v2(d: &Path) -> Result<Stats, CgroupError> {
    let controllers = fs::read_file(&d.join("cgroup.controllers"))?;
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    let mut stats = Stats::default();

    if let Some(t) = read_optional(&d.join("cpu.stat"))? {
        let us = |k: &str| flat_keyed(&t, k).unwrap_or(0).saturating_mul(1000);
        stats.cpu = Some(CpuStats {
            usage: CpuUsage {
                total: us("usage_usec"),
                user: us("user_usec"),
                kernel: us("system_usec"),
                ..CpuUsage::default()
            },
            throttling: Throttling {
                periods: flat_keyed(&t, "nr_periods").unwrap_or(0),
                throttled_periods: flat_keyed(&t, "nr_throttled").unwrap_or(0),
                throttled_time: us("throttled_usec"),
            },
        });
    }

    if has("memory") {
        let usage = MemoryEntry {
            usage: u64_or_zero(&d.join("memory.current"))?,
            max: u64_or_zero(&d.join("memory.peak"))?,
            limit: u64_or_zero(&d.join("memory.max"))?,
            failcnt: read_optional(&d.join("memory.events"))?
                .and_then(|t| flat_keyed(&t, "max"))
                .unwrap_or(0),
        };
        // Like runc: report swap as memory plus swap, the v1 meaning.
        let swap_limit = u64_or_zero(&d.join("memory.swap.max"))?;
        let swap = MemoryEntry {
            usage: u64_or_zero(&d.join("memory.swap.current"))?.saturating_add(usage.usage),
            max: 0,
            limit: if swap_limit == u64::MAX {
                u64::MAX
            } else {
                swap_limit.saturating_add(usage.limit)
            },
            failcnt: 0,
        };
        let raw = read_optional(&d.join("memory.stat"))?
            .map(|t| flat_map(&t))
            .unwrap_or_default();
        stats.memory = Some(MemoryStats {
            cache: raw.get("file").copied().unwrap_or(0),
            usage,
            swap,
            raw,
            ..MemoryStats::default()
        });
    }

    if has("pids") {
        stats.pids = Some(pids(d)?);
    }

    if has("io") {
        stats.blkio = Some(
            read_optional(&d.join("io.stat"))?
                .map(|t| io_stat_v2(&t))
                .unwrap_or_default(),
        );
    }

    if has("hugetlb") {
        for size in hugepage_sizes() {
            let f = |name: &str| d.join(format!("hugetlb.{size}.{name}"));
            let h = HugetlbStats {
                usage: u64_or_zero(&f("current"))?,
                max: match read_u64_optional(&f("max"))? {
                    Some(u64::MAX) | None => 0,
                    Some(v) => v,
                },
                failcnt: read_optional(&f("events"))?
                    .and_then(|t| flat_keyed(&t, "max"))
                    .unwrap_or(0),
            };
            stats.hugetlb.insert(size, h);
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn page_sizes() {
        assert_eq!(page_size_name(2048), "2MB");
        assert_eq!(page_size_name(1 << 20), "1GB");
        assert_eq!(page_size_name(64), "64KB");
    }

    #[test]
    fn blkio_parsing() {
        let v1 = blkio_v1("8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\nTotal 12288\n");
        assert_eq!(v1.len(), 3);
        assert_eq!(
            (v1[1].major, v1[1].op.as_str(), v1[1].value),
            (8, "Write", 8192)
        );
        let v2 = io_stat_v2("8:16 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n");
        assert_eq!(v2.io_service_bytes_recursive.len(), 2);
        assert_eq!(v2.io_serviced_recursive[1].value, 4);
        assert_eq!(v2.io_serviced_recursive[1].minor, 16);
    }

    #[test]
    fn json_shape() {
        let mut s = Stats {
            cpu: Some(CpuStats {
                usage: CpuUsage {
                    total: 10,
                    percpu: vec![4, 6],
                    kernel: 3,
                    user: 7,
                    ..CpuUsage::default()
                },
                throttling: Throttling::default(),
            }),
            pids: Some(PidsStats {
                current: 1,
                limit: 0,
            }),
            ..Stats::default()
        };
        s.hugetlb.insert("2MB".into(), HugetlbStats::default());
        let v = serde_json::to_value(&s).expect("serialises");
        assert_eq!(
            v,
            serde_json::json!({
                "cpu": {"usage": {"total": 10, "percpu": [4, 6], "kernel": 3, "user": 7},
                        "throttling": {}},
                "pids": {"current": 1},
                "hugetlb": {"2MB": {"failcnt": 0}}
            })
        );
    }
}
