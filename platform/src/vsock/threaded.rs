//! A blocking socket as an async [`VsockStream`]: two threads copy between
//! the socket and one end of an in-memory duplex pipe, whose other end is
//! the stream. Used for Hyper-V sockets, which tokio cannot poll; tested on
//! Linux with a Unix socket.

use std::io::{Read, Write};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Handle;

use super::VsockStream;

/// Buffered bytes per direction between a socket thread and its user.
const PIPE_BYTES: usize = 64 * 1024;

/// A connected blocking stream socket.
pub trait BlockingSocket: Read + Write + Send + 'static {
    /// A second handle to the same socket (one per copying thread).
    fn try_clone_socket(&self) -> std::io::Result<Self>
    where
        Self: Sized;
    /// Ends our sending direction; the peer reads end-of-file.
    fn shutdown_write(&self) -> std::io::Result<()>;
    /// Ends both directions (wakes a thread blocked in `read`).
    fn shutdown_both(&self) -> std::io::Result<()>;
}

/// Wraps `socket`; must be called inside a tokio runtime. Closing or
/// dropping the returned stream ends the socket's sending side; the socket
/// is closed once both directions have ended.
pub fn into_stream<S: BlockingSocket>(socket: S) -> std::io::Result<VsockStream> {
    let handle = Handle::current();
    let reader = socket.try_clone_socket()?;
    let writer = socket;
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    let (mut ours_r, mut ours_w) = tokio::io::split(ours);

    // Socket to user.
    let h = handle.clone();
    std::thread::Builder::new()
        .name("vsock-read".into())
        .spawn(move || {
            let mut reader = reader;
            let mut buf = vec![0u8; PIPE_BYTES];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = h.block_on(ours_w.shutdown());
                        return;
                    }
                    Ok(n) => {
                        if h.block_on(ours_w.write_all(&buf[..n])).is_err() {
                            // The user dropped the stream: stop both ways.
                            let _ = reader.shutdown_both();
                            return;
                        }
                    }
                }
            }
        })?;

    // User to socket.
    std::thread::Builder::new()
        .name("vsock-write".into())
        .spawn(move || {
            let mut writer = writer;
            let mut buf = vec![0u8; PIPE_BYTES];
            loop {
                match handle.block_on(ours_r.read(&mut buf)) {
                    Ok(0) | Err(_) => {
                        let _ = writer.flush();
                        let _ = writer.shutdown_write();
                        return;
                    }
                    Ok(n) => {
                        if writer.write_all(&buf[..n]).is_err() {
                            let _ = writer.shutdown_both();
                            return;
                        }
                    }
                }
            }
        })?;
    Ok(Box::pin(theirs))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    impl BlockingSocket for UnixStream {
        fn try_clone_socket(&self) -> std::io::Result<Self> {
            self.try_clone()
        }
        fn shutdown_write(&self) -> std::io::Result<()> {
            self.shutdown(std::net::Shutdown::Write)
        }
        fn shutdown_both(&self) -> std::io::Result<()> {
            self.shutdown(std::net::Shutdown::Both)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_and_half_close_both_ways() {
        let (ours, mut peer) = UnixStream::pair().expect("pair");
        let mut stream = into_stream(ours).expect("stream");
        // A large write, to go through the pipe in several pieces.
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let expect = payload.clone();
        let peer_task = std::thread::spawn(move || {
            let mut got = Vec::new();
            peer.read_to_end(&mut got)
                .expect("peer reads to our half-close");
            assert_eq!(got, expect);
            peer.write_all(b"bye").expect("peer still writes");
            peer.shutdown(std::net::Shutdown::Write)
                .expect("peer closes");
        });
        stream.write_all(&payload).await.expect("write");
        stream.shutdown().await.expect("half-close");
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut back))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(back, b"bye");
        peer_task.join().expect("peer");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_stream_closes_the_socket() {
        let (ours, mut peer) = UnixStream::pair().expect("pair");
        let stream = into_stream(ours).expect("stream");
        drop(stream);
        let got = tokio::task::spawn_blocking(move || {
            peer.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut buf = Vec::new();
            peer.read_to_end(&mut buf).map(|_| buf)
        })
        .await
        .expect("join")
        .expect("peer sees end-of-file");
        assert!(got.is_empty());
    }
}
