//! `docker run -it` and `docker exec -it` driven through a pseudo-terminal
//! (util-linux `script`), as a user at a terminal runs them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{Server, Terminal};

fn import_busybox(server: &Server) {
    let root = server.busybox_rootfs(&["sh", "sleep", "stty", "tty", "echo", "ps"]);
    server.import_rootfs(&root);
}

/// Runs `shell_command` on a fresh pseudo-terminal of 30 rows × 100
/// columns, typing `input` into it.
fn in_terminal(server: &Server, shell_command: &str, input: &str) -> Output {
    let script = format!("stty rows 30 cols 100; {shell_command}");
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &script, "/dev/null"])
        .env("DOCKER_HOST", format!("unix://{}", server.socket.display()))
        .env("DOCKER_CONFIG", server.dir.path().join("docker-config"))
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux script");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    // Whatever hangs in there, the test fails within two minutes instead of hanging.
    let script_pid = child.id();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .is_err()
        {
            let _ = Command::new("kill")
                .args(["-KILL", &script_pid.to_string()])
                .status();
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    let _ = watchdog.join();
    out
}

#[test]
fn run_and_exec_with_a_terminal() {
    let server = Server::start();
    import_busybox(&server);

    // run -it: the process has a terminal of the client's size, typed input
    // reaches it and its exit code comes back.
    let out = in_terminal(
        &server,
        "docker run -it --rm busybox sh -c 'tty; stty size; read line; echo got:$line; exit 5'",
        "hello\n",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("30 100"), "{text}");
    assert!(text.contains("got:hello"), "{text}");

    // exec -it into a running container.
    server.docker_ok(&[
        "run",
        "-d",
        "--name",
        "tty-target",
        "busybox",
        "sleep",
        "60",
    ]);
    let out = in_terminal(
        &server,
        "docker exec -it tty-target sh -c 'tty; stty size; read line; echo got:$line; exit 4'",
        "world\n",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("30 100"), "{text}");
    assert!(text.contains("got:world"), "{text}");

    // exec -t without a client terminal still gives the process one.
    let out = server.docker_ok(&["exec", "-t", "tty-target", "tty"]);
    assert!(out.starts_with("/dev/pts/"), "{out}");

    // A resize of a container without a terminal is refused clearly.
    let resize = server.http("POST", "/containers/tty-target/resize?h=10&w=10");
    assert_eq!(resize.status, 409, "{}", resize.body);
    assert!(resize.body.contains("no terminal"), "{}", resize.body);
    server.docker_ok(&["rm", "-f", "tty-target"]);
}

/// With `--init` the command runs in a process group of its own, which the init makes the
/// terminal's foreground group: it can read the terminal (a background group would be stopped
/// by SIGTTIN, so `timeout` ends the run should that break).
#[test]
fn run_with_init_and_a_terminal() {
    let server = Server::start();
    import_busybox(&server);
    let out = in_terminal(
        &server,
        "timeout --foreground -k 5 60 docker run -it --rm --init busybox sh -c 'read line; echo got:$line; ps -o pid,comm; exit 4'",
        "hello\n",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(text.contains("got:hello"), "{text}");
    assert!(text.contains("1 docker-init"), "{text}");
}

/// A raw HTTP/1.1 upgrade over the server's socket: the stream after the 101 response.
fn upgrade(server: &Server, path: &str, body: &str) -> std::os::unix::net::UnixStream {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(&server.socket).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).expect("response head"), 1, "{head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// Reads from `s` until `text` appeared; everything read so far.
fn read_until(s: &mut std::os::unix::net::UnixStream, text: &str) -> String {
    use std::io::Read;
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains(text) {
        let n = s.read(&mut buf).expect("reading the session");
        assert!(n > 0, "the session ended before {text:?}: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}

/// Reads until the server closes the session (a read timeout fails the test).
fn read_to_close(s: &mut std::os::unix::net::UnixStream) -> String {
    use std::io::Read;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("the server closes the session");
    String::from_utf8_lossy(&rest).into_owned()
}

fn running(server: &Server, container: &str) -> bool {
    server
        .docker_ok(&["inspect", "-f", "{{.State.Running}}", container])
        .trim()
        == "true"
}

/// ctrl-p ctrl-q (or the keys given with --detach-keys) ends `docker run -it`, `docker
/// attach` and `docker exec -it` with the process left running; the engine itself watches for
/// the keys on attach and exec sessions with a terminal.
/// Removes the test's containers when it ends, even on failure.
struct Cleanup<'a>(&'a Server, &'a [&'a str]);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let mut args = vec!["rm", "-f"];
        args.extend(self.1);
        let _ = self.0.docker(&args);
    }
}

#[test]
fn detach_keys_leave_the_process_running() {
    let server = Server::start();
    let _cleanup = Cleanup(&server, &["det"]);
    import_busybox(&server);
    let echo_loop = "echo ready; while read line; do echo got:$line; done";

    // run -it, the default keys typed one at a time, as a person does.
    let mut t = Terminal::docker(
        &server,
        &[
            "run", "-it", "--name", "det", "busybox", "sh", "-c", echo_loop,
        ],
    );
    t.wait_for("ready");
    t.type_keys(b"hello\r");
    t.wait_for("got:hello");
    t.type_keys(b"\x10");
    t.type_keys(b"\x11");
    let (code, out) = t.finish();
    assert_eq!(code, Some(0), "{out}");
    assert!(running(&server, "det"));

    // attach with keys of its own: the session is back, then detached again (docker reports
    // that as "read escape sequence", status 1).
    let mut t = Terminal::docker(&server, &["attach", "--detach-keys", "ctrl-x", "det"]);
    t.type_keys(b"again\r");
    t.wait_for("got:again");
    t.type_keys(b"\x18");
    let (code, out) = t.finish();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("read escape sequence"), "{out}");
    assert!(running(&server, "det"));

    // exec -it --detach-keys: the exec'd process runs on after the detach.
    let mut t = Terminal::docker(
        &server,
        &[
            "exec",
            "-it",
            "--detach-keys",
            "ctrl-x",
            "det",
            "sh",
            "-c",
            "echo exec-ready; read x; echo never",
        ],
    );
    t.wait_for("exec-ready");
    t.type_keys(b"\x18");
    let (code, out) = t.finish();
    assert_eq!(code, Some(1), "{out}");
    let ps = server.docker_ok(&["exec", "det", "ps", "-o", "args"]);
    assert!(ps.contains("echo exec-ready"), "{ps}");

    // The engine detaches by itself: the default keys in one piece (which the docker CLI
    // would have passed on as typed text) end an attach session; the connection closes and
    // the container runs on.
    let mut s = upgrade(
        &server,
        "/containers/det/attach?stream=1&stdin=1&stdout=1&stderr=1",
        "",
    );
    s.write_all(b"raw\n").unwrap();
    read_until(&mut s, "got:raw");
    s.write_all(b"\x10\x11").unwrap();
    let rest = read_to_close(&mut s);
    assert!(!rest.contains("got:"), "{rest}");
    assert!(running(&server, "det"));
    // detachKeys of the client's own; a held ctrl-p that is not followed by ctrl-q is typed.
    let mut s = upgrade(
        &server,
        "/containers/det/attach?stream=1&stdin=1&stdout=1&detachKeys=ctrl-a,b",
        "",
    );
    s.write_all(b"\x01x\x10y\n").unwrap();
    read_until(&mut s, "got:\x01x\x10y");
    s.write_all(b"\x01b").unwrap();
    read_to_close(&mut s);
    assert!(running(&server, "det"));
    let bad = server.http(
        "POST",
        "/containers/det/attach?stream=1&stdin=1&detachKeys=ctrl-P",
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("Invalid detach keys"), "{}", bad.body);

    // The same for an exec with a terminal (its keys given at create).
    let create = common::http(
        &server.socket,
        "POST",
        "/containers/det/exec",
        br#"{"Cmd":["sh","-c","echo exec2; read x"],"AttachStdin":true,"AttachStdout":true,"Tty":true,"DetachKeys":"ctrl-a"}"#,
    );
    assert_eq!(create.status, 201, "{}", create.body);
    let exec_id = create.json()["Id"].as_str().unwrap().to_string();
    let mut s = upgrade(
        &server,
        &format!("/exec/{exec_id}/start"),
        r#"{"Detach":false,"Tty":true}"#,
    );
    read_until(&mut s, "exec2");
    s.write_all(b"\x01").unwrap();
    read_to_close(&mut s);
    let info = server.http("GET", &format!("/exec/{exec_id}/json"));
    assert_eq!(info.json()["Running"], true, "{}", info.body);
    let bad = common::http(
        &server.socket,
        "POST",
        "/containers/det/exec",
        br#"{"Cmd":["true"],"Tty":true,"DetachKeys":"ctrl-"}"#,
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("Invalid escape keys"), "{}", bad.body);
}
