//! `pause` and `resume`: freeze and thaw every process of a container.

use anyhow::Result;

use super::Globals;
use crate::common;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    pub id: String,
}

pub fn pause(args: &Args, g: &Globals) -> Result<()> {
    let mut c = common::load(&g.runtime(), &args.id)?;
    Ok(c.pause()?)
}

pub fn resume(args: &Args, g: &Globals) -> Result<()> {
    let mut c = common::load(&g.runtime(), &args.id)?;
    Ok(c.resume()?)
}
