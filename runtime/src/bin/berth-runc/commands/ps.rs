//! `ps`: the processes of a container, as host pids (json) or as the
//! matching lines of `ps` (table).

use std::process::Command;

use anyhow::{bail, Context, Result};

use super::list::Format;
use super::Globals;
use crate::common;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(short = 'f', long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Container id.
    pub id: String,

    /// Options for ps(1) (default: -ef); table format only.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub ps_args: Vec<String>,
}

pub fn run(args: &Args, g: &Globals) -> Result<()> {
    let c = common::load(&g.runtime(), &args.id)?;
    let pids: Vec<i32> = c
        .processes()
        .with_context(|| format!("listing the processes of container {}", args.id))?
        .into_iter()
        .map(|p| p.as_raw())
        .collect();
    match args.format {
        Format::Json => {
            if !args.ps_args.is_empty() {
                bail!("ps options cannot be used with --format json");
            }
            let json = serde_json::to_string(&pids).context("serialising pids")?;
            println!("{json}");
        }
        Format::Table => {
            let ps_args: Vec<&str> = if args.ps_args.is_empty() {
                vec!["-ef"]
            } else {
                args.ps_args.iter().map(String::as_str).collect()
            };
            let out = Command::new("ps")
                .args(&ps_args)
                .output()
                .context("running ps")?;
            if !out.status.success() {
                bail!(
                    "ps {} failed ({}): {}",
                    ps_args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            print!(
                "{}",
                filter_ps(&String::from_utf8_lossy(&out.stdout), &pids)?
            );
        }
    }
    Ok(())
}

/// Keeps the header of `ps` output and the lines whose PID column is one of
/// `pids`.
pub fn filter_ps(output: &str, pids: &[i32]) -> Result<String> {
    let mut lines = output.lines();
    let Some(header) = lines.next() else {
        bail!("ps printed nothing");
    };
    let Some(pid_col) = header.split_whitespace().position(|f| f == "PID") else {
        bail!("no PID column in the ps output (header: {header:?})");
    };
    let mut out = String::new();
    out.push_str(header);
    out.push('\n');
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|f| f.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PS_EF: &str = "\
UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 10:00 ?        00:00:01 /sbin/init
root         120       1  0 10:01 ?        00:00:00 sh -c sleep 100
root         121     120  0 10:01 ?        00:00:00 sleep 100
user        1200       1  0 10:02 pts/0    00:00:00 bash
";

    #[test]
    fn keeps_header_and_container_lines() {
        let out = filter_ps(PS_EF, &[120, 121]).expect("filter");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("UID"));
        assert!(lines[1].contains("sh -c sleep 100"));
        assert!(lines[2].contains("sleep 100"));
    }

    #[test]
    fn pid_matched_in_pid_column_only() {
        // 1 is a PPID on the other lines; only init's own line matches.
        let out = filter_ps(PS_EF, &[1]).expect("filter");
        assert_eq!(out.lines().count(), 2);
        assert!(out.contains("/sbin/init"));
    }

    #[test]
    fn pid_column_anywhere() {
        let text = "COMMAND PID\nsleep 77\nsh 78\n";
        assert_eq!(
            filter_ps(text, &[78]).expect("filter"),
            "COMMAND PID\nsh 78\n"
        );
    }

    #[test]
    fn no_pid_column() {
        let err = filter_ps("USER COMMAND\nroot sh\n", &[1]).expect_err("no PID");
        assert!(err.to_string().contains("no PID column"));
        assert!(filter_ps("", &[1]).is_err());
    }
}
