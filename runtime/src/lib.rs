//! Berth's Linux container runtime.
//!
//! Turns an OCI bundle (a `config.json` per the OCI runtime spec plus a root
//! filesystem) into a running, isolated, resource-limited process, and manages
//! it through its lifecycle (create, start, kill, delete, exec, pause, update).
//!
//! Module map:
//! - [`spec`]: loading and validating a bundle's `config.json`.
//! - [`state`]: the on-disk record of each container under the runtime root.
//! - [`container`]: the lifecycle operations, one file per operation.
//! - [`process`]: what runs in the new process between fork and `execve`.
//! - [`namespaces`], [`rootfs`], [`cgroups`], [`capabilities`], [`seccomp`],
//!   [`lsm`]: one kernel facility each.
//! - [`hooks`]: OCI hooks with state on stdin and timeouts.
//! - [`console`]: the pseudo-terminal handed over `--console-socket`.
//! - [`cloned_binary`]: re-exec from a sealed memfd (CVE-2019-5736).

pub mod capabilities;
pub mod cgroups;
pub mod cloned_binary;
pub mod console;
pub mod container;
pub mod error;
pub mod fork;
pub mod hooks;
pub mod lsm;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod sync;

pub use error::RuntimeError;
