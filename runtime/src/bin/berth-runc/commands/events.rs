//! `events`: resource usage of a container as JSON lines, once (`--stats`)
//! or every `--interval` until the container stops.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_runtime::state::Status;
use serde::Serialize;

use super::Globals;
use crate::common;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the stats once and exit.
    #[arg(long)]
    pub stats: bool,

    /// Time between two stats events (Go duration syntax: 5s, 500ms, 1m30s).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Container id.
    pub id: String,
}

#[derive(Serialize)]
struct Event<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<T>,
}

pub fn run(args: &Args, g: &Globals) -> Result<()> {
    let rt = g.runtime();
    let mut out = std::io::stdout().lock();
    let mut emit = |line: String| -> Result<()> {
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .context("writing to stdout")
    };
    let mut oom_kills: Option<u64> = None;
    loop {
        let c = common::load(&rt, &args.id)?;
        if c.status() == Status::Stopped {
            if args.stats {
                bail!("container {} is not running", args.id);
            }
            return Ok(());
        }
        if !args.stats {
            // An OOM kill since the last look becomes an "oom" event.
            let now = c.oom_kill_count().ok();
            if let (Some(before), Some(now)) = (oom_kills, now) {
                if now > before {
                    emit(event_line("oom", &args.id, None::<()>)?)?;
                }
            }
            oom_kills = now.or(oom_kills);
        }
        let stats = c
            .stats()
            .with_context(|| format!("reading the stats of container {}", args.id))?;
        emit(event_line("stats", &args.id, Some(stats))?)?;
        if args.stats {
            return Ok(());
        }
        std::thread::sleep(args.interval);
    }
}

/// One event as runc prints it: `{"type":…,"id":…,"data":…}` (no `data`
/// for events that carry none).
fn event_line<T: Serialize>(kind: &str, id: &str, data: Option<T>) -> Result<String> {
    serde_json::to_string(&Event { kind, id, data }).context("serialising an event")
}

/// Parses a Go-style duration: one or more `<number><unit>` with units ns,
/// us (or µs), ms, s, m, h; the number may have a fraction. Zero is refused
/// (an interval must be positive).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {raw:?} (examples: 5s, 500ms, 1m30s)");
    let mut rest = raw;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += value * nanos_per_unit;
        rest = tail;
    }
    if !(total >= 1.0 && total < u64::MAX as f64) {
        return Err(bad());
    }
    Ok(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
    }

    #[test]
    fn bad_durations() {
        for s in ["", "5", "s", "5x", "0s", "-1s", "1..5s", "5 s"] {
            assert!(parse_duration(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn event_shape() {
        let line = event_line(
            "stats",
            "c1",
            Some(berth_runtime::cgroups::Stats::default()),
        )
        .expect("json");
        let v: serde_json::Value = serde_json::from_str(&line).expect("parse");
        assert_eq!(v["type"], "stats");
        assert_eq!(v["id"], "c1");
        assert!(v["data"].is_object());
        assert_eq!(
            event_line("oom", "c1", None::<()>).expect("json"),
            r#"{"type":"oom","id":"c1"}"#
        );
    }
}
