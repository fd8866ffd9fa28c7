//! Bad input: each case must fail with a nonzero exit, an error that names the problem, and
//! leave nothing behind (state, cgroups, processes, mounts).

use berth_tests::{require_root, CmdOutput, TestCase};
use serde_json::json;

#[track_caller]
fn assert_error_mentions(out: &CmdOutput, words: &[&str]) {
    out.failed();
    let msg = out.all_lower();
    assert!(
        words.iter().any(|w| msg.contains(&w.to_lowercase())),
        "error does not mention any of {words:?}: {out}"
    );
}

/// Runs `create` with the test's spec, expecting failure mentioning `words`, then checks for
/// leftovers.
#[track_caller]
fn create_fails(t: &TestCase, words: &[&str]) {
    let out = t.create();
    assert_error_mentions(&out, words);
    t.assert_no_leftovers(&t.id);
}

#[test]
fn malformed_config_json() {
    require_root!();
    let t = TestCase::new("badjson");
    std::fs::write(
        t.bundle.config_path(),
        "{ \"ociVersion\": \"1.0.2\", \"process\": ",
    )
    .expect("write");
    let out = t.rt([
        "create".as_ref(),
        "--bundle".as_ref(),
        t.bundle.dir.as_os_str(),
        t.id.as_ref() as &std::ffi::OsStr,
    ]);
    assert_error_mentions(&out, &["config.json"]);
    t.assert_no_leftovers(&t.id);
}

#[test]
fn missing_config_json() {
    require_root!();
    let t = TestCase::new("noconfig");
    let out = t.rt([
        "create".as_ref(),
        "--bundle".as_ref(),
        t.bundle.dir.as_os_str(),
        t.id.as_ref() as &std::ffi::OsStr,
    ]);
    assert_error_mentions(&out, &["config.json"]);
    t.assert_no_leftovers(&t.id);
}

#[test]
fn missing_rootfs_names_the_path() {
    require_root!();
    let mut t = TestCase::new("norootfs");
    t.spec().root_path("no-such-rootfs").args(&["true"]);
    create_fails(&t, &["no-such-rootfs"]);
}

#[test]
fn uid_mappings_without_user_namespace() {
    require_root!();
    let mut t = TestCase::new("mapnouserns");
    t.spec().id_mappings(0, 100_000, 65_536).args(&["true"]);
    create_fails(&t, &["user namespace", "userns", "user ns"]);
}

#[test]
fn namespace_listed_twice() {
    require_root!();
    let mut t = TestCase::new("dupns");
    t.spec()
        .args(&["true"])
        .push_namespace_raw(json!({"type": "pid"}));
    create_fails(&t, &["pid"]);
}

#[test]
fn unknown_namespace_type() {
    require_root!();
    let mut t = TestCase::new("badnstype");
    t.spec()
        .args(&["true"])
        .push_namespace_raw(json!({"type": "flibble"}));
    create_fails(&t, &["flibble"]);
}

#[test]
fn namespace_path_that_does_not_exist() {
    require_root!();
    let mut t = TestCase::new("badnspath");
    t.spec()
        .args(&["true"])
        .remove("/hostname")
        .namespace("uts", Some("/proc/self/ns/no-such-ns"));
    create_fails(&t, &["no-such-ns"]);
}

#[test]
fn relative_cwd() {
    require_root!();
    let mut t = TestCase::new("relcwd");
    t.spec().args(&["true"]).cwd("relative/dir");
    create_fails(&t, &["cwd"]);
}

#[test]
fn empty_args() {
    require_root!();
    let mut t = TestCase::new("noargs");
    t.spec().set("/process/args", json!([]));
    create_fails(&t, &["args"]);
}

#[test]
fn existing_id_is_refused() {
    require_root!();
    let mut t = TestCase::new("dupid");
    t.spec().args(&["sleep", "1000"]);
    t.create().ok();
    let pid = t.pid();
    let again = t.create();
    again.failed();
    assert!(
        again.stderr.contains(&t.id),
        "error does not name the id: {again}"
    );
    assert!(again.all_lower().contains("exist"), "{again}");
    // The first container is untouched.
    assert_eq!(t.status(), "created");
    assert_eq!(t.pid(), pid);
}

#[test]
fn invalid_container_id() {
    require_root!();
    let t = TestCase::new("badid");
    t.bundle.write_config();
    for bad in ["../escape", "a/b", ""] {
        let out = t.rt([
            "create".as_ref(),
            "--bundle".as_ref(),
            t.bundle.dir.as_os_str(),
            bad.as_ref() as &std::ffi::OsStr,
        ]);
        out.failed();
        assert!(
            out.all_lower().contains("id"),
            "error does not mention the id: {out}"
        );
    }
    assert!(berth_tests::leaks::files_naming(&t.rt.root, "escape").is_empty());
    assert!(!t.rt.root.parent().expect("parent").join("escape").exists());
}

#[test]
fn missing_bundle_directory() {
    require_root!();
    let t = TestCase::new("nobundle");
    let missing = t.dir().join("no-such-bundle");
    let out = t.rt([
        "create".as_ref(),
        "--bundle".as_ref(),
        missing.as_os_str(),
        t.id.as_ref() as &std::ffi::OsStr,
    ]);
    assert_error_mentions(&out, &["no-such-bundle"]);
    t.assert_no_leftovers(&t.id);
}

#[test]
fn failing_hook_leaves_nothing() {
    require_root!();
    let mut t = TestCase::new("badhook");
    t.spec().args(&["true"]).hook(
        "createRuntime",
        "/no/such/hook-binary",
        &["hook-binary"],
        None,
    );
    create_fails(&t, &["hook"]);
}
