//! A job's checkpoint and restart configuration, as job files declare it:
//!
//! ```yaml
//! checkpoints:
//!   interval: 1s              # required; enables checkpoints
//!   mode: exactly_once        # or at_least_once
//!   backend: heap             # or rocksdb (incremental)
//!   storage: file:///var/lib/weir/checkpoints   # default: the job manager's
//!   timeout: 10m
//!   min_pause: 0s
//!   tolerable_failures: 0
//!   retained: 1
//!   restart: {strategy: exponential_delay, attempts: 10, delay: 1s, max_delay: 1m, multiplier: 2.0, reset_after: 1h}
//!   # or {strategy: fixed_delay, attempts: 3, delay: 1s}
//!   # or {strategy: failure_rate, max_failures: 3, interval: 5m, delay: 1s}
//!   changelog: true           # rocksdb: change files now, the database's upload after
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use weir_types::BackendKind;

use crate::barrier::CheckpointMode;
use crate::error::PlanError;

/// Checkpointing of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Trigger period.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Barrier alignment.
    #[serde(default = "exactly_once")]
    pub mode: CheckpointMode,
    /// State backend.
    #[serde(default)]
    pub backend: BackendKind,
    /// Storage URI; `None`: the job manager's default.
    #[serde(default)]
    pub storage: Option<String>,
    /// A checkpoint not complete after this long is abandoned.
    #[serde(default = "ten_minutes", with = "humantime_serde")]
    pub timeout: Duration,
    /// Least time between the end of a checkpoint and the next trigger.
    #[serde(default, with = "humantime_serde")]
    pub min_pause: Duration,
    /// Consecutive failed checkpoints tolerated before the job fails over.
    #[serde(default)]
    pub tolerable_failures: u32,
    /// Complete checkpoints kept.
    #[serde(default = "one")]
    pub retained: u32,
    /// What happens when the job fails.
    #[serde(default)]
    pub restart: RestartStrategy,
    /// RocksDB: a checkpoint writes the changes as a change file, and the
    /// database applies them and uploads its copy in the background
    /// (`false`: every checkpoint applies them and uploads the database's
    /// new files before it is acknowledged).
    #[serde(default = "yes")]
    pub changelog: bool,
}

fn yes() -> bool {
    true
}

fn exactly_once() -> CheckpointMode {
    CheckpointMode::ExactlyOnce
}
fn ten_minutes() -> Duration {
    Duration::from_secs(600)
}
fn one() -> u32 {
    1
}

/// How a failed job is restarted from its latest complete checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum RestartStrategy {
    /// A failure fails the job.
    None,
    /// Up to `attempts` restarts, `delay` apart.
    FixedDelay {
        /// Restarts allowed.
        attempts: u32,
        /// Wait before each restart.
        #[serde(with = "humantime_serde")]
        delay: Duration,
    },
    /// Up to `attempts` restarts; the wait starts at `delay` and is
    /// multiplied by `multiplier` after each restart, up to `max_delay`. A
    /// failure `reset_after` or longer after the one before starts over:
    /// first delay, `attempts` restarts again.
    ExponentialDelay {
        /// Restarts allowed.
        attempts: u32,
        /// First wait.
        #[serde(with = "humantime_serde")]
        delay: Duration,
        /// Longest wait.
        #[serde(with = "humantime_serde")]
        max_delay: Duration,
        /// Growth factor.
        multiplier: f64,
        /// A quiet spell that resets the delay and the count.
        #[serde(default = "one_hour", with = "humantime_serde")]
        reset_after: Duration,
    },
    /// A restart `delay` after each failure while no more than
    /// `max_failures` failures fall within any `interval`; then the job
    /// fails for good.
    FailureRate {
        /// Failures allowed within `interval`.
        max_failures: u32,
        /// The window failures are counted in.
        #[serde(with = "humantime_serde")]
        interval: Duration,
        /// Wait before each restart.
        #[serde(with = "humantime_serde")]
        delay: Duration,
    },
}

/// The default quiet spell after which exponential backoff starts over.
pub fn one_hour() -> Duration {
    Duration::from_secs(3600)
}

/// What a restart strategy remembers of a job's failures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestartHistory {
    /// Restarts granted, all of them.
    restarts: u32,
    /// Restarts granted since exponential backoff last started over.
    since_reset: u32,
    /// When the failures of the last while happened, oldest first.
    failures: VecDeque<Instant>,
}

impl RestartHistory {
    /// The history of a job that restarted `restarts` times before (as a
    /// job manager that takes a job over knows it).
    pub fn after(restarts: u32) -> Self {
        RestartHistory { restarts, since_reset: restarts, failures: VecDeque::new() }
    }
}

impl Default for RestartStrategy {
    /// With checkpoints on: exponential delay from 1 s to 1 min, 10 attempts.
    fn default() -> Self {
        RestartStrategy::ExponentialDelay {
            attempts: 10,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            multiplier: 2.0,
            reset_after: one_hour(),
        }
    }
}

impl RestartStrategy {
    /// A failure at `now`: the wait before restarting, or `None` when the
    /// strategy allows no further restart (the job fails for good).
    pub fn on_failure(&self, h: &mut RestartHistory, now: Instant) -> Option<Duration> {
        let previous = h.failures.back().copied();
        h.failures.push_back(now);
        let delay = match self {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => (h.restarts < *attempts).then_some(*delay),
            RestartStrategy::ExponentialDelay { attempts, delay, max_delay, multiplier, reset_after } => {
                h.failures.drain(..h.failures.len() - 1);
                if previous.is_some_and(|p| now.saturating_duration_since(p) >= *reset_after) {
                    h.since_reset = 0;
                }
                (h.since_reset < *attempts).then(|| {
                    let f = multiplier.powi(h.since_reset.min(64) as i32);
                    Duration::from_secs_f64((delay.as_secs_f64() * f).min(max_delay.as_secs_f64()))
                })
            }
            RestartStrategy::FailureRate { max_failures, interval, delay } => {
                while h.failures.front().is_some_and(|t| now.saturating_duration_since(*t) >= *interval) {
                    h.failures.pop_front();
                }
                (h.failures.len() <= *max_failures as usize).then_some(*delay)
            }
        };
        if delay.is_some() {
            h.restarts += 1;
            h.since_reset += 1;
        }
        delay
    }
}

impl CheckpointConfig {
    /// A configuration with defaults and the given interval.
    pub fn every(interval: Duration) -> Self {
        Self {
            interval,
            mode: CheckpointMode::ExactlyOnce,
            backend: BackendKind::Heap,
            storage: None,
            timeout: ten_minutes(),
            min_pause: Duration::ZERO,
            tolerable_failures: 0,
            retained: 1,
            restart: RestartStrategy::default(),
            changelog: true,
        }
    }

    /// Checks the values make sense.
    pub fn validate(&self) -> Result<(), PlanError> {
        let err = |field: &str, m: String| Err(PlanError::job(m).field(format!("checkpoints.{field}")));
        if self.interval < Duration::from_millis(10) {
            return err("interval", format!("must be at least 10ms, got {:?}", self.interval));
        }
        if self.timeout.is_zero() {
            return err("timeout", "must be positive".into());
        }
        if self.retained == 0 {
            return err("retained", "must keep at least one checkpoint".into());
        }
        if let Some(s) = &self.storage {
            let hdfs = s.strip_prefix("hdfs://").is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
            if !(s.starts_with("file:///") || s.starts_with("s3://") || s.starts_with("memory://") || hdfs) {
                return err(
                    "storage",
                    format!("`{s}` is not file:///absolute/path, s3://bucket/prefix, hdfs://namenode:port/path or memory://"),
                );
            }
        }
        match &self.restart {
            RestartStrategy::ExponentialDelay { multiplier, delay, max_delay, reset_after, .. } => {
                if !(*multiplier >= 1.0 && multiplier.is_finite()) {
                    return err("restart.multiplier", format!("must be at least 1.0, got {multiplier}"));
                }
                if max_delay < delay {
                    return err("restart.max_delay", "must not be below delay".into());
                }
                if reset_after.is_zero() {
                    return err("restart.reset_after", "must be positive".into());
                }
            }
            RestartStrategy::FailureRate { interval, .. } if interval.is_zero() => {
                return err("restart.interval", "must be positive".into());
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The delays a strategy grants for failures at these seconds.
    fn delays(s: &RestartStrategy, at: &[u64]) -> Vec<Option<u64>> {
        let t0 = Instant::now();
        let mut h = RestartHistory::default();
        at.iter().map(|&t| s.on_failure(&mut h, t0 + Duration::from_secs(t)).map(|d| d.as_secs())).collect()
    }

    #[test]
    fn restart_delays() {
        let fixed = RestartStrategy::FixedDelay { attempts: 2, delay: Duration::from_secs(1) };
        assert_eq!(delays(&fixed, &[0, 10_000, 20_000]), [Some(1), Some(1), None], "attempts in all");
        let exp = RestartStrategy::ExponentialDelay {
            attempts: 5,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(3),
            multiplier: 2.0,
            reset_after: Duration::from_secs(100),
        };
        assert_eq!(delays(&exp, &[0, 1, 2, 3, 4, 5]), [Some(1), Some(2), Some(3), Some(3), Some(3), None]);
        // A quiet spell of reset_after starts over, from the first delay and with every attempt.
        let spells = delays(&exp, &[0, 1, 2, 200, 201, 202, 203, 204, 205]);
        assert_eq!(spells, [Some(1), Some(2), Some(3), Some(1), Some(2), Some(3), Some(3), Some(3), None]);
        assert_eq!(delays(&RestartStrategy::None, &[0]), [None]);
    }

    #[test]
    fn failure_rate_counts_the_failures_of_the_last_interval() {
        let rate = RestartStrategy::FailureRate {
            max_failures: 2,
            interval: Duration::from_secs(60),
            delay: Duration::from_secs(5),
        };
        // Two failures a minute are tolerated for ever; a third within one is not.
        assert_eq!(delays(&rate, &[0, 30, 90, 120, 180]), [Some(5); 5]);
        assert_eq!(delays(&rate, &[0, 30, 59]), [Some(5), Some(5), None]);
    }

    #[test]
    fn parses_and_validates() {
        let c: CheckpointConfig = serde_yaml_ng::from_str(
            "interval: 1s\nbackend: rocksdb\nrestart: {strategy: fixed_delay, attempts: 3, delay: 200ms}\n",
        )
        .unwrap();
        assert_eq!(c.backend, BackendKind::Rocksdb);
        assert_eq!(c.mode, CheckpointMode::ExactlyOnce);
        assert!(c.changelog, "on unless turned off");
        c.validate().unwrap();
        let off: CheckpointConfig =
            serde_yaml_ng::from_str("interval: 1s\nbackend: rocksdb\nchangelog: false\n").unwrap();
        assert!(!off.changelog);
        let bad = CheckpointConfig { retained: 0, ..c.clone() };
        assert!(bad.validate().unwrap_err().to_string().contains("retained"));
        let bad = CheckpointConfig { storage: Some("/tmp/x".into()), ..c };
        assert!(bad.validate().unwrap_err().to_string().contains("storage"));
    }
}
