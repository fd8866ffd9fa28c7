//! The init program of `--init`, run directly on the host (where it is not pid 1 and reaps as a
//! child subreaper): exit statuses, signal forwarding, orphan reaping and exec failures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn install(dir: &Path) -> PathBuf {
    assert!(
        !berth_embedded::init_binary().is_empty(),
        "no init program for this target"
    );
    let bin = dir.join("docker-init");
    fs::write(&bin, berth_embedded::init_binary()).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Runs the init with `args`; returns its exit code and stderr (killed after a minute).
fn run(init: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new("timeout")
        .arg("60")
        .arg(init)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coreutils timeout");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (child.wait().unwrap().code(), err)
}

#[test]
fn exit_statuses_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let init = install(dir.path());
    assert_eq!(run(&init, &["--", "sh", "-c", "exit 3"]).0, Some(3));
    assert_eq!(run(&init, &["sh", "-c", "exit 0"]).0, Some(0));
    assert_eq!(
        run(&init, &["--", "sh", "-c", "kill -TERM $$"]).0,
        Some(143)
    );
    assert_eq!(
        run(&init, &["--", "sh", "-c", "kill -KILL $$"]).0,
        Some(137)
    );

    let (code, err) = run(&init, &["--", "/nonexistent"]);
    assert_eq!(code, Some(127));
    assert!(
        err.contains("/nonexistent failed: no such file or directory"),
        "{err}"
    );
    let (code, err) = run(&init, &["--", "no-such-command-anywhere"]);
    assert_eq!(code, Some(127));
    assert!(err.contains("executable file not found in $PATH"), "{err}");
    let plain = dir.path().join("plain");
    fs::write(&plain, "not a program").unwrap();
    let (code, err) = run(&init, &["--", plain.to_str().unwrap()]);
    assert_eq!(code, Some(126));
    assert!(err.contains("permission denied"), "{err}");
    let (code, err) = run(&init, &["--"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("usage"), "{err}");
}

/// A signal sent to the init reaches the command, which here reports it and exits.
#[test]
fn signals_are_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let init = install(dir.path());
    let mut child = Command::new(&init)
        .args([
            "--",
            "sh",
            "-c",
            "trap 'echo got-usr1; exit 7' USR1; trap 'echo got-hup; exit 8' HUP; echo ready; \
             while :; do sleep 0.05; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    assert!(send_signal(child.id(), "USR1"));
    assert_eq!(lines.next().unwrap().unwrap(), "got-usr1");
    assert_eq!(child.wait().unwrap().code(), Some(7));

    // SIGTERM to a command that does not trap it ends it, and the init reports 128+15.
    let mut child = Command::new(&init)
        .args(["--", "sleep", "1000"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // Once the init has a child it has blocked its signals (it does so before it forks); a
    // SIGTERM before that would end the init itself.
    wait_for_child_of(child.id());
    assert!(send_signal(child.id(), "TERM"));
    let started = Instant::now();
    assert_eq!(child.wait().unwrap().code(), Some(143));
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Orphans of the command (reparented to the init as a subreaper here) are reaped: none is
/// left a zombie.
#[test]
fn orphans_are_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let init = install(dir.path());
    let mut child = Command::new(&init)
        .args([
            "--",
            "sh",
            "-c",
            "(sleep 0.1 &); echo forked; exec sleep 1000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "forked");
    // The orphan was forked before "forked" was printed: wait until the init has only the
    // command left as a child.
    let init_pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let kids = children_of(init_pid);
        if kids.len() == 1 && kids[0].1 == "sleep" && kids[0].2 != 'Z' {
            let args = fs::read_to_string(format!("/proc/{}/cmdline", kids[0].0)).unwrap();
            if args.contains("1000") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the orphan was not reaped: {kids:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(send_signal(init_pid, "TERM"));
    assert_eq!(child.wait().unwrap().code(), Some(143));
}

fn send_signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success()
}

/// `(pid, comm, state)` of every process whose parent is `parent`.
fn children_of(parent: u32) -> Vec<(u32, String, char)> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let mut rest = stat[close + 2..].split(' ');
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: u32 = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent {
            out.push((pid, comm, state));
        }
    }
    out
}

fn wait_for_child_of(parent: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while children_of(parent).is_empty() {
        assert!(Instant::now() < deadline, "the init started no command");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTTIN and SIGTTOU are ignored by the init and not passed on (the docker CLI proxies the
/// ones it gets itself as a background job; passed on, they would stop the command), while the
/// command gets their default action back.
#[test]
fn job_control_signals_stay_with_the_init() {
    let dir = tempfile::tempdir().unwrap();
    let init = install(dir.path());
    let mut child = Command::new(&init)
        .args([
            "--",
            "sh",
            "-c",
            "grep SigIgn /proc/self/status; exec sleep 1000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ignored_by_command = mask_of(&lines.next().unwrap().unwrap());
    let job_control = (1u64 << (21 - 1)) | (1u64 << (22 - 1));
    assert_eq!(
        ignored_by_command & job_control,
        0,
        "the command ignores them"
    );
    let init_pid = child.id();
    let init_status = fs::read_to_string(format!("/proc/{init_pid}/status")).unwrap();
    let ignored_by_init = init_status
        .lines()
        .find(|l| l.starts_with("SigIgn:"))
        .map(mask_of)
        .unwrap();
    assert_eq!(ignored_by_init & job_control, job_control, "{init_status}");

    // Sent to the init, SIGTTOU does not reach the command (an ignored signal is dropped when
    // sent): a later SIGTERM still ends it, where a stopped command would keep the SIGTERM
    // pending and never exit.
    assert!(send_signal(init_pid, "TTOU"));
    let (sleep_pid, _, _) = children_of(init_pid)[0].clone();
    let sleep_status = fs::read_to_string(format!("/proc/{sleep_pid}/status")).unwrap_or_default();
    assert!(!sleep_status.contains("State:\tT"), "{sleep_status}");
    assert!(send_signal(init_pid, "TERM"));
    assert_eq!(child.wait().unwrap().code(), Some(143));
}

/// The hexadecimal signal mask of a `/proc/<pid>/status` line such as `SigIgn:\t0000…`.
fn mask_of(line: &str) -> u64 {
    let hex = line.split(':').nth(1).unwrap().trim();
    u64::from_str_radix(hex, 16).unwrap()
}
