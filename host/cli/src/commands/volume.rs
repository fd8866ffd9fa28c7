//! `berth volume create/ls/inspect/rm/prune`, `berth cp`, and the mount
//! flags of `run`/`create` (`-v`, `--mount`).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{json, Map, Value};

use crate::client::{path_segment, query, Client};
use crate::format::{human_size, print_table, render_template};

// ---- -v / --mount ---------------------------------------------------------

/// Mount flags shared by `run` and `create`.
#[derive(Debug, Args, Default)]
pub struct MountOpts {
    /// Bind mount a host path or mount a volume ([host-path|volume:]container-path[:ro|rw|…]).
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// Attach a filesystem mount (type=bind|volume|tmpfs,source=…,target=…,readonly,…).
    #[arg(long)]
    mount: Vec<String>,
}

impl MountOpts {
    /// Adds `HostConfig.Binds`, `HostConfig.Mounts` and `Volumes` to a
    /// create body.
    pub fn apply(&self, body: &mut Value) -> Result<()> {
        let mut binds = Vec::new();
        let mut anonymous = Map::new();
        for v in &self.volume {
            match volume_flag(v)? {
                VolumeFlag::Anonymous(path) => {
                    anonymous.insert(path, json!({}));
                }
                VolumeFlag::Bind(spec) => binds.push(spec),
            }
        }
        let mounts = self
            .mount
            .iter()
            .map(|m| parse_mount(m))
            .collect::<Result<Vec<_>>>()?;
        let host = &mut body["HostConfig"];
        if !host.is_object() {
            *host = json!({});
        }
        host["Binds"] = json!(binds);
        if !mounts.is_empty() {
            host["Mounts"] = json!(mounts);
        }
        if !anonymous.is_empty() {
            body["Volumes"] = Value::Object(anonymous);
        }
        Ok(())
    }
}

enum VolumeFlag {
    Anonymous(String),
    Bind(String),
}

/// One `-v`: `/path` (anonymous volume) or `source:target[:mode]` with a
/// relative host path made absolute, as the docker CLI does.
fn volume_flag(v: &str) -> Result<VolumeFlag> {
    if v.is_empty() {
        bail!("invalid empty volume spec");
    }
    let parts: Vec<&str> = v.split(':').collect();
    if parts.len() == 1 {
        if !v.starts_with('/') {
            bail!("invalid volume specification: '{v}': the mount path must be absolute");
        }
        return Ok(VolumeFlag::Anonymous(v.to_string()));
    }
    if parts.len() > 3 {
        bail!("invalid volume specification: '{v}'");
    }
    let source = parts[0];
    let rest = &v[source.len()..];
    if source.starts_with('.') || source.starts_with('~') {
        let absolute = absolute(source)?;
        return Ok(VolumeFlag::Bind(format!("{}{rest}", absolute.display())));
    }
    Ok(VolumeFlag::Bind(v.to_string()))
}

fn absolute(path: &str) -> Result<PathBuf> {
    let expanded = match path.strip_prefix('~') {
        Some(rest) => {
            let home = std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?;
            PathBuf::from(home).join(rest.trim_start_matches('/'))
        }
        None => std::env::current_dir()
            .context("the current directory")?
            .join(path),
    };
    let mut out = PathBuf::new();
    for c in expanded.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Ok(out)
}

/// `64m`, `1g`, `512k`, `100` → bytes.
fn parse_bytes(s: &str) -> Result<i64> {
    let lower = s.to_ascii_lowercase();
    let t = lower.trim_end_matches('b');
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num.parse().map_err(|_| anyhow!("invalid size: '{s}'"))?;
    if n < 0.0 {
        bail!("invalid size: '{s}'");
    }
    Ok((n * mult as f64) as i64)
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "" | "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => bail!("invalid value for {key}: {v}"),
    }
}

/// One `--mount` value (Docker's CSV syntax) → a `HostConfig.Mounts` entry.
fn parse_mount(spec: &str) -> Result<Value> {
    let mut m = json!({"Type": "volume"});
    let mut bind = Map::new();
    let mut volume = Map::new();
    let mut driver = Map::new();
    let mut driver_opts = Map::new();
    let mut labels = Map::new();
    let mut tmpfs = Map::new();
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), v.to_string()),
            None => {
                let k = field.trim().to_ascii_lowercase();
                match k.as_str() {
                    "readonly" | "ro" | "volume-nocopy" | "bind-nonrecursive" => (k, String::new()),
                    _ => bail!("invalid field '{field}' must be a key=value pair"),
                }
            }
        };
        match key.as_str() {
            "type" => match value.as_str() {
                "bind" | "volume" | "tmpfs" => m["Type"] = json!(value),
                _ => bail!("invalid mount type: {value} (use bind, volume or tmpfs)"),
            },
            "source" | "src" => m["Source"] = json!(value),
            "target" | "dst" | "destination" => m["Target"] = json!(value),
            "readonly" | "ro" => m["ReadOnly"] = json!(parse_bool(&key, &value)?),
            "consistency" => {}
            "bind-propagation" => {
                bind.insert("Propagation".into(), json!(value));
            }
            "bind-create-src" => {
                bind.insert("CreateMountpoint".into(), json!(parse_bool(&key, &value)?));
            }
            "volume-nocopy" => {
                volume.insert("NoCopy".into(), json!(parse_bool(&key, &value)?));
            }
            "volume-label" => {
                let (k, v) = value.split_once('=').unwrap_or((value.as_str(), ""));
                labels.insert(k.into(), json!(v));
            }
            "volume-driver" => {
                driver.insert("Name".into(), json!(value));
            }
            "volume-opt" => {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| anyhow!("invalid volume-opt '{value}': expected key=value"))?;
                driver_opts.insert(k.into(), json!(v));
            }
            "tmpfs-size" => {
                tmpfs.insert("SizeBytes".into(), json!(parse_bytes(&value)?));
            }
            "tmpfs-mode" => {
                let mode = u32::from_str_radix(&value, 8)
                    .map_err(|_| anyhow!("invalid tmpfs-mode '{value}': expected octal"))?;
                tmpfs.insert("Mode".into(), json!(mode));
            }
            _ => bail!("unexpected key '{key}' in '{field}'"),
        }
    }
    if !driver_opts.is_empty() {
        driver.insert("Options".into(), Value::Object(driver_opts));
    }
    if !driver.is_empty() {
        volume.insert("DriverConfig".into(), Value::Object(driver));
    }
    if !labels.is_empty() {
        volume.insert("Labels".into(), Value::Object(labels));
    }
    let kind = m["Type"].as_str().unwrap_or("volume").to_string();
    let misplaced = |what: &str| anyhow!("cannot mix '{what}-*' options with mount type '{kind}'");
    if !bind.is_empty() {
        if kind != "bind" {
            return Err(misplaced("bind"));
        }
        m["BindOptions"] = Value::Object(bind);
    }
    if !volume.is_empty() {
        if kind != "volume" {
            return Err(misplaced("volume"));
        }
        m["VolumeOptions"] = Value::Object(volume);
    }
    if !tmpfs.is_empty() {
        if kind != "tmpfs" {
            return Err(misplaced("tmpfs"));
        }
        m["TmpfsOptions"] = Value::Object(tmpfs);
    }
    if m.get("Target").is_none() {
        bail!("target is required");
    }
    if kind == "bind" {
        if let Some(src) = m["Source"].as_str().filter(|s| !s.starts_with('/')) {
            m["Source"] = json!(absolute(src)?.display().to_string());
        }
    }
    Ok(m)
}

// ---- berth volume ---------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume.
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes.
    Inspect(InspectArgs),
    /// Remove one or more volumes.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused local volumes (anonymous ones unless --all).
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Volume name (generated when absent).
    name: Option<String>,
    /// Volume driver name.
    #[arg(short, long, default_value = "local")]
    driver: String,
    /// Driver options (type=tmpfs, device=tmpfs, o=size=64m, …).
    #[arg(short, long = "opt")]
    opt: Vec<String>,
    /// Metadata for the volume (key=value).
    #[arg(long)]
    label: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only display volume names.
    #[arg(short, long)]
    quiet: bool,
    /// Filter output (dangling=true, name=…, label=…, driver=…).
    #[arg(short, long)]
    filter: Vec<String>,
    /// Format output with a template (`table …`, `{{json .}}`, `{{.Name}}`).
    #[arg(long)]
    format: Option<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    names: Vec<String>,
    /// Format output with a template.
    #[arg(short, long)]
    format: Option<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true)]
    names: Vec<String>,
    /// Do not fail on missing volumes.
    #[arg(short, long)]
    force: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones.
    #[arg(short, long)]
    all: bool,
    /// Provide filter values (label=…, label!=…).
    #[arg(long)]
    filter: Vec<String>,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
}

/// `--filter key=value` flags as the API's `filters` JSON; None without any.
fn filters_json(flags: &[String]) -> Result<Option<String>> {
    if flags.is_empty() {
        return Ok(None);
    }
    let mut map = Map::new();
    for f in flags {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow!("bad format of filter (expected name=value): {f}"))?;
        let entry = map
            .entry(k.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[v] = json!(true);
    }
    Ok(Some(Value::Object(map).to_string()))
}

/// `--format`: a Go-like template per row; `table …` adds a header row.
fn print_formatted(template: &str, rows: &[Value]) {
    match template.strip_prefix("table") {
        Some(body) => {
            let body = body.trim_start();
            let header: Vec<String> = body
                .split("\\t")
                .map(|cell| {
                    cell.replace("{{.", "")
                        .replace("}}", "")
                        .replace("Name", "VOLUME NAME")
                        .to_uppercase()
                })
                .collect();
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|row| {
                    render_template(body, row)
                        .split('\t')
                        .map(str::to_string)
                        .collect()
                })
                .collect();
            print_table(&header, &table);
        }
        None => {
            for row in rows {
                println!("{}", render_template(template, row));
            }
        }
    }
}

fn key_values(items: &[String], what: &str) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for item in items {
        let (k, v) = item.split_once('=').unwrap_or((item.as_str(), ""));
        if k.is_empty() {
            bail!("invalid {what} '{item}': expected key=value");
        }
        map.insert(k.to_string(), json!(v));
    }
    Ok(map)
}

pub async fn volume_command(client: &Client, command: VolumeCommand) -> Result<()> {
    match command {
        VolumeCommand::Create(a) => create(client, &a).await,
        VolumeCommand::Ls(a) => list(client, &a).await,
        VolumeCommand::Inspect(a) => inspect(client, &a).await,
        VolumeCommand::Rm(a) => remove(client, &a).await,
        VolumeCommand::Prune(a) => prune(client, &a).await,
    }
}

async fn create(client: &Client, args: &CreateArgs) -> Result<()> {
    let mut body = json!({
        "Driver": args.driver,
        "DriverOpts": key_values(&args.opt, "option")?,
        "Labels": key_values(&args.label, "label")?,
    });
    if let Some(n) = &args.name {
        body["Name"] = json!(n);
    }
    let v: Value = client.post_json("/volumes/create", Some(&body)).await?;
    println!("{}", v["Name"].as_str().unwrap_or_default());
    Ok(())
}

async fn list(client: &Client, args: &LsArgs) -> Result<()> {
    let path = match filters_json(&args.filter)? {
        Some(f) => format!("/volumes{}", query(&[("filters", f.as_str())])),
        None => "/volumes".to_string(),
    };
    let v: Value = client.get_json(&path).await?;
    let volumes: Vec<Value> = v["Volumes"].as_array().cloned().unwrap_or_default();
    if args.quiet {
        for vol in &volumes {
            println!("{}", vol["Name"].as_str().unwrap_or_default());
        }
        return Ok(());
    }
    if let Some(format) = &args.format {
        print_formatted(format, &volumes);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = volumes
        .iter()
        .map(|vol| {
            vec![
                vol["Driver"].as_str().unwrap_or_default().to_string(),
                vol["Name"].as_str().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    print_table(&["DRIVER", "VOLUME NAME"], &rows);
    Ok(())
}

async fn inspect(client: &Client, args: &InspectArgs) -> Result<()> {
    let mut found = Vec::new();
    let mut missing = 0;
    for name in &args.names {
        match client
            .get_json::<Value>(&format!("/volumes/{}", path_segment(name)))
            .await
        {
            Ok(v) => found.push(v),
            Err(e) => {
                eprintln!("Error: {e}");
                missing += 1;
            }
        }
    }
    match &args.format {
        Some(f) => print_formatted(f, &found),
        None => println!("{}", serde_json::to_string_pretty(&found)?),
    }
    if missing > 0 {
        bail!("{missing} volume(s) not found");
    }
    Ok(())
}

async fn remove(client: &Client, args: &RmArgs) -> Result<()> {
    let mut failed = 0;
    for name in &args.names {
        let path = format!(
            "/volumes/{}{}",
            path_segment(name),
            query(&[("force", if args.force { "1" } else { "0" })])
        );
        match client.call(Method::DELETE, &path).await {
            Ok(_) => println!("{name}"),
            Err(e) => {
                eprintln!("{e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} volume(s) could not be removed");
    }
    Ok(())
}

/// Asks on the terminal; anything but y/yes declines.
fn confirm(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

async fn prune(client: &Client, args: &PruneArgs) -> Result<()> {
    if !args.force {
        let what = if args.all {
            "all local volumes not used by at least one container"
        } else {
            "anonymous local volumes not used by at least one container"
        };
        if !confirm(&format!(
            "WARNING! This will remove {what}.\nAre you sure you want to continue?"
        )) {
            return Ok(());
        }
    }
    let mut filters = args.filter.clone();
    if args.all {
        filters.push("all=true".into());
    }
    let path = match filters_json(&filters)? {
        Some(f) => format!("/volumes/prune{}", query(&[("filters", f.as_str())])),
        None => "/volumes/prune".to_string(),
    };
    let report: Value = client.post_json(&path, None).await?;
    let deleted: Vec<&str> = report["VolumesDeleted"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !deleted.is_empty() {
        println!("Deleted Volumes:");
        for d in deleted {
            println!("{d}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        human_size(report["SpaceReclaimed"].as_f64().unwrap_or(0.0))
    );
    Ok(())
}

// ---- berth cp -------------------------------------------------------------

#[derive(Debug, Args)]
pub struct CpArgs {
    /// CONTAINER:SRC_PATH, a local path, or - (a tar stream on stdin).
    src: String,
    /// CONTAINER:DEST_PATH, a local path, or - (a tar stream to stdout).
    dest: String,
}

/// `container:path` → (container, path); a local path (absolute, or with
/// no colon before the first slash) → None.
fn split_remote(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    let (c, p) = arg.split_once(':')?;
    if c.is_empty() || c.contains('/') {
        return None;
    }
    Some((c, p))
}

/// The engine's path stat (from `X-Docker-Container-Path-Stat`).
struct Stat {
    is_dir: bool,
}

fn decode_stat(header: Option<&hyper::header::HeaderValue>) -> Result<Stat> {
    use base64::Engine;
    let raw = header.ok_or_else(|| anyhow!("the engine sent no path stat"))?;
    let json = base64::engine::general_purpose::STANDARD
        .decode(raw.as_bytes())
        .context("decoding the path stat")?;
    let v: Value = serde_json::from_slice(&json).context("decoding the path stat")?;
    let mode = v["mode"].as_u64().unwrap_or(0);
    Ok(Stat {
        is_dir: mode & (1 << 31) != 0,
    })
}

async fn remote_stat(client: &Client, container: &str, path: &str) -> Result<Option<Stat>> {
    let uri = format!(
        "/containers/{}/archive{}",
        path_segment(container),
        query(&[("path", path)])
    );
    match client.send(Method::HEAD, &uri, Client::empty(), &[]).await {
        Ok(r) => Ok(Some(decode_stat(
            r.headers().get("X-Docker-Container-Path-Stat"),
        )?)),
        Err(e) => match e.downcast_ref::<crate::client::ApiError>() {
            Some(api) if api.status == 404 => {
                // An unknown container is also a 404: tell them apart.
                client
                    .get_json::<Value>(&format!("/containers/{}/json", path_segment(container)))
                    .await?;
                Ok(None)
            }
            _ => Err(e),
        },
    }
}

pub async fn cp(client: &Client, args: &CpArgs) -> Result<()> {
    match (split_remote(&args.src), split_remote(&args.dest)) {
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (None, None) => bail!("must specify at least one container source"),
        (Some((c, p)), None) => copy_from(client, c, p, &args.dest).await,
        (None, Some((c, p))) => copy_to(client, &args.src, c, p).await,
    }
}

async fn copy_from(client: &Client, container: &str, path: &str, dest: &str) -> Result<()> {
    let uri = format!(
        "/containers/{}/archive{}",
        path_segment(container),
        query(&[("path", path)])
    );
    let response = client.call(Method::GET, &uri).await?;
    let stat = decode_stat(response.headers().get("X-Docker-Container-Path-Stat"))?;
    if dest == "-" {
        crate::client::copy_body_to(response, &mut tokio::io::stdout()).await?;
        return Ok(());
    }
    let mut tar = Vec::new();
    crate::client::copy_body_to(response, &mut tar).await?;
    let dest = PathBuf::from(dest);
    let contents_only = path.ends_with("/.");
    tokio::task::spawn_blocking(move || unpack_local(&tar, &dest, stat.is_dir, contents_only))
        .await
        .context("the copy task failed")?
}

/// Docker's rules: into an existing directory under the source's name
/// (its content only for `dir/.`); else to the destination's name.
fn unpack_local(tar: &[u8], dest: &Path, src_is_dir: bool, contents_only: bool) -> Result<()> {
    let (root, rename) = if dest.is_dir() {
        (dest.to_path_buf(), None)
    } else {
        if src_is_dir && dest.exists() {
            bail!("cannot copy a directory to the file {}", dest.display());
        }
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            bail!("no such directory: {}", parent.display());
        }
        let name = dest
            .file_name()
            .ok_or_else(|| anyhow!("invalid destination {}", dest.display()))?;
        (parent, Some(PathBuf::from(name)))
    };
    let mut archive = tar::Archive::new(tar);
    archive.set_preserve_permissions(true);
    for entry in archive.entries().context("reading the archive")? {
        let mut entry = entry.context("reading the archive")?;
        let path = entry.path().context("reading the archive")?.into_owned();
        let clean: PathBuf = path
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect();
        let target = match &rename {
            None => clean,
            Some(name) => {
                // The archive's top entry is the source's name (or `.`).
                let rest: PathBuf = if contents_only {
                    clean
                } else {
                    clean.components().skip(1).collect()
                };
                if rest.as_os_str().is_empty() {
                    name.clone()
                } else {
                    name.join(rest)
                }
            }
        };
        if target.as_os_str().is_empty() {
            continue;
        }
        unpack_checked(&mut entry, &root, &target)
            .with_context(|| format!("extracting {}", target.display()))?;
    }
    Ok(())
}

/// Unpacks one entry at `root/target`, refusing `..` and parents that
/// lead out of `root` through symlinks.
fn unpack_checked<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    root: &Path,
    target: &Path,
) -> Result<()> {
    if target
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        bail!("refusing the archive entry {}", target.display());
    }
    let full = root.join(target);
    if let Some(parent) = full.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        if !parent.canonicalize()?.starts_with(root.canonicalize()?) {
            bail!("refusing the archive entry {}", target.display());
        }
    }
    if entry.header().entry_type().is_dir() && full.is_dir() {
        return Ok(());
    }
    if full.symlink_metadata().is_ok() && !full.is_dir() {
        let _ = std::fs::remove_file(&full);
    }
    entry.unpack(&full)?;
    Ok(())
}

async fn copy_to(client: &Client, src: &str, container: &str, path: &str) -> Result<()> {
    let base = format!("/containers/{}/archive", path_segment(container));
    if src == "-" {
        // A tar stream on stdin, extracted as it is into the directory.
        let body = Client::reader_body(tokio::io::stdin());
        let uri = format!("{base}{}", query(&[("path", path)]));
        client
            .send(
                Method::PUT,
                &uri,
                body,
                &[("Content-Type", "application/x-tar".to_string())],
            )
            .await?;
        return Ok(());
    }
    let src_path = PathBuf::from(src);
    let meta =
        std::fs::symlink_metadata(&src_path).with_context(|| format!("could not stat {src}"))?;
    let contents_only = src.ends_with("/.");
    let src_name = src_path
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(PathBuf::from))
        .ok_or_else(|| anyhow!("invalid source path {src}"))?;
    let (extract_dir, name) = match remote_stat(client, container, path).await? {
        Some(s) if s.is_dir => (
            path.to_string(),
            if contents_only { None } else { Some(src_name) },
        ),
        Some(_) if meta.is_dir() => bail!("cannot copy a directory to a file: {container}:{path}"),
        exists => {
            if exists.is_none() && path.ends_with('/') {
                bail!("no such directory: {container}:{path}");
            }
            let trimmed = path.trim_end_matches('/');
            let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
            let parent = if parent.is_empty() { "/" } else { parent };
            (parent.to_string(), Some(PathBuf::from(name)))
        }
    };
    let tar = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        builder.follow_symlinks(false);
        match name {
            Some(name) if meta.is_dir() => builder.append_dir_all(&name, &src_path)?,
            Some(name) => builder.append_path_with_name(&src_path, &name)?,
            None => builder.append_dir_all(".", &src_path)?,
        }
        Ok(builder.into_inner()?)
    })
    .await
    .context("the copy task failed")??;
    let uri = format!("{base}{}", query(&[("path", &extract_dir)]));
    client
        .send(
            Method::PUT,
            &uri,
            Client::reader_body(std::io::Cursor::new(tar)),
            &[("Content-Type", "application/x-tar".to_string())],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_flags() {
        let m = parse_mount("type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1770").expect("tmpfs");
        assert_eq!(m["TmpfsOptions"]["SizeBytes"], 1 << 20);
        assert_eq!(m["TmpfsOptions"]["Mode"], 0o1770);
        let m =
            parse_mount("type=bind,src=/h,dst=/c,readonly,bind-propagation=rslave").expect("bind");
        assert_eq!(m["ReadOnly"], true);
        assert_eq!(m["BindOptions"]["Propagation"], "rslave");
        let m = parse_mount("source=v,target=/d,volume-nocopy,volume-opt=type=tmpfs").expect("vol");
        assert_eq!(m["Type"], "volume");
        assert_eq!(
            m["VolumeOptions"]["DriverConfig"]["Options"]["type"],
            "tmpfs"
        );
        assert!(parse_mount("type=volume,target=/d,bind-propagation=rshared").is_err());
        assert!(parse_mount("type=bind,source=/x").is_err());
        assert!(parse_mount("bogus=1,target=/x").is_err());
        assert!(matches!(volume_flag("/data"), Ok(VolumeFlag::Anonymous(_))));
        assert!(matches!(volume_flag("v:/data:ro"), Ok(VolumeFlag::Bind(_))));
        assert!(volume_flag("data").is_err());
        assert_eq!(split_remote("c1:/x"), Some(("c1", "/x")));
        assert_eq!(split_remote("/x:y"), None);
        assert_eq!(split_remote("./a:b"), None);
    }
}
