//! macOS: Virtualization.framework, through `objc2-virtualization`. The
//! configuration comes from [`super::vz_config`] (built and checked by
//! shared code); this file only makes the framework calls. The VM runs in
//! the supervisor's process on a serial dispatch queue, so it dies with the
//! supervisor. Its virtio socket device is exposed as hybrid vsock by
//! [`crate::vsock::bridge`], so the rest of the host side is the same as
//! under QEMU.
//!
//! Type-checked on Linux against `objc2-virtualization`'s declarations (with
//! its framework link removed); never run here. The binary needs the
//! `com.apple.security.virtualization` entitlement
//! (`platform/macos/berth.entitlements`). Assumptions are marked.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use block2::RcBlock;
use dispatch2::{DispatchQueue, DispatchRetained};
use objc2::rc::Retained;
use objc2::runtime::{NSObject, NSObjectProtocol, ProtocolObject};
use objc2::{define_class, msg_send, AllocAnyThread, DefinedClass};
use objc2_foundation::{NSArray, NSError, NSString, NSURL};
use objc2_virtualization::{
    VZDirectorySharingDeviceConfiguration, VZDiskImageStorageDeviceAttachment,
    VZEntropyDeviceConfiguration, VZFileSerialPortAttachment, VZLinuxBootLoader,
    VZMemoryBalloonDeviceConfiguration, VZNATNetworkDeviceAttachment, VZNetworkDeviceConfiguration,
    VZSerialPortConfiguration, VZSharedDirectory, VZSingleDirectoryShare,
    VZSocketDeviceConfiguration, VZStorageDeviceConfiguration, VZVirtioBlockDeviceConfiguration,
    VZVirtioConsoleDeviceSerialPortConfiguration, VZVirtioEntropyDeviceConfiguration,
    VZVirtioFileSystemDeviceConfiguration, VZVirtioNetworkDeviceConfiguration,
    VZVirtioSocketConnection, VZVirtioSocketDevice, VZVirtioSocketDeviceConfiguration,
    VZVirtioSocketListener, VZVirtioSocketListenerDelegate,
    VZVirtioTraditionalMemoryBalloonDeviceConfiguration, VZVirtualMachine,
    VZVirtualMachineConfiguration, VZVirtualMachineState,
};

use super::vz_config::{vz_config, VzConfig, VzLimits};
use super::{Capabilities, Hypervisor, HypervisorError, LaunchSpec, Vm};
use crate::protocol::HOST_SERVICE_PORT;
use crate::vsock::bridge::{self, ConnectFuture, GuestConnector};
use crate::vsock::hybrid::HybridVsock;
use crate::vsock::HostVsock;

/// How long the framework gets to start or stop the VM.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Vz;

impl Hypervisor for Vz {
    fn name(&self) -> &'static str {
        "vz"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            vsock: true,
            shares: true,
            user_net_hostfwd: false,
        }
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn Vm>, HypervisorError> {
        // SAFETY: class properties without preconditions.
        let limits = unsafe {
            VzLimits {
                min_cpus: to_u32(VZVirtualMachineConfiguration::minimumAllowedCPUCount()),
                max_cpus: to_u32(VZVirtualMachineConfiguration::maximumAllowedCPUCount()),
                min_memory: VZVirtualMachineConfiguration::minimumAllowedMemorySize(),
                max_memory: VZVirtualMachineConfiguration::maximumAllowedMemorySize(),
            }
        };
        let config = vz_config(spec, limits, std::env::consts::ARCH)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| HypervisorError::Unsupported("starting a VM outside the async runtime"))?;
        let configuration = configuration(&config)?;

        let queue = DispatchQueue::new("dev.berth.vz", None);
        let vm = {
            let configuration = OnQueue(configuration);
            let q: &DispatchQueue = &queue;
            let mut made = None;
            queue.exec_sync(|| {
                let configuration = &configuration;
                // SAFETY: a validated configuration and the serial queue the
                // VM will be used on; we are on that queue.
                let vm = unsafe {
                    VZVirtualMachine::initWithConfiguration_queue(
                        VZVirtualMachine::alloc(),
                        &configuration.0,
                        q,
                    )
                };
                made = Some(OnQueue(vm));
            });
            Arc::new(made.ok_or(HypervisorError::Vz {
                call: "initWithConfiguration:queue:",
                detail: "no VM".into(),
            })?)
        };

        start(&queue, &vm)?;
        let mut running = VzVm {
            queue,
            vm,
            vsock_socket: spec.vsock_socket.clone(),
            stop_bridge: None,
            listener: None,
        };
        // From here on, dropping `running` stops the VM.
        let device = running.socket_device()?;
        running.listener = Some(running.listen_for_host_services(&device, runtime.clone())?);
        let _ = std::fs::remove_file(&spec.vsock_socket);
        let listener = {
            let _guard = runtime.enter();
            tokio::net::UnixListener::bind(&spec.vsock_socket).map_err(|source| {
                HypervisorError::Io {
                    what: "binding",
                    path: spec.vsock_socket.clone(),
                    source,
                }
            })?
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let connector = Arc::new(VzConnector {
            queue: running.queue.clone(),
            device: Arc::new(device),
        });
        runtime.spawn(bridge::serve(listener, connector, async move {
            let _ = stop_rx.await;
        }));
        running.stop_bridge = Some(stop_tx);
        Ok(Box::new(running))
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// An Objective-C object that is only used on the VM's serial queue (or,
/// for configuration objects, once, before the VM exists).
struct OnQueue<T>(T);

// SAFETY: every use of the wrapped object happens inside a closure run on
// the VM's serial queue (exec_sync/exec_async), which the framework
// requires; the wrapper only carries it there.
unsafe impl<T> Send for OnQueue<T> {}
// SAFETY: as above; shared references are only dereferenced on the queue.
unsafe impl<T> Sync for OnQueue<T> {}

fn url(path: &std::path::Path) -> Result<Retained<NSURL>, HypervisorError> {
    NSURL::from_file_path(path).ok_or_else(|| HypervisorError::Vz {
        call: "NSURL fileURLWithPath:",
        detail: format!("{} is not an absolute path", path.display()),
    })
}

fn describe(error: &NSError) -> String {
    error.localizedDescription().to_string()
}

/// `VZVirtualMachineConfiguration` for `c`, one setter per field, validated.
fn configuration(c: &VzConfig) -> Result<Retained<VZVirtualMachineConfiguration>, HypervisorError> {
    let vz = |call: &'static str| {
        move |e: Retained<NSError>| HypervisorError::Vz {
            call,
            detail: describe(&e),
        }
    };
    // SAFETY: plain object construction and setters on objects we own;
    // every argument is a live object of the documented class.
    unsafe {
        let (kernel, initrd) = (url(&c.kernel)?, url(&c.initrd)?);
        let boot = VZLinuxBootLoader::initWithKernelURL(VZLinuxBootLoader::alloc(), &kernel);
        boot.setInitialRamdiskURL(Some(&initrd));
        boot.setCommandLine(&NSString::from_str(&c.cmdline));

        let config = VZVirtualMachineConfiguration::new();
        config.setBootLoader(Some(&Retained::into_super(boot)));
        config.setCPUCount(c.cpus as usize);
        config.setMemorySize(c.memory);

        let mut storage: Vec<Retained<VZStorageDeviceConfiguration>> = Vec::new();
        if let Some(disk) = &c.disk {
            let disk = url(disk)?;
            let attachment = VZDiskImageStorageDeviceAttachment::initWithURL_readOnly_error(
                VZDiskImageStorageDeviceAttachment::alloc(),
                &disk,
                false,
            )
            .map_err(vz(
                "VZDiskImageStorageDeviceAttachment initWithURL:readOnly:error:",
            ))?;
            let block = VZVirtioBlockDeviceConfiguration::initWithAttachment(
                VZVirtioBlockDeviceConfiguration::alloc(),
                &attachment,
            );
            storage.push(Retained::into_super(block));
        }
        config.setStorageDevices(&NSArray::from_retained_slice(&storage));

        let console = VZVirtioConsoleDeviceSerialPortConfiguration::new();
        let log = url(&c.console_log)?;
        let log = VZFileSerialPortAttachment::initWithURL_append_error(
            VZFileSerialPortAttachment::alloc(),
            &log,
            true,
        )
        .map_err(vz("VZFileSerialPortAttachment initWithURL:append:error:"))?;
        console.setAttachment(Some(&log));
        let serial: Retained<VZSerialPortConfiguration> = Retained::into_super(console);
        config.setSerialPorts(&NSArray::from_retained_slice(&[serial]));

        if c.vsock {
            let socket: Retained<VZSocketDeviceConfiguration> =
                Retained::into_super(VZVirtioSocketDeviceConfiguration::new());
            config.setSocketDevices(&NSArray::from_retained_slice(&[socket]));
        }

        let mut shares: Vec<Retained<VZDirectorySharingDeviceConfiguration>> = Vec::new();
        for share in &c.shares {
            let tag = NSString::from_str(&share.tag);
            VZVirtioFileSystemDeviceConfiguration::validateTag_error(&tag).map_err(vz(
                "VZVirtioFileSystemDeviceConfiguration validateTag:error:",
            ))?;
            let host = url(&share.host)?;
            let dir = VZSharedDirectory::initWithURL_readOnly(
                VZSharedDirectory::alloc(),
                &host,
                share.read_only,
            );
            let single =
                VZSingleDirectoryShare::initWithDirectory(VZSingleDirectoryShare::alloc(), &dir);
            let fs = VZVirtioFileSystemDeviceConfiguration::initWithTag(
                VZVirtioFileSystemDeviceConfiguration::alloc(),
                &tag,
            );
            fs.setShare(Some(&Retained::into_super(single)));
            shares.push(Retained::into_super(fs));
        }
        config.setDirectorySharingDevices(&NSArray::from_retained_slice(&shares));

        if c.nat_network {
            let net = VZVirtioNetworkDeviceConfiguration::new();
            net.setAttachment(Some(&Retained::into_super(
                VZNATNetworkDeviceAttachment::new(),
            )));
            let net: Retained<VZNetworkDeviceConfiguration> = Retained::into_super(net);
            config.setNetworkDevices(&NSArray::from_retained_slice(&[net]));
        }
        if c.entropy {
            let entropy: Retained<VZEntropyDeviceConfiguration> =
                Retained::into_super(VZVirtioEntropyDeviceConfiguration::new());
            config.setEntropyDevices(&NSArray::from_retained_slice(&[entropy]));
        }
        if c.balloon {
            let balloon: Retained<VZMemoryBalloonDeviceConfiguration> =
                Retained::into_super(VZVirtioTraditionalMemoryBalloonDeviceConfiguration::new());
            config.setMemoryBalloonDevices(&NSArray::from_retained_slice(&[balloon]));
        }

        config
            .validateWithError()
            .map_err(vz("VZVirtualMachineConfiguration validateWithError:"))?;
        Ok(config)
    }
}

/// Starts the VM on its queue and waits for the completion handler.
fn start(
    queue: &DispatchQueue,
    vm: &Arc<OnQueue<Retained<VZVirtualMachine>>>,
) -> Result<(), HypervisorError> {
    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    let vm = Arc::clone(vm);
    queue.exec_async(move || {
        let tx = Mutex::new(tx);
        let done = RcBlock::new(move |error: *mut NSError| {
            // SAFETY: the framework passes nil or a valid NSError.
            let result = match unsafe { error.as_ref() } {
                None => Ok(()),
                Some(e) => Err(describe(e)),
            };
            if let Ok(tx) = tx.lock() {
                let _ = tx.send(result);
            }
        });
        // SAFETY: on the VM's queue, as the framework requires.
        unsafe { vm.0.startWithCompletionHandler(&done) };
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(detail)) => Err(HypervisorError::Vz {
            call: "VZVirtualMachine startWithCompletionHandler:",
            detail,
        }),
        Err(_) => Err(HypervisorError::Timeout {
            what: "the Virtualization.framework VM to start".into(),
            timeout: START_TIMEOUT,
        }),
    }
}

/// A registered vsock listener and its delegate.
type Listening = OnQueue<(Retained<VZVirtioSocketListener>, Retained<HostPortDelegate>)>;

struct VzVm {
    queue: DispatchRetained<DispatchQueue>,
    vm: Arc<OnQueue<Retained<VZVirtualMachine>>>,
    vsock_socket: PathBuf,
    stop_bridge: Option<tokio::sync::oneshot::Sender<()>>,
    /// The listener for guest connections and its delegate (the listener
    /// holds its delegate weakly, so it is kept here).
    listener: Option<Listening>,
}

impl VzVm {
    fn state(&self) -> VZVirtualMachineState {
        let vm = Arc::clone(&self.vm);
        let mut state = VZVirtualMachineState::Error;
        self.queue.exec_sync(|| {
            // SAFETY: on the VM's queue.
            state = unsafe { vm.0.state() };
        });
        state
    }

    /// The VM's virtio socket device (there is exactly one).
    fn socket_device(&self) -> Result<OnQueue<Retained<VZVirtioSocketDevice>>, HypervisorError> {
        let vm = Arc::clone(&self.vm);
        let mut device = None;
        self.queue.exec_sync(|| {
            // SAFETY: on the VM's queue; the only socket device configured
            // is a VZVirtioSocketDeviceConfiguration, so the device is a
            // VZVirtioSocketDevice.
            unsafe {
                device =
                    vm.0.socketDevices()
                        .firstObject()
                        .map(|d| OnQueue(Retained::cast_unchecked::<VZVirtioSocketDevice>(d)));
            }
        });
        device.ok_or(HypervisorError::Vz {
            call: "VZVirtualMachine socketDevices",
            detail: "no virtio socket device".into(),
        })
    }

    /// Passes guest connections to the host-service port on to
    /// `<vsock socket>_<port>`, as hybrid vsock does.
    fn listen_for_host_services(
        &self,
        device: &OnQueue<Retained<VZVirtioSocketDevice>>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Listening, HypervisorError> {
        let delegate = OnQueue(HostPortDelegate::new(HostPort {
            runtime,
            vsock_socket: self.vsock_socket.clone(),
            port: HOST_SERVICE_PORT,
        }));
        let mut made = None;
        self.queue.exec_sync(|| {
            // SAFETY: on the VM's queue; the delegate is retained by us for
            // as long as the listener is registered.
            unsafe {
                let listener = VZVirtioSocketListener::new();
                listener.setDelegate(Some(ProtocolObject::from_ref(&*delegate.0)));
                device
                    .0
                    .setSocketListener_forPort(&listener, HOST_SERVICE_PORT);
                made = Some(OnQueue(listener));
            }
        });
        let listener = made.ok_or(HypervisorError::Vz {
            call: "VZVirtioSocketDevice setSocketListener:forPort:",
            detail: "no listener".into(),
        })?;
        Ok(OnQueue((listener.0, delegate.0)))
    }
}

impl Vm for VzVm {
    fn pids(&self) -> Vec<u32> {
        // The VM runs inside this process.
        Vec::new()
    }

    fn vsock(&self) -> HostVsock {
        HostVsock::Hybrid(HybridVsock::new(&self.vsock_socket))
    }

    fn try_exited(&mut self) -> Option<String> {
        let state = self.state();
        if state == VZVirtualMachineState::Stopped {
            Some("the VM stopped".into())
        } else if state == VZVirtualMachineState::Error {
            Some("the VM stopped with an error".into())
        } else {
            None
        }
    }

    fn kill(&mut self) {
        if let Some(stop) = self.stop_bridge.take() {
            let _ = stop.send(());
        }
        let vm = Arc::clone(&self.vm);
        self.queue.exec_async(move || {
            let done = RcBlock::new(|_error: *mut NSError| {});
            // SAFETY: on the VM's queue. A forced stop (macOS 12+), which
            // is what a killed QEMU is; the guest was asked to power off
            // over vsock before this.
            unsafe {
                if vm.0.canStop() {
                    vm.0.stopWithCompletionHandler(&done);
                }
            }
        });
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.try_exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&self.vsock_socket);
    }
}

impl Drop for VzVm {
    fn drop(&mut self) {
        if self.try_exited().is_none() {
            self.kill();
        }
    }
}

/// Opens guest vsock connections with `connectToPort:completionHandler:`.
struct VzConnector {
    queue: DispatchRetained<DispatchQueue>,
    device: Arc<OnQueue<Retained<VZVirtioSocketDevice>>>,
}

// SAFETY: the queue is thread-safe; the device is only used on it (OnQueue).
unsafe impl Send for VzConnector {}
// SAFETY: as above.
unsafe impl Sync for VzConnector {}

/// Our own descriptor for a connection's socket. Assumption: the
/// connection object closes its descriptor when it is deallocated, so the
/// descriptor is duplicated before the object goes.
fn dup_connection(connection: &VZVirtioSocketConnection) -> std::io::Result<OwnedFd> {
    // SAFETY: fileDescriptor is valid while the connection object lives,
    // which it does for this call; dup has no other preconditions.
    let fd = unsafe { libc::dup(connection.fileDescriptor()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by dup and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn into_tokio(fd: OwnedFd) -> std::io::Result<tokio::net::UnixStream> {
    // Assumption: the descriptor is a stream socket (a socketpair end);
    // tokio only reads, writes and shuts it down.
    let stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(stream)
}

impl GuestConnector for VzConnector {
    fn connect(&self, port: u32) -> ConnectFuture {
        let (tx, rx) = tokio::sync::oneshot::channel::<std::io::Result<OwnedFd>>();
        let device = Arc::clone(&self.device);
        self.queue.exec_async(move || {
            let tx = Mutex::new(Some(tx));
            let done = RcBlock::new(
                move |connection: *mut VZVirtioSocketConnection, error: *mut NSError| {
                    // SAFETY: the framework passes nil or valid objects.
                    let result = match unsafe { (connection.as_ref(), error.as_ref()) } {
                        (Some(c), _) => dup_connection(c),
                        (None, e) => Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionRefused,
                            e.map(describe).unwrap_or_else(|| "refused".into()),
                        )),
                    };
                    if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
                        let _ = tx.send(result);
                    }
                },
            );
            // SAFETY: on the VM's queue.
            unsafe { device.0.connectToPort_completionHandler(port, &done) };
        });
        Box::pin(async move {
            let fd = rx
                .await
                .map_err(|_| std::io::Error::other("the VM dropped a vsock connect"))??;
            into_tokio(fd)
        })
    }
}

/// What the listener delegate needs to pass a connection on.
struct HostPort {
    runtime: tokio::runtime::Handle,
    vsock_socket: PathBuf,
    port: u32,
}

define_class!(
    // SAFETY: NSObject has no subclassing requirements and the class has no
    // Drop of its own.
    #[unsafe(super(NSObject))]
    #[name = "BerthHostPortDelegate"]
    #[ivars = HostPort]
    struct HostPortDelegate;

    unsafe impl NSObjectProtocol for HostPortDelegate {}

    unsafe impl VZVirtioSocketListenerDelegate for HostPortDelegate {
        #[unsafe(method(listener:shouldAcceptNewConnection:fromSocketDevice:))]
        fn should_accept(
            &self,
            _listener: &VZVirtioSocketListener,
            connection: &VZVirtioSocketConnection,
            _device: &VZVirtioSocketDevice,
        ) -> bool {
            let host = self.ivars();
            match dup_connection(connection) {
                Ok(fd) => {
                    let vsock_socket = host.vsock_socket.clone();
                    let port = host.port;
                    host.runtime.spawn(async move {
                        if let Ok(guest) = into_tokio(fd) {
                            bridge::deliver_to_host(guest, &vsock_socket, port).await;
                        }
                    });
                    true
                }
                Err(_) => false,
            }
        }
    }
);

impl HostPortDelegate {
    fn new(host: HostPort) -> Retained<Self> {
        let this = Self::alloc().set_ivars(host);
        // SAFETY: NSObject's init on a freshly allocated instance.
        unsafe { msg_send![super(this), init] }
    }
}
