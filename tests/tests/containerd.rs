//! containerd 1.6 driving the runtime under test through its runc shim
//! (`ctr run --runc-binary`), with a busybox image built here and imported from a tarball.

use std::time::Duration;

use berth_tests::bundle::make_busybox_rootfs;
use berth_tests::containerd::Containerd;
use berth_tests::oci_image::write_oci_archive;
use berth_tests::poll::try_wait_until;
use berth_tests::testcase::unique_id;
use berth_tests::{require_root, runtime_binary};

const IMAGE: &str = "docker.io/library/busybox:latest";

/// Starts containerd and imports the busybox image into it.
fn containerd_with_busybox() -> Containerd {
    let c = Containerd::start();
    let rootfs = c.dir().join("image-rootfs");
    make_busybox_rootfs(&rootfs);
    let archive = c.dir().join("busybox.tar");
    write_oci_archive(&rootfs, IMAGE, &["sh"], &archive);
    let import = c.ctr(&["image", "import", archive.to_str().expect("utf-8 path")]);
    assert!(
        import.success(),
        "image import failed: {import}\ncontainerd log:\n{}",
        c.log()
    );
    let ls = c.ctr(&["image", "ls", "-q"]);
    assert!(
        ls.stdout.lines().any(|l| l == IMAGE),
        "image not listed after import: {ls}"
    );
    c
}

fn runtime_flags(c: &Containerd) -> Vec<String> {
    vec![
        "--runc-binary".into(),
        runtime_binary().to_string_lossy().into_owned(),
        "--runc-root".into(),
        c.dir().join("runc-root").to_string_lossy().into_owned(),
    ]
}

#[test]
fn ctr_run_rm_prints_output() {
    require_root!();
    let c = containerd_with_busybox();
    let id = unique_id("ctr-run");
    let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
    args.extend(runtime_flags(&c));
    args.extend([
        IMAGE.into(),
        id.clone(),
        "echo".into(),
        "hello-from-berth".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = c.ctr(&args);
    assert!(
        out.success(),
        "ctr run failed: {out}\ncontainerd log:\n{}",
        c.log()
    );
    assert_eq!(out.stdout.trim_end(), "hello-from-berth", "{out}");
    // --rm removed the container.
    let ls = c.ctr(&["container", "ls", "-q"]);
    assert!(!ls.stdout.contains(&id), "{ls}");

    // The exit code of the container is the exit code of ctr run.
    let id2 = unique_id("ctr-exit");
    let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
    args.extend(runtime_flags(&c));
    args.extend([IMAGE.into(), id2, "sh".into(), "-c".into(), "exit 7".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = c.ctr(&args);
    assert_eq!(out.code, Some(7), "{out}");
}

#[test]
fn ctr_detached_task_lifecycle() {
    require_root!();
    let c = containerd_with_busybox();
    let id = unique_id("ctr-detach");
    let mut args: Vec<String> = vec!["run".into(), "-d".into()];
    args.extend(runtime_flags(&c));
    args.extend([IMAGE.into(), id.clone(), "sleep".into(), "1000".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = c.ctr(&args);
    assert!(
        out.success(),
        "ctr run -d failed: {out}\ncontainerd log:\n{}",
        c.log()
    );

    let status = |c: &Containerd| -> String {
        let ls = c.ctr(&["task", "ls"]);
        ls.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id.as_str()))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(status(&c), "RUNNING");

    let exec = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "probe",
        &id,
        "sh",
        "-c",
        "echo exec-ok; hostname; echo $$",
    ]);
    assert!(
        exec.success(),
        "ctr task exec failed: {exec}\ncontainerd log:\n{}",
        c.log()
    );
    assert!(exec.stdout.starts_with("exec-ok\n"), "{exec}");

    let ps = c.ctr(&["task", "ps", &id]);
    assert!(ps.success(), "{ps}");
    assert!(
        ps.stdout.lines().count() >= 2,
        "task ps lists no process: {ps}"
    );

    c.ctr(&["task", "pause", &id]).ok();
    assert_eq!(status(&c), "PAUSED");
    c.ctr(&["task", "resume", &id]).ok();
    assert_eq!(status(&c), "RUNNING");

    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).ok();
    let stopped = try_wait_until(Duration::from_secs(20), || {
        (status(&c) == "STOPPED").then_some(())
    });
    assert!(stopped.is_some(), "task never stopped: {}", status(&c));
    c.ctr(&["task", "delete", &id]).ok();
    c.ctr(&["container", "rm", &id]).ok();
    let ls = c.ctr(&["container", "ls", "-q"]);
    assert!(!ls.stdout.contains(&id), "{ls}");
}
