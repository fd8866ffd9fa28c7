//! Against a real `docker-registry` on 127.0.0.1: push, pull, resume, auth,
//! mirrors, platform selection, errors.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_image::{ContentStore, Digest, Reference};
use berth_registry::{
    parse_platform, ClientConfig, Progress, PushOptions, RegistryClient, RegistryError, SkipReason,
};
use common::*;
use tempfile::TempDir;

fn config(dir: &TempDir) -> ClientConfig {
    ClientConfig {
        docker_config: Some(dir.path().join("docker-config.json")),
        retry_base_delay: Duration::from_millis(10),
        // Nothing may leave the machine: docker.io itself is a closed port.
        docker_hub_endpoint: "http://127.0.0.1:1".into(),
        ..Default::default()
    }
}

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Progress>>>);

impl Events {
    fn push(&self, p: Progress) {
        if let Ok(mut v) = self.0.lock() {
            v.push(p);
        }
    }
    fn take(&self) -> Vec<Progress> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

fn skipped(events: &[Progress], want: &SkipReason) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Progress::LayerSkipped { reason, .. } if reason == want))
        .count()
}

async fn push_busybox(
    client: &RegistryClient,
    store: &ContentStore,
    target: &str,
    extra: Vec<Vec<u8>>,
) -> TestImage {
    let mut layers = vec![busybox_layer()];
    layers.extend(extra);
    let image = build_image(store, &layers, "amd64");
    client
        .push(
            &reference(target),
            &image.manifest,
            store,
            &PushOptions::default(),
            &|_| {},
        )
        .await
        .expect("push");
    image
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_by_tag_and_digest() {
    let reg = Registry::start();
    let tmp = TempDir::new().expect("tmp");
    let client = RegistryClient::new(config(&tmp)).expect("client");
    let src = store_in(&tmp.path().join("src"));
    let name = format!("{}/test/busybox:1.0", reg.host());
    let image = push_busybox(
        &client,
        &src,
        &name,
        vec![random_bytes(300_000, 1), random_bytes(200_000, 2)],
    )
    .await;

    // The registry sees a valid image.
    let inspect = skopeo(&["inspect", "--tls-verify=false", &format!("docker://{name}")]);
    let inspect: serde_json::Value = serde_json::from_str(&inspect).expect("skopeo json");
    assert_eq!(inspect["Digest"], image.manifest.to_string());
    assert_eq!(inspect["Layers"].as_array().map(Vec::len), Some(3));
    assert_eq!(inspect["Architecture"], "amd64");

    // Pull by tag.
    let dst = store_in(&tmp.path().join("dst"));
    let events = Events::default();
    let ev = events.clone();
    let pulled = client
        .pull(&reference(&name), None, &dst, &move |p| ev.push(p))
        .await
        .expect("pull by tag");
    assert_eq!(pulled.manifest.digest, image.manifest);
    assert_eq!(pulled.config.digest, image.config);
    assert!(pulled.index.is_none());
    let got: Vec<(Digest, u64)> = pulled
        .layers
        .iter()
        .map(|l| (l.descriptor.digest.clone(), l.descriptor.size))
        .collect();
    assert_eq!(got, image.layers);
    for (d, size) in &image.layers {
        assert_eq!(dst.info(d).expect("info"), Some(*size));
    }
    assert!(dst.info(&image.manifest).expect("info").is_some());
    assert!(dst.info(&image.config).expect("info").is_some());
    let report = dst.verify().expect("verify");
    assert!(report.is_consistent(), "{report:?}");
    let ev = events.take();
    assert!(matches!(ev.first(), Some(Progress::Resolved { .. })));
    assert!(matches!(ev.last(), Some(Progress::Done { .. })));
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Progress::LayerDone { .. }))
            .count(),
        3
    );

    // Again: nothing downloaded.
    let ev2 = events.clone();
    client
        .pull(&reference(&name), None, &dst, &move |p| ev2.push(p))
        .await
        .expect("re-pull");
    assert_eq!(skipped(&events.take(), &SkipReason::AlreadyPresent), 3);

    // By digest, into a fresh store.
    let by_digest = format!("{}/test/busybox@{}", reg.host(), image.manifest);
    let dst2 = store_in(&tmp.path().join("dst2"));
    let pulled = client
        .pull(&reference(&by_digest), None, &dst2, &|_| {})
        .await
        .expect("pull by digest");
    assert_eq!(pulled.manifest.digest, image.manifest);
    assert!(dst2.verify().expect("verify").is_consistent());

    // Listing.
    let tags = client
        .tags(&reg.host(), "test/busybox")
        .await
        .expect("tags");
    assert_eq!(tags, vec!["1.0".to_string()]);
    let repos = client.catalog(&reg.host()).await.expect("catalog");
    assert!(repos.contains(&"test/busybox".to_string()), "{repos:?}");

    // Tag an existing manifest.
    let d = client.tag(&reference(&name), "stable").await.expect("tag");
    assert_eq!(d, image.manifest);
    let mut tags = client
        .tags(&reg.host(), "test/busybox")
        .await
        .expect("tags");
    tags.sort();
    assert_eq!(tags, vec!["1.0".to_string(), "stable".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tag_and_repository() {
    let reg = Registry::start();
    let tmp = TempDir::new().expect("tmp");
    let client = RegistryClient::new(config(&tmp)).expect("client");
    let src = store_in(&tmp.path().join("src"));
    push_busybox(
        &client,
        &src,
        &format!("{}/test/app:v1", reg.host()),
        vec![],
    )
    .await;
    let dst = store_in(&tmp.path().join("dst"));

    let err = client
        .pull(
            &reference(&format!("{}/test/app:nope", reg.host())),
            None,
            &dst,
            &|_| {},
        )
        .await
        .expect_err("unknown tag");
    assert!(
        matches!(err, RegistryError::ManifestUnknown { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("nope"), "{err}");

    let err = client
        .pull(
            &reference(&format!("{}/test/missing:v1", reg.host())),
            None,
            &dst,
            &|_| {},
        )
        .await
        .expect_err("unknown repo");
    assert!(
        matches!(
            err,
            RegistryError::NameUnknown { .. } | RegistryError::ManifestUnknown { .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("test/missing"), "{err}");

    let err = client
        .tags(&reg.host(), "test/missing")
        .await
        .expect_err("tags of unknown repo");
    assert!(matches!(err, RegistryError::NameUnknown { .. }), "{err:?}");
    assert!(dst.verify().expect("verify").is_consistent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_push_exists_skip_and_cross_repo_mount() {
    let reg = Registry::start();
    let tmp = TempDir::new().expect("tmp");
    let client = RegistryClient::new(ClientConfig {
        chunked_upload_threshold: 1 << 20,
        chunk_size: 256 << 10,
        ..config(&tmp)
    })
    .expect("client");
    let src = store_in(&tmp.path().join("src"));
    let big = random_bytes(3 << 20, 42);
    let image = build_image(&src, &[busybox_layer(), big], "amd64");
    let first = reference(&format!("{}/team/one:latest", reg.host()));

    let events = Events::default();
    let ev = events.clone();
    client
        .push(
            &first,
            &image.manifest,
            &src,
            &PushOptions::default(),
            &move |p| ev.push(p),
        )
        .await
        .expect("chunked push");
    let ev = events.take();
    let big_digest = image.layers[1].0.clone();
    let chunks = ev
        .iter()
        .filter(|e| matches!(e, Progress::LayerProgress { digest, .. } if *digest == big_digest))
        .count();
    assert!(
        chunks >= 12,
        "expected one progress event per 256 KiB chunk, got {chunks}"
    );
    assert!(ev
        .iter()
        .any(|e| matches!(e, Progress::ManifestPushed { .. })));
    skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/team/one:latest", reg.host()),
    ]);

    // Pushing again uploads nothing.
    let ev2 = events.clone();
    client
        .push(
            &first,
            &image.manifest,
            &src,
            &PushOptions::default(),
            &move |p| ev2.push(p),
        )
        .await
        .expect("second push");
    assert_eq!(skipped(&events.take(), &SkipReason::ExistsInRegistry), 3);

    // Another repository of the same registry: every blob mounted.
    let second = reference(&format!("{}/team/two:latest", reg.host()));
    let ev3 = events.clone();
    let options = PushOptions {
        mount_from: vec!["team/one".into()],
    };
    client
        .push(&second, &image.manifest, &src, &options, &move |p| {
            ev3.push(p)
        })
        .await
        .expect("mount push");
    let mounted = SkipReason::Mounted {
        from: "team/one".into(),
    };
    assert_eq!(skipped(&events.take(), &mounted), 3);

    // What was pushed in chunks pulls back intact.
    let dst = store_in(&tmp.path().join("dst"));
    let pulled = client
        .pull(&second, None, &dst, &|_| {})
        .await
        .expect("pull");
    assert_eq!(pulled.manifest.digest, image.manifest);
    assert!(dst.verify().expect("verify").is_consistent());
}

/// Asserts what a resumed pull of a one-layer image asked for: the manifest
/// by HEAD only and no config (both were stored by the interrupted pull), and
/// one GET of the layer asking for exactly the bytes not on disk.
fn assert_resume_requests(requests: &[String], layer: &Digest, offset: u64) {
    let lines: Vec<&str> = requests
        .iter()
        .map(|r| r.lines().next().unwrap_or(""))
        .collect();
    let gets: Vec<&String> = requests
        .iter()
        .filter(|r| r.starts_with("GET ") && !r.starts_with("GET /v2/ "))
        .collect();
    assert_eq!(gets.len(), 1, "one GET (the layer) on resume: {lines:?}");
    let get = gets[0].to_ascii_lowercase();
    assert!(
        get.starts_with(&format!("get /v2/test/big/blobs/{layer} ")),
        "{lines:?}"
    );
    assert!(
        get.lines()
            .any(|l| l.trim() == format!("range: bytes={offset}-")),
        "the layer GET asks for bytes {offset}-: {get}"
    );
}

fn layer_started_offset(events: &[Progress], layer: &Digest) -> u64 {
    events
        .iter()
        .find_map(|e| match e {
            Progress::LayerStarted { digest, offset, .. } if digest == layer => Some(*offset),
            _ => None,
        })
        .expect("layer started")
}

/// Pushes a one-layer image of `size` random bytes as `test/big:latest`
/// straight to `reg` (not through any proxy).
async fn push_big(
    reg: &Registry,
    client: &RegistryClient,
    tmp: &TempDir,
    size: usize,
) -> TestImage {
    let src = store_in(&tmp.path().join("src"));
    let image = build_image(&src, &[random_bytes(size, 99)], "amd64");
    client
        .push(
            &reference(&format!("{}/test/big:latest", reg.host())),
            &image.manifest,
            &src,
            &PushOptions::default(),
            &|_| {},
        )
        .await
        .expect("push");
    image
}

/// Response bytes a resumed pull may fetch beyond the missing part of the
/// layer: HTTP response heads (the manifest HEAD and the blob GET).
const HEADS_ALLOWANCE: u64 = 2048;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_pull_resumes_with_range() {
    let reg = Registry::start();
    let tmp = TempDir::new().expect("tmp");
    let client = RegistryClient::new(config(&tmp)).expect("client");
    let size = 30 << 20;
    let image = push_big(&reg, &client, &tmp, size).await;
    let layer = image.layers[0].0.clone();

    // Cancelled (the future dropped) a third of the way through.
    let proxy = CountingProxy::start(reg.port).await;
    let name = format!("127.0.0.1:{}/test/big:latest", proxy.port);
    let dst = store_in(&tmp.path().join("dst"));
    let cut = Arc::new(tokio::sync::Notify::new());
    let notify = cut.clone();
    let stop_at = (size / 3) as u64;
    let on_progress = move |p: Progress| {
        if let Progress::LayerProgress { done, .. } = p {
            if done >= stop_at {
                notify.notify_one();
            }
        }
    };
    let target = reference(&name);
    let pull = client.pull(&target, None, &dst, &on_progress);
    tokio::select! {
        r = pull => panic!("pull finished before the cut: {r:?}"),
        _ = cut.notified() => {}
    }
    assert!(
        dst.info(&layer).expect("info").is_none(),
        "nothing committed"
    );

    // A new connection path for the resumed pull, so that only its bytes count.
    let proxy = CountingProxy::start(reg.port).await;
    let name = format!("127.0.0.1:{}/test/big:latest", proxy.port);
    let events = Events::default();
    let ev = events.clone();
    let pulled = client
        .pull(&reference(&name), None, &dst, &move |p| ev.push(p))
        .await
        .expect("resumed pull");
    assert_eq!(pulled.manifest.digest, image.manifest);
    let offset = layer_started_offset(&events.take(), &layer);
    // Every chunk handed over before the cancel was written: the cancelled
    // writer drains its queue.
    assert!(offset >= stop_at, "resumed from {offset}, cut at {stop_at}");
    let missing = size as u64 - offset;
    let fetched = proxy.bytes();
    assert!(
        fetched >= missing && fetched <= missing + HEADS_ALLOWANCE,
        "fetched {fetched} bytes on resume, {missing} were missing"
    );
    assert_resume_requests(&proxy.requests(), &layer, offset);
    assert!(dst.verify().expect("verify").is_consistent());
}

const KILLED_PULL_ENV: &str = "BERTH_TEST_KILLED_PULL";

/// Not a test of its own: `killed_pull_resumes_from_what_reached_the_disk`
/// runs it in a child process (so that it can SIGKILL it), with
/// `BERTH_TEST_KILLED_PULL=<reference> <store dir> <scratch dir>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a child process by killed_pull_resumes_from_what_reached_the_disk"]
async fn killed_pull_child() {
    let spec = std::env::var(KILLED_PULL_ENV)
        .expect("run by killed_pull_resumes_from_what_reached_the_disk");
    let [name, store, scratch]: [&str; 3] = spec
        .split(' ')
        .collect::<Vec<_>>()
        .try_into()
        .expect("<reference> <store> <scratch>");
    let client = RegistryClient::new(ClientConfig {
        docker_config: Some(std::path::Path::new(scratch).join("docker-config.json")),
        docker_hub_endpoint: "http://127.0.0.1:1".into(),
        ..Default::default()
    })
    .expect("client");
    let store = store_in(std::path::Path::new(store));
    let r = client.pull(&reference(name), None, &store, &|_| {}).await;
    panic!("the pull should have been killed while it waited for data, but it ended: {r:?}");
}

/// The daemon killed mid-pull (SIGKILL, no destructor runs): every byte the
/// process had received is on disk, and the next pull fetches only the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_pull_resumes_from_what_reached_the_disk() {
    let reg = Registry::start();
    let tmp = TempDir::new().expect("tmp");
    let client = RegistryClient::new(config(&tmp)).expect("client");
    let size = 24 << 20;
    let image = push_big(&reg, &client, &tmp, size).await;
    let layer = image.layers[0].0.clone();

    // The proxy delivers `limit` bytes (manifest, config and the first part
    // of the layer), then holds the connection open: the child pull waits.
    let limit = 9_000_000u64;
    let proxy = CountingProxy::start_gated(reg.port, limit).await;
    let name = format!("127.0.0.1:{}/test/big:latest", proxy.port);
    let dst_dir = tmp.path().join("dst");
    let scratch = TempDir::new().expect("scratch");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "killed_pull_child", "--ignored", "--nocapture"])
        .env(
            KILLED_PULL_ENV,
            format!("{name} {} {}", dst_dir.display(), scratch.path().display()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the child pull");
    let dst = store_in(&dst_dir);
    let on_disk = || {
        dst.list_ingests()
            .ok()
            .and_then(|l| l.into_iter().find(|i| i.digest == layer))
            .map(|i| i.offset)
            .unwrap_or(0)
    };
    // What the proxy let through before the layer's body: heads, manifest,
    // config. The layer's part is at least `limit` minus this.
    let before_layer = 8192;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !(proxy.bytes() == limit && on_disk() >= limit - before_layer) {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("the child pull exited ({status}): {err}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the received bytes did not reach the disk while the pull waited: proxy sent {} of {limit}, {} on disk",
            proxy.bytes(),
            on_disk()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("SIGKILL the child");
    let _ = child.wait();
    assert!(
        dst.info(&layer).expect("info").is_none(),
        "nothing committed"
    );
    let kept = on_disk();
    assert!(
        kept <= limit,
        "{kept} bytes on disk, only {limit} were sent"
    );

    let proxy = CountingProxy::start(reg.port).await;
    let name = format!("127.0.0.1:{}/test/big:latest", proxy.port);
    let events = Events::default();
    let ev = events.clone();
    let pulled = client
        .pull(&reference(&name), None, &dst, &move |p| ev.push(p))
        .await
        .expect("resumed pull");
    assert_eq!(pulled.manifest.digest, image.manifest);
    assert_eq!(layer_started_offset(&events.take(), &layer), kept);
    let missing = size as u64 - kept;
    let fetched = proxy.bytes();
    assert!(
        fetched >= missing && fetched <= missing + HEADS_ALLOWANCE,
        "fetched {fetched} bytes on resume, {missing} were missing"
    );
    assert_resume_requests(&proxy.requests(), &layer, kept);
    assert!(dst.list_ingests().expect("ingests").is_empty());
    assert!(dst.verify().expect("verify").is_consistent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_index_selects_platform() {
    let reg = Registry::start();
    let tmp = TempDir::new().expect("tmp");
    let (layout, digests) = multi_arch_layout(&[("amd64", None), ("arm64", Some("v8"))]);
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", layout.path().display()),
        &format!("docker://{}/multi/app:latest", reg.host()),
    ]);
    // skopeo compresses the layers on the way (so manifests change): take the
    // digests from what the registry now serves.
    let _ = digests;
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/multi/app:latest", reg.host()),
    ]);
    let index: serde_json::Value = serde_json::from_str(&raw).expect("index json");
    let digest_for = |arch: &str| -> Digest {
        index["manifests"]
            .as_array()
            .and_then(|m| m.iter().find(|e| e["platform"]["architecture"] == arch))
            .and_then(|e| e["digest"].as_str())
            .and_then(|d| Digest::parse(d).ok())
            .unwrap_or_else(|| panic!("no {arch} in {raw}"))
    };
    let digests = [digest_for("amd64"), digest_for("arm64")];
    let client = RegistryClient::new(config(&tmp)).expect("client");
    let name = reference(&format!("{}/multi/app:latest", reg.host()));
    let dst = store_in(&tmp.path().join("dst"));

    let amd = client
        .pull(
            &name,
            Some(&parse_platform("linux/amd64").expect("platform")),
            &dst,
            &|_| {},
        )
        .await
        .expect("amd64");
    assert_eq!(amd.manifest.digest, digests[0]);
    assert!(amd.index.is_some());
    let arm = client
        .pull(
            &name,
            Some(&parse_platform("linux/arm64/v8").expect("platform")),
            &dst,
            &|_| {},
        )
        .await
        .expect("arm64");
    assert_eq!(arm.manifest.digest, digests[1]);
    let arm_short = client
        .pull(
            &name,
            Some(&parse_platform("linux/aarch64").expect("platform")),
            &dst,
            &|_| {},
        )
        .await
        .expect("aarch64");
    assert_eq!(arm_short.manifest.digest, digests[1]);

    let err = client
        .pull(
            &name,
            Some(&parse_platform("linux/s390x").expect("platform")),
            &dst,
            &|_| {},
        )
        .await
        .expect_err("no s390x");
    let text = err.to_string();
    assert!(
        matches!(err, RegistryError::NoMatchingPlatform { .. }),
        "{err:?}"
    );
    assert!(
        text.contains("linux/amd64") && text.contains("linux/arm64"),
        "{text}"
    );
    assert!(dst.verify().expect("verify").is_consistent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_serves_docker_hub_pulls() {
    let reg = Registry::start();
    let tmp = TempDir::new().expect("tmp");
    let direct = RegistryClient::new(config(&tmp)).expect("client");
    let src = store_in(&tmp.path().join("src"));
    let image = push_busybox(
        &direct,
        &src,
        &format!("{}/library/busybox:latest", reg.host()),
        vec![],
    )
    .await;

    // A dead mirror first: falls back to the next one.
    let client = RegistryClient::new(ClientConfig {
        mirrors: vec![
            format!("http://127.0.0.1:{}", free_port()),
            format!("http://{}", reg.host()),
        ],
        retries: 0,
        ..config(&tmp)
    })
    .expect("client");
    let dst = store_in(&tmp.path().join("dst"));
    let pulled = client
        .pull(&reference("busybox"), None, &dst, &|_| {})
        .await
        .expect("pull via mirror");
    assert_eq!(pulled.manifest.digest, image.manifest);
    assert_eq!(pulled.endpoint, format!("http://{}", reg.host()));
    assert!(dst.verify().expect("verify").is_consistent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_login_and_errors() {
    let reg = Registry::start_htpasswd("alice", "wonderland");
    let tmp = TempDir::new().expect("tmp");
    let client = RegistryClient::new(config(&tmp)).expect("client");
    let src = store_in(&tmp.path().join("src"));
    let image = build_image(&src, &[busybox_layer()], "amd64");
    let name = reference(&format!("{}/private/app:v1", reg.host()));

    let err = client
        .push(
            &name,
            &image.manifest,
            &src,
            &PushOptions::default(),
            &|_| {},
        )
        .await
        .expect_err("anonymous push");
    assert!(
        matches!(
            err,
            RegistryError::Unauthorized {
                with_credentials: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no credentials"), "{err}");

    let err = client
        .login(&reg.host(), "alice", "wrong")
        .await
        .expect_err("bad password");
    assert!(
        matches!(
            err,
            RegistryError::Unauthorized {
                with_credentials: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!tmp.path().join("docker-config.json").exists());

    client
        .login(&reg.host(), "alice", "wonderland")
        .await
        .expect("login");
    let written = std::fs::read_to_string(tmp.path().join("docker-config.json")).expect("config");
    assert!(written.contains(&reg.host()), "{written}");
    client
        .push(
            &name,
            &image.manifest,
            &src,
            &PushOptions::default(),
            &|_| {},
        )
        .await
        .expect("push with credentials");
    let dst = store_in(&tmp.path().join("dst"));
    client
        .pull(&name, None, &dst, &|_| {})
        .await
        .expect("pull with credentials");

    // Stale credentials in the file: the error says they were used.
    std::fs::write(
        tmp.path().join("docker-config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6bm9wZQ=="}}}}}}"#,
            reg.host()
        ),
    )
    .expect("write config");
    let fresh = RegistryClient::new(config(&tmp)).expect("client");
    let err = fresh
        .pull(&name, None, &store_in(&tmp.path().join("dst2")), &|_| {})
        .await
        .expect_err("wrong stored password");
    assert!(
        matches!(
            err,
            RegistryError::Unauthorized {
                with_credentials: true,
                ..
            }
        ),
        "{err:?}"
    );

    assert!(client.logout(&reg.host()).await.expect("logout"));
    let after = std::fs::read_to_string(tmp.path().join("docker-config.json")).expect("config");
    assert!(!after.contains(&reg.host()), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_helper_supplies_credentials() {
    let reg = Registry::start_htpasswd("bob", "builder");
    let tmp = TempDir::new().expect("tmp");
    let helpers = tmp.path().join("helpers");
    std::fs::create_dir_all(&helpers).expect("mkdir");
    let script = helpers.join("docker-credential-test");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n[ \"$server\" = \"{}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\necho '{{\"ServerURL\":\"'$server'\",\"Username\":\"bob\",\"Secret\":\"builder\"}}'\n",
            reg.host()
        ),
    )
    .expect("script");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .expect("chmod");
    std::fs::write(
        tmp.path().join("docker-config.json"),
        r#"{"credsStore":"test"}"#,
    )
    .expect("config");
    let client = RegistryClient::new(ClientConfig {
        helper_dirs: vec![helpers],
        ..config(&tmp)
    })
    .expect("client");
    let src = store_in(&tmp.path().join("src"));
    let image = build_image(&src, &[busybox_layer()], "amd64");
    let name = reference(&format!("{}/helper/app:v1", reg.host()));
    client
        .push(
            &name,
            &image.manifest,
            &src,
            &PushOptions::default(),
            &|_| {},
        )
        .await
        .expect("push with helper credentials");
    let dst = store_in(&tmp.path().join("dst"));
    let pulled = client.pull(&name, None, &dst, &|_| {}).await.expect("pull");
    assert_eq!(pulled.manifest.digest, image.manifest);
}

/// A Docker schema 2 manifest whose layers are one ordinary layer and two
/// foreign ones (`urls`, not in the registry): one reachable, one not.
fn foreign_manifest(
    store: &ContentStore,
    normal: &[u8],
    reachable: (&[u8], String),
    unreachable: &str,
) -> Digest {
    let desc = |media_type: &str, bytes: &[u8], urls: Option<Vec<String>>| {
        let mut d = serde_json::json!({
            "mediaType": media_type,
            "digest": Digest::sha256_of(bytes).to_string(),
            "size": bytes.len(),
        });
        if let Some(urls) = urls {
            d["urls"] = serde_json::json!(urls);
        }
        d
    };
    let gone = random_bytes(1000, 42);
    let layers = [normal, reachable.0, &gone];
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| Digest::sha256_of(l).to_string()).collect::<Vec<_>>(),
        },
    }))
    .expect("config json");
    let foreign = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": desc("application/vnd.docker.container.image.v1+json", &config, None),
        "layers": [
            desc("application/vnd.docker.image.rootfs.diff.tar.gzip", normal, None),
            desc(foreign, reachable.0, Some(vec![reachable.1])),
            desc(foreign, &gone, Some(vec![unreachable.to_string()])),
        ],
    }))
    .expect("manifest json");
    for blob in [normal, &config, &manifest] {
        store.write_all(blob, None).expect("write blob");
    }
    Digest::sha256_of(&manifest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_layers_are_fetched_from_their_urls_or_skipped() {
    // The registry refuses manifests with foreign URLs unless they are allowed.
    let reg = Registry::start_with(
        "validation:\n  manifests:\n    urls:\n      allow:\n        - '^http://127\\.0\\.0\\.1:'\n",
    );
    let tmp = TempDir::new().expect("tmp");
    let client = RegistryClient::new(config(&tmp)).expect("client");
    let src = store_in(&tmp.path().join("src"));

    // The reachable foreign layer lives elsewhere: another repository's blob URL.
    let elsewhere = random_bytes(50_000, 41);
    let holder = push_busybox(
        &client,
        &src,
        &format!("{}/test/holder:1", reg.host()),
        vec![elsewhere.clone()],
    )
    .await;
    let elsewhere_digest = Digest::sha256_of(&elsewhere);
    assert!(holder.layers.iter().any(|(d, _)| *d == elsewhere_digest));
    let url = format!(
        "http://{}/v2/test/holder/blobs/{elsewhere_digest}",
        reg.host()
    );
    let unreachable = "http://127.0.0.1:1/never-there";
    let normal = busybox_layer();
    let manifest = foreign_manifest(&src, &normal, (&elsewhere, url), unreachable);

    // Push sends the ordinary layer, never a foreign one.
    let name = format!("{}/test/foreign:1", reg.host());
    client
        .push(
            &reference(&name),
            &manifest,
            &src,
            &PushOptions::default(),
            &|_| {},
        )
        .await
        .expect("push");

    let dst = store_in(&tmp.path().join("dst"));
    let events = Events::default();
    let ev = events.clone();
    let pulled = client
        .pull(&reference(&name), None, &dst, &move |p| ev.push(p))
        .await
        .expect("a pull with an unreachable foreign layer still succeeds");
    assert_eq!(pulled.manifest.digest, manifest);
    let layers: Vec<(Digest, bool)> = pulled
        .layers
        .iter()
        .map(|l| (l.descriptor.digest.clone(), l.skipped.is_some()))
        .collect();
    assert_eq!(layers.len(), 3);
    assert_eq!(layers[0], (Digest::sha256_of(&normal), false));
    assert_eq!(layers[1], (elsewhere_digest.clone(), false));
    assert!(
        layers[2].1,
        "the unreachable foreign layer is marked skipped"
    );

    // The fetched ones are in the store, verified; the skipped one left nothing behind.
    assert_eq!(
        dst.read_all(&elsewhere_digest).expect("foreign blob"),
        elsewhere
    );
    assert_eq!(dst.info(&layers[2].0).expect("info"), None);
    assert!(dst.list_ingests().expect("ingests").is_empty());
    let reason = pulled.layers[2]
        .skipped
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(
        reason.starts_with("foreign layer skipped") && reason.contains(unreachable),
        "{reason}"
    );
    let events = events.take();
    let skips: Vec<&Progress> = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Progress::LayerSkipped {
                    reason: SkipReason::Foreign { .. },
                    ..
                }
            )
        })
        .collect();
    assert_eq!(skips.len(), 1, "{events:?}");
}
