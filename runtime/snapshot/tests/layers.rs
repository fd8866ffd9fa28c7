//! A multi-layer image (whiteouts, opaque dirs, hard links, symlinks, xattrs, setuid bits,
//! owners, mtimes, devices), assembled by overlayfs and by the copy fallback; compression and
//! diff_id checks; many-layer overlays.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_snapshot::{
    chain_id, mount, mount_overlay_legacy, unpack_layer, Compression, MountGuard, Mounts,
    SnapshotError, SnapshotMode, Snapshotter, UnpackOptions, UsageKind, WhiteoutMode,
};
use common::{sha256, RawTar, H};

const MTIME: i64 = 1_600_000_000;

/// security.capability v2 granting cap_net_bind_service (bit 10), effective.
const CAP: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn layer1() -> Vec<u8> {
    let mut t = RawTar::new();
    t.dir("./")
        .dir("etc/")
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
        .file("etc/deleteme", b"gone in layer 2")
        .file("etc/keep", b"v1")
        .symlink("etc/link", "passwd")
        .dir("opq/")
        .file("opq/old1", b"old")
        .dir("opq/sub/")
        .file("opq/sub/old2", b"old")
        .dir("olddir/")
        .file("olddir/inner", b"x");
    t.header(&H {
        name: b"bin/",
        kind: b'5',
        mode: 0o755,
        ..H::default()
    });
    t.header(&H {
        name: b"bin/tool",
        mode: 0o4755,
        uid: 1000,
        gid: 1000,
        size: 4,
        ..H::default()
    });
    t.data(b"tool");
    t.hardlink("bin/tool2", "bin/tool");
    t.header(&H {
        name: b"tmp/",
        kind: b'5',
        mode: 0o1777,
        ..H::default()
    });
    t.header(&H {
        name: b"bin/sgid",
        mode: 0o2711,
        gid: 50,
        size: 1,
        ..H::default()
    });
    t.data(b"g");
    t.pax(&[
        (b"SCHILY.xattr.security.capability", &CAP),
        (b"SCHILY.xattr.user.note", b"hello"),
        (b"mtime", b"1600000123.5"),
    ]);
    t.file("bin/ping", b"ping");
    t.chardev("dev-null", 1, 3);
    t.header(&H {
        name: b"fifo",
        kind: b'6',
        mode: 0o600,
        ..H::default()
    });
    // A long name via PAX, and one via GNU 'L'.
    let long = format!("deep/{}/file", "d".repeat(150));
    t.pax(&[(b"path", long.as_bytes())])
        .file("placeholder", b"pax-long");
    let long2 = format!("gnu/{}", "g".repeat(200));
    t.header(&H {
        name: b"././@LongLink",
        kind: b'L',
        size: long2.len() as u64 + 1,
        ..H::default()
    });
    let mut n = long2.into_bytes();
    n.push(0);
    t.data(&n);
    t.file("truncated-name", b"gnu-long");
    t.finish()
}

fn layer2() -> Vec<u8> {
    let mut t = RawTar::new();
    t.mtime = MTIME as u64 + 100;
    t.dir("etc/")
        .file("etc/.wh.deleteme", b"")
        .file("etc/keep", b"v2")
        .file(".wh.olddir", b"")
        .dir("opq/")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/new", b"new")
        .file("bin/a", b"shared")
        .hardlink("bin/b", "bin/a");
    t.finish()
}

fn layer3() -> Vec<u8> {
    // Re-creates a deleted name, and deletes a file from layer 1 by whiteout.
    let mut t = RawTar::new();
    t.mtime = MTIME as u64 + 200;
    t.file("etc/deleteme", b"back").file("etc/.wh.link", b"");
    t.finish()
}

fn commit(s: &Snapshotter, layers: &[Vec<u8>]) -> String {
    let mut parent: Option<String> = None;
    for (i, l) in layers.iter().enumerate() {
        let diff = sha256(l);
        let chain = chain_id(parent.as_deref(), &diff);
        let blob = if i % 2 == 0 {
            common::gzip(l)
        } else {
            common::zstd(l)
        };
        let mt = if i % 2 == 0 {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar+zstd"
        };
        let opts = UnpackOptions {
            expected_diff_id: Some(diff.clone()),
            ..UnpackOptions::default()
        };
        let out = s
            .prepare_layer_from(&chain, parent.as_deref(), &blob[..], mt, &opts)
            .unwrap();
        assert!(out.created);
        assert_eq!(out.stats.unwrap().diff_id, diff);
        parent = Some(chain);
    }
    parent.unwrap()
}

fn check_merged(m: &Path) {
    // Whiteouts applied.
    assert_eq!(std::fs::read(m.join("etc/deleteme")).unwrap(), b"back");
    assert!(m.join("etc/link").symlink_metadata().is_err());
    assert!(!m.join("olddir").exists());
    assert_eq!(std::fs::read(m.join("etc/keep")).unwrap(), b"v2");
    // Opaque directory: only the new contents.
    let mut opq: Vec<_> = std::fs::read_dir(m.join("opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    opq.sort();
    assert_eq!(opq, ["new"]);
    // Hard links share an inode.
    let t1 = std::fs::metadata(m.join("bin/tool")).unwrap();
    let t2 = std::fs::metadata(m.join("bin/tool2")).unwrap();
    assert_eq!(t1.ino(), t2.ino());
    let a = std::fs::metadata(m.join("bin/a")).unwrap();
    let b = std::fs::metadata(m.join("bin/b")).unwrap();
    assert_eq!(a.ino(), b.ino());
    // Owners and special mode bits (set after chown).
    assert_eq!(t1.mode() & 0o7777, 0o4755);
    assert_eq!((t1.uid(), t1.gid()), (1000, 1000));
    let g = std::fs::metadata(m.join("bin/sgid")).unwrap();
    assert_eq!(g.mode() & 0o7777, 0o2711);
    assert_eq!(g.gid(), 50);
    assert_eq!(
        std::fs::metadata(m.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    // xattrs, including a file capability, and a PAX fractional mtime.
    let ping = m.join("bin/ping");
    assert_eq!(
        common::xattr(&ping, "security.capability").as_deref(),
        Some(&CAP[..])
    );
    assert_eq!(
        common::xattr(&ping, "user.note").as_deref(),
        Some(&b"hello"[..])
    );
    let pm = std::fs::metadata(&ping).unwrap();
    assert_eq!((pm.mtime(), pm.mtime_nsec()), (1_600_000_123, 500_000_000));
    // mtimes of files.
    assert_eq!(
        std::fs::metadata(m.join("etc/passwd")).unwrap().mtime(),
        MTIME
    );
    // Devices and fifos.
    let dn = std::fs::symlink_metadata(m.join("dev-null")).unwrap();
    assert!(dn.file_type().is_char_device());
    assert_eq!(dn.rdev(), libc::makedev(1, 3));
    assert!(std::fs::symlink_metadata(m.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    // Long names.
    let long = format!("deep/{}/file", "d".repeat(150));
    assert_eq!(std::fs::read(m.join(long)).unwrap(), b"pax-long");
    let long2 = format!("gnu/{}", "g".repeat(200));
    assert_eq!(std::fs::read(m.join(long2)).unwrap(), b"gnu-long");
}

fn setup(mode: SnapshotMode) -> (tempfile::TempDir, Snapshotter, String) {
    let tmp = tempfile::tempdir().unwrap();
    let s = Snapshotter::new(tmp.path().join("root"), mode).unwrap();
    let top = commit(&s, &[layer1(), layer2(), layer3()]);
    (tmp, s, top)
}

#[test]
fn overlay_merged_view() {
    let (tmp, s, top) = setup(SnapshotMode::Overlay);
    assert!(!s.is_copy_mode());
    // Layer dirs hold overlay-format whiteouts and opaque markers.
    let l2 = s
        .layer_dir(&chain_id(Some(&sha256(&layer1())), &sha256(&layer2())))
        .unwrap();
    let wh = std::fs::symlink_metadata(l2.join("etc/deleteme")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert_eq!(
        common::xattr(&l2.join("opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    // Directory mtimes are set after their contents.
    let l1 = s.layer_dir(&sha256(&layer1())).unwrap();
    assert_eq!(std::fs::metadata(l1.join("etc")).unwrap().mtime(), MTIME);
    assert_eq!(std::fs::metadata(&l1).unwrap().mtime(), MTIME);

    let mounts = s.prepare_container("c1", Some(&top)).unwrap();
    let Mounts::Overlay {
        lowerdirs,
        upperdir,
        ..
    } = &mounts
    else {
        panic!("expected overlay: {mounts:?}");
    };
    assert_eq!(lowerdirs.len(), 3);
    // Top first.
    assert_eq!(
        std::fs::canonicalize(&lowerdirs[0]).unwrap(),
        s.layer_dir(&top).unwrap()
    );
    let target = tmp.path().join("merged");
    std::fs::create_dir(&target).unwrap();
    mount(&mounts, &target).unwrap();
    let guard = MountGuard(target.clone());
    check_merged(&target);
    // Writes go to the upper dir only.
    std::fs::write(target.join("etc/new"), b"w").unwrap();
    std::fs::remove_file(target.join("etc/passwd")).unwrap();
    let upper = upperdir.clone().unwrap();
    assert_eq!(std::fs::read(upper.join("etc/new")).unwrap(), b"w");
    assert!(l1.join("etc/passwd").exists());
    // The same mounts can be recomputed later.
    assert_eq!(s.mounts("c1").unwrap(), mounts);
    // Layers in use cannot be removed.
    assert!(matches!(
        s.remove_layer(&top),
        Err(SnapshotError::InUse { .. })
    ));
    assert!(matches!(
        s.remove_layer(&sha256(&layer1())),
        Err(SnapshotError::InUse { .. })
    ));
    // Usage: three layers and one container.
    let u = s.usage().unwrap();
    assert_eq!(u.iter().filter(|x| x.kind == UsageKind::Layer).count(), 3);
    let c = u.iter().find(|x| x.id == "c1").unwrap();
    assert!(c.size >= 1);
    drop(guard);
    s.remove_container("c1").unwrap();
    s.remove_layer(&top).unwrap();
    assert!(!s.exists(&top));
}

#[test]
fn legacy_mount_api_and_read_only_view() {
    let (tmp, s, top) = setup(SnapshotMode::Overlay);
    let view = s.prepare_view("v1", &top).unwrap();
    assert!(view.readonly());
    let target = tmp.path().join("view");
    std::fs::create_dir(&target).unwrap();
    mount_overlay_legacy(&view, &target).unwrap();
    let _g = MountGuard(target.clone());
    check_merged(&target);
    assert!(std::fs::write(target.join("x"), b"1").is_err());

    // One layer read-only: a bind.
    let base = sha256(&layer1());
    let v2 = s.prepare_view("v2", &base).unwrap();
    assert!(matches!(v2, Mounts::Bind { readonly: true, .. }));
}

#[test]
fn copy_fallback_merged_view() {
    let (tmp, s, top) = setup(SnapshotMode::Copy);
    assert!(s.is_copy_mode());
    let mounts = s.prepare_container("c1", Some(&top)).unwrap();
    let Mounts::Bind { source, readonly } = &mounts else {
        panic!("expected bind: {mounts:?}");
    };
    assert!(!readonly);
    check_merged(source);
    // No overlay artefacts in copy mode.
    assert!(common::xattr(&source.join("opq"), "trusted.overlay.opaque").is_none());
    let target = tmp.path().join("merged");
    std::fs::create_dir(&target).unwrap();
    mount(&mounts, &target).unwrap();
    let _g = MountGuard(target.clone());
    check_merged(&target);
    // The container's copy is independent of the committed layer.
    std::fs::write(target.join("etc/keep"), b"changed").unwrap();
    assert_eq!(
        std::fs::read(s.layer_dir(&top).unwrap().join("etc/keep")).unwrap(),
        b"v2"
    );
}

#[test]
fn auto_mode_picks_overlay_here() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Snapshotter::new(tmp.path().join("root"), SnapshotMode::Auto).unwrap();
    assert!(!s.is_copy_mode());
    // The probe leaves nothing behind.
    let mut names: Vec<_> = std::fs::read_dir(s.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["active", "l", "snapshots"]);
}

#[test]
fn compressions_and_diff_ids() {
    let tar = layer1();
    let diff = sha256(&tar);
    let cases: Vec<(Vec<u8>, &str, Compression)> = vec![
        (
            tar.clone(),
            "application/vnd.oci.image.layer.v1.tar",
            Compression::None,
        ),
        (
            common::gzip(&tar),
            "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Gzip,
        ),
        (
            common::gzip(&tar),
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Compression::Gzip,
        ),
        (
            common::zstd(&tar),
            "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::Zstd,
        ),
        // Mislabelled: sniffed.
        (
            common::gzip(&tar),
            "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip,
        ),
        (
            common::zstd(&tar),
            "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd,
        ),
        (
            tar.clone(),
            "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None,
        ),
    ];
    for (blob, mt, comp) in cases {
        for pipelined in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let opts = UnpackOptions {
                pipelined,
                ..UnpackOptions::default()
            };
            let st = unpack_layer(&blob[..], mt, dir.path(), &opts).unwrap();
            assert_eq!(st.diff_id, diff, "{mt}");
            assert_eq!(st.compression, comp, "{mt}");
            assert_eq!(st.tar_bytes, tar.len() as u64);
            assert_eq!(std::fs::read(dir.path().join("bin/tool")).unwrap(), b"tool");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    assert!(unpack_layer(&tar[..], "text/html", dir.path(), &UnpackOptions::default()).is_err());
}

#[test]
fn tar_crate_archive_unpacks() {
    // An archive from another writer (GNU format, long names, PAX xattrs).
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o750);
    h.set_uid(5);
    h.set_gid(6);
    h.set_mtime(MTIME as u64);
    h.set_size(0);
    b.append_data(&mut h, "dir/", &[][..]).unwrap();
    let long = format!("dir/{}", "n".repeat(180));
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o640);
    h.set_mtime(MTIME as u64);
    h.set_size(5);
    b.append_data(&mut h, &long, &b"hello"[..]).unwrap();
    b.append_pax_extensions([("SCHILY.xattr.user.k", &b"v"[..])])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o600);
    h.set_size(1);
    h.set_mtime(MTIME as u64);
    b.append_data(&mut h, "dir/x", &b"1"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let st = unpack_layer(&tar[..], "", dir.path(), &UnpackOptions::default()).unwrap();
    assert_eq!(st.diff_id, sha256(&tar));
    let d = std::fs::metadata(dir.path().join("dir")).unwrap();
    assert_eq!(
        (d.mode() & 0o7777, d.uid(), d.gid(), d.mtime()),
        (0o750, 5, 6, MTIME)
    );
    assert_eq!(std::fs::read(dir.path().join(&long)).unwrap(), b"hello");
    assert_eq!(
        common::xattr(&dir.path().join("dir/x"), "user.k").as_deref(),
        Some(&b"v"[..])
    );
}

#[test]
fn id_mapping_and_delete_mode() {
    let dir = tempfile::tempdir().unwrap();
    let opts = UnpackOptions {
        id_map: Some(berth_snapshot::IdMap {
            uids: vec![berth_snapshot::IdRange {
                container_id: 0,
                host_id: 100_000,
                size: 65536,
            }],
            gids: vec![berth_snapshot::IdRange {
                container_id: 0,
                host_id: 200_000,
                size: 65536,
            }],
        }),
        ..UnpackOptions::default()
    };
    unpack_layer(&layer1()[..], "", dir.path(), &opts).unwrap();
    let t = std::fs::metadata(dir.path().join("bin/tool")).unwrap();
    assert_eq!((t.uid(), t.gid()), (101_000, 201_000));
    assert_eq!(t.mode() & 0o7777, 0o4755);
    let p = std::fs::metadata(dir.path().join("etc/passwd")).unwrap();
    assert_eq!((p.uid(), p.gid()), (100_000, 200_000));

    // Delete mode: a whiteout only hides lower content, never the same layer's.
    let d2 = tempfile::tempdir().unwrap();
    std::fs::write(d2.path().join("lower"), b"l").unwrap();
    let tar = RawTar::new()
        .file("same", b"s")
        .file(".wh.same", b"")
        .file(".wh.lower", b"")
        .finish();
    let o = UnpackOptions {
        whiteouts: WhiteoutMode::Delete,
        ..UnpackOptions::default()
    };
    unpack_layer(&tar[..], "", d2.path(), &o).unwrap();
    assert!(d2.path().join("same").exists());
    assert!(!d2.path().join("lower").exists());
}

#[test]
fn concurrent_prepare_same_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Snapshotter::new(tmp.path().join("root"), SnapshotMode::Overlay).unwrap();
    let tar = layer1();
    let id = sha256(&tar);
    let created: Vec<bool> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                sc.spawn(|| {
                    s.prepare_layer(&id, None, |dir, mode| {
                        let o = UnpackOptions {
                            whiteouts: mode,
                            ..UnpackOptions::default()
                        };
                        let st = unpack_layer(&tar[..], "", dir, &o);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        st
                    })
                    .unwrap()
                    .created
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(created.iter().filter(|c| **c).count(), 1);
    assert_eq!(s.layers().unwrap(), vec![id.clone()]);
    let left: Vec<_> = std::fs::read_dir(s.root().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

#[test]
fn many_layers() {
    let tmp = tempfile::tempdir().unwrap();
    // A deliberately long root path, so the plain lowerdir= string would exceed a page.
    let root: PathBuf = tmp.path().join("r".repeat(60)).join("snapshotter-root");
    let s = Snapshotter::new(&root, SnapshotMode::Overlay).unwrap();
    let mut parent: Option<String> = None;
    let n = 120;
    for i in 0..n {
        let tar = RawTar::new()
            .file(&format!("f{i}"), format!("{i}").as_bytes())
            .finish();
        let chain = chain_id(parent.as_deref(), &sha256(&tar));
        s.prepare_layer_from(
            &chain,
            parent.as_deref(),
            &tar[..],
            "",
            &UnpackOptions::default(),
        )
        .unwrap();
        parent = Some(chain);
    }
    let top = parent.unwrap();
    let m = s.prepare_container("many", Some(&top)).unwrap();
    let full_len: usize = m.options().iter().map(|o| o.len()).sum();
    assert!(full_len > 4096, "{full_len}");
    for (k, legacy) in [("a", false), ("b", true)] {
        let target = tmp.path().join(format!("m{k}"));
        std::fs::create_dir(&target).unwrap();
        if legacy {
            mount_overlay_legacy(&m, &target).unwrap();
        } else {
            mount(&m, &target).unwrap();
        }
        let _g = MountGuard(target.clone());
        for i in [0, 57, n - 1] {
            assert_eq!(
                std::fs::read(target.join(format!("f{i}"))).unwrap(),
                format!("{i}").as_bytes()
            );
        }
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), n);
    }
}

#[test]
fn empty_rootfs_container() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Snapshotter::new(tmp.path().join("root"), SnapshotMode::Overlay).unwrap();
    let m = s.prepare_container("scratch", None).unwrap();
    assert!(matches!(
        m,
        Mounts::Bind {
            readonly: false,
            ..
        }
    ));
    assert!(matches!(
        s.prepare_container("scratch", None),
        Err(SnapshotError::KeyExists(_))
    ));
    assert!(matches!(
        s.prepare_container("x", Some(&sha256(b"missing"))),
        Err(SnapshotError::NotFound(_))
    ));
    // The failed prepare left nothing.
    assert!(!s.root().join("active/x").exists());
    s.remove_container("scratch").unwrap();
}

#[test]
fn unused_header_fields_tolerated() {
    // A v7-style entry: directory by trailing slash on a regular type, no ustar magic.
    let mut t = RawTar::new();
    t.header(&H {
        name: b"olddir/",
        kind: b'0',
        mode: 0o700,
        ..H::default()
    });
    let tar = t.finish();
    let dir = tempfile::tempdir().unwrap();
    unpack_layer(&tar[..], "", dir.path(), &UnpackOptions::default()).unwrap();
    assert!(dir.path().join("olddir").is_dir());
}
