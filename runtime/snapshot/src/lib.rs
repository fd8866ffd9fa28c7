//! Berth's snapshots: layers to root filesystems.
//!
//! - [`unpack_layer`] safely extracts one (gzip/zstd/plain) layer tar into a directory,
//!   computing its diff_id on the way, converting OCI whiteouts to overlayfs ones.
//! - [`Snapshotter`] keeps committed layers by chain id and prepares per-container overlay (or
//!   copied) root filesystems, returning [`Mounts`] descriptions.
//! - [`export_tar`] writes a tree back out as a deterministic tar stream.

mod export;
mod mounts;
mod pipe;
mod snapshotter;
mod sys;
mod tarstream;
pub mod unpack;

pub use export::{export_entry, export_mounts, export_tar, ExportError};
pub use mounts::{
    is_mount_point, mount, mount_overlay_legacy, unmount, unmount_all, MountError, MountGuard,
    Mounts,
};
pub use snapshotter::{
    chain_id, LayerOutcome, SnapshotError, SnapshotMode, SnapshotUsage, Snapshotter, UsageKind,
};
pub use unpack::{
    unpack_layer, Compression, DevicePolicy, IdMap, IdRange, UnpackError, UnpackOptions,
    UnpackStats, WhiteoutMode,
};
