//! Health checks (Docker's `HEALTHCHECK` / `--health-*`): the daemon runs
//! the test as an exec in the container every interval and records the
//! outcome in the container's state, where inspect and ps show it.
//!
//! The checks run in the daemon, as Docker's do: the monitor process keeps
//! containers alive without the daemon, but a health state only matters to
//! someone asking the daemon. A restarted daemon resumes the checks of
//! running containers.

use std::io::Read;
use std::time::{Duration, Instant};

use berth_image::manifest::HealthConfig;
use serde::{Deserialize, Serialize};

use super::{store, ContainerError, ContainerService, ExecConfig, Status};

/// Docker's defaults.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: u32 = 3;
/// Results kept in the state, and bytes of output kept per result.
const KEEP_RESULTS: usize = 5;
const MAX_OUTPUT: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    #[default]
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }

    /// How `docker ps` shows it after the uptime.
    pub fn ps_suffix(self) -> &'static str {
        match self {
            HealthStatus::Starting => " (health: starting)",
            HealthStatus::Healthy => " (healthy)",
            HealthStatus::Unhealthy => " (unhealthy)",
        }
    }
}

/// One probe's outcome (Docker's `HealthcheckResult`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthResult {
    pub start: String,
    pub end: String,
    pub exit_code: i32,
    pub output: String,
}

/// `State.Health`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Health {
    pub status: HealthStatus,
    pub failing_streak: u32,
    pub log: Vec<HealthResult>,
}

/// A health check ready to run: the command and its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub command: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub start_interval: Duration,
    pub retries: u32,
}

/// The container's check over the image's, as Docker merges them: a test
/// given at create replaces the image's, and unset (zero) timings inherit
/// the image's. `["NONE"]` disables the check.
pub fn merge(
    create: Option<&HealthConfig>,
    image: Option<&HealthConfig>,
) -> Result<Option<HealthConfig>, ContainerError> {
    let Some(mut merged) = create.or(image).cloned() else {
        return Ok(None);
    };
    if let (Some(create), Some(image)) = (create, image) {
        if create.test.as_ref().is_none_or(Vec::is_empty) {
            merged.test = image.test.clone();
        }
        let inherit = |own: Option<i64>, theirs: Option<i64>| own.filter(|v| *v != 0).or(theirs);
        merged.interval = inherit(create.interval, image.interval);
        merged.timeout = inherit(create.timeout, image.timeout);
        merged.start_period = inherit(create.start_period, image.start_period);
        merged.start_interval = inherit(create.start_interval, image.start_interval);
        merged.retries = inherit(create.retries, image.retries);
    }
    // Validate now, so a bad check fails the create, not later in silence.
    check_of(&merged)?;
    Ok(Some(merged))
}

/// The runnable form of a check; `None` when disabled or without a test.
pub fn check_of(config: &HealthConfig) -> Result<Option<HealthCheck>, ContainerError> {
    let test = config.test.clone().unwrap_or_default();
    let command = match test.first().map(String::as_str) {
        None | Some("NONE") => return Ok(None),
        Some("CMD") if test.len() > 1 => test[1..].to_vec(),
        Some("CMD-SHELL") if test.len() == 2 => {
            vec!["/bin/sh".into(), "-c".into(), test[1].clone()]
        }
        _ => {
            return Err(ContainerError::InvalidParameter(format!(
                "invalid health check test {test:?}: expected [\"NONE\"], [\"CMD\", args…] or [\"CMD-SHELL\", command]"
            )))
        }
    };
    let duration = |name: &str, value: Option<i64>, default: Duration| match value {
        None | Some(0) => Ok(default),
        Some(ns) if ns >= 1_000_000 => Ok(Duration::from_nanos(ns as u64)),
        Some(ns) => Err(ContainerError::InvalidParameter(format!(
            "health check {name} of {ns}ns is too short: it must be at least 1ms"
        ))),
    };
    let retries = match config.retries {
        None | Some(0) => DEFAULT_RETRIES,
        Some(n) if n > 0 => u32::try_from(n).unwrap_or(u32::MAX),
        Some(n) => {
            return Err(ContainerError::InvalidParameter(format!(
                "health check retries must not be negative, got {n}"
            )))
        }
    };
    Ok(Some(HealthCheck {
        command,
        interval: duration("interval", config.interval, DEFAULT_INTERVAL)?,
        timeout: duration("timeout", config.timeout, DEFAULT_TIMEOUT)?,
        start_period: duration("start period", config.start_period, Duration::ZERO)?,
        start_interval: duration(
            "start interval",
            config.start_interval,
            DEFAULT_START_INTERVAL,
        )?,
        retries,
    }))
}

/// Folds one probe's result into the health state. Failures within the
/// start period do not count against the container.
pub fn record_result(
    health: &mut Health,
    result: HealthResult,
    retries: u32,
    in_start_period: bool,
) {
    let passed = result.exit_code == 0;
    health.log.push(result);
    if health.log.len() > KEEP_RESULTS {
        let extra = health.log.len() - KEEP_RESULTS;
        health.log.drain(..extra);
    }
    if passed {
        health.failing_streak = 0;
        health.status = HealthStatus::Healthy;
    } else if !in_start_period {
        health.failing_streak += 1;
        if health.failing_streak >= retries {
            health.status = HealthStatus::Unhealthy;
        }
    }
}

impl ContainerService {
    /// Runs the container's health check until it stops; a no-op for a
    /// container without one. Call after each start with `new_run` (the state
    /// becomes "starting" at once), and for running containers when the daemon
    /// starts (their state carries on).
    pub(super) fn watch_health(&self, id: &str, new_run: bool) {
        let dir = self.dir(id);
        let Ok(record) = store::read_record(&dir) else {
            return;
        };
        let Some(check) = record
            .resolved
            .healthcheck
            .as_ref()
            .and_then(|c| check_of(c).ok().flatten())
        else {
            return;
        };
        // Without a runtime (a caller outside the daemon) nobody asks.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // "starting" from the moment the start returns, as in Docker: an inspect right after
        // `docker run -d` must not find the health state missing.
        if new_run || record.state.health.is_none() {
            let _ = store::update_record(&self.dir(id), |r| {
                r.state.health = Some(Health::default());
            });
        }
        let this = self.clone();
        let id = id.to_string();
        runtime.spawn(async move { this.health_loop(&id, check).await });
    }

    async fn health_loop(&self, id: &str, check: HealthCheck) {
        let dir = self.dir(id);
        let mut run_started = String::new();
        let mut since = Instant::now();
        loop {
            let Ok(record) = store::read_record(&dir) else {
                return;
            };
            match record.state.status {
                Status::Running => {}
                // The monitor restarts it in place, or it is frozen: wait.
                Status::Restarting | Status::Paused => {
                    tokio::time::sleep(check.interval.min(Duration::from_secs(1))).await;
                    continue;
                }
                _ => return,
            }
            if record.state.started_at != run_started {
                // A new run (first start, or a restart): start over.
                run_started = record.state.started_at.clone();
                since = Instant::now();
                let _ = store::update_record(&dir, |r| {
                    r.state.health = Some(Health::default());
                });
            }
            let in_start_period = since.elapsed() < check.start_period;
            let wait = if in_start_period {
                check.start_interval
            } else {
                check.interval
            };
            tokio::time::sleep(wait).await;
            let result = self.probe(id, &check).await;
            let in_start_period = since.elapsed() < check.start_period;
            let still_this_run = |r: &super::ContainerRecord| {
                r.state.status == Status::Running && r.state.started_at == run_started
            };
            let changed = store::update_record(&dir, |r| {
                if !still_this_run(r) {
                    return None;
                }
                let health = r.state.health.get_or_insert_with(Health::default);
                let before = health.status;
                record_result(health, result.clone(), check.retries, in_start_period);
                (health.status != before).then_some(health.status)
            });
            if let Ok((Some(status), record)) = changed {
                self.emit(&record, &format!("health_status: {}", status.as_str()), &[]);
            }
        }
    }

    /// One run of the check command, bounded by its timeout.
    async fn probe(&self, id: &str, check: &HealthCheck) -> HealthResult {
        let start = store::now_rfc3339();
        let failed = |output: String| HealthResult {
            start: start.clone(),
            end: store::now_rfc3339(),
            exit_code: -1,
            output,
        };
        let exec_id = match self.exec_create(
            id,
            ExecConfig {
                cmd: check.command.clone(),
                ..ExecConfig::default()
            },
        ) {
            Ok(e) => e,
            Err(e) => return failed(e.to_string()),
        };
        let this = self.clone();
        let probe_exec = exec_id.clone();
        let run = tokio::task::spawn_blocking(move || -> Result<(i32, String), ContainerError> {
            let mut session = this.exec_start(&probe_exec)?;
            // Output of both streams, interleaved as it came, capped.
            let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
            let readers: Vec<_> = [session.stdout.take(), session.stderr.take()]
                .into_iter()
                .flatten()
                .map(|mut stream| {
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = stream.read(&mut buf) {
                            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                                break;
                            }
                        }
                    })
                })
                .collect();
            drop(tx);
            let mut output = Vec::new();
            for chunk in rx {
                let room = MAX_OUTPUT.saturating_sub(output.len());
                output.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            for r in readers {
                let _ = r.join();
            }
            let code = session.wait()?;
            Ok((code, String::from_utf8_lossy(&output).into_owned()))
        });
        let result = match tokio::time::timeout(check.timeout, run).await {
            Ok(Ok(Ok((code, output)))) => HealthResult {
                start,
                end: store::now_rfc3339(),
                exit_code: code,
                output,
            },
            Ok(Ok(Err(e))) => failed(e.to_string()),
            Ok(Err(e)) => failed(format!("health check task failed: {e}")),
            Err(_) => {
                // Kill the probe; its helper then exits and the task ends.
                if let Ok(info) = self.exec_inspect(&exec_id) {
                    if info.pid > 0 {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(info.pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                failed(format!(
                    "Health check exceeded timeout ({:?})",
                    check.timeout
                ))
            }
        };
        self.exec_forget(&exec_id);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(test: &[&str]) -> HealthConfig {
        HealthConfig {
            test: Some(test.iter().map(|s| s.to_string()).collect()),
            ..HealthConfig::default()
        }
    }

    #[test]
    fn tests_and_defaults() {
        let check = check_of(&config(&["CMD-SHELL", "exit 0"]))
            .expect("valid")
            .expect("enabled");
        assert_eq!(check.command, ["/bin/sh", "-c", "exit 0"]);
        assert_eq!(check.interval, DEFAULT_INTERVAL);
        assert_eq!(check.retries, DEFAULT_RETRIES);
        let check = check_of(&config(&["CMD", "true", "x"]))
            .expect("valid")
            .expect("enabled");
        assert_eq!(check.command, ["true", "x"]);
        assert_eq!(check_of(&config(&["NONE"])).expect("valid"), None);
        for bad in [&["CMD"][..], &["CMD-SHELL", "a", "b"], &["RUN", "x"]] {
            let err = check_of(&config(bad)).expect_err("invalid");
            assert!(
                err.to_string().contains("invalid health check test"),
                "{err}"
            );
        }
        let mut short = config(&["CMD", "true"]);
        short.interval = Some(10);
        let err = check_of(&short).expect_err("too short");
        assert!(err.to_string().contains("interval"), "{err}");
    }

    #[test]
    fn create_overrides_image_field_by_field() {
        let mut image = config(&["CMD", "image-test"]);
        image.interval = Some(5_000_000_000);
        image.retries = Some(7);
        let create = HealthConfig {
            timeout: Some(2_000_000_000),
            ..HealthConfig::default()
        };
        let merged = merge(Some(&create), Some(&image))
            .expect("valid")
            .expect("some");
        assert_eq!(merged.test, image.test);
        assert_eq!(merged.interval, Some(5_000_000_000));
        assert_eq!(merged.timeout, Some(2_000_000_000));
        assert_eq!(merged.retries, Some(7));
        // --no-healthcheck.
        let none = merge(Some(&config(&["NONE"])), Some(&image)).expect("valid");
        let check = none.as_ref().map(check_of).transpose().expect("valid");
        assert_eq!(check.flatten(), None);
        assert_eq!(merge(None, None).expect("valid"), None);
    }

    #[test]
    fn streaks_and_start_period() {
        let mut health = Health::default();
        let result = |code| HealthResult {
            exit_code: code,
            ..HealthResult::default()
        };
        // Failures in the start period do not count.
        record_result(&mut health, result(1), 2, true);
        assert_eq!(health.status, HealthStatus::Starting);
        assert_eq!(health.failing_streak, 0);
        record_result(&mut health, result(0), 2, false);
        assert_eq!(health.status, HealthStatus::Healthy);
        record_result(&mut health, result(1), 2, false);
        assert_eq!(health.status, HealthStatus::Healthy);
        record_result(&mut health, result(1), 2, false);
        assert_eq!(health.status, HealthStatus::Unhealthy);
        assert_eq!(health.failing_streak, 2);
        for _ in 0..10 {
            record_result(&mut health, result(1), 2, false);
        }
        assert_eq!(health.log.len(), KEEP_RESULTS);
    }
}
