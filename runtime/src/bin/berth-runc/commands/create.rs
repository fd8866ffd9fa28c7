//! `create`: set a container up from a bundle; its process waits for `start`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use berth_runtime::container::{Container, CreateOptions};

use super::Globals;
use crate::common;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bundle directory (holding config.json); default: the current directory.
    #[arg(short = 'b', long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,

    /// Unix socket to send the terminal's master fd to.
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,

    /// Write the container process's host pid to FILE.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Enter the root filesystem with chroot(2) rather than pivot_root(2).
    #[arg(long)]
    pub no_pivot: bool,

    /// Do not create a new session keyring for the container.
    #[arg(long)]
    pub no_new_keyring: bool,

    /// Pass N extra file descriptors (3..3+N) on to the container process.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,

    /// Container id.
    pub id: String,
}

impl Args {
    /// Validated library options.
    pub fn options(&self) -> Result<CreateOptions> {
        common::validate_id(&self.id)?;
        Ok(CreateOptions {
            bundle: common::bundle_dir(self.bundle.as_deref())?,
            console_socket: self.console_socket.as_deref().map(absolute).transpose()?,
            pid_file: self.pid_file.as_deref().map(absolute).transpose()?,
            no_pivot: self.no_pivot,
            no_new_keyring: self.no_new_keyring,
            preserve_fds: self.preserve_fds,
        })
    }
}

/// Paths handed to the library are made absolute here, where the caller's
/// working directory is still the one the user meant.
fn absolute(p: &std::path::Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving path {}", p.display()))
}

pub fn run(args: &Args, g: &Globals) -> Result<()> {
    let opts = args.options()?;
    create(args, &opts, g).map(drop)
}

/// Creates the container (the library refuses an id that is taken).
pub fn create(args: &Args, opts: &CreateOptions, g: &Globals) -> Result<Container> {
    Ok(g.runtime().create(&args.id, opts)?)
}
