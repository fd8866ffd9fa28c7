//! OCI hooks run by the runtime on the host: when they run, what they get on stdin, and what
//! a failing or hanging hook does to `create`.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_tests::testcase::wait_for_file;
use berth_tests::{require_root, TestCase};
use serde_json::{json, Value};

const HOST_HOOKS: [&str; 4] = ["prestart", "createRuntime", "poststart", "poststop"];

fn hook_dir(t: &TestCase) -> std::path::PathBuf {
    let d = t.dir().join("hooks");
    std::fs::create_dir_all(&d).expect("hooks dir");
    d
}

fn read_state(path: &Path) -> Value {
    let text = wait_for_file(path);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not the state JSON ({e}): {text}", path.display()))
}

#[test]
fn hooks_run_in_order_with_state_on_stdin() {
    require_root!();
    let mut t = TestCase::new("hooks");
    let dir = hook_dir(&t);
    let d = dir.display().to_string();
    t.spec().args(&["sleep", "1000"]);
    for kind in HOST_HOOKS {
        t.spec().shell_hook(
            kind,
            &format!("cat > {d}/{kind}.json; echo {kind} >> {d}/order"),
            Some(10),
        );
    }
    t.create().ok();
    let pid = i64::from(t.pid());
    for kind in ["prestart", "createRuntime"] {
        let s = read_state(&dir.join(format!("{kind}.json")));
        assert_eq!(s["id"], t.id.as_str(), "{kind}: {s}");
        assert_eq!(s["pid"].as_i64(), Some(pid), "{kind} got another pid: {s}");
        assert_eq!(
            s["bundle"].as_str().map(Path::new),
            Some(t.bundle.dir.as_path()),
            "{kind}: {s}"
        );
        assert!(s["ociVersion"].is_string(), "{kind}: {s}");
    }
    // The spec runs poststart after the user process started (runc 1.1 runs it during
    // create; runc 1.2 fixed that).
    assert!(
        !dir.join("poststart.json").exists(),
        "poststart ran before start"
    );

    t.start().ok();
    let s = read_state(&dir.join("poststart.json"));
    assert_eq!(s["id"], t.id.as_str());
    assert_eq!(s["pid"].as_i64(), Some(pid));
    assert!(
        !dir.join("poststop.json").exists(),
        "poststop ran before delete"
    );

    t.kill("KILL").ok();
    t.wait_status("stopped");
    t.delete().ok();
    let s = read_state(&dir.join("poststop.json"));
    assert_eq!(s["id"], t.id.as_str());

    let order = std::fs::read_to_string(dir.join("order")).expect("order");
    let order: Vec<&str> = order.lines().collect();
    assert_eq!(order.len(), 4, "{order:?}");
    let pos = |k: &str| {
        order
            .iter()
            .position(|o| *o == k)
            .unwrap_or_else(|| panic!("{k} never ran: {order:?}"))
    };
    assert!(
        pos("prestart") < pos("poststart") && pos("createRuntime") < pos("poststart"),
        "{order:?}"
    );
    assert!(pos("poststart") < pos("poststop"), "{order:?}");
    t.assert_no_leftovers(&t.id);
}

#[test]
fn hook_args_and_env() {
    require_root!();
    let mut t = TestCase::new("hookenv");
    let dir = hook_dir(&t);
    let out = dir.join("env.out");
    t.spec().args(&["true"]);
    t.spec().set(
        "/hooks/createRuntime",
        json!([{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo \"$0 $1 $HOOK_VAR\" > {}", out.display()), "arg0", "arg1"],
            "env": ["HOOK_VAR=from-env"]
        }]),
    );
    t.run().ok();
    assert_eq!(wait_for_file(&out), "arg0 arg1 from-env\n");
}

#[test]
fn failing_create_runtime_hook_fails_create_and_leaves_nothing() {
    require_root!();
    let mut t = TestCase::new("hookfail");
    t.spec().args(&["sleep", "1000"]).shell_hook(
        "createRuntime",
        "echo hook-said-no >&2; exit 3",
        None,
    );
    let out = t.create();
    out.failed();
    assert!(
        out.all_lower().contains("hook"),
        "error does not mention the hook: {out}"
    );
    t.assert_no_leftovers(&t.id);
}

#[test]
fn failing_prestart_hook_fails_run() {
    require_root!();
    let mut t = TestCase::new("prestartfail");
    t.spec()
        .shell("echo user-process-ran")
        .shell_hook("prestart", "exit 1", None);
    let out = t.run();
    out.failed();
    assert!(out.all_lower().contains("hook"), "{out}");
    assert!(
        !out.stdout.contains("user-process-ran"),
        "the process ran despite the hook: {out}"
    );
    t.assert_no_leftovers(&t.id);
}

#[test]
fn hook_timeout() {
    require_root!();
    let mut t = TestCase::new("hooktimeout");
    t.spec()
        .args(&["sleep", "1000"])
        .shell_hook("createRuntime", "exec sleep 60", Some(1));
    let started = Instant::now();
    let out = t.create();
    let took = started.elapsed();
    out.failed();
    assert!(
        took < Duration::from_secs(30),
        "create waited {took:?} for a hook with a 1 s timeout"
    );
    let msg = out.all_lower();
    assert!(
        msg.contains("timeout") || msg.contains("timed out"),
        "error does not mention the timeout: {out}"
    );
    t.assert_no_leftovers(&t.id);
}
