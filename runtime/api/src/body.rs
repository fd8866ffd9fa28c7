//! Response bodies: whole (JSON, text) or streamed from a channel (progress,
//! events, tar archives), and the request-body side: bounded collection and a
//! blocking `Read` fed from the connection for tar uploads.

use std::convert::Infallible;
use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::ApiError;

/// Chunks a streamed body buffers before its producer waits.
const STREAM_DEPTH: usize = 32;

pub type ApiResponse = Response<ResponseBody>;

/// A response body: all at once, or chunks from a channel until its sender
/// is dropped.
pub enum ResponseBody {
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Bytes>),
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Channel(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ResponseBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Channel(_) => SizeHint::default(),
        }
    }
}

fn with_type(status: StatusCode, content_type: &'static str, body: ResponseBody) -> ApiResponse {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> ApiResponse {
    match serde_json::to_vec(value) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            with_type(
                status,
                "application/json",
                ResponseBody::Full(Some(Bytes::from(bytes))),
            )
        }
        Err(e) => error(&ApiError::Internal(format!("encoding the response: {e}"))),
    }
}

pub fn text(status: StatusCode, body: &'static str) -> ApiResponse {
    with_type(
        status,
        "text/plain; charset=utf-8",
        ResponseBody::Full(Some(Bytes::from_static(body.as_bytes()))),
    )
}

pub fn empty(status: StatusCode) -> ApiResponse {
    let mut response = Response::new(ResponseBody::Full(None));
    *response.status_mut() = status;
    response
}

pub fn error(err: &ApiError) -> ApiResponse {
    json(
        err.status(),
        &serde_json::json!({ "message": err.to_string() }),
    )
}

/// A 200 response whose body is whatever is sent into the returned sender.
pub fn stream(content_type: &'static str) -> (mpsc::Sender<Bytes>, ApiResponse) {
    let (tx, rx) = mpsc::channel(STREAM_DEPTH);
    (
        tx,
        with_type(StatusCode::OK, content_type, ResponseBody::Channel(rx)),
    )
}

/// One JSON value and a newline: a line of a JSON message stream.
pub fn json_line<T: Serialize + ?Sized>(value: &T) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// The whole request body, refusing more than `limit` bytes.
pub async fn collect(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, limit);
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ApiError::bad(format!("reading the request body: {e}")))
}

/// Parses a JSON request body; an empty body is `T::default()`.
pub async fn collect_json<T: serde::de::DeserializeOwned + Default>(
    body: Incoming,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = collect(body, limit).await?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

/// Forwards the request body, chunk by chunk, to a blocking reader (for tar
/// uploads handled on a blocking thread). Must be called inside a runtime.
pub fn blocking_reader(mut body: Incoming) -> ChannelReader {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(STREAM_DEPTH);
    tokio::spawn(async move {
        loop {
            match body.frame().await {
                None => break,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() && tx.send(Ok(data)).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Err(e)) => {
                    let _ = tx
                        .send(Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("reading the request body: {e}"),
                        )))
                        .await;
                    break;
                }
            }
        }
    });
    ChannelReader {
        rx,
        current: Bytes::new(),
    }
}

/// Waits for `future` on the current (blocking) thread. Unlike tokio's
/// `blocking_recv`, this works inside `Handle::block_on`, which the engine's
/// `load` needs (an async fn that reads its input synchronously).
fn park_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// A blocking `Read` over chunks from the connection. Use it only on a
/// blocking thread (`spawn_blocking`).
pub struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match park_on(self.rx.recv()) {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(chunk)) => self.current = chunk,
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// A blocking `Write` into a streamed response body (for `save`). Fails with
/// `BrokenPipe` once the client has gone away.
pub struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

const WRITE_CHUNK: usize = 256 << 10;

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<Bytes>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(WRITE_CHUNK),
        }
    }

    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(WRITE_CHUNK),
        ));
        park_on(self.tx.send(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= WRITE_CHUNK {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buffer()
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = self.send_buffer();
    }
}
