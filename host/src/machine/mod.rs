//! `berth machine init|start|stop|rm|status|logs`: the Linux VM that runs
//! the engine on hosts without a Linux kernel (and on Linux for testing).
//!
//! `start` launches a supervisor (`berth machine serve NAME`, detached) that
//! owns the VM's processes, the host endpoint and the port forwards, and
//! writes `status.json`; the other commands talk to it through that file
//! and a stop request (a signal on Unix, a named event on Windows: see
//! [`berth_platform::process`]). Files: see
//! [`berth_platform::machine::MachineDir`].

mod api_endpoint;
mod image;
mod supervisor;

use std::path::PathBuf;
use std::process::{Command as Process, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_platform::machine::{
    Accel, GuestArch, MachineConfig, MachineDir, MachineState, MachineStatus, Share,
};
use berth_platform::process;
use berth_platform::protocol::ShareFs;
use clap::{Parser, Subcommand};

/// How often `start`/`stop` look at the supervisor's progress.
const POLL: Duration = Duration::from_millis(50);

#[derive(Parser)]
#[command(
    name = "berth machine",
    about = "Manage the Linux VM that runs the engine"
)]
pub struct MachineCli {
    #[command(subcommand)]
    command: MachineCommand,
}

#[derive(Subcommand)]
enum MachineCommand {
    /// Create a machine: settings, data disk, boot image.
    Init(Box<InitArgs>),
    /// Boot the machine and serve its engine on a local socket.
    Start(StartArgs),
    /// Shut the machine down cleanly (containers stopped, disk synced).
    Stop(StopArgs),
    /// Delete a machine and its data disk.
    Rm(RmArgs),
    /// Show whether the machine runs, its endpoint and forwarded ports.
    Status(StatusArgs),
    /// Print the machine's console (kernel and agent) log.
    Logs(NameArg),
    /// Build the guest image (kernel + initramfs) from scratch or the cache, and
    /// optionally export it for hosts that cannot build it (macOS, Windows).
    Image(ImageArgs),
    /// The supervisor `start` runs in the background.
    #[command(hide = true)]
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ImageArgs {
    /// The guest's architecture (x86_64 or aarch64; the host's by default).
    #[arg(long, value_name = "x86_64|aarch64")]
    arch: Option<String>,
    /// Copy the artefacts (vmlinuz, initrd.img, guest-image.json) into this
    /// directory; point BERTH_GUEST_IMAGE_DIR at it on the other host.
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
}

#[derive(clap::Args)]
struct NameArg {
    /// Machine name.
    #[arg(default_value = "default")]
    name: String,
}

#[derive(clap::Args)]
struct InitArgs {
    #[arg(default_value = "default")]
    name: String,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u64,
    /// Data disk size in GiB (sparse).
    #[arg(long, default_value_t = 20)]
    disk: u64,
    /// The guest's vsock context id (unique among running VMs).
    #[arg(long, default_value_t = 3)]
    cid: u32,
    /// Share a host directory into the VM at the same path (HOST[:GUEST]).
    #[arg(long = "share", value_name = "HOST[:GUEST]")]
    shares: Vec<String>,
    /// How shared directories reach the VM: virtiofs or 9p (default: virtiofs
    /// where the backend can, under QEMU when virtiofsd is installed).
    #[arg(long = "share-fs", value_parser = ["virtiofs", "9p"])]
    share_fs: Option<String>,
    /// Accelerator: auto (TCG unless kvm is chosen), kvm or tcg.
    #[arg(long, default_value = "auto", value_parser = ["auto", "kvm", "tcg"])]
    accel: String,
    /// The guest's architecture: the host's by default; the other one runs
    /// emulated (QEMU only), e.g. to test the arm64 guest of Apple silicon.
    #[arg(long, value_name = "x86_64|aarch64")]
    arch: Option<String>,
    /// Boot this kernel instead of the built guest image.
    #[arg(long, requires = "initrd")]
    kernel: Option<PathBuf>,
    /// Boot this initramfs instead of the built guest image.
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// QEMU user-network hostfwd rule (for benchmarks; user net is restricted).
    #[arg(long, hide = true)]
    hostfwd: Vec<String>,
    /// Let containers in the VM reach this port of the host's loopback on the
    /// VM's 127.0.0.1 (e.g. a registry on the host); repeatable.
    #[arg(long = "host-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    host_ports: Vec<u16>,
    /// No outbound network for the VM (by default it reaches out through a
    /// NAT on the host: passt with QEMU, Virtualization.framework's NAT, an
    /// HNS NAT network on Windows; never the host's own loopback).
    #[arg(long = "no-network")]
    no_network: bool,
}

#[derive(clap::Args)]
struct StartArgs {
    #[arg(default_value = "default")]
    name: String,
    /// Seconds to wait for the engine to answer.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
}

#[derive(clap::Args)]
struct StopArgs {
    #[arg(default_value = "default")]
    name: String,
    /// Seconds to wait for a clean shutdown before the VM is killed.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

#[derive(clap::Args)]
struct RmArgs {
    #[arg(default_value = "default")]
    name: String,
    /// Stop the machine first if it runs.
    #[arg(short, long)]
    force: bool,
}

#[derive(clap::Args)]
struct StatusArgs {
    #[arg(default_value = "default")]
    name: String,
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ServeArgs {
    name: String,
    /// Seconds the guest gets to answer.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
}

pub fn main(args: impl Iterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = match MachineCli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 125 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth machine: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The CLI's engine when nothing names one: on macOS and Windows, or anywhere with
/// `BERTH_MACHINE_ON_DEMAND=1`, the machine `$BERTH_MACHINE` (default `default`), created
/// and booted first if need be; elsewhere none (the local daemon's socket).
pub fn on_demand_engine() -> Option<berth_cli::DefaultEngine> {
    let wanted = cfg!(any(target_os = "macos", windows))
        || std::env::var("BERTH_MACHINE_ON_DEMAND").is_ok_and(|v| v == "1");
    wanted.then_some(ensure_machine as berth_cli::DefaultEngine)
}

/// Creates (with default settings) and boots the on-demand machine unless it runs already;
/// its endpoint. Progress goes to stderr so command output stays clean.
fn ensure_machine() -> Result<String> {
    let name = std::env::var("BERTH_MACHINE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let d = dir(&name)?;
    if !is_running(&d) {
        let mut progress = std::io::stderr();
        if d.load().is_err() {
            let cli = MachineCli::try_parse_from(["berth machine", "init", &name])?;
            let MachineCommand::Init(args) = cli.command else {
                bail!("parsing the default machine settings");
            };
            init(*args, &mut progress)
                .with_context(|| format!("creating machine {name} on demand"))?;
        }
        start(&name, ON_DEMAND_TIMEOUT, &mut progress)
            .with_context(|| format!("starting machine {name} on demand"))?;
    }
    endpoint(&d, &name)
}

/// The machine's `DOCKER_HOST` on this host: `npipe:////./pipe/berth-<name>`
/// on Windows, `unix://<machine dir>/berth.sock` elsewhere.
fn endpoint(d: &MachineDir, name: &str) -> Result<String> {
    Ok(berth_platform::endpoint::machine_docker_host(d, name)?)
}

/// How long a command waits for the machine it boots on demand.
const ON_DEMAND_TIMEOUT: Duration = Duration::from_secs(180);

fn dir(name: &str) -> Result<MachineDir> {
    Ok(MachineDir::new(&berth_platform::machines_dir(), name)?)
}

fn run(cli: MachineCli) -> Result<()> {
    match cli.command {
        MachineCommand::Init(a) => init(*a, &mut std::io::stdout()),
        MachineCommand::Start(a) => start(
            &a.name,
            Duration::from_secs(a.timeout),
            &mut std::io::stdout(),
        ),
        MachineCommand::Stop(a) => stop(&a.name, Duration::from_secs(a.timeout)),
        MachineCommand::Rm(a) => rm(&a.name, a.force),
        MachineCommand::Status(a) => status(&a.name, a.json),
        MachineCommand::Logs(a) => logs(&a.name),
        MachineCommand::Image(a) => build_image(a, &mut std::io::stdout()),
        MachineCommand::Serve(a) => supervisor::run(&dir(&a.name)?, Duration::from_secs(a.timeout)),
    }
}

/// `HOST[:GUEST]`: the host directory and where the guest mounts it. On
/// Windows HOST may start with a drive (`C:\src:/src`), and a GUEST left out
/// is HOST's Linux spelling (`C:\src\app` → `/c/src/app`), since the guest
/// path must be a Linux one.
fn split_share(spec: &str, windows: bool) -> (&str, String) {
    let bytes = spec.as_bytes();
    let drive = windows && bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    let skip = if drive { 2 } else { 0 };
    match spec[skip..].split_once(':') {
        Some((h, g)) => (&spec[..skip + h.len()], g.to_string()),
        None if drive => {
            let rest = spec[2..].replace('\\', "/");
            let letter = char::from(bytes[0].to_ascii_lowercase());
            (spec, format!("/{letter}/{}", rest.trim_start_matches('/')))
        }
        None => (spec, spec.to_string()),
    }
}

fn parse_share(spec: &str) -> Result<Share> {
    let (host, guest) = split_share(spec, cfg!(windows));
    let host = std::fs::canonicalize(host)
        .with_context(|| format!("shared directory {host} does not exist"))?;
    if !host.is_dir() {
        bail!("shared path {} is not a directory", host.display());
    }
    // Windows' canonical form is a verbatim path (`\\?\C:\…`); keep the plain spelling.
    #[cfg(windows)]
    let host = match host.to_str().and_then(|h| h.strip_prefix(r"\\?\")) {
        Some(plain) if !plain.starts_with("UNC\\") => PathBuf::from(plain),
        _ => host,
    };
    Ok(Share {
        host,
        guest: PathBuf::from(guest),
    })
}

/// Creates a machine; what it did goes to `out`.
fn init(a: InitArgs, out: &mut dyn std::io::Write) -> Result<()> {
    let d = dir(&a.name)?;
    if d.exists() {
        bail!(
            "machine {:?} already exists (remove it with `berth machine rm {}`)",
            a.name,
            a.name
        );
    }
    let mut config = MachineConfig::new(&a.name)?;
    config.cpus = a.cpus;
    config.memory_mib = a.memory;
    config.disk_gib = a.disk;
    config.cid = a.cid;
    config.accel = match a.accel.as_str() {
        "kvm" => Accel::Kvm,
        "tcg" => Accel::Tcg,
        _ => Accel::Auto,
    };
    if let Some(arch) = &a.arch {
        config.arch = GuestArch::parse(arch)?;
    }
    config.shares = a
        .shares
        .iter()
        .map(|s| parse_share(s))
        .collect::<Result<_>>()?;
    config.share_fs = a.share_fs.as_deref().and_then(ShareFs::parse);
    config.hostfwd = a.hostfwd;
    config.host_ports = a.host_ports;
    config.outbound_network = !a.no_network;
    config.host_ports.sort_unstable();
    config.host_ports.dedup();
    if let (Some(k), Some(i)) = (&a.kernel, &a.initrd) {
        for p in [k, i] {
            if !p.is_file() {
                bail!("{} does not exist", p.display());
            }
        }
        config.kernel = Some(std::fs::canonicalize(k)?);
        config.initrd = Some(std::fs::canonicalize(i)?);
    }
    config.validate()?;
    std::fs::create_dir_all(&d.dir).with_context(|| format!("creating {}", d.dir.display()))?;
    let result = (|| -> Result<()> {
        // The image first: without one nothing is written (the disk may be large).
        if config.kernel.is_none() {
            let img = image::ensure(config.arch)?;
            eprintln!("guest image: {}", img.dir.display());
        }
        berth_guest_image::create_data_disk(&d.disk(), config.disk_gib)?;
        d.save(&config)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&d.dir);
        return Err(e);
    }
    writeln!(out, "machine {} created in {}", a.name, d.dir.display())?;
    Ok(())
}

fn build_image(a: ImageArgs, out: &mut impl std::io::Write) -> Result<()> {
    let arch = match &a.arch {
        Some(name) => GuestArch::parse(name)?,
        None => GuestArch::host(),
    };
    let img = image::build(arch)?;
    match &a.output {
        Some(dir) => {
            image::export(&img, arch, dir)?;
            writeln!(
                out,
                "guest image for {} exported to {}",
                arch.debian(),
                dir.display()
            )?;
        }
        None => writeln!(out, "{}", img.dir.display())?,
    }
    Ok(())
}

/// The status, corrected when the supervisor died without saying so.
fn current_status(d: &MachineDir) -> Option<MachineStatus> {
    let mut s = d.load_status()?;
    if matches!(
        s.state,
        MachineState::Starting | MachineState::Running | MachineState::Stopping
    ) && !s.supervisor_alive()
    {
        s.state = MachineState::Failed;
        s.error
            .get_or_insert_with(|| "the machine's supervisor died".into());
    }
    Some(s)
}

fn is_running(d: &MachineDir) -> bool {
    current_status(d).is_some_and(|s| {
        matches!(
            s.state,
            MachineState::Starting | MachineState::Running | MachineState::Stopping
        )
    })
}

/// Boots a machine and waits for its engine; what it did goes to `out`.
fn start(name: &str, timeout: Duration, out: &mut dyn std::io::Write) -> Result<()> {
    let d = dir(name)?;
    d.load()?;
    if is_running(&d) {
        writeln!(
            out,
            "machine {name} is already running: {}",
            endpoint(&d, name)?
        )?;
        return Ok(());
    }
    let _ = std::fs::remove_file(d.status());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.supervisor_log())
        .with_context(|| format!("opening {}", d.supervisor_log().display()))?;
    let exe = std::env::current_exe().context("finding the berth executable")?;
    let mut cmd = Process::new(exe);
    cmd.args(["machine", "serve", name, "--timeout"])
        .arg(timeout.as_secs().to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut child = process::spawn_detached(&mut cmd).context("starting the machine supervisor")?;
    let started = Instant::now();
    // The supervisor bounds the boot itself; allow it a little longer to
    // report before giving up on it.
    let deadline = started + timeout + Duration::from_secs(15);
    loop {
        if let Some(s) = d.load_status() {
            match s.state {
                MachineState::Running => {
                    writeln!(
                        out,
                        "machine {name} running in {:.1} s: {}",
                        started.elapsed().as_secs_f64(),
                        endpoint(&d, name)?
                    )?;
                    return Ok(());
                }
                MachineState::Failed | MachineState::Stopped => {
                    let _ = child.wait();
                    bail!(
                        "machine {name} failed to start: {}\n(console: {}, log: {})",
                        s.error.unwrap_or_else(|| "unknown error".into()),
                        d.console_log().display(),
                        d.supervisor_log().display()
                    );
                }
                _ => {}
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "the machine supervisor exited ({status}) before the engine answered; see {}",
                d.supervisor_log().display()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "machine {name} did not start within {timeout:?}; see {}",
                d.console_log().display()
            );
        }
        std::thread::sleep(POLL);
    }
}

fn stop(name: &str, timeout: Duration) -> Result<()> {
    stop_machine(
        &dir(name)?,
        name,
        timeout,
        STOP_GRACE,
        &mut std::io::stdout(),
    )
}

/// How much longer than its shutdown timeout `stop` gives the supervisor
/// before killing it (it kills the VM itself after the timeout).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Asks the supervisor to stop, waits for it, and kills it once `timeout` and `grace`
/// have passed.
fn stop_machine(
    d: &MachineDir,
    name: &str,
    timeout: Duration,
    grace: Duration,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    d.load()?;
    let Some(s) = current_status(d).filter(|_| is_running(d)) else {
        writeln!(out, "machine {name} is not running")?;
        return Ok(());
    };
    match process::request_stop(s.pid, name) {
        Ok(()) => {}
        // Windows: a starting supervisor makes its stop event before it launches the VM,
        // so without one there is nothing yet to shut down cleanly. (A running one's event
        // missing means another session's namespace: that is an error, below.)
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && s.state == MachineState::Starting => {
            let _ = process::kill(s.pid);
        }
        // It may have ended on its own meanwhile.
        Err(e) if s.supervisor_alive() => {
            return Err(e).with_context(|| {
                format!("asking machine {name}'s supervisor (pid {}) to stop", s.pid)
            });
        }
        Err(_) => {}
    }
    let deadline = Instant::now() + timeout + grace;
    while s.supervisor_alive() {
        if Instant::now() > deadline {
            // The VM goes with its supervisor (see `berth_platform::process`);
            // VMM processes are killed too in case the supervisor hangs.
            let _ = process::kill(s.pid);
            for pid in &s.vmm_pids {
                let _ = process::kill(*pid);
            }
            bail!("machine {name} did not stop within {timeout:?}; killed");
        }
        std::thread::sleep(POLL);
    }
    writeln!(out, "machine {name} stopped")?;
    Ok(())
}

fn rm(name: &str, force: bool) -> Result<()> {
    let d = dir(name)?;
    if !d.dir.exists() {
        bail!("machine {name:?} does not exist");
    }
    if is_running(&d) {
        if !force {
            bail!("machine {name} is running; stop it first or use --force");
        }
        stop(name, Duration::from_secs(30))?;
    }
    std::fs::remove_dir_all(&d.dir).with_context(|| format!("removing {}", d.dir.display()))?;
    println!("machine {name} removed");
    Ok(())
}

fn status(name: &str, json: bool) -> Result<()> {
    let d = dir(name)?;
    let config = d.load()?;
    let s = current_status(&d);
    if json {
        let v = serde_json::json!({
            "name": config.name,
            "config": config,
            "status": s,
            "endpoint": endpoint(&d, name)?,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let state = s.as_ref().map(|s| s.state).unwrap_or(MachineState::Stopped);
    println!("name:     {}", config.name);
    println!("state:    {}", format!("{state:?}").to_lowercase());
    println!("cpus:     {}", config.cpus);
    println!("memory:   {} MiB", config.memory_mib);
    println!("disk:     {} GiB", config.disk_gib);
    if let Some(s) = &s {
        if s.state == MachineState::Running {
            println!("endpoint: {}", endpoint(&d, name)?);
            if let Some(ms) = s.ready_ms {
                println!("boot:     {ms} ms to engine ready");
            }
            let ports: Vec<String> = s
                .ports
                .iter()
                .map(|p| format!("127.0.0.1:{}/{:?}", p.port, p.proto).to_lowercase())
                .collect();
            if !ports.is_empty() {
                println!("ports:    {}", ports.join(", "));
            }
        }
        if let Some(e) = &s.error {
            println!("error:    {e}");
        }
    }
    Ok(())
}

fn logs(name: &str) -> Result<()> {
    let d = dir(name)?;
    d.load()?;
    let path = d.console_log();
    match std::fs::read(&path) {
        Ok(bytes) => {
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod share_tests {
    use super::split_share;

    #[test]
    fn share_specs_with_and_without_drives() {
        assert_eq!(split_share("/src", false), ("/src", "/src".to_string()));
        assert_eq!(
            split_share("/src:/app", false),
            ("/src", "/app".to_string())
        );
        // A Unix path that merely looks like a drive is split as before.
        assert_eq!(split_share("c:/app", false), ("c", "/app".to_string()));
        assert_eq!(
            split_share(r"C:\src:/app", true),
            (r"C:\src", "/app".to_string())
        );
        assert_eq!(
            split_share(r"C:\src\my app", true),
            (r"C:\src\my app", "/c/src/my app".to_string())
        );
        assert_eq!(split_share(r"D:\", true), (r"D:\", "/d/".to_string()));
        assert_eq!(split_share("/src:/app", true), ("/src", "/app".to_string()));
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    /// A private directory removed on drop (the crate has no tempfile dependency).
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("berth-machine-test-{}-{n}", std::process::id()));
            std::fs::create_dir(&dir).expect("create temp dir");
            Self(dir)
        }
        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A machine whose "supervisor" is `script` (sh), recorded as running;
    /// the child is reaped by a thread so its pid disappears when it ends.
    fn fake_machine(
        tmp: &std::path::Path,
        name: &str,
        script: &str,
    ) -> (
        MachineDir,
        u32,
        std::thread::JoinHandle<std::process::ExitStatus>,
    ) {
        let d = MachineDir::new(tmp, name).expect("dir");
        std::fs::create_dir_all(&d.dir).expect("mkdir");
        d.save(&MachineConfig::new(name).expect("config"))
            .expect("save");
        let mut cmd = Process::new("sh");
        cmd.args(["-c", script]).current_dir(tmp);
        let mut child = process::spawn_detached(&mut cmd).expect("spawn sh");
        let pid = child.id();
        d.save_status(&MachineStatus {
            state: MachineState::Running,
            pid,
            vmm_pids: Vec::new(),
            ready_ms: None,
            error: None,
            ports: Vec::new(),
        })
        .expect("status");
        let reaper = std::thread::spawn(move || child.wait().expect("wait"));
        (d, pid, reaper)
    }

    #[test]
    fn stop_asks_the_supervisor_and_waits_for_it() {
        let tmp = TempDir::new();
        // exec: the shell becomes sleep, which SIGTERM ends.
        let (d, pid, reaper) = fake_machine(tmp.path(), "stopme", "exec sleep 30");
        let mut out = Vec::new();
        stop_machine(
            &d,
            "stopme",
            Duration::from_secs(20),
            Duration::ZERO,
            &mut out,
        )
        .expect("stop");
        assert_eq!(String::from_utf8_lossy(&out), "machine stopme stopped\n");
        assert_eq!(reaper.join().expect("reaper").signal(), Some(libc::SIGTERM));
        assert!(!process::process_alive(pid));
        // The status now names a dead supervisor: not running.
        let mut out = Vec::new();
        stop_machine(
            &d,
            "stopme",
            Duration::from_secs(1),
            Duration::ZERO,
            &mut out,
        )
        .expect("second stop");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "machine stopme is not running\n"
        );
        assert_eq!(
            current_status(&d).map(|s| s.state),
            Some(MachineState::Failed)
        );
    }

    #[test]
    fn a_supervisor_that_ignores_the_request_is_killed() {
        let tmp = TempDir::new();
        let (d, pid, reaper) = fake_machine(
            tmp.path(),
            "stubborn",
            "trap '' TERM; : > trapped; while :; do sleep 0.1; done",
        );
        // The request must come after the trap, or the shell just dies of it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tmp.path().join("trapped").exists() {
            assert!(
                Instant::now() < deadline,
                "the fake supervisor did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut out = Vec::new();
        let err = stop_machine(
            &d,
            "stubborn",
            Duration::from_millis(300),
            Duration::ZERO,
            &mut out,
        )
        .expect_err("killed");
        assert!(err.to_string().contains("did not stop within"), "{err}");
        assert_eq!(reaper.join().expect("reaper").signal(), Some(libc::SIGKILL));
        assert!(!process::process_alive(pid));
    }
}
