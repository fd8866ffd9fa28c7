//! Builds the boot artefacts of Berth's Linux VM, reproducibly, from a
//! Debian `linux-image` package and the workspace's own static `berth-agent`:
//!
//! - `vmlinuz`: the distribution kernel, as packaged.
//! - `initrd.img`: an uncompressed newc cpio (the kernel unpacks it faster
//!   than a compressed one under emulation) holding `/init` (the agent),
//!   `/bin/berth-monitor` (a link to it), a static busybox (networking and
//!   `mke2fs`), and the kernel modules the guest needs with their dependencies, listed in
//!   load order in `/lib/modules/berth.list`.
//!
//! Artefacts are cached under `<cache>/guest-image/<digest>/`, where the
//! digest covers every input byte and the builder's format version: a
//! changed input builds a new image, an unchanged one is reused. Every file
//! in the archive has mtime 0, uid 0 and a sorted position, so the same
//! inputs give the same bytes. The data disk is made by [`create_data_disk`]
//! (sparse; the agent formats it on first boot).

mod cpio;
mod deb;
mod file_digest;
mod modules;

use std::path::{Path, PathBuf};

use file_digest::DigestMemo;
use sha2::{Digest, Sha256};

pub use modules::{resolve_groups, ModuleGroup, GROUPS};

/// Bumped whenever the archive layout changes.
const FORMAT: &str = "berth-guest-image/10";

#[derive(Debug, thiserror::Error)]
pub enum GuestImageError {
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("running {command}: {detail}")]
    Command { command: String, detail: String },
    #[error("the kernel package has no {0}")]
    KernelLayout(String),
    #[error("kernel module {0} is not in modules.dep")]
    MissingModule(String),
    #[error("{what} {path} does not exist{hint}")]
    MissingInput {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
}

type Result<T, E = GuestImageError> = std::result::Result<T, E>;

pub(crate) fn io(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> GuestImageError {
    let path = path.to_path_buf();
    move |source| GuestImageError::Io { what, path, source }
}

/// What the image is built from.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The `linux-image-<version>` package (see [`deb::fetch_kernel_deb`]).
    pub kernel_deb: PathBuf,
    /// The static `berth-agent`.
    pub agent: PathBuf,
    /// A static busybox.
    pub busybox: PathBuf,
}

/// Built artefacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl GuestImage {
    fn in_dir(dir: PathBuf) -> Self {
        Self {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            dir,
        }
    }
}

pub use deb::{fetch_busybox, fetch_kernel_deb, Apt, SUITE};

fn digest_inputs(inputs: &Inputs, memo: &mut DigestMemo) -> Result<String> {
    let mut h = Sha256::new();
    h.update(FORMAT.as_bytes());
    for group in GROUPS {
        h.update(group.name.as_bytes());
        h.update(b"\n");
        for m in group.modules {
            h.update(m.as_bytes());
            h.update(b"\0");
        }
    }
    let fixed = [
        ("the kernel package", &inputs.kernel_deb),
        ("the agent binary", &inputs.agent),
        ("busybox", &inputs.busybox),
    ];
    for (what, path) in fixed {
        let file_digest = memo.sha256(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                GuestImageError::MissingInput {
                    what,
                    path: path.clone(),
                    hint: "",
                }
            } else {
                GuestImageError::Io {
                    what: "reading",
                    path: path.clone(),
                    source,
                }
            }
        })?;
        h.update(file_digest.as_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

/// Builds (or finds in `cache`) the image for `inputs`, and prunes images unused since.
pub fn build(inputs: &Inputs, cache: &Path) -> Result<GuestImage> {
    let root = cache.join("guest-image");
    let mut memo = DigestMemo::load(&root.join("input-digests"));
    let key = digest_inputs(inputs, &mut memo)?;
    // Only a cache: without it the next start hashes the inputs again.
    let _ = memo.save();
    let dir = root.join(&key[..16]);
    let image = GuestImage::in_dir(dir.clone());
    if !(image.kernel.is_file() && image.initrd.is_file()) {
        build_and_publish(inputs, &root, &key[..16], &image)?;
    }
    mark_used(&dir);
    prune(&root, &dir, UNUSED_IMAGE_MAX_AGE);
    Ok(image)
}

/// Builds `image` in a work directory under `root` and renames it into place.
fn build_and_publish(inputs: &Inputs, root: &Path, key: &str, image: &GuestImage) -> Result<()> {
    std::fs::create_dir_all(root).map_err(io("creating", root))?;
    let work = root.join(format!(".build-{key}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let result = build_into(inputs, &work);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&work);
        return Err(e);
    }
    // Publish atomically; a concurrent builder may have won the race.
    // Only the artefacts are kept: the unpacked package goes.
    let _ = std::fs::remove_dir_all(work.join("tree"));
    let dir = root.join(key);
    match std::fs::rename(&work, &dir) {
        Ok(()) => Ok(()),
        Err(_) if image.kernel.is_file() && image.initrd.is_file() => {
            let _ = std::fs::remove_dir_all(&work);
            Ok(())
        }
        Err(e) => Err(io("publishing", &dir)(e)),
    }
}

/// Images unused for this long are removed from the cache (each is ~25 MB, and
/// every new agent build makes one).
const UNUSED_IMAGE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// Besides the one in use, at most this many recently used images stay (the other
/// architecture's, a few agent builds to switch between).
const OTHER_IMAGES_KEPT: usize = 3;

/// An image directory's modification time is when a machine last started from it.
fn mark_used(dir: &Path) {
    // Only a hint for pruning: failing to set it at worst removes the image early,
    // and the next start rebuilds it.
    let _ = std::fs::File::open(dir).and_then(|d| d.set_modified(std::time::SystemTime::now()));
}

/// Removes from `root`, except `keep`: image directories unused for `max_age` or
/// beyond the [`OTHER_IMAGES_KEPT`] most recently used, and build directories that a
/// killed build left. A running machine holds its kernel and initramfs open, so
/// removing its image does not disturb it. Best effort: the cache stays usable
/// whatever is left.
fn prune(root: &Path, keep: &Path, max_age: std::time::Duration) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut images = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_image = name.len() == 16 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if !(is_image || name.starts_with(".build-")) || entry.path() == keep {
            continue;
        }
        let unused_for = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        if unused_for > max_age {
            let _ = std::fs::remove_dir_all(entry.path());
        } else if is_image {
            images.push((unused_for, entry.path()));
        }
    }
    images.sort();
    for (_, dir) in images.into_iter().skip(OTHER_IMAGES_KEPT) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn build_into(inputs: &Inputs, work: &Path) -> Result<()> {
    let tree = work.join("tree");
    std::fs::create_dir_all(&tree).map_err(io("creating", &tree))?;
    deb::extract(&inputs.kernel_deb, &tree)?;
    let kernel = deb::find_kernel(&tree)?;
    install_kernel(&kernel.vmlinuz, &work.join("vmlinuz"))?;
    let groups = resolve_groups(&kernel.modules_dir)?;

    let mut archive = cpio::Archive::default();
    for dir in [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "proc",
        "run",
        "sys",
        "tmp",
        "var",
        "var/lib",
        "var/lib/berth",
    ] {
        archive.dir(dir, 0o755);
    }
    // The kernel opens /dev/console for PID 1 before devtmpfs is mounted.
    archive.char_device("dev/console", 0o600, 5, 1);
    archive.file_from("init", 0o755, &inputs.agent)?;
    archive.symlink("bin/berth-monitor", "/init");
    archive.symlink("bin/berth-agent", "/init");
    archive.file_from("bin/busybox", 0o755, &inputs.busybox)?;
    archive.symlink("bin/sh", "busybox");
    // `berth.list`: each group's header line `--<name>--`, then its module paths in load
    // order (read by the agent's `modules.rs`).
    let mut list = String::new();
    let mut archived = std::collections::HashSet::new();
    for (group, modules) in &groups {
        list.push_str(&format!("--{group}--\n"));
        for rel in modules {
            if archived.insert(rel) {
                let name = format!("lib/modules/{rel}");
                archive.parents(&name);
                let path = kernel.modules_dir.join(rel);
                let module = std::fs::read(&path).map_err(io("reading", &path))?;
                archive.file(&name, 0o644, modules::without_signature(&module).to_vec());
            }
            list.push_str(rel);
            list.push('\n');
        }
    }
    archive.file("lib/modules/berth.list", 0o644, list.into_bytes());
    let initrd = work.join("initrd.img");
    std::fs::write(&initrd, archive.finish()).map_err(io("writing", &initrd))?;
    Ok(())
}

/// Copies the kernel, decompressing a gzip-wrapped one (Debian's arm64 `vmlinuz` is a gzipped
/// `Image`): Virtualization.framework boots only an uncompressed arm64 kernel, and QEMU boots
/// both.
fn install_kernel(packaged: &Path, dest: &Path) -> Result<()> {
    let bytes = std::fs::read(packaged).map_err(io("reading", packaged))?;
    let kernel = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(bytes.len() * 3);
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
            .map_err(io("decompressing", packaged))?;
        out
    } else {
        bytes
    };
    std::fs::write(dest, kernel).map_err(io("writing", dest))
}

/// Creates a sparse raw disk of `gib` GiB at `path` (left alone if it exists,
/// so the engine's state survives); the agent formats it on first boot.
pub fn create_data_disk(path: &Path, gib: u64) -> Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    let f = std::fs::File::create(path).map_err(io("creating", path))?;
    f.set_len(gib << 30).map_err(io("sizing", path))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_unused_for_long_are_pruned() {
        let cache = tempfile::tempdir().expect("tempdir");
        let root = cache.path();
        let week_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(8 * 24 * 3600);
        let make = |name: &str, old: bool| {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join("initrd.img"), b"x").expect("write");
            if old {
                let d = std::fs::File::open(&dir).expect("open");
                d.set_modified(week_ago).expect("set mtime");
            }
            dir
        };
        let stale = make("0123456789abcdef", true);
        let fresh = make("fedcba9876543210", false);
        let current = make("00000000ffffffff", true);
        let abandoned_build = make(".build-0123456789abcdef-42", true);
        let not_an_image = make("something-else", true);
        std::fs::write(root.join("input-digests"), b"").expect("memo");

        prune(root, &current, UNUSED_IMAGE_MAX_AGE);
        assert!(!stale.exists() && !abandoned_build.exists());
        assert!(fresh.exists() && current.exists() && not_an_image.exists());
        assert!(root.join("input-digests").exists());

        // Of the recent ones, only the most recently used few stay.
        let recent: Vec<PathBuf> = (0..OTHER_IMAGES_KEPT + 2)
            .map(|i| {
                let dir = make(&format!("{i:016x}"), false);
                let age = std::time::Duration::from_secs(60 * (i as u64 + 1));
                let d = std::fs::File::open(&dir).expect("open");
                d.set_modified(std::time::SystemTime::now() - age)
                    .expect("set mtime");
                dir
            })
            .collect();
        prune(root, &current, UNUSED_IMAGE_MAX_AGE);
        // `fresh` (used just now) is the most recent; then the first of `recent`.
        assert!(fresh.exists() && current.exists());
        let kept: Vec<bool> = recent.iter().map(|d| d.exists()).collect();
        let mut want = vec![false; recent.len()];
        want[..OTHER_IMAGES_KEPT - 1].fill(true);
        assert_eq!(kept, want);
    }

    #[test]
    fn data_disk_is_sparse_and_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let disk = tmp.path().join("d.img");
        assert!(create_data_disk(&disk, 2).expect("create"));
        assert_eq!(std::fs::metadata(&disk).expect("meta").len(), 2 << 30);
        std::fs::write(&disk, b"state").expect("write");
        assert!(!create_data_disk(&disk, 2).expect("again"));
        assert_eq!(std::fs::read(&disk).expect("read"), b"state");
    }

    #[test]
    fn missing_inputs_are_named() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let inputs = Inputs {
            kernel_deb: tmp.path().join("absent.deb"),
            agent: tmp.path().join("agent"),
            busybox: tmp.path().join("busybox"),
        };
        let err = build(&inputs, tmp.path()).expect_err("missing");
        assert!(err.to_string().contains("absent.deb"), "{err}");
    }
}
