//! The attach protocol of a monitor's `attach.sock`.
//!
//! Every message is a frame: an 8-byte header `[kind, 0, 0, 0, len (u32,
//! big endian)]` then `len` bytes — the same header as Docker's multiplexed
//! attach stream, so the API server can pass stdout/stderr frames through.
//!
//! - client → monitor: [`STDIN`] data; an empty [`STDIN`] frame closes the
//!   container's stdin; [`RESIZE`] with `rows, cols` as two u16 (big endian).
//! - monitor → client: [`STDOUT`] and [`STDERR`] data (a TTY container's
//!   output is all [`STDOUT`]); when the container exits, [`EXIT`] with the
//!   exit code as an i32 (big endian), then the monitor closes the socket.

use std::io::{self, Read, Write};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const RESIZE: u8 = 3;
pub const EXIT: u8 = 4;

/// Largest payload accepted from a peer.
pub const MAX_FRAME: usize = 1 << 20;

pub fn header(kind: u8, len: usize) -> [u8; 8] {
    let l = (len as u32).to_be_bytes();
    [kind, 0, 0, 0, l[0], l[1], l[2], l[3]]
}

pub fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(8 + payload.len());
    buf.extend_from_slice(&header(kind, payload.len()));
    buf.extend_from_slice(payload);
    w.write_all(&buf)
}

/// Reads one frame; `None` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut h = [0u8; 8];
    match r.read_exact(&mut h) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "attach frame too large",
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((h[0], payload)))
}

/// Splits complete frames off the front of `buf`.
pub fn take_frames(buf: &mut Vec<u8>) -> Result<Vec<(u8, Vec<u8>)>, io::Error> {
    let mut out = Vec::new();
    let mut start = 0;
    while buf.len() - start >= 8 {
        let h = &buf[start..start + 8];
        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "attach frame too large",
            ));
        }
        if buf.len() - start < 8 + len {
            break;
        }
        out.push((buf[start], buf[start + 8..start + 8 + len].to_vec()));
        start += 8 + len;
    }
    buf.drain(..start);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, STDOUT, b"hi").expect("write");
        write_frame(&mut buf, EXIT, &7i32.to_be_bytes()).expect("write");
        let mut partial = buf[..5].to_vec();
        assert!(take_frames(&mut partial).expect("frames").is_empty());
        let frames = take_frames(&mut buf).expect("frames");
        assert_eq!(
            frames,
            vec![
                (STDOUT, b"hi".to_vec()),
                (EXIT, 7i32.to_be_bytes().to_vec())
            ]
        );
        assert!(buf.is_empty());
        let mut r: &[u8] = &[];
        assert!(read_frame(&mut r).expect("eof").is_none());
    }
}
