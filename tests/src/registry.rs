//! Debian's `docker-registry` on a free port of the host's loopback, for the tests that push
//! and pull: started with its own storage directory, killed and removed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::poll::try_wait_until;

const BINARY: &str = "/usr/bin/docker-registry";

pub struct Registry {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Registry {
    /// A registry with deletes enabled; `None` (said on stderr) when the binary is missing.
    pub fn start() -> Option<Registry> {
        if !Path::new(BINARY).exists() {
            eprintln!("skipping: {BINARY} is not installed (apt-get install docker-registry)");
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
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry");
        let registry = Registry { port, child, dir };
        // Answering /v2/ (not only accepting) is what a client needs.
        let up = try_wait_until(Duration::from_secs(30), || {
            registry.get("/v2/").filter(|r| r.contains(" 200 "))
        });
        assert!(
            up.is_some(),
            "docker-registry did not answer on port {port}"
        );
        Some(registry)
    }

    /// Where the registry keeps its data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The raw HTTP/1.0 response to `GET path`, or `None` when the registry does not answer.
    pub fn get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    /// The tag list of `repo` as the registry reports it (the raw response).
    pub fn tags(&self, repo: &str) -> String {
        self.get(&format!("/v2/{repo}/tags/list"))
            .unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}
