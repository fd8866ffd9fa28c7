//! Image references, parsed and normalised exactly as Docker does:
//! `busybox` → `docker.io/library/busybox:latest`.
//!
//! Grammar (from the docker/distribution reference package):
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [domain '/'] path-component ['/' path-component]*
//! domain           := host [':' port-number]
//! host             := domain-name | IPv4address | '[' IPv6address ']'
//! domain-name      := domain-component ['.' domain-component]*
//! domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
//! path-component   := /[a-z0-9]+/ [separator /[a-z0-9]+/]*
//! separator        := /[_.]|__|[-]+/
//! tag              := /[\w][\w.-]{0,127}/
//! ```
//!
//! Docker's normalisation: the first `/`-separated component is a registry
//! only if it contains `.` or `:`, is `localhost`, or contains an uppercase
//! letter (Docker's rule too: `Foo/bar` names the registry `Foo`); otherwise
//! the registry is `docker.io`, and a single-component Docker Hub repository
//! gets `library/`. `index.docker.io` and `registry-1.docker.io` become
//! `docker.io`. Without tag and digest the tag is `latest`. The whole name
//! (registry + `/` + repository) is at most 255 characters.

use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// Docker Hub's canonical name.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
const LEGACY_HUB_NAMES: [&str; 2] = ["index.docker.io", "registry-1.docker.io"];
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host with optional port, normalised (`docker.io` for Docker Hub).
    pub registry: String,
    /// Repository path, `library/` added for official Docker Hub images.
    pub repository: String,
    /// Tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// A character no reference may contain (space, control, `#`, …).
    #[error("invalid reference format: {0:?}")]
    Invalid(String),
    #[error("invalid reference format: empty reference")]
    Empty,
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexOnly(String),
    #[error("invalid reference format: repository name ({repository}) must be lowercase (in {reference:?})")]
    Uppercase {
        reference: String,
        repository: String,
    },
    #[error(
        "invalid reference format: repository name {repository:?} in {reference:?}: components \
         must be lowercase letters and digits, separated by '/', and inside a component by '.', \
         '_', '__' or dashes"
    )]
    BadRepository {
        reference: String,
        repository: String,
    },
    #[error("invalid reference format: registry host {registry:?} in {reference:?}")]
    BadRegistry { reference: String, registry: String },
    #[error(
        "invalid reference format: repository name must not be more than 255 characters \
         ({length} in {reference:?})"
    )]
    NameTooLong { reference: String, length: usize },
    #[error("invalid reference format: tag {tag:?} in {reference:?} {reason}")]
    BadTag {
        reference: String,
        tag: String,
        reason: &'static str,
    },
    #[error("invalid reference format: digest in {reference:?}: {source}")]
    BadDigest {
        reference: String,
        #[source]
        source: DigestError,
    },
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One path component: `[a-z0-9]+ (sep [a-z0-9]+)*`, sep = `.`, `_`, `__`, `-+`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && is_lower_alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false; // empty alnum run (leading/trailing/double separator)
        }
        if i == b.len() {
            return true;
        }
        let sep_start = i;
        while i < b.len() && !is_lower_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[sep_start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
}

fn valid_path(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(valid_path_component)
}

fn valid_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        }
        _ => false,
    }
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
}

/// `host[:port]` with host a domain name, IPv4 address or `[IPv6]`.
fn valid_domain(d: &str) -> bool {
    if let Some(rest) = d.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        let ip_ok = !ip.is_empty() && ip.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(valid_port);
        return ip_ok && port_ok;
    }
    let (host, port) = match d.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    host.split('.').all(valid_domain_component) && port.is_none_or(valid_port)
}

/// Docker's tag grammar: `[\w][\w.-]{0,127}`.
fn check_tag(reference: &str, tag: &str) -> Result<(), ReferenceError> {
    let bad = |reason| ReferenceError::BadTag {
        reference: reference.to_string(),
        tag: tag.to_string(),
        reason,
    };
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let Some(&first) = tag.as_bytes().first() else {
        return Err(bad("is empty"));
    };
    if tag.len() > TAG_MAX {
        return Err(bad("is longer than 128 characters"));
    }
    if !word(first) || !tag.bytes().all(|b| word(b) || b == b'.' || b == b'-') {
        return Err(bad(
            "must start with a letter, digit or '_' and contain only letters, digits, '_', '.' and '-'",
        ));
    }
    Ok(())
}

/// Splits off the registry as Docker's `splitDockerDomain` does.
fn split_registry(s: &str) -> (String, &str) {
    let (registry, rest) = match s.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first.to_string(), rest)
        }
        _ => (DOCKER_HUB.to_string(), s),
    };
    if LEGACY_HUB_NAMES.contains(&registry.as_str()) {
        return (DOCKER_HUB.to_string(), rest);
    }
    (registry, rest)
}

impl Reference {
    /// Parses and normalises a reference as `docker pull` does.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._-/:@[]".contains(c);
        if !s.chars().all(allowed) {
            return Err(ReferenceError::Invalid(s.to_string()));
        }
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ReferenceError::HexOnly(s.to_string()));
        }

        // Digest first: neither name nor tag may contain '@'.
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let digest = Digest::parse(d).map_err(|source| ReferenceError::BadDigest {
                    reference: s.to_string(),
                    source,
                })?;
                (n, Some(digest))
            }
            None => (s, None),
        };
        // A tag follows the last ':' after the last '/'.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name_tag[..at], Some(&name_tag[at + 1..]))
            }
            None => (name_tag, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if let Some(t) = tag {
            check_tag(s, t)?;
        }

        let (registry, rest) = split_registry(name);
        if !valid_domain(&registry) {
            return Err(ReferenceError::BadRegistry {
                reference: s.to_string(),
                registry,
            });
        }
        let repository = if registry == DOCKER_HUB && !rest.contains('/') {
            format!("library/{rest}")
        } else {
            rest.to_string()
        };
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase {
                reference: s.to_string(),
                repository,
            });
        }
        if !valid_path(&repository) || rest.is_empty() {
            return Err(ReferenceError::BadRepository {
                reference: s.to_string(),
                repository: rest.to_string(),
            });
        }
        let length = registry.len() + 1 + repository.len();
        if length > NAME_MAX {
            return Err(ReferenceError::NameTooLong {
                reference: s.to_string(),
                length,
            });
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, e.g. `docker.io/library/busybox`.
    pub fn repository_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// Docker's short name without tag or digest: `busybox`, `user/app`,
    /// `localhost:5000/app`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DOCKER_HUB {
            match self.repository.strip_prefix("library/") {
                Some(short) if !short.contains('/') => short.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.repository_name()
        }
    }

    /// Docker's short form with tag and digest: `busybox:latest`,
    /// `user/app:1.0`, `localhost:5000/app:latest`, `busybox@sha256:…`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        self.push_tag_digest(&mut s);
        s
    }

    /// The host to contact: `registry-1.docker.io` for `docker.io`, else the
    /// registry as written (with port).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API_HOST
        } else {
            &self.registry
        }
    }

    /// True for Docker Hub.
    pub fn is_docker_hub(&self) -> bool {
        self.registry == DOCKER_HUB
    }

    /// The tag, or `latest` if there is none (digest-only references).
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// What to put in `/v2/<name>/manifests/<reference>`: the digest if there
    /// is one (it pins the content), else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The same repository with `tag`; a digest is kept, as Docker's `WithTag`
    /// does (use [`Reference::without_digest`] to drop it).
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        check_tag(&format!("{}:{tag}", self.repository_name()), tag)?;
        Ok(Self {
            tag: Some(tag.to_string()),
            ..self.clone()
        })
    }

    /// The same repository pinned to `digest`; a tag is kept, as Docker's
    /// `WithDigest` does.
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// Without the digest (tag `latest` if there was no tag either).
    pub fn without_digest(&self) -> Self {
        Self {
            tag: Some(self.tag_or_latest().to_string()),
            digest: None,
            ..self.clone()
        }
    }

    fn push_tag_digest(&self, s: &mut String) {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
    }
}

impl std::fmt::Display for Reference {
    /// The full normalised form: `docker.io/library/busybox:latest`,
    /// `docker.io/library/busybox:1@sha256:…`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = self.repository_name();
        self.push_tag_digest(&mut s);
        f.write_str(&s)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Reference::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const H: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// input, registry, repository, tag ("" = none), Display, familiar().
    /// `@D` stands for `@` + a valid digest.
    #[rustfmt::skip]
    const VALID: &[(&str, &str, &str, &str, &str, &str)] = &[
        ("busybox", "docker.io", "library/busybox", "latest", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("library/busybox", "docker.io", "library/busybox", "latest", "docker.io/library/busybox:latest", "busybox:latest"),
        ("docker.io/busybox", "docker.io", "library/busybox", "latest", "docker.io/library/busybox:latest", "busybox:latest"),
        ("docker.io/library/busybox:latest", "docker.io", "library/busybox", "latest", "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/busybox", "docker.io", "library/busybox", "latest", "docker.io/library/busybox:latest", "busybox:latest"),
        ("registry-1.docker.io/user/app:2", "docker.io", "user/app", "2", "docker.io/user/app:2", "user/app:2"),
        ("user/app:1.0", "docker.io", "user/app", "1.0", "docker.io/user/app:1.0", "user/app:1.0"),
        ("user/app/sub", "docker.io", "user/app/sub", "latest", "docker.io/user/app/sub:latest", "user/app/sub:latest"),
        ("library/foo/bar", "docker.io", "library/foo/bar", "latest", "docker.io/library/foo/bar:latest", "library/foo/bar:latest"),
        ("localhost/app", "localhost", "app", "latest", "localhost/app:latest", "localhost/app:latest"),
        ("localhost:5000/app", "localhost:5000", "app", "latest", "localhost:5000/app:latest", "localhost:5000/app:latest"),
        // No slash: name "localhost" with tag "5000", as in Docker.
        ("localhost:5000", "docker.io", "library/localhost", "5000", "docker.io/library/localhost:5000", "localhost:5000"),
        ("127.0.0.1:5000/a/b:t", "127.0.0.1:5000", "a/b", "t", "127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t"),
        ("[::1]:5000/app:v1", "[::1]:5000", "app", "v1", "[::1]:5000/app:v1", "[::1]:5000/app:v1"),
        ("[fe80::1]/app", "[fe80::1]", "app", "latest", "[fe80::1]/app:latest", "[fe80::1]/app:latest"),
        ("Registry.Example.COM/app", "Registry.Example.COM", "app", "latest", "Registry.Example.COM/app:latest", "Registry.Example.COM/app:latest"),
        // Docker: an uppercase first component is taken as a registry.
        ("Foo/bar", "Foo", "bar", "latest", "Foo/bar:latest", "Foo/bar:latest"),
        ("quay.io/org/team/app:v1.2.3-rc_1", "quay.io", "org/team/app", "v1.2.3-rc_1", "quay.io/org/team/app:v1.2.3-rc_1", "quay.io/org/team/app:v1.2.3-rc_1"),
        ("registry.example.com/x@D", "registry.example.com", "x", "", "registry.example.com/x@D", "registry.example.com/x@D"),
        ("busybox@D", "docker.io", "library/busybox", "", "docker.io/library/busybox@D", "busybox@D"),
        ("busybox:1.36@D", "docker.io", "library/busybox", "1.36", "docker.io/library/busybox:1.36@D", "busybox:1.36@D"),
        ("localhost:5000/a/b:t@D", "localhost:5000", "a/b", "t", "localhost:5000/a/b:t@D", "localhost:5000/a/b:t@D"),
        ("a.b-c/g_h__i---j.k:Tag_1.-x", "a.b-c", "g_h__i---j.k", "Tag_1.-x", "a.b-c/g_h__i---j.k:Tag_1.-x", "a.b-c/g_h__i---j.k:Tag_1.-x"),
        ("foo_bar.baz-qux__x", "docker.io", "library/foo_bar.baz-qux__x", "latest", "docker.io/library/foo_bar.baz-qux__x:latest", "foo_bar.baz-qux__x:latest"),
        ("x:_", "docker.io", "library/x", "_", "docker.io/library/x:_", "x:_"),
        ("0/1:2", "docker.io", "0/1", "2", "docker.io/0/1:2", "0/1:2"),
    ];

    #[test]
    fn valid_table() {
        let d = |s: &str| s.replace("@D", &format!("@{H}"));
        for &(input, registry, repository, tag, display, familiar) in VALID {
            let input = d(input);
            let r = Reference::parse(&input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(r.registry, registry, "{input}");
            assert_eq!(r.repository, repository, "{input}");
            assert_eq!(r.tag.as_deref().unwrap_or(""), tag, "{input}");
            assert_eq!(r.digest.is_some(), input.contains('@'), "{input}");
            assert_eq!(r.to_string(), d(display), "{input}");
            assert_eq!(r.familiar(), d(familiar), "{input}");
            // Both forms parse back to the same reference.
            assert_eq!(Reference::parse(&d(display)).unwrap(), r, "{input}");
            assert_eq!(Reference::parse(&d(familiar)).unwrap(), r, "{input}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn invalid_table() {
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "invalid reference format: empty reference"),
            ("Busybox".into(), "repository name (library/Busybox) must be lowercase"),
            ("user/App".into(), "repository name (user/App) must be lowercase"),
            ("localhost:5000/App".into(), "repository name (App) must be lowercase"),
            ("busybox:".into(), "tag \"\" in \"busybox:\" is empty"),
            (format!("busybox:{}", "t".repeat(129)), "is longer than 128 characters"),
            ("busybox:-x".into(), "must start with a letter, digit or '_'"),
            ("busybox:.x".into(), "must start with a letter, digit or '_'"),
            ("busybox:a:b".into(), "repository name \"busybox:a\""),
            ("busybox:a/b".into(), "registry host \"busybox:a\""),
            ("busybox@".into(), "digest in \"busybox@\""),
            ("busybox@sha256:abc".into(), "sha256 needs 64 hex digits"),
            (format!("busybox@sha256:{}", "A".repeat(64)), "must be lowercase hex"),
            (format!("busybox@md5:{}", "a".repeat(64)), "unsupported algorithm"),
            ("busybox:t@x@y".into(), "digest in"),
            ("a".repeat(64), "cannot specify 64-byte hexadecimal strings"),
            ("has space".into(), "invalid reference format: \"has space\""),
            ("tab\t".into(), "invalid reference format"),
            ("ünicode".into(), "invalid reference format"),
            ("foo//bar".into(), "repository name \"foo//bar\""),
            ("foo/".into(), "repository name \"foo/\""),
            ("/foo".into(), "repository name \"/foo\""),
            ("-foo".into(), "repository name \"-foo\""),
            ("foo-".into(), "repository name \"foo-\""),
            ("foo..bar".into(), "repository name \"foo..bar\""),
            ("foo___bar".into(), "repository name \"foo___bar\""),
            ("foo._bar".into(), "repository name \"foo._bar\""),
            ("localhost:5000/".into(), "repository name \"\""),
            ("-bad.example.com/x".into(), "registry host \"-bad.example.com\""),
            ("bad..example.com/x".into(), "registry host \"bad..example.com\""),
            ("example.com:port/x".into(), "registry host \"example.com:port\""),
            ("example.com:/x".into(), "registry host \"example.com:\""),
            ("[::1/x".into(), "registry host \"[::1\""),
            ("[zz]:5000/x".into(), "registry host \"[zz]:5000\""),
            (":tag".into(), "empty reference"),
            (format!("example.com/{}", "a".repeat(250)), "must not be more than 255 characters (262"),
        ];
        for (input, msg) in cases {
            let err = match Reference::parse(&input) {
                Ok(r) => panic!("{input:?} parsed as {r}"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(msg), "{input:?}: got {err:?}, want {msg:?}");
        }
    }

    #[test]
    fn helpers() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.repository_name(), "docker.io/library/busybox");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert!(r.is_docker_hub());
        assert_eq!(r.familiar_name(), "busybox");
        assert_eq!(r.manifest_reference(), "latest");

        let l = Reference::parse("localhost:5000/app").unwrap();
        assert_eq!(l.api_host(), "localhost:5000");
        assert_eq!(l.repository_name(), "localhost:5000/app");

        let t = r.with_tag("1.36").unwrap();
        assert_eq!(t.to_string(), "docker.io/library/busybox:1.36");
        let e = r.with_tag("bad tag").unwrap_err().to_string();
        assert!(e.contains("tag \"bad tag\""), "{e}");

        let d = Digest::parse(H).unwrap();
        let p = t.with_digest(d.clone());
        assert_eq!(p.to_string(), format!("docker.io/library/busybox:1.36@{H}"));
        assert_eq!(p.manifest_reference(), H);
        assert_eq!(p.without_digest(), t);

        let long = "t".repeat(128);
        let lt = Reference::parse(&format!("busybox:{long}")).unwrap();
        assert_eq!(lt.tag.as_deref(), Some(long.as_str()));

        let only = Reference::parse(&format!("busybox@{H}")).unwrap();
        assert_eq!(only.tag, None);
        assert_eq!(only.tag_or_latest(), "latest");
        assert_eq!(
            only.without_digest().to_string(),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn serde_and_fromstr() {
        let r: Reference = "user/app:1".parse().unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, "\"docker.io/user/app:1\"");
        assert_eq!(serde_json::from_str::<Reference>(&json).unwrap(), r);
        assert!(serde_json::from_str::<Reference>("\"Bad\"").is_err());
    }
}
