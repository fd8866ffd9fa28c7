//! Compiled filters kept on disk, so that a container start does not pay for
//! libseccomp again (building and exporting Docker's default profile takes
//! 8–15 ms here; reading the program back takes a few microseconds).
//!
//! One file per profile in the cache directory (the runtime root's
//! `.seccomp`, which no container id can be: ids start with a letter or a
//! digit). A file holds the whole key it was compiled for — the profile as
//! JSON, the kernel (release and build, whose features the compile probes),
//! the libseccomp version and the machine — followed by the result. It is
//! used only when the stored key equals the current one byte for byte, so a
//! name collision or a changed kernel or library can only cost a compile,
//! never give a wrong filter. Files are written once, on a miss, synced and
//! renamed into place; anything unreadable is ignored and compiled afresh.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use oci_spec::runtime::LinuxSeccomp;

use super::{compile, SeccompError, SeccompFilter, BPF_MAXINSNS};

/// Bump when the file layout or the meaning of a compiled program changes.
const FORMAT: &str = "berth-seccomp-cache 1";
/// Above this many files the directory is emptied before a new one goes in
/// (profiles are few in practice; this only bounds a stream of custom ones).
const MAX_ENTRIES: usize = 64;
const INSN_SIZE: usize = std::mem::size_of::<libc::sock_filter>();

/// [`compile`], through the cache in `dir` (created when missing). Errors
/// are compile errors only: the cache is best effort.
pub fn compile_cached(config: &LinuxSeccomp, dir: &Path) -> Result<SeccompFilter, SeccompError> {
    let Some(key) = key(config) else {
        return compile(config);
    };
    let path = dir.join(format!("{:016x}", fnv1a(key.as_bytes())));
    if let Some((program, flags, notify)) = fs::read(&path).ok().and_then(|d| parse(&d, &key)) {
        return Ok(SeccompFilter {
            program,
            flags,
            notify,
            listener_path: config.listener_path().clone(),
            listener_metadata: config.listener_metadata().clone(),
        });
    }
    let filter = compile(config)?;
    store(dir, &path, &key, &filter);
    Ok(filter)
}

/// What the compiled program depends on, as text.
fn key(config: &LinuxSeccomp) -> Option<String> {
    let profile = serde_json::to_string(config).ok()?;
    let uts = nix::sys::utsname::uname().ok()?;
    let version = libseccomp::ScmpVersion::current().ok()?;
    Some(format!(
        "{FORMAT}\n{} {}\n{} {}.{}.{}\n{}\n{profile}",
        uts.release().to_string_lossy(),
        uts.version().to_string_lossy(),
        std::env::consts::ARCH,
        version.major,
        version.minor,
        version.micro,
        cfg!(target_endian = "big"),
    ))
}

/// 64-bit FNV-1a: a file name, not a security boundary (the key is compared).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Layout: key length (u64 LE), key, flags (u64 LE), notify (u8),
/// instruction count (u32 LE), program, FNV-1a of everything before it
/// (u64 LE): a file cut short or damaged does not parse.
fn encode(key: &str, filter: &SeccompFilter) -> Vec<u8> {
    let mut out = Vec::with_capacity(29 + key.len() + filter.program.len() * INSN_SIZE);
    out.extend_from_slice(&(key.len() as u64).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    // c_ulong is u32 on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let flags = u64::from(filter.flags);
    out.extend_from_slice(&flags.to_le_bytes());
    out.push(u8::from(filter.notify));
    out.extend_from_slice(&(filter.program.len() as u32).to_le_bytes());
    for insn in &filter.program {
        out.extend_from_slice(&insn.code.to_ne_bytes());
        out.push(insn.jt);
        out.push(insn.jf);
        out.extend_from_slice(&insn.k.to_ne_bytes());
    }
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn parse(data: &[u8], key: &str) -> Option<(Vec<libc::sock_filter>, libc::c_ulong, bool)> {
    let (body, sum) = data.split_at_checked(data.len().checked_sub(8)?)?;
    if fnv1a(body) != u64::from_le_bytes(sum.try_into().ok()?) {
        return None;
    }
    let len = usize::try_from(u64::from_le_bytes(body.get(..8)?.try_into().ok()?)).ok()?;
    let rest = body.get(8..)?;
    if rest.get(..len)? != key.as_bytes() {
        return None;
    }
    let rest = &rest[len..];
    let flags =
        libc::c_ulong::try_from(u64::from_le_bytes(rest.get(..8)?.try_into().ok()?)).ok()?;
    let notify = match *rest.get(8)? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let count = usize::try_from(u32::from_le_bytes(rest.get(9..13)?.try_into().ok()?)).ok()?;
    let code = rest.get(13..)?;
    if count == 0 || count > BPF_MAXINSNS || code.len() != count * INSN_SIZE {
        return None;
    }
    let program = code
        .chunks_exact(INSN_SIZE)
        .map(|i| libc::sock_filter {
            code: u16::from_ne_bytes([i[0], i[1]]),
            jt: i[2],
            jf: i[3],
            k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
        })
        .collect();
    Some((program, flags, notify))
}

/// Best effort: a cache that cannot be written only means compiling again.
fn store(dir: &Path, path: &Path, key: &str, filter: &SeccompFilter) {
    if fs::DirBuilder::new().mode(0o700).create(dir).is_err() && !dir.is_dir() {
        return;
    }
    if fs::read_dir(dir).is_ok_and(|entries| entries.count() >= MAX_ENTRIES) {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        // Synced before the rename, so a crash leaves no file rather than
        // a short one (which the checksum would refuse anyway).
        .and_then(|mut f| {
            f.write_all(&encode(key, filter))
                .and_then(|()| f.sync_all())
        })
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_entry_is_what_a_hit_returns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config: LinuxSeccomp =
            serde_json::from_str(r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#).expect("profile");
        let other: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}]}"#,
        )
        .expect("profile");
        // Store `other`'s program under `config`'s key: a hit must return it
        // (proving hits come from the file, not from compiling).
        let key = key(&config).expect("key");
        let path = dir.path().join(format!("{:016x}", fnv1a(key.as_bytes())));
        let planted = compile(&other).expect("compile");
        store(dir.path(), &path, &key, &planted);
        let hit = compile_cached(&config, dir.path()).expect("hit");
        assert_eq!(hit.program.len(), planted.program.len());
        assert_ne!(
            hit.program.len(),
            compile(&config).expect("compile").program.len()
        );
    }
}
