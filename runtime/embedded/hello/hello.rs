//! `hello`: the program inside Berth's embedded `hello` image.
//!
//! It greets, reports its pid and hostname, and lists a few facts it can see from inside its
//! container (its cgroup, how many capabilities it holds, whether a seccomp filter is on). Every
//! claim it prints is read from the kernel, never assumed.
//!
//! It has no libc and no dynamic loader: `#![no_std]`, with the entry point and raw system calls of
//! `../nostd/rt.rs` (x86_64 and aarch64), so the image needs nothing but this one file. `build.rs`
//! compiles it with the host's `rustc` into a static executable of a few kilobytes.

#![no_std]
#![no_main]

#[path = "../nostd/rt.rs"]
mod rt;

/// The system calls `hello` makes beyond the runtime's.
mod sys {
    use crate::rt::{nr, syscall4};

    pub use crate::rt::{exit, getpid, write_all};

    /// `struct utsname`: six NUL-padded fields of 65 bytes each.
    pub struct Utsname(pub [[u8; 65]; 6]);

    /// The node name (hostname) from uname(2), without its NUL padding.
    pub fn hostname(uts: &mut Utsname) -> &[u8] {
        // SAFETY: the buffer is a `struct utsname`, which uname fills in.
        let ret = unsafe { syscall4(nr::UNAME, uts.0.as_mut_ptr() as usize, 0, 0, 0) };
        if ret < 0 {
            return b"?";
        }
        let node = &uts.0[1];
        let len = node.iter().position(|&b| b == 0).unwrap_or(node.len());
        &node[..len]
    }

    /// Reads the start of the file at `path` (NUL-terminated) into `buf`; `None` if it cannot
    /// be opened or read.
    pub fn read_file<'a>(path: &[u8], buf: &'a mut [u8]) -> Option<&'a [u8]> {
        const AT_FDCWD: isize = -100;
        const O_RDONLY_CLOEXEC: usize = 0o2000000;
        if path.last() != Some(&0) {
            return None;
        }
        // SAFETY: `path` is NUL-terminated (checked above) and outlives the call.
        let fd = unsafe {
            syscall4(
                nr::OPENAT,
                AT_FDCWD as usize,
                path.as_ptr() as usize,
                O_RDONLY_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return None;
        }
        let mut len = 0;
        while len < buf.len() {
            let rest = &mut buf[len..];
            // SAFETY: the pointer and length describe the unfilled tail of `buf`.
            let n = unsafe {
                syscall4(
                    nr::READ,
                    fd as usize,
                    rest.as_mut_ptr() as usize,
                    rest.len(),
                    0,
                )
            };
            if n <= 0 {
                break;
            }
            len += n as usize;
        }
        // SAFETY: closing the descriptor opened above, used nowhere else.
        unsafe {
            syscall4(nr::CLOSE, fd as usize, 0, 0, 0);
        }
        if len == 0 {
            None
        } else {
            Some(&buf[..len])
        }
    }
}

/// A fixed-size output buffer; text past its end is dropped.
struct Out {
    buf: [u8; 1024],
    len: usize,
}

impl Out {
    fn put(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    fn num(&mut self, mut n: usize) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 || i == 0 {
                break;
            }
        }
        self.put(&digits[i..]);
    }

    /// Writes `bytes` with anything outside printable ASCII (and `"`/`\`) shown as `?`, so a
    /// strange hostname or cgroup path cannot inject terminal escapes.
    fn put_clean(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let ok = (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
            self.put(&[if ok { b } else { b'?' }]);
        }
    }
}

/// The value after `key` on the line of `/proc/self/status` that starts with it.
fn status_field<'a>(status: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    status
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(key))
        .map(|v| v.trim_ascii())
}

/// Number of bits set in a hexadecimal capability mask such as `00000000a80425fb`.
fn count_caps(hex: &[u8]) -> Option<u32> {
    let mut count = 0;
    for &c in hex {
        let nibble = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        count += nibble.count_ones();
    }
    Some(count)
}

/// The cgroup path to report from `/proc/self/cgroup`: the v1 memory controller's if there is
/// one (hybrid hosts), otherwise the v2 unified one (`0::/path`).
fn cgroup_path(cgroup: &[u8]) -> Option<&[u8]> {
    let mut unified = None;
    for line in cgroup.split(|&b| b == b'\n') {
        let mut parts = line.splitn(3, |&b| b == b':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(|&b| b == b',').any(|c| c == b"memory") {
            return Some(path);
        }
        if id == b"0" && controllers.is_empty() {
            unified = Some(path);
        }
    }
    unified
}

extern "C" fn program_main(_stack: *const usize) -> ! {
    let mut out = Out {
        buf: [0; 1024],
        len: 0,
    };
    let pid = sys::getpid();
    let mut uts = sys::Utsname([[0; 65]; 6]);
    let host = sys::hostname(&mut uts);

    out.put(b"Hello from Berth! I am pid ");
    out.num(pid);
    out.put(b" on host \"");
    out.put_clean(host);
    if pid == 1 {
        out.put(b"\", running in a container.\n");
    } else {
        out.put(b"\", not pid 1, so probably not in a container.\n");
    }

    out.put(b"From in here I see:");
    let mut sep: &[u8] = b" ";
    if pid == 1 {
        out.put(b" my own pid namespace (I am its pid 1)");
        sep = b", ";
    }
    let mut status_buf = [0u8; 2048];
    let mut cgroup_buf = [0u8; 2048];
    let status = sys::read_file(b"/proc/self/status\0", &mut status_buf);
    let cgroup = sys::read_file(b"/proc/self/cgroup\0", &mut cgroup_buf);
    if status.is_none() && cgroup.is_none() {
        out.put(sep);
        out.put(b"no /proc mounted, so nothing more to report.\n");
    } else {
        if let Some(path) = cgroup.and_then(cgroup_path) {
            out.put(sep);
            out.put(b"cgroup \"");
            out.put_clean(path);
            out.put(b"\"");
            sep = b", ";
        }
        if let Some(status) = status {
            if let Some(n) = status_field(status, b"CapEff:").and_then(count_caps) {
                out.put(sep);
                out.num(n as usize);
                out.put(b" effective capabilities");
                sep = b", ";
            }
            let seccomp: &[u8] = match status_field(status, b"Seccomp:") {
                Some(b"0") => b"no seccomp filter",
                Some(b"1") => b"seccomp strict mode",
                Some(b"2") => b"a seccomp filter",
                _ => b"",
            };
            if !seccomp.is_empty() {
                out.put(sep);
                out.put(seccomp);
            }
        }
        out.put(b".\n");
    }

    let ok = sys::write_all(1, &out.buf[..out.len]);
    sys::exit(if ok { 0 } else { 1 })
}
