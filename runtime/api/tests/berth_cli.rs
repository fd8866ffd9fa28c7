//! The `berth` CLI against the API server: interactive run/exec/attach
//! (through a pseudo-terminal where a TTY is involved), the watching
//! commands (top, stats, events), inspect, pause/unpause, rename, Docker's
//! exit codes, contexts and shell completions.
//!
//! Needs the `berth` binary of the same profile: `cargo build -p berth`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{berth_binary, Server, Terminal};

/// `berth` with its own config directory, so contexts never leak between
/// tests or from the user running them.
struct Berth {
    binary: PathBuf,
    home: tempfile::TempDir,
    host: Option<String>,
}

impl Berth {
    fn for_server(server: &Server) -> Berth {
        Berth {
            binary: berth_binary(),
            home: tempfile::Builder::new()
                .prefix("berth-cli-home")
                .tempdir()
                .unwrap(),
            host: Some(format!("unix://{}", server.socket.display())),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env_remove("BERTH_CONFIG")
            .env_remove("BERTH_CONTEXT")
            .env_remove("BERTH_HOST")
            .stdin(Stdio::null());
        if let Some(h) = &self.host {
            cmd.env("BERTH_HOST", h);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running berth")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running berth");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// `shell_command` (with `$B` for the berth binary) on a fresh
    /// pseudo-terminal of 30 rows × 100 columns, `input` typed into it.
    fn in_terminal(&self, shell_command: &str, input: &str) -> Output {
        let script = format!("stty rows 30 cols 100; {shell_command}");
        let mut cmd = Command::new("script");
        cmd.args(["-q", "-e", "-c", &script, "/dev/null"])
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("B", &self.binary)
            .env_remove("BERTH_CONTEXT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(h) = &self.host {
            cmd.env("BERTH_HOST", h);
        }
        let mut child = cmd.spawn().expect("util-linux script");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}

/// Removes every container of the server when the test ends, even on failure.
struct Cleanup<'a>(&'a Berth);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let out = self.0.run(&["ps", "-aq", "--no-trunc"]);
        let ids = String::from_utf8_lossy(&out.stdout).into_owned();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = self.0.run(&args);
        }
    }
}

fn import_busybox(server: &Server, berth: &Berth) {
    let root = server.dir.path().join("bbroot");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static installed");
    for applet in [
        "sh", "sleep", "echo", "cat", "true", "tty", "stty", "pwd", "id", "env", "ps",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::create_dir_all(root.join("work")).unwrap();
    let tar = server.dir.path().join("bb.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    berth.ok(&["import", tar.to_str().unwrap(), "busybox:latest"]);
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn run_exec_attach_and_exit_codes() {
    let server = Server::start();
    let berth = Berth::for_server(&server);
    let _cleanup = Cleanup(&berth);
    import_busybox(&server, &berth);

    // Plain run: both streams, the exit code, no output lost (attach is
    // made before start).
    let out = berth.run(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err"), "{}", text(&out.stderr));
    for i in 0..3 {
        let line = format!("run {i}");
        assert_eq!(
            berth.ok(&["run", "--rm", "busybox", "echo", &line]).trim(),
            line
        );
    }
    // --init: the engine's init is pid 1 and passes the exit status on.
    let out = berth.ok(&["run", "--rm", "--init", "busybox", "ps", "-o", "pid,comm"]);
    assert!(
        out.contains("1 docker-init") && out.contains("2 ps"),
        "{out}"
    );
    let out = berth.run(&["run", "--rm", "--init", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    // --rm: nothing left behind.
    assert_eq!(berth.ok(&["ps", "-aq"]).trim(), "");

    // -i: piped stdin reaches the process and its EOF ends it.
    let out = berth.with_stdin(&["run", "-i", "--rm", "busybox", "cat"], "piped in\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "piped in\n");

    // Flags reach the process: env, env-file, workdir, user, entrypoint.
    let env_file = server.dir.path().join("env.list");
    std::fs::write(&env_file, "# comment\nFROM_FILE=yes\n").unwrap();
    let out = berth.ok(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "--env-file",
        env_file.to_str().unwrap(),
        "-w",
        "/work",
        "-u",
        "1234:5678",
        "--entrypoint",
        "sh",
        "busybox",
        "-c",
        "echo $A $FROM_FILE; pwd; id -u; id -g",
    ]);
    assert_eq!(out, "1 yes\n/work\n1234\n5678\n");

    // -it through a pseudo-terminal: the process gets a terminal of our
    // size, typed input, and its exit code comes back.
    let out = berth.in_terminal(
        "$B run -it --rm busybox sh -c 'tty; stty size; read line; echo got:$line; exit 5'",
        "hello\n",
    );
    let t = text(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{t}\n{}", text(&out.stderr));
    assert!(t.contains("/dev/pts/0"), "{t}");
    assert!(t.contains("30 100"), "{t}");
    assert!(t.contains("got:hello"), "{t}");

    // exec, with and without a terminal.
    berth.ok(&["run", "-d", "--name", "target", "busybox", "sleep", "120"]);
    assert_eq!(berth.ok(&["exec", "target", "echo", "hi"]), "hi\n");
    let out = berth.ok(&[
        "exec",
        "-e",
        "X=42",
        "-w",
        "/work",
        "-u",
        "7",
        "target",
        "sh",
        "-c",
        "echo $X; pwd; id -u",
    ]);
    assert_eq!(out, "42\n/work\n7\n");
    let out = berth.run(&["exec", "target", "sh", "-c", "exit 9"]);
    assert_eq!(out.status.code(), Some(9));
    let out = berth.with_stdin(&["exec", "-i", "target", "cat"], "to exec\n");
    assert_eq!(text(&out.stdout), "to exec\n");
    let out = berth.in_terminal(
        "$B exec -it target sh -c 'tty; stty size; read line; echo got:$line; exit 4'",
        "world\n",
    );
    let t = text(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{t}");
    assert!(t.contains("/dev/pts/"), "{t}");
    assert!(t.contains("30 100"), "{t}");
    assert!(t.contains("got:world"), "{t}");
    // -t without a local terminal still gives the process one.
    assert!(berth
        .ok(&["exec", "-t", "target", "tty"])
        .starts_with("/dev/pts/"));
    // -d: started in the background, nothing attached.
    assert_eq!(
        berth.ok(&["exec", "-d", "target", "sh", "-c", "echo x > /work/bg"]),
        ""
    );
    // Exit codes as docker's: 127 command not found, 126 not executable.
    assert_eq!(
        berth.run(&["exec", "target", "nosuch"]).status.code(),
        Some(127)
    );
    assert_eq!(
        berth.run(&["exec", "target", "/work"]).status.code(),
        Some(126)
    );
    let out = berth.run(&["exec", "no-such-container", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("No such container"),
        "{}",
        text(&out.stderr)
    );

    // attach: our stdin in, the output and exit code back.
    berth.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "att",
        "busybox",
        "sh",
        "-c",
        "read x; echo got:$x; exit 6",
    ]);
    let out = berth.with_stdin(&["attach", "att"], "attached\n");
    assert_eq!(text(&out.stdout), "got:attached\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(6));
    let out = berth.run(&["attach", "att"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("start it first"),
        "{}",
        text(&out.stderr)
    );

    // attach to a container with a TTY, from a terminal.
    berth.ok(&["run", "-dit", "--name", "ttyc", "busybox", "sh"]);
    let out = berth.in_terminal("$B attach ttyc", "echo attached-$((1+2)); exit 3\n");
    let t = text(&out.stdout);
    assert!(t.contains("attached-3"), "{t}");
    assert_eq!(out.status.code(), Some(3), "{t}");

    // container prune removes the stopped ones only.
    let pruned = berth.ok(&["container", "prune", "-f"]);
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    let left = berth.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(left.trim(), "target", "{left}");

    // run's exit codes: 127 not found, 126 not executable, 125 daemon or
    // usage errors; --rm still removes a container that failed to start.
    assert_eq!(
        berth
            .run(&["run", "--rm", "busybox", "nosuch"])
            .status
            .code(),
        Some(127)
    );
    let out = berth.run(&["run", "--rm", "busybox", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).contains("no such file or directory"),
        "{}",
        text(&out.stderr)
    );
    let out = berth.run(&["run", "--rm", "busybox", "/bin/busybox/x"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    let out = berth.run(&["run", "--rm", "busybox", "/work"]);
    assert_eq!(out.status.code(), Some(126));
    assert!(
        text(&out.stderr).contains("is a directory"),
        "{}",
        text(&out.stderr)
    );
    let out = berth.run(&["run", "--rm", "-d", "busybox", "/work"]);
    assert_eq!(out.status.code(), Some(126));
    let out = berth.run(&["run", "--rm", "--cap-add", "bogus", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("CAP_BOGUS"),
        "{}",
        text(&out.stderr)
    );
    let dup = berth.run(&["run", "--name", "target", "busybox", "true"]);
    assert_eq!(dup.status.code(), Some(125), "{}", text(&dup.stderr));
    assert_eq!(
        berth
            .run(&["run", "--no-such-flag", "busybox"])
            .status
            .code(),
        Some(125)
    );
    let missing = berth.run(&["run", "-q", "--pull", "never", "no-such-image", "true"]);
    assert_eq!(missing.status.code(), Some(125));
    assert!(
        text(&missing.stderr).contains("No such image"),
        "{}",
        text(&missing.stderr)
    );
    assert_eq!(
        berth
            .run(&["run", "--health-interval", "soon", "busybox", "true"])
            .status
            .code(),
        Some(125)
    );
    assert_eq!(
        berth
            .ok(&["ps", "-a", "--filter", "name=target", "-q"])
            .lines()
            .count(),
        1
    );
}

/// A terminal resize while attached reaches the container: the local
/// pty is resized and berth gets SIGWINCH once the container has shown
/// its first size (the test waits for that output, and the container for
/// the new size, so nothing depends on timing; stty may change rows and
/// columns one at a time, each a SIGWINCH of its own).
#[test]
fn terminal_resizes_follow_sigwinch() {
    let server = Server::start();
    let berth = Berth::for_server(&server);
    let _cleanup = Cleanup(&berth);
    import_busybox(&server, &berth);
    let fifo = server.dir.path().join("resize-now");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let shell = format!(
        "stty rows 30 cols 100; \
         $B run -it --rm busybox sh -c 'stty size; while [ \"$(stty size)\" != \"40 120\" ]; do :; done; stty size' </dev/tty & P=$!; \
         read go < {fifo}; stty rows 40 cols 120 </dev/tty; kill -WINCH $P; wait $P",
        fifo = fifo.display()
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &shell, "/dev/null"])
        .env("HOME", berth.home.path())
        .env("B", &berth.binary)
        .env("BERTH_HOST", berth.host.as_deref().unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux script");
    let stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut resized = false;
    let mut keep_open = None;
    while !seen.contains("40 120") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!("no resize seen ({e}); script {status:?}; output so far: {seen:?}; stderr: {err:?}");
            }
        }
        if !resized && seen.contains("30 100") {
            // Opened for reading too, so the write never waits for the
            // shell's reader (a FIFO opened read-write never blocks).
            let mut go = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&fifo)
                .unwrap();
            go.write_all(b"go\n").unwrap();
            keep_open = Some(go);
            resized = true;
        }
    }
    drop(stdin);
    let status = child.wait().unwrap();
    drop(keep_open);
    let _ = reader.join();
    assert!(status.success(), "{seen}");
}

#[test]
fn inspect_top_stats_pause_rename_events() {
    let server = Server::start();
    let berth = Berth::for_server(&server);
    let _cleanup = Cleanup(&berth);
    import_busybox(&server, &berth);
    let t0 = unix_now();

    let id = berth.ok(&[
        "run", "-d", "--name", "watched", "-l", "team=cli", "busybox", "sleep", "120",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");

    // inspect: containers and images, whole or through templates.
    let status = berth.ok(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{json .Config.Cmd}}",
        "watched",
    ]);
    assert_eq!(status.trim(), r#"running ["sleep","120"]"#);
    let label = berth.ok(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"team\"}}",
        "watched",
    ]);
    assert_eq!(label.trim(), "cli");
    let whole: serde_json::Value =
        serde_json::from_str(&berth.ok(&["inspect", "watched"])).unwrap();
    assert_eq!(whole[0]["Id"], id);
    let image = berth.ok(&["inspect", "--type", "image", "-f", "{{.Id}}", "busybox"]);
    assert!(image.starts_with("sha256:"), "{image}");
    let out = berth.run(&["inspect", "--type", "container", "busybox"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("No such container: busybox"),
        "{}",
        text(&out.stderr)
    );
    let out = berth.ok(&["container", "inspect", "-f", "{{.Name}}", "watched"]);
    assert_eq!(out.trim(), "/watched");

    // ps and its container-group alias, as a table, JSON and IDs.
    let table = berth.ok(&["container", "ls"]);
    assert!(table.starts_with("CONTAINER ID"), "{table}");
    assert!(table.contains("watched"), "{table}");
    let json_line = berth.ok(&["ps", "--format", "{{json .}}"]);
    let row: serde_json::Value = serde_json::from_str(json_line.trim()).unwrap();
    assert_eq!(row["Names"], "watched");
    assert_eq!(berth.ok(&["ps", "-q"]).trim(), &id[..12]);
    let table = berth.ok(&["ps", "--format", "table {{.Names}}\t{{.State}}"]);
    let mut rows = table.lines();
    assert_eq!(
        rows.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["NAMES", "STATE"]
    );
    assert_eq!(
        rows.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["watched", "running"]
    );
    assert_eq!(berth.ok(&["ps", "-l", "-q"]).trim(), &id[..12]);
    let labels = berth.ok(&[
        "inspect",
        "-f",
        "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}{{if .State.Running}}up{{end}}",
        "watched",
    ]);
    assert_eq!(labels.trim(), "team=cli;up");

    // top lists the container's processes.
    let top = berth.ok(&["top", "watched"]);
    assert!(top.lines().next().unwrap().contains("PID"), "{top}");
    assert!(top.contains("sleep 120"), "{top}");

    // stats --no-stream: one table, and one JSON object per container.
    let stats = berth.ok(&["stats", "--no-stream"]);
    let mut lines = stats.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("CONTAINER ID   NAME"), "{stats}");
    assert!(
        header.contains("CPU %   MEM USAGE / LIMIT   MEM %   NET I/O   BLOCK I/O   PIDS"),
        "{stats}"
    );
    assert!(lines.next().unwrap().contains("watched"), "{stats}");
    let json_stats = berth.ok(&["stats", "--no-stream", "--format", "{{json .}}", "watched"]);
    let row: serde_json::Value = serde_json::from_str(json_stats.trim()).unwrap();
    assert_eq!(row["Name"], "watched");
    assert!(row["MemUsage"].as_str().unwrap().contains(" / "), "{row}");
    assert_eq!(row["PIDs"], "1");

    // pause / unpause.
    assert_eq!(berth.ok(&["pause", "watched"]).trim(), "watched");
    assert_eq!(
        berth
            .ok(&["inspect", "-f", "{{.State.Status}}", "watched"])
            .trim(),
        "paused"
    );
    berth.ok(&["unpause", "watched"]);
    assert_eq!(
        berth
            .ok(&["inspect", "-f", "{{.State.Status}}", "watched"])
            .trim(),
        "running"
    );

    // rename: the new name works, the old one is gone.
    berth.ok(&["rename", "watched", "renamed"]);
    assert_eq!(
        berth.ok(&["inspect", "-f", "{{.Name}}", "renamed"]).trim(),
        "/renamed"
    );
    assert!(!berth.run(&["inspect", "watched"]).status.success());

    // events: a bounded window (--until in the past ends the stream),
    // filtered to one action, default and template output.
    let t1 = unix_now();
    let window = ["--since", &t0, "--until", &t1];
    let mut args = vec!["events"];
    args.extend(window);
    args.extend([
        "--filter",
        "event=pause",
        "--format",
        "{{.Type}} {{.Action}}",
    ]);
    assert_eq!(berth.ok(&args), "container pause\n");
    let mut args = vec!["events"];
    args.extend(window);
    args.extend(["--filter", "type=container", "--filter", "event=create"]);
    let created = berth.ok(&args);
    assert_eq!(created.lines().count(), 1, "{created}");
    assert!(
        created.contains(&format!(" container create {id} ")),
        "{created}"
    );
    assert!(created.contains("image=busybox"), "{created}");
    let mut args = vec!["events"];
    args.extend(window);
    args.extend(["--filter", "event=start", "--format", "{{json .}}"]);
    let started: serde_json::Value = serde_json::from_str(berth.ok(&args).trim()).unwrap();
    assert_eq!(started["Action"], "start");
    // A duration as --since; --until 0s is now.
    let recent = berth.ok(&[
        "events",
        "--since",
        "10m",
        "--until",
        "0s",
        "--filter",
        "event=unpause",
    ]);
    assert_eq!(recent.lines().count(), 1, "{recent}");

    // --health-* flags arrive as Docker's Healthcheck (durations in ns).
    berth.ok(&[
        "create",
        "--name",
        "checked",
        "--health-cmd",
        "true",
        "--health-interval",
        "1m30s",
        "--health-retries",
        "2",
        "busybox",
        "sleep",
        "1",
    ]);
    let health = berth.ok(&["inspect", "-f", "{{json .Config.Healthcheck}}", "checked"]);
    let health: serde_json::Value = serde_json::from_str(health.trim()).unwrap();
    assert_eq!(
        health["Test"],
        serde_json::json!(["CMD-SHELL", "true"]),
        "{health}"
    );
    assert_eq!(health["Interval"], 90_000_000_000i64, "{health}");
    assert_eq!(health["Retries"], 2, "{health}");
    berth.ok(&["rm", "checked"]);
}

fn unix_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

#[test]
fn contexts_pick_the_endpoint_with_dockers_precedence() {
    let server = Server::start();
    let mut berth = Berth::for_server(&server);
    let socket = format!("unix://{}", server.socket.display());
    let config: &Path = &berth.home.path().join("config");
    // From here on only contexts and flags say where the engine is.
    berth.host = None;

    let out = berth.ok(&[
        "context",
        "create",
        "local-test",
        "--host",
        &socket,
        "--description",
        "the test server",
    ]);
    assert_eq!(out.trim(), "local-test");
    assert!(config.join("berth/contexts/local-test.json").exists());
    let dup = berth.run(&["context", "create", "local-test", "--host", &socket]);
    assert!(
        text(&dup.stderr).contains("already exists"),
        "{}",
        text(&dup.stderr)
    );
    let bad = berth.run(&["context", "create", "bad", "--host", "tcp://1.2.3.4:2375"]);
    assert!(!bad.status.success());

    let ls = berth.ok(&["context", "ls"]);
    assert!(ls.contains("default *"), "{ls}");
    assert!(ls.contains("local-test") && ls.contains(&socket), "{ls}");

    // --context selects it; nothing else points at the server.
    let version = ["version", "--format", "{{.Server.ApiVersion}}"];
    let mut args = vec!["--context", "local-test"];
    args.extend(version);
    assert!(!berth.ok(&args).trim().is_empty());
    // `context use` makes it current, stored in the config file.
    berth.ok(&["context", "use", "local-test"]);
    assert_eq!(berth.ok(&["context", "show"]).trim(), "local-test");
    berth.ok(&version);
    let ls = berth.ok(&["context", "ls", "--format", "{{.Name}} {{.Current}}"]);
    assert!(ls.contains("local-test true"), "{ls}");

    // BERTH_HOST beats the current context; --context beats BERTH_HOST;
    // BERTH_CONTEXT names a context; --host with --context is refused.
    let out = berth
        .command(&version)
        .env("BERTH_HOST", "unix:///nonexistent/berth.sock")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("/nonexistent/berth.sock"),
        "{}",
        text(&out.stderr)
    );
    let mut args = vec!["--context", "local-test"];
    args.extend(version);
    let out = berth
        .command(&args)
        .env("BERTH_HOST", "unix:///nonexistent/berth.sock")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = berth
        .command(&version)
        .env("BERTH_CONTEXT", "missing")
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("context \"missing\" does not exist"),
        "{}",
        text(&out.stderr)
    );
    let mut args = vec!["--host", socket.as_str()];
    args.extend(version);
    let out = berth
        .command(&args)
        .env("BERTH_CONTEXT", "missing")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = berth.run(&["--host", &socket, "--context", "local-test", "ps"]);
    assert!(
        text(&out.stderr).contains("conflicting options"),
        "{}",
        text(&out.stderr)
    );

    // The current context cannot be removed without --force.
    let out = berth.run(&["context", "rm", "local-test"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("in use"),
        "{}",
        text(&out.stderr)
    );
    berth.ok(&["context", "use", "default"]);
    berth.ok(&["context", "rm", "local-test"]);
    assert!(!config.join("berth/contexts/local-test.json").exists());
    assert_eq!(berth.ok(&["context", "show"]).trim(), "default");
}

#[test]
fn completions_for_every_shell() {
    let berth = Berth {
        binary: berth_binary(),
        home: tempfile::tempdir().unwrap(),
        host: None,
    };
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let script = berth.ok(&["completion", shell]);
        assert!(script.len() > 1000, "{shell}: {script}");
        assert!(script.contains("berth"), "{shell}");
        assert!(script.contains("exec"), "{shell}");
    }
    let out = berth.run(&["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(125));
}

/// ctrl-p ctrl-q (or --detach-keys) ends `berth run -it`, `attach` and `exec -it` with the
/// process left running, as docker's; bad keys are refused before anything is created.
#[test]
fn detach_keys_leave_the_process_running() {
    let server = Server::start();
    let berth = Berth::for_server(&server);
    let _cleanup = Cleanup(&berth);
    import_busybox(&server, &berth);
    let running = || {
        berth
            .ok(&["inspect", "-f", "{{.State.Running}}", "bdet"])
            .trim()
            == "true"
    };

    let mut t = Terminal::spawn(berth.command(&[
        "run",
        "-it",
        "--name",
        "bdet",
        "busybox",
        "sh",
        "-c",
        "echo ready; while read line; do echo got:$line; done",
    ]));
    t.wait_for("ready");
    t.type_keys(b"hello\r");
    t.wait_for("got:hello");
    // berth finds the keys wherever a read splits the input.
    t.type_keys(b"\x10\x11");
    let (code, out) = t.finish();
    assert_eq!(code, Some(0), "{out}");
    assert!(running());

    let mut t = Terminal::spawn(berth.command(&["attach", "--detach-keys", "ctrl-x", "bdet"]));
    t.type_keys(b"again\r");
    t.wait_for("got:again");
    t.type_keys(b"\x18");
    let (code, out) = t.finish();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("read escape sequence"), "{out}");
    assert!(running());

    let mut t = Terminal::spawn(berth.command(&[
        "exec",
        "-it",
        "--detach-keys",
        "ctrl-x",
        "bdet",
        "sh",
        "-c",
        "echo exec-ready; read x; echo never",
    ]));
    t.wait_for("exec-ready");
    t.type_keys(b"\x18");
    let (code, out) = t.finish();
    assert_eq!(code, Some(1), "{out}");
    assert!(!out.contains("never"), "{out}");
    let ps = berth.ok(&["exec", "bdet", "ps", "-o", "args"]);
    assert!(ps.contains("echo exec-ready"), "{ps}");

    let out = berth.run(&["run", "--detach-keys", "ctrl-P", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("\"ctrl-P\""),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(berth.ok(&["ps", "-aq"]).lines().count(), 1);
}
