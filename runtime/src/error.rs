//! The runtime's top-level error: lifecycle errors of its own plus one
//! transparent variant per module error.

use std::path::PathBuf;

use crate::state::Status;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid container id {0:?}: it must match [A-Za-z0-9][A-Za-z0-9_.-]* (at most 1024 characters)")]
    InvalidId(String),
    #[error("container \"{0}\" already exists")]
    AlreadyExists(String),
    #[error("cannot {operation} container \"{id}\": it is {status}")]
    WrongStatus {
        id: String,
        operation: &'static str,
        status: Status,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Sys { context: String, source: nix::Error },
    #[error("container process: {0}")]
    Child(String),
    #[error("terminal is set in config.json but no --console-socket was given")]
    ConsoleSocketRequired,
    #[error("--console-socket was given but process.terminal is false")]
    ConsoleSocketUnused,
    #[error("init process of container \"{id}\" is gone: {path}")]
    InitGone { id: String, path: PathBuf },
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error(transparent)]
    Namespace(#[from] crate::namespaces::NamespaceError),
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Capability(#[from] crate::capabilities::CapabilityError),
    #[error(transparent)]
    Lsm(#[from] crate::lsm::LsmError),
    #[error(transparent)]
    ClonedBinary(#[from] crate::cloned_binary::ClonedBinaryError),
}

impl RuntimeError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| RuntimeError::Io { context, source }
    }

    pub(crate) fn sys(context: impl Into<String>) -> impl FnOnce(nix::Error) -> Self {
        let context = context.into();
        move |source| RuntimeError::Sys { context, source }
    }
}

/// An error with its chain of causes, each cause added once (several of our
/// errors already print their source in their own message).
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}
