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
    Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env("DOCKER_CONFIG", config)
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_API_VERSION")
        .stdin(Stdio::null())
        .output()
        .expect("running docker (is the docker CLI installed?)")
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

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Debian's `docker-registry` on a free loopback port; killed on drop.
pub struct Registry {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// `None` when the registry binary is not installed.
    pub fn start() -> Option<Registry> {
        let binary = Path::new("/usr/bin/docker-registry");
        if !binary.exists() {
            eprintln!("skipping: /usr/bin/docker-registry is not installed (apt-get install docker-registry)");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry");
        let registry = Registry {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(registry)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
