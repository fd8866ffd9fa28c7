//! Mount option strings (OCI `mounts[].options`, mount(8) spelling) turned
//! into `mount(2)` flags, propagation changes, recursive attributes
//! (`mount_setattr(2)`) and the filesystem-specific data string.

use nix::mount::MsFlags;

/// `mount_setattr(2)` attribute bits (linux/mount.h).
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x0000_0008;
pub(crate) const MOUNT_ATTR_ATIME_MASK: u64 = 0x0000_0070;
pub(crate) const MOUNT_ATTR_RELATIME: u64 = 0x0000_0000;
pub(crate) const MOUNT_ATTR_NOATIME: u64 = 0x0000_0010;
pub(crate) const MOUNT_ATTR_STRICTATIME: u64 = 0x0000_0020;
pub(crate) const MOUNT_ATTR_NODIRATIME: u64 = 0x0000_0080;

/// Per-mount flags a bind mount only takes through a second
/// `MS_REMOUNT|MS_BIND` call.
pub(crate) const BIND_REMOUNT_FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NOATIME)
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

/// Flags a user namespace locks on a mount it inherited: a bind remount must
/// keep them unless the spec explicitly clears them.
pub(crate) const LOCKABLE_FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// One mount's options, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountOptions {
    /// Flags to set on the mount.
    pub flags: MsFlags,
    /// Flags the spec explicitly clears ("rw", "suid", "dev", ...).
    pub cleared: MsFlags,
    /// Propagation changes, applied in order after the mount.
    pub propagation: Vec<MsFlags>,
    /// Recursive attributes set through `mount_setattr(AT_RECURSIVE)`.
    pub rec_set: u64,
    /// Recursive attributes cleared through `mount_setattr(AT_RECURSIVE)`.
    pub rec_clr: u64,
    /// Filesystem-specific data ("mode=755,size=65536k").
    pub data: String,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            flags: MsFlags::empty(),
            cleared: MsFlags::empty(),
            propagation: Vec::new(),
            rec_set: 0,
            rec_clr: 0,
            data: String::new(),
        }
    }
}

impl MountOptions {
    pub(crate) fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    pub(crate) fn has_rec_attrs(&self) -> bool {
        self.rec_set != 0 || self.rec_clr != 0
    }

    fn push_data(&mut self, opt: &str) {
        if !self.data.is_empty() {
            self.data.push(',');
        }
        self.data.push_str(opt);
    }

    /// Whether the data string already has `key` (bare or `key=...`).
    pub(crate) fn has_data_key(&self, key: &str) -> bool {
        self.data.split(',').any(|o| {
            o == key
                || (o.len() > key.len() && o.starts_with(key) && o.as_bytes()[key.len()] == b'=')
        })
    }

    /// Appends `opt` to the data string unless its key is already there.
    pub(crate) fn add_data_default(&mut self, key: &str, opt: &str) {
        if !self.has_data_key(key) {
            self.push_data(opt);
        }
    }
}

/// Why an option string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OptionError<'a> {
    Unknown(&'a str),
    Unsupported(&'a str, &'static str),
}

enum Effect {
    Set(MsFlags),
    Clear(MsFlags),
    Propagation(MsFlags),
    /// (attributes to set, attributes to clear)
    Recursive(u64, u64),
    Ignore,
}

fn effect(opt: &str) -> Option<Effect> {
    use Effect::*;
    Some(match opt {
        "defaults" => Ignore,
        "ro" => Set(MsFlags::MS_RDONLY),
        "rw" => Clear(MsFlags::MS_RDONLY),
        "nosuid" => Set(MsFlags::MS_NOSUID),
        "suid" => Clear(MsFlags::MS_NOSUID),
        "nodev" => Set(MsFlags::MS_NODEV),
        "dev" => Clear(MsFlags::MS_NODEV),
        "noexec" => Set(MsFlags::MS_NOEXEC),
        "exec" => Clear(MsFlags::MS_NOEXEC),
        "sync" => Set(MsFlags::MS_SYNCHRONOUS),
        "async" => Clear(MsFlags::MS_SYNCHRONOUS),
        "dirsync" => Set(MsFlags::MS_DIRSYNC),
        "remount" => Set(MsFlags::MS_REMOUNT),
        "mand" => Set(MsFlags::MS_MANDLOCK),
        "nomand" => Clear(MsFlags::MS_MANDLOCK),
        "atime" => Clear(MsFlags::MS_NOATIME),
        "noatime" => Set(MsFlags::MS_NOATIME),
        "diratime" => Clear(MsFlags::MS_NODIRATIME),
        "nodiratime" => Set(MsFlags::MS_NODIRATIME),
        "relatime" => Set(MsFlags::MS_RELATIME),
        "norelatime" => Clear(MsFlags::MS_RELATIME),
        "strictatime" => Set(MsFlags::MS_STRICTATIME),
        "nostrictatime" => Clear(MsFlags::MS_STRICTATIME),
        "lazytime" => Set(MsFlags::MS_LAZYTIME),
        "nolazytime" => Clear(MsFlags::MS_LAZYTIME),
        "silent" => Set(MsFlags::MS_SILENT),
        "loud" => Clear(MsFlags::MS_SILENT),
        "bind" => Set(MsFlags::MS_BIND),
        "rbind" => Set(MsFlags::MS_BIND.union(MsFlags::MS_REC)),
        "private" => Propagation(MsFlags::MS_PRIVATE),
        "rprivate" => Propagation(MsFlags::MS_PRIVATE.union(MsFlags::MS_REC)),
        "shared" => Propagation(MsFlags::MS_SHARED),
        "rshared" => Propagation(MsFlags::MS_SHARED.union(MsFlags::MS_REC)),
        "slave" => Propagation(MsFlags::MS_SLAVE),
        "rslave" => Propagation(MsFlags::MS_SLAVE.union(MsFlags::MS_REC)),
        "unbindable" => Propagation(MsFlags::MS_UNBINDABLE),
        "runbindable" => Propagation(MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC)),
        "rro" => Recursive(MOUNT_ATTR_RDONLY, 0),
        "rrw" => Recursive(0, MOUNT_ATTR_RDONLY),
        "rnosuid" => Recursive(MOUNT_ATTR_NOSUID, 0),
        "rsuid" => Recursive(0, MOUNT_ATTR_NOSUID),
        "rnodev" => Recursive(MOUNT_ATTR_NODEV, 0),
        "rdev" => Recursive(0, MOUNT_ATTR_NODEV),
        "rnoexec" => Recursive(MOUNT_ATTR_NOEXEC, 0),
        "rexec" => Recursive(0, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => Recursive(MOUNT_ATTR_NODIRATIME, 0),
        "rdiratime" => Recursive(0, MOUNT_ATTR_NODIRATIME),
        "rrelatime" => Recursive(MOUNT_ATTR_RELATIME, MOUNT_ATTR_ATIME_MASK),
        "rnoatime" => Recursive(MOUNT_ATTR_NOATIME, MOUNT_ATTR_ATIME_MASK),
        "rstrictatime" => Recursive(MOUNT_ATTR_STRICTATIME, MOUNT_ATTR_ATIME_MASK),
        _ => return None,
    })
}

/// Bare words (no `=`) that are filesystem data rather than flags.
const BARE_DATA_OPTIONS: &[&str] = &[
    "newinstance",
    "userxattr",
    "volatile",
    "nsdelegate",
    "memory_localevents",
    "memory_recursiveprot",
    "favordynmods",
    "xattr",
    "noprefix",
    "clone_children",
    "cpuset_v2_mode",
    "inode64",
    "inode32",
    "noswap",
    "index",
];

/// Parses a mount's option list. Key=value options and a short list of
/// known bare filesystem options become data; `x-*` options (userspace
/// hints for mount(8)) are ignored; any other bare word is an error.
pub(crate) fn parse(options: &[String]) -> Result<MountOptions, OptionError<'_>> {
    let mut out = MountOptions::default();
    for opt in options {
        let opt = opt.as_str();
        match effect(opt) {
            Some(Effect::Set(f)) => {
                out.flags.insert(f);
                out.cleared.remove(f);
            }
            Some(Effect::Clear(f)) => {
                out.flags.remove(f);
                out.cleared.insert(f);
            }
            Some(Effect::Propagation(f)) => out.propagation.push(f),
            Some(Effect::Recursive(set, clr)) => {
                // A later option wins; an atime mode clears the whole
                // atime field first, so it replaces any earlier one.
                out.rec_set = (out.rec_set & !clr) | set;
                out.rec_clr = (out.rec_clr & !set) | clr;
            }
            Some(Effect::Ignore) => {}
            None => match opt {
                "idmap" | "ridmap" => {
                    return Err(OptionError::Unsupported(
                        opt,
                        "id-mapped mounts are not supported",
                    ))
                }
                "tmpcopyup" => {
                    return Err(OptionError::Unsupported(opt, "tmpcopyup is not supported"))
                }
                _ if opt.starts_with("x-") => {}
                _ if opt.contains('=') && !opt.starts_with('=') => out.push_data(opt),
                _ if BARE_DATA_OPTIONS.contains(&opt) => out.push_data(opt),
                _ => return Err(OptionError::Unknown(opt)),
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(opts: &[&str]) -> Result<MountOptions, String> {
        let owned: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
        parse(&owned).map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn rootfs_options_flags_and_data() {
        let o = p(&["nosuid", "noexec", "nodev", "mode=755", "size=65536k", "ro"]).expect("parse");
        assert_eq!(
            o.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV | MsFlags::MS_RDONLY
        );
        assert_eq!(o.data, "mode=755,size=65536k");
        assert!(!o.is_bind());
        assert!(o.has_data_key("mode"));
        assert!(!o.has_data_key("mod"));
    }

    #[test]
    fn rootfs_options_clear_and_override() {
        let o = p(&["ro", "rw", "nosuid", "suid", "defaults"]).expect("parse");
        assert!(o.flags.is_empty());
        assert_eq!(o.cleared, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
    }

    #[test]
    fn rootfs_options_bind_and_propagation() {
        let o = p(&["rbind", "rprivate", "unbindable"]).expect("parse");
        assert!(o.is_bind());
        assert!(o.flags.contains(MsFlags::MS_REC));
        assert_eq!(
            o.propagation,
            vec![
                MsFlags::MS_PRIVATE | MsFlags::MS_REC,
                MsFlags::MS_UNBINDABLE
            ]
        );
    }

    #[test]
    fn rootfs_options_recursive_attrs() {
        let o = p(&["rro", "rnosuid", "rnoatime", "rstrictatime"]).expect("parse");
        assert_eq!(
            o.rec_set,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_STRICTATIME
        );
        assert_eq!(o.rec_clr, MOUNT_ATTR_ATIME_MASK);
        assert!(o.has_rec_attrs());
    }

    #[test]
    fn rootfs_options_errors_name_the_option() {
        assert_eq!(
            p(&["nosuid", "bogus"]).expect_err("must fail"),
            "Unknown(\"bogus\")"
        );
        assert!(p(&["idmap"]).expect_err("must fail").contains("idmap"));
        assert!(p(&["x-systemd.automount", "newinstance"]).is_ok());
        assert!(p(&["=x"]).is_err());
    }

    #[test]
    fn rootfs_options_add_default_data() {
        let mut o = p(&["newinstance", "ptmxmode=0600"]).expect("parse");
        o.add_data_default("newinstance", "newinstance");
        o.add_data_default("ptmxmode", "ptmxmode=0666");
        assert_eq!(o.data, "newinstance,ptmxmode=0600");
    }
}
