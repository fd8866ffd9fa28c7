//! login and logout.

use std::io::BufRead;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

use crate::client::Client;

#[derive(Debug, Args)]
pub struct LoginArgs {
    #[arg(short, long)]
    username: Option<String>,
    /// Password (prefer --password-stdin).
    #[arg(short, long)]
    password: Option<String>,
    /// Take the password from stdin.
    #[arg(long)]
    password_stdin: bool,
    /// Registry server (default: Docker Hub).
    server: Option<String>,
}

pub async fn login(client: &Client, args: &LoginArgs) -> Result<()> {
    let server = args
        .server
        .clone()
        .unwrap_or_else(|| "https://index.docker.io/v1/".to_string());
    let Some(username) = args.username.clone() else {
        bail!("Username is required (-u)");
    };
    let password = match (&args.password, args.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(p), false) => p.clone(),
        (None, true) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => bail!("Password is required (-p or --password-stdin)"),
    };
    let body = serde_json::json!({
        "username": username,
        "password": password,
        "serveraddress": server,
    });
    let reply: Value = client.post_json("/auth", Some(&body)).await?;
    println!("{}", reply["Status"].as_str().unwrap_or("Login Succeeded"));
    Ok(())
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    server: Option<String>,
}

/// Removes the stored credentials from the Docker config file the engine reads.
pub async fn logout(args: &LogoutArgs) -> Result<()> {
    let server = args
        .server
        .clone()
        .unwrap_or_else(|| "https://index.docker.io/v1/".to_string());
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".docker")))
        .context("cannot locate the Docker config directory (HOME unset)")?;
    let path = dir.join("config.json");
    let Ok(bytes) = std::fs::read(&path) else {
        println!("Not logged in to {server}");
        return Ok(());
    };
    let mut config: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let removed = config
        .get_mut("auths")
        .and_then(Value::as_object_mut)
        .and_then(|auths| auths.remove(&server))
        .is_some();
    if !removed {
        println!("Not logged in to {server}");
        return Ok(());
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&config).context("formatting")?,
    )
    .and_then(|()| std::fs::rename(&tmp, &path))
    .with_context(|| format!("writing {}", path.display()))?;
    println!("Removing login credentials for {server}");
    Ok(())
}
