//! The real `docker` CLI against Berth's API (in-process server, own socket
//! and data root per test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Registry, Server};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn docker_version_shows_berth() {
    let server = Server::start();
    let out = server.docker_ok(&["version"]);
    assert!(out.contains("Server: Berth"), "{out}");
    assert!(out.contains("1.45"), "{out}");
    let short = server.docker_ok(&[
        "version",
        "--format",
        "{{.Server.Version}} {{.Server.APIVersion}}",
    ]);
    assert_eq!(short.trim(), format!("{} 1.45", env!("CARGO_PKG_VERSION")));
}

#[test]
fn docker_info_has_no_warnings() {
    let server = Server::start();
    let out = server.docker(&["info"]);
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "{stdout}\n{err}");
    assert!(!err.contains("WARNING"), "{err}");
    assert!(!stdout.contains("ERROR"), "{stdout}");
    assert!(stdout.contains("Swarm: inactive"), "{stdout}");
    assert!(stdout.contains("Server Version: "), "{stdout}");
    assert!(stdout.contains("Default Runtime: berth"), "{stdout}");
    let images = server.docker_ok(&[
        "info",
        "--format",
        "{{.Images}} {{.OSType}} {{.CgroupDriver}}",
    ]);
    assert_eq!(images.trim(), "1 linux cgroupfs");
}

#[test]
fn images_inspect_tag_rmi() {
    let server = Server::start();
    let list = server.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(list.lines().any(|l| l == "hello:latest"), "{list}");
    let cmd = server.docker_ok(&[
        "image",
        "inspect",
        "hello",
        "--format",
        "{{json .Config.Cmd}}",
    ]);
    assert_eq!(cmd.trim(), r#"["/hello"]"#);

    server.docker_ok(&["tag", "hello", "x/y:z"]);
    let list = server.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(list.lines().any(|l| l == "x/y:z"), "{list}");
    let filtered = server.docker_ok(&[
        "images",
        "--filter",
        "reference=x/*",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]);
    assert_eq!(filtered.trim(), "x/y:z");

    let out = server.docker_ok(&["rmi", "x/y:z"]);
    assert!(out.contains("Untagged: x/y:z"), "{out}");
    assert!(!out.contains("Deleted"), "{out}");
    let history = server.docker_ok(&["history", "hello"]);
    assert!(history.contains("IMAGE"), "{history}");

    let out = server.docker(&["image", "inspect", "nosuch"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("No such image"), "{}", stderr(&out));
}

#[test]
fn save_rmi_load() {
    let server = Server::start();
    let tar = server.dir.path().join("hello.tar");
    let tar_arg = tar.to_str().unwrap();
    server.docker_ok(&["save", "hello", "-o", tar_arg]);
    assert!(std::fs::metadata(&tar).unwrap().len() > 1024);

    let out = server.docker_ok(&["rmi", "hello"]);
    assert!(out.contains("Untagged: hello:latest"), "{out}");
    assert!(out.contains("Deleted: sha256:"), "{out}");
    let list = server.docker_ok(&["images", "-q"]);
    assert!(list.trim().is_empty(), "{list}");

    let out = server.docker_ok(&["load", "-i", tar_arg]);
    assert!(out.contains("Loaded image: hello:latest"), "{out}");
    let cmd = server.docker_ok(&[
        "image",
        "inspect",
        "hello",
        "--format",
        "{{json .Config.Cmd}}",
    ]);
    assert_eq!(cmd.trim(), r#"["/hello"]"#);
}

#[test]
fn push_then_pull_through_a_local_registry() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let server = Server::start();
    let name = format!("127.0.0.1:{}/hello:v1", registry.port);
    server.docker_ok(&["tag", "hello", &name]);
    let out = server.docker_ok(&["push", &name]);
    assert!(
        out.contains(&format!(
            "The push refers to repository [127.0.0.1:{}/hello]",
            registry.port
        )),
        "{out}"
    );
    assert!(out.contains("v1: digest: sha256:"), "{out}");

    // Remove every name so the layers go too, then pull them back.
    server.docker_ok(&["rmi", &name]);
    server.docker_ok(&["rmi", "hello"]);
    assert!(server.docker_ok(&["images", "-q"]).trim().is_empty());

    let out = server.docker_ok(&["pull", &name]);
    assert!(out.contains("Pulling from hello"), "{out}");
    // Layers come down again, or are still in the store (the content
    // store's garbage collection may keep recent blobs).
    assert!(
        out.contains("Pull complete") || out.contains("Already exists"),
        "{out}"
    );
    assert!(out.contains("Digest: sha256:"), "{out}");
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {name}")),
        "{out}"
    );
    let cmd = server.docker_ok(&[
        "image",
        "inspect",
        &name,
        "--format",
        "{{json .Config.Cmd}}",
    ]);
    assert_eq!(cmd.trim(), r#"["/hello"]"#);

    let again = server.docker_ok(&["pull", &name]);
    assert!(again.contains("Image is up to date"), "{again}");

    let missing = server.docker(&["pull", &format!("127.0.0.1:{}/nothere:v1", registry.port)]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("not"), "{}", stderr(&missing));
}

#[test]
fn system_df_and_events() {
    let server = Server::start();
    let out = server.docker_ok(&["system", "df"]);
    assert!(out.contains("Images"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("Images") && l.contains(" 1 ")),
        "{out}"
    );

    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    server.docker_ok(&["tag", "hello", "evt:one"]);
    server.docker_ok(&["rmi", "evt:one"]);
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let out = server.docker_ok(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        "type=image",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
    ]);
    assert!(out.contains("tag evt:one"), "{out}");
    assert!(out.contains("untag evt:one"), "{out}");
}

#[test]
fn swarm_init_is_refused_clearly() {
    let server = Server::start();
    let out = server.docker(&["swarm", "init"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a swarm manager"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn import_a_rootfs_tarball() {
    let server = Server::start();
    let root = server.dir.path().join("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), "imported\n").unwrap();
    let tar = server.dir.path().join("rootfs.tar");
    let status = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let out = server.docker_ok(&[
        "import",
        "--change",
        r#"CMD ["/bin/true"]"#,
        "--change",
        "ENV A=b",
        tar.to_str().unwrap(),
        "imported:v1",
    ]);
    assert!(out.trim().starts_with("sha256:"), "{out}");
    let config = server.docker_ok(&[
        "image",
        "inspect",
        "imported:v1",
        "--format",
        "{{json .Config.Cmd}} {{json .Config.Env}}",
    ]);
    assert_eq!(config.trim(), r#"["/bin/true"] ["A=b"]"#);
}
