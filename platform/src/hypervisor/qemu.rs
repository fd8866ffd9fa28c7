//! QEMU `microvm` on Linux: TCG by default (or KVM when the machine asks for
//! it), memory in a shared memfd so the `vhost-device-vsock` backend can
//! reach the vsock rings, vsock exposed to the host as hybrid vsock.
//!
//! Both processes get `PR_SET_PDEATHSIG`, so they die with the supervisor
//! that launched them even if it is killed.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Capabilities, Hypervisor, HypervisorError, LaunchSpec, Vm};
use crate::machine::Accel;
use crate::vsock::hybrid::HybridVsock;
use crate::vsock::HostVsock;

/// How long the vsock backend gets to create its socket.
const BACKEND_READY: Duration = Duration::from_secs(10);

pub struct Qemu {
    qemu: PathBuf,
    vhost_vsock: PathBuf,
}

impl Qemu {
    /// Finds `qemu-system-x86_64` and `vhost-device-vsock` (`$BERTH_QEMU`,
    /// `$BERTH_VHOST_VSOCK`, `$PATH`, `~/.cargo/bin`).
    pub fn locate() -> Result<Self, HypervisorError> {
        let qemu = find_program("BERTH_QEMU", "qemu-system-x86_64").ok_or_else(|| {
            HypervisorError::Missing {
                what: "qemu-system-x86_64".into(),
                hint: "install it (Debian: apt-get install qemu-system-x86) or set BERTH_QEMU"
                    .into(),
            }
        })?;
        let vhost_vsock = find_program("BERTH_VHOST_VSOCK", "vhost-device-vsock").ok_or_else(
            || HypervisorError::Missing {
                what: "vhost-device-vsock".into(),
                hint: "install it with `cargo install --locked vhost-device-vsock` or set BERTH_VHOST_VSOCK"
                    .into(),
            },
        )?;
        Ok(Self { qemu, vhost_vsock })
    }
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

/// QEMU's arguments for `spec` (pure, so it is tested without QEMU).
pub fn qemu_args(spec: &LaunchSpec) -> Vec<String> {
    let mem = format!("{}M", spec.memory_mib);
    let accel = match spec.accel {
        Accel::Kvm => "kvm",
        Accel::Auto | Accel::Tcg => "tcg",
    };
    let mut a: Vec<String> = vec![
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-nographic".into(),
        // The guest powers off by rebooting; QEMU then exits.
        "-no-reboot".into(),
        "-M".into(),
        "microvm,memory-backend=mem".into(),
        "-accel".into(),
        accel.into(),
        "-cpu".into(),
        if accel == "kvm" { "host" } else { "max" }.into(),
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
        if accel == "tcg" {
            format!("{} {}", spec.cmdline, tcg_kernel_args(host_tsc_khz()))
        } else {
            spec.cmdline.clone()
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
        a.extend([
            "-fsdev".into(),
            format!(
                "local,id={tag},path={},security_model=none",
                share.host.display()
            ),
            "-device".into(),
            format!("virtio-9p-device,fsdev={tag},mount_tag={tag}"),
        ]);
    }
    if !spec.hostfwd.is_empty() {
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
        for path in [&spec.vhost_socket, &spec.vsock_socket] {
            let _ = std::fs::remove_file(path);
        }
        let backend_args = vec![
            "--guest-cid".to_string(),
            spec.cid.to_string(),
            "--socket".into(),
            spec.vhost_socket.display().to_string(),
            "--uds-path".into(),
            spec.vsock_socket.display().to_string(),
        ];
        let mut backend = spawn(&self.vhost_vsock, &backend_args, &spec.vmm_log)?;
        let deadline = Instant::now() + BACKEND_READY;
        while !spec.vhost_socket.exists() {
            if let Some(status) = describe_exit(&mut backend) {
                return Err(HypervisorError::EarlyExit {
                    program: "vhost-device-vsock".into(),
                    status,
                    log: spec.vmm_log.display().to_string(),
                });
            }
            if Instant::now() > deadline {
                let _ = backend.kill();
                let _ = backend.wait();
                return Err(HypervisorError::Timeout {
                    what: format!("the vsock backend socket {}", spec.vhost_socket.display()),
                    timeout: BACKEND_READY,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let qemu = match spawn(&self.qemu, &qemu_args(spec), &spec.vmm_log) {
            Ok(q) => q,
            Err(e) => {
                let _ = backend.kill();
                let _ = backend.wait();
                return Err(e);
            }
        };
        Ok(Box::new(QemuVm {
            qemu,
            backend,
            vsock: HybridVsock::new(&spec.vsock_socket),
            log: spec.vmm_log.clone(),
        }))
    }
}

struct QemuVm {
    qemu: Child,
    backend: Child,
    vsock: HybridVsock,
    log: PathBuf,
}

impl Vm for QemuVm {
    fn pids(&self) -> Vec<u32> {
        vec![self.qemu.id(), self.backend.id()]
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
        describe_exit(&mut self.backend).map(|status| {
            format!(
                "the vsock backend exited ({status}); see {}",
                self.log.display()
            )
        })
    }

    fn kill(&mut self) {
        for child in [&mut self.qemu, &mut self.backend] {
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
            hostfwd: vec![],
            accel: Accel::Auto,
        }
    }

    #[test]
    fn microvm_with_tcg_vsock_disk_and_share() {
        let args = qemu_args(&spec()).join(" ");
        assert!(args.contains("-accel tcg -cpu max"), "{args}");
        assert!(!args.contains("-cpu host"));
        assert!(args.contains("memory-backend-memfd,id=mem,size=1024M,share=on"));
        assert!(args.contains("vhost-user-vsock-device,chardev=vsock"));
        assert!(args.contains("file=/d.img,format=raw"));
        assert!(args.contains("virtio-9p-device,fsdev=berthshare0,mount_tag=berthshare0"));
        // No network device unless hostfwd rules ask for one.
        assert!(!args.contains("-netdev"));
    }

    #[test]
    fn tcg_gets_a_tsc_frequency() {
        assert_eq!(
            tcg_kernel_args(2_400_000),
            "tsc_early_khz=2400000 lpj=9600000 tsc=reliable"
        );
        let args = qemu_args(&spec()).join(" ");
        assert!(args.contains("console=ttyS0 tsc_early_khz="), "{args}");
    }

    #[test]
    fn user_network_is_restricted() {
        let mut s = spec();
        s.hostfwd = vec!["tcp:127.0.0.1:18081-:18081".into()];
        let args = qemu_args(&s).join(" ");
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
        };
        let err = q.launch(&spec()).err().expect("missing kernel");
        assert!(matches!(err, HypervisorError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("kernel /k"), "{err}");
    }
}
