//! `docker exec`: a process started in a running container by the exec
//! helper (`berth-monitor exec`), with pipes for its stdio, or with a TTY
//! whose pty master the runtime hands to the daemon over a console socket.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_runtime::console::ConsoleReceiver;
use serde_json::Value;

use super::{lock, spec, store, ContainerError, ContainerService, ExecConfig, ExecInspect, Status};

type Result<T> = std::result::Result<T, ContainerError>;

/// How long the runtime gets to hand over an exec's pty master.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct ExecRecord {
    container_id: String,
    config: ExecConfig,
    running: bool,
    exit_code: Option<i32>,
    pid: i32,
    pid_file: PathBuf,
    /// The pty master of a TTY exec, kept for resizes.
    console: Option<Arc<OwnedFd>>,
}

/// A running exec: the process's stdio and its exit code. With a TTY,
/// `stdout` is the terminal (raw, stdout and stderr merged), `stdin` writes
/// to it, and `stderr` carries only the helper's own errors.
pub struct ExecSession {
    pub tty: bool,
    /// The detach keys given at create ([`ExecConfig::detach_keys`]).
    pub detach_keys: String,
    pub stdin: Option<Box<dyn Write + Send>>,
    pub stdout: Option<Box<dyn Read + Send>>,
    pub stderr: Option<Box<dyn Read + Send>>,
    child: Child,
    exec_id: String,
    service: ContainerService,
}

impl ExecSession {
    /// Waits for the process; returns its exit code (128+signal if killed;
    /// 126/127 when it could not be started).
    pub fn wait(mut self) -> Result<i32> {
        drop(self.stdin.take());
        let status = self
            .child
            .wait()
            .map_err(ContainerError::io("waiting for the exec helper"))?;
        let code = status.code().unwrap_or(137);
        self.service.finish_exec(&self.exec_id, code);
        Ok(code)
    }
}

impl ContainerService {
    pub fn exec_create(&self, reference: &str, config: ExecConfig) -> Result<String> {
        let (id, _, record) = self.load(reference)?;
        if !matches!(record.state.status, Status::Running) {
            return Err(if record.state.status == Status::Paused {
                ContainerError::Paused(id)
            } else {
                ContainerError::NotRunning(id)
            });
        }
        if config.cmd.is_empty() {
            return Err(ContainerError::InvalidParameter(
                "No exec command specified".into(),
            ));
        }
        let exec_id = store::random_id()?;
        let pid_file = self.dir(&id).join(format!("exec-{exec_id}.pid"));
        self.emit(
            &record,
            &format!("exec_create: {}", config.cmd.join(" ")),
            &[("execID", exec_id.clone())],
        );
        lock(&self.inner.execs).insert(
            exec_id.clone(),
            ExecRecord {
                container_id: id,
                config,
                running: false,
                exit_code: None,
                pid: 0,
                pid_file,
                console: None,
            },
        );
        Ok(exec_id)
    }

    /// Starts an exec; the process's stdio are the session's streams.
    pub fn exec_start(&self, exec_id: &str) -> Result<ExecSession> {
        let (container_id, config, pid_file) = {
            let mut execs = lock(&self.inner.execs);
            let e = execs
                .get_mut(exec_id)
                .ok_or_else(|| ContainerError::NoSuchExec(exec_id.to_string()))?;
            if e.running || e.exit_code.is_some() {
                return Err(ContainerError::Conflict(format!(
                    "exec {exec_id} has already been started"
                )));
            }
            e.running = true;
            (e.container_id.clone(), e.config.clone(), e.pid_file.clone())
        };
        self.emit_for(
            &container_id,
            &format!("exec_start: {}", config.cmd.join(" ")),
            &[("execID", exec_id.to_string())],
        );
        let result = self.exec_spawn(exec_id, &container_id, &config, &pid_file);
        if result.is_err() {
            if let Some(e) = lock(&self.inner.execs).get_mut(exec_id) {
                e.running = false;
            }
        }
        result
    }

    /// Sets the terminal size of a TTY exec.
    pub fn exec_resize(&self, exec_id: &str, height: u16, width: u16) -> Result<()> {
        let execs = lock(&self.inner.execs);
        let e = execs
            .get(exec_id)
            .ok_or_else(|| ContainerError::NoSuchExec(exec_id.to_string()))?;
        match &e.console {
            Some(master) => set_window_size(master, height, width),
            None if !e.config.tty => Err(ContainerError::Conflict(format!(
                "exec {exec_id} has no terminal to resize"
            ))),
            // Not started yet: the size given at create applies.
            None => Ok(()),
        }
    }

    fn exec_spawn(
        &self,
        exec_id: &str,
        id: &str,
        config: &ExecConfig,
        pid_file: &Path,
    ) -> Result<ExecSession> {
        let dir = self.dir(id);
        let record = store::read_record(&dir)?;
        if record.state.status != Status::Running {
            return Err(ContainerError::NotRunning(id.to_string()));
        }
        let process = exec_process(&dir, &record, config)?;
        let process_path = dir.join(format!("exec-{exec_id}.json"));
        let data = serde_json::to_vec(&process)
            .map_err(|e| ContainerError::InvalidParameter(e.to_string()))?;
        // Read once by the exec helper, right away: nothing to sync.
        store::write_file(&process_path, &data, store::Durability::Volatile)?;

        // With a TTY the runtime sends the pty master to this socket.
        let console_name = format!("exec-{}.console", &exec_id[..12]);
        let console_path = dir.join(&console_name);
        let receiver = if config.tty {
            let _ = fs::remove_file(&console_path);
            let bound = store::with_short_path(&dir, &console_name, ConsoleReceiver::bind)
                .map_err(ContainerError::io("binding the exec console socket"))?
                .map_err(|e| ContainerError::ExecFailed(format!("exec terminal: {e}")))?;
            Some(bound)
        } else {
            None
        };
        let mut command = self.monitor_command();
        command
            .arg("exec")
            .arg(&self.inner.cfg.runtime_root)
            .arg(id)
            .arg(&process_path)
            .arg(pid_file);
        if receiver.is_some() {
            command.arg(&console_path);
        }
        let spawned = command
            .stdin(if config.attach_stdin && !config.tty {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(ContainerError::io("starting the exec helper"));
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = fs::remove_file(&console_path);
                return Err(e);
            }
        };
        let master = match &receiver {
            Some(receiver) => {
                let received = receive_console(receiver, &mut child);
                let _ = fs::remove_file(&console_path);
                match received {
                    Ok(m) => Some(Arc::new(m)),
                    Err(e) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        drop(receiver);
        let mut session = ExecSession {
            tty: config.tty,
            detach_keys: config.detach_keys.clone(),
            stdin: child
                .stdin
                .take()
                .map(|s| Box::new(s) as Box<dyn Write + Send>),
            stdout: child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            stderr: child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child,
            exec_id: exec_id.to_string(),
            service: self.clone(),
        };
        let Some(master) = master else {
            return Ok(session);
        };
        let open = |what: &str| {
            master
                .try_clone()
                .map(File::from)
                .map_err(ContainerError::io(format!("duplicating the exec {what}")))
        };
        // The helper's stdout has nothing to say with a TTY.
        session.stdout = Some(Box::new(open("terminal")?));
        if config.attach_stdin {
            session.stdin = Some(Box::new(open("terminal")?));
        }
        if let Some(e) = lock(&self.inner.execs).get_mut(exec_id) {
            e.console = Some(master);
        }
        Ok(session)
    }

    pub(super) fn finish_exec(&self, exec_id: &str, code: i32) {
        let mut execs = lock(&self.inner.execs);
        if let Some(e) = execs.get_mut(exec_id) {
            self.emit_for(
                &e.container_id,
                "exec_die",
                &[
                    ("execID", exec_id.to_string()),
                    ("exitCode", code.to_string()),
                ],
            );
            e.running = false;
            e.exit_code = Some(code);
            e.console = None;
            e.pid = fs::read_to_string(&e.pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            let _ = fs::remove_file(&e.pid_file);
            let dir = self.dir(&e.container_id);
            let _ = fs::remove_file(dir.join(format!("exec-{exec_id}.json")));
        }
    }

    /// Drops a finished exec's record (internal probes, which nobody
    /// inspects).
    pub(super) fn exec_forget(&self, exec_id: &str) {
        lock(&self.inner.execs).remove(exec_id);
    }

    pub fn exec_inspect(&self, exec_id: &str) -> Result<ExecInspect> {
        let execs = lock(&self.inner.execs);
        let e = execs
            .get(exec_id)
            .ok_or_else(|| ContainerError::NoSuchExec(exec_id.to_string()))?;
        let pid = if e.running {
            fs::read_to_string(&e.pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        } else {
            e.pid
        };
        Ok(ExecInspect {
            id: exec_id.to_string(),
            container_id: e.container_id.clone(),
            running: e.running,
            exit_code: e.exit_code,
            pid,
        })
    }
}

/// The OCI process of an exec: the container's, with the exec's command,
/// environment, directory, user, privileges and terminal.
fn exec_process(dir: &Path, record: &super::ContainerRecord, config: &ExecConfig) -> Result<Value> {
    let spec_path = dir.join("config.json");
    let spec: Value = serde_json::from_slice(
        &fs::read(&spec_path).map_err(ContainerError::io("reading config.json"))?,
    )
    .map_err(|source| ContainerError::CorruptState {
        path: spec_path,
        source,
    })?;
    let mut process = spec.get("process").cloned().unwrap_or(Value::Null);
    let mut env = record.resolved.env.clone();
    for e in &config.env {
        if let Some((k, _)) = e.split_once('=') {
            env.retain(|x| x.split('=').next() != Some(k));
            env.push(e.clone());
        }
    }
    process["args"] = serde_json::json!(config.cmd);
    process["env"] = serde_json::json!(env);
    process["terminal"] = Value::Bool(config.tty);
    match config.console_size {
        Some((height, width)) if config.tty && height > 0 && width > 0 => {
            process["consoleSize"] = serde_json::json!({"height": height, "width": width});
        }
        _ => {
            if let Some(p) = process.as_object_mut() {
                p.remove("consoleSize");
            }
        }
    }
    if let Some(w) = config.working_dir.as_deref().filter(|w| !w.is_empty()) {
        process["cwd"] = Value::String(w.to_string());
    }
    if let Some(u) = config.user.as_deref().filter(|u| !u.is_empty()) {
        let (uid, gid, extra) = spec::resolve_user(&dir.join("rootfs"), u)?;
        process["user"] = serde_json::json!({ "uid": uid, "gid": gid, "additionalGids": extra });
    }
    if config.privileged {
        let mut all = record.config.clone();
        all.host_config.privileged = true;
        let caps = spec::capabilities(&all)?;
        process["capabilities"] =
            serde_json::json!({ "bounding": caps, "effective": caps, "permitted": caps });
    }
    Ok(process)
}

/// Waits for the runtime (in the helper) to send the pty master; fails with
/// the helper's own words if it exits first.
fn receive_console(receiver: &ConsoleReceiver, helper: &mut Child) -> Result<OwnedFd> {
    let deadline = Instant::now() + CONSOLE_TIMEOUT;
    loop {
        let mut pfd = libc::pollfd {
            fd: receiver.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd that lives for the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 50) };
        if ready > 0 {
            return receiver
                .receive_master()
                .map_err(|e| ContainerError::ExecFailed(format!("exec terminal: {e}")));
        }
        if let Ok(Some(status)) = helper.try_wait() {
            let mut message = String::new();
            if let Some(mut err) = helper.stderr.take() {
                let _ = err.read_to_string(&mut message);
            }
            let message = message.trim();
            return Err(ContainerError::ExecFailed(if message.is_empty() {
                format!("the exec helper exited with {status} before opening a terminal")
            } else {
                message.to_string()
            }));
        }
        if Instant::now() >= deadline {
            return Err(ContainerError::ExecFailed(
                "the runtime did not open the exec's terminal in time".into(),
            ));
        }
    }
}

fn set_window_size(master: &OwnedFd, height: u16, width: u16) -> Result<()> {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize that lives for the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(ContainerError::io("resizing the terminal")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
