//! The data disk: found among the block devices ([`find`]), formatted on
//! first boot, mounted where the engine keeps its state, unmounted before
//! power-off. It is `/dev/vda` under QEMU and Virtualization.framework
//! (virtio-blk) and `/dev/sda` under Hyper-V (SCSI).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::init::{mount_fs, BUSYBOX};
use crate::vmbus;

pub const MOUNT_POINT: &str = "/var/lib/berth";
/// The file system label the agent formats the disk with.
pub const LABEL: &str = "berth-data";

/// Whole-disk names of the drivers a data disk comes through: virtio-blk,
/// SCSI (Hyper-V's storvsc), Xen, NVMe. Partitions are not in `/sys/block`.
const DISK_PREFIXES: &[&str] = &["vd", "sd", "xvd", "nvme"];
/// Hyper-V's SCSI controller scans its disks asynchronously after
/// `hv_storvsc` loads.
const DISK_APPEAR_WAIT: Duration = Duration::from_secs(5);

/// The ext2/3/4 superblock: its offset, and the magic's and volume name's
/// places within it.
const SUPERBLOCK: u64 = 1024;
const EXT_MAGIC_AT: usize = 56;
const EXT_MAGIC: [u8; 2] = [0x53, 0xef];
const VOLUME_NAME_AT: usize = 120;

/// The label of the ext file system on `device`: `Some("")` when it has
/// none, `None` when the device holds no ext file system.
fn ext_label(device: &Path) -> Result<Option<String>> {
    let mut f =
        std::fs::File::open(device).with_context(|| format!("opening {}", device.display()))?;
    f.seek(SeekFrom::Start(SUPERBLOCK))?;
    let mut sb = [0u8; VOLUME_NAME_AT + 16];
    match f.read_exact(&mut sb) {
        Ok(()) => {}
        // A disk smaller than a superblock has no file system.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    if sb[EXT_MAGIC_AT..EXT_MAGIC_AT + 2] != EXT_MAGIC {
        return Ok(None);
    }
    let name = &sb[VOLUME_NAME_AT..];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(Some(String::from_utf8_lossy(&name[..end]).into_owned()))
}

/// The whole disks under `sys_block` that may hold the engine's data, in
/// name order (`vda` < `vdb` < `vdaa`): not removable, not empty.
fn candidates(sys_block: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let read = |name: &str, file: &str| {
        std::fs::read_to_string(sys_block.join(name).join(file))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut names: Vec<String> = entries
        .filter_map(std::result::Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| DISK_PREFIXES.iter().any(|p| n.starts_with(p)))
        .filter(|n| read(n, "removable") != "1")
        .filter(|n| !matches!(read(n, "size").as_str(), "" | "0"))
        .collect();
    names.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    names
}

/// The data disk among the disks of `sys_block` (device nodes in `dev`):
/// the one labelled [`LABEL`] if any, else the first.
fn select(sys_block: &Path, dev: &Path) -> Option<PathBuf> {
    let disks: Vec<PathBuf> = candidates(sys_block).iter().map(|n| dev.join(n)).collect();
    let labelled = disks
        .iter()
        .find(|d| matches!(ext_label(d), Ok(Some(l)) if l == LABEL));
    labelled.or(disks.first()).cloned()
}

/// Finds the data disk, waiting a little for Hyper-V's SCSI scan.
pub fn find() -> Option<PathBuf> {
    let (sys, sys_block, dev) = (
        Path::new("/sys"),
        Path::new("/sys/block"),
        Path::new("/dev"),
    );
    let found = select(sys_block, dev);
    if found.is_some() || !vmbus::offers(sys, vmbus::SCSI_CLASS) {
        return found;
    }
    let deadline = Instant::now() + DISK_APPEAR_WAIT;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        if let Some(d) = select(sys_block, dev) {
            return Some(d);
        }
    }
    None
}

/// Mounts the data disk on [`MOUNT_POINT`], formatting it first if blank.
/// Without a disk the engine's state lives in memory (and says so).
pub fn prepare() -> Result<()> {
    let Some(device) = find() else {
        eprintln!("berth-agent: no data disk; images and containers live in memory");
        std::fs::create_dir_all(MOUNT_POINT)?;
        return Ok(());
    };
    let shown = device.display();
    if ext_label(&device)?.is_none() {
        eprintln!("berth-agent: formatting the data disk {shown}");
        // One inode per 32 KiB: image layers are mostly large files, and
        // fewer inode tables format faster under emulation.
        let status = Command::new(BUSYBOX)
            .args(["mke2fs", "-F", "-i", "32768", "-L", LABEL])
            .arg(&device)
            .status()
            .context("running mke2fs")?;
        if !status.success() {
            bail!("mke2fs {shown} failed ({status})");
        }
    }
    let source = device.to_str().context("the disk's path is not UTF-8")?;
    mount_fs(source, MOUNT_POINT, "ext4", "")
        .with_context(|| format!("mounting {shown} on {MOUNT_POINT}"))?;
    Ok(())
}

/// Flushes and unmounts the data disk (best effort: power-off follows).
pub fn release() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    if let Ok(target) = std::ffi::CString::new(MOUNT_POINT) {
        // SAFETY: target is NUL-terminated and outlives the call.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/sys/block` entry and its device node holding `content`.
    fn disk(root: &Path, name: &str, removable: &str, size: &str, content: &[u8]) {
        let dir = root.join("sys/block").join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("removable"), format!("{removable}\n")).expect("removable");
        std::fs::write(dir.join("size"), format!("{size}\n")).expect("size");
        std::fs::create_dir_all(root.join("dev")).expect("dev");
        std::fs::write(root.join("dev").join(name), content).expect("node");
    }

    fn ext(label: &str) -> Vec<u8> {
        let mut sb = vec![0u8; 4096];
        sb[1024 + EXT_MAGIC_AT..1024 + EXT_MAGIC_AT + 2].copy_from_slice(&EXT_MAGIC);
        sb[1024 + VOLUME_NAME_AT..1024 + VOLUME_NAME_AT + label.len()]
            .copy_from_slice(label.as_bytes());
        sb
    }

    fn pick(root: &Path) -> Option<String> {
        select(&root.join("sys/block"), &root.join("dev"))
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
    }

    #[test]
    fn the_first_fixed_disk_is_the_data_disk() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        assert_eq!(pick(root), None);
        for name in ["loop0", "ram0", "sr0", "zram0", "dm-0"] {
            disk(root, name, "0", "2048", &[]);
        }
        assert_eq!(
            pick(root),
            None,
            "loop, ram, cd-rom and mapper devices are not disks"
        );
        disk(root, "sdb", "1", "2048", &[]);
        assert_eq!(pick(root), None, "a removable disk is not the data disk");
        disk(root, "sdc", "0", "0", &[]);
        assert_eq!(pick(root), None, "an empty drive is not either");
        // Hyper-V: the SCSI disk.
        disk(root, "sdaa", "0", "2048", &[]);
        disk(root, "sda", "0", "4194304", &[0u8; 512]);
        assert_eq!(pick(root).as_deref(), Some("sda"));
        // QEMU and Virtualization.framework: virtio-blk, in name order.
        disk(root, "vdb", "0", "2048", &[]);
        assert_eq!(pick(root).as_deref(), Some("sda"));
        assert_eq!(candidates(&root.join("sys/block")), ["sda", "vdb", "sdaa"]);
    }

    #[test]
    fn a_disk_labelled_berth_data_wins() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        disk(root, "vda", "0", "2048", &ext("other"));
        disk(root, "vdb", "0", "2048", &ext(LABEL));
        disk(root, "vdc", "0", "2048", &[]);
        assert_eq!(pick(root).as_deref(), Some("vdb"));
        let dev = root.join("dev");
        assert_eq!(
            ext_label(&dev.join("vda")).expect("vda").as_deref(),
            Some("other")
        );
        assert_eq!(ext_label(&dev.join("vdc")).expect("vdc"), None, "too small");
        disk(root, "vdd", "0", "2048", &[0u8; 4096]);
        assert_eq!(ext_label(&dev.join("vdd")).expect("vdd"), None, "no magic");
        assert!(ext_label(&dev.join("nosuch")).is_err());
    }
}
