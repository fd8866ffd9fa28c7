//! The container service's errors, worded like Docker's where a client may
//! match on the text.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// 404.
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    /// 404 (the docker CLI pulls the image, then retries the create).
    #[error("No such image: {0}")]
    ImageNotFound(String),
    /// 409.
    #[error("Conflict. The container name \"{0}\" is already in use by container \"{1}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameConflict(String, String),
    /// 409.
    #[error("Container {0} is not running")]
    NotRunning(String),
    /// 409.
    #[error("Container {0} is paused, unpause the container before stopping or killing")]
    Paused(String),
    /// 409.
    #[error("Container {0} is not paused")]
    NotPaused(String),
    /// 409: `rm` of a running container without force.
    #[error("cannot remove container \"{0}\": container is running: stop the container before removing or force remove")]
    RemoveRunning(String),
    /// 409: an operation that does not apply to the container's state.
    #[error("{0}")]
    Conflict(String),
    /// 304 on start.
    #[error("container {0} is already running")]
    AlreadyRunning(String),
    /// 304 on stop.
    #[error("container {0} is already stopped")]
    AlreadyStopped(String),
    /// 400.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// 404 for exec ids.
    #[error("No such exec instance: {0}")]
    NoSuchExec(String),
    /// 500: the OCI runtime refused.
    #[error("OCI runtime error: {0}")]
    Runtime(Box<berth_runtime::RuntimeError>),
    /// 500: the monitor process failed to create or start the container;
    /// 400 when its command cannot be run (`exit_code` 127 or 126, as Docker
    /// records for a command that is missing or not executable).
    #[error("failed to start container {id}: {message}")]
    StartFailed {
        id: String,
        message: String,
        exit_code: Option<i32>,
    },
    #[error(transparent)]
    Image(Box<crate::images::ImageError>),
    #[error(transparent)]
    Mount(#[from] berth_snapshot::MountError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt state: {source}")]
    CorruptState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// 500: an exec's process could not be started.
    #[error("exec failed: {0}")]
    ExecFailed(String),
    #[error("background task failed: {0}")]
    Task(String),
    /// 404: `docker cp` of a path the container does not have.
    #[error("Could not find the file {path} in container {container}")]
    NoSuchPath { container: String, path: String },
    #[error(transparent)]
    Volume(#[from] crate::volumes::VolumeError),
    /// 404.
    #[error("network {0} not found")]
    NetworkNotFound(String),
    /// 403: an operation the network's or container's state forbids.
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Network(Box<berth_network::NetworkError>),
}

impl From<berth_runtime::RuntimeError> for ContainerError {
    fn from(e: berth_runtime::RuntimeError) -> Self {
        ContainerError::Runtime(Box::new(e))
    }
}

impl From<crate::images::ImageError> for ContainerError {
    fn from(e: crate::images::ImageError) -> Self {
        ContainerError::Image(Box::new(e))
    }
}

impl ContainerError {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| ContainerError::Io { context, source }
    }

    /// The HTTP status the Docker Engine API uses for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            ContainerError::NoSuchContainer(_)
            | ContainerError::ImageNotFound(_)
            | ContainerError::NoSuchExec(_) => 404,
            ContainerError::NameConflict(..)
            | ContainerError::NotRunning(_)
            | ContainerError::Paused(_)
            | ContainerError::NotPaused(_)
            | ContainerError::RemoveRunning(_)
            | ContainerError::Conflict(_) => 409,
            ContainerError::AlreadyRunning(_) | ContainerError::AlreadyStopped(_) => 304,
            ContainerError::InvalidParameter(_) => 400,
            ContainerError::StartFailed {
                exit_code: Some(_), ..
            } => 400,
            ContainerError::NoSuchPath { .. } => 404,
            ContainerError::Volume(v) => v.http_status(),
            ContainerError::NetworkNotFound(_) => 404,
            ContainerError::Forbidden(_) => 403,
            ContainerError::Network(n) => network_status(n),
            _ => 500,
        }
    }
}

/// Docker's status for a network error (moby's errdefs kinds for the same conditions).
pub fn network_status(e: &berth_network::NetworkError) -> u16 {
    use berth_network::NetworkError as N;
    match e {
        N::NotFound(_) | N::NotAttached { .. } => 404,
        N::NameInUse(_) => 409,
        N::SubnetOverlap { .. }
        | N::InUse { .. }
        | N::Predefined(_)
        | N::AlreadyAttached { .. } => 403,
        N::InvalidName(_)
        | N::Ambiguous(_)
        | N::InvalidConfig { .. }
        | N::InvalidPortSpec { .. }
        | N::PortUnavailable { .. }
        | N::AddressOutOfRange { .. } => 400,
        N::PortInUse { .. } | N::AddressInUse { .. } | N::PoolExhausted { .. } => 409,
        _ => 500,
    }
}
