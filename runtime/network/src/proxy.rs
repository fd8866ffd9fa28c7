//! A small userland proxy for the part of a published port the kernel cannot forward: its IPv6
//! side, when the kernel's DNAT cannot take the packets there.
//!
//! Published ports are DNATed by nftables wherever that works. Two cases do not:
//! - the container has no IPv6 address (an IPv4-only network): nftables cannot translate
//!   between address families (the kernel has no NAT64), yet Docker answers on the host's IPv6
//!   addresses through its proxy, so we do too;
//! - traffic to `[::1]`: the kernel drops IPv6 packets with a loopback address that leave the
//!   loopback device (RFC 4291 §2.5.3), and IPv6 has no `route_localnet`.
//!
//! So each IPv6 host binding keeps its reservation socket and serves it: TCP connections are
//! relayed to the container (its IPv6 address when it has one, else its IPv4 address); UDP
//! datagrams per client flow, replies sent from the address the client wrote to. Everything the
//! DNAT rules catch (other IPv6 addresses, when the container has IPv6) never reaches the socket.
//!
//! All proxies of a manager run on one thread with a single-threaded tokio runtime. The thread is
//! started from the manager's calling thread, so its sockets are made in that thread's network
//! namespace (the "host"). Dropping a [`Proxy`] closes its socket and every connection it
//! relays before it returns, so the host port is free at once.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn6,
};
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{AbortHandle, JoinSet};

/// How long a connection to the container may take before the client is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A UDP flow without traffic either way for this long is forgotten (Docker's proxy: 90 s).
const UDP_IDLE: Duration = Duration::from_secs(90);
/// At most this many UDP clients at once per port; datagrams of further ones are dropped.
const UDP_MAX_FLOWS: usize = 1024;
/// Relay buffer per direction.
const BUF: usize = 64 * 1024;
/// Bound on waiting for a stopped proxy's sockets to close (they close on the runtime thread).
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The thread running every proxy of one manager.
pub(crate) struct ProxyRuntime {
    handle: tokio::runtime::Handle,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ProxyRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyRuntime").finish_non_exhaustive()
    }
}

impl ProxyRuntime {
    /// Starts the runtime thread, in the calling thread's network namespace.
    pub(crate) fn start() -> io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let handle = rt.handle().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("berth-proxy".into())
            .spawn(move || {
                // Until the manager goes: dropping the runtime then drops every proxy task.
                let _ = rt.block_on(rx);
            })?;
        Ok(Self {
            handle,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for ProxyRuntime {
    fn drop(&mut self) {
        drop(self.shutdown.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A running proxy for one host socket; dropping it stops it.
pub(crate) struct Proxy {
    task: AbortHandle,
    /// Disconnected once the task and every connection or flow it started are gone (each holds
    /// a clone of the sender), i.e. once no socket of this proxy is open any more.
    closed: mpsc::Receiver<()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        // Never called on the runtime thread (the manager calls it), so this cannot wait on
        // itself; bounded all the same.
        let _ = self.closed.recv_timeout(STOP_WAIT);
    }
}

/// Marks a task as holding sockets of a proxy; see [`Proxy::closed`].
type Alive = mpsc::Sender<()>;

impl Proxy {
    /// Accepts on `socket` (a listening TCP socket) and relays each connection to `target`.
    pub(crate) fn tcp(rt: &ProxyRuntime, socket: OwnedFd, target: SocketAddr) -> io::Result<Self> {
        let std = std::net::TcpListener::from(socket);
        std.set_nonblocking(true)?;
        let listener = {
            let _guard = rt.handle.enter();
            TcpListener::from_std(std)?
        };
        let (alive, closed) = mpsc::channel();
        let task = rt
            .handle
            .spawn(serve_tcp(listener, target, alive))
            .abort_handle();
        Ok(Self { task, closed })
    }

    /// Serves `socket` (a bound IPv6 UDP socket): each client's datagrams go to `target` from a
    /// socket of their own, and the replies back to the client from the address it wrote to.
    pub(crate) fn udp(rt: &ProxyRuntime, socket: OwnedFd, target: SocketAddr) -> io::Result<Self> {
        setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)?;
        let std = std::net::UdpSocket::from(socket);
        std.set_nonblocking(true)?;
        let sock = {
            let _guard = rt.handle.enter();
            UdpSocket::from_std(std)?
        };
        let (alive, closed) = mpsc::channel();
        let task = rt
            .handle
            .spawn(serve_udp(Arc::new(sock), target, alive))
            .abort_handle();
        Ok(Self { task, closed })
    }
}

async fn serve_tcp(listener: TcpListener, target: SocketAddr, alive: Alive) {
    // Dropped with this task (on abort): aborts every relay too.
    let mut relays = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    let alive = alive.clone();
                    relays.spawn(async move {
                        let _alive = alive;
                        relay_tcp(client, target).await;
                    });
                }
                // Out of fds or memory: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = relays.join_next(), if !relays.is_empty() => {}
        }
    }
}

async fn relay_tcp(mut client: TcpStream, target: SocketAddr) {
    let Ok(Ok(mut server)) =
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
    else {
        // Nothing listens in the container (yet): the client sees its connection closed.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // Half-closes are passed on: EOF from one side shuts down writing to the other.
    let _ = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, BUF, BUF).await;
}

/// One UDP client: its socket towards the container, and when either side last sent.
struct Flow {
    upstream: Arc<UdpSocket>,
    last: Arc<AtomicU64>,
    replies: AbortHandle,
}

/// Reads one datagram with the local address it was sent to (`IPV6_PKTINFO`).
fn recv_with_dst(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<libc::in6_pktinfo>)> {
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(libc::in6_pktinfo);
    let msg = recvmsg::<SockaddrIn6>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT,
    )?;
    let from = msg
        .address
        .map(|a| SocketAddr::V6(SocketAddrV6::from(a)))
        .ok_or_else(|| io::Error::other("datagram without a source address"))?;
    let mut dst = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::Ipv6PacketInfo(info) = c {
            dst = Some(info);
        }
    }
    Ok((msg.bytes, from, dst))
}

/// Sends `data` to `to` from the local address in `src` (as the client addressed us).
fn send_from(
    sock: &UdpSocket,
    data: &[u8],
    to: SocketAddr,
    src: Option<&libc::in6_pktinfo>,
) -> io::Result<()> {
    let SocketAddr::V6(to) = to else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    let to = SockaddrIn6::from(to);
    let iov = [io::IoSlice::new(data)];
    let info = src.map(|s| libc::in6_pktinfo {
        ipi6_addr: s.ipi6_addr,
        // Let routing pick the interface; only the source address is fixed.
        ipi6_ifindex: 0,
    });
    let cmsgs: Vec<ControlMessage<'_>> = info.iter().map(ControlMessage::Ipv6PacketInfo).collect();
    sendmsg(
        sock.as_raw_fd(),
        &iov,
        &cmsgs,
        MsgFlags::MSG_DONTWAIT,
        Some(&to),
    )?;
    Ok(())
}

async fn serve_udp(sock: Arc<UdpSocket>, target: SocketAddr, alive: Alive) {
    let start = Instant::now();
    let now = move || start.elapsed().as_secs();
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    // Dropped with this task (on abort): aborts every reply task too.
    let mut replies = JoinSet::new();
    let mut buf = vec![0u8; 65536];
    let mut sweep = tokio::time::interval(UDP_IDLE / 3);
    loop {
        tokio::select! {
            got = sock.async_io(Interest::READABLE, || recv_with_dst(&sock, &mut buf)) => {
                let Ok((n, client, dst)) = got else { continue };
                if !flows.contains_key(&client) {
                    if flows.len() >= UDP_MAX_FLOWS {
                        continue;
                    }
                    let Ok(flow) = open_flow(&mut replies, &sock, client, dst, target, &alive, now) else {
                        continue;
                    };
                    flows.insert(client, flow);
                }
                if let Some(flow) = flows.get(&client) {
                    flow.last.store(now(), Ordering::Relaxed);
                    // A datagram socket is all but always writable: this does not wait.
                    let _ = flow.upstream.send(&buf[..n]).await;
                }
            }
            _ = sweep.tick() => {
                let t = now();
                flows.retain(|_, f| {
                    let keep = t.saturating_sub(f.last.load(Ordering::Relaxed)) < UDP_IDLE.as_secs();
                    if !keep {
                        f.replies.abort();
                    }
                    keep
                });
            }
            Some(_) = replies.join_next(), if !replies.is_empty() => {}
        }
    }
}

/// Starts forwarding for a new client (on the runtime: the task that serves the port calls it).
fn open_flow(
    replies: &mut JoinSet<()>,
    sock: &Arc<UdpSocket>,
    client: SocketAddr,
    dst: Option<libc::in6_pktinfo>,
    target: SocketAddr,
    alive: &Alive,
    now: impl Fn() -> u64 + Send + 'static,
) -> io::Result<Flow> {
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let std = std::net::UdpSocket::bind(local)?;
    std.connect(target)?;
    std.set_nonblocking(true)?;
    let upstream = Arc::new(UdpSocket::from_std(std)?);
    let last = Arc::new(AtomicU64::new(now()));
    let (up, seen, down, alive) = (upstream.clone(), last.clone(), sock.clone(), alive.clone());
    let replies = replies.spawn(async move {
        let _alive = alive;
        let mut buf = vec![0u8; 65536];
        // Ends with the flow (aborted when idle, or with the proxy).
        loop {
            let n = match up.recv(&mut buf).await {
                Ok(n) => n,
                // An ICMP "port unreachable" for an earlier datagram: nothing listened then.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(_) => break,
            };
            seen.store(now(), Ordering::Relaxed);
            let _ = down
                .async_io(Interest::WRITABLE, || {
                    send_from(&down, &buf[..n], client, dst.as_ref())
                })
                .await;
        }
    });
    Ok(Flow {
        upstream,
        last,
        replies,
    })
}
