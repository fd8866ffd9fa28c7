//! `berth-runc`: a runc-compatible command line over the `berth_runtime`
//! library, so containerd's runc shim, podman and Kubernetes nodes can drive
//! Berth's runtime.
//!
//! This binary sits on the container start path: `main` parses arguments,
//! opens the log file when asked, and dispatches; nothing else happens up
//! front (no threads, no config parsing the command does not need).
//!
//! Module map:
//! - [`commands`]: one file per subcommand.
//! - [`fast_args`]: a clap-free parser for the start-path commands.
//! - [`logging`]: the `--log`/`--log-format` sink and RFC 3339 timestamps.
//! - [`common`]: id validation, the default state root, loading containers.
//! - [`foreground`]: signal forwarding, reaping and the terminal proxy behind
//!   `run` and `exec` when they do not detach.
//! - [`spec_template`]: the default `config.json` of `berth-runc spec`.
//! - [`features`]: the OCI features document of `berth-runc features`.
//! - [`tty`]: console sockets and raw mode for foreground terminals.

mod commands;
mod common;
mod fast_args;
mod features;
mod foreground;
mod logging;
mod spec_template;
mod tty;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

use crate::logging::{LogFormat, Logger};

/// Version of this binary.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Highest OCI runtime-spec version we read and write.
pub const OCI_VERSION: &str = "1.2.0";

/// Global flags; like runc's, they go before the subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "berth-runc",
    about = "Berth's OCI container runtime, with runc's command line",
    disable_version_flag = true,
    subcommand_required = false,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Root directory for container state (default: /run/berth-runc for root,
    /// $XDG_RUNTIME_DIR/berth-runc for other users).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Also write log messages (and errors) to FILE.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// Format of log lines.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,

    /// Log debug messages too.
    #[arg(long)]
    pub debug: bool,

    /// Manage cgroups through systemd.
    #[arg(long)]
    pub systemd_cgroup: bool,

    /// Accepted for compatibility; rootless mode is detected from the spec.
    #[arg(long, value_enum, value_name = "MODE")]
    pub rootless: Option<RootlessMode>,

    /// Accepted for compatibility; checkpoint/restore is not supported.
    #[arg(long, value_name = "PATH")]
    pub criu: Option<PathBuf>,

    /// Print the version.
    #[arg(short = 'v', long)]
    pub version: bool,

    #[command(subcommand)]
    pub command: Option<commands::Command>,
}

/// Values of `--rootless`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RootlessMode {
    Auto,
    True,
    False,
}

fn main() -> ExitCode {
    // Rust starts with SIGPIPE ignored. Ignored dispositions survive fork and
    // execve, so the container process would inherit it; and a closed stdout
    // (`berth-runc list | head`) should end us quietly, as it does C and Go
    // tools, rather than panic in println!.
    // SAFETY: plain signal(2) with SIG_DFL, before any other thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let parsed = match fast_args::parse(&argv) {
        Some(cli) => Ok(cli),
        None => Cli::try_parse(),
    };
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            // Help goes to stdout with status 0; usage errors exit 1, as runc's do.
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if cli.version {
        println!("berth-runc version {VERSION}\nspec: {OCI_VERSION}");
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        eprintln!("berth-runc: no command given (see --help)");
        return ExitCode::from(1);
    };

    // Commands that put a process of ours into a container run from a
    // sealed in-memory copy of this binary (CVE-2019-5736).
    if matches!(command.name(), "create" | "run" | "exec") {
        if let Err(e) = berth_runtime::cloned_binary::ensure_cloned() {
            eprintln!("berth-runc: {e}");
            return ExitCode::from(1);
        }
    }

    let mut logger = match Logger::open(cli.log.as_deref(), cli.log_format, cli.debug) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(1);
        }
    };
    let globals = commands::Globals {
        root: cli.root.unwrap_or_else(common::default_root),
        systemd_cgroup: cli.systemd_cgroup,
    };
    logger.debug(&format!("command: {}", command.name()));

    match commands::dispatch(command, &globals) {
        Ok(code) => exit_code(code),
        Err(err) => {
            logger.error(&format!("{err:#}"));
            ExitCode::from(1)
        }
    }
}

/// Maps a process exit status (0..=255, or 128+signal) to our own.
fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))
}
