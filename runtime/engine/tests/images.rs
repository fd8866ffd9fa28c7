//! The image service end to end: the embedded image, a real registry
//! (Debian's docker-registry on 127.0.0.1), save/load, tags, removal.

use std::path::Path;

use berth_engine::{ImageService, Removed};
use berth_registry::{ClientConfig, Progress};
use berth_tests::registry::Registry;

fn service(dir: &Path) -> ImageService {
    let config = ClientConfig {
        // Never reach Docker Hub from tests.
        docker_hub_endpoint: "http://127.0.0.1:9".into(),
        docker_config: Some(dir.join("docker-config")),
        ..ClientConfig::default()
    };
    ImageService::open(dir, config).expect("open image service")
}

fn no_progress(_: Progress) {}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_image_is_available_offline_and_gives_a_rootfs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let images = service(dir.path());
    let id = images
        .ensure_embedded_hello()
        .await
        .expect("embedded image")
        .expect("available on this platform");
    let listed = images.list().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(
        listed[0].names,
        vec!["docker.io/library/hello:latest".to_string()]
    );
    let details = images.inspect("hello").expect("inspect by short name");
    assert_eq!(
        details.config.config.as_ref().and_then(|c| c.cmd.clone()),
        Some(vec!["/hello".to_string()])
    );
    // Also by id prefix, as docker accepts.
    assert_eq!(
        images.inspect(&id.hex()[..12]).expect("by id").summary.id,
        id
    );

    let (mounts, _) = images
        .prepare_rootfs("ctr-offline", "hello:latest")
        .await
        .expect("rootfs");
    let target = dir.path().join("mnt");
    std::fs::create_dir(&target).expect("mount point");
    images.snapshots().mount(&mounts, &target).expect("mount");
    let has_hello = target.join("hello").is_file();
    berth_snapshot::unmount(&target).expect("unmount");
    images.remove_rootfs("ctr-offline").expect("remove rootfs");
    assert!(has_hello, "the container's rootfs has /hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn push_then_pull_from_a_real_registry() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let a_dir = tempfile::tempdir().expect("tempdir");
    let a = service(a_dir.path());
    let id = a
        .ensure_embedded_hello()
        .await
        .expect("embedded")
        .expect("available");
    let remote = format!("127.0.0.1:{}/berth/hello:v1", registry.port);
    a.tag("hello", &remote).expect("tag");
    a.push(&remote, &no_progress).await.expect("push");

    let b_dir = tempfile::tempdir().expect("tempdir");
    let b = service(b_dir.path());
    let pulled = b.pull(&remote, None, &no_progress).await.expect("pull");
    assert_eq!(pulled, id, "same image id after the round trip");
    assert!(b.content().verify().expect("verify").is_consistent());
    let (_, details) = b
        .prepare_rootfs("ctr-pulled", &remote)
        .await
        .expect("rootfs from pulled image");
    assert_eq!(details.summary.id, id);
    b.remove_rootfs("ctr-pulled").expect("cleanup");

    let err = b
        .pull(
            &format!("127.0.0.1:{}/berth/hello:nope", registry.port),
            None,
            &no_progress,
        )
        .await
        .expect_err("unknown tag");
    assert!(err.to_string().contains("nope"), "{err}");
    assert_eq!(
        b.list().expect("list").len(),
        1,
        "a failed pull records nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn save_load_tag_and_remove() {
    let a_dir = tempfile::tempdir().expect("tempdir");
    let a = service(a_dir.path());
    let id = a
        .ensure_embedded_hello()
        .await
        .expect("embedded")
        .expect("available");
    a.tag("hello", "example.com/team/greeter:2").expect("tag");
    let mut archive = Vec::new();
    a.save(&["example.com/team/greeter:2".to_string()], &mut archive)
        .expect("save");

    let b_dir = tempfile::tempdir().expect("tempdir");
    let b = service(b_dir.path());
    let names = b.load(&archive[..]).await.expect("load");
    assert_eq!(names, vec!["example.com/team/greeter:2".to_string()]);
    assert_eq!(
        b.inspect("example.com/team/greeter:2")
            .expect("inspect")
            .summary
            .id,
        id
    );

    // Two names, one image: untag one, then delete the last.
    b.tag("example.com/team/greeter:2", "greeter:latest")
        .expect("tag");
    let removed = b.remove("greeter", false, &[]).expect("untag");
    assert_eq!(removed, vec![Removed::Untagged("greeter:latest".into())]);
    let in_use = [(id.clone(), "c1".to_string())];
    let err = b
        .remove("example.com/team/greeter:2", false, &in_use)
        .expect_err("in use");
    assert!(err.to_string().contains("c1"), "{err}");
    let removed = b
        .remove("example.com/team/greeter:2", false, &[])
        .expect("delete");
    assert!(removed.contains(&Removed::Deleted(id)), "{removed:?}");
    assert!(b.list().expect("list").is_empty());
    assert!(
        b.content().list().expect("blobs").is_empty(),
        "blobs collected"
    );
    assert!(
        b.snapshots().layers().expect("layers").is_empty(),
        "layers collected"
    );

    let err = b.inspect("nothing-here").expect_err("unknown");
    assert!(
        err.to_string().contains("No such image: nothing-here"),
        "{err}"
    );
}
