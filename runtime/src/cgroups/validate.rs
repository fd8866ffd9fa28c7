//! Checks on `LinuxResources` that hold for both cgroup versions, run before
//! anything is written so that a bad `update` does not half-apply.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources, LinuxThrottleDevice};

use super::CgroupError;

fn invalid(field: &str, reason: impl Into<String>) -> CgroupError {
    CgroupError::InvalidResource {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// `-1` (unlimited), `0` (unset) or positive.
fn limit(field: &str, v: Option<i64>) -> Result<(), CgroupError> {
    match v {
        Some(v) if v < -1 => Err(invalid(
            field,
            format!("{v} is negative (only -1 means unlimited)"),
        )),
        _ => Ok(()),
    }
}

pub(super) fn resources(r: &LinuxResources) -> Result<(), CgroupError> {
    if let Some(m) = r.memory() {
        limit("memory.limit", m.limit())?;
        limit("memory.reservation", m.reservation())?;
        limit("memory.swap", m.swap())?;
        if let (Some(l), Some(s)) = (m.limit(), m.swap()) {
            if l > 0 && s > 0 && s < l {
                return Err(invalid(
                    "memory.swap",
                    format!("{s} is below memory.limit {l} (swap is memory plus swap)"),
                ));
            }
        }
        if let Some(s) = m.swappiness() {
            if s > 100 {
                return Err(invalid("memory.swappiness", format!("{s} is above 100")));
            }
        }
    }
    if let Some(c) = r.cpu() {
        match c.quota() {
            Some(q) if q < -1 => {
                return Err(invalid(
                    "cpu.quota",
                    format!("{q} is negative (only -1 means unlimited)"),
                ))
            }
            Some(q) if q > 0 && q < 1000 => {
                return Err(invalid(
                    "cpu.quota",
                    format!("{q} is below the kernel's minimum of 1000 µs"),
                ))
            }
            _ => {}
        }
        if let Some(p) = c.period() {
            if p != 0 && !(1000..=1_000_000).contains(&p) {
                return Err(invalid(
                    "cpu.period",
                    format!("{p} is outside 1000..=1000000 µs"),
                ));
            }
        }
        limit("cpu.realtimeRuntime", c.realtime_runtime())?;
        for (field, v) in [("cpu.cpus", c.cpus()), ("cpu.mems", c.mems())] {
            if let Some(v) = v {
                if !v
                    .chars()
                    .all(|ch| ch.is_ascii_digit() || ch == ',' || ch == '-')
                {
                    return Err(invalid(
                        field,
                        format!("{v:?} is not a list like \"0-2,4\""),
                    ));
                }
            }
        }
    }
    if let Some(b) = r.block_io() {
        weight("blockIO.weight", b.weight())?;
        weight("blockIO.leafWeight", b.leaf_weight())?;
        for d in b.weight_device().iter().flatten() {
            device_numbers("blockIO.weightDevice", d.major(), d.minor())?;
            weight("blockIO.weightDevice.weight", d.weight())?;
            weight("blockIO.weightDevice.leafWeight", d.leaf_weight())?;
        }
        for (field, list) in [
            (
                "blockIO.throttleReadBpsDevice",
                b.throttle_read_bps_device(),
            ),
            (
                "blockIO.throttleWriteBpsDevice",
                b.throttle_write_bps_device(),
            ),
            (
                "blockIO.throttleReadIOPSDevice",
                b.throttle_read_iops_device(),
            ),
            (
                "blockIO.throttleWriteIOPSDevice",
                b.throttle_write_iops_device(),
            ),
        ] {
            for d in list.iter().flatten() {
                throttle(field, d)?;
            }
        }
    }
    for h in r.hugepage_limits().iter().flatten() {
        page_size(h.page_size())?;
        limit("hugepageLimits.limit", Some(h.limit()))?;
    }
    if let Some(n) = r.network() {
        for p in n.priorities().iter().flatten() {
            let name = p.name();
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '/') {
                return Err(invalid(
                    "network.priorities.name",
                    format!("{name:?} is not an interface name"),
                ));
            }
        }
    }
    for key in r.unified().iter().flat_map(|u| u.keys()) {
        unified_key(key)?;
    }
    for d in r.devices().iter().flatten() {
        device_rule(d)?;
    }
    Ok(())
}

fn weight(field: &str, w: Option<u16>) -> Result<(), CgroupError> {
    match w {
        Some(w) if w != 0 && !(10..=1000).contains(&w) => {
            Err(invalid(field, format!("{w} is outside 10..=1000")))
        }
        _ => Ok(()),
    }
}

fn device_numbers(field: &str, major: i64, minor: i64) -> Result<(), CgroupError> {
    if major < 0 || minor < 0 || major > i64::from(u32::MAX) || minor > i64::from(u32::MAX) {
        return Err(invalid(
            field,
            format!("{major}:{minor} is not a device number"),
        ));
    }
    Ok(())
}

fn throttle(field: &str, d: &LinuxThrottleDevice) -> Result<(), CgroupError> {
    device_numbers(field, d.major(), d.minor())
}

/// `<digits><K|M|G>B`, the form the kernel uses in `hugetlb.<size>.*` names.
pub(super) fn page_size(size: &str) -> Result<(), CgroupError> {
    let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &size[digits.len()..];
    if digits.is_empty()
        || !digits.chars().all(|c| c.is_ascii_digit())
        || !matches!(unit, "KB" | "MB" | "GB")
    {
        return Err(invalid(
            "hugepageLimits.pageSize",
            format!("{size:?} is not a size like \"2MB\""),
        ));
    }
    Ok(())
}

/// A `unified` key must name a file in the cgroup directory itself.
pub(super) fn unified_key(key: &str) -> Result<(), CgroupError> {
    if key.is_empty()
        || key.contains('/')
        || key.contains('\0')
        || key.contains("..")
        || key.starts_with('.')
    {
        return Err(invalid(
            "unified",
            format!("key {key:?} does not name a file of the cgroup directory"),
        ));
    }
    Ok(())
}

fn device_rule(d: &LinuxDeviceCgroup) -> Result<(), CgroupError> {
    if let Some(a) = d.access() {
        if !a.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(invalid(
                "devices.access",
                format!("{a:?} may only contain r, w and m"),
            ));
        }
    }
    for (field, v) in [("devices.major", d.major()), ("devices.minor", d.minor())] {
        if let Some(v) = v {
            // Negative numbers are wildcards (runc writes -1); the eBPF filter
            // compares against 32-bit immediates.
            if v > i64::from(i32::MAX) {
                return Err(invalid(field, format!("{v} is too large")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod unit {
    use super::*;
    use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};

    fn field_of(e: CgroupError) -> String {
        match e {
            CgroupError::InvalidResource { field, .. } => field,
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn rejects_bad_memory() {
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(-2i64)
                    .build()
                    .expect("builds"),
            )
            .build()
            .expect("builds");
        assert_eq!(
            field_of(resources(&r).expect_err("negative")),
            "memory.limit"
        );
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(200i64)
                    .swap(100i64)
                    .build()
                    .expect("builds"),
            )
            .build()
            .expect("builds");
        assert_eq!(
            field_of(resources(&r).expect_err("swap<limit")),
            "memory.swap"
        );
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(-1i64)
                    .swap(-1i64)
                    .build()
                    .expect("builds"),
            )
            .build()
            .expect("builds");
        resources(&r).expect("unlimited is fine");
    }

    #[test]
    fn rejects_bad_cpu() {
        let r = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(500i64)
                    .build()
                    .expect("builds"),
            )
            .build()
            .expect("builds");
        assert_eq!(
            field_of(resources(&r).expect_err("tiny quota")),
            "cpu.quota"
        );
        let r = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .period(10u64)
                    .build()
                    .expect("builds"),
            )
            .build()
            .expect("builds");
        assert_eq!(
            field_of(resources(&r).expect_err("tiny period")),
            "cpu.period"
        );
        let r = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .cpus("0-1;rm")
                    .build()
                    .expect("builds"),
            )
            .build()
            .expect("builds");
        assert_eq!(field_of(resources(&r).expect_err("bad list")), "cpu.cpus");
    }

    #[test]
    fn unified_keys_and_page_sizes() {
        for bad in ["", "../x", "a/b", ".hidden", "memory..max"] {
            assert!(unified_key(bad).is_err(), "{bad}");
        }
        unified_key("memory.high").expect("plain key");
        page_size("2MB").expect("2MB");
        page_size("1GB").expect("1GB");
        for bad in ["MB", "2mb", "2M", "2MB/x", "../2MB"] {
            assert!(page_size(bad).is_err(), "{bad}");
        }
    }
}
