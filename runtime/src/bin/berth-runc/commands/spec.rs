//! `spec`: write a default `config.json` for a new bundle.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::spec_template;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bundle directory to write config.json into; default: the current directory.
    #[arg(short = 'b', long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,

    /// Write a spec an unprivileged user can run (user namespace, no network namespace).
    #[arg(long)]
    pub rootless: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let dir = args.bundle.clone().unwrap_or_else(|| PathBuf::from("."));
    if !dir.is_dir() {
        bail!(
            "bundle {} does not exist or is not a directory",
            dir.display()
        );
    }
    let path = dir.join("config.json");
    let mut spec = spec_template::default_spec();
    if args.rootless {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        spec_template::make_rootless(&mut spec, uid, gid);
    }
    // Checked against oci_spec's Spec, but written from the JSON value:
    // its keys are sorted, where Spec would print capability sets (hash
    // sets) in a different order every time.
    serde_json::from_value::<oci_spec::runtime::Spec>(spec.clone())
        .context("checking the default spec")?;
    let mut text = serde_json::to_string_pretty(&spec).context("serialising the spec")?;
    text.push('\n');
    // create_new: never overwrite, and no window between a check and the write.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!("File {} exists. Remove it first", path.display())
            } else {
                anyhow::Error::new(e).context(format!("creating {}", path.display()))
            }
        })?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
