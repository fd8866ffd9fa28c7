//! The embedded image's structure: deterministic bytes, a well-formed tar and OCI JSON, and an
//! OCI layout that skopeo accepts.

use std::io::Read;
use std::process::Command;

use berth_embedded::{hello_image, sha256_digest, write_oci_layout, EmbeddedImage};
use serde_json::Value;

fn json(bytes: &[u8]) -> Value {
    match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => panic!("invalid JSON ({e}): {}", String::from_utf8_lossy(bytes)),
    }
}

fn image() -> EmbeddedImage {
    assert!(
        berth_embedded::is_available(),
        "no hello program for this target"
    );
    hello_image()
}

#[test]
fn digests_are_stable_across_calls() {
    let (a, b) = (image(), image());
    assert_eq!(a, b);
    assert_eq!(a.layer.digest, b.layer.digest);
    assert_eq!(a.config.digest, b.config.digest);
    assert_eq!(a.manifest.digest, b.manifest.digest);
    assert_eq!(a.index.digest, b.index.digest);
    for blob in a.blobs().into_iter().chain([&a.index]) {
        assert_eq!(blob.digest, sha256_digest(&blob.bytes));
        assert_eq!(blob.digest.len(), "sha256:".len() + 64);
    }
    assert_eq!(a.diff_id, a.layer.digest, "the layer is uncompressed");
}

#[test]
fn layer_tar_is_sorted_root_owned_and_timeless() {
    let image = image();
    let mut archive = tar::Archive::new(image.layer_tar());
    let mut seen = Vec::new();
    let entries = archive.entries().expect("reading the layer tar");
    for entry in entries {
        let mut entry = entry.expect("a tar entry");
        let header = entry.header().clone();
        let path = entry
            .path()
            .expect("entry path")
            .to_string_lossy()
            .into_owned();
        assert_eq!(header.uid().ok(), Some(0), "{path}");
        assert_eq!(header.gid().ok(), Some(0), "{path}");
        assert_eq!(header.mtime().ok(), Some(0), "{path}");
        assert_eq!(header.mode().ok(), Some(0o755), "{path}");
        if path == "hello" {
            assert!(header.entry_type().is_file());
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("reading /hello");
            assert_eq!(data, berth_embedded::hello_binary());
        } else {
            assert!(header.entry_type().is_dir(), "{path}");
        }
        seen.push(path);
    }
    assert_eq!(seen, ["dev/", "etc/", "hello", "proc/", "sys/"]);
}

#[test]
fn config_manifest_and_index_agree() {
    let image = image();
    let config = json(&image.config.bytes);
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], image.architecture);
    assert!(["amd64", "arm64"].contains(&image.architecture));
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/hello"]));
    assert_eq!(config["config"]["Env"], serde_json::json!(["PATH=/"]));
    assert_eq!(config["config"]["WorkingDir"], "/");
    assert_eq!(config["config"]["Labels"]["dev.berth.embedded"], "true");
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.title"],
        "hello"
    );
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([image.diff_id])
    );
    assert_eq!(config["history"].as_array().map(Vec::len), Some(1));
    assert_eq!(config["created"], berth_embedded::CREATED);

    let manifest = json(&image.manifest.bytes);
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], berth_embedded::MANIFEST_MEDIA_TYPE);
    assert_eq!(manifest["config"]["digest"], image.config.digest.as_str());
    assert_eq!(manifest["config"]["size"], image.config.size());
    assert_eq!(
        manifest["config"]["mediaType"],
        berth_embedded::CONFIG_MEDIA_TYPE
    );
    assert_eq!(manifest["layers"][0]["digest"], image.layer.digest.as_str());
    assert_eq!(manifest["layers"][0]["size"], image.layer.size());
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        berth_embedded::LAYER_MEDIA_TYPE
    );

    let index = json(&image.index.bytes);
    let entry = &index["manifests"][0];
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(entry["digest"], image.manifest.digest.as_str());
    assert_eq!(entry["size"], image.manifest.size());
    assert_eq!(entry["platform"]["architecture"], image.architecture);
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    assert_eq!(
        entry["annotations"]["io.containerd.image.name"],
        "docker.io/library/hello:latest"
    );
    assert_eq!(image.image_id(), image.config.digest);
}

#[test]
fn oci_layout_holds_every_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_oci_layout(dir.path()).expect("writing the layout");
    let image = image();
    let layout = json(&std::fs::read(dir.path().join("oci-layout")).expect("oci-layout"));
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index = std::fs::read(dir.path().join("index.json")).expect("index.json");
    assert_eq!(index, image.index.bytes);
    for blob in image.blobs() {
        let path = dir.path().join("blobs/sha256").join(blob.hex());
        let bytes = std::fs::read(&path).expect("a blob");
        assert_eq!(sha256_digest(&bytes), blob.digest, "{}", path.display());
    }
    // Writing again over an existing layout is fine and changes nothing.
    write_oci_layout(dir.path()).expect("rewriting the layout");
    assert_eq!(
        std::fs::read(dir.path().join("index.json")).expect("index.json"),
        index
    );
}

#[test]
fn skopeo_accepts_the_layout() {
    if Command::new("skopeo").arg("--version").output().is_err() {
        eprintln!("note: skopeo is not installed; skipping the skopeo check");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = dir.path().join("layout");
    write_oci_layout(&layout).expect("writing the layout");
    let image = image();

    let src = format!("oci:{}:latest", layout.display());
    let out = Command::new("skopeo")
        .args(["inspect", &src])
        .output()
        .expect("running skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspect = json(&out.stdout);
    assert_eq!(inspect["Digest"], image.manifest.digest.as_str());
    assert_eq!(inspect["Architecture"], image.architecture);
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(inspect["Layers"], serde_json::json!([image.layer.digest]));

    // A copy reads and verifies every blob. Without `--preserve-digests` skopeo would gzip the
    // uncompressed layer on the way, giving a new layer and manifest digest (the config, and so
    // the image ID, stays the same).
    let dst = format!("oci:{}:latest", dir.path().join("copy").display());
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--preserve-digests", &src, &dst])
        .output()
        .expect("running skopeo");
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copied = dir
        .path()
        .join("copy/blobs/sha256")
        .join(image.manifest.hex());
    assert!(copied.exists(), "skopeo copy kept the manifest digest");
}
