//! The HTTP side: endpoints (scheme, mirrors), sending with retries and the
//! auth challenge flow, mapping registry error responses, login/logout, and
//! catalog/tags listing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use reqwest::header::{HeaderMap, AUTHORIZATION, LINK, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;

use crate::auth::{best_challenge, AuthCache, Challenge, TokenResponse};
use crate::config::{self, ClientConfig, Credentials};
use crate::error::RegistryError;

/// Where requests for one registry (or mirror) go.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// `https://host[:port]` or `http://…`, without a trailing slash.
    pub base: String,
    /// The registry name used for credentials and auth caching.
    pub host: String,
    /// Skip TLS verification (insecure registries probed as HTTPS).
    pub insecure: bool,
    /// Foreign-layer URLs: never send credentials.
    pub anonymous: bool,
}

impl Endpoint {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

/// A registry client (cheap to clone; clones share connections, tokens and
/// probed schemes).
#[derive(Clone)]
pub struct RegistryClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    http: reqwest::Client,
    http_insecure: reqwest::Client,
    auth: AuthCache,
    schemes: Mutex<HashMap<String, String>>,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize, Default)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// What a request was about, for error mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subject {
    Manifest,
    Blob,
    Other,
}

impl RegistryClient {
    pub fn new(config: ClientConfig) -> Result<Self, RegistryError> {
        let build = |insecure: bool| {
            reqwest::Client::builder()
                .user_agent(config.user_agent.clone())
                .connect_timeout(config.connect_timeout)
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(60))
                .danger_accept_invalid_certs(insecure)
                .build()
                .map_err(|source| RegistryError::Http {
                    url: String::new(),
                    attempts: 0,
                    source,
                })
        };
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                http: build(false)?,
                http_insecure: build(true)?,
                config,
                auth: AuthCache::default(),
                schemes: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    fn http_for(&self, ep: &Endpoint) -> &reqwest::Client {
        if ep.insecure {
            &self.inner.http_insecure
        } else {
            &self.inner.http
        }
    }

    /// The endpoint for a registry as written in a reference (`docker.io`,
    /// `host:port`). Insecure hosts are probed once: TLS without verification
    /// if they speak it, plain HTTP otherwise (as dockerd does).
    pub(crate) async fn endpoint(&self, registry: &str) -> Endpoint {
        if config::is_docker_hub(registry) {
            let hub = self.inner.config.docker_hub_endpoint.trim_end_matches('/');
            let (scheme, host) = hub.split_once("://").unwrap_or(("https", hub));
            return self.endpoint_for_host(registry, host, Some(scheme)).await;
        }
        self.endpoint_for_host(registry, registry, None).await
    }

    async fn endpoint_for_host(
        &self,
        cred_host: &str,
        api_host: &str,
        scheme: Option<&str>,
    ) -> Endpoint {
        let insecure = self.inner.config.is_insecure(api_host);
        let scheme = match scheme {
            Some(s) => s.to_string(),
            None if !insecure => "https".to_string(),
            None => self.probe_scheme(api_host).await,
        };
        Endpoint {
            base: format!("{scheme}://{api_host}"),
            host: cred_host.to_string(),
            insecure: insecure && scheme == "https",
            anonymous: false,
        }
    }

    async fn probe_scheme(&self, host: &str) -> String {
        if let Some(s) = self
            .inner
            .schemes
            .lock()
            .ok()
            .and_then(|m| m.get(host).cloned())
        {
            return s;
        }
        let probe = self
            .inner
            .http_insecure
            .get(format!("https://{host}/v2/"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let scheme = if probe.is_ok() { "https" } else { "http" }.to_string();
        if let Ok(mut m) = self.inner.schemes.lock() {
            m.insert(host.to_string(), scheme.clone());
        }
        scheme
    }

    /// Endpoints to try for a pull, in order: mirrors first for Docker Hub.
    pub(crate) async fn pull_endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let mut out = Vec::new();
        if config::is_docker_hub(registry) {
            for mirror in &self.inner.config.mirrors {
                let m = mirror.trim_end_matches('/');
                let (scheme, rest) = match m.split_once("://") {
                    Some((s, r)) => (Some(s), r),
                    None => (None, m),
                };
                let host = rest.split('/').next().unwrap_or(rest);
                if host.is_empty() {
                    continue;
                }
                out.push(self.endpoint_for_host(host, host, scheme).await);
            }
        }
        out.push(self.endpoint(registry).await);
        out
    }

    pub(crate) fn foreign_endpoint(url: &str) -> Endpoint {
        Endpoint {
            base: String::new(),
            host: url.to_string(),
            insecure: false,
            anonymous: true,
        }
    }

    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let base = self.inner.config.retry_base_delay;
        base.saturating_mul(1u32 << attempt.saturating_sub(1).min(10))
            .min(Duration::from_secs(30))
    }

    fn retry_after(&self, headers: &HeaderMap) -> Option<Duration> {
        let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
        let d = match v.parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => httpdate::parse_http_date(v)
                .ok()?
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default(),
        };
        Some(d.min(self.inner.config.max_retry_after))
    }

    /// Sends a request built by `build` (called once per attempt), with the
    /// Authorization header the endpoint's challenge asks for. Retries connect
    /// errors, 5xx and 429 (honouring Retry-After); answers one 401 challenge.
    /// Returns the response for every other status; 429/5xx after the last
    /// retry become errors.
    pub(crate) async fn send(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        what: &str,
        build: &(dyn Fn(&reqwest::Client) -> RequestBuilder + Send + Sync),
    ) -> Result<Response, RegistryError> {
        let retries = self.inner.config.retries;
        let mut attempt = 0u32;
        let mut answered_challenge = false;
        loop {
            attempt += 1;
            let mut request = build(self.http_for(ep));
            if !ep.anonymous {
                if let Some(value) = self.authorization(ep, scopes).await? {
                    request = request.header(AUTHORIZATION, value);
                }
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e)
                    if (e.is_connect() || e.is_timeout() || e.is_request())
                        && attempt <= retries =>
                {
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
                Err(source) => {
                    return Err(RegistryError::Http {
                        url: source.url().map(|u| u.to_string()).unwrap_or_default(),
                        attempts: attempt,
                        source,
                    })
                }
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !answered_challenge && !ep.anonymous {
                let headers = response.headers().get_all(WWW_AUTHENTICATE);
                if let Some(challenge) =
                    best_challenge(headers.iter().filter_map(|v| v.to_str().ok()))
                {
                    answered_challenge = true;
                    attempt -= 1;
                    self.inner.auth.set_challenge(&ep.host, challenge);
                    self.inner.auth.forget_token(&ep.host, &scopes.join(" "));
                    continue;
                }
            }
            let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            if retryable && attempt <= retries {
                let delay = self
                    .retry_after(response.headers())
                    .unwrap_or_else(|| self.backoff(attempt));
                tokio::time::sleep(delay).await;
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                return Err(RegistryError::TooManyRequests {
                    registry: ep.host.clone(),
                    what: what.to_string(),
                    attempts: attempt,
                });
            }
            if status.is_server_error() {
                let detail = body_text(response).await;
                return Err(RegistryError::ServerError {
                    registry: ep.host.clone(),
                    what: what.to_string(),
                    status: status.as_u16(),
                    attempts: attempt,
                    detail,
                });
            }
            return Ok(response);
        }
    }

    /// The Authorization header value for `scopes` on `ep`, fetching a token
    /// when the registry asked for Bearer and none is cached.
    async fn authorization(
        &self,
        ep: &Endpoint,
        scopes: &[String],
    ) -> Result<Option<String>, RegistryError> {
        let Some(challenge) = self.inner.auth.challenge(&ep.host) else {
            return Ok(None);
        };
        match challenge {
            Challenge::Basic => {
                match config::lookup_credentials(&self.inner.config, &ep.host).await? {
                    Some(Credentials::Basic { username, password }) => {
                        Ok(Some(basic_header(&username, &password)))
                    }
                    _ => Ok(None),
                }
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let key = scopes.join(" ");
                if let Some(token) = self.inner.auth.token(&ep.host, &key) {
                    return Ok(Some(format!("Bearer {token}")));
                }
                let mut wanted: Vec<String> = scopes.to_vec();
                if wanted.is_empty() {
                    wanted.extend(scope);
                }
                let creds = config::lookup_credentials(&self.inner.config, &ep.host).await?;
                let (token, lifetime) = self
                    .fetch_token(ep, &realm, service.as_deref(), &wanted, creds.as_ref())
                    .await?;
                self.inner
                    .auth
                    .set_token(&ep.host, &key, token.clone(), lifetime);
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Gets a bearer token from the challenge's realm: an OAuth2 refresh-token
    /// POST for identity tokens, otherwise a GET with optional basic auth.
    async fn fetch_token(
        &self,
        ep: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        creds: Option<&Credentials>,
    ) -> Result<(String, Duration), RegistryError> {
        let realm_host = realm
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or("");
        let http = if self.inner.config.is_insecure(realm_host) {
            &self.inner.http_insecure
        } else {
            &self.inner.http
        };
        let fail = |detail: String| RegistryError::Token {
            realm: realm.to_string(),
            detail,
        };
        let request = match creds {
            Some(Credentials::IdentityToken { token, .. }) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("refresh_token", token.clone()),
                    ("client_id", "berth".to_string()),
                    ("scope", scopes.join(" ")),
                ];
                if let Some(s) = service {
                    form.push(("service", s.to_string()));
                }
                http.post(realm).form(&form)
            }
            other => {
                let mut query: Vec<(&str, String)> = Vec::new();
                if let Some(s) = service {
                    query.push(("service", s.to_string()));
                }
                for s in scopes {
                    query.push(("scope", s.clone()));
                }
                let mut r = http.get(realm);
                if let Some(Credentials::Basic { username, password }) = other {
                    query.push(("account", username.clone()));
                    r = r.basic_auth(username, Some(password));
                }
                r.query(&query)
            }
        };
        let response = request
            .send()
            .await
            .map_err(|e| fail(format!("request failed: {e}")))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized {
                registry: ep.host.clone(),
                what: format!("token for {}", scopes.join(" ")),
                status: status.as_u16(),
                with_credentials: creds.is_some(),
                detail: body_text(response).await,
            });
        }
        if !status.is_success() {
            return Err(fail(format!(
                "HTTP {status}: {}",
                body_text(response).await
            )));
        }
        let body: TokenResponse = response
            .json()
            .await
            .map_err(|e| fail(format!("invalid token response: {e}")))?;
        body.into_token()
            .ok_or_else(|| fail("response has neither token nor access_token".into()))
    }

    /// Turns a non-success response into the error naming what failed.
    pub(crate) async fn error_for(
        &self,
        ep: &Endpoint,
        response: Response,
        subject: Subject,
        what: &str,
        repository: &str,
    ) -> RegistryError {
        let status = response.status();
        let text = body_text(response).await;
        let body: ErrorBody = serde_json::from_str(&text).unwrap_or_default();
        let first = body.errors.into_iter().next().unwrap_or_default();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let with_credentials = !ep.anonymous
                    && matches!(
                        config::lookup_credentials(&self.inner.config, &ep.host).await,
                        Ok(Some(_))
                    );
                RegistryError::Unauthorized {
                    registry: ep.host.clone(),
                    what: what.to_string(),
                    status: status.as_u16(),
                    with_credentials,
                    detail: if first.message.is_empty() {
                        text
                    } else {
                        first.message
                    },
                }
            }
            StatusCode::NOT_FOUND if first.code == "NAME_UNKNOWN" => RegistryError::NameUnknown {
                registry: ep.host.clone(),
                repository: repository.to_string(),
                code: first.code,
                message: first.message,
            },
            StatusCode::NOT_FOUND if subject == Subject::Manifest => {
                RegistryError::ManifestUnknown {
                    reference: what.to_string(),
                    code: if first.code.is_empty() {
                        "NOT_FOUND".into()
                    } else {
                        first.code
                    },
                    message: first.message,
                }
            }
            _ => RegistryError::UnexpectedStatus {
                registry: ep.host.clone(),
                what: what.to_string(),
                status: status.as_u16(),
                detail: if first.code.is_empty() {
                    text
                } else {
                    format!("{}: {}", first.code, first.message)
                },
            },
        }
    }

    /// Checks `username`/`password` against the registry's `/v2/` (via its
    /// token realm for Bearer registries) and stores them in the Docker config
    /// file as `auths.<registry>.auth`.
    pub async fn login(
        &self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<(), RegistryError> {
        let ep = self.endpoint(registry).await;
        let url = ep.url("/v2/");
        let what = format!("login to {registry}");
        let anonymous = Endpoint {
            anonymous: true,
            ..ep.clone()
        };
        let response = self.send(&anonymous, &[], &what, &|c| c.get(&url)).await?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            let challenge = best_challenge(
                response
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            let creds = Credentials::Basic {
                username: username.to_string(),
                password: password.to_string(),
            };
            match challenge {
                Some(Challenge::Bearer { realm, service, .. }) => {
                    self.fetch_token(&ep, &realm, service.as_deref(), &[], Some(&creds))
                        .await?;
                }
                _ => {
                    let header = basic_header(username, password);
                    let r = self
                        .send(&anonymous, &[], &what, &|c| {
                            c.get(&url).header(AUTHORIZATION, header.clone())
                        })
                        .await?;
                    if !r.status().is_success() {
                        return Err(RegistryError::Unauthorized {
                            registry: registry.to_string(),
                            what,
                            status: r.status().as_u16(),
                            with_credentials: true,
                            detail: body_text(r).await,
                        });
                    }
                }
            }
        } else if !status.is_success() {
            return Err(self
                .error_for(&ep, response, Subject::Other, &what, "")
                .await);
        }
        config::store_basic_auth(
            &self.inner.config.docker_config_path(),
            registry,
            username,
            password,
        )?;
        self.inner.auth.forget_host(&ep.host);
        Ok(())
    }

    /// Removes the registry's credentials from the Docker config file; returns
    /// whether there were any.
    pub async fn logout(&self, registry: &str) -> Result<bool, RegistryError> {
        let removed = config::remove_auth(&self.inner.config.docker_config_path(), registry)?;
        self.inner.auth.forget_host(registry);
        Ok(removed)
    }

    /// Every repository on the registry (`GET /v2/_catalog`, following pages).
    pub async fn catalog(&self, registry: &str) -> Result<Vec<String>, RegistryError> {
        #[derive(Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Vec<String>,
        }
        let ep = self.endpoint(registry).await;
        let scopes = vec!["registry:catalog:*".to_string()];
        let mut out = Vec::new();
        let mut next = Some(ep.url("/v2/_catalog?n=1000"));
        while let Some(url) = next.take() {
            let response = self.send(&ep, &scopes, "catalog", &|c| c.get(&url)).await?;
            if !response.status().is_success() {
                let err = self
                    .error_for(&ep, response, Subject::Other, "catalog", "")
                    .await;
                return Err(match err {
                    RegistryError::UnexpectedStatus { status: 404, .. } => {
                        RegistryError::Unsupported {
                            registry: registry.to_string(),
                            endpoint: "the catalog API (/v2/_catalog)".into(),
                        }
                    }
                    RegistryError::UnexpectedStatus { ref detail, .. }
                        if detail.starts_with("UNSUPPORTED") =>
                    {
                        RegistryError::Unsupported {
                            registry: registry.to_string(),
                            endpoint: "the catalog API (/v2/_catalog)".into(),
                        }
                    }
                    other => other,
                });
            }
            next = next_link(&ep, response.headers());
            let page: Catalog = response.json().await.map_err(|e| RegistryError::Protocol {
                registry: registry.to_string(),
                detail: format!("catalog response: {e}"),
            })?;
            out.extend(page.repositories);
        }
        Ok(out)
    }

    /// The tags of a repository (`GET /v2/<name>/tags/list`, following pages).
    pub async fn tags(
        &self,
        registry: &str,
        repository: &str,
    ) -> Result<Vec<String>, RegistryError> {
        #[derive(Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let ep = self.endpoint(registry).await;
        let scopes = vec![format!("repository:{repository}:pull")];
        let what = format!("tags of {registry}/{repository}");
        let mut out = Vec::new();
        let mut next = Some(ep.url(&format!("/v2/{repository}/tags/list?n=1000")));
        while let Some(url) = next.take() {
            let response = self.send(&ep, &scopes, &what, &|c| c.get(&url)).await?;
            if !response.status().is_success() {
                return Err(self
                    .error_for(&ep, response, Subject::Other, &what, repository)
                    .await);
            }
            next = next_link(&ep, response.headers());
            let page: Tags = response.json().await.map_err(|e| RegistryError::Protocol {
                registry: registry.to_string(),
                detail: format!("tags response: {e}"),
            })?;
            out.extend(page.tags.unwrap_or_default());
        }
        Ok(out)
    }
}

pub(crate) fn basic_header(username: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
    )
}

pub(crate) async fn body_text(response: Response) -> String {
    let mut text = response.text().await.unwrap_or_default();
    if text.len() > 2048 {
        let mut cut = 2048;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text.trim().to_string()
}

/// `Link: </v2/_catalog?last=x&n=100>; rel="next"` → absolute URL.
fn next_link(ep: &Endpoint, headers: &HeaderMap) -> Option<String> {
    let link = headers.get(LINK)?.to_str().ok()?;
    let (target, params) = link.split_once(';')?;
    if !params.contains("rel=\"next\"") && !params.contains("rel=next") {
        return None;
    }
    let target = target.trim().trim_start_matches('<').trim_end_matches('>');
    Some(resolve_location(ep, target))
}

/// Resolves a `Location`/`Link` value against the endpoint.
pub(crate) fn resolve_location(ep: &Endpoint, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if location.starts_with('/') {
        ep.url(location)
    } else {
        format!("{}/{}", ep.base, location)
    }
}
