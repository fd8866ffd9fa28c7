//! `docker cp`: `HEAD`, `GET` and `PUT /containers/{id}/archive?path=…`.
//!
//! `HEAD` and `GET` answer with the `X-Docker-Container-Path-Stat` header
//! (base64 of `{"name","size","mode","mtime","linkTarget"}`, `mode` in Go's
//! `os.FileMode` bits), which the docker CLI reads to decide how to copy;
//! `GET` streams the path as a tar, `PUT` extracts a tar into a directory.
//! Path resolution and its safety live in the engine (`containers::archive`).

use std::sync::Arc;

use berth_engine::containers::PathStat;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::StatusCode;
use serde_json::json;

use crate::body::{self, ApiResponse};
use crate::error::ApiError;
use crate::query::Query;
use crate::ApiState;

const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn stat_value(stat: &PathStat) -> Result<HeaderValue, ApiError> {
    let value = json!({
        "name": stat.name,
        "size": stat.size,
        "mode": stat.mode,
        "mtime": stat.mtime,
        "linkTarget": stat.link_target,
    });
    HeaderValue::from_str(&base64(value.to_string().as_bytes()))
        .map_err(|e| ApiError::Internal(format!("encoding the path stat header: {e}")))
}

fn path_param(query: &Query) -> Result<String, ApiError> {
    query
        .get("path")
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad("path is required (the path in the container to copy)"))
}

/// `HEAD /containers/{id}/archive`.
pub async fn head(
    state: &Arc<ApiState>,
    reference: &str,
    query: &Query,
) -> Result<ApiResponse, ApiError> {
    let path = path_param(query)?;
    let st = Arc::clone(state);
    let reference = reference.to_string();
    let stat = tokio::task::spawn_blocking(move || st.containers.archive_stat(&reference, &path))
        .await??;
    let mut response = body::empty(StatusCode::OK);
    response
        .headers_mut()
        .insert(STAT_HEADER, stat_value(&stat)?);
    Ok(response)
}

/// `GET /containers/{id}/archive`: the path as a tar stream.
pub async fn get(
    state: &Arc<ApiState>,
    reference: &str,
    query: &Query,
) -> Result<ApiResponse, ApiError> {
    let path = path_param(query)?;
    let st = Arc::clone(state);
    let reference = reference.to_string();
    let source =
        tokio::task::spawn_blocking(move || st.containers.archive_source(&reference, &path))
            .await??;
    let header = stat_value(&source.stat)?;
    let (tx, mut response) = body::stream("application/x-tar");
    response.headers_mut().insert(STAT_HEADER, header);
    tokio::task::spawn_blocking(move || {
        let mut writer = body::ChannelWriter::new(tx);
        // Headers are out: a failure can only end the stream early.
        let _ = source.write_to(&mut writer);
        let _ = std::io::Write::flush(&mut writer);
    });
    Ok(response)
}

/// `PUT /containers/{id}/archive`: extracts the tar body into the
/// directory `path`.
pub async fn put(
    state: &Arc<ApiState>,
    reference: &str,
    query: &Query,
    body: Incoming,
) -> Result<ApiResponse, ApiError> {
    let path = path_param(query)?;
    let st = Arc::clone(state);
    let reference = reference.to_string();
    let reader = body::blocking_reader(body);
    tokio::task::spawn_blocking(move || st.containers.archive_extract(&reference, &path, reader))
        .await??;
    Ok(body::empty(StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
