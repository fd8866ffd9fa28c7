//! The machine's supervisor (`berth machine serve NAME`, started detached by
//! `berth machine start`): boots the VM, waits for the agent, serves the host
//! endpoint and the port forwards, and on a stop request (SIGTERM; on
//! Windows its stop event) shuts the guest down cleanly. The VM dies with it
//! (`PR_SET_PDEATHSIG` for QEMU's processes; on Windows the compute system
//! ends with the supervisor's handle), so a killed supervisor leaves nothing
//! running. The OS-specific parts: [`berth_platform::process`] and
//! [`super::api_endpoint`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use berth_platform::clock::ClockWatch;
use berth_platform::forward::PortForwarder;
use berth_platform::hypervisor::{self, LaunchSpec, Vm};
use berth_platform::machine::{MachineConfig, MachineDir, MachineState, MachineStatus};
use berth_platform::process::StopRequests;
use berth_platform::protocol::{ControlReply, ControlRequest, CONTROL_PORT, READY_PORT};
use berth_platform::vsock::{HostVsock, VsockStream};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{api_endpoint, image};

/// How long a control request (ping, set_time, shutdown) may take to connect and answer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the boot wait checks whether the VM died or the deadline passed.
const EXIT_POLL: Duration = Duration::from_millis(200);
/// How long the guest gets to power off after a shutdown request.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(45);

struct Supervisor {
    dir: MachineDir,
    status: MachineStatus,
}

impl Supervisor {
    fn set(&mut self, state: MachineState, error: Option<String>) {
        self.status.state = state;
        if error.is_some() {
            self.status.error = error;
        }
        if let Err(e) = self.dir.save_status(&self.status) {
            eprintln!("berth machine: writing status: {e}");
        }
    }
}

pub fn run(dir: &MachineDir, boot_timeout: Duration) -> Result<()> {
    let config = dir.load()?;
    let mut sup = Supervisor {
        dir: dir.clone(),
        status: MachineStatus {
            state: MachineState::Starting,
            pid: std::process::id(),
            vmm_pids: Vec::new(),
            ready_ms: None,
            error: None,
            ports: Vec::new(),
        },
    };
    sup.set(MachineState::Starting, None);
    // One thread: the VMM's parent-death signal follows the thread that
    // spawned it, so it must be the thread that lives as long as we do.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(supervise(&mut sup, &config, boot_timeout));
    for path in [dir.api_socket(), dir.vsock_socket(), dir.vhost_socket()] {
        let _ = std::fs::remove_file(path);
    }
    match &result {
        Ok(()) => sup.set(MachineState::Stopped, None),
        Err(e) => {
            eprintln!("berth machine: {e:#}");
            sup.set(MachineState::Failed, Some(format!("{e:#}")));
        }
    }
    result
}

/// The kernel command line; the backend adds the shares, with the filesystem it attached
/// them as.
fn boot_cmdline(config: &MachineConfig) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut cmdline = format!(
        "console={} reboot=t panic=-1 quiet loglevel=4 rdinit=/init {}={}.{:09}",
        config.arch.serial_console(),
        berth_platform::protocol::CMDLINE_TIME,
        now.as_secs(),
        now.subsec_nanos()
    );
    if !config.host_ports.is_empty() {
        let ports: Vec<String> = config.host_ports.iter().map(u16::to_string).collect();
        cmdline.push_str(&format!(
            " {}={}",
            berth_platform::protocol::CMDLINE_HOST_PORTS,
            ports.join(",")
        ));
    }
    cmdline
}

async fn supervise(
    sup: &mut Supervisor,
    config: &MachineConfig,
    boot_timeout: Duration,
) -> Result<()> {
    let (kernel, initrd) = match (&config.kernel, &config.initrd) {
        (Some(k), Some(i)) => (k.clone(), i.clone()),
        _ => {
            let img = image::ensure(config.arch)?;
            (img.kernel, img.initrd)
        }
    };
    // Before the VM runs, so a stop request during the launch is not lost.
    let mut stop = StopRequests::new(&config.name).context("listening for stop requests")?;
    let backend = hypervisor::probe()
        .into_iter()
        .next()
        .context("no hypervisor backend is available on this host")?;
    let shares: Vec<_> = config
        .shares
        .iter()
        .enumerate()
        .map(|(i, s)| (hypervisor::share_tag(i), s.clone()))
        .collect();
    let d = &sup.dir.clone();
    let spec = LaunchSpec {
        kernel,
        initrd,
        cmdline: boot_cmdline(config),
        cpus: config.cpus,
        memory_mib: config.memory_mib,
        disk: Some(d.disk()),
        cid: config.cid,
        vhost_socket: d.vhost_socket(),
        vsock_socket: d.vsock_socket(),
        console_log: d.console_log(),
        vmm_log: d.supervisor_log(),
        shares,
        share_fs: config.share_fs,
        hostfwd: config.hostfwd.clone(),
        outbound_network: config.outbound_network,
        accel: config.accel,
        arch: config.arch,
    };
    let _ = std::fs::remove_file(d.console_log());
    let launched = Instant::now();
    let mut vm = backend.launch(&spec)?;
    eprintln!(
        "berth machine: VM processes up in {} ms",
        launched.elapsed().as_millis()
    );
    sup.status.vmm_pids = vm.pids();
    sup.set(MachineState::Starting, None);
    let vsock = vm.vsock();
    // Before the boot, so a taken port fails the start at once.
    let host_services = match serve_host_services(&vsock, &config.host_ports) {
        Ok(task) => task,
        Err(e) => {
            vm.kill();
            return Err(e);
        }
    };

    // The agent connects here once its API listens. The host must not probe the guest's
    // ports before that: see `READY_PORT`.
    let ready_listener = match vsock.listen(READY_PORT) {
        Ok(l) => l,
        Err(e) => {
            vm.kill();
            return Err(e).context("listening for the guest agent's ready report");
        }
    };

    // Wait for the agent's report, the VM to die, a signal, or the deadline.
    let deadline = launched + boot_timeout;
    let ping = loop {
        if let Some(exit) = vm.try_exited() {
            bail!(
                "the VM stopped during boot: {exit}; console: {}",
                d.console_log().display()
            );
        }
        if Instant::now() > deadline {
            vm.kill();
            bail!(
                "the guest agent did not report ready (a connection to host vsock port {READY_PORT}) within {boot_timeout:?}; last console line: {:?}; console: {}",
                last_line(&d.console_log()),
                d.console_log().display()
            );
        }
        tokio::select! {
            _ = stop.wait() => { vm.kill(); bail!("stopped during boot"); }
            accepted = ready_listener.accept() => match accepted {
                Ok(stream) => match read_reply(stream).await {
                    Ok(reply) => break reply,
                    Err(e) => eprintln!("berth machine: a bad ready report from the guest: {e:#}"),
                },
                Err(e) => eprintln!("berth machine: accepting the guest's ready report: {e}"),
            },
            _ = tokio::time::sleep(EXIT_POLL) => {}
        }
    };
    drop(ready_listener);
    let ready = launched.elapsed();
    sup.status.ready_ms = Some(ready.as_millis() as u64);
    // The clock from the command line is the launch time; the boot took a while since.
    if let Err(e) = control_request(&vsock, &set_time_now()).await {
        eprintln!("berth machine: setting the guest clock: {e:#}");
    }
    eprintln!(
        "berth machine: agent {} answered {} ms after launch (guest uptime {} ms at API ready)",
        ping.version.unwrap_or_default(),
        ready.as_millis(),
        ping.ready_ms.unwrap_or(0)
    );

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let endpoint = api_endpoint::serve(d, &config.name, vsock.clone(), async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    })?;
    sup.set(MachineState::Running, None);

    // Port updates arrive on a watch stream from the agent.
    let (ports_tx, mut ports_rx) = tokio::sync::mpsc::channel::<BTreeSet<_>>(8);
    let watcher = tokio::spawn(watch_ports(vsock.clone(), ports_tx));
    let mut forwarder = PortForwarder::new(vsock.clone());
    let mut exit_check = tokio::time::interval(Duration::from_millis(200));
    let mut clock_check = tokio::time::interval(CLOCK_CHECK);
    let mut clock = ClockWatch::new(SystemTime::now(), Instant::now(), CLOCK_TOLERANCE);

    let outcome: Result<()> = loop {
        tokio::select! {
            _ = stop.wait() => break Ok(()),
            Some(ports) = ports_rx.recv() => {
                forwarder.update(&ports).await;
                for (p, e) in &forwarder.failed {
                    eprintln!("berth machine: cannot forward {}/{:?}: {e}", p.port, p.proto);
                }
                sup.status.ports = forwarder.forwarded().into_iter().collect();
                sup.set(MachineState::Running, None);
            }
            _ = clock_check.tick() => {
                if clock.jumped(SystemTime::now(), Instant::now()) {
                    // The host slept (the VM with it) or its clock was stepped.
                    match control_request(&vsock, &set_time_now()).await {
                        Ok(_) => eprintln!("berth machine: host clock jumped; guest clock set again"),
                        Err(e) => eprintln!("berth machine: setting the guest clock: {e:#}"),
                    }
                }
            }
            _ = exit_check.tick() => {
                if let Some(exit) = vm.try_exited() {
                    break Err(anyhow::anyhow!("the VM stopped unexpectedly: {exit}"));
                }
            }
        }
    };
    watcher.abort();
    if let Some(task) = host_services {
        task.abort();
    }
    forwarder.close_all();
    stop_tx.send_replace(true);
    let _ = endpoint.await;
    if outcome.is_err() {
        vm.kill();
        return outcome;
    }
    sup.set(MachineState::Stopping, None);
    shutdown(&vsock, vm.as_mut()).await;
    Ok(())
}

/// How often the host's clocks are compared, and by how much they may disagree.
const CLOCK_CHECK: Duration = Duration::from_secs(5);
const CLOCK_TOLERANCE: Duration = Duration::from_secs(2);

/// The host's wall clock, as a request to set the guest's.
fn set_time_now() -> ControlRequest {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    ControlRequest::SetTime {
        unix_secs: now.as_secs(),
        nanos: now.subsec_nanos(),
    }
}

/// Answers the guest's connections to the host ports the machine allows (none: no listener).
fn serve_host_services(
    vsock: &HostVsock,
    ports: &[u16],
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    if ports.is_empty() {
        return Ok(None);
    }
    let listener = vsock
        .listen(berth_platform::protocol::HOST_SERVICE_PORT)
        .context("listening for the guest's host-service connections")?;
    let allowed: Arc<BTreeSet<u16>> = Arc::new(ports.iter().copied().collect());
    Ok(Some(tokio::spawn(async move {
        while let Ok(guest) = listener.accept().await {
            let allowed = Arc::clone(&allowed);
            tokio::spawn(async move {
                if let Err(e) = berth_platform::host_services::answer(guest, &allowed).await {
                    eprintln!("berth machine: host service: {e}");
                }
            });
        }
    })))
}

async fn shutdown(vsock: &HostVsock, vm: &mut dyn Vm) {
    if let Err(e) = control_request(vsock, &ControlRequest::Shutdown).await {
        eprintln!("berth machine: asking the guest to shut down: {e:#}; killing it");
        vm.kill();
        return;
    }
    let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
    while vm.try_exited().is_none() {
        if Instant::now() > deadline {
            eprintln!("berth machine: the guest did not power off within {SHUTDOWN_TIMEOUT:?}; killing it");
            vm.kill();
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn open_control(vsock: &HostVsock) -> Result<VsockStream> {
    Ok(vsock.connect(CONTROL_PORT, CONTROL_TIMEOUT).await?)
}

/// The last non-empty line of the console log, to name where a boot stopped.
fn last_line(path: &std::path::Path) -> String {
    std::fs::read(path)
        .map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default()
}

/// One request, one reply line.
pub async fn control_request(vsock: &HostVsock, request: &ControlRequest) -> Result<ControlReply> {
    let stream = open_control(vsock).await?;
    let (r, mut w) = tokio::io::split(stream);
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    read_reply(r).await
}

/// One JSON reply line, within [`CONTROL_TIMEOUT`].
async fn read_reply(r: impl tokio::io::AsyncRead + Unpin) -> Result<ControlReply> {
    let mut lines = BufReader::new(r).lines();
    let text = tokio::time::timeout(CONTROL_TIMEOUT, lines.next_line())
        .await
        .context("the agent did not reply in time")??
        .context("the agent closed the control connection")?;
    let reply: ControlReply = serde_json::from_str(&text).context("malformed agent reply")?;
    if !reply.ok {
        bail!("the agent refused: {}", reply.error.unwrap_or_default());
    }
    Ok(reply)
}

async fn watch_ports(
    vsock: HostVsock,
    tx: tokio::sync::mpsc::Sender<BTreeSet<berth_platform::protocol::ForwardedPort>>,
) {
    loop {
        if let Ok(stream) = open_control(&vsock).await {
            let (r, mut w) = tokio::io::split(stream);
            let mut line = serde_json::to_vec(&ControlRequest::WatchPorts).unwrap_or_default();
            line.push(b'\n');
            if w.write_all(&line).await.is_ok() {
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(text)) = lines.next_line().await {
                    if let Ok(ControlReply { ports: Some(p), .. }) = serde_json::from_str(&text) {
                        if tx.send(p.into_iter().collect()).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        // The stream ended (agent restarting?): retry shortly.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
