//! The CLI's own configuration: contexts (named engine endpoints) and which
//! one is current, under the user's config directory
//! (`$BERTH_CONFIG`, else `$XDG_CONFIG_HOME/berth`, `~/.config/berth`, or
//! `%APPDATA%\berth` on Windows). Every file is replaced atomically.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

/// The root daemon's socket: the `default` context's endpoint.
pub const DEFAULT_HOST: &str = "unix:///run/berth/berth.sock";

/// The context that always exists: `--host`/`BERTH_HOST`, else the default socket.
pub const DEFAULT_CONTEXT: &str = "default";

/// One named endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Description", default)]
    pub description: String,
    #[serde(rename = "Host")]
    pub host: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ConfigFile {
    #[serde(
        rename = "currentContext",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    current_context: Option<String>,
}

/// What the user asked for, from flags and environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct Selection<'a> {
    pub host_flag: Option<&'a str>,
    pub context_flag: Option<&'a str>,
    pub host_env: Option<&'a str>,
    pub context_env: Option<&'a str>,
}

/// The context to use, as Docker picks it: `--context`, then `default` if
/// `--host` or `BERTH_HOST` is given, then `BERTH_CONTEXT`, then the current
/// context of the config file, then `default`.
pub fn context_name(selection: &Selection, current: Option<&str>) -> Result<String> {
    let nonempty = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(str::to_string);
    if nonempty(selection.host_flag).is_some() && nonempty(selection.context_flag).is_some() {
        bail!("conflicting options: either specify --host or --context, not both");
    }
    if let Some(c) = nonempty(selection.context_flag) {
        return Ok(c);
    }
    if nonempty(selection.host_flag).is_some() || nonempty(selection.host_env).is_some() {
        return Ok(DEFAULT_CONTEXT.to_string());
    }
    Ok(nonempty(selection.context_env)
        .or_else(|| nonempty(current))
        .unwrap_or_else(|| DEFAULT_CONTEXT.to_string()))
}

/// The engine address for `selection` (`unix:///…`).
pub fn resolve_host(selection: &Selection, store: &ContextStore) -> Result<String> {
    let current = store.current()?;
    let name = context_name(selection, current.as_deref())?;
    if name == DEFAULT_CONTEXT {
        return Ok(default_host(selection));
    }
    Ok(store.get(&name)?.host)
}

/// True when neither a flag, the environment nor the current context names an engine (the
/// default context without `--host` or `BERTH_HOST`).
pub fn names_no_engine(selection: &Selection, store: &ContextStore) -> Result<bool> {
    let current = store.current()?;
    let name = context_name(selection, current.as_deref())?;
    let host_given = selection
        .host_flag
        .or(selection.host_env)
        .is_some_and(|h| !h.is_empty());
    Ok(name == DEFAULT_CONTEXT && !host_given)
}

/// The `default` context's endpoint: `--host`, `BERTH_HOST`, the root socket.
pub fn default_host(selection: &Selection) -> String {
    selection
        .host_flag
        .or(selection.host_env)
        .filter(|h| !h.is_empty())
        .unwrap_or(DEFAULT_HOST)
        .to_string()
}

/// Docker's rule for context names.
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c));
    if !first_ok || !rest_ok || name.len() < 2 {
        bail!(
            "context name {name:?} is invalid, names are validated against regexp \"^[a-zA-Z0-9][a-zA-Z0-9_.+-]+$\""
        );
    }
    if name == DEFAULT_CONTEXT {
        bail!("\"default\" is a reserved context name");
    }
    Ok(())
}

/// The user's config directory for berth, if one can be found.
pub fn config_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(dir) = env("BERTH_CONFIG") {
        return Some(PathBuf::from(dir));
    }
    if cfg!(windows) {
        return env("APPDATA").map(|d| PathBuf::from(d).join("berth"));
    }
    env("XDG_CONFIG_HOME")
        .map(|d| PathBuf::from(d).join("berth"))
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config").join("berth")))
}

/// Contexts on disk: `<config>/config.json` holds the current context,
/// `<config>/contexts/<name>.json` one context each.
#[derive(Debug, Clone)]
pub struct ContextStore {
    dir: Option<PathBuf>,
}

impl ContextStore {
    pub fn open() -> Result<Self> {
        Ok(Self { dir: config_dir() })
    }

    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: Some(dir.into()),
        }
    }

    fn dir(&self) -> Result<&Path> {
        self.dir.as_deref().context(
            "cannot locate the berth config directory: set HOME, XDG_CONFIG_HOME or BERTH_CONFIG",
        )
    }

    fn context_path(&self, name: &str) -> Result<PathBuf> {
        Ok(self.dir()?.join("contexts").join(format!("{name}.json")))
    }

    /// The current context of the config file (None: `default`).
    pub fn current(&self) -> Result<Option<String>> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let path = dir.join("config.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let config: ConfigFile = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        Ok(config.current_context.filter(|c| !c.is_empty()))
    }

    /// Makes `name` current (`default` clears the setting).
    pub fn set_current(&self, name: &str) -> Result<()> {
        if name != DEFAULT_CONTEXT {
            self.get(name)?;
        }
        let config = ConfigFile {
            current_context: (name != DEFAULT_CONTEXT).then(|| name.to_string()),
        };
        let path = self.dir()?.join("config.json");
        let bytes = serde_json::to_vec_pretty(&config).context("formatting config.json")?;
        write_atomic(&path, &bytes)
    }

    pub fn get(&self, name: &str) -> Result<Context> {
        let path = self.context_path(name)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("context {name:?} does not exist")
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a valid context file", path.display()))
    }

    /// Every stored context, by name.
    pub fn list(&self) -> Result<Vec<Context>> {
        let Some(dir) = &self.dir else {
            return Ok(Vec::new());
        };
        let dir = dir.join("contexts");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".json")) else {
                continue;
            };
            out.push(self.get(name)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Stores a new context; an existing one of that name is an error.
    pub fn create(&self, context: &Context) -> Result<()> {
        validate_name(&context.name)?;
        let path = self.context_path(&context.name)?;
        let bytes = serde_json::to_vec_pretty(context).context("formatting the context")?;
        write_new_atomic(&path, &bytes).map_err(|e| match e.downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() == std::io::ErrorKind::AlreadyExists => {
                anyhow::anyhow!("context {:?} already exists", context.name)
            }
            _ => e,
        })
    }

    pub fn remove(&self, name: &str) -> Result<()> {
        let path = self.context_path(name)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("context {name:?} does not exist")
            }
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
}

/// A temp file next to `path`, written and synced.
fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    use std::io::Write;
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{nanos}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("config"),
        std::process::id()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", tmp.display()));
    }
    Ok(tmp)
}

/// Replaces `path` with `bytes` in one step (temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = write_temp(path, bytes)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

/// Creates `path` with `bytes` in one step, failing if it exists: a hard
/// link of a complete temp file is both atomic and exclusive.
fn write_new_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = write_temp(path, bytes)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(anyhow::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel<'a>(
        host_flag: Option<&'a str>,
        context_flag: Option<&'a str>,
        host_env: Option<&'a str>,
        context_env: Option<&'a str>,
    ) -> Selection<'a> {
        Selection {
            host_flag,
            context_flag,
            host_env,
            context_env,
        }
    }

    #[test]
    fn precedence_is_dockers() {
        let current = Some("cur");
        let name = |s: Selection| context_name(&s, current).expect("resolves");
        assert_eq!(name(sel(None, None, None, None)), "cur");
        assert_eq!(name(sel(None, None, None, Some("env"))), "env");
        assert_eq!(
            name(sel(None, None, Some("unix:///e"), Some("env"))),
            "default"
        );
        assert_eq!(
            name(sel(None, Some("flag"), Some("unix:///e"), Some("env"))),
            "flag"
        );
        assert_eq!(
            name(sel(Some("unix:///h"), None, None, Some("env"))),
            "default"
        );
        assert_eq!(
            context_name(&sel(None, None, None, None), None).expect("ok"),
            "default"
        );
        assert!(context_name(&sel(Some("unix:///h"), Some("c"), None, None), None).is_err());
        assert_eq!(
            default_host(&sel(Some("unix:///h"), None, Some("unix:///e"), None)),
            "unix:///h"
        );
        assert_eq!(
            default_host(&sel(None, None, Some("unix:///e"), None)),
            "unix:///e"
        );
        assert_eq!(default_host(&sel(None, None, None, None)), DEFAULT_HOST);
    }

    /// Only when nothing names an engine does the machine get booted on demand.
    #[test]
    fn no_engine_named_only_without_flag_env_or_context() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ContextStore::at(dir.path());
        let none = |s: Selection| names_no_engine(&s, &store).expect("decides");
        assert!(none(sel(None, None, None, None)));
        assert!(none(sel(None, None, Some(""), None)));
        assert!(!none(sel(Some("unix:///h"), None, None, None)));
        assert!(!none(sel(None, None, Some("unix:///e"), None)));
        assert!(!none(sel(None, Some("remote"), None, None)));
        assert!(!none(sel(None, None, None, Some("remote"))));
        store
            .create(&Context {
                name: "remote".into(),
                description: String::new(),
                host: "unix:///tmp/r.sock".into(),
            })
            .expect("create");
        store.set_current("remote").expect("use");
        assert!(!none(sel(None, None, None, None)));
        // `--context default` is the default engine again.
        assert!(none(sel(None, Some("default"), None, None)));
    }

    #[test]
    fn store_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ContextStore::at(dir.path());
        assert_eq!(store.current().expect("no config"), None);
        let ctx = Context {
            name: "remote".into(),
            description: "a test".into(),
            host: "unix:///tmp/x.sock".into(),
        };
        store.create(&ctx).expect("create");
        let again = store.create(&ctx).expect_err("duplicate");
        assert!(again.to_string().contains("already exists"), "{again}");
        assert_eq!(store.get("remote").expect("get"), ctx);
        assert_eq!(store.list().expect("list"), vec![ctx.clone()]);
        store.set_current("remote").expect("use");
        assert_eq!(store.current().expect("current").as_deref(), Some("remote"));
        let resolved = resolve_host(&Selection::default(), &store).expect("resolve");
        assert_eq!(resolved, "unix:///tmp/x.sock");
        assert!(store.set_current("missing").is_err());
        store.set_current("default").expect("use default");
        assert_eq!(store.current().expect("current"), None);
        store.remove("remote").expect("rm");
        assert!(store.get("remote").is_err());
        assert!(store.remove("remote").is_err());
        // No temp files are left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("contexts"))
            .expect("contexts dir")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn names() {
        assert!(validate_name("my-ctx.1").is_ok());
        assert!(validate_name("default").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("x").is_err());
    }
}
