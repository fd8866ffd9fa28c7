//! The registry client's error type: one variant per thing that can fail, each
//! naming what failed. Display text leaves out the source error; callers print
//! the chain.

use berth_image::{ContentError, Digest};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("manifest unknown: {reference} does not exist on the registry ({code}: {message})")]
    ManifestUnknown {
        reference: String,
        code: String,
        message: String,
    },
    #[error("repository unknown: {repository} does not exist on {registry} ({code}: {message})")]
    NameUnknown {
        registry: String,
        repository: String,
        code: String,
        message: String,
    },
    #[error("blob {digest} unknown in repository {repository}")]
    BlobUnknown { repository: String, digest: Digest },
    #[error(
        "{status} unauthorized: {what} on {registry} ({})",
        if *with_credentials { "the configured credentials were rejected or lack access" } else { "no credentials were used; log in first" }
    )]
    Unauthorized {
        registry: String,
        what: String,
        status: u16,
        with_credentials: bool,
        detail: String,
    },
    #[error("429 too many requests from {registry} for {what} after {attempts} attempts")]
    TooManyRequests {
        registry: String,
        what: String,
        attempts: u32,
    },
    #[error(
        "server error {status} from {registry} for {what} after {attempts} attempts: {detail}"
    )]
    ServerError {
        registry: String,
        what: String,
        status: u16,
        attempts: u32,
        detail: String,
    },
    #[error("unexpected HTTP status {status} from {registry} for {what}: {detail}")]
    UnexpectedStatus {
        registry: String,
        what: String,
        status: u16,
        detail: String,
    },
    #[error("request to {url} failed after {attempts} attempts")]
    Http {
        url: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error(
        "download of blob {digest} was cut after {received} of {expected} bytes (after {attempts} attempts); \
         the partial data is kept and the next pull resumes from there"
    )]
    Truncated {
        digest: Digest,
        received: u64,
        expected: u64,
        attempts: u32,
    },
    #[error("no manifest for platform {wanted} in {reference}; available platforms: {}", available.join(", "))]
    NoMatchingPlatform {
        reference: String,
        wanted: String,
        available: Vec<String>,
    },
    #[error("invalid manifest for {reference}: {reason}")]
    InvalidManifest { reference: String, reason: String },
    #[error("unsupported manifest media type {media_type:?} for {reference}")]
    UnsupportedMediaType {
        reference: String,
        media_type: String,
    },
    #[error("registry {registry} does not support {endpoint}")]
    Unsupported { registry: String, endpoint: String },
    #[error("invalid platform {0:?} (expected os/arch[/variant])")]
    InvalidPlatform(String),
    #[error("content store operation failed: {what}")]
    Content {
        what: String,
        #[source]
        source: Box<ContentError>,
    },
    #[error("I/O error: {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid docker config file {path}")]
    ConfigParse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("credential helper docker-credential-{helper} failed for {server}: {message}")]
    CredentialHelper {
        helper: String,
        server: String,
        message: String,
    },
    #[error("getting a token from {realm} failed: {detail}")]
    Token { realm: String, detail: String },
    #[error("invalid registry response from {registry}: {detail}")]
    Protocol { registry: String, detail: String },
    #[error("blob {digest} is not in the local content store")]
    MissingLocalBlob { digest: Digest },
}

impl RegistryError {
    pub(crate) fn content(what: impl Into<String>) -> impl FnOnce(ContentError) -> Self {
        let what = what.into();
        move |source| RegistryError::Content {
            what,
            source: Box::new(source),
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| RegistryError::Io { what, source }
    }

    /// Errors caused locally (disk, config), as opposed to the registry; a pull
    /// does not fall back to the next mirror on these.
    pub(crate) fn is_local(&self) -> bool {
        matches!(
            self,
            RegistryError::Content { .. }
                | RegistryError::Io { .. }
                | RegistryError::ConfigParse { .. }
                | RegistryError::InvalidPlatform(_)
        )
    }
}
