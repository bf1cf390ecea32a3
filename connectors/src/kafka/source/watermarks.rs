//! Per-partition watermarks with idleness.

use std::time::Instant;

use weir_runtime::operators::{millis, Collector};

use super::*;

impl KafkaSource {
    /// Emits the watermark (and idleness) of this subtask's partitions.
    pub(super) fn watermarks(&mut self, now: Instant, out: &mut Collector) {
        let Some(spec) = &self.config.watermark else {
            // Without watermarks a subtask with nothing to read still must
            // not hold back event time downstream.
            if self.partitions.is_empty() && !self.idle {
                self.idle = true;
                out.emit_idle(true);
            }
            return;
        };
        if now.duration_since(self.last_watermark_at) < spec.interval.unwrap_or(DEFAULT_WATERMARK_INTERVAL) {
            return;
        }
        self.last_watermark_at = now;
        let lag = millis(spec.max_out_of_orderness.unwrap_or_default());
        let mut min: Option<i64> = None;
        for p in self.partitions.iter().filter(|p| !p.done()) {
            if spec.idle_timeout.is_some_and(|t| now.duration_since(p.last_data) >= t) {
                continue;
            }
            let wm = if p.max_event_time == i64::MIN {
                i64::MIN
            } else {
                p.max_event_time.saturating_sub(lag).saturating_sub(1)
            };
            min = Some(min.map_or(wm, |m: i64| m.min(wm)));
        }
        match min {
            None => {
                // Every partition is idle: event time catches up with the
                // furthest of them before the subtask goes idle, so that the
                // partition that fell silent last does not hold back what the
                // others allowed.
                let furthest = self
                    .partitions
                    .iter()
                    .filter(|p| !p.done() && p.max_event_time > i64::MIN)
                    .map(|p| p.max_event_time.saturating_sub(lag).saturating_sub(1))
                    .max();
                if let Some(wm) = furthest.filter(|wm| *wm > self.emitted_watermark) {
                    self.emitted_watermark = wm;
                    out.emit_watermark(wm);
                }
                if !self.idle {
                    self.idle = true;
                    out.emit_idle(true);
                }
            }
            Some(wm) => {
                if self.idle {
                    self.idle = false;
                    out.emit_idle(false);
                }
                if wm > self.emitted_watermark && wm > i64::MIN {
                    self.emitted_watermark = wm;
                    out.emit_watermark(wm);
                }
            }
        }
    }
}
