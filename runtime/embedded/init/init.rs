//! `init`: the process `docker run --init` puts at pid 1 of a container. The engine bind-mounts
//! it read-only at `/sbin/docker-init` and runs `/sbin/docker-init -- <entrypoint> <cmd>…`, as
//! Docker does with tini. It behaves as tini does without options:
//!
//! - it starts the program as its only child, in a process group of its own that it makes the
//!   terminal's foreground group when stdin is a terminal, with the signal mask it was given;
//! - it ignores SIGTTIN and SIGTTOU itself (it stays in the background once the child owns the
//!   terminal, and `docker run -it` proxies the ones its own client gets) and restores their
//!   default action in the child;
//! - it forwards every other signal it receives to that child (all but SIGCHLD; the synchronous
//!   faults SIGSEGV, SIGBUS, … are left unblocked to end the init itself). As pid 1 of a PID
//!   namespace it would otherwise get no signal it has no handler for: blocked signals still
//!   arrive, and it collects them with `rt_sigtimedwait`;
//! - it reaps every process that ends up its child (orphans are reparented to pid 1, or to it as a
//!   subreaper when it is not pid 1), so no zombie stays behind;
//! - it exits when the child exits, with the child's exit status, or 128+N when signal N killed
//!   it. A program it cannot execute is reported on stderr, with exit status 127 when it does not
//!   exist and 126 otherwise (as a shell does).
//!
//! No libc, no loader: `#![no_std]` on `../nostd/rt.rs`, built by `build.rs` into a static
//! executable of a few kilobytes that runs in any root filesystem.

#![no_std]
#![no_main]

#[path = "../nostd/rt.rs"]
mod rt;

use rt::{nr, syscall4};

const SIGCHLD: usize = 17;
/// Signals raised by a fault of the process itself: forwarding them makes no sense, and leaving
/// them unblocked lets them end the init as they would any process.
const SYNCHRONOUS: [usize; 7] = [
    4,  // SIGILL
    5,  // SIGTRAP
    6,  // SIGABRT
    7,  // SIGBUS
    8,  // SIGFPE
    11, // SIGSEGV
    31, // SIGSYS
];

/// Terminal job-control signals: ignored by the init, default in the child (tini does the same).
const SIGTTIN: usize = 21;
const SIGTTOU: usize = 22;
const SIG_DFL: usize = 0;
const SIG_IGN: usize = 1;

const SIG_SETMASK: usize = 2;
const SIGSET_SIZE: usize = 8;
const WNOHANG: usize = 1;
const PR_SET_CHILD_SUBREAPER: usize = 36;
const TIOCSPGRP: usize = 0x5410;

const ENOENT: isize = 2;
const EACCES: isize = 13;
const ENOTDIR: isize = 20;

const DEFAULT_PATH: &[u8] = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The NUL-terminated string at `p`, without its NUL.
///
/// # Safety
/// `p` must point at a NUL-terminated string that lives as long as the program (argv and envp
/// strings do).
unsafe fn c_str(p: *const u8) -> &'static [u8] {
    let mut len = 0;
    // SAFETY: the caller guarantees a NUL terminator; we read up to it.
    while unsafe { *p.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `len` bytes from `p` were just read.
    unsafe { core::slice::from_raw_parts(p, len) }
}

fn say(parts: &[&[u8]]) {
    let mut line = [0u8; 512];
    let mut len = 0;
    for part in parts.iter().chain([&b"\n"[..]].iter()) {
        for &b in part.iter() {
            if let Some(slot) = line.get_mut(len) {
                *slot = b;
                len += 1;
            }
        }
    }
    rt::write_all(2, &line[..len]);
}

fn error_text(errno: isize) -> &'static [u8] {
    match errno {
        ENOENT => b"no such file or directory",
        EACCES => b"permission denied",
        ENOTDIR => b"not a directory",
        7 => b"argument list too long",
        8 => b"exec format error",
        12 => b"cannot allocate memory",
        21 => b"is a directory",
        40 => b"too many levels of symbolic links",
        _ => b"error",
    }
}

fn sigprocmask(set: &u64, old: Option<&mut u64>) {
    let old = old.map_or(0, |o| o as *mut u64 as usize);
    // SAFETY: both pointers are to live u64 signal sets (or null for `old`).
    unsafe {
        syscall4(
            nr::RT_SIGPROCMASK,
            SIG_SETMASK,
            set as *const u64 as usize,
            old,
            SIGSET_SIZE,
        );
    }
}

/// Sets the disposition of `signal` to SIG_DFL or SIG_IGN (no handler, so no restorer).
fn set_disposition(signal: usize, disposition: usize) {
    // The kernel's struct sigaction on x86_64 and aarch64: handler, flags, restorer, mask.
    let action: [u64; 4] = [disposition as u64, 0, 0, 0];
    // SAFETY: `action` is a live kernel sigaction; no old action is asked for.
    unsafe {
        syscall4(
            nr::RT_SIGACTION,
            signal,
            action.as_ptr() as usize,
            0,
            SIGSET_SIZE,
        )
    };
}

/// execve with `argv[0]` looked up in `PATH` the way execvp does; returns only on failure, with
/// the errno to report.
///
/// # Safety
/// `argv` and `envp` must be the kernel's null-terminated arrays of NUL-terminated strings.
unsafe fn exec(argv: *const *const u8, envp: *const *const u8) -> isize {
    // SAFETY: argv[0] exists (checked by the caller) and is NUL-terminated.
    let program = unsafe { c_str(*argv) };
    if program.contains(&b'/') {
        // SAFETY: the caller's arrays, passed on unchanged.
        return unsafe { syscall4(nr::EXECVE, *argv as usize, argv as usize, envp as usize, 0) };
    }
    let mut path_var = DEFAULT_PATH;
    let mut e = envp;
    // SAFETY: envp is null-terminated; each entry is NUL-terminated.
    while let Some(entry) = unsafe { (*e).as_ref() } {
        // SAFETY: as above.
        let var = unsafe { c_str(entry) };
        if let Some(value) = var.strip_prefix(b"PATH=") {
            path_var = value;
            break;
        }
        // SAFETY: not past the terminating null, which ended the loop.
        e = unsafe { e.add(1) };
    }
    let mut result = -ENOENT;
    let mut denied = false;
    let mut candidate = [0u8; 4096];
    for dir in path_var.split(|&b| b == b':') {
        let dir = if dir.is_empty() { &b"."[..] } else { dir };
        let len = dir.len() + 1 + program.len();
        if len >= candidate.len() {
            continue;
        }
        candidate[..dir.len()].copy_from_slice(dir);
        candidate[dir.len()] = b'/';
        candidate[dir.len() + 1..len].copy_from_slice(program);
        candidate[len] = 0;
        // SAFETY: `candidate` is NUL-terminated; argv and envp are the caller's arrays.
        result = unsafe {
            syscall4(
                nr::EXECVE,
                candidate.as_ptr() as usize,
                argv as usize,
                envp as usize,
                0,
            )
        };
        match -result {
            ENOENT | ENOTDIR => {}
            EACCES => denied = true,
            _ => return result,
        }
    }
    if denied {
        -EACCES
    } else {
        result
    }
}

/// In the child: its own process group, the terminal (if any) given to it, the original signal
/// mask, then the program.
///
/// # Safety
/// As [`exec`].
unsafe fn run_child(argv: *const *const u8, envp: *const *const u8, mask: &u64) -> ! {
    // SAFETY: setpgid(0, 0) takes integers.
    unsafe { syscall4(nr::SETPGID, 0, 0, 0, 0) };
    let pgrp = rt::getpid() as i32;
    // Fails with ENOTTY without a terminal, which is fine. SIGTTOU is still blocked here, so a
    // background group may take the terminal.
    // SAFETY: TIOCSPGRP reads a pid_t that lives for the call.
    unsafe { syscall4(nr::IOCTL, 0, TIOCSPGRP, &pgrp as *const i32 as usize, 0) };
    // exec keeps ignored signals ignored: give the program the default job control back.
    set_disposition(SIGTTIN, SIG_DFL);
    set_disposition(SIGTTOU, SIG_DFL);
    sigprocmask(mask, None);
    // SAFETY: the caller's arrays, passed on.
    let errno = -unsafe { exec(argv, envp) };
    // SAFETY: argv[0] exists and is NUL-terminated.
    let program = unsafe { c_str(*argv) };
    let reason = if errno == ENOENT && !program.contains(&b'/') {
        &b"executable file not found in $PATH"[..]
    } else {
        error_text(errno)
    };
    say(&[b"docker-init: exec ", program, b" failed: ", reason]);
    rt::exit(if errno == ENOENT || errno == ENOTDIR {
        127
    } else {
        126
    })
}

/// The exit status to report for a wait(2) status.
fn exit_status(status: i32) -> i32 {
    let signal = status & 0x7f;
    if signal == 0 {
        (status >> 8) & 0xff
    } else {
        128 + signal
    }
}

extern "C" fn program_main(stack: *const usize) -> ! {
    // SAFETY: the kernel's initial stack: argc, then argc argv pointers and a null, then envp.
    let (argc, argv, envp) = unsafe {
        let argc = *stack;
        let argv = stack.add(1) as *const *const u8;
        (argc, argv, argv.add(argc + 1))
    };
    let mut first = 1;
    // SAFETY: index 1 is within argv when argc > 1; argv strings are NUL-terminated.
    if argc > 1 && unsafe { c_str(*argv.add(1)) } == b"--" {
        first = 2;
    }
    if argc <= first {
        say(&[b"usage: docker-init [--] PROGRAM [ARGS...]"]);
        rt::exit(1);
    }
    // SAFETY: `first` < argc, so this is an argv entry; the rest stays null-terminated.
    let child_argv = unsafe { argv.add(first) };

    set_disposition(SIGTTIN, SIG_IGN);
    set_disposition(SIGTTOU, SIG_IGN);
    let mut blocked: u64 = !0;
    for signal in SYNCHRONOUS.iter().chain(&[SIGTTIN, SIGTTOU]) {
        blocked &= !(1 << (signal - 1));
    }
    let mut original: u64 = 0;
    sigprocmask(&blocked, Some(&mut original));
    if rt::getpid() != 1 {
        // Not pid 1 (as under `docker run --pid=host`): orphans still come to us.
        // SAFETY: prctl with integer arguments.
        unsafe { syscall4(nr::PRCTL, PR_SET_CHILD_SUBREAPER, 1, 0, 0) };
    }

    // SAFETY: clone with only SIGCHLD and no new stack is fork(2).
    let child = unsafe { syscall4(nr::CLONE, SIGCHLD, 0, 0, 0) };
    if child < 0 {
        say(&[b"docker-init: fork failed: ", error_text(-child)]);
        rt::exit(1);
    }
    if child == 0 {
        // SAFETY: the kernel's argv/envp arrays.
        unsafe { run_child(child_argv, envp, &original) }
    }

    loop {
        // SAFETY: the set is a live u64; no siginfo and no timeout are asked for.
        let signal = unsafe {
            syscall4(
                nr::RT_SIGTIMEDWAIT,
                &blocked as *const u64 as usize,
                0,
                0,
                SIGSET_SIZE,
            )
        };
        if signal > 0 && signal as usize != SIGCHLD {
            // SAFETY: kill takes integers.
            unsafe { syscall4(nr::KILL, child as usize, signal as usize, 0, 0) };
        }
        // Reap whatever has exited: the child and any orphan.
        let mut child_status = None;
        loop {
            let mut status: i32 = 0;
            // SAFETY: wait4 writes the status into the live i32; no rusage is asked for.
            let pid = unsafe {
                syscall4(
                    nr::WAIT4,
                    -1isize as usize,
                    &mut status as *mut i32 as usize,
                    WNOHANG,
                    0,
                )
            };
            if pid <= 0 {
                break;
            }
            if pid == child {
                child_status = Some(status);
            }
        }
        if let Some(status) = child_status {
            rt::exit(exit_status(status));
        }
    }
}
