//! `delete`: remove a container and everything the runtime holds for it.

use anyhow::{Context, Result};
use berth_runtime::state::Status;

use super::Globals;
use crate::common;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kill the container first if it is still running (and succeed when
    /// there is no such container).
    #[arg(short = 'f', long)]
    pub force: bool,

    /// Container id.
    pub id: String,
}

pub fn run(args: &Args, g: &Globals) -> Result<()> {
    let rt = g.runtime();
    let c = match common::load(&rt, &args.id) {
        Ok(c) => c,
        Err(e) if common::is_not_found(&e) => {
            // A create killed half-way can leave a directory without state;
            // clear it so the id can be used again.
            let dir = rt.root().join(&args.id);
            if dir.is_dir() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing leftover state {}", dir.display()))?;
            }
            return if args.force { Ok(()) } else { Err(e) };
        }
        Err(e) => return Err(e),
    };
    // As runc: a created container whose process never started is deleted
    // (its waiting init killed) without --force.
    let force = args.force || c.status() == Status::Created;
    Ok(c.delete(force)?)
}
