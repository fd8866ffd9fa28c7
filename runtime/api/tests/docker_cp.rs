//! `docker cp` through Berth, both ways, checked by content: files and
//! directories, running and stopped containers, paths in volumes, and
//! symlinks that try to lead out of the container (they must stay inside).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::Server;

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
    }
}

fn import_busybox(server: &Server) {
    let root = server.busybox_rootfs(&[
        "sh", "sleep", "echo", "cat", "true", "ls", "mkdir", "ln", "readlink",
    ]);
    std::fs::create_dir_all(root.join("etc")).unwrap();
    server.import_rootfs(&root);
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn docker_cp_both_ways() {
    let server = Server::start();
    let _cleanup = Cleanup(&server);
    import_busybox(&server);
    let work = server.dir.path().join("work");
    std::fs::create_dir_all(work.join("tree/sub")).unwrap();
    std::fs::write(work.join("file.txt"), "host file\n").unwrap();
    std::fs::write(work.join("tree/a"), "a\n").unwrap();
    std::fs::write(work.join("tree/sub/b"), "b\n").unwrap();
    std::os::unix::fs::symlink("a", work.join("tree/link")).unwrap();

    server.docker_ok(&[
        "run", "-d", "--name", "c1", "-v", "vol:/vol", "busybox", "sleep", "300",
    ]);

    // Host → container: a file to a new name, a file into a directory, a
    // directory (with a symlink) to a new name.
    server.docker_ok(&["cp", s(&work.join("file.txt")), "c1:/copied.txt"]);
    server.docker_ok(&["cp", s(&work.join("file.txt")), "c1:/etc/"]);
    server.docker_ok(&["cp", s(&work.join("tree")), "c1:/tree"]);
    assert_eq!(
        server.docker_ok(&["exec", "c1", "cat", "/copied.txt"]),
        "host file\n"
    );
    assert_eq!(
        server.docker_ok(&["exec", "c1", "cat", "/etc/file.txt"]),
        "host file\n"
    );
    assert_eq!(
        server.docker_ok(&["exec", "c1", "cat", "/tree/a", "/tree/sub/b", "/tree/link"]),
        "a\nb\na\n"
    );
    assert_eq!(
        server.docker_ok(&["exec", "c1", "readlink", "/tree/link"]),
        "a\n"
    );
    // Into a volume: visible on the host at the volume's mount point.
    server.docker_ok(&["cp", s(&work.join("file.txt")), "c1:/vol/in-volume.txt"]);
    let mp = server.docker_ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "vol"]);
    assert_eq!(
        std::fs::read_to_string(Path::new(mp.trim()).join("in-volume.txt")).unwrap(),
        "host file\n"
    );

    // Container → host: a file, a directory, a directory's content (`/.`),
    // and a file in a volume.
    server.docker_ok(&[
        "exec",
        "c1",
        "sh",
        "-c",
        "mkdir -p /out/sub && echo deep > /out/sub/f && echo top > /out/t && echo v > /vol/v",
    ]);
    let dest = server.dir.path().join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    server.docker_ok(&["cp", "c1:/out/sub/f", s(&dest.join("f-copy"))]);
    assert_eq!(
        std::fs::read_to_string(dest.join("f-copy")).unwrap(),
        "deep\n"
    );
    server.docker_ok(&["cp", "c1:/out", s(&dest)]);
    assert_eq!(
        std::fs::read_to_string(dest.join("out/sub/f")).unwrap(),
        "deep\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("out/t")).unwrap(),
        "top\n"
    );
    let content = server.dir.path().join("content");
    server.docker_ok(&["cp", "c1:/out/.", s(&content)]);
    assert_eq!(
        std::fs::read_to_string(content.join("sub/f")).unwrap(),
        "deep\n"
    );
    server.docker_ok(&["cp", "c1:/vol/v", s(&dest.join("v"))]);
    assert_eq!(std::fs::read_to_string(dest.join("v")).unwrap(), "v\n");
    // To stdout as a tar stream.
    let out = server.docker(&["cp", "c1:/out/t", "-"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("top\n"));

    // Missing paths: Docker's 404 wording through the CLI.
    let missing = server.docker(&["cp", "c1:/nonexistent", s(&dest)]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr).into_owned();
    assert!(
        err.contains("Could not find the file /nonexistent"),
        "{err}"
    );

    // Symlinks that point out of the container resolve inside it.
    let marker = format!("berth-cp-escape-{}", std::process::id());
    server.docker_ok(&[
        "exec",
        "c1",
        "sh",
        "-c",
        "ln -s / /escape && ln -s ../../../../../../etc /esc2",
    ]);
    std::fs::write(work.join(&marker), "must stay inside\n").unwrap();
    server.docker_ok(&["cp", s(&work.join(&marker)), "c1:/escape/"]);
    server.docker_ok(&["cp", s(&work.join(&marker)), "c1:/esc2/"]);
    assert!(
        !Path::new("/").join(&marker).exists(),
        "escaped to the host's /"
    );
    assert!(
        !Path::new("/etc").join(&marker).exists(),
        "escaped to the host's /etc"
    );
    assert_eq!(
        server.docker_ok(&[
            "exec",
            "c1",
            "cat",
            &format!("/{marker}"),
            &format!("/etc/{marker}")
        ]),
        "must stay inside\nmust stay inside\n"
    );
    // Reading through them never reaches the host's files.
    let shadow = server.docker(&["cp", "c1:/esc2/shadow", s(&dest.join("shadow"))]);
    assert!(!shadow.status.success(), "read the host's /etc/shadow");
    assert!(!dest.join("shadow").exists());
    let up = server.docker(&["cp", "c1:/../../../../etc/shadow", s(&dest.join("shadow2"))]);
    assert!(!up.status.success());
    assert!(!dest.join("shadow2").exists());
    // The symlink itself is copied as a symlink.
    server.docker_ok(&["cp", "c1:/escape", s(&dest.join("escape-link"))]);
    assert_eq!(
        std::fs::read_link(dest.join("escape-link")).unwrap(),
        Path::new("/")
    );

    // A stopped container: both ways still work.
    server.docker_ok(&["stop", "-t", "1", "c1"]);
    server.docker_ok(&["cp", s(&work.join("file.txt")), "c1:/after-stop.txt"]);
    server.docker_ok(&["cp", "c1:/after-stop.txt", s(&dest.join("after"))]);
    assert_eq!(
        std::fs::read_to_string(dest.join("after")).unwrap(),
        "host file\n"
    );
    server.docker_ok(&["start", "c1"]);
    assert_eq!(
        server.docker_ok(&["exec", "c1", "cat", "/after-stop.txt"]),
        "host file\n"
    );

    // A read-only root filesystem refuses writes with Docker's message.
    server.docker_ok(&["create", "--name", "ro", "--read-only", "busybox", "true"]);
    let ro = server.docker(&["cp", s(&work.join("file.txt")), "ro:/x.txt"]);
    assert!(!ro.status.success());
    let err = String::from_utf8_lossy(&ro.stderr).into_owned();
    assert!(
        err.contains("container rootfs is marked read-only"),
        "{err}"
    );
    // So does a read-only volume.
    server.docker_ok(&[
        "create",
        "--name",
        "rov",
        "-v",
        "rovol:/r:ro",
        "busybox",
        "true",
    ]);
    let ro = server.docker(&["cp", s(&work.join("file.txt")), "rov:/r/x.txt"]);
    assert!(!ro.status.success());
    let err = String::from_utf8_lossy(&ro.stderr).into_owned();
    assert!(err.contains("mounted volume is marked read-only"), "{err}");
}

#[test]
fn archive_endpoint_stat_header() {
    let server = Server::start();
    let _cleanup = Cleanup(&server);
    import_busybox(&server);
    server.docker_ok(&["create", "--name", "c2", "busybox", "true"]);
    let r = server.http("HEAD", "/v1.45/containers/c2/archive?path=/bin");
    assert_eq!(r.status, 200);
    let stat = r
        .header("X-Docker-Container-Path-Stat")
        .expect("stat header");
    let decoded = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(stat.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&decoded.stdout).unwrap();
    assert_eq!(v["name"], "bin");
    // Go's os.ModeDir bit.
    assert_ne!(v["mode"].as_u64().unwrap() & (1 << 31), 0, "{v}");
    let r = server.http("HEAD", "/v1.45/containers/c2/archive?path=/nope");
    assert_eq!(r.status, 404);
    let r = server.http("GET", "/v1.45/containers/c2/archive");
    assert_eq!(r.status, 400);
    let r = server.http("HEAD", "/v1.45/containers/nosuch/archive?path=/");
    assert_eq!(r.status, 404);
}
