//! Cgroups: limits enforced (memory OOM kill, pids), cgroup directories created and
//! removed, and the runtime in pure cgroup v2 mode.

use std::path::Path;
use std::time::Duration;

use berth_tests::cgroup2::Cgroup2Namespace;
use berth_tests::leaks;
use berth_tests::poll::wait_until;
use berth_tests::{require_root, TestCase};
use serde_json::json;

const MIB: u64 = 1024 * 1024;

#[test]
fn memory_limit_oom_kills_with_sigkill() {
    require_root!();
    let mut t = TestCase::new("oom");
    // awk doubles a string until it is far past the limit; swap = limit means no swap.
    t.spec()
        .args(&["awk", "BEGIN { s = \"xxxxxxxx\"; while (1) { s = s s } }"])
        .resource("memory", json!({"limit": 32 * MIB, "swap": 32 * MIB}));
    let out = t.run();
    assert_eq!(
        out.code,
        Some(137),
        "expected the OOM killer's SIGKILL (exit 137): {out}"
    );
}

#[test]
fn memory_within_limit_is_fine() {
    require_root!();
    let mut t = TestCase::new("memok");
    t.spec()
        .resource("memory", json!({"limit": 64 * MIB, "swap": 64 * MIB}));
    // ~8 MiB of string, well under the limit.
    let out = t.run_sh(
        "awk 'BEGIN { s = \"xxxxxxxx\"; for (i = 0; i < 20; i++) s = s s; print length(s) }'",
    );
    out.ok();
    assert_eq!(out.stdout.trim(), "8388608");
}

#[test]
fn pids_limit_stops_forks() {
    require_root!();
    let mut t = TestCase::new("pids");
    t.spec().resource("pids", json!({"limit": 10}));
    // busybox sh gives up on the first failed fork ("can't fork"), so no `wait` is needed.
    let out =
        t.run_sh("i=0; while [ $i -lt 20 ]; do sleep 100 & i=$((i+1)); done; echo all-forked");
    assert!(
        out.stderr.contains("can't fork"),
        "forking past pids.limit should fail: {out}"
    );
    assert!(!out.stdout.contains("all-forked"), "{out}");

    // Under the limit the same loop works.
    let mut t = TestCase::new("pidsok");
    t.spec().resource("pids", json!({"limit": 30}));
    let out =
        t.run_sh("i=0; while [ $i -lt 20 ]; do sleep 100 & i=$((i+1)); done; echo all-forked");
    out.ok();
    assert_eq!(out.stdout.trim(), "all-forked");
}

#[test]
fn cgroups_created_and_removed() {
    require_root!();
    let mut t = TestCase::new("cgroupdirs");
    t.spec()
        .args(&["sleep", "1000"])
        .resource("memory", json!({"limit": 64 * MIB}));
    t.create().ok();
    let pid = t.pid();
    let dirs = t.cgroups_of(&t.id);
    assert!(!dirs.is_empty(), "no cgroup dir for {} after create", t.id);
    // The init process is in the container's cgroup in every hierarchy it has one in.
    assert_eq!(
        leaks::processes_in_cgroup(&t.id),
        vec![u32::try_from(pid).expect("pid")]
    );
    // The container sees its own cgroup as the root (cgroup namespace).
    t.start().ok();
    let out = t.rt(["exec", &t.id, "cat", "/proc/self/cgroup"]);
    out.ok();
    assert!(
        !out.stdout.contains("berth-test"),
        "the cgroup namespace should hide the host path: {out}"
    );

    t.kill("KILL").ok();
    t.wait_status("stopped");
    t.delete().ok();
    t.assert_no_leftovers(&t.id);
    for d in dirs {
        assert!(!d.exists(), "{} still exists", d.display());
    }
}

#[test]
fn cgroup_v2_mode() {
    require_root!();
    let ns = Cgroup2Namespace::new();
    let mut t = TestCase::new("cgv2");
    t.rt.prefix = ns.prefix();
    let cg = ns.cgroup_root().join("berth-test").join(&t.id);

    // A whole run works and sees a cgroup2 root.
    let out = t.run_sh("cat /proc/self/cgroup; echo ok");
    out.ok();
    assert!(out.stdout.contains("0::/"), "{out}");
    assert!(out.stdout.trim_end().ends_with("ok"), "{out}");
    assert!(!cg.exists(), "cgroup left after run: {}", cg.display());

    // Only hugetlb is available to v2 on a hybrid host: no memory/pids limits here.
    t.spec().args(&["sleep", "1000"]);
    t.create().ok();
    let pid = t.pid();
    assert!(cg.is_dir(), "no v2 cgroup {}", cg.display());
    let procs = std::fs::read_to_string(cg.join("cgroup.procs")).expect("cgroup.procs");
    assert!(
        procs.lines().any(|l| l.trim() == pid.to_string()),
        "{pid} not in cgroup.procs: {procs}"
    );
    t.start().ok();

    // Pause freezes through cgroup.freeze.
    t.rt(["pause", &t.id]).ok();
    assert_eq!(t.status(), "paused");
    wait_until(
        "cgroup.events to say frozen",
        Duration::from_secs(10),
        || {
            let ev = std::fs::read_to_string(cg.join("cgroup.events")).ok()?;
            ev.lines().any(|l| l == "frozen 1").then_some(())
        },
    );
    t.rt(["resume", &t.id]).ok();
    assert_eq!(t.status(), "running");
    let ev = std::fs::read_to_string(cg.join("cgroup.events")).expect("cgroup.events");
    assert!(ev.lines().any(|l| l == "frozen 0"), "{ev}");

    // The device filter (eBPF) denies what the default spec does not allow.
    let out = t.rt(["exec", &t.id, "sh", "-c", "head -c 1 /dev/zero | wc -c"]);
    out.ok();
    assert_eq!(out.stdout.trim(), "1");

    t.kill("KILL").ok();
    t.wait_status("stopped");
    t.delete().ok();
    assert!(!cg.exists(), "cgroup {} left after delete", cg.display());
    // And the same hierarchy seen from the host has nothing either.
    assert!(leaks::existing_cgroups(&t.id).is_empty());
    wait_until(
        "the container's init to be reaped",
        Duration::from_secs(10),
        || gone_or_reused(pid).then_some(()),
    );
}

/// After delete the init pid is gone, or the number was already reused by something else.
fn gone_or_reused(pid: i32) -> bool {
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return true;
    }
    let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return true;
    };
    !cg.contains("berth-test")
}
