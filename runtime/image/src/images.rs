//! Named image records: a normalised reference → the descriptor (digest,
//! media type, size) of its manifest or index. Stored atomically.
//!
//! OWNER: image-store helper. Keep these signatures.

use std::path::Path;

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ImageStoreError {
    #[error("image store operation not implemented: {0}")]
    NotImplemented(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageRecord {
    /// Normalised reference, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// RFC 3339.
    pub created: String,
}

#[derive(Debug, Clone)]
pub struct ImageStore {
    root: std::path::PathBuf,
}

impl ImageStore {
    pub fn open(root: &Path) -> Result<Self, ImageStoreError> {
        Ok(Self {
            root: root.to_path_buf(),
        })
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn get(&self, _name: &str) -> Result<Option<ImageRecord>, ImageStoreError> {
        Err(ImageStoreError::NotImplemented("get"))
    }
    /// Creates or replaces the record (a tag).
    pub fn put(&self, _record: &ImageRecord) -> Result<(), ImageStoreError> {
        Err(ImageStoreError::NotImplemented("put"))
    }
    pub fn remove(&self, _name: &str) -> Result<Option<ImageRecord>, ImageStoreError> {
        Err(ImageStoreError::NotImplemented("remove"))
    }
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageStoreError> {
        Err(ImageStoreError::NotImplemented("list"))
    }
}
