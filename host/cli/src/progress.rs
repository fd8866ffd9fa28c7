//! Shows the engine's JSON progress stream (pull, push, load) the way users
//! know it: on a terminal, one live bar per layer plus a total with speed;
//! otherwise plain lines, one per state change, as `docker pull` prints them
//! when piped.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{bail, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

pub struct ProgressRenderer {
    mode: Mode,
}

enum Mode {
    Terminal {
        multi: MultiProgress,
        layers: HashMap<String, Layer>,
        total: ProgressBar,
    },
    Plain {
        last_status: HashMap<String, String>,
    },
}

struct Layer {
    bar: ProgressBar,
    current: u64,
    size: u64,
}

impl ProgressRenderer {
    /// Bars when stdout is a terminal (progress is the command's output, as
    /// with docker), plain lines otherwise.
    pub fn new() -> Self {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
            let total = multi.add(ProgressBar::new(0));
            total.set_style(
                ProgressStyle::with_template("total {bytes}/{total_bytes} {bytes_per_sec} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            Self {
                mode: Mode::Terminal {
                    multi,
                    layers: HashMap::new(),
                    total,
                },
            }
        } else {
            Self {
                mode: Mode::Plain {
                    last_status: HashMap::new(),
                },
            }
        }
    }

    /// Handles one message of the stream; an `error` message ends the
    /// command with that error.
    pub fn handle(&mut self, message: &Value) -> Result<()> {
        if let Some(error) = message.get("error").and_then(Value::as_str) {
            self.finish();
            bail!("{error}");
        }
        let status = message
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let stream = message.get("stream").and_then(Value::as_str);
        let id = message.get("id").and_then(Value::as_str);
        let detail = message.get("progressDetail");
        let current = detail
            .and_then(|d| d.get("current"))
            .and_then(Value::as_u64);
        let total = detail.and_then(|d| d.get("total")).and_then(Value::as_u64);
        match &mut self.mode {
            Mode::Plain { last_status } => {
                let mut out = std::io::stdout().lock();
                if let Some(text) = stream {
                    let _ = write!(out, "{text}");
                    return Ok(());
                }
                match id {
                    // One line per state change, not per byte count.
                    Some(id) if last_status.get(id).map(String::as_str) != Some(status) => {
                        last_status.insert(id.to_string(), status.to_string());
                        let _ = writeln!(out, "{id}: {status}");
                    }
                    Some(_) => {}
                    None if !status.is_empty() => {
                        let _ = writeln!(out, "{status}");
                    }
                    None => {}
                }
            }
            Mode::Terminal {
                multi,
                layers,
                total: total_bar,
            } => {
                if let Some(text) = stream {
                    let _ = multi.println(text.trim_end());
                    return Ok(());
                }
                let Some(id) = id else {
                    if !status.is_empty() {
                        let _ = multi.println(status);
                    }
                    return Ok(());
                };
                let layer = layers.entry(id.to_string()).or_insert_with(|| {
                    let bar = multi.insert_before(total_bar, ProgressBar::new(0));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix}: {msg:<18} [{bar:30}] {bytes}/{total_bytes}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    bar.set_prefix(id.to_string());
                    Layer {
                        bar,
                        current: 0,
                        size: 0,
                    }
                });
                layer.bar.set_message(status.to_string());
                if let Some(size) = total.filter(|t| *t > 0) {
                    if layer.size != size {
                        total_bar.inc_length(size.saturating_sub(layer.size));
                        layer.size = size;
                        layer.bar.set_length(size);
                    }
                }
                if let Some(done) = current {
                    total_bar.inc(done.saturating_sub(layer.current));
                    layer.current = done;
                    layer.bar.set_position(done);
                }
                if matches!(
                    status,
                    "Pull complete" | "Already exists" | "Pushed" | "Layer already exists"
                ) {
                    let rest = layer.size.saturating_sub(layer.current);
                    total_bar.inc(rest);
                    layer.current = layer.size;
                    layer.bar.set_position(layer.size);
                }
            }
        }
        Ok(())
    }

    pub fn finish(&mut self) {
        if let Mode::Terminal { layers, total, .. } = &mut self.mode {
            for layer in layers.values() {
                layer.bar.abandon();
            }
            total.finish();
        }
    }
}

impl Default for ProgressRenderer {
    fn default() -> Self {
        Self::new()
    }
}
