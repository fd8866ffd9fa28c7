//! Hyper-V's VMBus: which synthetic devices the host offers. They are
//! probed asynchronously, so a disk or network interface may appear a
//! little after its driver has loaded; the agent waits for it only when
//! the bus says it is coming.

use std::path::Path;

/// The class of Hyper-V's synthetic network adapter (`hv_netvsc`).
pub const NETWORK_CLASS: &str = "{f8615163-df3e-46c5-913f-f2d2f965ed0e}";
/// The class of Hyper-V's SCSI controller (`hv_storvsc`).
pub const SCSI_CLASS: &str = "{ba6163d9-04a1-4d29-b605-72e2ffb1dc7f}";

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
