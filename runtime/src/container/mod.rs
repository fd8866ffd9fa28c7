//! Container lifecycle. [`Runtime`] is a state root (runc's `--root`); each
//! operation on a [`Container`] lives in a file of its own.

mod create;
mod exec;
mod init;
mod lifecycle;

use std::path::{Path, PathBuf};

use nix::unistd::Pid;

use crate::cgroups::CgroupManager;
use crate::error::RuntimeError;
use crate::state::{ContainerState, Status};

pub use exec::ExecOutcome;

/// Where the host's cgroup hierarchies are mounted.
pub(crate) const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The spec a container was created from, kept in its state directory.
pub(crate) const CONFIG_COPY: &str = "config.json";
/// The fifo a created container's init waits on until `start`.
pub(crate) const EXEC_FIFO: &str = "exec.fifo";
/// Compiled seccomp filters, in the root (not a valid container id).
pub(crate) const SECCOMP_CACHE: &str = ".seccomp";

/// Options of `create` and `run`.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub bundle: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    /// Extra fds (3..3+N) passed on to the container process.
    pub preserve_fds: u32,
}

/// Options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    /// Return right after the process started instead of waiting for it.
    pub detach: bool,
    pub preserve_fds: u32,
}

/// A runtime state root: one directory per container.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
    systemd_cgroup: bool,
}

/// A container known to a [`Runtime`].
#[derive(Debug)]
pub struct Container {
    state: ContainerState,
    dir: PathBuf,
}

/// Container ids become directory and cgroup names: keep them boring.
pub fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let mut chars = id.chars();
    let ok = id.len() <= 1024
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidId(id.to_string()))
    }
}

impl Runtime {
    pub fn new(root: impl Into<PathBuf>, systemd_cgroup: bool) -> Self {
        Self {
            root: root.into(),
            systemd_cgroup,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn systemd_cgroup(&self) -> bool {
        self.systemd_cgroup
    }

    /// Loads a container by id, with its status refreshed from the kernel.
    pub fn load(&self, id: &str) -> Result<Container, RuntimeError> {
        validate_id(id)?;
        let dir = self.root.join(id);
        let state = ContainerState::load(&dir, id)?;
        let mut container = Container { state, dir };
        container.refresh();
        Ok(container)
    }

    /// All containers under the root, sorted by id. Directories without a
    /// readable state (a create that was killed half-way) are skipped.
    pub fn list(&self) -> Result<Vec<Container>, RuntimeError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RuntimeError::io(format!("listing {}", self.root.display()))(e)),
        };
        let mut containers: Vec<Container> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|id| self.load(&id).ok())
            .collect();
        containers.sort_by(|a, b| a.id().cmp(b.id()));
        Ok(containers)
    }
}

impl Container {
    pub fn id(&self) -> &str {
        &self.state.id
    }

    pub fn state(&self) -> &ContainerState {
        &self.state
    }

    pub fn status(&self) -> Status {
        self.state.status
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The spec the container was created from (not the bundle's current
    /// config.json, which may have changed since).
    pub fn spec(&self) -> Result<oci_spec::runtime::Spec, RuntimeError> {
        Ok(crate::spec::read_config(&self.dir.join(CONFIG_COPY))?)
    }

    pub(crate) fn cgroup(&self) -> Result<CgroupManager, RuntimeError> {
        Ok(CgroupManager::new(
            Path::new(CGROUP_ROOT),
            &self.state.cgroup_path,
        )?)
    }

    /// Whether the recorded init process is still ours and not a zombie.
    fn init_alive(&self) -> bool {
        if self.state.pid <= 0 {
            return false;
        }
        match read_stat(self.state.pid) {
            Some((state, start)) => {
                state != 'Z'
                    && state != 'X'
                    && (self.state.pid_start_time == 0 || start == self.state.pid_start_time)
            }
            None => false,
        }
    }

    /// Derives the status from the kernel: the init's liveness, the exec
    /// fifo (present until `start`) and the freezer.
    fn refresh(&mut self) {
        if self.state.status == Status::Stopped {
            return;
        }
        self.state.status = if !self.init_alive() {
            Status::Stopped
        } else if self.dir.join(EXEC_FIFO).exists() {
            Status::Created
        } else if self
            .cgroup()
            .and_then(|c| Ok(c.freezer_state()?))
            .is_ok_and(|s| s == crate::cgroups::FreezerState::Frozen)
        {
            Status::Paused
        } else {
            Status::Running
        };
    }

    /// The init's pid, if it still runs.
    pub fn pid(&self) -> Option<Pid> {
        (self.state.status != Status::Stopped).then(|| Pid::from_raw(self.state.pid))
    }
}

/// Field 3 (state) and field 22 (start time) of `/proc/<pid>/stat`.
fn read_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Start time of a process, to tell it from a later process with a reused pid.
pub(crate) fn process_start_time(pid: i32) -> Option<u64> {
    read_stat(pid).map(|(_, start)| start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc-1.2_3").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("../x").is_err());
        assert!(validate_id("-x").is_err());
        assert!(validate_id("a/b").is_err());
        assert!(validate_id(&"a".repeat(1025)).is_err());
    }

    #[test]
    fn stat_of_self() {
        let pid = std::process::id() as i32;
        let (state, start) = read_stat(pid).expect("own stat");
        assert!(state != 'Z' && state != 'X', "{state}");
        assert!(start > 0);
    }
}
