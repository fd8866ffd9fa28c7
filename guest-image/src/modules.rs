//! Picks the guest's kernel modules and their dependencies out of a
//! Debian kernel's `modules.dep`, in an order that loads dependencies first.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::{io, GuestImageError};

/// A named set of modules; the agent loads each group's list when its
/// condition holds (see [`GROUPS`]).
pub struct ModuleGroup {
    /// The group's header in `berth.list` is `--<name>--`.
    pub name: &'static str,
    /// Roots; their dependencies are resolved at build time.
    pub modules: &'static [&'static str],
}

/// The groups in list order. Before the API serves, the agent loads `boot`
/// and `disk`; `hyperv` only on Hyper-V; `pci` only when a virtio device is on
/// the PCI bus; `virtiofs`/`9p` only when a share of
/// that filesystem is on the command line (each skipped group is boot time
/// saved under emulation: 50–300 ms); and `later` while the data disk mounts.
/// (Loading `disk` on a second thread was slower under TCG, not faster.)
///
/// `crc32c_generic` comes before ext4: ext4 asks the crypto layer for
/// crc32c by name when it mounts a disk that has been mounted before (the
/// guest has no modprobe to find it), and `libcrc32c` does the same.
/// overlay is loaded with the disk: the engine's snapshotter probes for it
/// when the image store opens.
pub const GROUPS: &[ModuleGroup] = &[
    ModuleGroup {
        name: "boot",
        modules: &[
            "virtio_mmio",
            "virtio_blk",
            "virtio_net",
            "vmw_vsock_virtio_transport",
        ],
    },
    ModuleGroup {
        name: "disk",
        modules: &["crc32c_generic", "ext4", "overlay"],
    },
    // Hyper-V's SCSI disk, network adapter, socket transport (the agent's
    // API and ready report) and utilities (time sync, shutdown, heartbeat).
    ModuleGroup {
        name: "hyperv",
        modules: &["hv_storvsc", "sd_mod", "hv_netvsc", "hv_sock", "hv_utils"],
    },
    // Virtualization.framework puts its virtio devices (disk, network, vsock, console
    // hvc0) on PCI; QEMU's microvm has no PCI bus.
    ModuleGroup {
        name: "pci",
        modules: &["virtio_pci", "virtio_console"],
    },
    ModuleGroup {
        name: "virtiofs",
        modules: &["virtiofs"],
    },
    ModuleGroup {
        name: "9p",
        modules: &["9pnet_virtio", "9p"],
    },
    // 9p over a connected socket: Hyper-V's Plan9 shares, reached over vsock.
    ModuleGroup {
        name: "9p-fd",
        modules: &["9pnet_fd", "9p"],
    },
    // What the engine's bridge networking needs.
    ModuleGroup {
        name: "later",
        modules: &[
            "bridge",
            "veth",
            "br_netfilter",
            "nf_tables",
            "nft_chain_nat",
            "nft_masq",
            "nft_nat",
            "nft_ct",
            "nft_fib_inet",
            "nf_conntrack",
            "nf_nat",
        ],
    },
];

/// Every group's module paths, dependencies first: the first group lists
/// its whole closure, every other group what the first does not load. A
/// module two conditional groups share is listed in both (loading it again
/// is harmless), so no group depends on another being loaded.
pub fn resolve_groups(
    modules_dir: &Path,
) -> Result<Vec<(&'static str, Vec<String>)>, GuestImageError> {
    let text = modules_dep_text(modules_dir)?;
    let builtin = builtin_modules(modules_dir)?;
    resolve_groups_from(&text, &builtin, GROUPS)
}

fn resolve_groups_from(
    dep_text: &str,
    builtin: &HashSet<String>,
    groups: &[ModuleGroup],
) -> Result<Vec<(&'static str, Vec<String>)>, GuestImageError> {
    let mut out: Vec<(&'static str, Vec<String>)> = Vec::new();
    for group in groups {
        let mut list = resolve_from(dep_text, builtin, group.modules)?;
        if let Some((_, first)) = out.first() {
            list.retain(|m| !first.contains(m));
        }
        out.push((group.name, list));
    }
    Ok(out)
}

/// The end of a signed module: `[module][signature][struct module_signature,
/// 12 bytes, the signature's length last as a big-endian u32][MAGIC]`.
const SIGNATURE_MAGIC: &[u8] = b"~Module signature appended~\n";
const SIGNATURE_INFO_LEN: usize = 12;

/// The module without its appended signature (as is, if it has none). The
/// guest loads modules from the initramfs the host built from a Debian
/// package whose archive signature apt checked; the kernel checking each
/// module's own signature again cost 35% of the module loading time under
/// emulation (~0.3 s of every boot). Without one the kernel only notes
/// itself tainted: it enforces signatures only under Secure Boot lockdown,
/// which a directly booted guest kernel is not in.
pub fn without_signature(module: &[u8]) -> &[u8] {
    let Some(rest) = module.strip_suffix(SIGNATURE_MAGIC) else {
        return module;
    };
    let Some(info_at) = rest.len().checked_sub(SIGNATURE_INFO_LEN) else {
        return module;
    };
    let len_bytes: [u8; 4] = match rest[rest.len() - 4..].try_into() {
        Ok(b) => b,
        Err(_) => return module,
    };
    let signature_len = u32::from_be_bytes(len_bytes) as usize;
    match info_at.checked_sub(signature_len) {
        Some(end) => &module[..end],
        None => module,
    }
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The names of the modules built into the kernel (`modules.builtin`): a
/// group may name one (trixie builds virtiofs in, bookworm as a module).
fn builtin_modules(modules_dir: &Path) -> Result<HashSet<String>, GuestImageError> {
    let path = modules_dir.join("modules.builtin");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.lines().map(module_name).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
        Err(e) => Err(io("reading", &path)(e)),
    }
}

/// `modules.dep` of the tree. A package as shipped has none (depmod makes
/// it at install time), so then it is made from the `depends=` field of each
/// module's `.modinfo` section.
fn modules_dep_text(modules_dir: &Path) -> Result<String, GuestImageError> {
    let dep_file = modules_dir.join("modules.dep");
    let text = match std::fs::read_to_string(&dep_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            modules_dep_from_modinfo(modules_dir)?
        }
        Err(e) => return Err(io("reading", &dep_file)(e)),
    };
    Ok(text)
}

/// Builds `modules.dep` text from every `.ko` under `modules_dir/kernel`.
fn modules_dep_from_modinfo(modules_dir: &Path) -> Result<String, GuestImageError> {
    let mut files = Vec::new();
    let mut stack = vec![modules_dir.join("kernel")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io("listing", &dir))? {
            let path = entry.map_err(io("listing", &dir))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "ko") {
                files.push(path);
            }
        }
    }
    files.sort();
    let rel = |p: &Path| {
        p.strip_prefix(modules_dir)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let by_name: HashMap<String, String> = files
        .iter()
        .map(|p| (module_name(&rel(p)), rel(p)))
        .collect();
    let mut text = String::new();
    for path in &files {
        let bytes = std::fs::read(path).map_err(io("reading", path))?;
        let deps: Vec<&String> = modinfo(&bytes, "depends")
            .map(|d| {
                d.split(',')
                    .filter(|n| !n.is_empty())
                    .filter_map(|n| by_name.get(&n.replace('-', "_")))
                    .collect()
            })
            .unwrap_or_default();
        text.push_str(&rel(path));
        text.push(':');
        for d in deps {
            text.push(' ');
            text.push_str(d);
        }
        text.push('\n');
    }
    Ok(text)
}

/// The value of `key` in an ELF64 module's `.modinfo` section.
pub(crate) fn modinfo(elf: &[u8], key: &str) -> Option<String> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| -> Option<usize> {
        let b: [u8; 8] = elf.get(o..o + 8)?.try_into().ok()?;
        usize::try_from(u64::from_le_bytes(b)).ok()
    };
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        return None;
    }
    let shoff = u64_at(0x28)?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let shstrndx = usize::from(u16_at(0x3e)?);
    let section = |i: usize| -> Option<(usize, usize, usize)> {
        let h = shoff + i * shentsize;
        Some((
            usize::try_from(u32_at(h)?).ok()?,
            u64_at(h + 0x18)?,
            u64_at(h + 0x20)?,
        ))
    };
    let (_, stroff, _) = section(shstrndx)?;
    let prefix = format!("{key}=");
    for i in 0..shnum {
        let (name, off, size) = section(i)?;
        let name_bytes = elf.get(stroff + name..)?;
        let end = name_bytes.iter().position(|&b| b == 0)?;
        if &name_bytes[..end] != b".modinfo" {
            continue;
        }
        let data = elf.get(off..off + size)?;
        return data
            .split(|&b| b == 0)
            .filter_map(|f| std::str::from_utf8(f).ok())
            .find_map(|f| f.strip_prefix(&prefix).map(str::to_string));
    }
    None
}

/// Paths (relative to the modules directory) of `wanted` and every
/// dependency, dependencies before dependents; built-in modules need nothing.
fn resolve_from(
    dep_text: &str,
    builtin: &HashSet<String>,
    wanted: &[&str],
) -> Result<Vec<String>, GuestImageError> {
    let mut deps: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in dep_text.lines() {
        let Some((module, rest)) = line.split_once(':') else {
            continue;
        };
        let list = rest.split_whitespace().map(str::to_string).collect();
        deps.insert(module_name(module), (module.to_string(), list));
    }
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    for name in wanted {
        let key = name.replace('-', "_");
        if builtin.contains(&key) {
            continue;
        }
        let Some((path, _)) = deps.get(&key) else {
            return Err(GuestImageError::MissingModule(name.to_string()));
        };
        visit(path, &deps, &mut seen, &mut order);
    }
    Ok(order)
}

/// Depth-first, dependencies first.
fn visit(
    path: &str,
    deps: &HashMap<String, (String, Vec<String>)>,
    seen: &mut HashSet<String>,
    order: &mut Vec<String>,
) {
    if !seen.insert(path.to_string()) {
        return;
    }
    if let Some((_, list)) = deps.get(&module_name(path)) {
        for dep in list {
            visit(dep, deps, seen, order);
        }
    }
    order.push(path.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_first_once() {
        let dep = "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vsock.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
";
        let order = resolve_from(
            dep,
            &HashSet::new(),
            &["virtio_mmio", "vmw_vsock_virtio_transport"],
        )
        .expect("resolve");
        let pos = |m: &str| order.iter().position(|p| p.ends_with(m)).expect(m);
        assert_eq!(order.len(), 6);
        assert!(pos("/virtio_ring.ko") < pos("/virtio.ko"));
        assert!(pos("/virtio.ko") < pos("/virtio_mmio.ko"));
        assert!(pos("/vsock.ko") < pos("/vmw_vsock_virtio_transport_common.ko"));
        assert!(pos("_common.ko") < pos("/vmw_vsock_virtio_transport.ko"));
        let err = resolve_from(dep, &HashSet::new(), &["nope"]).expect_err("missing");
        let builtin = HashSet::from(["nope".to_string()]);
        assert!(resolve_from(dep, &builtin, &["nope"])
            .expect("built in")
            .is_empty());
        assert!(matches!(err, GuestImageError::MissingModule(m) if m == "nope"));
    }

    #[test]
    fn groups_after_the_first_omit_what_it_loads_but_keep_their_own_dependencies() {
        let dep = "kernel/a/base.ko:
kernel/a/boot.ko: kernel/a/base.ko
kernel/b/shared.ko: kernel/a/base.ko
kernel/b/x.ko: kernel/b/shared.ko kernel/a/base.ko
kernel/b/y.ko: kernel/b/shared.ko
";
        let groups = [
            ModuleGroup {
                name: "boot",
                modules: &["boot"],
            },
            ModuleGroup {
                name: "x",
                modules: &["x"],
            },
            ModuleGroup {
                name: "y",
                modules: &["y"],
            },
        ];
        let resolved = resolve_groups_from(dep, &HashSet::new(), &groups).expect("resolve");
        let names: Vec<(&str, Vec<&str>)> = resolved
            .iter()
            .map(|(g, l)| (*g, l.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("boot", vec!["kernel/a/base.ko", "kernel/a/boot.ko"]),
                ("x", vec!["kernel/b/shared.ko", "kernel/b/x.ko"]),
                ("y", vec!["kernel/b/shared.ko", "kernel/b/y.ko"]),
            ]
        );
    }

    #[test]
    fn signatures_are_cut_off_and_unsigned_or_odd_modules_kept() {
        let body = b"\x7fELF module body".to_vec();
        let signature = vec![0xaa; 5];
        let mut info = vec![0u8; SIGNATURE_INFO_LEN - 4];
        info.extend_from_slice(&(signature.len() as u32).to_be_bytes());
        let signed = [body.clone(), signature, info, SIGNATURE_MAGIC.to_vec()].concat();
        assert_eq!(without_signature(&signed), &body[..]);
        assert_eq!(without_signature(&body), &body[..]);
        // A length beyond the file is not trusted.
        let mut bogus = vec![0u8; SIGNATURE_INFO_LEN - 4];
        bogus.extend_from_slice(&u32::MAX.to_be_bytes());
        let odd = [bogus, SIGNATURE_MAGIC.to_vec()].concat();
        assert_eq!(without_signature(&odd), &odd[..]);
        assert_eq!(without_signature(SIGNATURE_MAGIC), SIGNATURE_MAGIC);
    }
}
