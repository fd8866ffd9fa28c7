//! Pieces every command shares: the state root, container ids, loading a
//! container and its bundle's spec.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_runtime::container::{Container, Runtime};
use berth_runtime::state::StateError;
use berth_runtime::RuntimeError;
use oci_spec::runtime::Spec;

/// Errors callers match on (containerd's shim looks for these words).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("container not running")]
    NotRunning,
}

/// Default `--root`: `/run/berth-runc` for root, else
/// `$XDG_RUNTIME_DIR/berth-runc` (same rule as `berth_platform`).
pub fn default_root() -> PathBuf {
    let is_root = nix::unistd::geteuid().is_root();
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !is_root && !dir.is_empty() => PathBuf::from(dir).join("berth-runc"),
        _ => PathBuf::from("/run/berth-runc"),
    }
}

/// Checks a container id: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 1024 bytes.
/// Ids become directory names, so nothing else (no `/`, no `..`) gets through.
pub fn validate_id(id: &str) -> Result<()> {
    Ok(berth_runtime::container::validate_id(id)?)
}

/// Loads an existing container. The library's errors already name the
/// container ("container \"x\" does not exist"), so no context is added.
pub fn load(rt: &Runtime, id: &str) -> Result<Container> {
    validate_id(id)?;
    Ok(rt.load(id)?)
}

/// Whether `err` says there is no container by the id asked for.
pub fn is_not_found(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<RuntimeError>(),
        Some(RuntimeError::State(StateError::NotFound(_)))
    )
}

/// Resolves `--bundle` (default: the current directory) to an absolute path
/// that exists.
pub fn bundle_dir(bundle: Option<&Path>) -> Result<PathBuf> {
    let dir = match bundle {
        Some(b) => b.to_path_buf(),
        None => std::env::current_dir().context("getting the current directory")?,
    };
    let abs = std::path::absolute(&dir)
        .with_context(|| format!("resolving bundle path {}", dir.display()))?;
    if !abs.is_dir() {
        bail!(
            "bundle {} does not exist or is not a directory",
            abs.display()
        );
    }
    Ok(abs)
}

/// Reads `<bundle>/config.json`.
pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    Spec::load(&path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accepted() {
        for id in ["a", "0", "abc-DEF_1.2", "k8s_POD.x-y", &"a".repeat(1024)] {
            assert!(validate_id(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn ids_rejected() {
        for id in [
            "",
            "-a",
            ".hidden",
            "_x",
            "a/b",
            "..",
            "a b",
            "é",
            "a:b",
            &"a".repeat(1025),
        ] {
            let err = validate_id(id).expect_err(id);
            assert!(err.to_string().contains("invalid container id"), "{err}");
        }
    }

    #[test]
    fn bad_id_is_named() {
        let err = validate_id("a/b").expect_err("slash");
        assert!(err.to_string().contains("\"a/b\""), "{err}");
        assert!(!is_not_found(&err));
    }
}
