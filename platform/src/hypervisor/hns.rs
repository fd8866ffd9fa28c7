//! Windows: the machine's outbound network through the Host Networking
//! Service. The NAT network [`hns_doc::NETWORK_NAME`] is opened, or made
//! the first time; each start makes the machine's endpoint on it (after
//! deleting one a crashed supervisor left), and [`Endpoint`] deletes it
//! when the VM is dropped or its start fails. The documents are built and
//! read by [`super::hns_doc`].
//!
//! computenetwork.dll is loaded when a machine with a network starts, not
//! linked: `berth` must run on Windows editions without it, and its
//! absence is a clear error there. Type-checked on Linux against the real
//! declarations; it has never run.

use std::ffi::c_void;
use std::net::Ipv4Addr;
use std::sync::OnceLock;

use windows_sys::core::{GUID, HRESULT, PCWSTR, PWSTR};
use windows_sys::Win32::Foundation::ERROR_BUFFER_OVERFLOW;
use windows_sys::Win32::NetworkManagement::IpHelper::{GetNetworkParams, FIXED_INFO_W2KSP1};
use windows_sys::Win32::System::Com::CoTaskMemFree;
use windows_sys::Win32::System::LibraryLoader::{
    GetProcAddress, LoadLibraryExW, LOAD_LIBRARY_SEARCH_SYSTEM32,
};

use super::hcs_doc::HcsNetwork;
use super::hns_doc::{self, EndpointProperties, NetworkProperties};
use super::HypervisorError;
use crate::vsock::guid::Guid;

type Enumerate = unsafe extern "system" fn(PCWSTR, *mut PWSTR, *mut PWSTR) -> HRESULT;
type Open = unsafe extern "system" fn(*const GUID, *mut *mut c_void, *mut PWSTR) -> HRESULT;
type CreateNetwork =
    unsafe extern "system" fn(*const GUID, PCWSTR, *mut *mut c_void, *mut PWSTR) -> HRESULT;
type CreateEndpoint = unsafe extern "system" fn(
    *const c_void,
    *const GUID,
    PCWSTR,
    *mut *mut c_void,
    *mut PWSTR,
) -> HRESULT;
type Query = unsafe extern "system" fn(*const c_void, PCWSTR, *mut PWSTR, *mut PWSTR) -> HRESULT;
type Close = unsafe extern "system" fn(*const c_void) -> HRESULT;
type Delete = unsafe extern "system" fn(*const GUID, *mut PWSTR) -> HRESULT;

/// The computenetwork.dll functions Berth calls (signatures as in
/// ComputeNetwork.h; windows-sys declares the same ones).
struct Api {
    enumerate_networks: Enumerate,
    open_network: Open,
    create_network: CreateNetwork,
    query_network: Query,
    close_network: Close,
    enumerate_endpoints: Enumerate,
    create_endpoint: CreateEndpoint,
    query_endpoint: Query,
    close_endpoint: Close,
    delete_endpoint: Delete,
}

fn api() -> Result<&'static Api, HypervisorError> {
    static API: OnceLock<Option<Api>> = OnceLock::new();
    API.get_or_init(load)
        .as_ref()
        .ok_or(HypervisorError::Missing {
        what: "the Host Networking Service (computenetwork.dll)".into(),
        hint: "enable Hyper-V (or the Containers feature), or create the machine with --no-network"
            .into(),
    })
}

fn load() -> Option<Api> {
    let name = wide("computenetwork.dll");
    // SAFETY: a NUL-terminated name; System32 only, so no planted DLL.
    let module = unsafe {
        LoadLibraryExW(
            name.as_ptr(),
            std::ptr::null_mut(),
            LOAD_LIBRARY_SEARCH_SYSTEM32,
        )
    };
    if module.is_null() {
        return None;
    }
    // The module stays loaded for the process's life (never freed).
    macro_rules! get {
        ($name:literal, $ty:ty) => {{
            // SAFETY: a live module and a NUL-terminated ASCII name.
            let f = unsafe { GetProcAddress(module, concat!($name, "\0").as_ptr()) }?;
            // SAFETY: the export has this signature (ComputeNetwork.h); both
            // are `extern "system"` function pointers of the same size.
            unsafe { std::mem::transmute::<unsafe extern "system" fn() -> isize, $ty>(f) }
        }};
    }
    Some(Api {
        enumerate_networks: get!("HcnEnumerateNetworks", Enumerate),
        open_network: get!("HcnOpenNetwork", Open),
        create_network: get!("HcnCreateNetwork", CreateNetwork),
        query_network: get!("HcnQueryNetworkProperties", Query),
        close_network: get!("HcnCloseNetwork", Close),
        enumerate_endpoints: get!("HcnEnumerateEndpoints", Enumerate),
        create_endpoint: get!("HcnCreateEndpoint", CreateEndpoint),
        query_endpoint: get!("HcnQueryEndpointProperties", Query),
        close_endpoint: get!("HcnCloseEndpoint", Close),
        delete_endpoint: get!("HcnDeleteEndpoint", Delete),
    })
}

/// A machine's endpoint, deleted on drop.
pub struct Endpoint {
    api: &'static Api,
    id: GUID,
    /// What the compute-system document attaches and the guest configures.
    pub network: HcsNetwork,
}

// SAFETY: a GUID and function pointers into a DLL that is never unloaded.
unsafe impl Send for Endpoint {}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = delete_endpoint(self.api, &self.id);
    }
}

/// Makes `machine`'s endpoint on the NAT network (made if missing) and
/// reads back the address HNS gave it.
pub fn create_endpoint(machine: &str) -> Result<Endpoint, HypervisorError> {
    let api = api()?;
    delete_stale(api, machine);
    let (network, net_props) = open_or_create_network(api)?;
    let settings = serde_json::to_string(&hns_doc::endpoint(machine, &net_props.id))
        .map_err(|e| encoding("the HNS endpoint", e))?;
    let settings = wide(&settings);
    let mut handle: *mut c_void = std::ptr::null_mut();
    let zero = GUID::from_u128(0);
    // SAFETY: a live network handle, a zero id (HNS picks one, as hcsshim
    // relies on), NUL-terminated settings, out pointers that outlive the call.
    check("HcnCreateEndpoint", |record| unsafe {
        (api.create_endpoint)(network.0, &zero, settings.as_ptr(), &mut handle, record)
    })?;
    let endpoint = Handle(handle, api.close_endpoint);
    // From here a failure deletes the endpoint by name (its id may be unknown).
    let made = (|| {
        let props = query(api.query_endpoint, &endpoint, "HcnQueryEndpointProperties")?;
        let props = EndpointProperties::parse(&props).map_err(|e| reply("endpoint", e, &props))?;
        let id = Guid::parse(&props.id).ok_or_else(|| HypervisorError::Hcs {
            call: "reading the HNS endpoint's ID",
            hresult: 0,
            detail: format!("{:?}", props.id),
        })?;
        let guest = hns_doc::guest_net(&props, &net_props, &host_dns()).map_err(|e| {
            HypervisorError::Hcs {
                call: "reading the HNS endpoint's address",
                hresult: 0,
                detail: e.to_string(),
            }
        })?;
        let mac_address = if props.mac_address.is_empty() {
            hns_doc::mac_text(hns_doc::mac_address(machine))
        } else {
            props.mac_address.clone()
        };
        Ok(Endpoint {
            api,
            id: crate::win::guid(id),
            network: HcsNetwork {
                endpoint_id: props.id.clone(),
                mac_address,
                guest,
            },
        })
    })();
    drop(endpoint);
    if made.is_err() {
        delete_stale(api, machine);
    }
    made
}

/// Deletes endpoints left under `machine`'s name (a supervisor that died
/// before dropping its [`Endpoint`]). Nothing there is the usual case.
fn delete_stale(api: &Api, machine: &str) {
    let q = hns_doc::query(Some(&hns_doc::endpoint_name(machine)));
    let Ok(ids) = enumerate(api.enumerate_endpoints, &q, "HcnEnumerateEndpoints") else {
        return;
    };
    for id in ids.iter().filter_map(|id| Guid::parse(id)) {
        let _ = delete_endpoint(api, &crate::win::guid(id));
    }
}

fn delete_endpoint(api: &Api, id: &GUID) -> Result<(), HypervisorError> {
    // SAFETY: a GUID and an out pointer that outlive the call.
    check("HcnDeleteEndpoint", |record| unsafe {
        (api.delete_endpoint)(id, record)
    })
}

/// The NAT network's handle and properties; made if it does not exist. Two
/// supervisors may race to make it: the loser opens the winner's.
fn open_or_create_network(api: &Api) -> Result<(Handle, NetworkProperties), HypervisorError> {
    let q = hns_doc::query(Some(hns_doc::NETWORK_NAME));
    let mut created = None;
    for attempt in 0..2 {
        let ids = enumerate(api.enumerate_networks, &q, "HcnEnumerateNetworks")?;
        if let Some(id) = ids.iter().find_map(|id| Guid::parse(id)) {
            let id = crate::win::guid(id);
            let mut handle: *mut c_void = std::ptr::null_mut();
            // SAFETY: a GUID and out pointers that outlive the call.
            check("HcnOpenNetwork", |record| unsafe {
                (api.open_network)(&id, &mut handle, record)
            })?;
            return with_properties(api, Handle(handle, api.close_network));
        }
        if attempt > 0 {
            break;
        }
        let settings = serde_json::to_string(&hns_doc::network())
            .map_err(|e| encoding("the HNS network", e))?;
        let settings = wide(&settings);
        let mut handle: *mut c_void = std::ptr::null_mut();
        let zero = GUID::from_u128(0);
        // SAFETY: a zero id (HNS picks one), NUL-terminated settings and out
        // pointers that outlive the call.
        match check("HcnCreateNetwork", |record| unsafe {
            (api.create_network)(&zero, settings.as_ptr(), &mut handle, record)
        }) {
            Ok(()) => return with_properties(api, Handle(handle, api.close_network)),
            Err(e) => created = Some(e),
        }
    }
    Err(created.unwrap_or(HypervisorError::Hcs {
        call: "HcnEnumerateNetworks",
        hresult: 0,
        detail: format!("no network {} after making it", hns_doc::NETWORK_NAME),
    }))
}

fn with_properties(
    api: &Api,
    network: Handle,
) -> Result<(Handle, NetworkProperties), HypervisorError> {
    let props = query(api.query_network, &network, "HcnQueryNetworkProperties")?;
    let parsed = NetworkProperties::parse(&props).map_err(|e| reply("network", e, &props))?;
    if !parsed.kind.is_empty() && !parsed.kind.eq_ignore_ascii_case("NAT") {
        return Err(HypervisorError::Hcs {
            call: "opening the HNS network",
            hresult: 0,
            detail: format!(
                "{} is a {} network, not NAT: remove it (Remove-HnsNetwork) and start again",
                hns_doc::NETWORK_NAME,
                parsed.kind
            ),
        });
    }
    Ok((network, parsed))
}

/// An HNS object handle, closed on drop.
struct Handle(*mut c_void, Close);

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: our handle, closed once.
            unsafe { (self.1)(self.0) };
        }
    }
}

fn query(f: Query, handle: &Handle, call: &'static str) -> Result<String, HypervisorError> {
    let q = wide(&hns_doc::query(None));
    let mut out: PWSTR = std::ptr::null_mut();
    // SAFETY: a live handle, a NUL-terminated query and out pointers.
    check(call, |record| unsafe {
        f(handle.0, q.as_ptr(), &mut out, record)
    })?;
    // SAFETY: null or a CoTaskMemAlloc'd string from HNS.
    Ok(unsafe { take_string(out) })
}

fn enumerate(
    f: Enumerate,
    query: &str,
    call: &'static str,
) -> Result<Vec<String>, HypervisorError> {
    let q = wide(query);
    let mut out: PWSTR = std::ptr::null_mut();
    // SAFETY: a NUL-terminated query and out pointers that outlive the call.
    check(call, |record| unsafe { f(q.as_ptr(), &mut out, record) })?;
    // SAFETY: null or a CoTaskMemAlloc'd string from HNS.
    let json = unsafe { take_string(out) };
    hns_doc::parse_ids(&json).map_err(|e| reply("enumeration", e, &json))
}

/// Runs an HNS call that may fill in an error record; a failure carries
/// the record and what to do about it.
fn check(call: &'static str, f: impl FnOnce(*mut PWSTR) -> HRESULT) -> Result<(), HypervisorError> {
    let mut record: PWSTR = std::ptr::null_mut();
    let hr = f(&mut record);
    // SAFETY: null or a CoTaskMemAlloc'd string from HNS.
    let record = unsafe { take_string(record) };
    if hr >= 0 {
        return Ok(());
    }
    let detail = match hns_doc::hint(hr) {
        Some(h) => format!("{record} ({h})"),
        None => record,
    };
    Err(HypervisorError::Hcs {
        call,
        hresult: hr,
        detail,
    })
}

/// Copies and frees a string HNS returned.
///
/// # Safety
/// `p` is null or a NUL-terminated UTF-16 string from CoTaskMemAlloc.
unsafe fn take_string(p: PWSTR) -> String {
    // SAFETY: null or NUL-terminated (caller's promise).
    let text = unsafe { crate::win::utf16_until_nul(p) };
    if !p.is_null() {
        // SAFETY: HNS documents its out strings as freed with CoTaskMemFree.
        unsafe { CoTaskMemFree(p.cast()) };
    }
    text
}

/// The host's IPv4 DNS servers (GetNetworkParams); empty if unknown.
fn host_dns() -> Vec<Ipv4Addr> {
    let mut len: u32 = 0;
    // SAFETY: a null buffer asks for the size.
    let first = unsafe { GetNetworkParams(std::ptr::null_mut(), &mut len) };
    if first != ERROR_BUFFER_OVERFLOW || len == 0 {
        return Vec::new();
    }
    // u64s: aligned for FIXED_INFO_W2KSP1 (pointers and u32s).
    let mut buf = vec![0u64; (len as usize).div_ceil(8)];
    let info = buf.as_mut_ptr().cast::<FIXED_INFO_W2KSP1>();
    // SAFETY: buf holds at least len bytes, suitably aligned.
    if unsafe { GetNetworkParams(info, &mut len) } != 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    // SAFETY: filled in by the call; the list's nodes live in buf or in
    // memory the call owns until buf is freed, and end with a null Next.
    let mut node = unsafe { std::ptr::addr_of!((*info).DnsServerList) };
    while !node.is_null() && out.len() < 8 {
        // SAFETY: node is a valid IP_ADDR_STRING (see above).
        let entry = unsafe { &*node };
        let text: Vec<u8> = entry
            .IpAddress
            .String
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        if let Some(ip) = std::str::from_utf8(&text)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            out.push(ip);
        }
        node = entry.Next;
    }
    out
}

fn encoding(what: &str, e: serde_json::Error) -> HypervisorError {
    HypervisorError::Hcs {
        call: "encoding an HNS document",
        hresult: 0,
        detail: format!("{what}: {e}"),
    }
}

fn reply(what: &str, e: serde_json::Error, text: &str) -> HypervisorError {
    HypervisorError::Hcs {
        call: "reading an HNS reply",
        hresult: 0,
        detail: format!("the {what}: {e}: {text}"),
    }
}

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}
