//! The container lifecycle through the runc command line: create, start, state, kill,
//! delete, run, pid files, exit codes, pause/resume.

use std::path::Path;
use std::time::Duration;

use berth_tests::poll::wait_until;
use berth_tests::{require_root, TestCase};

#[test]
fn create_start_kill_delete() {
    require_root!();
    let mut t = TestCase::new("lifecycle");
    t.spec().args(&["sleep", "1000"]);
    t.create().ok();

    let s = t.state();
    assert_eq!(s["id"], t.id.as_str());
    assert_eq!(s["status"], "created");
    assert_eq!(
        s["bundle"].as_str().map(Path::new),
        Some(t.bundle.dir.as_path())
    );
    assert!(
        s["ociVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{s}"
    );
    let pid = t.pid();
    assert!(
        pid > 0 && Path::new(&format!("/proc/{pid}")).exists(),
        "init {pid} is not alive"
    );
    // A created container has not run the user's process yet.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !cmdline.starts_with(b"sleep\0"),
        "the process ran before start"
    );

    t.start().ok();
    assert_eq!(t.status(), "running");
    assert_eq!(t.pid(), pid, "init pid changed on start");
    wait_until(
        "the container process to become sleep",
        Duration::from_secs(10),
        || {
            let c = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            c.starts_with(b"sleep\0").then_some(())
        },
    );

    t.kill("KILL").ok();
    t.wait_status("stopped");

    t.delete().ok();
    let after = t.rt(["state", &t.id]);
    after.failed();
    assert_not_found(&after, &t.id);
    t.assert_no_leftovers(&t.id);
}

#[test]
fn start_twice_fails() {
    require_root!();
    let mut t = TestCase::new("starttwice");
    t.spec().args(&["sleep", "1000"]);
    t.create_start();
    let again = t.start();
    again.failed();
    assert_eq!(t.status(), "running");
}

#[test]
fn kill_with_signal_the_process_handles() {
    require_root!();
    let mut t = TestCase::new("killterm");
    t.spec()
        .shell("trap 'echo got-term; exit 3' TERM; echo ready; while :; do usleep 10000; done");
    let created = t.create_start();
    wait_until(
        "the container to say ready",
        Duration::from_secs(10),
        || created.stdout_now().contains("ready").then_some(()),
    );
    t.kill("TERM").ok();
    t.wait_status("stopped");
    assert!(
        created.stdout_now().contains("got-term"),
        "stdout: {}",
        created.stdout_now()
    );
    // Signal numbers work as well as names.
    t.delete().ok();
}

#[test]
fn kill_by_number() {
    require_root!();
    let mut t = TestCase::new("killnum");
    t.spec().args(&["sleep", "1000"]);
    t.create_start();
    t.kill("9").ok();
    t.wait_status("stopped");
}

#[test]
fn delete_running_needs_force() {
    require_root!();
    let mut t = TestCase::new("delforce");
    t.spec().args(&["sleep", "1000"]);
    t.create_start();
    let pid = t.pid();
    let del = t.delete();
    del.failed();
    assert_eq!(
        t.status(),
        "running",
        "a failed delete must not change the container"
    );
    t.rt(["delete", "--force", &t.id]).ok();
    wait_until(
        "the init process to be gone",
        Duration::from_secs(10),
        || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            // Gone, or a zombie of some other reaper.
            stat.is_none_or(|s| s.contains(") Z ")).then_some(())
        },
    );
    t.assert_no_leftovers(&t.id);
}

#[test]
fn delete_created_container() {
    require_root!();
    let mut t = TestCase::new("delcreated");
    t.spec().args(&["sleep", "1000"]);
    t.create().ok();
    t.rt(["delete", "--force", &t.id]).ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn run_propagates_exit_codes() {
    require_root!();
    for code in [0, 1, 3, 42, 255] {
        let mut t = TestCase::new("exitcode");
        let out = t.run_sh(&format!("exit {code}"));
        assert_eq!(out.code, Some(code), "{out}");
        // `run` deletes the container when it exits.
        t.assert_no_leftovers(&t.id);
    }
}

#[test]
fn run_separates_stdout_and_stderr() {
    require_root!();
    let mut t = TestCase::new("stdio");
    let out = t.run_sh("echo to-out; echo to-err >&2");
    out.ok();
    assert_eq!(out.stdout, "to-out\n");
    assert!(out.stderr.contains("to-err"), "{out}");
    assert!(!out.stdout.contains("to-err"));
}

#[test]
fn run_detached() {
    require_root!();
    let mut t = TestCase::new("rundetach");
    t.spec().args(&["sleep", "1000"]);
    t.bundle.write_config();
    let pidfile = t.dir().join("run.pid");
    let out = t.rt([
        "run".as_ref(),
        "-d".as_ref(),
        "--pid-file".as_ref(),
        pidfile.as_os_str(),
        "--bundle".as_ref(),
        t.bundle.dir.as_os_str(),
        t.id.as_ref(),
    ]);
    out.ok();
    assert_eq!(t.status(), "running");
    let filed: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert_eq!(filed, t.pid());
}

#[test]
fn create_pid_file() {
    require_root!();
    let mut t = TestCase::new("pidfile");
    t.spec().args(&["sleep", "1000"]);
    t.bundle.write_config();
    let pidfile = t.dir().join("init.pid");
    t.rt([
        "create".as_ref(),
        "--pid-file".as_ref(),
        pidfile.as_os_str(),
        "--bundle".as_ref(),
        t.bundle.dir.as_os_str(),
        t.id.as_ref(),
    ])
    .ok();
    let filed: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert_eq!(filed, t.pid());
}

#[test]
fn container_output_after_start() {
    require_root!();
    let mut t = TestCase::new("startout");
    t.spec().shell("echo hello-from-container");
    let created = t.create_start_wait();
    assert_eq!(created.stdout_now(), "hello-from-container\n");
    let s = t.state();
    assert_eq!(s["status"], "stopped");
    t.delete().ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn missing_executable_fails() {
    require_root!();
    let mut t = TestCase::new("noexec");
    t.spec().args(&["/bin/does-not-exist"]);
    let out = t.run();
    out.failed();
    assert!(
        out.all_lower().contains("does-not-exist"),
        "error does not name the binary: {out}"
    );
    t.rt(["delete", "--force", &t.id]);
    t.assert_no_leftovers(&t.id);
}

#[test]
fn pause_and_resume() {
    require_root!();
    let mut t = TestCase::new("pause");
    t.spec()
        .shell("i=0; while :; do i=$((i+1)); echo $i > /dev/shm/count; done");
    t.create_start();
    let counter = format!("/proc/{}/root/dev/shm/count", t.pid());
    let read = || {
        std::fs::read_to_string(&counter)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    wait_until("the counter to run", Duration::from_secs(10), read);

    t.rt(["pause", &t.id]).ok();
    assert_eq!(t.status(), "paused");
    let frozen = read();
    // Not a synchronisation: give a running loop time to move, then check it did not.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read(), frozen, "the counter moved while paused");

    t.rt(["resume", &t.id]).ok();
    assert_eq!(t.status(), "running");
    wait_until(
        "the counter to move after resume",
        Duration::from_secs(10),
        || (read() > frozen).then_some(()),
    );
}

#[test]
fn resume_of_running_container_fails() {
    require_root!();
    let mut t = TestCase::new("resumerun");
    t.spec().args(&["sleep", "1000"]);
    t.create_start();
    t.rt(["resume", &t.id]).failed();
    assert_eq!(t.status(), "running");
}

#[test]
fn operations_on_unknown_id_fail_naming_it() {
    require_root!();
    let t = TestCase::new("unknownid");
    let ghost = t.another_id("ghost");
    for cmd in ["state", "start", "pause", "resume", "ps"] {
        let out = t.rt([cmd, ghost.as_str()]);
        out.failed();
        assert_not_found(&out, &ghost);
    }
    let out = t.rt(["kill", ghost.as_str(), "KILL"]);
    out.failed();
    assert_not_found(&out, &ghost);
    let out = t.rt(["delete", ghost.as_str()]);
    out.failed();
    assert_not_found(&out, &ghost);
}

/// The error says the container does not exist and names it (runc 1.1 says only "container
/// does not exist"; we want the id in the message).
#[track_caller]
fn assert_not_found(out: &berth_tests::CmdOutput, id: &str) {
    let msg = out.all_lower();
    assert!(
        ["does not exist", "not found", "no such"]
            .iter()
            .any(|m| msg.contains(m)),
        "error does not say the container does not exist: {out}"
    );
    assert!(
        out.stderr.contains(id),
        "error does not name the id {id}: {out}"
    );
}
