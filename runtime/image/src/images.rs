//! Named image records: a normalised reference → the descriptor (digest,
//! media type, size) of its manifest or index. Stored atomically.
//!
//! One JSON file per record: `<root>/images/<sha256 of the name>.json`. The
//! file name is a hash, so no name (`../../etc/passwd`, a 400-character
//! reference, anything) can escape the directory or exceed `NAME_MAX`; the
//! record inside carries the name. Writes go to a temporary file in the same
//! directory, are fsynced, renamed over the record and the directory is
//! fsynced: after a crash a record is either the old or the new version.
//! The caller normalises names (`Reference::to_string()`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ImageStoreError {
    #[error("opening image store at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image name must not be empty")]
    EmptyName,
    #[error("reading image record {name:?} at {path}: {source}")]
    Read {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image record at {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing image record {name:?} to {path}: {source}")]
    Write {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("removing image record {name:?} at {path}: {source}")]
    Remove {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("listing image records in {path}: {source}")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageRecord {
    /// Normalised reference, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// RFC 3339.
    pub created: String,
}

#[derive(Debug, Clone)]
pub struct ImageStore {
    root: std::path::PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl ImageStore {
    /// Opens (creating if needed) the store; records live in `<root>/images`.
    pub fn open(root: &Path) -> Result<Self, ImageStoreError> {
        let s = Self {
            root: root.to_path_buf(),
        };
        let dir = s.dir();
        if !dir.is_dir() {
            fs::create_dir_all(&dir)
                .and_then(|()| fsync_dir(root))
                .map_err(|source| ImageStoreError::Open { path: dir, source })?;
        }
        Ok(s)
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    fn dir(&self) -> PathBuf {
        self.root.join("images")
    }
    /// The file holding `name`'s record.
    pub fn record_path(&self, name: &str) -> PathBuf {
        self.dir()
            .join(format!("{}.json", Digest::sha256_of(name.as_bytes()).hex()))
    }

    fn read_record(path: &Path, name: &str) -> Result<Option<ImageRecord>, ImageStoreError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ImageStoreError::Read {
                    name: name.to_string(),
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| ImageStoreError::Corrupt {
                path: path.to_path_buf(),
                source,
            })
    }

    pub fn get(&self, name: &str) -> Result<Option<ImageRecord>, ImageStoreError> {
        if name.is_empty() {
            return Err(ImageStoreError::EmptyName);
        }
        let path = self.record_path(name);
        // A hash collision is not a practical concern, but never return
        // another name's record.
        Ok(Self::read_record(&path, name)?.filter(|r| r.name == name))
    }

    /// Creates or replaces the record (a tag).
    pub fn put(&self, record: &ImageRecord) -> Result<(), ImageStoreError> {
        if record.name.is_empty() {
            return Err(ImageStoreError::EmptyName);
        }
        let path = self.record_path(&record.name);
        let dir = self.dir();
        let tmp = dir.join(format!(
            ".tmp-{}-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed),
            path.file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("record"),
        ));
        let write_err = |path: &Path, source| ImageStoreError::Write {
            name: record.name.clone(),
            path: path.to_path_buf(),
            source,
        };
        let mut json =
            serde_json::to_vec_pretty(record).map_err(|e| write_err(&path, io::Error::other(e)))?;
        json.push(b'\n');
        let result = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(write_err(&path, e));
        }
        fsync_dir(&dir).map_err(|e| write_err(&dir, e))
    }

    pub fn remove(&self, name: &str) -> Result<Option<ImageRecord>, ImageStoreError> {
        let Some(record) = self.get(name)? else {
            return Ok(None);
        };
        let path = self.record_path(name);
        let remove_err = |path: &Path, source| ImageStoreError::Remove {
            name: name.to_string(),
            path: path.to_path_buf(),
            source,
        };
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(remove_err(&path, e)),
        }
        let dir = self.dir();
        fsync_dir(&dir).map_err(|e| remove_err(&dir, e))?;
        Ok(Some(record))
    }

    /// Every record, sorted by name. Leftover temporary files (from a crash
    /// during `put`) are ignored.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageStoreError> {
        let dir = self.dir();
        let list_err = |source| ImageStoreError::List {
            path: dir.clone(),
            source,
        };
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(list_err(e)),
        };
        for entry in entries {
            let entry = entry.map_err(list_err)?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if file_name.starts_with('.') || !file_name.ends_with(".json") {
                continue;
            }
            if let Some(r) = Self::read_record(&entry.path(), file_name)? {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Records pointing at `digest` (all tags of one image), sorted by name.
    pub fn find_by_digest(&self, digest: &Digest) -> Result<Vec<ImageRecord>, ImageStoreError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|r| r.digest == *digest)
            .collect())
    }

    /// Removes temporary files left by a crash during `put`.
    pub fn cleanup_temp_files(&self) -> Result<usize, ImageStoreError> {
        let dir = self.dir();
        let mut n = 0;
        let entries = fs::read_dir(&dir).map_err(|source| ImageStoreError::List {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-")
                && fs::remove_file(entry.path()).is_ok()
            {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// The current time in RFC 3339 (UTC, seconds), for [`ImageRecord::created`].
pub fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Seconds since the epoch → `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Days since 1970-01-01 → civil date (proleptic Gregorian), by 400-year eras.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(name: &str, n: u8) -> ImageRecord {
        ImageRecord {
            name: name.to_string(),
            digest: Digest::sha256_of(&[n]),
            media_type: crate::manifest::media_types::OCI_MANIFEST.to_string(),
            size: 100 + u64::from(n),
            created: rfc3339(1_700_000_000),
        }
    }

    #[test]
    fn put_get_list_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let s = ImageStore::open(tmp.path()).unwrap();
        assert!(s.list().unwrap().is_empty());
        assert_eq!(s.get("docker.io/library/busybox:latest").unwrap(), None);
        let names = [
            "docker.io/library/busybox:latest",
            "docker.io/library/alpine:3",
            "localhost:5000/app:v1",
        ];
        for (i, n) in names.iter().enumerate() {
            s.put(&rec(n, i as u8)).unwrap();
        }
        let listed: Vec<String> = s.list().unwrap().into_iter().map(|r| r.name).collect();
        let mut sorted = names.map(str::to_string).to_vec();
        sorted.sort();
        assert_eq!(listed, sorted);
        assert_eq!(s.get(names[2]).unwrap(), Some(rec(names[2], 2)));

        // Survives reopening.
        let s2 = ImageStore::open(tmp.path()).unwrap();
        assert_eq!(s2.get(names[0]).unwrap(), Some(rec(names[0], 0)));

        assert_eq!(s.remove(names[0]).unwrap(), Some(rec(names[0], 0)));
        assert_eq!(s.remove(names[0]).unwrap(), None);
        assert_eq!(s.get(names[0]).unwrap(), None);
        assert_eq!(s.list().unwrap().len(), 2);
        assert!(matches!(s.get(""), Err(ImageStoreError::EmptyName)));
    }

    #[test]
    fn atomic_replace_and_find_by_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let s = ImageStore::open(tmp.path()).unwrap();
        let name = "docker.io/library/busybox:latest";
        s.put(&rec(name, 1)).unwrap();
        s.put(&rec("docker.io/library/busybox:1.36", 1)).unwrap();
        s.put(&rec(name, 2)).unwrap();
        assert_eq!(s.get(name).unwrap(), Some(rec(name, 2)));
        // Exactly two record files, no temporaries left behind.
        let files: Vec<_> = fs::read_dir(tmp.path().join("images")).unwrap().collect();
        assert_eq!(files.len(), 2);
        let by1 = s.find_by_digest(&Digest::sha256_of(&[1])).unwrap();
        assert_eq!(by1.len(), 1);
        assert_eq!(by1[0].name, "docker.io/library/busybox:1.36");

        // A temp file from a "crash" mid-put is ignored by list and cleaned.
        fs::write(tmp.path().join("images/.tmp-1-2-abc"), b"{garbage").unwrap();
        assert_eq!(s.list().unwrap().len(), 2);
        assert_eq!(s.cleanup_temp_files().unwrap(), 1);
    }

    #[test]
    fn concurrent_puts_of_one_name() {
        let tmp = tempfile::tempdir().unwrap();
        let s = ImageStore::open(tmp.path()).unwrap();
        let name = "docker.io/library/busybox:latest";
        std::thread::scope(|sc| {
            for t in 0..4u8 {
                let s = s.clone();
                sc.spawn(move || {
                    for _ in 0..20 {
                        s.put(&rec(name, t)).unwrap();
                        assert!(s.get(name).unwrap().is_some());
                    }
                });
            }
        });
        assert_eq!(s.list().unwrap().len(), 1);
    }

    #[test]
    fn hostile_names_stay_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let s = ImageStore::open(&root).unwrap();
        let long = "x".repeat(1000);
        let hostile = [
            "../../etc/passwd",
            "/etc/passwd",
            "..",
            ".",
            "a/../../b",
            "name\0with nul",
            "\u{202e}unicode/..\\..\\",
            long.as_str(),
        ];
        for (i, n) in hostile.iter().enumerate() {
            s.put(&rec(n, i as u8)).unwrap();
            assert_eq!(s.get(n).unwrap(), Some(rec(n, i as u8)));
            assert!(s.record_path(n).starts_with(root.join("images")));
        }
        // Nothing was created outside <root>/images.
        let outside: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(outside, vec![std::ffi::OsString::from("store")]);
        let inside: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(inside, vec![std::ffi::OsString::from("images")]);
        assert_eq!(s.list().unwrap().len(), hostile.len());
        for n in hostile {
            assert!(s.remove(n).unwrap().is_some());
        }
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn corrupt_record_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let s = ImageStore::open(tmp.path()).unwrap();
        let name = "docker.io/library/busybox:latest";
        fs::write(s.record_path(name), b"{not json").unwrap();
        let e = s.get(name).unwrap_err().to_string();
        assert!(e.contains("is corrupt"), "{e}");
        assert!(e.contains(".json"), "{e}");
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(rfc3339_now().len(), 20);
    }
}
