//! The data disk (`/dev/vda`): formatted on first boot, mounted where the
//! engine keeps its state, unmounted before power-off.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::init::{mount_fs, BUSYBOX};

pub const DEVICE: &str = "/dev/vda";
pub const MOUNT_POINT: &str = "/var/lib/berth";

/// Offset and value of the ext2/3/4 superblock magic.
const EXT_MAGIC_OFFSET: u64 = 1024 + 56;
const EXT_MAGIC: [u8; 2] = [0x53, 0xef];

fn has_ext_filesystem(device: &Path) -> Result<bool> {
    let mut f =
        std::fs::File::open(device).with_context(|| format!("opening {}", device.display()))?;
    f.seek(SeekFrom::Start(EXT_MAGIC_OFFSET))?;
    let mut magic = [0u8; 2];
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(magic == EXT_MAGIC),
        // A disk smaller than a superblock has no file system.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Mounts the data disk on [`MOUNT_POINT`], formatting it first if blank.
/// Without a disk the engine's state lives in memory (and says so).
pub fn prepare() -> Result<()> {
    let device = Path::new(DEVICE);
    if !device.exists() {
        eprintln!("berth-agent: no data disk; images and containers live in memory");
        std::fs::create_dir_all(MOUNT_POINT)?;
        return Ok(());
    }
    if !has_ext_filesystem(device)? {
        eprintln!("berth-agent: formatting the data disk {DEVICE}");
        // One inode per 32 KiB: image layers are mostly large files, and
        // fewer inode tables format faster under emulation.
        let status = Command::new(BUSYBOX)
            .args(["mke2fs", "-F", "-i", "32768", "-L", "berth-data", DEVICE])
            .status()
            .context("running mke2fs")?;
        if !status.success() {
            bail!("mke2fs {DEVICE} failed ({status})");
        }
    }
    mount_fs(DEVICE, MOUNT_POINT, "ext4", "")
        .with_context(|| format!("mounting {DEVICE} on {MOUNT_POINT}"))?;
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
