//! The kernel command line's `berth.*` keys.

use std::path::PathBuf;
use std::time::Duration;

use berth_platform::protocol::{
    parse_share_entries, ShareFs, StaticNet, CMDLINE_HOST_PORTS, CMDLINE_NET, CMDLINE_SHARES,
    CMDLINE_TIME,
};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct BootArgs {
    /// The host's wall clock when it started the VM.
    pub time: Option<Duration>,
    /// Share tags, where to mount them, and as what.
    pub shares: Vec<(String, PathBuf, ShareFs)>,
    /// Ports of the host's loopback reachable on the guest's 127.0.0.1.
    pub host_ports: Vec<u16>,
    /// eth0's fixed address, where the host's network has no DHCP server.
    pub net: Option<StaticNet>,
}

pub fn parse(cmdline: &str) -> BootArgs {
    let mut out = BootArgs::default();
    for word in cmdline.split_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        if key == CMDLINE_TIME {
            out.time = parse_time(value);
        } else if key == CMDLINE_SHARES {
            out.shares = parse_share_entries(value)
                .into_iter()
                .map(|(tag, path, fs)| (tag, PathBuf::from(path), fs))
                .collect();
        } else if key == CMDLINE_NET {
            out.net = StaticNet::parse(value);
        } else if key == CMDLINE_HOST_PORTS {
            out.host_ports = value
                .split(',')
                .filter_map(|p| p.parse::<u16>().ok())
                .filter(|&p| p != 0)
                .collect();
        }
    }
    out
}

fn parse_time(value: &str) -> Option<Duration> {
    let (secs, nanos) = value.split_once('.').unwrap_or((value, "0"));
    let secs = secs.parse().ok()?;
    let nanos: u32 = nanos.parse().ok()?;
    (nanos < 1_000_000_000).then(|| Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_parsed_and_bad_values_ignored() {
        let a = parse(
            "console=ttyS0 berth.time=1700000000.5 berth.shares=s0:/srv/a,bad,s1:rel,s2:/b:virtiofs quiet",
        );
        assert_eq!(a.time, Some(Duration::new(1_700_000_000, 5)));
        assert_eq!(
            a.shares,
            vec![
                ("s0".into(), "/srv/a".into(), ShareFs::NineP),
                ("s2".into(), "/b".into(), ShareFs::Virtiofs)
            ]
        );
        assert_eq!(parse("berth.time=x").time, None);
        assert_eq!(parse("berth.time=1.2000000000").time, None);
        assert_eq!(parse("").shares, vec![]);
        assert_eq!(
            parse("berth.host_ports=5000,x,0,70000,5001").host_ports,
            vec![5000, 5001]
        );
        let net = parse("quiet berth.net=172.29.0.5/24,172.29.0.1,192.168.1.1 pci=off")
            .net
            .expect("net");
        assert_eq!(net.cmdline_value(), "172.29.0.5/24,172.29.0.1,192.168.1.1");
        assert_eq!(parse("berth.net=172.29.0.5,172.29.0.1").net, None);
        assert_eq!(parse("console=ttyS0").net, None);
    }
}
