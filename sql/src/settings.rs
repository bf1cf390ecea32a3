//! `SET 'key' = 'value'` with Flink's configuration keys.

use std::time::Duration;

use serde_json::{json, Value};
use weir_runtime::checkpointing::CheckpointConfig;

use crate::error::{did_you_mean, SqlError};
use datafusion::sql::sqlparser::tokenizer::Location;

/// Every key `SET` accepts.
pub const KEYS: &[&str] = &[
    "pipeline.name",
    "parallelism.default",
    "pipeline.max-parallelism",
    "execution.checkpointing.interval",
    "execution.checkpointing.mode",
    "execution.checkpointing.timeout",
    "execution.checkpointing.min-pause",
    "execution.checkpointing.tolerable-failed-checkpoints",
    "execution.checkpointing.dir",
    "state.checkpoints.dir",
    "state.checkpoints.num-retained",
    "state.backend.type",
    "restart-strategy.type",
    "restart-strategy.fixed-delay.attempts",
    "restart-strategy.fixed-delay.delay",
    "restart-strategy.exponential-delay.initial-backoff",
    "restart-strategy.exponential-delay.max-backoff",
    "restart-strategy.exponential-delay.backoff-multiplier",
    "restart-strategy.exponential-delay.attempts-before-reset-backoff",
    "restart-strategy.exponential-delay.reset-backoff-threshold",
    "restart-strategy.failure-rate.max-failures-per-interval",
    "restart-strategy.failure-rate.failure-rate-interval",
    "restart-strategy.failure-rate.delay",
    "table.exec.source.idle-timeout",
    "table.exec.state.ttl",
];

/// The settings of a script, as `SET` left them.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `pipeline.name`.
    pub name: Option<String>,
    /// `parallelism.default`.
    pub parallelism: Option<u32>,
    /// `pipeline.max-parallelism`.
    pub max_parallelism: Option<u32>,
    /// `table.exec.source.idle-timeout` (0: off).
    pub idle_timeout: Option<Duration>,
    /// `table.exec.state.ttl`: how long a key of a group aggregation (or
    /// of `SELECT DISTINCT`) is kept after its last row.
    pub state_ttl: Option<Duration>,
    checkpoint: serde_json::Map<String, Value>,
    restart: serde_json::Map<String, Value>,
}

impl Settings {
    /// Applies one `SET`.
    pub fn set(&mut self, key: &str, value: &str, at: Location) -> Result<(), SqlError> {
        let err = |m: String| SqlError::at(at, format!("SET '{key}': {m}"));
        let v = value.trim();
        match key {
            "pipeline.name" => self.name = Some(v.to_string()),
            "parallelism.default" => self.parallelism = Some(positive(v).map_err(err)?),
            "pipeline.max-parallelism" => self.max_parallelism = Some(positive(v).map_err(err)?),
            "execution.checkpointing.interval" => {
                self.checkpoint.insert("interval".into(), duration_value(v).map_err(err)?);
            }
            "execution.checkpointing.timeout" => {
                self.checkpoint.insert("timeout".into(), duration_value(v).map_err(err)?);
            }
            "execution.checkpointing.min-pause" => {
                self.checkpoint.insert("min_pause".into(), duration_value(v).map_err(err)?);
            }
            "execution.checkpointing.mode" => {
                let mode = match v.to_ascii_uppercase().as_str() {
                    "EXACTLY_ONCE" => "exactly_once",
                    "AT_LEAST_ONCE" => "at_least_once",
                    _ => return Err(err("expected EXACTLY_ONCE or AT_LEAST_ONCE".into())),
                };
                self.checkpoint.insert("mode".into(), json!(mode));
            }
            "execution.checkpointing.tolerable-failed-checkpoints" => {
                let n: u32 = v.parse().map_err(|_| err("expected a whole number".into()))?;
                self.checkpoint.insert("tolerable_failures".into(), json!(n));
            }
            "state.checkpoints.num-retained" => {
                self.checkpoint.insert("retained".into(), json!(positive(v).map_err(err)?));
            }
            "execution.checkpointing.dir" | "state.checkpoints.dir" => {
                self.checkpoint.insert("storage".into(), json!(v));
            }
            "state.backend.type" => {
                let backend = match v.to_ascii_lowercase().as_str() {
                    "hashmap" | "heap" => "heap",
                    "rocksdb" => "rocksdb",
                    _ => return Err(err("expected hashmap or rocksdb".into())),
                };
                self.checkpoint.insert("backend".into(), json!(backend));
            }
            "restart-strategy.type" => {
                let strategy = match v.to_ascii_lowercase().as_str() {
                    "none" | "off" | "disable" => "none",
                    "fixed-delay" | "fixeddelay" => "fixed_delay",
                    "exponential-delay" | "exponentialdelay" => "exponential_delay",
                    "failure-rate" | "failurerate" => "failure_rate",
                    _ => return Err(err("expected none, fixed-delay, exponential-delay or failure-rate".into())),
                };
                self.restart.insert("strategy".into(), json!(strategy));
            }
            "restart-strategy.fixed-delay.attempts"
            | "restart-strategy.exponential-delay.attempts-before-reset-backoff" => {
                let n: u32 = v.parse().map_err(|_| err("expected a whole number".into()))?;
                self.restart.insert("attempts".into(), json!(n));
            }
            "restart-strategy.fixed-delay.delay"
            | "restart-strategy.exponential-delay.initial-backoff"
            | "restart-strategy.failure-rate.delay" => {
                self.restart.insert("delay".into(), duration_value(v).map_err(err)?);
            }
            "restart-strategy.exponential-delay.reset-backoff-threshold" => {
                self.restart.insert("reset_after".into(), duration_value(v).map_err(err)?);
            }
            "restart-strategy.failure-rate.max-failures-per-interval" => {
                self.restart.insert("max_failures".into(), json!(positive(v).map_err(err)?));
            }
            "restart-strategy.failure-rate.failure-rate-interval" => {
                self.restart.insert("interval".into(), duration_value(v).map_err(err)?);
            }
            "restart-strategy.exponential-delay.max-backoff" => {
                self.restart.insert("max_delay".into(), duration_value(v).map_err(err)?);
            }
            "restart-strategy.exponential-delay.backoff-multiplier" => {
                let m: f64 = v.parse().map_err(|_| err("expected a number".into()))?;
                self.restart.insert("multiplier".into(), json!(m));
            }
            "table.exec.source.idle-timeout" => self.idle_timeout = Some(duration(v).map_err(err)?),
            "table.exec.state.ttl" => self.state_ttl = Some(duration(v).map_err(err)?),
            _ => {
                return Err(SqlError::at(
                    at,
                    format!("unknown configuration key '{key}'{}", did_you_mean(key, KEYS.iter().copied())),
                ))
            }
        }
        Ok(())
    }

    /// Checkpointing as set; `None` without `execution.checkpointing.interval`
    /// (as in Flink, checkpoints are off by default).
    pub fn checkpoint(&self) -> Result<Option<CheckpointConfig>, SqlError> {
        if !self.checkpoint.contains_key("interval") {
            let other = self.checkpoint.keys().next().or(self.restart.keys().next());
            return match other {
                Some(_) => Err(SqlError::script(
                    "checkpoint and restart settings need 'execution.checkpointing.interval' to be set",
                )),
                None => Ok(None),
            };
        }
        let mut c = self.checkpoint.clone();
        if !self.restart.is_empty() {
            let mut r = self.restart.clone();
            let strategy = r.get("strategy").and_then(Value::as_str).unwrap_or("exponential_delay").to_string();
            r.insert("strategy".into(), json!(strategy));
            match strategy.as_str() {
                "none" => r.retain(|k, _| k == "strategy"),
                "fixed_delay" => {
                    r.entry("attempts").or_insert(json!(1));
                    r.entry("delay").or_insert(json!("1s"));
                    r.retain(|k, _| ["strategy", "attempts", "delay"].contains(&k.as_str()));
                }
                "failure_rate" => {
                    r.entry("max_failures").or_insert(json!(1));
                    r.entry("interval").or_insert(json!("1m"));
                    r.entry("delay").or_insert(json!("1s"));
                    r.retain(|k, _| ["strategy", "max_failures", "interval", "delay"].contains(&k.as_str()));
                }
                _ => {
                    r.entry("attempts").or_insert(json!(10));
                    r.entry("delay").or_insert(json!("1s"));
                    r.entry("max_delay").or_insert(json!("1m"));
                    r.entry("multiplier").or_insert(json!(2.0));
                    r.entry("reset_after").or_insert(json!("1h"));
                    let keys = ["strategy", "attempts", "delay", "max_delay", "multiplier", "reset_after"];
                    r.retain(|k, _| keys.contains(&k.as_str()));
                }
            }
            c.insert("restart".into(), Value::Object(r));
        }
        serde_json::from_value(Value::Object(c))
            .map(Some)
            .map_err(|e| SqlError::script(format!("checkpoint settings: {e}")))
    }
}

fn positive(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number of at least 1, not '{v}'")),
    }
}

/// Flink's durations: `10s`, `10 s`, `1 min`, `500 ms`, or a bare number of
/// milliseconds.
pub fn duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    let compact: String = v.split_whitespace().collect();
    humantime::parse_duration(&compact).map_err(|_| format!("'{v}' is not a duration (write e.g. 10s, 500 ms, 1 min)"))
}

pub(crate) fn duration_value(v: &str) -> Result<Value, String> {
    let d = duration(v)?;
    Ok(json!(humantime::format_duration(d).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Location {
        Location { line: 1, column: 1 }
    }

    #[test]
    fn checkpoint_backend_and_restart_keys_build_the_job_config() {
        let mut s = Settings::default();
        for (k, v) in [
            ("execution.checkpointing.interval", "2 s"),
            ("state.backend.type", "rocksdb"),
            ("restart-strategy.type", "fixed-delay"),
            ("restart-strategy.fixed-delay.attempts", "3"),
            ("parallelism.default", "2"),
        ] {
            s.set(k, v, at()).unwrap();
        }
        let c = s.checkpoint().unwrap().unwrap();
        assert_eq!(c.interval, Duration::from_secs(2));
        assert_eq!(c.backend, weir_runtime::checkpointing::BackendKind::Rocksdb);
        assert_eq!(
            c.restart,
            weir_runtime::checkpointing::RestartStrategy::FixedDelay { attempts: 3, delay: Duration::from_secs(1) }
        );
        assert_eq!(s.parallelism, Some(2));
    }

    #[test]
    fn failure_rate_and_the_backoff_reset_take_flinks_keys() {
        use weir_runtime::checkpointing::RestartStrategy;
        let strategy = |pairs: &[(&str, &str)]| {
            let mut s = Settings::default();
            s.set("execution.checkpointing.interval", "1 s", at()).unwrap();
            for (k, v) in pairs {
                s.set(k, v, at()).unwrap();
            }
            s.checkpoint().unwrap().unwrap().restart
        };
        let rate = strategy(&[
            ("restart-strategy.type", "failure-rate"),
            ("restart-strategy.failure-rate.max-failures-per-interval", "3"),
            ("restart-strategy.failure-rate.failure-rate-interval", "5 min"),
        ]);
        let want = RestartStrategy::FailureRate {
            max_failures: 3,
            interval: Duration::from_secs(300),
            delay: Duration::from_secs(1),
        };
        assert_eq!(rate, want);
        let exp = strategy(&[
            ("restart-strategy.type", "exponential-delay"),
            ("restart-strategy.exponential-delay.reset-backoff-threshold", "10 min"),
        ]);
        let RestartStrategy::ExponentialDelay { reset_after, attempts, .. } = exp else { panic!("{exp:?}") };
        assert_eq!((reset_after, attempts), (Duration::from_secs(600), 10));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let mut s = Settings::default();
        let e = s.set("parallelism.defualt", "2", at()).unwrap_err();
        assert!(e.message.contains("did you mean `parallelism.default`"), "{e}");
        assert!(s.set("parallelism.default", "0", at()).is_err());
        assert!(s.set("state.backend.type", "filesystem", at()).is_err());
        assert!(s.set("execution.checkpointing.interval", "soon", at()).is_err());
        let mut t = Settings::default();
        t.set("state.backend.type", "rocksdb", at()).unwrap();
        assert!(t.checkpoint().unwrap_err().message.contains("execution.checkpointing.interval"));
        assert_eq!(duration("1 min").unwrap(), Duration::from_secs(60));
        assert_eq!(duration("250").unwrap(), Duration::from_millis(250));
    }
}
