//! Test helpers: a real `docker-registry` on a free loopback port, test images
//! built from busybox-static, an OCI layout for skopeo, a counting TCP proxy.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_image::{ContentStore, Digest};
use tempfile::TempDir;

/// A running `docker-registry`, killed and its directory removed on drop.
pub struct Registry {
    child: Child,
    pub dir: TempDir,
    pub port: u16,
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Registry {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// With `auth.htpasswd` and one bcrypt user.
    pub fn start_htpasswd(user: &str, pass: &str) -> Self {
        let hash = bcrypt::hash(pass, 5).expect("bcrypt");
        let dir = TempDir::new().expect("tempdir");
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("htpasswd");
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
            htpasswd.display()
        );
        Self::start_in(dir, &auth)
    }

    pub fn start_with(auth: &str) -> Self {
        Self::start_in(TempDir::new().expect("tempdir"), auth)
    }

    pub fn start_in(dir: TempDir, auth: &str) -> Self {
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: berth-test-secret\n{auth}",
                dir.path().join("data").display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = Registry { child, dir, port };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: x\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not come up: {}", self.log());
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic pseudo-random bytes (xorshift).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A tar of a rootfs with bin/busybox (from busybox-static).
pub fn busybox_layer() -> Vec<u8> {
    let dir = TempDir::new().expect("tempdir");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox");
    std::os::unix::fs::symlink("busybox", bin.join("sh")).expect("symlink");
    let out = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(dir.path())
        .args(["-cf", "-", "."])
        .output()
        .expect("tar");
    assert!(out.status.success(), "tar failed");
    out.stdout
}

pub struct TestImage {
    pub manifest: Digest,
    pub manifest_bytes: Vec<u8>,
    pub config: Digest,
    pub layers: Vec<(Digest, u64)>,
}

/// Builds an OCI image (config with diff_ids, manifest) from uncompressed
/// layers and writes every blob into `store`.
pub fn build_image(store: &ContentStore, layers: &[Vec<u8>], arch: &str) -> TestImage {
    let blobs = build_blobs(layers, arch);
    for (bytes, _) in &blobs.all {
        store.write_all(bytes, None).expect("write blob");
    }
    blobs.image
}

pub struct Blobs {
    pub image: TestImage,
    /// (bytes, digest) of config, layers and manifest.
    pub all: Vec<(Vec<u8>, Digest)>,
}

pub fn build_blobs(layers: &[Vec<u8>], arch: &str) -> Blobs {
    let mut all = Vec::new();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layer_info = Vec::new();
    for l in layers {
        let d = Digest::sha256_of(l);
        diff_ids.push(d.to_string());
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d.to_string(),
            "size": l.len(),
        }));
        layer_info.push((d.clone(), l.len() as u64));
        all.push((l.clone(), d));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("config json");
    let config_digest = Digest::sha256_of(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": descs,
    }))
    .expect("manifest json");
    let manifest_digest = Digest::sha256_of(&manifest);
    all.push((config, config_digest.clone()));
    all.push((manifest.clone(), manifest_digest.clone()));
    Blobs {
        image: TestImage {
            manifest: manifest_digest,
            manifest_bytes: manifest,
            config: config_digest,
            layers: layer_info,
        },
        all,
    }
}

/// An OCI layout with an index of one manifest per (arch, variant), tagged
/// `latest`; returns the layout dir and the manifest digests.
pub fn multi_arch_layout(platforms: &[(&str, Option<&str>)]) -> (TempDir, Vec<Digest>) {
    let dir = TempDir::new().expect("tempdir");
    let blobs_dir = dir.path().join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs_dir).expect("mkdir");
    let put = |bytes: &[u8]| {
        let d = Digest::sha256_of(bytes);
        std::fs::write(blobs_dir.join(d.hex()), bytes).expect("write blob");
        d
    };
    let mut entries = Vec::new();
    let mut digests = Vec::new();
    for (i, (arch, variant)) in platforms.iter().enumerate() {
        let layer = random_bytes(4096 + i * 100, 7 + i as u64);
        let blobs = build_blobs(&[layer], arch);
        for (b, _) in &blobs.all {
            put(b);
        }
        let mut platform = serde_json::json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = serde_json::json!(v);
        }
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": blobs.image.manifest.to_string(),
            "size": blobs.image.manifest_bytes.len(),
            "platform": platform,
        }));
        digests.push(blobs.image.manifest);
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .expect("index");
    let index_digest = put(&index);
    std::fs::write(
        dir.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("layout");
    std::fs::write(
        dir.path().join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": index_digest.to_string(),
                "size": index.len(),
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }],
        }))
        .expect("json"),
    )
    .expect("index.json");
    (dir, digests)
}

pub fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A TCP proxy on a free loopback port to `target`, counting the bytes the
/// target sends back and recording the head of every request (request line
/// and headers). Optionally gated: it forwards at most [`CountingProxy::limit`]
/// response bytes in all, then holds the connections open without sending
/// more. Runs on the current tokio runtime.
pub struct CountingProxy {
    pub port: u16,
    pub from_server: Arc<AtomicU64>,
    gate: Arc<Gate>,
    requests: Arc<Mutex<Vec<String>>>,
}

struct Gate {
    limit: AtomicU64,
    raised: tokio::sync::Notify,
}

/// Splits complete request heads off a client→server byte stream. Request
/// bodies (with Content-Length) are skipped; a chunked body ends the parsing
/// of that connection (no test sends one through a recording proxy).
#[derive(Default)]
struct HeadParser {
    buf: Vec<u8>,
    skip_body: u64,
    gave_up: bool,
}

impl HeadParser {
    fn feed(&mut self, mut data: &[u8], out: &Mutex<Vec<String>>) {
        if self.gave_up {
            return;
        }
        let skip = usize::try_from(self.skip_body)
            .unwrap_or(usize::MAX)
            .min(data.len());
        data = &data[skip..];
        self.skip_body -= skip as u64;
        self.buf.extend_from_slice(data);
        while let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
            self.buf.drain(..end + 4);
            let lower = head.to_ascii_lowercase();
            if lower.contains("transfer-encoding: chunked") {
                self.gave_up = true;
            }
            let body = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            if let Ok(mut v) = out.lock() {
                v.push(head);
            }
            if self.gave_up {
                return;
            }
            let now = usize::try_from(body)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            self.buf.drain(..now);
            self.skip_body = body - now as u64;
        }
    }
}

impl CountingProxy {
    pub async fn start(target: u16) -> Self {
        Self::start_gated(target, u64::MAX).await
    }

    /// Forwards at most `limit` bytes from the server (in all connections).
    pub async fn start_gated(target: u16, limit: u64) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let from_server = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(Gate {
            limit: AtomicU64::new(limit),
            raised: tokio::sync::Notify::new(),
        });
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (counter, gate2, log) = (from_server.clone(), gate.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (counter, gate, log) = (counter.clone(), gate2.clone(), log.clone());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move {
                        let mut parser = HeadParser::default();
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    parser.feed(&buf[..n], &log);
                                    if sw.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    'conn: loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let mut sent = 0;
                        while sent < n {
                            let raised = gate.raised.notified();
                            let allowed = gate
                                .limit
                                .load(Ordering::SeqCst)
                                .saturating_sub(counter.load(Ordering::SeqCst));
                            if allowed == 0 {
                                raised.await;
                                continue;
                            }
                            let take = (n - sent).min(usize::try_from(allowed).unwrap_or(n));
                            if cw.write_all(&buf[sent..sent + take]).await.is_err() {
                                break 'conn;
                            }
                            counter.fetch_add(take as u64, Ordering::SeqCst);
                            sent += take;
                        }
                    }
                    up.abort();
                });
            }
        });
        CountingProxy {
            port,
            from_server,
            gate,
            requests,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.from_server.load(Ordering::SeqCst)
    }

    /// Lets more bytes through (`u64::MAX`: no limit any more).
    pub fn set_limit(&self, limit: u64) {
        self.gate.limit.store(limit, Ordering::SeqCst);
        self.gate.raised.notify_waiters();
    }

    /// Heads of the requests seen so far (request line and headers).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

pub fn store_in(dir: &Path) -> ContentStore {
    ContentStore::open(dir).expect("open store")
}

pub fn path_of(dir: &TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}
