//! `run`: create and start a container; unless detached, stay with it until
//! it exits (forwarding signals, proxying its terminal), delete it unless
//! `--keep`, and exit with its exit code.

use anyhow::{Context, Result};
use berth_runtime::container::Container;

use super::{create, Globals};
use crate::{common, foreground, tty};

#[derive(Debug, clap::Args)]
#[group(id = "run-args")]
pub struct Args {
    #[command(flatten)]
    pub create: create::Args,

    /// Return once the container has started.
    #[arg(short = 'd', long)]
    pub detach: bool,

    /// Keep the container's state after it exits (foreground only).
    #[arg(long)]
    pub keep: bool,
}

pub fn run(args: &Args, g: &Globals) -> Result<i32> {
    let mut opts = args.create.options()?;
    let spec = common::load_spec(&opts.bundle)?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    tty::check_terminal(args.detach, terminal, opts.console_socket.is_some())?;

    if args.detach {
        let mut c = create::create(&args.create, &opts, g)?;
        if let Err(e) = c.start() {
            let _ = c.delete(true);
            return Err(e).with_context(|| format!("starting container {}", args.create.id));
        }
        return Ok(0);
    }

    foreground::become_subreaper()?;
    let console = if terminal {
        Some(tty::PrivateConsole::new()?)
    } else {
        None
    };
    opts.console_socket = console.as_ref().map(|c| c.path().to_path_buf());
    let mut c = create::create(&args.create, &opts, g)?;
    let result = stay_with(&mut c, console.as_ref());
    drop(console);
    if result.is_err() || !args.keep {
        let deleted = c
            .delete(true)
            .with_context(|| format!("deleting container {}", args.create.id));
        // The first failure is the one to report.
        let code = result?;
        deleted?;
        return Ok(code);
    }
    result
}

/// Starts `c` and supervises its init process until it exits.
fn stay_with(c: &mut Container, console: Option<&tty::PrivateConsole>) -> Result<i32> {
    let master = console.map(tty::PrivateConsole::receive).transpose()?;
    let signals = foreground::SignalPipe::install()?;
    c.start()
        .with_context(|| format!("starting container {}", c.id()))?;
    let pid = c.state().pid;
    let _raw = master
        .as_ref()
        .map(|_| berth_runtime::console::RawMode::enter());
    foreground::supervise(pid, &signals, master.as_ref())
}
