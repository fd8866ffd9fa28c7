//! Berth's engine services, shared by the daemon (Linux) and the guest agent
//! (the VM on macOS and Windows).
//!
//! - [`images`]: pull, push, unpack, list, inspect, tag, remove, save, load,
//!   import, and container root filesystems.
//! - [`containers`]: container lifecycle and supervision.
//! - [`volumes`]: named and anonymous volumes (the local driver).
//! - [`events`]: the event log (`GET /events`).

pub mod containers;
pub mod events;
pub mod images;
pub mod volumes;

pub use images::{ImageDetails, ImageError, ImageService, ImageSummary, Removed};
