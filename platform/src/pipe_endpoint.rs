//! Windows: the host endpoint as a named pipe (`\\.\pipe\berth-<machine>`,
//! see [`crate::endpoint::api_pipe_name`]), spliced to the agent's API
//! exactly as [`crate::forward::serve_endpoint`] does for a Unix socket.
//! Every instance grants access to SYSTEM, the Administrators and the user
//! who started the supervisor only ([`crate::process::owner_only_sddl`]):
//! the supervisor runs elevated (HCS needs it), and a pipe's default
//! descriptor would leave that user's unelevated `docker` read access only.

use std::future::Future;

use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};

use crate::forward::serve_endpoint_client;
use crate::process::OwnerOnly;
use crate::vsock::HostVsock;

/// A claimed pipe name, ready to serve.
pub struct PipeEndpoint {
    pipe: String,
    security: OwnerOnly,
    first: NamedPipeServer,
}

impl PipeEndpoint {
    /// Claims `pipe` now; fails at once if another process already serves a
    /// pipe of that name. Must be called inside a tokio runtime.
    pub fn bind(pipe: &str) -> std::io::Result<Self> {
        let mut security = OwnerOnly::new()?;
        let first = instance(pipe, true, &mut security)?;
        Ok(Self {
            pipe: pipe.to_string(),
            security,
            first,
        })
    }

    /// Serves the pipe until `stop`, each client on its own task.
    pub async fn serve(
        self,
        vsock: HostVsock,
        stop: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let Self {
            pipe,
            mut security,
            first: mut server,
        } = self;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                connected = server.connect() => {
                    // A client that went away before we saw it: a fresh instance.
                    if connected.is_err() {
                        server = instance(&pipe, false, &mut security)?;
                        continue;
                    }
                    let next = instance(&pipe, false, &mut security)?;
                    let client = std::mem::replace(&mut server, next);
                    tokio::spawn(serve_endpoint_client(client, vsock.clone()));
                }
            }
        }
    }
}

/// Serves `pipe` until `stop` ([`PipeEndpoint::bind`], then serve).
pub async fn serve_pipe_endpoint(
    pipe: &str,
    vsock: HostVsock,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    PipeEndpoint::bind(pipe)?.serve(vsock, stop).await
}

/// One more instance of `pipe` (the first claims the name).
fn instance(pipe: &str, first: bool, security: &mut OwnerOnly) -> std::io::Result<NamedPipeServer> {
    // SAFETY: valid SECURITY_ATTRIBUTES whose descriptor lives as long as
    // `security`, which outlives the call (CreateNamedPipeW copies it).
    unsafe {
        ServerOptions::new()
            .first_pipe_instance(first)
            .create_with_security_attributes_raw(pipe, security.as_ptr().cast())
    }
}
