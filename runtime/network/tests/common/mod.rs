//! Test scaffolding: private network namespaces (`ip netns add berthtest-<pid>-<n>`), deleted
//! on drop even when a test fails, and helpers that run code inside one of them.
//!
//! Safety of the host: every namespace here is made by the test; the library only ever runs
//! inside a test-made "host" namespace, and traffic only goes between addresses that exist
//! inside those namespaces (TEST-NET-1 192.0.2.0/24 on a veth, and the Berth subnets).
#![allow(dead_code)]

pub mod fixtures;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Whether this environment can run the namespace tests (root with `ip` and `nft`).
pub fn can_run() -> bool {
    nix::unistd::geteuid().is_root()
        && Command::new("ip").arg("-V").output().is_ok()
        && Command::new("nft").arg("--version").output().is_ok()
}

/// A test-owned network namespace.
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("berthtest-{}-{n}-{tag}", std::process::id());
        run("ip", &["netns", "add", &name]);
        Self { name }
    }

    /// A "host" namespace: lo up, and an uplink `up0` with 192.0.2.10/24.
    pub fn host() -> Self {
        let ns = Self::new("host");
        ns.ip(&["link", "set", "lo", "up"]);
        // An "uplink": a veth pair kept inside the namespace (no dummy module here).
        ns.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up0p"]);
        ns.ip(&["addr", "add", "192.0.2.10/24", "dev", "up0"]);
        ns.ip(&["link", "set", "up0", "up"]);
        ns.ip(&["link", "set", "up0p", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    pub fn exec(&self, cmd: &[&str]) -> String {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(cmd);
        run("ip", &full)
    }

    /// Link names in the namespace.
    pub fn links(&self) -> Vec<String> {
        self.ip(&["-o", "link"])
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
            .collect()
    }

    pub fn ruleset(&self) -> String {
        self.exec(&["nft", "list", "ruleset"])
    }

    /// Runs `f` on a thread inside this namespace.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        let file = File::open(self.path()).expect("open netns");
        std::thread::scope(|s| {
            match s
                .spawn(move || {
                    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
                    f()
                })
                .join()
            {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A server running in a namespace until dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn spawn_in(ns: &Ns, f: impl FnOnce(Arc<AtomicBool>) + Send + 'static) -> Server {
    let file = File::open(ns.path()).expect("open netns");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
        let _ = tx.send(());
        f(stop2)
    });
    rx.recv().expect("server thread started");
    Server {
        stop,
        thread: Some(thread),
    }
}

/// TCP server on 0.0.0.0:`port` in `ns` that writes `reply` to each connection.
pub fn tcp_server(ns: &Ns, port: u16, reply: &'static str) -> Server {
    tcp_server_on(ns, "0.0.0.0", port, reply)
}

/// [`tcp_server`] on `[::]` (both families, as the kernel's default `bindv6only=0` gives).
pub fn tcp_server6(ns: &Ns, port: u16, reply: &'static str) -> Server {
    tcp_server_on(ns, "::", port, reply)
}

fn tcp_server_on(ns: &Ns, ip: &'static str, port: u16, reply: &'static str) -> Server {
    let (tx, rx) = std::sync::mpsc::channel();
    let s = spawn_in(ns, move |stop| {
        let l = TcpListener::bind((ip, port)).expect("bind tcp");
        l.set_nonblocking(true).expect("nonblocking");
        let _ = tx.send(());
        while !stop.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut c, _)) => {
                    let _ = c.write_all(reply.as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    rx.recv().expect("listening");
    s
}

/// UDP server on 0.0.0.0:`port` in `ns` that answers each datagram with `reply`.
pub fn udp_server(ns: &Ns, port: u16, reply: &'static str) -> Server {
    udp_server_on(ns, "0.0.0.0", port, reply)
}

/// [`udp_server`] on `[::]` (both families).
pub fn udp_server6(ns: &Ns, port: u16, reply: &'static str) -> Server {
    udp_server_on(ns, "::", port, reply)
}

fn udp_server_on(ns: &Ns, ip: &'static str, port: u16, reply: &'static str) -> Server {
    let (tx, rx) = std::sync::mpsc::channel();
    let s = spawn_in(ns, move |stop| {
        let sock = UdpSocket::bind((ip, port)).expect("bind udp");
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let _ = tx.send(());
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::SeqCst) {
            if let Ok((_, peer)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(reply.as_bytes(), peer);
            }
        }
    });
    rx.recv().expect("listening");
    s
}

/// Connects from inside `ns` and returns what the server wrote, or an error string.
pub fn tcp_get(ns: &Ns, addr: SocketAddr) -> Result<String, String> {
    ns.run(move || {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_millis(1500))
            .map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let mut s = String::new();
        c.read_to_string(&mut s).map_err(|e| e.to_string())?;
        Ok(s)
    })
}

/// Sends one datagram from inside `ns` and returns the reply, which must come from `addr` (the
/// socket is connected to it, so the kernel drops replies from any other address).
pub fn udp_get(ns: &Ns, addr: SocketAddr) -> Result<String, String> {
    ns.run(move || {
        let any = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let s = UdpSocket::bind(any).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .map_err(|e| e.to_string())?;
        s.connect(addr).map_err(|e| e.to_string())?;
        s.send(b"ping").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1500];
        let n = s.recv(&mut buf).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// What must be left of Berth in a namespace after teardown: nothing.
pub fn assert_clean(host: &Ns) {
    let ours = |links: &[String]| {
        links
            .iter()
            .all(|l| matches!(l.as_str(), "lo" | "up0" | "up0p" | "d0" | "d0p"))
    };
    // A veth whose peer lived in a namespace that was just released goes with that namespace,
    // which the kernel tears down in the background: give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut links = host.links();
    while !ours(&links) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        links = host.links();
    }
    assert!(ours(&links), "leftover links: {links:?}");
    let rules = host.ruleset();
    assert!(!rules.contains("berth"), "leftover rules:\n{rules}");
}
