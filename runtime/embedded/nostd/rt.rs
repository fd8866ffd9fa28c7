//! What the crate's `#![no_std]`, `#![no_main]` programs (`hello`, `init`) have instead of libc:
//! the process entry point, raw Linux system calls through inline assembly (x86_64 and aarch64),
//! the memory functions the compiler may call, and `write`/`exit`.
//!
//! A program includes this file with `#[path = "../nostd/rt.rs"] mod rt;` and defines
//! `extern "C" fn program_main(stack: *const usize) -> !`. `_start` calls it with the initial
//! stack pointer, where the kernel put `argc`, then the `argv` pointers and a null, then the
//! `envp` pointers and a null.

// Each program uses only some of the calls.
#![allow(dead_code)]

use core::arch::asm;

/// System call numbers.
#[cfg(target_arch = "x86_64")]
pub mod nr {
    pub const READ: usize = 0;
    pub const WRITE: usize = 1;
    pub const CLOSE: usize = 3;
    pub const RT_SIGACTION: usize = 13;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const IOCTL: usize = 16;
    pub const GETPID: usize = 39;
    pub const CLONE: usize = 56;
    pub const EXECVE: usize = 59;
    pub const WAIT4: usize = 61;
    pub const KILL: usize = 62;
    pub const UNAME: usize = 63;
    pub const SETPGID: usize = 109;
    pub const RT_SIGTIMEDWAIT: usize = 128;
    pub const PRCTL: usize = 157;
    pub const EXIT_GROUP: usize = 231;
    pub const OPENAT: usize = 257;
}

/// System call numbers (the generic table).
#[cfg(target_arch = "aarch64")]
pub mod nr {
    pub const IOCTL: usize = 29;
    pub const OPENAT: usize = 56;
    pub const CLOSE: usize = 57;
    pub const READ: usize = 63;
    pub const WRITE: usize = 64;
    pub const EXIT_GROUP: usize = 94;
    pub const KILL: usize = 129;
    pub const RT_SIGACTION: usize = 134;
    pub const RT_SIGPROCMASK: usize = 135;
    pub const RT_SIGTIMEDWAIT: usize = 137;
    pub const SETPGID: usize = 154;
    pub const UNAME: usize = 160;
    pub const PRCTL: usize = 167;
    pub const GETPID: usize = 172;
    pub const CLONE: usize = 220;
    pub const EXECVE: usize = 221;
    pub const WAIT4: usize = 260;
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the embedded programs support x86_64 and aarch64 only");

/// Issues system call `n` with up to six arguments; returns the kernel's raw result (negative
/// errno on failure).
///
/// # Safety
/// The arguments must be valid for system call `n` (pointers to memory of the right size).
#[cfg(target_arch = "x86_64")]
pub unsafe fn syscall6(
    n: usize,
    a: usize,
    b: usize,
    c: usize,
    d: usize,
    e: usize,
    f: usize,
) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 Linux system call ABI; rcx and r11 are clobbered by `syscall`. The
    // caller guarantees the arguments are valid for this call.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a, in("rsi") b,
             in("rdx") c, in("r10") d, in("r8") e, in("r9") f, lateout("rcx") _,
             lateout("r11") _, options(nostack));
    }
    ret
}

/// Issues system call `n` with up to six arguments; returns the kernel's raw result (negative
/// errno on failure).
///
/// # Safety
/// The arguments must be valid for system call `n` (pointers to memory of the right size).
#[cfg(target_arch = "aarch64")]
pub unsafe fn syscall6(
    n: usize,
    a: usize,
    b: usize,
    c: usize,
    d: usize,
    e: usize,
    f: usize,
) -> isize {
    let ret: isize;
    // SAFETY: the aarch64 Linux system call ABI (number in x8, result in x0). The caller
    // guarantees the arguments are valid for this call.
    unsafe {
        asm!("svc 0", in("x8") n, inlateout("x0") a as isize => ret, in("x1") b, in("x2") c,
             in("x3") d, in("x4") e, in("x5") f, options(nostack));
    }
    ret
}

/// [`syscall6`] with four arguments.
///
/// # Safety
/// As [`syscall6`].
pub unsafe fn syscall4(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    // SAFETY: the caller's guarantee, passed on.
    unsafe { syscall6(n, a, b, c, d, 0, 0) }
}

/// Writes all of `bytes` to `fd`; false if the kernel refused.
pub fn write_all(fd: usize, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length describe a live slice.
        let n = unsafe { syscall4(nr::WRITE, fd, bytes.as_ptr() as usize, bytes.len(), 0) };
        if n <= 0 {
            return false;
        }
        bytes = bytes.get(n as usize..).unwrap_or(&[]);
    }
    true
}

pub fn exit(code: i32) -> ! {
    loop {
        // SAFETY: exit_group takes a plain integer and does not return.
        unsafe {
            syscall4(nr::EXIT_GROUP, code as usize, 0, 0, 0);
        }
    }
}

pub fn getpid() -> usize {
    // SAFETY: getpid takes no arguments and cannot fail.
    unsafe { syscall4(nr::GETPID, 0, 0, 0, 0) as usize }
}

/// The memory functions the compiler may call (`memcpy` for large copies, `bcmp` for slice
/// equality, `strlen` for a loop that finds a NUL, …), which libc would otherwise provide. Writes go through volatile stores so that
/// the optimiser cannot turn these loops back into calls to themselves.
mod mem {
    #[no_mangle]
    unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        for i in 0..n {
            // SAFETY: the caller passes `n` valid bytes at both `src` and `dst`.
            unsafe { dst.add(i).write_volatile(*src.add(i)) };
        }
        dst
    }

    #[no_mangle]
    unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        if (dst as usize) <= (src as usize) {
            for i in 0..n {
                // SAFETY: as memcpy; copying forwards is safe when `dst` precedes `src`.
                unsafe { dst.add(i).write_volatile(*src.add(i)) };
            }
        } else {
            for i in (0..n).rev() {
                // SAFETY: as memcpy; copying backwards is safe when `dst` follows `src`.
                unsafe { dst.add(i).write_volatile(*src.add(i)) };
            }
        }
        dst
    }

    #[no_mangle]
    unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
        for i in 0..n {
            // SAFETY: the caller passes `n` writable bytes at `dst`.
            unsafe { dst.add(i).write_volatile(c as u8) };
        }
        dst
    }

    #[no_mangle]
    unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        for i in 0..n {
            // SAFETY: the caller passes `n` readable bytes at both pointers.
            let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
            if x != y {
                return i32::from(x) - i32::from(y);
            }
        }
        0
    }

    #[no_mangle]
    unsafe extern "C" fn strlen(s: *const u8) -> usize {
        let mut n = 0;
        // SAFETY: the caller passes a NUL-terminated string; reads stop at its NUL.
        while unsafe { s.add(n).read_volatile() } != 0 {
            n += 1;
        }
        n
    }

    #[no_mangle]
    unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: the same contract as memcmp.
        unsafe { memcmp(a, b, n) }
    }
}

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {main}",
    "ud2",
    main = sym crate::program_main,
);

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "mov x29, xzr",
    "mov x30, xzr",
    "mov x0, sp",
    "bl {main}",
    "brk #0",
    main = sym crate::program_main,
);

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(101)
}
