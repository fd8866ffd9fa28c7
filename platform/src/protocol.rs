//! What the host and `berth-agent` say to each other over vsock.
//!
//! - [`API_PORT`]: the Docker Engine API, HTTP/1.1, exactly as on a local socket.
//! - [`FRAMED_API_PORT`]: the same API, but the host's bytes arrive as
//!   [`StreamFrame`]s so that a client's half-close (the docker CLI's end of
//!   stdin) survives transports that turn any shutdown into a full close:
//!   hybrid vsock (vhost-device-vsock, Firecracker) sends SHUTDOWN with both
//!   directions when the host side reaches end of file, and the guest could
//!   then no longer send the attach stream's output.
//! - [`CONTROL_PORT`]: one JSON [`ControlRequest`] per line, one JSON
//!   [`ControlReply`] per line back (`watch_ports` keeps replying, one line
//!   each time the set of forwarded ports changes).
//! - [`FORWARD_PORT`]: one header line `TCP <port>\n` (or `UDP <port>\n`),
//!   a reply line `OK\n` or `ERR <message>\n`, then the connection's bytes
//!   as [`StreamFrame`]s both ways ([`StreamFrame::splice`]).
//!   UDP datagrams travel as [`UdpFrame`]s: a big-endian u16 length, then the
//!   payload.
//! - [`HOST_SERVICE_PORT`] (the other way: the guest connects to the host): one
//!   header line `TCP <port>\n`, a reply line `OK\n` or `ERR <message>\n`, then
//!   the bytes of a connection to that port on the host's loopback, as
//!   [`StreamFrame`]s both ways. Only the
//!   ports the machine's configuration allows are connected (a registry on the
//!   host's 127.0.0.1, say); the guest reaches them on its own 127.0.0.1.
//! - [`READY_PORT`] (guest to host): once its listeners are bound the agent
//!   connects here and writes one JSON [`ControlReply`] line (its version and
//!   `ready_ms`). The host waits for that instead of probing: a host
//!   connection that reaches vhost-device-vsock after the guest's memory is
//!   mapped but before its virtqueues are ready ends the backend's worker
//!   thread (its queue iteration fails), and vsock is then dead for good.

use serde::{Deserialize, Serialize};

pub const API_PORT: u32 = 2375;
pub const CONTROL_PORT: u32 = 1024;
pub const FORWARD_PORT: u32 = 1025;
pub const FRAMED_API_PORT: u32 = 2376;
pub const HOST_SERVICE_PORT: u32 = 1026;
pub const READY_PORT: u32 = 1027;
/// Port of the host's 9p server for Hyper-V (HCS Plan9) shares: the guest
/// connects to it over vsock and mounts the share with `trans=fd`.
pub const PLAN9_PORT: u32 = 564;

/// Kernel command-line key carrying the host's wall clock at boot
/// (`berth.time=<unix seconds>.<nanoseconds>`).
pub const CMDLINE_TIME: &str = "berth.time";
/// Kernel command-line key naming the shares to mount
/// (`berth.shares=<tag>:<guest path>[:<fs>],…`, see [`share_entry`]).
pub const CMDLINE_SHARES: &str = "berth.shares";
/// Kernel command-line key listing the host loopback ports the guest may reach
/// through [`HOST_SERVICE_PORT`] (`berth.host_ports=5000,5001`).
pub const CMDLINE_HOST_PORTS: &str = "berth.host_ports";
/// Kernel command-line key giving eth0 a fixed address where the host's
/// network hands out none by DHCP (an HNS NAT network on Windows):
/// `berth.net=<address>/<prefix>,<gateway>[,<dns>…]`, see [`StaticNet`].
pub const CMDLINE_NET: &str = "berth.net";

/// How a shared host directory reaches the guest: the filesystem the agent mounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShareFs {
    /// virtio-9p (QEMU without virtiofsd).
    #[default]
    #[serde(rename = "9p")]
    NineP,
    /// virtio-fs (Virtualization.framework, QEMU with virtiofsd).
    Virtiofs,
}

impl ShareFs {
    /// The name on the command line, which is also the kernel's filesystem type.
    pub fn as_str(self) -> &'static str {
        match self {
            ShareFs::NineP => "9p",
            ShareFs::Virtiofs => "virtiofs",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [ShareFs::NineP, ShareFs::Virtiofs]
            .into_iter()
            .find(|fs| fs.as_str() == name)
    }
}

/// One share in [`CMDLINE_SHARES`]: `<tag>:<guest path>:<fs>`. Guest paths
/// never contain ':' (the machine settings refuse them).
pub fn share_entry(tag: &str, guest_path: &str, fs: ShareFs) -> String {
    format!("{tag}:{guest_path}:{}", fs.as_str())
}

/// The shares of a [`CMDLINE_SHARES`] value as (tag, guest path, fs). An
/// entry without a filesystem is 9p (what hosts before virtiofs sent);
/// entries with an empty tag, a relative path or an unknown filesystem are
/// skipped.
pub fn parse_share_entries(value: &str) -> Vec<(String, String, ShareFs)> {
    value
        .split(',')
        .filter_map(|entry| {
            let (tag, rest) = entry.split_once(':')?;
            let (path, fs) = match rest.split_once(':') {
                Some((path, fs)) => (path, ShareFs::parse(fs)?),
                None => (rest, ShareFs::NineP),
            };
            (!tag.is_empty() && path.starts_with('/'))
                .then(|| (tag.to_string(), path.to_string(), fs))
        })
        .collect()
}

/// eth0's fixed IPv4 configuration, the value of [`CMDLINE_NET`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNet {
    pub address: std::net::Ipv4Addr,
    pub prefix: u8,
    pub gateway: std::net::Ipv4Addr,
    pub dns: Vec<std::net::Ipv4Addr>,
}

impl StaticNet {
    /// `<address>/<prefix>,<gateway>[,<dns>…]`.
    pub fn cmdline_value(&self) -> String {
        let mut out = format!("{}/{},{}", self.address, self.prefix, self.gateway);
        for d in &self.dns {
            out.push_str(&format!(",{d}"));
        }
        out
    }

    /// Reads [`Self::cmdline_value`]'s form; `None` for anything else (a
    /// bad value leaves eth0 to DHCP rather than half-configured).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split(',');
        let (address, prefix) = parts.next()?.split_once('/')?;
        let address = address.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| (1..=32).contains(p))?;
        let gateway = parts.next()?.parse().ok()?;
        let dns = parts.map(|d| d.parse().ok()).collect::<Option<Vec<_>>>()?;
        Some(Self {
            address,
            prefix,
            gateway,
            dns,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Is the agent up? Replies with its version and boot timings.
    Ping,
    /// Set the guest clock (after host sleep the guest clock lags).
    SetTime { unix_secs: u64, nanos: u32 },
    /// Stop containers, sync the data disk and power off.
    Shutdown,
    /// Stream the set of TCP/UDP ports the host should forward.
    WatchPorts,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Milliseconds from kernel start to the API listening (guest clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ForwardedPort>>,
}

impl ControlReply {
    pub fn ok() -> Self {
        Self {
            ok: true,
            ..Self::default()
        }
    }
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(message.into()),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ForwardedPort {
    pub proto: Proto,
    pub port: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("malformed forward header {0:?}")]
    BadHeader(String),
}

/// The forward header line (without the newline).
pub fn forward_header(port: ForwardedPort) -> String {
    format!("{} {}", port.proto.as_str(), port.port)
}

/// Parses a forward header line (with or without its newline).
pub fn parse_forward_header(line: &str) -> Result<ForwardedPort, ProtocolError> {
    let bad = || ProtocolError::BadHeader(line.chars().take(64).collect());
    let (proto, port) = line.trim_end().split_once(' ').ok_or_else(bad)?;
    let proto = match proto {
        "TCP" => Proto::Tcp,
        "UDP" => Proto::Udp,
        _ => return Err(bad()),
    };
    let port = port.parse::<u16>().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok(ForwardedPort { proto, port })
}

/// One UDP datagram on a forwarded stream.
pub struct UdpFrame;

impl UdpFrame {
    pub const MAX: usize = u16::MAX as usize;

    /// Length prefix + payload; `None` if the datagram is too large.
    pub fn encode(payload: &[u8]) -> Option<Vec<u8>> {
        let len = u16::try_from(payload.len()).ok()?;
        let mut out = Vec::with_capacity(payload.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        Some(out)
    }

    /// Reads one frame; `Ok(None)` at a clean end of stream.
    pub async fn read<R: tokio::io::AsyncRead + Unpin>(
        r: &mut R,
        buf: &mut Vec<u8>,
    ) -> std::io::Result<Option<usize>> {
        use tokio::io::AsyncReadExt;
        let mut len = [0u8; 2];
        match r.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = usize::from(u16::from_be_bytes(len));
        buf.resize(len, 0);
        r.read_exact(&mut buf[..len]).await?;
        Ok(Some(len))
    }
}

/// The host-to-guest direction of a [`FRAMED_API_PORT`] connection: a
/// big-endian u32 length, then that many bytes; a zero length is the
/// client's half-close.
pub struct StreamFrame;

impl StreamFrame {
    /// Largest payload per frame (what one read gives at most).
    pub const MAX: usize = 64 * 1024;

    /// Copies `r` to `w` as frames until `r` ends, then writes the
    /// half-close frame. Returns the payload bytes copied.
    pub async fn copy_framed<R, W>(r: &mut R, w: &mut W) -> std::io::Result<u64>
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 4 + Self::MAX];
        let mut total = 0u64;
        loop {
            let n = r.read(&mut buf[4..]).await?;
            // n ≤ MAX, which fits in u32.
            buf[..4].copy_from_slice(&(n as u32).to_be_bytes());
            w.write_all(&buf[..4 + n]).await?;
            w.flush().await?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    }

    /// Copies the payloads of frames from `r` to `w` until the half-close
    /// frame (`Ok(true)`) or until `r` ends without one (`Ok(false)`: the
    /// host went away). A frame longer than [`Self::MAX`] is an error.
    pub async fn copy_unframed<R, W>(r: &mut R, w: &mut W) -> std::io::Result<bool>
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; Self::MAX];
        loop {
            let mut len = [0u8; 4];
            match r.read_exact(&mut len).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
            let len = u32::from_be_bytes(len) as usize;
            if len == 0 {
                return Ok(true);
            }
            if len > Self::MAX {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("stream frame of {len} bytes exceeds {}", Self::MAX),
                ));
            }
            match r.read_exact(&mut buf[..len]).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
            w.write_all(&buf[..len]).await?;
            w.flush().await?;
        }
    }

    /// Carries the TCP connection `local` over `tunnel` as frames in both
    /// directions, so each side's half-close travels as a frame: hybrid vsock
    /// delivers neither direction's shutdown on its own (a server that answers
    /// and closes left the host's client waiting for the end of the answer).
    /// Returns once both directions have ended; an end without the half-close
    /// frame (the other side went away) is an error that ends both at once.
    pub async fn splice<L, T>(local: L, tunnel: T) -> std::io::Result<()>
    where
        L: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::AsyncWriteExt;
        let (mut local_r, mut local_w) = tokio::io::split(local);
        let (mut tunnel_r, mut tunnel_w) = tokio::io::split(tunnel);
        let outbound = async {
            Self::copy_framed(&mut local_r, &mut tunnel_w).await?;
            Ok::<(), std::io::Error>(())
        };
        let inbound = async {
            if Self::copy_unframed(&mut tunnel_r, &mut local_w).await? {
                local_w.shutdown().await
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the tunnel ended without a half-close",
                ))
            }
        };
        tokio::try_join!(outbound, inbound).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_net_round_trips_and_bad_values_are_refused() {
        let net = StaticNet {
            address: "172.29.0.7".parse().expect("ip"),
            prefix: 24,
            gateway: "172.29.0.1".parse().expect("ip"),
            dns: vec![
                "172.29.0.1".parse().expect("ip"),
                "9.9.9.9".parse().expect("ip"),
            ],
        };
        let value = net.cmdline_value();
        assert_eq!(value, "172.29.0.7/24,172.29.0.1,172.29.0.1,9.9.9.9");
        assert_eq!(StaticNet::parse(&value), Some(net.clone()));
        let no_dns = StaticNet::parse("10.1.2.3/16,10.1.0.1").expect("no dns");
        assert!(no_dns.dns.is_empty());
        for bad in [
            "",
            "172.29.0.7",
            "172.29.0.7/24",
            "172.29.0.7/33,172.29.0.1",
            "172.29.0.7/0,172.29.0.1",
            "172.29.0.7/24,gw",
            "172.29.0.7/24,172.29.0.1,",
            "172.29.0.7/24,172.29.0.1,x",
            "300.1.1.1/24,172.29.0.1",
        ] {
            assert_eq!(StaticNet::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn share_entries_round_trip_and_old_entries_are_9p() {
        let value = [
            share_entry("s0", "/srv/a", ShareFs::Virtiofs),
            share_entry("s1", "/b", ShareFs::NineP),
        ]
        .join(",");
        assert_eq!(value, "s0:/srv/a:virtiofs,s1:/b:9p");
        assert_eq!(
            parse_share_entries(&value),
            vec![
                ("s0".into(), "/srv/a".into(), ShareFs::Virtiofs),
                ("s1".into(), "/b".into(), ShareFs::NineP),
            ]
        );
        // The format before the filesystem was named, and bad entries.
        assert_eq!(
            parse_share_entries("s0:/srv/a,bad,s1:rel,:/x,s2:/c:nfs,s3:/d:virtiofs"),
            vec![
                ("s0".into(), "/srv/a".into(), ShareFs::NineP),
                ("s3".into(), "/d".into(), ShareFs::Virtiofs),
            ]
        );
        for fs in [ShareFs::NineP, ShareFs::Virtiofs] {
            assert_eq!(ShareFs::parse(fs.as_str()), Some(fs));
            let json = serde_json::to_string(&fs).expect("json");
            assert_eq!(json, format!("\"{}\"", fs.as_str()));
        }
    }

    /// A server that answers and closes, behind two splices (host and guest) joined by a
    /// tunnel: the client, which never half-closes, still sees the answer end. Then the
    /// other way round: a client's half-close reaches the server, whose answer still arrives.
    #[tokio::test]
    async fn splice_carries_each_sides_end() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, host_local) = tokio::io::duplex(1024);
        let (host_tunnel, guest_tunnel) = tokio::io::duplex(1024);
        let (guest_local, mut server) = tokio::io::duplex(1024);
        let host = tokio::spawn(StreamFrame::splice(host_local, host_tunnel));
        let guest = tokio::spawn(StreamFrame::splice(guest_local, guest_tunnel));
        client.write_all(b"req!").await.expect("request");
        let mut request = [0u8; 4];
        server
            .read_exact(&mut request)
            .await
            .expect("request arrives");
        server.write_all(b"answer").await.expect("answer");
        server.shutdown().await.expect("server done");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("answer ends");
        assert_eq!(answer, b"answer");
        client.shutdown().await.expect("client done");
        let mut rest = Vec::new();
        server
            .read_to_end(&mut rest)
            .await
            .expect("client's end arrives");
        assert!(rest.is_empty());
        host.await.expect("host").expect("clean");
        guest.await.expect("guest").expect("clean");

        // A client that sends, half-closes, then reads.
        let (mut client, host_local) = tokio::io::duplex(1024);
        let (host_tunnel, guest_tunnel) = tokio::io::duplex(1024);
        let (guest_local, mut server) = tokio::io::duplex(1024);
        tokio::spawn(StreamFrame::splice(host_local, host_tunnel));
        tokio::spawn(StreamFrame::splice(guest_local, guest_tunnel));
        client.write_all(b"all of it").await.expect("request");
        client.shutdown().await.expect("half-close");
        let mut request = Vec::new();
        server
            .read_to_end(&mut request)
            .await
            .expect("request ends");
        assert_eq!(request, b"all of it");
        server.write_all(b"ok").await.expect("answer");
        drop(server);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("answer");
        assert_eq!(answer, b"ok");
    }

    #[test]
    fn forward_headers() {
        let p = ForwardedPort {
            proto: Proto::Tcp,
            port: 18080,
        };
        assert_eq!(forward_header(p), "TCP 18080");
        assert_eq!(parse_forward_header("TCP 18080\n"), Ok(p));
        assert_eq!(
            parse_forward_header("UDP 53"),
            Ok(ForwardedPort {
                proto: Proto::Udp,
                port: 53
            })
        );
        for bad in [
            "",
            "TCP",
            "TCP 0",
            "TCP 70000",
            "SCTP 1",
            "tcp 80",
            "TCP  80",
        ] {
            assert!(parse_forward_header(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn control_messages_are_json_lines() {
        let req: ControlRequest =
            serde_json::from_str(r#"{"op":"set_time","unix_secs":5,"nanos":7}"#).expect("parse");
        assert_eq!(
            req,
            ControlRequest::SetTime {
                unix_secs: 5,
                nanos: 7
            }
        );
        let text = serde_json::to_string(&ControlRequest::WatchPorts).expect("json");
        assert_eq!(text, r#"{"op":"watch_ports"}"#);
        let reply = ControlReply {
            ports: Some(vec![ForwardedPort {
                proto: Proto::Tcp,
                port: 80,
            }]),
            ..ControlReply::ok()
        };
        let text = serde_json::to_string(&reply).expect("json");
        assert_eq!(text, r#"{"ok":true,"ports":[{"proto":"tcp","port":80}]}"#);
    }

    #[tokio::test]
    async fn udp_frames_round_trip() {
        let mut wire = UdpFrame::encode(b"abc").expect("small");
        wire.extend(UdpFrame::encode(b"").expect("empty"));
        assert!(UdpFrame::encode(&vec![0u8; 70_000]).is_none());
        let mut r = &wire[..];
        let mut buf = Vec::new();
        assert_eq!(
            UdpFrame::read(&mut r, &mut buf).await.expect("one"),
            Some(3)
        );
        assert_eq!(&buf, b"abc");
        assert_eq!(
            UdpFrame::read(&mut r, &mut buf).await.expect("two"),
            Some(0)
        );
        assert_eq!(UdpFrame::read(&mut r, &mut buf).await.expect("end"), None);
    }

    #[tokio::test]
    async fn stream_frames_carry_bytes_and_the_half_close() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut framed = Vec::new();
        let copied = StreamFrame::copy_framed(&mut &data[..], &mut framed)
            .await
            .expect("frame");
        assert_eq!(copied, data.len() as u64);
        assert_eq!(
            &framed[framed.len() - 4..],
            &[0, 0, 0, 0],
            "ends in a half-close"
        );
        let mut out = Vec::new();
        let closed = StreamFrame::copy_unframed(&mut &framed[..], &mut out)
            .await
            .expect("unframe");
        assert!(closed);
        assert_eq!(out, data);

        // Cut short (the host went away): no half-close seen, bytes so far kept.
        let mut out = Vec::new();
        let closed = StreamFrame::copy_unframed(&mut &framed[..10], &mut out)
            .await
            .expect("unframe");
        assert!(!closed);

        // An oversized frame is refused, not allocated.
        let bogus = [0xff, 0xff, 0xff, 0xff, 1];
        let err = StreamFrame::copy_unframed(&mut &bogus[..], &mut Vec::new())
            .await
            .expect_err("too long");
        assert!(err.to_string().contains("exceeds"), "{err}");
    }
}
