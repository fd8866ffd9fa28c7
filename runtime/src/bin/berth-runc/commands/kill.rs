//! `kill`: send a signal to a container's init process, or with `--all` to
//! every process in it.

use anyhow::{anyhow, bail, Context, Result};
use berth_runtime::state::Status;
use nix::sys::signal::Signal;

use super::Globals;
use crate::common::{self, CliError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Signal every process of the container, not just its init.
    #[arg(short = 'a', long)]
    pub all: bool,

    /// Container id.
    pub id: String,

    /// Signal name (TERM, SIGTERM, RTMIN+3) or number; default SIGTERM.
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

pub fn run(args: &Args, g: &Globals) -> Result<()> {
    let signum = parse_signal(&args.signal)?;
    let signal = Signal::try_from(signum)
        .map_err(|_| anyhow!("signal {signum} ({}) is not supported yet", args.signal))?;
    let c = common::load(&g.runtime(), &args.id)?;
    if c.status() == Status::Stopped && !args.all {
        return Err(CliError::NotRunning.into());
    }
    c.kill(signal, args.all)
        .with_context(|| format!("sending {signal} to container {}", args.id))
}

/// Linux signal names without the `SIG` prefix, by number (index + 1).
const NAMES: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// Other names the kernel and libc accept for the same numbers.
const ALIASES: [(&str, i32); 4] = [
    ("IOT", libc::SIGABRT),
    ("CLD", libc::SIGCHLD),
    ("POLL", libc::SIGIO),
    ("UNUSED", libc::SIGSYS),
];

/// First and last real-time signal as the kernel numbers them (glibc keeps
/// 32 and 33 for itself, but a container may use any).
const KERNEL_SIGRTMIN: i32 = 32;
const KERNEL_SIGRTMAX: i32 = 64;

/// Parses a signal as runc accepts it: a number, or a name with or without
/// the `SIG` prefix in any case; `RTMIN+n` and `RTMAX-n` too.
pub fn parse_signal(raw: &str) -> Result<i32> {
    let unknown = || anyhow!("unknown signal {raw:?}");
    if let Ok(n) = raw.parse::<i32>() {
        if (1..=KERNEL_SIGRTMAX).contains(&n) {
            return Ok(n);
        }
        return Err(unknown());
    }
    let upper = raw.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(i) = NAMES.iter().position(|n| *n == name) {
        // i < 31, so the number fits.
        return Ok(i as i32 + 1);
    }
    if let Some((_, n)) = ALIASES.iter().find(|(a, _)| *a == name) {
        return Ok(*n);
    }
    let rt = |base: i32, off: &str, sign: i32| -> Result<i32> {
        let off: i32 = if off.is_empty() {
            0
        } else {
            off.parse().map_err(|_| unknown())?
        };
        let n = base + sign * off;
        if (KERNEL_SIGRTMIN..=KERNEL_SIGRTMAX).contains(&n) && off >= 0 {
            Ok(n)
        } else {
            bail!("unknown signal {raw:?}")
        }
    };
    // glibc's SIGRTMIN, which is what `kill -s RTMIN` means on a host.
    let rtmin = libc::SIGRTMIN();
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return match rest.strip_prefix('+') {
            Some(off) if !off.is_empty() => rt(rtmin, off, 1),
            None if rest.is_empty() => rt(rtmin, "", 1),
            _ => Err(unknown()),
        };
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return match rest.strip_prefix('-') {
            Some(off) if !off.is_empty() => rt(KERNEL_SIGRTMAX, off, -1),
            None if rest.is_empty() => Ok(KERNEL_SIGRTMAX),
            _ => Err(unknown()),
        };
    }
    Err(unknown())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse_signal("9").ok(), Some(libc::SIGKILL));
        assert_eq!(parse_signal("15").ok(), Some(libc::SIGTERM));
        assert_eq!(parse_signal("SIGTERM").ok(), Some(libc::SIGTERM));
        assert_eq!(parse_signal("term").ok(), Some(libc::SIGTERM));
        assert_eq!(parse_signal("SigKill").ok(), Some(libc::SIGKILL));
        assert_eq!(parse_signal("HUP").ok(), Some(libc::SIGHUP));
        assert_eq!(parse_signal("USR2").ok(), Some(libc::SIGUSR2));
        assert_eq!(parse_signal("WINCH").ok(), Some(libc::SIGWINCH));
        assert_eq!(parse_signal("SIGSYS").ok(), Some(libc::SIGSYS));
        assert_eq!(parse_signal("SIGIOT").ok(), Some(libc::SIGABRT));
        assert_eq!(parse_signal("CLD").ok(), Some(libc::SIGCHLD));
        assert_eq!(parse_signal("64").ok(), Some(64));
    }

    #[test]
    fn every_name_matches_libc() {
        for (i, name) in NAMES.iter().enumerate() {
            let sig = Signal::try_from(i as i32 + 1).expect("standard signal");
            assert_eq!(sig.as_str(), format!("SIG{name}"));
        }
    }

    #[test]
    fn realtime() {
        let rtmin = libc::SIGRTMIN();
        assert_eq!(parse_signal("RTMIN").ok(), Some(rtmin));
        assert_eq!(parse_signal("SIGRTMIN+3").ok(), Some(rtmin + 3));
        assert_eq!(parse_signal("RTMAX").ok(), Some(64));
        assert_eq!(parse_signal("rtmax-1").ok(), Some(63));
    }

    #[test]
    fn rejected() {
        for s in [
            "", "0", "-1", "65", "SIG", "FOO", "SIGFOO", "RTMIN+", "RTMIN+x", "RTMAX+1",
            "RTMIN+40", " 9",
        ] {
            let err = parse_signal(s).expect_err(s);
            assert!(err.to_string().contains("unknown signal"), "{s}: {err}");
        }
    }
}
