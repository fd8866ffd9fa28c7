//! The host's side of forwarding:
//! - [`serve_endpoint`]: the local API socket; each connection is spliced to
//!   the agent's API port over vsock (HTTP upgrades for attach/exec pass
//!   through untouched).
//! - [`PortForwarder`]: a listener on 127.0.0.1 and ::1 for every port the
//!   guest publishes; each TCP connection (or UDP peer) is tunnelled over
//!   vsock to the agent's forward port.

use std::collections::{BTreeSet, HashMap};
#[cfg(unix)]
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

use crate::protocol::{
    forward_header, ForwardedPort, Proto, StreamFrame, UdpFrame, FORWARD_PORT, FRAMED_API_PORT,
};
use crate::vsock::{HostVsock, VsockError, VsockStream};

/// How long one vsock connect may take before the client is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Splices every connection on `listener` to the guest's framed API port
/// until `stop`.
/// (Windows serves a named pipe the same way: `pipe_endpoint.rs`.)
#[cfg(unix)]
pub async fn serve_endpoint(
    listener: tokio::net::UnixListener,
    vsock: HostVsock,
    stop: impl Future<Output = ()>,
) {
    accept_until(listener, stop, |client| {
        serve_endpoint_client(client, vsock.clone())
    })
    .await;
}

/// Accepts clients on `listener` until `stop` resolves, each served by its own task.
#[cfg(unix)]
pub(crate) async fn accept_until<F, Fut>(
    listener: tokio::net::UnixListener,
    stop: impl Future<Output = ()>,
    mut serve: F,
) where
    F: FnMut(tokio::net::UnixStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                tokio::spawn(serve(client));
            }
        }
    }
}

/// One client of the host endpoint (Unix socket or named pipe): spliced to
/// the guest's framed API port, or told in HTTP why not, so `docker` prints a
/// readable error.
pub(crate) async fn serve_endpoint_client<C>(mut client: C, vsock: HostVsock)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match vsock.connect(FRAMED_API_PORT, CONNECT_TIMEOUT).await {
        Ok(guest) => splice_until_guest_closes(client, guest).await,
        Err(e) => {
            let body = format!("{{\"message\":\"the Berth VM is not answering: {e}\"}}");
            let reply = format!(
                "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(reply.as_bytes()).await;
        }
    }
}

/// Copies both ways: the client's bytes as [`StreamFrame`]s (so its
/// half-close, which docker sends after stdin, reaches the guest as a frame
/// instead of closing the vsock connection), the guest's bytes raw. Once the
/// guest's side ends the whole client connection is closed, as the daemon's
/// own socket would be (a half-close alone leaves HTTP clients waiting
/// after an attach stream ends).
async fn splice_until_guest_closes<C>(client: C, guest: VsockStream)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut gr, mut gw) = tokio::io::split(guest);
    let to_guest = async {
        let _ = StreamFrame::copy_framed(&mut cr, &mut gw).await;
        std::future::pending::<()>().await
    };
    let to_client = async {
        let _ = tokio::io::copy(&mut gr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::select! { _ = to_guest => {}, _ = to_client => {} }
}

/// Opens a forwarded stream to `port` inside the guest.
pub async fn open_forward(
    vsock: &HostVsock,
    port: ForwardedPort,
) -> Result<VsockStream, VsockError> {
    let mut stream = vsock.connect(FORWARD_PORT, CONNECT_TIMEOUT).await?;
    let io = |source| VsockError::Io {
        port: FORWARD_PORT,
        source,
    };
    stream
        .write_all(format!("{}\n", forward_header(port)).as_bytes())
        .await
        .map_err(io)?;
    let mut reply = Vec::new();
    loop {
        let mut b = [0u8; 1];
        let n = stream.read(&mut b).await.map_err(io)?;
        if n == 0 || b[0] == b'\n' || reply.len() > 512 {
            break;
        }
        reply.push(b[0]);
    }
    let reply = String::from_utf8_lossy(&reply).into_owned();
    if reply == "OK" {
        Ok(stream)
    } else {
        Err(VsockError::Refused {
            port: u32::from(port.port),
            reply,
        })
    }
}

/// The host's listeners for the guest's published ports.
pub struct PortForwarder {
    vsock: HostVsock,
    /// Which host addresses to listen on (127.0.0.1 and ::1 by default).
    addrs: Vec<IpAddr>,
    active: HashMap<ForwardedPort, Vec<JoinHandle<()>>>,
    /// Ports we could not bind (taken on the host), with the reason.
    pub failed: HashMap<ForwardedPort, String>,
}

impl PortForwarder {
    pub fn new(vsock: HostVsock) -> Self {
        Self {
            vsock,
            addrs: vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
            active: HashMap::new(),
            failed: HashMap::new(),
        }
    }

    /// The ports forwarded now.
    pub fn forwarded(&self) -> BTreeSet<ForwardedPort> {
        self.active.keys().copied().collect()
    }

    /// Opens listeners for new ports and closes those no longer published.
    pub async fn update(&mut self, wanted: &BTreeSet<ForwardedPort>) {
        let gone: Vec<ForwardedPort> = self
            .active
            .keys()
            .filter(|p| !wanted.contains(p))
            .copied()
            .collect();
        for port in gone {
            if let Some(tasks) = self.active.remove(&port) {
                tasks.iter().for_each(JoinHandle::abort);
            }
        }
        self.failed.retain(|p, _| wanted.contains(p));
        for &port in wanted {
            if self.active.contains_key(&port) {
                continue;
            }
            let mut tasks = Vec::new();
            let mut errors = Vec::new();
            for &ip in &self.addrs {
                let addr = SocketAddr::new(ip, port.port);
                let vsock = self.vsock.clone();
                match port.proto {
                    Proto::Tcp => match TcpListener::bind(addr).await {
                        Ok(l) => tasks.push(tokio::spawn(tcp_loop(l, vsock, port))),
                        Err(e) => errors.push(format!("{addr}: {e}")),
                    },
                    Proto::Udp => match UdpSocket::bind(addr).await {
                        Ok(s) => tasks.push(tokio::spawn(udp_loop(Arc::new(s), vsock, port))),
                        Err(e) => errors.push(format!("{addr}: {e}")),
                    },
                }
            }
            // One address family missing (no IPv6 here) is fine; none is not.
            if tasks.is_empty() {
                self.failed.insert(port, errors.join("; "));
            } else {
                self.active.insert(port, tasks);
            }
        }
    }

    pub fn close_all(&mut self) {
        for (_, tasks) in self.active.drain() {
            tasks.iter().for_each(JoinHandle::abort);
        }
    }
}

impl Drop for PortForwarder {
    fn drop(&mut self) {
        self.close_all();
    }
}

async fn tcp_loop(listener: TcpListener, vsock: HostVsock, port: ForwardedPort) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let vsock = vsock.clone();
        tokio::spawn(async move {
            if let Ok(guest) = open_forward(&vsock, port).await {
                let _ = StreamFrame::splice(client, guest).await;
            }
        });
    }
}

/// One vsock stream per UDP peer; replies go back to that peer.
async fn udp_loop(socket: Arc<UdpSocket>, vsock: HostVsock, port: ForwardedPort) {
    let peers: Arc<tokio::sync::Mutex<HashMap<SocketAddr, tokio::sync::mpsc::Sender<Vec<u8>>>>> =
        Arc::default();
    let mut buf = vec![0u8; UdpFrame::MAX];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let datagram = buf[..n].to_vec();
        let mut map = peers.lock().await;
        if let Some(tx) = map.get(&peer) {
            if tx.send(datagram.clone()).await.is_ok() {
                continue;
            }
            map.remove(&peer);
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
        let _ = tx.send(datagram).await;
        map.insert(peer, tx);
        drop(map);
        let socket = Arc::clone(&socket);
        let vsock = vsock.clone();
        let peers = Arc::clone(&peers);
        tokio::spawn(async move {
            if let Ok(stream) = open_forward(&vsock, port).await {
                let (mut r, mut w) = tokio::io::split(stream);
                let to_guest = async {
                    while let Some(d) = rx.recv().await {
                        let Some(frame) = UdpFrame::encode(&d) else {
                            continue;
                        };
                        if w.write_all(&frame).await.is_err() {
                            break;
                        }
                    }
                };
                let from_guest = async {
                    let mut buf = Vec::new();
                    while let Ok(Some(n)) = UdpFrame::read(&mut r, &mut buf).await {
                        let _ = socket.send_to(&buf[..n], peer).await;
                    }
                };
                tokio::select! { _ = to_guest => {}, _ = from_guest => {} }
            }
            peers.lock().await.remove(&peer);
        });
    }
}
