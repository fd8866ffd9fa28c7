//! Where errors and debug messages go: the `--log` file and/or stderr.
//!
//! containerd's runc shim passes `--log <bundle>/log.json --log-format json`
//! and, when a command fails, reports the `msg` of the last `error` line in
//! that file. So with a log file every error is one line there (and plain
//! text on stderr); without one, the formatted line goes to stderr.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::ValueEnum;
use serde::Serialize;

/// Values of `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `time="…" level=error msg="…"`
    Text,
    /// `{"level":"error","msg":"…","time":"…"}`
    Json,
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Error => "error",
        }
    }
}

/// The log sink chosen by the global flags.
#[derive(Debug)]
pub struct Logger {
    file: Option<File>,
    format: LogFormat,
    debug: bool,
}

impl Logger {
    /// Opens (appending, creating) the log file if one is given.
    pub fn open(path: Option<&Path>, format: LogFormat, debug: bool) -> anyhow::Result<Self> {
        let file = match path {
            Some(p) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o644)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(p)
                    .with_context(|| format!("opening log file {}", p.display()))?,
            ),
            None => None,
        };
        Ok(Self {
            file,
            format,
            debug,
        })
    }

    /// Records a failure: a formatted line in the log file plus the bare
    /// message on stderr, or the formatted line on stderr without a file.
    pub fn error(&mut self, msg: &str) {
        let line = format_line(self.format, Level::Error, msg, SystemTime::now());
        match &mut self.file {
            Some(f) => {
                // Nothing sensible is left to do if the log file cannot be written.
                let _ = f.write_all(line.as_bytes());
                eprintln!("{msg}");
            }
            None => eprint!("{line}"),
        }
    }

    /// Records a debug message when `--debug` was given.
    pub fn debug(&mut self, msg: &str) {
        if !self.debug {
            return;
        }
        let line = format_line(self.format, Level::Debug, msg, SystemTime::now());
        match &mut self.file {
            Some(f) => {
                let _ = f.write_all(line.as_bytes());
            }
            None => eprint!("{line}"),
        }
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    level: &'a str,
    msg: &'a str,
    time: &'a str,
}

/// One log line, newline included.
pub fn format_line(format: LogFormat, level: Level, msg: &str, at: SystemTime) -> String {
    let time = rfc3339_nanos(at);
    match format {
        LogFormat::Json => {
            let obj = JsonLine {
                level: level.as_str(),
                msg,
                time: &time,
            };
            // Serialising three strings cannot fail; fall back to a bare line anyway.
            let mut s = serde_json::to_string(&obj).unwrap_or_else(|_| String::from("{}"));
            s.push('\n');
            s
        }
        LogFormat::Text => format!(
            "time=\"{time}\" level={} msg={}\n",
            level.as_str(),
            quote(msg)
        ),
    }
}

/// Double-quotes `s`, escaping backslashes, quotes and control characters.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `at` as RFC 3339 in UTC with nanoseconds, e.g. `2026-03-01T12:00:00.000000001Z`.
/// Times before 1970 are clamped to the epoch.
pub fn rfc3339_nanos(at: SystemTime) -> String {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    berth_runtime::state::rfc3339(
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339_nanos(at(0, 0)), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(at(951_782_400, 5)), // leap day 2000
            "2000-02-29T00:00:00.000000005Z"
        );
        assert_eq!(
            rfc3339_nanos(at(1_772_366_400, 123_456_789)),
            "2026-03-01T12:00:00.123456789Z"
        );
        assert_eq!(
            rfc3339_nanos(at(4_102_444_799, 0)),
            "2099-12-31T23:59:59.000000000Z"
        );
    }

    #[test]
    fn json_line_shape() {
        let line = format_line(
            LogFormat::Json,
            Level::Error,
            "container \"x\" does not exist",
            at(0, 0),
        );
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(
            line.trim_end(),
            r#"{"level":"error","msg":"container \"x\" does not exist","time":"1970-01-01T00:00:00.000000000Z"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid json");
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "container \"x\" does not exist");
    }

    #[test]
    fn json_line_escapes_newlines() {
        let line = format_line(LogFormat::Json, Level::Error, "a\nb", at(0, 0));
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn text_line_shape() {
        let line = format_line(LogFormat::Text, Level::Debug, "say \"hi\"\n", at(0, 0));
        assert_eq!(
            line,
            "time=\"1970-01-01T00:00:00.000000000Z\" level=debug msg=\"say \\\"hi\\\"\\n\"\n"
        );
    }
}
