//! Networking through the real `docker` CLI: bridge networks, DNS by name, isolation,
//! published TCP/UDP ports on 127.0.0.1, release on stop, daemon restarts, and bad input that
//! leaves nothing behind.
//!
//! Each test runs its own `berth daemon` inside a network namespace the test made (only `lo`
//! at first), with its own bridge name, subnet and nftables table: traffic never leaves that
//! namespace, tests do not see each other's links or rules, and deleting the namespace removes
//! whatever a failed test left.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{berth_binary, docker_at, wait_for_socket};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn can_run() -> bool {
    let ok = |c: &str, a: &[&str]| {
        Command::new(c)
            .args(a)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    nix::unistd::geteuid().is_root()
        && ok("ip", &["-V"])
        && ok("nft", &["--version"])
        && ok("nsenter", &["--version"])
        && Path::new("/bin/busybox").exists()
}

macro_rules! require {
    () => {
        if !can_run() {
            eprintln!("skipped: needs root, ip, nft, nsenter and busybox-static");
            return;
        }
    };
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `berth daemon` in a network namespace of its own; everything is removed on drop.
struct NetDaemon {
    ns: String,
    dir: tempfile::TempDir,
    socket: PathBuf,
    child: Option<Child>,
    bridge: String,
    table: String,
    /// Second octet of this daemon's 10.x.0.0/16 range.
    octet: u8,
}

impl NetDaemon {
    fn start(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let ns = format!("berthnt-{pid}-{n}");
        run("ip", &["netns", "add", &ns]);
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        let dir = tempfile::Builder::new()
            .prefix("berth-net-test")
            .tempdir()
            .expect("temp dir");
        // Unique per test process and test, so parallel runs never share a name or range.
        let octet = 100 + ((pid as usize * 7 + n * 13) % 150) as u8;
        let mut d = NetDaemon {
            ns,
            socket: dir.path().join("berth.sock"),
            dir,
            child: None,
            bridge: format!("bt{n}{tag}").chars().take(15).collect(),
            table: format!("berth_t{pid}_{n}"),
            octet,
        };
        d.spawn();
        d.import_busybox();
        d
    }

    fn spawn(&mut self) {
        let bip = format!("10.{}.0.1/24", self.octet);
        std::fs::write(self.dir.path().join("none.json"), "{}").expect("config");
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg(berth_binary())
            .args(["daemon", "--host"])
            .arg(format!("unix://{}", self.socket.display()))
            .arg("--data-root")
            .arg(self.dir.path().join("data"))
            .args(["--config"])
            .arg(self.dir.path().join("none.json"))
            .args(["--bridge", &self.bridge, "--bip", &bip])
            .args(["--nft-table", &self.table])
            // A resolver on this namespace's loopback: nothing answers, nothing leaves.
            .args(["--dns-upstream", "127.0.0.1:9"])
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                File::options()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("daemon.log"))
                    .expect("log"),
            )
            .spawn()
            .expect("starting berth daemon");
        wait_for_socket(&self.socket, &mut child);
        self.child = Some(child);
    }

    /// SIGKILL: containers and kernel state stay, as after a crash.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn docker(&self, args: &[&str]) -> Output {
        docker_at(&self.socket, &self.dir.path().join("docker-config"), args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `docker …` expecting failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            !out.status.success(),
            "docker {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn import_busybox(&self) {
        let root = self.dir.path().join("bbroot");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("www")).unwrap();
        std::fs::write(root.join("www/index.html"), "hello from berth\n").unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
        for applet in [
            "sh", "sleep", "echo", "cat", "true", "httpd", "wget", "nc", "ping", "nslookup",
            "hostname", "ip", "timeout",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let tar = self.dir.path().join("bb.tar");
        run(
            "tar",
            &[
                "-C",
                root.to_str().unwrap(),
                "-cf",
                tar.to_str().unwrap(),
                ".",
            ],
        );
        self.ok(&["import", tar.to_str().unwrap(), "busybox:latest"]);
    }

    fn nsenter(&self, cmd: &[&str]) -> String {
        let mut args = vec![format!("--net=/run/netns/{}", self.ns)];
        args.extend(cmd.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("nsenter", &args)
    }

    /// Link names in the daemon's namespace.
    fn links(&self) -> Vec<String> {
        let mut v: Vec<String> = run("ip", &["-n", &self.ns, "-o", "link"])
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
            .collect();
        v.sort();
        v
    }

    fn ruleset(&self) -> String {
        self.nsenter(&["nft", "list", "ruleset"])
    }

    /// Runs `f` on a thread inside the daemon's namespace.
    fn in_ns<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        let file = File::open(format!("/run/netns/{}", self.ns)).expect("netns");
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("setns");
                f()
            })
            .join()
            .expect("namespace thread")
        })
    }

    /// `GET /` on 127.0.0.1:port in the daemon's namespace, retried until `deadline`.
    fn http_get(&self, port: u16, deadline: Duration) -> Result<String, String> {
        self.http_get_at("127.0.0.1", port, deadline)
    }

    /// `GET /` on `ip`:port in the daemon's namespace, retried until `deadline` (once for 0).
    fn http_get_at(&self, ip: &str, port: u16, deadline: Duration) -> Result<String, String> {
        let ip: IpAddr = ip.parse().expect("ip");
        self.in_ns(move || {
            let end = Instant::now() + deadline;
            loop {
                let attempt = (|| -> std::io::Result<String> {
                    let addr = SocketAddr::new(ip, port);
                    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
                    c.set_read_timeout(Some(Duration::from_secs(2)))?;
                    c.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                    let mut s = String::new();
                    c.read_to_string(&mut s)?;
                    Ok(s)
                })();
                match attempt {
                    Ok(s) if !s.is_empty() => return Ok(s),
                    Ok(_) if Instant::now() >= end => return Err("empty reply".into()),
                    Err(e) if Instant::now() >= end => return Err(e.to_string()),
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
    }

    /// Sends datagrams to 127.0.0.1:port until one is answered (or `deadline`).
    fn udp_exchange(&self, port: u16, deadline: Duration) -> Result<String, String> {
        self.udp_exchange_at("127.0.0.1", port, deadline)
    }

    /// [`Self::udp_exchange`] with `ip`; only a reply from `ip`:port counts (the socket is
    /// connected to it).
    fn udp_exchange_at(&self, ip: &str, port: u16, deadline: Duration) -> Result<String, String> {
        let ip: IpAddr = ip.parse().expect("ip");
        self.in_ns(move || {
            let local = if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let s = UdpSocket::bind(local).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .map_err(|e| e.to_string())?;
            s.connect((ip, port)).map_err(|e| e.to_string())?;
            let end = Instant::now() + deadline;
            let mut buf = [0u8; 1500];
            while Instant::now() < end {
                s.send(b"ping\n").map_err(|e| e.to_string())?;
                if let Ok(n) = s.recv(&mut buf) {
                    return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
            Err("no UDP reply".into())
        })
    }

    /// Whether a host port can be bound in the daemon's namespace (i.e. it is free).
    fn port_free(&self, port: u16) -> bool {
        self.in_ns(move || TcpListener::bind(("0.0.0.0", port)).is_ok())
    }

    /// Whether a TCP host port is free on IPv4 and IPv6 alike (a dual-stack bind of `[::]`).
    fn port_free_both(&self, port: u16) -> bool {
        self.in_ns(move || TcpListener::bind(("::", port)).is_ok())
    }

    /// The host port a container's `private` port is published on (`docker port`).
    fn host_port(&self, container: &str, private: &str) -> u16 {
        let out = self.ok(&["port", container, private]);
        out.lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no host port in {out:?}"))
    }
}

impl Drop for NetDaemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let out = self.docker(&["ps", "-aq"]);
            let ids = String::from_utf8_lossy(&out.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker(&args);
            }
        }
        self.kill();
        // Namespace mounts of containers a failed test left behind.
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("data/netns")) {
            for e in entries.flatten() {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// A UDP server answering "pong", on a thread inside the network namespace at `netns`.
struct UdpEcho {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpEcho {
    fn start(netns: &Path, port: u16) -> Self {
        let file = File::open(netns).expect("container netns");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let s = UdpSocket::bind(("0.0.0.0", port)).expect("bind udp");
            s.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            tx.send(()).expect("ready");
            let mut buf = [0u8; 1500];
            while !stop2.load(Ordering::SeqCst) {
                if let Ok((_, peer)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(b"pong", peer);
                }
            }
        });
        rx.recv().expect("udp server ready");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until `cond` holds (polling), panicking with `what` at the deadline.
fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

const HTTPD: &[&str] = &["httpd", "-f", "-p", "80", "-h", "/www"];

#[test]
fn containers_reach_each_other_by_name_and_not_across_networks() {
    require!();
    let d = NetDaemon::start("dns");
    let o = d.octet;
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    d.ok(&[
        "network",
        "create",
        "--subnet",
        &format!("10.{o}.10.0/24"),
        "front",
    ]);
    d.ok(&[
        "network",
        "create",
        "--subnet",
        &format!("10.{o}.20.0/24"),
        "back",
    ]);
    let mut web = vec![
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "front",
        "--network-alias",
        "www",
        "busybox",
    ];
    web.extend_from_slice(HTTPD);
    d.ok(&web);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "other",
        "--network",
        "back",
        "busybox",
        "sleep",
        "60",
    ]);

    // By name and by alias, through the embedded DNS.
    let fetch = |net: &str, host: &str| {
        d.docker(&[
            // busybox 1.35's wget crashes with -T: bound it with timeout(1) instead, under
            // --init: as PID 1, wget would ignore timeout's SIGTERM and wait out the kernel's
            // SYN retries (over two minutes) for the address another network may not reach.
            "run",
            "--rm",
            "--init",
            "--network",
            net,
            "busybox",
            "timeout",
            "3",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{host}/"),
        ])
    };
    // httpd may still be starting: retry the first fetch until a deadline.
    let reached = |net: &str, host: &str| {
        String::from_utf8_lossy(&fetch(net, host).stdout).contains("hello from berth")
    };
    wait_until("web to answer by name", Duration::from_secs(20), || {
        reached("front", "web")
    });
    assert!(reached("front", "www"), "by alias");

    // Another network neither resolves the name nor reaches the address.
    let ip = d.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.front.IPAddress}}",
        "web",
    ]);
    let ip = ip.trim();
    assert!(ip.starts_with(&format!("10.{o}.10.")), "{ip}");
    assert!(!fetch("back", "web").status.success());
    assert!(!fetch("back", ip).status.success(), "back reached {ip}");

    // /etc/hosts, resolv.conf and hostname, with --add-host, --dns and --hostname.
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "front",
        "--hostname",
        "box1",
        "--add-host",
        "db.test:10.9.8.7",
        "busybox",
        "sh",
        "-c",
        "hostname; cat /etc/hosts",
    ]);
    assert!(out.starts_with("box1\n"), "{out}");
    assert!(out.contains("10.9.8.7\tdb.test"), "{out}");
    let out = d.ok(&[
        "run",
        "--rm",
        "--dns",
        "10.1.2.3",
        "busybox",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(out.contains("nameserver 10.1.2.3"), "{out}");
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "front",
        "busybox",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(out.contains(&format!("nameserver 10.{o}.10.1")), "{out}");

    // connect / disconnect a running container: other containers resolve it on the network
    // it joined (the embedded DNS), and its own /etc/hosts names it at its new address too,
    // until it leaves again; lines added inside the container stay.
    let hostname = d.ok(&["inspect", "-f", "{{.Config.Hostname}}", "web"]);
    let hostname = hostname.trim();
    let hosts = || d.ok(&["exec", "web", "cat", "/etc/hosts"]);
    let front_line = format!("{ip}\t{hostname}");
    assert!(hosts().lines().any(|l| l == front_line), "{}", hosts());
    d.ok(&[
        "exec",
        "web",
        "sh",
        "-c",
        "echo '10.9.9.9\tmine' >> /etc/hosts",
    ]);
    d.ok(&["network", "connect", "back", "web"]);
    let back_ip = d.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.back.IPAddress}}",
        "web",
    ]);
    let back_ip = back_ip.trim();
    assert!(back_ip.starts_with(&format!("10.{o}.20.")), "{back_ip}");
    let back_line = format!("{back_ip}\t{hostname}");
    let after_connect = hosts();
    assert!(
        after_connect.lines().any(|l| l == back_line),
        "{after_connect}"
    );
    wait_until("web to answer on back", Duration::from_secs(20), || {
        reached("back", "web")
    });
    d.ok(&["network", "disconnect", "back", "web"]);
    let after_disconnect = hosts();
    assert!(!after_disconnect.contains(back_ip), "{after_disconnect}");
    assert!(
        after_disconnect.lines().any(|l| l == front_line) && after_disconnect.contains("mine"),
        "{after_disconnect}"
    );
    assert!(!fetch("back", "web").status.success(), "after disconnect");

    // Stats count the traffic of the container's own interfaces (web served pages).
    let net_io = d.ok(&["stats", "--no-stream", "--format", "{{.NetIO}}", "web"]);
    assert!(!net_io.starts_with("0B / "), "{net_io}");
    assert!(!net_io.trim().ends_with(" / 0B"), "{net_io}");

    // Network events as Docker's: create, then connect/disconnect per container.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let events = d.ok(&[
        "events",
        "--since",
        &format!("{t0:.9}"),
        "--until",
        &format!("{until:.9}"),
        "--filter",
        "type=network",
        "--filter",
        "network=back",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.type}} {{.Actor.Attributes.container}}",
    ]);
    let web_id = d.ok(&["inspect", "-f", "{{.Id}}", "web"]);
    let web_id = web_id.trim();
    let lines: Vec<&str> = events.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"create back bridge <no value>"),
        "{events}"
    );
    let web_lines: Vec<&str> = lines
        .iter()
        .filter(|l| l.ends_with(web_id))
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(web_lines, ["connect", "disconnect"], "{events}");
    // `other` joined back when it started and is still there.
    let other_id = d.ok(&["inspect", "-f", "{{.Id}}", "other"]);
    assert!(
        lines.contains(&format!("connect back bridge {}", other_id.trim()).as_str()),
        "{events}"
    );

    // Network modes: none has only lo; host sees the daemon's links.
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "ip",
        "-o",
        "link",
    ]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "ip",
        "-o",
        "link",
    ]);
    assert!(out.contains(&d.bridge), "{out}");
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "container:web",
        "busybox",
        "wget",
        "-q",
        "-O",
        "-",
        "http://127.0.0.1/",
    ]);
    assert!(out.contains("hello from berth"), "{out}");

    // Inspect shapes docker-compose reads.
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["network", "inspect", "front"])).unwrap();
    assert_eq!(v[0]["Name"], "front");
    assert_eq!(
        v[0]["IPAM"]["Config"][0]["Subnet"],
        format!("10.{o}.10.0/24")
    );
    let containers = v[0]["Containers"].as_object().unwrap();
    assert!(containers.values().any(|c| c["Name"] == "web"), "{v}");
    let ls = d.ok(&["network", "ls", "--format", "{{.Name}}"]);
    for n in ["front", "back", "bridge", "host", "none"] {
        assert!(ls.lines().any(|l| l == n), "{ls}");
    }
}

#[test]
fn ipv6_user_network_gives_addresses_names_and_isolation() {
    require!();
    let d = NetDaemon::start("six");
    let o = d.octet;
    // Unique per test (like the IPv4 ranges), and only inside the test's namespace.
    let prefix = format!("fd00:{o:x}:6::");
    d.ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        &format!("10.{o}.60.0/24"),
        "--subnet",
        &format!("{prefix}/64"),
        "six",
    ]);
    d.ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        &format!("10.{o}.70.0/24"),
        "--subnet",
        &format!("fd00:{o:x}:7::/64"),
        "seven",
    ]);
    let mut web = vec!["run", "-d", "--name", "web", "--network", "six", "busybox"];
    web.extend_from_slice(HTTPD);
    d.ok(&web);

    // inspect: the address, its prefix length and the gateway on that network.
    let got = d.ok(&[
        "inspect",
        "-f",
        "{{with index .NetworkSettings.Networks \"six\"}}{{.GlobalIPv6Address}} {{.GlobalIPv6PrefixLen}} {{.IPv6Gateway}}{{end}}",
        "web",
    ]);
    let fields: Vec<&str> = got.split_whitespace().collect();
    let [addr, len, gateway] = fields[..] else {
        panic!("{got}");
    };
    assert!(
        addr.starts_with(&prefix) && addr != format!("{prefix}1"),
        "{got}"
    );
    assert_eq!(
        (len, gateway),
        ("64", format!("{prefix}1").as_str()),
        "{got}"
    );
    // Inside: the address on eth0, a default route through the gateway, and /etc/hosts.
    let inside = d.ok(&[
        "exec",
        "web",
        "sh",
        "-c",
        "ip -6 addr show dev eth0; ip -6 route; cat /etc/hosts",
    ]);
    assert!(inside.contains(&format!("inet6 {addr}/64")), "{inside}");
    assert!(
        inside.contains(&format!("default via {prefix}1")),
        "{inside}"
    );
    let hostname = d.ok(&["inspect", "-f", "{{.Config.Hostname}}", "web"]);
    assert!(
        inside
            .lines()
            .any(|l| l == format!("{addr}\t{}", hostname.trim())),
        "{inside}"
    );
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["network", "inspect", "six"])).unwrap();
    assert_eq!(v[0]["EnableIPv6"], true, "{v}");
    let subnets: Vec<&str> = v[0]["IPAM"]["Config"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["Subnet"].as_str())
        .collect();
    assert!(subnets.contains(&format!("{prefix}/64").as_str()), "{v}");
    let members = v[0]["Containers"].as_object().unwrap();
    assert!(
        members
            .values()
            .any(|c| c["Name"] == "web" && c["IPv6Address"] == format!("{addr}/64")),
        "{v}"
    );

    // Another container on the network: AAAA from the embedded DNS, ping over IPv6 by name,
    // and TCP to the IPv6 address.
    let out = d.ok(&[
        "run",
        "--rm",
        "--init",
        "--network",
        "six",
        "busybox",
        "sh",
        "-c",
        &format!(
            "nslookup -type=AAAA web && ping -6 -c 1 -W 3 web && timeout 5 wget -q -O - http://[{addr}]/"
        ),
    ]);
    assert!(out.contains(&format!("Address: {addr}")), "{out}");
    assert!(out.contains(&format!("PING web ({addr})")), "{out}");
    assert!(out.contains("1 packets received"), "{out}");
    assert!(out.contains("hello from berth"), "{out}");

    // A container on another IPv6 network reaches neither by name nor by address.
    let out = d.docker(&[
        "run",
        "--rm",
        "--network",
        "seven",
        "busybox",
        "ping",
        "-6",
        "-c",
        "1",
        "-W",
        "2",
        addr,
    ]);
    assert!(
        !out.status.success(),
        "seven reached {addr}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = d.docker(&[
        "run",
        "--rm",
        "--network",
        "seven",
        "busybox",
        "nslookup",
        "-type=AAAA",
        "web",
    ]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(addr),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The IPv6 rules go with the last IPv6 network.
    assert!(d.ruleset().contains("table ip6"), "{}", d.ruleset());
    d.ok(&["rm", "-f", "web"]);
    d.ok(&["network", "rm", "six", "seven"]);
    let rules = d.ruleset();
    assert!(!rules.contains("table ip6"), "{rules}");
}

#[test]
fn published_ports_answer_on_loopback_and_are_released() {
    require!();
    let d = NetDaemon::start("pub");
    let links_before = d.links();

    // TCP on 127.0.0.1, a chosen host port.
    let mut args = vec![
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "127.0.0.1::80",
        "busybox",
    ];
    args.extend_from_slice(HTTPD);
    d.ok(&args);
    let port = d.host_port("web", "80/tcp");
    let reply = d
        .http_get(port, Duration::from_secs(10))
        .expect("published TCP port");
    assert!(reply.contains("hello from berth"), "{reply}");
    let ps = d.ok(&["ps", "--format", "{{.Ports}}"]);
    assert!(ps.contains(&format!("127.0.0.1:{port}->80/tcp")), "{ps}");
    let ip = d.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.IPAddress}} {{.NetworkSettings.Gateway}}",
        "web",
    ]);
    assert!(ip.starts_with(&format!("10.{}.0.", d.octet)), "{ip}");

    // UDP, with -P over an --expose'd port. Debian's busybox nc has no UDP, so the server is
    // a thread of this test inside the container's own namespace (its SandboxKey).
    d.ok(&[
        "run", "-d", "--name", "echo", "--expose", "5000/udp", "-P", "busybox", "sleep", "60",
    ]);
    let sandbox = d.ok(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "echo"]);
    let server = UdpEcho::start(Path::new(sandbox.trim()), 5000);
    let uport = d.host_port("echo", "5000/udp");
    let reply = d
        .udp_exchange(uport, Duration::from_secs(10))
        .expect("published UDP port");
    assert_eq!(reply, "pong");
    drop(server);

    // A fixed host port, then stop: the port is free and the DNAT rule gone at once.
    let fixed = {
        let l = d.in_ns(|| TcpListener::bind("0.0.0.0:0").and_then(|l| l.local_addr()));
        l.expect("free port").port()
    };
    let mut args = vec!["run", "-d", "--name", "fixed", "-p"];
    let spec = format!("{fixed}:80");
    args.push(&spec);
    args.push("busybox");
    args.extend_from_slice(HTTPD);
    d.ok(&args);
    assert!(d.http_get(fixed, Duration::from_secs(10)).is_ok());
    assert!(!d.port_free(fixed), "the published port is held");
    d.ok(&["stop", "-t", "1", "fixed"]);
    assert!(d.port_free(fixed), "port released after stop");
    // The DNAT rule goes right after, off the stop path.
    wait_until("the DNAT rule to go", Duration::from_secs(10), || {
        !d.ruleset().contains(&format!("dport {fixed} "))
    });
    // Started again, it is published again.
    d.ok(&["start", "fixed"]);
    assert!(d.http_get(fixed, Duration::from_secs(10)).is_ok());

    // A container that exits on its own releases its port too.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "brief",
        "-p",
        "127.0.0.1::81",
        "busybox",
        "sleep",
        "1",
    ]);
    let brief = d.host_port("brief", "81/tcp");
    wait_until(
        "brief's port to be released",
        Duration::from_secs(20),
        || d.port_free(brief),
    );

    // Removing everything leaves no veth behind (the default bridge stays, like docker0).
    d.ok(&["rm", "-f", "web", "echo", "fixed", "brief"]);
    // The veths go with the containers' namespaces, which the kernel cleans up in the
    // background: poll.
    wait_until("the veths to go", Duration::from_secs(10), || {
        let mut links = d.links();
        links.retain(|l| l != &d.bridge);
        links == links_before
    });
    wait_until("the DNAT rules to go", Duration::from_secs(10), || {
        !d.ruleset().contains("dnat to")
    });
}

#[test]
fn published_ports_answer_on_ipv6_as_docker_binds_them() {
    require!();
    let d = NetDaemon::start("p6");
    let o = d.octet;
    // A non-loopback IPv6 address of the daemon's "host" (inside the test's namespace).
    let host6 = format!("fd00:{o:x}:99::5");
    run(
        "ip",
        &[
            "-n",
            &d.ns,
            "addr",
            "add",
            &format!("{host6}/128"),
            "dev",
            "lo",
        ],
    );
    let free_port = || {
        d.in_ns(|| TcpListener::bind("[::]:0").and_then(|l| l.local_addr()))
            .expect("free port")
            .port()
    };

    // No host address: 0.0.0.0 and ::, the same port, shown as Docker shows them. The
    // container is on an IPv4-only network, so its IPv6 side is the proxy's.
    let mut args = vec!["run", "-d", "--name", "web", "-p", "80", "busybox"];
    args.extend_from_slice(HTTPD);
    d.ok(&args);
    let port = d.host_port("web", "80/tcp");
    assert_eq!(
        d.ok(&["port", "web", "80/tcp"]),
        format!("0.0.0.0:{port}\n[::]:{port}\n")
    );
    let ps = d.ok(&["ps", "--filter", "name=web", "--format", "{{.Ports}}"]);
    assert_eq!(
        ps.trim(),
        format!("0.0.0.0:{port}->80/tcp, [::]:{port}->80/tcp")
    );
    let ports = d.ok(&["inspect", "-f", "{{json .NetworkSettings.Ports}}", "web"]);
    let ports: serde_json::Value = serde_json::from_str(&ports).unwrap();
    assert_eq!(
        ports,
        serde_json::json!({"80/tcp": [
            {"HostIp": "0.0.0.0", "HostPort": port.to_string()},
            {"HostIp": "::", "HostPort": port.to_string()},
        ]}),
    );
    for ip in ["127.0.0.1", "::1", host6.as_str()] {
        let reply = d.http_get_at(ip, port, Duration::from_secs(10));
        assert!(
            reply
                .as_deref()
                .is_ok_and(|r| r.contains("hello from berth")),
            "{ip}: {reply:?}"
        );
    }

    // One address: that address only.
    let (p4, p6) = (free_port(), free_port());
    let (spec4, spec6) = (format!("127.0.0.1:{p4}:80"), format!("[::1]:{p6}:80"));
    let mut args = vec!["run", "-d", "--name", "lo4", "-p", &spec4, "-p", &spec6];
    args.push("busybox");
    args.extend_from_slice(HTTPD);
    d.ok(&args);
    let ps = d.ok(&["ps", "--filter", "name=lo4", "--format", "{{.Ports}}"]);
    assert!(ps.contains(&format!("127.0.0.1:{p4}->80/tcp")), "{ps}");
    assert!(ps.contains(&format!("[::1]:{p6}->80/tcp")), "{ps}");
    assert!(d
        .http_get_at("127.0.0.1", p4, Duration::from_secs(10))
        .is_ok());
    assert!(d.http_get_at("::1", p6, Duration::from_secs(10)).is_ok());
    assert!(d.http_get_at("::1", p4, Duration::ZERO).is_err());
    assert!(d.http_get_at("127.0.0.1", p6, Duration::ZERO).is_err());

    // UDP on ::1 to an IPv4-only container.
    d.ok(&[
        "run", "-d", "--name", "echo", "--expose", "5000/udp", "-P", "busybox", "sleep", "60",
    ]);
    let sandbox = d.ok(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "echo"]);
    let server = UdpEcho::start(Path::new(sandbox.trim()), 5000);
    let uport = d.host_port("echo", "5000/udp");
    for ip in ["127.0.0.1", "::1", host6.as_str()] {
        let reply = d.udp_exchange_at(ip, uport, Duration::from_secs(10));
        assert_eq!(reply.as_deref(), Ok("pong"), "{ip}");
    }
    drop(server);

    // A container with IPv6: DNAT to its IPv6 address (the proxy only for ::1).
    d.ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        &format!("10.{o}.61.0/24"),
        "--subnet",
        &format!("fd00:{o:x}:61::/64"),
        "six",
    ]);
    let p3 = free_port();
    let spec = format!("{p3}:80");
    let mut args = vec![
        "run",
        "-d",
        "--name",
        "web6",
        "--network",
        "six",
        "-p",
        &spec,
    ];
    args.push("busybox");
    args.extend_from_slice(HTTPD);
    d.ok(&args);
    let addr6 = d.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.six.GlobalIPv6Address}}",
        "web6",
    ]);
    let rules = d.ruleset();
    assert!(
        rules.contains(&format!("tcp dport {p3} dnat to [{}]:80", addr6.trim())),
        "{rules}"
    );
    for ip in ["127.0.0.1", "::1", host6.as_str()] {
        let reply = d.http_get_at(ip, p3, Duration::from_secs(10));
        assert!(reply.is_ok(), "{ip}: {reply:?}");
    }

    // Stopped: free on both families, no rule left.
    d.ok(&["stop", "-t", "1", "web", "web6"]);
    assert!(d.port_free_both(port), "port {port} released");
    assert!(d.port_free_both(p3), "port {p3} released");
    wait_until("the DNAT rules to go", Duration::from_secs(10), || {
        let rules = d.ruleset();
        !rules.contains(&format!("dport {port} ")) && !rules.contains(&format!("dport {p3} "))
    });
    // Started again: published again (on a new port: `-p 80` asks for any free one).
    d.ok(&["start", "web"]);
    let port = d.host_port("web", "80/tcp");
    assert!(d.http_get_at("::1", port, Duration::from_secs(10)).is_ok());

    // A host port taken on IPv6 only: a clear error naming it, and nothing left behind.
    d.ok(&["rm", "-f", "lo4", "echo"]);
    let rules = d.ruleset();
    let taken = free_port();
    let holder = d.in_ns(|| TcpListener::bind(("::1", taken)).expect("hold [::1]"));
    let spec = format!("{taken}:80");
    let err = d.fails(&[
        "run", "-d", "--name", "clash6", "-p", &spec, "busybox", "sleep", "60",
    ]);
    assert!(
        err.contains(&format!("[::]:{taken}")) && err.contains("in use"),
        "{err}"
    );
    drop(holder);
    assert!(d.port_free_both(taken), "nothing holds {taken}");
    assert_eq!(d.ruleset(), rules, "rules changed");
}

#[test]
fn daemon_killed_and_restarted_finds_its_containers_and_frees_the_rest() {
    require!();
    let mut d = NetDaemon::start("rst");
    let mut args = vec!["run", "-d", "--name", "web", "-p", "80", "busybox"];
    args.extend_from_slice(HTTPD);
    d.ok(&args);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "short",
        "-p",
        "127.0.0.1::82",
        "busybox",
        "sleep",
        "2",
    ]);
    let port = d.host_port("web", "80/tcp");
    let short = d.host_port("short", "82/tcp");
    d.kill();
    // While the daemon is away the kernel keeps forwarding.
    assert!(d.http_get(port, Duration::from_secs(10)).is_ok());
    // `short` exits meanwhile (its monitor records it).
    let state = d.dir.path().join("data/containers");
    wait_until("short to exit", Duration::from_secs(20), || {
        std::fs::read_dir(&state)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read_to_string(e.path().join("state.json"))
                    .is_ok_and(|s| s.contains("\"/short\"") && s.contains("\"exited\""))
            })
    });
    d.spawn();
    assert!(
        d.http_get(port, Duration::from_secs(10)).is_ok(),
        "after restart"
    );
    // The IPv6 side (the proxy, which went with the daemon) is served again.
    assert!(
        d.http_get_at("::1", port, Duration::from_secs(10)).is_ok(),
        "[::1] after restart"
    );
    assert!(!d.port_free(port), "held again after restart");
    assert!(
        d.port_free(short),
        "the exited container's port is released"
    );
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["network", "inspect", "bridge"])).unwrap();
    assert_eq!(
        v[0]["Containers"].as_object().map(|c| c.len()),
        Some(1),
        "{v}"
    );
    d.ok(&["stop", "-t", "1", "web"]);
    assert!(d.port_free_both(port));
}

#[test]
fn bad_input_is_refused_clearly_and_leaves_nothing_behind() {
    require!();
    let d = NetDaemon::start("bad");
    let o = d.octet;
    d.ok(&[
        "network",
        "create",
        "--subnet",
        &format!("10.{o}.30.0/24"),
        "one",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "user",
        "--network",
        "one",
        "busybox",
        "sleep",
        "60",
    ]);
    let links = d.links();
    let rules = d.ruleset();

    // Overlapping subnet.
    let err = d.fails(&[
        "network",
        "create",
        "--subnet",
        &format!("10.{o}.30.128/25"),
        "two",
    ]);
    assert!(err.contains("overlaps") && err.contains("one"), "{err}");
    // Same name.
    let err = d.fails(&["network", "create", "one"]);
    assert!(err.contains("already exists"), "{err}");
    // Unknown network.
    let err = d.fails(&["run", "--rm", "--network", "nosuch", "busybox", "true"]);
    assert!(err.contains("nosuch") && err.contains("not found"), "{err}");
    let err = d.fails(&["network", "inspect", "nosuch"]);
    assert!(err.contains("nosuch"), "{err}");
    // Network in use.
    let err = d.fails(&["network", "rm", "one"]);
    assert!(err.contains("active endpoints"), "{err}");
    // Pre-defined network.
    let err = d.fails(&["network", "rm", "bridge"]);
    assert!(err.contains("pre-defined"), "{err}");
    // A host port someone else holds.
    let holder = d.in_ns(|| TcpListener::bind("0.0.0.0:0").expect("bind"));
    let taken = holder.local_addr().unwrap().port();
    let spec = format!("{taken}:80");
    let err = d.fails(&[
        "run",
        "-d",
        "--name",
        "clash",
        "--network",
        "one",
        "-p",
        &spec,
        "busybox",
        "sleep",
        "60",
    ]);
    assert!(
        err.contains(&taken.to_string()) && err.contains("in use"),
        "{err}"
    );
    // Bad port spec.
    let err = d.fails(&["run", "--rm", "-p", "99999:80", "busybox", "true"]);
    assert!(err.contains("99999"), "{err}");
    drop(holder);

    // A failed start's veth goes with its namespace, in the background: poll.
    wait_until("the links to be as before", Duration::from_secs(10), || {
        d.links() == links
    });
    assert_eq!(d.ruleset(), rules, "rules changed");

    // Once the user is gone the network can go, and prune removes what is unused.
    d.ok(&["rm", "-f", "user", "clash"]);
    d.ok(&["network", "rm", "one"]);
    d.ok(&[
        "network",
        "create",
        "--subnet",
        &format!("10.{o}.40.0/24"),
        "spare",
    ]);
    let out = d.ok(&["network", "prune", "-f"]);
    assert!(out.contains("spare"), "{out}");
    assert!(!d.ruleset().contains(&d.table), "{}", d.ruleset());
    wait_until("only lo to be left", Duration::from_secs(10), || {
        d.links().iter().all(|l| l == "lo")
    });
}
