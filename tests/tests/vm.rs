//! The VM backend end to end, under QEMU with TCG: `berth machine` boots the
//! guest image (Debian kernel + initramfs with `berth-agent` as PID 1), and
//! the real `berth` and `docker` CLIs use the engine inside it through the
//! host endpoint. One boot (plus one restart) checks everything, so the
//! test stays within a few minutes of emulated boots.
//!
//! Skips itself (saying so) when not root or when QEMU or
//! vhost-device-vsock is missing. Every QEMU and vsock backend process dies
//! with its machine supervisor, and the guard below stops and kills the
//! supervisors even when an assertion fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_tests::poll::try_wait_until;
use berth_tests::registry::{free_port, Registry};

/// Generous but bounded: a TCG boot takes a few seconds, a cold image
/// build (kernel package download and unpack) longer.
const START_TIMEOUT: Duration = Duration::from_secs(240);

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/vm-… → target
    exe.ancestors()
        .nth(3)
        .expect("target directory")
        .to_path_buf()
}

fn berth_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let bin = exe.ancestors().nth(2).expect("profile dir").join("berth");
    assert!(
        bin.exists(),
        "{} is missing: cargo build -p berth",
        bin.display()
    );
    bin
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&std::env::var_os("PATH")?).collect();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The static agent the guest image needs, for a Rust target: built by
/// `guest-image/build-agent.sh` (CI runs it before the tests; built here if
/// missing).
fn static_agent_for(target_triple: &str) -> PathBuf {
    let target = target_dir();
    let agent = target.join(target_triple).join("release/berth-agent");
    if !agent.exists() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = Command::new(repo.join("guest-image/build-agent.sh"))
            .args(["--target", target_triple])
            .env("CARGO_TARGET_DIR", &target)
            .stdout(Stdio::null())
            .status()
            .expect("running guest-image/build-agent.sh");
        assert!(status.success(), "building the static agent failed");
    }
    agent
}

fn static_agent() -> PathBuf {
    match std::env::var_os("BERTH_AGENT") {
        Some(p) => PathBuf::from(p),
        None => static_agent_for("x86_64-unknown-linux-gnu"),
    }
}

struct Machines {
    home: tempfile::TempDir,
    berth: PathBuf,
    names: Vec<String>,
    /// Stops every machine under `home` and removes it once our end of its stdin closes,
    /// which a test process killed by the runner's timeout (no `Drop`) also does.
    watchdog: Child,
}

impl Machines {
    /// A private machine home in /tmp (short paths: Unix socket names are limited to
    /// 108 bytes).
    fn new(prefix: &str) -> Machines {
        let home = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .expect("tempdir");
        let berth = berth_binary();
        let script = r#"read -r _
for dir in "$BERTH_MACHINE_HOME"/*/; do
  [ -f "$dir/machine.json" ] && timeout -s KILL 60 "$0" machine stop "$(basename "$dir")" --timeout 20
done
rm -rf "$BERTH_MACHINE_HOME""#;
        let watchdog = Command::new("sh")
            .args(["-c", script])
            .arg(&berth)
            .env("BERTH_MACHINE_HOME", home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("machine watchdog");
        Machines {
            home,
            berth,
            names: Vec::new(),
            watchdog,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.berth);
        c.args(args)
            .env("BERTH_MACHINE_HOME", self.home.path())
            .env("BERTH_AGENT", static_agent())
            .stdin(Stdio::null());
        c
    }

    fn machine(&self, args: &[&str]) -> Output {
        let mut all = vec!["machine"];
        all.extend_from_slice(args);
        self.cmd(&all).output().expect("running berth machine")
    }

    /// The machine's status, supervisor log and console tail, for failure messages.
    fn diagnostics(&self, name: &str) -> String {
        let dir = self.home.path().join(name);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let tail = |text: String| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        format!(
            "status.json:\n{}\nmachine.log:\n{}\nconsole.log:\n{}",
            read("status.json"),
            tail(read("machine.log")),
            tail(read("console.log"))
        )
    }

    fn socket(&self, name: &str) -> PathBuf {
        self.home.path().join(name).join("berth.sock")
    }
}

impl Drop for Machines {
    fn drop(&mut self) {
        // Cleaned up here; the watchdog is for when this does not run.
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        for name in &self.names {
            let _ = self.machine(&["stop", name, "--timeout", "20"]);
            // Anything still alive (a wedged supervisor) is killed.
            let status = self.home.path().join(name).join("status.json");
            if let Ok(text) = std::fs::read_to_string(status) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    let pids = std::iter::once(v["pid"].clone())
                        .chain(v["vmm_pids"].as_array().cloned().unwrap_or_default());
                    for pid in pids.filter_map(|p| p.as_i64()) {
                        if let Ok(pid) = i32::try_from(pid) {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                }
            }
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A minimal busybox image as a tar (imported with `docker import`).
fn busybox_tar(path: &Path) {
    busybox_tar_from(Path::new("/bin/busybox"), path);
}

/// The same image around a given busybox binary (another architecture's).
fn busybox_tar_from(busybox: &Path, path: &Path) {
    let busybox = std::fs::read(busybox).expect("busybox-static");
    let mut b = tar::Builder::new(std::fs::File::create(path).expect("tar"));
    let mut dir = |name: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, name, std::io::empty()).expect("dir");
    };
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        dir(d);
    }
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    b.append_data(&mut h, "bin/busybox", &busybox[..])
        .expect("busybox");
    for applet in [
        "sh", "echo", "cat", "httpd", "mkdir", "sleep", "ls", "date", "dd",
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .expect("link");
    }
    b.finish().expect("finish");
}

/// The body of `GET path` on the host's `port`; `None` on an error, a non-200 answer, or
/// 10 s without a byte.
fn http_get_body(port: u16, path: &str) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let end = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&out[..end]);
    head.lines()
        .next()
        .is_some_and(|l| l.contains(" 200"))
        .then(|| out[end + 4..].to_vec())
}

fn http_get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.contains("200").then_some(out)
}

#[test]
fn machine_end_to_end() {
    if !berth_tests::is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    for tool in ["qemu-system-x86_64", "vhost-device-vsock", "virtiofsd"] {
        if find_in_path(tool).is_none() {
            eprintln!("skipping: {tool} is not installed (see .ci/run)");
            return;
        }
    }
    let docker = find_in_path("docker");
    // Short paths: Unix socket names are limited to 108 bytes.
    let mut m = Machines::new("bvm");
    let share = m.home.path().join("share");
    std::fs::create_dir(&share).expect("share dir");
    std::fs::write(share.join("in.txt"), "from-the-host\n").expect("share file");
    let cid = (3 + std::process::id() % 100_000).to_string();

    // Bad input first: each fails fast with a clear error, leaving nothing.
    let o = m.machine(&[
        "init",
        "bad",
        "--kernel",
        "/nonexistent/vmlinuz",
        "--initrd",
        "/nonexistent/initrd",
    ]);
    assert!(
        !o.status.success() && text(&o).contains("/nonexistent/vmlinuz"),
        "{}",
        text(&o)
    );
    let empty = m.home.path().join("empty");
    std::fs::write(&empty, b"").expect("empty");
    let e = empty.to_str().expect("utf-8");
    ok(m.machine(&[
        "init", "bad", "--kernel", e, "--initrd", e, "--memory", "256", "--disk", "1", "--cid",
        &cid,
    ]));
    m.names.push("bad".into());
    let t = Instant::now();
    let o = m.machine(&["start", "bad", "--timeout", "30"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("failed to start"), "{}", text(&o));
    assert!(
        t.elapsed() < Duration::from_secs(45),
        "bad start took {:?}",
        t.elapsed()
    );
    let status = ok(m.machine(&["status", "bad"]));
    assert!(status.contains("failed"), "{status}");
    ok(m.machine(&["rm", "bad"]));
    m.names.retain(|n| n != "bad");
    let o = m.machine(&["start", "nosuch"]);
    assert!(
        !o.status.success() && text(&o).contains("does not exist"),
        "{}",
        text(&o)
    );

    // The real machine, allowed to reach the registry on the host's loopback.
    let registry = Registry::start();
    let share_s = share.to_str().expect("utf-8");
    let mut init = vec![
        "init", "t", "--cpus", "2", "--memory", "1024", "--disk", "2", "--cid", &cid, "--share",
        share_s,
    ];
    let registry_port = registry.as_ref().map(|r| r.port.to_string());
    if let Some(port) = &registry_port {
        init.extend(["--host-port", port]);
    }
    let created = m.machine(&init);
    let init_stderr = String::from_utf8_lossy(&created.stderr).into_owned();
    ok(created);
    // `guest image: <dir>`: its kernel boots the silent machine at the end.
    let image_dir = init_stderr
        .lines()
        .find_map(|l| l.strip_prefix("guest image: "))
        .map(PathBuf::from);

    // A host-service port whose vsock listener is taken: the start fails at once, naming it,
    // and leaves no VM running.
    let taken_path = {
        let mut p = m.home.path().join("t").join("vsock.sock").into_os_string();
        p.push("_1026");
        PathBuf::from(p)
    };
    if registry.is_some() {
        let _taken = std::os::unix::net::UnixListener::bind(&taken_path).expect("bind");
        m.names.push("t".into());
        let t = Instant::now();
        let o = m.machine(&["start", "t", "--timeout", "60"]);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains("vsock port 1026 is already taken"),
            "{}",
            text(&o)
        );
        assert!(t.elapsed() < Duration::from_secs(45), "{:?}", t.elapsed());
        assert_no_vmm_left(&m, "t");
        m.names.clear();
    }
    let _ = std::fs::remove_file(&taken_path);
    m.names.push("t".into());
    let t = Instant::now();
    let out = ok(m.machine(&[
        "start",
        "t",
        "--timeout",
        &START_TIMEOUT.as_secs().to_string(),
    ]));
    eprintln!("machine start: {:?}: {out}", t.elapsed());
    let sock = m.socket("t");
    let host = format!("unix://{}", sock.display());

    let out = ok(m.cmd(&["-H", &host, "version"]).output().expect("version"));
    assert!(out.contains("Server"), "{out}");
    let t = Instant::now();
    let out = ok(m
        .cmd(&["-H", &host, "run", "--rm", "hello"])
        .output()
        .expect("run hello"));
    eprintln!("berth run --rm hello through the VM: {:?}", t.elapsed());
    assert!(out.to_lowercase().contains("hello"), "{out}");

    let Some(docker) = docker else {
        eprintln!("docker CLI missing: skipping the docker part");
        return;
    };
    let dk = |args: &[&str]| {
        Command::new(&docker)
            .arg("-H")
            .arg(&host)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("docker")
    };
    let out = ok(dk(&["version", "--format", "{{.Server.Version}}"]));
    assert!(!out.trim().is_empty(), "{out}");
    let out = ok(dk(&["run", "--rm", "hello"]));
    assert!(out.to_lowercase().contains("hello"), "{out}");

    let tar = m.home.path().join("busybox.tar");
    busybox_tar(&tar);
    ok(dk(&[
        "import",
        tar.to_str().expect("utf-8"),
        "busybox:latest",
    ]));
    let out = ok(dk(&["run", "--rm", "busybox", "echo", "hi"]));
    assert_eq!(out.trim(), "hi");

    // The guest has its outbound network (passt; nothing beyond loopback is contacted here).
    let eth0 = ok(dk(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "cat",
        "/sys/class/net/eth0/operstate",
    ]));
    assert_eq!(eth0.trim(), "up");
    // eth0 got its address, route and DNS from the host's command line (passt's fixed
    // addresses, as HNS's on Windows; macOS's NAT still uses DHCP), before the API answers.
    let net = ok(dk(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "sh",
        "-c",
        "busybox ip -4 addr show dev eth0; busybox ip route; cat /etc/resolv.conf",
    ]));
    assert!(net.contains("inet 10.0.2.15/24"), "{net}");
    assert!(net.contains("default via 10.0.2.2 dev eth0"), "{net}");
    assert!(net.contains("nameserver 10.0.2.3"), "{net}");
    let console =
        std::fs::read_to_string(m.home.path().join("t").join("console.log")).unwrap_or_default();
    assert!(
        console.contains(
            "berth-agent: eth0 10.0.2.15/24 from the host (router 10.0.2.2, dns 10.0.2.3)"
        ),
        "{console}"
    );

    // The guest's clock is the host's (set once the agent answers).
    let guest_now: i64 = ok(dk(&["run", "--rm", "busybox", "date", "+%s"]))
        .trim()
        .parse()
        .expect("seconds");
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    assert!(
        (guest_now - host_now).abs() <= 5,
        "guest clock {guest_now}, host clock {host_now}"
    );

    // An image pulled inside the VM from the registry on the host's loopback: pushed there
    // through the same path, removed, then `docker run` pulls it back.
    if let Some(registry) = &registry {
        let image = format!("127.0.0.1:{}/vmtest/busybox:v1", registry.port);
        ok(dk(&["tag", "busybox", &image]));
        ok(dk(&["push", &image]));
        let tags = registry.tags("vmtest/busybox");
        assert!(tags.contains("\"v1\""), "the host's registry has: {tags}");
        ok(dk(&["rmi", &image]));
        let out = ok(dk(&["run", "--rm", &image, "echo", "hi"]));
        assert_eq!(out.trim(), "hi");
        let out = ok(dk(&["images", "--format", "{{.Repository}}:{{.Tag}}"]));
        assert!(out.contains("vmtest/busybox:v1"), "{out}");
    }

    // A port published with -p on the VM's bridge network answers on the host's 127.0.0.1.
    let port = free_port();
    let publish = format!("{port}:80");
    let id = ok(dk(&[
        "run",
        "-d",
        "-p",
        &publish,
        "busybox",
        "sh",
        "-c",
        "mkdir -p /www && echo hi-from-bridge > /www/index.html && \
         dd if=/dev/zero of=/www/big bs=1M count=4 2>/dev/null && exec httpd -f -p 80 -h /www",
    ]));
    let page = try_wait_until(Duration::from_secs(30), || http_get(port));
    assert!(
        page.as_deref()
            .is_some_and(|p| p.contains("hi-from-bridge")),
        "published port {port} not forwarded: {page:?}\n{}",
        m.diagnostics("t")
    );
    // Many times the window of credit vsock gives the guest, so a forward that stalls when
    // it runs out shows here.
    let big = http_get_body(port, "/big");
    assert_eq!(
        big.as_ref().map(Vec::len),
        Some(4 << 20),
        "4 MiB through the forwarded port"
    );
    assert!(big.is_some_and(|b| b.iter().all(|&x| x == 0)));
    let ps = ok(dk(&["ps", "--format", "{{.Ports}}"]));
    assert!(ps.contains(&format!("0.0.0.0:{port}->80/tcp")), "{ps}");
    ok(dk(&["rm", "-f", id.trim()]));
    let closed = try_wait_until(Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    });
    assert!(closed.is_some(), "host port {port} still open after rm");

    // A host directory shared into the VM, bind-mounted into a container.
    let bind = format!("{share_s}:/data");
    let out = ok(dk(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        "cat /data/in.txt; echo from-the-vm > /data/out.txt",
    ]));
    assert!(out.contains("from-the-host"), "{out}");
    let back = std::fs::read_to_string(share.join("out.txt")).expect("written through the share");
    assert_eq!(back.trim(), "from-the-vm");
    // Over virtiofs (virtiofsd is installed here), the filesystem macOS uses.
    let mounts = ok(dk(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "busybox",
        "cat",
        "/proc/mounts",
    ]));
    assert!(
        mounts.lines().any(|l| l.split_whitespace().take(3).eq([
            "berthshare0",
            "/data",
            "virtiofs"
        ])),
        "{mounts}"
    );
    // The guest loaded what this machine uses and nothing for other hosts or filesystems:
    // no Hyper-V driver under QEMU, no 9p with only a virtiofs share.
    let modules = ok(dk(&["run", "--rm", "busybox", "cat", "/proc/modules"]));
    let loaded: Vec<&str> = modules
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for wanted in [
        "ext4",
        "overlay",
        "vmw_vsock_virtio_transport",
        "virtiofs",
        "bridge",
    ] {
        assert!(loaded.contains(&wanted), "{wanted} not loaded: {loaded:?}");
    }
    for unwanted in ["hv_vmbus", "hv_sock", "9p", "9pnet_virtio"] {
        assert!(!loaded.contains(&unwanted), "{unwanted} loaded: {loaded:?}");
    }
    // What the host changes while a container runs is what the container then reads:
    // a file rewritten after the container read it, and a file created after it started.
    let id = ok(dk(&[
        "run",
        "-d",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        "cat /data/in.txt && sleep 300",
    ]));
    let id = id.trim();
    let first = try_wait_until(Duration::from_secs(30), || {
        let o = dk(&["logs", id]);
        text(&o).contains("from-the-host").then_some(())
    });
    assert!(first.is_some(), "the container never read in.txt");
    std::fs::write(share.join("in.txt"), "rewritten-by-the-host\n").expect("rewrite");
    std::fs::write(share.join("late.txt"), "created-by-the-host\n").expect("late file");
    let mut seen = String::new();
    let coherent = try_wait_until(Duration::from_secs(10), || {
        let o = dk(&["exec", id, "cat", "/data/in.txt", "/data/late.txt"]);
        seen = String::from_utf8_lossy(&o.stdout).into_owned();
        (o.status.success() && seen == "rewritten-by-the-host\ncreated-by-the-host\n").then_some(())
    });
    assert!(coherent.is_some(), "the container still reads {seen:?}");
    ok(dk(&["rm", "-f", id]));

    // A port listening in the VM is answered on the host's 127.0.0.1.
    let port = free_port();
    let script = format!(
        "mkdir -p /www && echo hi-from-vm > /www/index.html && exec httpd -f -p {port} -h /www"
    );
    let id = ok(dk(&[
        "run",
        "-d",
        "--network",
        "host",
        "busybox",
        "sh",
        "-c",
        &script,
    ]));
    let page = try_wait_until(Duration::from_secs(30), || http_get(port));
    assert!(
        page.as_deref().is_some_and(|p| p.contains("hi-from-vm")),
        "port {port} not forwarded: {page:?}"
    );
    ok(dk(&["rm", "-f", id.trim()]));
    let closed = try_wait_until(Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    });
    assert!(
        closed.is_some(),
        "host port {port} still open after the container went"
    );

    // Stop, start: the data disk keeps the images.
    ok(m.machine(&["stop", "t"]));
    assert!(!sock.exists(), "endpoint left behind");
    let o = dk(&["version"]);
    assert!(!o.status.success());
    // A CLI command with no engine named boots the machine on demand (what every command
    // does on macOS; BERTH_MACHINE_ON_DEMAND=1 asks for it here), its progress on stderr.
    let t = Instant::now();
    let no_contexts = m.home.path().join("berth-config");
    let on_demand = m
        .cmd(&["images", "--format", "{{.Repository}}"])
        .env("BERTH_MACHINE_ON_DEMAND", "1")
        .env("BERTH_MACHINE", "t")
        .env("BERTH_CONFIG", &no_contexts)
        .env_remove("BERTH_HOST")
        .env_remove("BERTH_CONTEXT")
        .output()
        .expect("berth images");
    eprintln!("machine restart on demand: {:?}", t.elapsed());
    let stderr = String::from_utf8_lossy(&on_demand.stderr).into_owned();
    let out = ok(on_demand);
    assert!(out.contains("busybox"), "images after restart: {out}");
    assert!(!out.contains("running in"), "progress on stdout: {out}");
    assert!(stderr.contains("machine t running in"), "{stderr}");
    let out = ok(dk(&["images", "--format", "{{.Repository}}"]));
    assert!(out.contains("busybox"), "images after restart: {out}");
    let status = ok(m.machine(&["status", "t"]));
    assert!(status.contains("running"), "{status}");
    assert!(!ok(m.machine(&["logs", "t"])).is_empty());
    ok(m.machine(&["stop", "t"]));
    ok(m.machine(&["rm", "t"]));
    m.names.clear();

    // A guest that boots but whose agent never answers (busybox init in its place): the
    // start gives up at its timeout with a clear error and leaves no VMM running.
    let Some(image_dir) = image_dir else {
        panic!("`machine init` did not name its guest image: {init_stderr}");
    };
    let silent = m.home.path().join("silent.cpio");
    std::fs::write(&silent, silent_initrd()).expect("initrd");
    let kernel = image_dir.join("vmlinuz");
    ok(m.machine(&[
        "init",
        "mute",
        "--kernel",
        kernel.to_str().expect("utf-8"),
        "--initrd",
        silent.to_str().expect("utf-8"),
        "--memory",
        "512",
        "--disk",
        "1",
        "--cid",
        &cid,
    ]));
    m.names.push("mute".into());
    let t = Instant::now();
    let o = m.machine(&["start", "mute", "--timeout", "15"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("did not report ready"),
        "{}\n{}",
        text(&o),
        m.diagnostics("mute")
    );
    assert!(t.elapsed() < Duration::from_secs(45), "{:?}", t.elapsed());
    assert_no_vmm_left(&m, "mute");
    ok(m.machine(&["rm", "mute"]));
    m.names.clear();
}

/// `machine init NAME` failed, saying `why`, and left no machine directory.
fn assert_init_rejected(m: &Machines, o: &Output, name: &str, why: &str) {
    assert!(!o.status.success() && text(o).contains(why), "{}", text(o));
    assert!(
        !m.home.path().join(name).exists(),
        "the rejected machine {name} left files"
    );
}

/// Every VMM process the machine's status names has exited.
fn assert_no_vmm_left(m: &Machines, name: &str) {
    let status = m.home.path().join(name).join("status.json");
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(status).expect("status")).expect("json");
    for pid in status["vmm_pids"].as_array().into_iter().flatten() {
        let pid = pid.as_i64().expect("pid");
        let gone = try_wait_until(Duration::from_secs(10), || {
            (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
        });
        assert!(gone.is_some(), "VMM process {pid} of {name} left running");
    }
}

/// A newc initramfs whose /init is busybox's init: the kernel boots, nothing answers vsock.
fn silent_initrd() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static");
    let mut out = Vec::new();
    let mut entry = |name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        let header = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            0,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    entry("dev", 0o040_755, (0, 0), &[]);
    entry("dev/console", 0o020_600, (5, 1), &[]);
    entry("init", 0o100_755, (0, 0), &busybox);
    entry("TRAILER!!!", 0, (0, 0), &[]);
    out
}

/// The arm64 guest (what Apple silicon Macs run), emulated: the image is built from Debian's
/// arm64 packages and the agent cross-built for aarch64, and the embedded image's program
/// runs in it through the same host endpoint.
#[test]
fn arm64_guest_runs_containers() {
    if !berth_tests::is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    for tool in ["qemu-system-aarch64", "vhost-device-vsock"] {
        if find_in_path(tool).is_none() {
            eprintln!("skipping: {tool} is not installed (see .ci/run)");
            return;
        }
    }
    let mut m = Machines::new("barm");
    let agent = static_agent_for("aarch64-unknown-linux-gnu");
    let cid = (100_003 + std::process::id() % 100_000).to_string();

    let o = m.machine(&["init", "bad", "--arch", "sparc64"]);
    assert_init_rejected(&m, &o, "bad", "unknown architecture \"sparc64\"");

    // The image is built once (as for a release) and exported; the machine then boots the
    // exported copy with apt unusable, as on a Mac.
    let exported = m.home.path().join("image-arm64");
    let o = m
        .cmd(&["machine", "image", "--arch", "arm64", "--output"])
        .arg(&exported)
        .env("BERTH_AGENT_ARM64", &agent)
        .output()
        .expect("berth machine image");
    assert!(ok(o).contains("exported"));
    let no_apt = |c: &mut Command| {
        c.env("BERTH_GUEST_IMAGE_DIR", &exported)
            .env("BERTH_DEBIAN_KEYRING", "/nonexistent/keyring.gpg");
    };
    let mut wrong = m.cmd(&["machine", "init", "x86", "--arch", "x86_64", "--cid", &cid]);
    no_apt(&mut wrong);
    let o = wrong.output().expect("berth machine init");
    assert_init_rejected(&m, &o, "x86", "is for arm64, not amd64");

    let share = m.home.path().join("share");
    std::fs::create_dir(&share).expect("share dir");
    std::fs::write(share.join("in.txt"), "from-the-host\n").expect("share file");
    let share_arg = share.to_str().expect("utf-8").to_string();
    // QEMU's user network (with a forward from a free host port) instead of passt: it answers
    // DHCP, as Virtualization.framework's NAT on the Macs this guest stands for does.
    let forward_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let hostfwd = format!("tcp:127.0.0.1:{forward_port}-:80");
    let mut init = m.cmd(&[
        "machine",
        "init",
        "arm",
        "--arch",
        "aarch64",
        "--cpus",
        "1",
        "--memory",
        "1024",
        "--disk",
        "2",
        "--cid",
        &cid,
        "--share",
        &share_arg,
        "--hostfwd",
        &hostfwd,
    ]);
    no_apt(&mut init);
    ok(init.output().expect("berth machine init"));
    m.names.push("arm".into());
    let timeout = START_TIMEOUT.as_secs().to_string();
    let mut start = m.cmd(&["machine", "start", "arm", "--timeout", &timeout]);
    no_apt(&mut start);
    let start = start.output().expect("berth machine start");
    assert!(
        start.status.success(),
        "{}\n{}",
        text(&start),
        m.diagnostics("arm")
    );

    let host = format!("unix://{}", m.socket("arm").display());
    let info = ok(m.cmd(&["-H", &host, "info"]).output().expect("berth info"));
    assert!(info.contains("Architecture: aarch64"), "{info}");
    let hello = ok(m
        .cmd(&["-H", &host, "run", "--rm", "hello"])
        .output()
        .expect("berth run"));
    assert!(hello.contains("Hello from Berth"), "{hello}");

    // An arm64 busybox image (Debian's, which the image build fetched): the share is read and
    // written through virtiofs, and eth0 got its address by DHCP.
    let busybox = std::fs::read_dir(berth_platform::cache_dir().join("busybox"))
        .expect("the image build's busybox cache")
        .filter_map(Result::ok)
        .map(|e| e.path().join("busybox"))
        .find(|p| p.to_string_lossy().contains("_arm64/") && p.is_file())
        .expect("Debian's arm64 busybox in the cache");
    let tar = m.home.path().join("busybox-arm64.tar");
    busybox_tar_from(&busybox, &tar);
    let tar_arg = tar.to_str().expect("utf-8");
    ok(m.cmd(&["-H", &host, "import", tar_arg, "bb:arm64"])
        .output()
        .expect("berth import"));
    let volume = format!("{share_arg}:/data");
    let out = ok(m
        .cmd(&[
            "-H", &host, "run", "--rm", "--network", "host", "-v", &volume, "bb:arm64", "sh",
            "-c", "uname -m; cat /data/in.txt; grep ' /data ' /proc/mounts; ip -4 addr show eth0; echo back > /data/out.txt",
        ])
        .output()
        .expect("berth run"));
    assert!(out.contains("aarch64"), "{out}");
    assert!(out.contains("from-the-host"), "{out}");
    assert!(out.contains("virtiofs"), "{out}");
    assert!(out.contains("inet 10.0.2.15/24"), "{out}");
    assert_eq!(
        std::fs::read_to_string(share.join("out.txt")).expect("written through the share"),
        "back\n"
    );
    let console =
        std::fs::read_to_string(m.home.path().join("arm/console.log")).unwrap_or_default();
    // (The restricted user network offers no router or DNS server.)
    assert!(
        console.contains("berth-agent: eth0 10.0.2.15/24 by DHCP"),
        "{console}"
    );

    ok(m.machine(&["stop", "arm"]));
    assert_no_vmm_left(&m, "arm");
}
