//! SHA-256 of the image's input files, remembered by each file's identity.
//!
//! Every `machine start` asks for the image, whose cache key covers the kernel
//! package, the agent and busybox: ~80 MB to read and hash each time. A file
//! whose device, inode, size, modification and change times are those of the
//! last hash is taken to be unchanged (the same test `make` and `rsync` rely
//! on, with the change time added so a `touch -d` back in time still counts).
//! The memo is a text file, one line per input; a damaged or foreign one is
//! ignored and rewritten.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What identifies one version of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Identity {
    #[cfg(unix)]
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Without inode and change time: size and modification time.
    #[cfg(not(unix))]
    fn of(meta: &std::fs::Metadata) -> Self {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        Self {
            dev: 0,
            ino: 0,
            size: meta.len(),
            mtime_ns,
            ctime_ns: 0,
        }
    }
}

/// The remembered digests, by absolute path.
pub struct DigestMemo {
    file: PathBuf,
    entries: BTreeMap<PathBuf, (Identity, String)>,
    changed: bool,
}

impl DigestMemo {
    /// Loads the memo at `file` (empty when missing or unreadable).
    pub fn load(file: &Path) -> Self {
        let entries = std::fs::read_to_string(file)
            .map(|text| text.lines().filter_map(parse_line).collect())
            .unwrap_or_default();
        Self {
            file: file.to_path_buf(),
            entries,
            changed: false,
        }
    }

    /// The hex SHA-256 of `path`, from the memo when the file is unchanged.
    pub fn sha256(&mut self, path: &Path) -> std::io::Result<String> {
        let key = std::path::absolute(path)?;
        let before = Identity::of(&std::fs::metadata(&key)?);
        if let Some((id, hex)) = self.entries.get(&key) {
            if *id == before {
                return Ok(hex.clone());
            }
        }
        let hex = hash_file(&key)?;
        // A file rewritten while it was read is not remembered: the next call hashes again.
        if Identity::of(&std::fs::metadata(&key)?) == before {
            self.entries.insert(key, (before, hex.clone()));
            self.changed = true;
        }
        Ok(hex)
    }

    /// Writes the memo back if it learnt anything (temp file + rename, so a
    /// concurrent reader sees the old or the new memo whole). Failing to
    /// write only costs a hash next time, so the error is the caller's to ignore.
    pub fn save(&self) -> std::io::Result<()> {
        if !self.changed {
            return Ok(());
        }
        let mut text = String::new();
        for (path, (id, hex)) in &self.entries {
            // Paths with a newline cannot be written as a line; they are hashed each time.
            let Some(p) = path.to_str().filter(|p| !p.contains('\n')) else {
                continue;
            };
            text.push_str(&format!(
                "{hex} {} {} {} {} {} {p}\n",
                id.dev, id.ino, id.size, id.mtime_ns, id.ctime_ns
            ));
        }
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self
            .file
            .with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.file).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

fn parse_line(line: &str) -> Option<(PathBuf, (Identity, String))> {
    let mut words = line.splitn(7, ' ');
    let hex = words.next()?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id = Identity {
        dev: words.next()?.parse().ok()?,
        ino: words.next()?.parse().ok()?,
        size: words.next()?.parse().ok()?,
        mtime_ns: words.next()?.parse().ok()?,
        ctime_ns: words.next()?.parse().ok()?,
    };
    let path = PathBuf::from(words.next()?);
    path.is_absolute().then(|| (path, (id, hex.to_string())))
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_hex(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn remembers_unchanged_files_and_notices_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let memo_file = dir.path().join("memo");
        let input = dir.path().join("input");
        std::fs::write(&input, b"first").expect("write");

        let mut memo = DigestMemo::load(&memo_file);
        assert_eq!(memo.sha256(&input).expect("hash"), sha256_hex(b"first"));
        memo.save().expect("save");

        // A reloaded memo answers from the file's identity: prove it by planting a
        // different digest for the same identity.
        let planted = "ab".repeat(32);
        let text = std::fs::read_to_string(&memo_file).expect("memo");
        let (_, rest) = text.split_once(' ').expect("line");
        std::fs::write(&memo_file, format!("{planted} {rest}")).expect("plant");
        let mut memo = DigestMemo::load(&memo_file);
        assert_eq!(memo.sha256(&input).expect("memo hit"), planted);

        // Rewriting the file changes its identity (ctime at least): hashed again.
        std::fs::write(&input, b"second").expect("rewrite");
        assert_eq!(memo.sha256(&input).expect("rehash"), sha256_hex(b"second"));
    }

    #[test]
    fn damaged_memo_lines_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let memo_file = dir.path().join("memo");
        std::fs::write(
            &memo_file,
            "not a digest 1 2 3 4 5 /x\nzz 1 2 3 4 5 /y\n\u{0}\u{1}\n",
        )
        .expect("write");
        let input = dir.path().join("input");
        std::fs::write(&input, b"data").expect("write");
        let mut memo = DigestMemo::load(&memo_file);
        assert_eq!(memo.sha256(&input).expect("hash"), sha256_hex(b"data"));
        assert!(memo.sha256(&dir.path().join("missing")).is_err());
    }
}
