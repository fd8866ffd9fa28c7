//! Hybrid vsock served by Berth itself, for hypervisors that hand out one
//! file descriptor per vsock connection instead of a Unix socket
//! (Virtualization.framework's `VZVirtioSocketDevice`). The bridge listens
//! on the machine's vsock socket and speaks the same `CONNECT <port>` /
//! `OK` handshake as vhost-device-vsock, so [`super::hybrid::HybridVsock`],
//! the host endpoint and the port forwarder work unchanged. Connections
//! the guest opens are passed on to `<path>_<port>`, as with hybrid vsock.
//!
//! The backend only supplies a [`GuestConnector`]; everything else here is
//! tested on Linux with a fake one.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// How long a client gets to send its `CONNECT` line.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the hypervisor gets to open a guest connection.
const GUEST_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longer lines are not a handshake.
const MAX_LINE: usize = 64;

pub type ConnectFuture = Pin<Box<dyn Future<Output = std::io::Result<UnixStream>> + Send>>;

/// Opens a stream to the guest's vsock `port` (the hypervisor's own call).
pub trait GuestConnector: Send + Sync + 'static {
    fn connect(&self, port: u32) -> ConnectFuture;
}

/// Parses `CONNECT <port>`; anything else is refused.
pub fn parse_connect(line: &str) -> Option<u32> {
    let port = line.strip_prefix("CONNECT ")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

/// Serves hybrid vsock on `listener` until `stop` resolves.
pub async fn serve(
    listener: UnixListener,
    connector: Arc<dyn GuestConnector>,
    stop: impl Future<Output = ()>,
) {
    crate::forward::accept_until(listener, stop, |client| {
        bridge_one(client, Arc::clone(&connector))
    })
    .await;
}

async fn bridge_one(mut client: UnixStream, connector: Arc<dyn GuestConnector>) {
    let Ok(Some(line)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_line(&mut client)).await
    else {
        return;
    };
    let Some(port) = parse_connect(&line) else {
        // As vhost-device-vsock does: close without `OK`.
        return;
    };
    let guest = match tokio::time::timeout(GUEST_CONNECT_TIMEOUT, connector.connect(port)).await {
        Ok(Ok(guest)) => guest,
        _ => return,
    };
    if client
        .write_all(format!("OK {port}\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    splice(client, guest).await;
}

/// One line, read a byte at a time so nothing after it is consumed.
async fn read_line(stream: &mut UnixStream) -> Option<String> {
    let mut line = Vec::with_capacity(16);
    loop {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        if byte[0] == b'\n' {
            return String::from_utf8(line).ok();
        }
        if line.len() >= MAX_LINE {
            return None;
        }
        line.push(byte[0]);
    }
}

/// Copies both ways, passing each side's half-close on.
async fn splice(a: UnixStream, b: UnixStream) {
    let (mut ar, mut aw) = a.into_split();
    let (mut br, mut bw) = b.into_split();
    let a_to_b = async {
        let _ = tokio::io::copy(&mut ar, &mut bw).await;
        let _ = bw.shutdown().await;
    };
    let b_to_a = async {
        let _ = tokio::io::copy(&mut br, &mut aw).await;
        let _ = aw.shutdown().await;
    };
    tokio::join!(a_to_b, b_to_a);
}

/// Where a guest connection to host `port` goes: `<vsock socket>_<port>`.
pub fn host_listen_path(vsock_socket: &Path, port: u32) -> PathBuf {
    super::hybrid::HybridVsock::new(vsock_socket).listen_path(port)
}

/// Hands a connection the guest opened to host `port` to whoever listens on
/// `<vsock socket>_<port>`; a port nobody listens on closes the guest's
/// connection.
pub async fn deliver_to_host(guest: UnixStream, vsock_socket: &Path, port: u32) {
    let path = host_listen_path(vsock_socket, port);
    if let Ok(host) = UnixStream::connect(&path).await {
        splice(guest, host).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsock::hybrid::HybridVsock;
    use crate::vsock::VsockError;

    /// A guest with an echo service on port 7 and nothing else: each
    /// connection is one end of a socketpair, the guest task holds the other.
    struct FakeGuest;

    impl GuestConnector for FakeGuest {
        fn connect(&self, port: u32) -> ConnectFuture {
            Box::pin(async move {
                if port != 7 {
                    return Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
                }
                let (host, mut guest) = UnixStream::pair()?;
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    // Echo everything once the host half-closes.
                    if guest.read_to_end(&mut buf).await.is_ok() {
                        let _ = guest.write_all(&buf).await;
                    }
                });
                Ok(host)
            })
        }
    }

    fn start(dir: &Path) -> (PathBuf, tokio::sync::oneshot::Sender<()>) {
        let path = dir.join("vsock.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, Arc::new(FakeGuest), async move {
            let _ = rx.await;
        }));
        (path, tx)
    }

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect("CONNECT 2375"), Some(2375));
        assert_eq!(parse_connect("CONNECT 4294967295"), Some(u32::MAX));
        for bad in [
            "CONNECT",
            "CONNECT ",
            "CONNECT -1",
            "CONNECT +1",
            "CONNECT 4294967296",
            "connect 1",
            "CONNECT 1 ",
        ] {
            assert_eq!(parse_connect(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn hybrid_client_reaches_the_guest_through_the_bridge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _stop) = start(dir.path());
        let vsock = HybridVsock::new(&path);
        let mut s = vsock
            .connect(7, Duration::from_secs(5))
            .await
            .expect("connect");
        s.write_all(b"ping").await.expect("write");
        s.shutdown().await.expect("half-close reaches the guest");
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.expect("read");
        assert_eq!(back, b"ping");

        let err = vsock
            .connect(8, Duration::from_secs(5))
            .await
            .expect_err("nothing on port 8");
        assert!(matches!(err, VsockError::Refused { port: 8, .. }), "{err}");
    }

    #[tokio::test]
    async fn garbage_and_stop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, stop) = start(dir.path());
        let mut s = UnixStream::connect(&path).await.expect("connect");
        s.write_all(&[b'x'; 200]).await.expect("write");
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .expect("closed in time");
        // Closed with our bytes unread: end-of-file or a reset, never `OK`.
        match read {
            Ok(_) => assert!(buf.is_empty(), "{buf:?}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }

        stop.send(()).expect("stop");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        // Once stopped, the listener is gone: connections are refused.
        while UnixStream::connect(&path).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "still accepting");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn guest_connections_arrive_on_the_host_port_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vsock_socket = dir.path().join("vsock.sock");
        let listener = HybridVsock::new(&vsock_socket)
            .listen(1026)
            .expect("listen");
        let (guest_side, mut guest_app) = UnixStream::pair().expect("pair");
        let deliver = tokio::spawn({
            let vsock_socket = vsock_socket.clone();
            async move { deliver_to_host(guest_side, &vsock_socket, 1026).await }
        });
        let mut host = listener.accept().await.expect("accept");
        guest_app.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        host.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"hello");
        drop(host);
        let mut rest = Vec::new();
        guest_app.read_to_end(&mut rest).await.expect("eof");
        drop(guest_app);
        deliver.await.expect("deliver ends");

        // Nobody listens on 1027: the guest's connection is closed.
        let (guest_side, mut guest_app) = UnixStream::pair().expect("pair");
        deliver_to_host(guest_side, &vsock_socket, 1027).await;
        let n = guest_app.read(&mut buf).await.expect("read");
        assert_eq!(n, 0);
    }
}
