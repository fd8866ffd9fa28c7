//! The container commands added beside Docker's classic top-level ones
//! (exec, attach, top, stats, events, pause, unpause, rename), the
//! `berth container …` group that names every container command, and the
//! commands that need no engine (context, completion).

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::{attach, completion, containers, context, exec, inspect, monitor, volume};
use crate::client::Client;

/// Flattened into the top-level commands.
#[derive(Debug, Subcommand)]
pub enum MoreCommand {
    /// Execute a command in a running container.
    Exec(exec::ExecArgs),
    /// Attach local standard input, output, and error streams to a running container.
    Attach(attach::AttachArgs),
    /// Display the running processes of a container.
    Top(monitor::TopArgs),
    /// Display a live stream of container(s) resource usage statistics.
    Stats(monitor::StatsArgs),
    /// Get real time events from the server.
    Events(monitor::EventsArgs),
    /// Pause all processes within one or more containers.
    Pause(containers::ContainersArgs),
    /// Unpause all processes within one or more containers.
    Unpause(containers::ContainersArgs),
    /// Rename a container.
    Rename(containers::RenameArgs),
    /// Manage containers.
    #[command(subcommand)]
    Container(Box<ContainerCommand>),
    /// Manage contexts (named engine endpoints).
    #[command(subcommand)]
    Context(context::ContextCommand),
    /// Generate the shell completion script (bash, zsh, fish, powershell).
    Completion(completion::CompletionArgs),
}

/// `berth container …`.
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// List containers.
    #[command(aliases = ["ps", "list"])]
    Ls(containers::PsArgs),
    /// Create and run a new container from an image.
    Run(containers::RunArgs),
    /// Create a new container.
    Create(containers::CreateArgs),
    /// Start one or more stopped containers.
    Start(containers::ContainersArgs),
    /// Stop one or more running containers.
    Stop(containers::StopArgs),
    /// Restart one or more containers.
    Restart(containers::StopArgs),
    /// Kill one or more running containers.
    Kill(containers::KillArgs),
    /// Remove one or more containers.
    #[command(alias = "remove")]
    Rm(containers::RmArgs),
    /// Fetch the logs of a container.
    Logs(containers::LogsArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(containers::ContainersArgs),
    /// Export a container's filesystem as a tar archive.
    Export(containers::ExportArgs),
    /// Execute a command in a running container.
    Exec(exec::ExecArgs),
    /// Attach local standard input, output, and error streams to a running container.
    Attach(attach::AttachArgs),
    /// Display the running processes of a container.
    Top(monitor::TopArgs),
    /// Display a live stream of container(s) resource usage statistics.
    Stats(monitor::StatsArgs),
    /// Display detailed information on one or more containers.
    Inspect(inspect::InspectArgs),
    /// Pause all processes within one or more containers.
    Pause(containers::ContainersArgs),
    /// Unpause all processes within one or more containers.
    Unpause(containers::ContainersArgs),
    /// Rename a container.
    Rename(containers::RenameArgs),
    /// Remove all stopped containers.
    Prune(containers::PruneArgs),
    /// Copy files/folders between a container and the local filesystem.
    Cp(volume::CpArgs),
}

/// Runs the commands that need no engine; None for the others.
pub fn local(
    command: &MoreCommand,
    host: Option<&str>,
    context_flag: Option<&str>,
) -> Option<Result<ExitCode>> {
    let ok = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    match command {
        MoreCommand::Context(c) => {
            let globals = context::Globals {
                host: host.map(str::to_string),
                context: context_flag.map(str::to_string),
            };
            Some(ok(context::context_command(&globals, c.clone())))
        }
        MoreCommand::Completion(a) => Some(ok(completion::completion(a))),
        _ => None,
    }
}

pub async fn run(client: &Client, command: MoreCommand) -> Result<ExitCode> {
    let ok = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    match command {
        MoreCommand::Exec(a) => exec::exec(client, &a).await,
        MoreCommand::Attach(a) => attach::attach(client, &a).await,
        MoreCommand::Top(a) => ok(monitor::top(client, &a).await),
        MoreCommand::Stats(a) => ok(monitor::stats(client, &a).await),
        MoreCommand::Events(a) => ok(monitor::events(client, &a).await),
        MoreCommand::Pause(a) => ok(containers::pause(client, &a, false).await),
        MoreCommand::Unpause(a) => ok(containers::pause(client, &a, true).await),
        MoreCommand::Rename(a) => ok(containers::rename(client, &a).await),
        MoreCommand::Container(c) => container(client, *c).await,
        MoreCommand::Context(_) | MoreCommand::Completion(_) => {
            anyhow::bail!("internal: context and completion commands run without an engine")
        }
    }
}

async fn container(client: &Client, command: ContainerCommand) -> Result<ExitCode> {
    let ok = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    match command {
        ContainerCommand::Ls(a) => ok(containers::ps(client, &a).await),
        ContainerCommand::Run(a) => containers::run(client, &a).await,
        ContainerCommand::Create(a) => ok(containers::create(client, &a).await),
        ContainerCommand::Start(a) => ok(containers::start(client, &a).await),
        ContainerCommand::Stop(a) => ok(containers::stop(client, &a, false).await),
        ContainerCommand::Restart(a) => ok(containers::stop(client, &a, true).await),
        ContainerCommand::Kill(a) => ok(containers::kill(client, &a).await),
        ContainerCommand::Rm(a) => ok(containers::rm(client, &a).await),
        ContainerCommand::Logs(a) => ok(containers::logs(client, &a).await),
        ContainerCommand::Wait(a) => ok(containers::wait(client, &a).await),
        ContainerCommand::Export(a) => ok(containers::export(client, &a).await),
        ContainerCommand::Exec(a) => exec::exec(client, &a).await,
        ContainerCommand::Attach(a) => attach::attach(client, &a).await,
        ContainerCommand::Top(a) => ok(monitor::top(client, &a).await),
        ContainerCommand::Stats(a) => ok(monitor::stats(client, &a).await),
        ContainerCommand::Inspect(a) => ok(inspect::inspect(client, &a.containers_only()).await),
        ContainerCommand::Pause(a) => ok(containers::pause(client, &a, false).await),
        ContainerCommand::Unpause(a) => ok(containers::pause(client, &a, true).await),
        ContainerCommand::Rename(a) => ok(containers::rename(client, &a).await),
        ContainerCommand::Prune(a) => ok(containers::prune(client, &a).await),
        ContainerCommand::Cp(a) => ok(volume::cp(client, &a).await),
    }
}
