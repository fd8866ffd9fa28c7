//! `checkpoint` and `restore`: not supported. The flags are accepted so the
//! error is about the feature, not about the command line.

use anyhow::{bail, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Anything runc accepts here; ignored.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub rest: Vec<String>,
}

pub fn unsupported(command: &str) -> Result<i32> {
    bail!("{command} is not supported by berth-runc (checkpoint/restore with CRIU is not implemented)")
}
