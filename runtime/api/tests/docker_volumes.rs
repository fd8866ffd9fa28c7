//! The real `docker` CLI managing volumes through Berth: `docker volume
//! create/ls/inspect/rm/prune`, named and anonymous volumes in containers,
//! `--mount`, read-only mounts, in-use refusal, `rm -v`, `system df`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{poll_until, DaemonProcess, Server};

/// Removes every container of the server when the test ends, even on
/// failure (the server's temp dir holds the volumes).
struct Cleanup<'a>(&'a Server);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let out = self.0.docker(&["ps", "-aq"]);
        let ids = String::from_utf8_lossy(&out.stdout).into_owned();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            let _ = self.0.docker(&args);
        }
        // Volumes backed by a mount (tmpfs) must not outlive the test.
        let out = self.0.docker(&["volume", "ls", "-q"]);
        for v in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = self.0.docker(&["volume", "rm", "-f", v]);
        }
    }
}

pub fn import_busybox(server: &Server) {
    let root = server.busybox_rootfs(&[
        "sh", "sleep", "echo", "cat", "true", "ls", "mkdir", "ln", "grep", "stat", "touch",
    ]);
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::write(root.join("data/from-image"), "image content\n").unwrap();
    server.import_rootfs(&root);
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn docker_volume_create_ls_inspect_rm_prune() {
    let server = Server::start();
    let _cleanup = Cleanup(&server);

    assert_eq!(
        server
            .docker_ok(&["volume", "create", "--label", "team=a", "named1"])
            .trim(),
        "named1"
    );
    server.docker_ok(&["volume", "create", "named2"]);
    // Creating an existing volume returns it, as Docker does.
    server.docker_ok(&["volume", "create", "named2"]);
    let ls = server.docker_ok(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]);
    assert_eq!(ls, "local named1\nlocal named2\n");
    let ls = server.docker_ok(&["volume", "ls", "-q", "--filter", "label=team=a"]);
    assert_eq!(ls, "named1\n");
    let ls = server.docker_ok(&["volume", "ls", "-q", "--filter", "name=ed2"]);
    assert_eq!(ls, "named2\n");
    let bad = server.docker(&["volume", "ls", "--filter", "bogus=1"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("invalid filter 'bogus'"),
        "{}",
        stderr(&bad)
    );

    let inspect: serde_json::Value =
        serde_json::from_str(&server.docker_ok(&["volume", "inspect", "named1"])).unwrap();
    let v = &inspect[0];
    assert_eq!(v["Name"], "named1");
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Scope"], "local");
    assert_eq!(v["Labels"]["team"], "a");
    assert!(v["CreatedAt"].as_str().unwrap().starts_with("20"), "{v}");
    let mountpoint = v["Mountpoint"].as_str().unwrap();
    assert!(Path::new(mountpoint).is_dir(), "{mountpoint}");
    assert!(mountpoint.starts_with(server.dir.path().to_str().unwrap()));

    // Bad input: clear errors, nothing made.
    let bad = server.docker(&["volume", "create", "bad/name"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("includes invalid characters for a local volume name"),
        "{}",
        stderr(&bad)
    );
    let bad = server.docker(&["volume", "create", "-o", "bogus=1", "opts"]);
    assert!(
        stderr(&bad).contains("invalid option key: \"bogus\""),
        "{}",
        stderr(&bad)
    );
    let bad = server.docker(&["volume", "create", "-d", "nfs-plugin", "opts"]);
    assert!(!bad.status.success());
    assert_eq!(server.docker_ok(&["volume", "ls", "-q"]).lines().count(), 2);
    let missing = server.docker(&["volume", "inspect", "nosuchvolume"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no such volume"),
        "{}",
        stderr(&missing)
    );
    let missing = server.docker(&["volume", "rm", "nosuchvolume"]);
    assert!(
        stderr(&missing).contains("no such volume"),
        "{}",
        stderr(&missing)
    );
    server.docker_ok(&["volume", "rm", "-f", "nosuchvolume"]);

    // An anonymous volume (created without a name) is what prune removes by
    // default; named ones only with --all.
    let created = common::http(
        &server.socket,
        "POST",
        "/v1.45/volumes/create",
        br#"{"Labels":{"x":"y"}}"#,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let anon = created.json()["Name"].as_str().unwrap().to_string();
    assert_eq!(anon.len(), 64);
    let pruned = server.docker_ok(&["volume", "prune", "-f"]);
    assert!(pruned.contains(&anon), "{pruned}");
    assert_eq!(
        server.docker_ok(&["volume", "ls", "-q"]),
        "named1\nnamed2\n"
    );
    let pruned = server.docker_ok(&["volume", "prune", "-f", "--all", "--filter", "label=team=a"]);
    assert!(pruned.contains("named1"), "{pruned}");
    assert_eq!(server.docker_ok(&["volume", "ls", "-q"]), "named2\n");
    server.docker_ok(&["volume", "rm", "named2"]);
    assert_eq!(server.docker_ok(&["volume", "ls", "-q"]), "");
    assert!(!Path::new(mountpoint).exists());

    // A tmpfs-backed local volume (driver options type/device/o).
    server.docker_ok(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "-o",
        "o=size=1m",
        "tmp1",
    ]);
    let opts = server.docker_ok(&["volume", "inspect", "-f", "{{json .Options}}", "tmp1"]);
    assert!(opts.contains("\"type\":\"tmpfs\""), "{opts}");
    server.docker_ok(&["volume", "rm", "tmp1"]);
}

#[test]
fn docker_volumes_in_containers() {
    let server = Server::start();
    let _cleanup = Cleanup(&server);
    import_busybox(&server);

    // Data persists across containers in a named volume (created on demand).
    server.docker_ok(&[
        "run",
        "--rm",
        "-v",
        "data:/vol",
        "busybox",
        "sh",
        "-c",
        "echo persisted > /vol/f",
    ]);
    let out = server.docker_ok(&[
        "run",
        "--rm",
        "-v",
        "data:/vol:ro",
        "busybox",
        "cat",
        "/vol/f",
    ]);
    assert_eq!(out, "persisted\n");
    // Read-only is enforced.
    let ro = server.docker(&[
        "run",
        "--rm",
        "-v",
        "data:/vol:ro",
        "busybox",
        "sh",
        "-c",
        "echo x > /vol/g",
    ]);
    assert!(!ro.status.success());
    assert!(
        stderr(&ro).contains("Read-only file system"),
        "{}",
        stderr(&ro)
    );

    // A new, empty volume gets the image's content at its mount point.
    let out = server.docker_ok(&[
        "run",
        "--rm",
        "-v",
        "seeded:/data",
        "busybox",
        "cat",
        "/data/from-image",
    ]);
    assert_eq!(out, "image content\n");
    let mp = server.docker_ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "seeded"]);
    assert!(Path::new(mp.trim()).join("from-image").is_file());
    // …but not with nocopy.
    let out = server.docker(&[
        "run",
        "--rm",
        "-v",
        "empty:/data:nocopy",
        "busybox",
        "cat",
        "/data/from-image",
    ]);
    assert!(!out.status.success());

    // In use: rm refused (even forced), with Docker's wording; dangling filter.
    server.docker_ok(&[
        "run",
        "-d",
        "--name",
        "user",
        "-v",
        "data:/vol",
        "busybox",
        "sleep",
        "60",
    ]);
    let rm = server.docker(&["volume", "rm", "data"]);
    assert!(!rm.status.success());
    assert!(stderr(&rm).contains("volume is in use"), "{}", stderr(&rm));
    let rm = server.docker(&["volume", "rm", "-f", "data"]);
    assert!(!rm.status.success());
    let used = server.docker_ok(&["volume", "ls", "-q", "--filter", "dangling=false"]);
    assert_eq!(used, "data\n");
    let mounts = server.docker_ok(&["inspect", "-f", "{{json .Mounts}}", "user"]);
    let mounts: serde_json::Value = serde_json::from_str(&mounts).unwrap();
    assert_eq!(mounts[0]["Type"], "volume");
    assert_eq!(mounts[0]["Name"], "data");
    assert_eq!(mounts[0]["Destination"], "/vol");
    assert_eq!(mounts[0]["RW"], true);

    // system df counts volumes (and the active one).
    let df = server.docker_ok(&[
        "system",
        "df",
        "--format",
        "{{.Type}}|{{.TotalCount}}|{{.Active}}",
    ]);
    let line = df
        .lines()
        .find(|l| l.starts_with("Local Volumes"))
        .unwrap_or_default();
    assert_eq!(line, "Local Volumes|3|1", "{df}");
    server.docker_ok(&["rm", "-f", "user"]);
    server.docker_ok(&["volume", "rm", "data"]);

    // Anonymous volumes: `-v /path`, shown in inspect, removed by `rm -v`.
    server.docker_ok(&[
        "create", "--name", "anon", "-v", "/scratch", "busybox", "true",
    ]);
    let name = server.docker_ok(&["inspect", "-f", "{{range .Mounts}}{{.Name}}{{end}}", "anon"]);
    let name = name.trim().to_string();
    assert_eq!(name.len(), 64, "{name}");
    assert!(server.docker_ok(&["volume", "ls", "-q"]).contains(&name));
    server.docker_ok(&["rm", "-v", "anon"]);
    assert!(!server.docker_ok(&["volume", "ls", "-q"]).contains(&name));

    // --mount: volume, read-only bind with propagation, tmpfs with size.
    let host = server.dir.path().join("hostdir");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("h"), "from host\n").unwrap();
    let out = server.docker_ok(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,source=m1,target=/m",
        "--mount",
        &format!("type=bind,source={},target=/b,readonly,bind-propagation=rslave", host.display()),
        "--mount",
        "type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1770",
        "busybox",
        "sh",
        "-c",
        "cat /b/h; echo v > /m/v && cat /m/v; stat -c %a /t; grep ' /t ' /proc/mounts; echo x > /b/no || echo ro-bind",
    ]);
    assert!(out.contains("from host\n"), "{out}");
    assert!(out.contains("v\n1770\n"), "{out}");
    assert!(out.contains("size=1024k"), "{out}");
    assert!(out.contains("ro-bind"), "{out}");
    assert!(!host.join("no").exists());
    // A writable -v bind: the container's write lands on the host.
    server.docker_ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/b", host.display()),
        "busybox",
        "sh",
        "-c",
        "echo w > /b/w",
    ]);
    assert_eq!(std::fs::read_to_string(host.join("w")).unwrap(), "w\n");

    // Bad mounts: clear errors, nothing made.
    let before = server.docker_ok(&["ps", "-aq"]);
    let bad = server.docker(&[
        "run",
        "--rm",
        "--mount",
        "type=bind,source=/nonexistent-berth,target=/x",
        "busybox",
        "true",
    ]);
    assert!(
        stderr(&bad).contains("bind source path does not exist"),
        "{}",
        stderr(&bad)
    );
    let bad = server.docker(&[
        "run", "--rm", "-v", "aa:/x", "-v", "bb:/x", "busybox", "true",
    ]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("Duplicate mount point"),
        "{}",
        stderr(&bad)
    );
    let bad = server.docker(&["run", "--rm", "-v", "/tmp:/x:bogus", "busybox", "true"]);
    assert!(!bad.status.success());
    assert_eq!(server.docker_ok(&["ps", "-aq"]), before);
    let vols = server.docker_ok(&["volume", "ls", "-q"]);
    assert!(!vols.contains("aa\n") && !vols.contains("bb\n"), "{vols}");

    // A tmpfs-backed named volume is shared between containers.
    server.docker_ok(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "-o",
        "o=size=2m",
        "tmpvol",
    ]);
    server.docker_ok(&[
        "run",
        "--rm",
        "-v",
        "tmpvol:/s",
        "busybox",
        "sh",
        "-c",
        "echo shared > /s/x",
    ]);
    let out = server.docker_ok(&[
        "run",
        "--rm",
        "-v",
        "tmpvol:/s",
        "busybox",
        "sh",
        "-c",
        "cat /s/x; grep ' /s ' /proc/mounts",
    ]);
    assert!(out.starts_with("shared\n"), "{out}");
    assert!(out.contains("tmpfs"), "{out}");
    server.docker_ok(&["volume", "rm", "tmpvol"]);

    // A bind-backed local volume (type=none, o=bind): writes reach the
    // host directory, and removing the volume leaves that directory alone.
    let backing = server.dir.path().join("backing");
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::write(backing.join("keep"), "host data\n").unwrap();
    server.docker_ok(&[
        "volume",
        "create",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        &format!("device={}", backing.display()),
        "bindvol",
    ]);
    let out = server.docker_ok(&[
        "run",
        "--rm",
        "-v",
        "bindvol:/b",
        "busybox",
        "sh",
        "-c",
        "cat /b/keep; echo new > /b/new",
    ]);
    assert_eq!(out, "host data\n");
    assert_eq!(
        std::fs::read_to_string(backing.join("new")).unwrap(),
        "new\n"
    );
    server.docker_ok(&["volume", "rm", "bindvol"]);
    assert_eq!(
        std::fs::read_to_string(backing.join("keep")).unwrap(),
        "host data\n"
    );
    assert!(backing.join("new").exists());

    // `run --rm` removes the container's anonymous volumes too.
    let before = server.docker_ok(&["volume", "ls", "-q"]);
    server.docker_ok(&["run", "--rm", "-v", "/gone", "busybox", "true"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = server.docker_ok(&["volume", "ls", "-q"]);
        if now == before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "anonymous volume left: {now}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn containers_and_volumes_survive_kill_9_of_the_daemon() {
    let mut daemon = DaemonProcess::new("berth-kill9");
    daemon.start();
    daemon.import_busybox(&["sh", "sleep", "echo", "cat"]);

    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "-v",
        "keep:/data",
        "busybox",
        "sh",
        "-c",
        "echo before > /data/f; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
    ]);
    let pid = daemon.docker_ok(&["inspect", "-f", "{{.State.Pid}}", "live"]);
    let pid: i32 = pid.trim().parse().unwrap();
    assert!(pid > 0);
    let logged = |d: &DaemonProcess| d.docker_ok(&["logs", "live"]).lines().count();
    poll_until("first log lines", || logged(&daemon) > 2);

    daemon.kill_9();
    // The container runs on without its daemon.
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "container died with the daemon"
    );

    daemon.start();
    let state = daemon.docker_ok(&["inspect", "-f", "{{.State.Status}} {{.State.Pid}}", "live"]);
    assert_eq!(state.trim(), format!("running {pid}"));
    // Logs continue (written by the container's monitor meanwhile and now).
    let before = logged(&daemon);
    poll_until("logs to continue", || logged(&daemon) > before + 3);
    assert_eq!(
        daemon.docker_ok(&["exec", "live", "cat", "/data/f"]),
        "before\n"
    );
    let vols = daemon.docker_ok(&["volume", "ls", "-q", "--filter", "dangling=false"]);
    assert_eq!(vols, "keep\n");
    // Stop works on the adopted container.
    daemon.docker_ok(&["stop", "-t", "1", "live"]);
    let state = daemon.docker_ok(&["inspect", "-f", "{{.State.Status}}", "live"]);
    assert_eq!(state.trim(), "exited");
    poll_until("the container's process to be gone", || {
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
    daemon.docker_ok(&["rm", "-v", "live"]);
    daemon.docker_ok(&["volume", "rm", "keep"]);
}

/// `berth volume …`, `berth run -v/--mount` and `berth cp` against the
/// same server.
#[test]
fn berth_cli_volumes_and_cp() {
    let server = Server::start();
    let _cleanup = Cleanup(&server);
    import_busybox(&server);
    let host = format!("unix://{}", server.socket.display());
    let berth = |args: &[&str]| {
        let out = std::process::Command::new(common::berth_binary())
            .arg("--host")
            .arg(&host)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running berth");
        assert!(
            out.status.success(),
            "berth {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(berth(&["volume", "create", "--label", "k=v", "bv"]), "bv\n");
    assert!(berth(&["volume", "ls"]).contains("local    bv"));
    assert_eq!(
        berth(&["volume", "ls", "-q", "--filter", "label=k=v"]),
        "bv\n"
    );
    assert!(berth(&["volume", "inspect", "bv"]).contains("\"Mountpoint\""));
    let out = berth(&[
        "run",
        "--rm",
        "-v",
        "bv:/d",
        "--mount",
        "type=tmpfs,target=/t",
        "busybox",
        "sh",
        "-c",
        "echo via-berth > /d/f; cat /d/f",
    ]);
    assert_eq!(out, "via-berth\n");
    berth(&["create", "--name", "bc", "-v", "bv:/d", "busybox", "true"]);
    let work = server.dir.path().join("berth-cp");
    std::fs::create_dir_all(work.join("dir/sub")).unwrap();
    std::fs::write(work.join("dir/sub/x"), "x\n").unwrap();
    berth(&["cp", work.join("dir").to_str().unwrap(), "bc:/d/copied"]);
    berth(&[
        "cp",
        "bc:/d/copied/sub/x",
        work.join("x-back").to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(work.join("x-back")).unwrap(), "x\n");
    berth(&["cp", "bc:/d", work.join("whole").to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(work.join("whole/f")).unwrap(),
        "via-berth\n"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("whole/copied/sub/x")).unwrap(),
        "x\n"
    );
    berth(&["rm", "bc"]);
    berth(&["volume", "rm", "bv"]);
    assert!(berth(&["volume", "prune", "-f"]).contains("Total reclaimed space"));
    assert_eq!(berth(&["volume", "ls", "-q"]), "");
}
