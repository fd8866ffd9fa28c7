//! Windows: the Host Compute Service runs the Linux utility VM described by
//! [`super::hcs_doc`]; the host reaches guest vsock port P as the Hyper-V
//! socket service [`crate::vsock::hyperv_service_guid`]`(P)` of the VM's
//! runtime id. The VM's COM1 is a named pipe copied into the console log.
//! With outbound networking, the machine's HNS endpoint ([`super::hns`]) is
//! made before the compute system and deleted after it.
//!
//! Only `windows-sys` and `std` are used here, so the file is type-checked
//! on Linux against the real declarations; it has never run. Needs an
//! elevated caller (Administrators or Hyper-V Administrators) and the
//! Hyper-V feature. Assumptions are marked where they are made.

use std::io::Write;
use std::path::{Path, PathBuf};

use windows_sys::core::{HRESULT, PCWSTR, PWSTR};
use windows_sys::Win32::Foundation::{
    CloseHandle, LocalFree, ERROR_PIPE_CONNECTED, E_ACCESSDENIED, GENERIC_ALL, HANDLE,
    INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    ReadFile, FILE_FLAG_FIRST_PIPE_INSTANCE, PIPE_ACCESS_INBOUND,
};
use windows_sys::Win32::System::HostComputeSystem::{
    HcsCloseComputeSystem, HcsCloseOperation, HcsCreateComputeSystem, HcsCreateOperation,
    HcsGetComputeSystemProperties, HcsGrantVmAccess, HcsOpenComputeSystem, HcsStartComputeSystem,
    HcsTerminateComputeSystem, HcsWaitForOperationResult, HCS_OPERATION, HCS_SYSTEM,
};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, PIPE_READMODE_BYTE, PIPE_TYPE_BYTE, PIPE_WAIT,
};

use super::hcs_doc::{self, HcsInputs, SystemProperties};
use super::{hns, vhd, Capabilities, Hypervisor, HypervisorError, LaunchSpec, Vm};
use crate::vsock::guid::Guid;
use crate::vsock::hyperv::HyperVVsock;
use crate::vsock::HostVsock;

/// How long create and start may take (HCS boots nothing until start).
const OP_TIMEOUT_MS: u32 = 120_000;
/// How long a properties query or a terminate may take.
const QUERY_TIMEOUT_MS: u32 = 10_000;

pub struct Hcs;

impl Hypervisor for Hcs {
    fn name(&self) -> &'static str {
        "hcs"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            vsock: true,
            shares: true,
            user_net_hostfwd: false,
        }
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn Vm>, HypervisorError> {
        let id = hcs_doc::system_id(spec)?;
        hcs_doc::check_spec(spec)?;
        let machine = id.trim_start_matches("berth-");
        let console_pipe = crate::endpoint::console_pipe_name(machine)
            .map_err(|_| HypervisorError::Unsupported("this machine name"))?;
        let disk_vhd = spec
            .disk
            .as_deref()
            .map(vhd::prepare_fixed_vhd)
            .transpose()?;
        // A stale VM goes first: it may hold this machine's old endpoint.
        terminate_stale(&id);
        // Before the compute system, which attaches it; dropped (deleted)
        // if anything below fails, and with the VM otherwise.
        let endpoint = if spec.outbound_network {
            Some(hns::create_endpoint(machine)?)
        } else {
            None
        };
        let doc = hcs_doc::compute_system(
            spec,
            &HcsInputs {
                owner: "berth".into(),
                disk_vhd: disk_vhd.as_ref().map(|p| p.display().to_string()),
                console_pipe: console_pipe.clone(),
                network: endpoint.as_ref().map(|e| e.network.clone()),
            },
        )?;
        let json = serde_json::to_string(&doc).map_err(|e| HypervisorError::Hcs {
            call: "encoding the compute system",
            hresult: 0,
            detail: e.to_string(),
        })?;

        // The VM's worker process runs as the VM's own account: it may read
        // only what is granted to it.
        let mut granted: Vec<&Path> = vec![&spec.kernel, &spec.initrd];
        if let Some(vhd) = &disk_vhd {
            granted.push(vhd);
        }
        for (_, share) in &spec.shares {
            granted.push(&share.host);
        }
        for path in granted {
            let (vm, file) = (wide(&id), wide(&path.display().to_string()));
            // SAFETY: both are NUL-terminated UTF-16 strings that outlive the call.
            check("HcsGrantVmAccess", unsafe {
                HcsGrantVmAccess(vm.as_ptr(), file.as_ptr())
            })?;
        }

        // The pipe must exist before the VM's COM1 connects to it.
        copy_console(&console_pipe, spec.console_log.clone())?;

        let system = create(&id, &json)?;
        let vm = HcsVm {
            system,
            endpoint,
            vm_id: Guid::default(),
            stopped: None,
        };
        run_op("HcsStartComputeSystem", OP_TIMEOUT_MS, |op| {
            // SAFETY: a live system handle and operation; no options.
            unsafe { HcsStartComputeSystem(vm.system.0, op, std::ptr::null()) }
        })?;
        let props = vm.properties()?;
        let vm_id = Guid::parse(&props.runtime_id).ok_or_else(|| HypervisorError::Hcs {
            call: "reading the VM's RuntimeId",
            hresult: 0,
            detail: format!("{:?}", props.runtime_id),
        })?;
        Ok(Box::new(HcsVm { vm_id, ..vm }))
    }
}

/// A compute-system handle. Assumption: HCS handles may be used from any
/// thread (the API is free-threaded; hcsshim calls it from goroutines).
struct System(HCS_SYSTEM);

// SAFETY: see the assumption above; the handle is only closed on drop.
unsafe impl Send for System {}

impl Drop for System {
    fn drop(&mut self) {
        // SAFETY: our handle, closed once. With
        // ShouldTerminateOnLastHandleClosed the VM goes with it.
        unsafe { HcsCloseComputeSystem(self.0) };
    }
}

struct HcsVm {
    /// Dropped first: the VM goes before its endpoint.
    system: System,
    endpoint: Option<hns::Endpoint>,
    vm_id: Guid,
    stopped: Option<String>,
}

impl HcsVm {
    fn properties(&self) -> Result<SystemProperties, HypervisorError> {
        let query = wide("");
        let doc = run_op("HcsGetComputeSystemProperties", QUERY_TIMEOUT_MS, |op| {
            // SAFETY: live handle and operation; an empty query asks for the
            // basic properties (Id, State, RuntimeId, …).
            unsafe { HcsGetComputeSystemProperties(self.system.0, op, query.as_ptr()) }
        })?;
        SystemProperties::parse(&doc).map_err(|e| HypervisorError::Hcs {
            call: "reading HcsGetComputeSystemProperties' reply",
            hresult: 0,
            detail: format!("{e}: {doc}"),
        })
    }
}

impl Vm for HcsVm {
    fn pids(&self) -> Vec<u32> {
        // The VM's worker process belongs to HCS, not to us.
        Vec::new()
    }

    fn vsock(&self) -> HostVsock {
        HostVsock::HyperV(HyperVVsock { vm_id: self.vm_id })
    }

    fn try_exited(&mut self) -> Option<String> {
        if self.stopped.is_none() {
            self.stopped = match self.properties() {
                Ok(p) => p.exited(),
                // A system HCS no longer knows has gone.
                Err(e) => Some(format!("the VM is gone: {e}")),
            };
            if self.stopped.is_some() {
                // The VM no longer uses its endpoint.
                drop(self.endpoint.take());
            }
        }
        self.stopped.clone()
    }

    fn kill(&mut self) {
        let terminated = run_op("HcsTerminateComputeSystem", QUERY_TIMEOUT_MS, |op| {
            // SAFETY: live handle and operation; no options.
            unsafe { HcsTerminateComputeSystem(self.system.0, op, std::ptr::null()) }
        });
        self.stopped.get_or_insert_with(|| "terminated".into());
        if terminated.is_ok() {
            // Otherwise the endpoint goes on drop, after the handle closes.
            drop(self.endpoint.take());
        }
    }
}

/// Terminates a compute system left under `id`, as `PR_SET_PDEATHSIG` does
/// for QEMU. A supervisor's system normally dies with it
/// (`ShouldTerminateOnLastHandleClosed`), but one stays while any other
/// process (`hcsdiag`, a crashed earlier berth still closing) holds a handle.
/// Nothing there (`HCS_E_SYSTEM_NOT_FOUND`) is the usual case.
fn terminate_stale(id: &str) {
    let id = wide(id);
    let mut system: HCS_SYSTEM = std::ptr::null_mut();
    // SAFETY: a NUL-terminated id and an out pointer that outlive the call.
    let hr = unsafe { HcsOpenComputeSystem(id.as_ptr(), GENERIC_ALL, &mut system) };
    if hr < 0 || system.is_null() {
        return;
    }
    let stale = System(system);
    let _ = run_op("HcsTerminateComputeSystem", QUERY_TIMEOUT_MS, |op| {
        // SAFETY: a live handle and operation; no options.
        unsafe { HcsTerminateComputeSystem(stale.0, op, std::ptr::null()) }
    });
}

fn create(id: &str, json: &str) -> Result<System, HypervisorError> {
    let (id, json) = (wide(id), wide(json));
    let mut system: HCS_SYSTEM = std::ptr::null_mut();
    let out: *mut HCS_SYSTEM = &mut system;
    run_op("HcsCreateComputeSystem", OP_TIMEOUT_MS, |op| {
        // SAFETY: NUL-terminated strings and an out pointer that outlive the
        // call; the default security descriptor (null).
        unsafe { HcsCreateComputeSystem(id.as_ptr(), json.as_ptr(), op, std::ptr::null(), out) }
    })?;
    if system.is_null() {
        return Err(HypervisorError::Hcs {
            call: "HcsCreateComputeSystem",
            hresult: 0,
            detail: "no handle returned".into(),
        });
    }
    Ok(System(system))
}

/// Starts `call` with a new operation and waits for its result document.
fn run_op(
    call: &'static str,
    timeout_ms: u32,
    start: impl FnOnce(HCS_OPERATION) -> HRESULT,
) -> Result<String, HypervisorError> {
    // SAFETY: no context and no callback: the operation is waited on.
    let op = unsafe { HcsCreateOperation(std::ptr::null(), None) };
    if op.is_null() {
        return Err(HypervisorError::Hcs {
            call: "HcsCreateOperation",
            hresult: 0,
            detail: String::new(),
        });
    }
    let started = start(op);
    let result = if started < 0 {
        Err(HypervisorError::Hcs {
            call,
            hresult: started,
            detail: with_hint(started, String::new()),
        })
    } else {
        let mut doc: PWSTR = std::ptr::null_mut();
        // SAFETY: a live operation and an out pointer for the result.
        let hr = unsafe { HcsWaitForOperationResult(op, timeout_ms, &mut doc) };
        // SAFETY: doc is null or a LocalAlloc'd NUL-terminated string from HCS.
        let text = unsafe { take_string(doc) };
        if hr < 0 {
            Err(HypervisorError::Hcs {
                call,
                hresult: hr,
                detail: with_hint(hr, text),
            })
        } else {
            Ok(text)
        }
    };
    // SAFETY: our operation, closed once.
    unsafe { HcsCloseOperation(op) };
    result
}

/// Copies and frees a string HCS returned.
///
/// # Safety
/// `p` is null or a NUL-terminated UTF-16 string allocated with LocalAlloc.
unsafe fn take_string(p: PWSTR) -> String {
    // SAFETY: null or NUL-terminated (caller's promise).
    let text = unsafe { crate::win::utf16_until_nul(p) };
    if !p.is_null() {
        // SAFETY: HCS documents that result documents are freed with LocalFree.
        unsafe { LocalFree(p.cast()) };
    }
    text
}

fn check(call: &'static str, hr: HRESULT) -> Result<(), HypervisorError> {
    if hr < 0 {
        return Err(HypervisorError::Hcs {
            call,
            hresult: hr,
            detail: with_hint(hr, String::new()),
        });
    }
    Ok(())
}

/// `detail`, with what to do about access denied (`E_ACCESSDENIED`): HCS
/// serves only elevated callers.
fn with_hint(hr: HRESULT, detail: String) -> String {
    if hr != E_ACCESSDENIED {
        return detail;
    }
    format!("{detail} (the Host Compute Service needs an elevated prompt: Administrators or Hyper-V Administrators)")
}

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// A pipe handle moved to the copying thread.
struct PipeHandle(HANDLE);

// SAFETY: a pipe handle is a kernel handle, usable from any thread; only
// the copying thread uses it after this.
unsafe impl Send for PipeHandle {}

/// Creates the console pipe now and copies what the guest writes to COM1
/// into `log` on a thread, until the VM closes its end.
fn copy_console(pipe: &str, log: PathBuf) -> Result<(), HypervisorError> {
    let name = wide(pipe);
    // SAFETY: a NUL-terminated name that outlives the call; default security.
    let handle = unsafe {
        CreateNamedPipeW(
            name.as_ptr() as PCWSTR,
            PIPE_ACCESS_INBOUND | FILE_FLAG_FIRST_PIPE_INSTANCE,
            PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT,
            1,
            0,
            64 * 1024,
            0,
            std::ptr::null(),
        )
    };
    if handle == INVALID_HANDLE_VALUE {
        return Err(HypervisorError::Io {
            what: "creating the console pipe",
            path: PathBuf::from(pipe),
            source: std::io::Error::last_os_error(),
        });
    }
    let handle = PipeHandle(handle);
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|source| HypervisorError::Io {
            what: "opening",
            path: log.clone(),
            source,
        })?;
    std::thread::Builder::new()
        .name("hcs-console".into())
        .spawn(move || {
            let handle = handle;
            // SAFETY: our pipe handle; synchronous (no OVERLAPPED).
            let connected = unsafe { ConnectNamedPipe(handle.0, std::ptr::null_mut()) } != 0
                || std::io::Error::last_os_error().raw_os_error()
                    == Some(ERROR_PIPE_CONNECTED as i32);
            let mut buf = vec![0u8; 16 * 1024];
            if connected {
                copy_pipe(&handle, &mut buf, &mut out);
            }
            // SAFETY: our handle, closed once.
            unsafe { CloseHandle(handle.0) };
        })
        .map_err(|source| HypervisorError::Spawn {
            program: "the console copier".into(),
            source,
        })?;
    Ok(())
}

/// Copies from the pipe until the writer closes it.
fn copy_pipe(handle: &PipeHandle, buf: &mut [u8], out: &mut std::fs::File) {
    loop {
        let mut n = 0u32;
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        // SAFETY: buf is valid for len bytes; a synchronous read.
        let ok = unsafe {
            ReadFile(
                handle.0,
                buf.as_mut_ptr(),
                len,
                &mut n,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 || n == 0 || out.write_all(&buf[..n as usize]).is_err() {
            return;
        }
    }
}
