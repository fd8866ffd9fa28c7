//! The content-addressed blob store, crash-safe at any moment.
//!
//! OWNER: image-store helper. Keep these signatures.

use std::path::{Path, PathBuf};

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("content store operation not implemented: {0}")]
    NotImplemented(&'static str),
}

/// Blobs under `<root>/blobs/<alg>/<hex>`; partial ingests under
/// `<root>/ingest/<alg>/<hex>` until verified.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

/// A blob being written. Resumes where an earlier ingest of the same digest
/// stopped (even in another process, after a crash): `offset()` bytes are
/// already there and hashed. Nothing is visible in the store until `commit`
/// verified size and digest.
pub struct Ingest {
    _private: (),
}

impl ContentStore {
    pub fn open(root: &Path) -> Result<Self, ContentError> {
        Ok(Self {
            root: root.to_path_buf(),
        })
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Size of a committed blob, or None.
    pub fn info(&self, _digest: &Digest) -> Result<Option<u64>, ContentError> {
        Err(ContentError::NotImplemented("info"))
    }
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(digest.algorithm()).join(digest.hex())
    }
    pub fn open_blob(&self, _digest: &Digest) -> Result<std::fs::File, ContentError> {
        Err(ContentError::NotImplemented("open_blob"))
    }
    pub fn read_all(&self, _digest: &Digest) -> Result<Vec<u8>, ContentError> {
        Err(ContentError::NotImplemented("read_all"))
    }
    /// Writes a whole small blob (manifests, configs) and commits it.
    pub fn write_all(&self, _bytes: &[u8], _expected: Option<&Digest>) -> Result<Digest, ContentError> {
        Err(ContentError::NotImplemented("write_all"))
    }
    /// Starts or resumes the ingest of `expected` (size if known).
    pub fn ingest(&self, _expected: &Digest, _size: Option<u64>) -> Result<Ingest, ContentError> {
        Err(ContentError::NotImplemented("ingest"))
    }
    pub fn delete(&self, _digest: &Digest) -> Result<(), ContentError> {
        Err(ContentError::NotImplemented("delete"))
    }
    /// Committed blobs with sizes.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>, ContentError> {
        Err(ContentError::NotImplemented("list"))
    }
}

impl Ingest {
    /// Bytes already written (and hashed) by earlier attempts.
    pub fn offset(&self) -> u64 {
        0
    }
    /// Verifies size and digest, fsyncs, and makes the blob visible atomically.
    pub fn commit(self) -> Result<(), ContentError> {
        Err(ContentError::NotImplemented("commit"))
    }
    /// Throws the partial data away (e.g. after the server sent the wrong bytes).
    pub fn discard(self) -> Result<(), ContentError> {
        Err(ContentError::NotImplemented("discard"))
    }
}

impl std::io::Write for Ingest {
    fn write(&mut self, _buf: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("not implemented"))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
