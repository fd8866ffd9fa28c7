//! Container lifecycle. [`Runtime`] is a state root (runc's `--root`); each
//! operation on a [`Container`] lives in a file of its own.

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxResources, Process};

use crate::cgroups::Stats;
use crate::error::RuntimeError;
use crate::state::{ContainerState, Status};

/// Options of `create` and `run`.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub bundle: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    /// Extra fds (3..3+N) passed on to the container process.
    pub preserve_fds: u32,
}

/// Options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    /// Return right after the process started instead of waiting for it.
    pub detach: bool,
    pub preserve_fds: u32,
}

/// A runtime state root: one directory per container.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
    systemd_cgroup: bool,
}

/// A container known to a [`Runtime`].
#[derive(Debug)]
pub struct Container {
    state: ContainerState,
    dir: PathBuf,
}

impl Runtime {
    pub fn new(root: impl Into<PathBuf>, systemd_cgroup: bool) -> Self {
        Self {
            root: root.into(),
            systemd_cgroup,
        }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn systemd_cgroup(&self) -> bool {
        self.systemd_cgroup
    }
    /// Creates the container: namespaces, cgroup, rootfs, hooks up to
    /// createContainer; the user process waits for `start`.
    pub fn create(&self, _id: &str, _opts: &CreateOptions) -> Result<Container, RuntimeError> {
        unimplemented!()
    }
    /// Loads a container by id, with its status refreshed from the kernel.
    pub fn load(&self, _id: &str) -> Result<Container, RuntimeError> {
        unimplemented!()
    }
    /// All containers under the root, sorted by id.
    pub fn list(&self) -> Result<Vec<Container>, RuntimeError> {
        unimplemented!()
    }
}

impl Container {
    pub fn id(&self) -> &str {
        &self.state.id
    }
    pub fn state(&self) -> &ContainerState {
        &self.state
    }
    pub fn status(&self) -> Status {
        self.state.status
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Lets the user process run (poststart hooks follow).
    pub fn start(&mut self) -> Result<(), RuntimeError> {
        unimplemented!()
    }
    /// Sends `signal` to the init process, or to every process when `all`.
    pub fn kill(&self, _signal: Signal, _all: bool) -> Result<(), RuntimeError> {
        unimplemented!()
    }
    /// Removes a stopped (or, with `force`, any) container: processes, cgroup,
    /// state; then runs poststop hooks.
    pub fn delete(self, _force: bool) -> Result<(), RuntimeError> {
        unimplemented!()
    }
    pub fn pause(&mut self) -> Result<(), RuntimeError> {
        unimplemented!()
    }
    pub fn resume(&mut self) -> Result<(), RuntimeError> {
        unimplemented!()
    }
    /// Pids (host view) of every process in the container.
    pub fn processes(&self) -> Result<Vec<Pid>, RuntimeError> {
        unimplemented!()
    }
    pub fn update(&self, _resources: &LinuxResources) -> Result<(), RuntimeError> {
        unimplemented!()
    }
    pub fn stats(&self) -> Result<Stats, RuntimeError> {
        unimplemented!()
    }
    /// Runs `process` inside the running container. Returns the new
    /// process's host pid when detached, else waits and returns its exit code.
    pub fn exec(
        &self,
        _process: &Process,
        _opts: &ExecOptions,
    ) -> Result<ExecOutcome, RuntimeError> {
        unimplemented!()
    }
    /// Waits for the init process to exit (the caller must be its parent or
    /// subreaper) and returns the exit code as a shell reports it (128+signal).
    pub fn wait(&self) -> Result<i32, RuntimeError> {
        unimplemented!()
    }
}

/// What `exec` returns.
#[derive(Debug, Clone, Copy)]
pub enum ExecOutcome {
    Detached(Pid),
    Exited(i32),
}
