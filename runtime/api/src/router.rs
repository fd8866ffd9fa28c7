//! Request routing: the optional `/vX.Y` prefix, the endpoint table, the
//! headers every response carries, and the single fallback for endpoints
//! Berth does not offer yet.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, SERVER};
use hyper::{Method, Request};

use crate::body::{self, ApiResponse};
use crate::error::ApiError;
use crate::query::{percent_decode, Query};
use crate::{
    archive, containers, events, images, networks, system, transfer, volumes, ApiState,
    API_VERSION, MIN_API_VERSION,
};

/// The `Server` header value.
pub fn server_header() -> String {
    format!("Berth/{}", env!("CARGO_PKG_VERSION"))
}

/// Handles one request; never fails (errors become `{"message": ...}`).
pub async fn handle(request: Request<Incoming>, state: Arc<ApiState>) -> ApiResponse {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let debug = state.daemon.debug;
    let started = std::time::Instant::now();
    let mut response = match route(request, state).await {
        Ok(r) => r,
        Err(e) => body::error(&e),
    };
    if debug {
        // Time to the response head (streams and upgrades go on after it).
        eprintln!(
            "berth-api: {method} {path} -> {} in {:.1} ms",
            response.status().as_u16(),
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&server_header()) {
        headers.insert(SERVER, v);
    }
    headers.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    response
}

/// A parsed `major.minor` API version.
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.split_once('.').unwrap_or((v, "0"));
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Splits `/v1.45/images/json` into (`Some("1.45")`, `/images/json`).
fn split_version(path: &str) -> (Option<&str>, &str) {
    let Some(rest) = path.strip_prefix("/v") else {
        return (None, path);
    };
    let (version, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.') {
        (Some(version), tail)
    } else {
        (None, path)
    }
}

fn check_version(version: &str) -> Result<(), ApiError> {
    let bad = || ApiError::bad(format!("invalid API version {version:?}"));
    let wanted = parse_version(version).ok_or_else(bad)?;
    let ours = parse_version(API_VERSION).ok_or_else(bad)?;
    let min = parse_version(MIN_API_VERSION).ok_or_else(bad)?;
    if wanted > ours {
        return Err(ApiError::bad(format!(
            "client version {version} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    if wanted < min {
        return Err(ApiError::bad(format!(
            "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    Ok(())
}

const SWARM_PREFIXES: &[&str] = &["swarm", "nodes", "services", "tasks", "secrets", "configs"];

async fn route(request: Request<Incoming>, state: Arc<ApiState>) -> Result<ApiResponse, ApiError> {
    let (version, raw_path) = split_version(request.uri().path());
    if let Some(v) = version {
        check_version(v)?;
    }
    let path = percent_decode(raw_path);
    let query = Query::parse(request.uri().query());
    let method = request.method().clone();
    // Upgraded streams need the whole request (hyper's upgrade handle).
    if method == Method::POST {
        let trimmed = path.trim_end_matches('/');
        if let Some(id) = trimmed
            .strip_prefix("/containers/")
            .and_then(|r| r.strip_suffix("/attach"))
        {
            let id = id.to_string();
            return containers::attach(Arc::clone(&state), &id, &query, request).await;
        }
        if let Some(id) = trimmed
            .strip_prefix("/exec/")
            .and_then(|r| r.strip_suffix("/start"))
        {
            let id = id.to_string();
            return containers::exec_start(Arc::clone(&state), &id, request).await;
        }
    }
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let get = method == Method::GET;
    let post = method == Method::POST;

    match path.trim_end_matches('/') {
        "/_ping" if get || method == Method::HEAD => return Ok(system::ping(&method)),
        "/version" if get => return system::version(&state).await,
        "/info" if get => return system::info(&state).await,
        "/system/df" if get => return system::df(&state).await,
        "/events" if get => return events::stream(&state, &query),
        "/auth" if post => return images::auth(&state, body).await,
        "/images/json" if get => return images::list(&state, &query).await,
        "/images/create" if post => return transfer::create(&state, &query, body).await,
        "/images/load" if post => return transfer::load(&state, &query, body).await,
        "/images/get" if get => {
            let names: Vec<String> = query.all("names").into_iter().map(str::to_string).collect();
            return transfer::save(&state, names).await;
        }
        "/images/search" if get => return images::search(&state, &query).await,
        "/images/prune" if post => return images::prune(&state, &query).await,
        "/containers/json" if get => return containers::list(&state, &query).await,
        "/containers/create" if post => return containers::create(&state, &query, body).await,
        "/containers/prune" if post => return containers::prune(&state).await,
        "/volumes" if get => return volumes::list(&state, &query).await,
        "/volumes/create" if post => return volumes::create(&state, body).await,
        "/volumes/prune" if post => return volumes::prune(&state, &query).await,
        "/networks" if get => return networks::list(&state, &query).await,
        "/networks/create" if post => return networks::create(&state, body).await,
        "/networks/prune" if post => return networks::prune(&state, &query).await,
        _ => {}
    }

    if let Some(rest) = path.trim_end_matches('/').strip_prefix("/containers/") {
        if method == Method::DELETE && !rest.contains('/') {
            return containers::remove(&state, rest, &query).await;
        }
        if let Some((id, "archive")) = rest.split_once('/') {
            match method {
                Method::HEAD => return archive::head(&state, id, &query).await,
                Method::GET => return archive::get(&state, id, &query).await,
                Method::PUT => return archive::put(&state, id, &query, body).await,
                _ => {}
            }
        }
        if let Some((id, action)) = rest.split_once('/') {
            match (action, get, post) {
                ("json", true, _) => return containers::inspect(&state, id).await,
                ("logs", true, _) => return containers::logs(&state, id, &query).await,
                ("top", true, _) => return containers::top(&state, id).await,
                ("stats", true, _) => return containers::stats(&state, id, &query).await,
                ("export", true, _) => return containers::export(&state, id).await,
                ("start", _, true) => return containers::start(&state, id).await,
                ("stop", _, true) => return containers::stop(&state, id, &query).await,
                ("restart", _, true) => return containers::restart(&state, id, &query).await,
                ("kill", _, true) => return containers::kill(&state, id, &query).await,
                ("pause", _, true) => return containers::pause(&state, id, true).await,
                ("unpause", _, true) => return containers::pause(&state, id, false).await,
                ("wait", _, true) => return containers::wait(&state, id, &query).await,
                ("rename", _, true) => return containers::rename(&state, id, &query).await,
                ("exec", _, true) => return containers::exec_create(&state, id, body).await,
                ("resize", _, true) => return containers::resize(&state, id, &query).await,
                _ => {}
            }
        }
    }
    if let Some(rest) = path.trim_end_matches('/').strip_prefix("/networks/") {
        match rest.split_once('/') {
            None if get => return networks::inspect(&state, rest).await,
            None if method == Method::DELETE => return networks::remove(&state, rest).await,
            Some((id, "connect")) if post => {
                return networks::connect(&state, id, body, true).await
            }
            Some((id, "disconnect")) if post => {
                return networks::connect(&state, id, body, false).await
            }
            _ => {}
        }
    }
    if let Some(name) = path.trim_end_matches('/').strip_prefix("/volumes/") {
        if get {
            return volumes::inspect(&state, name).await;
        }
        if method == Method::DELETE {
            return volumes::remove(&state, name, &query).await;
        }
    }
    if let Some(rest) = path.trim_end_matches('/').strip_prefix("/exec/") {
        match rest.split_once('/') {
            Some((id, "json")) if get => return containers::exec_inspect(&state, id).await,
            Some((id, "resize")) if post => {
                return containers::exec_resize(&state, id, &query).await
            }
            _ => {}
        }
    }

    if let Some(rest) = path.strip_prefix("/images/") {
        if method == Method::DELETE {
            return images::remove(&state, rest, &query).await;
        }
        if let Some((name, action)) = rest.rsplit_once('/') {
            match (action, get, post) {
                ("json", true, _) => return images::inspect(&state, name).await,
                ("history", true, _) => return images::history(&state, name).await,
                ("get", true, _) => return transfer::save(&state, vec![name.to_string()]).await,
                ("tag", _, true) => return images::tag(&state, name, &query).await,
                ("push", _, true) => return transfer::push(&state, name, &query, &headers).await,
                _ => {}
            }
        }
    }

    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if SWARM_PREFIXES.contains(&first) {
        return Err(ApiError::Unavailable(
            "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.".into(),
        ));
    }
    Err(not_offered(&method, &path))
}

/// Endpoint families that exist in the Docker API but that Berth serves
/// later; their handlers get wired here, one match arm at a time.
const LATER: &[&str] = &[
    "build",
    "commit",
    "plugins",
    "session",
    "distribution",
    "grpc",
];

/// The fallback: a clear 501 naming the endpoint for API families not
/// offered yet (containers first), Docker's 404 for anything else.
fn not_offered(method: &Method, path: &str) -> ApiError {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if LATER.contains(&first) {
        ApiError::NotImplemented(format!(
            "{method} {path}: the /{first} endpoints are not implemented in Berth yet"
        ))
    } else {
        ApiError::NotFound("page not found".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            split_version("/v1.44/images/json"),
            (Some("1.44"), "/images/json")
        );
        assert_eq!(split_version("/images/json"), (None, "/images/json"));
        assert_eq!(split_version("/volumes"), (None, "/volumes"));
        assert!(check_version("1.45").is_ok());
        assert!(check_version("1.24").is_ok());
        assert!(check_version("1.46").is_err());
        assert!(check_version("1.12").is_err());
        assert!(check_version("x").is_err());
    }
}
