//! The cgroup v2 device filter: OCI device rules compiled to an eBPF
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program and attached to the container's
//! cgroup with `BPF_F_ALLOW_MULTI`, replacing the program attached before.
//!
//! The program sees `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
//! u32 minor; }`, where `access_type` holds the device type in its low 16
//! bits (1 block, 2 char) and the access in its high 16 bits (1 mknod,
//! 2 read, 4 write). It returns 1 to allow and 0 to deny.
//!
//! Rules are evaluated last-match-wins, like the v1 controller: they are
//! emitted newest first, each returning its verdict on a match. An allow
//! rule matches when it covers every requested access; a deny rule when it
//! covers any of them. With no matching rule the access is allowed, as in a
//! fresh v1 cgroup under the (allow-all) root; OCI specs start with a
//! deny-all rule, which always matches.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::CgroupError;

// bpf(2) commands, program/attach types and flags (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

// Device types and access bits in `access_type`.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: u8 = 1;
const ACC_READ: u8 = 2;
const ACC_WRITE: u8 = 4;
const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// Verdict when no rule matches (see the module docs).
const DEFAULT_VERDICT: i32 = 1;

/// One eBPF instruction, `struct bpf_insn` (dst register in the low nibble
/// of `regs`, src in the high one, as on little-endian machines).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

// Opcodes used below.
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const ALU64_MOV_K: u8 = 0xb7; // dst = imm
const ALU64_MOV_X: u8 = 0xbf; // dst = src
const ALU64_AND_K: u8 = 0x57; // dst &= imm
const ALU64_RSH_K: u8 = 0x77; // dst >>= imm
const JMP_JEQ_K: u8 = 0x15; // if dst == imm goto pc + off
const JMP_JNE_K: u8 = 0x55; // if dst != imm goto pc + off
const JMP_EXIT: u8 = 0x95;

// Registers: r0 return value, r1 context; r2 access bits, r3 type,
// r4 major, r5 minor, r6 scratch.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// A device rule reduced to what the program tests.
#[derive(Debug, PartialEq, Eq)]
struct Rule {
    allow: bool,
    /// None: any type.
    ty: Option<i32>,
    major: Option<i32>,
    minor: Option<i32>,
    access: u8,
}

impl Rule {
    /// None for rules the device controller does not cover (FIFOs).
    fn from_oci(r: &LinuxDeviceCgroup) -> Option<Rule> {
        let ty = match r.typ().unwrap_or_default() {
            LinuxDeviceType::A => None,
            LinuxDeviceType::B => Some(DEV_BLOCK),
            LinuxDeviceType::C | LinuxDeviceType::U => Some(DEV_CHAR),
            LinuxDeviceType::P => return None,
        };
        // Negative numbers are wildcards; validation capped them at i32::MAX.
        let num = |v: Option<i64>| v.and_then(|n| i32::try_from(n).ok()).filter(|n| *n >= 0);
        let access = match r.access().as_deref() {
            None | Some("") => ACC_ALL,
            Some(a) => a.chars().fold(0, |acc, c| {
                acc | match c {
                    'm' => ACC_MKNOD,
                    'r' => ACC_READ,
                    'w' => ACC_WRITE,
                    _ => 0,
                }
            }),
        };
        Some(Rule {
            allow: r.allow(),
            ty,
            major: num(r.major()),
            minor: num(r.minor()),
            access,
        })
    }

    /// Matches every request, so the rules before it can never be reached.
    fn matches_everything(&self) -> bool {
        self.ty.is_none() && self.major.is_none() && self.minor.is_none() && self.access == ACC_ALL
    }

    /// The rule's block: conditional jumps past the block on a mismatch,
    /// then `r0 = verdict; exit`.
    fn emit(&self, out: &mut Vec<Insn>) {
        let start = out.len();
        let mut skips = Vec::new();
        for (reg, value) in [(R3, self.ty), (R4, self.major), (R5, self.minor)] {
            if let Some(v) = value {
                skips.push(out.len());
                out.push(insn(JMP_JNE_K, reg, 0, 0, v));
            }
        }
        if self.access != ACC_ALL {
            out.push(insn(ALU64_MOV_X, R6, R2, 0, 0));
            if self.allow {
                // Some requested access is outside the rule: no match.
                out.push(insn(
                    ALU64_AND_K,
                    R6,
                    0,
                    0,
                    i32::from(!self.access & ACC_ALL),
                ));
                skips.push(out.len());
                out.push(insn(JMP_JNE_K, R6, 0, 0, 0));
            } else {
                // No requested access is denied by the rule: no match.
                out.push(insn(ALU64_AND_K, R6, 0, 0, i32::from(self.access)));
                skips.push(out.len());
                out.push(insn(JMP_JEQ_K, R6, 0, 0, 0));
            }
        }
        out.push(insn(ALU64_MOV_K, R0, 0, 0, i32::from(self.allow)));
        out.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let end = out.len();
        for at in skips {
            // Blocks are a handful of instructions: the offset always fits.
            out[at].off = i16::try_from(end - (at + 1)).unwrap_or(i16::MAX);
        }
        debug_assert!(end - start < 16);
    }
}

/// Compiles OCI device rules (in spec order) to the filter program.
pub(super) fn compile(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    let mut prog = vec![
        insn(LDX_MEM_W, R2, R1, 0, 0),   // r2 = ctx->access_type
        insn(ALU64_MOV_X, R3, R2, 0, 0), // r3 = r2 & 0xffff (type)
        insn(ALU64_AND_K, R3, 0, 0, 0xffff),
        insn(ALU64_RSH_K, R2, 0, 0, 16), // r2 >>= 16 (access)
        insn(LDX_MEM_W, R4, R1, 4, 0),   // r4 = ctx->major
        insn(LDX_MEM_W, R5, R1, 8, 0),   // r5 = ctx->minor
    ];
    for rule in rules.iter().rev().filter_map(Rule::from_oci) {
        rule.emit(&mut prog);
        if rule.matches_everything() {
            // Anything after this would be unreachable, which the verifier rejects.
            return prog;
        }
    }
    prog.push(insn(ALU64_MOV_K, R0, 0, 0, DEFAULT_VERDICT));
    prog.push(insn(JMP_EXIT, 0, 0, 0, 0));
    prog
}

#[repr(C)]
#[derive(Clone, Copy)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `union bpf_attr`, cut down to the commands used here. `zero` makes every
/// byte defined (the kernel rejects non-zero bytes past the used fields).
#[repr(C)]
union BpfAttr {
    zero: [u64; 16],
    load: ProgLoadAttr,
    attach: AttachAttr,
    query: QueryAttr,
    get_fd: GetFdByIdAttr,
}

impl BpfAttr {
    fn zeroed() -> Self {
        BpfAttr { zero: [0; 16] }
    }
}

/// `bpf(cmd, attr, sizeof attr)`.
fn sys_bpf(cmd: libc::c_long, attr: &mut BpfAttr) -> std::io::Result<libc::c_long> {
    let size = std::mem::size_of::<BpfAttr>();
    // SAFETY: `attr` is a live, fully initialised `BpfAttr` of `size` bytes
    // for the whole call; the kernel reads at most `size` bytes from it and
    // only writes to fields of it (prog_cnt) and to buffers whose pointers
    // and lengths the caller stored in it and keeps alive across the call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut BpfAttr, size) };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Wraps a new file descriptor returned by `bpf(2)`.
fn owned_fd(ret: libc::c_long) -> std::io::Result<OwnedFd> {
    let fd = i32::try_from(ret).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: `fd` was just returned by a successful bpf(2) call that creates
    // a new descriptor, so nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fd_u32(fd: &impl AsRawFd) -> u32 {
    // Descriptors are non-negative.
    u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)
}

const LICENSE: &[u8] = b"Apache-2.0\0";
const PROG_NAME: &[u8] = b"berth_devices";
const LOG_SIZE: usize = 64 * 1024;

/// Loads `prog`; on failure loads it again with the verifier log on, for the error.
fn load(prog: &[Insn], cgroup: &Path) -> Result<OwnedFd, CgroupError> {
    let mut name = [0u8; 16];
    name[..PROG_NAME.len()].copy_from_slice(PROG_NAME);
    let mut log = vec![0u8; LOG_SIZE];
    let make = |log: Option<&mut Vec<u8>>| {
        let mut attr = BpfAttr::zeroed();
        let (level, size, buf) = match log {
            Some(l) => (
                1,
                u32::try_from(l.len()).unwrap_or(0),
                l.as_mut_ptr() as u64,
            ),
            None => (0, 0, 0),
        };
        attr.load = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: u32::try_from(prog.len()).unwrap_or(u32::MAX),
            insns: prog.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            log_level: level,
            log_size: size,
            log_buf: buf,
            kern_version: 0,
            prog_flags: 0,
            prog_name: name,
            prog_ifindex: 0,
            expected_attach_type: 0,
        };
        attr
    };
    let mut attr = make(None);
    if let Ok(ret) = sys_bpf(BPF_PROG_LOAD, &mut attr) {
        return owned_fd(ret).map_err(|source| CgroupError::BpfLoad {
            path: cgroup.to_path_buf(),
            log: String::new(),
            source,
        });
    }
    let mut attr = make(Some(&mut log));
    let result = sys_bpf(BPF_PROG_LOAD, &mut attr).and_then(owned_fd);
    result.map_err(|source| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        CgroupError::BpfLoad {
            path: cgroup.to_path_buf(),
            log: String::from_utf8_lossy(&log[..end]).trim().to_string(),
            source,
        }
    })
}

/// Ids of the device programs attached directly to `cgroup_fd`.
fn query(cgroup_fd: &OwnedFd, cgroup: &Path) -> Result<Vec<u32>, CgroupError> {
    let mut ids = vec![0u32; 64];
    let mut attr = BpfAttr::zeroed();
    attr.query = QueryAttr {
        target_fd: fd_u32(cgroup_fd),
        attach_type: BPF_CGROUP_DEVICE,
        query_flags: 0,
        attach_flags: 0,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: u32::try_from(ids.len()).unwrap_or(0),
        _pad: 0,
    };
    sys_bpf(BPF_PROG_QUERY, &mut attr).map_err(|source| CgroupError::BpfQuery {
        path: cgroup.to_path_buf(),
        source,
    })?;
    // SAFETY: `query` is the variant written above; the kernel updated its
    // `prog_cnt` in place and all bytes of the union are initialised.
    let count = unsafe { attr.query.prog_cnt } as usize;
    ids.truncate(count.min(ids.len()));
    Ok(ids)
}

/// Compiles `rules`, attaches the program to `cgroup` and detaches the
/// device programs that were attached there before.
pub(super) fn apply(cgroup: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    let prog = compile(rules);
    let prog_fd = load(&prog, cgroup)?;
    let dir = std::fs::File::open(cgroup).map_err(|source| CgroupError::Open {
        path: cgroup.to_path_buf(),
        source,
    })?;
    let cgroup_fd = OwnedFd::from(dir);
    let old = query(&cgroup_fd, cgroup)?;

    let mut attr = BpfAttr::zeroed();
    attr.attach = AttachAttr {
        target_fd: fd_u32(&cgroup_fd),
        attach_bpf_fd: fd_u32(&prog_fd),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    sys_bpf(BPF_PROG_ATTACH, &mut attr).map_err(|source| CgroupError::BpfAttach {
        path: cgroup.to_path_buf(),
        source,
    })?;

    for id in old {
        let mut attr = BpfAttr::zeroed();
        attr.get_fd = GetFdByIdAttr {
            prog_id: id,
            next_id: 0,
            open_flags: 0,
        };
        let old_fd = match sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).and_then(owned_fd) {
            Ok(fd) => fd,
            // Detached and freed in the meantime.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(source) => {
                return Err(CgroupError::BpfDetach {
                    path: cgroup.to_path_buf(),
                    id,
                    source,
                })
            }
        };
        let mut attr = BpfAttr::zeroed();
        attr.attach = AttachAttr {
            target_fd: fd_u32(&cgroup_fd),
            attach_bpf_fd: fd_u32(&old_fd),
            attach_type: BPF_CGROUP_DEVICE,
            attach_flags: 0,
            replace_bpf_fd: 0,
        };
        match sys_bpf(BPF_PROG_DETACH, &mut attr) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(source) => {
                return Err(CgroupError::BpfDetach {
                    path: cgroup.to_path_buf(),
                    id,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Ids of the device programs attached to `cgroup`.
#[cfg(test)]
pub(super) fn attached_programs(cgroup: &Path) -> Result<Vec<u32>, CgroupError> {
    let dir = std::fs::File::open(cgroup).map_err(|source| CgroupError::Open {
        path: cgroup.to_path_buf(),
        source,
    })?;
    query(&OwnedFd::from(dir), cgroup)
}

#[cfg(test)]
mod unit {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn rule(
        allow: bool,
        ty: LinuxDeviceType,
        major: i64,
        minor: i64,
        access: &str,
    ) -> LinuxDeviceCgroup {
        LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(ty)
            .major(major)
            .minor(minor)
            .access(access)
            .build()
            .expect("builds")
    }

    fn deny_all() -> LinuxDeviceCgroup {
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .expect("builds")
    }

    /// A tiny interpreter for the subset of eBPF `compile` emits, so the
    /// semantics can be checked without the kernel.
    fn run(prog: &[Insn], ty: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [ty | (access << 16), major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = (usize::from(i.regs & 0x0f), usize::from(i.regs >> 4));
            let imm = i64::from(i.imm) as u64;
            let jump = |cond: bool| if cond { i64::from(i.off) } else { 0 };
            let mut off = 0i64;
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    r[dst] = u64::from(ctx[usize::try_from(i.off).expect("offset") / 4]);
                }
                ALU64_MOV_K => r[dst] = imm,
                ALU64_MOV_X => r[dst] = r[src],
                ALU64_AND_K => r[dst] &= imm,
                ALU64_RSH_K => r[dst] >>= imm,
                JMP_JEQ_K => off = jump(r[dst] == imm),
                JMP_JNE_K => off = jump(r[dst] != imm),
                JMP_EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
            pc = usize::try_from(i64::try_from(pc).expect("pc") + 1 + off).expect("pc in range");
        }
    }

    const C: u32 = DEV_CHAR as u32;
    const B: u32 = DEV_BLOCK as u32;
    const R: u32 = ACC_READ as u32;
    const W: u32 = ACC_WRITE as u32;
    const M: u32 = ACC_MKNOD as u32;

    #[test]
    fn deny_all_then_allow_some() {
        let prog = compile(&[
            deny_all(),
            rule(true, LinuxDeviceType::C, 1, 5, "rwm"),
            rule(true, LinuxDeviceType::C, 1, 3, "r"),
        ]);
        assert_eq!(run(&prog, C, R | W, 1, 5), 1, "/dev/zero rw");
        assert_eq!(run(&prog, C, R, 1, 3), 1, "/dev/null r");
        assert_eq!(run(&prog, C, R | W, 1, 3), 0, "/dev/null rw needs w too");
        assert_eq!(run(&prog, C, M, 1, 3), 0, "/dev/null mknod");
        assert_eq!(run(&prog, B, R, 1, 5), 0, "block 1:5");
        assert_eq!(run(&prog, C, R, 1, 7), 0, "other char");
    }

    #[test]
    fn last_match_wins() {
        let prog = compile(&[
            deny_all(),
            rule(true, LinuxDeviceType::C, 1, -1, "rwm"),
            rule(false, LinuxDeviceType::C, 1, 3, "w"),
        ]);
        assert_eq!(run(&prog, C, R, 1, 3), 1, "read allowed by wildcard minor");
        assert_eq!(run(&prog, C, W, 1, 3), 0, "write denied by the later rule");
        assert_eq!(run(&prog, C, R | W, 1, 3), 0);
        assert_eq!(run(&prog, C, W, 1, 9), 1);
        // A later deny-all hides everything before it, and nothing follows it.
        let prog = compile(&[rule(true, LinuxDeviceType::C, 1, 3, "rwm"), deny_all()]);
        assert_eq!(run(&prog, C, R, 1, 3), 0);
        assert_eq!(prog.last().map(|i| i.code), Some(JMP_EXIT));
    }

    #[test]
    fn no_matching_rule_allows() {
        let prog = compile(&[rule(false, LinuxDeviceType::B, 8, 0, "w")]);
        assert_eq!(run(&prog, B, W, 8, 0), 0);
        assert_eq!(run(&prog, B, R, 8, 0), 1);
        assert_eq!(run(&prog, C, W, 1, 3), 1);
    }
}
