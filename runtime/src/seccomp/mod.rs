//! The OCI seccomp section compiled to a BPF filter (through libseccomp) and
//! loaded into the container's init process.
//!
//! Design:
//! - [`compile`] runs in the runtime process, before fork. It validates the
//!   profile, builds a libseccomp filter context, and exports the finished
//!   classic-BPF program into memory. Every error a profile can cause shows up
//!   here, before any container state exists.
//! - [`SeccompFilter::load`] runs in the forked child right before `execve`.
//!   It does a single `seccomp(SECCOMP_SET_MODE_FILTER)` system call on the
//!   precomputed program: no allocation, no libseccomp state, so it is safe
//!   after `fork` even when the parent was multi-threaded.
//! - Filter flags (`TSYNC`, `LOG`, `SPEC_ALLOW`, `WAIT_KILLABLE_RECV`) are
//!   passed to the kernel directly; [`compile`] probes that the running kernel
//!   knows each requested flag and reports the one it does not.
//! - `SCMP_ACT_NOTIFY` makes `load` ask for a listener fd
//!   (`SECCOMP_FILTER_FLAG_NEW_LISTENER`), which it returns; [`send_notify_fd`]
//!   hands it to the seccomp agent at `listenerPath`.
//!
//! Syscall names unknown to libseccomp on this architecture are skipped (the
//! Docker profile lists syscalls of every architecture), and so are listed
//! architectures of the other byte order (libseccomp cannot mix them in one
//! filter, and the running kernel cannot execute them). Rules whose action
//! equals the default action are skipped too, as libseccomp refuses them.
//!
//! No `NO_NEW_PRIVS` is set here: the init process sets it when the spec asks
//! for it. Without it, loading needs `CAP_SYS_ADMIN`.

mod cache;
mod docker_default;
mod notify;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use nix::errno::Errno;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};

pub use cache::compile_cached;
pub use docker_default::{docker_default_profile, docker_default_profile_for};
pub use notify::{process_state_json, send_notify_fd};

/// Largest errno a filter can return (the kernel's `MAX_ERRNO`).
const MAX_ERRNO: u32 = 4095;
/// Syscalls take at most six arguments.
const MAX_SYSCALL_ARGS: usize = 6;
/// Largest classic-BPF program the kernel accepts (`BPF_MAXINSNS`).
const BPF_MAXINSNS: usize = 4096;
/// How often `load` retries after `EINTR`/`EAGAIN` before giving up.
const LOAD_RETRIES: u32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: {action} cannot be the default action")]
    InvalidDefaultAction { action: String },
    #[error("seccomp: errnoRet is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {action} (on {what})")]
    ErrnoRetNotAllowed { action: String, what: String },
    #[error("seccomp: errnoRet {errno} on {what} is out of range (0..={MAX_ERRNO})")]
    ErrnoRetOutOfRange { errno: u32, what: String },
    #[error("seccomp: syscall {syscall}: argument index {index} is out of range (must be < {MAX_SYSCALL_ARGS})")]
    ArgIndexOutOfRange { syscall: String, index: usize },
    #[error("seccomp: syscall {syscall}: {op} needs valueTwo")]
    MissingValueTwo { syscall: String, op: String },
    #[error("seccomp: a syscall rule has an empty name")]
    EmptySyscallName,
    #[error("seccomp: creating the filter context with default action {action} failed")]
    CreateContext {
        action: String,
        source: libseccomp::error::SeccompError,
    },
    #[error("seccomp: setting filter attribute {attribute} failed")]
    SetAttribute {
        attribute: &'static str,
        source: libseccomp::error::SeccompError,
    },
    #[error("seccomp: architecture {arch} is not supported by libseccomp")]
    AddArch {
        arch: String,
        source: libseccomp::error::SeccompError,
    },
    #[error("seccomp: adding rule for syscall {syscall} with action {action} failed")]
    AddRule {
        syscall: String,
        action: String,
        source: libseccomp::error::SeccompError,
    },
    #[error("seccomp: filter flag {flag} is not supported by the running kernel")]
    FlagUnsupported { flag: String },
    #[error("seccomp: probing kernel support for filter flag {flag} failed")]
    ProbeFlag { flag: String, source: Errno },
    #[error("seccomp: creating a memfd for the BPF export failed")]
    ExportMemfd(#[source] std::io::Error),
    #[error("seccomp: exporting the BPF program failed")]
    Export(#[source] libseccomp::error::SeccompError),
    #[error("seccomp: reading back the exported BPF program failed")]
    ExportRead(#[source] std::io::Error),
    #[error("seccomp: exported BPF program has a bad length of {len} bytes")]
    ExportLength { len: usize },
    #[error("seccomp: the BPF program has {len} instructions, more than the kernel's limit of {BPF_MAXINSNS}")]
    ProgramTooLarge { len: usize },
    #[error("seccomp: loading the filter failed")]
    Load(#[source] Errno),
    #[error("seccomp: loading with TSYNC failed: thread {tid} could not be synchronized")]
    TsyncFailed { tid: i64 },
    #[error("seccomp: connecting to the seccomp agent at {path} failed")]
    ListenerConnect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("seccomp: sending the notify fd to the seccomp agent at {path} failed")]
    ListenerSend { path: PathBuf, source: Errno },
    #[error("seccomp: the seccomp agent at {path} accepted only {sent} of {len} bytes")]
    ListenerShortWrite {
        path: PathBuf,
        sent: usize,
        len: usize,
    },
    #[error("seccomp: serializing the container process state failed")]
    StateJson(#[source] serde_json::Error),
}

/// A compiled filter, built in the runtime process before fork so that a bad
/// profile is reported before anything is created.
#[derive(Clone)]
pub struct SeccompFilter {
    program: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
    notify: bool,
    listener_path: Option<PathBuf>,
    listener_metadata: Option<String>,
}

impl std::fmt::Debug for SeccompFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeccompFilter")
            .field("instructions", &self.program.len())
            .field("flags", &self.flags)
            .field("notify", &self.notify)
            .field("listener_path", &self.listener_path)
            .field("listener_metadata", &self.listener_metadata)
            .finish()
    }
}

/// Validates and compiles `config` (actions, args, architectures, flags).
pub fn compile(config: &LinuxSeccomp) -> Result<SeccompFilter, SeccompError> {
    let default_action = convert_action(
        config.default_action(),
        config.default_errno_ret(),
        "defaultAction",
    )?;
    if default_action == ScmpAction::Notify {
        return Err(SeccompError::InvalidDefaultAction {
            action: config.default_action().to_string(),
        });
    }

    let mut ctx =
        ScmpFilterContext::new(default_action).map_err(|source| SeccompError::CreateContext {
            action: config.default_action().to_string(),
            source,
        })?;
    // Loading is ours (see `SeccompFilter::load`), but keep the context
    // consistent with what we do: no implicit NO_NEW_PRIVS.
    ctx.set_ctl_nnp(false)
        .map_err(|source| SeccompError::SetAttribute {
            attribute: "SCMP_FLTATR_CTL_NNP",
            source,
        })?;
    // A syscall from an architecture the profile does not list is killed
    // rather than run unfiltered.
    ctx.set_act_badarch(ScmpAction::KillProcess)
        .map_err(|source| SeccompError::SetAttribute {
            attribute: "SCMP_FLTATR_ACT_BADARCH",
            source,
        })?;

    for arch in config.architectures().iter().flatten() {
        if is_big_endian(*arch) != cfg!(target_endian = "big") {
            // libseccomp cannot mix byte orders in one filter, and this
            // kernel can never run such a syscall anyway.
            continue;
        }
        ctx.add_arch(convert_arch(*arch))
            .map_err(|source| SeccompError::AddArch {
                arch: arch_name(*arch),
                source,
            })?;
    }

    let mut notify = false;
    for rule in config.syscalls().iter().flatten() {
        if add_syscall_rule(&mut ctx, rule, default_action)? {
            notify = true;
        }
    }

    let mut flags = kernel_flags(config.flags().iter().flatten())?;
    if notify {
        flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        probe_flag(
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            "SECCOMP_FILTER_FLAG_NEW_LISTENER",
        )?;
        if flags & libc::SECCOMP_FILTER_FLAG_TSYNC != 0 {
            // With a listener the return value is the fd, so TSYNC failures
            // must be reported as ESRCH instead of a thread id.
            flags |= libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
            probe_flag(
                libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH,
                "SECCOMP_FILTER_FLAG_TSYNC_ESRCH",
            )?;
        }
    }

    let program = export_program(&ctx)?;
    Ok(SeccompFilter {
        program,
        flags,
        notify,
        listener_path: config.listener_path().clone(),
        listener_metadata: config.listener_metadata().clone(),
    })
}

impl SeccompFilter {
    /// Loads the filter into the calling thread. Returns the notify fd when
    /// the profile uses `SCMP_ACT_NOTIFY`.
    ///
    /// Meant for the forked child: it does not allocate on success and touches
    /// no libseccomp state. Retries on `EINTR`/`EAGAIN`.
    pub fn load(&self) -> Result<Option<OwnedFd>, SeccompError> {
        let prog = libc::sock_fprog {
            // `compile` guarantees len <= BPF_MAXINSNS, which fits in u16.
            len: u16::try_from(self.program.len()).unwrap_or(u16::MAX),
            filter: self.program.as_ptr().cast_mut(),
        };
        let mut attempts = 0;
        loop {
            // SAFETY: `prog` points at `self.program`, which outlives the call;
            // the kernel copies the program and does not write through the
            // pointer. The other arguments are plain integers.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    self.flags,
                    std::ptr::addr_of!(prog),
                )
            };
            if ret < 0 {
                let errno = Errno::last();
                if matches!(errno, Errno::EINTR | Errno::EAGAIN) && attempts < LOAD_RETRIES {
                    attempts += 1;
                    continue;
                }
                return Err(SeccompError::Load(errno));
            }
            if self.notify {
                let fd = i32::try_from(ret).map_err(|_| SeccompError::Load(Errno::EBADF))?;
                // SAFETY: with SECCOMP_FILTER_FLAG_NEW_LISTENER a non-negative
                // return is a fresh fd that nothing else owns.
                return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
            if ret > 0 {
                // Plain TSYNC reports the thread that could not sync.
                return Err(SeccompError::TsyncFailed { tid: ret });
            }
            return Ok(None);
        }
    }

    /// Whether any rule uses `SCMP_ACT_NOTIFY` (so `load` returns an fd).
    pub fn uses_notify(&self) -> bool {
        self.notify
    }

    /// The profile's `listenerPath`, where the notify fd is to be sent.
    pub fn listener_path(&self) -> Option<&Path> {
        self.listener_path.as_deref()
    }

    /// The profile's `listenerMetadata`, passed to the seccomp agent.
    pub fn listener_metadata(&self) -> Option<&str> {
        self.listener_metadata.as_deref()
    }

    /// Number of BPF instructions in the compiled program.
    pub fn instruction_count(&self) -> usize {
        self.program.len()
    }
}

/// Adds the libseccomp rules for one OCI syscall entry. Returns whether the
/// entry uses `SCMP_ACT_NOTIFY`.
fn add_syscall_rule(
    ctx: &mut ScmpFilterContext,
    rule: &LinuxSyscall,
    default_action: ScmpAction,
) -> Result<bool, SeccompError> {
    let what = rule.names().join(",");
    let action = convert_action(rule.action(), rule.errno_ret(), &what)?;
    let args = rule.args().as_deref().unwrap_or_default();
    let conditions = args
        .iter()
        .map(|arg| convert_arg(arg, &what))
        .collect::<Result<Vec<_>, _>>()?;
    if rule.names().iter().any(|n| n.is_empty()) {
        return Err(SeccompError::EmptySyscallName);
    }
    if action == default_action {
        return Ok(false);
    }

    // libseccomp refuses two conditions on the same argument in one rule; in
    // that case each condition becomes its own rule (so they are ORed).
    let mut seen = [false; MAX_SYSCALL_ARGS];
    let repeated_index = args.iter().any(|arg| {
        let index = arg.index();
        std::mem::replace(&mut seen[index], true)
    });

    let mut added = false;
    for name in rule.names() {
        let Ok(syscall) = libseccomp::ScmpSyscall::from_name(name) else {
            // Unknown on this architecture (or to this libseccomp): skip.
            continue;
        };
        let add_err = |source| SeccompError::AddRule {
            syscall: name.clone(),
            action: rule.action().to_string(),
            source,
        };
        if conditions.is_empty() {
            ctx.add_rule(action, syscall).map_err(add_err)?;
        } else if repeated_index {
            for condition in &conditions {
                ctx.add_rule_conditional(action, syscall, std::slice::from_ref(condition))
                    .map_err(add_err)?;
            }
        } else {
            ctx.add_rule_conditional(action, syscall, &conditions)
                .map_err(add_err)?;
        }
        added = true;
    }
    Ok(added && action == ScmpAction::Notify)
}

fn convert_action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    what: &str,
) -> Result<ScmpAction, SeccompError> {
    let ret_value = || -> Result<u32, SeccompError> {
        let errno = errno_ret.unwrap_or(libc::EPERM.unsigned_abs());
        if errno > MAX_ERRNO {
            return Err(SeccompError::ErrnoRetOutOfRange {
                errno,
                what: what.to_string(),
            });
        }
        Ok(errno)
    };
    let converted = match action {
        LinuxSeccompAction::ScmpActErrno => {
            // MAX_ERRNO fits both i32 and u16.
            return Ok(ScmpAction::Errno(
                i32::try_from(ret_value()?).unwrap_or(libc::EPERM),
            ));
        }
        LinuxSeccompAction::ScmpActTrace => {
            return Ok(ScmpAction::Trace(
                u16::try_from(ret_value()?).unwrap_or(libc::EPERM.unsigned_abs() as u16),
            ));
        }
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    };
    if errno_ret.is_some() {
        return Err(SeccompError::ErrnoRetNotAllowed {
            action: action.to_string(),
            what: what.to_string(),
        });
    }
    Ok(converted)
}

fn convert_arg(arg: &LinuxSeccompArg, syscall: &str) -> Result<ScmpArgCompare, SeccompError> {
    let index = arg.index();
    if index >= MAX_SYSCALL_ARGS {
        return Err(SeccompError::ArgIndexOutOfRange {
            syscall: syscall.to_string(),
            index,
        });
    }
    let (op, datum) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        // The spec's `value` is the mask and `valueTwo` the value compared
        // against; Docker omits valueTwo when it is 0.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    // `index < 6` was checked above.
    let index = u32::try_from(index).unwrap_or(u32::MAX);
    Ok(ScmpArgCompare::new(index, op, datum))
}

fn convert_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

/// Whether `arch` is a big-endian ABI.
fn is_big_endian(arch: Arch) -> bool {
    match arch {
        Arch::ScmpArchMips
        | Arch::ScmpArchMips64
        | Arch::ScmpArchMips64n32
        | Arch::ScmpArchPpc
        | Arch::ScmpArchPpc64
        | Arch::ScmpArchS390
        | Arch::ScmpArchS390x
        | Arch::ScmpArchParisc
        | Arch::ScmpArchParisc64
        | Arch::ScmpArchM68k
        | Arch::ScmpArchSheb => true,
        Arch::ScmpArchNative => cfg!(target_endian = "big"),
        Arch::ScmpArchX86
        | Arch::ScmpArchX86_64
        | Arch::ScmpArchX32
        | Arch::ScmpArchArm
        | Arch::ScmpArchAarch64
        | Arch::ScmpArchMipsel
        | Arch::ScmpArchMipsel64
        | Arch::ScmpArchMipsel64n32
        | Arch::ScmpArchPpc64le
        | Arch::ScmpArchRiscv64
        | Arch::ScmpArchLoongarch64
        | Arch::ScmpArchSh => false,
    }
}

/// The spec's name for `arch` (`SCMP_ARCH_X86_64`, ...).
fn arch_name(arch: Arch) -> String {
    serde_json::to_value(arch)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{arch:?}"))
}

/// Maps the spec's flags to kernel flags, checking the kernel knows each.
fn kernel_flags<'a>(
    flags: impl Iterator<Item = &'a LinuxSeccompFilterFlag>,
) -> Result<libc::c_ulong, SeccompError> {
    let mut bits = 0;
    for flag in flags {
        let (bit, name) = match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => {
                (libc::SECCOMP_FILTER_FLAG_TSYNC, "SECCOMP_FILTER_FLAG_TSYNC")
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => {
                (libc::SECCOMP_FILTER_FLAG_LOG, "SECCOMP_FILTER_FLAG_LOG")
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => (
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
                "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
            ),
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => (
                libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
                "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
            ),
        };
        probe_flag(bit, name)?;
        bits |= bit;
    }
    Ok(bits)
}

/// Asks the kernel whether it knows filter flag `bit`: with a NULL program,
/// a known flag fails with EFAULT (when the program is read), an unknown one
/// with EINVAL (when the flags are checked, which happens first).
fn probe_flag(bit: libc::c_ulong, name: &str) -> Result<(), SeccompError> {
    // SAFETY: a NULL program pointer makes the kernel fail with EFAULT before
    // installing anything; no memory of ours is read or written.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            bit,
            std::ptr::null::<libc::sock_fprog>(),
        )
    };
    if ret >= 0 {
        // Cannot happen with a NULL program; treat as supported.
        return Ok(());
    }
    match Errno::last() {
        Errno::EFAULT => Ok(()),
        Errno::EINVAL => Err(SeccompError::FlagUnsupported {
            flag: name.to_string(),
        }),
        source => Err(SeccompError::ProbeFlag {
            flag: name.to_string(),
            source,
        }),
    }
}

/// Exports the BPF program libseccomp generated for `ctx`.
fn export_program(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, SeccompError> {
    const INSN_SIZE: usize = std::mem::size_of::<libc::sock_filter>();

    // SAFETY: the name is a NUL-terminated C string literal; memfd_create
    // returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"berth-seccomp-bpf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(SeccompError::ExportMemfd(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    ctx.export_bpf(&file).map_err(SeccompError::Export)?;
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(SeccompError::ExportRead)?;

    if bytes.is_empty() || bytes.len() % INSN_SIZE != 0 {
        return Err(SeccompError::ExportLength { len: bytes.len() });
    }
    let program: Vec<libc::sock_filter> = bytes
        .chunks_exact(INSN_SIZE)
        .map(|insn| libc::sock_filter {
            code: u16::from_ne_bytes([insn[0], insn[1]]),
            jt: insn[2],
            jf: insn[3],
            k: u32::from_ne_bytes([insn[4], insn[5], insn[6], insn[7]]),
        })
        .collect();
    if program.len() > BPF_MAXINSNS {
        return Err(SeccompError::ProgramTooLarge { len: program.len() });
    }
    Ok(program)
}
