//! One test's world: a unique container id, a private state root, a bundle, a cgroup path,
//! and cleanup in `Drop` that runs even when the test panics.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::bundle::Bundle;
use crate::leaks;
use crate::poll::{try_wait_until, wait_until};
use crate::runtime::{CmdOutput, Runtime};
use crate::spec::Spec;
use crate::CGROUP_PARENT;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// How long a test waits for a container to reach a state.
pub const STATE_TIMEOUT: Duration = Duration::from_secs(20);

/// A unique id `<name>-<pid>-<counter>`.
pub fn unique_id(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The cgroupsPath the tests give container `id`.
pub fn cgroup_path(id: &str) -> String {
    format!("/{CGROUP_PARENT}/{id}")
}

/// One test's containers, runtime state root and bundle.
pub struct TestCase {
    /// The main container id.
    pub id: String,
    pub rt: Runtime,
    pub bundle: Bundle,
    /// Every id this test may have created, cleaned up on drop.
    ids: RefCell<Vec<String>>,
    /// Set last so it is removed after the containers are gone.
    dir: TempDir,
}

impl TestCase {
    /// A new test world; `name` should be the test's name (short, `[a-z0-9-]`).
    pub fn new(name: &str) -> Self {
        let id = unique_id(name);
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-{id}-"))
            .tempdir()
            .expect("create test dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod test dir");
        let root = dir.path().join("state");
        fs::create_dir_all(&root).expect("create state root");
        let rt = Runtime::new(root, dir.path().join("out"));
        let mut bundle = Bundle::create(&dir.path().join("bundle"));
        bundle.spec.cgroups_path(&cgroup_path(&id));
        TestCase {
            ids: RefCell::new(vec![id.clone()]),
            id,
            rt,
            bundle,
            dir,
        }
    }

    /// The test's temporary directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The spec the next `create`/`run` writes to config.json.
    pub fn spec(&mut self) -> &mut Spec {
        &mut self.bundle.spec
    }

    /// Registers another id for cleanup and returns it (for tests with several containers).
    pub fn another_id(&self, suffix: &str) -> String {
        let id = format!("{}-{suffix}", self.id);
        self.ids.borrow_mut().push(id.clone());
        id
    }

    /// Runs the runtime with these args (after the global `--root`).
    #[track_caller]
    pub fn rt<I, S>(&self, args: I) -> CmdOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.rt.run(args)
    }

    /// Writes config.json and runs `create --bundle B ID`.
    #[track_caller]
    pub fn create(&self) -> CmdOutput {
        self.bundle.write_config();
        self.rt(["create", "--bundle"]
            .map(OsStr::new)
            .into_iter()
            .chain([self.bundle.dir.as_os_str(), OsStr::new(&self.id)]))
    }

    /// Writes config.json and runs `run --bundle B ID` (foreground: the runtime's exit code is
    /// the container's).
    #[track_caller]
    pub fn run(&self) -> CmdOutput {
        self.bundle.write_config();
        self.rt([
            OsStr::new("run"),
            OsStr::new("--bundle"),
            self.bundle.dir.as_os_str(),
            OsStr::new(&self.id),
        ])
    }

    /// Sets the args to `sh -c SCRIPT`, runs it in the foreground, and returns the output.
    #[track_caller]
    pub fn run_sh(&mut self, script: &str) -> CmdOutput {
        self.spec().shell(script);
        self.run()
    }

    /// Like [`TestCase::run_sh`] but asserts exit 0 and returns stdout.
    #[track_caller]
    pub fn sh_ok(&mut self, script: &str) -> String {
        let out = self.run_sh(script);
        out.ok();
        out.stdout
    }

    #[track_caller]
    pub fn start(&self) -> CmdOutput {
        self.rt(["start", &self.id])
    }

    /// `state ID` parsed, or `None` when the runtime says it fails.
    pub fn state_of(&self, id: &str) -> Option<Value> {
        let out = self.rt(["state", id]);
        out.success().then(|| out.json())
    }

    /// The main container's state; panics when `state` fails.
    #[track_caller]
    pub fn state(&self) -> Value {
        let out = self.rt(["state", &self.id]);
        out.ok();
        out.json()
    }

    /// The main container's status string.
    #[track_caller]
    pub fn status(&self) -> String {
        self.state()["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The main container's init pid (host view) from `state`.
    #[track_caller]
    pub fn pid(&self) -> i32 {
        let s = self.state();
        s["pid"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or_else(|| panic!("no pid in state: {s}"))
    }

    /// Polls `state` until the status is `want`.
    #[track_caller]
    pub fn wait_status(&self, want: &str) {
        let mut last = String::new();
        let found = try_wait_until(STATE_TIMEOUT, || {
            last = self
                .state_of(&self.id)
                .map(|s| s["status"].as_str().unwrap_or("").to_owned())?;
            (last == want).then_some(())
        });
        assert!(
            found.is_some(),
            "container {} never became {want:?}; last status {last:?}",
            self.id
        );
    }

    /// create + start; panics when either fails.
    #[track_caller]
    pub fn create_start(&self) -> CmdOutput {
        let created = self.create();
        created.ok();
        self.start().ok();
        created
    }

    /// create + start + wait until stopped, returning the create output whose files hold
    /// the container's stdout/stderr.
    #[track_caller]
    pub fn create_start_wait(&self) -> CmdOutput {
        let created = self.create_start();
        self.wait_status("stopped");
        created
    }

    /// `kill ID SIGNAL`.
    #[track_caller]
    pub fn kill(&self, signal: &str) -> CmdOutput {
        self.rt(["kill", &self.id, signal])
    }

    /// `delete ID`.
    #[track_caller]
    pub fn delete(&self) -> CmdOutput {
        self.rt(["delete", &self.id])
    }

    /// The cgroup directories of `id` that exist now.
    pub fn cgroups_of(&self, id: &str) -> Vec<PathBuf> {
        leaks::existing_cgroups(id)
    }

    /// Asserts that nothing of container `id` remains: `state` fails, no file in the state root
    /// names it, no cgroup dir in any hierarchy, no process in its cgroup, no host mount that
    /// mentions the test dir or the id.
    #[track_caller]
    pub fn assert_no_leftovers(&self, id: &str) {
        let state = self.rt(["state", id]);
        assert!(!state.success(), "state of {id} still succeeds: {state}");
        let files = leaks::files_naming(&self.rt.root, id);
        assert!(files.is_empty(), "state files left for {id}: {files:?}");
        // Cgroup removal may trail the runtime's exit by a moment only if the kernel is still
        // reaping; allow a short bounded wait.
        let cgroups = try_wait_until(Duration::from_secs(2), || {
            let c = leaks::existing_cgroups(id);
            c.is_empty().then_some(())
        });
        assert!(
            cgroups.is_some(),
            "cgroup dirs left for {id}: {:?}",
            leaks::existing_cgroups(id)
        );
        let procs = leaks::processes_in_cgroup(id);
        assert!(
            procs.is_empty(),
            "processes left in the cgroup of {id}: {procs:?}"
        );
        let dir = self.dir().to_string_lossy().into_owned();
        let mounts: Vec<String> = leaks::mounts_mentioning(&dir)
            .into_iter()
            .chain(leaks::mounts_mentioning(id))
            .collect();
        assert!(mounts.is_empty(), "host mounts left for {id}: {mounts:#?}");
    }

    /// Removes one container whatever state it is in (best effort, never panics).
    pub fn cleanup_id(&self, id: &str) {
        let t = Duration::from_secs(20);
        if let Ok(st) = self.rt.try_run(["state", id], t) {
            if st.success() && st.stdout.contains("\"paused\"") {
                let _ = self.rt.try_run(["resume", id], t);
            }
            if st.success() {
                let _ = self.rt.try_run(["kill", id, "KILL"], t);
            }
        }
        let _ = self.rt.try_run(["delete", "--force", id], t);
        leaks::force_remove_cgroups(&leaks::existing_cgroups(id));
    }
}

impl Drop for TestCase {
    fn drop(&mut self) {
        let ids = self.ids.borrow().clone();
        for id in &ids {
            self.cleanup_id(id);
        }
        // Unmount anything a broken runtime left on the host under the test dir, deepest
        // first, so removing the dir cannot wander into a mounted filesystem.
        let dir = self.dir().to_string_lossy().into_owned();
        let mut mounts: Vec<String> = leaks::mounts_mentioning(&dir)
            .iter()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| m.starts_with(&dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Skips (returns early from) a test that needs root when not running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

/// Waits until `path` exists and has non-empty content, returning it.
#[track_caller]
pub fn wait_for_file(path: &Path) -> String {
    wait_until(
        &format!("{} to be written", path.display()),
        STATE_TIMEOUT,
        || fs::read_to_string(path).ok().filter(|s| !s.is_empty()),
    )
}
