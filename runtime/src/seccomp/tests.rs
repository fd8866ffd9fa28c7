//! Tests against the real kernel: each filter is loaded in a forked child,
//! which reports through its exit status and never returns to the harness.

use std::ffi::CString;
use std::io::{IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, State};

use super::*;

/// Forks; the child runs `body` and `_exit`s with its result (101 on panic).
fn in_child(body: impl FnOnce() -> i32) -> WaitStatus {
    // SAFETY: the child only runs `body` and then `_exit`s; it never returns
    // into the test harness. glibc keeps malloc usable after fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
        // SAFETY: terminates the child without running the parent's atexit
        // handlers or unwinding into the harness.
        unsafe { libc::_exit(code) };
    }
    waitpid(Pid::from_raw(pid), None).expect("waitpid")
}

fn assert_exit_zero(status: WaitStatus) {
    assert_eq!(
        status,
        WaitStatus::Exited(status.pid().expect("pid"), 0),
        "child failed: {status:?}"
    );
}

fn profile(json: &str) -> LinuxSeccomp {
    serde_json::from_str(json).expect("test profile parses")
}

/// The errno of the last failed libc call.
fn errno() -> i32 {
    Errno::last_raw()
}

/// `syscall(nr, a0, a1, 0, 0, 0, 0)`, returning the errno on failure and 0
/// on success.
fn sys2(nr: libc::c_long, a0: libc::c_long, a1: libc::c_long) -> i32 {
    // SAFETY: the tests only pass integer arguments or valid pointers; the
    // remaining arguments are zero rather than whatever is in the registers.
    let ret = unsafe { libc::syscall(nr, a0, a1, 0, 0, 0, 0) };
    if ret < 0 {
        errno()
    } else {
        0
    }
}

fn load_or_exit(filter: &SeccompFilter) -> Option<OwnedFd> {
    match filter.load() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("load failed: {e:?}");
            // SAFETY: child-only exit, see `in_child`.
            unsafe { libc::_exit(90) }
        }
    }
}

#[test]
fn errno_actions_return_the_configured_errno() {
    let filter = compile(&profile(
        r#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}
            ]
        }"#,
    ))
    .expect("compile");
    assert!(!filter.uses_notify());
    let dir = tempfile::tempdir().expect("tempdir");
    let target =
        CString::new(dir.path().join("d").into_os_string().into_encoded_bytes()).expect("path");
    let status = in_child(|| {
        load_or_exit(&filter);
        // SAFETY: `target` is a valid NUL-terminated path.
        if unsafe { libc::mkdir(target.as_ptr(), 0o755) } == 0 || errno() != libc::EPERM {
            return 1;
        }
        if sys2(libc::SYS_getpid, 0, 0) != 42 {
            return 2;
        }
        // Not filtered.
        if sys2(libc::SYS_getppid, 0, 0) != 0 {
            return 3;
        }
        0
    });
    assert_exit_zero(status);
    assert!(!dir.path().join("d").exists());
}

#[test]
fn argument_conditions_are_anded_and_same_index_ored() {
    let filter = compile(&profile(
        r#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                 "args": [
                    {"index": 0, "value": 4294967295, "op": "SCMP_CMP_EQ"},
                    {"index": 0, "value": 131072, "op": "SCMP_CMP_EQ"}
                 ]},
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77,
                 "args": [
                    {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                    {"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}
                 ]},
                {"names": ["dup"], "action": "SCMP_ACT_ERRNO", "errnoRet": 55,
                 "args": [{"index": 0, "value": 240, "valueTwo": 16, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["umask"], "action": "SCMP_ACT_ERRNO", "errnoRet": 66,
                 "args": [{"index": 0, "value": 63, "op": "SCMP_CMP_GT"}]}
            ]
        }"#,
    ))
    .expect("compile");
    let status = in_child(|| {
        load_or_exit(&filter);
        // Either value of the same argument matches (ORed rules).
        if sys2(libc::SYS_personality, 0xffff_ffff, 0) != 13 {
            return 1;
        }
        if sys2(libc::SYS_personality, 0x20000, 0) != 13 {
            return 2;
        }
        if sys2(libc::SYS_personality, 0, 0) != 0 {
            return 3;
        }
        // Both conditions must hold (ANDed).
        if sys2(libc::SYS_kill, 0, 0) != 77 {
            return 4;
        }
        // SAFETY: getpid has no preconditions.
        let me = libc::c_long::from(unsafe { libc::getpid() });
        if sys2(libc::SYS_kill, me, 0) != 0 {
            return 5;
        }
        // MASKED_EQ: (fd & 0xf0) == 0x10 is denied; fd 1 is allowed.
        if sys2(libc::SYS_dup, 0x1f, 0) != 55 {
            return 6;
        }
        if sys2(libc::SYS_dup, 1, 0) != 0 {
            return 7;
        }
        if sys2(libc::SYS_umask, 0o100, 0) != 66 || sys2(libc::SYS_umask, 0o22, 0) != 0 {
            return 8;
        }
        0
    });
    assert_exit_zero(status);
}

#[test]
fn kill_process_kills_with_sigsys() {
    let filter = compile(&profile(
        r#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}]
        }"#,
    ))
    .expect("compile");
    let status = in_child(|| {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain setrlimit with a valid struct; avoids a core dump.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
        load_or_exit(&filter);
        sys2(libc::SYS_getppid, 0, 0);
        3
    });
    match status {
        WaitStatus::Signaled(_, signal, _) => assert_eq!(signal, nix::sys::signal::SIGSYS),
        other => panic!("expected SIGSYS, got {other:?}"),
    }
}

#[test]
fn unknown_syscall_names_are_skipped() {
    let filter = compile(&profile(
        r#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["no_such_syscall_berth", "s390_pci_mmio_write", "getppid"],
                          "action": "SCMP_ACT_ERRNO", "errnoRet": 9}]
        }"#,
    ))
    .expect("unknown names must not fail compilation");
    let status = in_child(|| {
        load_or_exit(&filter);
        if sys2(libc::SYS_getppid, 0, 0) != 9 {
            return 1;
        }
        0
    });
    assert_exit_zero(status);
}

#[test]
fn flags_compile_and_load() {
    let mut config = profile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                      "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_LOG"}]}"#,
    );
    let filter = compile(&config).expect("compile");
    assert_exit_zero(in_child(|| {
        load_or_exit(&filter);
        sys2(libc::SYS_getppid, 0, 0)
    }));

    // WAIT_KILLABLE_RECV needs Linux 5.19; either it compiles or the error
    // names the flag.
    config.set_flags(Some(vec![
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv,
    ]));
    match compile(&config) {
        Ok(_) => {}
        Err(e) => assert!(
            e.to_string()
                .contains("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"),
            "{e}"
        ),
    }
}

#[test]
fn rules_equal_to_the_default_action_are_skipped() {
    let filter = compile(&profile(
        r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}
            ]
        }"#,
    ));
    assert!(filter.is_ok(), "{filter:?}");
}

#[test]
fn bad_profiles_name_the_problem() {
    let cases = [
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["personality"],
                "action": "SCMP_ACT_ERRNO", "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#,
            &["personality", "index 7"][..],
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"],
                "action": "SCMP_ACT_ALLOW", "errnoRet": 5}]}"#,
            &["errnoRet", "SCMP_ACT_ALLOW", "read"][..],
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_KILL", "defaultErrnoRet": 5}"#,
            &["errnoRet", "SCMP_ACT_KILL", "defaultAction"][..],
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#,
            &["SCMP_ACT_NOTIFY", "default"][..],
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
                "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}]}"#,
            &["70000", "read"][..],
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [""],
                "action": "SCMP_ACT_ERRNO"}]}"#,
            &["empty name"][..],
        ),
    ];
    for (json, needles) in cases {
        let err = compile(&profile(json)).expect_err(json).to_string();
        for needle in needles {
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    // Unknown ops, actions and arches are rejected when the spec is parsed.
    for json in [
        r#"{"defaultAction": "SCMP_ACT_NOPE"}"#,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}"#,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
            "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_XX"}]}]}"#,
    ] {
        let err = serde_json::from_str::<LinuxSeccomp>(json).expect_err(json);
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }
}

#[test]
fn all_spec_architectures_map_or_fail_naming_the_arch() {
    use oci_spec::runtime::Arch;
    let arches = [
        Arch::ScmpArchX86,
        Arch::ScmpArchX86_64,
        Arch::ScmpArchX32,
        Arch::ScmpArchArm,
        Arch::ScmpArchAarch64,
        Arch::ScmpArchMips,
        Arch::ScmpArchMips64,
        Arch::ScmpArchMips64n32,
        Arch::ScmpArchMipsel,
        Arch::ScmpArchMipsel64,
        Arch::ScmpArchMipsel64n32,
        Arch::ScmpArchPpc,
        Arch::ScmpArchPpc64,
        Arch::ScmpArchPpc64le,
        Arch::ScmpArchS390,
        Arch::ScmpArchS390x,
        Arch::ScmpArchParisc,
        Arch::ScmpArchParisc64,
        Arch::ScmpArchRiscv64,
        Arch::ScmpArchLoongarch64,
        Arch::ScmpArchM68k,
        Arch::ScmpArchSh,
        Arch::ScmpArchSheb,
    ];
    for arch in arches {
        let mut config = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}]}"#,
        );
        config.set_architectures(Some(vec![arch]));
        if let Err(e) = compile(&config) {
            // libseccomp 2.5 predates loongarch64, m68k and superh.
            assert!(e.to_string().contains(&arch_name(arch)), "{e}");
        }
    }
    // The common ones must work.
    let mut config = profile(r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#);
    config.set_architectures(Some(vec![
        Arch::ScmpArchX86_64,
        Arch::ScmpArchX86,
        Arch::ScmpArchX32,
        Arch::ScmpArchAarch64,
        Arch::ScmpArchArm,
        Arch::ScmpArchS390x,
        Arch::ScmpArchPpc64le,
        Arch::ScmpArchRiscv64,
        Arch::ScmpArchMips,
        Arch::ScmpArchPpc64,
    ]));
    // The big-endian ones cannot share a filter with x86 and are skipped.
    compile(&config).expect("common architectures");
}

#[test]
fn docker_default_profile_runs_programs_and_denies_namespaces() {
    let config = docker_default_profile();
    // Round-trips through the config.json form.
    let json = serde_json::to_string(&config).expect("serialize");
    let reparsed: LinuxSeccomp = serde_json::from_str(&json).expect("parse");
    assert_eq!(reparsed, config);
    assert!(json.contains("SCMP_CMP_MASKED_EQ"));

    let filter = compile(&config).expect("compile docker default");
    let busybox = c"/bin/busybox";
    let status = in_child(|| {
        load_or_exit(&filter);

        // fork + exec busybox true.
        // SAFETY: the grandchild only execs or _exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return 1;
        }
        if pid == 0 {
            let argv = [busybox.as_ptr(), c"true".as_ptr(), std::ptr::null()];
            // SAFETY: argv is a NULL-terminated array of C strings.
            unsafe {
                libc::execv(busybox.as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }
        let mut wstatus = 0;
        // SAFETY: `pid` is our child; wstatus is a valid out-pointer.
        if unsafe { libc::waitpid(pid, &mut wstatus, 0) } != pid
            || !libc::WIFEXITED(wstatus)
            || libc::WEXITSTATUS(wstatus) != 0
        {
            return 2;
        }

        // Namespace creation is denied with EPERM.
        if sys2(
            libc::SYS_unshare,
            libc::c_long::from(libc::CLONE_NEWUSER),
            0,
        ) != libc::EPERM
        {
            return 3;
        }
        let clone_flags = libc::c_long::from(libc::CLONE_NEWUSER | libc::SIGCHLD);
        // SAFETY: a fork-like clone (no new stack); a child, should one be
        // created despite the filter, exits at once.
        let ret = unsafe { libc::syscall(libc::SYS_clone, clone_flags, 0, 0, 0, 0) };
        if ret == 0 {
            // SAFETY: child-only exit.
            unsafe { libc::_exit(0) };
        }
        if ret > 0 || errno() != libc::EPERM {
            return 4;
        }
        if sys2(libc::SYS_clone3, 0, 0) != libc::ENOSYS {
            return 5;
        }
        // AF_VSOCK sockets are denied; others are fine.
        if sys2(libc::SYS_socket, libc::c_long::from(libc::AF_VSOCK), 1) != libc::EPERM {
            return 6;
        }
        if sys2(libc::SYS_socket, libc::c_long::from(libc::AF_UNIX), 1) != 0 {
            return 7;
        }
        // Privileged calls not granted by the default capabilities.
        if sys2(
            libc::SYS_umount2,
            c"/nonexistent".as_ptr() as libc::c_long,
            0,
        ) != libc::EPERM
        {
            return 8;
        }
        if sys2(libc::SYS_personality, 0x0040_0000, 0) != libc::EPERM {
            return 9;
        }
        0
    });
    assert_exit_zero(status);
}

#[test]
fn docker_default_profile_with_sys_admin_allows_namespaces() {
    let caps = [oci_spec::runtime::Capability::SysAdmin]
        .into_iter()
        .collect();
    let config = docker_default_profile_for(&caps);
    let names: Vec<&String> = config
        .syscalls()
        .iter()
        .flatten()
        .filter(|s| s.args().is_none() && s.action() == LinuxSeccompAction::ScmpActAllow)
        .flat_map(|s| s.names())
        .collect();
    for name in ["unshare", "mount", "setns", "clone", "clone3"] {
        assert!(names.iter().any(|n| *n == name), "{name} should be allowed");
    }
    compile(&config).expect("compile");
}

#[test]
fn notify_fd_reaches_the_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let mut config = profile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "listenerMetadata": "hello-agent",
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}]}"#,
    );
    config.set_listener_path(Some(socket.clone()));
    let filter = compile(&config).expect("compile");
    assert!(filter.uses_notify());
    assert_eq!(filter.listener_path(), Some(socket.as_path()));

    let state = State::default();
    let status_pid = {
        // SAFETY: see `in_child`; the child `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let Some(fd) = load_or_exit(&filter) else {
                    return 1;
                };
                // SAFETY: getpid has no preconditions.
                let me = unsafe { libc::getpid() };
                let Ok(json) = process_state_json(&state, me, filter.listener_metadata()) else {
                    return 2;
                };
                let Some(path) = filter.listener_path() else {
                    return 3;
                };
                if send_notify_fd(path, fd.as_fd(), &json).is_err() {
                    return 4;
                }
                drop(fd);
                // Blocks until the agent answers with -EACCES... errno 99.
                if sys2(libc::SYS_getppid, 0, 0) != 99 {
                    return 5;
                }
                0
            }))
            .unwrap_or(101);
            // SAFETY: child-only exit.
            unsafe { libc::_exit(code) };
        }
        Pid::from_raw(pid)
    };

    let (stream, _) = listener.accept().expect("accept");
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let (bytes, notify_fd) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .expect("recvmsg");
        let mut fd = None;
        for c in msg.cmsgs().expect("cmsgs") {
            if let ControlMessageOwned::ScmRights(fds) = c {
                fd = fds.first().copied();
            }
        }
        (msg.bytes, fd.expect("an fd was attached"))
    };
    // SAFETY: the fd came in with SCM_RIGHTS and is ours alone.
    let notify_fd = unsafe { OwnedFd::from_raw_fd(notify_fd) };
    let mut rest = Vec::new();
    let mut stream = stream;
    stream.read_to_end(&mut rest).expect("read rest");
    let mut json = buf[..bytes].to_vec();
    json.extend(rest);
    let value: serde_json::Value = serde_json::from_slice(&json).expect("state json");
    assert_eq!(value["fds"][0], "seccompFd");
    assert_eq!(value["metadata"], "hello-agent");
    assert_eq!(value["pid"], status_pid.as_raw());

    let req = libseccomp::ScmpNotifReq::receive(notify_fd.as_raw_fd()).expect("notification");
    assert_eq!(req.pid, u32::try_from(status_pid.as_raw()).expect("pid"));
    libseccomp::ScmpNotifResp::new_error(req.id, -99, libseccomp::ScmpNotifRespFlags::empty())
        .respond(notify_fd.as_raw_fd())
        .expect("respond");
    let status = waitpid(status_pid, None).expect("waitpid");
    assert_exit_zero(status);
}

#[test]
fn trap_trace_and_kill_thread_actions() {
    let filter = compile(&profile(
        r#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["getppid"], "action": "SCMP_ACT_TRACE", "errnoRet": 3},
                {"names": ["getpgrp"], "action": "SCMP_ACT_TRAP"},
                {"names": ["getsid"], "action": "SCMP_ACT_KILL"}
            ]
        }"#,
    ))
    .expect("compile");
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // Without a tracer, SCMP_ACT_TRACE makes the syscall fail with ENOSYS.
    assert_exit_zero(in_child(|| {
        load_or_exit(&filter);
        i32::from(sys2(libc::SYS_getppid, 0, 0) != libc::ENOSYS)
    }));
    for nr in [libc::SYS_getpgrp, libc::SYS_getsid] {
        let status = in_child(|| {
            // SAFETY: plain setrlimit with a valid struct; avoids a core dump.
            unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
            load_or_exit(&filter);
            sys2(nr, 0, 0);
            3
        });
        match status {
            WaitStatus::Signaled(_, signal, _) => assert_eq!(signal, nix::sys::signal::SIGSYS),
            other => panic!("syscall {nr}: expected SIGSYS, got {other:?}"),
        }
    }
}

/// The program as the kernel gets it, for comparing filters.
fn program_bytes(filter: &SeccompFilter) -> Vec<(u16, u8, u8, u32)> {
    filter
        .program
        .iter()
        .map(|i| (i.code, i.jt, i.jf, i.k))
        .collect()
}

#[test]
fn cached_filters_are_the_compiled_ones_and_bad_files_are_recompiled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join(".seccomp");
    let config = docker_default_profile();
    let compiled = compile(&config).expect("compile");

    // A miss compiles and stores one file; a hit reads it back.
    let first = compile_cached(&config, &cache).expect("miss");
    let files: Vec<_> = std::fs::read_dir(&cache)
        .expect("cache dir made")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let second = compile_cached(&config, &cache).expect("hit");
    for f in [&first, &second] {
        assert_eq!(program_bytes(f), program_bytes(&compiled));
        assert_eq!(f.flags, compiled.flags);
        assert_eq!(f.notify, compiled.notify);
    }

    // Another profile under the same file name (or a file cut short) is
    // not used: the stored key differs, so it is compiled again.
    let other = profile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}]}"#,
    );
    let other_file = {
        let scratch = dir.path().join("scratch");
        compile_cached(&other, &scratch).expect("other");
        let f = std::fs::read_dir(&scratch)
            .expect("scratch")
            .next()
            .expect("one")
            .expect("entry");
        std::fs::read(f.path()).expect("read")
    };
    std::fs::write(&files[0], &other_file).expect("plant");
    assert_eq!(
        program_bytes(&compile_cached(&config, &cache).expect("collision")),
        program_bytes(&compiled)
    );
    let good = std::fs::read(&files[0]).expect("rewritten");
    std::fs::write(&files[0], &good[..good.len() - 8]).expect("truncate");
    let truncated = compile_cached(&config, &cache).expect("truncated");
    assert_eq!(program_bytes(&truncated), program_bytes(&compiled));

    // The cached filter works like the compiled one.
    let status = in_child(|| {
        load_or_exit(&second);
        // Docker's default profile refuses new namespaces without CAP_SYS_ADMIN.
        if sys2(libc::SYS_unshare, libc::CLONE_NEWUTS as libc::c_long, 0) != libc::EPERM {
            return 1;
        }
        0
    });
    assert_exit_zero(status);
}
