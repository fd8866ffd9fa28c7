//! Real-kernel tests (run as root): each test builds a busybox rootfs in a
//! temporary directory, forks a child that unshares a mount namespace (and
//! others as needed), runs the rootfs steps there and checks the result from
//! inside. The child reports through its exit status and a pipe.

use std::fs;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::{major, minor};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe2, write, ForkResult};
use oci_spec::runtime::Spec;
use serde_json::json;

use super::*;

struct TestRootfs {
    _dir: tempfile::TempDir,
    bundle: PathBuf,
    rootfs: PathBuf,
}

fn make_rootfs() -> TestRootfs {
    let dir = tempfile::Builder::new()
        .prefix("berth-rootfs-test")
        .tempdir()
        .expect("tempdir");
    let bundle = dir.path().canonicalize().expect("canonicalize");
    let rootfs = bundle.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        fs::create_dir_all(rootfs.join(d)).expect("mkdir");
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "cat", "ls"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("symlink");
    }
    TestRootfs {
        _dir: dir,
        bundle,
        rootfs,
    }
}

fn spec(mounts: serde_json::Value, linux: serde_json::Value, readonly: bool) -> Spec {
    let v = json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": readonly},
        "mounts": mounts,
        "linux": linux,
    });
    serde_json::from_value(v).expect("spec json")
}

fn default_mounts() -> serde_json::Value {
    json!([
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
    ])
}

fn masked_and_readonly() -> (serde_json::Value, serde_json::Value) {
    (
        json!([
            "/proc/acpi",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi"
        ]),
        json!([
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger"
        ]),
    )
}

fn ctx<'a>(spec: &'a Spec, t: &'a TestRootfs, mode: CgroupMode) -> RootfsContext<'a> {
    RootfsContext {
        spec,
        rootfs: &t.rootfs,
        bundle: &t.bundle,
        cgroup_mode: mode,
        new_cgroupns: false,
        in_userns: false,
    }
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($fmt)+)));
        }
    };
}

fn err_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn step<T>(what: &str, r: Result<T, RootfsError>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {}", err_chain(&e)))
}

/// Runs `f` in a forked child after `unshare(flags)`; with CLONE_NEWPID, `f`
/// runs in a second child, pid 1 of the new pid namespace. Never returns
/// into the test harness from a child.
fn in_child(flags: CloneFlags, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
    // SAFETY: the child only runs `f`, reports through `w` and `_exit`s; it
    // never returns into the (multi-threaded) test harness.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(r);
            let code = child_main(flags, &w, f);
            // SAFETY: _exit ends the child without running the harness's
            // atexit handlers or destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let status = waitpid(child, None).expect("waitpid");
            // Other tests' children may hold the write end too (fork copies
            // every fd): read what is there without waiting for EOF.
            fcntl(&r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).expect("nonblock");
            let mut msg = String::new();
            let mut file = fs::File::from(r);
            let mut buf = [0u8; 4096];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => msg.push_str(&String::from_utf8_lossy(&buf[..n])),
                    Err(_) => break,
                }
            }
            match status {
                WaitStatus::Exited(_, 0) => Ok(()),
                other => Err(format!("child {other:?}: {msg}")),
            }
        }
    }
}

fn report(w: &OwnedFd, r: std::thread::Result<Result<(), String>>) -> i32 {
    match r {
        Ok(Ok(())) => 0,
        Ok(Err(msg)) => {
            let _ = write(w, msg.as_bytes());
            1
        }
        Err(_) => {
            let _ = write(w, b"panicked");
            2
        }
    }
}

fn child_main(flags: CloneFlags, w: &OwnedFd, f: impl FnOnce() -> Result<(), String>) -> i32 {
    if let Err(e) = unshare(flags) {
        let _ = write(w, format!("unshare: {e}").as_bytes());
        return 3;
    }
    if !flags.contains(CloneFlags::CLONE_NEWPID) {
        return report(w, std::panic::catch_unwind(AssertUnwindSafe(f)));
    }
    // SAFETY: this process is single-threaded (a fork child); the grandchild
    // `_exit`s.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = report(w, std::panic::catch_unwind(AssertUnwindSafe(f)));
            // SAFETY: see `in_child`.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => code,
            other => {
                let _ = write(w, format!("pid 1: {other:?}").as_bytes());
                4
            }
        },
        Err(e) => {
            let _ = write(w, format!("fork: {e}").as_bytes());
            5
        }
    }
}

/// Host mounts that mention the test's directory (there must be none).
fn host_mounts_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

fn assert_no_leak(t: &TestRootfs) {
    let leaked = host_mounts_under(&t.bundle);
    assert!(leaked.is_empty(), "mounts leaked into the host: {leaked:?}");
}

fn is_erofs<T>(r: std::io::Result<T>) -> bool {
    matches!(r, Err(e) if e.raw_os_error() == Some(libc::EROFS))
}

/// Whether `p` exists (used for /proc entries that depend on the kernel).
fn host_has(p: &str) -> bool {
    Path::new(p).exists()
}

fn mount_points() -> Result<Vec<String>, String> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect())
}

fn check_char_dev(path: &str, maj: u64, min: u64) -> Result<fs::Metadata, String> {
    let m = fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
    ensure!(
        m.file_type().is_char_device(),
        "{path} is not a char device"
    );
    ensure!(
        major(m.rdev()) == maj && minor(m.rdev()) == min,
        "{path} is {}:{}",
        major(m.rdev()),
        minor(m.rdev())
    );
    Ok(m)
}

#[test]
fn rootfs_full_container_v1_cgroups() {
    let t = make_rootfs();
    let (masked, readonly) = masked_and_readonly();
    let spec = spec(
        default_mounts(),
        json!({
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                           {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": masked,
            "readonlyPaths": readonly,
            "sysctl": {"kernel.msgmax": "12345", "net.ipv4.ip_forward": "1"},
            "devices": [{"path": "/dev/custom/zero2", "type": "c", "major": 1, "minor": 5,
                         "fileMode": 0o600, "uid": 1000, "gid": 1001}]
        }),
        true,
    );
    validate(&spec, &t.rootfs).expect("validate");
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWNET;
    let r = in_child(flags, || {
        step("prepare", prepare(&ctx(&spec, &t, CgroupMode::V1)))?;
        step("enter", enter(&t.rootfs, false))?;
        step("finish", finish(&spec))?;

        ensure!(std::process::id() == 1, "not pid 1");
        ensure!(
            std::env::current_dir().ok() == Some(PathBuf::from("/")),
            "cwd not /"
        );
        // The new root, and nothing of the old one.
        ensure!(Path::new("/bin/busybox").exists(), "no busybox");
        ensure!(!Path::new("/usr").exists(), "host /usr visible");
        for mp in mount_points()? {
            ensure!(
                mp == "/" || ["/proc", "/dev", "/sys"].iter().any(|p| mp.starts_with(p)),
                "unexpected mount {mp} (old root not detached?)"
            );
        }
        // Devices and links.
        check_char_dev("/dev/null", 1, 3)?;
        check_char_dev("/dev/tty", 5, 0)?;
        let m = check_char_dev("/dev/urandom", 1, 9)?;
        ensure!(
            m.permissions().mode() & 0o777 == 0o666,
            "urandom mode {:o}",
            m.mode()
        );
        let m = check_char_dev("/dev/custom/zero2", 1, 5)?;
        ensure!(m.mode() & 0o7777 == 0o600, "custom mode {:o}", m.mode());
        ensure!(
            m.uid() == 1000 && m.gid() == 1001,
            "custom owner {}:{}",
            m.uid(),
            m.gid()
        );
        let link = |p: &str| {
            fs::read_link(p)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        ensure!(
            link("/dev/ptmx") == "pts/ptmx",
            "ptmx -> {}",
            link("/dev/ptmx")
        );
        ensure!(
            link("/dev/fd") == "/proc/self/fd",
            "fd -> {}",
            link("/dev/fd")
        );
        ensure!(link("/dev/stderr") == "/proc/self/fd/2", "stderr");
        ensure!(Path::new("/dev/pts/ptmx").exists(), "no devpts ptmx");
        ensure!(
            fs::write("/dev/shm/x", b"x").is_ok(),
            "/dev/shm not writable"
        );
        // Sysctls set, then /proc/sys read-only.
        let v = fs::read_to_string("/proc/sys/kernel/msgmax").map_err(|e| e.to_string())?;
        ensure!(v.trim() == "12345", "msgmax {v}");
        let v = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").map_err(|e| e.to_string())?;
        ensure!(v.trim() == "1", "ip_forward {v}");
        ensure!(
            is_erofs(fs::write("/proc/sys/kernel/msgmax", b"1")),
            "/proc/sys writable"
        );
        // Masked: a file reads empty (it is /dev/null), a dir is empty.
        // Not every kernel has /proc/kcore: check the first that exists.
        if let Some(f) = ["/proc/kcore", "/proc/keys", "/proc/timer_list"]
            .into_iter()
            .find(|f| host_has(f))
        {
            let content = fs::read(f).map_err(|e| format!("{f}: {e}"))?;
            ensure!(content.is_empty(), "{f} not masked");
            check_char_dev(f, 1, 3)?;
        }
        ensure!(
            host_has("/proc/kcore") == (link("/dev/core") == "/proc/kcore"),
            "/dev/core link does not follow /proc/kcore"
        );
        if Path::new("/sys/firmware").exists() {
            let n = fs::read_dir("/sys/firmware")
                .map_err(|e| e.to_string())?
                .count();
            ensure!(n == 0, "/sys/firmware not masked");
        }
        // Read-only root and sysfs.
        ensure!(is_erofs(fs::write("/tmp/x", b"x")), "root writable");
        ensure!(
            is_erofs(fs::create_dir("/sys/fs/cgroup/x")),
            "cgroup tmpfs writable"
        );
        // v1 hierarchies of the host (hybrid layout here).
        for h in ["memory", "pids", "systemd"] {
            let p = Path::new("/sys/fs/cgroup").join(h);
            ensure!(p.join("cgroup.procs").exists(), "{} missing", p.display());
        }
        Ok(())
    });
    assert_no_leak(&t);
    r.expect("container checks");
}

#[test]
fn rootfs_v2_cgroupns_userns_devices_console() {
    let t = make_rootfs();
    let spec = spec(
        default_mounts(),
        json!({
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"},
                           {"type": "cgroup"}],
            "rootfsPropagation": "private"
        }),
        false,
    );
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWCGROUP;
    let r = in_child(flags, || {
        let mut c = ctx(&spec, &t, CgroupMode::V2);
        c.new_cgroupns = true;
        c.in_userns = true;
        step("prepare", prepare(&c))?;
        step(
            "bind_console",
            bind_console(&t.rootfs, Path::new("/dev/zero")),
        )?;
        step("enter", enter(&t.rootfs, false))?;
        step("finish", finish(&spec))?;
        ensure!(
            Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
            "no cgroup2 at /sys/fs/cgroup"
        );
        // In "userns" mode devices are binds of the host's nodes.
        check_char_dev("/dev/null", 1, 3)?;
        let mps = mount_points()?;
        ensure!(
            mps.iter().any(|m| m == "/dev/null"),
            "/dev/null not a bind: {mps:?}"
        );
        check_char_dev("/dev/console", 1, 5)?;
        ensure!(fs::write("/tmp/x", b"x").is_ok(), "root should be writable");
        Ok(())
    });
    assert_no_leak(&t);
    r.expect("container checks");
}

#[test]
fn rootfs_symlink_escape_stays_inside() {
    let t = make_rootfs();
    let outside = tempfile::Builder::new()
        .prefix("berth-rootfs-outside")
        .tempdir()
        .expect("tempdir");
    let outside_path = outside.path().canonicalize().expect("canonicalize");
    let src = t.bundle.join("src");
    fs::create_dir(&src).expect("mkdir src");
    fs::write(src.join("marker"), b"m").expect("marker");
    // An absolute symlink and a relative one climbing far above the rootfs.
    std::os::unix::fs::symlink(&outside_path, t.rootfs.join("evil")).expect("symlink");
    let climb = format!("../../../../../../../..{}", outside_path.display());
    std::os::unix::fs::symlink(&climb, t.rootfs.join("tmp/evil2")).expect("symlink");
    let spec = spec(
        json!([
            {"destination": "/evil/x", "type": "bind", "source": "src", "options": ["rbind"]},
            {"destination": "/tmp/evil2/y", "type": "none", "source": src, "options": ["bind", "ro"]},
            {"destination": "/evil/f", "type": "bind", "source": src.join("marker"), "options": ["bind"]}
        ]),
        json!({}),
        false,
    );
    let inside = t
        .rootfs
        .join(outside_path.strip_prefix("/").expect("absolute"));
    let r = in_child(CloneFlags::CLONE_NEWNS, || {
        step("prepare", prepare(&ctx(&spec, &t, CgroupMode::V2)))?;
        ensure!(
            inside.join("x/marker").exists(),
            "bind did not land inside the rootfs"
        );
        ensure!(
            inside.join("y/marker").exists(),
            "relative-symlink bind not inside"
        );
        ensure!(inside.join("f").exists(), "file bind not inside");
        ensure!(
            fs::read_dir(&outside_path)
                .map_err(|e| e.to_string())?
                .count()
                == 0,
            "host directory touched"
        );
        ensure!(
            is_erofs(fs::write(inside.join("y/new"), b"x")),
            "ro bind through symlink is writable"
        );
        Ok(())
    });
    assert_no_leak(&t);
    assert!(host_mounts_under(&outside_path).is_empty());
    let entries: Vec<_> = fs::read_dir(&outside_path).expect("read outside").collect();
    assert!(
        entries.is_empty(),
        "host path outside the rootfs was modified"
    );
    r.expect("escape checks");
}

#[test]
fn rootfs_unknown_option_is_an_error() {
    let t = make_rootfs();
    let spec = spec(
        json!([{"destination": "/data", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "frobnicate"]}]),
        json!({}),
        false,
    );
    let e = validate(&spec, &t.rootfs).expect_err("validate must fail");
    assert!(
        matches!(&e, RootfsError::UnknownOption { option, destination }
            if option == "frobnicate" && destination == Path::new("/data")),
        "{e}"
    );
    assert!(e.to_string().contains("frobnicate"));
    let r = in_child(CloneFlags::CLONE_NEWNS, || {
        match prepare(&ctx(&spec, &t, CgroupMode::V2)) {
            Err(RootfsError::UnknownOption { option, .. }) if option == "frobnicate" => Ok(()),
            other => Err(format!("prepare: {other:?}")),
        }
    });
    assert_no_leak(&t);
    r.expect("prepare error");

    let idmap = spec_with_options(&["rbind", "idmap"]);
    let e = validate(&idmap, &t.rootfs).expect_err("idmap must fail");
    assert!(e.to_string().contains("idmap"), "{e}");
}

fn spec_with_options(opts: &[&str]) -> Spec {
    spec(
        json!([{"destination": "/data", "type": "bind", "source": "/tmp", "options": opts}]),
        json!({}),
        false,
    )
}

#[test]
fn rootfs_validate_errors() {
    let t = make_rootfs();
    let ok = spec(default_mounts(), json!({}), false);
    validate(&ok, &t.rootfs).expect("valid spec");

    let missing = t.bundle.join("nope");
    let e = validate(&ok, &missing).expect_err("missing rootfs");
    assert!(matches!(e, RootfsError::RootfsMissing { .. }), "{e}");
    assert!(e.to_string().contains("nope"));
    let e = validate(&ok, &t.rootfs.join("bin/busybox")).expect_err("file rootfs");
    assert!(matches!(e, RootfsError::RootfsNotDirectory { .. }), "{e}");

    let rel = spec(
        json!([{"destination": "data", "type": "tmpfs"}]),
        json!({}),
        false,
    );
    assert!(matches!(
        validate(&rel, &t.rootfs),
        Err(RootfsError::RelativeDestination { .. })
    ));
    let fstype = spec(
        json!([{"destination": "/d", "type": "nosuchfs"}]),
        json!({}),
        false,
    );
    let e = validate(&fstype, &t.rootfs).expect_err("unknown fs");
    assert!(e.to_string().contains("nosuchfs"), "{e}");
    let ext4 = spec(
        json!([{"destination": "/d", "type": "ext4", "source": "/dev/x"}]),
        json!({}),
        false,
    );
    // ext4 is usually built in; only check that a listed type passes.
    let listed = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if listed.lines().any(|l| l.ends_with("\text4")) {
        validate(&ext4, &t.rootfs).expect("ext4 is known");
    }
    let dev = spec(
        json!([]),
        json!({"devices": [{"path": "/etc/evil", "type": "c", "major": 1, "minor": 3}]}),
        false,
    );
    let e = validate(&dev, &t.rootfs).expect_err("device outside /dev");
    assert!(e.to_string().contains("/etc/evil"), "{e}");
    let dev = spec(
        json!([]),
        json!({"devices": [{"path": "/dev/../etc/x", "type": "c", "major": 1, "minor": 3}]}),
        false,
    );
    assert!(validate(&dev, &t.rootfs).is_err());
    let sysctl = spec(json!([]), json!({"sysctl": {"vm.swappiness": "1"}}), false);
    let e = validate(&sysctl, &t.rootfs).expect_err("host sysctl");
    assert!(e.to_string().contains("vm.swappiness"), "{e}");
    let sysctl = spec(
        json!([]),
        json!({"sysctl": {"net.ipv4.ip_forward": "1"}}),
        false,
    );
    let e = validate(&sysctl, &t.rootfs).expect_err("net sysctl without netns");
    assert!(e.to_string().contains("network namespace"), "{e}");
    let prop = spec(json!([]), json!({"rootfsPropagation": "sideways"}), false);
    assert!(matches!(
        validate(&prop, &t.rootfs),
        Err(RootfsError::InvalidPropagation { .. })
    ));
}

#[test]
fn rootfs_no_pivot_chroot_fallback() {
    let t = make_rootfs();
    let spec = spec(
        json!([{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]}]),
        json!({}),
        true,
    );
    let r = in_child(CloneFlags::CLONE_NEWNS, || {
        step("prepare", prepare(&ctx(&spec, &t, CgroupMode::V2)))?;
        step("enter", enter(&t.rootfs, true))?;
        ensure!(
            std::env::current_dir().ok() == Some(PathBuf::from("/")),
            "cwd not /"
        );
        ensure!(Path::new("/bin/busybox").exists(), "not in the rootfs");
        ensure!(!Path::new("/usr").exists(), "host root still visible");
        check_char_dev("/dev/null", 1, 3)?;
        // No /proc in this container: the read-only root needs no fd paths.
        step("finish", finish(&spec))?;
        ensure!(is_erofs(fs::write("/tmp/x", b"x")), "root writable");
        Ok(())
    });
    assert_no_leak(&t);
    r.expect("chroot checks");
}

#[test]
fn rootfs_readonly_bind_keeps_source_flags() {
    let t = make_rootfs();
    let src = t.bundle.join("src");
    fs::create_dir(&src).expect("mkdir");
    let spec = spec(
        json!([
            {"destination": "/data", "type": "bind", "source": src, "options": ["rbind", "ro", "rprivate"]},
            {"destination": "/data2", "type": "bind", "source": src, "options": ["rbind", "rro"]},
            {"destination": "/data3", "type": "bind", "source": src, "options": ["rbind", "noexec", "rw"]}
        ]),
        json!({}),
        false,
    );
    let r = in_child(CloneFlags::CLONE_NEWNS, || {
        // The source is a nosuid,nodev tmpfs with a sub-mount.
        let none = None::<&str>;
        mount(none, "/", none, MsFlags::MS_SLAVE | MsFlags::MS_REC, none)
            .map_err(|e| e.to_string())?;
        let fl = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mount(Some("tmpfs"), &src, Some("tmpfs"), fl, none).map_err(|e| e.to_string())?;
        fs::create_dir(src.join("sub")).map_err(|e| e.to_string())?;
        mount(Some("tmpfs"), &src.join("sub"), Some("tmpfs"), fl, none)
            .map_err(|e| e.to_string())?;
        step("prepare", prepare(&ctx(&spec, &t, CgroupMode::V2)))?;

        let text = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let opts_of = |mp: &Path| {
            let mp = mp.to_string_lossy().into_owned();
            text.lines()
                .filter(|l| l.split(' ').nth(4) == Some(mp.as_str()))
                .filter_map(|l| l.split(' ').nth(5).map(str::to_string))
                .next_back()
                .unwrap_or_default()
        };
        let data = opts_of(&t.rootfs.join("data"));
        ensure!(
            data.split(',').any(|o| o == "ro") && data.contains("nosuid") && data.contains("nodev"),
            "/data options {data}"
        );
        ensure!(
            is_erofs(fs::write(t.rootfs.join("data/x"), b"x")),
            "/data writable"
        );
        // "ro" is not recursive, "rro" is.
        ensure!(
            fs::write(t.rootfs.join("data/sub/x"), b"x").is_ok(),
            "/data/sub should be rw"
        );
        ensure!(
            is_erofs(fs::write(t.rootfs.join("data2/sub/y"), b"x")),
            "/data2/sub writable"
        );
        let data3 = opts_of(&t.rootfs.join("data3"));
        ensure!(
            data3.contains("noexec") && data3.contains("nosuid") && data3.starts_with("rw"),
            "/data3 options {data3}"
        );
        Ok(())
    });
    assert_no_leak(&t);
    r.expect("bind checks");
}

#[test]
fn rootfs_dangling_symlink_target_is_created_inside() {
    let t = make_rootfs();
    let host_path = t.bundle.join("host-side");
    // Absolute and relative dangling links: their targets get created, but
    // inside the rootfs.
    std::os::unix::fs::symlink(&host_path, t.rootfs.join("dangling")).expect("symlink");
    std::os::unix::fs::symlink(
        "../../../../../../../nowhere-berth",
        t.rootfs.join("tmp/rel"),
    )
    .expect("symlink");
    let spec = spec(
        json!([
            {"destination": "/dangling", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/tmp/rel/sub", "type": "tmpfs", "source": "tmpfs"}
        ]),
        json!({}),
        false,
    );
    let inside = t
        .rootfs
        .join(host_path.strip_prefix("/").expect("absolute"));
    let r = in_child(CloneFlags::CLONE_NEWNS, || {
        step("prepare", prepare(&ctx(&spec, &t, CgroupMode::V2)))?;
        let mps = mount_points()?;
        let want = inside.to_string_lossy().into_owned();
        ensure!(mps.contains(&want), "no mount at {want}: {mps:?}");
        let want = t
            .rootfs
            .join("nowhere-berth/sub")
            .to_string_lossy()
            .into_owned();
        ensure!(mps.contains(&want), "no mount at {want}: {mps:?}");
        Ok(())
    });
    assert_no_leak(&t);
    r.expect("dangling symlink");
    assert!(!host_path.exists(), "host path created through a symlink");
    match fs::metadata("/nowhere-berth") {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        other => panic!("/nowhere-berth created on the host: {other:?}"),
    }
}

#[test]
fn rootfs_walk_fallback_matches_openat2() {
    // The userspace resolver used on kernels without openat2.
    let t = make_rootfs();
    std::os::unix::fs::symlink("/etc", t.rootfs.join("abs")).expect("symlink");
    std::os::unix::fs::symlink("../../../../../../bin", t.rootfs.join("tmp/rel")).expect("symlink");
    let root = nix::fcntl::open(
        &t.rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .expect("open rootfs");
    let ino = |fd: &OwnedFd| nix::sys::stat::fstat(fd).expect("fstat").st_ino;
    for p in ["abs", "tmp/rel/busybox", "tmp/../../bin", ""] {
        let a =
            super::paths::walk_in_root(root.as_fd(), Path::new(p), OFlag::empty(), None).expect(p);
        let b = super::paths::open_in_root(root.as_fd(), Path::new(p), OFlag::empty()).expect(p);
        assert_eq!(ino(&a), ino(&b), "{p}");
        assert!(a.as_raw_fd() >= 0);
    }
    assert_eq!(
        ino(
            &super::paths::walk_in_root(root.as_fd(), Path::new("abs"), OFlag::empty(), None)
                .expect("abs")
        ),
        fs::metadata(t.rootfs.join("etc")).expect("etc").ino()
    );
}
