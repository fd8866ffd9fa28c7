//! `GET /containers/{id}/stats`: `docker stats --no-stream` and the `berth`
//! CLI against Berth, the stream (one object a second, `precpu_stats` from
//! the object before, ending when the container stops), `one-shot`, and
//! the counters read from cgroup v1 (the host's) and cgroup v2 (a private
//! mount namespace with cgroup2 alone).

mod common;

use std::io::BufRead;
use std::time::{Duration, Instant};

use common::{DaemonProcess, JsonStream, Server};
use serde_json::Value;

struct Cleanup<'a>(&'a Server);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let out = self.0.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = self.0.docker(&["rm", "-f", id]);
        }
    }
}

/// `12.34%` → 12.34.
fn percent(s: &Value) -> f64 {
    s.as_str()
        .and_then(|p| p.trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("not a percentage: {s}"))
}

/// A busy loop: CPU time shows within a second.
const BURN: &[&str] = &["sh", "-c", "while :; do :; done"];

#[test]
fn docker_stats_streams_and_one_shot_from_cgroup_v1() {
    let server = Server::start();
    let _cleanup = Cleanup(&server);
    let root = server.busybox_rootfs(&["sh", "sleep"]);
    server.import_rootfs(&root);
    let mut run = vec![
        "run",
        "-d",
        "--name",
        "busy",
        "--memory",
        "64m",
        "--pids-limit",
        "50",
        "busybox",
    ];
    run.extend(BURN);
    let id = server.docker_ok(&run).trim().to_string();

    // The docker CLI's own table and template fields.
    let out = server.docker_ok(&["stats", "--no-stream", "--format", "{{json .}}", "busy"]);
    let row: Value = serde_json::from_str(out.trim()).expect("one JSON row");
    assert_eq!(row["Name"], "busy");
    assert_eq!(row["ID"], &id[..12]);
    assert!(percent(&row["CPUPerc"]) > 5.0, "a busy loop: {row}");
    let mem = row["MemUsage"].as_str().unwrap_or("");
    assert!(mem.ends_with(" / 64MiB"), "the limit: {row}");
    assert!(!mem.starts_with("0B"), "memory in use: {row}");
    assert_eq!(row["PIDs"], "1");
    // Loopback only (no bridge in this daemon): no interface to count.
    assert_eq!(row["NetIO"], "0B / 0B");
    let table = server.docker_ok(&["stats", "--no-stream"]);
    assert!(table.starts_with("CONTAINER ID"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id[..12]) && l.contains("busy")),
        "{table}"
    );

    // one-shot: at once, without a previous sample.
    let one = server.http("GET", "/containers/busy/stats?stream=false&one-shot=true");
    assert_eq!(one.status, 200, "{}", one.body);
    let one = one.json();
    assert_eq!(one["id"], id.as_str());
    assert_eq!(one["name"], "/busy");
    assert_eq!(one["preread"], "0001-01-01T00:00:00Z");
    assert_eq!(one["precpu_stats"]["cpu_usage"]["total_usage"], 0);
    assert!(one["cpu_stats"]["cpu_usage"]["total_usage"].as_u64() > Some(0));
    assert!(one["cpu_stats"]["system_cpu_usage"].as_u64() > Some(0));
    // v1: per-CPU counters, as Docker reports them there.
    let percpu = one["cpu_stats"]["cpu_usage"]["percpu_usage"]
        .as_array()
        .map(Vec::len);
    assert!(percpu.is_some_and(|n| n >= 1), "{one}");
    assert_eq!(one["memory_stats"]["limit"], 64 << 20);
    assert!(one["memory_stats"]["usage"].as_u64() > Some(0));
    assert!(
        one["memory_stats"]["stats"]
            .get("total_inactive_file")
            .is_some(),
        "{one}"
    );
    assert_eq!(one["pids_stats"]["current"], 1);
    assert_eq!(one["pids_stats"]["limit"], 50);
    assert!(one["blkio_stats"].is_object());
    let both = server.http("GET", "/containers/busy/stats?stream=true&one-shot=true");
    assert_eq!(both.status, 400, "{}", both.body);

    // stream=false: a second after a first sample, precpu filled.
    let t = Instant::now();
    let two = server
        .http("GET", "/containers/busy/stats?stream=false")
        .json();
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert_ne!(two["preread"], "0001-01-01T00:00:00Z");
    assert!(
        two["cpu_stats"]["cpu_usage"]["total_usage"].as_u64()
            > two["precpu_stats"]["cpu_usage"]["total_usage"].as_u64()
    );

    // The stream: an object a second; each one's precpu is the one before.
    let mut stream = JsonStream::open(&server.socket, "/containers/busy/stats");
    assert_eq!(stream.status, 200);
    let first = stream.next().expect("a first object");
    let t = Instant::now();
    let second = stream.next().expect("a second object");
    let gap = t.elapsed();
    assert!(
        gap >= Duration::from_millis(700) && gap < Duration::from_secs(5),
        "{gap:?}"
    );
    assert_eq!(second["precpu_stats"], first["cpu_stats"]);
    assert_eq!(second["preread"], first["read"]);
    assert!(
        second["cpu_stats"]["cpu_usage"]["total_usage"].as_u64()
            > first["cpu_stats"]["cpu_usage"]["total_usage"].as_u64()
    );
    // It ends when the container stops.
    server.docker_ok(&["stop", "-t", "1", "busy"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while stream.next().is_some() {
        assert!(Instant::now() < deadline, "the stream did not end");
    }

    // A stopped container: one empty object at once, stream or not.
    let t = Instant::now();
    let stopped = server
        .http("GET", "/containers/busy/stats?stream=false")
        .json();
    assert!(t.elapsed() < Duration::from_millis(900));
    assert_eq!(stopped["read"], "0001-01-01T00:00:00Z");
    assert_eq!(stopped["memory_stats"], serde_json::json!({}));
    let missing = server.http("GET", "/containers/nope/stats?stream=false");
    assert_eq!(missing.status, 404);
}

#[test]
fn berth_stats_streams_a_row_a_second() {
    let server = Server::start();
    let _cleanup = Cleanup(&server);
    let root = server.busybox_rootfs(&["sh", "sleep"]);
    server.import_rootfs(&root);
    let mut run = vec!["run", "-d", "--name", "hot", "busybox"];
    run.extend(BURN);
    server.docker_ok(&run);
    server.docker_ok(&["run", "-d", "--name", "idle", "busybox", "sleep", "60"]);

    let mut child = std::process::Command::new(common::berth_binary())
        .arg("--host")
        .arg(format!("unix://{}", server.socket.display()))
        .args(["stats", "--format", "{{.Name}} {{.CPUPerc}} {{.PIDs}}"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("berth stats");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    // Two refreshes: a line per running container each.
    let mut rows = Vec::new();
    while rows.len() < 4 {
        match lines.next() {
            Some(Ok(l)) => rows.push(l),
            _ => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(rows.len(), 4, "{rows:?}");
    let hot: Vec<f64> = rows
        .iter()
        .filter(|r| r.starts_with("hot "))
        .map(|r| percent(&Value::from(r.split(' ').nth(1).unwrap_or(""))))
        .collect();
    assert_eq!(hot.len(), 2, "{rows:?}");
    assert!(hot.iter().all(|p| *p > 5.0), "{rows:?}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with("idle ") && r.ends_with(" 1")),
        "{rows:?}"
    );

    // --no-stream: both containers in one go (asked concurrently: about a
    // second, not one per container).
    let t = Instant::now();
    let out = std::process::Command::new(common::berth_binary())
        .arg("--host")
        .arg(format!("unix://{}", server.socket.display()))
        .args(["stats", "--no-stream", "--format", "{{.Name}}"])
        .output()
        .expect("berth stats --no-stream");
    assert!(out.status.success());
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    assert_eq!(names, ["hot", "idle"]);
    assert!(
        t.elapsed() < Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn stats_read_from_cgroup_v2() {
    let ns = berth_tests::cgroup2::Cgroup2Namespace::new();
    let mut daemon = DaemonProcess::new("berth-stats-v2");
    daemon.start_with(&ns.prefix());
    daemon.import_busybox(&["sh", "sleep"]);
    let mut run = vec!["run", "-d", "--name", "busy2", "busybox"];
    run.extend(BURN);
    daemon.docker_ok(&run);
    let out = daemon.docker_ok(&["stats", "--no-stream", "--format", "{{json .}}", "busy2"]);
    let row: Value = serde_json::from_str(out.trim()).expect("one JSON row");
    assert!(percent(&row["CPUPerc"]) > 5.0, "{row}");
    let one = common::http(
        &daemon.socket(),
        "GET",
        "/containers/busy2/stats?stream=false&one-shot=true",
        &[],
    )
    .json();
    let usage = &one["cpu_stats"]["cpu_usage"];
    assert!(usage["total_usage"].as_u64() > Some(0), "{one}");
    assert!(usage["usage_in_usermode"].as_u64() > Some(0), "{one}");
    // cpu.stat has no per-CPU counters: none reported, as Docker on v2.
    assert!(usage.get("percpu_usage").is_none(), "{one}");
    // Read from the container's own v2 cgroup: its memory.stat keys when the
    // memory controller is there, nothing v1-shaped in any case.
    assert!(
        one["memory_stats"]["stats"]
            .get("total_inactive_file")
            .is_none(),
        "{one}"
    );
    daemon.docker_ok(&["rm", "-f", "busy2"]);
}
