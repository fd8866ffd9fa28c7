//! `berth-agent`, PID 1 of Berth's Linux VM.
//!
//! One binary, four roles chosen at start:
//! - PID 1 ([`init`]): mounts, boot modules, clock, networking; then forks
//!   the server and stays behind to reap orphans and power off when the
//!   server exits.
//! - the server ([`serve`]): formats and mounts the data disk, mounts the
//!   shares ([`share`]), then serves
//!   the engine's Docker API, the control channel and port forwarding on
//!   vsock ports (see `berth_platform::protocol`).
//! - udhcpc's script (with `BERTH_DHCP_HOOK` set, see [`dhcp`]): applies a
//!   DHCP lease to eth0.
//! - `berth-monitor` (when called by that name, a link in the initramfs):
//!   the engine's per-container monitor, so the guest needs one binary.

mod cmdline;
mod dhcp;
mod disk;
mod host_services;
mod init;
mod modules;
mod ports;
mod serve;
mod share;
mod vmbus;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let name = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    if name == "berth-monitor" {
        let code = berth_engine::containers::monitor::main_with_args(&args);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // udhcpc running its script (this binary, see `dhcp`).
    if dhcp::is_hook() {
        return match dhcp::hook(args.get(1).map_or("", String::as_str)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth-agent: DHCP: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    if std::process::id() == 1 {
        init::run();
    }
    match args.get(1).map(String::as_str) {
        // For running the server outside a VM (development, tests).
        Some("serve") => match serve::run(serve::Options::from_env()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth-agent: {e:#}");
                ExitCode::from(1)
            }
        },
        _ => {
            eprintln!("usage: berth-agent (as PID 1) | berth-agent serve");
            ExitCode::from(2)
        }
    }
}
