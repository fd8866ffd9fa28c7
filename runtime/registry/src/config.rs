//! Client configuration and the Docker config file (`~/.docker/config.json`):
//! reading credentials (`auths`, `identitytoken`, `credsStore`, `credHelpers`)
//! and writing them back for `login`/`logout`, atomically and keeping every
//! field we do not own.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::error::RegistryError;

/// The key Docker uses for Docker Hub in `auths` and for credential helpers.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The Docker config file; `None` means `$DOCKER_CONFIG/config.json` or
    /// `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
    /// Registries reachable over plain HTTP (or TLS without verification):
    /// `host[:port]` or an IP CIDR. Loopback is always allowed, as in Docker.
    pub insecure_registries: Vec<String>,
    /// Mirrors for docker.io, tried in order before docker.io itself
    /// (`https://mirror.example` or `http://127.0.0.1:5000`).
    pub mirrors: Vec<String>,
    pub user_agent: String,
    /// Blobs downloaded or uploaded at once.
    pub concurrency: usize,
    /// Retries after the first attempt on connect errors, 5xx and 429.
    pub retries: u32,
    /// First backoff delay; doubles each retry.
    pub retry_base_delay: Duration,
    /// Longest Retry-After honoured.
    pub max_retry_after: Duration,
    pub connect_timeout: Duration,
    /// Blobs larger than this are pushed in chunks.
    pub chunked_upload_threshold: u64,
    pub chunk_size: u64,
    /// Directories searched for `docker-credential-<name>` before `$PATH`.
    pub helper_dirs: Vec<PathBuf>,
    /// Where docker.io is reached after its mirrors (an air-gapped setup or a
    /// test can point it elsewhere).
    pub docker_hub_endpoint: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            docker_config: None,
            insecure_registries: Vec::new(),
            mirrors: Vec::new(),
            user_agent: format!("berth/{}", env!("CARGO_PKG_VERSION")),
            concurrency: 3,
            retries: 3,
            retry_base_delay: Duration::from_millis(500),
            max_retry_after: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            chunked_upload_threshold: 32 << 20,
            chunk_size: 8 << 20,
            helper_dirs: Vec::new(),
            docker_hub_endpoint: "https://registry-1.docker.io".into(),
        }
    }
}

impl ClientConfig {
    pub fn docker_config_path(&self) -> PathBuf {
        if let Some(p) = &self.docker_config {
            return p.clone();
        }
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("config.json");
        }
        let home = std::env::var_os("HOME")
            .or_else(|| std::env::var_os("USERPROFILE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        home.join(".docker").join("config.json")
    }

    /// Whether `host` (`name[:port]`) may be reached without verified TLS.
    pub fn is_insecure(&self, host: &str) -> bool {
        let name = host_name(host);
        if name == "localhost" {
            return true;
        }
        let ip = name.parse::<IpAddr>().ok();
        if ip.is_some_and(|ip| ip.is_loopback()) {
            return true;
        }
        self.insecure_registries.iter().any(|entry| {
            let entry = strip_scheme(entry).trim_end_matches('/');
            if entry == host || entry == name {
                return true;
            }
            match (ip, entry.split_once('/')) {
                (Some(ip), Some((net, bits))) => cidr_contains(net, bits, ip),
                _ => false,
            }
        })
    }
}

/// `host[:port]` → `host` (IPv6 literals in brackets keep no brackets).
pub(crate) fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.contains(':') => {
            name
        }
        _ => host,
    }
}

fn strip_scheme(s: &str) -> &str {
    s.strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s)
}

fn cidr_contains(net: &str, bits: &str, ip: IpAddr) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken`), exchanged at the token realm.
    IdentityToken {
        username: String,
        token: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credentials::IdentityToken { username, .. } => {
                write!(f, "IdentityToken({username}, <redacted>)")
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The key in `auths` / for helpers for a registry host (`docker.io` is special).
pub fn auth_key(registry: &str) -> String {
    if is_docker_hub(registry) {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        registry.to_string()
    }
}

pub(crate) fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
    )
}

/// `https://host/v1/` → `host`, Docker Hub spellings → `docker.io`.
fn normalise_key(key: &str) -> String {
    let host = strip_scheme(key).split('/').next().unwrap_or("");
    if is_docker_hub(host) {
        "docker.io".to_string()
    } else {
        host.to_string()
    }
}

fn read_config(path: &Path) -> Result<Option<ConfigFile>, RegistryError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RegistryError::io(format!("reading {}", path.display()))(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| RegistryError::ConfigParse {
            path: path.display().to_string(),
            source,
        })
}

/// Looks up credentials for `registry` (as in a reference: `docker.io`,
/// `host:port`) in the Docker config file and its credential helpers.
pub(crate) async fn lookup_credentials(
    config: &ClientConfig,
    registry: &str,
) -> Result<Option<Credentials>, RegistryError> {
    let path = config.docker_config_path();
    let Some(file) = read_config(&path)? else {
        return Ok(None);
    };
    let wanted = normalise_key(registry);
    let helper = file
        .cred_helpers
        .iter()
        .find(|(k, _)| normalise_key(k) == wanted)
        .map(|(_, v)| v.clone())
        .or_else(|| file.creds_store.clone())
        .filter(|h| !h.is_empty());
    if let Some(helper) = helper {
        if let Some(c) = run_helper(config, &helper, &auth_key(registry)).await? {
            return Ok(Some(c));
        }
    }
    let Some(entry) = file
        .auths
        .iter()
        .find(|(k, _)| normalise_key(k) == wanted)
        .map(|(_, v)| v)
    else {
        return Ok(None);
    };
    let (mut user, mut pass) = (entry.username.clone(), entry.password.clone());
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| RegistryError::Protocol {
                registry: registry.to_string(),
                detail: format!(
                    "auths entry in {} is not base64 user:password",
                    path.display()
                ),
            })?;
        if let Some((u, p)) = decoded.split_once(':') {
            user = Some(u.to_string());
            pass = Some(p.to_string());
        }
    }
    if let Some(token) = entry.identitytoken.clone().filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials::IdentityToken {
            username: user.unwrap_or_default(),
            token,
        }));
    }
    Ok(match (user, pass) {
        (Some(username), Some(password)) if !username.is_empty() => {
            Some(Credentials::Basic { username, password })
        }
        _ => None,
    })
}

#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

fn find_helper(config: &ClientConfig, name: &str) -> PathBuf {
    let file = format!("docker-credential-{name}");
    config
        .helper_dirs
        .iter()
        .map(|d| d.join(&file))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(file))
}

/// Runs `docker-credential-<helper> get` with the server URL on stdin.
async fn run_helper(
    config: &ClientConfig,
    helper: &str,
    server: &str,
) -> Result<Option<Credentials>, RegistryError> {
    use tokio::io::AsyncWriteExt;
    let fail = |message: String| RegistryError::CredentialHelper {
        helper: helper.to_string(),
        server: server.to_string(),
        message,
    };
    let mut child = tokio::process::Command::new(find_helper(config, helper))
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .await
            .map_err(|e| fail(format!("writing its stdin: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| fail(format!("waiting for it: {e}")))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if text.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(format!("{}: {}", out.status, text.trim())));
    }
    let reply: HelperReply = serde_json::from_slice(&out.stdout)
        .map_err(|e| fail(format!("invalid JSON reply: {e}")))?;
    if reply.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if reply.username == "<token>" {
        Credentials::IdentityToken {
            username: String::new(),
            token: reply.secret,
        }
    } else {
        Credentials::Basic {
            username: reply.username,
            password: reply.secret,
        }
    }))
}

/// Reads the config file as free JSON, applies `edit` to it, and writes it back
/// atomically (temp file + fsync + rename, mode 0600).
pub(crate) fn edit_config(
    path: &Path,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Result<(), RegistryError> {
    let mut root = match std::fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => serde_json::Map::new(),
        Ok(bytes) => serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes)
            .map_err(|source| RegistryError::ConfigParse {
            path: path.display().to_string(),
            source,
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Map::new(),
        Err(e) => return Err(RegistryError::io(format!("reading {}", path.display()))(e)),
    };
    edit(&mut root);
    let mut text =
        serde_json::to_vec_pretty(&root).map_err(|source| RegistryError::ConfigParse {
            path: path.display().to_string(),
            source,
        })?;
    text.push(b'\n');
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(RegistryError::io(format!("creating {}", dir.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("config.json"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        RegistryError::io(format!("writing {}", path.display()))(e)
    })
}

/// Sets `auths.<key>.auth` (keeping other fields of that entry and the file).
pub(crate) fn store_basic_auth(
    path: &Path,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<(), RegistryError> {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let key = auth_key(registry);
    edit_config(path, |root| {
        let auths = root
            .entry("auths")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if !auths.is_object() {
            *auths = serde_json::Value::Object(Default::default());
        }
        if let Some(auths) = auths.as_object_mut() {
            // Drop other spellings of the same registry so ours is the one read.
            let wanted = normalise_key(&key);
            auths.retain(|k, _| k == &key || normalise_key(k) != wanted);
            let entry = auths
                .entry(key.clone())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if let Some(entry) = entry.as_object_mut() {
                entry.remove("identitytoken");
                entry.remove("username");
                entry.remove("password");
                entry.insert("auth".into(), serde_json::Value::String(encoded));
            } else {
                *entry = serde_json::json!({ "auth": encoded });
            }
        }
    })
}

/// Removes every `auths` entry for `registry`; returns whether one existed.
pub(crate) fn remove_auth(path: &Path, registry: &str) -> Result<bool, RegistryError> {
    if !path.exists() {
        return Ok(false);
    }
    let wanted = normalise_key(registry);
    let mut removed = false;
    edit_config(path, |root| {
        if let Some(auths) = root.get_mut("auths").and_then(|a| a.as_object_mut()) {
            let before = auths.len();
            auths.retain(|k, _| normalise_key(k) != wanted);
            removed = auths.len() != before;
        }
    })?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_rules() {
        let cfg = ClientConfig {
            insecure_registries: vec!["myreg:5000".into(), "10.1.0.0/16".into()],
            ..Default::default()
        };
        assert!(cfg.is_insecure("localhost:5000"));
        assert!(cfg.is_insecure("127.0.0.1:5000"));
        assert!(cfg.is_insecure("127.9.9.9"));
        assert!(cfg.is_insecure("[::1]:5000"));
        assert!(cfg.is_insecure("myreg:5000"));
        assert!(!cfg.is_insecure("myreg:5001"));
        assert!(cfg.is_insecure("10.1.2.3:443"));
        assert!(!cfg.is_insecure("10.2.0.1"));
        assert!(!cfg.is_insecure("docker.io"));
    }

    #[test]
    fn keys_normalise() {
        assert_eq!(normalise_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalise_key("http://reg:5000/v2/"), "reg:5000");
        assert_eq!(auth_key("docker.io"), DOCKER_HUB_AUTH_KEY);
        assert_eq!(host_name("[::1]:5000"), "::1");
        assert_eq!(host_name("reg:5000"), "reg");
    }

    #[tokio::test]
    async fn login_file_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"other":{"auth":"eDp5"}},"psFormat":"table"}"#,
        )
        .expect("write");
        store_basic_auth(&path, "reg:5000", "alice", "s3:cret").expect("store");
        let cfg = ClientConfig {
            docker_config: Some(path.clone()),
            ..Default::default()
        };
        let creds = lookup_credentials(&cfg, "reg:5000").await.expect("lookup");
        assert_eq!(
            creds,
            Some(Credentials::Basic {
                username: "alice".into(),
                password: "s3:cret".into()
            })
        );
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("psFormat") && text.contains("\"other\""));
        assert!(remove_auth(&path, "reg:5000").expect("remove"));
        assert_eq!(
            lookup_credentials(&cfg, "reg:5000").await.expect("lookup"),
            None
        );
        assert!(std::fs::read_to_string(&path)
            .expect("read")
            .contains("\"other\""));
    }
}
