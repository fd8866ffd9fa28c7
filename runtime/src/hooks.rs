//! OCI hooks: each runs with the container state as JSON on stdin, and is
//! killed when it outlives its timeout.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{kind} hook {path}: cannot start: {source}")]
    Spawn {
        kind: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{kind} hook {path}: {status}{stderr}")]
    Failed {
        kind: &'static str,
        path: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("{kind} hook {path}: timed out after {seconds}s and was killed")]
    TimedOut {
        kind: &'static str,
        path: PathBuf,
        seconds: i64,
    },
    #[error("{kind} hook {path}: invalid timeout {seconds} (must be > 0)")]
    BadTimeout {
        kind: &'static str,
        path: PathBuf,
        seconds: i64,
    },
    #[error("{kind} hook {path}: waiting for it: {source}")]
    Wait {
        kind: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The state document the OCI runtime spec hands to hooks on stdin.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookState<'a> {
    pub oci_version: &'a str,
    pub id: &'a str,
    pub status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub bundle: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<&'a std::collections::HashMap<String, String>>,
}

/// Runs `hooks` in order; the first failure stops the rest.
pub fn run_all(kind: &'static str, hooks: &[Hook], state: &HookState<'_>) -> Result<(), HookError> {
    if hooks.is_empty() {
        return Ok(());
    }
    // Serialising a struct of strings and integers cannot fail.
    let state_json = serde_json::to_vec(state).unwrap_or_default();
    for hook in hooks {
        run_one(kind, hook, &state_json)?;
    }
    Ok(())
}

fn run_one(kind: &'static str, hook: &Hook, state_json: &[u8]) -> Result<(), HookError> {
    let path = hook.path().clone();
    if let Some(seconds) = hook.timeout() {
        if seconds <= 0 {
            return Err(HookError::BadTimeout {
                kind,
                path,
                seconds,
            });
        }
    }
    let mut command = Command::new(&path);
    let args = hook.args().as_deref().unwrap_or_default();
    if let Some((arg0, rest)) = args.split_first() {
        command.arg0(arg0).args(rest);
    }
    command.env_clear();
    for var in hook.env().as_deref().unwrap_or_default() {
        if let Some((key, value)) = var.split_once('=') {
            command.env(key, value);
        }
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| HookError::Spawn {
        kind,
        path: path.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin (or exits at once) is allowed:
        // the write must fail with EPIPE, not kill the runtime with SIGPIPE.
        let _sigpipe = SigpipeIgnored::new();
        let _ = stdin.write_all(state_json);
    }
    let deadline = hook
        .timeout()
        .map(|s| Instant::now() + Duration::from_secs(s.unsigned_abs()));
    if let Some(deadline) = deadline {
        if !wait_until(child.id(), deadline).map_err(|source| HookError::Wait {
            kind,
            path: path.clone(),
            source,
        })? {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::TimedOut {
                kind,
                path,
                seconds: hook.timeout().unwrap_or_default(),
            });
        }
    }
    let output = child.wait_with_output().map_err(|source| HookError::Wait {
        kind,
        path: path.clone(),
        source,
    })?;
    if output.status.success() {
        return Ok(());
    }
    let status = match (output.status.code(), output.status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "failed".to_string(),
    };
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    let stderr = if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    };
    Err(HookError::Failed {
        kind,
        path,
        status,
        stderr,
    })
}

/// Ignores SIGPIPE for its lifetime, restoring the previous disposition.
struct SigpipeIgnored {
    previous: Option<nix::sys::signal::SigAction>,
}

impl SigpipeIgnored {
    fn new() -> Self {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        // SAFETY: installing SIG_IGN runs no code in signal context.
        let previous = unsafe { sigaction(Signal::SIGPIPE, &ignore) }.ok();
        Self { previous }
    }
}

impl Drop for SigpipeIgnored {
    fn drop(&mut self) {
        if let Some(previous) = &self.previous {
            // SAFETY: restores the disposition saved in `new`.
            let _ =
                unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGPIPE, previous) };
        }
    }
}

/// Waits (without reaping) until `pid` exits or `deadline` passes, using a
/// pidfd so no polling loop or sleep is needed. Returns whether it exited.
fn wait_until(pid: u32, deadline: Instant) -> std::io::Result<bool> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout_ms = i32::try_from(remaining.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd, count 1.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if n > 0 {
            return Ok(true);
        }
        if n == 0 {
            return Ok(false);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: &str) -> Hook {
        serde_json::from_str(json).expect("hook parses")
    }

    fn state(dir: &Path) -> HookState<'_> {
        HookState {
            oci_version: "1.2.0",
            id: "hook-test",
            status: "created",
            pid: Some(42),
            bundle: dir,
            annotations: None,
        }
    }

    #[test]
    fn hook_reads_state_on_stdin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let h = hook(&format!(
            r#"{{"path":"/bin/sh","args":["sh","-c","cat > {}"]}}"#,
            out.display()
        ));
        run_all("prestart", &[h], &state(dir.path())).expect("hook runs");
        let written = std::fs::read_to_string(&out).expect("hook wrote");
        let v: serde_json::Value = serde_json::from_str(&written).expect("json");
        assert_eq!(v["id"], "hook-test");
        assert_eq!(v["pid"], 42);
        assert_eq!(v["ociVersion"], "1.2.0");
    }

    #[test]
    fn failing_hook_names_path_and_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = hook(r#"{"path":"/bin/sh","args":["sh","-c","echo nope >&2; exit 3"]}"#);
        let err = run_all("createRuntime", &[h], &state(dir.path())).expect_err("fails");
        let msg = err.to_string();
        assert!(msg.contains("createRuntime hook /bin/sh"), "{msg}");
        assert!(msg.contains("status 3"), "{msg}");
        assert!(msg.contains("nope"), "{msg}");
    }

    #[test]
    fn hook_timeout_kills() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = hook(r#"{"path":"/bin/sh","args":["sh","-c","exec sleep 30"],"timeout":1}"#);
        let started = Instant::now();
        let err = run_all("poststart", &[h], &state(dir.path())).expect_err("times out");
        assert!(matches!(err, HookError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn missing_hook_binary_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = hook(r#"{"path":"/nonexistent/hook"}"#);
        let err = run_all("prestart", &[h], &state(dir.path())).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/hook"), "{err}");
    }
}
