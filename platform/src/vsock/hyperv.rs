//! Windows: Hyper-V sockets (`AF_HYPERV`). The host connects to
//! `(VM runtime id, service GUID)`, the service GUID being
//! [`super::hyperv_service_guid`] of the guest's vsock port, and binds the
//! same pair to accept connections the guest opens to a host port. The
//! guest side is plain `AF_VSOCK` over the `hv_sock` transport.
//!
//! The socket calls are blocking Winsock calls (tokio cannot poll an
//! `AF_HYPERV` socket); [`super::threaded`] turns a connected socket into an
//! async stream. Only `windows-sys` and `std` are used here, so this file
//! is type-checked on Linux against the real `windows-sys` declarations.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use windows_sys::Win32::Networking::WinSock::{
    accept, bind, closesocket, connect, listen, recv, send, setsockopt, shutdown, socket,
    WSAGetLastError, WSAStartup, AF_HYPERV, INVALID_SOCKET, SD_BOTH, SD_SEND, SOCKADDR, SOCKET,
    SOCKET_ERROR, SOCK_STREAM, WSADATA,
};
use windows_sys::Win32::System::Hypervisor::{
    HVSOCKET_CONNECT_TIMEOUT, HV_PROTOCOL_RAW, SOCKADDR_HV,
};

use super::guid::Guid;
use super::threaded::{into_stream, BlockingSocket};
use super::{VsockError, VsockStream};

#[derive(Debug, Clone)]
pub struct HyperVVsock {
    /// The utility VM's runtime id (`RuntimeId` in HCS's properties).
    pub vm_id: Guid,
}

impl HyperVVsock {
    pub async fn connect(&self, port: u32, timeout: Duration) -> Result<VsockStream, VsockError> {
        let vm_id = self.vm_id;
        let blocking = tokio::task::spawn_blocking(move || HvSocket::connect(vm_id, port, timeout));
        // The socket option bounds the connect itself; this bounds the rest.
        let socket = match tokio::time::timeout(timeout + Duration::from_secs(1), blocking).await {
            Err(_) => return Err(VsockError::Timeout { port, timeout }),
            Ok(Err(join)) => {
                return Err(VsockError::Io {
                    port,
                    source: std::io::Error::other(join.to_string()),
                })
            }
            Ok(Ok(result)) => result.map_err(|source| VsockError::Io { port, source })?,
        };
        into_stream(socket).map_err(|source| VsockError::Io { port, source })
    }

    /// Binds `(vm, service of port)` now, so a taken port fails at once.
    pub fn listen(&self, port: u32) -> Result<HyperVListener, VsockError> {
        let socket = HvSocket::listen(self.vm_id, port).map_err(|source| {
            // WSAEADDRINUSE: someone else serves this port for this VM.
            if source.raw_os_error() == Some(10048) {
                VsockError::PortTaken {
                    port,
                    path: format!("hvsocket {}/{}", self.vm_id, Guid::vsock_service(port)).into(),
                }
            } else {
                VsockError::Io { port, source }
            }
        })?;
        Ok(HyperVListener { socket })
    }
}

/// Guest-initiated connections to one host port.
pub struct HyperVListener {
    socket: HvSocket,
}

impl HyperVListener {
    pub async fn accept(&self) -> std::io::Result<VsockStream> {
        let listener = self.socket.clone();
        let accepted = tokio::task::spawn_blocking(move || listener.accept())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        into_stream(accepted)
    }
}

impl Drop for HyperVListener {
    fn drop(&mut self) {
        // Closing the socket fails a thread blocked in accept, which then
        // ends (shutdown does not wake a listening socket).
        self.socket.0.close();
    }
}

/// One Winsock socket, closed when the last handle goes. Winsock allows
/// `recv` and `send` on one socket from two threads at once, so the
/// copying threads share it instead of duplicating it.
#[derive(Clone)]
struct HvSocket(Arc<Owned>);

struct Owned(AtomicUsize);

impl Owned {
    fn new(s: SOCKET) -> Self {
        Owned(AtomicUsize::new(s))
    }

    fn get(&self) -> SOCKET {
        self.0.load(Ordering::Acquire)
    }

    /// Closes the socket once; later calls on it fail with WSAENOTSOCK.
    fn close(&self) {
        let s = self.0.swap(INVALID_SOCKET, Ordering::AcqRel);
        if s != INVALID_SOCKET {
            // SAFETY: the socket is ours and is closed only here, once.
            unsafe { closesocket(s) };
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.close();
    }
}

fn startup() {
    static WSA: Once = Once::new();
    WSA.call_once(|| {
        // SAFETY: WSADATA is plain data that WSAStartup fills in; 2.2 is
        // the Winsock version every supported Windows has.
        unsafe {
            let mut data: WSADATA = std::mem::zeroed();
            WSAStartup(0x0202, &mut data);
        }
    });
}

fn last_error() -> std::io::Error {
    // SAFETY: no preconditions.
    std::io::Error::from_raw_os_error(unsafe { WSAGetLastError() })
}

fn address(vm_id: Guid, port: u32) -> SOCKADDR_HV {
    SOCKADDR_HV {
        Family: AF_HYPERV,
        Reserved: 0,
        VmId: crate::win::guid(vm_id),
        ServiceId: crate::win::guid(Guid::vsock_service(port)),
    }
}

impl HvSocket {
    fn new() -> std::io::Result<Self> {
        startup();
        // SAFETY: plain socket creation.
        let s = unsafe { socket(i32::from(AF_HYPERV), SOCK_STREAM, HV_PROTOCOL_RAW as i32) };
        if s == INVALID_SOCKET {
            return Err(last_error());
        }
        Ok(HvSocket(Arc::new(Owned::new(s))))
    }

    fn raw(&self) -> SOCKET {
        self.0.get()
    }

    fn connect(vm_id: Guid, port: u32, timeout: Duration) -> std::io::Result<Self> {
        let s = Self::new()?;
        let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        let addr = address(vm_id, port);
        // SAFETY: the option value is a u32 that outlives the call; the
        // address is a SOCKADDR_HV, whose size is passed with it.
        unsafe {
            // Assumption: HVSOCKET_CONNECT_TIMEOUT takes milliseconds as a
            // u32 at level HV_PROTOCOL_RAW (as hvsocket.h documents);
            // failing to set it only leaves the default (90 s).
            setsockopt(
                s.raw(),
                HV_PROTOCOL_RAW as i32,
                HVSOCKET_CONNECT_TIMEOUT as i32,
                (&ms as *const u32).cast(),
                std::mem::size_of::<u32>() as i32,
            );
            if connect(
                s.raw(),
                (&addr as *const SOCKADDR_HV).cast::<SOCKADDR>(),
                std::mem::size_of::<SOCKADDR_HV>() as i32,
            ) == SOCKET_ERROR
            {
                return Err(last_error());
            }
        }
        Ok(s)
    }

    fn listen(vm_id: Guid, port: u32) -> std::io::Result<Self> {
        let s = Self::new()?;
        let addr = address(vm_id, port);
        // SAFETY: as in connect.
        unsafe {
            if bind(
                s.raw(),
                (&addr as *const SOCKADDR_HV).cast::<SOCKADDR>(),
                std::mem::size_of::<SOCKADDR_HV>() as i32,
            ) == SOCKET_ERROR
                || listen(s.raw(), 16) == SOCKET_ERROR
            {
                return Err(last_error());
            }
        }
        Ok(s)
    }

    fn accept(&self) -> std::io::Result<Self> {
        // SAFETY: the peer address is not asked for (null, null).
        let s = unsafe { accept(self.raw(), std::ptr::null_mut(), std::ptr::null_mut()) };
        if s == INVALID_SOCKET {
            return Err(last_error());
        }
        Ok(HvSocket(Arc::new(Owned::new(s))))
    }
}

impl Read for HvSocket {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let len = i32::try_from(buf.len()).unwrap_or(i32::MAX);
        // SAFETY: buf is valid for len bytes.
        let n = unsafe { recv(self.raw(), buf.as_mut_ptr(), len, 0) };
        if n == SOCKET_ERROR {
            return Err(last_error());
        }
        Ok(n as usize)
    }
}

impl Write for HvSocket {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let len = i32::try_from(buf.len()).unwrap_or(i32::MAX);
        // SAFETY: buf is valid for len bytes.
        let n = unsafe { send(self.raw(), buf.as_ptr(), len, 0) };
        if n == SOCKET_ERROR {
            return Err(last_error());
        }
        Ok(n as usize)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl BlockingSocket for HvSocket {
    fn try_clone_socket(&self) -> std::io::Result<Self> {
        Ok(self.clone())
    }
    fn shutdown_write(&self) -> std::io::Result<()> {
        // SAFETY: plain call on our socket.
        if unsafe { shutdown(self.raw(), SD_SEND) } == SOCKET_ERROR {
            return Err(last_error());
        }
        Ok(())
    }
    fn shutdown_both(&self) -> std::io::Result<()> {
        // SAFETY: plain call on our socket.
        if unsafe { shutdown(self.raw(), SD_BOTH) } == SOCKET_ERROR {
            return Err(last_error());
        }
        Ok(())
    }
}
