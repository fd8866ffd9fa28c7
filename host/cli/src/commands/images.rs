//! images, pull, push, tag, rmi, save, load, import, history, inspect.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::Value;

use crate::client::{self, path_segment, query, Client};
use crate::format::{human_age, human_size, now_unix, print_table, render_template};
use crate::progress::ProgressRenderer;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls(ListArgs),
    Pull(PullArgs),
    Push(PushArgs),
    Tag(TagArgs),
    /// Remove one or more images.
    #[command(alias = "remove")]
    Rm(RemoveArgs),
    Save(SaveArgs),
    Load(LoadArgs),
    Import(ImportArgs),
    History(HistoryArgs),
    Inspect(InspectArgs),
    /// Remove unused images.
    Prune(PruneArgs),
}

pub async fn image_command(client: &Client, command: ImageCommand) -> Result<()> {
    match command {
        ImageCommand::Ls(a) => list(client, &a).await,
        ImageCommand::Pull(a) => pull(client, &a).await,
        ImageCommand::Push(a) => push(client, &a).await,
        ImageCommand::Tag(a) => tag(client, &a).await,
        ImageCommand::Rm(a) => remove(client, &a).await,
        ImageCommand::Save(a) => save(client, &a).await,
        ImageCommand::Load(a) => load(client, &a).await,
        ImageCommand::Import(a) => import(client, &a).await,
        ImageCommand::History(a) => history(client, &a).await,
        ImageCommand::Inspect(a) => inspect(client, &a).await,
        ImageCommand::Prune(a) => prune(client, &a).await,
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Format output using a template ('{{json .}}', '{{.Repository}}:{{.Tag}}', 'table …').
    #[arg(long)]
    format: Option<String>,
    /// Show all images (intermediate ones included; Berth has none).
    #[arg(short, long)]
    all: bool,
    /// Filter output (dangling=true, label=k=v, reference=pattern).
    #[arg(short, long)]
    filter: Vec<String>,
    /// Only images matching REPOSITORY[:TAG].
    reference: Option<String>,
}

fn short_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        id.trim_start_matches("sha256:").chars().take(12).collect()
    }
}

/// `name:tag` → ("name", "tag"), handling registry ports.
fn split_tag(repo_tag: &str) -> (String, String) {
    match repo_tag.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (repo_tag.to_string(), "<none>".to_string()),
    }
}

fn filters_query(filters: &[String], reference: Option<&str>) -> Result<String> {
    let mut map: serde_json::Map<String, Value> = serde_json::Map::new();
    for f in filters {
        let (key, value) = f
            .split_once('=')
            .with_context(|| format!("bad format of filter (expected name=value): {f}"))?;
        let entry = map
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(values) = entry {
            values.insert(value.to_string(), Value::Bool(true));
        }
    }
    if let Some(r) = reference {
        let entry = map
            .entry("reference".to_string())
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(values) = entry {
            values.insert(r.to_string(), Value::Bool(true));
        }
    }
    Ok(if map.is_empty() {
        String::new()
    } else {
        Value::Object(map).to_string()
    })
}

pub async fn list(client: &Client, args: &ListArgs) -> Result<()> {
    let filters = filters_query(&args.filter, args.reference.as_deref())?;
    let mut pairs = Vec::new();
    if !filters.is_empty() {
        pairs.push(("filters", filters.as_str()));
    }
    if args.all {
        pairs.push(("all", "1"));
    }
    let images: Vec<Value> = client
        .get_json(&format!("/images/json{}", query(&pairs)))
        .await?;
    let now = now_unix();
    // One row per tag (untagged images get one <none> row), newest first.
    let mut rows: Vec<(i64, Value)> = Vec::new();
    for image in &images {
        let id = image["Id"].as_str().unwrap_or_default();
        let created = image["Created"].as_i64().unwrap_or(0);
        let size = image["Size"].as_f64().unwrap_or(0.0);
        let digest = image["RepoDigests"]
            .as_array()
            .and_then(|d| d.first())
            .and_then(Value::as_str)
            .and_then(|d| d.split_once('@').map(|(_, d)| d.to_string()))
            .unwrap_or_else(|| "<none>".into());
        let tags: Vec<String> = image["RepoTags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let tags = if tags.is_empty() {
            vec!["<none>:<none>".to_string()]
        } else {
            tags
        };
        for repo_tag in tags {
            let (repository, tag) = split_tag(&repo_tag);
            rows.push((
                created,
                serde_json::json!({
                    "Repository": repository,
                    "Tag": tag,
                    "ID": short_id(id, args.no_trunc),
                    "Digest": digest,
                    "CreatedSince": human_age(now - created),
                    "CreatedAt": created,
                    "Size": human_size(size),
                }),
            ));
        }
    }
    rows.sort_by_key(|row| std::cmp::Reverse(row.0));
    if args.quiet {
        let mut seen = std::collections::HashSet::new();
        for (_, row) in &rows {
            let id = row["ID"].as_str().unwrap_or_default().to_string();
            if seen.insert(id.clone()) {
                println!("{id}");
            }
        }
        return Ok(());
    }
    if let Some(template) = &args.format {
        print_formatted(template, rows.iter().map(|(_, r)| r));
        return Ok(());
    }
    let mut header = vec!["REPOSITORY", "TAG"];
    if args.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(_, r)| {
            let mut cells = vec![text(&r["Repository"]), text(&r["Tag"])];
            if args.digests {
                cells.push(text(&r["Digest"]));
            }
            cells.extend([text(&r["ID"]), text(&r["CreatedSince"]), text(&r["Size"])]);
            cells
        })
        .collect();
    print_table(&header, &table);
    Ok(())
}

fn text(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// `--format`: a `table` template prints a header row of the field names.
fn print_formatted<'a>(template: &str, rows: impl Iterator<Item = &'a Value>) {
    let (is_table, body) = match template.strip_prefix("table") {
        Some(rest) => (true, rest.trim_start()),
        None => (false, template),
    };
    if is_table {
        let header = body
            .replace("{{.", "")
            .replace("}}", "")
            .to_uppercase()
            .replace("\\T", "\t");
        println!("{header}");
    }
    for row in rows {
        println!("{}", render_template(body, row));
    }
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Set platform if server is multi-platform capable (e.g. linux/arm64).
    #[arg(long)]
    platform: Option<String>,
    /// Suppress verbose output.
    #[arg(short, long)]
    quiet: bool,
    /// NAME[:TAG|@DIGEST]
    name: String,
}

/// Splits `name[:tag]` the way the Docker CLI sends it to /images/create.
fn split_for_create(name: &str) -> (String, String) {
    if name.contains('@') {
        return (name.to_string(), String::new());
    }
    let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    match name[last_slash..].rfind(':') {
        Some(i) => (
            name[..last_slash + i].to_string(),
            name[last_slash + i + 1..].to_string(),
        ),
        None => (name.to_string(), "latest".to_string()),
    }
}

pub async fn pull(client: &Client, args: &PullArgs) -> Result<()> {
    let (image, tag) = split_for_create(&args.name);
    let mut pairs = vec![("fromImage", image.as_str())];
    if !tag.is_empty() {
        pairs.push(("tag", tag.as_str()));
    }
    if let Some(p) = &args.platform {
        pairs.push(("platform", p.as_str()));
    }
    let response = client
        .call(Method::POST, &format!("/images/create{}", query(&pairs)))
        .await?;
    stream_progress(response, args.quiet).await?;
    let full = if tag.is_empty() {
        image
    } else {
        format!("{image}:{tag}")
    };
    println!("{}", canonical_name(&full));
    Ok(())
}

/// Docker prints the fully qualified name after a pull.
fn canonical_name(name: &str) -> String {
    let first = name.split('/').next().unwrap_or_default();
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    }
}

async fn stream_progress(
    response: hyper::Response<hyper::body::Incoming>,
    quiet: bool,
) -> Result<()> {
    let mut renderer = ProgressRenderer::new();
    client::for_each_json_line(response, |message| {
        if quiet {
            if let Some(error) = message.get("error").and_then(Value::as_str) {
                bail!("{error}");
            }
            return Ok(());
        }
        renderer.handle(&message)
    })
    .await?;
    renderer.finish();
    Ok(())
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Suppress verbose output.
    #[arg(short, long)]
    quiet: bool,
    /// NAME[:TAG]
    name: String,
}

pub async fn push(client: &Client, args: &PushArgs) -> Result<()> {
    let (image, tag) = split_for_create(&args.name);
    let response = client
        .send(
            Method::POST,
            &format!(
                "/images/{}/push{}",
                path_segment(&image),
                query(&[("tag", &tag)])
            ),
            Client::empty(),
            // The engine uses its stored credentials; an empty header is what
            // the docker CLI sends when it has none.
            &[("X-Registry-Auth", "e30=".to_string())],
        )
        .await?;
    stream_progress(response, args.quiet).await
}

#[derive(Debug, Args)]
pub struct TagArgs {
    source: String,
    target: String,
}

pub async fn tag(client: &Client, args: &TagArgs) -> Result<()> {
    let (repo, tag) = split_for_create(&args.target);
    client
        .call(
            Method::POST,
            &format!(
                "/images/{}/tag{}",
                path_segment(&args.source),
                query(&[("repo", &repo), ("tag", &tag)])
            ),
        )
        .await?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Force removal of the image.
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    images: Vec<String>,
}

pub async fn remove(client: &Client, args: &RemoveArgs) -> Result<()> {
    let mut failed = false;
    for image in &args.images {
        let path = format!(
            "/images/{}{}",
            path_segment(image),
            query(&[("force", if args.force { "1" } else { "0" })])
        );
        match client
            .send(Method::DELETE, &path, Client::empty(), &[])
            .await
        {
            Ok(response) => {
                let items: Vec<Value> = client::read_json(response).await?;
                for item in items {
                    if let Some(t) = item.get("Untagged").and_then(Value::as_str) {
                        println!("Untagged: {t}");
                    }
                    if let Some(d) = item.get("Deleted").and_then(Value::as_str) {
                        println!("Deleted: {d}");
                    }
                }
            }
            Err(e) => {
                eprintln!("{e:#}");
                failed = true;
            }
        }
    }
    if failed {
        bail!("some images could not be removed");
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to a file, instead of STDOUT.
    #[arg(short, long)]
    output: Option<std::path::PathBuf>,
    #[arg(required = true)]
    images: Vec<String>,
}

pub async fn save(client: &Client, args: &SaveArgs) -> Result<()> {
    use std::io::IsTerminal;
    if args.output.is_none() && std::io::stdout().is_terminal() {
        bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    }
    let names: Vec<(&str, &str)> = args.images.iter().map(|n| ("names", n.as_str())).collect();
    let response = client
        .call(Method::GET, &format!("/images/get{}", query(&names)))
        .await?;
    match &args.output {
        Some(path) => {
            // Written beside the target and renamed, so a failed save leaves
            // no truncated archive behind.
            let tmp = path.with_extension("berth-partial");
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .with_context(|| format!("creating {}", tmp.display()))?;
            let result = client::copy_body_to(response, &mut file).await;
            if let Err(e) = result {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
            tokio::fs::rename(&tmp, path)
                .await
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => {
            client::copy_body_to(response, &mut tokio::io::stdout()).await?;
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from tar archive file, instead of STDIN.
    #[arg(short, long)]
    input: Option<std::path::PathBuf>,
    /// Suppress the load output.
    #[arg(short, long)]
    quiet: bool,
}

pub async fn load(client: &Client, args: &LoadArgs) -> Result<()> {
    let body = match &args.input {
        Some(path) => {
            let file = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            Client::reader_body(file)
        }
        None => {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is empty");
            }
            Client::reader_body(tokio::io::stdin())
        }
    };
    let response = client
        .send(
            Method::POST,
            &format!(
                "/images/load{}",
                query(&[("quiet", if args.quiet { "1" } else { "0" })])
            ),
            body,
            &[("Content-Type", "application/x-tar".to_string())],
        )
        .await?;
    stream_progress(response, false).await
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Apply Dockerfile instructions to the image (CMD, ENTRYPOINT, ENV, WORKDIR).
    #[arg(short, long)]
    change: Vec<String>,
    /// Set a commit message for the imported image.
    #[arg(short, long)]
    message: Option<String>,
    /// file|- (a tarball of a root filesystem)
    file: String,
    /// REPOSITORY[:TAG]
    reference: Option<String>,
}

pub async fn import(client: &Client, args: &ImportArgs) -> Result<()> {
    let body = if args.file == "-" {
        Client::reader_body(tokio::io::stdin())
    } else {
        let file = tokio::fs::File::open(&args.file)
            .await
            .with_context(|| format!("opening {}", args.file))?;
        Client::reader_body(file)
    };
    let mut pairs: Vec<(&str, String)> = vec![("fromSrc", "-".to_string())];
    if let Some(r) = &args.reference {
        let (repo, tag) = split_for_create(r);
        pairs.push(("repo", repo));
        pairs.push(("tag", tag));
    }
    if let Some(m) = &args.message {
        pairs.push(("message", m.clone()));
    }
    for c in &args.change {
        pairs.push(("changes", c.clone()));
    }
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = client
        .send(
            Method::POST,
            &format!("/images/create{}", query(&pairs)),
            body,
            &[("Content-Type", "application/x-tar".to_string())],
        )
        .await?;
    let mut id = None;
    client::for_each_json_line(response, |message| {
        if let Some(error) = message.get("error").and_then(Value::as_str) {
            bail!("{error}");
        }
        if let Some(status) = message.get("status").and_then(Value::as_str) {
            id = Some(status.to_string());
        }
        Ok(())
    })
    .await?;
    if let Some(id) = id {
        println!("{id}");
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Don't truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    #[arg(long)]
    format: Option<String>,
    image: String,
}

pub async fn history(client: &Client, args: &HistoryArgs) -> Result<()> {
    let entries: Vec<Value> = client
        .get_json(&format!("/images/{}/history", path_segment(&args.image)))
        .await?;
    let now = now_unix();
    let rows: Vec<Value> = entries
        .iter()
        .map(|e| {
            let created_by = text(&e["CreatedBy"]);
            let created_by = if args.no_trunc || created_by.chars().count() <= 45 {
                created_by
            } else {
                format!("{}…", created_by.chars().take(44).collect::<String>())
            };
            serde_json::json!({
                "ID": short_id(e["Id"].as_str().unwrap_or("<missing>"), args.no_trunc),
                "CreatedSince": human_age(now - e["Created"].as_i64().unwrap_or(now)),
                "CreatedBy": created_by,
                "Size": human_size(e["Size"].as_f64().unwrap_or(0.0)),
                "Comment": text(&e["Comment"]),
            })
        })
        .collect();
    if args.quiet {
        for r in &rows {
            println!("{}", text(&r["ID"]));
        }
        return Ok(());
    }
    if let Some(template) = &args.format {
        print_formatted(template, rows.iter());
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            ["ID", "CreatedSince", "CreatedBy", "Size", "Comment"]
                .iter()
                .map(|k| text(&r[*k]))
                .collect()
        })
        .collect();
    print_table(
        &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        &table,
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a template.
    #[arg(short, long)]
    format: Option<String>,
    /// Only `image` objects exist so far.
    #[arg(long = "type")]
    kind: Option<String>,
    #[arg(required = true)]
    names: Vec<String>,
}

pub async fn inspect(client: &Client, args: &InspectArgs) -> Result<()> {
    if let Some(kind) = &args.kind {
        if kind != "image" {
            bail!("inspecting objects of type {kind:?} is not available in this Berth version yet");
        }
    }
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in &args.names {
        match client
            .get_json::<Value>(&format!("/images/{}/json", path_segment(name)))
            .await
        {
            Ok(v) => found.push(v),
            Err(e) => {
                let is_404 = e
                    .downcast_ref::<client::ApiError>()
                    .is_some_and(|a| a.status == hyper::StatusCode::NOT_FOUND);
                if !is_404 {
                    return Err(e);
                }
                missing.push(name.clone());
            }
        }
    }
    match &args.format {
        Some(template) => {
            for v in &found {
                println!("{}", render_template(template, v));
            }
        }
        None => println!(
            "{}",
            serde_json::to_string_pretty(&found).context("formatting")?
        ),
    }
    if !missing.is_empty() {
        for m in &missing {
            eprintln!("Error: No such object: {m}");
        }
        bail!("{} object(s) not found", missing.len());
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones.
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
}

pub async fn prune(client: &Client, args: &PruneArgs) -> Result<()> {
    let filters = if args.all {
        r#"{"dangling":{"false":true}}"#
    } else {
        r#"{"dangling":{"true":true}}"#
    };
    let report: Value = client
        .post_json(
            &format!("/images/prune{}", query(&[("filters", filters)])),
            None,
        )
        .await?;
    for item in report["ImagesDeleted"].as_array().into_iter().flatten() {
        if let Some(t) = item.get("Untagged").and_then(Value::as_str) {
            println!("untagged: {t}");
        }
        if let Some(d) = item.get("Deleted").and_then(Value::as_str) {
            println!("deleted: {d}");
        }
    }
    println!(
        "Total reclaimed space: {}",
        human_size(report["SpaceReclaimed"].as_f64().unwrap_or(0.0))
    );
    let _ = args.force;
    Ok(())
}

/// The pull `run` and `create` do when the image is missing: progress as
/// plain lines on stderr, so stdout stays the container's.
pub async fn pull_quietly_to_stderr(client: &Client, name: &str) -> Result<()> {
    let (image, tag) = split_for_create(name);
    let mut pairs = vec![("fromImage", image.as_str())];
    if !tag.is_empty() {
        pairs.push(("tag", tag.as_str()));
    }
    let response = client
        .call(Method::POST, &format!("/images/create{}", query(&pairs)))
        .await?;
    let mut last: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    client::for_each_json_line(response, |message| {
        if let Some(error) = message.get("error").and_then(Value::as_str) {
            bail!("{error}");
        }
        let status = message
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match message.get("id").and_then(Value::as_str) {
            Some(id) if last.get(id).map(String::as_str) != Some(status) => {
                last.insert(id.to_string(), status.to_string());
                eprintln!("{id}: {status}");
            }
            Some(_) => {}
            None if !status.is_empty() => eprintln!("{status}"),
            None => {}
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_split_like_docker() {
        assert_eq!(
            split_for_create("busybox"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            split_for_create("busybox:1.36"),
            ("busybox".into(), "1.36".into())
        );
        assert_eq!(
            split_for_create("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b".into(), "latest".into())
        );
        assert_eq!(
            split_for_create("127.0.0.1:5000/a/b:v1"),
            ("127.0.0.1:5000/a/b".into(), "v1".into())
        );
        let d = "busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000";
        assert_eq!(split_for_create(d), (d.into(), String::new()));
    }

    #[test]
    fn canonical_names() {
        assert_eq!(
            canonical_name("busybox:latest"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(canonical_name("user/app:1"), "docker.io/user/app:1");
        assert_eq!(
            canonical_name("localhost:5000/app:1"),
            "localhost:5000/app:1"
        );
    }

    #[test]
    fn tags_split_with_ports() {
        assert_eq!(
            split_tag("busybox:latest"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/x:v1"),
            ("127.0.0.1:5000/x".into(), "v1".into())
        );
    }
}
