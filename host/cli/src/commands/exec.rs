//! `exec`: a new process in a running container, over `POST
//! /containers/{id}/exec` and the upgraded `POST /exec/{id}/start`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use super::attach;
use super::containers::environment;
use crate::client::{path_segment, Client};
use crate::terminal;

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Detached mode: run command in the background.
    #[arg(short, long)]
    detach: bool,
    /// Keep STDIN open even if not attached.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    tty: bool,
    /// Set environment variables.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read in a file of environment variables.
    #[arg(long, value_name = "FILE")]
    env_file: Vec<std::path::PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Username or UID (format: "<name|uid>[:<group|gid>]").
    #[arg(short, long)]
    user: Option<String>,
    /// Give extended privileges to the command.
    #[arg(long)]
    privileged: bool,
    /// Override the key sequence for detaching a container (default ctrl-p,ctrl-q).
    #[arg(long)]
    detach_keys: Option<String>,
    container: String,
    /// The command and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

impl ExecArgs {
    fn body(&self, console_size: Option<(u16, u16)>) -> Result<Value> {
        let attach = !self.detach;
        let mut body = json!({
            "AttachStdin": attach && self.interactive,
            "AttachStdout": attach,
            "AttachStderr": attach,
            "Tty": self.tty,
            "Cmd": self.command,
            "Env": environment(&self.env, &self.env_file)?,
            "Privileged": self.privileged,
        });
        if let Some(w) = &self.workdir {
            body["WorkingDir"] = json!(w);
        }
        if let Some(u) = &self.user {
            body["User"] = json!(u);
        }
        if let Some((h, w)) = console_size {
            body["ConsoleSize"] = json!([h, w]);
        }
        if let Some(keys) = self.detach_keys.as_deref().filter(|k| !k.is_empty()) {
            body["DetachKeys"] = json!(keys);
        }
        Ok(body)
    }
}

/// Runs the command; our exit code is its exit code (126/127 when the
/// engine could not start it, as the engine records them).
pub async fn exec(client: &Client, args: &ExecArgs) -> Result<ExitCode> {
    let interactive = args.interactive && !args.detach;
    if args.tty && interactive && !terminal::stdin_is_terminal() {
        bail!("the input device is not a TTY");
    }
    let size = if args.tty { terminal::size() } else { None };
    let detach_keys = crate::parse_detach_keys(args.detach_keys.as_deref())?;
    let created: Value = client
        .post_json(
            &format!("/containers/{}/exec", path_segment(&args.container)),
            Some(&args.body(size)?),
        )
        .await?;
    let exec_id = created["Id"]
        .as_str()
        .context("the engine did not return an exec id")?
        .to_string();
    let start = json!({"Detach": args.detach, "Tty": args.tty});
    let start_path = format!("/exec/{exec_id}/start");
    if args.detach {
        client.post_json::<Value>(&start_path, Some(&start)).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let upgraded = client.upgrade(&start_path, Some(&start)).await?;
    let resize = args
        .tty
        .then(|| attach::follow_resize(client, format!("/exec/{exec_id}/resize")));
    let relayed = {
        let _raw = (args.tty && interactive).then(terminal::RawMode::enter);
        attach::relay(upgraded, args.tty, interactive, &detach_keys).await
    };
    if let Some(task) = resize {
        task.abort();
    }
    if relayed? == attach::Relayed::Detached {
        return Ok(attach::detached_exit());
    }
    exit_code_of(client, &exec_id).await
}

/// The exec's exit code once the engine has reaped it. The output stream
/// ends when the process closes its stdio, which can be a moment before
/// the engine records the exit, so ask until it is no longer running.
async fn exit_code_of(client: &Client, exec_id: &str) -> Result<ExitCode> {
    let mut delay = Duration::from_millis(5);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let info: Value = client.get_json(&format!("/exec/{exec_id}/json")).await?;
        if info["Running"].as_bool() != Some(true) {
            if let Some(code) = info["ExitCode"].as_i64() {
                return Ok(attach::exit_code(code));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the engine did not report the exit code of exec {exec_id}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}
