//! Event time: how records get their time and watermarks, and the windows
//! a keyed stream is cut into.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use weir_runtime::operators::millis;

use crate::ops::window::Assigner;

/// How a stream's records get their event time and how far behind the
/// newest one the watermark trails (Flink's `WatermarkStrategy`).
///
/// ```
/// # use std::time::Duration;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Bid { time_ms: i64 }
/// use weir::WatermarkStrategy;
/// let strategy = WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(5), |b: &Bid| b.time_ms)
///     .with_idleness(Duration::from_secs(30));
/// ```
pub struct WatermarkStrategy<T> {
    pub(crate) timestamp: Arc<dyn Fn(&T) -> i64 + Send + Sync>,
    max_out_of_orderness: Duration,
    idle_timeout: Option<Duration>,
    interval: Option<Duration>,
}

impl<T> std::fmt::Debug for WatermarkStrategy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatermarkStrategy")
            .field("max_out_of_orderness", &self.max_out_of_orderness)
            .field("idle_timeout", &self.idle_timeout)
            .field("interval", &self.interval)
            .finish()
    }
}

impl<T> WatermarkStrategy<T> {
    /// Event time from `timestamp` (milliseconds since the epoch), in
    /// ascending order per subtask: the watermark is the newest time seen.
    pub fn monotonous(timestamp: impl Fn(&T) -> i64 + Send + Sync + 'static) -> Self {
        Self::bounded_out_of_orderness(Duration::ZERO, timestamp)
    }

    /// Event time from `timestamp`, out of order by at most `bound`: the
    /// watermark trails the newest time seen by `bound`.
    pub fn bounded_out_of_orderness(bound: Duration, timestamp: impl Fn(&T) -> i64 + Send + Sync + 'static) -> Self {
        Self { timestamp: Arc::new(timestamp), max_out_of_orderness: bound, idle_timeout: None, interval: None }
    }

    /// A subtask that has seen no record for `timeout` stops holding back
    /// the watermark of what follows.
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// How often watermarks are emitted (default 200 ms).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// The configuration of the built-in `watermark` operator on `column`.
    pub(crate) fn config(&self, column: &str) -> serde_json::Value {
        let ms = |d: Duration| format!("{}ms", millis(d));
        let mut c = json!({
            "timestamp_column": column,
            "max_out_of_orderness": ms(self.max_out_of_orderness),
        });
        if let Some(d) = self.idle_timeout {
            c["idle_timeout"] = json!(ms(d));
        }
        if let Some(d) = self.interval {
            c["interval"] = json!(ms(d));
        }
        c
    }
}

/// Event-time windows of a keyed stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTimeWindows(pub(crate) Assigner);

impl EventTimeWindows {
    /// Back-to-back windows of `size`, aligned to the epoch.
    pub fn tumbling(size: Duration) -> Self {
        Self(Assigner::Tumbling { size: millis(size).max(1) })
    }

    /// Windows of `size` starting every `slide` (a record is in `size / slide` of them).
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        Self(Assigner::Sliding { size: millis(size).max(1), slide: millis(slide).max(1) })
    }

    /// Per key, records closer than `gap` to each other form one window.
    pub fn session(gap: Duration) -> Self {
        Self(Assigner::Session { gap: millis(gap).max(1) })
    }
}
