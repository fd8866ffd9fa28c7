//! What `docker stats` shows besides the cgroup's counters: the host's CPU
//! time (the denominator of the CPU percentage) and the network interfaces
//! of the container's namespace.

use std::collections::BTreeMap;

pub use berth_runtime::cgroups::BlkioEntry;

/// One stats sample of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSample {
    pub id: String,
    /// With the leading `/`.
    pub name: String,
    /// When it was read (RFC 3339).
    pub read: String,
    /// False for a container that is not running: everything else is zero.
    pub running: bool,
    pub cgroup: berth_runtime::cgroups::Stats,
    /// Host CPU time in nanoseconds, all CPUs (Docker's `system_cpu_usage`).
    pub system_cpu_usage: u64,
    pub online_cpus: u32,
    /// Interfaces of the container's network namespace, `lo` left out;
    /// `None` with the host's network.
    pub networks: Option<BTreeMap<String, NetDev>>,
}

/// Counters of one interface (`/proc/<pid>/net/dev`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetDev {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// The first line of `/proc/stat` (user … softirq) in nanoseconds, as Docker
/// computes it.
pub(super) fn system_cpu_usage() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    system_cpu_from(&stat, clock_ticks())
}

fn system_cpu_from(stat: &str, ticks_per_second: u64) -> u64 {
    let ticks: u64 = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(7)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    ticks.saturating_mul(1_000_000_000 / ticks_per_second.max(1))
}

/// CPUs online on the host (what the CPU percentage is scaled by).
pub(super) fn online_cpus() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).ok().filter(|n| *n > 0).unwrap_or(1)
}

/// The interfaces in the network namespace of process `pid`.
pub(super) fn net_dev(pid: i32) -> BTreeMap<String, NetDev> {
    std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .map(|t| parse_net_dev(&t))
        .unwrap_or_default()
}

fn parse_net_dev(text: &str) -> BTreeMap<String, NetDev> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let v: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            let at = |i: usize| v.get(i).copied().unwrap_or(0);
            Some((
                name.to_string(),
                NetDev {
                    rx_bytes: at(0),
                    rx_packets: at(1),
                    rx_errors: at(2),
                    rx_dropped: at(3),
                    tx_bytes: at(8),
                    tx_packets: at(9),
                    tx_errors: at(10),
                    tx_dropped: at(11),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
 lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n  \
 eth0:    1500      12    1    2    0     0          0         0      900       7    3    4    0     0       0          0\n";
        let n = parse_net_dev(text);
        assert_eq!(n.len(), 1);
        let e = &n["eth0"];
        assert_eq!(
            (e.rx_bytes, e.rx_packets, e.rx_errors, e.rx_dropped),
            (1500, 12, 1, 2)
        );
        assert_eq!(
            (e.tx_bytes, e.tx_packets, e.tx_errors, e.tx_dropped),
            (900, 7, 3, 4)
        );
    }

    #[test]
    fn proc_stat_in_nanoseconds() {
        let stat = "cpu  10 1 5 100 2 0 1 0 0 0\ncpu0 5 0 2 50 1 0 0 0 0 0\n";
        // user nice system idle iowait irq softirq: 119 ticks of 10 ms.
        assert_eq!(system_cpu_from(stat, 100), 119 * 10_000_000);
    }
}
