//! Round trips with the real Docker (Debian's docker.io, dockerd 20.10):
//! Berth's `save` loads into dockerd (and the image runs there), and
//! `docker save` output loads into Berth and gives a root filesystem.
//!
//! Each test starts its own containerd and dockerd: private sockets, data and
//! exec roots, daemon config file (no mirrors, nothing from /etc/docker) and
//! containerd namespace; the `docker` CLI gets a private config directory.
//! Everything is stopped, unmounted and removed on drop, also when an
//! assertion fails. Skipped (with a message) when dockerd is not installed or
//! the test is not running as root.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_engine::ImageService;
use berth_registry::ClientConfig;

const DOCKERD: &str = "/usr/sbin/dockerd";

fn service(dir: &Path) -> ImageService {
    let config = ClientConfig {
        // Never reach Docker Hub from tests.
        docker_hub_endpoint: "http://127.0.0.1:9".into(),
        docker_config: Some(dir.join("docker-config")),
        ..ClientConfig::default()
    };
    ImageService::open(dir, config).expect("open image service")
}

/// The docker.io CLI (same version as dockerd) when installed, else `docker`.
fn docker_cli() -> PathBuf {
    let debian = Path::new("/usr/bin/docker");
    if debian.is_file() {
        debian.to_path_buf()
    } else {
        PathBuf::from("docker")
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(3000);
    text.get(start..).unwrap_or(&text).to_string()
}

/// Sends `signal` to one process (by pid, nothing else).
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM, up to `grace` to exit, then SIGKILL.
fn stop(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child.id(), "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Lazily unmounts every mount point at or under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut points: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&p)
            .stderr(Stdio::null())
            .status();
    }
}

/// containerd shims started by our containerd: their command line names its
/// socket (`-address <sock>`).
fn shims_of(containerd_socket: &Path) -> Vec<u32> {
    let wanted = containerd_socket.as_os_str().to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.first().is_some_and(|a| a.contains("containerd-shim"))
                && args.iter().any(|a| a == &wanted)
        })
        .collect()
}

/// A private containerd + dockerd.
struct Dockerd {
    dir: tempfile::TempDir,
    containerd: Option<Child>,
    dockerd: Option<Child>,
    containerd_socket: PathBuf,
    socket: PathBuf,
    client_config: PathBuf,
}

impl Dockerd {
    /// `None` (after saying why) when dockerd cannot be used here at all.
    fn start_or_skip(test: &str) -> Option<Self> {
        if !Path::new(DOCKERD).is_file() {
            println!("SKIPPED {test}: {DOCKERD} is not installed (apt-get install docker.io)");
            return None;
        }
        if !is_root() {
            println!("SKIPPED {test}: dockerd needs root");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-dockerd-")
            .tempdir()
            .expect("tempdir");
        let mut d = Dockerd {
            containerd_socket: dir.path().join("containerd/c.sock"),
            socket: dir.path().join("docker.sock"),
            client_config: dir.path().join("client"),
            dir,
            containerd: None,
            dockerd: None,
        };
        d.spawn();
        Some(d)
    }

    fn spawn(&mut self) {
        let base = self.dir.path().to_path_buf();
        let ctr = base.join("containerd");
        std::fs::create_dir_all(&ctr).expect("containerd dir");
        std::fs::create_dir_all(&self.client_config).expect("client config dir");
        std::fs::write(self.client_config.join("config.json"), "{}").expect("client config");
        let ctr_config = ctr.join("config.toml");
        std::fs::write(
            &ctr_config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
                 [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
                root = ctr.join("root").display(),
                state = ctr.join("state").display(),
                sock = self.containerd_socket.display(),
            ),
        )
        .expect("containerd config");
        let ctr_log = ctr.join("containerd.log");
        self.containerd = Some(
            Command::new("containerd")
                .arg("--config")
                .arg(&ctr_config)
                .stdout(Stdio::null())
                .stderr(File::create(&ctr_log).expect("containerd log"))
                .spawn()
                .expect("containerd is installed (a dependency of docker.io)"),
        );
        self.wait_until("containerd", &ctr_log, |d| d.containerd_socket.exists());

        let daemon_config = base.join("daemon.json");
        // deprecated-key-path: dockerd 20.10 otherwise writes /etc/docker/key.json.
        std::fs::write(
            &daemon_config,
            format!(
                "{{\"deprecated-key-path\": \"{}\"}}",
                base.join("key.json").display()
            ),
        )
        .expect("daemon config");
        let log = base.join("dockerd.log");
        self.dockerd = Some(
            Command::new(DOCKERD)
                .arg("--data-root")
                .arg(base.join("data"))
                .arg("--exec-root")
                .arg(base.join("exec"))
                .arg("--pidfile")
                .arg(base.join("docker.pid"))
                .arg("--host")
                .arg(format!("unix://{}", self.socket.display()))
                .arg("--config-file")
                .arg(&daemon_config)
                .arg("--containerd")
                .arg(&self.containerd_socket)
                .args(["--containerd-namespace", "berth-test"])
                .args(["--containerd-plugins-namespace", "berth-test-plugins"])
                .args(["--bridge", "none", "--iptables=false", "--ip-masq=false"])
                .args(["--storage-driver", "overlay2", "--log-level", "warn"])
                .stdout(Stdio::null())
                .stderr(File::create(&log).expect("dockerd log"))
                .spawn()
                .expect("start dockerd"),
        );
        self.wait_until("dockerd", &log, Self::ping);
    }

    fn wait_until(&mut self, what: &str, log: &Path, ready: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ready(self) {
                return;
            }
            let exited = [&mut self.containerd, &mut self.dockerd]
                .into_iter()
                .flatten()
                .any(|c| matches!(c.try_wait(), Ok(Some(_))));
            assert!(!exited, "{what} exited early:\n{}", tail(log));
            assert!(
                Instant::now() < deadline,
                "{what} did not start:\n{}",
                tail(log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = UnixStream::connect(&self.socket) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /_ping HTTP/1.0\r\n\r\n").is_err() {
            return false;
        }
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200")
    }

    /// Runs the docker CLI against this daemon.
    fn docker(&self, args: &[&str]) -> Output {
        Command::new(docker_cli())
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", &self.client_config)
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null())
            .output()
            .expect("run the docker CLI")
    }

    /// Runs the docker CLI and insists that it succeeds; returns stdout.
    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {} failed ({}):\n{}{}\ndockerd log:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.dir.path().join("dockerd.log"))
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether this dockerd can run any container here: imports busybox as
    /// `berth-probe:1` and runs `true` in it. The reason when it cannot.
    fn can_run_containers(&self, scratch: &Path) -> Result<(), String> {
        let tar = busybox_rootfs_tar(scratch, "probe");
        self.docker_ok(&["import", tar.to_str().expect("utf-8 path"), "berth-probe:1"]);
        let out = self.docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "berth-probe:1",
            "/bin/busybox",
            "true",
        ]);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut d) = self.dockerd.take() {
            stop(&mut d, Duration::from_secs(20));
        }
        for pid in shims_of(&self.containerd_socket) {
            signal(pid, "KILL");
        }
        if let Some(mut c) = self.containerd.take() {
            stop(&mut c, Duration::from_secs(10));
        }
        // Shims outlive containerd; whatever is left of ours goes too.
        for pid in shims_of(&self.containerd_socket) {
            signal(pid, "KILL");
        }
        unmount_under(self.dir.path());
        // The TempDir removes the rest.
    }
}

/// A rootfs tar of busybox-static: bin/busybox, bin/sh -> busybox, etc/.
fn busybox_rootfs_tar(scratch: &Path, name: &str) -> PathBuf {
    let root = scratch.join(format!("{name}-rootfs"));
    std::fs::create_dir_all(root.join("bin")).expect("rootfs/bin");
    std::fs::create_dir_all(root.join("etc")).expect("rootfs/etc");
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("copy /bin/busybox (busybox-static)");
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).expect("bin/sh symlink");
    std::fs::write(root.join("etc/hostname"), "bb\n").expect("etc/hostname");
    let tar = scratch.join(format!("{name}-rootfs.tar"));
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
        .arg(&tar)
        .arg(".")
        .status()
        .expect("run tar");
    assert!(status.success(), "tar of the busybox rootfs failed");
    tar
}

#[tokio::test(flavor = "multi_thread")]
async fn berth_saved_image_loads_and_runs_in_docker() {
    let Some(dockerd) = Dockerd::start_or_skip("berth_saved_image_loads_and_runs_in_docker") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let images = service(&dir.path().join("berth"));
    let Some(id) = images
        .ensure_embedded_hello()
        .await
        .expect("embedded image")
    else {
        println!("SKIPPED: the embedded hello image is not built for this platform");
        return;
    };
    let archive = dir.path().join("hello.tar");
    {
        let mut out = BufWriter::new(File::create(&archive).expect("create archive"));
        images
            .save(&["hello:latest".to_string()], &mut out)
            .expect("berth save");
        out.flush().expect("flush archive");
    }

    let loaded = dockerd.docker_ok(&["load", "-i", archive.to_str().expect("utf-8 path")]);
    assert!(
        loaded.contains("Loaded image: hello:latest"),
        "docker load said: {loaded}"
    );
    let cmd = dockerd.docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Cmd}}",
        "hello:latest",
    ]);
    assert_eq!(cmd.trim(), r#"["/hello"]"#);
    // Docker's image id is the config digest: the same image on both sides.
    let docker_id = dockerd.docker_ok(&["image", "inspect", "--format", "{{.Id}}", "hello:latest"]);
    assert_eq!(docker_id.trim(), id.to_string());

    let run = dockerd.docker(&["run", "--rm", "--network", "none", "hello"]);
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    if run.status.success() {
        println!(
            "docker run --rm hello: {}",
            stdout.lines().next().unwrap_or("")
        );
        assert!(
            stdout.starts_with("Hello from Berth! I am pid 1 ")
                && stdout.contains("running in a container"),
            "unexpected greeting from docker run hello:\n{stdout}{stderr}"
        );
    } else {
        match dockerd.can_run_containers(dir.path()) {
            Err(why) => println!(
                "NOTE: docker run of the loaded image skipped: dockerd cannot run containers here ({why})"
            ),
            Ok(()) => panic!(
                "dockerd runs busybox but not Berth's hello image ({}):\n{stdout}{stderr}",
                run.status
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_saved_image_loads_into_berth() {
    let Some(dockerd) = Dockerd::start_or_skip("docker_saved_image_loads_into_berth") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let rootfs_tar = busybox_rootfs_tar(dir.path(), "bb");
    dockerd.docker_ok(&[
        "import",
        "--change",
        r#"CMD ["/bin/sh"]"#,
        rootfs_tar.to_str().expect("utf-8 path"),
        "bb:1",
    ]);
    let saved = dir.path().join("f2.tar");
    dockerd.docker_ok(&["save", "bb:1", "-o", saved.to_str().expect("utf-8 path")]);
    let docker_id = dockerd.docker_ok(&["image", "inspect", "--format", "{{.Id}}", "bb:1"]);

    let images = service(&dir.path().join("berth"));
    let names = images
        .load(BufReader::new(
            File::open(&saved).expect("open docker save output"),
        ))
        .await
        .expect("berth load of docker save output");
    assert!(
        names.iter().any(|n| n == "docker.io/library/bb:1"),
        "loaded names: {names:?}"
    );
    let details = images.inspect("bb:1").expect("inspect bb:1");
    assert_eq!(
        details.summary.id.to_string(),
        docker_id.trim(),
        "same image id as docker"
    );
    assert_eq!(details.layers.len(), 1);
    assert_eq!(
        details.config.config.as_ref().and_then(|c| c.cmd.clone()),
        Some(vec!["/bin/sh".to_string()])
    );

    let (mounts, _) = images
        .prepare_rootfs("ctr-bb", "bb:1")
        .await
        .expect("prepare rootfs");
    let target = dir.path().join("mnt");
    std::fs::create_dir(&target).expect("mount point");
    images
        .snapshots()
        .mount(&mounts, &target)
        .expect("mount rootfs");
    let busybox_len = std::fs::metadata(target.join("bin/busybox"))
        .map(|m| m.len())
        .ok();
    let sh = std::fs::read_link(target.join("bin/sh")).ok();
    berth_snapshot::unmount(&target).expect("unmount rootfs");
    images.remove_rootfs("ctr-bb").expect("remove rootfs");
    let expected_len = std::fs::metadata("/bin/busybox")
        .expect("/bin/busybox")
        .len();
    assert_eq!(busybox_len, Some(expected_len), "bin/busybox in the rootfs");
    assert_eq!(
        sh,
        Some(PathBuf::from("busybox")),
        "bin/sh symlink in the rootfs"
    );
}
