//! `list`: the containers under the state root.

use anyhow::{Context, Result};
use clap::ValueEnum;

use super::state::StateView;
use super::Globals;

/// Output of `list` and `ps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(short = 'f', long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Print only the container ids.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

pub fn run(args: &Args, g: &Globals) -> Result<()> {
    let rt = g.runtime();
    let containers = rt.list().context("listing containers")?;
    if args.quiet {
        for c in &containers {
            println!("{}", c.id());
        }
        return Ok(());
    }
    match args.format {
        Format::Json => {
            let views: Vec<StateView<'_>> = containers
                .iter()
                .map(|c| StateView::new(c.state()))
                .collect();
            let json = serde_json::to_string(&views).context("serialising the list")?;
            println!("{json}");
        }
        Format::Table => {
            let mut rows =
                vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from)];
            for c in &containers {
                let s = c.state();
                rows.push([
                    s.id.clone(),
                    s.pid.to_string(),
                    s.status.to_string(),
                    s.bundle.display().to_string(),
                    s.created.clone(),
                    s.owner.clone(),
                ]);
            }
            print!("{}", align_columns(&rows));
        }
    }
    Ok(())
}

/// Minimum width of a column, padding included.
const MIN_CELL: usize = 12;
/// Spaces after the widest cell of a column.
const PADDING: usize = 3;

/// Lays rows out in space-padded columns (every column but the last is as
/// wide as its widest cell plus 3, and at least 12), as runc's table does.
pub fn align_columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count() + PADDING).max(MIN_CELL);
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < N {
                let pad = widths[i] - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_alignment() {
        let rows = vec![
            ["ID", "PID", "OWNER"].map(String::from),
            ["a-very-long-container-id", "1234", "root"].map(String::from),
        ];
        let t = align_columns(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], format!("{:<27}{:<12}OWNER", "ID", "PID"));
        assert_eq!(
            lines[1],
            format!("{:<27}{:<12}root", "a-very-long-container-id", "1234")
        );
    }
}
