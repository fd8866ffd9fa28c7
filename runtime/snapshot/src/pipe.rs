//! An in-process, bounded byte pipe made of `Vec<u8>` chunks over a channel: a producer thread
//! writes (decompressed data, an exported tar), a consumer reads. Buffers are recycled.

use std::io::{self, Read, Write};
use std::sync::mpsc;

/// The reading end.
pub struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    recycle: mpsc::SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    off: usize,
}

/// The sending side: hands whole chunks (or an error) to the reader.
pub struct ChunkSender {
    tx: mpsc::SyncSender<io::Result<Vec<u8>>>,
    recycled: mpsc::Receiver<Vec<u8>>,
}

/// A `Write` adapter over a [`ChunkSender`] that batches writes into `chunk` sized buffers.
pub struct ChunkWriter {
    sender: ChunkSender,
    buf: Vec<u8>,
    chunk: usize,
}

/// Creates a pipe holding at most `depth` chunks in flight.
pub fn chunk_pipe(depth: usize) -> (ChunkSender, ChunkReader) {
    let (tx, rx) = mpsc::sync_channel(depth);
    let (recycle, recycled) = mpsc::sync_channel(depth + 2);
    (
        ChunkSender { tx, recycled },
        ChunkReader {
            rx,
            recycle,
            cur: Vec::new(),
            off: 0,
        },
    )
}

impl ChunkSender {
    /// A buffer to fill (recycled when available), emptied.
    pub fn buffer(&self) -> Vec<u8> {
        let mut b = self.recycled.try_recv().unwrap_or_default();
        b.clear();
        b
    }

    /// Sends a chunk; false when the reader has gone away.
    pub fn send(&self, chunk: io::Result<Vec<u8>>) -> bool {
        self.tx.send(chunk).is_ok()
    }

    pub fn into_writer(self, chunk: usize) -> ChunkWriter {
        let buf = self.buffer();
        ChunkWriter {
            sender: self,
            buf,
            chunk,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.off == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let old = std::mem::replace(&mut self.cur, chunk);
                    // A full or closed recycle channel only means the buffer is dropped.
                    let _ = self.recycle.try_send(old);
                    self.off = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.off);
        out[..n].copy_from_slice(&self.cur[self.off..self.off + n]);
        self.off += n;
        Ok(n)
    }
}

impl ChunkWriter {
    fn push(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self.sender.buffer();
        let full = std::mem::replace(&mut self.buf, next);
        if self.sender.send(Ok(full)) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "reader went away",
            ))
        }
    }

    /// Sends an error to the reader (it sees it on its next read).
    pub fn fail(self, e: io::Error) {
        let _ = self.sender.send(Err(e));
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.capacity() < self.chunk {
            self.buf.reserve(self.chunk - self.buf.len());
        }
        let room = self.chunk.saturating_sub(self.buf.len()).max(1);
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= self.chunk {
            self.push()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.push()
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        let _ = self.push();
    }
}
