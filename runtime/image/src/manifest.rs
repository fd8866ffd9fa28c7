//! The JSON documents of an image: OCI image index / Docker manifest list,
//! OCI image manifest / Docker schema2 manifest, descriptors, platforms, and
//! the image config.
//!
//! Our own serde types rather than `oci-spec`'s image module: these use
//! [`Digest`] directly (so a descriptor's digest is validated while parsing),
//! accept Docker's media types and Docker's habit of writing `null` for empty
//! lists and maps, ignore unknown fields, and are plain structs with public
//! fields instead of getters and builders. The Docker schema2 formats have the
//! same shape as their OCI counterparts, so one type serves both
//! ([`ManifestList`] and [`Schema2Manifest`] are aliases). Docker schema1 is
//! not supported (registries have stopped serving it).
//!
//! Keep the raw bytes when the exact document matters (its digest is that of
//! the bytes, not of a re-serialisation).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub mod media_types {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const OCI_LAYER_NONDIST: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
    pub const OCI_LAYER_NONDIST_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    pub const OCI_LAYER_NONDIST_ZSTD: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_MANIFEST_V1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_LAYER_FOREIGN: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

    /// The `Accept` header value for manifest requests.
    pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
         application/vnd.docker.distribution.manifest.list.v2+json, \
         application/vnd.oci.image.manifest.v1+json, \
         application/vnd.docker.distribution.manifest.v2+json";

    pub fn is_index(mt: &str) -> bool {
        mt == OCI_INDEX || mt == DOCKER_MANIFEST_LIST
    }
    pub fn is_manifest(mt: &str) -> bool {
        mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
    }
    /// Layers that must not be pulled from the registry (Windows base layers).
    pub fn is_foreign_layer(mt: &str) -> bool {
        mt == DOCKER_LAYER_FOREIGN
            || mt.starts_with("application/vnd.oci.image.layer.nondistributable.")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot parse {kind} JSON: {source}")]
    Parse {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("Docker schema1 manifests are not supported (media type {0:?}); push the image again with a current client")]
    Schema1(String),
}

/// A content descriptor: what a manifest or index points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Embedded content, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.to_string(),
            digest,
            size,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
            data: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Self {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
            ..Self::default()
        }
    }

    /// The platform this process runs on, in OCI/Go names (`linux/amd64`,
    /// `linux/arm64/v8`).
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        let variant = (arch == "arm64").then_some("v8");
        Self::new("linux", arch, variant)
    }

    /// Whether an index entry for `self` can run on `want`: OS and
    /// architecture equal, and the variant equal if `want` names one (arm64's
    /// `v8` is the default and matches an entry with no variant).
    pub fn matches(&self, want: &Platform) -> bool {
        if self.os != want.os || self.architecture != want.architecture {
            return false;
        }
        let norm = |v: Option<&str>, arch: &str| match (v, arch) {
            (None, "arm64") => Some("v8".to_string()),
            (v, _) => v.map(str::to_string),
        };
        match want.variant.as_deref() {
            None => true,
            w => norm(self.variant.as_deref(), &self.architecture) == norm(w, &want.architecture),
        }
    }
}

/// OCI image index; also the Docker manifest list (same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

pub type ManifestList = ImageIndex;

impl ImageIndex {
    /// The entry for `want` (see [`Platform::matches`]); entries without a
    /// platform are skipped. The first match wins, as in Docker.
    pub fn select(&self, want: &Platform) -> Option<&Descriptor> {
        self.manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| p.matches(want)))
    }
}

/// OCI image manifest; also the Docker schema2 manifest (same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default, deserialize_with = "null_as_default")]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

pub type Schema2Manifest = ImageManifest;

/// Either kind of manifest document.
// Parsed once per document and matched on by callers; boxing the larger
// variant would only make matching clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyManifest {
    Index(ImageIndex),
    Manifest(ImageManifest),
}

impl AnyManifest {
    /// Parses a manifest or index. `media_type` is the `Content-Type` or the
    /// descriptor's media type if known; otherwise the document's own
    /// `mediaType`, and failing that its shape (`manifests` → index), decide.
    pub fn parse(media_type: Option<&str>, bytes: &[u8]) -> Result<Self, ManifestError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            #[serde(default)]
            schema_version: Option<u32>,
            #[serde(default)]
            media_type: Option<String>,
            #[serde(default)]
            manifests: Option<serde_json::Value>,
        }
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|source| ManifestError::Parse {
                kind: "manifest",
                source,
            })?;
        let mt = media_type
            .filter(|m| !m.is_empty() && *m != "application/json")
            .map(str::to_string)
            .or(probe.media_type);
        let is_index = match mt.as_deref() {
            Some(m) if media_types::is_index(m) => true,
            Some(m) if media_types::is_manifest(m) => false,
            Some(m)
                if m == media_types::DOCKER_MANIFEST_V1
                    || m == media_types::DOCKER_MANIFEST_V1_SIGNED =>
            {
                return Err(ManifestError::Schema1(m.to_string()));
            }
            Some(m) => return Err(ManifestError::UnsupportedMediaType(m.to_string())),
            None if probe.schema_version == Some(1) => {
                return Err(ManifestError::Schema1("(none)".to_string()));
            }
            None => probe.manifests.is_some(),
        };
        if is_index {
            serde_json::from_slice(bytes)
                .map(Self::Index)
                .map_err(|source| ManifestError::Parse {
                    kind: "image index",
                    source,
                })
        } else {
            serde_json::from_slice(bytes)
                .map(Self::Manifest)
                .map_err(|source| ManifestError::Parse {
                    kind: "image manifest",
                    source,
                })
        }
    }

    /// Every descriptor this document points at directly (index: its
    /// manifests; manifest: config, then layers), plus the subject if any.
    pub fn children(&self) -> Vec<&Descriptor> {
        let (mut v, subject): (Vec<&Descriptor>, _) = match self {
            Self::Index(i) => (i.manifests.iter().collect(), &i.subject),
            Self::Manifest(m) => (
                std::iter::once(&m.config).chain(m.layers.iter()).collect(),
                &m.subject,
            ),
        };
        v.extend(subject.iter());
        v
    }
}

/// The image configuration (`application/vnd.oci.image.config.v1+json` /
/// `application/vnd.docker.container.image.v1+json`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<History>,
}

/// Defaults for containers run from the image (Docker's field names).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Keys like `80/tcp`; values are empty objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Keys are paths; values are empty objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
}

/// Docker's health check; durations in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default = "layers")]
    pub kind: String,
    /// Digests of the uncompressed layer tars, bottom first.
    #[serde(default, deserialize_with = "null_as_default")]
    pub diff_ids: Vec<Digest>,
}

fn layers() -> String {
    "layers".to_string()
}

impl Default for RootFs {
    fn default() -> Self {
        Self {
            kind: layers(),
            diff_ids: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_layer: Option<bool>,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        serde_json::from_slice(bytes).map_err(|source| ManifestError::Parse {
            kind: "image config",
            source,
        })
    }
}

/// `null` → `T::default()` (Docker writes `"layers": null` and the like).
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    #[test]
    fn docker_manifest_list_and_selection() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[
            {{"mediaType":"{}","digest":"{}","size":527,"platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}},
            {{"mediaType":"{}","digest":"{}","size":527,"platform":{{"architecture":"arm64","os":"linux"}}}},
            {{"mediaType":"{}","digest":"{}","size":527,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            media_types::DOCKER_MANIFEST_LIST,
            media_types::DOCKER_MANIFEST,
            d(1),
            media_types::DOCKER_MANIFEST,
            d(2),
            media_types::DOCKER_MANIFEST,
            d(3)
        );
        let AnyManifest::Index(idx) = AnyManifest::parse(None, json.as_bytes()).unwrap() else {
            panic!("not an index");
        };
        assert_eq!(idx.manifests.len(), 3);
        let amd = idx.select(&Platform::new("linux", "amd64", None)).unwrap();
        assert_eq!(amd.digest.to_string(), d(3));
        let arm64 = idx
            .select(&Platform::new("linux", "arm64", Some("v8")))
            .unwrap();
        assert_eq!(arm64.digest.to_string(), d(2));
        assert!(idx
            .select(&Platform::new("linux", "arm", Some("v6")))
            .is_none());
        assert!(idx
            .select(&Platform::new("windows", "amd64", None))
            .is_none());
    }

    #[test]
    fn oci_manifest_by_shape_and_nulls() {
        let json = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"{}","size":10}},
            "layers":[{{"mediaType":"{}","digest":"{}","size":20,"urls":["https://x"],"annotations":{{"a":"b"}}}}],
            "annotations":{{"org.opencontainers.image.ref.name":"v1"}},"unknownField":1}}"#,
            media_types::OCI_CONFIG,
            d(4),
            media_types::OCI_LAYER_GZIP,
            d(5)
        );
        let m = AnyManifest::parse(Some("application/json"), json.as_bytes()).unwrap();
        let kids: Vec<String> = m.children().iter().map(|x| x.digest.to_string()).collect();
        assert_eq!(kids, vec![d(4), d(5)]);
        let AnyManifest::Manifest(man) = m else {
            panic!("not a manifest")
        };
        assert_eq!(
            man.layers[0].urls.as_deref(),
            Some(&["https://x".to_string()][..])
        );
        // Re-serialises without nulls and parses back equal.
        let again = serde_json::to_string(&man).unwrap();
        assert!(!again.contains("null"), "{again}");
        assert_eq!(serde_json::from_str::<ImageManifest>(&again).unwrap(), man);

        let nulls = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"x","digest":"{}","size":1}},"layers":null}}"#,
            media_types::DOCKER_MANIFEST,
            d(6)
        );
        let AnyManifest::Manifest(m) = AnyManifest::parse(None, nulls.as_bytes()).unwrap() else {
            panic!()
        };
        assert!(m.layers.is_empty());
    }

    #[test]
    fn rejects_bad_documents() {
        let e = AnyManifest::parse(None, b"{not json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot parse manifest JSON"), "{e}");
        let e = AnyManifest::parse(Some(media_types::DOCKER_MANIFEST_V1_SIGNED), b"{}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("schema1"), "{e}");
        let e = AnyManifest::parse(None, br#"{"schemaVersion":1,"fsLayers":[]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("schema1"), "{e}");
        let e = AnyManifest::parse(Some("text/html"), b"{}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsupported manifest media type"), "{e}");
        let bad_digest =
            r#"{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:XYZ","size":1}]}"#;
        let e = AnyManifest::parse(None, bad_digest.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot parse image index JSON"), "{e}");
    }

    #[test]
    fn image_config_docker_style() {
        let json = format!(
            r#"{{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z",
            "config":{{"Env":["PATH=/bin"],"Cmd":["sh"],"Entrypoint":null,"WorkingDir":"/w","User":"1000",
              "Labels":{{"k":"v"}},"ExposedPorts":{{"80/tcp":{{}}}},"Volumes":{{"/data":{{}}}},
              "StopSignal":"SIGTERM","Healthcheck":{{"Test":["CMD","true"],"Interval":1000000000,"Retries":3}}}},
            "rootfs":{{"type":"layers","diff_ids":["{}","{}"]}},
            "history":[{{"created_by":"/bin/sh -c #(nop) ADD file","empty_layer":false}},{{"created_by":"CMD","empty_layer":true}}],
            "container_config":{{"Hostname":"x"}},"docker_version":"20.10"}}"#,
            d(7),
            d(8)
        );
        let c = ImageConfig::parse(json.as_bytes()).unwrap();
        let cc = c.config.as_ref().unwrap();
        assert_eq!(cc.cmd.as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!(cc.entrypoint, None);
        assert_eq!(cc.working_dir.as_deref(), Some("/w"));
        assert!(cc.exposed_ports.as_ref().unwrap().contains_key("80/tcp"));
        assert!(cc.volumes.as_ref().unwrap().contains_key("/data"));
        assert_eq!(cc.healthcheck.as_ref().unwrap().retries, Some(3));
        assert_eq!(c.rootfs.diff_ids.len(), 2);
        assert_eq!(c.history[1].empty_layer, Some(true));
        let back = ImageConfig::parse(serde_json::to_string(&c).unwrap().as_bytes()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn foreign_layers() {
        assert!(media_types::is_foreign_layer(
            media_types::DOCKER_LAYER_FOREIGN
        ));
        assert!(media_types::is_foreign_layer(
            media_types::OCI_LAYER_NONDIST_GZIP
        ));
        assert!(!media_types::is_foreign_layer(media_types::OCI_LAYER_GZIP));
    }
}
