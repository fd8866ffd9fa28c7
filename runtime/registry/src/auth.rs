//! `WWW-Authenticate` challenges and the bearer-token cache.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses one `WWW-Authenticate` header value. Unknown schemes give `None`.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    } else {
        None
    }
}

/// Picks the challenge to answer among several headers: Bearer before Basic.
pub(crate) fn best_challenge<'a>(headers: impl Iterator<Item = &'a str>) -> Option<Challenge> {
    let all: Vec<Challenge> = headers.filter_map(parse_challenge).collect();
    all.iter()
        .find(|c| matches!(c, Challenge::Bearer { .. }))
        .or_else(|| all.first())
        .cloned()
}

/// `key=value` or `key="quoted, value"` pairs separated by commas.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.push((key.trim().to_string(), value.trim().to_string()));
    }
    out
}

/// The token endpoint's answer; Docker Hub sends both fields, others one.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    pub(crate) fn into_token(self) -> Option<(String, Duration)> {
        let token = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        // The spec's default lifetime is 60 s; refresh a little early.
        let lifetime = Duration::from_secs(self.expires_in.unwrap_or(60).max(60));
        Some((token, lifetime.saturating_sub(Duration::from_secs(10))))
    }
}

/// Known challenges per registry host, and bearer tokens per (host, scopes).
#[derive(Default)]
pub(crate) struct AuthCache {
    challenges: Mutex<HashMap<String, Challenge>>,
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl AuthCache {
    pub(crate) fn challenge(&self, host: &str) -> Option<Challenge> {
        self.challenges
            .lock()
            .ok()
            .and_then(|m| m.get(host).cloned())
    }

    pub(crate) fn set_challenge(&self, host: &str, challenge: Challenge) {
        if let Ok(mut m) = self.challenges.lock() {
            m.insert(host.to_string(), challenge);
        }
    }

    pub(crate) fn token(&self, host: &str, scopes: &str) -> Option<String> {
        let map = self.tokens.lock().ok()?;
        map.get(&(host.to_string(), scopes.to_string()))
            .filter(|(_, expiry)| *expiry > Instant::now())
            .map(|(t, _)| t.clone())
    }

    pub(crate) fn set_token(&self, host: &str, scopes: &str, token: String, lifetime: Duration) {
        if let Ok(mut m) = self.tokens.lock() {
            m.insert(
                (host.to_string(), scopes.to_string()),
                (token, Instant::now() + lifetime),
            );
        }
    }

    pub(crate) fn forget_token(&self, host: &str, scopes: &str) {
        if let Ok(mut m) = self.tokens.lock() {
            m.remove(&(host.to_string(), scopes.to_string()));
        }
    }

    pub(crate) fn forget_host(&self, host: &str) {
        if let Ok(mut m) = self.tokens.lock() {
            m.retain(|(h, _), _| h != host);
        }
        if let Ok(mut m) = self.challenges.lock() {
            m.remove(host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:samalba/my-app:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        let best = best_challenge(["Basic realm=x", "Bearer realm=\"r\""].into_iter());
        assert!(matches!(best, Some(Challenge::Bearer { .. })));
    }

    #[test]
    fn token_fields() {
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"abc"}"#).expect("json");
        assert_eq!(t.into_token().map(|t| t.0), Some("abc".to_string()));
        let t: TokenResponse = serde_json::from_str(r#"{"token":""}"#).expect("json");
        assert!(t.into_token().is_none());
    }
}
