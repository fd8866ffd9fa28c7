//! The `berth` command line. Every command talks to the engine through the
//! Docker Engine API ([`client`]), on every OS; output follows Docker's CLI
//! ([`format`]), and pull/push progress is drawn by [`progress`].

pub mod client;
pub mod commands;
pub mod config;
pub mod format;
pub mod progress;
pub mod template;
pub mod terminal;

use std::process::ExitCode;

use clap::Parser;

pub use commands::Cli;

/// Runs the CLI with the process's arguments; returns the exit code
/// (1 for engine errors, 125 for usage errors, as `docker`).
/// Where the engine is when nothing names one (no `--host`, `BERTH_HOST` or context): on
/// macOS and Windows the `berth` binary passes a function that boots the machine on demand
/// and returns its endpoint; elsewhere the default socket is used.
pub type DefaultEngine = fn() -> anyhow::Result<String>;

pub fn main() -> ExitCode {
    main_with(None)
}

/// [`main`], with `default_engine` consulted when nothing names an engine.
pub fn main_with(default_engine: Option<DefaultEngine>) -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 125 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli, default_engine)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(1)
        }
    }
}

/// The bytes of `--detach-keys` (ctrl-p ctrl-q when not given), or an error naming the flag.
pub fn parse_detach_keys(spec: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let spec = spec.unwrap_or_default();
    berth_detach_keys::parse_keys(spec)
        .map_err(|e| anyhow::anyhow!("invalid --detach-keys {spec:?}: {e}"))
}
