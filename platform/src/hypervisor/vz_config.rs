//! The Virtualization.framework configuration of Berth's VM, derived from a
//! [`LaunchSpec`] as plain data: `VZLinuxBootLoader` (kernel, initramfs,
//! command line), CPU count and memory clamped to what the framework allows
//! on this Mac, and the devices: virtio block for the data disk, a virtio
//! console writing to the console log, a virtio socket device, one virtiofs
//! device per share, entropy, a memory balloon and, for outbound traffic, a
//! virtio network device on the framework's NAT. `vz.rs` turns it into
//! `VZVirtualMachineConfiguration` one call per field; the checks the
//! framework would make late (tags, sizes, kernel format) are made here,
//! and tested on Linux.

use std::path::{Path, PathBuf};

use super::{HypervisorError, LaunchSpec};
use crate::protocol::ShareFs;

/// `VZVirtioFileSystemDeviceConfiguration` tags are at most 36 bytes.
pub const MAX_TAG_BYTES: usize = 36;
const MIB: u64 = 1 << 20;

/// The framework's limits on this host (`VZVirtualMachineConfiguration`'s
/// `minimumAllowedCPUCount` … `maximumAllowedMemorySize`, in bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VzLimits {
    pub min_cpus: u32,
    pub max_cpus: u32,
    pub min_memory: u64,
    pub max_memory: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VzShare {
    pub tag: String,
    pub host: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VzConfig {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub cpus: u32,
    /// Bytes, a multiple of 1 MiB.
    pub memory: u64,
    /// Virtio block device, read-write.
    pub disk: Option<PathBuf>,
    /// The virtio console's output (`hvc0` in the guest), appended to.
    pub console_log: PathBuf,
    pub shares: Vec<VzShare>,
    /// A virtio network device attached to the framework's NAT (outbound
    /// traffic; the guest gets its address by DHCP).
    pub nat_network: bool,
    /// Always present: vsock, entropy and a traditional memory balloon.
    pub vsock: bool,
    pub entropy: bool,
    pub balloon: bool,
}

/// The guest's console is the virtio console (`hvc0`), not a UART: the
/// spec's `console=ttyS…` becomes `console=hvc0`, or is added.
pub fn vz_cmdline(cmdline: &str) -> String {
    let mut args: Vec<&str> = cmdline
        .split_whitespace()
        .filter(|a| !a.starts_with("console="))
        .collect();
    args.insert(0, "console=hvc0");
    args.join(" ")
}

/// Which kernel image a file starts with (its first 4 KiB suffice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// arm64 `Image` ("ARM\x64" at 0x38): what the framework boots on arm64.
    Arm64Image,
    /// x86 `bzImage` ("HdrS" at 0x202).
    BzImage,
    /// An ELF `vmlinux`.
    Elf,
    /// gzip, e.g. Debian's arm64 `vmlinuz`.
    Gzip,
    /// An EFI zboot image (`MZ`, "zimg" at 4): compressed.
    ZBoot,
    Unknown,
}

pub fn kernel_format(head: &[u8]) -> KernelFormat {
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    if at(0, &[0x1f, 0x8b]) {
        KernelFormat::Gzip
    } else if at(0, b"MZ") && at(4, b"zimg") {
        KernelFormat::ZBoot
    } else if at(0x38, b"ARM\x64") {
        KernelFormat::Arm64Image
    } else if at(0x202, b"HdrS") {
        KernelFormat::BzImage
    } else if at(0, b"\x7fELF") {
        KernelFormat::Elf
    } else {
        KernelFormat::Unknown
    }
}

/// `VZLinuxBootLoader` loads an uncompressed `Image` on Apple silicon, and
/// a `bzImage` or `vmlinux` on Intel Macs.
pub fn check_kernel(path: &Path, head: &[u8], arch: &str) -> Result<(), HypervisorError> {
    let format = kernel_format(head);
    let ok = match arch {
        "aarch64" => format == KernelFormat::Arm64Image,
        "x86_64" => matches!(format, KernelFormat::BzImage | KernelFormat::Elf),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let hint = match format {
        KernelFormat::Gzip | KernelFormat::ZBoot => {
            "Virtualization.framework boots an uncompressed kernel: decompress it (the arm64 Image inside vmlinuz)"
        }
        _ => "use a Linux kernel image built for this Mac's architecture",
    };
    Err(HypervisorError::Missing {
        what: format!(
            "a bootable {arch} kernel at {} (found {format:?})",
            path.display()
        ),
        hint: hint.into(),
    })
}

/// The configuration for `spec` on a host with `limits` and architecture
/// `arch` (`std::env::consts::ARCH`). Reads the kernel's header.
pub fn vz_config(
    spec: &LaunchSpec,
    limits: VzLimits,
    arch: &str,
) -> Result<VzConfig, HypervisorError> {
    for (what, path) in [("kernel", &spec.kernel), ("initrd", &spec.initrd)] {
        if !path.is_file() {
            return Err(HypervisorError::Missing {
                what: format!("the {what} {}", path.display()),
                hint: "build the guest image (`berth machine init` does) or fix the machine's kernel/initrd setting".into(),
            });
        }
    }
    let head = read_head(&spec.kernel)?;
    check_kernel(&spec.kernel, &head, arch)?;
    if limits.min_cpus > limits.max_cpus || limits.min_memory > limits.max_memory {
        return Err(HypervisorError::Unsupported(
            "Virtualization.framework limits that allow no VM",
        ));
    }
    // The framework shares directories over virtiofs only.
    if spec.share_fs == Some(ShareFs::NineP) {
        return Err(HypervisorError::Unsupported(
            "9p shares with Virtualization.framework",
        ));
    }
    let mut shares = Vec::new();
    for (tag, share) in &spec.shares {
        if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
            return Err(HypervisorError::Unsupported(
                "a virtiofs tag that is empty or longer than 36 bytes",
            ));
        }
        if !share.host.is_dir() {
            return Err(HypervisorError::Missing {
                what: format!("the shared directory {}", share.host.display()),
                hint: "create it or remove the share from the machine".into(),
            });
        }
        shares.push(VzShare {
            tag: tag.clone(),
            host: share.host.clone(),
            read_only: false,
        });
    }
    let cpus = spec.cpus.clamp(limits.min_cpus, limits.max_cpus);
    let memory = spec
        .memory_mib
        .saturating_mul(MIB)
        .clamp(limits.min_memory, limits.max_memory);
    // The framework wants whole MiB; round down, but not below the minimum.
    let memory = (memory / MIB * MIB).max(limits.min_memory.div_ceil(MIB) * MIB);
    Ok(VzConfig {
        kernel: spec.kernel.clone(),
        initrd: spec.initrd.clone(),
        cmdline: vz_cmdline(&super::with_shares(
            &spec.cmdline,
            &spec.shares,
            ShareFs::Virtiofs,
        )),
        cpus,
        memory,
        disk: spec.disk.clone(),
        console_log: spec.console_log.clone(),
        shares,
        nat_network: spec.outbound_network,
        vsock: true,
        entropy: true,
        balloon: true,
    })
}

fn read_head(path: &Path) -> Result<Vec<u8>, HypervisorError> {
    use std::io::Read;
    let mut head = Vec::with_capacity(4096);
    std::fs::File::open(path)
        .and_then(|f| f.take(4096).read_to_end(&mut head))
        .map_err(|source| HypervisorError::Io {
            what: "reading",
            path: path.to_path_buf(),
            source,
        })?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{Accel, Share};

    const LIMITS: VzLimits = VzLimits {
        min_cpus: 1,
        max_cpus: 8,
        min_memory: 128 * MIB,
        max_memory: 16 << 30,
    };

    fn arm64_image() -> Vec<u8> {
        let mut k = vec![0u8; 4096];
        k[0x38..0x3c].copy_from_slice(b"ARM\x64");
        k
    }

    fn spec(dir: &Path, kernel: &[u8]) -> LaunchSpec {
        let k = dir.join("Image");
        let i = dir.join("initrd.img");
        std::fs::write(&k, kernel).expect("kernel");
        std::fs::write(&i, b"i").expect("initrd");
        let share = dir.join("src");
        std::fs::create_dir_all(&share).expect("share");
        LaunchSpec {
            kernel: k,
            initrd: i,
            cmdline: "console=ttyS0 reboot=t rdinit=/init".into(),
            cpus: 4,
            memory_mib: 2048,
            disk: Some(dir.join("data.img")),
            cid: 3,
            vhost_socket: dir.join("vhost.sock"),
            vsock_socket: dir.join("vsock.sock"),
            console_log: dir.join("console.log"),
            vmm_log: dir.join("machine.log"),
            shares: vec![(
                "berthshare0".into(),
                Share {
                    host: share.clone(),
                    guest: share,
                },
            )],
            share_fs: None,
            hostfwd: vec![],
            accel: Accel::Auto,
            arch: crate::machine::GuestArch::host(),
            outbound_network: true,
        }
    }

    #[test]
    fn configuration_from_the_spec() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = spec(tmp.path(), &arm64_image());
        let c = vz_config(&s, LIMITS, "aarch64").expect("config");
        // The agent is told to mount the shares as virtiofs.
        assert_eq!(
            c.cmdline,
            format!(
                "console=hvc0 reboot=t rdinit=/init berth.shares=berthshare0:{}:virtiofs",
                tmp.path().join("src").display()
            )
        );
        assert_eq!(c.cpus, 4);
        assert_eq!(c.memory, 2048 * MIB);
        assert_eq!(c.disk, s.disk);
        assert_eq!(c.console_log, s.console_log);
        assert_eq!(
            c.shares,
            vec![VzShare {
                tag: "berthshare0".into(),
                host: tmp.path().join("src"),
                read_only: false,
            }]
        );
        assert!(c.vsock && c.entropy && c.balloon);
        assert!(c.nat_network);
        let mut s = s;
        s.outbound_network = false;
        assert!(
            !vz_config(&s, LIMITS, "aarch64")
                .expect("config")
                .nat_network
        );
    }

    #[test]
    fn cpus_and_memory_are_clamped_to_the_frameworks_limits() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut s = spec(tmp.path(), &arm64_image());
        s.cpus = 64;
        s.memory_mib = 1 << 20;
        let c = vz_config(&s, LIMITS, "aarch64").expect("config");
        assert_eq!((c.cpus, c.memory), (8, 16 << 30));
        s.cpus = 1;
        s.memory_mib = 64;
        let odd = VzLimits {
            min_memory: 100 * MIB + 1,
            ..LIMITS
        };
        let c = vz_config(&s, odd, "aarch64").expect("config");
        assert_eq!(c.cpus, 1);
        assert_eq!(c.memory, 101 * MIB, "whole MiB, not below the minimum");
        let none = VzLimits {
            min_cpus: 4,
            max_cpus: 2,
            ..LIMITS
        };
        assert!(vz_config(&s, none, "aarch64").is_err());
    }

    #[test]
    fn console_argument_is_the_virtio_console() {
        assert_eq!(vz_cmdline("quiet"), "console=hvc0 quiet");
        assert_eq!(
            vz_cmdline("console=ttyS0,115200 console=tty0 a=b"),
            "console=hvc0 a=b"
        );
    }

    #[test]
    fn kernel_formats() {
        let mut bz = vec![0u8; 4096];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let mut zboot = vec![0u8; 64];
        zboot[0..2].copy_from_slice(b"MZ");
        zboot[4..8].copy_from_slice(b"zimg");
        assert_eq!(kernel_format(&arm64_image()), KernelFormat::Arm64Image);
        assert_eq!(kernel_format(&bz), KernelFormat::BzImage);
        assert_eq!(kernel_format(b"\x7fELF\x02\x01"), KernelFormat::Elf);
        assert_eq!(kernel_format(&[0x1f, 0x8b, 8, 0]), KernelFormat::Gzip);
        assert_eq!(kernel_format(&zboot), KernelFormat::ZBoot);
        assert_eq!(kernel_format(b"hi"), KernelFormat::Unknown);

        let p = Path::new("/k");
        assert!(check_kernel(p, &arm64_image(), "aarch64").is_ok());
        assert!(check_kernel(p, &bz, "x86_64").is_ok());
        assert!(check_kernel(p, &bz, "aarch64").is_err());
        let err = check_kernel(p, &[0x1f, 0x8b, 8, 0], "aarch64").expect_err("gzip");
        assert!(err.to_string().contains("uncompressed"), "{err}");
    }

    #[test]
    fn bad_inputs_are_named() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let gz = spec(tmp.path(), &[0x1f, 0x8b, 8, 0]);
        let err = vz_config(&gz, LIMITS, "aarch64").expect_err("compressed");
        assert!(err.to_string().contains("Gzip"), "{err}");

        let mut s = spec(tmp.path(), &arm64_image());
        s.initrd = tmp.path().join("absent");
        let err = vz_config(&s, LIMITS, "aarch64").expect_err("initrd");
        assert!(err.to_string().contains("initrd"), "{err}");

        let mut s = spec(tmp.path(), &arm64_image());
        s.shares[0].0 = "t".repeat(37);
        assert!(vz_config(&s, LIMITS, "aarch64").is_err());
        let mut s = spec(tmp.path(), &arm64_image());
        s.shares[0].1.host = tmp.path().join("nope");
        let err = vz_config(&s, LIMITS, "aarch64").expect_err("share");
        assert!(err.to_string().contains("shared directory"), "{err}");
        let mut s = spec(tmp.path(), &arm64_image());
        s.share_fs = Some(ShareFs::NineP);
        let err = vz_config(&s, LIMITS, "aarch64").expect_err("9p");
        assert!(err.to_string().contains("9p"), "{err}");
    }
}
