//! Hyper-V: whether the VM runs on it, and which synthetic devices its
//! VMBus offers. The devices are probed asynchronously, so a disk or network
//! interface may appear a little after its driver has loaded; the agent
//! waits for it only when the bus says it is coming.

use std::path::Path;

/// The class of Hyper-V's synthetic network adapter (`hv_netvsc`).
pub const NETWORK_CLASS: &str = "{f8615163-df3e-46c5-913f-f2d2f965ed0e}";
/// The class of Hyper-V's SCSI controller (`hv_storvsc`).
pub const SCSI_CLASS: &str = "{ba6163d9-04a1-4d29-b605-72e2ffb1dc7f}";

/// Whether this VM runs on Hyper-V, decided before any Hyper-V driver loads
/// (so that elsewhere none is loaded): the hypervisor's CPUID signature on
/// x86, else the VMBus that the firmware describes (its ACPI device, which
/// `hv_vmbus` binds to), else Microsoft's DMI identity for its VMs.
pub fn on_hyperv(sys: &Path) -> bool {
    cpuid_says_hyperv() || acpi_describes_vmbus(sys) || dmi_says_hyperv(sys)
}

/// The vendor signature Hyper-V reports in CPUID leaf 0x40000000.
#[cfg(any(target_arch = "x86_64", test))]
const HYPERV_CPUID_SIGNATURE: &[u8; 12] = b"Microsoft Hv";

#[cfg(target_arch = "x86_64")]
fn cpuid_says_hyperv() -> bool {
    use std::arch::x86_64::__cpuid;
    // Leaf 1, ECX bit 31: a hypervisor is present (leaf 0x40000000 means
    // something else on bare metal).
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU and has no side effects.
    let features = unsafe { __cpuid(1) };
    if features.ecx & (1 << 31) == 0 {
        return false;
    }
    #[allow(unused_unsafe)]
    // SAFETY: as above.
    let leaf = unsafe { __cpuid(0x4000_0000) };
    is_hyperv_signature(leaf.ebx, leaf.ecx, leaf.edx)
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_says_hyperv() -> bool {
    false
}

/// The 12-byte vendor signature is EBX, ECX, EDX, each little-endian.
#[cfg(any(target_arch = "x86_64", test))]
fn is_hyperv_signature(ebx: u32, ecx: u32, edx: u32) -> bool {
    let mut signature = [0u8; 12];
    for (chunk, reg) in signature.chunks_exact_mut(4).zip([ebx, ecx, edx]) {
        chunk.copy_from_slice(&reg.to_le_bytes());
    }
    &signature == HYPERV_CPUID_SIGNATURE
}

fn acpi_describes_vmbus(sys: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(sys.join("bus/acpi/devices")) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        // `<HID>:<instance>`; Hyper-V names it VMBUS or VMBus.
        name.split(':')
            .next()
            .is_some_and(|hid| hid.eq_ignore_ascii_case("VMBUS"))
    })
}

fn dmi_says_hyperv(sys: &Path) -> bool {
    let read = |field: &str| {
        std::fs::read_to_string(sys.join("class/dmi/id").join(field))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    read("sys_vendor") == "Microsoft Corporation" && read("product_name") == "Virtual Machine"
}

/// Whether a device of `class` is on the VMBus of the sysfs at `sys`
/// (never outside Hyper-V: there is no VMBus).
pub fn offers(sys: &Path, class: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(sys.join("bus/vmbus/devices")) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        std::fs::read_to_string(e.path().join("class_id"))
            .is_ok_and(|c| c.trim().eq_ignore_ascii_case(class))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyperv_is_told_by_its_cpuid_signature() {
        let reg = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        let sig = |s: &[u8; 12]| (reg(&s[0..4]), reg(&s[4..8]), reg(&s[8..12]));
        let (b, c, d) = sig(b"Microsoft Hv");
        assert!(is_hyperv_signature(b, c, d));
        let (b, c, d) = sig(b"KVMKVMKVM\0\0\0");
        assert!(!is_hyperv_signature(b, c, d));
        let (b, c, d) = sig(b"TCGTCGTCGTCG");
        assert!(!is_hyperv_signature(b, c, d));
    }

    #[test]
    fn hyperv_is_told_by_its_firmware() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sys = tmp.path();
        let acpi = sys.join("bus/acpi/devices");
        std::fs::create_dir_all(acpi.join("PNP0A03:00")).expect("mkdir");
        let dmi = sys.join("class/dmi/id");
        std::fs::create_dir_all(&dmi).expect("mkdir");
        std::fs::write(dmi.join("sys_vendor"), "QEMU\n").expect("write");
        std::fs::write(dmi.join("product_name"), "Virtual Machine\n").expect("write");
        assert!(!acpi_describes_vmbus(sys) && !dmi_says_hyperv(sys));
        std::fs::create_dir_all(acpi.join("VMBus:00")).expect("mkdir");
        assert!(acpi_describes_vmbus(sys));
        std::fs::write(dmi.join("sys_vendor"), "Microsoft Corporation\n").expect("write");
        assert!(dmi_says_hyperv(sys));
    }

    #[test]
    fn devices_are_found_by_class() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(!offers(tmp.path(), NETWORK_CLASS), "no VMBus");
        let dev = tmp
            .path()
            .join("bus/vmbus/devices/f8b3781b-1e82-4818-a1c3-63d806ec15bb");
        std::fs::create_dir_all(&dev).expect("mkdir");
        std::fs::write(
            dev.join("class_id"),
            "{BA6163D9-04A1-4D29-B605-72E2FFB1DC7F}\n",
        )
        .expect("write");
        assert!(offers(tmp.path(), SCSI_CLASS));
        assert!(!offers(tmp.path(), NETWORK_CLASS));
    }
}
