//! Watching containers: `top`, `stats` and `events`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use hyper::Method;
use serde_json::{json, Value};

use crate::client::{self, filters_json, path_segment, query, Client};
use crate::format::{binary_size, human_size, print_formatted, print_table, rfc3339_nanos};

#[derive(Debug, Args)]
pub struct TopArgs {
    container: String,
    /// Options for ps (passed to the engine, which may ignore them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_options: Vec<String>,
}

/// The container's processes, as the engine lists them.
pub async fn top(client: &Client, args: &TopArgs) -> Result<()> {
    let ps_args = args.ps_options.join(" ");
    let mut pairs = Vec::new();
    if !ps_args.is_empty() {
        pairs.push(("ps_args", ps_args.as_str()));
    }
    let top: Value = client
        .get_json(&format!(
            "/containers/{}/top{}",
            path_segment(&args.container),
            query(&pairs)
        ))
        .await?;
    let titles: Vec<&str> = top["Titles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let rows: Vec<Vec<String>> = top["Processes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            p.as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    c.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| c.to_string())
                })
                .collect()
        })
        .collect();
    print_table(&titles, &rows);
    Ok(())
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    all: bool,
    /// Disable streaming stats and only pull the first result.
    #[arg(long)]
    no_stream: bool,
    /// Do not truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// Format output using a template ('table', '{{json .}}', '{{.Name}} {{.CPUPerc}}').
    #[arg(long)]
    format: Option<String>,
    containers: Vec<String>,
}

const STATS_HEADERS: &[(&str, &str)] = &[
    ("Container", "CONTAINER"),
    ("ID", "CONTAINER ID"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

const STATS_TABLE: &str =
    "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

/// CPU time of the container and of the whole host, for a percentage
/// between two samples.
#[derive(Debug, Clone, Copy, Default)]
struct CpuSample {
    container: f64,
    system: f64,
}

fn cpu_sample(stats: &Value, key: &str) -> CpuSample {
    CpuSample {
        container: stats[key]["cpu_usage"]["total_usage"]
            .as_f64()
            .unwrap_or(0.0),
        system: stats[key]["system_cpu_usage"].as_f64().unwrap_or(0.0),
    }
}

/// Docker's CPU %: the container's share of host CPU time between two
/// samples, times the CPUs online.
fn cpu_percent(before: CpuSample, after: CpuSample, online: f64) -> f64 {
    let cpu = after.container - before.container;
    let system = after.system - before.system;
    if cpu > 0.0 && system > 0.0 {
        cpu / system * online * 100.0
    } else {
        0.0
    }
}

/// Memory in use without the page cache the kernel can drop (cgroup v1's
/// `total_inactive_file`, v2's `inactive_file`), as Docker shows it.
fn memory_used(stats: &Value) -> f64 {
    let usage = stats["memory_stats"]["usage"].as_f64().unwrap_or(0.0);
    let raw = &stats["memory_stats"]["stats"];
    let cache = raw["total_inactive_file"]
        .as_f64()
        .or_else(|| raw["inactive_file"].as_f64())
        .unwrap_or(0.0);
    if cache < usage {
        usage - cache
    } else {
        usage
    }
}

fn sum_fields(map: &Value, fields: [&str; 2]) -> (f64, f64) {
    let mut totals = (0.0, 0.0);
    for item in map.as_object().into_iter().flat_map(|m| m.values()) {
        totals.0 += item[fields[0]].as_f64().unwrap_or(0.0);
        totals.1 += item[fields[1]].as_f64().unwrap_or(0.0);
    }
    totals
}

fn block_io(stats: &Value) -> (f64, f64) {
    let mut totals = (0.0, 0.0);
    for entry in stats["blkio_stats"]["io_service_bytes_recursive"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let value = entry["value"].as_f64().unwrap_or(0.0);
        match entry["op"].as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => totals.0 += value,
            Some("write") => totals.1 += value,
            _ => {}
        }
    }
    totals
}

/// One row of `docker stats`, with the fields its templates use.
fn stats_row(shown_as: &str, stats: &Value, cpu: f64, no_trunc: bool) -> Value {
    let id = stats["id"].as_str().unwrap_or_default();
    let id = if no_trunc {
        id.to_string()
    } else {
        id.chars().take(12).collect()
    };
    let used = memory_used(stats);
    let limit = stats["memory_stats"]["limit"].as_f64().unwrap_or(0.0);
    let mem_perc = if limit > 0.0 {
        used / limit * 100.0
    } else {
        0.0
    };
    let (rx, tx) = sum_fields(&stats["networks"], ["rx_bytes", "tx_bytes"]);
    let (read, write) = block_io(stats);
    let pids = stats["pids_stats"]["current"].as_u64().unwrap_or(0);
    json!({
        "Container": shown_as,
        "ID": id,
        "Name": stats["name"].as_str().unwrap_or_default().trim_start_matches('/'),
        "CPUPerc": format!("{cpu:.2}%"),
        "MemUsage": format!("{} / {}", binary_size(used), binary_size(limit)),
        "MemPerc": format!("{mem_perc:.2}%"),
        "NetIO": format!("{} / {}", human_size(rx), human_size(tx)),
        "BlockIO": format!("{} / {}", human_size(read), human_size(write)),
        "PIDs": pids.to_string(),
    })
}

async fn sample(client: &Client, container: &str) -> Result<Value> {
    client
        .get_json(&format!(
            "/containers/{}/stats{}",
            path_segment(container),
            query(&[("stream", "0")])
        ))
        .await
}

/// The containers to show: those named, else the running (or all) ones.
async fn stats_targets(client: &Client, args: &StatsArgs) -> Result<Vec<String>> {
    if !args.containers.is_empty() {
        return Ok(args.containers.clone());
    }
    let list: Vec<Value> = client
        .get_json(&format!(
            "/containers/json{}",
            query(&[("all", if args.all { "1" } else { "0" })])
        ))
        .await?;
    Ok(list
        .iter()
        .filter_map(|c| c["Id"].as_str())
        .map(|id| id.chars().take(12).collect())
        .collect())
}

/// One row from one stats object: CPU % from its `cpu_stats` and
/// `precpu_stats` (the engine's sample a second before).
fn row_of(shown_as: &str, s: &Value, no_trunc: bool) -> Value {
    let online = s["cpu_stats"]["online_cpus"].as_f64().unwrap_or(1.0);
    let cpu = cpu_percent(
        cpu_sample(s, "precpu_stats"),
        cpu_sample(s, "cpu_stats"),
        online,
    );
    stats_row(shown_as, s, cpu, no_trunc)
}

/// Live resource usage, as `docker stats`: one stream from the engine per
/// container (an object a second), the table redrawn every second from the
/// latest object of each; containers that start or stop come and go unless
/// named. With `--no-stream`, one table from one answer per container
/// (asked concurrently: each takes the engine a second, to fill
/// `precpu_stats`).
pub async fn stats(client: &Client, args: &StatsArgs) -> Result<()> {
    let template = args.format.clone().unwrap_or_else(|| STATS_TABLE.into());
    if args.no_stream {
        let targets = stats_targets(client, args).await?;
        let mut asked = tokio::task::JoinSet::new();
        for (i, t) in targets.iter().enumerate() {
            let (client, t) = (client.clone(), t.clone());
            asked.spawn(async move { (i, sample(&client, &t).await) });
        }
        let mut answers: Vec<Option<Value>> = vec![None; targets.len()];
        while let Some(joined) = asked.join_next().await {
            let (i, answer) = joined.context("stats task")?;
            match answer {
                Ok(s) => answers[i] = Some(s),
                // A listed container that went away meanwhile is skipped;
                // one the user named is an error.
                Err(e) if args.containers.is_empty() => drop(e),
                Err(e) => return Err(e),
            }
        }
        let rows: Vec<Value> = targets
            .iter()
            .zip(&answers)
            .filter_map(|(t, s)| s.as_ref().map(|s| row_of(t, s, args.no_trunc)))
            .collect();
        print_formatted(&template, &rows, STATS_HEADERS);
        return Ok(());
    }
    let latest: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let arrived = Arc::new(tokio::sync::Notify::new());
    let mut first = true;
    let mut streams: HashMap<String, tokio::task::JoinHandle<Result<()>>> = HashMap::new();
    let clear = crate::terminal::stdout_is_terminal();
    loop {
        let targets = stats_targets(client, args).await?;
        for t in &targets {
            if streams.contains_key(t) {
                continue;
            }
            let (client, t2, latest) = (client.clone(), t.clone(), Arc::clone(&latest));
            let arrived = Arc::clone(&arrived);
            let task = tokio::spawn(async move {
                let response = client
                    .call(
                        Method::GET,
                        &format!(
                            "/containers/{}/stats{}",
                            path_segment(&t2),
                            query(&[("stream", "1")])
                        ),
                    )
                    .await?;
                client::for_each_json_line(response, |s| {
                    lock(&latest).insert(t2.clone(), s);
                    arrived.notify_waiters();
                    Ok(())
                })
                .await
            });
            streams.insert(t.clone(), task);
        }
        if first {
            // The first table waits for every stream's second object (a
            // second on), which carries the CPU % already.
            first = false;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            loop {
                let notified = arrived.notified();
                let ready = {
                    let latest = lock(&latest);
                    targets.iter().all(|t| {
                        latest.get(t).is_some_and(|s| {
                            s["precpu_stats"]["system_cpu_usage"].as_u64() > Some(0)
                        })
                    })
                };
                if ready || streams.values().all(|h| h.is_finished()) {
                    break;
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    break;
                }
            }
        } else {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // A named container the engine does not know: its error, as docker.
        for t in &args.containers {
            if streams.get(t).is_some_and(|h| h.is_finished()) {
                if let Some(handle) = streams.remove(t) {
                    if let Ok(Err(e)) = handle.await {
                        return Err(e);
                    }
                }
            }
        }
        // Streams of listed containers that stopped end; they leave the table.
        streams.retain(|t, h| targets.contains(t) || !h.is_finished());
        lock(&latest).retain(|t, _| targets.contains(t));
        let rows: Vec<Value> = {
            let latest = lock(&latest);
            targets
                .iter()
                .filter_map(|t| latest.get(t).map(|s| row_of(t, s, args.no_trunc)))
                .collect()
        };
        if clear {
            // Clear the screen and home the cursor, as docker redraws.
            print!("\x1b[2J\x1b[H");
        }
        print_formatted(&template, &rows, STATS_HEADERS);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Filter output based on conditions provided (type=, event=, image=, label=…).
    #[arg(short, long)]
    filter: Vec<String>,
    /// Show all events created since timestamp (RFC 3339, Unix seconds, or a duration like 10m).
    #[arg(long)]
    since: Option<String>,
    /// Stream events until this timestamp (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Format output using a template ('{{json .}}', '{{.Type}} {{.Action}}').
    #[arg(long)]
    format: Option<String>,
}

/// Docker's `--since`/`--until`: a duration means that long ago; Unix
/// seconds and RFC 3339 pass through to the engine.
pub(crate) fn event_time(text: &str, now_nanos: i128) -> String {
    match super::containers::parse_duration(text) {
        Ok(ago) if text.trim() != "0" => {
            let at = now_nanos - i128::from(ago);
            format!(
                "{}.{:09}",
                at.div_euclid(1_000_000_000),
                at.rem_euclid(1_000_000_000)
            )
        }
        _ => text.to_string(),
    }
}

/// One event as `docker events` prints it.
fn event_line(e: &Value) -> String {
    let nanos = e["timeNano"]
        .as_i64()
        .map(i128::from)
        .or_else(|| e["time"].as_i64().map(|t| i128::from(t) * 1_000_000_000))
        .unwrap_or(0);
    let attributes: Vec<String> = e["Actor"]["Attributes"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let mut line = format!(
        "{} {} {} {}",
        rfc3339_nanos(nanos),
        e["Type"].as_str().unwrap_or_default(),
        e["Action"].as_str().unwrap_or_default(),
        e["Actor"]["ID"].as_str().unwrap_or_default()
    );
    if !attributes.is_empty() {
        line.push_str(&format!(" ({})", attributes.join(", ")));
    }
    line
}

/// The engine's events as they happen (until `--until`, or Ctrl-C).
pub async fn events(client: &Client, args: &EventsArgs) -> Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    let since = args.since.as_deref().map(|s| event_time(s, now));
    let until = args.until.as_deref().map(|s| event_time(s, now));
    let filters = filters_json(&args.filter)?;
    let mut pairs = Vec::new();
    if let Some(s) = &since {
        pairs.push(("since", s.as_str()));
    }
    if let Some(u) = &until {
        pairs.push(("until", u.as_str()));
    }
    if let Some(f) = &filters {
        pairs.push(("filters", f.as_str()));
    }
    let response = client
        .call(Method::GET, &format!("/events{}", query(&pairs)))
        .await?;
    client::for_each_json_line(response, |event| {
        use std::io::Write;
        let line = match &args.format {
            Some(t) => crate::format::render_template(t, &event),
            None => event_line(&event),
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .context("writing events")
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_between_samples() {
        let before = CpuSample {
            container: 1e9,
            system: 100e9,
        };
        let after = CpuSample {
            container: 2e9,
            system: 110e9,
        };
        assert!((cpu_percent(before, after, 2.0) - 20.0).abs() < 1e-9);
        assert_eq!(cpu_percent(after, before, 2.0), 0.0);
    }

    #[test]
    fn stats_rows_like_docker() {
        let stats = json!({
            "id": "0123456789abcdef",
            "name": "/web",
            "memory_stats": {"usage": 3_145_728u64, "limit": 1_073_741_824u64, "stats": {"inactive_file": 1_048_576u64}},
            "pids_stats": {"current": 3},
            "networks": {"eth0": {"rx_bytes": 1000, "tx_bytes": 2000}},
        });
        let row = stats_row("web", &stats, 12.345, false);
        assert_eq!(row["ID"], "0123456789ab");
        assert_eq!(row["Name"], "web");
        assert_eq!(row["CPUPerc"], "12.35%");
        assert_eq!(row["MemUsage"], "2MiB / 1GiB");
        assert_eq!(row["MemPerc"], "0.20%");
        assert_eq!(row["NetIO"], "1kB / 2kB");
        assert_eq!(row["PIDs"], "3");
    }

    #[test]
    fn event_times() {
        let now = 1_700_000_000_000_000_000i128;
        assert_eq!(event_time("10m", now), "1699999400.000000000");
        assert_eq!(event_time("1700000000", now), "1700000000");
        assert_eq!(
            event_time("2025-01-01T00:00:00Z", now),
            "2025-01-01T00:00:00Z"
        );
        let e = json!({"Type": "container", "Action": "start", "Actor": {"ID": "abc", "Attributes": {"image": "busybox", "name": "x"}}, "timeNano": 0});
        assert_eq!(
            event_line(&e),
            "1970-01-01T00:00:00.000000000Z container start abc (image=busybox, name=x)"
        );
    }
}
