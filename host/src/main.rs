//! The `berth` command: `berth daemon` serves the engine (Linux: in-process);
//! every other command is the CLI, which talks to an engine only through
//! the Docker Engine API (see the `berth-cli` crate).

#[cfg(target_os = "linux")]
mod daemon;
mod machine;

use std::process::ExitCode;

#[cfg(target_os = "linux")]
use clap::Parser;

/// `berth daemon …` on its own, so the CLI's parser never sees daemon flags.
#[cfg(target_os = "linux")]
#[derive(Parser)]
#[command(
    name = "berth daemon",
    about = "Serve the Docker Engine API on a local socket"
)]
struct DaemonCli {
    #[command(flatten)]
    args: daemon::DaemonArgs,
}

fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    let program = argv.next();
    let first = argv.next();
    #[cfg(not(target_os = "linux"))]
    if first.as_deref() == Some(std::ffi::OsStr::new("daemon")) {
        eprintln!(
            "berth: the engine runs only on Linux; here it runs in the VM (`berth machine start`)"
        );
        return ExitCode::from(1);
    }
    #[cfg(target_os = "linux")]
    if first.as_deref() == Some(std::ffi::OsStr::new("daemon")) {
        let rest = program.into_iter().chain(argv);
        let cli = DaemonCli::parse_from(rest);
        return match daemon::run(cli.args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    if first.as_deref() == Some(std::ffi::OsStr::new("machine")) {
        // `berth machine …` parses its own arguments (as `berth daemon`).
        return machine::main(program.into_iter().chain(argv));
    }
    berth_cli::main_with(machine::on_demand_engine())
}
