//! The JSON shapes of the distribution protocol the client needs (OCI image
//! manifest/index, Docker schema2 manifest/list), media types, and platform
//! selection in a manifest list the way Docker does it.

use serde::Deserialize;

use crate::error::RegistryError;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const OCI_NONDISTRIBUTABLE_PREFIX: &str = "application/vnd.oci.image.layer.nondistributable.";

/// The Accept header for manifest requests, most preferred first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// True for layers a registry may refuse to serve (Windows base layers and
/// OCI non-distributable layers): fetched from their `urls` if any.
pub fn is_foreign_layer(media_type: &str) -> bool {
    media_type == DOCKER_FOREIGN_LAYER || media_type.starts_with(OCI_NONDISTRIBUTABLE_PREFIX)
}

pub use berth_image::manifest::{AnyManifest, Descriptor, ImageIndex, ImageManifest, Platform};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    layers: Option<serde_json::Value>,
}

/// Parses manifest bytes; `content_type` is the HTTP Content-Type, when known.
/// Returns the manifest and its effective media type.
pub fn parse_manifest(
    reference: &str,
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<(AnyManifest, String), RegistryError> {
    let invalid = |reason: String| RegistryError::InvalidManifest {
        reference: reference.to_string(),
        reason,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
        .filter(|c| !c.is_empty() && c != "application/json" && c != "text/plain");
    let media_type = match (probe.media_type.clone(), header) {
        (Some(m), _) => m,
        (None, Some(h)) => h,
        (None, None) if probe.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) if probe.layers.is_some() => OCI_MANIFEST.to_string(),
        (None, None) if probe.schema_version == Some(1) => DOCKER_SCHEMA1.to_string(),
        (None, None) => return Err(invalid("neither manifests nor layers present".into())),
    };
    match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => {
            let index: ImageIndex =
                serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
            Ok((AnyManifest::Index(index), media_type))
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let manifest: ImageManifest =
                serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
            Ok((AnyManifest::Manifest(manifest), media_type))
        }
        _ => Err(RegistryError::UnsupportedMediaType {
            reference: reference.to_string(),
            media_type,
        }),
    }
}

/// Parses `os/arch[/variant]`, normalising architecture aliases.
pub fn parse_platform(s: &str) -> Result<Platform, RegistryError> {
    let parts: Vec<&str> = s.split('/').collect();
    let bad = || RegistryError::InvalidPlatform(s.to_string());
    let (os, arch, variant) = match parts.as_slice() {
        [os, arch] => (*os, *arch, None),
        [os, arch, variant] => (*os, *arch, Some(*variant)),
        _ => return Err(bad()),
    };
    if os.is_empty() || arch.is_empty() || variant.is_some_and(str::is_empty) {
        return Err(bad());
    }
    Ok(normalize_platform(&Platform::new(os, arch, variant)))
}

/// Normalises OS, architecture and variant like containerd's
/// `platforms.Normalize` (`aarch64` → `arm64`, `arm64/v8` → `arm64`,
/// `armhf` → `arm/v7`, …).
pub fn normalize_platform(p: &Platform) -> Platform {
    let os = p.os.to_ascii_lowercase();
    let arch = p.architecture.to_ascii_lowercase();
    let variant = p.variant.as_deref().map(str::to_ascii_lowercase);
    let (arch, variant) = match arch.as_str() {
        "i386" | "i486" | "i586" | "i686" => ("386".to_string(), None),
        "x86_64" | "x86-64" | "amd64" => ("amd64".to_string(), variant.filter(|v| v != "v1")),
        "aarch64" | "arm64" => (
            "arm64".to_string(),
            variant.filter(|v| v != "8" && v != "v8"),
        ),
        "armhf" => ("arm".to_string(), Some("v7".to_string())),
        "armel" => ("arm".to_string(), Some("v6".to_string())),
        "arm" => (
            "arm".to_string(),
            Some(match variant.as_deref() {
                None | Some("7") | Some("v7") => "v7".to_string(),
                Some("5") | Some("v5") => "v5".to_string(),
                Some("6") | Some("v6") => "v6".to_string(),
                Some("8") | Some("v8") => "v8".to_string(),
                Some(other) => other.to_string(),
            }),
        ),
        _ => (arch, variant),
    };
    Platform {
        os,
        architecture: arch,
        variant,
        ..p.clone()
    }
}

/// `os/arch[/variant]`, normalised.
pub fn platform_string(p: &Platform) -> String {
    let p = normalize_platform(p);
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// How well `candidate` serves `want`: `None` when it cannot run, otherwise
/// lower is better. An ARM CPU also runs older variants.
fn rank(want: &Platform, candidate: &Platform) -> Option<u32> {
    let want = normalize_platform(want);
    let have = normalize_platform(candidate);
    if want.os != have.os || want.architecture != have.architecture {
        return None;
    }
    if want.variant == have.variant {
        return Some(0);
    }
    match (want.architecture.as_str(), &want.variant, &have.variant) {
        // No variant asked for: any variant of that architecture, the
        // baseline one (exact match above) preferred.
        (_, None, Some(_)) => Some(10),
        ("arm", Some(w), Some(h)) => {
            let num = |v: &str| v.trim_start_matches('v').parse::<u32>().ok();
            match (num(w), num(h)) {
                (Some(w), Some(h)) if h < w => Some(w - h),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Picks the manifest for `wanted` out of an index; the error lists what exists.
pub fn select_platform<'a>(
    reference: &str,
    index: &'a ImageIndex,
    wanted: &Platform,
) -> Result<&'a Descriptor, RegistryError> {
    index
        .manifests
        .iter()
        .filter(|d| d.media_type != OCI_INDEX && d.media_type != DOCKER_LIST)
        .filter_map(|d| {
            d.platform
                .as_ref()
                .and_then(|p| rank(wanted, p))
                .map(|r| (r, d))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, d)| d)
        .ok_or_else(|| RegistryError::NoMatchingPlatform {
            reference: reference.to_string(),
            wanted: platform_string(wanted),
            available: index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .filter(|p| p.os != "unknown")
                .map(platform_string)
                .collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plat(s: &str) -> Platform {
        match parse_platform(s) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn normalises_aliases() {
        assert_eq!(platform_string(&plat("linux/aarch64")), "linux/arm64");
        assert_eq!(platform_string(&plat("linux/arm64/v8")), "linux/arm64");
        assert_eq!(platform_string(&plat("linux/x86_64")), "linux/amd64");
        assert_eq!(platform_string(&plat("linux/arm")), "linux/arm/v7");
        assert_eq!(platform_string(&plat("linux/armhf")), "linux/arm/v7");
        assert!(parse_platform("linux").is_err());
        assert!(parse_platform("linux/").is_err());
    }

    #[test]
    fn ranks_like_docker() {
        let want = plat("linux/arm64/v8");
        let p = |a: &str, v: Option<&str>| Platform::new("linux", a, v);
        assert_eq!(rank(&want, &p("arm64", None)), Some(0));
        assert_eq!(rank(&want, &p("arm64", Some("v8"))), Some(0));
        assert_eq!(rank(&want, &p("amd64", None)), None);
        let arm7 = plat("linux/arm/v7");
        assert_eq!(rank(&arm7, &p("arm", Some("v6"))), Some(1));
        assert_eq!(rank(&arm7, &p("arm", Some("v8"))), None);
        let windows = Platform::new("windows", "amd64", None);
        assert_eq!(rank(&plat("linux/amd64"), &windows), None);
    }

    #[test]
    fn detects_media_types() {
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        let (m, mt) = parse_manifest("x", None, idx).expect("index");
        assert!(matches!(m, AnyManifest::Index(_)));
        assert_eq!(mt, OCI_INDEX);
        let s1 = br#"{"schemaVersion":1,"fsLayers":[]}"#;
        assert!(matches!(
            parse_manifest("x", Some(DOCKER_SCHEMA1_SIGNED), s1),
            Err(RegistryError::UnsupportedMediaType { .. })
        ));
        assert!(matches!(
            parse_manifest("x", None, b"{not json"),
            Err(RegistryError::InvalidManifest { .. })
        ));
    }
}
