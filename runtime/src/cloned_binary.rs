//! Protection against the runtime binary being overwritten from inside a
//! container (the class of CVE-2019-5736).
//!
//! A process in the container can reach the runtime's own executable through
//! `/proc/<pid>/exe` while the runtime sets the container up, or by making the
//! container's entrypoint `#!/proc/self/exe`. If the runtime runs from a
//! sealed, in-memory copy of itself, those paths lead to the copy, which the
//! kernel refuses to modify, and the file on disk is never exposed.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum ClonedBinaryError {
    #[error("opening the executable to copy: {0}")]
    OpenSelf(std::io::Error),
    #[error("creating the in-memory copy of the runtime: {0}")]
    Memfd(std::io::Error),
    #[error("copying the runtime into memory: {0}")]
    Copy(std::io::Error),
    #[error("sealing the in-memory copy: {0}")]
    Seal(std::io::Error),
    #[error("re-executing from the in-memory copy: {0}")]
    Exec(std::io::Error),
}

/// No resizing and no further seal changes.
const FIXED_SEALS: libc::c_int = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
/// No writes. `F_SEAL_FUTURE_WRITE` is as strong as `F_SEAL_WRITE` here (nothing maps the
/// copy writable), and unlike it the kernel does not first wait for every extra reference to
/// the copy's pages to go: references its per-CPU page batches still held from the copy
/// made sealing fail with EBUSY now and then. `F_SEAL_WRITE` where the kernel (before 5.1)
/// has no `F_SEAL_FUTURE_WRITE`.
const WRITE_SEALS: [libc::c_int; 2] = [libc::F_SEAL_FUTURE_WRITE, libc::F_SEAL_WRITE];

/// Whether the running executable is a sealed memfd.
pub fn is_cloned() -> Result<bool, ClonedBinaryError> {
    let exe = File::open("/proc/self/exe").map_err(ClonedBinaryError::OpenSelf)?;
    // SAFETY: F_GET_SEALS takes no argument; fd is valid for the call.
    let seals = unsafe { libc::fcntl(exe.as_raw_fd(), libc::F_GET_SEALS) };
    Ok(seals >= 0
        && seals & FIXED_SEALS == FIXED_SEALS
        && WRITE_SEALS.iter().any(|w| seals & w != 0))
}

/// Re-executes the current program from a sealed memfd copy unless it already
/// runs from one. Returns only if it already was a clone; otherwise the
/// process image is replaced (same argv and environment).
pub fn ensure_cloned() -> Result<(), ClonedBinaryError> {
    if is_cloned()? {
        return Ok(());
    }
    let memfd = clone_self()?;
    let argv: Vec<CString> = std::env::args_os()
        .filter_map(|a| CString::new(a.into_encoded_bytes()).ok())
        .collect();
    let envp: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let mut argv_ptrs: Vec<*mut libc::c_char> =
        argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut envp_ptrs: Vec<*mut libc::c_char> =
        envp.iter().map(|a| a.as_ptr().cast_mut()).collect();
    envp_ptrs.push(std::ptr::null_mut());
    let empty = c"";
    // SAFETY: argv and envp are NULL-terminated arrays of valid C strings that
    // outlive the call; AT_EMPTY_PATH executes the fd itself. The memfd is
    // close-on-exec, which is fine for an ELF binary (no interpreter needs
    // to reopen it).
    unsafe {
        libc::execveat(
            memfd.as_raw_fd(),
            empty.as_ptr(),
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    Err(ClonedBinaryError::Exec(std::io::Error::last_os_error()))
}

fn clone_self() -> Result<OwnedFd, ClonedBinaryError> {
    let exe = File::open("/proc/self/exe").map_err(ClonedBinaryError::OpenSelf)?;
    sealed_copy(&exe)
}

/// A sealed in-memory copy of the executable at `path`, for a caller that
/// starts it many times: run as `/proc/self/fd/<fd>`, the program finds
/// itself already cloned and [`ensure_cloned`] neither copies nor re-executes.
/// The copy is close-on-exec in the caller.
pub fn sealed_copy_of(path: &std::path::Path) -> Result<OwnedFd, ClonedBinaryError> {
    let exe = File::open(path).map_err(ClonedBinaryError::OpenSelf)?;
    sealed_copy(&exe)
}

fn sealed_copy(exe: &File) -> Result<OwnedFd, ClonedBinaryError> {
    let size = exe.metadata().map_err(ClonedBinaryError::OpenSelf)?.len();
    // SAFETY: memfd_create takes a NUL-terminated name and flags.
    let raw = unsafe {
        libc::memfd_create(
            c"berth-runc".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if raw < 0 {
        return Err(ClonedBinaryError::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create returned a new fd that nothing else owns.
    let memfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut copied: u64 = 0;
    while copied < size {
        let chunk = usize::try_from(size - copied).unwrap_or(usize::MAX);
        // SAFETY: both fds are valid; a NULL offset uses and advances the
        // file offsets.
        let n = unsafe {
            libc::sendfile(
                memfd.as_raw_fd(),
                exe.as_raw_fd(),
                std::ptr::null_mut(),
                chunk,
            )
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(ClonedBinaryError::Copy(err));
        }
        if n == 0 {
            break;
        }
        copied += n as u64;
    }
    for write_seal in WRITE_SEALS {
        // SAFETY: F_ADD_SEALS with a seal bitmask on a valid memfd.
        if unsafe {
            libc::fcntl(
                memfd.as_raw_fd(),
                libc::F_ADD_SEALS,
                FIXED_SEALS | write_seal,
            )
        } == 0
        {
            return Ok(memfd);
        }
        let err = std::io::Error::last_os_error();
        // EINVAL: a seal this kernel does not know; try the next.
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(ClonedBinaryError::Seal(err));
        }
    }
    Err(ClonedBinaryError::Seal(std::io::Error::from_raw_os_error(
        libc::EINVAL,
    )))
}
