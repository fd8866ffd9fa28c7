//! `start`: let a created container's user process run.

use anyhow::Result;

use super::Globals;
use crate::common;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    pub id: String,
}

pub fn run(args: &Args, g: &Globals) -> Result<()> {
    let mut c = common::load(&g.runtime(), &args.id)?;
    Ok(c.start()?)
}
