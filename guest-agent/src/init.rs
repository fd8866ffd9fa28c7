//! PID 1: prepares the guest, forks the server, reaps every orphan, and
//! powers the VM off (QEMU runs with `-no-reboot`, so a reboot ends it) once
//! the server exits.

use std::ffi::CString;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{cmdline, dhcp, modules, serve, vmbus};

/// The busybox in the initramfs (networking and mke2fs).
pub const BUSYBOX: &str = "/bin/busybox";

pub fn run() -> ! {
    let start = Instant::now();
    // The kernel starts PID 1 without PATH; what the engine runs by name needs the usual one.
    std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    mount_pseudo_filesystems();
    let boot = cmdline::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    let sys = Path::new("/sys");
    let hardware = modules::Hardware {
        hyperv: vmbus::on_hyperv(sys),
        virtio_pci: modules::virtio_on_pci(sys),
    };
    let failed = modules::load_groups(&modules::boot_groups(hardware));
    reopen_console_if_missing();
    if let Some(time) = boot.time {
        if let Err(e) = set_clock(time) {
            eprintln!("berth-agent: setting the clock: {e}");
        }
    }
    bring_up_network(boot.net.as_ref());
    eprintln!(
        "berth-agent: init done in {} ms, {} ms after boot ({failed} modules failed{})",
        start.elapsed().as_millis(),
        serve::uptime_ms().unwrap_or(0),
        if hardware.hyperv { ", on Hyper-V" } else { "" }
    );

    // SAFETY: no threads exist yet in PID 1, so fork is safe; the child
    // goes on to build its own runtime.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let code = match serve::run(serve::Options::vm(&boot, hardware.hyperv)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("berth-agent: {e:#}");
                1
            }
        };
        std::process::exit(code);
    }
    if child < 0 {
        eprintln!(
            "berth-agent: fork failed: {}",
            std::io::Error::last_os_error()
        );
        power_off();
    }
    reap_until(child);
    power_off()
}

fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> std::io::Result<()> {
    std::fs::create_dir_all(target)?;
    let c = |s: &str| {
        CString::new(s).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (source, target, fstype, data) = (c(source)?, c(target)?, c(fstype)?, c(data)?);
    // SAFETY: all four strings are NUL-terminated and live across the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub fn mount_fs(source: &str, target: &str, fstype: &str, data: &str) -> std::io::Result<()> {
    mount(source, target, fstype, 0, data)
}

fn mount_pseudo_filesystems() {
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let list: [(&str, &str, &str, libc::c_ulong, &str); 8] = [
        ("proc", "/proc", "proc", nosuid, ""),
        ("sysfs", "/sys", "sysfs", nosuid, ""),
        ("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755"),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "gid=5,mode=620,ptmxmode=666",
        ),
        (
            "tmpfs",
            "/dev/shm",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=0755",
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
        ),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid, ""),
    ];
    for (source, target, fstype, flags, data) in list {
        if let Err(e) = mount(source, target, fstype, flags, data) {
            eprintln!("berth-agent: mounting {target}: {e}");
        }
    }
    // Hand the controllers to the engine's cgroups.
    let _ = std::fs::write(
        "/sys/fs/cgroup/cgroup.subtree_control",
        "+cpu +memory +pids +io +cpuset",
    );
}

/// PID 1 gets the console the kernel had when it started init; where that is a
/// virtio console (`console=hvc0` under Virtualization.framework) whose driver is a
/// module, there was none, so stdin/stdout/stderr are opened on it now that it exists.
fn reopen_console_if_missing() {
    // SAFETY: F_GETFD only queries descriptor 2.
    if unsafe { libc::fcntl(2, libc::F_GETFD) } >= 0 {
        return;
    }
    let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    // With 0–2 all closed the console itself is opened as 0, so it is kept there.
    let fd = std::os::fd::IntoRawFd::into_raw_fd(console);
    for standard in (0..=2).filter(|&s| s != fd) {
        // SAFETY: dup2 of an open descriptor onto a closed standard one.
        unsafe { libc::dup2(fd, standard) };
    }
    if fd > 2 {
        // SAFETY: fd is ours (from into_raw_fd) and now duplicated onto 0–2.
        unsafe { libc::close(fd) };
    }
}

fn set_clock(time: Duration) -> std::io::Result<()> {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(time.as_secs())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?,
        tv_nsec: libc::c_long::from(time.subsec_nanos() as i32),
    };
    // SAFETY: ts is a valid timespec for the duration of the call.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub fn set_clock_from(secs: u64, nanos: u32) -> std::io::Result<()> {
    if nanos >= 1_000_000_000 {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    set_clock(Duration::new(secs, nanos))
}

/// Loopback always (port forwarding connects to 127.0.0.1); eth0, when the
/// VMM gave one, by DHCP or with the host's fixed address.
fn bring_up_network(fixed: Option<&berth_platform::protocol::StaticNet>) {
    if let Err(e) = dhcp::loopback_up() {
        eprintln!("berth-agent: bringing up lo: {e}");
    }
    // `localhost` names (a registry at localhost:5000 through a host port) resolve from here.
    let _ = std::fs::create_dir_all("/etc");
    let _ = std::fs::write("/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n");
    dhcp::start(fixed);
}

fn reap_until(server: libc::pid_t) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a valid local.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == server {
            eprintln!("berth-agent: server exited (status {status})");
            return;
        }
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            return;
        }
    }
}

fn power_off() -> ! {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    // Give orphans a moment to die, then stop regardless.
    // SAFETY: kill(-1) signals every process but PID 1.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    // SAFETY: reboot with a valid command; QEMU's -no-reboot turns it into an exit.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
