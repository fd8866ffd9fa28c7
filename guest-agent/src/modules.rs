//! Kernel modules: the initramfs lists them in `/lib/modules/berth.list` in
//! groups, as the image builder resolved them (`berth_guest_image::GROUPS`):
//! a `--<name>--` line, then that group's module paths in load order,
//! dependencies first.

use std::os::fd::AsRawFd;
use std::path::Path;

use berth_platform::protocol::ShareFs;

pub const LIST: &str = "/lib/modules/berth.list";

/// The groups to load before the API serves: the boot drivers and the data
/// disk's always, the Hyper-V drivers only on Hyper-V, a share filesystem only when a share
/// uses it (every module skipped is boot time saved under emulation).
pub fn boot_groups(on_hyperv: bool, shares: &[ShareFs]) -> Vec<&'static str> {
    let mut groups = vec!["boot", "disk"];
    if on_hyperv {
        groups.push("hyperv");
    }
    if shares.contains(&ShareFs::Virtiofs) {
        groups.push("virtiofs");
    }
    if shares.contains(&ShareFs::NineP) {
        groups.push("9p");
    }
    groups
}

/// The group loaded while the data disk mounts (bridge networking).
pub const LATER: &str = "later";

/// `berth.list` as (group, module paths) in file order.
fn parse(list: &str) -> Vec<(&str, Vec<&str>)> {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.strip_prefix("--").and_then(|l| l.strip_suffix("--")) {
            Some(name) => groups.push((name, Vec::new())),
            None => match groups.last_mut() {
                Some((_, modules)) => modules.push(line),
                None => eprintln!("berth-agent: {LIST}: {line} is in no group"),
            },
        }
    }
    groups
}

/// Loads the modules of the groups named in `wanted`, in the list's order;
/// returns how many failed (each is logged).
pub fn load_groups(wanted: &[&str]) -> usize {
    let list = match std::fs::read_to_string(LIST) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth-agent: no module list {LIST}: {e}");
            return 0;
        }
    };
    let mut failed = 0;
    for (group, modules) in parse(&list) {
        if !wanted.contains(&group) {
            continue;
        }
        for module in modules {
            let path = Path::new("/lib/modules").join(module);
            if let Err(e) = load(&path) {
                // Hyper-V's drivers where Hyper-V only seemed to be (its CPUID
                // signature under another hypervisor): no VMBus (ENODEV), and
                // then unknown symbols in its dependents (ENOENT). Expected.
                let hyperv_absent = group == "hyperv"
                    && matches!(e.raw_os_error(), Some(libc::ENODEV | libc::ENOENT));
                if !hyperv_absent {
                    eprintln!("berth-agent: loading {}: {e}", path.display());
                    failed += 1;
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_read_in_order_with_their_modules() {
        let list = "--boot--\nkernel/a.ko\nkernel/b.ko\n\n--hyperv--\n--9p--\nkernel/c.ko\n";
        assert_eq!(
            parse(list),
            vec![
                ("boot", vec!["kernel/a.ko", "kernel/b.ko"]),
                ("hyperv", vec![]),
                ("9p", vec!["kernel/c.ko"]),
            ]
        );
        assert!(parse("kernel/orphan.ko\n").is_empty());
    }

    #[test]
    fn boot_loads_only_what_the_host_and_shares_need() {
        assert_eq!(boot_groups(false, &[]), vec!["boot", "disk"]);
        assert_eq!(
            boot_groups(true, &[ShareFs::NineP, ShareFs::NineP]),
            vec!["boot", "disk", "hyperv", "9p"]
        );
        assert_eq!(
            boot_groups(false, &[ShareFs::Virtiofs, ShareFs::NineP]),
            vec!["boot", "disk", "virtiofs", "9p"]
        );
    }
}
