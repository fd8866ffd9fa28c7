//! start, kill, delete, pause, resume, update, stats, ps and wait.

use std::io::Write;
use std::os::fd::AsFd;

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

use super::{Container, EXEC_FIFO};
use crate::cgroups::Stats;
use crate::error::RuntimeError;
use crate::hooks::{self, HookState};
use crate::state::Status;

impl Container {
    fn require(&self, operation: &'static str, allowed: &[Status]) -> Result<(), RuntimeError> {
        if allowed.contains(&self.state.status) {
            Ok(())
        } else {
            Err(RuntimeError::WrongStatus {
                id: self.state.id.clone(),
                operation,
                status: self.state.status,
            })
        }
    }

    fn hook_state<'a>(&'a self, status: &'a str) -> HookState<'a> {
        HookState {
            oci_version: "1.2.0",
            id: &self.state.id,
            status,
            pid: (self.state.pid > 0).then_some(self.state.pid),
            bundle: &self.state.bundle,
            annotations: Some(&self.state.annotations),
        }
    }

    /// Lets the user process run, then runs poststart hooks.
    pub fn start(&mut self) -> Result<(), RuntimeError> {
        self.require("start", &[Status::Created])?;
        let fifo_path = self.dir.join(EXEC_FIFO);
        // Non-blocking: if the init died there is no reader and open fails
        // with ENXIO instead of hanging.
        let fifo = nix::fcntl::open(
            &fifo_path,
            OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|_| RuntimeError::InitGone {
            id: self.state.id.clone(),
            path: fifo_path.clone(),
        })?;
        nix::unistd::write(fifo.as_fd(), &[0u8]).map_err(RuntimeError::sys(format!(
            "writing {}",
            fifo_path.display()
        )))?;
        drop(fifo);
        std::fs::remove_file(&fifo_path).map_err(RuntimeError::io(format!(
            "removing {}",
            fifo_path.display()
        )))?;
        self.state.status = Status::Running;
        if let Some(hooks_cfg) = self.state.hooks.as_ref() {
            let poststart = hooks_cfg.poststart().as_deref().unwrap_or_default();
            if let Err(e) = hooks::run_all("poststart", poststart, &self.hook_state("running")) {
                // The OCI spec makes a failing poststart hook a warning.
                let _ = writeln!(std::io::stderr(), "berth-runc: warning: {e}");
            }
        }
        Ok(())
    }

    /// Sends `signal` to the init process, or to every process when `all`.
    pub fn kill(&self, signal: Signal, all: bool) -> Result<(), RuntimeError> {
        if all {
            self.cgroup()?.kill_all(signal)?;
            return Ok(());
        }
        self.require("kill", &[Status::Created, Status::Running, Status::Paused])?;
        kill(Pid::from_raw(self.state.pid), signal).map_err(RuntimeError::sys(format!(
            "sending {signal} to container \"{}\"",
            self.state.id
        )))?;
        if self.state.status == Status::Paused && matches!(signal, Signal::SIGKILL) {
            // A frozen process cannot die until it is thawed.
            let _ = self.cgroup()?.thaw();
        }
        Ok(())
    }

    /// Removes a stopped (or, with `force`, any) container: processes, cgroup,
    /// state; then runs poststop hooks.
    pub fn delete(self, force: bool) -> Result<(), RuntimeError> {
        if !force {
            self.require("delete", &[Status::Stopped])?;
        }
        let cgroup = self.cgroup()?;
        if self.state.status != Status::Stopped {
            cgroup.kill_all(Signal::SIGKILL)?;
            if self.state.status == Status::Paused {
                cgroup.thaw()?;
            }
        }
        cgroup.remove()?;
        std::fs::remove_dir_all(&self.dir)
            .map_err(RuntimeError::io(format!("removing {}", self.dir.display())))?;
        if let Some(hooks_cfg) = self.state.hooks.as_ref() {
            let poststop = hooks_cfg.poststop().as_deref().unwrap_or_default();
            if let Err(e) = hooks::run_all("poststop", poststop, &self.hook_state("stopped")) {
                let _ = writeln!(std::io::stderr(), "berth-runc: warning: {e}");
            }
        }
        Ok(())
    }

    pub fn pause(&mut self) -> Result<(), RuntimeError> {
        self.require("pause", &[Status::Running, Status::Created])?;
        self.cgroup()?.freeze()?;
        self.state.status = Status::Paused;
        Ok(())
    }

    pub fn resume(&mut self) -> Result<(), RuntimeError> {
        self.require("resume", &[Status::Paused])?;
        self.cgroup()?.thaw()?;
        self.refresh();
        Ok(())
    }

    /// Pids (host view) of every process in the container.
    pub fn processes(&self) -> Result<Vec<Pid>, RuntimeError> {
        if self.state.status == Status::Stopped {
            return Ok(Vec::new());
        }
        Ok(self.cgroup()?.pids()?)
    }

    pub fn update(&self, resources: &LinuxResources) -> Result<(), RuntimeError> {
        self.require(
            "update",
            &[Status::Created, Status::Running, Status::Paused],
        )?;
        Ok(self.cgroup()?.apply(resources)?)
    }

    pub fn stats(&self) -> Result<Stats, RuntimeError> {
        self.require(
            "get stats of",
            &[Status::Created, Status::Running, Status::Paused],
        )?;
        Ok(self.cgroup()?.stats()?)
    }

    /// Number of OOM kills recorded in the container's cgroup.
    pub fn oom_kill_count(&self) -> Result<u64, RuntimeError> {
        Ok(self.cgroup()?.oom_kill_count()?)
    }

    /// Waits for the init process to exit (the caller must be its parent or
    /// subreaper) and returns the exit code as a shell reports it (128+signal).
    pub fn wait(&self) -> Result<i32, RuntimeError> {
        wait_exit_code(Pid::from_raw(self.state.pid))
    }
}

/// Reaps `pid` and converts its status to a shell-style exit code.
pub(crate) fn wait_exit_code(pid: Pid) -> Result<i32, RuntimeError> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(RuntimeError::sys(format!("waiting for process {pid}"))(e)),
        }
    }
}
