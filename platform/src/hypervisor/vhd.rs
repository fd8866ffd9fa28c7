//! The data disk as a fixed VHD for HCS, which attaches only VHD/VHDX files
//! to a SCSI controller. A fixed VHD is the raw image followed by a
//! 512-byte footer (Microsoft's "Virtual Hard Disk Image Format
//! Specification"), so the machine's raw `data.img` becomes one by
//! appending the footer once; the guest sees the same bytes as under QEMU.
//! HCS tells the format by the file extension, so the VHD is a hard link
//! named `.vhd` to the same file.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const FOOTER_LEN: u64 = 512;
const COOKIE: &[u8; 8] = b"conectix";
/// Seconds from the Unix epoch to the VHD epoch (2000-01-01 00:00:00 UTC).
const VHD_EPOCH: u64 = 946_684_800;

#[derive(Debug, thiserror::Error)]
pub enum VhdError {
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the disk {path} is {size} bytes; a VHD disk must be a non-zero multiple of 1 MiB")]
    BadSize { path: PathBuf, size: u64 },
}

/// Cylinders, heads and sectors per track, by the specification's algorithm.
pub fn chs(size: u64) -> (u16, u8, u8) {
    let mut total = (size / 512).min(65535 * 16 * 255);
    let (spt, heads, cyl_times_heads);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cyl_times_heads = total / spt;
    } else {
        let mut s = 17;
        let mut cth = total / s;
        let mut h = cth.div_ceil(1024).max(4);
        if cth >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            cth = total / s;
        }
        if cth >= h * 1024 {
            s = 63;
            h = 16;
            cth = total / s;
        }
        spt = s;
        heads = h;
        cyl_times_heads = cth;
    }
    total = cyl_times_heads / heads;
    (total as u16, heads as u8, spt as u8)
}

/// The footer of a fixed disk of `size` bytes.
pub fn fixed_footer(size: u64, unique_id: [u8; 16], unix_time: u64) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(COOKIE);
    // Features: bit 1 is reserved and always set.
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    // File format version 1.0.
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    // Data offset: none for a fixed disk.
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    let stamp = unix_time.saturating_sub(VHD_EPOCH).min(u64::from(u32::MAX)) as u32;
    f[24..28].copy_from_slice(&stamp.to_be_bytes());
    f[28..32].copy_from_slice(b"brth");
    f[32..36].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    let (c, h, s) = chs(size);
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    // Disk type 2: fixed.
    f[60..64].copy_from_slice(&2u32.to_be_bytes());
    f[68..84].copy_from_slice(&unique_id);
    let checksum = checksum(&f);
    f[64..68].copy_from_slice(&checksum.to_be_bytes());
    f
}

/// The ones' complement of the byte sum, the checksum field counted as zero.
fn checksum(footer: &[u8; 512]) -> u32 {
    let sum: u32 = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .map(|(_, b)| u32::from(*b))
        .sum();
    !sum
}

/// Whether `footer` is a valid fixed-disk footer; returns the disk size.
pub fn parse_fixed_footer(footer: &[u8; 512]) -> Option<u64> {
    if &footer[0..8] != COOKIE {
        return None;
    }
    let stored = u32::from_be_bytes(footer[64..68].try_into().ok()?);
    if stored != checksum(footer) || footer[60..64] != 2u32.to_be_bytes() {
        return None;
    }
    Some(u64::from_be_bytes(footer[48..56].try_into().ok()?))
}

/// Makes `raw` a fixed VHD (appending the footer unless it has one) and
/// returns `<raw>.vhd`, a hard link to it.
pub fn prepare_fixed_vhd(raw: &Path) -> Result<PathBuf, VhdError> {
    let io = |what, source| VhdError::Io {
        what,
        path: raw.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(raw)
        .map_err(|e| io("opening", e))?;
    let len = file
        .metadata()
        .map_err(|e| io("reading the size of", e))?
        .len();
    let mut has_footer = false;
    if len >= FOOTER_LEN {
        let mut tail = [0u8; 512];
        file.seek(SeekFrom::Start(len - FOOTER_LEN))
            .and_then(|_| file.read_exact(&mut tail))
            .map_err(|e| io("reading", e))?;
        has_footer = parse_fixed_footer(&tail) == Some(len - FOOTER_LEN);
    }
    if !has_footer {
        if len == 0 || len % (1 << 20) != 0 {
            return Err(VhdError::BadSize {
                path: raw.to_path_buf(),
                size: len,
            });
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(VHD_EPOCH);
        let footer = fixed_footer(len, random_id(), now);
        file.seek(SeekFrom::End(0))
            .and_then(|_| file.write_all(&footer))
            .and_then(|_| file.sync_all())
            .map_err(|e| io("appending the VHD footer to", e))?;
    }
    let vhd = raw.with_extension("vhd");
    if !vhd.exists() {
        std::fs::hard_link(raw, &vhd).map_err(|source| VhdError::Io {
            what: "linking",
            path: vhd.clone(),
            source,
        })?;
    }
    Ok(vhd)
}

/// 16 random bytes (a disk's identity, not a secret): std's per-process
/// random hash keys, without another dependency.
fn random_id() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut id = [0u8; 16];
    for half in id.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(u64::from(std::process::id()));
        half.copy_from_slice(&h.finish().to_be_bytes());
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_follows_the_specification() {
        // 40 GiB: past 65535*16*63 sectors, so 255 sectors per track.
        assert_eq!(chs(40 << 30), (20560, 16, 255));
        // 20 GiB (the default disk): 63 sectors per track.
        assert_eq!(chs(20 << 30), (41610, 16, 63));
        // 1 GiB: 63 sectors per track.
        assert_eq!(chs(1 << 30), (2080, 16, 63));
        // 10 MiB: 17 sectors per track, 4 heads.
        assert_eq!(chs(10 << 20), (301, 4, 17));
        // Beyond the largest geometry it stays at the maximum.
        assert_eq!(chs(4 << 40), (65535, 16, 255));
    }

    #[test]
    fn footer_fields_and_checksum() {
        let id = [7u8; 16];
        let f = fixed_footer(1 << 30, id, VHD_EPOCH + 100);
        assert_eq!(&f[0..8], b"conectix");
        assert_eq!(&f[16..24], &[0xff; 8]);
        assert_eq!(u32::from_be_bytes(f[24..28].try_into().expect("4")), 100);
        assert_eq!(&f[36..40], b"Wi2k");
        assert_eq!(&f[68..84], &id);
        assert_eq!(parse_fixed_footer(&f), Some(1 << 30));
        let mut bad = f;
        bad[100] ^= 1;
        assert_eq!(parse_fixed_footer(&bad), None, "checksum covers the footer");
    }

    #[test]
    fn raw_disk_becomes_a_vhd_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = dir.path().join("data.img");
        let size = 4u64 << 20;
        std::fs::File::create(&raw)
            .and_then(|f| f.set_len(size))
            .expect("raw");
        let vhd = prepare_fixed_vhd(&raw).expect("vhd");
        assert_eq!(vhd, dir.path().join("data.vhd"));
        let bytes = std::fs::read(&vhd).expect("read");
        assert_eq!(bytes.len() as u64, size + FOOTER_LEN);
        let footer: [u8; 512] = bytes[bytes.len() - 512..].try_into().expect("512");
        assert_eq!(parse_fixed_footer(&footer), Some(size));
        // Again: nothing appended, the same link.
        assert_eq!(prepare_fixed_vhd(&raw).expect("again"), vhd);
        assert_eq!(
            std::fs::metadata(&raw).expect("meta").len(),
            size + FOOTER_LEN
        );
    }

    #[test]
    fn odd_sizes_and_missing_disks_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = dir.path().join("odd.img");
        std::fs::write(&raw, [0u8; 1000]).expect("write");
        let err = prepare_fixed_vhd(&raw).expect_err("odd size");
        assert!(matches!(err, VhdError::BadSize { size: 1000, .. }), "{err}");
        assert_eq!(
            std::fs::metadata(&raw).expect("meta").len(),
            1000,
            "untouched"
        );
        assert!(!dir.path().join("odd.vhd").exists());
        let err = prepare_fixed_vhd(&dir.path().join("absent.img")).expect_err("missing");
        assert!(matches!(err, VhdError::Io { .. }), "{err}");
    }
}
