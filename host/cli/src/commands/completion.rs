//! `completion bash|zsh|fish|powershell`: shell completion scripts,
//! generated from the parser's own definitions.

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to generate the script for.
    #[arg(value_enum)]
    shell: Shell,
}

pub fn completion(args: &CompletionArgs) -> Result<()> {
    let mut command = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "berth", &mut out);
    use std::io::Write;
    std::io::stdout()
        .write_all(&out)
        .context("writing the completion script")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_is_consistent() {
        // Catches clashing short flags between global and command options.
        super::super::Cli::command().debug_assert();
    }

    #[test]
    fn scripts_for_every_shell() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::PowerShell] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut super::super::Cli::command(), "berth", &mut out);
            let text = String::from_utf8_lossy(&out);
            assert!(
                text.contains("exec") && text.contains("health-cmd"),
                "{shell}"
            );
        }
    }
}
