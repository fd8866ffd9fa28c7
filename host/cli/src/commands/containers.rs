//! run, create, start, stop, restart, kill, rm, ps, logs, wait — Docker's
//! container commands over the API.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::attach;
use crate::client::{self, path_segment, query, ApiError, Client};
use crate::format::{human_age, now_unix, print_formatted, print_table};
use crate::terminal;

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
    #[command(flatten)]
    mounts: super::volume::MountOpts,
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
    /// Connect a container to a network (bridge, host, none, container:<name|id>, or a name).
    #[arg(long, alias = "net")]
    network: Option<String>,
    #[command(flatten)]
    net: super::network::NetOpts,
    /// Security options (seccomp=unconfined, no-new-privileges).
    #[arg(long)]
    security_opt: Vec<String>,
    /// Container host name.
    #[arg(long)]
    hostname: Option<String>,
    /// Signal to stop the container.
    #[arg(long)]
    stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container.
    #[arg(long)]
    stop_timeout: Option<u64>,
    /// Command to run to check health.
    #[arg(long)]
    health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h).
    #[arg(long, value_name = "DURATION")]
    health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h).
    #[arg(long, value_name = "DURATION")]
    health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy.
    #[arg(long)]
    health_retries: Option<i64>,
    /// Start period for the container to initialize before starting health-retries countdown (ms|s|m|h).
    #[arg(long, value_name = "DURATION")]
    health_start_period: Option<String>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long)]
    no_healthcheck: bool,
    /// Pull image before running ("always", "missing", "never").
    #[arg(long, default_value = "missing")]
    pull: String,
    /// Suppress the pull output.
    #[arg(short, long)]
    quiet: bool,
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

/// Parses a Go duration ("1m30s", "500ms", "2h", "1.5s") into
/// nanoseconds, as Docker's duration flags take them. Negative is refused.
pub(super) fn parse_duration(text: &str) -> Result<i64> {
    let s = text.trim();
    if s.is_empty() {
        bail!("invalid duration {text:?}");
    }
    if s == "0" {
        return Ok(0);
    }
    if s.starts_with('-') {
        bail!("invalid duration {text:?}: durations cannot be negative");
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .with_context(|| {
                format!("invalid duration {text:?}: missing unit (ns, us, ms, s, m, h)")
            })?;
        let (num, after) = rest.split_at(num_len);
        let value: f64 = num
            .parse()
            .with_context(|| format!("invalid duration {text:?}"))?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => bail!("invalid duration {text:?}: unknown unit {unit:?} (ns, us, ms, s, m, h)"),
        };
        total += value * scale;
        rest = next;
    }
    if total > i64::MAX as f64 {
        bail!("invalid duration {text:?}: too long");
    }
    Ok(total.round() as i64)
}

/// One `--env-file`, as Docker reads it: one `KEY=value` per line (the
/// value taken literally, quotes included), `#` comments and blank lines
/// skipped, a bare `KEY` taken from our environment when set there.
pub(super) fn parse_env_file(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>> {
    let mut env = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line.trim_end(), None),
        };
        if key.is_empty() {
            bail!("line {}: no variable name in {raw:?}", n + 1);
        }
        if key.contains(char::is_whitespace) {
            bail!("line {}: variable '{key}' contains whitespaces", n + 1);
        }
        match value {
            Some(v) => env.push(format!("{key}={v}")),
            None => {
                if let Some(v) = lookup(key) {
                    env.push(format!("{key}={v}"));
                }
            }
        }
    }
    Ok(env)
}

/// `--env-file`s first, then `-e` (the engine keeps the last of a name);
/// `-e NAME` takes NAME's value from our environment, dropped if unset.
pub(super) fn environment(env: &[String], files: &[std::path::PathBuf]) -> Result<Vec<String>> {
    let lookup = |k: &str| std::env::var(k).ok();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading env file {}", file.display()))?;
        out.extend(
            parse_env_file(&text, lookup)
                .with_context(|| format!("in env file {}", file.display()))?,
        );
    }
    for e in env {
        if e.contains('=') {
            out.push(e.clone());
        } else if let Some(v) = lookup(e) {
            out.push(format!("{e}={v}"));
        }
    }
    Ok(out)
}

impl CreateArgs {
    /// The create request; `console_size` is the local terminal's
    /// `(rows, cols)` for a TTY, so the process starts at the right size.
    fn body(&self, auto_remove: bool, console_size: Option<(u16, u16)>) -> Result<Value> {
        let env = environment(&self.env, &self.env_file)?;
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
        if let Some((h, w)) = console_size {
            host["ConsoleSize"] = json!([h, w]);
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
        if let Some(sig) = &self.stop_signal {
            body["StopSignal"] = json!(sig);
        }
        if let Some(t) = self.stop_timeout {
            body["StopTimeout"] = json!(t);
        }
        if let Some(health) = self.healthcheck()? {
            body["Healthcheck"] = health;
        }
        self.net.apply(&mut body, self.network.as_deref())?;
        self.mounts.apply(&mut body)?;
        Ok(body)
    }
}

impl CreateArgs {
    /// Docker's `Healthcheck` object: `Test` ["CMD-SHELL", cmd] (or
    /// ["NONE"]), durations in nanoseconds; unset fields inherit the image's.
    fn healthcheck(&self) -> Result<Option<Value>> {
        let any_option = self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some();
        if self.no_healthcheck {
            if any_option {
                bail!("--no-healthcheck conflicts with --health-* options");
            }
            return Ok(Some(json!({"Test": ["NONE"]})));
        }
        if !any_option {
            return Ok(None);
        }
        let mut health = serde_json::Map::new();
        if let Some(cmd) = &self.health_cmd {
            health.insert("Test".into(), json!(["CMD-SHELL", cmd]));
        }
        let durations = [
            ("Interval", "--health-interval", &self.health_interval),
            ("Timeout", "--health-timeout", &self.health_timeout),
            (
                "StartPeriod",
                "--health-start-period",
                &self.health_start_period,
            ),
        ];
        for (key, flag, value) in durations {
            if let Some(text) = value {
                let nanos =
                    parse_duration(text).with_context(|| format!("invalid value for {flag}"))?;
                health.insert(key.into(), json!(nanos));
            }
        }
        if let Some(r) = self.health_retries {
            if r < 0 {
                bail!("--health-retries cannot be negative");
            }
            health.insert("Retries".into(), json!(r));
        }
        Ok(Some(Value::Object(health)))
    }
}

fn is_status(e: &anyhow::Error, status: StatusCode) -> bool {
    e.downcast_ref::<ApiError>()
        .is_some_and(|a| a.status == status)
}

/// Pulls `image`: progress on stderr, or nothing but errors with `quiet`.
async fn pull_image(client: &Client, image: &str, quiet: bool) -> Result<()> {
    if !quiet {
        return super::images::pull_quietly_to_stderr(client, image).await;
    }
    let (name, tag) = match image.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') && !image.contains('@') => (n, t),
        _ => (image, ""),
    };
    let mut pairs = vec![("fromImage", name)];
    if !tag.is_empty() {
        pairs.push(("tag", tag));
    }
    let response = client
        .call(Method::POST, &format!("/images/create{}", query(&pairs)))
        .await?;
    client::for_each_json_line(response, |message| {
        match message.get("error").and_then(Value::as_str) {
            Some(error) => bail!("{error}"),
            None => Ok(()),
        }
    })
    .await
}

/// Creates the container, pulling the image first if the engine lacks it.
async fn create_container(
    client: &Client,
    args: &CreateArgs,
    auto_remove: bool,
    console_size: Option<(u16, u16)>,
) -> Result<String> {
    let body = args.body(auto_remove, console_size)?;
    let path = match &args.name {
        Some(n) => format!("/containers/create{}", query(&[("name", n)])),
        None => "/containers/create".to_string(),
    };
    let pull = args.pull.as_str();
    if !matches!(pull, "missing" | "always" | "never") {
        bail!("invalid pull option {pull:?}: must be one of \"always\", \"missing\" or \"never\"");
    }
    if pull == "always" {
        pull_image(client, &args.image, args.quiet).await?;
    }
    let created: Value = match client.post_json(&path, Some(&body)).await {
        Ok(v) => v,
        Err(e) if pull == "missing" && is_status(&e, StatusCode::NOT_FOUND) => {
            if !args.quiet {
                eprintln!("Unable to find image '{}' locally", args.image);
            }
            pull_image(client, &args.image, args.quiet).await?;
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
    /// Proxy received signals to the process (without a TTY).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    sig_proxy: bool,
    /// Override the key sequence for detaching a container (default ctrl-p,ctrl-q).
    #[arg(long)]
    detach_keys: Option<String>,
    #[command(flatten)]
    create: CreateArgs,
}

/// `run`'s exit code when the container could not be created or started,
/// chosen from the engine's message as the docker CLI chooses it: 127 when
/// the command is missing, 126 when it cannot be executed, 125 otherwise.
fn run_failure_code(message: &str) -> u8 {
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
    {
        127
    } else if message.contains("permission denied") || message.contains("is a directory") {
        126
    } else {
        125
    }
}

pub async fn run(client: &Client, args: &RunArgs) -> Result<ExitCode> {
    let c = &args.create;
    let interactive = c.interactive && !args.detach;
    if c.tty && interactive && !terminal::stdin_is_terminal() {
        eprintln!("the input device is not a TTY");
        return Ok(ExitCode::from(1));
    }
    let size = if c.tty { terminal::size() } else { None };
    // Checked before anything is created.
    let detach_keys = match crate::parse_detach_keys(args.detach_keys.as_deref()) {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(ExitCode::from(125));
        }
    };
    let id = match create_container(client, c, args.rm, size).await {
        Ok(id) => id,
        Err(e) => {
            let message = format!("{e:#}");
            eprintln!("{message}");
            return Ok(ExitCode::from(run_failure_code(&message)));
        }
    };
    if args.detach {
        if let Err(e) = client
            .call(Method::POST, &format!("/containers/{id}/start"))
            .await
        {
            eprintln!("{e:#}");
            return Ok(ExitCode::from(run_failure_code(&format!("{e:#}"))));
        }
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let give_up = async |message: String, code: u8| {
        eprintln!("{message}");
        if args.rm {
            let _ = client
                .call(
                    Method::DELETE,
                    &format!("/containers/{id}{}", query(&[("force", "1")])),
                )
                .await;
        }
        Ok(ExitCode::from(code))
    };
    // Attach before start: the engine connects the clients registered by
    // then when the process starts, so not a byte of output is lost.
    let upgraded =
        match attach::open_container(client, &id, interactive, args.detach_keys.as_deref()).await {
            Ok(u) => u,
            Err(e) => return give_up(format!("{e:#}"), 125).await,
        };
    // Likewise the exit status: the engine answers the wait's headers at
    // once, so once they are in it cannot miss the exit.
    let condition = if args.rm { "removed" } else { "next-exit" };
    let wait_path = format!(
        "/containers/{id}/wait{}",
        query(&[("condition", condition)])
    );
    let waiting = match client.call(Method::POST, &wait_path).await {
        Ok(response) => tokio::spawn(client::read_json::<Value>(response)),
        Err(e) => return give_up(format!("{e:#}"), 125).await,
    };
    if let Err(e) = client
        .call(Method::POST, &format!("/containers/{id}/start"))
        .await
    {
        waiting.abort();
        let message = format!("{e:#}");
        let code = run_failure_code(&message);
        return give_up(message, code).await;
    }
    let resize = c
        .tty
        .then(|| attach::follow_resize(client, format!("/containers/{id}/resize")));
    let signals = if c.tty || !args.sig_proxy {
        None
    } else {
        attach::proxy_signals(client, &id)
    };
    let relayed = {
        let _raw = (c.tty && interactive).then(terminal::RawMode::enter);
        attach::relay(upgraded, c.tty, interactive, &detach_keys).await
    };
    for task in [resize, signals].into_iter().flatten() {
        task.abort();
    }
    match relayed {
        // As docker: detaching leaves the container running and is a success.
        Ok(attach::Relayed::Detached) => {
            waiting.abort();
            return Ok(ExitCode::SUCCESS);
        }
        Ok(attach::Relayed::Ended) => {}
        Err(e) => eprintln!("{e:#}"),
    }
    let status = waiting.await.context("waiting for the container")??;
    if let Some(message) = status["Error"]["Message"]
        .as_str()
        .filter(|m| !m.is_empty())
    {
        eprintln!("{message}");
    }
    Ok(attach::exit_code(
        status["StatusCode"].as_i64().unwrap_or(125),
    ))
}

pub async fn create(client: &Client, args: &CreateArgs) -> Result<()> {
    let size = if args.tty { terminal::size() } else { None };
    println!("{}", create_container(client, args, false, size).await?);
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
    /// Format output using a template ('{{json .}}', 'table {{.ID}}\t{{.Names}}').
    #[arg(long)]
    format: Option<String>,
    /// Show n last created containers (includes all states).
    #[arg(short = 'n', long)]
    last: Option<usize>,
    /// Show the latest created container (includes all states).
    #[arg(short, long)]
    latest: bool,
}

/// `ps --format table …` headers, by template field.
const PS_HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Status", "STATUS"),
    ("State", "STATE"),
    ("Ports", "PORTS"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
];

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
    // -n and -l look at every container, newest first (as docker).
    let limit = if args.latest { Some(1) } else { args.last };
    let all = args.all || limit.is_some();
    let mut pairs = vec![("all", if all { "1" } else { "0" })];
    if !args.filter.is_empty() {
        pairs.push(("filters", filters.as_str()));
    }
    let mut list: Vec<Value> = client
        .get_json(&format!("/containers/json{}", query(&pairs)))
        .await?;
    if let Some(n) = limit {
        list.sort_by_key(|c| std::cmp::Reverse(c["Created"].as_i64().unwrap_or(0)));
        list.truncate(n);
    }
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
                "Ports": super::network::format_ports(&c["Ports"]),
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
    if let Some(template) = args.format.as_deref().filter(|t| *t != "table") {
        print_formatted(template, &rows, PS_HEADERS);
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

/// `pause` (`unpause` with `resume`): freezes every process of each container.
pub async fn pause(client: &Client, args: &ContainersArgs, resume: bool) -> Result<()> {
    let verb = if resume { "unpause" } else { "pause" };
    each(&args.containers, async |c| {
        client
            .call(
                Method::POST,
                &format!("/containers/{}/{verb}", path_segment(c)),
            )
            .await
            .map(|_| ())
    })
    .await
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    container: String,
    new_name: String,
}

pub async fn rename(client: &Client, args: &RenameArgs) -> Result<()> {
    if args.new_name.trim().is_empty() {
        bail!("Error: Neither old nor new names may be empty");
    }
    client
        .call(
            Method::POST,
            &format!(
                "/containers/{}/rename{}",
                path_segment(&args.container),
                query(&[("name", &args.new_name)])
            ),
        )
        .await?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
    /// Provide filter values (until=, label=).
    #[arg(long)]
    filter: Vec<String>,
}

/// Asks on the terminal; anything but y/yes is no.
fn confirm(warning: &str) -> Result<bool> {
    print!("{warning}\nAre you sure you want to continue? [y/N] ");
    std::io::stdout().flush().context("writing the prompt")?;
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("reading the answer")?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// `container prune`: removes every stopped container.
pub async fn prune(client: &Client, args: &PruneArgs) -> Result<()> {
    if !args.force && !confirm("WARNING! This will remove all stopped containers.")? {
        return Ok(());
    }
    let filters = client::filters_json(&args.filter)?;
    let q = match &filters {
        Some(f) => query(&[("filters", f)]),
        None => String::new(),
    };
    let report: Value = client
        .post_json(&format!("/containers/prune{q}"), None)
        .await?;
    let deleted: Vec<&str> = report["ContainersDeleted"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !deleted.is_empty() {
        println!("Deleted Containers:");
        for id in &deleted {
            println!("{id}");
        }
        println!();
    }
    let space = report["SpaceReclaimed"].as_f64().unwrap_or(0.0);
    println!(
        "Total reclaimed space: {}",
        crate::format::human_size(space)
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
    fn go_durations() {
        assert_eq!(parse_duration("30s").expect("30s"), 30_000_000_000);
        assert_eq!(parse_duration("1m30s").expect("1m30s"), 90_000_000_000);
        assert_eq!(parse_duration("500ms").expect("500ms"), 500_000_000);
        assert_eq!(parse_duration("1.5h").expect("1.5h"), 5_400_000_000_000);
        assert_eq!(parse_duration("10us").expect("10us"), 10_000);
        assert_eq!(parse_duration("0").expect("0"), 0);
        assert!(parse_duration("10").is_err(), "a unit is required");
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5 years").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn env_files_like_docker() {
        let text = "# comment\n\nA=1\n  B=two words\nC=\"quoted\"\nFROM_ENV\nUNSET\nD=x=y\n";
        let lookup = |k: &str| (k == "FROM_ENV").then(|| "here".to_string());
        assert_eq!(
            parse_env_file(text, lookup).expect("valid"),
            [
                "A=1",
                "B=two words",
                "C=\"quoted\"",
                "FROM_ENV=here",
                "D=x=y"
            ]
        );
        let bad = parse_env_file("BAD KEY=1\n", |_| None).expect_err("whitespace");
        assert!(bad.to_string().contains("contains whitespaces"), "{bad}");
        assert!(parse_env_file("=1\n", |_| None).is_err());
    }

    fn create_args(argv: &[&str]) -> CreateArgs {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            create: CreateArgs,
        }
        let mut full = vec!["create"];
        full.extend_from_slice(argv);
        <Wrapper as clap::Parser>::try_parse_from(full)
            .expect("valid flags")
            .create
    }

    #[test]
    fn health_flags_make_dockers_healthcheck() {
        let args = create_args(&[
            "--health-cmd",
            "curl -f localhost",
            "--health-interval",
            "5s",
            "--health-timeout",
            "1s",
            "--health-retries",
            "3",
            "--health-start-period",
            "1m",
            "busybox",
        ]);
        let body = args.body(false, None).expect("body");
        assert_eq!(
            body["Healthcheck"],
            json!({
                "Test": ["CMD-SHELL", "curl -f localhost"],
                "Interval": 5_000_000_000i64,
                "Timeout": 1_000_000_000i64,
                "Retries": 3,
                "StartPeriod": 60_000_000_000i64,
            })
        );
        let none = create_args(&["--no-healthcheck", "busybox"]);
        assert_eq!(
            none.body(false, None).expect("body")["Healthcheck"],
            json!({"Test": ["NONE"]})
        );
        let both = create_args(&["--no-healthcheck", "--health-cmd", "x", "busybox"]);
        assert!(both.body(false, None).is_err());
        let bad = create_args(&["--health-interval", "soon", "busybox"]);
        let err = bad.body(false, None).expect_err("bad duration");
        assert!(format!("{err:#}").contains("--health-interval"), "{err:#}");
        assert!(
            create_args(&["busybox"]).body(false, None).expect("body")["Healthcheck"].is_null()
        );
    }

    #[test]
    fn create_flags_reach_the_body() {
        let args = create_args(&[
            "-e",
            "A=1",
            "-w",
            "/w",
            "-u",
            "1:2",
            "--entrypoint",
            "/bin/sh",
            "--stop-signal",
            "SIGINT",
            "--stop-timeout",
            "7",
            "--read-only",
            "--init",
            "-l",
            "k=v",
            "--hostname",
            "h",
            "--memory",
            "64m",
            "--cpus",
            "1.5",
            "--pids-limit",
            "10",
            "--cap-add",
            "NET_ADMIN",
            "--cap-drop",
            "ALL",
            "--restart",
            "on-failure:2",
            "-t",
            "busybox",
            "echo",
            "-n",
            "x",
        ]);
        let body = args.body(true, Some((30, 100))).expect("body");
        assert_eq!(body["Env"], json!(["A=1"]));
        assert_eq!(body["WorkingDir"], "/w");
        assert_eq!(body["User"], "1:2");
        assert_eq!(body["Entrypoint"], json!(["/bin/sh"]));
        assert_eq!(body["Cmd"], json!(["echo", "-n", "x"]));
        assert_eq!(body["StopSignal"], "SIGINT");
        assert_eq!(body["StopTimeout"], 7);
        assert_eq!(body["Labels"], json!({"k": "v"}));
        assert_eq!(body["Hostname"], "h");
        assert_eq!(body["Tty"], true);
        let host = &body["HostConfig"];
        assert_eq!(host["ReadonlyRootfs"], true);
        assert_eq!(host["Init"], true);
        assert_eq!(host["AutoRemove"], true);
        assert_eq!(host["Memory"], 64 << 20);
        assert_eq!(host["NanoCpus"], 1_500_000_000i64);
        assert_eq!(host["PidsLimit"], 10);
        assert_eq!(host["CapAdd"], json!(["NET_ADMIN"]));
        assert_eq!(host["CapDrop"], json!(["ALL"]));
        assert_eq!(
            host["RestartPolicy"],
            json!({"Name": "on-failure", "MaximumRetryCount": 2})
        );
        assert_eq!(host["ConsoleSize"], json!([30, 100]));
    }

    #[test]
    fn run_failures_map_to_docker_codes() {
        assert_eq!(
            run_failure_code("exec: \"x\": executable file not found in $PATH"),
            127
        );
        assert_eq!(
            run_failure_code("exec: \"/x\": stat /x: no such file or directory"),
            127
        );
        assert_eq!(run_failure_code("exec: \"/etc\": permission denied"), 126);
        assert_eq!(run_failure_code("exec: \"/etc\": is a directory"), 126);
        assert_eq!(run_failure_code("network foo not found"), 125);
        assert_eq!(run_failure_code("something else"), 125);
    }
}
