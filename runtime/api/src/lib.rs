//! The Docker Engine API, served by Berth over any byte stream.
//!
//! The server is written once against `AsyncRead + AsyncWrite` so the same
//! code serves the daemon's Unix socket on Linux and the guest agent's vsock
//! in the VM. HTTP/1.1 with upgrades (attach and exec switch protocols).
//!
//! Modules:
//! - [`router`]: API version prefix, path matching, the common headers, and
//!   the one fallback for endpoints not offered yet.
//! - [`system`]: `_ping`, `/version`, `/info`, `/system/df`, swarm stubs.
//! - [`images`]: list, inspect, history, tag, remove, prune, search, `/auth`.
//! - [`transfer`]: pull and push with Docker's JSON progress stream; save,
//!   load and import as streamed tar bodies on blocking threads.
//! - [`events`]: the event log and `/events`.
//! - [`volumes`]: `/volumes` (the local driver); [`archive`]: `docker cp`.
//! - [`detach`]: the detach keys of attach and exec sessions with a terminal.
//! - [`error`]: the error kinds and their HTTP status codes.
//! - [`body`], [`query`], [`time`]: plumbing.

#![recursion_limit = "256"]

pub mod archive;
pub mod body;
pub mod containers;
pub mod error;
pub mod events;
pub mod images;
pub mod linger;
pub mod networks;
pub mod query;
pub mod router;
pub mod system;
pub mod time;
pub mod transfer;
pub mod volumes;

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_engine::ImageService;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

pub use error::ApiError;
pub use events::EventHub;

/// The API version we speak, and the oldest we accept.
pub const API_VERSION: &str = "1.45";
pub const MIN_API_VERSION: &str = "1.24";

/// What the daemon tells clients about itself.
#[derive(Debug, Clone, Default)]
pub struct DaemonInfo {
    /// A stable engine id (see [`system::engine_id`]).
    pub id: String,
    pub data_root: PathBuf,
    pub debug: bool,
    pub registry_mirrors: Vec<String>,
    pub insecure_registries: Vec<String>,
    /// The runtime binary reported under `Runtimes`.
    pub runtime_path: String,
    /// Bridge networking (`None`: containers get loopback only, and `/networks` answers 501).
    pub network: Option<berth_engine::containers::NetworkConfig>,
}

/// Everything a request handler reaches.
pub struct ApiState {
    pub images: Arc<ImageService>,
    pub containers: berth_engine::containers::ContainerService,
    pub events: EventHub,
    pub daemon: DaemonInfo,
}

impl ApiState {
    /// Opens the container service on the same data root as the images
    /// (live-restoring containers whose monitors still run).
    pub fn new(images: ImageService, daemon: DaemonInfo) -> Result<Self, ApiError> {
        let images = Arc::new(images);
        let mut config = berth_engine::containers::ServiceConfig::new(daemon.data_root.clone());
        config.network = daemon.network.clone();
        let containers =
            berth_engine::containers::ContainerService::open(config, Arc::clone(&images))?;
        // One event log: the engine's services publish there, the image
        // endpoints too.
        let events = EventHub::new(containers.events().clone());
        Ok(ApiState {
            images,
            containers,
            events,
            daemon,
        })
    }
}

/// Serves HTTP/1.1 (with upgrades) on one connection until the client closes it.
pub async fn serve_connection<S>(stream: S, state: Arc<ApiState>) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_connection_until(stream, state, watch::channel(false).1).await
}

async fn serve_connection_until<S>(
    stream: S,
    state: Arc<ApiState>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(router::handle(request, state).await) }
    });
    let connection = http1::Builder::new()
        .serve_connection(TokioIo::new(linger::LingeringClose::new(stream)), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result,
        _ = stop.wait_for(|s| *s) => {}
    }
    // Finish the request in flight, then close.
    connection.as_mut().graceful_shutdown();
    connection.await
}

/// Accepts connections on a Unix socket forever.
pub async fn serve_unix(listener: tokio::net::UnixListener, state: Arc<ApiState>) {
    serve_unix_until(listener, state, std::future::pending()).await
}

/// How long in-flight requests get to finish after shutdown starts.
const DRAIN: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` completes; then stops accepting,
/// ends event streams, and waits (at most [`DRAIN`]) for requests in flight.
pub async fn serve_unix_until(
    listener: tokio::net::UnixListener,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let state = Arc::clone(&state);
                    let stop = stop_rx.clone();
                    connections.spawn(async move {
                        let _ = serve_connection_until(stream, state, stop).await;
                    });
                }
                Err(e) => {
                    eprintln!("berth-api: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    stop_tx.send_replace(true);
    state.events.close();
    let drained = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}
