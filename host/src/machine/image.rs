//! Finds the inputs of the guest image and builds it (cached).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_guest_image::{Apt, GuestImage, Inputs};
use berth_platform::machine::GuestArch;

/// Whether an ELF executable runs without a dynamic loader (no PT_INTERP).
/// Reads the ELF header and the program header table only: this runs at every
/// machine start, on candidates that may be debug builds of hundreds of MB.
fn is_static_elf(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    const PT_INTERP: u32 = 3;
    /// An ELF64 program header entry.
    const PHENT64: usize = 56;
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let mut header = [0u8; 64];
    if file.read_exact(&mut header).is_err() || !header.starts_with(b"\x7fELF\x02") {
        return false;
    }
    let phoff = u64::from_le_bytes(header[0x20..0x28].try_into().unwrap_or_default());
    let phentsize = usize::from(u16::from_le_bytes([header[0x36], header[0x37]]));
    let phnum = usize::from(u16::from_le_bytes([header[0x38], header[0x39]]));
    if phentsize < PHENT64 {
        return false;
    }
    let mut table = vec![0u8; phentsize * phnum];
    if file.seek(SeekFrom::Start(phoff)).is_err() || file.read_exact(&mut table).is_err() {
        return false;
    }
    table
        .chunks_exact(phentsize)
        .all(|entry| u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]) != PT_INTERP)
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

/// Names the exported image's architecture, so a directory made for arm64 is not booted on x86.
const MANIFEST: &str = "guest-image.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    arch: GuestArch,
}

/// The guest image for `arch`: a prebuilt one (`$BERTH_GUEST_IMAGE_DIR`, or `guest-image/<arch>`
/// next to the executable, as a release ships it) or, failing that, one built here.
pub fn ensure(arch: GuestArch) -> Result<GuestImage> {
    if let Some(dir) = std::env::var_os("BERTH_GUEST_IMAGE_DIR") {
        return prebuilt(Path::new(&dir), arch);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("guest-image").join(arch.debian())))
        .filter(|d| d.join(MANIFEST).is_file())
    {
        return prebuilt(&dir, arch);
    }
    build(arch)
}

/// An exported image, checked for completeness and architecture.
fn prebuilt(dir: &Path, arch: GuestArch) -> Result<GuestImage> {
    let manifest_path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "{} is not a guest image directory (no {MANIFEST}; make one with `berth machine image --output`)",
            dir.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    if manifest.arch != arch {
        bail!(
            "the guest image in {} is for {}, not {}",
            dir.display(),
            manifest.arch.debian(),
            arch.debian()
        );
    }
    let image = GuestImage {
        dir: dir.to_path_buf(),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
    };
    for file in [&image.kernel, &image.initrd] {
        if !file.is_file() {
            bail!(
                "the guest image in {} has no {}",
                dir.display(),
                file.display()
            );
        }
    }
    Ok(image)
}

/// Builds the guest image for `arch` from Debian's packages of that architecture (cached;
/// needs apt and Debian's archive keyring, so on Linux).
pub fn build(arch: GuestArch) -> Result<GuestImage> {
    let cache = berth_platform::cache_dir();
    let apt = Apt::new(&cache, arch.debian()).with_context(|| {
        format!(
            "preparing apt for the guest's packages (without apt, use a prebuilt image: \
             `berth machine image --arch {} --output DIR` on a Debian host, then \
             BERTH_GUEST_IMAGE_DIR=DIR)",
            arch.debian()
        )
    })?;
    if let Some(why) = apt.stale_lists() {
        eprintln!(
            "berth: using the Debian package lists fetched earlier (refreshing them failed: {why})"
        );
    }
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
    };
    berth_guest_image::build(&inputs, &cache).context("building the guest image")
}

/// Copies `image` into `dir` with its manifest; the files are written under temporary names
/// and renamed, so an interrupted export is never taken for a complete one.
pub fn export(image: &GuestImage, arch: GuestArch, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let manifest = serde_json::to_vec_pretty(&Manifest { arch })?;
    let _ = std::fs::remove_file(dir.join(MANIFEST));
    for (from, name) in [(&image.kernel, "vmlinuz"), (&image.initrd, "initrd.img")] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::copy(from, &tmp)
            .with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    let tmp = dir.join(format!(".{MANIFEST}.tmp"));
    std::fs::write(&tmp, manifest)?;
    std::fs::rename(&tmp, dir.join(MANIFEST))?;
    Ok(())
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
