//! A small entry point for `bench/pull.py`: pulls one image with
//! [`ImageService`] into a data root and reports, on stdout, one line per
//! event the benchmark needs:
//!
//! ```text
//! started <digest> <size> <offset>   a layer download starts; <offset> bytes were kept from an earlier, interrupted pull
//! skipped <digest> <reason>          a layer was not downloaded (already in the store, ...)
//! progress <done> <started-total>    every ~1 MiB, summed over the layers started so far
//! downloaded <seconds>               every blob is in the content store
//! result id=<id> elapsed=<s> download=<s> unpack=<s> transferred=<bytes> resumed=<bytes> skipped=<bytes> layers=<n>
//! ```
//!
//! Usage: `pull [--concurrency N] <data-root> <reference>`.
//! Docker Hub is never contacted (its endpoint points at a closed port) and
//! no Docker config file outside the data root is read.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_engine::ImageService;
use berth_registry::{ClientConfig, Progress};

/// Download state of one layer.
#[derive(Default)]
struct Layer {
    offset: u64,
    done: u64,
    size: u64,
}

#[derive(Default)]
struct Tally {
    layers: HashMap<String, Layer>,
    skipped_bytes: u64,
    last_printed: u64,
    downloaded_at: Option<Duration>,
}

impl Tally {
    fn done(&self) -> u64 {
        self.layers.values().map(|l| l.done).sum()
    }

    fn started_total(&self) -> u64 {
        self.layers.values().map(|l| l.size).sum()
    }

    /// Bytes that came over the network in this run.
    fn transferred(&self) -> u64 {
        self.layers
            .values()
            .map(|l| l.done.saturating_sub(l.offset))
            .sum()
    }

    fn resumed(&self) -> u64 {
        self.layers.values().map(|l| l.offset).sum()
    }
}

const PRINT_EVERY: u64 = 1 << 20;

fn usage() -> ExitCode {
    eprintln!("usage: pull [--concurrency N] <data-root> <reference>");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut positional = Vec::new();
    let mut concurrency = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--concurrency" => match args.next().and_then(|n| n.parse::<usize>().ok()) {
                Some(n) => concurrency = Some(n),
                None => return usage(),
            },
            "-h" | "--help" => return usage(),
            _ => positional.push(arg),
        }
    }
    let Ok([root, reference]) = <[String; 2]>::try_from(positional) else {
        return usage();
    };
    let root = PathBuf::from(root);

    let mut config = ClientConfig {
        docker_hub_endpoint: "http://127.0.0.1:9".into(),
        docker_config: Some(root.join("docker-config.json")),
        ..ClientConfig::default()
    };
    if let Some(n) = concurrency {
        config.concurrency = n;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pull: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let images = match ImageService::open(&root, config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pull: opening {}: {e}", root.display());
            return ExitCode::FAILURE;
        }
    };

    let start = Instant::now();
    let tally = Mutex::new(Tally::default());
    let on_progress = |event: Progress| {
        let mut t = tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            Progress::LayerStarted {
                digest,
                size,
                offset,
            } => {
                println!("started {digest} {size} {offset}");
                t.layers.insert(
                    digest.to_string(),
                    Layer {
                        offset,
                        done: offset,
                        size,
                    },
                );
            }
            Progress::LayerProgress { digest, done, .. } => {
                if let Some(layer) = t.layers.get_mut(&digest.to_string()) {
                    layer.done = done;
                }
                let sum = t.done();
                if sum >= t.last_printed + PRINT_EVERY {
                    t.last_printed = sum;
                    println!("progress {sum} {}", t.started_total());
                }
            }
            Progress::LayerSkipped { digest, reason } => {
                println!("skipped {digest} {reason}");
                if matches!(reason, berth_registry::SkipReason::AlreadyPresent) {
                    if let Ok(Some(size)) = images.content().info(&digest) {
                        t.skipped_bytes += size;
                    }
                }
            }
            Progress::Done { .. } => {
                let at = start.elapsed();
                t.downloaded_at = Some(at);
                println!("downloaded {:.3}", at.as_secs_f64());
            }
            _ => {}
        }
    };

    let result = runtime.block_on(images.pull(&reference, None, &on_progress));
    let elapsed = start.elapsed();
    let id = match result {
        Ok(id) => id,
        Err(e) => {
            eprintln!("pull: {reference}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let t = tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let download = t.downloaded_at.unwrap_or(elapsed);
    println!(
        "result id={id} elapsed={:.3} download={:.3} unpack={:.3} transferred={} resumed={} skipped={} layers={}",
        elapsed.as_secs_f64(),
        download.as_secs_f64(),
        elapsed.saturating_sub(download).as_secs_f64(),
        t.transferred(),
        t.resumed(),
        t.skipped_bytes,
        t.layers.len(),
    );
    ExitCode::SUCCESS
}
