//! Berth's image store: everything between an image reference and the blobs
//! on disk.
//!
//! - [`reference`]: parsing and normalising image references exactly as Docker does.
//! - [`digest`]: content digests and an incremental hasher.
//! - [`content`]: the content-addressed blob store; crash-safe, verified,
//!   resumable ingests, garbage collection and a consistency check.
//! - [`manifest`]: the JSON documents: OCI index/manifest, Docker schema2
//!   manifest and manifest list, descriptors, the image config.
//! - [`archive`]: `docker save`/`load` archives, OCI layouts, `import`.
//! - [`images`]: named image records (reference → manifest/index descriptor).

pub mod archive;
pub mod content;
pub mod digest;
pub mod images;
pub mod manifest;
pub mod reference;

pub use content::{
    ContentError, ContentStore, GcOptions, GcReport, Ingest, IngestStatus, VerifyReport,
};
pub use digest::{Digest, DigestError, Hasher};
pub use images::{ImageRecord, ImageStore, ImageStoreError};
pub use manifest::{
    AnyManifest, Descriptor, ImageConfig, ImageIndex, ImageManifest, ManifestError, Platform,
};
pub use reference::{Reference, ReferenceError};
