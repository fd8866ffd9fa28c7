//! Hybrid vsock: the VMM exposes the guest's vsock as a Unix socket. To reach
//! guest port P the host connects, writes `CONNECT P\n` and reads one line
//! starting with `OK`; after that the socket carries raw bytes. A guest
//! connecting to CID 2 port P lands on the Unix socket `<path>_<P>`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::VsockError;

#[derive(Debug, Clone)]
pub struct HybridVsock {
    path: PathBuf,
}

impl HybridVsock {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connects to guest `port`; the whole handshake is bounded by `timeout`.
    pub async fn connect(&self, port: u32, timeout: Duration) -> Result<UnixStream, VsockError> {
        match tokio::time::timeout(timeout, self.handshake(port)).await {
            Ok(result) => result,
            Err(_) => Err(VsockError::Timeout { port, timeout }),
        }
    }

    async fn handshake(&self, port: u32) -> Result<UnixStream, VsockError> {
        let mut stream =
            UnixStream::connect(&self.path)
                .await
                .map_err(|source| VsockError::Endpoint {
                    path: self.path.clone(),
                    source,
                })?;
        let io = |source| VsockError::Io { port, source };
        stream
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .await
            .map_err(io)?;
        // Read the reply a byte at a time: anything after the newline already
        // belongs to the guest's stream.
        let mut reply = Vec::with_capacity(16);
        loop {
            let mut byte = [0u8; 1];
            let n = stream.read(&mut byte).await.map_err(io)?;
            if n == 0 || byte[0] == b'\n' || reply.len() > 256 {
                break;
            }
            reply.push(byte[0]);
        }
        let reply = String::from_utf8_lossy(&reply).into_owned();
        if reply.starts_with("OK") {
            Ok(stream)
        } else {
            Err(VsockError::Refused { port, reply })
        }
    }

    /// The Unix socket a guest connection to host `port` arrives on.
    pub fn listen_path(&self, port: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!("_{port}"));
        PathBuf::from(name)
    }

    /// Listens for guest connections to host `port`. A live listener there
    /// is an error; a stale socket file is replaced.
    pub fn listen(&self, port: u32) -> Result<HybridListener, VsockError> {
        let path = self.listen_path(port);
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(VsockError::PortTaken { port, path });
        }
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).map_err(|source| VsockError::Io { port, source })?;
        Ok(HybridListener { listener, path })
    }
}

/// Guest-initiated connections to one host port; removes its socket on drop.
pub struct HybridListener {
    listener: UnixListener,
    path: PathBuf,
}

impl HybridListener {
    pub async fn accept(&self) -> std::io::Result<UnixStream> {
        self.listener.accept().await.map(|(s, _)| s)
    }
}

impl Drop for HybridListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake VMM endpoint that answers the handshake and echoes.
    async fn fake_vmm(listener: UnixListener, accept_port: u32) {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).await.is_ok() && b[0] != b'\n' {
                    line.push(b[0]);
                }
                let line = String::from_utf8_lossy(&line).into_owned();
                if line == format!("CONNECT {accept_port}") {
                    let _ = s.write_all(b"OK 1073741824\nhello").await;
                    let mut buf = [0u8; 4];
                    if s.read_exact(&mut buf).await.is_ok() {
                        let _ = s.write_all(&buf).await;
                    }
                }
                // Anything else: close without OK, as vhost-device-vsock does.
            });
        }
    }

    #[tokio::test]
    async fn handshake_then_raw_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        tokio::spawn(fake_vmm(listener, 2375));
        let vsock = HybridVsock::new(&path);
        let mut s = vsock
            .connect(2375, Duration::from_secs(5))
            .await
            .expect("connect");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"hello");
        s.write_all(b"ping").await.expect("write");
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.expect("echo");
        assert_eq!(&back, b"ping");

        let err = vsock
            .connect(9, Duration::from_secs(5))
            .await
            .expect_err("refused");
        assert!(matches!(err, VsockError::Refused { port: 9, .. }), "{err}");
    }

    #[tokio::test]
    async fn missing_endpoint_and_taken_port() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vsock = HybridVsock::new(dir.path().join("absent.sock"));
        let err = vsock
            .connect(1, Duration::from_secs(5))
            .await
            .expect_err("no endpoint");
        assert!(matches!(err, VsockError::Endpoint { .. }), "{err}");

        let first = vsock.listen(1024).expect("listen");
        let err = vsock.listen(1024).err().expect("taken");
        assert!(
            matches!(err, VsockError::PortTaken { port: 1024, .. }),
            "{err}"
        );
        drop(first);
        assert!(!vsock.listen_path(1024).exists());
        vsock.listen(1024).expect("free again");
    }
}
