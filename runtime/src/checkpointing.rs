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
//!   restart: {strategy: exponential_delay, attempts: 10, delay: 1s, max_delay: 1m, multiplier: 2.0}
//!   changelog: true           # rocksdb: change files now, the database's upload after
//! ```

use std::time::Duration;

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
    /// multiplied by `multiplier` after each restart, up to `max_delay`.
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
    },
}

impl Default for RestartStrategy {
    /// With checkpoints on: exponential delay from 1 s to 1 min, 10 attempts.
    fn default() -> Self {
        RestartStrategy::ExponentialDelay {
            attempts: 10,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            multiplier: 2.0,
        }
    }
}

impl RestartStrategy {
    /// The wait before restart number `n` (1-based), or `None` if no restart is allowed.
    pub fn delay(&self, n: u32) -> Option<Duration> {
        match self {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => (n <= *attempts).then_some(*delay),
            RestartStrategy::ExponentialDelay { attempts, delay, max_delay, multiplier } => {
                (n <= *attempts).then(|| {
                    let f = multiplier.powi(n.saturating_sub(1).min(64) as i32);
                    Duration::from_secs_f64((delay.as_secs_f64() * f).min(max_delay.as_secs_f64()))
                })
            }
        }
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
        if let RestartStrategy::ExponentialDelay { multiplier, delay, max_delay, .. } = &self.restart {
            if !(*multiplier >= 1.0 && multiplier.is_finite()) {
                return err("restart.multiplier", format!("must be at least 1.0, got {multiplier}"));
            }
            if max_delay < delay {
                return err("restart.max_delay", "must not be below delay".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delays() {
        let fixed = RestartStrategy::FixedDelay { attempts: 2, delay: Duration::from_millis(100) };
        assert_eq!(fixed.delay(1), Some(Duration::from_millis(100)));
        assert_eq!(fixed.delay(3), None);
        let exp = RestartStrategy::ExponentialDelay {
            attempts: 5,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(3),
            multiplier: 2.0,
        };
        let d: Vec<_> = (1..=6).map(|n| exp.delay(n).map(|d| d.as_secs())).collect();
        assert_eq!(d, vec![Some(1), Some(2), Some(3), Some(3), Some(3), None]);
        assert_eq!(RestartStrategy::None.delay(1), None);
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
