#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::images::ImageRecord;
use crate::manifest::media_types as mt;

/// Deterministic pseudo-random bytes (xorshift), different per seed.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn store() -> (tempfile::TempDir, ContentStore) {
    let tmp = tempfile::tempdir().unwrap();
    let s = ContentStore::open(&tmp.path().join("content")).unwrap();
    (tmp, s)
}

fn assert_consistent(s: &ContentStore) {
    let r = s.verify().unwrap();
    assert!(r.is_consistent(), "{r:?}");
}

#[test]
fn write_commit_read() {
    let (_t, s) = store();
    let bytes = data(3 * 1024 * 1024 + 17, 1);
    let d = Digest::sha256_of(&bytes);
    assert_eq!(s.info(&d).unwrap(), None);
    let mut ing = s.ingest(&d, Some(bytes.len() as u64)).unwrap();
    assert_eq!(ing.offset(), 0);
    // Odd chunk sizes: small ones buffered, big ones written through.
    let mut pos = 0;
    for (i, n) in [1usize, 4095, 70_000, 2 * 1024 * 1024, 1]
        .iter()
        .cycle()
        .enumerate()
    {
        if pos == bytes.len() {
            break;
        }
        let end = (pos + n).min(bytes.len());
        ing.write_all(&bytes[pos..end]).unwrap();
        pos = end;
        if i % 3 == 0 {
            ing.flush().unwrap();
        }
        assert_eq!(ing.offset(), pos as u64);
    }
    // Not visible before commit.
    assert_eq!(s.info(&d).unwrap(), None);
    assert!(matches!(
        s.open_blob(&d),
        Err(ContentError::NotFound { .. })
    ));
    ing.commit().unwrap();
    assert_eq!(s.info(&d).unwrap(), Some(bytes.len() as u64));
    assert_eq!(s.read_all(&d).unwrap(), bytes);
    let mut f = s.open_blob(&d).unwrap();
    let mut back = Vec::new();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(back, bytes);
    assert_eq!(s.list().unwrap(), vec![(d.clone(), bytes.len() as u64)]);
    assert!(s.list_ingests().unwrap().is_empty());
    assert!(!s.root().join("ingest/sha256").join(d.hex()).exists());
    // A second ingest of a committed blob is refused.
    let e = s.ingest(&d, None).unwrap_err();
    assert!(matches!(e, ContentError::AlreadyExists { .. }), "{e}");
    assert!(e.to_string().contains(&d.to_string()));
    assert_consistent(&s);
}

#[test]
fn write_all_small_blobs() {
    let (_t, s) = store();
    let d = s.write_all(b"{\"a\":1}", None).unwrap();
    assert_eq!(d, Digest::sha256_of(b"{\"a\":1}"));
    // Idempotent, and with the expected digest.
    assert_eq!(s.write_all(b"{\"a\":1}", Some(&d)).unwrap(), d);
    // Wrong expected digest: error naming both, nothing stored.
    let other = Digest::sha256_of(b"other");
    let e = s.write_all(b"{\"a\":1}", Some(&other)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&other.to_string()) && msg.contains(&d.to_string()),
        "{msg}"
    );
    assert_eq!(s.info(&other).unwrap(), None);
    // Empty blob.
    let empty = s.write_all(b"", None).unwrap();
    assert_eq!(s.read_all(&empty).unwrap(), b"");
    // sha512 is verified too.
    let d512 = Digest::parse(
        "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
         2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    )
    .unwrap();
    assert_eq!(s.write_all(b"abc", Some(&d512)).unwrap(), d512);
    assert_eq!(s.read_all(&d512).unwrap(), b"abc");
    assert_eq!(s.list().unwrap().len(), 3);
    assert_consistent(&s);
}

#[test]
fn resume_after_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("content");
    let bytes = data(5 * 1024 * 1024 + 123, 2);
    let d = Digest::sha256_of(&bytes);
    let cut = 2 * 1024 * 1024 + 4567;
    {
        let s = ContentStore::open(&root).unwrap();
        let mut ing = s.ingest(&d, Some(bytes.len() as u64)).unwrap();
        for chunk in bytes[..cut].chunks(10_000) {
            ing.write_all(chunk).unwrap();
        }
        // "Crash": dropped without commit.
    }
    let s = ContentStore::open(&root).unwrap();
    assert_eq!(s.info(&d).unwrap(), None);
    let status = s.list_ingests().unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].offset, cut as u64);
    assert_eq!(status[0].size, Some(bytes.len() as u64));
    let mut ing = s.ingest(&d, Some(bytes.len() as u64)).unwrap();
    assert_eq!(ing.offset(), cut as u64);
    ing.write_all(&bytes[cut..]).unwrap();
    ing.commit().unwrap();
    assert_eq!(s.read_all(&d).unwrap(), bytes);
    assert!(s.list_ingests().unwrap().is_empty());
    assert_consistent(&s);
}

#[test]
fn persisted_appends_survive_a_kill_and_hash_from_disk() {
    let (_t, s) = store();
    let bytes = data(3 * 1024 * 1024 + 999, 11);
    let d = Digest::sha256_of(&bytes);
    let cut = 2 * 1024 * 1024 + 77;
    let mut ing = s.ingest(&d, Some(bytes.len() as u64)).unwrap();
    for chunk in bytes[..cut].chunks(70_001) {
        ing.append_persisted(chunk).unwrap();
    }
    assert_eq!(ing.offset(), cut as u64);
    assert_eq!(ing.unhashed(), cut as u64);
    assert_eq!(ing.hash_behind(100_000).unwrap(), 100_000);
    assert_eq!(ing.unhashed(), cut as u64 - 100_000);
    // On disk already, while the ingest is open: a kill (no destructor, no
    // flush on the way out) keeps all of it.
    assert_eq!(fs::metadata(ing.path()).unwrap().len(), cut as u64);
    drop(ing);

    let mut ing = s.ingest(&d, Some(bytes.len() as u64)).unwrap();
    assert_eq!(ing.offset(), cut as u64, "every persisted byte is kept");
    assert_eq!(ing.unhashed(), 0, "a resumed ingest hashed what is on disk");
    // Persisted, buffered and large appends mixed: the hash stays in order.
    ing.append_persisted(&bytes[cut..cut + 5000]).unwrap();
    ing.write_all(&bytes[cut + 5000..cut + 9000]).unwrap();
    ing.append_persisted(&bytes[cut + 9000..cut + 20_000])
        .unwrap();
    assert_eq!(ing.hash_behind(3000).unwrap(), 3000);
    ing.write_all(&bytes[cut + 20_000..]).unwrap();
    ing.commit().unwrap();
    assert_eq!(s.read_all(&d).unwrap(), bytes);
    assert_consistent(&s);
}

#[test]
fn persisted_appends_are_verified_as_they_are_on_disk() {
    let (_t, s) = store();
    let bytes = data(500_000, 12);
    let d = Digest::sha256_of(&bytes);
    let mut ing = s.ingest(&d, Some(bytes.len() as u64)).unwrap();
    ing.append_persisted(&bytes).unwrap();
    // Changed on disk after it was written (not yet hashed): caught.
    let f = OpenOptions::new().write(true).open(ing.path()).unwrap();
    f.write_at(b"X", 1234).unwrap();
    let e = ing.commit().unwrap_err();
    assert!(matches!(e, ContentError::DigestMismatch { .. }), "{e}");
    assert_eq!(s.info(&d).unwrap(), None);
    // Too much data is refused before it is written.
    let mut ing = s.ingest(&d, Some(bytes.len() as u64)).unwrap();
    ing.append_persisted(&bytes[..400_000]).unwrap();
    let e = ing.append_persisted(&bytes[..200_000]).unwrap_err();
    assert!(matches!(e, ContentError::TooLarge { .. }), "{e}");
    assert_eq!(ing.offset(), 400_000);
    assert_consistent(&s);
}

#[test]
fn resume_partial_left_by_a_killed_process() {
    // The data file as a killed process leaves it: no lock held, no size file.
    let (_t, s) = store();
    let bytes = data(300_000, 3);
    let d = Digest::sha256_of(&bytes);
    let dir = s.root().join("ingest/sha256").join(d.hex());
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("data"), &bytes[..123_456]).unwrap();
    let mut ing = s.ingest(&d, None).unwrap();
    assert_eq!(ing.offset(), 123_456);
    ing.write_all(&bytes[123_456..]).unwrap();
    ing.commit().unwrap();
    assert_eq!(s.read_all(&d).unwrap(), bytes);

    // A partial with a wrong tail (power loss): caught at commit, discarded.
    let bytes2 = data(200_000, 4);
    let d2 = Digest::sha256_of(&bytes2);
    let dir2 = s.root().join("ingest/sha256").join(d2.hex());
    fs::create_dir_all(&dir2).unwrap();
    let mut bad = bytes2[..100_000].to_vec();
    bad[99_999] ^= 0xff;
    fs::write(dir2.join("data"), &bad).unwrap();
    let mut ing = s.ingest(&d2, Some(bytes2.len() as u64)).unwrap();
    assert_eq!(ing.offset(), 100_000);
    ing.write_all(&bytes2[100_000..]).unwrap();
    let e = ing.commit().unwrap_err();
    assert!(matches!(e, ContentError::DigestMismatch { .. }), "{e}");
    assert_eq!(s.info(&d2).unwrap(), None);
    assert!(!dir2.join("data").exists());
    // The next attempt starts from zero and succeeds.
    let mut ing = s.ingest(&d2, Some(bytes2.len() as u64)).unwrap();
    assert_eq!(ing.offset(), 0);
    ing.write_all(&bytes2).unwrap();
    ing.commit().unwrap();
    assert_consistent(&s);
}

#[test]
fn digest_mismatch_leaves_nothing() {
    let (_t, s) = store();
    let good = data(2_000_000, 5);
    let evil = data(2_000_000, 6);
    let d = Digest::sha256_of(&good);
    let mut ing = s.ingest(&d, Some(good.len() as u64)).unwrap();
    ing.write_all(&evil).unwrap();
    let e = ing.commit().unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&format!("expected {d}")), "{msg}");
    assert!(
        msg.contains(&format!("got {}", Digest::sha256_of(&evil))),
        "{msg}"
    );
    assert_eq!(s.info(&d).unwrap(), None);
    assert!(s.list().unwrap().is_empty());
    assert!(s.list_ingests().unwrap().is_empty());
    assert!(!s.root().join("ingest/sha256").join(d.hex()).exists());
    assert_consistent(&s);
}

#[test]
fn size_mismatches() {
    let (_t, s) = store();
    let bytes = data(100_000, 7);
    let d = Digest::sha256_of(&bytes);

    // Too short (truncated stream): error, data kept for resume.
    let mut ing = s.ingest(&d, Some(bytes.len() as u64)).unwrap();
    ing.write_all(&bytes[..60_000]).unwrap();
    let e = ing.commit().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("blob {d}: expected 100000 bytes, got 60000")
    );
    assert_eq!(s.info(&d).unwrap(), None);
    let ing = s.ingest(&d, Some(bytes.len() as u64)).unwrap();
    assert_eq!(ing.offset(), 60_000);
    drop(ing);

    // More than the expected size is refused at write time.
    let mut ing = s.ingest(&d, Some(bytes.len() as u64)).unwrap();
    ing.write_all(&bytes[60_000..]).unwrap();
    let e = ing.write_all(b"x").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    let ce = ContentError::from_ingest_io(&ing, e);
    assert!(matches!(ce, ContentError::TooLarge { .. }), "{ce}");
    // ... and the ingest is still good.
    ing.commit().unwrap();
    assert_eq!(s.read_all(&d).unwrap(), bytes);

    // Wrong size announced: the data can never match; discarded.
    let bytes2 = data(50_000, 8);
    let d2 = Digest::sha256_of(&bytes2);
    let mut ing = s.ingest(&d2, Some(40_000)).unwrap();
    ing.write_all(&bytes2[..40_000]).unwrap();
    assert!(matches!(
        ing.commit(),
        Err(ContentError::DigestMismatch { .. })
    ));
    assert!(s.list_ingests().unwrap().is_empty());

    // A partial longer than the expected size is discarded on ingest.
    let mut ing = s.ingest(&d2, None).unwrap();
    ing.write_all(&bytes2).unwrap();
    drop(ing);
    let ing = s.ingest(&d2, Some(10)).unwrap();
    assert_eq!(ing.offset(), 0);
    drop(ing);
    assert_consistent(&s);
}

#[test]
fn reset_and_truncate() {
    let (_t, s) = store();
    let bytes = data(3_000_000, 9);
    let d = Digest::sha256_of(&bytes);
    let mut ing = s.ingest(&d, Some(bytes.len() as u64)).unwrap();
    ing.write_all(&data(1_500_000, 10)).unwrap(); // wrong bytes
                                                  // Server ignored Range and sent 200: start over.
    ing.reset().unwrap();
    assert_eq!(ing.offset(), 0);
    ing.write_all(&bytes[..2_000_000]).unwrap();
    ing.write_all(&data(1000, 11)).unwrap(); // garbage tail
    ing.truncate_to(2_000_000).unwrap();
    assert_eq!(ing.offset(), 2_000_000);
    let e = ing.truncate_to(9_999_999).unwrap_err();
    assert!(matches!(e, ContentError::TruncateBeyond { .. }), "{e}");
    ing.write_all(&bytes[2_000_000..]).unwrap();
    ing.commit().unwrap();
    assert_eq!(s.read_all(&d).unwrap(), bytes);

    // discard() removes the partial.
    let d2 = Digest::sha256_of(b"zzz");
    let mut ing = s.ingest(&d2, None).unwrap();
    ing.write_all(b"zz").unwrap();
    ing.discard().unwrap();
    assert!(s.list_ingests().unwrap().is_empty());
    assert_eq!(s.ingest(&d2, None).unwrap().offset(), 0);
    assert_consistent(&s);
}

#[test]
fn busy_and_waiting() {
    let (_t, s) = store();
    let bytes = data(10_000, 12);
    let d = Digest::sha256_of(&bytes);
    let mut first = s.ingest(&d, None).unwrap();
    let e = s.try_ingest(&d, None).unwrap_err();
    assert!(matches!(e, ContentError::Busy { .. }), "{e}");
    assert!(
        e.to_string().contains("being written by another ingest"),
        "{e}"
    );
    first.write_all(&bytes[..5000]).unwrap();
    std::thread::scope(|sc| {
        let waiter = sc.spawn(|| s.ingest_blocking(&d, None).map(|i| i.offset()));
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!waiter.is_finished());
        first.write_all(&bytes[5000..]).unwrap();
        first.commit().unwrap();
        let r = waiter.join().unwrap();
        assert!(
            matches!(r, Err(ContentError::AlreadyExists { .. })),
            "{r:?}"
        );
    });
    // The waiter tidied up after itself.
    assert!(s.list_ingests().unwrap().is_empty());
    assert_consistent(&s);
}

#[test]
fn concurrent_ingests_of_one_digest() {
    // Eight threads share one blob: each takes the ingest (waiting for the
    // others), adds up to 256 KiB from where the last one stopped, and
    // commits when complete. Exercises lock hand-over and resume.
    let (_t, s) = store();
    let bytes = data(3 * 1024 * 1024 + 999, 13);
    let d = Digest::sha256_of(&bytes);
    let commits = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for t in 0..8 {
            let (s, bytes, d, commits) = (&s, &bytes, &d, &commits);
            sc.spawn(move || loop {
                let mut ing = match s.ingest(d, Some(bytes.len() as u64)) {
                    Ok(i) => i,
                    Err(ContentError::AlreadyExists { .. }) => return,
                    Err(e) => panic!("thread {t}: {e}"),
                };
                let off = usize::try_from(ing.offset()).unwrap();
                let end = (off + 256 * 1024).min(bytes.len());
                for chunk in bytes[off..end].chunks(7919) {
                    ing.write_all(chunk).unwrap();
                }
                if end == bytes.len() {
                    ing.commit().unwrap();
                    commits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(commits.into_inner(), 1);
    assert_eq!(s.read_all(&d).unwrap(), bytes);
    assert!(s.list_ingests().unwrap().is_empty());
    assert_consistent(&s);
}

#[test]
fn concurrent_full_ingests_race() {
    // Two "pulls" of the same blob at once, each writing everything.
    let (_t, s) = store();
    let bytes = data(4 * 1024 * 1024, 14);
    let d = Digest::sha256_of(&bytes);
    let results: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                sc.spawn(|| -> Result<(), ContentError> {
                    let mut ing = s.ingest(&d, Some(bytes.len() as u64))?;
                    let off = usize::try_from(ing.offset()).unwrap_or(0);
                    ing.append(&bytes[off..])?;
                    ing.commit()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let exists = results
        .iter()
        .filter(|r| matches!(r, Err(ContentError::AlreadyExists { .. })))
        .count();
    assert_eq!((ok, exists), (1, 1), "{results:?}");
    assert_eq!(s.read_all(&d).unwrap(), bytes);
    assert_consistent(&s);
}

fn descriptor_json(media_type: &str, d: &Digest, size: usize, platform: Option<&str>) -> String {
    let p = platform
        .map(|a| format!(r#","platform":{{"os":"linux","architecture":"{a}"}}"#))
        .unwrap_or_default();
    format!(r#"{{"mediaType":"{media_type}","digest":"{d}","size":{size}{p}}}"#)
}

#[test]
fn gc_keeps_referenced_blobs() {
    let (_t, s) = store();
    let layer1 = data(100_000, 20);
    let layer2 = data(50_000, 21);
    let orphan = data(1000, 22);
    let l1 = s.write_all(&layer1, None).unwrap();
    let l2 = s.write_all(&layer2, None).unwrap();
    let o = s.write_all(&orphan, None).unwrap();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let c = s.write_all(config, None).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{},"layers":[{}]}}"#,
        mt::OCI_MANIFEST,
        descriptor_json(mt::OCI_CONFIG, &c, config.len(), None),
        descriptor_json(mt::OCI_LAYER_GZIP, &l1, layer1.len(), None),
    );
    let m = s.write_all(manifest.as_bytes(), None).unwrap();
    let missing_arm = Digest::sha256_of(b"arm64 manifest, never pulled");
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{},{}]}}"#,
        mt::OCI_INDEX,
        descriptor_json(mt::OCI_MANIFEST, &m, manifest.len(), Some("amd64")),
        descriptor_json(mt::OCI_MANIFEST, &missing_arm, 10, Some("arm64")),
    );
    let i = s.write_all(index.as_bytes(), None).unwrap();
    // A second image: a Docker schema2 manifest sharing layer2 only.
    let manifest2 = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{},"layers":[{}]}}"#,
        mt::DOCKER_MANIFEST,
        descriptor_json(mt::DOCKER_CONFIG, &c, config.len(), None),
        descriptor_json(mt::DOCKER_LAYER_GZIP, &l2, layer2.len(), None),
    );
    let m2 = s.write_all(manifest2.as_bytes(), None).unwrap();

    let record = |name: &str, d: &Digest, media_type: &str| ImageRecord {
        name: name.to_string(),
        digest: d.clone(),
        media_type: media_type.to_string(),
        size: 0,
        created: String::new(),
    };
    let records = vec![record("docker.io/library/a:latest", &i, mt::OCI_INDEX)];
    let keep = s.referenced_by_records(&records).unwrap();
    let want: HashSet<Digest> = [&i, &m, &missing_arm, &c, &l1]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(keep, want);

    // A stale ingest, a fresh one, and one in use.
    let mut stale = s.ingest(&Digest::sha256_of(b"stale"), None).unwrap();
    stale.write_all(b"st").unwrap();
    drop(stale);
    let mut busy = s.ingest(&Digest::sha256_of(b"busy"), None).unwrap();
    busy.write_all(b"bu").unwrap();
    busy.flush().unwrap();

    let report = s.gc(&keep).unwrap();
    let mut removed = report.removed_blobs.clone();
    removed.sort();
    let mut want_removed = vec![l2.clone(), o.clone(), m2.clone()];
    want_removed.sort();
    assert_eq!(removed, want_removed);
    assert_eq!(
        report.freed_bytes,
        (layer2.len() + orphan.len() + manifest2.len()) as u64
    );
    // Fresh ingests survive the default age limit.
    assert!(report.removed_ingests.is_empty());
    assert_eq!(s.list_ingests().unwrap().len(), 2);
    for d in [&i, &m, &c, &l1] {
        assert!(s.info(d).unwrap().is_some(), "{d} was collected");
    }
    // "All ingests": the unlocked one goes, the one in use stays.
    let report = s
        .gc_with(
            &keep,
            &GcOptions {
                ingest_max_age: None,
            },
        )
        .unwrap();
    assert_eq!(report.removed_ingests, vec![Digest::sha256_of(b"stale")]);
    assert_eq!(report.freed_ingest_bytes, 2);
    assert_eq!(s.list_ingests().unwrap().len(), 1);
    drop(busy);
    assert_consistent(&s);

    // A root that is not a manifest stops gc's walk with a clear error.
    let e = s
        .referenced_by_records(&[record("x", &l1, mt::OCI_MANIFEST)])
        .unwrap_err();
    assert!(e.to_string().contains("not a manifest or index"), "{e}");
    let e = s.referenced([(&c, None)]).unwrap_err();
    assert!(matches!(e, ContentError::BadManifest { .. }), "{e}");
}

#[test]
fn verify_finds_corruption_and_strays() {
    let (_t, s) = store();
    let d = s.write_all(b"hello", None).unwrap();
    assert_consistent(&s);
    fs::write(s.path(&d), b"hellO").unwrap();
    fs::write(s.root().join("blobs/sha256/not-a-digest"), b"").unwrap();
    let r = s.verify().unwrap();
    assert_eq!(r.checked, 1);
    assert_eq!(r.corrupt, vec![(d.clone(), Digest::sha256_of(b"hellO"))]);
    assert_eq!(r.stray, vec![s.root().join("blobs/sha256/not-a-digest")]);
    let e = s.read_all(&d).unwrap_err();
    assert!(e.to_string().contains("is corrupt"), "{e}");
    s.delete(&d).unwrap();
    assert!(matches!(s.delete(&d), Err(ContentError::NotFound { .. })));
}

/// A tmpfs mounted for one test, unmounted (lazily) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        fs::create_dir_all(dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .ok()?
            .success();
        ok.then(|| Self(dir.to_path_buf()))
    }
    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_disk_then_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let Some(fs_guard) = Tmpfs::mount(&mnt, "1m") else {
        eprintln!("skipping full_disk_then_resume: cannot mount tmpfs (needs root)");
        return;
    };
    let s = ContentStore::open(&mnt.join("content")).unwrap();
    let bytes = data(2 * 1024 * 1024 + 5, 30);
    let d = Digest::sha256_of(&bytes);

    // 1) Through io::Write: the error is StorageFull and says what happened.
    let mut ing = s.ingest(&d, Some(bytes.len() as u64)).unwrap();
    let e = bytes
        .chunks(64 * 1024)
        .try_for_each(|c| ing.write_all(c))
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
    let ce = ContentError::from_ingest_io(&ing, e);
    assert!(matches!(ce, ContentError::NoSpace { .. }), "{ce}");
    assert!(ce.to_string().contains("no space left on device"), "{ce}");
    // Poisoned until recovered.
    assert!(matches!(
        ing.append(b"x"),
        Err(ContentError::Poisoned { .. })
    ));
    drop(ing);
    assert_eq!(s.info(&d).unwrap(), None);
    assert_consistent(&s);
    let kept = s.list_ingests().unwrap()[0].offset;
    assert!(kept > 0 && kept < bytes.len() as u64, "{kept}");

    // Space is freed: the next ingest resumes from what was kept.
    fs_guard.resize("8m");
    let mut ing = s.ingest(&d, Some(bytes.len() as u64)).unwrap();
    assert_eq!(ing.offset(), kept);
    let kept = usize::try_from(kept).unwrap();
    ing.write_all(&bytes[kept..]).unwrap();
    ing.commit().unwrap();
    assert_eq!(s.read_all(&d).unwrap(), bytes);

    // 2) The same ingest recovers in place once space is back.
    fs_guard.resize("3m");
    let bytes2 = data(3 * 1024 * 1024, 31);
    let d2 = Digest::sha256_of(&bytes2);
    let mut ing = s.ingest(&d2, Some(bytes2.len() as u64)).unwrap();
    let e = ing.append(&bytes2).unwrap_err();
    assert!(matches!(e, ContentError::NoSpace { .. }), "{e}");
    fs_guard.resize("8m");
    let off = usize::try_from(ing.recover().unwrap()).unwrap();
    assert!(off > 0 && off < bytes2.len());
    ing.append(&bytes2[off..]).unwrap();
    ing.commit().unwrap();
    assert_eq!(s.read_all(&d2).unwrap(), bytes2);
    assert!(s.list_ingests().unwrap().is_empty());
    assert_consistent(&s);
    drop(s);
    drop(fs_guard);
}

/// Throughput of ingest (hash + buffered write + commit); run with
/// `cargo test -p berth-image --release -- --ignored --nocapture ingest_throughput`.
#[test]
#[ignore]
fn ingest_throughput() {
    let (_t, s) = store();
    let bytes = data(256 * 1024 * 1024, 40);
    let d = Digest::sha256_of(&bytes);
    let start = std::time::Instant::now();
    let mut ing = s.ingest(&d, Some(bytes.len() as u64)).unwrap();
    // 16 KiB chunks, like an HTTP body stream.
    for chunk in bytes.chunks(16 * 1024) {
        ing.write_all(chunk).unwrap();
    }
    ing.flush().unwrap();
    let write_secs = start.elapsed().as_secs_f64();
    ing.commit().unwrap();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "write+hash {write_secs:.2}s, commit (fsync) {:.2}s",
        secs - write_secs
    );
    let start = std::time::Instant::now();
    let _ = Digest::sha256_of(&bytes);
    let hash_secs = start.elapsed().as_secs_f64();
    eprintln!(
        "ingest: {:.0} MB/s; sha256 alone: {:.0} MB/s",
        256.0 * 1.048_576 / secs,
        256.0 * 1.048_576 / hash_secs
    );
}
