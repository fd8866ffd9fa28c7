//! The `hello` image built into Berth's binaries, so `berth run --rm hello` works on a machine
//! that cannot reach any registry; and the init program of `--init` ([`init_binary`]).
//!
//! The image holds one file, `/hello`: a static, libc-free program (`hello/hello.rs`, compiled
//! by `build.rs` for the target) that greets from inside its container and reports its pid,
//! hostname, cgroup and capabilities. Around it this crate assembles a complete OCI image with
//! every digest computed: an uncompressed layer tar, the image config, the manifest, and an
//! index naming it `latest`. Everything is deterministic: the same build gives the same bytes
//! and digests every time, and [`write_oci_layout`] writes it as an OCI image layout that
//! `skopeo copy oci:<dir>:latest …` can copy anywhere.
//!
//! The layer is an uncompressed tar (`application/vnd.oci.image.layer.v1.tar`): it is only a
//! few kilobytes, and leaving out gzip keeps the digests independent of any compressor's
//! version.

use std::fs;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

mod tar;

/// The static `hello` executable, as `build.rs` compiled it.
static HELLO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hello"));
/// The static init program (`init/init.rs`), as `build.rs` compiled it.
static INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/init"));

/// The name users type: `berth run --rm hello`.
pub const REFERENCE: &str = "hello:latest";
/// [`REFERENCE`] normalised the way Docker normalises names.
pub const NORMALIZED_REFERENCE: &str = "docker.io/library/hello:latest";
/// The tag, as the OCI layout's `org.opencontainers.image.ref.name` annotation.
pub const TAG: &str = "latest";
/// The fixed creation time recorded in the image config and its history.
pub const CREATED: &str = "2025-01-01T00:00:00Z";

/// Media type of the layer: an uncompressed tar.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of the image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of the manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of the index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// The OCI annotation naming a manifest in an image layout's index.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd (and `docker load`) read the full image name from.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// Whether this build carries the `hello` program. It does for Linux on x86_64 and aarch64;
/// for other targets (the CLI on macOS or Windows, whose containers run in a Linux VM) the
/// build script has nothing to compile, [`hello_binary`] is empty, and the image must not be
/// offered.
pub fn is_available() -> bool {
    !cfg!(berth_programs_unsupported) && !HELLO.is_empty()
}

/// The init process of `docker run --init` (the engine mounts it at `/sbin/docker-init`): a
/// static, libc-free program that runs its arguments as its child, forwards the signals it gets
/// to that child, reaps every orphan and exits with the child's status (128+N when signal N
/// killed it). See `init/init.rs`. Empty when the target has no such program (as for
/// [`is_available`]).
pub fn init_binary() -> &'static [u8] {
    if cfg!(berth_programs_unsupported) {
        &[]
    } else {
        INIT
    }
}

/// The static `hello` executable: no libc, no loader, runs in an empty root filesystem.
/// Empty when [`is_available`] is false.
pub fn hello_binary() -> &'static [u8] {
    HELLO
}

/// The OCI architecture name of the target this crate was built for (`amd64`, `arm64`, …),
/// which is the architecture of the `hello` program.
pub fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// A content-addressed blob with its OCI media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The OCI media type of `bytes`.
    pub media_type: &'static str,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// The content.
    pub bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Self {
        Blob {
            media_type,
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    /// The size in bytes, as a descriptor records it.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The hex part of the digest, which names the blob under `blobs/sha256/`.
    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap_or(&self.digest)
    }

    /// This blob's OCI descriptor as a JSON object, with `extra` (already JSON, without braces,
    /// e.g. `"platform":{…}`) appended when it is not empty.
    fn descriptor(&self, extra: &str) -> String {
        let mut json = format!(
            "{{\"mediaType\":{},\"digest\":{},\"size\":{}",
            quote(self.media_type),
            quote(&self.digest),
            self.size()
        );
        if !extra.is_empty() {
            json.push(',');
            json.push_str(extra);
        }
        json.push('}');
        json
    }
}

/// The embedded `hello` image: every blob an image store or a registry needs, with digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedImage {
    /// The reference users type, [`REFERENCE`].
    pub reference: &'static str,
    /// The normalised reference, [`NORMALIZED_REFERENCE`].
    pub normalized_reference: &'static str,
    /// The OCI architecture (`amd64`, `arm64`).
    pub architecture: &'static str,
    /// The single layer: an uncompressed tar of `/hello` and the empty directories `/dev`,
    /// `/etc`, `/proc` and `/sys`. Its digest equals [`EmbeddedImage::diff_id`].
    pub layer: Blob,
    /// `sha256:<hex>` of the uncompressed layer tar, as the config's `rootfs.diff_ids` lists it.
    pub diff_id: String,
    /// The OCI image config; its digest is the image ID.
    pub config: Blob,
    /// The OCI image manifest.
    pub manifest: Blob,
    /// An OCI image index listing the manifest with its platform and the annotations
    /// [`REF_NAME_ANNOTATION`] = [`TAG`] and [`CONTAINERD_NAME_ANNOTATION`] =
    /// [`NORMALIZED_REFERENCE`]; it is an OCI layout's `index.json`.
    pub index: Blob,
}

impl EmbeddedImage {
    /// The uncompressed layer tar (the layer blob's bytes).
    pub fn layer_tar(&self) -> &[u8] {
        &self.layer.bytes
    }

    /// The image ID as Docker reports it: the config's digest.
    pub fn image_id(&self) -> &str {
        &self.config.digest
    }

    /// The blobs that go under `blobs/sha256/` in an OCI layout or to a registry: layer,
    /// config, manifest.
    pub fn blobs(&self) -> [&Blob; 3] {
        [&self.layer, &self.config, &self.manifest]
    }
}

/// Assembles the embedded `hello` image. Cheap (a few kilobytes of hashing), and the same
/// bytes every call.
pub fn hello_image() -> EmbeddedImage {
    let arch = architecture();
    let layer_tar = tar::build(vec![
        tar::Entry::File {
            name: "hello",
            mode: 0o755,
            data: HELLO,
        },
        tar::Entry::Dir {
            name: "dev",
            mode: 0o755,
        },
        tar::Entry::Dir {
            name: "etc",
            mode: 0o755,
        },
        tar::Entry::Dir {
            name: "proc",
            mode: 0o755,
        },
        tar::Entry::Dir {
            name: "sys",
            mode: 0o755,
        },
    ]);
    let layer = Blob::new(LAYER_MEDIA_TYPE, layer_tar);
    let diff_id = layer.digest.clone();

    let config = format!(
        concat!(
            "{{\"created\":{created},\"architecture\":{arch},\"os\":\"linux\",",
            "\"config\":{{\"Env\":[\"PATH=/\"],\"Cmd\":[\"/hello\"],\"WorkingDir\":\"/\",",
            "\"Labels\":{{\"dev.berth.embedded\":\"true\",",
            "\"org.opencontainers.image.title\":\"hello\"}}}},",
            "\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[{diff_id}]}},",
            "\"history\":[{{\"created\":{created},",
            "\"created_by\":\"berth: the hello image embedded in Berth (runtime/embedded)\"}}]}}"
        ),
        created = quote(CREATED),
        arch = quote(arch),
        diff_id = quote(&diff_id),
    );
    let config = Blob::new(CONFIG_MEDIA_TYPE, config.into_bytes());

    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":{},\"config\":{},\"layers\":[{}]}}",
        quote(MANIFEST_MEDIA_TYPE),
        config.descriptor(""),
        layer.descriptor(""),
    );
    let manifest = Blob::new(MANIFEST_MEDIA_TYPE, manifest.into_bytes());

    let entry = manifest.descriptor(&format!(
        "\"platform\":{{\"architecture\":{},\"os\":\"linux\"}},\"annotations\":{{{}:{},{}:{}}}",
        quote(arch),
        quote(CONTAINERD_NAME_ANNOTATION),
        quote(NORMALIZED_REFERENCE),
        quote(REF_NAME_ANNOTATION),
        quote(TAG),
    ));
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":{},\"manifests\":[{entry}]}}",
        quote(INDEX_MEDIA_TYPE)
    );
    let index = Blob::new(INDEX_MEDIA_TYPE, index.into_bytes());

    EmbeddedImage {
        reference: REFERENCE,
        normalized_reference: NORMALIZED_REFERENCE,
        architecture: arch,
        layer,
        diff_id,
        config,
        manifest,
        index,
    }
}

/// Writes the `hello` image as an OCI image layout in `dir` (created if missing): the
/// `oci-layout` file, `index.json` (the manifest tagged [`TAG`]) and the blobs under
/// `blobs/sha256/`. Existing files of the same names are replaced.
pub fn write_oci_layout(dir: &Path) -> io::Result<()> {
    let image = hello_image();
    let blob_dir = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir)?;
    for blob in image.blobs() {
        fs::write(blob_dir.join(blob.hex()), &blob.bytes)?;
    }
    fs::write(
        dir.join("oci-layout"),
        b"{\"imageLayoutVersion\":\"1.0.0\"}",
    )?;
    fs::write(dir.join("index.json"), &image.index.bytes)
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `s` as a JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes() {
        assert_eq!(quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn binaries_are_small_elf_files() {
        if !is_available() {
            return;
        }
        for (name, bin) in [("hello", hello_binary()), ("init", init_binary())] {
            assert_eq!(&bin[..4], b"\x7fELF", "{name}");
            assert!(bin.len() < 64 * 1024, "{name} is {} bytes", bin.len());
        }
    }
}
