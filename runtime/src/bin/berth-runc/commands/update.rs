//! `update`: change a running container's resource limits, from a
//! `LinuxResources` JSON document (`-r FILE`, `-r -` for stdin) or from flags.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};

use super::Globals;
use crate::common;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON file with the new resources ("-" for stdin); the other flags are
    /// then ignored.
    #[arg(short = 'r', long, value_name = "FILE")]
    pub resources: Option<PathBuf>,

    /// Memory limit in bytes (suffixes k, m, g, t, p; -1 for none).
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory soft limit in bytes.
    #[arg(long, allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit in bytes (-1 for unlimited swap).
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Kernel memory limit in bytes (cgroup v1 only, deprecated).
    #[arg(long, allow_hyphen_values = true)]
    pub kernel_memory: Option<String>,
    /// Kernel TCP buffer memory limit in bytes (cgroup v1 only).
    #[arg(long, allow_hyphen_values = true)]
    pub kernel_memory_tcp: Option<String>,

    /// CPU shares (relative weight).
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    /// CPU CFS period in microseconds.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota in microseconds (-1 for none).
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU realtime period in microseconds.
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    /// CPU realtime runtime in microseconds.
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPUs the container may use (e.g. 0-3,6).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use.
    #[arg(long)]
    pub cpuset_mems: Option<String>,

    /// Maximum number of tasks (-1 or 0 for no limit).
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,

    /// Block IO weight, 10 to 1000.
    #[arg(long)]
    pub blkio_weight: Option<u16>,

    /// Container id.
    pub id: String,
}

pub fn run(args: &Args, g: &Globals) -> Result<()> {
    let resources = match &args.resources {
        Some(path) => read_resources(path)?,
        None => resources_from_flags(args)?,
    };
    let c = common::load(&g.runtime(), &args.id)?;
    c.update(&resources)
        .with_context(|| format!("updating container {}", args.id))
}

fn read_resources(path: &std::path::Path) -> Result<LinuxResources> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading resources from stdin")?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("reading resources from {}", path.display()))?;
    }
    serde_json::from_str(&text).with_context(|| {
        format!(
            "parsing resources from {}",
            if path.as_os_str() == "-" {
                "stdin".to_string()
            } else {
                path.display().to_string()
            }
        )
    })
}

/// Resources holding only what the flags set.
fn resources_from_flags(args: &Args) -> Result<LinuxResources> {
    let mem = |flag: &str, v: &Option<String>| -> Result<Option<i64>> {
        v.as_deref()
            .map(|s| parse_memory(s).with_context(|| format!("invalid value for --{flag}")))
            .transpose()
    };
    let mut memory = LinuxMemory::default();
    memory.set_limit(mem("memory", &args.memory)?);
    memory.set_reservation(mem("memory-reservation", &args.memory_reservation)?);
    memory.set_swap(mem("memory-swap", &args.memory_swap)?);
    memory.set_kernel(mem("kernel-memory", &args.kernel_memory)?);
    memory.set_kernel_tcp(mem("kernel-memory-tcp", &args.kernel_memory_tcp)?);

    let mut cpu = LinuxCpu::default();
    cpu.set_shares(args.cpu_shares);
    cpu.set_period(args.cpu_period);
    cpu.set_quota(args.cpu_quota);
    cpu.set_realtime_period(args.cpu_rt_period);
    cpu.set_realtime_runtime(args.cpu_rt_runtime);
    cpu.set_cpus(args.cpuset_cpus.clone());
    cpu.set_mems(args.cpuset_mems.clone());

    let mut r = LinuxResources::default();
    if memory != LinuxMemory::default() {
        r.set_memory(Some(memory));
    }
    if cpu != LinuxCpu::default() {
        r.set_cpu(Some(cpu));
    }
    if let Some(limit) = args.pids_limit {
        let mut pids = LinuxPids::default();
        pids.set_limit(limit);
        r.set_pids(Some(pids));
    }
    if let Some(w) = args.blkio_weight {
        let mut b = LinuxBlockIo::default();
        b.set_weight(Some(w));
        r.set_block_io(Some(b));
    }
    Ok(r)
}

/// Parses a byte count as runc's memory flags do: a number, optionally with
/// a fraction, then an optional binary unit k, m, g, t or p (each may be
/// followed by `b` or `ib`, any case, one space allowed before it); `-1`
/// means unlimited.
pub fn parse_memory(raw: &str) -> Result<i64> {
    if raw == "-1" {
        return Ok(-1);
    }
    let split = raw
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(raw.len());
    let (num, unit) = raw.split_at(split);
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let valid_number = !num.is_empty()
        && !num.starts_with('.')
        && !num.ends_with('.')
        && num.matches('.').count() <= 1;
    if !valid_number {
        bail!("invalid size: {raw:?}");
    }
    let shift = match unit.as_str() {
        "" | "b" => 0,
        u => {
            let (prefix, suffix) = (u.get(..1), u.get(1..));
            if !matches!(suffix, Some("" | "b" | "ib")) {
                bail!("invalid size: {raw:?}");
            }
            match prefix {
                Some("k") => 10,
                Some("m") => 20,
                Some("g") => 30,
                Some("t") => 40,
                Some("p") => 50,
                _ => bail!("invalid size: {raw:?}"),
            }
        }
    };
    if num.contains('.') {
        let value: f64 = num
            .parse()
            .with_context(|| format!("invalid size: {raw:?}"))?;
        let bytes = value * (1u64 << shift) as f64;
        if bytes >= i64::MAX as f64 {
            bail!("size too large: {raw:?}");
        }
        // Truncates the fraction of a byte, as runc does.
        return Ok(bytes as i64);
    }
    num.parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(1i64 << shift))
        .with_context(|| format!("size too large: {raw:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases: [(&str, i64); 14] = [
            ("0", 0),
            ("1024", 1024),
            ("-1", -1),
            ("64m", 64 << 20),
            ("64M", 64 << 20),
            ("64mb", 64 << 20),
            ("64MiB", 64 << 20),
            ("1g", 1 << 30),
            ("1 GB", 1 << 30),
            ("1.5g", 3 << 29),
            ("10k", 10 << 10),
            ("2t", 2 << 40),
            ("1p", 1 << 50),
            ("100b", 100),
        ];
        for (s, want) in cases {
            assert_eq!(parse_memory(s).ok(), Some(want), "{s}");
        }
    }

    #[test]
    fn bad_sizes() {
        for s in [
            "",
            "m",
            "-2",
            "1x",
            "1.2.3",
            ".5m",
            "5.m",
            "1kk",
            "1gbb",
            "1  k",
            "12e3",
            "99999999p",
        ] {
            assert!(parse_memory(s).is_err(), "{s:?} should fail");
        }
    }

    fn args(argv: &[&str]) -> Args {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            a: Args,
        }
        let mut full = vec!["update"];
        full.extend_from_slice(argv);
        match Wrap::try_parse_from(full) {
            Ok(w) => w.a,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn flags_to_resources() {
        let a = args(&[
            "--memory",
            "64m",
            "--cpu-quota",
            "-1",
            "--pids-limit",
            "10",
            "c1",
        ]);
        let r = resources_from_flags(&a).expect("resources");
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["memory"]["limit"], 64 << 20);
        assert_eq!(v["cpu"]["quota"], -1);
        assert_eq!(v["pids"]["limit"], 10);
        assert!(r.block_io().is_none());
    }

    #[test]
    fn no_flags_no_resources() {
        let r = resources_from_flags(&args(&["c1"])).expect("resources");
        assert!(r.memory().is_none() && r.cpu().is_none() && r.pids().is_none());
    }
}
