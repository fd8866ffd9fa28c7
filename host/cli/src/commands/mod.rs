//! The commands, grouped as Docker groups them.

mod attach;
mod auth;
mod completion;
mod container_group;
mod containers;
mod context;
mod exec;
mod images;
mod inspect;
mod monitor;
mod network;
mod system;
mod volume;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::client::{Client, Endpoint};

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "Berth: containers, fast and lean. Docker's commands, over the Docker Engine API."
)]
pub struct Cli {
    /// Engine to talk to (unix:///path); else $BERTH_HOST, $BERTH_CONTEXT, the current context, unix:///run/berth/berth.sock.
    #[arg(short = 'H', long, global = true, value_name = "HOST")]
    pub host: Option<String>,

    /// Name of the context to use (overrides BERTH_HOST, BERTH_CONTEXT and `context use`).
    #[arg(long, global = true, value_name = "CONTEXT")]
    pub context: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    Rm(containers::RmArgs),
    /// List containers.
    Ps(containers::PsArgs),
    /// Fetch the logs of a container.
    Logs(containers::LogsArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(containers::ContainersArgs),
    /// Export a container's filesystem as a tar archive.
    Export(containers::ExportArgs),
    /// Show the client and engine versions.
    Version(system::VersionArgs),
    /// Display system-wide information.
    Info(system::FormatArgs),
    /// List images.
    Images(images::ListArgs),
    /// Download an image from a registry.
    Pull(images::PullArgs),
    /// Upload an image to a registry.
    Push(images::PushArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(images::TagArgs),
    /// Remove one or more images.
    Rmi(images::RemoveArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default).
    Save(images::SaveArgs),
    /// Load images from a tar archive or STDIN.
    Load(images::LoadArgs),
    /// Import the contents from a tarball to create a filesystem image.
    Import(images::ImportArgs),
    /// Show the history of an image.
    History(images::HistoryArgs),
    /// Return low-level information on containers or images.
    Inspect(inspect::InspectArgs),
    #[command(flatten)]
    More(container_group::MoreCommand),
    /// Manage images.
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Manage the engine.
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Copy files/folders between a container and the local filesystem.
    Cp(volume::CpArgs),
    /// List port mappings or a specific mapping for the container.
    Port(network::PortArgs),
    /// Log in to a registry.
    Login(auth::LoginArgs),
    /// Log out from a registry.
    Logout(auth::LogoutArgs),
    /// Run the engine: serve the Docker Engine API on a local socket (see `berth daemon --help`).
    Daemon {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Manage the Linux VM that runs the engine on macOS and Windows (see `berth machine --help`).
    Machine {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

pub async fn run(cli: Cli, default_engine: Option<crate::DefaultEngine>) -> Result<ExitCode> {
    if let Command::More(more) = &cli.command {
        if let Some(done) =
            container_group::local(more, cli.host.as_deref(), cli.context.as_deref())
        {
            return done;
        }
    }
    let client = Client::new(Endpoint::resolve(
        cli.host.as_deref(),
        cli.context.as_deref(),
        default_engine,
    )?);
    let done = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Command::Run(a) => containers::run(&client, &a).await,
        Command::Create(a) => done(containers::create(&client, &a).await),
        Command::Start(a) => done(containers::start(&client, &a).await),
        Command::Stop(a) => done(containers::stop(&client, &a, false).await),
        Command::Restart(a) => done(containers::stop(&client, &a, true).await),
        Command::Kill(a) => done(containers::kill(&client, &a).await),
        Command::Rm(a) => done(containers::rm(&client, &a).await),
        Command::Ps(a) => done(containers::ps(&client, &a).await),
        Command::Logs(a) => done(containers::logs(&client, &a).await),
        Command::Wait(a) => done(containers::wait(&client, &a).await),
        Command::Export(a) => done(containers::export(&client, &a).await),
        Command::More(c) => container_group::run(&client, c).await,
        other => done(run_other(&client, other).await),
    }
}

async fn run_other(client: &Client, command: Command) -> Result<()> {
    let client = client.clone();
    match command {
        Command::Version(a) => system::version(&client, &a).await,
        Command::Info(a) => system::info(&client, &a).await,
        Command::Images(a) => images::list(&client, &a).await,
        Command::Pull(a) => images::pull(&client, &a).await,
        Command::Push(a) => images::push(&client, &a).await,
        Command::Tag(a) => images::tag(&client, &a).await,
        Command::Rmi(a) => images::remove(&client, &a).await,
        Command::Save(a) => images::save(&client, &a).await,
        Command::Load(a) => images::load(&client, &a).await,
        Command::Import(a) => images::import(&client, &a).await,
        Command::History(a) => images::history(&client, &a).await,
        Command::Inspect(a) => inspect::inspect(&client, &a).await,
        Command::Image(c) => images::image_command(&client, c).await,
        Command::System(c) => system::system_command(&client, c).await,
        Command::Network(c) => network::network_command(&client, c).await,
        Command::Volume(c) => volume::volume_command(&client, c).await,
        Command::Cp(a) => volume::cp(&client, &a).await,
        Command::Port(a) => network::port(&client, &a).await,
        Command::Login(a) => auth::login(&client, &a).await,
        Command::Logout(a) => auth::logout(&a).await,
        // Handled in `run`.
        Command::Run(_)
        | Command::Create(_)
        | Command::Start(_)
        | Command::Stop(_)
        | Command::Restart(_)
        | Command::Kill(_)
        | Command::Rm(_)
        | Command::Ps(_)
        | Command::Logs(_)
        | Command::Wait(_)
        | Command::Export(_)
        | Command::More(_) => Ok(()),
        // The `berth` binary runs the daemon before the CLI parses anything.
        Command::Daemon { .. } => anyhow::bail!("`berth daemon` is run by the berth binary itself"),
        Command::Machine { .. } => {
            anyhow::bail!("`berth machine` is run by the berth binary itself")
        }
    }
}
