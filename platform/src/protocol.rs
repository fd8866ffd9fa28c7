//! What the host and `berth-agent` say to each other over vsock.
//!
//! - [`API_PORT`]: the Docker Engine API, HTTP/1.1, exactly as on a local socket.
//! - [`CONTROL_PORT`]: one JSON [`ControlRequest`] per line, one JSON
//!   [`ControlReply`] per line back (`watch_ports` keeps replying, one line
//!   each time the set of forwarded ports changes).
//! - [`FORWARD_PORT`]: one header line `TCP <port>\n` (or `UDP <port>\n`),
//!   a reply line `OK\n` or `ERR <message>\n`, then the connection's bytes.
//!   UDP datagrams travel as [`UdpFrame`]s: a big-endian u16 length, then the
//!   payload.

use serde::{Deserialize, Serialize};

pub const API_PORT: u32 = 2375;
pub const CONTROL_PORT: u32 = 1024;
pub const FORWARD_PORT: u32 = 1025;

/// Kernel command-line key carrying the host's wall clock at boot
/// (`berth.time=<unix seconds>.<nanoseconds>`).
pub const CMDLINE_TIME: &str = "berth.time";
/// Kernel command-line key naming the 9p/virtiofs share tags to mount
/// (`berth.shares=<tag>:<guest path>,…`).
pub const CMDLINE_SHARES: &str = "berth.shares";

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
