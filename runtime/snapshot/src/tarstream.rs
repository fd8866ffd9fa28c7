//! A streaming tar reader written for the extractor: ustar, GNU (long names/links, base-256
//! numbers) and PAX (local headers; path, linkpath, size, uid, gid, mtime, atime, xattrs).
//!
//! It owns one large buffer, hashes (sha256) and counts every byte of the uncompressed stream as
//! it is read (that hash is the layer's diff_id), enforces a cap on that byte count, and hands
//! file data to the caller as slices of its buffer, so nothing is allocated per entry.
//! Metadata records (PAX headers, GNU long names) are capped at [`MAX_META`] bytes.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use crate::unpack::UnpackError;

const BLOCK: usize = 512;
/// The largest PAX header or GNU long name/link record accepted.
pub const MAX_META: u64 = 1 << 20;

/// What kind of filesystem object a tar entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
    /// A type flag the extractor does not handle (skipped with a warning).
    Other(u8),
}

/// One logical tar entry, with PAX and GNU extensions already applied. Reused between entries.
#[derive(Debug, Default)]
pub struct Entry {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: Option<Kind>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: (i64, u32),
    pub atime: Option<(i64, u32)>,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    pub fn kind(&self) -> Kind {
        self.kind.unwrap_or(Kind::Other(0))
    }
}

/// Overrides collected from a PAX local header for the next entry.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, u32)>,
    atime: Option<(i64, u32)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

pub struct TarReader<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    eof: bool,
    hasher: Sha256,
    total: u64,
    max_bytes: u64,
    /// Data bytes of the current entry not yet consumed, and its padding.
    remaining: u64,
    padding: u64,
    meta: Vec<u8>,
}

fn bad(msg: impl Into<String>) -> UnpackError {
    UnpackError::Malformed(msg.into())
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R, buf_size: usize, max_bytes: u64) -> Self {
        TarReader {
            inner,
            buf: vec![0u8; buf_size.max(64 * 1024)].into_boxed_slice(),
            pos: 0,
            end: 0,
            eof: false,
            hasher: Sha256::new(),
            total: 0,
            max_bytes,
            remaining: 0,
            padding: 0,
            meta: Vec::new(),
        }
    }

    /// Reads more of the stream into the buffer (after `end`), hashing and counting it.
    /// Returns the number of bytes added (0 at end of stream).
    fn fill_more(&mut self) -> Result<usize, UnpackError> {
        if self.eof {
            return Ok(0);
        }
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        let n = loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(UnpackError::Read(e)),
            }
        };
        if n == 0 {
            self.eof = true;
            return Ok(0);
        }
        self.hasher.update(&self.buf[self.end..self.end + n]);
        self.total += n as u64;
        if self.total > self.max_bytes {
            return Err(UnpackError::TooLarge {
                limit: self.max_bytes,
            });
        }
        self.end += n;
        Ok(n)
    }

    /// Makes at least `n` (≤ buffer size) bytes available; false if the stream ends first.
    fn ensure(&mut self, n: usize) -> Result<bool, UnpackError> {
        while self.end - self.pos < n {
            if self.pos > 0 && self.buf.len() - self.pos < n {
                self.buf.copy_within(self.pos..self.end, 0);
                self.end -= self.pos;
                self.pos = 0;
            }
            if self.fill_more()? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Discards `n` bytes of the stream (they are still hashed).
    fn skip(&mut self, mut n: u64) -> Result<(), UnpackError> {
        while n > 0 {
            if self.pos == self.end && self.fill_more()? == 0 {
                return Err(UnpackError::Truncated);
            }
            let k = ((self.end - self.pos) as u64).min(n) as usize;
            self.pos += k;
            n -= k as u64;
        }
        Ok(())
    }

    /// Hands the rest of the current entry's data to `sink` in buffer-sized slices.
    pub fn read_data(
        &mut self,
        mut sink: impl FnMut(&[u8]) -> Result<(), UnpackError>,
    ) -> Result<(), UnpackError> {
        while self.remaining > 0 {
            if self.pos == self.end && self.fill_more()? == 0 {
                return Err(UnpackError::Truncated);
            }
            let k = ((self.end - self.pos) as u64).min(self.remaining) as usize;
            sink(&self.buf[self.pos..self.pos + k])?;
            self.pos += k;
            self.remaining -= k as u64;
        }
        Ok(())
    }

    /// Reads the current entry's data (a metadata record) into `self.meta`, capped.
    fn read_meta(&mut self) -> Result<(), UnpackError> {
        if self.remaining > MAX_META {
            return Err(bad(format!(
                "metadata record of {} bytes exceeds the {} byte limit",
                self.remaining, MAX_META
            )));
        }
        let mut meta = std::mem::take(&mut self.meta);
        meta.clear();
        self.read_data(|chunk| {
            meta.extend_from_slice(chunk);
            Ok(())
        })?;
        self.meta = meta;
        Ok(())
    }

    /// Advances to the next logical entry, filling `e`. Returns false at the end of the archive.
    pub fn next_entry(&mut self, e: &mut Entry) -> Result<bool, UnpackError> {
        let mut pax: Option<Pax> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            // Finish the previous record.
            let rest = self.remaining + self.padding;
            self.remaining = 0;
            self.padding = 0;
            self.skip(rest)?;

            if !self.ensure(BLOCK)? {
                if self.end == self.pos && pax.is_none() && long_name.is_none() {
                    // A stream ending without the zero blocks: accepted, as GNU tar does.
                    return Ok(false);
                }
                return Err(UnpackError::Truncated);
            }
            let mut hdr = [0u8; BLOCK];
            hdr.copy_from_slice(&self.buf[self.pos..self.pos + BLOCK]);
            self.pos += BLOCK;
            if hdr.iter().all(|b| *b == 0) {
                if pax.is_some() || long_name.is_some() || long_link.is_some() {
                    return Err(bad("extension header not followed by an entry"));
                }
                return Ok(false);
            }
            verify_checksum(&hdr)?;

            let flag = hdr[156];
            let mut size = parse_num(&hdr[124..136]).map_err(|m| bad(format!("size: {m}")))?;
            if let (Some(p), false) = (&pax, is_meta(flag)) {
                if let Some(s) = p.size {
                    size = s;
                }
            }
            self.remaining = size;
            self.padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;

            match flag {
                b'x' => {
                    self.read_meta()?;
                    pax = Some(parse_pax(&self.meta)?);
                    continue;
                }
                b'g' => {
                    // Global headers: read (capped) and ignored.
                    self.read_meta()?;
                    continue;
                }
                b'L' => {
                    self.read_meta()?;
                    long_name = Some(trim_nul(&self.meta).to_vec());
                    continue;
                }
                b'K' => {
                    self.read_meta()?;
                    long_link = Some(trim_nul(&self.meta).to_vec());
                    continue;
                }
                b'S' => return Err(UnpackError::Unsupported("GNU sparse file".into())),
                b'M' => return Err(UnpackError::Unsupported("multi-volume archive".into())),
                _ => {}
            }

            // A real entry: fill `e`.
            let is_ustar = &hdr[257..263] == b"ustar\0";
            e.path.clear();
            if let Some(p) = pax.as_mut().and_then(|p| p.path.take()) {
                e.path = p;
            } else if let Some(n) = long_name.take() {
                e.path = n;
            } else {
                let prefix = trim_nul(&hdr[345..500]);
                if is_ustar && !prefix.is_empty() {
                    e.path.extend_from_slice(prefix);
                    e.path.push(b'/');
                }
                e.path.extend_from_slice(trim_nul(&hdr[0..100]));
            }
            e.link.clear();
            if let Some(l) = pax.as_mut().and_then(|p| p.link.take()) {
                e.link = l;
            } else if let Some(l) = long_link.take() {
                e.link = l;
            } else {
                e.link.extend_from_slice(trim_nul(&hdr[157..257]));
            }
            let num = |r: std::ops::Range<usize>, what: &str| {
                parse_num(&hdr[r]).map_err(|m| bad(format!("{what}: {m}")))
            };
            e.mode = (num(100..108, "mode")? & 0o7777) as u32;
            e.uid = num(108..116, "uid")?;
            e.gid = num(116..124, "gid")?;
            let mtime = num(136..148, "mtime")?;
            e.mtime = (i64::try_from(mtime).map_err(|_| bad("mtime overflow"))?, 0);
            e.atime = None;
            e.size = size;
            e.dev_major = u32::try_from(num(329..337, "devmajor")?).map_err(|_| bad("devmajor"))?;
            e.dev_minor = u32::try_from(num(337..345, "devminor")?).map_err(|_| bad("devminor"))?;
            e.xattrs.clear();
            if let Some(p) = pax.take() {
                if let Some(u) = p.uid {
                    e.uid = u;
                }
                if let Some(g) = p.gid {
                    e.gid = g;
                }
                if let Some(m) = p.mtime {
                    e.mtime = m;
                }
                e.atime = p.atime;
                e.xattrs = p.xattrs;
            }
            let kind = match flag {
                b'0' | 0 | b'7' => {
                    if e.path.last() == Some(&b'/') {
                        Kind::Dir
                    } else {
                        Kind::Regular
                    }
                }
                b'1' => Kind::HardLink,
                b'2' => Kind::Symlink,
                b'3' => Kind::Char,
                b'4' => Kind::Block,
                b'5' | b'D' => Kind::Dir,
                b'6' => Kind::Fifo,
                other => Kind::Other(other),
            };
            e.kind = Some(kind);
            return Ok(true);
        }
    }

    /// Drains the rest of the stream (still hashed and capped) and returns the sha256 of the
    /// whole uncompressed stream with its length.
    pub fn finish(mut self) -> Result<([u8; 32], u64), UnpackError> {
        self.pos = self.end;
        while self.fill_more()? > 0 {
            self.pos = self.end;
        }
        Ok((self.hasher.finalize().into(), self.total))
    }
}

fn is_meta(flag: u8) -> bool {
    matches!(flag, b'x' | b'g' | b'L' | b'K')
}

fn trim_nul(b: &[u8]) -> &[u8] {
    match b.iter().position(|c| *c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

fn verify_checksum(hdr: &[u8; BLOCK]) -> Result<(), UnpackError> {
    let stored = parse_num(&hdr[148..156]).map_err(|_| bad("bad header checksum field"))?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, b) in hdr.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || i64::try_from(stored).ok() == Some(signed) {
        Ok(())
    } else {
        Err(bad("header checksum mismatch"))
    }
}

/// Parses a numeric header field: octal (space/NUL padded) or GNU base-256.
fn parse_num(f: &[u8]) -> Result<u64, &'static str> {
    if let Some(&first) = f.first() {
        if first & 0x80 != 0 {
            if first == 0xff {
                return Err("negative number");
            }
            let mut v: u64 = u64::from(first & 0x7f);
            for &b in &f[1..] {
                v = v
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(u64::from(b)))
                    .ok_or("number overflow")?;
            }
            return Ok(v);
        }
    }
    let mut v: u64 = 0;
    let mut seen = false;
    for &b in f {
        match b {
            b'0'..=b'7' => {
                v = v
                    .checked_mul(8)
                    .and_then(|v| v.checked_add(u64::from(b - b'0')))
                    .ok_or("number overflow")?;
                seen = true;
            }
            b' ' | 0 if !seen => continue,
            b' ' | 0 => break,
            _ => return Err("invalid octal digit"),
        }
    }
    Ok(v)
}

fn parse_dec(v: &[u8]) -> Result<u64, UnpackError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| bad("invalid PAX number"))
}

/// Parses a PAX time: `[-]seconds[.fraction]`.
fn parse_time(v: &[u8]) -> Result<(i64, u32), UnpackError> {
    let s = std::str::from_utf8(v).map_err(|_| bad("invalid PAX time"))?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let secs: i64 = secs.parse().map_err(|_| bad("invalid PAX time"))?;
    let mut nanos: u32 = 0;
    for (i, c) in frac.bytes().take(9).enumerate() {
        if !c.is_ascii_digit() {
            return Err(bad("invalid PAX time"));
        }
        nanos += u32::from(c - b'0') * 10u32.pow(8 - i as u32);
    }
    if neg {
        if nanos > 0 {
            Ok((-secs - 1, 1_000_000_000 - nanos))
        } else {
            Ok((-secs, 0))
        }
    } else {
        Ok((secs, nanos))
    }
}

/// Parses PAX records: `"<len> <key>=<value>\n"`, where len counts the whole record.
fn parse_pax(mut data: &[u8]) -> Result<Pax, UnpackError> {
    let mut p = Pax::default();
    while !data.is_empty() {
        if data.iter().all(|b| *b == 0) {
            break;
        }
        let sp = data
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| bad("PAX record without length"))?;
        let len = parse_dec(&data[..sp])? as usize;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad("malformed PAX record"));
        }
        let rec = &data[sp + 1..len - 1];
        data = &data[len..];
        let eq = rec
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| bad("PAX record without '='"))?;
        let (key, value) = (&rec[..eq], &rec[eq + 1..]);
        match key {
            b"path" => p.path = Some(value.to_vec()),
            b"linkpath" => p.link = Some(value.to_vec()),
            b"size" if !value.is_empty() => p.size = Some(parse_dec(value)?),
            b"uid" if !value.is_empty() => p.uid = Some(parse_dec(value)?),
            b"gid" if !value.is_empty() => p.gid = Some(parse_dec(value)?),
            b"mtime" if !value.is_empty() => p.mtime = Some(parse_time(value)?),
            b"atime" if !value.is_empty() => p.atime = Some(parse_time(value)?),
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    p.xattrs.push((name.to_vec(), value.to_vec()));
                } else if key.starts_with(b"GNU.sparse.") {
                    return Err(UnpackError::Unsupported("GNU sparse file (PAX)".into()));
                }
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_num(b"0000644\0"), Ok(0o644));
        assert_eq!(parse_num(b"   755 \0"), Ok(0o755));
        assert_eq!(parse_num(b"\0\0\0\0"), Ok(0));
        assert_eq!(parse_num(&[0x80, 0, 0, 0, 0, 0, 1, 0]), Ok(256));
        assert!(parse_num(b"12a").is_err());
        assert!(parse_num(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn times() {
        assert!(matches!(parse_time(b"12.5"), Ok((12, 500_000_000))));
        assert!(matches!(parse_time(b"-1.25"), Ok((-2, 750_000_000))));
        assert!(matches!(parse_time(b"7"), Ok((7, 0))));
        assert!(parse_time(b"x").is_err());
    }

    #[test]
    fn pax_records() {
        let rec = b"16 path=a/b/c.d\n20 SCHILY.xattr.a=b\n";
        let p = parse_pax(rec).map_err(|e| e.to_string());
        let p = match p {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(p.path.as_deref(), Some(&b"a/b/c.d"[..]));
        assert_eq!(p.xattrs, vec![(b"a".to_vec(), b"b".to_vec())]);
        assert!(parse_pax(b"99 path=x\n").is_err());
    }
}
