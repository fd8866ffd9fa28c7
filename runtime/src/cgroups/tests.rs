//! Tests against the real kernel (run as root). Each test has its own cgroup
//! (`/berth-test-cg-<name>-<pid>`) removed by a guard even when it fails.
//!
//! The host is "hybrid": v1 tests use `/sys/fs/cgroup` directly; v2 tests
//! run in a thread with a private mount namespace where cgroup2 alone is
//! mounted on `/sys/fs/cgroup` (only hugetlb is available in v2 there).

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxNetworkBuilder, LinuxPidsBuilder,
    LinuxResources, LinuxResourcesBuilder,
};

use super::*;

const ROOT: &str = "/sys/fs/cgroup";

fn test_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/berth-test-cg-{name}-{}", std::process::id()))
}

/// Removes the test's cgroup even when the test panics.
struct Guard(CgroupManager);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.remove();
    }
}

fn manager(root: &Path, name: &str) -> Guard {
    let m = CgroupManager::new(root, &test_path(name)).expect("manager for a test cgroup");
    Guard(m)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// What a forked child does once the test releases it.
#[derive(Clone, Copy)]
enum Action {
    Pause,
    /// Touch this many bytes of fresh anonymous memory, then exit 0.
    Alloc(usize),
    /// Touch this many bytes, then pause.
    AllocThenPause(usize),
    /// Open the path read-only: exit 0, or with the errno.
    Open(&'static CStr),
}

/// A forked child waiting on a pipe until [`TestChild::release`]; killed
/// and reaped on drop. Between fork and exit it only makes raw syscalls.
struct TestChild {
    pid: Pid,
    go: Option<OwnedFd>,
    reaped: bool,
}

fn touch(bytes: usize) -> i32 {
    // SAFETY: an anonymous private mapping with no address hint; the result
    // is checked against MAP_FAILED before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return 99;
    }
    let base = p.cast::<u8>();
    for off in (0..bytes).step_by(4096) {
        // SAFETY: `off < bytes`, inside the mapping created above.
        unsafe { base.add(off).write_volatile(1) };
    }
    0
}

fn pause_forever() -> ! {
    loop {
        // SAFETY: pause(2) has no preconditions.
        unsafe { libc::pause() };
    }
}

fn act(action: Action) -> i32 {
    match action {
        Action::Pause => pause_forever(),
        Action::Alloc(n) => touch(n),
        Action::AllocThenPause(n) => {
            touch(n);
            pause_forever()
        }
        Action::Open(path) => {
            // SAFETY: `path` is a NUL-terminated static string.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                nix::errno::Errno::last_raw()
            } else {
                // SAFETY: `fd` was just opened here and is not used again.
                unsafe { libc::close(fd) };
                0
            }
        }
    }
}

impl TestChild {
    fn spawn(action: Action) -> TestChild {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        // SAFETY: the child only makes async-signal-safe raw syscalls
        // (read, close, mmap, open, pause, _exit) and never returns into
        // the test harness.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                drop(w);
                let mut b = [0u8; 1];
                // SAFETY: reading one byte into a local buffer.
                let n = unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
                let code = if n == 1 { act(action) } else { 100 };
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => TestChild {
                pid: child,
                go: Some(w),
                reaped: false,
            },
        }
    }

    fn release(&mut self) {
        if let Some(w) = self.go.take() {
            nix::unistd::write(&w, b"g").expect("release child");
        }
    }

    fn wait(&mut self) -> WaitStatus {
        let status = waitpid(self.pid, None).expect("waitpid");
        self.reaped = true;
        status
    }

    /// Release the child and return its exit code (panics on a signal).
    fn run(mut self) -> i32 {
        self.release();
        match self.wait() {
            WaitStatus::Exited(_, code) => code,
            other => panic!("child ended with {other:?}"),
        }
    }
}

impl Drop for TestChild {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

fn resources(json: serde_json::Value) -> LinuxResources {
    serde_json::from_value(json).expect("valid LinuxResources JSON")
}

fn deny_all_allow(major: i64, minor: i64) -> Vec<LinuxDeviceCgroup> {
    vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .expect("builds"),
        LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(major)
            .minor(minor)
            .access("rwm")
            .build()
            .expect("builds"),
    ]
}

// ---------------------------------------------------------------- v1 ----

fn host_is_v1() -> bool {
    detect_mode(Path::new(ROOT)).ok() == Some(CgroupMode::V1)
}

#[test]
fn detect_mode_on_host() {
    let mode = detect_mode(Path::new(ROOT)).expect("detect");
    let fs = nix::sys::statfs::statfs(ROOT).expect("statfs");
    let expect = if fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        CgroupMode::V2
    } else {
        CgroupMode::V1
    };
    assert_eq!(mode, expect);
    assert!(matches!(
        detect_mode(Path::new("/proc")),
        Err(CgroupError::UnknownLayout { .. })
    ));
}

#[test]
fn v1_lifecycle_limits_pids_freeze_stats_kill() {
    if !host_is_v1() {
        return;
    }
    let g = manager(Path::new(ROOT), "v1-life");
    let m = &g.0;
    assert_eq!(m.mode(), CgroupMode::V1);
    assert!(!m.exists());
    m.create().expect("create");
    assert!(m.exists());
    for dir in m.paths() {
        assert!(dir.is_dir(), "{} created", dir.display());
    }
    let cpuset = m.path_in("cpuset").expect("cpuset mounted");
    assert!(
        !read(&cpuset.join("cpuset.cpus")).is_empty(),
        "cpus copied down"
    );
    assert!(
        !read(&cpuset.join("cpuset.mems")).is_empty(),
        "mems copied down"
    );

    m.apply(&resources(serde_json::json!({
        "memory": {"limit": 64 << 20, "reservation": 32 << 20},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000},
        "pids": {"limit": 10},
    })))
    .expect("apply");
    let mem = m.path_in("memory").expect("memory mounted");
    assert_eq!(
        read(&mem.join("memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        read(&mem.join("memory.soft_limit_in_bytes")),
        (32u64 << 20).to_string()
    );
    let cpu = m.path_in("cpu").expect("cpu mounted");
    assert_eq!(read(&cpu.join("cpu.shares")), "512");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
    let pids_dir = m.path_in("pids").expect("pids mounted");
    assert_eq!(read(&pids_dir.join("pids.max")), "10");

    let mut child = TestChild::spawn(Action::AllocThenPause(4 << 20));
    m.add_task(child.pid).expect("add_task");
    child.release();
    let own = read(Path::new(&format!("/proc/{}/cgroup", child.pid)));
    let rel = m.relative_path().to_string_lossy().into_owned();
    assert!(
        own.lines()
            .any(|l| l.contains(":memory:") && l.ends_with(&rel)),
        "child's memory cgroup: {own}"
    );
    assert_eq!(m.pids().expect("pids"), vec![child.pid]);

    m.freeze().expect("freeze");
    assert_eq!(m.freezer_state().expect("state"), FreezerState::Frozen);
    let freezer = m.path_in("freezer").expect("freezer mounted");
    assert_eq!(read(&freezer.join("freezer.state")), "FROZEN");
    m.thaw().expect("thaw");
    assert_eq!(m.freezer_state().expect("state"), FreezerState::Thawed);
    assert_eq!(read(&freezer.join("freezer.state")), "THAWED");

    // The child touches 4 MiB once released; wait (bounded) until it shows.
    let mut stats = m.stats().expect("stats");
    for _ in 0..200 {
        if stats
            .memory
            .as_ref()
            .is_some_and(|s| s.usage.usage >= 4 << 20)
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        stats = m.stats().expect("stats");
    }
    let memory = stats.memory.as_ref().expect("memory stats");
    assert!(
        memory.usage.usage >= 4 << 20,
        "usage {}",
        memory.usage.usage
    );
    assert!(memory.usage.max >= memory.usage.usage);
    assert_eq!(memory.usage.limit, 64 << 20);
    assert!(memory.raw.contains_key("rss"), "raw memory.stat");
    let cpu_stats = stats.cpu.as_ref().expect("cpu stats");
    assert!(cpu_stats.usage.total > 0, "cpu time used by the child");
    assert_eq!(cpu_stats.usage.percpu.len(), num_cpus());
    let pids = stats.pids.as_ref().expect("pids stats");
    assert_eq!((pids.current, pids.limit), (1, 10));
    assert!(stats.blkio.is_some());
    let json = serde_json::to_value(&stats).expect("serialises");
    assert_eq!(json["memory"]["usage"]["limit"], 64u64 << 20);
    assert_eq!(json["pids"]["current"], 1);
    assert!(json["cpu"]["usage"]["total"]
        .as_u64()
        .is_some_and(|t| t > 0));

    m.kill_all(Signal::SIGKILL).expect("kill_all");
    assert_eq!(
        child.wait(),
        WaitStatus::Signaled(child.pid, Signal::SIGKILL, false)
    );
    m.remove().expect("remove");
    for dir in m.paths() {
        assert!(!dir.exists(), "{} removed", dir.display());
    }
    assert!(!m.exists());
    m.remove().expect("remove is idempotent");
}

fn num_cpus() -> usize {
    read(Path::new("/sys/fs/cgroup/cpuacct/cpuacct.usage_percpu"))
        .split_whitespace()
        .count()
}

#[test]
fn v1_oom_kill_is_counted() {
    if !host_is_v1() {
        return;
    }
    let g = manager(Path::new(ROOT), "v1-oom");
    let m = &g.0;
    m.create().expect("create");
    m.apply(&resources(serde_json::json!({
        "memory": {"limit": 16 << 20, "swap": 16 << 20},
    })))
    .expect("apply");
    let mem = m.path_in("memory").expect("memory mounted");
    assert_eq!(
        read(&mem.join("memory.memsw.limit_in_bytes")),
        (16u64 << 20).to_string()
    );
    assert_eq!(m.oom_kill_count().expect("oom count"), 0);

    let mut child = TestChild::spawn(Action::Alloc(64 << 20));
    m.add_task(child.pid).expect("add_task");
    child.release();
    assert_eq!(
        child.wait(),
        WaitStatus::Signaled(child.pid, Signal::SIGKILL, false)
    );
    assert!(m.oom_kill_count().expect("oom count") >= 1);
    // The peak reached the limit (failcnt is not kept by every kernel).
    let memory = m.stats().expect("stats").memory.expect("memory stats");
    assert_eq!(memory.usage.max, 16 << 20, "{memory:?}");
    assert_eq!(memory.usage.limit, 16 << 20);
}

#[test]
fn v1_memory_limits_can_be_raised_and_lowered() {
    if !host_is_v1() {
        return;
    }
    let g = manager(Path::new(ROOT), "v1-update");
    let m = &g.0;
    m.create().expect("create");
    let mem = m.path_in("memory").expect("memory mounted").to_path_buf();
    let set = |limit: i64, swap: i64| {
        m.apply(&resources(
            serde_json::json!({"memory": {"limit": limit, "swap": swap}}),
        ))
        .expect("apply memory");
        (
            read(&mem.join("memory.limit_in_bytes")),
            read(&mem.join("memory.memsw.limit_in_bytes")),
        )
    };
    let mb = |n: u64| (n << 20).to_string();
    assert_eq!(set(16 << 20, 32 << 20), (mb(16), mb(32)));
    // Raising needs memsw first, lowering needs the limit first.
    assert_eq!(set(64 << 20, 128 << 20), (mb(64), mb(128)));
    assert_eq!(set(8 << 20, 8 << 20), (mb(8), mb(8)));
}

#[test]
fn v1_device_rules_deny_dev_null() {
    if !host_is_v1() {
        return;
    }
    let g = manager(Path::new(ROOT), "v1-devices");
    let m = &g.0;
    m.create().expect("create");
    let mut r = LinuxResources::default();
    r.set_devices(Some(deny_all_allow(1, 5)));
    m.apply(&r).expect("apply devices");
    let list = read(
        &m.path_in("devices")
            .expect("devices mounted")
            .join("devices.list"),
    );
    assert_eq!(list, "c 1:5 rwm");

    let null = TestChild::spawn(Action::Open(c"/dev/null"));
    m.add_task(null.pid).expect("add_task");
    assert_eq!(null.run(), libc::EPERM, "/dev/null is denied");
    let zero = TestChild::spawn(Action::Open(c"/dev/zero"));
    m.add_task(zero.pid).expect("add_task");
    assert_eq!(zero.run(), 0, "/dev/zero is allowed");
}

#[test]
fn v1_remove_kills_remaining_processes_and_subcgroups() {
    if !host_is_v1() {
        return;
    }
    let g = manager(Path::new(ROOT), "v1-remove");
    let m = &g.0;
    m.create().expect("create");
    // A nested cgroup the container might have made itself.
    let pids_dir = m.path_in("pids").expect("pids mounted").to_path_buf();
    std::fs::create_dir(pids_dir.join("inner")).expect("mkdir inner");
    let mut child = TestChild::spawn(Action::Pause);
    m.add_task(child.pid).expect("add_task");
    std::fs::write(pids_dir.join("inner/cgroup.procs"), child.pid.to_string()).expect("move inner");
    assert_eq!(
        m.pids().expect("pids"),
        vec![child.pid],
        "descendants are listed"
    );
    m.remove().expect("remove");
    assert_eq!(
        child.wait(),
        WaitStatus::Signaled(child.pid, Signal::SIGKILL, false)
    );
    assert!(!m.exists());
}

#[test]
fn v1_unavailable_and_invalid_settings_are_errors() {
    if !host_is_v1() {
        return;
    }
    let g = manager(Path::new(ROOT), "v1-errors");
    let m = &g.0;
    m.create().expect("create");
    let has = |c: &str| m.path_in(c).is_some();

    let mut r = LinuxResources::default();
    r.set_unified(Some([("memory.high".to_string(), "1M".to_string())].into()));
    assert!(matches!(m.apply(&r), Err(CgroupError::Unsupported { .. })));

    let mut r = LinuxResources::default();
    r.set_hugepage_limits(Some(vec![LinuxHugepageLimitBuilder::default()
        .page_size("2MB")
        .limit(1i64 << 21)
        .build()
        .expect("builds")]));
    match m.apply(&r) {
        Err(CgroupError::ControllerUnavailable { controller, .. }) => {
            assert!(!has("hugetlb"));
            assert_eq!(controller, "hugetlb");
        }
        Ok(()) => assert!(has("hugetlb")),
        Err(e) => panic!("unexpected {e}"),
    }

    let mut r = LinuxResources::default();
    r.set_network(Some(
        LinuxNetworkBuilder::default()
            .class_id(0x10001u32)
            .build()
            .expect("builds"),
    ));
    match m.apply(&r) {
        Err(CgroupError::ControllerUnavailable { controller, .. }) => {
            assert!(!has("net_cls"));
            assert_eq!(controller, "net_cls");
        }
        Ok(()) => assert!(has("net_cls")),
        Err(e) => panic!("unexpected {e}"),
    }

    let mut r = LinuxResources::default();
    r.set_memory(Some(
        LinuxMemoryBuilder::default()
            .limit(-5i64)
            .build()
            .expect("builds"),
    ));
    match m.apply(&r) {
        Err(CgroupError::InvalidResource { field, .. }) => assert_eq!(field, "memory.limit"),
        other => panic!("expected InvalidResource, got {other:?}"),
    }
    // Nothing was written for the rejected update.
    let mem = m.path_in("memory").expect("memory mounted");
    assert_eq!(
        read(&mem.join("memory.limit_in_bytes")),
        read(&mem.join("../memory.limit_in_bytes"))
    );

    let err = CgroupManager::new(Path::new(ROOT), Path::new("/berth/../etc")).expect_err("..");
    assert!(matches!(err, CgroupError::InvalidPath { .. }));
}

#[test]
fn v1_relative_and_systemd_paths() {
    if !host_is_v1() {
        return;
    }
    let rel = format!("berth-test-cg-rel-{}", std::process::id());
    let m = CgroupManager::new(Path::new(ROOT), Path::new(&rel)).expect("relative path");
    let own = read(Path::new("/proc/self/cgroup"));
    let own_mem = own
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .expect("memory line");
    let expect = Path::new(ROOT)
        .join("memory")
        .join(own_mem.trim_start_matches('/'))
        .join(&rel);
    assert_eq!(m.path_in("memory"), Some(expect.as_path()));

    let m =
        CgroupManager::new(Path::new(ROOT), Path::new("machine.slice:berth:abc")).expect("systemd");
    assert_eq!(
        m.relative_path(),
        Path::new("/machine.slice/berth-abc.scope")
    );
    assert_eq!(
        m.path_in("pids"),
        Some(Path::new(
            "/sys/fs/cgroup/pids/machine.slice/berth-abc.scope"
        ))
    );
}

#[test]
fn v1_mounted_controllers_lists_hierarchies() {
    if !host_is_v1() {
        return;
    }
    let list = v1_mounted_controllers().expect("list");
    let memory = list
        .iter()
        .find(|(name, _)| name.split(',').any(|c| c == "memory"))
        .expect("memory hierarchy");
    assert_eq!(memory.1, Path::new(ROOT).join(&memory.0));
    assert!(list.iter().all(|(_, p)| p.starts_with(ROOT)));
    assert!(
        !list.iter().any(|(name, _)| name == "unified"),
        "cgroup2 is not a v1 hierarchy"
    );
}

// ---------------------------------------------------------------- v2 ----

/// Runs `test` in a thread with a private mount namespace in which cgroup2
/// alone is mounted on `/sys/fs/cgroup`. Children forked from that thread
/// share its namespace.
fn with_cgroup2(test: impl FnOnce(&Path) + Send) {
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("make / private");
            mount(
                Some("cgroup2"),
                ROOT,
                Some("cgroup2"),
                MsFlags::empty(),
                None::<&str>,
            )
            .expect("mount cgroup2");
            let root = Path::new(ROOT);
            assert_eq!(detect_mode(root).expect("detect"), CgroupMode::V2);
            test(root);
        });
        if let Err(panic) = handle.join() {
            std::panic::resume_unwind(panic);
        }
    });
}

fn v2_has(root: &Path, controller: &str) -> bool {
    read(&root.join("cgroup.controllers"))
        .split_whitespace()
        .any(|c| c == controller)
}

#[test]
fn v2_lifecycle_pids_freeze_stats_kill() {
    with_cgroup2(|root| {
        let g = manager(root, "v2-life");
        let m = &g.0;
        assert_eq!(m.mode(), CgroupMode::V2);
        m.create().expect("create");
        let dir = m.path_in("memory").expect("v2 dir").to_path_buf();
        assert!(dir.is_dir());
        assert_eq!(m.paths(), vec![dir.as_path()]);

        let hugetlb = v2_has(root, "hugetlb")
            && Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists();
        if hugetlb {
            assert!(
                read(&dir.join("cgroup.controllers")).contains("hugetlb"),
                "enabled in the parent"
            );
            m.apply(&resources(serde_json::json!({
                "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
            })))
            .expect("apply hugetlb");
            assert_eq!(read(&dir.join("hugetlb.2MB.max")), (4u64 << 20).to_string());
        }
        if !v2_has(root, "memory") {
            let err = m
                .apply(&resources(
                    serde_json::json!({"memory": {"limit": 1 << 24}}),
                ))
                .expect_err("memory is bound to v1 here");
            match err {
                CgroupError::ControllerUnavailable {
                    controller, field, ..
                } => {
                    assert_eq!(
                        (controller.as_str(), field.as_str()),
                        ("memory", "memory.limit")
                    );
                }
                other => panic!("unexpected {other}"),
            }
        }

        let mut child = TestChild::spawn(Action::Pause);
        m.add_task(child.pid).expect("add_task");
        child.release();
        assert_eq!(read(&dir.join("cgroup.procs")), child.pid.to_string());
        assert_eq!(m.pids().expect("pids"), vec![child.pid]);

        m.freeze().expect("freeze");
        assert_eq!(m.freezer_state().expect("state"), FreezerState::Frozen);
        assert!(read(&dir.join("cgroup.events")).contains("frozen 1"));
        m.thaw().expect("thaw");
        assert_eq!(m.freezer_state().expect("state"), FreezerState::Thawed);
        assert!(read(&dir.join("cgroup.events")).contains("frozen 0"));

        let stats = m.stats().expect("stats");
        assert!(stats.cpu.is_some(), "cpu.stat is always there");
        assert_eq!(stats.memory.is_some(), v2_has(root, "memory"));
        if hugetlb {
            assert_eq!(stats.hugetlb.get("2MB").map(|h| h.max), Some(4 << 20));
        }
        let json = serde_json::to_value(&stats).expect("serialises");
        assert_eq!(json.get("memory").is_some(), v2_has(root, "memory"));

        m.kill_all(Signal::SIGKILL)
            .expect("kill_all via cgroup.kill");
        assert_eq!(
            child.wait(),
            WaitStatus::Signaled(child.pid, Signal::SIGKILL, false)
        );
        m.remove().expect("remove");
        assert!(!dir.exists());
        m.remove().expect("remove is idempotent");
    });
}

#[test]
fn v2_device_filter_is_enforced_and_replaced() {
    with_cgroup2(|root| {
        let g = manager(root, "v2-devices");
        let m = &g.0;
        m.create().expect("create");
        let dir = m.path_in("devices").expect("v2 dir").to_path_buf();

        let mut r = LinuxResources::default();
        r.set_devices(Some(deny_all_allow(1, 5)));
        m.apply(&r).expect("apply devices");
        assert_eq!(
            devices_bpf::attached_programs(&dir).expect("query").len(),
            1
        );
        let null = TestChild::spawn(Action::Open(c"/dev/null"));
        m.add_task(null.pid).expect("add_task");
        assert_eq!(null.run(), libc::EPERM, "/dev/null is denied");
        let zero = TestChild::spawn(Action::Open(c"/dev/zero"));
        m.add_task(zero.pid).expect("add_task");
        assert_eq!(zero.run(), 0, "/dev/zero is allowed");

        // An update replaces the program rather than stacking another one.
        r.set_devices(Some(deny_all_allow(1, 3)));
        m.apply(&r).expect("apply devices again");
        assert_eq!(
            devices_bpf::attached_programs(&dir).expect("query").len(),
            1
        );
        let null = TestChild::spawn(Action::Open(c"/dev/null"));
        m.add_task(null.pid).expect("add_task");
        assert_eq!(null.run(), 0, "/dev/null is allowed now");
        let zero = TestChild::spawn(Action::Open(c"/dev/zero"));
        m.add_task(zero.pid).expect("add_task");
        assert_eq!(zero.run(), libc::EPERM, "/dev/zero is denied now");
    });
}

#[test]
fn v2_remove_kills_remaining_processes() {
    with_cgroup2(|root| {
        let g = manager(root, "v2-remove");
        let m = &g.0;
        m.create().expect("create");
        let mut child = TestChild::spawn(Action::Pause);
        m.add_task(child.pid).expect("add_task");
        m.freeze().expect("freeze");
        m.remove().expect("remove a frozen, populated cgroup");
        assert_eq!(
            child.wait(),
            WaitStatus::Signaled(child.pid, Signal::SIGKILL, false)
        );
        assert!(!m.exists());
    });
}

#[test]
fn v2_relative_path_uses_own_cgroup() {
    with_cgroup2(|root| {
        let own = read(Path::new("/proc/self/cgroup"));
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("0:: line")
            .trim_start_matches('/')
            .to_string();
        let m = CgroupManager::new(root, Path::new("sub/x")).expect("relative");
        assert_eq!(
            m.path_in("cpu"),
            Some(root.join(own).join("sub/x").as_path())
        );
    });
}

#[test]
fn v2_apply_pids_and_cpu_report_missing_controllers() {
    with_cgroup2(|root| {
        let g = manager(root, "v2-missing");
        let m = &g.0;
        m.create().expect("create");
        let cases: [(LinuxResources, &str); 2] = [
            (
                LinuxResourcesBuilder::default()
                    .pids(
                        LinuxPidsBuilder::default()
                            .limit(5i64)
                            .build()
                            .expect("builds"),
                    )
                    .build()
                    .expect("builds"),
                "pids",
            ),
            (
                LinuxResourcesBuilder::default()
                    .cpu(
                        LinuxCpuBuilder::default()
                            .quota(20_000i64)
                            .period(100_000u64)
                            .build()
                            .expect("builds"),
                    )
                    .build()
                    .expect("builds"),
                "cpu",
            ),
        ];
        for (r, controller) in cases {
            if v2_has(root, controller) {
                continue;
            }
            match m.apply(&r) {
                Err(CgroupError::ControllerUnavailable { controller: c, .. }) => {
                    assert_eq!(c, controller)
                }
                other => panic!("expected {controller} to be unavailable, got {other:?}"),
            }
        }
    });
}
