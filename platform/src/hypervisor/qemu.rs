//! QEMU `microvm` on Linux: TCG by default (or KVM when the machine asks for
//! it), memory in a shared memfd so the `vhost-device-vsock` backend can
//! reach the vsock rings, vsock exposed to the host as hybrid vsock.
//!
//! Shared directories are virtiofs, one `virtiofsd` per share (the same
//! guest path as Virtualization.framework's, and faster than 9p), or 9p when
//! virtiofsd is not installed or the machine asks for it.
//!
//! Every process gets `PR_SET_PDEATHSIG`, so they die with the supervisor
//! that launched them even if it is killed.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Capabilities, Hypervisor, HypervisorError, LaunchSpec, Vm};
use crate::machine::{Accel, GuestArch, Share};
use crate::protocol::{ShareFs, StaticNet, CMDLINE_NET};
use crate::vsock::hybrid::HybridVsock;
use crate::vsock::HostVsock;

/// How long the vsock backend gets to create its socket.
const BACKEND_READY: Duration = Duration::from_secs(10);

pub struct Qemu {
    qemu: PathBuf,
    vhost_vsock: PathBuf,
    /// passt, the user-mode network backend for outbound traffic (optional
    /// until a machine with outbound networking is launched).
    passt: Option<PathBuf>,
    /// virtiofsd (the Rust one from crates.io); without it shares are 9p.
    virtiofsd: Option<PathBuf>,
}

/// The guest's addresses on its outbound network (what the agent configures on eth0; the
/// same as QEMU's user networking uses).
const GUEST_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const GUEST_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const GUEST_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);

/// The guest's eth0 as passt is told to serve it (also QEMU's own user
/// network's defaults). Under passt the guest is given it on the command line
/// and needs no DHCP exchange at boot.
fn guest_net() -> StaticNet {
    StaticNet {
        address: GUEST_ADDRESS,
        prefix: 24,
        gateway: GUEST_GATEWAY,
        dns: vec![GUEST_DNS],
    }
}

/// passt runs as this user when started as root (it refuses to keep root's privileges).
const PASST_UID: u32 = 65534;

/// The directory of a machine's passt socket, next to its vhost-user socket: passt creates
/// the socket after dropping to [`PASST_UID`], so the directory is that user's alone.
fn passt_dir(spec: &LaunchSpec) -> PathBuf {
    spec.vhost_socket.with_file_name("passt")
}

fn passt_socket(spec: &LaunchSpec) -> PathBuf {
    passt_dir(spec).join("passt.sock")
}

/// passt's arguments: the guest gets fixed addresses, DNS queries to `GUEST_DNS` go to the
/// host's resolver, and `--no-map-gw` keeps the host's loopback out of the guest's reach (only
/// the machine's host ports are, over vsock).
fn passt_args(spec: &LaunchSpec, as_root: bool) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    if as_root {
        args.extend(["--runas".into(), format!("{PASST_UID}:{PASST_UID}")]);
    }
    let net = guest_net();
    let rest = [
        "--foreground",
        "--quiet",
        "--ipv4-only",
        "--no-map-gw",
        "--socket",
        &passt_socket(spec).display().to_string(),
        "--address",
        &net.address.to_string(),
        "--netmask",
        &net.prefix.to_string(),
        "--gateway",
        &net.gateway.to_string(),
        "--dns-forward",
        &GUEST_DNS.to_string(),
    ];
    args.extend(rest.iter().map(|s| s.to_string()));
    args
}

/// The vhost-user socket of a share's virtiofsd, next to the vsock backend's.
fn virtiofs_socket(spec: &LaunchSpec, tag: &str) -> PathBuf {
    spec.vhost_socket
        .with_file_name(format!("{tag}.virtiofs.sock"))
}

/// virtiofsd's arguments for one share.
/// - `--cache auto`: the host edits shared files while containers read them;
///   `auto` revalidates on open and after a 1 s attribute timeout, so a file the host
///   rewrote is read afresh (`always` could serve stale pages; `never` refuses
///   mmap, so binaries on a share could not run).
/// - No `--xattr`: 9p never offered them, and with a root virtiofsd the guest
///   could set `security.*`/`trusted.*` attributes on host files.
/// - `--announce-submounts`: mounts under the shared directory become submounts
///   in the guest with their own device numbers, so inode numbers never clash.
/// - As root the default namespace sandbox (virtiofsd pivots into the shared
///   directory); a user cannot create those namespaces, so there is none then.
pub fn virtiofsd_args(socket: &Path, share: &Share, as_root: bool) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--socket-path".into(),
        socket.display().to_string(),
        "--shared-dir".into(),
        share.host.display().to_string(),
        "--cache".into(),
        "auto".into(),
        "--announce-submounts".into(),
        "--log-level".into(),
        "warn".into(),
        "--sandbox".into(),
    ];
    args.push(if as_root { "namespace" } else { "none" }.into());
    args
}

/// The transport for the shares: what the machine asked for, or virtiofs
/// when virtiofsd is installed and 9p otherwise.
fn share_fs(requested: Option<ShareFs>, have_virtiofsd: bool) -> Result<ShareFs, HypervisorError> {
    match requested {
        Some(ShareFs::Virtiofs) if !have_virtiofsd => Err(HypervisorError::Missing {
            what: "virtiofsd (the machine shares directories over virtiofs)".into(),
            hint: VIRTIOFSD_HINT.into(),
        }),
        Some(fs) => Ok(fs),
        None if have_virtiofsd => Ok(ShareFs::Virtiofs),
        None => Ok(ShareFs::NineP),
    }
}

const VIRTIOFSD_HINT: &str =
    "install it with `cargo install --locked virtiofsd` (needs libcap-ng-dev and libseccomp-dev) or set BERTH_VIRTIOFSD";

/// Whether the VM gets the passt network device (hostfwd benchmarks use QEMU's own).
fn wants_passt(spec: &LaunchSpec) -> bool {
    spec.outbound_network && spec.hostfwd.is_empty()
}

impl Qemu {
    /// Finds `qemu-system-x86_64` and `vhost-device-vsock` (`$BERTH_QEMU`,
    /// `$BERTH_VHOST_VSOCK`, `$PATH`, `~/.cargo/bin`), and passt and
    /// virtiofsd if they are there (`$BERTH_PASST`, `$BERTH_VIRTIOFSD`).
    pub fn locate() -> Result<Self, HypervisorError> {
        let qemu = find_qemu(GuestArch::host())?;
        let vhost_vsock = find_program("BERTH_VHOST_VSOCK", "vhost-device-vsock").ok_or_else(
            || HypervisorError::Missing {
                what: "vhost-device-vsock".into(),
                hint: "install it with `cargo install --locked vhost-device-vsock` or set BERTH_VHOST_VSOCK"
                    .into(),
            },
        )?;
        let passt = find_program("BERTH_PASST", "passt");
        let virtiofsd = find_program("BERTH_VIRTIOFSD", "virtiofsd");
        Ok(Self {
            qemu,
            vhost_vsock,
            passt,
            virtiofsd,
        })
    }
}

/// `qemu-system-<arch>` (`$BERTH_QEMU` for the host's architecture, `$BERTH_QEMU_<ARCH>`).
fn find_qemu(arch: GuestArch) -> Result<PathBuf, HypervisorError> {
    let (name, package) = match arch {
        GuestArch::X86_64 => ("qemu-system-x86_64", "qemu-system-x86"),
        GuestArch::Aarch64 => ("qemu-system-aarch64", "qemu-system-arm"),
    };
    let env = format!("BERTH_QEMU_{}", arch.debian().to_uppercase());
    let found = if arch == GuestArch::host() && std::env::var_os("BERTH_QEMU").is_some() {
        find_program("BERTH_QEMU", name)
    } else {
        find_program(&env, name)
    };
    found.ok_or_else(|| HypervisorError::Missing {
        what: name.into(),
        hint: format!("install it (Debian: apt-get install {package}) or set {env}"),
    })
}

fn find_program(env: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Kernel parameters a TCG guest needs: under emulation (and more so on a
/// busy host) the kernel's TSC calibration against the PIT fails, and
/// without a TSC frequency it never gets a working clock and hangs in boot.
/// TCG's guest TSC is the host's, so its frequency is given directly.
pub fn tcg_kernel_args(host_tsc_khz: u64) -> String {
    // Debian kernels tick at 250 Hz.
    let lpj = host_tsc_khz * 1000 / 250;
    format!("tsc_early_khz={host_tsc_khz} lpj={lpj} tsc=reliable")
}

/// The host's TSC frequency estimate from `/proc/cpuinfo` (kHz).
fn host_tsc_khz() -> u64 {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map(|mhz| (mhz * 1000.0) as u64)
        .filter(|&khz| khz > 0)
        .unwrap_or(2_000_000)
}

/// QEMU's arguments for `spec` with its shares over `share_fs` (pure, so it
/// is tested without QEMU).
pub fn qemu_args(spec: &LaunchSpec, share_fs: ShareFs) -> Vec<String> {
    let mem = format!("{}M", spec.memory_mib);
    let accel = match spec.accel {
        Accel::Kvm => "kvm",
        Accel::Auto | Accel::Tcg => "tcg",
    };
    // Both machines put virtio devices on MMIO, so the `-device` lines below are the same.
    // Emulated x86_64 hides ERMS and FSRM: with them the kernel copies with `rep movsb`,
    // which TCG runs one byte per loop turn; without, with `rep movsq` or unrolled moves.
    // That doubles every copy-bound path (vsock forwarding: 73 → 145 MB/s).
    // Emulated aarch64 runs a Cortex-A72: `max` adds pointer authentication and SVE, which
    // TCG computes slowly for every function call.
    let (machine, cpu) = match (spec.arch, accel) {
        (GuestArch::X86_64, "kvm") => ("microvm,memory-backend=mem", "host"),
        (GuestArch::X86_64, _) => ("microvm,memory-backend=mem", "max,-erms,-fsrm"),
        (GuestArch::Aarch64, "kvm") => ("virt,memory-backend=mem", "host"),
        (GuestArch::Aarch64, _) => ("virt,memory-backend=mem", "cortex-a72"),
    };
    let mut a: Vec<String> = vec![
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-nographic".into(),
        // The guest powers off by rebooting; QEMU then exits.
        "-no-reboot".into(),
        "-M".into(),
        machine.into(),
        "-accel".into(),
        accel.into(),
        "-cpu".into(),
        cpu.into(),
        "-smp".into(),
        spec.cpus.to_string(),
        "-m".into(),
        mem.clone(),
        "-object".into(),
        format!("memory-backend-memfd,id=mem,size={mem},share=on"),
        "-kernel".into(),
        spec.kernel.display().to_string(),
        "-initrd".into(),
        spec.initrd.display().to_string(),
        "-append".into(),
        {
            let mut cmdline = super::with_shares(&spec.cmdline, &spec.shares, share_fs);
            // QEMU's own user network (kept for comparisons) answers DHCP as
            // Virtualization.framework's NAT does, and the guest asks it.
            if wants_passt(spec) {
                cmdline.push_str(&format!(" {CMDLINE_NET}={}", guest_net().cmdline_value()));
            }
            if accel == "tcg" && spec.arch == GuestArch::X86_64 {
                format!("{cmdline} {}", tcg_kernel_args(host_tsc_khz()))
            } else {
                cmdline
            }
        },
        "-chardev".into(),
        format!("file,id=con,path={}", spec.console_log.display()),
        "-serial".into(),
        "chardev:con".into(),
        "-chardev".into(),
        format!("socket,id=vsock,path={}", spec.vhost_socket.display()),
        "-device".into(),
        "vhost-user-vsock-device,chardev=vsock".into(),
    ];
    if let Some(disk) = &spec.disk {
        a.extend([
            "-drive".into(),
            format!(
                "id=data,file={},format=raw,if=none,aio=threads",
                disk.display()
            ),
            "-device".into(),
            "virtio-blk-device,drive=data".into(),
        ]);
    }
    for (tag, share) in &spec.shares {
        match share_fs {
            // vhost-user: virtiofsd reaches the rings in the shared memfd.
            ShareFs::Virtiofs => a.extend([
                "-chardev".into(),
                format!(
                    "socket,id=fs-{tag},path={}",
                    virtiofs_socket(spec, tag).display()
                ),
                "-device".into(),
                format!("vhost-user-fs-device,chardev=fs-{tag},tag={tag},queue-size=1024"),
            ]),
            ShareFs::NineP => a.extend([
                "-fsdev".into(),
                format!(
                    "local,id={tag},path={},security_model=none",
                    share.host.display()
                ),
                "-device".into(),
                format!("virtio-9p-device,fsdev={tag},mount_tag={tag}"),
            ]),
        }
    }
    if wants_passt(spec) {
        a.extend([
            "-netdev".into(),
            format!(
                "stream,id=net0,server=off,addr.type=unix,addr.path={}",
                passt_socket(spec).display()
            ),
            "-device".into(),
            "virtio-net-device,netdev=net0".into(),
        ]);
    } else if !spec.hostfwd.is_empty() {
        // restrict=on: the guest reaches nothing outside; hostfwd still works.
        let mut netdev = "user,id=net0,restrict=on".to_string();
        for rule in &spec.hostfwd {
            netdev.push_str(",hostfwd=");
            netdev.push_str(rule);
        }
        a.extend([
            "-netdev".into(),
            netdev,
            "-device".into(),
            "virtio-net-device,netdev=net0".into(),
        ]);
    }
    a
}

fn log_file(path: &Path) -> Result<std::fs::File, HypervisorError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| HypervisorError::Io {
            what: "opening",
            path: path.to_path_buf(),
            source,
        })
}

fn spawn(program: &Path, args: &[String], log: &Path) -> Result<Child, HypervisorError> {
    let out = log_file(log)?;
    let err = out.try_clone().map_err(|source| HypervisorError::Io {
        what: "duplicating",
        path: log.to_path_buf(),
        source,
    })?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: the closure only calls prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|source| HypervisorError::Spawn {
        program: program.display().to_string(),
        source,
    })
}

fn describe_exit(child: &mut Child) -> Option<String> {
    match child.try_wait() {
        Ok(Some(status)) => Some(status.to_string()),
        Ok(None) => None,
        Err(e) => Some(format!("unknown ({e})")),
    }
}

/// Waits until `child` has created `socket`; kills it if it exits or takes
/// longer than [`BACKEND_READY`].
/// The credit vhost-device-vsock gives the guest towards each host connection (its
/// `--tx-buffer-size`; 64 KiB by default). A larger window keeps the guest sending while the
/// host drains: port forwarding went from ~1.5x to ~2.2x QEMU's `hostfwd` at 320 KiB
/// (docs/vm.md). It must stay below 4/3 of 256 KiB: the backend tells the guest about freed
/// credit only once 3/4 of the window is unreported, and the 6.1 guest never has more than
/// 256 KiB in flight, so at 384 KiB both sides wait for each other (a forward stalls for good).
const VSOCK_TX_BUFFER: u32 = 320 * 1024;

fn vhost_vsock_args(spec: &LaunchSpec) -> Vec<String> {
    vec![
        "--guest-cid".to_string(),
        spec.cid.to_string(),
        "--socket".into(),
        spec.vhost_socket.display().to_string(),
        "--uds-path".into(),
        spec.vsock_socket.display().to_string(),
        "--tx-buffer-size".into(),
        VSOCK_TX_BUFFER.to_string(),
    ]
}

fn wait_for_socket(
    child: &mut Child,
    socket: &Path,
    program: &str,
    log: &Path,
) -> Result<(), HypervisorError> {
    let deadline = Instant::now() + BACKEND_READY;
    while !socket.exists() {
        if let Some(status) = describe_exit(child) {
            return Err(HypervisorError::EarlyExit {
                program: program.into(),
                status,
                log: log.display().to_string(),
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HypervisorError::Timeout {
                what: format!("the {program} socket {}", socket.display()),
                timeout: BACKEND_READY,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn kill_all(children: impl IntoIterator<Item = Child>) {
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Qemu {
    /// Starts one virtiofsd per share and waits for their sockets.
    fn start_virtiofsd(&self, spec: &LaunchSpec) -> Result<Vec<Child>, HypervisorError> {
        let program = self
            .virtiofsd
            .as_ref()
            .ok_or_else(|| HypervisorError::Missing {
                what: "virtiofsd".into(),
                hint: VIRTIOFSD_HINT.into(),
            })?;
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        let mut started = Vec::new();
        for (tag, share) in &spec.shares {
            let socket = virtiofs_socket(spec, tag);
            let _ = std::fs::remove_file(&socket);
            let run = spawn(
                program,
                &virtiofsd_args(&socket, share, as_root),
                &spec.vmm_log,
            )
            .and_then(|mut child| {
                wait_for_socket(&mut child, &socket, "virtiofsd", &spec.vmm_log)?;
                Ok(child)
            });
            match run {
                Ok(child) => started.push(child),
                Err(e) => {
                    kill_all(started);
                    return Err(e);
                }
            }
        }
        Ok(started)
    }

    /// Starts passt and waits for its socket.
    fn start_passt(&self, spec: &LaunchSpec) -> Result<Child, HypervisorError> {
        let program = self.passt.as_ref().ok_or_else(|| HypervisorError::Missing {
            what: "passt (the VM's outbound network)".into(),
            hint: "install it (Debian: apt-get install passt), set BERTH_PASST, or create the machine with --no-network".into(),
        })?;
        let socket = passt_socket(spec);
        let dir = passt_dir(spec);
        let _ = std::fs::remove_dir_all(&dir);
        let io = |what| {
            let path = dir.clone();
            move |source| HypervisorError::Io { what, path, source }
        };
        std::fs::create_dir(&dir).map_err(io("creating"))?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io("setting the mode of"))?;
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        if as_root {
            std::os::unix::fs::chown(&dir, Some(PASST_UID), Some(PASST_UID))
                .map_err(io("handing over"))?;
        }
        let mut passt = spawn(program, &passt_args(spec, as_root), &spec.vmm_log)?;
        wait_for_socket(&mut passt, &socket, "passt", &spec.vmm_log)?;
        Ok(passt)
    }
}

impl Hypervisor for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            vsock: true,
            shares: true,
            user_net_hostfwd: true,
        }
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn Vm>, HypervisorError> {
        for (what, path) in [("kernel", &spec.kernel), ("initrd", &spec.initrd)] {
            if !path.is_file() {
                return Err(HypervisorError::Missing {
                    what: format!("the {what} {}", path.display()),
                    hint: "build the guest image (`berth machine init` does) or fix the machine's kernel/initrd setting".into(),
                });
            }
        }
        let qemu_program = if spec.arch == GuestArch::host() {
            self.qemu.clone()
        } else {
            find_qemu(spec.arch)?
        };
        let fs = share_fs(spec.share_fs, self.virtiofsd.is_some())?;
        if fs == ShareFs::NineP && spec.share_fs.is_none() && !spec.shares.is_empty() {
            eprintln!("berth machine: virtiofsd not found, sharing directories over 9p (slower); {VIRTIOFSD_HINT}");
        }
        let needs_virtiofsd = fs == ShareFs::Virtiofs && !spec.shares.is_empty();
        for path in [&spec.vhost_socket, &spec.vsock_socket] {
            let _ = std::fs::remove_file(path);
        }
        let mut backend = spawn(&self.vhost_vsock, &vhost_vsock_args(spec), &spec.vmm_log)?;
        wait_for_socket(
            &mut backend,
            &spec.vhost_socket,
            "vhost-device-vsock",
            &spec.vmm_log,
        )?;
        let passt = if wants_passt(spec) {
            match self.start_passt(spec) {
                Ok(p) => Some(p),
                Err(e) => {
                    kill_all([backend]);
                    return Err(e);
                }
            }
        } else {
            None
        };
        let virtiofsd = if needs_virtiofsd {
            match self.start_virtiofsd(spec) {
                Ok(v) => v,
                Err(e) => {
                    kill_all([Some(backend), passt].into_iter().flatten());
                    return Err(e);
                }
            }
        } else {
            Vec::new()
        };
        let qemu = match spawn(&qemu_program, &qemu_args(spec, fs), &spec.vmm_log) {
            Ok(q) => q,
            Err(e) => {
                kill_all(
                    [Some(backend), passt]
                        .into_iter()
                        .flatten()
                        .chain(virtiofsd),
                );
                return Err(e);
            }
        };
        Ok(Box::new(QemuVm {
            qemu,
            backend,
            passt,
            virtiofsd,
            vsock: HybridVsock::new(&spec.vsock_socket),
            log: spec.vmm_log.clone(),
        }))
    }
}

struct QemuVm {
    qemu: Child,
    backend: Child,
    passt: Option<Child>,
    /// One per share when they are virtiofs.
    virtiofsd: Vec<Child>,
    vsock: HybridVsock,
    log: PathBuf,
}

impl Vm for QemuVm {
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.qemu.id(), self.backend.id()];
        pids.extend(self.passt.as_ref().map(Child::id));
        pids.extend(self.virtiofsd.iter().map(Child::id));
        pids
    }

    fn vsock(&self) -> HostVsock {
        HostVsock::Hybrid(self.vsock.clone())
    }

    fn try_exited(&mut self) -> Option<String> {
        if let Some(status) = describe_exit(&mut self.qemu) {
            return Some(format!(
                "QEMU exited ({status}); see {}",
                self.log.display()
            ));
        }
        if let Some(status) = describe_exit(&mut self.backend) {
            return Some(format!(
                "the vsock backend exited ({status}); see {}",
                self.log.display()
            ));
        }
        // Without its virtiofsd a share hangs every process that touches it.
        self.virtiofsd
            .iter_mut()
            .find_map(describe_exit)
            .map(|status| format!("virtiofsd exited ({status}); see {}", self.log.display()))
    }

    fn kill(&mut self) {
        for child in [
            Some(&mut self.qemu),
            Some(&mut self.backend),
            self.passt.as_mut(),
        ]
        .into_iter()
        .flatten()
        .chain(self.virtiofsd.iter_mut())
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Share;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            kernel: "/k".into(),
            initrd: "/i".into(),
            cmdline: "console=ttyS0".into(),
            cpus: 2,
            memory_mib: 1024,
            disk: Some("/d.img".into()),
            cid: 9,
            vhost_socket: "/m/vhost.sock".into(),
            vsock_socket: "/m/vsock.sock".into(),
            console_log: "/m/console.log".into(),
            vmm_log: "/m/vmm.log".into(),
            shares: vec![(
                "berthshare0".into(),
                Share {
                    host: "/srv".into(),
                    guest: "/srv".into(),
                },
            )],
            share_fs: None,
            hostfwd: vec![],
            accel: Accel::Auto,
            arch: crate::machine::GuestArch::host(),
            outbound_network: false,
        }
    }

    #[test]
    fn outbound_network_through_passt_without_the_hosts_loopback() {
        let mut s = spec();
        s.outbound_network = true;
        let args = qemu_args(&s, ShareFs::Virtiofs).join(" ");
        assert!(
            args.contains(
                "-netdev stream,id=net0,server=off,addr.type=unix,addr.path=/m/passt/passt.sock"
            ),
            "{args}"
        );
        assert!(args.contains("virtio-net-device,netdev=net0"), "{args}");
        let passt = passt_args(&s, true).join(" ");
        assert!(passt.starts_with("--runas 65534:65534 "), "{passt}");
        assert!(!passt_args(&s, false).join(" ").contains("--runas"));
        assert!(passt.contains("--no-map-gw"), "{passt}");
        assert!(passt.contains("--socket /m/passt/passt.sock"), "{passt}");
        assert!(passt.contains("--address 10.0.2.15"), "{passt}");
        assert!(passt.contains("--dns-forward 10.0.2.3"), "{passt}");
        // The guest is told passt's addresses, so it needs no DHCP at boot.
        assert!(
            args.contains(" berth.net=10.0.2.15/24,10.0.2.2,10.0.2.3"),
            "{args}"
        );
        // hostfwd benchmarks keep QEMU's restricted user network instead, whose DHCP the
        // guest asks.
        s.hostfwd = vec!["tcp:127.0.0.1:1-:2".into()];
        let args = qemu_args(&s, ShareFs::Virtiofs).join(" ");
        assert!(args.contains("user,id=net0,restrict=on"), "{args}");
        assert!(!args.contains("passt"), "{args}");
        assert!(!args.contains("berth.net"), "{args}");
    }

    #[test]
    fn microvm_with_tcg_vsock_disk_and_share() {
        let args = qemu_args(&spec(), ShareFs::Virtiofs).join(" ");
        assert!(args.contains("-accel tcg -cpu max"), "{args}");
        assert!(!args.contains("-cpu host"));
        assert!(args.contains("memory-backend-memfd,id=mem,size=1024M,share=on"));
        assert!(args.contains("vhost-user-vsock-device,chardev=vsock"));
        assert!(args.contains("file=/d.img,format=raw"));
        // No network device unless hostfwd rules ask for one.
        assert!(!args.contains("-netdev"));
    }

    #[test]
    fn an_arm64_guest_is_a_virt_machine_without_x86_clock_arguments() {
        let mut s = spec();
        s.arch = GuestArch::Aarch64;
        let args = qemu_args(&s, ShareFs::Virtiofs).join(" ");
        assert!(args.contains("-M virt,memory-backend=mem"), "{args}");
        assert!(args.contains("-accel tcg -cpu cortex-a72"), "{args}");
        assert!(!args.contains("tsc_early_khz"), "{args}");
        assert!(args.contains("vhost-user-vsock-device,chardev=vsock"));
        s.accel = Accel::Kvm;
        assert!(qemu_args(&s, ShareFs::Virtiofs)
            .join(" ")
            .contains("-accel kvm -cpu host"));
    }

    #[test]
    fn shares_over_virtiofs_or_9p_and_the_agent_is_told_which() {
        let args = qemu_args(&spec(), ShareFs::Virtiofs).join(" ");
        assert!(
            args.contains("-chardev socket,id=fs-berthshare0,path=/m/berthshare0.virtiofs.sock -device vhost-user-fs-device,chardev=fs-berthshare0,tag=berthshare0"),
            "{args}"
        );
        assert!(
            args.contains("berth.shares=berthshare0:/srv:virtiofs"),
            "{args}"
        );
        assert!(!args.contains("9p"), "{args}");
        let args = qemu_args(&spec(), ShareFs::NineP).join(" ");
        assert!(
            args.contains("-fsdev local,id=berthshare0,path=/srv,security_model=none -device virtio-9p-device,fsdev=berthshare0,mount_tag=berthshare0"),
            "{args}"
        );
        assert!(args.contains("berth.shares=berthshare0:/srv:9p"), "{args}");
        assert!(!args.contains("vhost-user-fs"), "{args}");
        let mut s = spec();
        s.shares.clear();
        let args = qemu_args(&s, ShareFs::Virtiofs).join(" ");
        assert!(
            !args.contains("berth.shares") && !args.contains("fs-"),
            "{args}"
        );

        let share = &spec().shares[0].1;
        let sock = Path::new("/m/berthshare0.virtiofs.sock");
        let root = virtiofsd_args(sock, share, true).join(" ");
        assert_eq!(
            root,
            "--socket-path /m/berthshare0.virtiofs.sock --shared-dir /srv --cache auto --announce-submounts --log-level warn --sandbox namespace"
        );
        assert!(virtiofsd_args(sock, share, false)
            .join(" ")
            .ends_with("--sandbox none"));
    }

    #[test]
    fn virtiofs_when_virtiofsd_is_there_else_9p_unless_asked_for() {
        assert_eq!(share_fs(None, true).ok(), Some(ShareFs::Virtiofs));
        assert_eq!(share_fs(None, false).ok(), Some(ShareFs::NineP));
        assert_eq!(
            share_fs(Some(ShareFs::NineP), true).ok(),
            Some(ShareFs::NineP)
        );
        let err = share_fs(Some(ShareFs::Virtiofs), false).expect_err("no virtiofsd");
        assert!(
            err.to_string().contains("cargo install --locked virtiofsd"),
            "{err}"
        );
    }

    #[test]
    fn tcg_gets_a_tsc_frequency() {
        assert_eq!(
            tcg_kernel_args(2_400_000),
            "tsc_early_khz=2400000 lpj=9600000 tsc=reliable"
        );
        let args = qemu_args(&spec(), ShareFs::Virtiofs).join(" ");
        assert!(
            args.contains("console=ttyS0 berth.shares=berthshare0:/srv:virtiofs tsc_early_khz="),
            "{args}"
        );
    }

    #[test]
    fn user_network_is_restricted() {
        let mut s = spec();
        s.hostfwd = vec!["tcp:127.0.0.1:18081-:18081".into()];
        let args = qemu_args(&s, ShareFs::Virtiofs).join(" ");
        assert!(
            args.contains("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:18081-:18081"),
            "{args}"
        );
    }

    #[test]
    fn missing_kernel_is_reported_before_anything_starts() {
        let q = Qemu {
            qemu: "/nonexistent/qemu".into(),
            vhost_vsock: "/nonexistent/vhost".into(),
            passt: None,
            virtiofsd: None,
        };
        let err = q.launch(&spec()).err().expect("missing kernel");
        assert!(matches!(err, HypervisorError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("kernel /k"), "{err}");
    }
}
