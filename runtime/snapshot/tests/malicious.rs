//! A corpus of hostile layers. For each: the expected error or safe outcome, nothing outside the
//! layer directory touched (a canary directory stays as it was), and a failed unpack leaves no
//! directory behind.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::PathBuf;

use berth_snapshot::{
    DevicePolicy, LayerOutcome, SnapshotError, SnapshotMode, Snapshotter, UnpackError,
    UnpackOptions,
};
use common::{list, sha256, RawTar, H};

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    canary: PathBuf,
    snap: Snapshotter,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let canary = tmp.path().join("canary");
    std::fs::create_dir_all(canary.join("sub")).unwrap();
    std::fs::write(canary.join("sentinel"), b"keep").unwrap();
    let snap = Snapshotter::new(&root, SnapshotMode::Overlay).unwrap();
    Env {
        _tmp: tmp,
        root,
        canary,
        snap,
    }
}

impl Env {
    fn unpack(
        &self,
        tar: &[u8],
        opts: &UnpackOptions,
    ) -> (String, Result<LayerOutcome, SnapshotError>) {
        let id = sha256(tar);
        let r = self.snap.prepare_layer_from(
            &id,
            None,
            tar,
            "application/vnd.oci.image.layer.v1.tar",
            opts,
        );
        (id, r)
    }

    fn fs(&self, id: &str) -> PathBuf {
        self.snap.layer_dir(id).unwrap()
    }

    /// Nothing outside the layer dirs changed.
    fn assert_canary(&self) {
        assert_eq!(
            list(&self.canary),
            vec!["sentinel".to_string(), "sub".to_string()]
        );
        assert_eq!(
            std::fs::read(self.canary.join("sentinel")).unwrap(),
            b"keep"
        );
        let mut top: Vec<String> = std::fs::read_dir(&self.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(top, ["active", "l", "snapshots"]);
    }

    /// The unpack failed and left nothing behind.
    fn assert_failed_clean(&self, id: &str) {
        assert!(!self.snap.exists(id));
        let left: Vec<_> = std::fs::read_dir(self.root.join("snapshots"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        assert_eq!(std::fs::read_dir(self.root.join("l")).unwrap().count(), 0);
        self.assert_canary();
    }
}

fn unpack_err(r: Result<LayerOutcome, SnapshotError>) -> UnpackError {
    match r {
        Err(SnapshotError::Unpack { source, .. }) => source,
        other => panic!("expected an unpack error, got {other:?}"),
    }
}

fn opts() -> UnpackOptions {
    UnpackOptions::default()
}

#[test]
fn dotdot_path_is_refused() {
    let e = env();
    let tar = RawTar::new()
        .file("ok", b"1")
        .file("../../etc/berth-x", b"evil")
        .finish();
    let (id, r) = e.unpack(&tar, &opts());
    assert!(matches!(unpack_err(r), UnpackError::PathEscape { .. }));
    e.assert_failed_clean(&id);
    assert!(!std::path::Path::new("/etc/berth-x").exists());
}

#[test]
fn dotdot_into_canary_is_refused() {
    let e = env();
    // From root/snapshots/.tmp-x/fs, four levels up is the temp dir holding the canary.
    let tar = RawTar::new()
        .file("../../../../canary/evil", b"evil")
        .finish();
    let (id, r) = e.unpack(&tar, &opts());
    assert!(matches!(unpack_err(r), UnpackError::PathEscape { .. }));
    e.assert_failed_clean(&id);
}

#[test]
fn absolute_path_lands_inside() {
    let e = env();
    let abs = format!("{}/abs", e.canary.display());
    let tar = RawTar::new()
        .file("/abs/path", b"x")
        .file(&abs, b"y")
        .finish();
    let (id, r) = e.unpack(&tar, &opts());
    assert!(r.unwrap().created);
    let fs = e.fs(&id);
    assert_eq!(std::fs::read(fs.join("abs/path")).unwrap(), b"x");
    assert_eq!(
        std::fs::read(fs.join(abs.trim_start_matches('/'))).unwrap(),
        b"y"
    );
    e.assert_canary();
}

#[test]
fn write_through_absolute_symlink_stays_inside() {
    let e = env();
    let canary = e.canary.display().to_string();
    let tar = RawTar::new()
        .symlink("a", &canary)
        .file("a/file", b"evil")
        .finish();
    let (id, r) = e.unpack(&tar, &opts());
    // `a` resolves to <layer>/<canary path>, which does not exist in the layer: refused.
    assert!(r.is_err(), "{r:?}");
    e.assert_failed_clean(&id);

    // With the directory present inside the layer, the write lands there.
    let e = env();
    let tar = RawTar::new()
        .dir(canary.trim_start_matches('/'))
        .symlink("a", &canary)
        .file("a/file", b"inside")
        .finish();
    let (id, r) = e.unpack(&tar, &opts());
    r.unwrap();
    let inside = e.fs(&id).join(canary.trim_start_matches('/')).join("file");
    assert_eq!(std::fs::read(inside).unwrap(), b"inside");
    e.assert_canary();
}

#[test]
fn relative_symlink_escape_is_clamped() {
    let e = env();
    let tar = RawTar::new()
        .symlink("a", "../../..")
        .file("a/x", b"clamped")
        .finish();
    let (id, r) = e.unpack(&tar, &opts());
    r.unwrap();
    // `a` resolves to the layer root: the file lands at <layer>/x.
    assert_eq!(std::fs::read(e.fs(&id).join("x")).unwrap(), b"clamped");
    e.assert_canary();
}

#[test]
fn symlink_chain_to_root_is_clamped() {
    let e = env();
    let tar = RawTar::new()
        .symlink("a", "b")
        .symlink("b", "/")
        .file("a/chained", b"c")
        .dir("a/etc")
        .file("a/etc/passwd", b"not the host's")
        .finish();
    let (id, r) = e.unpack(&tar, &opts());
    r.unwrap();
    let fs = e.fs(&id);
    assert_eq!(std::fs::read(fs.join("chained")).unwrap(), b"c");
    assert_eq!(
        std::fs::read(fs.join("etc/passwd")).unwrap(),
        b"not the host's"
    );
    e.assert_canary();
}

#[test]
fn hardlink_to_host_file_is_refused() {
    let e = env();
    let tar = RawTar::new().hardlink("pw", "/etc/passwd").finish();
    let (id, r) = e.unpack(&tar, &opts());
    assert!(matches!(unpack_err(r), UnpackError::HardlinkTarget { .. }));
    e.assert_failed_clean(&id);
}

#[test]
fn hardlink_outside_is_refused() {
    let e = env();
    let tar = RawTar::new()
        .hardlink("s", "../../../../canary/sentinel")
        .finish();
    let (id, r) = e.unpack(&tar, &opts());
    assert!(matches!(unpack_err(r), UnpackError::HardlinkTarget { .. }));
    e.assert_failed_clean(&id);

    // Through a symlink pointing out: resolved inside, so the target does not exist.
    let e = env();
    let canary = e.canary.display().to_string();
    let tar = RawTar::new()
        .symlink("out", &canary)
        .hardlink("s", "out/sentinel")
        .finish();
    let (id, r) = e.unpack(&tar, &opts());
    assert!(matches!(unpack_err(r), UnpackError::HardlinkTarget { .. }));
    e.assert_failed_clean(&id);
    // The sentinel's link count is unchanged.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(e.canary.join("sentinel"))
            .unwrap()
            .nlink(),
        1
    );
}

#[test]
fn hardlink_to_later_entry_is_refused() {
    let e = env();
    let tar = RawTar::new().hardlink("a", "b").file("b", b"x").finish();
    let (id, r) = e.unpack(&tar, &opts());
    assert!(matches!(unpack_err(r), UnpackError::HardlinkTarget { .. }));
    e.assert_failed_clean(&id);
}

#[test]
fn directory_replaced_by_symlink_then_written_through() {
    let e = env();
    let canary = e.canary.display().to_string();
    let tar = RawTar::new()
        .dir("d")
        .file("d/f", b"1")
        .symlink("d", &canary)
        .file("d/evil", b"x")
        .finish();
    let (id, r) = e.unpack(&tar, &opts());
    assert!(r.is_err());
    e.assert_failed_clean(&id);

    let e = env();
    let tar = RawTar::new()
        .dir("d")
        .file("d/f", b"1")
        .symlink("d", "/")
        .file("d/g", b"x")
        .finish();
    let (id, r) = e.unpack(&tar, &opts());
    r.unwrap();
    let fs = e.fs(&id);
    assert!(fs
        .join("d")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(fs.join("g")).unwrap(), b"x");
    e.assert_canary();
}

#[test]
fn nul_in_name_is_refused() {
    let e = env();
    let mut t = RawTar::new();
    t.pax(&[(b"path", b"a\0/../../x")])
        .file("placeholder", b"x");
    let tar = t.finish();
    let (id, r) = e.unpack(&tar, &opts());
    assert!(matches!(unpack_err(r), UnpackError::NulInName { .. }));
    e.assert_failed_clean(&id);

    let e = env();
    let mut t = RawTar::new();
    t.pax(&[(b"linkpath", b"tar\0get")]).symlink("s", "x");
    let tar = t.finish();
    let (id, r) = e.unpack(&tar, &opts());
    assert!(matches!(unpack_err(r), UnpackError::NulInName { .. }));
    e.assert_failed_clean(&id);
}

#[test]
fn devices_refused_or_skipped_by_policy() {
    let e = env();
    let tar = RawTar::new().chardev("mem", 1, 1).finish();
    let refuse = UnpackOptions {
        devices: DevicePolicy::Refuse,
        ..opts()
    };
    let (id, r) = e.unpack(&tar, &refuse);
    assert!(matches!(unpack_err(r), UnpackError::DeviceRefused { .. }));
    e.assert_failed_clean(&id);

    let skip = UnpackOptions {
        devices: DevicePolicy::Skip,
        ..opts()
    };
    let (id, r) = e.unpack(&tar, &skip);
    let out = r.unwrap();
    assert_eq!(out.stats.unwrap().skipped_devices, 1);
    assert!(!e.fs(&id).join("mem").exists());
    e.assert_canary();
}

#[test]
fn entry_count_bomb() {
    let e = env();
    let mut t = RawTar::new();
    for i in 0..500 {
        t.file(&format!("f{i}"), b"");
    }
    let tar = t.finish();
    let capped = UnpackOptions {
        max_entries: 100,
        ..opts()
    };
    let (id, r) = e.unpack(&tar, &capped);
    assert!(matches!(
        unpack_err(r),
        UnpackError::TooManyEntries { limit: 100 }
    ));
    e.assert_failed_clean(&id);
}

#[test]
fn size_bomb_gzip_of_zeros() {
    let e = env();
    // One 64 MiB file of zeros: well under 1 MiB of gzip.
    let size: u64 = 64 << 20;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut t = RawTar::new();
    t.header(&H {
        name: b"zeros",
        size,
        ..H::default()
    });
    gz.write_all(&t.buf).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(size >> 20) {
        gz.write_all(&zeros).unwrap();
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    let blob = gz.finish().unwrap();
    assert!(blob.len() < 1 << 20, "{}", blob.len());
    let capped = UnpackOptions {
        max_bytes: 8 << 20,
        ..opts()
    };
    let id = sha256(b"whatever");
    let r = e.snap.prepare_layer_from(
        &id,
        None,
        &blob[..],
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &capped,
    );
    let err = unpack_err(r);
    assert!(matches!(err, UnpackError::TooLarge { limit } if limit == 8 << 20));
    assert!(err.to_string().contains("limit"), "{err}");
    e.assert_failed_clean(&id);
}

#[test]
fn trailing_garbage_bomb_after_end_of_archive() {
    // The end-of-archive marker followed by lots of zeros: still capped while hashing.
    let e = env();
    let mut data = RawTar::new().file("a", b"1").finish();
    data.extend(std::iter::repeat_n(0u8, 8 << 20));
    let blob = common::gzip(&data);
    let capped = UnpackOptions {
        max_bytes: 1 << 20,
        ..opts()
    };
    let id = sha256(b"x");
    let r = e.snap.prepare_layer_from(&id, None, &blob[..], "", &capped);
    assert!(matches!(unpack_err(r), UnpackError::TooLarge { .. }));
    e.assert_failed_clean(&id);
}

#[test]
fn long_name_record_bomb() {
    let e = env();
    let mut t = RawTar::new();
    let huge = vec![b'a'; 2 << 20];
    t.header(&H {
        name: b"././@LongLink",
        kind: b'L',
        size: huge.len() as u64,
        ..H::default()
    });
    t.data(&huge);
    t.file("x", b"1");
    let tar = t.finish();
    let (id, r) = e.unpack(&tar, &opts());
    assert!(matches!(unpack_err(r), UnpackError::Malformed(_)));
    e.assert_failed_clean(&id);
}

#[test]
fn corrupt_and_truncated_streams() {
    let e = env();
    let mut tar = RawTar::new().file("a", &[7u8; 3000]).finish();
    tar[150] ^= 0x55; // inside the checksum-covered header
    let (id, r) = e.unpack(&tar, &opts());
    assert!(matches!(unpack_err(r), UnpackError::Malformed(_)));
    e.assert_failed_clean(&id);

    let tar = RawTar::new().file("a", &[7u8; 3000]).finish();
    let (id, r) = e.unpack(&tar[..1500], &opts());
    assert!(matches!(unpack_err(r), UnpackError::Truncated));
    e.assert_failed_clean(&id);

    let gz = common::gzip(&tar);
    let id = sha256(b"y");
    let r = e
        .snap
        .prepare_layer_from(&id, None, &gz[..gz.len() / 2], "", &opts());
    assert!(r.is_err());
    e.assert_failed_clean(&id);
}

#[test]
fn whiteout_with_traversal_is_refused() {
    let e = env();
    let tar = RawTar::new().file(".wh...", b"").finish();
    let (id, r) = e.unpack(&tar, &opts());
    assert!(matches!(unpack_err(r), UnpackError::BadWhiteout { .. }));
    e.assert_failed_clean(&id);
}

#[test]
fn trusted_overlay_xattrs_from_layer_are_ignored() {
    let e = env();
    let mut t = RawTar::new();
    t.pax(&[
        (b"SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        (b"SCHILY.xattr.user.ok", b"1"),
    ])
    .dir("d");
    let tar = t.finish();
    let (id, r) = e.unpack(&tar, &opts());
    let stats = r.unwrap().stats.unwrap();
    assert_eq!(stats.ignored_xattrs, 1);
    let d = e.fs(&id).join("d");
    assert_eq!(common::xattr(&d, "trusted.overlay.redirect"), None);
    assert_eq!(common::xattr(&d, "user.ok").as_deref(), Some(&b"1"[..]));
}

#[test]
fn diff_id_mismatch_fails_and_cleans_up() {
    let e = env();
    let tar = RawTar::new().file("a", b"1").finish();
    let o = UnpackOptions {
        expected_diff_id: Some(sha256(b"other")),
        ..opts()
    };
    let (id, r) = e.unpack(&tar, &o);
    assert!(matches!(unpack_err(r), UnpackError::DiffIdMismatch { .. }));
    e.assert_failed_clean(&id);
}
