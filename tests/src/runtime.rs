//! Finding and driving the OCI runtime under test through its runc-compatible command line.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Environment variable naming the runtime binary to test (path, or name in `PATH`).
pub const RUNTIME_ENV: &str = "BERTH_TEST_RUNTIME";

/// How long any single runtime command may take before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The runtime binary under test.
///
/// `BERTH_TEST_RUNTIME` wins. Otherwise the workspace's own `berth-runc` is looked for in
/// `target/<profile>/`, preferring the profile the test executable was built in (it lives in
/// `target/<profile>/deps/`), then `release`, then `debug`. Panics with a message saying how to
/// build it when none is found.
pub fn runtime_binary() -> PathBuf {
    if let Some(v) = std::env::var_os(RUNTIME_ENV).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(&v);
        if p.components().count() > 1 {
            return p;
        }
        return find_in_path(&v).unwrap_or_else(|| {
            panic!(
                "{RUNTIME_ENV}={} is not a path and is not found in PATH",
                p.display()
            )
        });
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut candidates = Vec::new();
    // target/<profile>/deps/<test> -> target/<profile>
    if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
        candidates.push(profile_dir.join("berth-runc"));
        if let Some(target) = profile_dir.parent() {
            for profile in ["release", "debug"] {
                let p = target.join(profile).join("berth-runc");
                if !candidates.contains(&p) {
                    candidates.push(p);
                }
            }
        }
    }
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return found.clone();
    }
    panic!(
        "the runtime under test, berth-runc, was not found (looked at {}); build it with \
         `cargo build -p berth-runtime --bin berth-runc` (add --release for a release test run), \
         or test another runtime with {RUNTIME_ENV}=/usr/sbin/runc",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn find_in_path(name: &OsStr) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A short human name of the runtime under test ("runc", "crun", "berth-runc").
pub fn runtime_name() -> String {
    runtime_binary()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What one runtime invocation did.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// The full command line, for messages.
    pub command: String,
    /// Exit code, `None` when killed by a signal.
    pub code: Option<i32>,
    /// Signal that killed the process, if any.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Files that received stdout/stderr. A container started by `create` or `run -d` without
    /// a terminal inherits them, so its output can be read here later.
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with the whole output unless the command exited 0.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert!(self.success(), "command failed: {self}");
        self
    }

    /// Panics unless the command failed (nonzero exit).
    #[track_caller]
    pub fn failed(&self) -> &Self {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "command was expected to fail with a nonzero exit code: {self}"
        );
        self
    }

    /// stdout and stderr together, lower-cased, for matching error messages.
    pub fn all_lower(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr).to_lowercase()
    }

    /// Re-reads the stdout file (it may have grown since the command exited).
    pub fn stdout_now(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Re-reads the stderr file.
    pub fn stderr_now(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Parses stdout as JSON, panicking with the output when it is not.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

impl fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            match (self.code, self.signal) {
                (Some(c), _) => format!("code {c}"),
                (None, Some(s)) => format!("signal {s}"),
                _ => "unknown status".into(),
            },
            self.stdout,
            self.stderr
        )
    }
}

static OUTPUT_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Runs `cmd` with stdin from /dev/null and stdout/stderr into files under `out_dir` (files,
/// not pipes: a container that inherits them must not keep us waiting for EOF). Fails the test
/// if it runs longer than `timeout`.
#[track_caller]
pub fn run_command(cmd: Command, out_dir: &Path, timeout: Duration) -> CmdOutput {
    try_run_command(cmd, out_dir, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run_command`] that reports a failure to start or a timeout as an error instead of
/// panicking (for use in `Drop`).
pub fn try_run_command(
    mut cmd: Command,
    out_dir: &Path,
    timeout: Duration,
) -> Result<CmdOutput, String> {
    fs::create_dir_all(out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;
    let n = OUTPUT_COUNTER.fetch_add(1, Ordering::Relaxed);
    let stdout_path = out_dir.join(format!("{n}.stdout"));
    let stderr_path = out_dir.join(format!("{n}.stderr"));
    let command = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = File::create(&stdout_path).map_err(|e| format!("create stdout file: {e}"))?;
    let err = File::create(&stderr_path).map_err(|e| format!("create stderr file: {e}"))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{command}`: {e}"))?;
    match wait_child(&mut child, timeout) {
        Some(status) => Ok(output_from(command, status, stdout_path, stderr_path)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "`{command}` did not finish within {timeout:?}; stdout: {} stderr: {}",
                fs::read_to_string(&stdout_path).unwrap_or_default(),
                fs::read_to_string(&stderr_path).unwrap_or_default()
            ))
        }
    }
}

fn output_from(command: String, status: ExitStatus, out: PathBuf, err: PathBuf) -> CmdOutput {
    use std::os::unix::process::ExitStatusExt;
    CmdOutput {
        command,
        code: status.code(),
        signal: status.signal(),
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
        stdout_path: out,
        stderr_path: err,
    }
}

/// Waits for a child at most `timeout`; `None` when it is still running.
pub fn wait_child(child: &mut std::process::Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The runtime binary plus the global flags every invocation of one test gets.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub bin: PathBuf,
    /// `--root`: the runtime's state directory, private to the test.
    pub root: PathBuf,
    /// Where command outputs are stored.
    pub out_dir: PathBuf,
    /// Command prefix, e.g. `nsenter -t PID -m` to run inside another mount namespace.
    pub prefix: Vec<OsString>,
    pub timeout: Duration,
}

impl Runtime {
    pub fn new(root: PathBuf, out_dir: PathBuf) -> Self {
        Runtime {
            bin: runtime_binary(),
            root,
            out_dir,
            prefix: Vec::new(),
            timeout: COMMAND_TIMEOUT,
        }
    }

    /// A `Command` for the runtime with `--root` set, not yet run.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.arg("--root").arg(&self.root).args(args);
        cmd
    }

    /// Runs the runtime with `args` (after `--root`) and returns what it did.
    #[track_caller]
    pub fn run<I, S>(&self, args: I) -> CmdOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_command(self.command(args), &self.out_dir, self.timeout)
    }
}

impl Runtime {
    /// Like [`Runtime::run`], but never panics (for cleanup).
    pub fn try_run<I, S>(&self, args: I, timeout: Duration) -> Result<CmdOutput, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        try_run_command(self.command(args), &self.out_dir, timeout)
    }
}
