//! export_tar round trips: a tree exported and unpacked elsewhere is the same tree, and the
//! stream is deterministic.
#![allow(clippy::unwrap_used)]

mod common;

use berth_snapshot::{
    chain_id, export_mounts, export_tar, unpack_layer, SnapshotMode, Snapshotter, UnpackOptions,
};
use common::{sha256, snapshot_tree, RawTar, H};

fn sample_tree() -> Vec<u8> {
    let mut t = RawTar::new();
    t.dir("a/")
        .dir("a/b/")
        .file("a/b/c", b"hello")
        .symlink("a/s", "b/c");
    t.hardlink("a/h", "a/b/c");
    t.header(&H {
        name: b"suid",
        mode: 0o4750,
        uid: 3000,
        gid: 4000,
        size: 3,
        ..H::default()
    });
    t.data(b"abc");
    t.pax(&[
        (b"SCHILY.xattr.user.x", b"\x00\x01binary"),
        (b"uid", b"3000000"),
    ])
    .file("x", &[9u8; 70_000]);
    t.chardev("null", 1, 3);
    t.header(&H {
        name: b"fifo",
        kind: b'6',
        mode: 0o640,
        ..H::default()
    });
    let long = format!("long/{}/{}", "a".repeat(120), "b".repeat(120));
    t.pax(&[(b"path", long.as_bytes())]).file("p", b"long");
    t.pax(&[(b"linkpath", long.as_bytes())])
        .symlink("longlink", "x");
    t.file("empty", b"");
    t.finish()
}

#[test]
fn round_trip_and_determinism() {
    let a = tempfile::tempdir().unwrap();
    unpack_layer(&sample_tree()[..], "", a.path(), &UnpackOptions::default()).unwrap();
    let mut out1 = Vec::new();
    export_tar(a.path(), &mut out1).unwrap();
    let mut out2 = Vec::new();
    export_tar(a.path(), &mut out2).unwrap();
    assert_eq!(out1, out2, "export is deterministic");

    let b = tempfile::tempdir().unwrap();
    let st = unpack_layer(&out1[..], "", b.path(), &UnpackOptions::default()).unwrap();
    assert_eq!(st.diff_id, sha256(&out1));
    let ta = snapshot_tree(a.path(), true);
    let tb = snapshot_tree(b.path(), true);
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (k, na) in &ta {
        assert_eq!(Some(na), tb.get(k), "{k}");
    }
    assert_eq!(ta["x"].uid, 3_000_000);
    assert_eq!(ta["a/h"].link_group.as_deref(), Some("a/b/c"));

    // The tar crate reads our stream too.
    let mut ar = tar::Archive::new(&out1[..]);
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("long/")));
    let mut sorted = names.clone();
    sorted.sort();
    // Depth-first in byte order: "a/" sorts before "a/b/" etc.
    assert_eq!(names.first().map(String::as_str), Some("a/"));
}

#[test]
fn export_of_overlay_mounts() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Snapshotter::new(tmp.path().join("root"), SnapshotMode::Overlay).unwrap();
    let l1 = RawTar::new().file("keep", b"1").file("gone", b"2").finish();
    let l2 = RawTar::new()
        .file(".wh.gone", b"")
        .file("new", b"3")
        .finish();
    let c1 = sha256(&l1);
    let c2 = chain_id(Some(&c1), &sha256(&l2));
    s.prepare_layer_from(&c1, None, &l1[..], "", &UnpackOptions::default())
        .unwrap();
    s.prepare_layer_from(&c2, Some(&c1), &l2[..], "", &UnpackOptions::default())
        .unwrap();
    let m = s.prepare_container("c", Some(&c2)).unwrap();
    // A file written by the "container" into its upper dir.
    if let berth_snapshot::Mounts::Overlay {
        upperdir: Some(u), ..
    } = &m
    {
        std::fs::write(u.join("upper-file"), b"4").unwrap();
    }
    let mut out = Vec::new();
    export_mounts(&m, &mut out).unwrap();
    let d = tempfile::tempdir().unwrap();
    unpack_layer(&out[..], "", d.path(), &UnpackOptions::default()).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["keep", "new", "upper-file"]);
}
