//! Finds the inputs of the guest image and builds it (cached).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_guest_image::{Apt, GuestImage, Inputs};
use berth_platform::machine::GuestArch;

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

/// `$BERTH_AGENT_<ARCH>` (`$BERTH_AGENT` for the host's architecture), else a static
/// `berth-agent` where `guest-image/build-agent.sh` puts it, or next to this executable (the
/// host's architecture only).
pub fn find_agent(arch: GuestArch) -> Result<PathBuf> {
    let var = format!("BERTH_AGENT_{}", arch.debian().to_uppercase());
    let from_env = std::env::var_os(&var).or_else(|| {
        (arch == GuestArch::host())
            .then(|| std::env::var_os("BERTH_AGENT"))
            .flatten()
    });
    if let Some(p) = from_env {
        let p = PathBuf::from(p);
        if !is_static_elf(&p) {
            bail!("{} is not a static executable", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("finding the berth executable")?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let built = format!("{}/release/berth-agent", arch.rust_target());
    let mut candidates = vec![dir.join("..").join(&built), dir.join("../..").join(&built)];
    if arch == GuestArch::host() {
        candidates.insert(0, dir.join("berth-agent"));
    }
    candidates
        .iter()
        .find(|p| is_static_elf(p))
        .cloned()
        .with_context(|| {
            format!(
                "no static berth-agent for {} found (looked at {}); build it with `guest-image/build-agent.sh --target {}` or set {var}",
                arch.debian(),
                candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
                arch.rust_target()
            )
        })
}

/// The guest image for `arch`, built from Debian's packages of that architecture (cached).
pub fn ensure(arch: GuestArch) -> Result<GuestImage> {
    let cache = berth_platform::cache_dir();
    let apt = Apt::new(&cache, arch.debian()).context("preparing apt for the guest's packages")?;
    let busybox = match std::env::var_os("BERTH_BUSYBOX") {
        Some(p) => PathBuf::from(p),
        None => berth_guest_image::fetch_busybox(&apt, &cache).context("getting busybox")?,
    };
    if !is_static_elf(&busybox) {
        bail!("{} is not a static busybox", busybox.display());
    }
    let inputs = Inputs {
        kernel_deb: berth_guest_image::fetch_kernel_deb(&apt)
            .context("getting the kernel package")?,
        agent: find_agent(arch)?,
        busybox,
        userland_debs: berth_guest_image::fetch_userland_debs(&apt)
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
