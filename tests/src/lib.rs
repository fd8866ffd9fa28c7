//! Shared helpers for the end-to-end tests: bundles, unique names, cleanup.
//!
//! The runtime under test is an OCI runtime with runc's command line. It is chosen by
//! `BERTH_TEST_RUNTIME` (a path, or a name looked up in `PATH`), so the same tests check
//! `runc` and `crun` as well as our own `berth-runc`; by default the `berth-runc` that cargo
//! built next to the test executable is used (see [`runtime::runtime_binary`]).
//!
//! Every test makes a [`TestCase`]: a unique container id, a temporary directory holding the
//! runtime's state root and the bundle, and a cgroup path `/berth-test/<id>`. Dropping it
//! force-deletes every container it made and removes what is left, even when the test panics.

pub mod bundle;
pub mod cgroup2;
pub mod console;
pub mod containerd;
pub mod leaks;
pub mod oci_image;
pub mod poll;
pub mod registry;
pub mod runtime;
pub mod spec;
pub mod testcase;

pub use bundle::Bundle;
pub use console::ConsoleSocket;
pub use poll::wait_until;
pub use runtime::{runtime_binary, CmdOutput, Runtime};
pub use spec::Spec;
pub use testcase::TestCase;

/// Name of the parent cgroup under which every test container is placed.
pub const CGROUP_PARENT: &str = "berth-test";

/// True when the tests run as root; most runtime tests need it and skip themselves otherwise.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
