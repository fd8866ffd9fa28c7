//! `exec`: run a new process in a running container, described by
//! `--process FILE` or by the container's own `process` with the command
//! line and flags applied on top.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use berth_runtime::container::{Container, ExecOptions, ExecOutcome};
use oci_spec::runtime::{Capabilities, Capability, Process};

use super::Globals;
use crate::{common, foreground, tty};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON file holding the whole OCI process; the flags that describe the
    /// process are then ignored.
    #[arg(short = 'p', long, value_name = "FILE")]
    pub process: Option<PathBuf>,

    /// Give the process a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,

    /// Return once the process has started.
    #[arg(short = 'd', long)]
    pub detach: bool,

    /// Unix socket to send the terminal's master fd to.
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,

    /// Write the process's host pid to FILE.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Working directory inside the container.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,

    /// Add (or override) an environment variable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// User to run as: UID[:GID].
    #[arg(short = 'u', long, value_name = "UID[:GID]")]
    pub user: Option<String>,

    /// Additional group ids.
    #[arg(short = 'g', long = "additional-gids", value_name = "GID")]
    pub additional_gids: Vec<u32>,

    /// Add a capability (e.g. CAP_NET_ADMIN).
    #[arg(short = 'c', long = "cap", value_name = "CAP")]
    pub caps: Vec<String>,

    /// Set no_new_privs for the process.
    #[arg(long)]
    pub no_new_privs: bool,

    /// AppArmor profile for the process.
    #[arg(long, value_name = "PROFILE")]
    pub apparmor: Option<String>,

    /// SELinux label for the process.
    #[arg(long, value_name = "LABEL")]
    pub process_label: Option<String>,

    /// Pass N extra file descriptors (3..3+N) on to the process.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,

    /// Container id.
    pub id: String,

    /// Command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub command: Vec<String>,
}

pub fn run(args: &Args, g: &Globals) -> Result<i32> {
    let c = common::load(&g.runtime(), &args.id)?;
    let process = match &args.process {
        Some(path) => read_process(path)?,
        None => {
            // The spec recorded at create, not the bundle's (which may have
            // changed since).
            let base = c
                .spec()?
                .process()
                .clone()
                .ok_or_else(|| anyhow!("the container's spec has no process"))?;
            apply_flags(base, args)?
        }
    };
    if process.args().as_ref().is_none_or(Vec::is_empty) {
        bail!("exec: no command given");
    }
    let terminal = process.terminal().unwrap_or(false);
    tty::check_terminal(args.detach, terminal, args.console_socket.is_some())?;
    let absolute = |p: &Option<PathBuf>| -> Result<Option<PathBuf>> {
        p.as_deref()
            .map(|p| {
                std::path::absolute(p).with_context(|| format!("resolving path {}", p.display()))
            })
            .transpose()
    };
    let mut opts = ExecOptions {
        console_socket: absolute(&args.console_socket)?,
        pid_file: absolute(&args.pid_file)?,
        detach: true,
        preserve_fds: args.preserve_fds,
    };
    if args.detach {
        exec(&c, &process, &opts)?;
        return Ok(0);
    }

    // In the foreground the library still starts the process detached; we
    // then wait for it ourselves, forwarding signals and the terminal.
    foreground::become_subreaper()?;
    let console = if terminal {
        Some(tty::PrivateConsole::new()?)
    } else {
        None
    };
    opts.console_socket = console.as_ref().map(|s| s.path().to_path_buf());
    let pid = exec(&c, &process, &opts)?;
    let master = console
        .as_ref()
        .map(tty::PrivateConsole::receive)
        .transpose()?;
    drop(console);
    let signals = foreground::SignalPipe::install()?;
    let _raw = master
        .as_ref()
        .map(|_| berth_runtime::console::RawMode::enter());
    foreground::supervise(pid, &signals, master.as_ref())
}

/// Starts the process detached; returns its host pid.
fn exec(c: &Container, process: &Process, opts: &ExecOptions) -> Result<i32> {
    let outcome = c
        .exec(process, opts)
        .with_context(|| format!("exec in container {}", c.id()))?;
    Ok(match outcome {
        ExecOutcome::Detached(pid) => pid.as_raw(),
        // Only when asked not to detach; report what we know.
        ExecOutcome::Exited(code) => bail!("process exited early with code {code}"),
    })
}

fn read_process(path: &std::path::Path) -> Result<Process> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading process from {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing process from {}", path.display()))
}

/// The container's process with the command line and flags applied.
pub fn apply_flags(mut p: Process, args: &Args) -> Result<Process> {
    p.set_args(Some(args.command.clone()));
    p.set_terminal(Some(args.tty));
    if !args.env.is_empty() {
        let mut env = p.env().clone().unwrap_or_default();
        env.extend(args.env.iter().cloned());
        p.set_env(Some(env));
    }
    if let Some(cwd) = &args.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some(user) = &args.user {
        let (uid, gid) = parse_user(user)?;
        p.user_mut().set_uid(uid);
        if let Some(gid) = gid {
            p.user_mut().set_gid(gid);
        }
    }
    if !args.additional_gids.is_empty() {
        let mut gids = p.user().additional_gids().clone().unwrap_or_default();
        gids.extend(&args.additional_gids);
        p.user_mut().set_additional_gids(Some(gids));
    }
    if !args.caps.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &args.caps {
            let cap: Capability = serde_json::from_value(serde_json::Value::from(name.as_str()))
                .map_err(|_| anyhow!("unknown capability {name:?}"))?;
            let add = |set: &Option<Capabilities>| {
                let mut set = set.clone().unwrap_or_default();
                set.insert(cap);
                Some(set)
            };
            caps.set_bounding(add(caps.bounding()));
            caps.set_effective(add(caps.effective()));
            caps.set_permitted(add(caps.permitted()));
            // Ambient capabilities need the inheritable bit; only add one
            // when the container's process already has inheritable ones.
            if caps.inheritable().is_some() {
                caps.set_inheritable(add(caps.inheritable()));
                caps.set_ambient(add(caps.ambient()));
            }
        }
        p.set_capabilities(Some(caps));
    }
    if args.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(profile) = &args.apparmor {
        p.set_apparmor_profile(Some(profile.clone()));
    }
    if let Some(label) = &args.process_label {
        p.set_selinux_label(Some(label.clone()));
    }
    Ok(p)
}

/// Parses `UID[:GID]`.
pub fn parse_user(s: &str) -> Result<(u32, Option<u32>)> {
    let (uid, gid) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid = uid
        .parse()
        .map_err(|_| anyhow!("invalid --user {s:?}: uid {uid:?} is not a number"))?;
    let gid = gid
        .map(|g| {
            g.parse()
                .map_err(|_| anyhow!("invalid --user {s:?}: gid {g:?} is not a number"))
        })
        .transpose()?;
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        a: Args,
    }

    fn args(argv: &[&str]) -> Args {
        let mut full = vec!["exec"];
        full.extend_from_slice(argv);
        match Wrap::try_parse_from(full) {
            Ok(w) => w.a,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn users() {
        assert_eq!(parse_user("0").ok(), Some((0, None)));
        assert_eq!(parse_user("1000:100").ok(), Some((1000, Some(100))));
        assert!(parse_user("root").is_err());
        assert!(parse_user("1:x").is_err());
        assert!(parse_user("").is_err());
    }

    #[test]
    fn command_after_id_keeps_its_flags() {
        let a = args(&["-t", "-e", "A=1", "c1", "ls", "-la", "--color"]);
        assert_eq!(a.id, "c1");
        assert!(a.tty);
        assert_eq!(a.command, ["ls", "-la", "--color"]);
    }

    #[test]
    fn flags_override_the_container_process() {
        let a = args(&[
            "--cwd",
            "/tmp",
            "-e",
            "B=2",
            "-u",
            "1000:1000",
            "-g",
            "10",
            "--cap",
            "CAP_NET_ADMIN",
            "--no-new-privs",
            "c1",
            "sh",
        ]);
        let mut base = Process::default();
        base.set_env(Some(vec!["A=1".into()]));
        let p = apply_flags(base, &a).expect("apply");
        assert_eq!(p.args().as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!(p.terminal(), Some(false));
        assert_eq!(
            p.env().as_deref(),
            Some(&["A=1".to_string(), "B=2".to_string()][..])
        );
        assert_eq!(p.cwd().to_str(), Some("/tmp"));
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
        assert_eq!(p.user().additional_gids().as_deref(), Some(&[10u32][..]));
        let caps = p.capabilities().as_ref().expect("caps");
        assert!(caps
            .effective()
            .as_ref()
            .is_some_and(|s| s.contains(&Capability::NetAdmin)));
        assert_eq!(p.no_new_privileges(), Some(true));
    }

    #[test]
    fn unknown_capability() {
        let a = args(&["--cap", "CAP_FLY", "c1", "sh"]);
        let err = apply_flags(Process::default(), &a).expect_err("bad cap");
        assert!(err.to_string().contains("CAP_FLY"));
    }
}
