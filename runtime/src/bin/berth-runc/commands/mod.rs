//! The subcommands, one file each. Each exposes an `Args` struct (clap) and a
//! `run` function returning the process exit code.

use std::path::PathBuf;

use anyhow::Result;
use berth_runtime::container::Runtime;
use clap::Subcommand;

pub mod checkpoint;
pub mod create;
pub mod delete;
pub mod events;
pub mod exec;
pub mod features;
pub mod kill;
pub mod list;
pub mod pause;
pub mod ps;
pub mod run;
pub mod spec;
pub mod start;
pub mod state;
pub mod update;

/// What the global flags decided for every command.
#[derive(Debug, Clone)]
pub struct Globals {
    pub root: PathBuf,
    pub systemd_cgroup: bool,
}

impl Globals {
    pub fn runtime(&self) -> Runtime {
        Runtime::new(self.root.clone(), self.systemd_cgroup)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container from a bundle; its process waits for `start`.
    Create(create::Args),
    /// Start the user process of a created container.
    Start(start::Args),
    /// Create and start a container, then (unless detached) wait for it.
    Run(run::Args),
    /// Print a container's state as JSON.
    State(state::Args),
    /// Send a signal to a container's init process (or all its processes).
    Kill(kill::Args),
    /// Delete a container and everything the runtime holds for it.
    Delete(delete::Args),
    /// Run a new process inside a running container.
    Exec(exec::Args),
    /// List the processes running inside a container.
    Ps(ps::Args),
    /// List the containers under the state root.
    List(list::Args),
    /// Freeze every process of a container.
    Pause(pause::Args),
    /// Thaw a paused container.
    Resume(pause::Args),
    /// Change a container's resource limits.
    Update(update::Args),
    /// Print a container's resource usage as JSON events.
    Events(events::Args),
    /// Print what this runtime supports, as an OCI features document.
    Features,
    /// Write a default config.json for a new bundle.
    Spec(spec::Args),
    /// Not supported: checkpointing a container.
    Checkpoint(checkpoint::Args),
    /// Not supported: restoring a container from a checkpoint.
    Restore(checkpoint::Args),
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Create(_) => "create",
            Command::Start(_) => "start",
            Command::Run(_) => "run",
            Command::State(_) => "state",
            Command::Kill(_) => "kill",
            Command::Delete(_) => "delete",
            Command::Exec(_) => "exec",
            Command::Ps(_) => "ps",
            Command::List(_) => "list",
            Command::Pause(_) => "pause",
            Command::Resume(_) => "resume",
            Command::Update(_) => "update",
            Command::Events(_) => "events",
            Command::Features => "features",
            Command::Spec(_) => "spec",
            Command::Checkpoint(_) => "checkpoint",
            Command::Restore(_) => "restore",
        }
    }
}

/// Runs one command; `Ok` carries the exit code.
pub fn dispatch(command: Command, g: &Globals) -> Result<i32> {
    match command {
        Command::Create(a) => create::run(&a, g).map(|()| 0),
        Command::Start(a) => start::run(&a, g).map(|()| 0),
        Command::Run(a) => run::run(&a, g),
        Command::State(a) => state::run(&a, g).map(|()| 0),
        Command::Kill(a) => kill::run(&a, g).map(|()| 0),
        Command::Delete(a) => delete::run(&a, g).map(|()| 0),
        Command::Exec(a) => exec::run(&a, g),
        Command::Ps(a) => ps::run(&a, g).map(|()| 0),
        Command::List(a) => list::run(&a, g).map(|()| 0),
        Command::Pause(a) => pause::pause(&a, g).map(|()| 0),
        Command::Resume(a) => pause::resume(&a, g).map(|()| 0),
        Command::Update(a) => update::run(&a, g).map(|()| 0),
        Command::Events(a) => events::run(&a, g).map(|()| 0),
        Command::Features => features::run().map(|()| 0),
        Command::Spec(a) => spec::run(&a).map(|()| 0),
        Command::Checkpoint(_) => checkpoint::unsupported("checkpoint"),
        Command::Restore(_) => checkpoint::unsupported("restore"),
    }
}
