//! `GET /events` through the real `docker` CLI: the container, volume and
//! exec events Docker emits, in Docker's order and with its attributes;
//! `die` for containers that exit on their own, also across a daemon killed
//! with SIGKILL (reported once); filters; `--since`/`--until`; live streams.

mod common;

use std::io::BufRead;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{poll_until, DaemonProcess, Server};
use serde_json::Value;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `docker events --since <since> --until <now + 1 s> [args] --format '{{json .}}'`.
fn events(docker: &dyn Fn(&[&str]) -> String, since: f64, args: &[&str]) -> Vec<Value> {
    let since = format!("{since:.9}");
    let until = format!("{:.9}", now() + 1.0);
    let mut all = vec!["events", "--since", &since, "--until", &until];
    all.extend(args);
    all.extend(["--format", "{{json .}}"]);
    docker(&all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn actions_of(events: &[Value], actor: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["Actor"]["ID"] == actor)
        .map(|e| e["Action"].as_str().unwrap_or("").to_string())
        .collect()
}

fn attr<'a>(e: &'a Value, key: &str) -> &'a str {
    e["Actor"]["Attributes"][key].as_str().unwrap_or("")
}

fn find<'a>(events: &'a [Value], actor: &str, action: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["Actor"]["ID"] == actor && e["Action"] == action)
        .unwrap_or_else(|| panic!("no {action} event for {actor}: {events:#?}"))
}

struct Cleanup<'a>(&'a Server);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let out = self.0.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = self.0.docker(&["rm", "-f", "-v", id]);
        }
    }
}

#[test]
fn container_lifecycle_events_in_dockers_order_with_its_attributes() {
    let server = Server::start();
    let _cleanup = Cleanup(&server);
    let root = server.busybox_rootfs(&["sh", "sleep", "true"]);
    server.import_rootfs(&root);
    let docker = |args: &[&str]| server.docker_ok(args);
    let t0 = now();

    // A TERM handler: a container's init ignores signals it has none for.
    let id = docker(&[
        "create",
        "--name",
        "ev-a",
        "--label",
        "tier=front",
        "-v",
        "evvol:/data",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 143' TERM; while true; do sleep 0.1; done",
    ])
    .trim()
    .to_string();
    docker(&["start", "ev-a"]);
    docker(&["exec", "ev-a", "true"]);
    docker(&["pause", "ev-a"]);
    docker(&["unpause", "ev-a"]);
    docker(&["rename", "ev-a", "ev-b"]);
    docker(&["stop", "-t", "10", "ev-b"]);
    docker(&["start", "ev-b"]);
    docker(&["restart", "-t", "10", "ev-b"]);
    docker(&["kill", "ev-b"]);
    docker(&["rm", "ev-b"]);
    docker(&["volume", "rm", "evvol"]);

    let all = events(&docker, t0, &[]);
    let exec_cmd = "true";
    assert_eq!(
        actions_of(&all, &id),
        [
            "create",
            "start",
            &format!("exec_create: {exec_cmd}"),
            &format!("exec_start: {exec_cmd}"),
            "exec_die",
            "pause",
            "unpause",
            "rename",
            "kill",
            "die",
            "stop",
            "start",
            "kill",
            "die",
            "stop",
            "start",
            "restart",
            "kill",
            "die",
            "destroy",
        ],
        "{all:#?}"
    );
    let ours: Vec<&Value> = all
        .iter()
        .filter(|e| e["Actor"]["ID"] == id.as_str())
        .collect();
    for e in &ours {
        assert_eq!(e["Type"], "container");
        assert_eq!(e["scope"], "local");
        // The legacy fields old clients read.
        assert_eq!(e["status"], e["Action"]);
        assert_eq!(e["id"], id.as_str());
        assert_eq!(e["from"], "busybox");
        assert_eq!(attr(e, "image"), "busybox");
        assert_eq!(attr(e, "tier"), "front", "labels are attributes: {e}");
    }
    assert_eq!(attr(ours[0], "name"), "ev-a");
    let rename = find(&all, &id, "rename");
    assert_eq!(attr(rename, "name"), "ev-b");
    assert_eq!(attr(rename, "oldName"), "/ev-a");
    let dies: Vec<&str> = ours
        .iter()
        .filter(|e| e["Action"] == "die")
        .map(|e| attr(e, "exitCode"))
        .collect();
    assert_eq!(dies, ["143", "143", "137"]);
    let kills: Vec<&str> = ours
        .iter()
        .filter(|e| e["Action"] == "kill")
        .map(|e| attr(e, "signal"))
        .collect();
    assert_eq!(kills, ["15", "15", "9"]);
    let exec_die = find(&all, &id, "exec_die");
    assert_eq!(attr(exec_die, "exitCode"), "0");
    assert_eq!(
        attr(exec_die, "execID"),
        attr(find(&all, &id, "exec_create: true"), "execID")
    );
    assert!(ours
        .windows(2)
        .all(|w| w[0]["timeNano"].as_i64() < w[1]["timeNano"].as_i64()));

    // Volume events: created with the container, mounted at each start.
    let volume: Vec<&Value> = all.iter().filter(|e| e["Type"] == "volume").collect();
    let actions: Vec<&str> = volume
        .iter()
        .map(|e| e["Action"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        actions,
        ["create", "mount", "mount", "mount", "destroy"],
        "{volume:#?}"
    );
    assert!(volume
        .iter()
        .all(|e| e["Actor"]["ID"] == "evvol" && attr(e, "driver") == "local"));
    assert!(
        volume[0].get("status").is_none(),
        "no legacy fields: {}",
        volume[0]
    );
    assert_eq!(attr(volume[1], "container"), id);
    assert_eq!(attr(volume[1], "destination"), "/data");
    assert_eq!(attr(volume[1], "read/write"), "true");

    // Filters, as the CLI sends them.
    let labelled = events(&docker, t0, &["--filter", "label=tier=front"]);
    assert_eq!(labelled.len(), ours.len());
    let volumes = events(
        &docker,
        t0,
        &["--filter", "type=volume", "--filter", "event=mount"],
    );
    assert_eq!(volumes.len(), 3);
    let execs = events(
        &docker,
        t0,
        &[
            "--filter",
            "container=ev-b",
            "--filter",
            "event=exec_create",
        ],
    );
    assert!(
        execs.is_empty(),
        "the name at the time of the event counts: {execs:#?}"
    );
    let execs = events(
        &docker,
        t0,
        &[
            "--filter",
            "container=ev-a",
            "--filter",
            "event=exec_create",
        ],
    );
    assert_eq!(execs.len(), 1, "{execs:#?}");
    let by_id = events(
        &docker,
        t0,
        &[
            "--filter",
            &format!("container={}", &id[..12]),
            "--filter",
            "event=die",
        ],
    );
    assert_eq!(by_id.len(), 3);
    let none = events(&docker, t0, &["--filter", "image=nothing-like-it"]);
    assert!(none.is_empty(), "{none:#?}");
    let bad = server.docker(&[
        "events", "--since", "1", "--until", "2", "--filter", "bogus=1",
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("invalid filter 'bogus'"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn containers_that_exit_on_their_own_health_checks_and_live_streams() {
    let server = Server::start();
    let _cleanup = Cleanup(&server);
    let root = server.busybox_rootfs(&["sh", "sleep", "true"]);
    server.import_rootfs(&root);
    let docker = |args: &[&str]| server.docker_ok(args);

    // A live stream (no --since): what happens from now on, as it happens.
    let mut watcher = std::process::Command::new("docker")
        .args([
            "events",
            "--filter",
            "container=ev-live",
            "--format",
            "{{json .}}",
        ])
        .env("DOCKER_HOST", format!("unix://{}", server.socket.display()))
        .env("DOCKER_CONFIG", server.dir.path().join("docker-config"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker events");
    let t0 = now();
    // The stream is open once the CLI has connected: events before that
    // are not in it. Create until the first event shows up.
    let mut lines = std::io::BufReader::new(watcher.stdout.take().expect("stdout")).lines();
    docker(&["create", "--name", "ev-live", "busybox", "true"]);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.by_ref() {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut live = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while live.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "live events: {live:?}"
        );
        if let Ok(Ok(line)) = rx.recv_timeout(Duration::from_secs(5)) {
            let e: Value = serde_json::from_str(&line).expect("json event");
            live.push(e["Action"].as_str().unwrap_or("").to_string());
        }
        if live.is_empty() {
            // Not connected when the first create happened: another one.
            let _ = server.docker(&["rm", "ev-live"]);
            docker(&["create", "--name", "ev-live", "busybox", "true"]);
        } else if live.len() == 1 {
            docker(&["rm", "ev-live"]);
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert_eq!(live, ["create", "destroy"]);

    // Exits nobody asked for: seen by the daemon and reported as `die`.
    let own = docker(&[
        "run", "-d", "--name", "ev-self", "busybox", "sh", "-c", "exit 3",
    ])
    .trim()
    .to_string();
    assert_eq!(docker(&["wait", "ev-self"]).trim(), "3");
    let removed = docker(&["run", "--rm", "--name", "ev-rm", "busybox", "true"]);
    assert_eq!(removed, "");
    let checked = docker(&[
        "run",
        "-d",
        "--name",
        "ev-health",
        "--health-cmd",
        "true",
        "--health-interval",
        "1s",
        "busybox",
        "sleep",
        "60",
    ])
    .trim()
    .to_string();
    poll_until("the container to be healthy", || {
        docker(&["inspect", "-f", "{{.State.Health.Status}}", "ev-health"]).trim() == "healthy"
    });

    let all = events(&docker, t0, &[]);
    assert_eq!(
        actions_of(&all, &own),
        ["create", "start", "die"],
        "{all:#?}"
    );
    assert_eq!(attr(find(&all, &own, "die"), "exitCode"), "3");
    let rm_id = all
        .iter()
        .find(|e| e["Action"] == "create" && attr(e, "name") == "ev-rm")
        .and_then(|e| e["Actor"]["ID"].as_str())
        .expect("ev-rm created")
        .to_string();
    assert_eq!(
        actions_of(&all, &rm_id),
        ["create", "attach", "start", "die", "destroy"],
        "{all:#?}"
    );
    let health = actions_of(&all, &checked);
    assert!(
        health.starts_with(&["create".to_string(), "start".to_string()]),
        "{health:?}"
    );
    assert_eq!(
        health
            .iter()
            .filter(|a| *a == "health_status: healthy")
            .count(),
        1,
        "reported when it changes: {health:?}"
    );
    // The probe runs as an exec (`--health-cmd` is CMD-SHELL), with exec
    // events as in Docker.
    assert!(
        health.iter().any(|a| a == "exec_create: /bin/sh -c true"),
        "{health:?}"
    );
    let only = events(
        &docker,
        t0,
        &[
            "--filter",
            "event=health_status",
            "--filter",
            "container=ev-health",
        ],
    );
    assert_eq!(only.len(), 1, "{only:#?}");
    let dies = events(
        &docker,
        t0,
        &["--filter", "event=die", "--filter", "image=busybox"],
    );
    assert_eq!(dies.len(), 2, "ev-self and ev-rm: {dies:#?}");
}

/// Exits while the daemon was killed are reported by the next one, once;
/// containers it adopted are watched too.
#[test]
fn die_is_reported_once_across_a_daemon_killed_with_sigkill() {
    let mut daemon = DaemonProcess::new("berth-events-restore");
    daemon.start();
    daemon.import_busybox(&["sh", "sleep", "test"]);
    let t0 = now();
    // Each container exits with its code once its trigger file appears.
    let wait_for = |name: &str, code: u8| -> (String, std::path::PathBuf) {
        let dir = daemon.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("trigger dir");
        let bind = format!("{}:/trigger", dir.display());
        let script = format!("while ! test -e /trigger/go; do sleep 0.05; done; exit {code}");
        let id = daemon
            .docker_ok(&[
                "run", "-d", "--name", name, "-v", &bind, "busybox", "sh", "-c", &script,
            ])
            .trim()
            .to_string();
        (id, dir.join("go"))
    };
    let (away, away_go) = wait_for("ev-away", 7);
    let (later, later_go) = wait_for("ev-later", 5);
    let pid = |d: &DaemonProcess, name: &str| -> i32 {
        d.docker_ok(&["inspect", "-f", "{{.State.Pid}}", name])
            .trim()
            .parse()
            .expect("pid")
    };
    let away_pid = pid(&daemon, "ev-away");

    daemon.kill_9();
    std::fs::write(&away_go, "").expect("trigger");
    poll_until("ev-away to exit while the daemon is down", || {
        std::fs::read_to_string(format!("/proc/{away_pid}/stat"))
            .map_or(true, |s| s.contains(") Z "))
    });
    daemon.start();
    assert_eq!(daemon.docker_ok(&["wait", "ev-away"]).trim(), "7");
    // Adopted and still running; it exits now, with nobody calling the API.
    std::fs::write(&later_go, "").expect("trigger");
    assert_eq!(daemon.docker_ok(&["wait", "ev-later"]).trim(), "5");

    let docker = |args: &[&str]| daemon.docker_ok(args);
    let dies = events(&docker, t0, &["--filter", "event=die"]);
    let codes: Vec<(String, String)> = dies
        .iter()
        .map(|e| {
            (
                e["Actor"]["ID"].as_str().unwrap_or("").to_string(),
                attr(e, "exitCode").to_string(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            (away.clone(), "7".to_string()),
            (later.clone(), "5".to_string())
        ],
        "{dies:#?}"
    );
    assert_eq!(attr(&dies[0], "name"), "ev-away");

    // Another crash and restart: nothing is reported twice.
    daemon.kill_9();
    daemon.start();
    let docker = |args: &[&str]| daemon.docker_ok(args);
    let again = events(&docker, t0, &["--filter", "event=die"]);
    assert!(again.is_empty(), "reported again: {again:#?}");
}
