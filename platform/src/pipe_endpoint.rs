//! Windows: the host endpoint as a named pipe (`\\.\pipe\berth-<machine>`,
//! see [`crate::endpoint::api_pipe_name`]), spliced to the agent's API
//! exactly as [`crate::forward::serve_endpoint`] does for a Unix socket.
//! Uses tokio's named pipes, so unlike the rest of the Windows code it is
//! not type-checked on Linux.

use std::future::Future;

use tokio::net::windows::named_pipe::ServerOptions;

use crate::forward::serve_endpoint_client;
use crate::vsock::HostVsock;

/// Serves `pipe` until `stop`. Fails at once if another process already
/// serves a pipe of that name.
pub async fn serve_pipe_endpoint(
    pipe: &str,
    vsock: HostVsock,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // The first instance claims the name; later instances serve more clients.
    let mut server = ServerOptions::new()
        .first_pipe_instance(true)
        .create(pipe)?;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            connected = server.connect() => {
                // A client that went away before we saw it: a fresh instance.
                if connected.is_err() {
                    server = ServerOptions::new().create(pipe)?;
                    continue;
                }
                let client = std::mem::replace(&mut server, ServerOptions::new().create(pipe)?);
                tokio::spawn(serve_endpoint_client(client, vsock.clone()));
            }
        }
    }
}
