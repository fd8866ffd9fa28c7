//! Which ports the host should forward: every TCP socket listening, and
//! every UDP socket bound, on the guest's wildcard or loopback addresses (the
//! engine's published ports and host-network containers alike), read from
//! `/proc/net/{tcp,tcp6,udp,udp6}`.

use std::collections::BTreeSet;

use berth_platform::protocol::{ForwardedPort, Proto};

/// TCP state LISTEN, and UDP's "unconnected" state.
const TCP_LISTEN: &str = "0A";
const UDP_UNCONNECTED: &str = "07";

/// Parses one `/proc/net/*` table.
pub fn parse_table(text: &str, proto: Proto) -> BTreeSet<ForwardedPort> {
    let mut out = BTreeSet::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
            continue;
        };
        let wanted = match proto {
            Proto::Tcp => TCP_LISTEN,
            Proto::Udp => UDP_UNCONNECTED,
        };
        if *state != wanted {
            continue;
        }
        let Some((ip, port)) = local.split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port, 16) else {
            continue;
        };
        if port == 0 || !forwardable(ip) {
            continue;
        }
        out.insert(ForwardedPort { proto, port });
    }
    out
}

/// Wildcard or loopback, in the kernel's hex (host byte order per 32 bits).
fn forwardable(ip: &str) -> bool {
    matches!(
        ip,
        "00000000"
            | "0100007F"
            | "00000000000000000000000000000000"
            | "00000000000000000000000001000000"
            | "0000000000000000FFFF00000100007F"
    )
}

pub fn scan() -> BTreeSet<ForwardedPort> {
    let mut out = BTreeSet::new();
    for (file, proto) in [
        ("/proc/net/tcp", Proto::Tcp),
        ("/proc/net/tcp6", Proto::Tcp),
        ("/proc/net/udp", Proto::Udp),
        ("/proc/net/udp6", Proto::Udp),
    ] {
        if let Ok(text) = std::fs::read_to_string(file) {
            out.extend(parse_table(&text, proto));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_on_wildcard_and_loopback() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0F02000A:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 0100007F:0051 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4 1
";
        let ports: Vec<u16> = parse_table(tcp, Proto::Tcp)
            .iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(ports, vec![80, 8080]);
        let udp = "  sl  local_address rem_address   st
  1: 00000000:0035 00000000:0000 07 0
";
        let got = parse_table(udp, Proto::Udp);
        assert!(got.contains(&ForwardedPort {
            proto: Proto::Udp,
            port: 53
        }));
    }
}
