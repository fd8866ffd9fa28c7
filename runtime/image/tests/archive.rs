//! save / load / import round trips through real archives.

use std::fs;
use std::io::Cursor;
use std::path::Path;

use berth_image::archive::{self, ArchiveError, ImportOptions};
use berth_image::manifest::{AnyManifest, ImageConfig};
use berth_image::{ContentStore, Digest, ImageStore};

struct Stores {
    _dir: tempfile::TempDir,
    content: ContentStore,
    images: ImageStore,
    scratch: std::path::PathBuf,
}

fn stores() -> Stores {
    let dir = tempfile::tempdir().expect("tempdir");
    let content = ContentStore::open(&dir.path().join("content")).expect("content store");
    let images = ImageStore::open(&dir.path().join("images")).expect("image store");
    let scratch = dir.path().join("scratch");
    fs::create_dir(&scratch).expect("scratch");
    Stores {
        _dir: dir,
        content,
        images,
        scratch,
    }
}

fn fresh_scratch(s: &Stores, name: &str) -> std::path::PathBuf {
    let p = s.scratch.join(name);
    fs::create_dir_all(&p).expect("scratch dir");
    p
}

/// A tar with one file, built in memory.
fn rootfs_tar(content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "greeting.txt", content)
        .expect("append");
    b.into_inner().expect("tar")
}

fn config_of(s: &Stores, name: &str) -> ImageConfig {
    let record = s.images.get(name).expect("get").expect("record exists");
    let bytes = s.content.read_all(&record.digest).expect("manifest");
    let AnyManifest::Manifest(m) =
        AnyManifest::parse(Some(&record.media_type), &bytes).expect("parse")
    else {
        panic!("expected a manifest");
    };
    ImageConfig::parse(&s.content.read_all(&m.config.digest).expect("config")).expect("config json")
}

#[test]
fn import_records_the_diff_id_and_options() {
    let s = stores();
    let tar = rootfs_tar(b"hi\n");
    let opts = ImportOptions {
        name: Some("docker.io/library/imported:v1".into()),
        cmd: Some(vec!["/bin/sh".into()]),
        ..ImportOptions::default()
    };
    archive::import(
        &s.content,
        &s.images,
        Cursor::new(&tar),
        &fresh_scratch(&s, "i"),
        &opts,
    )
    .expect("import");
    let config = config_of(&s, "docker.io/library/imported:v1");
    assert_eq!(config.rootfs.diff_ids, vec![Digest::sha256_of(&tar)]);
    assert_eq!(
        config.config.and_then(|c| c.cmd),
        Some(vec!["/bin/sh".to_string()])
    );
}

#[test]
fn gzip_import_hashes_the_uncompressed_tar() {
    use std::io::Write;
    let s = stores();
    let tar = rootfs_tar(b"compressed\n");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let opts = ImportOptions {
        name: Some("docker.io/library/gz:latest".into()),
        ..ImportOptions::default()
    };
    archive::import(
        &s.content,
        &s.images,
        Cursor::new(&gz),
        &fresh_scratch(&s, "g"),
        &opts,
    )
    .expect("import");
    assert_eq!(
        config_of(&s, "docker.io/library/gz:latest").rootfs.diff_ids,
        vec![Digest::sha256_of(&tar)]
    );
}

#[test]
fn save_then_load_into_a_fresh_store_round_trips() {
    let a = stores();
    let opts = ImportOptions {
        name: Some("docker.io/library/round:trip".into()),
        ..ImportOptions::default()
    };
    archive::import(
        &a.content,
        &a.images,
        Cursor::new(rootfs_tar(b"x")),
        &fresh_scratch(&a, "i"),
        &opts,
    )
    .expect("import");
    let mut saved = Vec::new();
    archive::save(
        &a.content,
        &a.images,
        &["round:trip".to_string()],
        &mut saved,
    )
    .expect("save");

    // The archive speaks both dialects.
    let mut names: Vec<String> = tar::Archive::new(Cursor::new(&saved))
        .entries()
        .expect("entries")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert!(names.contains(&"index.json".to_string()), "{names:?}");
    assert!(names.contains(&"manifest.json".to_string()), "{names:?}");
    assert!(names.contains(&"oci-layout".to_string()), "{names:?}");

    let b = stores();
    let loaded = archive::load(
        &b.content,
        &b.images,
        Cursor::new(&saved),
        &fresh_scratch(&b, "l"),
    )
    .expect("load");
    assert!(
        loaded.contains(&"docker.io/library/round:trip".to_string()),
        "{loaded:?}"
    );
    let before = a
        .images
        .get("docker.io/library/round:trip")
        .expect("get")
        .expect("a");
    let after = b
        .images
        .get("docker.io/library/round:trip")
        .expect("get")
        .expect("b");
    assert_eq!(before.digest, after.digest);
    assert!(b.content.verify().expect("verify").is_consistent());
}

#[test]
fn legacy_docker_archive_with_shared_layer_links_loads() {
    let s = stores();
    let layer = rootfs_tar(b"legacy\n");
    let diff = Digest::sha256_of(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff}","{diff}"]}}}}"#
    );
    let config_hex = Digest::sha256_of(config.as_bytes()).hex().to_string();
    let manifest = format!(
        r#"[{{"Config":"{config_hex}.json","RepoTags":["legacy:v1"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}}]"#
    );
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).expect("append");
    };
    add(&format!("{config_hex}.json"), config.as_bytes());
    add("aaa/layer.tar", &layer);
    add("manifest.json", manifest.as_bytes());
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    b.append_link(&mut link, "bbb/layer.tar", "../aaa/layer.tar")
        .expect("link");
    let archive_bytes = b.into_inner().expect("tar");

    let names = archive::load(
        &s.content,
        &s.images,
        Cursor::new(&archive_bytes),
        &fresh_scratch(&s, "l"),
    )
    .expect("load");
    assert_eq!(names, vec!["docker.io/library/legacy:v1".to_string()]);
    assert_eq!(
        config_of(&s, "docker.io/library/legacy:v1")
            .rootfs
            .diff_ids
            .len(),
        2
    );
    assert!(
        s.content.info(&diff).expect("info").is_some(),
        "layer stored by its digest"
    );
}

#[test]
fn hostile_archives_are_refused_and_write_nothing_outside() {
    let s = stores();
    let canary = s.scratch.parent().expect("parent").join("escaped");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dot-dot path", {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses "..": write the name bytes directly.
            let name = b"../escaped";
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            b.append(&h, &b"x"[..]).expect("append");
            b.into_inner().expect("tar")
        }),
        ("symlink out", {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "manifest.json", "../../../etc/passwd")
                .expect("link");
            b.into_inner().expect("tar")
        }),
        ("device node", {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Char);
            h.set_size(0);
            b.append_data(&mut h, "dev", &b""[..]).expect("dev");
            b.into_inner().expect("tar")
        }),
    ];
    for (what, bytes) in cases {
        let scratch = fresh_scratch(&s, what.replace(' ', "-").as_str());
        let err =
            archive::load(&s.content, &s.images, Cursor::new(&bytes), &scratch).expect_err(what);
        assert!(
            matches!(err, ArchiveError::BadEntry { .. }),
            "{what}: {err}"
        );
        assert!(!canary.exists(), "{what} escaped");
    }
    assert!(s.images.list().expect("list").is_empty());
}

#[test]
fn not_an_image_archive_says_so() {
    let s = stores();
    let err = archive::load(
        &s.content,
        &s.images,
        Cursor::new(rootfs_tar(b"x")),
        &fresh_scratch(&s, "n"),
    )
    .expect_err("no manifest");
    assert!(err.to_string().contains("manifest.json"), "{err}");
}

#[test]
fn saving_an_unknown_image_names_it() {
    let s = stores();
    let err = archive::save(&s.content, &s.images, &["nope:1".to_string()], Vec::new())
        .expect_err("unknown");
    assert!(err.to_string().contains("nope:1"), "{err}");
    let _ = Path::new("");
}
