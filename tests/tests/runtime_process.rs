//! What the process inside a container sees: pid 1, hostname, env, cwd, user, umask,
//! rlimits, capabilities, no_new_privs, read-only rootfs, masked and read-only /proc paths.

use berth_tests::spec::{cap_mask_hex, DEFAULT_CAPS};
use berth_tests::{require_root, TestCase};

/// The value of `Field:` in a /proc/<pid>/status dump.
fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {field} in status:\n{status}"))
}

#[test]
fn init_is_pid_1() {
    require_root!();
    let mut t = TestCase::new("pid1");
    assert_eq!(t.sh_ok("echo $$").trim(), "1");
}

#[test]
fn sees_only_its_own_processes() {
    require_root!();
    let mut t = TestCase::new("pidns");
    // A shell builtin lists /proc of the new pid namespace: only the shell itself is there.
    let out = t.sh_ok("echo /proc/[0-9]*");
    assert_eq!(out.trim(), "/proc/1", "processes visible inside: {out}");
}

#[test]
fn hostname_is_set() {
    require_root!();
    let mut t = TestCase::new("hostname");
    t.spec().hostname("box-under-test");
    assert_eq!(t.sh_ok("hostname").trim(), "box-under-test");
}

#[test]
fn env_and_cwd() {
    require_root!();
    let mut t = TestCase::new("envcwd");
    t.spec()
        .env(&["PATH=/bin", "GREETING=hello world", "EMPTY="])
        .cwd("/tmp");
    let out = t.sh_ok("echo \"[$GREETING]\"; echo \"[$EMPTY]\"; pwd; env | grep -c TERM || true");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["[hello world]", "[]", "/tmp", "0"], "output: {out}");
}

#[test]
fn cwd_is_created_when_missing() {
    require_root!();
    let mut t = TestCase::new("cwdmissing");
    t.spec().cwd("/work/dir").readonly_rootfs(false);
    assert_eq!(t.sh_ok("pwd").trim(), "/work/dir");
}

#[test]
fn user_and_additional_groups() {
    require_root!();
    let mut t = TestCase::new("user");
    t.spec().user(1000, 1000, &[29, 50]);
    let out = t.sh_ok("id -u; id -g; id -G");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000", "uid: {out}");
    assert_eq!(lines[1], "1000", "gid: {out}");
    let mut groups: Vec<&str> = lines[2].split_whitespace().collect();
    groups.sort_unstable();
    groups.dedup();
    assert_eq!(groups, ["1000", "29", "50"], "groups: {out}");
}

#[test]
fn non_root_user_capabilities() {
    require_root!();
    // Without an inheritable set the kernel refuses the ambient caps: a non-root user ends up
    // with no effective capabilities (the `runc spec` default behaves like this).
    let mut t = TestCase::new("nobody");
    t.spec().user(65534, 65534, &[]);
    let out = t.sh_ok("id -un; grep CapEff /proc/self/status");
    assert!(out.starts_with("nobody\n"), "{out}");
    assert_eq!(status_field(&out, "CapEff"), "0000000000000000");

    // With inheritable = ambient = the set, the non-root process keeps exactly that set.
    let mut t = TestCase::new("nobodyamb");
    t.spec().user(65534, 65534, &[]);
    t.spec().set(
        "/process/capabilities/inheritable",
        serde_json::json!(DEFAULT_CAPS),
    );
    let out = t.sh_ok("grep -E '^Cap(Eff|Amb)' /proc/self/status");
    assert_eq!(status_field(&out, "CapEff"), cap_mask_hex(&DEFAULT_CAPS));
    assert_eq!(status_field(&out, "CapAmb"), cap_mask_hex(&DEFAULT_CAPS));
}

#[test]
fn umask_is_applied() {
    require_root!();
    let mut t = TestCase::new("umask");
    t.spec().umask(0o077);
    assert_eq!(t.sh_ok("umask").trim(), "0077");
}

#[test]
fn rlimit_nofile() {
    require_root!();
    let mut t = TestCase::new("rlimit");
    t.spec().rlimit("RLIMIT_NOFILE", 321, 654);
    let out = t.sh_ok("ulimit -n; ulimit -Hn");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["321", "654"], "{out}");
}

#[test]
fn capabilities_are_the_configured_set() {
    require_root!();
    let mut t = TestCase::new("caps");
    let status = t.sh_ok("cat /proc/self/status");
    let want = cap_mask_hex(&DEFAULT_CAPS);
    for field in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(status_field(&status, field), want, "{field}");
    }
}

#[test]
fn capabilities_custom_set() {
    require_root!();
    let mut t = TestCase::new("capscustom");
    let caps = ["CAP_CHOWN", "CAP_NET_RAW", "CAP_SYS_ADMIN"];
    t.spec().capabilities(&caps);
    let status = t.sh_ok("cat /proc/self/status");
    assert_eq!(status_field(&status, "CapEff"), cap_mask_hex(&caps));
    assert_eq!(status_field(&status, "CapBnd"), cap_mask_hex(&caps));
}

#[test]
fn no_new_privileges() {
    require_root!();
    let mut t = TestCase::new("nnp");
    let status = t.sh_ok("cat /proc/self/status");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");

    let mut t = TestCase::new("nnpoff");
    t.spec().no_new_privileges(false);
    let status = t.sh_ok("cat /proc/self/status");
    assert_eq!(status_field(&status, "NoNewPrivs"), "0");
}

#[test]
fn readonly_rootfs() {
    require_root!();
    let mut t = TestCase::new("rorootfs");
    let out = t.run_sh("touch /newfile");
    assert_ne!(
        out.code,
        Some(0),
        "touch / succeeded on a read-only rootfs: {out}"
    );
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    // tmpfs mounts stay writable.
    let mut t = TestCase::new("rorootfsshm");
    t.sh_ok("touch /dev/shm/ok");
}

#[test]
fn writable_rootfs_when_not_readonly() {
    require_root!();
    let mut t = TestCase::new("rwrootfs");
    t.spec().readonly_rootfs(false);
    t.sh_ok("echo data > /newfile");
    let host = std::fs::read_to_string(t.bundle.rootfs().join("newfile")).expect("file on host");
    assert_eq!(host, "data\n");
}

#[test]
fn masked_paths_are_empty() {
    require_root!();
    let mut t = TestCase::new("masked");
    // Masked files read as empty (a bind of /dev/null); masked dirs are empty (a read-only
    // tmpfs). Only paths this kernel has are checked (/proc/kcore is absent on some).
    let files: Vec<&str> = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
    ]
    .into_iter()
    .filter(|p| std::path::Path::new(p).exists())
    .collect();
    assert!(
        !files.is_empty(),
        "no maskable /proc file exists on this host"
    );
    let script = format!(
        "for f in {}; do echo \"$f $(cat $f | wc -c)\"; done; echo \"/sys/firmware $(ls -A /sys/firmware | wc -l)\"",
        files.join(" ")
    );
    let out = t.sh_ok(&script);
    for line in out.lines() {
        assert!(
            line.ends_with(" 0"),
            "masked path is not empty inside the container: {line}\n{out}"
        );
    }
    assert_eq!(out.lines().count(), files.len() + 1, "{out}");
    // The host's own /proc/keys still has content: masking is inside only.
    if std::path::Path::new("/proc/keys").exists() {
        assert!(!std::fs::read_to_string("/proc/keys")
            .unwrap_or_default()
            .is_empty());
    }
}

#[test]
fn readonly_proc_sys() {
    require_root!();
    let mut t = TestCase::new("roprocsys");
    t.spec().capabilities(&["CAP_SYS_ADMIN"]);
    let out = t.run_sh("echo 1 > /proc/sys/kernel/domainname");
    assert_ne!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("Read-only file system"), "{out}");
}

#[test]
fn network_namespace_has_only_loopback() {
    require_root!();
    let mut t = TestCase::new("netns");
    let out = t.sh_ok("ls /sys/class/net");
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["lo"], "{out}");
}

#[test]
fn default_mounts_exist() {
    require_root!();
    let mut t = TestCase::new("mounts");
    let out = t.sh_ok("cat /proc/self/mounts");
    for (dest, fstype) in [
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
    ] {
        assert!(
            out.lines().any(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                f.get(1) == Some(&dest) && f.get(2) == Some(&fstype)
            }),
            "no {fstype} on {dest} in:\n{out}"
        );
    }
    // The standard device nodes are there and usable.
    let devs = t.sh_ok("for d in null zero full random urandom tty; do test -c /dev/$d && echo $d; done; head -c 3 /dev/zero | wc -c; echo x > /dev/null && echo null-ok");
    assert_eq!(
        devs.split_whitespace().collect::<Vec<_>>(),
        ["null", "zero", "full", "random", "urandom", "tty", "3", "null-ok"]
    );
}
