//! Host services: connections the guest opens to a port of the host's
//! loopback (a registry on the host's 127.0.0.1, say), over
//! [`HOST_SERVICE_PORT`](crate::protocol::HOST_SERVICE_PORT). The host answers
//! only the ports the machine's configuration allows; the exchange is the
//! forward header (`TCP <port>\n`), a reply line, then the connection's bytes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocol::{forward_header, parse_forward_header, ForwardedPort, Proto, StreamFrame};

/// A header or reply line longer than this is malformed (replies carry a reason).
const MAX_LINE: usize = 512;
/// How long the other side may take to send its line.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HostServiceError {
    #[error("the host refused port {port}: {reason}")]
    Refused { port: u16, reason: String },
    #[error("malformed host service line {0:?}")]
    BadLine(String),
    #[error("host service i/o")]
    Io(#[from] std::io::Error),
    #[error("no line within {0:?}")]
    Timeout(Duration),
}

/// Reads one `\n`-terminated line, byte by byte so nothing after it is consumed.
async fn read_line<S: AsyncRead + Unpin>(s: &mut S) -> Result<String, HostServiceError> {
    let read = async {
        let mut line = Vec::new();
        loop {
            let byte = s.read_u8().await?;
            if byte == b'\n' {
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            line.push(byte);
            if line.len() > MAX_LINE {
                return Err(HostServiceError::BadLine(
                    String::from_utf8_lossy(&line).into_owned(),
                ));
            }
        }
    };
    tokio::time::timeout(LINE_TIMEOUT, read)
        .await
        .map_err(|_| HostServiceError::Timeout(LINE_TIMEOUT))?
}

/// The host's side of one guest connection: connects it to `127.0.0.1:<port>`
/// when `allowed` holds the port, then copies both ways until either side ends.
/// A refusal is answered with `ERR <reason>` and returned.
pub async fn answer<S>(mut guest: S, allowed: &BTreeSet<u16>) -> Result<(), HostServiceError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let line = read_line(&mut guest).await?;
    let refuse = |port: u16, reason: String| HostServiceError::Refused { port, reason };
    let outcome = match parse_forward_header(&line) {
        Err(e) => Err(refuse(0, e.to_string())),
        Ok(ForwardedPort {
            proto: Proto::Udp,
            port,
        }) => Err(refuse(port, "only TCP reaches host services".into())),
        Ok(ForwardedPort { port, .. }) if !allowed.contains(&port) => Err(refuse(
            port,
            "not in the machine's host ports (berth machine init --host-port)".into(),
        )),
        Ok(ForwardedPort { port, .. }) => TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|e| refuse(port, format!("connecting to 127.0.0.1:{port}: {e}"))),
    };
    let host = match outcome {
        Ok(host) => host,
        Err(e) => {
            let reason = match &e {
                HostServiceError::Refused { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            let _ = guest.write_all(format!("ERR {reason}\n").as_bytes()).await;
            return Err(e);
        }
    };
    guest.write_all(b"OK\n").await?;
    let _ = host.set_nodelay(true);
    StreamFrame::splice(host, guest).await?;
    Ok(())
}

/// The guest's side: asks the host, over `stream`, for its loopback `port`.
/// On `Ok` the stream carries that connection's bytes.
pub async fn request<S>(stream: &mut S, port: u16) -> Result<(), HostServiceError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let header = forward_header(ForwardedPort {
        proto: Proto::Tcp,
        port,
    });
    stream.write_all(format!("{header}\n").as_bytes()).await?;
    let reply = read_line(stream).await?;
    match reply.strip_prefix("ERR ") {
        None if reply == "OK" => Ok(()),
        Some(reason) => Err(HostServiceError::Refused {
            port,
            reason: reason.to_string(),
        }),
        None => Err(HostServiceError::BadLine(reply)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn echo_server() -> u16 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn an_allowed_port_is_connected_both_ways() {
        let port = echo_server().await;
        let (mut guest, host_side) = tokio::io::duplex(4096);
        let allowed = BTreeSet::from([port]);
        let host = tokio::spawn(async move { answer(host_side, &allowed).await });
        request(&mut guest, port).await.expect("allowed");
        // The guest's side speaks frames: "ping", then its half-close; the echo comes back
        // framed, then the server's own half-close once it has seen ours.
        guest
            .write_all(&[0, 0, 0, 4, b'p', b'i', b'n', b'g', 0, 0, 0, 0])
            .await
            .expect("write");
        let mut back = Vec::new();
        let half_closed = StreamFrame::copy_unframed(&mut guest, &mut back)
            .await
            .expect("echo");
        assert!(half_closed);
        assert_eq!(back, b"ping");
        host.await.expect("task").expect("clean end");
    }

    #[tokio::test]
    async fn other_ports_udp_and_garbage_are_refused_with_a_reason() {
        let port = echo_server().await;
        let allowed = BTreeSet::from([port]);

        let (mut guest, host_side) = tokio::io::duplex(4096);
        let a = allowed.clone();
        let host = tokio::spawn(async move { answer(host_side, &a).await });
        let other = port.checked_add(1).unwrap_or(1);
        let err = request(&mut guest, other).await.expect_err("refused");
        assert!(err.to_string().contains("refused port"), "{err}");
        assert!(matches!(
            host.await.expect("task"),
            Err(HostServiceError::Refused { .. })
        ));

        for line in ["UDP 53\n", "hello\n", "TCP 0\n"] {
            let (mut guest, host_side) = tokio::io::duplex(4096);
            let a = allowed.clone();
            let host = tokio::spawn(async move { answer(host_side, &a).await });
            guest.write_all(line.as_bytes()).await.expect("write");
            let reply = read_line(&mut guest).await.expect("reply");
            assert!(reply.starts_with("ERR "), "{line:?}: {reply}");
            assert!(host.await.expect("task").is_err());
        }
    }

    #[tokio::test]
    async fn a_closed_allowed_port_is_reported() {
        let port = {
            let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
            l.local_addr().expect("addr").port()
        };
        let (mut guest, host_side) = tokio::io::duplex(4096);
        let allowed = BTreeSet::from([port]);
        tokio::spawn(async move { answer(host_side, &allowed).await });
        let err = request(&mut guest, port)
            .await
            .expect_err("nothing listens");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }
}
