//! Test harness: the API server in-process on its own socket (data root in a
//! temp dir), the `berth` binary for daemon tests, the real `docker` CLI, a
//! Debian `docker-registry` on a free loopback port, and a raw HTTP client.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::{ApiState, DaemonInfo};
use berth_engine::ImageService;

/// The API server running in a runtime of its own; stopped on drop.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    /// A root filesystem under the test's directory: the host's static
    /// busybox with `applets` linked in `/bin`. Add files, then
    /// [`Self::import_rootfs`] it.
    pub fn busybox_rootfs(&self, applets: &[&str]) -> PathBuf {
        let root = self.dir.path().join("bbroot");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static installed");
        for applet in applets {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        root
    }

    /// `docker import` of `root` as `busybox:latest`.
    pub fn import_rootfs(&self, root: &Path) {
        let tar = self.dir.path().join("bb.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        self.docker_ok(&["import", tar.to_str().unwrap(), "busybox:latest"]);
    }

    pub fn start() -> Server {
        let dir = tempfile::Builder::new()
            .prefix("berth-api-test")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("berth.sock");
        let data_root = dir.path().join("data");
        let docker_config = dir.path().join("docker-config");
        std::fs::create_dir_all(&docker_config).expect("docker config dir");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let socket_for_server = socket.clone();
        runtime.block_on(async {
            let registry = berth_registry::ClientConfig {
                docker_config: Some(docker_config.join("config.json")),
                ..berth_registry::ClientConfig::default()
            };
            let images = ImageService::open(&data_root, registry).expect("image store");
            images
                .ensure_embedded_hello()
                .await
                .expect("embedded hello");
            let info = DaemonInfo {
                id: berth_api::system::engine_id(&data_root).expect("engine id"),
                data_root: data_root.clone(),
                runtime_path: "berth-runc".into(),
                ..DaemonInfo::default()
            };
            let state = Arc::new(ApiState::new(images, info).expect("container service"));
            let listener = tokio::net::UnixListener::bind(&socket_for_server).expect("bind");
            let mut stop_rx = stop_rx;
            tokio::spawn(berth_api::serve_unix_until(listener, state, async move {
                let _ = stop_rx.wait_for(|s| *s).await.is_ok();
            }));
        });
        Server {
            dir,
            socket,
            stop,
            runtime: Some(runtime),
        }
    }

    /// The real `docker` CLI pointed at this server.
    pub fn docker(&self, args: &[&str]) -> Output {
        docker_at(&self.socket, &self.dir.path().join("docker-config"), args)
    }

    /// `docker …`, asserting success; returns stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn http(&self, method: &str, path: &str) -> HttpResponse {
        http(&self.socket, method, path, &[])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

pub fn docker_at(socket: &Path, config: &Path, args: &[&str]) -> Output {
    docker_command(socket, config, args)
        .stdin(Stdio::null())
        .output()
        .expect("running docker (is the docker CLI installed?)")
}

/// The `docker` CLI pointed at `socket`, with its own config directory.
pub fn docker_command(socket: &Path, config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("docker");
    cmd.args(args)
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env("DOCKER_CONFIG", config)
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_API_VERSION");
    cmd
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// One HTTP/1.1 request over the Unix socket (`Connection: close`).
pub fn http(socket: &Path, method: &str, path: &str, body: &[u8]) -> HttpResponse {
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(body).expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("response head");
    let mut lines = head.lines();
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A streaming GET (`/events`, `/containers/{id}/stats`): the JSON objects
/// of the response, one at a time, as the server sends them.
pub struct JsonStream {
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
    pending: Vec<u8>,
    chunked: bool,
    ended: bool,
    pub status: u16,
}

impl JsonStream {
    pub fn open(socket: &Path, path: &str) -> JsonStream {
        use std::io::BufRead;
        let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let head = format!("GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n");
        s.write_all(head.as_bytes()).expect("write");
        let mut reader = std::io::BufReader::new(s);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).expect("status line");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let mut chunked = false;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header");
            if line.trim().is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
        }
        JsonStream {
            reader,
            pending: Vec::new(),
            chunked,
            ended: false,
            status,
        }
    }

    /// The next object; `None` once the server ended the response.
    pub fn next(&mut self) -> Option<serde_json::Value> {
        use std::io::BufRead;
        loop {
            if let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line);
                if text.trim().is_empty() {
                    continue;
                }
                return Some(
                    serde_json::from_str(text.trim())
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}")),
                );
            }
            if self.ended {
                return None;
            }
            if self.chunked {
                let mut size = String::new();
                if self.reader.read_line(&mut size).unwrap_or(0) == 0 {
                    self.ended = true;
                    continue;
                }
                let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
                if n == 0 {
                    self.ended = true;
                    continue;
                }
                let mut chunk = vec![0u8; n + 2];
                self.reader.read_exact(&mut chunk).expect("chunk");
                self.pending.extend_from_slice(&chunk[..n]);
            } else {
                let mut buf = [0u8; 8192];
                match self.reader.read(&mut buf) {
                    Ok(0) | Err(_) => self.ended = true,
                    Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                }
            }
        }
    }
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[allow(unused_imports)]
pub use berth_tests::registry::Registry;

/// `target/<profile>/berth`, next to this test's `deps/` directory.
pub fn berth_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile> directory");
    let binary = profile_dir.join("berth");
    assert!(
        binary.exists(),
        "{} is missing: build it first with `cargo build -p berth` (same profile as the tests)",
        binary.display()
    );
    binary
}

/// Waits until `path` accepts connections.
pub fn wait_for_socket(path: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("berth daemon exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "berth daemon did not listen in time"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A program on a pseudo-terminal the test holds: it reads what the program writes, types
/// into it, and knows when the program has read what was typed (the slave's input queue is
/// empty), so keys can be typed one read at a time as a person types them.
pub struct Terminal {
    master: std::fs::File,
    slave: Option<std::os::fd::OwnedFd>,
    child: Child,
    output: std::sync::mpsc::Receiver<Vec<u8>>,
    seen: String,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Terminal {
    /// `docker args…` against the server, on a new terminal.
    pub fn docker(server: &Server, args: &[&str]) -> Terminal {
        Terminal::spawn(docker_command(
            &server.socket,
            &server.dir.path().join("docker-config"),
            args,
        ))
    }

    /// `cmd` on a new 30×100 terminal that is its controlling terminal (its stdin, stdout
    /// and stderr).
    pub fn spawn(mut cmd: Command) -> Terminal {
        use std::os::unix::process::CommandExt;
        let size = nix::pty::Winsize {
            ws_row: 30,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        // Close-on-exec, so that no other child of this process (the engine's monitors run
        // in it) keeps the terminal open.
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .expect("FD_CLOEXEC");
        }
        let stdio = || Stdio::from(pty.slave.try_clone().expect("dup"));
        cmd.stdin(stdio()).stdout(stdio()).stderr(stdio());
        // SAFETY: setsid and ioctl are async-signal-safe; nothing else runs in the child.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()?;
                if nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawning on a terminal");
        let master = std::fs::File::from(pty.master);
        let mut reading = master.try_clone().expect("dup");
        let (tx, output) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            // Ends with EIO once every slave descriptor is closed.
            while let Ok(n) = reading.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Terminal {
            master,
            slave: Some(pty.slave),
            child,
            output,
            seen: String::new(),
            reader: Some(reader),
        }
    }

    /// Waits until the program has written `text` (since the start).
    pub fn wait_for(&mut self, text: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !self.seen.contains(text) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!("{text:?} never appeared; output: {:?}", self.seen),
            }
        }
    }

    /// Types `keys` and waits until the program has read them.
    pub fn type_keys(&mut self, keys: &[u8]) {
        use std::os::fd::AsRawFd;
        self.master.write_all(keys).expect("typing");
        let slave = self.slave.as_ref().expect("terminal open").as_raw_fd();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let mut queued: nix::libc::c_int = 0;
            // SAFETY: FIONREAD writes an int into the live local.
            let rc = unsafe { nix::libc::ioctl(slave, nix::libc::FIONREAD, &mut queued) };
            assert!(rc == 0, "FIONREAD: {}", std::io::Error::last_os_error());
            if queued == 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the program never read {keys:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Waits for the program to exit (killing it after 30 s); its exit code and output.
    pub fn finish(mut self) -> (Option<i32>, String) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("still running after 30 s; output: {:?}", self.seen);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        drop(self.slave.take());
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        while let Ok(chunk) = self.output.try_recv() {
            self.seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        (status.code(), self.seen)
    }
}

fn daemon_has_bridge_flag() -> bool {
    Command::new(berth_binary())
        .args(["daemon", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--bridge"))
}

/// A `berth daemon` process of the test's own (data root and socket in a
/// temp dir, networking off so parallel tests share nothing); it can be
/// killed with SIGKILL and started again on the same data root.
pub struct DaemonProcess {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl DaemonProcess {
    /// Not started yet: call [`Self::start`].
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("docker-config")).expect("docker config dir");
        Self { dir, child: None }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("berth.sock")
    }

    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Starts the daemon through `prefix` (e.g. `nsenter -t PID -m`, into
    /// a mount namespace with cgroup2 alone).
    pub fn start_with(&mut self, prefix: &[std::ffi::OsString]) {
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(berth_binary());
                c
            }
            None => Command::new(berth_binary()),
        };
        command.arg("daemon");
        if daemon_has_bridge_flag() {
            // Loopback only: parallel tests must not share a bridge.
            command.args(["--bridge", "none"]);
        }
        let mut child = command
            .arg("--host")
            .arg(format!("unix://{}", self.socket().display()))
            .arg("--data-root")
            .arg(self.dir.path().join("data"))
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting berth daemon");
        wait_for_socket(&self.socket(), &mut child);
        self.child = Some(child);
    }

    /// SIGKILL: the daemon's containers keep running, as after a crash.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        docker_at(&self.socket(), &self.dir.path().join("docker-config"), args)
    }

    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `docker import` of the host's static busybox with `applets`, as
    /// `busybox:latest`.
    pub fn import_busybox(&self, applets: &[&str]) {
        let root = self.dir.path().join("bbroot");
        std::fs::create_dir_all(root.join("bin")).expect("rootfs");
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static installed");
        for applet in applets {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("applet");
        }
        let tar = self.dir.path().join("bb.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("tar");
        assert!(status.success());
        self.docker_ok(&[
            "import",
            tar.to_str().expect("utf-8 path"),
            "busybox:latest",
        ]);
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        // Containers outlive a killed daemon by design: bring one up to
        // remove them, then stop it.
        if self.child.is_none() && self.socket().parent().is_some_and(Path::exists) {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.start()));
        }
        let out = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", "-v", id]);
        }
        self.kill_9();
    }
}

/// Polls `ok` until it holds (30 s at most, then the test fails).
pub fn poll_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
