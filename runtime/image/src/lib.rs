//! Berth's image store: everything between an image reference and the blobs
//! on disk.
//!
//! - [`reference`]: parsing and normalising image references exactly as Docker does.
//! - [`digest`]: content digests and a hashing writer.
//! - [`content`]: the content-addressed blob store; crash-safe, verified,
//!   resumable ingests.
//! - [`images`]: named image records (reference → manifest/index descriptor).

pub mod content;
pub mod digest;
pub mod images;
pub mod reference;

pub use content::{ContentError, ContentStore, Ingest};
pub use digest::{Digest, DigestError};
pub use images::{ImageRecord, ImageStore, ImageStoreError};
pub use reference::{Reference, ReferenceError};
