//! `attach`, and the stream relay that `run` (without -d), `attach` and
//! `exec` share: our stdin into the upgraded connection (half-closed at
//! EOF), its output to our stdout/stderr (raw for a TTY, Docker's 8-byte
//! frames otherwise), the local terminal in raw mode and its size followed,
//! and the detach keys that end a TTY session with the process left running.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use hyper::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{self, path_segment, query, Client, Upgraded};
use berth_detach_keys::DetachScanner;

use crate::terminal;

/// Splits Docker's multiplexed stream: each frame is an 8-byte header
/// (stream 0 stdin, 1 stdout, 2 stderr; 3 zero bytes; big-endian length)
/// then the payload. Frames may arrive split across reads.
#[derive(Debug, Default)]
pub struct Demux {
    pending: Vec<u8>,
}

impl Demux {
    /// Feeds bytes; calls `out(stream, payload)` for each complete frame.
    pub fn push(
        &mut self,
        data: &[u8],
        mut out: impl FnMut(u8, &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.pending.extend_from_slice(data);
        let mut at = 0;
        while self.pending.len() - at >= 8 {
            let h = &self.pending[at..at + 8];
            let size = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
            if self.pending.len() - at < 8 + size {
                break;
            }
            let stream = h[0];
            out(stream, &self.pending[at + 8..at + 8 + size])?;
            at += 8 + size;
        }
        self.pending.drain(..at);
        Ok(())
    }
}

fn write_out(stream: u8, payload: &[u8]) -> Result<()> {
    if stream == 2 {
        let mut err = std::io::stderr().lock();
        err.write_all(payload).context("writing to stderr")?;
        err.flush().context("writing to stderr")?;
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(payload).context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    }
    Ok(())
}

/// How a relayed session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    /// The engine ended the output stream (the process ended).
    Ended,
    /// The user typed the detach keys: the process runs on.
    Detached,
}

/// Relays until the engine ends the output stream. With `send_stdin`, our
/// stdin goes in and its EOF half-closes the connection (the process sees
/// EOF on its stdin); without it the write side stays open, since a
/// half-close would read as "stdin closed". With a TTY, typing
/// `detach_keys` ends the session instead, as in docker.
pub async fn relay(
    upgraded: Upgraded,
    tty: bool,
    send_stdin: bool,
    detach_keys: &[u8],
) -> Result<Relayed> {
    let multiplexed = upgraded.multiplexed.unwrap_or(!tty);
    let (mut read, mut write) = tokio::io::split(upgraded.io);
    let detached = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut idle_write = None;
    let input = if send_stdin {
        let mut chunks = terminal::stdin_chunks();
        let mut scanner = tty.then(|| DetachScanner::new(detach_keys.to_vec()));
        let detached = std::sync::Arc::clone(&detached);
        Some(tokio::spawn(async move {
            while let Some(chunk) = chunks.recv().await {
                let (data, detach) = match scanner.as_mut().map(|s| s.scan(&chunk)) {
                    Some(scanned) => (scanned.forward, scanned.detach),
                    None => (chunk.to_vec(), false),
                };
                if !data.is_empty() && write.write_all(&data).await.is_err() {
                    return;
                }
                let _ = write.flush().await;
                if detach {
                    detached.notify_one();
                    return;
                }
            }
            if let Some(held) = scanner.as_mut().map(DetachScanner::finish) {
                let _ = write.write_all(&held).await;
            }
            let _ = write.shutdown().await;
        }))
    } else {
        idle_write = Some(write);
        None
    };
    let mut demux = Demux::default();
    let mut buf = vec![0u8; 32 * 1024];
    let result = loop {
        let n = tokio::select! {
            n = read.read(&mut buf) => n,
            () = detached.notified() => break Ok(Relayed::Detached),
        };
        let n = match n {
            Ok(0) => break Ok(Relayed::Ended),
            Ok(n) => n,
            // The engine closing a half-closed connection abruptly is an end too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break Ok(Relayed::Ended),
            Err(e) => break Err(anyhow::Error::from(e).context("reading the container's output")),
        };
        let written = if multiplexed {
            demux.push(&buf[..n], write_out)
        } else {
            write_out(1, &buf[..n])
        };
        if let Err(e) = written {
            break Err(e);
        }
    };
    if let Some(input) = input {
        input.abort();
    }
    drop(idle_write);
    result
}

/// `POST /containers/{id}/attach` upgraded: registered with the engine once
/// this returns, so a `start` after it loses no output.
pub async fn open_container(
    client: &Client,
    id: &str,
    stdin: bool,
    detach_keys: Option<&str>,
) -> Result<Upgraded> {
    let mut params = vec![
        ("stream", "1"),
        ("stdin", if stdin { "1" } else { "0" }),
        ("stdout", "1"),
        ("stderr", "1"),
    ];
    if let Some(keys) = detach_keys.filter(|k| !k.is_empty()) {
        params.push(("detachKeys", keys));
    }
    let q = query(&params);
    client
        .upgrade(&format!("/containers/{}/attach{q}", path_segment(id)), None)
        .await
}

/// Follows the local terminal's size into the container's (`/containers/
/// {id}/resize`) or an exec's (`/exec/{id}/resize`) terminal.
pub fn follow_resize(client: &Client, resize_path: String) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    terminal::follow_size(move |h, w| {
        let client = client.clone();
        let path = format!(
            "{resize_path}{}",
            query(&[("h", &h.to_string()), ("w", &w.to_string())])
        );
        async move {
            // A resize racing the process's exit fails harmlessly.
            let _ = client.call(Method::POST, &path).await;
        }
    })
}

/// Forwards the signals a user sends us (Ctrl-C without a TTY, `kill`) to
/// the container, as docker's --sig-proxy does.
pub fn proxy_signals(client: &Client, id: &str) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let kinds = [
            (SignalKind::interrupt(), "SIGINT"),
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::hangup(), "SIGHUP"),
            (SignalKind::quit(), "SIGQUIT"),
            (SignalKind::user_defined1(), "SIGUSR1"),
            (SignalKind::user_defined2(), "SIGUSR2"),
        ];
        let mut streams = Vec::new();
        for (kind, name) in kinds {
            if let Ok(s) = signal(kind) {
                streams.push((s, name));
            }
        }
        let client = client.clone();
        let path = format!("/containers/{}/kill", path_segment(id));
        Some(tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(8);
            for (mut s, name) in streams {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while s.recv().await.is_some() {
                        if tx.send(name).await.is_err() {
                            return;
                        }
                    }
                });
            }
            drop(tx);
            while let Some(name) = rx.recv().await {
                let _ = client
                    .call(
                        Method::POST,
                        &format!("{path}{}", query(&[("signal", name)])),
                    )
                    .await;
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = (client, id);
        None
    }
}

/// After the user detached `attach` or `exec`: docker reports it as the
/// error "read escape sequence" (exit status 1); the process runs on.
pub fn detached_exit() -> ExitCode {
    eprintln!("read escape sequence");
    ExitCode::from(1)
}

/// The exit code of a finished container or exec as our own (docker
/// reports the low 8 bits).
pub fn exit_code(code: i64) -> ExitCode {
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(125))
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Do not attach STDIN.
    #[arg(long)]
    no_stdin: bool,
    /// Proxy all received signals to the process.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    sig_proxy: bool,
    /// Override the key sequence for detaching a container (default ctrl-p,ctrl-q).
    #[arg(long)]
    detach_keys: Option<String>,
    container: String,
}

/// Attaches to a running container until it exits; returns its exit code.
pub async fn attach(client: &Client, args: &AttachArgs) -> Result<ExitCode> {
    let info: Value = client
        .get_json(&format!(
            "/containers/{}/json",
            path_segment(&args.container)
        ))
        .await?;
    if info["State"]["Running"].as_bool() != Some(true) {
        bail!("You cannot attach to a stopped container, start it first");
    }
    if info["State"]["Paused"].as_bool() == Some(true) {
        bail!("You cannot attach to a paused container, unpause it first");
    }
    let id = info["Id"]
        .as_str()
        .context("the engine's inspect answer has no Id")?
        .to_string();
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let stdin = !args.no_stdin && info["Config"]["OpenStdin"].as_bool().unwrap_or(false);
    if tty && stdin && !terminal::stdin_is_terminal() {
        bail!("the input device is not a TTY");
    }
    let keys = crate::parse_detach_keys(args.detach_keys.as_deref())?;
    let upgraded = open_container(client, &id, stdin, args.detach_keys.as_deref()).await?;
    let resize = tty.then(|| follow_resize(client, format!("/containers/{id}/resize")));
    let signals = if args.sig_proxy && !tty {
        proxy_signals(client, &id)
    } else {
        None
    };
    let relayed = {
        let _raw = (tty && stdin).then(terminal::RawMode::enter);
        relay(upgraded, tty, stdin, &keys).await
    };
    for task in [resize, signals].into_iter().flatten() {
        task.abort();
    }
    if relayed? == Relayed::Detached {
        return Ok(detached_exit());
    }
    // The stream ended with the process: its exit code is ours.
    let response = client
        .call(
            Method::POST,
            &format!(
                "/containers/{}/wait{}",
                path_segment(&id),
                query(&[("condition", "not-running")])
            ),
        )
        .await?;
    let status: Value = client::read_json(response).await?;
    Ok(exit_code(status["StatusCode"].as_i64().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![stream, 0, 0, 0];
        f.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn demux_handles_split_frames() {
        let mut bytes = frame(1, b"hello ");
        bytes.extend(frame(2, b"oops"));
        bytes.extend(frame(1, b""));
        bytes.extend(frame(1, b"world"));
        let mut got: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut demux = Demux::default();
        // One byte at a time: every boundary split is exercised.
        for b in &bytes {
            demux
                .push(std::slice::from_ref(b), |s, p| {
                    got.push((s, p.to_vec()));
                    Ok(())
                })
                .expect("push");
        }
        assert_eq!(
            got,
            vec![
                (1, b"hello ".to_vec()),
                (2, b"oops".to_vec()),
                (1, Vec::new()),
                (1, b"world".to_vec())
            ]
        );
        assert!(demux.pending.is_empty());
    }

    #[test]
    fn exit_codes_wrap_like_docker() {
        assert_eq!(exit_code(3), ExitCode::from(3));
        assert_eq!(exit_code(256 + 7), ExitCode::from(7));
    }
}
