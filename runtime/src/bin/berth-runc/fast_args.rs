//! A small parser for the commands on the container start path (`create`,
//! `start`, `state`, `kill`, `delete`), as containerd's shim invokes them.
//!
//! Building clap's full command tree costs about 0.9 MiB of memory and some
//! start-up time on every invocation; these five commands run for every
//! container. This parser accepts only the plain forms of their flags and
//! gives up (returns `None`) on anything else: help, unknown or repeated
//! flags, missing or extra operands. clap then parses the same argv and
//! reports errors, so behaviour never depends on which parser ran (a unit
//! test checks both agree).

use std::ffi::OsString;
use std::path::PathBuf;

use crate::commands::{create, delete, kill, start, state, Command};
use crate::logging::LogFormat;
use crate::{Cli, RootlessMode};

/// Parses `argv` (without the program name), or `None` to defer to clap.
pub fn parse(argv: &[OsString]) -> Option<Cli> {
    let mut words = argv
        .iter()
        .map(|a| a.to_str())
        .collect::<Option<Vec<&str>>>()?;
    words.reverse(); // pop() from the front
    let mut cli = Cli {
        root: None,
        log: None,
        log_format: LogFormat::Text,
        debug: false,
        systemd_cgroup: false,
        rootless: None,
        criu: None,
        version: false,
        command: None,
    };
    let name = loop {
        let word = words.pop()?;
        if !word.starts_with('-') {
            break word;
        }
        let (flag, inline) = split_flag(word);
        match flag {
            "--root" => set_once(&mut cli.root, PathBuf::from(value(inline, &mut words)?))?,
            "--log" => set_once(&mut cli.log, PathBuf::from(value(inline, &mut words)?))?,
            "--criu" => set_once(&mut cli.criu, PathBuf::from(value(inline, &mut words)?))?,
            "--log-format" => {
                cli.log_format = match value(inline, &mut words)? {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return None,
                }
            }
            "--rootless" => {
                let mode = match value(inline, &mut words)? {
                    "auto" => RootlessMode::Auto,
                    "true" => RootlessMode::True,
                    "false" => RootlessMode::False,
                    _ => return None,
                };
                set_once(&mut cli.rootless, mode)?;
            }
            "--debug" if inline.is_none() => cli.debug = true,
            "--systemd-cgroup" if inline.is_none() => cli.systemd_cgroup = true,
            _ => return None,
        }
    };
    cli.command = Some(match name {
        "create" => Command::Create(parse_create(&mut words)?),
        "start" => Command::Start(start::Args {
            id: only_operand(&mut words)?,
        }),
        "state" => Command::State(state::Args {
            id: only_operand(&mut words)?,
        }),
        "delete" => Command::Delete(parse_delete(&mut words)?),
        "kill" => Command::Kill(parse_kill(&mut words)?),
        _ => return None,
    });
    Some(cli)
}

fn split_flag(word: &str) -> (&str, Option<&str>) {
    match word.split_once('=') {
        Some((flag, value)) if word.starts_with("--") => (flag, Some(value)),
        _ => (word, None),
    }
}

fn value<'a>(inline: Option<&'a str>, words: &mut Vec<&'a str>) -> Option<&'a str> {
    let v = match inline {
        Some(v) => v,
        None => words.pop()?,
    };
    // Values that look like flags are clap's business (it may reject them).
    (!v.starts_with('-') && !v.is_empty()).then_some(v)
}

fn set_once<T>(slot: &mut Option<T>, v: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(v);
    Some(())
}

/// A plain operand (not a flag), and nothing after it.
fn only_operand(words: &mut Vec<&str>) -> Option<String> {
    let id = operand(words.pop()?)?;
    words.is_empty().then_some(id)
}

fn operand(word: &str) -> Option<String> {
    (!word.starts_with('-') && !word.is_empty()).then(|| word.to_string())
}

fn parse_create(words: &mut Vec<&str>) -> Option<create::Args> {
    let mut args = create::Args {
        bundle: None,
        console_socket: None,
        pid_file: None,
        no_pivot: false,
        no_new_keyring: false,
        preserve_fds: 0,
        id: String::new(),
    };
    let mut preserve_fds = None;
    let mut id = None;
    while let Some(word) = words.pop() {
        if !word.starts_with('-') {
            set_once(&mut id, operand(word)?)?;
            continue;
        }
        let (flag, inline) = split_flag(word);
        match flag {
            "--bundle" | "-b" => set_once(&mut args.bundle, PathBuf::from(value(inline, words)?))?,
            "--console-socket" => set_once(
                &mut args.console_socket,
                PathBuf::from(value(inline, words)?),
            )?,
            "--pid-file" => set_once(&mut args.pid_file, PathBuf::from(value(inline, words)?))?,
            "--preserve-fds" => set_once(&mut preserve_fds, value(inline, words)?.parse().ok()?)?,
            "--no-pivot" if inline.is_none() && !args.no_pivot => args.no_pivot = true,
            "--no-new-keyring" if inline.is_none() && !args.no_new_keyring => {
                args.no_new_keyring = true
            }
            _ => return None,
        }
    }
    args.preserve_fds = preserve_fds.unwrap_or(0);
    args.id = id?;
    Some(args)
}

fn parse_delete(words: &mut Vec<&str>) -> Option<delete::Args> {
    let mut force = false;
    let mut id = None;
    while let Some(word) = words.pop() {
        match word {
            "--force" | "-f" if !force => force = true,
            w if !w.starts_with('-') => set_once(&mut id, operand(w)?)?,
            _ => return None,
        }
    }
    Some(delete::Args { force, id: id? })
}

fn parse_kill(words: &mut Vec<&str>) -> Option<kill::Args> {
    let mut all = false;
    let mut operands = Vec::new();
    while let Some(word) = words.pop() {
        match word {
            "--all" | "-a" if !all => all = true,
            w if !w.starts_with('-') => operands.push(operand(w)?),
            _ => return None,
        }
    }
    let mut operands = operands.into_iter();
    let id = operands.next()?;
    let signal = operands.next().unwrap_or_else(|| "SIGTERM".to_string());
    if operands.next().is_some() {
        return None;
    }
    Some(kill::Args { all, id, signal })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn argv(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    /// Whenever the fast parser accepts, clap must produce the same result.
    fn agrees(line: &str) {
        let fast = parse(&argv(line)).unwrap_or_else(|| panic!("fast parser declined {line:?}"));
        let mut full = vec![OsString::from("berth-runc")];
        full.extend(argv(line));
        let clap =
            Cli::try_parse_from(full).unwrap_or_else(|e| panic!("clap rejects {line:?}: {e}"));
        assert_eq!(format!("{fast:?}"), format!("{clap:?}"), "{line}");
    }

    #[test]
    fn shim_invocations_agree_with_clap() {
        for line in [
            "--root /run/c/ns --log /b/log.json --log-format json create --bundle /b --pid-file /b/init.pid c1",
            "--root=/r create -b /b --no-pivot --no-new-keyring --preserve-fds 2 --console-socket /s c1",
            "--root /r --systemd-cgroup --rootless auto start c1",
            "--root /r state c1",
            "--root /r kill c1 9",
            "--root /r kill --all c1 SIGKILL",
            "--root /r kill c1",
            "--root /r delete c1",
            "--root /r delete --force c1",
            "--debug --criu /usr/sbin/criu delete -f c1",
            "create c1 --bundle=/b",
        ] {
            agrees(line);
        }
    }

    #[test]
    fn anything_unusual_is_left_to_clap() {
        for line in [
            "create --help",
            "create -h c1",
            "create --bundle /b",
            "create --bundle /b c1 c2",
            "create --bundle /b --bundle /c c1",
            "create --unknown c1",
            "start",
            "start c1 c2",
            "kill c1 9 extra",
            "delete --force --force c1",
            "--log-format yaml state c1",
            "--version",
            "run c1",
            "list",
        ] {
            assert!(parse(&argv(line)).is_none(), "{line} should go to clap");
        }
    }
}
