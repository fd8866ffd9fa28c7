//! Kernel modules: the initramfs lists them in `/lib/modules/berth.list` in
//! groups, as the image builder resolved them (`berth_guest_image::GROUPS`):
//! a `--<name>--` line, then that group's module paths in load order,
//! dependencies first.

use std::os::fd::AsRawFd;
use std::path::Path;

use berth_platform::protocol::ShareFs;

pub const LIST: &str = "/lib/modules/berth.list";

/// What decides which module groups the boot loads.
#[derive(Debug, Default, Clone, Copy)]
pub struct Hardware {
    /// Hyper-V (`vmbus::on_hyperv`).
    pub hyperv: bool,
    /// A virtio device on the PCI bus (Virtualization.framework), see [`virtio_on_pci`].
    pub virtio_pci: bool,
}

/// The groups PID 1 loads: the boot drivers and the data disk's always, the
/// Hyper-V drivers only on Hyper-V, virtio's PCI transport only when a virtio
/// device is on PCI (every module skipped is boot time saved under emulation).
pub fn boot_groups(hw: Hardware) -> Vec<&'static str> {
    let mut groups = vec!["boot", "disk"];
    if hw.hyperv {
        groups.push("hyperv");
    }
    if hw.virtio_pci {
        groups.push("pci");
    }
    groups
}

/// The filesystem groups the shares need, loaded by the server just before
/// it mounts them.
pub fn share_groups(hyperv: bool, shares: &[ShareFs]) -> Vec<&'static str> {
    let mut groups = Vec::new();
    if shares.contains(&ShareFs::Virtiofs) {
        groups.push("virtiofs");
    }
    if shares.contains(&ShareFs::NineP) {
        // Hyper-V has no virtio: its 9p server is reached over a socket.
        groups.push(if hyperv { "9p-fd" } else { "9p" });
    }
    groups
}

/// The group loaded while the data disk mounts (bridge networking).
pub const LATER: &str = "later";

/// PCI's vendor id for virtio devices.
const VIRTIO_PCI_VENDOR: &str = "0x1af4";

/// Whether the PCI bus of the sysfs at `sys` holds a virtio device. The PCI core is
/// built in, so its devices are listed before any virtio driver loads.
pub fn virtio_on_pci(sys: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(sys.join("bus/pci/devices")) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        std::fs::read_to_string(e.path().join("vendor"))
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case(VIRTIO_PCI_VENDOR))
    })
}

/// `berth.list` as (group, module paths) in file order.
fn parse(list: &str) -> Vec<(&str, Vec<&str>)> {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.strip_prefix("--").and_then(|l| l.strip_suffix("--")) {
            Some(name) => groups.push((name, Vec::new())),
            None => match groups.last_mut() {
                Some((_, modules)) => modules.push(line),
                None => eprintln!("berth-agent: {LIST}: {line} is in no group"),
            },
        }
    }
    groups
}

/// Loads the modules of the groups named in `wanted`, in the list's order;
/// returns how many failed (each is logged).
pub fn load_groups(wanted: &[&str]) -> usize {
    let list = match std::fs::read_to_string(LIST) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth-agent: no module list {LIST}: {e}");
            return 0;
        }
    };
    let mut failed = 0;
    for (group, modules) in parse(&list) {
        if !wanted.contains(&group) {
            continue;
        }
        for module in modules {
            let path = Path::new("/lib/modules").join(module);
            if let Err(e) = load(&path) {
                // Hyper-V's drivers where Hyper-V only seemed to be (its CPUID
                // signature under another hypervisor): no VMBus (ENODEV), and
                // then unknown symbols in its dependents (ENOENT). Expected.
                let hyperv_absent = group == "hyperv"
                    && matches!(e.raw_os_error(), Some(libc::ENODEV | libc::ENOENT));
                if !hyperv_absent {
                    eprintln!("berth-agent: loading {}: {e}", path.display());
                    failed += 1;
                }
            }
        }
    }
    failed
}

fn load(path: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    let params = c"";
    // SAFETY: finit_module reads the open module file and a NUL-terminated
    // parameter string that outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    // Built in, or already loaded as another module's dependency.
    if err.raw_os_error() == Some(libc::EEXIST) {
        return Ok(());
    }
    Err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_read_in_order_with_their_modules() {
        let list = "--boot--\nkernel/a.ko\nkernel/b.ko\n\n--hyperv--\n--9p--\nkernel/c.ko\n";
        assert_eq!(
            parse(list),
            vec![
                ("boot", vec!["kernel/a.ko", "kernel/b.ko"]),
                ("hyperv", vec![]),
                ("9p", vec!["kernel/c.ko"]),
            ]
        );
        assert!(parse("kernel/orphan.ko\n").is_empty());
    }

    #[test]
    fn boot_loads_only_what_the_host_and_shares_need() {
        let qemu = Hardware::default();
        assert_eq!(boot_groups(qemu), vec!["boot", "disk"]);
        let hyperv = Hardware {
            hyperv: true,
            ..qemu
        };
        assert_eq!(boot_groups(hyperv), vec!["boot", "disk", "hyperv"]);
        let vz = Hardware {
            virtio_pci: true,
            ..qemu
        };
        assert_eq!(boot_groups(vz), vec!["boot", "disk", "pci"]);

        assert!(share_groups(false, &[]).is_empty());
        assert_eq!(
            share_groups(true, &[ShareFs::NineP, ShareFs::NineP]),
            vec!["9p-fd"]
        );
        assert_eq!(
            share_groups(false, &[ShareFs::Virtiofs, ShareFs::NineP]),
            vec!["virtiofs", "9p"]
        );
    }

    #[test]
    fn virtio_is_found_on_the_pci_bus_by_vendor() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(!virtio_on_pci(tmp.path()), "no PCI bus (microvm)");
        let dev = |slot: &str, vendor: &str| {
            let d = tmp.path().join("bus/pci/devices").join(slot);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("vendor"), format!("{vendor}\n")).expect("vendor");
        };
        dev("0000:00:00.0", "0x8086");
        assert!(!virtio_on_pci(tmp.path()));
        dev("0000:00:05.0", "0x1AF4");
        assert!(virtio_on_pci(tmp.path()));
    }
}
