//! Containers: create from an image, supervise through a per-container
//! monitor process, stop, remove, logs, exec — with Docker's semantics.
//!
//! [`ContainerService`] is the daemon's side. Every container has a
//! directory `<root>/containers/<id>/` (see [`store`] for the layout) with
//! its record, its OCI bundle and its logs. While it runs, a monitor process
//! of its own ([`monitor`], the `berth-monitor` binary) is its parent, holds
//! its stdio, writes its logs, serves attach, records its exit and applies
//! the restart policy: containers keep running when the daemon stops, and
//! [`ContainerService::open`] adopts them again.
//!
//! Networking is not done yet: `bridge` (the default) is a new network
//! namespace with only loopback; `host` shares the host's; `none` is like
//! bridge.

mod archive;
pub mod attach;
mod cache;
mod error;
mod events;
mod exec;
mod health;
mod init;
pub mod logs;
pub mod monitor;
pub mod mounts;
mod names;
mod network;
mod spec;
mod stats;
pub mod store;
mod types;
mod wait;

pub use archive::{ArchiveSource, PathStat};
pub use error::network_status;
pub use error::ContainerError;
use exec::ExecRecord;
pub use exec::ExecSession;
pub use health::{Health, HealthResult, HealthStatus};
pub use mounts::{MountPoint, MountSpec};
pub use network::{
    parse_port_key, ContainerNetwork, EndpointOptions, HostBinding, NetworkConfig, Networking,
};
pub use stats::{BlkioEntry, NetDev, StatsSample};
pub use types::*;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_runtime::container::Runtime;
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};

use crate::images::{ImageError, ImageService};
use names::Names;

type Result<T, E = ContainerError> = std::result::Result<T, E>;

/// How long a monitor may take, after the container's exit is recorded, to
/// delete the runtime's container and go.
const MONITOR_FINISH: Duration = Duration::from_secs(10);

/// How to start a monitor: `program args… run <dir> <runtime-root>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorCommand {
    pub program: PathBuf,
    /// Arguments before the monitor's own (e.g. a hidden subcommand when the
    /// daemon's binary doubles as the monitor).
    pub args: Vec<String>,
}

impl Default for MonitorCommand {
    /// `berth-monitor` next to the running executable.
    /// (or one directory up, where cargo puts binaries when the caller is a
    /// test executable in `target/<profile>/deps`).
    fn default() -> Self {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf));
        let program = exe_dir
            .iter()
            .flat_map(|d| [d.join("berth-monitor"), d.join("../berth-monitor")])
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("berth-monitor"));
        Self {
            program,
            args: Vec::new(),
        }
    }
}

/// Where the service keeps things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Data root: `containers/` and `names/` below it.
    pub root: PathBuf,
    /// The OCI runtime's state root (runc's `--root`).
    pub runtime_root: PathBuf,
    pub monitor: MonitorCommand,
    /// Bridge networking; `None`: bridge mode is a namespace with only loopback.
    pub network: Option<NetworkConfig>,
}

impl ServiceConfig {
    /// `root`, with the runtime state in `<root>/runtime` and the default
    /// monitor.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            runtime_root: root.join("runtime"),
            root,
            monitor: MonitorCommand::default(),
            network: None,
        }
    }
}

struct Inner {
    cfg: ServiceConfig,
    images: Arc<ImageService>,
    names: Names,
    /// Attach requests for containers not started yet, served by `start`.
    pending_attach: Mutex<HashMap<String, Vec<oneshot::Sender<UnixStream>>>>,
    execs: Mutex<HashMap<String, ExecRecord>>,
    volumes: crate::volumes::VolumeService,
    net: Option<Networking>,
    events: crate::events::EventBus,
    /// What `events::observe` reported last; held while it reports.
    reported: Mutex<events::Reported>,
    /// Container directories watched for exits (`None`: no inotify here).
    exit_watch: Option<Arc<events::ExitWatch>>,
    /// Containers a `start` of this daemon is starting (it owns their new monitor).
    starting: Mutex<HashSet<String>>,
    /// A sealed in-memory copy of the monitor binary, run as
    /// `/proc/self/fd/N`: the monitor then finds itself cloned already
    /// (CVE-2019-5736) instead of copying its 2+ MiB and re-executing on
    /// every start and exec. `None`: run the file (each copies itself).
    monitor_exe: Option<std::os::fd::OwnedFd>,
    /// Parsed records for `list`, kept current with inotify.
    record_cache: Mutex<cache::RecordCache>,
}

/// A container claimed by one `start`; the claim ends when this is dropped.
struct StartClaim {
    service: ContainerService,
    id: String,
}

impl StartClaim {
    /// `None` while another `start` of the same container is under way.
    fn take(service: &ContainerService, id: &str) -> Option<Self> {
        lock(&service.inner.starting)
            .insert(id.to_string())
            .then(|| Self {
                service: service.clone(),
                id: id.to_string(),
            })
    }
}

impl Drop for StartClaim {
    fn drop(&mut self) {
        lock(&self.service.inner.starting).remove(&self.id);
    }
}

/// The container service; cheap to clone, shareable across threads.
#[derive(Clone)]
pub struct ContainerService {
    inner: Arc<Inner>,
}

/// An attach client's connection to the monitor, now or once started.
pub enum PendingAttach {
    Ready(UnixStream),
    Waiting {
        id: String,
        rx: oneshot::Receiver<UnixStream>,
    },
}

impl PendingAttach {
    /// The connection; an error if the container is removed before it starts.
    pub async fn connected(self) -> Result<UnixStream> {
        match self {
            Self::Ready(s) => Ok(s),
            Self::Waiting { id, rx } => rx
                .await
                .map_err(|_| ContainerError::Conflict(format!("container {id} was removed"))),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ContainerError::Task(e.to_string()))?
}

impl ContainerService {
    /// Opens the service on `cfg.root`, adopting containers whose monitor
    /// still runs and marking the others exited (live restore).
    pub fn open(cfg: ServiceConfig, images: Arc<ImageService>) -> Result<Self> {
        let containers = cfg.root.join("containers");
        fs::create_dir_all(&containers).map_err(ContainerError::io(format!(
            "creating {}",
            containers.display()
        )))?;
        fs::create_dir_all(&cfg.runtime_root).map_err(ContainerError::io(format!(
            "creating {}",
            cfg.runtime_root.display()
        )))?;
        let names = Names::open(cfg.root.join("names"))?;
        let events = crate::events::EventBus::new();
        let volumes = crate::volumes::VolumeService::open_with_events(&cfg.root, events.clone())?;
        let exit_watch = match events::ExitWatch::new() {
            Ok(w) => Some(Arc::new(w)),
            Err(e) => {
                eprintln!("berth: no inotify for container events ({e}): exits are reported when asked about");
                None
            }
        };
        let net = match &cfg.network {
            Some(n) => Some(Networking::open(&cfg.root, n.clone())?),
            None => None,
        };
        let monitor_exe = berth_runtime::cloned_binary::sealed_copy_of(&cfg.monitor.program).ok();
        let service = Self {
            inner: Arc::new(Inner {
                volumes,
                net,
                cfg,
                images,
                names,
                pending_attach: Mutex::new(HashMap::new()),
                execs: Mutex::new(HashMap::new()),
                events,
                reported: Mutex::new(events::Reported::default()),
                exit_watch,
                starting: Mutex::new(HashSet::new()),
                monitor_exe,
                record_cache: Mutex::new(cache::RecordCache::new()),
            }),
        };
        events::spawn_watcher(Arc::downgrade(&service.inner));
        for id in service.ids() {
            service.events_adopt(&id);
            service.restore(&id);
            service.watch_health(&id, false);
        }
        service.restore_networks();
        Ok(service)
    }

    /// `berth-monitor` (and the arguments before its own) ready to spawn.
    fn monitor_command(&self) -> Command {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let mon = &self.inner.cfg.monitor;
        let mut command = match &self.inner.monitor_exe {
            Some(fd) => {
                let mut c = Command::new(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                c.arg0(&mon.program);
                c
            }
            None => Command::new(&mon.program),
        };
        command.args(&mon.args);
        command
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.inner.cfg.root.join("containers").join(id)
    }

    fn runtime(&self) -> Runtime {
        Runtime::new(&self.inner.cfg.runtime_root, false)
    }

    fn ids(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.inner.cfg.root.join("containers")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.len() == 64 && n.chars().all(|c| c.is_ascii_hexdigit()))
            .collect()
    }

    fn monitor_alive(record: &ContainerRecord) -> bool {
        record.state.monitor_pid > 0
            && store::process_alive(record.state.monitor_pid, record.state.monitor_start_time)
    }

    /// Reconciles one container after a daemon restart.
    fn restore(&self, id: &str) {
        let dir = self.dir(id);
        let Ok(record) = store::read_record(&dir) else {
            return;
        };
        if Self::monitor_alive(&record) {
            // Exits and restarts while the daemon was away are reported.
            self.observe(id);
            return;
        }
        if record.state.status == Status::Removing {
            let _ = self.remove_now(id, &record);
            return;
        }
        if record.state.status.is_active() || record.state.monitor_pid != 0 {
            // The monitor died: the container cannot be supervised any more.
            if let Ok(c) = self.runtime().load(id) {
                let _ = c.delete(true);
            }
            let _ = store::update_record(&dir, |r| {
                if r.state.status.is_active() {
                    r.state.status = Status::Exited;
                    r.state.exit_code = 137;
                    r.state.finished_at = store::now_rfc3339();
                    r.state.error = "the container's monitor process died".into();
                    r.state.exits += 1;
                }
                r.state.pid = 0;
                r.state.monitor_pid = 0;
                r.state.monitor_start_time = 0;
            });
        }
        self.observe(id);
        if let Ok(r) = store::read_record(&dir) {
            if r.config.host_config.auto_remove && r.state.status == Status::Exited {
                let _ = self.remove_now(id, &r);
            }
        }
    }

    // ---- lookup --------------------------------------------------------

    /// Full id for an id, a name (with or without `/`) or a unique id prefix.
    pub fn resolve(&self, reference: &str) -> Result<String> {
        let not_found = || ContainerError::NoSuchContainer(reference.to_string());
        if reference.is_empty() {
            return Err(not_found());
        }
        if reference.len() == 64 && self.dir(reference).join(store::STATE_FILE).exists() {
            return Ok(reference.to_string());
        }
        let bare = reference.strip_prefix('/').unwrap_or(reference);
        if let Some(id) = self.inner.names.owner(bare).filter(|id| !id.is_empty()) {
            if self.dir(&id).join(store::STATE_FILE).exists() {
                return Ok(id);
            }
        }
        if reference.chars().all(|c| c.is_ascii_hexdigit()) {
            let matches: Vec<String> = self
                .ids()
                .into_iter()
                .filter(|id| id.starts_with(reference))
                .collect();
            match matches.len() {
                1 => return Ok(matches.into_iter().next().unwrap_or_default()),
                0 => {}
                _ => {
                    return Err(ContainerError::InvalidParameter(format!(
                        "multiple IDs found with provided prefix: {reference}"
                    )))
                }
            }
        }
        Err(not_found())
    }

    fn load(&self, reference: &str) -> Result<(String, PathBuf, ContainerRecord)> {
        let id = self.resolve(reference)?;
        let dir = self.dir(&id);
        let record = store::read_record(&dir).map_err(|e| match e {
            ContainerError::Io { .. } => ContainerError::NoSuchContainer(reference.to_string()),
            e => e,
        })?;
        Ok((id, dir, record))
    }

    // ---- create --------------------------------------------------------

    /// Creates a container (Docker's `POST /containers/create`); returns its id.
    pub async fn create(&self, req: ContainerCreate) -> Result<String> {
        let id = store::random_id()?;
        let name = match req.name.as_deref().filter(|n| !n.is_empty()) {
            Some(n) => {
                let bare = names::normalize(n)?;
                self.inner.names.reserve(&bare, &id)?;
                bare
            }
            None => {
                let mut retry = 0;
                loop {
                    let candidate = names::generate(retry);
                    match self.inner.names.reserve(&candidate, &id) {
                        Ok(()) => break candidate,
                        Err(ContainerError::NameConflict(..)) if retry < 20 => retry += 1,
                        Err(e) => return Err(e),
                    }
                }
            }
        };
        let dir = self.dir(&id);
        let result = self.create_in(&id, &name, &dir, req).await;
        if result.is_err() {
            let rootfs = dir.join("rootfs");
            if berth_snapshot::is_mount_point(&rootfs) {
                let _ = berth_snapshot::unmount(&rootfs);
            }
            let _ = self.inner.images.remove_rootfs(&id);
            let _ = fs::remove_dir_all(&dir);
            self.inner.names.release(&name, &id);
        } else {
            self.events_created(&id);
            self.emit_for(&id, "create", &[]);
        }
        result.map(|()| id)
    }

    async fn create_in(
        &self,
        id: &str,
        name: &str,
        dir: &Path,
        req: ContainerCreate,
    ) -> Result<()> {
        if req.image.is_empty() {
            return Err(ContainerError::InvalidParameter(
                "no image specified".into(),
            ));
        }
        // Cheap checks before anything is unpacked.
        spec::capabilities(&req)?;
        self.check_network(&req)?;
        spec::security_options(&req.host_config.security_opt)?;
        mounts::validate(&req)?;
        match req.host_config.restart_policy.name.as_str() {
            "" | "no" | "always" | "unless-stopped" | "on-failure" => {}
            other => {
                return Err(ContainerError::InvalidParameter(format!(
                    "invalid restart policy '{other}'"
                )))
            }
        }
        if req.host_config.auto_remove
            && !matches!(req.host_config.restart_policy.name.as_str(), "" | "no")
        {
            return Err(ContainerError::InvalidParameter(
                "can't create 'AutoRemove' container with restart policy".into(),
            ));
        }
        fs::create_dir_all(dir.join("rootfs"))
            .map_err(ContainerError::io(format!("creating {}", dir.display())))?;
        let (mounts, details) = self
            .inner
            .images
            .prepare_rootfs(id, &req.image)
            .await
            .map_err(|e| match e {
                ImageError::NotFound(_) | ImageError::Reference(_) => {
                    ContainerError::ImageNotFound(req.image.clone())
                }
                e => ContainerError::Image(Box::new(e)),
            })?;
        berth_snapshot::mount(&mounts, &dir.join("rootfs"))?;
        let image_config = details.config.config.clone().unwrap_or_default();
        let resolved = spec::resolve(&req, &image_config, id)?;
        let prepared = self.prepare_mounts(
            &req,
            &mounts::image_volumes(&image_config),
            &dir.join("rootfs"),
        )?;
        let record = ContainerRecord {
            id: id.to_string(),
            name: format!("/{name}"),
            created: store::now_rfc3339(),
            image: req.image.clone(),
            image_id: details.summary.id.to_string(),
            config: req,
            resolved,
            state: RunState::default(),
            log_path: store::log_path(dir, id).display().to_string(),
            rootfs: Some(mounts),
            mounts: prepared.mounts.clone(),
        };
        let init = match record.config.host_config.init {
            true => init::install(&self.inner.cfg.root).map(Some),
            false => Ok(None),
        };
        let written = init
            .and_then(|init| spec::build(&record, dir, init.as_deref()))
            .and_then(|config| {
                let config = self.net_spec(config, id, &record.config);
                let data = serde_json::to_vec_pretty(&config).map_err(|e| {
                    ContainerError::InvalidParameter(format!("serializing config.json: {e}"))
                })?;
                // One directory sync (the record's) makes both renames durable.
                store::write_file(&dir.join("config.json"), &data, store::Durability::Replace)?;
                store::write_record(dir, &record, store::Durability::Durable)
            });
        if written.is_err() {
            // Nothing half-made: the volumes this create made go too.
            prepared.discard(&self.inner.volumes);
        }
        written
    }

    // ---- start / stop --------------------------------------------------

    /// Starts a created or exited container through a new monitor process.
    /// When the previous run's monitor is still recording the exit and
    /// cleaning up (a `start` right after the container stopped), waits for
    /// it first, as Docker's start waits for the container's lock.
    pub async fn start(&self, reference: &str) -> Result<()> {
        let id = self.resolve(reference)?;
        // Another start of this container is under way: it is starting.
        let Some(_claim) = StartClaim::take(self, &id) else {
            return Err(ContainerError::AlreadyRunning(id));
        };
        let (id, dir, mut record) = self.load(&id)?;
        Self::startable(&id, &record)?;
        if Self::monitor_alive(&record) {
            // No start of ours owns this monitor (the claim says so), and the
            // container is not running: it is the previous run's monitor
            // finishing up. Its last act is a record write, which wakes us.
            let d = dir.clone();
            let deadline = Instant::now() + MONITOR_FINISH;
            blocking(move || Ok(wait::block_until(&d, deadline, |r| !Self::monitor_alive(r))))
                .await?;
            record = self.load(&id)?.2;
            Self::startable(&id, &record)?;
            if Self::monitor_alive(&record) {
                return Err(ContainerError::Conflict(format!(
                    "container {id}'s previous run is still being cleaned up by its monitor (pid {}); try again",
                    record.state.monitor_pid
                )));
            }
        }
        let auto_remove = record.config.host_config.auto_remove;
        let this = self.clone();
        let started_id = id.clone();
        if let Err(e) = blocking(move || this.start_networked(&id, &dir, &record)).await {
            if auto_remove {
                // Like Docker: `--rm` also covers a container that never ran
                // (the docker CLI waits for the removal before it exits).
                let _ = self.remove(&started_id, true, true).await;
            }
            return Err(e);
        }
        self.observe(&started_id);
        self.watch_health(&started_id, true);
        if auto_remove {
            // `--rm`: once the container is done (restart policies are
            // refused with auto-remove), remove it. If the daemon goes away
            // first, `open` finishes the job for exited containers.
            let this = self.clone();
            tokio::spawn(async move {
                if this
                    .wait(&started_id, WaitCondition::NotRunning)
                    .await
                    .is_ok()
                {
                    // Like Docker, --rm also removes anonymous volumes.
                    let _ = this.remove(&started_id, true, true).await;
                }
            });
        }
        Ok(())
    }

    /// Whether the record's state allows `start`.
    fn startable(id: &str, record: &ContainerRecord) -> Result<()> {
        match record.state.status {
            Status::Running | Status::Restarting => Err(ContainerError::AlreadyRunning(id.into())),
            Status::Paused => Err(ContainerError::Conflict(
                "cannot start a paused container, try unpause instead".into(),
            )),
            Status::Removing | Status::Dead => Err(ContainerError::Conflict(format!(
                "container {id} is marked for removal and cannot be started"
            ))),
            Status::Created | Status::Exited => Ok(()),
        }
    }

    fn start_blocking(&self, id: &str, dir: &Path, record: &ContainerRecord) -> Result<()> {
        let rootfs = dir.join("rootfs");
        if !berth_snapshot::is_mount_point(&rootfs) {
            if let Some(m) = &record.rootfs {
                berth_snapshot::mount(m, &rootfs)?;
            }
        }
        self.mount_volumes(record)?;
        // `manual_stop` and `error` of the previous run are cleared by the
        // monitor when it records this run (one state write fewer here).
        let command = record
            .resolved
            .entrypoint
            .iter()
            .chain(&record.resolved.cmd)
            .next()
            .cloned()
            .unwrap_or_default();
        let failed = |message: String| {
            let exit_code = command_exit_code(&command, &message);
            let _ = store::update_record(dir, |r| {
                r.state.error = message.clone();
                if let Some(code) = exit_code {
                    r.state.exit_code = code;
                }
            });
            ContainerError::StartFailed {
                id: id.to_string(),
                message,
                exit_code,
            }
        };
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("monitor.log"))
            .map_err(ContainerError::io("opening monitor.log"))?;
        let mon = &self.inner.cfg.monitor;
        let mut child = self
            .monitor_command()
            .arg("run")
            .arg(dir)
            .arg(&self.inner.cfg.runtime_root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(ContainerError::io(format!(
                "starting the monitor {}",
                mon.program.display()
            )))?;
        let mut stdin = child.stdin.take();
        let stdout = child.stdout.take();
        // The first process forks the monitor proper and exits.
        let _ = child.wait();
        let Some(stdout) = stdout else {
            return Err(failed("the monitor has no stdout".into()));
        };
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let line = line.trim().to_string();
        if line != "created" {
            return Err(failed(
                line.strip_prefix("error: ")
                    .unwrap_or("the monitor exited before creating the container")
                    .to_string(),
            ));
        }
        // Clients that attached before start get everything from the start.
        let waiting = lock(&self.inner.pending_attach)
            .remove(id)
            .unwrap_or_default();
        for tx in waiting {
            if let Ok(s) = store::connect_socket(dir, store::ATTACH_SOCKET) {
                let _ = tx.send(s);
            }
        }
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(b"start\n");
        }
        drop(stdin);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let line = line.trim();
        if line.starts_with("running ") {
            Ok(())
        } else {
            Err(failed(
                line.strip_prefix("error: ")
                    .unwrap_or("the monitor exited before starting the container")
                    .to_string(),
            ))
        }
    }

    fn send_signal(&self, id: &str, signal: Signal) -> Result<()> {
        let container = self.runtime().load(id)?;
        container.kill(signal, false)?;
        Ok(())
    }

    /// Blocks until the container is not running (or `deadline`); true if
    /// it stopped.
    fn wait_inactive(&self, dir: &Path, deadline: Instant) -> bool {
        wait::block_until(dir, deadline, |r| !r.state.status.is_active())
    }

    /// Stops with the stop signal, then SIGKILL after `timeout` seconds
    /// (the container's StopTimeout, else 10). `AlreadyStopped` if it was.
    pub async fn stop(&self, reference: &str, timeout: Option<u64>) -> Result<()> {
        let (id, dir, record) = self.load(reference)?;
        if !record.state.status.is_active() {
            return Err(ContainerError::AlreadyStopped(id));
        }
        let this = self.clone();
        blocking(move || {
            let stopped = this.stop_blocking(&id, &dir, &record, timeout);
            if stopped.is_ok() {
                // The monitor records the exit, then deletes the runtime's
                // container and goes: a `start` right after `stop` must not
                // find it still there.
                let deadline = Instant::now() + MONITOR_FINISH;
                wait::block_until(&dir, deadline, |r| !Self::monitor_alive(r));
            }
            // Docker's order: kill, die, (network disconnect), stop.
            this.observe(&id);
            this.net_after_stop(&id, &dir);
            if stopped.is_ok() {
                this.emit_for(&id, "stop", &[]);
            }
            stopped
        })
        .await
    }

    fn stop_blocking(
        &self,
        id: &str,
        dir: &Path,
        record: &ContainerRecord,
        timeout: Option<u64>,
    ) -> Result<()> {
        store::update_record(dir, |r| r.state.manual_stop = true)?;
        if record.state.status == Status::Restarting {
            // The monitor sees manual_stop during its backoff.
            self.wait_inactive(dir, Instant::now() + Duration::from_secs(5));
            return Ok(());
        }
        let timeout = timeout.or(record.config.stop_timeout).unwrap_or(10);
        let signal = spec::parse_signal(&record.resolved.stop_signal).unwrap_or(Signal::SIGTERM);
        if self.send_signal(id, signal).is_ok() {
            self.emit(record, "kill", &[("signal", events::signal_number(signal))]);
        }
        if self.wait_inactive(dir, Instant::now() + Duration::from_secs(timeout)) {
            return Ok(());
        }
        if self.send_signal(id, Signal::SIGKILL).is_ok() {
            self.emit(
                record,
                "kill",
                &[("signal", events::signal_number(Signal::SIGKILL))],
            );
        }
        if self.wait_inactive(dir, Instant::now() + Duration::from_secs(30)) {
            Ok(())
        } else {
            Err(ContainerError::Conflict(format!(
                "container {id} did not stop after SIGKILL"
            )))
        }
    }

    /// Sends a signal (default SIGKILL). Killing with SIGKILL or the stop
    /// signal counts as a manual stop for restart policies.
    /// Sends `signal` (SIGKILL by default). A SIGKILL returns once the container has exited
    /// and its monitor is gone, as dockerd's does, so `kill && start` or `kill && rm` find it
    /// stopped.
    pub async fn kill(&self, reference: &str, signal: Option<&str>) -> Result<()> {
        let (id, dir, record) = self.load(reference)?;
        let signal = match signal.filter(|s| !s.is_empty()) {
            Some(s) => spec::parse_signal(s)?,
            None => Signal::SIGKILL,
        };
        if !matches!(record.state.status, Status::Running | Status::Paused) {
            return Err(ContainerError::NotRunning(id));
        }
        let stop_signal = spec::parse_signal(&record.resolved.stop_signal).ok();
        if signal == Signal::SIGKILL || Some(signal) == stop_signal {
            store::update_record(&dir, |r| r.state.manual_stop = true)?;
        }
        self.send_signal(&id, signal)?;
        self.emit(
            &record,
            "kill",
            &[("signal", events::signal_number(signal))],
        );
        if signal != Signal::SIGKILL {
            return Ok(());
        }
        let this = self.clone();
        blocking(move || {
            let deadline = Instant::now() + MONITOR_FINISH;
            if !wait::block_until(&dir, deadline, |r| {
                !r.state.status.is_active() && !Self::monitor_alive(r)
            }) {
                return Err(ContainerError::Conflict(format!(
                    "container {id} did not exit within {}s of SIGKILL",
                    MONITOR_FINISH.as_secs()
                )));
            }
            this.observe(&id);
            Ok(())
        })
        .await
    }

    /// Stops (if running) and starts again.
    pub async fn restart(&self, reference: &str, timeout: Option<u64>) -> Result<()> {
        match self.stop(reference, timeout).await {
            Ok(()) | Err(ContainerError::AlreadyStopped(_)) => {}
            Err(e) => return Err(e),
        }
        // `start` waits for the old monitor to finish if it still runs.
        self.start(reference).await?;
        if let Ok(id) = self.resolve(reference) {
            self.emit_for(&id, "restart", &[]);
        }
        Ok(())
    }

    pub fn pause(&self, reference: &str) -> Result<()> {
        let (id, dir, record) = self.load(reference)?;
        match record.state.status {
            Status::Running => {}
            Status::Paused => {
                return Err(ContainerError::Conflict(format!(
                    "Container {id} is already paused"
                )))
            }
            _ => return Err(ContainerError::NotRunning(id)),
        }
        let mut c = self.runtime().load(&id)?;
        c.pause()?;
        let (_, record) = store::update_record(&dir, |r| {
            if r.state.status == Status::Running {
                r.state.status = Status::Paused
            }
        })?;
        self.emit(&record, "pause", &[]);
        Ok(())
    }

    pub fn unpause(&self, reference: &str) -> Result<()> {
        let (id, dir, record) = self.load(reference)?;
        if record.state.status != Status::Paused {
            return Err(ContainerError::NotPaused(id));
        }
        let mut c = self.runtime().load(&id)?;
        c.resume()?;
        let (_, record) = store::update_record(&dir, |r| {
            if r.state.status == Status::Paused {
                r.state.status = Status::Running
            }
        })?;
        self.emit(&record, "unpause", &[]);
        Ok(())
    }

    // ---- remove / rename -------------------------------------------------

    /// Removes a container; a running one only with `force` (killed first).
    /// With `remove_volumes`, also the anonymous volumes it created.
    pub async fn remove(&self, reference: &str, force: bool, remove_volumes: bool) -> Result<()> {
        let (id, dir, record) = self.load(reference)?;
        let volume_mounts = if remove_volumes {
            record.mounts.clone()
        } else {
            Vec::new()
        };
        if record.state.status.is_active() && !force {
            return Err(ContainerError::RemoveRunning(id));
        }
        let this = self.clone();
        blocking(move || {
            if record.state.status.is_active() || Self::monitor_alive(&record) {
                store::update_record(&dir, |r| r.state.manual_stop = true)?;
                if record.state.status == Status::Paused {
                    let _ = this
                        .runtime()
                        .load(&id)
                        .and_then(|c| c.kill(Signal::SIGKILL, true));
                }
                if this.send_signal(&id, Signal::SIGKILL).is_ok() {
                    this.emit(
                        &record,
                        "kill",
                        &[("signal", events::signal_number(Signal::SIGKILL))],
                    );
                }
                this.wait_inactive(&dir, Instant::now() + Duration::from_secs(30));
                // Let the monitor finish its bookkeeping.
                let deadline = Instant::now() + MONITOR_FINISH;
                wait::block_until(&dir, deadline, |r| !Self::monitor_alive(r));
            }
            // An exit not reported yet comes before `destroy`.
            this.observe(&id);
            let (_, record) = store::update_record(&dir, |r| r.state.status = Status::Removing)?;
            this.remove_now(&id, &record)?;
            this.remove_anonymous_volumes(&volume_mounts);
            Ok(())
        })
        .await
    }

    fn remove_now(&self, id: &str, record: &ContainerRecord) -> Result<()> {
        let dir = self.dir(id);
        self.net_release(id, None);
        if let Ok(c) = self.runtime().load(id) {
            let _ = c.delete(true);
        }
        let rootfs = dir.join("rootfs");
        if berth_snapshot::is_mount_point(&rootfs) {
            if let Err(e) = berth_snapshot::unmount_all(&rootfs) {
                let _ = store::update_record(&dir, |r| {
                    r.state.status = Status::Dead;
                    r.state.error = e.to_string();
                });
                return Err(e.into());
            }
        }
        match self.inner.images.remove_rootfs(id) {
            Ok(()) => {}
            Err(e) => {
                // A snapshot that is already gone is fine.
                if !matches!(e, ImageError::Snapshot(_)) {
                    return Err(e.into());
                }
            }
        }
        let bare = record.name.trim_start_matches('/');
        self.inner.names.release(bare, id);
        lock(&self.inner.pending_attach).remove(id);
        remove_container_dir(&dir)
            .map_err(ContainerError::io(format!("removing {}", dir.display())))?;
        self.emit(record, "destroy", &[]);
        Ok(())
    }

    pub fn rename(&self, reference: &str, new_name: &str) -> Result<()> {
        let (id, dir, record) = self.load(reference)?;
        let bare = names::normalize(new_name)?;
        let old = record.name.trim_start_matches('/').to_string();
        if bare == old {
            return Err(ContainerError::InvalidParameter(
                "Renaming a container with the same name as its current name".into(),
            ));
        }
        self.inner.names.reserve(&bare, &id)?;
        let record = match store::update_record_with(&dir, store::Durability::Durable, |r| {
            r.name = format!("/{bare}")
        }) {
            Ok((_, record)) => record,
            Err(e) => {
                self.inner.names.release(&bare, &id);
                return Err(e);
            }
        };
        self.inner.names.release(&old, &id);
        self.emit(&record, "rename", &[("oldName", format!("/{old}"))]);
        Ok(())
    }

    // ---- wait / inspect / list -----------------------------------------

    pub fn inspect(&self, reference: &str) -> Result<ContainerInspect> {
        let (_, dir, record) = self.load(reference)?;
        Ok(ContainerInspect {
            record,
            dir: dir.display().to_string(),
            bundle_config: dir.join("config.json").display().to_string(),
        })
    }

    /// Containers, newest first; only running ones unless `all`.
    pub fn list(&self, all: bool, filters: &ListFilters) -> Result<Vec<ContainerRecord>> {
        let ids = self.ids();
        let records =
            lock(&self.inner.record_cache).records(&self.inner.cfg.root.join("containers"), &ids);
        let mut out: Vec<ContainerRecord> = records
            .into_iter()
            .filter(|r| all || r.state.status.is_active() || !filters.status.is_empty())
            .filter(|r| Self::matches(r, filters))
            .collect();
        out.sort_by(|a, b| b.created.cmp(&a.created));
        Ok(out)
    }

    fn matches(r: &ContainerRecord, f: &ListFilters) -> bool {
        let any = |vals: &[String], pred: &dyn Fn(&str) -> bool| {
            vals.is_empty() || vals.iter().any(|v| pred(v))
        };
        any(&f.id, &|v| r.id.starts_with(v))
            && any(&f.name, &|v| {
                r.name
                    .trim_start_matches('/')
                    .contains(v.trim_start_matches('/'))
            })
            && any(&f.status, &|v| r.state.status.as_str() == v)
            && any(&f.ancestor, &|v| {
                r.image == v
                    || r.image_id == v
                    || r.image_id.trim_start_matches("sha256:").starts_with(v)
                    || r.config.image.split(':').next() == Some(v)
            })
            && f.label.iter().all(|l| match l.split_once('=') {
                Some((k, v)) => r.resolved.labels.get(k).is_some_and(|x| x == v),
                None => r.resolved.labels.contains_key(l.as_str()),
            })
    }

    // ---- logs / attach ---------------------------------------------------

    /// The container's log as a stream of entries; with `follow` the stream
    /// ends when the container stops (or is removed).
    pub fn logs(&self, reference: &str, opts: LogOptions) -> Result<mpsc::Receiver<LogEntry>> {
        let (_, dir, record) = self.load(reference)?;
        let path = PathBuf::from(&record.log_path);
        let (tx, rx) = mpsc::channel(256);
        std::thread::spawn(move || {
            let (entries, pos) = logs::read_existing(&path, &opts);
            for e in entries {
                if tx.blocking_send(e).is_err() {
                    return;
                }
            }
            if !opts.follow {
                return;
            }
            logs::follow(
                &path,
                pos,
                &opts,
                |e| tx.blocking_send(e).is_ok(),
                || {
                    store::read_record(&dir).map_or(true, |r| {
                        !r.state.status.is_active() && !Self::monitor_alive(&r)
                    })
                },
            );
        });
        Ok(rx)
    }

    /// Registers an attach client and returns its connection to be: at
    /// once for a container whose monitor runs, otherwise when `start`
    /// connects it, so no output is missed. Call this before answering the
    /// client (which starts the container only once attach returned).
    pub fn attach(&self, reference: &str) -> Result<PendingAttach> {
        let id = self.resolve(reference)?;
        let dir = self.dir(&id);
        // The record is read under the lock `start` drains the waiters
        // under: either it is read before the drain (and the waiter is
        // drained) or after (and the monitor, which records its pid before
        // reporting `created`, is seen alive).
        let mut pending = lock(&self.inner.pending_attach);
        let record = store::read_record(&dir)
            .map_err(|_| ContainerError::NoSuchContainer(reference.to_string()))?;
        if record.state.status.is_active() || Self::monitor_alive(&record) {
            drop(pending);
            let stream = store::connect_socket(&dir, store::ATTACH_SOCKET)
                .map_err(ContainerError::io("connecting to the attach socket"))?;
            self.emit(&record, "attach", &[]);
            return Ok(PendingAttach::Ready(stream));
        }
        let (tx, rx) = oneshot::channel();
        pending.entry(id.clone()).or_default().push(tx);
        drop(pending);
        self.emit(&record, "attach", &[]);
        Ok(PendingAttach::Waiting { id, rx })
    }

    /// Sets the terminal size of a running TTY container (the monitor holds
    /// the pty master; it takes the size as a resize frame).
    pub fn resize(&self, reference: &str, height: u16, width: u16) -> Result<()> {
        let (id, dir, record) = self.load(reference)?;
        if !record.config.tty {
            return Err(ContainerError::Conflict(format!(
                "container {id} has no terminal to resize"
            )));
        }
        if !record.state.status.is_active() {
            return Err(ContainerError::NotRunning(id));
        }
        let mut size = [0u8; 4];
        size[..2].copy_from_slice(&height.to_be_bytes());
        size[2..].copy_from_slice(&width.to_be_bytes());
        let mut stream = store::connect_socket(&dir, store::ATTACH_SOCKET)
            .map_err(ContainerError::io("connecting to the attach socket"))?;
        attach::write_frame(&mut stream, attach::RESIZE, &size)
            .map_err(ContainerError::io("sending the terminal size"))
    }

    // ---- top / stats / prune ---------------------------------------------

    /// `ps -ef`-like rows for the container's processes.
    pub fn top(&self, reference: &str) -> Result<TopResult> {
        let (id, _, record) = self.load(reference)?;
        if !matches!(record.state.status, Status::Running | Status::Paused) {
            return Err(ContainerError::NotRunning(id));
        }
        let pids = self.runtime().load(&id)?.processes()?;
        let titles = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut processes = Vec::new();
        for pid in pids {
            if let Some(row) = ps_row(pid.as_raw()) {
                processes.push(row);
            }
        }
        Ok(TopResult { titles, processes })
    }

    /// Resource usage from the container's cgroup.
    pub fn stats(&self, reference: &str) -> Result<berth_runtime::cgroups::Stats> {
        let (id, _, record) = self.load(reference)?;
        if !matches!(record.state.status, Status::Running | Status::Paused) {
            return Err(ContainerError::NotRunning(id));
        }
        Ok(self.runtime().load(&id)?.stats()?)
    }

    /// One sample of what Docker's stats report: the cgroup's counters
    /// (v1 or v2, whichever the container runs under), the host's CPU time,
    /// and the interfaces of the container's network namespace. A container
    /// that is not running gives an empty sample.
    pub fn stats_sample(&self, reference: &str) -> Result<StatsSample> {
        let (id, _, record) = self.load(reference)?;
        let running = matches!(record.state.status, Status::Running | Status::Paused);
        let mut sample = StatsSample {
            id: id.clone(),
            name: record.name.clone(),
            read: store::now_rfc3339(),
            running,
            cgroup: Default::default(),
            system_cpu_usage: stats::system_cpu_usage(),
            online_cpus: stats::online_cpus(),
            networks: None,
        };
        if !running {
            return Ok(sample);
        }
        sample.cgroup = match self.runtime().load(&id).and_then(|c| c.stats()) {
            Ok(s) => s,
            // It stopped between the record and the cgroup.
            Err(_)
                if !store::read_record(&self.dir(&id))
                    .is_ok_and(|r| r.state.status.is_active()) =>
            {
                sample.running = false;
                return Ok(sample);
            }
            Err(e) => return Err(e.into()),
        };
        if record.config.host_config.network_mode != "host" && record.state.pid > 0 {
            sample.networks = Some(stats::net_dev(record.state.pid));
        }
        Ok(sample)
    }

    /// Bytes of the container's log files.
    pub fn log_size(&self, reference: &str) -> Result<u64> {
        let (_, _, record) = self.load(reference)?;
        Ok(logs::disk_usage(Path::new(&record.log_path)))
    }

    /// Removes every stopped (created, exited or dead) container.
    pub async fn prune(&self) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        for r in self.list(true, &ListFilters::default())? {
            if r.state.status.is_active() || Self::monitor_alive(&r) {
                continue;
            }
            let size = logs::disk_usage(Path::new(&r.log_path));
            if self.remove(&r.id, false, false).await.is_ok() {
                report.containers_deleted.push(r.id);
                report.space_reclaimed += size;
            }
        }
        Ok(report)
    }
}

/// The exit code Docker records when a container's command cannot be run,
/// read from the runtime's message as moby reads it: 127 when the command
/// is missing, 126 when it may not be executed; `None` for other failures.
fn command_exit_code(command: &str, message: &str) -> Option<i32> {
    let lower = message.to_ascii_lowercase();
    if !command.is_empty()
        && lower.contains(&command.to_ascii_lowercase())
        && (lower.contains("executable file not found")
            || lower.contains("no such file or directory"))
    {
        Some(127)
    } else if lower.contains("permission denied") || lower.contains("is a directory") {
        Some(126)
    } else {
        None
    }
}

fn ps_row(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    let comm = stat.get(stat.find('(')? + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
    let ppid = fields.get(1)?.to_string();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let secs = (utime + stime) / hz;
    let time = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("0")
        .to_string();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmd = if cmdline.is_empty() {
        format!("[{comm}]")
    } else {
        String::from_utf8_lossy(&cmdline)
            .trim_end_matches('\0')
            .replace('\0', " ")
    };
    Some(vec![
        uid,
        pid.to_string(),
        ppid,
        "0".into(),
        "-".into(),
        "?".into(),
        time,
        cmd,
    ])
}

/// Removes a container's directory. A task that was updating the record as the removal
/// began (the health checker, a stats or inspect writer) can put its lock file or record
/// back in the middle of it; such a writer fails once the record is gone, so another pass
/// finishes the job.
fn remove_container_dir(dir: &Path) -> std::io::Result<()> {
    let mut attempts = 0;
    loop {
        match fs::remove_dir_all(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && attempts < 100 => {
                attempts += 1;
                std::thread::yield_now();
            }
            result => return result,
        }
    }
}
