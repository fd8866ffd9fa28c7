//! Request parameters: query strings, Docker's `filters` JSON, path decoding
//! and the glob patterns the `reference` filter uses.

use std::collections::BTreeMap;

use crate::error::ApiError;

/// The decoded query string of one request.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Query { pairs }
    }

    /// The first value of `key`, if given and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Every value of a repeated key (`names=a&names=b`).
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Docker's boolean parameters: `1`/`true`/`True` are true; absent,
    /// empty, `0` and `false` are false.
    pub fn flag(&self, key: &str) -> bool {
        matches!(
            self.get(key).map(str::to_ascii_lowercase).as_deref(),
            Some("1" | "true" | "yes")
        )
    }

    /// The `filters` parameter.
    pub fn filters(&self) -> Result<Filters, ApiError> {
        Filters::parse(self.get("filters"))
    }
}

/// Docker's `filters`: `{"key": {"value": true}}` (current) or
/// `{"key": ["value"]}` (old clients).
#[derive(Debug, Default)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let Some(raw) = raw else {
            return Ok(Filters::default());
        };
        let value: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| ApiError::bad(format!("invalid filter: {e}")))?;
        let serde_json::Value::Object(map) = value else {
            return Err(ApiError::bad("invalid filter: expected a JSON object"));
        };
        let mut out = BTreeMap::new();
        for (key, v) in map {
            let values: Vec<String> = match v {
                serde_json::Value::Object(m) => m
                    .into_iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(true))
                    .map(|(k, _)| k)
                    .collect(),
                serde_json::Value::Array(a) => a
                    .into_iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                serde_json::Value::String(s) => vec![s],
                _ => {
                    return Err(ApiError::bad(format!(
                        "invalid filter: unexpected value for {key:?}"
                    )))
                }
            };
            out.insert(key, values);
        }
        Ok(Filters(out))
    }

    pub fn get(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// The keys given.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    /// Refuses keys this endpoint does not know, as Docker does.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(ApiError::bad(format!("invalid filter '{k}'"))),
            None => Ok(()),
        }
    }

    /// A boolean filter (`dangling=true`); `None` when absent.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self
            .get(key)
            .first()
            .map(|s| s.to_ascii_lowercase())
            .as_deref()
        {
            None => Ok(None),
            Some("true" | "1") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(other) => Err(ApiError::bad(format!(
                "invalid filter '{key}={other}': expected true or false"
            ))),
        }
    }

    /// `label=key` or `label=key=value` against a label map: every one given
    /// must match.
    pub fn labels_match(&self, key: &str, labels: &BTreeMap<String, String>) -> bool {
        self.get(key).iter().all(|want| match want.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
            None => labels.contains_key(want.as_str()),
        })
    }
}

/// Shell-style pattern match (`*`, `?`, `[...]` without ranges), as Go's
/// `path.Match`: `*` does not cross `/`.
pub fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => {
                let rest = &p[1..];
                let mut i = 0;
                loop {
                    if go(rest, &n[i..]) {
                        return true;
                    }
                    if i >= n.len() || n[i] == '/' {
                        return false;
                    }
                    i += 1;
                }
            }
            Some('?') => n.first().is_some_and(|c| *c != '/') && go(&p[1..], &n[1..]),
            Some('[') => match p.iter().position(|c| *c == ']') {
                Some(end) if end > 1 => {
                    let set = &p[1..end];
                    let (negate, set) = match set.first() {
                        Some('^' | '!') => (true, &set[1..]),
                        _ => (false, set),
                    };
                    n.first().is_some_and(|c| set.contains(c) != negate)
                        && go(&p[end + 1..], &n[1..])
                }
                _ => n.first() == Some(&'[') && go(&p[1..], &n[1..]),
            },
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// Percent-decoding of a URL path (names may arrive as `a%2Fb`).
pub fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("busy*", "busybox"));
        assert!(glob("busybox:*", "busybox:latest"));
        assert!(!glob("*", "a/b"));
        assert!(glob("*/*", "a/b"));
        assert!(glob("b?sy[bx]ox", "busybox"));
    }

    #[test]
    fn filters_both_forms() {
        let f = Filters::parse(Some(
            r#"{"reference":{"busybox":true},"dangling":["true"]}"#,
        ))
        .unwrap_or_default();
        assert_eq!(f.get("reference"), ["busybox".to_string()]);
        assert!(matches!(f.bool("dangling"), Ok(Some(true))));
        assert!(Filters::parse(Some("[1]")).is_err());
    }

    #[test]
    fn decodes_paths() {
        assert_eq!(percent_decode("a%2Fb%3A1"), "a/b:1");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
