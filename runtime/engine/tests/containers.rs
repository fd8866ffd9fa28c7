//! The container service end to end, as root: real monitors, real runtime
//! containers, the embedded `hello` image and a busybox image imported from
//! the host's static busybox. Each test has its own data and runtime roots
//! and cleans up (monitors, runtime containers, mounts) even on failure.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use berth_engine::containers::{
    attach, ContainerCreate, ContainerError, ContainerService, ExecConfig, ListFilters, LogOptions,
    MonitorCommand, RestartPolicy, ServiceConfig, Status, WaitCondition,
};
use berth_engine::ImageService;
use berth_registry::ClientConfig;

struct Env {
    dir: tempfile::TempDir,
    images: Arc<ImageService>,
    service: Option<ContainerService>,
    rt: tokio::runtime::Runtime,
}

fn config(root: &Path) -> ServiceConfig {
    ServiceConfig {
        root: root.join("engine"),
        runtime_root: root.join("run"),
        monitor: MonitorCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_berth-monitor")),
            args: Vec::new(),
        },
        // Bridge networking has its own tests (runtime/api/tests/docker_network.rs).
        network: None,
    }
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = ClientConfig {
            docker_hub_endpoint: "http://127.0.0.1:9".into(),
            docker_config: Some(dir.path().join("docker-config")),
            ..ClientConfig::default()
        };
        let images =
            Arc::new(ImageService::open(&dir.path().join("images"), registry).expect("images"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(images.ensure_embedded_hello())
            .expect("hello image");
        let service = ContainerService::open(config(dir.path()), images.clone()).expect("service");
        Env {
            dir,
            images,
            service: Some(service),
            rt,
        }
    }

    fn svc(&self) -> &ContainerService {
        self.service.as_ref().expect("service")
    }

    fn busybox(&self) {
        let root = self.dir.path().join("bb-rootfs");
        std::fs::create_dir_all(root.join("bin")).expect("mkdir");
        for d in ["etc", "tmp", "proc", "sys", "dev"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("group");
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
        for applet in [
            "sh", "sleep", "echo", "cat", "head", "tail", "true", "false", "yes", "tr", "id", "ls",
            "ps",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("link");
        }
        let tar = self.dir.path().join("bb.tar");
        let ok = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("tar")
            .success();
        assert!(ok, "tar failed");
        let opts = berth_image::archive::ImportOptions {
            name: Some("docker.io/library/busybox:latest".into()),
            cmd: Some(vec!["sh".into()]),
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        };
        self.images
            .import(std::fs::File::open(&tar).expect("open tar"), &opts)
            .expect("import busybox");
    }

    fn create(&self, req: ContainerCreate) -> Result<String, ContainerError> {
        self.rt.block_on(self.svc().create(req))
    }

    fn run(&self, req: ContainerCreate) -> String {
        let id = self.create(req).expect("create");
        self.rt.block_on(self.svc().start(&id)).expect("start");
        id
    }

    fn wait(&self, id: &str, cond: WaitCondition) -> i32 {
        self.rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(60), self.svc().wait(id, cond)).await
            })
            .expect("wait timed out")
            .expect("wait")
    }

    fn status(&self, id: &str) -> Status {
        self.svc().inspect(id).expect("inspect").record.state.status
    }

    fn log_lines(&self, id: &str, opts: LogOptions) -> Vec<String> {
        let mut rx = self.svc().logs(id, opts).expect("logs");
        let mut out = Vec::new();
        while let Some(e) = rx.blocking_recv() {
            out.push(String::from_utf8_lossy(&e.render(false)).into_owned());
        }
        out
    }
}

impl Drop for Env {
    /// Kills monitors and containers, unmounts, even when a test failed.
    fn drop(&mut self) {
        let root = self.dir.path().to_path_buf();
        let containers = root.join("engine/containers");
        let runtime = berth_runtime::container::Runtime::new(root.join("run"), false);
        if let Ok(entries) = std::fs::read_dir(&containers) {
            for e in entries.flatten() {
                let dir = e.path();
                let id = e.file_name().to_string_lossy().into_owned();
                if let Ok(r) = berth_engine::containers::store::read_record(&dir) {
                    if r.state.monitor_pid > 0
                        && berth_engine::containers::store::process_alive(
                            r.state.monitor_pid,
                            r.state.monitor_start_time,
                        )
                    {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(r.state.monitor_pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                if let Ok(c) = runtime.load(&id) {
                    let _ = c.delete(true);
                }
                let _ = berth_snapshot::unmount(&dir.join("rootfs"));
            }
        }
        self.service = None;
    }
}

fn hello() -> ContainerCreate {
    ContainerCreate {
        image: "hello".into(),
        ..Default::default()
    }
}

fn busybox(cmd: &[&str]) -> ContainerCreate {
    ContainerCreate {
        image: "busybox".into(),
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

fn all_streams() -> LogOptions {
    LogOptions {
        stdout: true,
        stderr: true,
        ..Default::default()
    }
}

#[test]
fn hello_runs_logs_and_is_removed() {
    let env = Env::new();
    let id = env.run(ContainerCreate {
        name: Some("greeter".into()),
        ..hello()
    });
    assert_eq!(env.wait(&id, WaitCondition::NotRunning), 0);
    let info = env.svc().inspect("greeter").expect("inspect by name");
    assert_eq!(info.record.id, id);
    assert_eq!(info.record.name, "/greeter");
    assert_eq!(info.record.state.status, Status::Exited);
    assert_eq!(info.record.state.exit_code, 0);
    assert!(!info.record.state.oom_killed);
    assert!(info.record.state.finished_at >= info.record.state.started_at);
    assert!(env.svc().inspect(&id[..12]).is_ok(), "prefix lookup");

    let raw = std::fs::read_to_string(&info.record.log_path).expect("json log");
    assert!(raw.contains("\"stream\":\"stdout\""), "{raw}");
    let lines = env.log_lines(&id, all_streams());
    let text = lines.concat();
    assert!(text.contains("pid 1"), "greeting with pid 1: {text}");
    assert!(text.contains(&id[..12]), "hostname is the short id: {text}");

    let tail = env.log_lines(
        &id,
        LogOptions {
            tail: Some(1),
            ..all_streams()
        },
    );
    assert_eq!(tail.len(), 1);
    assert_eq!(tail.last(), lines.last());
    let future = env.log_lines(
        &id,
        LogOptions {
            since: Some(i64::MAX / 2),
            ..all_streams()
        },
    );
    assert!(future.is_empty());
    let past = env.log_lines(
        &id,
        LogOptions {
            until: Some(1),
            ..all_streams()
        },
    );
    assert!(past.is_empty());
    let mut rx = env
        .svc()
        .logs(
            &id,
            LogOptions {
                timestamps: true,
                follow: true,
                ..all_streams()
            },
        )
        .expect("logs");
    let first = rx.blocking_recv().expect("an entry");
    let rendered = String::from_utf8_lossy(&first.render(true)).into_owned();
    assert!(
        rendered.starts_with(&first.time) && first.time.ends_with('Z'),
        "{rendered}"
    );
    // Following a stopped container ends.
    while rx.blocking_recv().is_some() {}

    // Docker's 304 on start of a stopped container's stop.
    assert!(matches!(
        env.rt.block_on(env.svc().stop(&id, Some(1))),
        Err(ContainerError::AlreadyStopped(_))
    ));
    let list = env
        .svc()
        .list(
            true,
            &ListFilters {
                status: vec!["exited".into()],
                ancestor: vec!["hello".into()],
                ..Default::default()
            },
        )
        .expect("list");
    assert_eq!(list.len(), 1);
    assert!(env
        .svc()
        .list(false, &ListFilters::default())
        .expect("list")
        .is_empty());

    let rootfs = Path::new(&info.dir).join("rootfs");
    env.rt
        .block_on(env.svc().remove(&id, false, false))
        .expect("remove");
    assert!(!rootfs.exists());
    assert!(matches!(
        env.svc().inspect(&id),
        Err(ContainerError::NoSuchContainer(_))
    ));
    // The name is free again.
    let again = env
        .create(ContainerCreate {
            name: Some("greeter".into()),
            ..hello()
        })
        .expect("name reusable");
    env.rt
        .block_on(env.svc().remove(&again, false, false))
        .expect("remove");
}

#[test]
fn unknown_image_and_bad_parameters() {
    let env = Env::new();
    assert!(matches!(
        env.create(ContainerCreate {
            image: "nope:latest".into(),
            ..Default::default()
        }),
        Err(ContainerError::ImageNotFound(_))
    ));
    assert!(matches!(
        env.create(ContainerCreate {
            name: Some("-bad".into()),
            ..hello()
        }),
        Err(ContainerError::InvalidParameter(_))
    ));
    let mut c = hello();
    c.host_config.cap_add = vec!["NOT_A_CAP".into()];
    assert!(matches!(
        env.create(c),
        Err(ContainerError::InvalidParameter(_))
    ));
    // Nothing was left behind.
    assert!(env
        .svc()
        .list(true, &ListFilters::default())
        .expect("list")
        .is_empty());
}

#[test]
fn concurrent_creates_with_one_name() {
    let env = Env::new();
    let svc = env.svc().clone();
    let results: Vec<Result<String, ContainerError>> = env.rt.block_on(async {
        let mut handles = Vec::new();
        for _ in 0..4 {
            let svc = svc.clone();
            handles.push(tokio::spawn(async move {
                svc.create(ContainerCreate {
                    name: Some("same".into()),
                    ..hello()
                })
                .await
            }));
        }
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("join"));
        }
        out
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    assert!(results
        .iter()
        .filter(|r| r.is_err())
        .all(|r| matches!(r, Err(ContainerError::NameConflict(..)))));
    let err = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("is already in use by container"), "{err}");
}

#[test]
fn long_running_stop_kill_pause_remove() {
    let env = Env::new();
    env.busybox();
    let id = env.run(busybox(&["sleep", "60"]));
    assert_eq!(env.status(&id), Status::Running);
    let pid = env.svc().inspect(&id).expect("inspect").record.state.pid;
    assert!(pid > 0);
    assert!(matches!(
        env.rt.block_on(env.svc().start(&id)),
        Err(ContainerError::AlreadyRunning(_))
    ));

    // `start` returns once the container's init is told to exec, as runc's does; until the
    // exec, top shows the init still as the monitor's fork.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let top = env.svc().top(&id).expect("top");
        let shown = top
            .processes
            .iter()
            .any(|p| p.last().is_some_and(|c| c.contains("sleep 60")));
        if shown {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{top:?}");
        std::thread::yield_now();
    }
    let stats = env.svc().stats(&id).expect("stats");
    assert!(stats.memory.is_some() || stats.pids.is_some());

    env.svc().pause(&id).expect("pause");
    assert_eq!(env.status(&id), Status::Paused);
    env.svc().unpause(&id).expect("unpause");
    assert_eq!(env.status(&id), Status::Running);

    assert!(matches!(
        env.rt.block_on(env.svc().remove(&id, false, false)),
        Err(ContainerError::RemoveRunning(_))
    ));

    // sleep ignores nothing: SIGTERM kills it (143); 137 if it came to SIGKILL.
    env.rt.block_on(env.svc().stop(&id, Some(2))).expect("stop");
    let info = env.svc().inspect(&id).expect("inspect");
    assert_eq!(info.record.state.status, Status::Exited);
    assert!(
        [143, 137].contains(&info.record.state.exit_code),
        "{:?}",
        info.record.state
    );

    // Start again, then kill.
    env.rt.block_on(env.svc().start(&id)).expect("restart");
    assert_eq!(env.status(&id), Status::Running);
    env.rt
        .block_on(env.svc().kill(&id, Some("KILL")))
        .expect("kill");
    // A SIGKILL returns once the container is down: a start right away must work.
    assert_eq!(env.status(&id), Status::Exited);
    assert_eq!(env.wait(&id, WaitCondition::NotRunning), 137);
    assert!(matches!(
        env.rt.block_on(env.svc().kill(&id, None)),
        Err(ContainerError::NotRunning(_))
    ));

    // Forced removal of a running container.
    let id2 = env.run(busybox(&["sleep", "60"]));
    env.rt
        .block_on(env.svc().remove(&id2, true, false))
        .expect("force remove");
    assert!(env.svc().inspect(&id2).is_err());
    env.rt
        .block_on(env.svc().remove(&id, false, false))
        .expect("remove");
}

/// A start right after the container stopped (the exit is recorded, the
/// monitor of that run is still cleaning up) waits for that monitor instead
/// of failing with `AlreadyRunning`: after `stop`, and after an exit of its
/// own seen through `wait`, which answers as soon as the exit is recorded.
#[test]
fn start_right_after_stop_or_exit_waits_for_the_previous_monitor() {
    let env = Env::new();
    env.busybox();
    let id = env.run(busybox(&["sleep", "60"]));
    for i in 0..10 {
        env.rt
            .block_on(env.svc().stop(&id, Some(0)))
            .unwrap_or_else(|e| panic!("stop {i}: {e}"));
        env.rt
            .block_on(env.svc().start(&id))
            .unwrap_or_else(|e| panic!("start {i} after stop: {e}"));
        assert_eq!(env.status(&id), Status::Running, "round {i}");
    }
    env.rt.block_on(env.svc().stop(&id, Some(0))).expect("stop");

    let quick = env.run(busybox(&["echo", "ran"]));
    for i in 0..20 {
        assert_eq!(env.wait(&quick, WaitCondition::NotRunning), 0, "round {i}");
        env.rt
            .block_on(env.svc().start(&quick))
            .unwrap_or_else(|e| panic!("start {i} after exit: {e}"));
    }
    env.wait(&quick, WaitCondition::NotRunning);
    let lines = env.log_lines(&quick, all_streams());
    assert_eq!(lines.len(), 21, "every start ran the command: {lines:?}");
}

#[test]
fn exec_output_and_exit_code() {
    let env = Env::new();
    env.busybox();
    let id = env.run(busybox(&["sleep", "60"]));
    let exec = env
        .svc()
        .exec_create(
            &id,
            ExecConfig {
                cmd: vec!["echo".into(), "hi".into()],
                ..Default::default()
            },
        )
        .expect("exec create");
    let mut session = env.svc().exec_start(&exec).expect("exec start");
    let mut out = String::new();
    session
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert_eq!(session.wait().expect("wait"), 0);
    assert_eq!(out, "hi\n");
    let info = env.svc().exec_inspect(&exec).expect("exec inspect");
    assert_eq!(info.exit_code, Some(0));
    assert!(!info.running);

    let exec = env
        .svc()
        .exec_create(
            &id,
            ExecConfig {
                cmd: vec!["sh".into(), "-c".into(), "echo oops >&2; exit 3".into()],
                ..Default::default()
            },
        )
        .expect("exec create");
    let mut session = env.svc().exec_start(&exec).expect("exec start");
    let mut err = String::new();
    session
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert_eq!(session.wait().expect("wait"), 3);
    assert_eq!(err, "oops\n");
    env.rt
        .block_on(env.svc().remove(&id, true, false))
        .expect("remove");
}

#[test]
fn restart_policy_on_failure() {
    let env = Env::new();
    env.busybox();
    let mut req = busybox(&["sh", "-c", "echo run; exit 1"]);
    req.host_config.restart_policy = RestartPolicy {
        name: "on-failure".into(),
        maximum_retry_count: 2,
    };
    let id = env.run(req);
    // Wait for the final exit (restarting counts as running).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = env.svc().inspect(&id).expect("inspect").record;
        if r.state.status == Status::Exited && r.state.monitor_pid == 0 {
            assert_eq!(r.state.restart_count, 2);
            assert_eq!(r.state.exit_code, 1);
            assert_eq!(r.state.exits, 3);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", r.state);
        std::thread::sleep(Duration::from_millis(50));
    }
    let runs = env
        .log_lines(&id, all_streams())
        .iter()
        .filter(|l| l.as_str() == "run\n")
        .count();
    assert_eq!(runs, 3);
}

#[test]
fn oom_killed_is_recorded() {
    let env = Env::new();
    env.busybox();
    // tail keeps the whole (newline-free) input in memory.
    let mut req = busybox(&["sh", "-c", "head -c 200000000 /dev/zero | tail"]);
    req.host_config.memory = 32 * 1024 * 1024;
    let id = env.run(req);
    let code = env.wait(&id, WaitCondition::NotRunning);
    let state = env.svc().inspect(&id).expect("inspect").record.state;
    assert!(state.oom_killed, "exit {code}, {state:?}");
}

#[test]
fn live_restore_adopts_running_containers() {
    let env = Env::new();
    env.busybox();
    let mut env = env;
    let id = env.run(busybox(&["sleep", "60"]));
    let pid = env.svc().inspect(&id).expect("inspect").record.state.pid;
    // The daemon goes away; the monitor and the container stay.
    env.service = None;
    let service =
        ContainerService::open(config(env.dir.path()), env.images.clone()).expect("reopen");
    env.service = Some(service);
    let running = env
        .svc()
        .list(false, &ListFilters::default())
        .expect("list");
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].state.pid, pid);
    assert_eq!(running[0].state.status, Status::Running);
    // The container dies: the new service sees it through the monitor.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill container");
    assert_eq!(env.wait(&id, WaitCondition::NotRunning), 137);

    // A container whose monitor died is marked exited on the next open.
    let id2 = env.run(busybox(&["sleep", "60"]));
    let r = env.svc().inspect(&id2).expect("inspect").record;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(r.state.monitor_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill monitor");
    std::thread::sleep(Duration::from_millis(200));
    env.service = None;
    env.service =
        Some(ContainerService::open(config(env.dir.path()), env.images.clone()).expect("reopen"));
    let r = env.svc().inspect(&id2).expect("inspect").record;
    assert_eq!(r.state.status, Status::Exited);
    assert_eq!(r.state.exit_code, 137);
}

#[test]
fn logs_rotate_at_the_cap() {
    let env = Env::new();
    env.busybox();
    let cap = 64 * 1024;
    let mut req = busybox(&[
        "sh",
        "-c",
        "i=0; while [ $i -lt 4000 ]; do echo line-$i-0123456789012345678901234567890123456789; i=$((i+1)); done",
    ]);
    req.host_config.log_max_size = Some(cap);
    let id = env.run(req);
    assert_eq!(env.wait(&id, WaitCondition::NotRunning), 0);
    let info = env.svc().inspect(&id).expect("inspect");
    let dir = Path::new(&info.dir);
    let logs: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("-json.log"))
        .collect();
    assert!(!logs.is_empty() && logs.len() <= 3, "{logs:?}");
    for l in &logs {
        let len = l.metadata().expect("meta").len();
        assert!(len <= cap, "{:?} is {len} bytes", l.path());
    }
    // The newest lines are still readable, in order.
    let tail = env.log_lines(
        &id,
        LogOptions {
            tail: Some(2),
            ..all_streams()
        },
    );
    assert_eq!(tail.len(), 2);
    assert!(tail[1].starts_with("line-3999-"), "{tail:?}");
}

#[test]
fn attach_before_start_gets_stdin_and_output() {
    let env = Env::new();
    env.busybox();
    let mut req = busybox(&["cat"]);
    req.open_stdin = true;
    req.stdin_once = true;
    let id = env.create(req).expect("create");
    // Registered before start, connected by it.
    let pending = env.svc().attach(&id).expect("attach");
    env.rt.block_on(env.svc().start(&id)).expect("start");
    let mut stream = env.rt.block_on(pending.connected()).expect("attach");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    attach::write_frame(&mut stream, attach::STDIN, b"hello\n").expect("stdin");
    attach::write_frame(&mut stream, attach::STDIN, b"").expect("close stdin");
    let mut out = Vec::new();
    let mut exit = None;
    while let Some((kind, payload)) = attach::read_frame(&mut stream).expect("frame") {
        match kind {
            attach::STDOUT => out.extend_from_slice(&payload),
            attach::EXIT => {
                exit = payload
                    .get(..4)
                    .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            }
            _ => {}
        }
    }
    assert_eq!(out, b"hello\n");
    assert_eq!(exit, Some(0));
    assert_eq!(env.wait(&id, WaitCondition::NotRunning), 0);
}

/// `list` answers from memory: whatever was written before it was called —
/// by the daemon or by a monitor, another process — shows, however quickly
/// the calls follow each other.
#[test]
fn list_shows_every_change_written_before_it() {
    let env = Env::new();
    env.busybox();
    let listed = |id: &str| {
        env.svc()
            .list(true, &ListFilters::default())
            .expect("list")
            .into_iter()
            .find(|r| r.id == id)
    };
    let id = env.run(busybox(&["sleep", "60"]));
    for i in 0..10 {
        let r = listed(&id).expect("listed");
        assert_eq!(r.state.status, Status::Running, "round {i}");
        let pid = r.state.pid;
        env.rt
            .block_on(env.svc().kill(&id, Some("KILL")))
            .expect("kill");
        assert_eq!(env.wait(&id, WaitCondition::NotRunning), 137);
        let r = listed(&id).expect("listed");
        assert_eq!(r.state.status, Status::Exited, "round {i}");
        assert_eq!(r.state.exit_code, 137, "round {i}");
        env.rt.block_on(env.svc().start(&id)).expect("start");
        let r = listed(&id).expect("listed");
        assert_eq!(r.state.status, Status::Running, "round {i}");
        assert_ne!(r.state.pid, pid, "round {i}: a new run");
    }
    let name = format!("listed-{}", &id[..12]);
    env.svc().rename(&id, &name).expect("rename");
    assert_eq!(listed(&id).expect("listed").name, format!("/{name}"));
    env.rt
        .block_on(env.svc().remove(&id, true, false))
        .expect("remove");
    assert!(listed(&id).is_none(), "removed, still listed");
}
