//! Commands on a running container: exec, ps, list, update, events, and the standalone
//! `features` and `spec` commands, and terminals through --console-socket.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_tests::{require_root, ConsoleSocket, Spec, TestCase};
use serde_json::{json, Value};

fn running_sleeper(name: &str) -> TestCase {
    let mut t = TestCase::new(name);
    t.spec().args(&["sleep", "1000"]);
    t.create_start();
    t
}

#[test]
fn exec_output_and_exit_code() {
    require_root!();
    let t = running_sleeper("exec");
    let out = t.rt([
        "exec",
        &t.id,
        "sh",
        "-c",
        "echo from-exec; cat /proc/1/cmdline; exit 7",
    ]);
    assert_eq!(out.code, Some(7), "{out}");
    assert_eq!(
        out.stdout, "from-exec\nsleep\u{0}1000\u{0}",
        "exec sees the container's pid 1"
    );
    t.rt(["exec", &t.id, "true"]).ok();
    t.rt(["exec", &t.id, "false"]).failed();
}

#[test]
fn exec_env_cwd_user() {
    require_root!();
    let t = running_sleeper("execopts");
    let out = t.rt([
        "exec",
        "-e",
        "FOO=bar",
        "--cwd",
        "/tmp",
        "-u",
        "1000:1000",
        &t.id,
        "sh",
        "-c",
        "echo $FOO; pwd; id -u; id -g; hostname",
    ]);
    out.ok();
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["bar", "/tmp", "1000", "1000", "berth"],
        "{out}"
    );
}

#[test]
fn exec_process_json() {
    require_root!();
    let t = running_sleeper("execjson");
    let process = json!({
        "terminal": false,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh", "-c", "echo $MSG; pwd"],
        "env": ["PATH=/bin", "MSG=from-process-json"],
        "cwd": "/dev",
        "capabilities": {"bounding": [], "effective": [], "permitted": []},
        "noNewPrivileges": true
    });
    let path = t.dir().join("process.json");
    std::fs::write(&path, process.to_string()).expect("write process.json");
    let out = t.rt([
        "exec".as_ref(),
        "--process".as_ref(),
        path.as_os_str(),
        t.id.as_ref() as &OsStr,
    ]);
    out.ok();
    assert_eq!(out.stdout, "from-process-json\n/dev\n");
}

#[test]
fn exec_detached_and_ps() {
    require_root!();
    let t = running_sleeper("ps");
    let pidfile = t.dir().join("exec.pid");
    t.rt([
        "exec".as_ref(),
        "-d".as_ref(),
        "--pid-file".as_ref(),
        pidfile.as_os_str(),
        t.id.as_ref() as &OsStr,
        "sleep".as_ref(),
        "999".as_ref(),
    ])
    .ok();
    let exec_pid: i64 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    let init = i64::from(t.pid());

    let out = t.rt(["ps", "--format", "json", &t.id]);
    out.ok();
    let pids: Vec<i64> = out
        .json()
        .as_array()
        .expect("ps json is an array")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert!(
        pids.contains(&init) && pids.contains(&exec_pid),
        "ps json {pids:?} lacks {init} or {exec_pid}"
    );

    let table = t.rt(["ps", &t.id]);
    table.ok();
    let mut lines = table.stdout.lines();
    assert!(
        lines.next().is_some_and(|h| h.contains("PID")),
        "no PID header: {table}"
    );
    for pid in [init, exec_pid] {
        assert!(
            table
                .stdout
                .lines()
                .skip(1)
                .any(|l| l.split_whitespace().any(|f| f == pid.to_string())),
            "ps table lacks {pid}: {table}"
        );
    }
}

#[test]
fn exec_into_stopped_container_fails() {
    require_root!();
    let mut t = TestCase::new("execstopped");
    t.spec().args(&["true"]);
    t.create_start_wait();
    t.rt(["exec", &t.id, "true"]).failed();
}

#[test]
fn list_table_json_quiet() {
    require_root!();
    let t = running_sleeper("list");
    let second = t.another_id("b");
    let mut spec2 = t.bundle.spec.clone();
    spec2.cgroups_path(&format!("/berth-test/{second}"));
    let b2 = berth_tests::Bundle {
        dir: t.dir().join("bundle2"),
        spec: spec2,
    };
    berth_tests::bundle::make_busybox_rootfs(&b2.rootfs());
    b2.write_config();
    t.rt([
        "create".as_ref(),
        "--bundle".as_ref(),
        b2.dir.as_os_str(),
        second.as_ref() as &OsStr,
    ])
    .ok();

    let out = t.rt(["list", "--format", "json"]);
    out.ok();
    let list = out.json();
    let arr = list.as_array().expect("list json is an array");
    let find = |id: &str| {
        arr.iter()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed: {out}"))
    };
    assert_eq!(find(&t.id)["status"], "running");
    assert_eq!(find(&second)["status"], "created");
    assert_eq!(find(&t.id)["pid"].as_i64(), Some(i64::from(t.pid())));
    assert_eq!(
        find(&second)["bundle"].as_str().map(Path::new),
        Some(b2.dir.as_path())
    );

    let table = t.rt(["list"]);
    table.ok();
    let header = table.stdout.lines().next().unwrap_or_default();
    for col in ["ID", "PID", "STATUS", "BUNDLE"] {
        assert!(header.contains(col), "no {col} column: {table}");
    }
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{} ", t.id)))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("running"), "{row}");

    let quiet = t.rt(["list", "-q"]);
    quiet.ok();
    let mut ids: Vec<&str> = quiet.stdout.lines().collect();
    ids.sort_unstable();
    let mut want = vec![t.id.as_str(), second.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
}

#[test]
fn list_empty_root() {
    require_root!();
    let t = TestCase::new("listempty");
    let out = t.rt(["list", "--format", "json"]);
    out.ok();
    // runc prints `null` for no containers; an empty array is as good.
    let v = out.json();
    assert!(
        v.is_null() || v.as_array().is_some_and(Vec::is_empty),
        "{out}"
    );
    t.rt(["list", "-q"]).ok();
}

/// Path of a cgroup file of container `id`: the v1 hierarchy of `controller` when mounted,
/// else the v2 one.
fn cgroup_file(id: &str, controller: &str, v1: &str, v2: &str) -> PathBuf {
    let v1dir = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join("berth-test")
        .join(id);
    if v1dir.is_dir() {
        return v1dir.join(v1);
    }
    Path::new("/sys/fs/cgroup/berth-test").join(id).join(v2)
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_owned()
}

#[test]
fn update_memory_and_pids() {
    require_root!();
    let mut t = TestCase::new("update");
    t.spec()
        .args(&["sleep", "1000"])
        .resource("pids", json!({"limit": 100}));
    t.create_start();
    let mem = cgroup_file(&t.id, "memory", "memory.limit_in_bytes", "memory.max");
    let pids = cgroup_file(&t.id, "pids", "pids.max", "pids.max");
    assert_eq!(read_trim(&pids), "100");

    t.rt([
        "update",
        "--memory",
        "67108864",
        "--pids-limit",
        "42",
        &t.id,
    ])
    .ok();
    assert_eq!(read_trim(&mem), "67108864");
    assert_eq!(read_trim(&pids), "42");

    // The same through a resources file.
    let res = t.dir().join("resources.json");
    std::fs::write(
        &res,
        json!({"memory": {"limit": 100663296}, "pids": {"limit": 33}}).to_string(),
    )
    .expect("write");
    t.rt([
        "update".as_ref(),
        "-r".as_ref(),
        res.as_os_str(),
        t.id.as_ref() as &OsStr,
    ])
    .ok();
    assert_eq!(read_trim(&mem), "100663296");
    assert_eq!(read_trim(&pids), "33");
}

#[test]
fn events_stats() {
    require_root!();
    let t = running_sleeper("events");
    let out = t.rt(["events", "--stats", &t.id]);
    out.ok();
    let line = out.stdout.lines().next().unwrap_or_default();
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(v["type"], "stats");
    assert_eq!(v["id"], t.id.as_str());
    let usage = v["data"]["memory"]["usage"]["usage"].as_u64().unwrap_or(0);
    assert!(usage > 0, "no memory usage in {v}");
    assert!(
        v["data"]["pids"]["current"].as_u64().unwrap_or(0) >= 1,
        "no pids.current in {v}"
    );
}

#[test]
fn features_json() {
    require_root!();
    let t = TestCase::new("features");
    let out = t.rt(["features"]);
    out.ok();
    let v = out.json();
    for key in ["ociVersionMin", "ociVersionMax"] {
        assert!(
            v[key].as_str().is_some_and(|s| s.starts_with("1.")),
            "{key} missing: {v}"
        );
    }
    let hooks = v["hooks"].as_array().cloned().unwrap_or_default();
    for h in ["prestart", "createRuntime", "poststart", "poststop"] {
        assert!(
            hooks.iter().any(|x| x == h),
            "features does not list hook {h}: {v}"
        );
    }
    let ns = v["linux"]["namespaces"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for n in ["pid", "mount", "user", "network", "uts", "ipc", "cgroup"] {
        assert!(
            ns.iter().any(|x| x == n),
            "features does not list namespace {n}: {v}"
        );
    }
}

#[test]
fn spec_writes_a_runnable_config() {
    require_root!();
    let t = TestCase::new("spec");
    t.rt([
        "spec".as_ref(),
        "--bundle".as_ref(),
        t.bundle.dir.as_os_str(),
    ])
    .ok();
    let text = std::fs::read_to_string(t.bundle.config_path()).expect("spec wrote config.json");
    let mut v: Value = serde_json::from_str(&text).expect("config.json is JSON");
    assert_eq!(v["root"]["path"], "rootfs");
    assert_eq!(v["process"]["args"], json!(["sh"]));
    let ns: Vec<&str> = v["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter_map(|n| n["type"].as_str())
        .collect();
    for n in ["pid", "mount", "network", "ipc", "uts"] {
        assert!(
            ns.contains(&n),
            "default spec lacks the {n} namespace: {ns:?}"
        );
    }
    // Writing it again over an existing file is refused.
    t.rt([
        "spec".as_ref(),
        "--bundle".as_ref(),
        t.bundle.dir.as_os_str(),
    ])
    .failed();

    v["process"]["terminal"] = json!(false);
    v["process"]["args"] = json!(["echo", "from-spec"]);
    v["linux"]["cgroupsPath"] = json!(format!("/berth-test/{}", t.id));
    std::fs::write(t.bundle.config_path(), v.to_string()).expect("write config");
    let out = t.rt([
        "run".as_ref(),
        "--bundle".as_ref(),
        t.bundle.dir.as_os_str(),
        t.id.as_ref() as &OsStr,
    ]);
    out.ok();
    assert_eq!(out.stdout, "from-spec\n");
}

#[test]
fn spec_rootless() {
    require_root!();
    let t = TestCase::new("specrootless");
    t.rt([
        "spec".as_ref(),
        "--rootless".as_ref(),
        "--bundle".as_ref(),
        t.bundle.dir.as_os_str(),
    ])
    .ok();
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(t.bundle.config_path()).expect("config"))
            .expect("json");
    let ns: Vec<&str> = v["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter_map(|n| n["type"].as_str())
        .collect();
    assert!(
        ns.contains(&"user"),
        "a rootless spec has a user namespace: {ns:?}"
    );
    assert!(
        v["linux"]["uidMappings"]
            .as_array()
            .is_some_and(|m| !m.is_empty()),
        "no uidMappings"
    );
}

#[test]
fn terminal_through_console_socket() {
    require_root!();
    let mut t = TestCase::new("console");
    t.spec()
        .terminal(true)
        .shell("tty; test -t 0 && test -t 1 && echo is-a-tty");
    t.bundle.write_config();
    let sock = ConsoleSocket::bind(&t.dir().join("console.sock"));
    t.rt([
        "create".as_ref(),
        "--console-socket".as_ref(),
        sock.path.as_os_str(),
        "--bundle".as_ref(),
        t.bundle.dir.as_os_str(),
        t.id.as_ref() as &OsStr,
    ])
    .ok();
    t.start().ok();
    let out = sock.output(Duration::from_secs(20));
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert_eq!(
        lines,
        ["/dev/pts/0", "is-a-tty"],
        "terminal output: {out:?}"
    );
    t.wait_status("stopped");
}

#[test]
fn terminal_without_console_socket_is_refused() {
    require_root!();
    let mut t = TestCase::new("noconsole");
    t.spec().terminal(true).args(&["true"]);
    let out = t.create();
    out.failed();
    assert!(
        out.all_lower().contains("console"),
        "error does not mention the console socket: {out}"
    );
    t.assert_no_leftovers(&t.id);
}

#[test]
fn default_spec_type_is_valid_json() {
    // Not a runtime test: the library's default must be what the runtime tests assume.
    let v: Value = serde_json::from_str(&Spec::default().to_json()).expect("json");
    assert_eq!(v["process"]["terminal"], false);
}
