//! run, create, start, stop, restart, kill, rm, ps, logs, wait — Docker's
//! container commands over the API.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::client::{self, path_segment, query, ApiError, Client};
use crate::format::{human_age, now_unix, print_table, render_template};

/// What `create` and `run` share.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Assign a name to the container.
    #[arg(long)]
    name: Option<String>,
    /// Set environment variables.
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Read in a file of environment variables.
    #[arg(long)]
    env_file: Vec<std::path::PathBuf>,
    /// Set meta data on a container.
    #[arg(short, long = "label")]
    label: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short, long)]
    user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Bind mount a volume (host-path:container-path[:ro]).
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    /// Mount a tmpfs directory.
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short, long)]
    memory: Option<String>,
    /// Number of CPUs.
    #[arg(long)]
    cpus: Option<f64>,
    /// Tune container pids limit.
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Add Linux capabilities.
    #[arg(long)]
    cap_add: Vec<String>,
    /// Drop Linux capabilities.
    #[arg(long)]
    cap_drop: Vec<String>,
    /// Give extended privileges to this container.
    #[arg(long)]
    privileged: bool,
    /// Mount the container's root filesystem as read only.
    #[arg(long)]
    read_only: bool,
    /// Run an init inside the container that forwards signals and reaps processes.
    #[arg(long)]
    init: bool,
    /// Restart policy (no, always, unless-stopped, on-failure[:max-retries]).
    #[arg(long)]
    restart: Option<String>,
    /// Connect a container to a network (none, host, bridge).
    #[arg(long)]
    network: Option<String>,
    /// Security options (seccomp=unconfined, no-new-privileges).
    #[arg(long)]
    security_opt: Vec<String>,
    /// Container host name.
    #[arg(long)]
    hostname: Option<String>,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    tty: bool,
    /// Keep STDIN open even if not attached.
    #[arg(short, long)]
    interactive: bool,
    /// The image to run.
    image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// "64m" → bytes, as Docker's RAMInBytes (binary units).
fn parse_memory(s: &str) -> Result<i64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.chars().last() {
        Some('b') => (&s[..s.len() - 1], 1),
        Some('k') => (&s[..s.len() - 1], 1 << 10),
        Some('m') => (&s[..s.len() - 1], 1 << 20),
        Some('g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s.as_str(), 1),
    };
    let n: f64 = num
        .trim_end_matches('b')
        .parse()
        .with_context(|| format!("invalid size: {s:?}"))?;
    if n < 0.0 {
        bail!("invalid size: {s:?}");
    }
    Ok((n * f64::from(mult)) as i64)
}

fn restart_policy(s: &str) -> Result<Value> {
    let (name, count) = match s.split_once(':') {
        Some((n, c)) => (
            n,
            c.parse::<i64>()
                .with_context(|| format!("invalid restart policy {s:?}"))?,
        ),
        None => (s, 0),
    };
    if !matches!(name, "no" | "always" | "unless-stopped" | "on-failure") {
        bail!("invalid restart policy {name:?}: use no, always, unless-stopped or on-failure[:N]");
    }
    Ok(json!({"Name": name, "MaximumRetryCount": count}))
}

impl CreateArgs {
    fn body(&self, auto_remove: bool) -> Result<Value> {
        let mut env = Vec::new();
        for file in &self.env_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading env file {}", file.display()))?;
            env.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        for e in &self.env {
            // `-e NAME` takes NAME's value from our environment, as docker does.
            if e.contains('=') {
                env.push(e.clone());
            } else if let Ok(v) = std::env::var(e) {
                env.push(format!("{e}={v}"));
            }
        }
        let mut labels = serde_json::Map::new();
        for l in &self.label {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            labels.insert(k.to_string(), Value::String(v.to_string()));
        }
        let mut tmpfs = serde_json::Map::new();
        for t in &self.tmpfs {
            let (path, opts) = t.split_once(':').unwrap_or((t.as_str(), ""));
            tmpfs.insert(path.to_string(), Value::String(opts.to_string()));
        }
        let mut host = json!({
            "Binds": self.volume,
            "AutoRemove": auto_remove,
            "Privileged": self.privileged,
            "ReadonlyRootfs": self.read_only,
            "CapAdd": self.cap_add,
            "CapDrop": self.cap_drop,
            "SecurityOpt": self.security_opt,
            "Tmpfs": tmpfs,
            "NetworkMode": self.network.clone().unwrap_or_else(|| "default".into()),
        });
        if self.init {
            host["Init"] = json!(true);
        }
        if let Some(m) = &self.memory {
            host["Memory"] = json!(parse_memory(m)?);
        }
        if let Some(c) = self.cpus {
            host["NanoCpus"] = json!((c * 1e9) as i64);
        }
        if let Some(p) = self.pids_limit {
            host["PidsLimit"] = json!(p);
        }
        if let Some(r) = &self.restart {
            host["RestartPolicy"] = restart_policy(r)?;
        }
        let mut body = json!({
            "Image": self.image,
            "Env": env,
            "Labels": labels,
            "Tty": self.tty,
            "OpenStdin": self.interactive,
            "AttachStdin": self.interactive,
            "AttachStdout": true,
            "AttachStderr": true,
            "HostConfig": host,
        });
        if !self.command.is_empty() {
            body["Cmd"] = json!(self.command);
        }
        if let Some(e) = &self.entrypoint {
            body["Entrypoint"] = json!([e]);
        }
        if let Some(w) = &self.workdir {
            body["WorkingDir"] = json!(w);
        }
        if let Some(u) = &self.user {
            body["User"] = json!(u);
        }
        if let Some(h) = &self.hostname {
            body["Hostname"] = json!(h);
        }
        Ok(body)
    }
}

fn is_status(e: &anyhow::Error, status: StatusCode) -> bool {
    e.downcast_ref::<ApiError>()
        .is_some_and(|a| a.status == status)
}

/// Creates the container, pulling the image first if the engine lacks it.
async fn create_container(client: &Client, args: &CreateArgs, auto_remove: bool) -> Result<String> {
    let body = args.body(auto_remove)?;
    let path = match &args.name {
        Some(n) => format!("/containers/create{}", query(&[("name", n)])),
        None => "/containers/create".to_string(),
    };
    let created: Value = match client.post_json(&path, Some(&body)).await {
        Ok(v) => v,
        Err(e) if is_status(&e, StatusCode::NOT_FOUND) => {
            eprintln!("Unable to find image '{}' locally", args.image);
            super::images::pull_quietly_to_stderr(client, &args.image).await?;
            client.post_json(&path, Some(&body)).await?
        }
        Err(e) => return Err(e),
    };
    for w in created["Warnings"].as_array().into_iter().flatten() {
        eprintln!("WARNING: {}", w.as_str().unwrap_or_default());
    }
    created["Id"]
        .as_str()
        .map(str::to_string)
        .context("the engine did not return a container id")
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run container in background and print container ID.
    #[arg(short, long)]
    detach: bool,
    /// Automatically remove the container when it exits.
    #[arg(long)]
    rm: bool,
    #[command(flatten)]
    create: CreateArgs,
}

/// Docker's exit codes for a container that could not run its command.
fn start_failure_code(message: &str) -> u8 {
    if message.contains("not found") || message.contains("no such file") {
        127
    } else if message.contains("permission denied") {
        126
    } else {
        125
    }
}

pub async fn run(client: &Client, args: &RunArgs) -> Result<ExitCode> {
    let id = match create_container(client, &args.create, args.rm).await {
        Ok(id) => id,
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(ExitCode::from(125));
        }
    };
    if args.detach {
        if let Err(e) = client
            .call(Method::POST, &format!("/containers/{id}/start"))
            .await
        {
            eprintln!("{e:#}");
            return Ok(ExitCode::from(start_failure_code(&format!("{e:#}"))));
        }
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    // Ask for the exit status before starting, so it cannot be missed.
    let condition = if args.rm { "removed" } else { "next-exit" };
    let wait_client = client.clone();
    let wait_path = format!(
        "/containers/{id}/wait{}",
        query(&[("condition", condition)])
    );
    let waiter = tokio::spawn(async move {
        let response = wait_client.call(Method::POST, &wait_path).await?;
        client::read_json::<Value>(response).await
    });
    if let Err(e) = client
        .call(Method::POST, &format!("/containers/{id}/start"))
        .await
    {
        let message = format!("{e:#}");
        eprintln!("{message}");
        if args.rm {
            let _ = client
                .call(
                    Method::DELETE,
                    &format!("/containers/{id}{}", query(&[("force", "1")])),
                )
                .await;
        }
        return Ok(ExitCode::from(start_failure_code(&message)));
    }
    stream_logs(client, &id, true, None, false, args.create.tty).await?;
    let status = waiter.await.context("waiting for the container")??;
    if let Some(message) = status["Error"]["Message"]
        .as_str()
        .filter(|m| !m.is_empty())
    {
        eprintln!("{message}");
    }
    let code = status["StatusCode"].as_i64().unwrap_or(125);
    Ok(ExitCode::from(u8::try_from(code & 0xff).unwrap_or(125)))
}

pub async fn create(client: &Client, args: &CreateArgs) -> Result<()> {
    println!("{}", create_container(client, args, false).await?);
    Ok(())
}

/// Streams `logs` (multiplexed frames unless the container has a TTY) to our
/// stdout/stderr until the stream ends.
async fn stream_logs(
    client: &Client,
    id: &str,
    follow: bool,
    tail: Option<&str>,
    timestamps: bool,
    tty: bool,
) -> Result<()> {
    let mut pairs = vec![
        ("stdout", "1"),
        ("stderr", "1"),
        ("follow", if follow { "1" } else { "0" }),
        ("timestamps", if timestamps { "1" } else { "0" }),
    ];
    if let Some(t) = tail {
        pairs.push(("tail", t));
    }
    let response = client
        .call(
            Method::GET,
            &format!("/containers/{}/logs{}", path_segment(id), query(&pairs)),
        )
        .await?;
    let raw = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("vnd.docker.raw-stream"))
        || tty;
    let mut body = response.into_body();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.context("reading logs")?.into_data() else {
            continue;
        };
        if raw {
            std::io::stdout().write_all(&data).context("writing logs")?;
            let _ = std::io::stdout().flush();
            continue;
        }
        pending.extend_from_slice(&data);
        // 8-byte header: stream (1 stdout, 2 stderr), 3 zero bytes, big-endian size.
        while pending.len() >= 8 {
            let size =
                u32::from_be_bytes([pending[4], pending[5], pending[6], pending[7]]) as usize;
            if pending.len() < 8 + size {
                break;
            }
            let stream = pending[0];
            let payload: Vec<u8> = pending.drain(..8 + size).skip(8).collect();
            if stream == 2 {
                std::io::stderr()
                    .write_all(&payload)
                    .context("writing logs")?;
            } else {
                std::io::stdout()
                    .write_all(&payload)
                    .context("writing logs")?;
                let _ = std::io::stdout().flush();
            }
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow log output.
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end of the logs.
    #[arg(short = 'n', long)]
    tail: Option<String>,
    /// Show timestamps.
    #[arg(short, long)]
    timestamps: bool,
    container: String,
}

pub async fn logs(client: &Client, args: &LogsArgs) -> Result<()> {
    let info: Value = client
        .get_json(&format!(
            "/containers/{}/json",
            path_segment(&args.container)
        ))
        .await?;
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    stream_logs(
        client,
        &args.container,
        args.follow,
        args.tail.as_deref(),
        args.timestamps,
        tty,
    )
    .await
}

#[derive(Debug, Args)]
pub struct ContainersArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before killing the container.
    #[arg(short = 't', long = "time")]
    time: Option<u32>,
    /// Signal to send to the container.
    #[arg(short, long)]
    signal: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

/// Runs `action` on each container, printing each name that succeeded (as
/// docker does) and failing at the end if any failed.
async fn each(
    containers: &[String],
    mut action: impl AsyncFnMut(&str) -> Result<()>,
) -> Result<()> {
    let mut failed = 0;
    for c in containers {
        match action(c).await {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("{e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} containers failed", containers.len());
    }
    Ok(())
}

/// 304 (already in that state) is success for start/stop.
async fn post_allowing_304(client: &Client, path: &str) -> Result<()> {
    match client.call(Method::POST, path).await {
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

pub async fn start(client: &Client, args: &ContainersArgs) -> Result<()> {
    each(&args.containers, async |c| {
        post_allowing_304(client, &format!("/containers/{}/start", path_segment(c))).await
    })
    .await
}

pub async fn stop(client: &Client, args: &StopArgs, restart: bool) -> Result<()> {
    let verb = if restart { "restart" } else { "stop" };
    let mut pairs = Vec::new();
    let t = args.time.map(|t| t.to_string());
    if let Some(t) = &t {
        pairs.push(("t", t.as_str()));
    }
    if let Some(s) = &args.signal {
        pairs.push(("signal", s.as_str()));
    }
    let q = query(&pairs);
    each(&args.containers, async |c| {
        post_allowing_304(
            client,
            &format!("/containers/{}/{verb}{q}", path_segment(c)),
        )
        .await
    })
    .await
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send to the container.
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn kill(client: &Client, args: &KillArgs) -> Result<()> {
    let q = query(&[("signal", &args.signal)]);
    each(&args.containers, async |c| {
        client
            .call(
                Method::POST,
                &format!("/containers/{}/kill{q}", path_segment(c)),
            )
            .await
            .map(|_| ())
    })
    .await
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL).
    #[arg(short, long)]
    force: bool,
    /// Remove anonymous volumes associated with the container.
    #[arg(short, long)]
    volumes: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn rm(client: &Client, args: &RmArgs) -> Result<()> {
    let q = query(&[
        ("force", if args.force { "1" } else { "0" }),
        ("v", if args.volumes { "1" } else { "0" }),
    ]);
    each(&args.containers, async |c| {
        client
            .call(
                Method::DELETE,
                &format!("/containers/{}{q}", path_segment(c)),
            )
            .await
            .map(|_| ())
    })
    .await
}

pub async fn wait(client: &Client, args: &ContainersArgs) -> Result<()> {
    for c in &args.containers {
        let response = client
            .call(
                Method::POST,
                &format!("/containers/{}/wait", path_segment(c)),
            )
            .await?;
        let status: Value = client::read_json(response).await?;
        println!("{}", status["StatusCode"].as_i64().unwrap_or(-1));
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT.
    #[arg(short, long)]
    output: Option<std::path::PathBuf>,
    container: String,
}

/// The container's filesystem as a tar archive.
pub async fn export(client: &Client, args: &ExportArgs) -> Result<()> {
    use std::io::IsTerminal;
    if args.output.is_none() && std::io::stdout().is_terminal() {
        bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    }
    let response = client
        .call(
            Method::GET,
            &format!("/containers/{}/export", path_segment(&args.container)),
        )
        .await?;
    match &args.output {
        Some(path) => {
            let tmp = path.with_extension("berth-partial");
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .with_context(|| format!("creating {}", tmp.display()))?;
            if let Err(e) = client::copy_body_to(response, &mut file).await {
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
pub struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    all: bool,
    /// Only display container IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// Filter output (name=, label=, status=, ancestor=, id=).
    #[arg(short, long)]
    filter: Vec<String>,
    /// Format output using a template.
    #[arg(long)]
    format: Option<String>,
}

pub async fn ps(client: &Client, args: &PsArgs) -> Result<()> {
    let mut map: serde_json::Map<String, Value> = serde_json::Map::new();
    for f in &args.filter {
        let (k, v) = f
            .split_once('=')
            .with_context(|| format!("bad format of filter (expected name=value): {f}"))?;
        let entry = map.entry(k.to_string()).or_insert_with(|| json!({}));
        entry[v] = json!(true);
    }
    let filters = Value::Object(map).to_string();
    let mut pairs = vec![("all", if args.all { "1" } else { "0" })];
    if !args.filter.is_empty() {
        pairs.push(("filters", filters.as_str()));
    }
    let list: Vec<Value> = client
        .get_json(&format!("/containers/json{}", query(&pairs)))
        .await?;
    let now = now_unix();
    let rows: Vec<Value> = list
        .iter()
        .map(|c| {
            let id = c["Id"].as_str().unwrap_or_default();
            let command = c["Command"].as_str().unwrap_or_default();
            let command = if args.no_trunc || command.chars().count() <= 20 {
                command.to_string()
            } else {
                format!("{}…", command.chars().take(19).collect::<String>())
            };
            let names: Vec<String> = c["Names"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|n| n.trim_start_matches('/').to_string())
                .collect();
            json!({
                "ID": if args.no_trunc { id.to_string() } else { id.chars().take(12).collect() },
                "Image": c["Image"],
                "Command": format!("\"{command}\""),
                "CreatedAt": c["Created"],
                "RunningFor": human_age(now - c["Created"].as_i64().unwrap_or(now)),
                "Status": c["Status"],
                "State": c["State"],
                "Ports": "",
                "Names": names.join(","),
                "Labels": c["Labels"],
            })
        })
        .collect();
    if args.quiet {
        for r in &rows {
            println!("{}", r["ID"].as_str().unwrap_or_default());
        }
        return Ok(());
    }
    if let Some(template) = &args.format {
        for r in &rows {
            println!("{}", render_template(template, r));
        }
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            [
                "ID",
                "Image",
                "Command",
                "RunningFor",
                "Status",
                "Ports",
                "Names",
            ]
            .iter()
            .map(|k| r[*k].as_str().map(str::to_string).unwrap_or_default())
            .collect()
        })
        .collect();
    print_table(
        &[
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ],
        &table,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("64m").expect("64m"), 64 << 20);
        assert_eq!(parse_memory("1g").expect("1g"), 1 << 30);
        assert_eq!(parse_memory("512").expect("512"), 512);
        assert!(parse_memory("lots").is_err());
    }

    #[test]
    fn restart_policies() {
        assert_eq!(
            restart_policy("on-failure:3").expect("valid"),
            json!({"Name": "on-failure", "MaximumRetryCount": 3})
        );
        assert!(restart_policy("sometimes").is_err());
    }

    #[test]
    fn start_failures_map_to_docker_codes() {
        assert_eq!(
            start_failure_code("exec: \"x\": executable file not found in $PATH"),
            127
        );
        assert_eq!(start_failure_code("permission denied"), 126);
        assert_eq!(start_failure_code("something else"), 125);
    }
}
