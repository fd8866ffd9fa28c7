//! The supervisor's Docker API endpoint, per OS: the Unix socket
//! `<machine dir>/berth.sock`, or on Windows the named pipe
//! `\\.\pipe\berth-<machine>`. Each is claimed before this returns, so a
//! taken one fails the start; then it is served on a task until `stop`.

use std::future::Future;

use anyhow::{Context, Result};
use berth_platform::machine::MachineDir;
use berth_platform::vsock::HostVsock;
use tokio::task::JoinHandle;

#[cfg(unix)]
pub fn serve(
    d: &MachineDir,
    _machine: &str,
    vsock: HostVsock,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<JoinHandle<()>> {
    let api_socket = d.api_socket();
    let _ = std::fs::remove_file(&api_socket);
    let listener = tokio::net::UnixListener::bind(&api_socket)
        .with_context(|| format!("binding {}", api_socket.display()))?;
    Ok(tokio::spawn(berth_platform::forward::serve_endpoint(
        listener, vsock, stop,
    )))
}

#[cfg(windows)]
pub fn serve(
    _d: &MachineDir,
    machine: &str,
    vsock: HostVsock,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<JoinHandle<()>> {
    let pipe = berth_platform::endpoint::api_pipe_name(machine)?;
    let endpoint = berth_platform::pipe_endpoint::PipeEndpoint::bind(&pipe)
        .with_context(|| format!("creating the pipe {pipe} (is another machine serving it?)"))?;
    Ok(tokio::spawn(async move {
        if let Err(e) = endpoint.serve(vsock, stop).await {
            eprintln!("berth machine: serving {pipe}: {e}");
        }
    }))
}
