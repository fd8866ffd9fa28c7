//! Windows: no signals; a named event carries the stop request. Only
//! `windows-sys`, `std` and tokio are used, so this is type-checked on Linux
//! (`platform/check-os-backends.sh win`); it runs only on the Windows runner.

use std::io;
use std::os::windows::process::CommandExt;
use std::process::{Child, Command};
use std::sync::Arc;

use windows_sys::core::PWSTR;
use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, LocalFree, ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS, HANDLE,
    STILL_ACTIVE, WAIT_OBJECT_0,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    GetTokenInformation, TokenUser, PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES, TOKEN_QUERY,
    TOKEN_USER,
};
use windows_sys::Win32::System::Threading::{
    CreateEventW, GetCurrentProcess, GetExitCodeProcess, OpenEventW, OpenProcess, OpenProcessToken,
    SetEvent, TerminateProcess, WaitForSingleObject, CREATE_BREAKAWAY_FROM_JOB,
    CREATE_NEW_PROCESS_GROUP, DETACHED_PROCESS, EVENT_MODIFY_STATE, INFINITE,
    PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_TERMINATE,
};

use super::{owner_only_sddl, stop_event_name};

/// A kernel handle, closed on drop.
struct Handle(HANDLE);

// SAFETY: a kernel handle may be used from any thread; it is closed once, on drop.
unsafe impl Send for Handle {}
// SAFETY: the only shared use is waiting on it and signalling it, both thread-safe calls.
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: our handle, closed once.
        unsafe { CloseHandle(self.0) };
    }
}

/// Spawns `cmd` without a console and in a new process group, so closing the
/// caller's console or pressing Ctrl-C in it does not end it; out of the
/// caller's job object when the job allows breakaway (otherwise in it: some
/// jobs forbid it, and the spawn then fails with access denied).
pub fn spawn_detached(cmd: &mut Command) -> io::Result<Child> {
    let flags = DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP;
    cmd.creation_flags(flags | CREATE_BREAKAWAY_FROM_JOB);
    match cmd.spawn() {
        Err(e) if e.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) => {
            cmd.creation_flags(flags);
            cmd.spawn()
        }
        other => other,
    }
}

/// Asks the supervisor of `machine` to stop cleanly: signals its stop event.
pub fn request_stop(_pid: u32, machine: &str) -> io::Result<()> {
    let name = wide(&stop_event_name(machine).map_err(io::Error::other)?);
    // SAFETY: a NUL-terminated name that outlives the call.
    let event = unsafe { OpenEventW(EVENT_MODIFY_STATE, 0, name.as_ptr()) };
    if event.is_null() {
        return Err(io::Error::last_os_error());
    }
    let event = Handle(event);
    // SAFETY: a live event handle opened with EVENT_MODIFY_STATE.
    if unsafe { SetEvent(event.0) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Ends `pid` now (`TerminateProcess`).
pub fn kill(pid: u32) -> io::Result<()> {
    if pid == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "pid 0"));
    }
    // SAFETY: no pointers; a null handle is checked below.
    let process = unsafe { OpenProcess(PROCESS_TERMINATE, 0, pid) };
    if process.is_null() {
        return Err(io::Error::last_os_error());
    }
    let process = Handle(process);
    // SAFETY: a live process handle opened with PROCESS_TERMINATE.
    if unsafe { TerminateProcess(process.0, 1) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `pid` runs. A process we may not query (an elevated supervisor,
/// asked from an unelevated prompt) exists, so it counts as alive.
pub fn process_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    // SAFETY: no pointers; a null handle is checked below.
    let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if process.is_null() {
        // SAFETY: reads the calling thread's last error.
        return unsafe { GetLastError() } == ERROR_ACCESS_DENIED;
    }
    let process = Handle(process);
    let mut code = 0u32;
    // SAFETY: a live handle with query access and a valid out pointer.
    let ok = unsafe { GetExitCodeProcess(process.0, &mut code) } != 0;
    // A process that exited with 259 itself would look alive; berth's
    // supervisor never exits with that code.
    ok && code == STILL_ACTIVE as u32
}

/// The supervisor's side of [`request_stop`]: its named stop event, which a
/// thread waits on, and Ctrl-C when it runs in a console.
pub struct StopRequests {
    stopped: tokio::sync::watch::Receiver<bool>,
    ctrl_c: Option<tokio::signal::windows::CtrlC>,
    _event: Arc<Handle>,
}

impl StopRequests {
    /// Creates the machine's stop event; fails with `AlreadyExists` while
    /// another supervisor of the machine holds it. Must be called inside a
    /// tokio runtime.
    pub fn new(machine: &str) -> io::Result<Self> {
        let name = wide(&stop_event_name(machine).map_err(io::Error::other)?);
        let mut security = OwnerOnly::new()?;
        // SAFETY: valid security attributes and a NUL-terminated name that
        // outlive the call; a manual-reset event, initially unsignalled.
        let event = unsafe { CreateEventW(security.as_ptr().cast(), 1, 0, name.as_ptr()) };
        if event.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: reads the calling thread's last error, set by CreateEventW.
        let existed = unsafe { GetLastError() } == ERROR_ALREADY_EXISTS;
        let event = Arc::new(Handle(event));
        if existed {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("another supervisor of machine {machine} is running"),
            ));
        }
        let (tx, stopped) = tokio::sync::watch::channel(false);
        let waited = Arc::clone(&event);
        std::thread::Builder::new()
            .name("stop-event".into())
            .spawn(move || {
                // SAFETY: a live event handle, kept open by `waited`.
                if unsafe { WaitForSingleObject(waited.0, INFINITE) } == WAIT_OBJECT_0 {
                    let _ = tx.send(true);
                }
            })?;
        Ok(Self {
            stopped,
            // Without a console (the detached supervisor) there is no Ctrl-C.
            ctrl_c: tokio::signal::windows::ctrl_c().ok(),
            _event: event,
        })
    }

    /// Resolves when a stop was requested (also one that came before).
    pub async fn wait(&mut self) {
        let event = async {
            if self.stopped.wait_for(|s| *s).await.is_err() {
                // The waiting thread failed: only Ctrl-C is left.
                std::future::pending::<()>().await;
            }
        };
        let ctrl_c = async {
            match &mut self.ctrl_c {
                Some(c) => {
                    c.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = event => {}
            _ = ctrl_c => {}
        }
    }
}

/// Security attributes granting access to SYSTEM, the Administrators and the
/// user of this process only ([`owner_only_sddl`]), for the stop event and
/// the API pipe.
pub(crate) struct OwnerOnly {
    descriptor: PSECURITY_DESCRIPTOR,
    attributes: SECURITY_ATTRIBUTES,
}

// SAFETY: the descriptor is a private heap block, never changed after
// creation and freed once, on drop; only read by the calls it is passed to.
unsafe impl Send for OwnerOnly {}

impl OwnerOnly {
    pub(crate) fn new() -> io::Result<Self> {
        let sddl = wide(&owner_only_sddl(&current_user_sid()?));
        let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: a NUL-terminated SDDL string and an out pointer that
        // outlive the call; the size is not wanted (null).
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut descriptor,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            descriptor,
            attributes: SECURITY_ATTRIBUTES {
                nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
                lpSecurityDescriptor: descriptor,
                bInheritHandle: 0,
            },
        })
    }

    /// A `SECURITY_ATTRIBUTES` pointer, valid while `self` is.
    pub(crate) fn as_ptr(&mut self) -> *mut SECURITY_ATTRIBUTES {
        &mut self.attributes
    }
}

impl Drop for OwnerOnly {
    fn drop(&mut self) {
        // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW,
        // which documents LocalFree; freed once.
        unsafe { LocalFree(self.descriptor) };
    }
}

/// The SID of this process's user as a string (`S-1-5-21-…`); an elevated
/// process has its user's SID too.
fn current_user_sid() -> io::Result<String> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the pseudo handle of this process and a valid out pointer.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let token = Handle(token);
    let mut len = 0u32;
    // SAFETY: asks only for the size (no buffer); fails with
    // ERROR_INSUFFICIENT_BUFFER, which is expected.
    unsafe { GetTokenInformation(token.0, TokenUser, std::ptr::null_mut(), 0, &mut len) };
    // u64s, so the buffer is aligned for TOKEN_USER.
    let mut buf = vec![0u64; (len as usize).div_ceil(8).max(1)];
    let size = u32::try_from(buf.len() * 8).unwrap_or(u32::MAX);
    // SAFETY: buf is valid and writable for `size` bytes.
    let ok =
        unsafe { GetTokenInformation(token.0, TokenUser, buf.as_mut_ptr().cast(), size, &mut len) };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success buf starts with a TOKEN_USER (aligned: u64 buffer);
    // its SID points into buf, which lives until the end of this function.
    let sid = unsafe { (*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid };
    let mut text: PWSTR = std::ptr::null_mut();
    // SAFETY: a valid SID and an out pointer.
    if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut n = 0;
    // SAFETY: the string is NUL-terminated (ConvertSidToStringSidW's promise).
    while unsafe { *text.add(n) } != 0 {
        n += 1;
    }
    // SAFETY: n u16s were just read.
    let sid = String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(text, n) });
    // SAFETY: LocalAlloc'd by ConvertSidToStringSidW, freed once.
    unsafe { LocalFree(text.cast()) };
    Ok(sid)
}

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}
