//! Berth's registry client: the OCI distribution API / Docker registry v2.
//!
//! - [`RegistryClient`]: pull into a [`berth_image::ContentStore`] (platform
//!   selection, digests verified, concurrent resumable blob downloads), push
//!   (existence checks, cross-repository mounts, monolithic and chunked
//!   uploads), tag, catalog and tag listing, login/logout.
//! - Auth: anonymous, Bearer token challenge flow, Basic; credentials from the
//!   Docker config file and credential helpers ([`config`]).
//! - Plain HTTP for loopback and insecure registries, mirrors for docker.io,
//!   retries with backoff on connect errors, 5xx and 429.

pub mod auth;
mod client;
pub mod config;
pub mod error;
pub mod manifest;
mod pull;
mod push;

use berth_image::{Digest, Reference};

pub use client::RegistryClient;
pub use config::{ClientConfig, Credentials};
pub use error::RegistryError;
pub use manifest::{normalize_platform, parse_platform, platform_string, Descriptor, Platform};
pub use pull::{PulledImage, PulledLayer};
pub use push::{PushOptions, PushedImage};

/// Why a blob was not transferred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Pull: the blob is already committed in the local store.
    AlreadyPresent,
    /// Push: the registry already has the blob in this repository.
    ExistsInRegistry,
    /// Push: the registry mounted it from another repository.
    Mounted { from: String },
    /// A foreign / non-distributable layer that could not be fetched.
    Foreign { detail: String },
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::AlreadyPresent => write!(f, "already present"),
            SkipReason::ExistsInRegistry => write!(f, "layer already exists"),
            SkipReason::Mounted { from } => write!(f, "mounted from {from}"),
            SkipReason::Foreign { detail } => write!(f, "foreign layer skipped: {detail}"),
        }
    }
}

/// Pull and push progress, for the CLI's bars. Blob events are per layer (and
/// per config blob on push).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The reference resolved to a manifest (or index) digest.
    Resolved {
        reference: String,
        digest: Digest,
        media_type: String,
        endpoint: String,
    },
    /// A transfer starts; `offset` bytes were already there (resumed ingest).
    LayerStarted {
        digest: Digest,
        size: u64,
        offset: u64,
    },
    /// `done` of `total` bytes are transferred (including the resumed offset).
    LayerProgress {
        digest: Digest,
        done: u64,
        total: u64,
    },
    LayerDone {
        digest: Digest,
    },
    LayerSkipped {
        digest: Digest,
        reason: SkipReason,
    },
    /// Push: a manifest was stored under `reference` (a tag or its digest).
    ManifestPushed {
        digest: Digest,
        reference: String,
    },
    Done {
        digest: Digest,
    },
}

/// The progress callback. Called from the pulling task; keep it quick (send
/// into a channel for anything slow).
pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// `registry/repository[:tag][@digest]`, for messages.
pub(crate) fn ref_string(r: &Reference) -> String {
    let mut s = format!("{}/{}", r.registry, r.repository);
    if let Some(t) = &r.tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = &r.digest {
        s.push('@');
        s.push_str(&d.to_string());
    }
    s
}
