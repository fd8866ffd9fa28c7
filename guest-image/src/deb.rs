//! Debian packages: the kernel and busybox the guest runs, for the guest's architecture, which
//! need not be the host's.
//! apt runs with its own sources list and state in the cache (the host's apt setup is neither
//! used nor touched) and checks the archive's signatures against Debian's keyring as always;
//! packages are unpacked with `dpkg-deb`.

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
    // Since trixie the modules are under /usr (merged /usr), before under /lib.
    let modules_dir = ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|base| tree.join(base).join(&version))
        .find(|dir| dir.join("kernel").is_dir())
        .ok_or_else(|| {
            GuestImageError::KernelLayout(format!("(usr/)lib/modules/{version}/kernel"))
        })?;
    Ok(KernelTree {
        vmlinuz,
        modules_dir,
    })
}

/// The Debian release the guest is built from.
pub const SUITE: &str = "bookworm";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// How long downloaded package lists are trusted before apt refreshes them.
const LISTS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// apt with a private state for one architecture (`amd64`, `arm64`) under the cache.
pub struct Apt {
    arch: String,
    state: PathBuf,
    debs: PathBuf,
    /// Set when the lists could not be refreshed and older ones are in use.
    stale_lists: Option<String>,
}

impl Apt {
    /// Prepares the private state and refreshes its package lists when older than a day.
    /// `$BERTH_DEBIAN_MIRROR` and `$BERTH_DEBIAN_KEYRING` override the mirror and keyring.
    pub fn new(cache: &Path, arch: &str) -> Result<Self, GuestImageError> {
        let keyring = std::env::var_os("BERTH_DEBIAN_KEYRING")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_KEYRING));
        let mirror =
            std::env::var("BERTH_DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.to_string());
        Self::with_source(cache, arch, &mirror, &keyring)
    }

    /// [`Apt::new`] with the mirror and keyring given.
    pub fn with_source(
        cache: &Path,
        arch: &str,
        mirror: &str,
        keyring: &Path,
    ) -> Result<Self, GuestImageError> {
        if arch.is_empty() || !arch.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(GuestImageError::Command {
                command: "apt".into(),
                detail: format!("{arch:?} is not a Debian architecture name"),
            });
        }
        if !keyring.is_file() {
            return Err(GuestImageError::MissingInput {
                what: "Debian's archive keyring",
                path: keyring.to_path_buf(),
                hint:
                    " (Debian: apt-get install debian-archive-keyring, or set BERTH_DEBIAN_KEYRING)",
            });
        }
        let state = cache.join("apt").join(format!("{arch}-{SUITE}"));
        let debs = cache.join("debs").join(arch);
        for dir in [
            state.join("lists/partial"),
            state.join("archives/partial"),
            debs.clone(),
        ] {
            std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        }
        let sources = state.join("sources.list");
        let line = format!(
            "deb [arch={arch} signed-by={}] {mirror} {SUITE} main\n",
            keyring.display()
        );
        std::fs::write(&sources, line).map_err(io("writing", &sources))?;
        let mut apt = Self {
            arch: arch.to_string(),
            state,
            debs,
            stale_lists: None,
        };
        apt.refresh_lists()?;
        Ok(apt)
    }

    /// Why the package lists could not be refreshed, when older ones are used instead.
    pub fn stale_lists(&self) -> Option<&str> {
        self.stale_lists.as_deref()
    }

    /// Marks when the lists were last fetched; what was resolved from them is
    /// remembered against it.
    fn lists_stamp(&self) -> PathBuf {
        self.state.join("lists/.updated")
    }

    /// Which fetch of the lists is in use (the stamp's mtime in ns), if any.
    fn lists_version(&self) -> Option<String> {
        let fetched = std::fs::metadata(self.lists_stamp()).and_then(|m| m.modified());
        let since_epoch = fetched.ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(since_epoch.as_nanos().to_string())
    }

    fn command(&self, program: &str) -> Command {
        let s = self.state.display();
        let mut cmd = Command::new(program);
        cmd.arg("-q");
        for opt in [
            format!("APT::Architecture={}", self.arch),
            format!("APT::Architectures={}", self.arch),
            format!("Dir::Etc::SourceList={s}/sources.list"),
            "Dir::Etc::SourceParts=/nonexistent".into(),
            format!("Dir::State::Lists={s}/lists"),
            format!("Dir::Cache={s}"),
            "Dir::State::status=/dev/null".into(),
            "Acquire::Languages=none".into(),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false".into(),
            // The state is ours alone: no lock on the host's, and no _apt user needed to write it.
            "Debug::NoLocking=1".into(),
            "APT::Sandbox::User=root".into(),
        ] {
            cmd.arg("-o").arg(opt);
        }
        cmd
    }

    fn refresh_lists(&mut self) -> Result<(), GuestImageError> {
        let stamp = self.lists_stamp();
        let fetched = std::fs::metadata(&stamp).and_then(|m| m.modified()).ok();
        if fetched
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < LISTS_MAX_AGE)
        {
            return Ok(());
        }
        let mut update = self.command("apt-get");
        if fetched.is_some() {
            // Lists to fall back on: a refresh is worth one try, not apt's retries with
            // backoff, which add ~7 s to a machine start offline.
            update.args(["-o", "Acquire::Retries=0"]);
        }
        match run(update.arg("update")) {
            Ok(_) => std::fs::write(&stamp, b"").map_err(io("writing", &stamp)),
            // Offline (or the mirror is down): lists fetched before still name
            // packages that are in the cache, so a machine can start.
            Err(e) if fetched.is_some() => {
                self.stale_lists = Some(e.to_string());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// `<cache>/debs/<arch>/<package>_*.deb`, downloaded unless already there.
    pub fn download(&self, package: &str) -> Result<PathBuf, GuestImageError> {
        let existing = |debs: &Path| -> Option<PathBuf> {
            std::fs::read_dir(debs)
                .ok()?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with(&format!("{package}_")) && n.ends_with(".deb")
                    })
                })
        };
        if let Some(found) = existing(&self.debs) {
            return Ok(found);
        }
        run(self
            .command("apt-get")
            .args(["download", package])
            .current_dir(&self.debs))?;
        existing(&self.debs).ok_or_else(|| GuestImageError::Command {
            command: format!("apt-get download {package}"),
            detail: "no package file appeared".into(),
        })
    }
}

/// Downloads the current `linux-image-<arch>` kernel package (once; later calls find it).
/// `$BERTH_KERNEL_DEB` names a package to use instead.
pub fn fetch_kernel_deb(apt: &Apt) -> Result<PathBuf, GuestImageError> {
    if let Some(p) = std::env::var_os("BERTH_KERNEL_DEB") {
        return Ok(PathBuf::from(p));
    }
    let meta = format!("linux-image-{}", apt.arch);
    // The metapackage names the versioned package. Asking apt-cache takes ~0.7 s, so
    // the answer is kept until the lists are fetched again.
    let memo = apt.state.join("kernel-package");
    let lists_version = apt.lists_version();
    let remembered = std::fs::read_to_string(&memo).ok().and_then(|text| {
        let (version, package) = text.trim().split_once(' ')?;
        (Some(version) == lists_version.as_deref() && package.starts_with("linux-image-"))
            .then(|| package.to_string())
    });
    let package = match remembered {
        Some(package) => package,
        None => {
            let depends = run(apt.command("apt-cache").args(["depends", &meta]))?;
            let package = depends
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Depends: "))
                .find(|p| p.starts_with("linux-image-"))
                .map(str::to_string)
                .ok_or_else(|| GuestImageError::Command {
                    command: format!("apt-cache depends {meta}"),
                    detail: "no linux-image dependency".into(),
                })?;
            if let Some(version) = lists_version {
                // Only a cache: without it the next start asks apt-cache again. Renamed
                // into place, so a reader never sees half a package name.
                let tmp = memo.with_extension(format!("tmp-{}", std::process::id()));
                if std::fs::write(&tmp, format!("{version} {package}\n")).is_ok() {
                    let _ = std::fs::rename(&tmp, &memo);
                }
            }
            package
        }
    };
    apt.download(&package)
}

/// Debian's static busybox for the guest, unpacked from `busybox-static` into the cache.
pub fn fetch_busybox(apt: &Apt, cache: &Path) -> Result<PathBuf, GuestImageError> {
    let deb = apt.download("busybox-static")?;
    let stem = deb
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = cache.join("busybox").join(stem);
    let busybox = dir.join("busybox");
    if busybox.is_file() {
        return Ok(busybox);
    }
    let tree = dir.join(format!(".tree-{}", std::process::id()));
    std::fs::create_dir_all(&tree).map_err(io("creating", &tree))?;
    extract(&deb, &tree)?;
    let unpacked = tree.join("bin/busybox");
    let result = std::fs::rename(&unpacked, &busybox).map_err(io("unpacking", &unpacked));
    let _ = std::fs::remove_dir_all(&tree);
    result.map(|()| busybox)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mirror apt has no method for: `apt-get update` fails at once (exit 100),
    /// as it does when the lists cannot be verified.
    const BROKEN_MIRROR: &str = "berth-offline://nowhere/debian";

    fn have_apt() -> bool {
        Path::new(DEFAULT_KEYRING).is_file() && Command::new("apt-get").arg("-v").output().is_ok()
    }

    #[test]
    fn the_kernel_package_is_resolved_once_per_lists() {
        if !have_apt() {
            eprintln!("skipping: no apt-get or Debian keyring here");
            return;
        }
        let cache = tempfile::tempdir().expect("tempdir");
        let state = cache.path().join(format!("apt/amd64-{SUITE}"));
        std::fs::create_dir_all(state.join("lists")).expect("mkdir");
        // Lists "fetched" just now (so no refresh runs), with nothing in them.
        std::fs::write(state.join("lists/.updated"), b"").expect("stamp");
        let apt = Apt::with_source(
            cache.path(),
            "amd64",
            BROKEN_MIRROR,
            Path::new(DEFAULT_KEYRING),
        )
        .expect("apt");
        // apt-cache knows no kernel from empty lists: resolving asks it, and fails.
        let err = fetch_kernel_deb(&apt).expect_err("empty lists");
        assert!(err.to_string().contains("apt-cache"), "{err}");

        // An answer remembered for these lists is used without asking apt-cache.
        let deb = cache
            .path()
            .join("debs/amd64/linux-image-9.9.9-test_1_amd64.deb");
        std::fs::write(&deb, b"").expect("deb");
        let version = apt.lists_version().expect("stamp");
        let memo = state.join("kernel-package");
        std::fs::write(&memo, format!("{version} linux-image-9.9.9-test\n")).expect("memo");
        assert_eq!(fetch_kernel_deb(&apt).expect("remembered"), deb);

        // One remembered for other lists is not.
        std::fs::write(&memo, format!("{version}1 linux-image-9.9.9-test\n")).expect("memo");
        assert!(fetch_kernel_deb(&apt).is_err());
    }

    #[test]
    fn lists_fetched_before_are_used_when_refreshing_fails() {
        if !have_apt() {
            eprintln!("skipping: no apt-get or Debian keyring here");
            return;
        }
        let cache = tempfile::tempdir().expect("tempdir");
        let keyring = Path::new(DEFAULT_KEYRING);

        // Never fetched: nothing to fall back on, and the error says what failed.
        let err = Apt::with_source(cache.path(), "amd64", BROKEN_MIRROR, keyring)
            .err()
            .expect("no lists at all is an error");
        assert!(err.to_string().contains("apt-get"), "{err}");

        // Fetched two days ago: the refresh fails, the old lists are used and the
        // reason is kept for the caller to show.
        let stamp = cache
            .path()
            .join(format!("apt/amd64-{SUITE}/lists/.updated"));
        std::fs::write(&stamp, b"").expect("stamp");
        let two_days_ago = std::time::SystemTime::now() - 2 * LISTS_MAX_AGE;
        std::fs::File::options()
            .write(true)
            .open(&stamp)
            .and_then(|f| f.set_modified(two_days_ago))
            .expect("age the stamp");
        let apt = Apt::with_source(cache.path(), "amd64", BROKEN_MIRROR, keyring)
            .expect("stale lists are used");
        assert!(apt.stale_lists().is_some_and(|why| why.contains("apt-get")));
        // The stamp is not renewed: the next start tries again.
        let age = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .expect("stamp");
        assert_eq!(age, two_days_ago);
    }
}
