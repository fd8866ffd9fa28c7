//! Finds the inputs of the guest image and builds it (cached).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_guest_image::{GuestImage, Inputs};

/// Whether an ELF executable runs without a dynamic loader (no PT_INTERP).
fn is_static_elf(path: &Path) -> bool {
    const PT_INTERP: u32 = 3;
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if bytes.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = phoff + i * usize::from(phentsize);
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .is_some_and(|t| t != PT_INTERP)
    })
}

/// `$BERTH_AGENT`, else a static `berth-agent` next to this executable or
/// where `guest-image/build-agent.sh` puts it.
pub fn find_agent() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_AGENT") {
        let p = PathBuf::from(p);
        if !is_static_elf(&p) {
            bail!("BERTH_AGENT={} is not a static executable", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("finding the berth executable")?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let candidates = [
        dir.join("berth-agent"),
        dir.join("../x86_64-unknown-linux-gnu/release/berth-agent"),
        dir.join("../../x86_64-unknown-linux-gnu/release/berth-agent"),
    ];
    candidates
        .iter()
        .find(|p| is_static_elf(p))
        .cloned()
        .with_context(|| {
            format!(
                "no static berth-agent found (looked at {}); build it with guest-image/build-agent.sh or set BERTH_AGENT",
                candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            )
        })
}

pub fn ensure() -> Result<GuestImage> {
    let cache = berth_platform::cache_dir();
    let busybox = std::env::var_os("BERTH_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(berth_guest_image::default_busybox);
    if !is_static_elf(&busybox) {
        bail!(
            "{} is not a static busybox (Debian: apt-get install busybox-static, or set BERTH_BUSYBOX)",
            busybox.display()
        );
    }
    let inputs = Inputs {
        kernel_deb: berth_guest_image::fetch_kernel_deb(&cache)
            .context("getting the kernel package")?,
        agent: find_agent()?,
        busybox,
        userland_debs: berth_guest_image::fetch_userland_debs(&cache)
            .context("getting the guest's userland packages (nftables)")?,
    };
    berth_guest_image::build(&inputs, &cache).context("building the guest image")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_elf_detection() {
        // The test binary itself is dynamic; busybox-static is static.
        let me = std::env::current_exe().expect("exe");
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(Path::new("/nonexistent")));
        if Path::new("/bin/busybox").exists() {
            assert!(is_static_elf(Path::new("/bin/busybox")));
        }
    }
}
