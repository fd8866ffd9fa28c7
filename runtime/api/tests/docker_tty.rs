//! `docker run -it` and `docker exec -it` driven through a pseudo-terminal
//! (util-linux `script`), as a user at a terminal runs them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::Server;

fn import_busybox(server: &Server) {
    let root = server.busybox_rootfs(&["sh", "sleep", "stty", "tty", "echo"]);
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
    child.wait_with_output().unwrap()
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
