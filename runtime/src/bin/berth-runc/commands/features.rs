//! `features`: print the OCI features document.

use anyhow::Result;

pub fn run() -> Result<()> {
    println!("{}", crate::features::features_json()?);
    Ok(())
}
