//! Debian packages: the kernel and the userland the engine runs in the guest (`nft` and the
//! libraries it links), fetched with `apt-get download` into the cache, unpacked with
//! `dpkg-deb`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{io, GuestImageError};

fn run(cmd: &mut Command) -> Result<String, GuestImageError> {
    let text = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| GuestImageError::Command {
        command: text.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(GuestImageError::Command {
            command: text,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Unpacks a `.deb`'s files under `dest`.
pub fn extract(deb: &Path, dest: &Path) -> Result<(), GuestImageError> {
    if !deb.is_file() {
        return Err(GuestImageError::MissingInput {
            what: "the package",
            path: deb.to_path_buf(),
            hint: "",
        });
    }
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest)).map(|_| ())
}

pub struct KernelTree {
    pub vmlinuz: PathBuf,
    pub modules_dir: PathBuf,
}

pub fn find_kernel(tree: &Path) -> Result<KernelTree, GuestImageError> {
    let boot = tree.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .map_err(io("listing", &boot))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .ok_or_else(|| GuestImageError::KernelLayout("boot/vmlinuz-*".into()))?;
    let version = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap_or_default()
        .to_string();
    let modules_dir = tree.join("lib/modules").join(&version);
    if !modules_dir.join("kernel").is_dir() {
        return Err(GuestImageError::KernelLayout(format!(
            "lib/modules/{version}/kernel"
        )));
    }
    Ok(KernelTree {
        vmlinuz,
        modules_dir,
    })
}

/// Downloads the current `linux-image-<arch>` kernel package into
/// `<cache>/debs` with `apt-get download` (once; later calls find it).
/// `$BERTH_KERNEL_DEB` names a package to use instead.
pub fn fetch_kernel_deb(cache: &Path) -> Result<PathBuf, GuestImageError> {
    if let Some(p) = std::env::var_os("BERTH_KERNEL_DEB") {
        return Ok(PathBuf::from(p));
    }
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs).map_err(io("creating", &debs))?;
    let meta = "linux-image-amd64";
    // The metapackage names the versioned package.
    let depends = run(Command::new("apt-cache").args(["depends", meta]))?;
    let package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .ok_or_else(|| GuestImageError::Command {
            command: format!("apt-cache depends {meta}"),
            detail: "no linux-image dependency".into(),
        })?;
    download(&debs, &package)
}

/// The packages the guest's userland is made of: `nft` (the engine programs the guest's
/// packet filter with it, as on a host) and everything it depends on, as apt resolves it.
pub const USERLAND_ROOTS: &[&str] = &["nftables"];

/// Downloads [`USERLAND_ROOTS`] and their dependencies (not recommends) into `<cache>/debs`;
/// `$BERTH_USERLAND_DEBS` (a directory of `.deb` files) is used instead when set. Sorted, so
/// the image digest does not depend on directory order.
pub fn fetch_userland_debs(cache: &Path) -> Result<Vec<PathBuf>, GuestImageError> {
    if let Some(dir) = std::env::var_os("BERTH_USERLAND_DEBS") {
        let dir = PathBuf::from(dir);
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(io("listing", &dir))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .collect();
        found.sort();
        return Ok(found);
    }
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs).map_err(io("creating", &debs))?;
    let mut args = vec![
        "depends",
        "--recurse",
        "--no-recommends",
        "--no-suggests",
        "--no-conflicts",
        "--no-breaks",
        "--no-replaces",
        "--no-enhances",
    ];
    args.extend(USERLAND_ROOTS);
    let listing = run(Command::new("apt-cache").args(&args))?;
    let mut packages: Vec<&str> = listing
        .lines()
        // Package names start a line; their relations are indented; virtual ones are <named>.
        .filter(|l| !l.starts_with(' ') && !l.starts_with('<') && !l.is_empty())
        .collect();
    packages.sort_unstable();
    packages.dedup();
    packages
        .into_iter()
        .map(|package| download(&debs, package))
        .collect()
}

/// `<debs>/<package>_*.deb`, downloaded unless already there.
fn download(debs: &Path, package: &str) -> Result<PathBuf, GuestImageError> {
    let existing = |debs: &Path| -> Option<PathBuf> {
        std::fs::read_dir(debs)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            })
    };
    if let Some(found) = existing(debs) {
        return Ok(found);
    }
    run(Command::new("apt-get")
        .args(["download", "-q", package])
        .current_dir(debs))?;
    existing(debs).ok_or_else(|| GuestImageError::Command {
        command: format!("apt-get download {package}"),
        detail: "no package file appeared".into(),
    })
}
