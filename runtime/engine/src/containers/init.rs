//! The init process of `--init` (`HostConfig.Init`), as Docker runs tini: the embedded static
//! program (see `berth-embedded`'s `init/init.rs`) is written once into the data root under a
//! name derived from its content, `<root>/init/sha256-<hex>`, and bind-mounted read-only into
//! the container at [`CONTAINER_PATH`]; the container's process becomes
//! `/sbin/docker-init -- <entrypoint> <cmd>…`.
//!
//! The name changes with the content, so a container created by an older engine keeps the init
//! its `config.json` names, and nothing is ever rewritten in place.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::ContainerError;

/// Where the init appears in the container (Docker's path, which users and tools know).
pub const CONTAINER_PATH: &str = "/sbin/docker-init";

/// The installed init for the data root `root`, written now if it is not there yet.
pub fn install(root: &Path) -> Result<PathBuf, ContainerError> {
    let binary = berth_embedded::init_binary();
    if binary.is_empty() {
        return Err(ContainerError::InvalidParameter(
            "--init is not available: this build of the engine has no init program for its architecture".into(),
        ));
    }
    let digest = berth_embedded::sha256_digest(binary);
    let hex = digest.strip_prefix("sha256:").unwrap_or(&digest);
    let dir = root.join("init");
    let path = dir.join(format!("sha256-{hex}"));
    // Only ever renamed into place complete, so a file of the right size is the program.
    if fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == binary.len() as u64) {
        return Ok(path);
    }
    let ctx = || format!("installing the init program at {}", path.display());
    fs::create_dir_all(&dir).map_err(ContainerError::io(ctx()))?;
    // A name of its own per writer: two creates may install at once.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".sha256-{hex}.tmp{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&tmp)?;
        file.write_all(binary)?;
        // The mode asked for at open is masked by the umask.
        file.set_permissions(fs::Permissions::from_mode(0o755))?;
        file.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(ContainerError::io(ctx())(e));
    }
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_once_by_content() {
        let root = tempfile::tempdir().expect("temp dir");
        let path = install(root.path()).expect("install");
        assert_eq!(
            fs::read(&path).expect("read"),
            berth_embedded::init_binary()
        );
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("sha256-")));
        // Again: the same file, and no temporary file left behind.
        assert_eq!(install(root.path()).expect("install again"), path);
        let names: Vec<_> = fs::read_dir(root.path().join("init"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
