//! The json-file log driver: one JSON object per line,
//! `{"log":"…\n","stream":"stdout","time":"RFC3339Nano"}`, rotated at a size
//! cap (`<id>-json.log`, `.1`, `.2`, …; `.1` is the newest rotated file).

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::store;
use super::types::{LogEntry, LogOptions, Stream};

pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
pub const DEFAULT_MAX_FILES: u32 = 3;
/// Docker splits lines longer than this into several entries.
const MAX_LINE: usize = 16 * 1024;

#[derive(Serialize, Deserialize)]
struct JsonLine<'a> {
    #[serde(borrow)]
    log: std::borrow::Cow<'a, str>,
    stream: Stream,
    time: std::borrow::Cow<'a, str>,
}

/// Appends entries to the log, rotating at `max_size`.
pub struct LogWriter {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_size: u64,
    max_files: u32,
    /// Partial lines per stream (stdout, stderr).
    partial: [Vec<u8>; 2],
}

impl LogWriter {
    pub fn open(path: PathBuf, max_size: u64, max_files: u32) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            file: Some(file),
            size,
            max_size: max_size.max(4096),
            max_files: max_files.max(1),
            partial: [Vec::new(), Vec::new()],
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        if self.max_files <= 1 {
            // No history kept: start over.
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)?;
            self.file = Some(file);
            self.size = 0;
            return Ok(());
        }
        let last = self.max_files - 1;
        let _ = fs::remove_file(self.rotated(last));
        for n in (1..last).rev() {
            let _ = fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        fs::rename(&self.path, self.rotated(1))?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.file = Some(file);
        self.size = 0;
        Ok(())
    }

    fn write_entry(&mut self, stream: Stream, line: &[u8]) -> std::io::Result<()> {
        let time = store::now_rfc3339();
        let entry = JsonLine {
            log: String::from_utf8_lossy(line),
            stream,
            time: time.into(),
        };
        let mut data = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        data.push(b'\n');
        if self.size > 0 && self.size + data.len() as u64 > self.max_size {
            self.rotate()?;
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(&data)?;
        }
        self.size += data.len() as u64;
        Ok(())
    }

    /// Logs `data` read from `stream`; complete lines are written at once,
    /// a trailing partial line waits for more (or for [`Self::flush`]).
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
        let idx = usize::from(stream == Stream::Stderr);
        let mut buf = std::mem::take(&mut self.partial[idx]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos + 1;
            for chunk in buf[start..end].chunks(MAX_LINE) {
                self.write_entry(stream, chunk)?;
            }
            start = end;
        }
        let mut rest = buf.split_off(start);
        while rest.len() >= MAX_LINE {
            let tail = rest.split_off(MAX_LINE);
            self.write_entry(stream, &rest)?;
            rest = tail;
        }
        self.partial[idx] = rest;
        Ok(())
    }

    /// Writes pending partial lines (at exit).
    pub fn flush(&mut self) -> std::io::Result<()> {
        for (idx, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            let rest = std::mem::take(&mut self.partial[idx]);
            if !rest.is_empty() {
                self.write_entry(stream, &rest)?;
            }
        }
        Ok(())
    }
}

fn parse_line(line: &str) -> Option<LogEntry> {
    let j: JsonLine = serde_json::from_str(line).ok()?;
    Some(LogEntry {
        stream: j.stream,
        time_nanos: store::parse_time(&j.time).unwrap_or(0),
        time: j.time.into_owned(),
        line: j.log.into_owned().into_bytes(),
    })
}

fn wanted(e: &LogEntry, opts: &LogOptions) -> bool {
    let stream_ok = match e.stream {
        Stream::Stdout => opts.stdout,
        Stream::Stderr => opts.stderr,
        Stream::Stdin => false,
    };
    stream_ok
        && opts.since.is_none_or(|s| e.time_nanos >= s)
        && opts.until.is_none_or(|u| e.time_nanos < u)
}

/// The log files oldest first.
fn files(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for n in (1..64).rev() {
        let mut p = path.to_path_buf().into_os_string();
        p.push(format!(".{n}"));
        let p = PathBuf::from(p);
        if p.exists() {
            out.push(p);
        }
    }
    out.push(path.to_path_buf());
    out
}

/// Reads what is in the log now (`tail`, `since`, `until` and streams
/// applied). Returns the entries and the position reached in the current
/// file, for following.
pub fn read_existing(path: &Path, opts: &LogOptions) -> (Vec<LogEntry>, u64) {
    let mut entries = Vec::new();
    let mut pos = 0;
    for f in files(path) {
        let Ok(file) = File::open(&f) else { continue };
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        let mut read = 0u64;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !line.ends_with('\n') {
                        // A line being written: leave it to the follower.
                        break;
                    }
                    read += n as u64;
                    if let Some(e) = parse_line(line.trim_end_matches('\n')) {
                        if wanted(&e, opts) {
                            entries.push(e);
                        }
                    }
                }
            }
        }
        if f == path {
            pos = read;
        }
    }
    if let Some(n) = opts.tail {
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
    (entries, pos)
}

/// Follows the current log file from `pos`, calling `emit` for each new
/// entry, until `done()` says the writer is gone and the file has no more
/// data, or `emit` returns false (the reader went away).
///
/// The file stays open between rounds: a container that prints and exits is
/// often removed (`docker run --rm`, docker-py's `run`) before the next round,
/// and its output must still be read from the file it was written to.
pub fn follow(
    path: &Path,
    mut pos: u64,
    opts: &LogOptions,
    mut emit: impl FnMut(LogEntry) -> bool,
    mut done: impl FnMut() -> bool,
) {
    use std::os::unix::fs::MetadataExt;
    let inode_of = |file: &File| file.metadata().map(|m| m.ino()).unwrap_or(0);
    let mut current = File::open(path).ok();
    let mut pending = String::new();
    loop {
        // Check before reading, so data written before the exit is seen.
        let finished = done();
        let mut progressed = false;
        if let Some(file) = &mut current {
            match read_new(file, &mut pos, &mut pending, opts, &mut emit) {
                Some(read) => progressed = read,
                None => return,
            }
        }
        // Rotated (the path names another file now), or created after we started.
        let renamed = match (&current, fs::metadata(path)) {
            (Some(file), Ok(meta)) => meta.ino() != inode_of(file),
            (None, Ok(_)) => true,
            (_, Err(_)) => false,
        };
        if renamed {
            if let Some(file) = &mut current {
                // What the writer added before it moved on.
                if read_new(file, &mut pos, &mut pending, opts, &mut emit).is_none() {
                    return;
                }
            }
            current = File::open(path).ok();
            pos = 0;
            pending.clear();
            progressed = true;
        }
        if finished && !progressed {
            return;
        }
        if !progressed {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// Emits the complete lines of `file` after `pos`; whether any was read, or
/// `None` when following should stop (`until` reached, or the reader went away).
fn read_new(
    file: &mut File,
    pos: &mut u64,
    pending: &mut String,
    opts: &LogOptions,
    emit: &mut impl FnMut(LogEntry) -> bool,
) -> Option<bool> {
    let mut progressed = false;
    if file.seek(SeekFrom::Start(*pos)).is_err() {
        return Some(false);
    }
    let mut reader = BufReader::new(file);
    loop {
        let mut chunk = String::new();
        match reader.read_line(&mut chunk) {
            Ok(0) | Err(_) => return Some(progressed),
            Ok(n) => {
                *pos += n as u64;
                progressed = true;
                pending.push_str(&chunk);
                if !pending.ends_with('\n') {
                    continue;
                }
                let line = std::mem::take(pending);
                if let Some(e) = parse_line(line.trim_end_matches('\n')) {
                    if opts.until.is_some_and(|u| e.time_nanos >= u) {
                        return None;
                    }
                    if wanted(&e, opts) && !emit(e) {
                        return None;
                    }
                }
            }
        }
    }
}

/// Total bytes of the log files (for `system df`).
pub fn disk_usage(path: &Path) -> u64 {
    files(path)
        .iter()
        .filter_map(|f| fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_splits_and_rotates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x-json.log");
        let mut w = LogWriter::open(path.clone(), 4096, 3).expect("open");
        w.write(Stream::Stdout, b"hel").expect("write");
        w.write(Stream::Stdout, b"lo\nwor").expect("write");
        w.write(Stream::Stderr, b"err\n").expect("write");
        w.flush().expect("flush");
        let all = LogOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let (entries, _) = read_existing(&path, &all);
        let lines: Vec<_> = entries.iter().map(|e| e.line.clone()).collect();
        assert_eq!(
            lines,
            vec![b"hello\n".to_vec(), b"err\n".to_vec(), b"wor".to_vec()]
        );
        for _ in 0..1000 {
            w.write(
                Stream::Stdout,
                b"0123456789012345678901234567890123456789\n",
            )
            .expect("write");
        }
        let files = files(&path);
        assert_eq!(files.len(), 3);
        for f in files {
            assert!(fs::metadata(&f).expect("meta").len() <= 4096);
        }
        let tail = LogOptions {
            tail: Some(2),
            ..all
        };
        assert_eq!(read_existing(&path, &tail).0.len(), 2);
    }

    /// The container prints, exits and is removed (its log file unlinked)
    /// between two rounds of following: the output is still delivered.
    #[test]
    fn follow_reads_output_of_a_container_removed_meanwhile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x-json.log");
        let mut w = LogWriter::open(path.clone(), 1 << 20, 1).expect("open");
        let all = LogOptions {
            stdout: true,
            stderr: true,
            follow: true,
            ..Default::default()
        };
        let mut rounds = 0;
        let mut got = Vec::new();
        follow(
            &path,
            0,
            &all,
            |e| {
                got.push(e.line);
                true
            },
            || {
                rounds += 1;
                if rounds == 1 {
                    w.write(Stream::Stdout, b"run-ok\n").expect("write");
                    w.flush().expect("flush");
                    fs::remove_file(&path).expect("remove the log");
                    return false;
                }
                true
            },
        );
        assert_eq!(got, vec![b"run-ok\n".to_vec()]);
    }
}
