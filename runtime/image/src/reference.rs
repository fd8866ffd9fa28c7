//! Image references, parsed and normalised exactly as Docker does:
//! `busybox` → `docker.io/library/busybox:latest`.
//!
//! OWNER: image-store helper. Keep these signatures.

use crate::digest::Digest;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host with optional port, normalised (`docker.io` for Docker Hub).
    pub registry: String,
    /// Repository path, `library/` added for official Docker Hub images.
    pub repository: String,
    /// Tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format: {0:?}")]
    Invalid(String),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        Err(ReferenceError::Invalid(s.to_string()))
    }
}
// Also to provide: Display (the full normalised form), `familiar()` (Docker's
// short form: `busybox:latest`), `repository_name()` (`registry/repository`),
// and the host to contact (`registry-1.docker.io` for `docker.io`).
