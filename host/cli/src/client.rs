//! The Docker Engine API client the CLI uses for everything (on every OS the
//! CLI only talks to the engine through its API).
//!
//! One HTTP/1.1 connection per request over the engine's Unix socket: the
//! CLI makes a handful of requests per command, and a fresh connection per
//! request keeps streaming responses (progress, logs) independent.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::io::AsyncReadExt;

/// The API version the CLI speaks.
pub const API_VERSION: &str = "1.45";

/// Where the engine listens: `unix:///path` (the default is the root daemon's).
#[derive(Debug, Clone)]
pub struct Endpoint {
    socket: PathBuf,
}

impl Endpoint {
    /// The engine for this invocation: `--context`/`--host`, then
    /// `BERTH_HOST`, `BERTH_CONTEXT`, the current context, the default
    /// socket (Docker's precedence; see [`crate::config::resolve_host`]).
    /// When nothing names an engine and `default_engine` is given, it says where the engine
    /// is (booting the machine first on macOS and Windows).
    pub fn resolve(
        host_flag: Option<&str>,
        context_flag: Option<&str>,
        default_engine: Option<crate::DefaultEngine>,
    ) -> Result<Self> {
        let store = crate::config::ContextStore::open()?;
        let host_env = std::env::var("BERTH_HOST").ok();
        let context_env = std::env::var("BERTH_CONTEXT").ok();
        let selection = crate::config::Selection {
            host_flag,
            context_flag,
            host_env: host_env.as_deref(),
            context_env: context_env.as_deref(),
        };
        let host = match default_engine {
            Some(engine) if crate::config::names_no_engine(&selection, &store)? => engine()?,
            _ => crate::config::resolve_host(&selection, &store)?,
        };
        Self::parse(&host)
    }

    pub fn parse(host: &str) -> Result<Self> {
        // Windows: `npipe:////./pipe/<name>` (Docker's spelling) is the pipe
        // `\\.\pipe\<name>`.
        if let Some(name) = host
            .strip_prefix("npipe:////./pipe/")
            .or_else(|| host.strip_prefix("npipe://./pipe/"))
            .filter(|n| !n.is_empty() && !n.contains(['/', '\\']))
        {
            return Ok(Self {
                socket: PathBuf::from(format!(r"\\.\pipe\{name}")),
            });
        }
        match host.strip_prefix("unix://") {
            Some(path) if !path.is_empty() => Ok(Self {
                socket: PathBuf::from(path),
            }),
            _ if host.starts_with('/') => Ok(Self {
                socket: PathBuf::from(host),
            }),
            _ => bail!("unsupported engine address {host:?}: use unix:///path/to/berth.sock"),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

#[cfg(unix)]
async fn connect_engine(socket: &Path) -> std::io::Result<tokio::net::UnixStream> {
    tokio::net::UnixStream::connect(socket).await
}

/// Windows: the engine's named pipe. All instances busy (ERROR_PIPE_BUSY)
/// is retried for a moment, as Docker's client does.
#[cfg(windows)]
async fn connect_engine(
    pipe: &Path,
) -> std::io::Result<tokio::net::windows::named_pipe::NamedPipeClient> {
    const ERROR_PIPE_BUSY: i32 = 231;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match tokio::net::windows::named_pipe::ClientOptions::new().open(pipe) {
            Err(e)
                if e.raw_os_error() == Some(ERROR_PIPE_BUSY)
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// An error response from the engine: its status and `message`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Error response from daemon: {}", self.message)
    }
}

impl std::error::Error for ApiError {}

pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// An attach/exec connection after the engine's 101.
pub struct Upgraded {
    pub io: TokioIo<hyper::upgrade::Upgraded>,
    /// From the engine's Content-Type: `Some(true)` for 8-byte framed
    /// stdout/stderr, `Some(false)` for a raw TTY stream, `None` if unsaid.
    pub multiplexed: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Self {
        Self { endpoint }
    }

    fn uri(path_and_query: &str) -> String {
        format!("http://berth/v{API_VERSION}{path_and_query}")
    }

    /// Sends a request and returns the response, turning error statuses into
    /// [`ApiError`].
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Body,
        headers: &[(&str, String)],
    ) -> Result<Response<Incoming>> {
        self.send_on_connection(method, path_and_query, body, headers, false)
            .await
    }

    /// `POST path` with `Connection: Upgrade` / `Upgrade: tcp` (attach,
    /// exec start): after the engine's 101 the connection is a raw byte
    /// stream both ways.
    pub async fn upgrade(&self, path: &str, body: Option<&serde_json::Value>) -> Result<Upgraded> {
        let mut headers = vec![
            ("Connection", "Upgrade".to_string()),
            ("Upgrade", "tcp".to_string()),
        ];
        let body = match body {
            Some(v) => {
                headers.push(("Content-Type", "application/json".to_string()));
                Self::json_body(v)
            }
            None => Self::empty(),
        };
        let response = self
            .send_on_connection(Method::POST, path, body, &headers, true)
            .await?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            bail!(
                "the engine answered {} instead of switching protocols for {path}",
                response.status()
            );
        }
        let multiplexed = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|ct| ct.contains("multiplexed-stream"));
        let io = hyper::upgrade::on(response)
            .await
            .context("switching the connection to a raw stream")?;
        Ok(Upgraded {
            io: TokioIo::new(io),
            multiplexed,
        })
    }

    async fn send_on_connection(
        &self,
        method: Method,
        path_and_query: &str,
        body: Body,
        headers: &[(&str, String)],
        upgrades: bool,
    ) -> Result<Response<Incoming>> {
        let stream = connect_engine(self.endpoint.socket())
            .await
            .with_context(|| {
                format!(
                    "Cannot connect to the Berth daemon at {}. Is the berth daemon running?",
                    self.endpoint.socket().display()
                )
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("talking to the Berth daemon")?;
        tokio::spawn(async move {
            let _ = if upgrades {
                connection.with_upgrades().await
            } else {
                connection.await
            };
        });
        let mut request = Request::builder()
            .method(method)
            .uri(Self::uri(path_and_query))
            .header("Host", "berth")
            .header(
                "User-Agent",
                concat!("berth-cli/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(body).context("building the request")?;
        let response = sender
            .send_request(request)
            .await
            .context("sending the request to the Berth daemon")?;
        if response.status().is_client_error() || response.status().is_server_error() {
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
            return Err(ApiError { status, message }.into());
        }
        Ok(response)
    }

    pub fn empty() -> Body {
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed()
    }

    pub fn json_body(value: &serde_json::Value) -> Body {
        Full::new(Bytes::from(value.to_string()))
            .map_err(|never| match never {})
            .boxed()
    }

    /// A request body streamed from an async reader (load, import).
    pub fn reader_body<R: tokio::io::AsyncRead + Unpin + Send + Sync + 'static>(reader: R) -> Body {
        let stream = futures_stream(reader);
        BodyExt::boxed(StreamBody::new(stream))
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let response = self.send(Method::GET, path, Self::empty(), &[]).await?;
        read_json(response).await
    }

    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T> {
        let (body, headers) = match body {
            Some(v) => (
                Self::json_body(v),
                vec![("Content-Type", "application/json".to_string())],
            ),
            None => (Self::empty(), Vec::new()),
        };
        let response = self.send(Method::POST, path, body, &headers).await?;
        read_json(response).await
    }

    /// POST/DELETE where only success matters.
    pub async fn call(&self, method: Method, path: &str) -> Result<Response<Incoming>> {
        self.send(method, path, Self::empty(), &[]).await
    }
}

/// Reads a whole JSON response.
pub async fn read_json<T: DeserializeOwned>(response: Response<Incoming>) -> Result<T> {
    let bytes = response
        .into_body()
        .collect()
        .await
        .context("reading the daemon's response")?
        .to_bytes();
    if bytes.is_empty() {
        return serde_json::from_str("null").map_err(|e| anyhow!("empty response: {e}"));
    }
    serde_json::from_slice(&bytes).context("the daemon's response is not the JSON expected")
}

/// Calls `line` for each newline-delimited JSON object of a streamed
/// response (pull/push progress, load output, events).
pub async fn for_each_json_line(
    response: Response<Incoming>,
    mut line: impl FnMut(serde_json::Value) -> Result<()>,
) -> Result<()> {
    let mut body = response.into_body();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the daemon's stream")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = pending.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&raw);
            let text = text.trim();
            if !text.is_empty() {
                line(serde_json::from_str(text).context("malformed stream line")?)?;
            }
        }
    }
    let text = String::from_utf8_lossy(&pending);
    if !text.trim().is_empty() {
        line(serde_json::from_str(text.trim()).context("malformed stream line")?)?;
    }
    Ok(())
}

/// Copies a response body into `out`.
pub async fn copy_body_to(
    response: Response<Incoming>,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> Result<u64> {
    use tokio::io::AsyncWriteExt;
    let mut body = response.into_body();
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the daemon's stream")?;
        if let Ok(data) = frame.into_data() {
            out.write_all(&data).await.context("writing output")?;
            total += data.len() as u64;
        }
    }
    out.flush().await.context("writing output")?;
    Ok(total)
}

type ChunkStream = std::pin::Pin<
    Box<dyn futures_core::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + Sync>,
>;

fn futures_stream<R: tokio::io::AsyncRead + Unpin + Send + Sync + 'static>(
    reader: R,
) -> ChunkStream {
    Box::pin(ReaderStream {
        reader,
        done: false,
    })
}

/// A tiny `Stream` over an `AsyncRead`, in 256 KiB frames.
struct ReaderStream<R> {
    reader: R,
    done: bool,
}

impl<R: tokio::io::AsyncRead + Unpin> futures_core::Stream for ReaderStream<R> {
    type Item = Result<Frame<Bytes>, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        let mut buf = vec![0u8; 256 * 1024];
        let mut read_buf = tokio::io::ReadBuf::new(&mut buf);
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.reader).poll_read(cx, &mut read_buf) {
            Poll::Ready(Ok(())) => {
                let n = read_buf.filled().len();
                if n == 0 {
                    this.done = true;
                    return Poll::Ready(None);
                }
                buf.truncate(n);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
            }
            Poll::Ready(Err(e)) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Reads all of stdin (for `load` without `-i`), refusing a terminal.
pub async fn read_stdin_all() -> Result<Vec<u8>> {
    let mut data = Vec::new();
    tokio::io::stdin()
        .read_to_end(&mut data)
        .await
        .context("reading standard input")?;
    Ok(data)
}

/// Percent-encodes a query.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    let q = s.finish();
    if q.is_empty() {
        q
    } else {
        format!("?{q}")
    }
}

/// Percent-encodes one path segment (image names contain `/` and `:`, which
/// the engine routes on, so they stay as they are; only unsafe bytes are escaped).
pub fn path_segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' | b':' | b'@' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// `--filter key=value` flags as the API's `filters` JSON
/// (`{"key": {"value": true}}`); None without any.
pub fn filters_json(flags: &[String]) -> Result<Option<String>> {
    if flags.is_empty() {
        return Ok(None);
    }
    let mut map = serde_json::Map::new();
    for f in flags {
        let (k, v) = f
            .split_once('=')
            .with_context(|| format!("bad format of filter (expected name=value): {f}"))?;
        let entry = map
            .entry(k.to_string())
            .or_insert_with(|| serde_json::json!({}));
        entry[v] = serde_json::Value::Bool(true);
    }
    Ok(Some(serde_json::Value::Object(map).to_string()))
}

#[cfg(test)]
mod endpoint_tests {
    use super::Endpoint;

    #[test]
    fn unix_and_named_pipe_addresses() {
        let e = Endpoint::parse("unix:///run/berth/berth.sock").expect("unix");
        assert_eq!(e.socket(), std::path::Path::new("/run/berth/berth.sock"));
        let e = Endpoint::parse("npipe:////./pipe/berth-default").expect("pipe");
        assert_eq!(e.socket().to_str(), Some(r"\\.\pipe\berth-default"));
        let e = Endpoint::parse("npipe://./pipe/docker_engine").expect("short pipe");
        assert_eq!(e.socket().to_str(), Some(r"\\.\pipe\docker_engine"));
        for bad in [
            "npipe:////./pipe/",
            "npipe:////./pipe/a/b",
            "tcp://1.2.3.4:2375",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?}");
        }
    }
}
