//! Building an OCI image layout tarball (what `ctr image import` takes) in Rust: one layer
//! holding a root filesystem directory, the image config, the manifest, `index.json` and
//! `oci-layout`, all addressed by sha256.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

/// `sha256:<hex>` of the bytes.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An uncompressed tar of `rootfs` (paths relative to it, symlinks kept, owner root).
pub fn layer_tar(rootfs: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Deterministic);
    b.append_dir_all(".", rootfs).expect("tar the rootfs");
    b.into_inner().expect("finish layer tar")
}

fn append_bytes(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data)
        .expect("append to image tar");
}

/// Writes an OCI image-layout tarball of `rootfs` named `reference` (e.g.
/// `docker.io/library/busybox:latest`) to `out`, for linux/amd64, running `cmd` by default.
pub fn write_oci_archive(rootfs: &Path, reference: &str, cmd: &[&str], out: &Path) {
    let layer = layer_tar(rootfs);
    let layer_digest = digest(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": cmd,
            "WorkingDir": "/"
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "berth-tests"}]
    }))
    .expect("config json");
    let config_digest = digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len()
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len()
        }]
    }))
    .expect("manifest json");
    let manifest_digest = digest(&manifest);
    let tag = reference
        .rsplit_once(':')
        .map(|(_, t)| t)
        .unwrap_or("latest");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": reference,
                "org.opencontainers.image.ref.name": tag
            }
        }]
    }))
    .expect("index json");

    let mut b = tar::Builder::new(Vec::new());
    append_bytes(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    append_bytes(&mut b, "index.json", &index);
    for (d, bytes) in [
        (&manifest_digest, &manifest),
        (&config_digest, &config),
        (&layer_digest, &layer),
    ] {
        let hexpart = d.trim_start_matches("sha256:");
        append_bytes(&mut b, &format!("blobs/sha256/{hexpart}"), bytes);
    }
    let archive = b.into_inner().expect("finish image tar");
    let mut f = fs::File::create(out).expect("create image archive");
    f.write_all(&archive).expect("write image archive");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty() {
        assert_eq!(
            digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
