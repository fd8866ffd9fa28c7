//! Mounting the host directories shared into the VM. virtiofs and 9p reach
//! their host server over virtio under QEMU and Virtualization.framework;
//! Hyper-V has no virtio, so there a 9p share is served by HCS's own Plan9
//! server on a vsock port, and the kernel is handed the connected socket
//! (`trans=fd`), as Linux guests of HCS do.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use berth_platform::protocol::{ShareFs, PLAN9_PORT};

use crate::init::mount_fs;
use crate::modules;

/// Largest 9p message over virtio; large reads and writes need fewer trips.
const VIRTIO_MSIZE: u32 = 262_144;
/// Largest 9p message over a Hyper-V socket (the size Linux guests of HCS use).
const HVSOCK_MSIZE: u32 = 65_536;

/// Loads the shares' filesystem modules and mounts each share (a failure is
/// logged; the engine serves without that share).
pub fn mount_all(shares: &[(String, PathBuf, ShareFs)], hyperv: bool) {
    if shares.is_empty() {
        return;
    }
    let filesystems: Vec<ShareFs> = shares.iter().map(|(_, _, fs)| *fs).collect();
    let failed = modules::load_groups(&modules::share_groups(hyperv, &filesystems));
    if failed > 0 {
        eprintln!("berth-agent: {failed} share filesystem modules failed to load");
    }
    for (tag, path, fs) in shares {
        match mount(tag, path, *fs, hyperv) {
            Ok(()) => eprintln!(
                "berth-agent: share {tag} mounted on {} ({})",
                path.display(),
                fs.as_str()
            ),
            Err(e) => eprintln!(
                "berth-agent: mounting share {tag} on {} ({}): {e}",
                path.display(),
                fs.as_str()
            ),
        }
    }
}

/// Mounts share `tag` on `path`. On Hyper-V a 9p share is reached over vsock.
fn mount(tag: &str, path: &Path, fs: ShareFs, on_hyperv: bool) -> io::Result<()> {
    let target = path
        .to_str()
        .ok_or_else(|| invalid(format!("guest path {} is not UTF-8", path.display())))?;
    match fs {
        // Caching is virtiofsd's choice (--cache on the host side).
        ShareFs::Virtiofs => mount_fs(tag, target, fs.as_str(), ""),
        ShareFs::NineP if on_hyperv => {
            let server = connect_host(PLAN9_PORT)?;
            let options = nine_p_over_fd(server.as_raw_fd(), tag)?;
            // The mount holds its own reference to the socket; ours closes on return.
            mount_fs(tag, target, fs.as_str(), &options)
        }
        ShareFs::NineP => mount_fs(tag, target, fs.as_str(), &nine_p_over_virtio()),
    }
}

fn nine_p_over_virtio() -> String {
    format!("trans=virtio,version=9p2000.L,msize={VIRTIO_MSIZE},cache=none")
}

/// Options for 9p over an open connection `fd`; the share's name is the
/// `aname` HCS serves it under (its `AccessName`).
fn nine_p_over_fd(fd: RawFd, access_name: &str) -> io::Result<String> {
    // A comma or an `=` would end the option and start another.
    if access_name.is_empty() || access_name.contains([',', '=']) {
        return Err(invalid(format!(
            "share name {access_name:?} cannot be a 9p access name"
        )));
    }
    Ok(format!(
        "trans=fd,rfdno={fd},wfdno={fd},version=9p2000.L,msize={HVSOCK_MSIZE},cache=none,aname={access_name}"
    ))
}

/// A blocking vsock connection to the host's `port` (PID 1 has no async
/// runtime yet when it mounts shares).
fn connect_host(port: u32) -> io::Result<OwnedFd> {
    // SAFETY: socket takes no pointers; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_vm is plain data; all-zero is a valid starting value.
    let mut address: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    address.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    address.svm_cid = libc::VMADDR_CID_HOST;
    address.svm_port = port;
    // SAFETY: the address is a valid sockaddr_vm and its size is passed with it.
    let rc = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            std::ptr::addr_of!(address).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("connecting to the host's 9p server on vsock port {port}: {e}"),
        ));
    }
    Ok(socket)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_p_options_name_the_transport() {
        assert_eq!(
            nine_p_over_virtio(),
            "trans=virtio,version=9p2000.L,msize=262144,cache=none"
        );
        assert_eq!(
            nine_p_over_fd(7, "berthshare0").expect("valid name"),
            "trans=fd,rfdno=7,wfdno=7,version=9p2000.L,msize=65536,cache=none,aname=berthshare0"
        );
    }

    #[test]
    fn access_names_that_would_inject_options_are_refused() {
        for bad in ["", "a,ro", "a=b"] {
            let err = nine_p_over_fd(3, bad).expect_err(bad);
            assert!(err.to_string().contains("access name"), "{err}");
        }
    }
}
