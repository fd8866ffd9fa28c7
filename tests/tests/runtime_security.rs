//! Isolation features: seccomp, user namespaces, joining existing namespaces, and the
//! CVE-2019-5736 protection of the runtime binary.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_tests::poll::wait_until;
use berth_tests::{require_root, runtime_binary, TestCase};
use serde_json::json;

fn deny_mkdir_profile(errno: u32) -> serde_json::Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno}]
    })
}

#[test]
fn seccomp_denies_mkdir_with_eperm() {
    require_root!();
    let mut t = TestCase::new("seccomp");
    t.spec()
        .readonly_rootfs(false)
        .seccomp(deny_mkdir_profile(1));
    let out = t.run_sh("mkdir /tmp/x");
    assert_ne!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("Operation not permitted"), "{out}");
    assert!(!t.bundle.rootfs().join("tmp/x").exists());

    // Other syscalls are untouched, and without the profile mkdir works.
    let mut t = TestCase::new("seccompoff");
    t.spec().readonly_rootfs(false);
    t.sh_ok("mkdir /tmp/x");
    assert!(t.bundle.rootfs().join("tmp/x").is_dir());
}

#[test]
fn seccomp_custom_errno() {
    require_root!();
    let mut t = TestCase::new("seccompnosys");
    // 38 = ENOSYS
    t.spec()
        .readonly_rootfs(false)
        .seccomp(deny_mkdir_profile(38));
    let out = t.run_sh("mkdir /tmp/x");
    assert!(out.stderr.contains("not implemented"), "{out}");
}

#[test]
fn user_namespace_mappings() {
    require_root!();
    let mut t = TestCase::new("userns");
    t.spec()
        .namespace("user", None)
        .id_mappings(0, 100_000, 65_536);
    let out = t.sh_ok("id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0"], "{out}");
    assert_eq!(lines[1], ["0"], "{out}");
    assert_eq!(lines[2], ["0", "100000", "65536"], "uid_map: {out}");
    assert_eq!(lines[3], ["0", "100000", "65536"], "gid_map: {out}");

    // From the host the container's root is uid 100000.
    let mut t = TestCase::new("usernshost");
    t.spec()
        .namespace("user", None)
        .id_mappings(0, 100_000, 65_536)
        .args(&["sleep", "1000"]);
    t.create_start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", t.pid())).expect("status");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some("100000"),
        "{uid_line}"
    );
}

/// A process holding a namespace made by `unshare`; killed on drop.
struct NsHolder(Child);

impl NsHolder {
    /// Runs `unshare FLAGS /bin/sh -c 'SETUP && echo ready && exec sleep'` and waits for ready.
    fn new(flags: &[&str], setup: &str) -> Self {
        let mut child = Command::new("unshare")
            .args(flags)
            .args([
                "/bin/sh",
                "-c",
                &format!("{setup} && echo ready && exec sleep 100000"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start unshare");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        let holder = NsHolder(child);
        assert_eq!(line.trim(), "ready", "the namespace holder failed");
        holder
    }

    fn ns_path(&self, kind: &str) -> String {
        format!("/proc/{}/ns/{kind}", self.0.id())
    }
}

impl Drop for NsHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn join_existing_uts_namespace() {
    require_root!();
    let holder = NsHolder::new(&["--uts"], "hostname joined-uts");
    let mut t = TestCase::new("joinuts");
    // A hostname would be set in the joined namespace; leave it out.
    t.spec()
        .remove("/hostname")
        .namespace("uts", Some(&holder.ns_path("uts")));
    assert_eq!(t.sh_ok("hostname").trim(), "joined-uts");
    assert_ne!(
        nix::unistd::gethostname()
            .expect("hostname")
            .to_string_lossy(),
        "joined-uts"
    );
}

#[test]
fn join_existing_network_namespace() {
    require_root!();
    // Mark the namespace with a veth pair only it has.
    let holder = NsHolder::new(
        &["--net"],
        "ip link add berthva type veth peer name berthvb",
    );
    let mut t = TestCase::new("joinnet");
    t.spec().namespace("network", Some(&holder.ns_path("net")));
    let out = t.sh_ok("ls /sys/class/net");
    let mut names: Vec<&str> = out.split_whitespace().collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["berthva", "berthvb", "lo"],
        "not the joined namespace: {out}"
    );

    // A private one has only lo.
    let mut t = TestCase::new("privnet");
    assert_eq!(
        t.sh_ok("ls /sys/class/net")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["lo"]
    );
}

#[test]
fn runtime_binary_cannot_be_overwritten_through_proc_exe() {
    require_root!();
    // CVE-2019-5736: a container process that gets a handle on /proc/<runtime pid>/exe must not
    // be able to write the host's runtime binary once the runtime has exited. Take that handle
    // (O_PATH) on the container's init while it is still the runtime (after create), start the
    // container, then try to reopen the handle for writing.
    let mut t = TestCase::new("cve20195736");
    t.spec().args(&["sleep", "1000"]);
    t.create().ok();
    let pid = t.pid();
    let exe_before = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let handle = nix::fcntl::open(
        format!("/proc/{pid}/exe").as_str(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .expect("O_PATH open of the init's exe");
    let handle_meta = std::fs::metadata(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&handle)
    ))
    .expect("stat handle");

    t.start().ok();
    wait_until(
        "the container process to replace the runtime",
        Duration::from_secs(10),
        || {
            let c = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            c.starts_with(b"sleep\0").then_some(())
        },
    );

    let reopen = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&handle)
        ));
    let bin_meta = std::fs::metadata(runtime_binary()).expect("stat runtime binary");
    let same_file = handle_meta.dev() == bin_meta.dev() && handle_meta.ino() == bin_meta.ino();
    match reopen {
        Err(e) => assert_ne!(
            e.raw_os_error(),
            Some(libc::ETXTBSY),
            "only 'text file busy' protected the runtime binary ({exe_before:?}); it is the live binary"
        ),
        Ok(f) => {
            // Writing back the byte already there changes nothing if it succeeds.
            let mut b = [0u8; 1];
            f.read_at(&mut b, 0).expect("read byte 0");
            let wrote = f.write_at(&b, 0);
            assert!(
                wrote.is_err() || !same_file,
                "the host's runtime binary is writable through /proc/<pid>/exe ({exe_before:?})"
            );
        }
    }
}

#[test]
fn time_namespace_offsets_shift_the_clocks() {
    require_root!();
    // A boottime offset of 10 days shows in /proc/uptime inside the container.
    let mut t = TestCase::new("timens");
    t.spec()
        .namespace("time", None)
        .set(
            "/linux/timeOffsets",
            json!({"boottime": {"secs": 864000, "nanosecs": 0}, "monotonic": {"secs": 864000, "nanosecs": 0}}),
        );
    let out = t.sh_ok("cut -d. -f1 /proc/uptime");
    let inside: u64 = out.trim().parse().expect("uptime is a number");
    let host: f64 = std::fs::read_to_string("/proc/uptime")
        .expect("host uptime")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("host uptime number");
    assert!(
        inside as f64 >= host + 864000.0 - 5.0,
        "uptime inside {inside} should be ~10 days ahead of the host's {host}"
    );
}
