//! Kernel modules: the initramfs lists them in load order (dependencies
//! first) in `/lib/modules/berth.list`, as the image builder resolved them.

use std::os::fd::AsRawFd;
use std::path::Path;

pub const LIST: &str = "/lib/modules/berth.list";
/// Separates the modules needed before the API serves from those loaded
/// afterwards (`berth_guest_image::LATER_MARKER`).
const LATER_MARKER: &str = "--later--";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Boot,
    Later,
}

/// Loads the modules of `phase`; returns how many failed (each is logged).
pub fn load_all(phase: Phase) -> usize {
    let list = match std::fs::read_to_string(LIST) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth-agent: no module list {LIST}: {e}");
            return 0;
        }
    };
    let mut failed = 0;
    let mut later = false;
    for line in list.lines().filter(|l| !l.trim().is_empty()) {
        if line.trim() == LATER_MARKER {
            later = true;
            continue;
        }
        if later != (phase == Phase::Later) {
            continue;
        }
        let path = Path::new("/lib/modules").join(line.trim());
        if let Err(e) = load(&path) {
            // No such hardware (the Hyper-V bus outside Hyper-V): expected.
            if e.raw_os_error() == Some(libc::ENODEV) {
                continue;
            }
            // The Hyper-V socket transport needs the Hyper-V bus, absent (ENODEV above)
            // outside Hyper-V; its module then fails with unknown symbols (ENOENT).
            let hyperv = line.contains("/hv_");
            if hyperv && e.raw_os_error() == Some(libc::ENOENT) {
                continue;
            }
            eprintln!("berth-agent: loading {}: {e}", path.display());
            failed += 1;
        }
    }
    failed
}

fn load(path: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    let params = c"";
    // SAFETY: finit_module reads the open module file and a NUL-terminated
    // parameter string that outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    // Built in, or already loaded as another module's dependency.
    if err.raw_os_error() == Some(libc::EEXIST) {
        return Ok(());
    }
    Err(err)
}
