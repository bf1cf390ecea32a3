//! `watermark`: assigns event time from a column and emits watermarks with a
//! bounded out-of-orderness, periodically, and marks the stream idle when no
//! data arrived for `idle_timeout` (so it does not hold back event time
//! downstream).
//!
//! The watermark is `max_seen - max_out_of_orderness - 1`: after it, no record
//! with a timestamp at or below it is expected.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit};
use serde::Deserialize;

use super::{duration, millis, Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use crate::error::{OpResult, OperatorError, PlanError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    timestamp_column: String,
    #[serde(default, with = "duration::option")]
    max_out_of_orderness: Option<Duration>,
    #[serde(default, with = "duration::option")]
    interval: Option<Duration>,
    #[serde(default, with = "duration::option")]
    idle_timeout: Option<Duration>,
}

/// Default period between watermarks.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(200);

/// Checks that `name` is an event-time column of `schema`: `int64`
/// milliseconds or a timestamp. Returns its index.
pub fn time_column(ctx: &PlanContext<'_>, schema: &SchemaRef, name: &str, field: &str) -> Result<usize, PlanError> {
    let idx = schema.index_of(name).map_err(|_| ctx.error(format!("no column `{name}` in the input")).field(field))?;
    match schema.field(idx).data_type() {
        DataType::Int64 | DataType::Timestamp(_, _) => Ok(idx),
        other => Err(ctx
            .error(format!("event-time column `{name}` has type {other}; it must be int64 milliseconds or a timestamp"))
            .field(field)),
    }
}

/// Event times of column `idx` in milliseconds; nulls are an error.
pub fn event_times(batch: &RecordBatch, idx: usize) -> Result<Arc<Int64Array>, OperatorError> {
    let col = batch.column(idx);
    if col.null_count() > 0 {
        return Err(OperatorError::InvalidData(format!(
            "event-time column `{}` holds a null",
            batch.schema().field(idx).name()
        )));
    }
    let ms = match col.data_type() {
        DataType::Int64 => col.clone(),
        DataType::Timestamp(TimeUnit::Millisecond, _) => arrow::compute::cast(col, &DataType::Int64)?,
        DataType::Timestamp(_, _) => {
            let as_ms = arrow::compute::cast(col, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
            arrow::compute::cast(&as_ms, &DataType::Int64)?
        }
        other => return Err(OperatorError::InvalidData(format!("event-time column has type {other}"))),
    };
    Ok(Arc::new(ms.as_primitive::<Int64Type>().clone()))
}

/// Factory of `watermark`.
#[derive(Debug)]
pub struct WatermarkFactory;

impl OperatorFactory for WatermarkFactory {
    fn kind(&self) -> &str {
        "watermark"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        let c: Config = ctx.config()?;
        time_column(ctx, &ctx.inputs[0], &c.timestamp_column, "config.timestamp_column")?;
        if c.interval == Some(Duration::ZERO) {
            return Err(ctx.error("interval must be positive").field("config.interval"));
        }
        Ok(ctx.inputs[0].clone())
    }
    fn create(&self, ctx: &PlanContext<'_>, _: SubtaskInfo) -> Result<Instance, PlanError> {
        let c: Config = ctx.config()?;
        let column = time_column(ctx, &ctx.inputs[0], &c.timestamp_column, "config.timestamp_column")?;
        Ok(Instance::Operator(Box::new(WatermarkAssigner {
            column,
            lag: millis(c.max_out_of_orderness.unwrap_or_default()),
            interval: c.interval.unwrap_or(DEFAULT_INTERVAL),
            idle_timeout: c.idle_timeout,
            max_seen: i64::MIN,
            emitted: i64::MIN,
            last_emit: Instant::now(),
            last_data: Instant::now(),
            idle: false,
        })))
    }
}

struct WatermarkAssigner {
    column: usize,
    lag: i64,
    interval: Duration,
    idle_timeout: Option<Duration>,
    max_seen: i64,
    emitted: i64,
    last_emit: Instant,
    last_data: Instant,
    idle: bool,
}

impl WatermarkAssigner {
    fn maybe_emit(&mut self, now: Instant, out: &mut Collector) {
        if now.duration_since(self.last_emit) < self.interval || self.max_seen == i64::MIN {
            return;
        }
        self.last_emit = now;
        let wm = self.max_seen.saturating_sub(self.lag).saturating_sub(1);
        if wm > self.emitted {
            self.emitted = wm;
            out.emit_watermark(wm);
        }
    }
}

impl Operator for WatermarkAssigner {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let times = event_times(&batch, self.column)?;
        if let Some(m) = arrow::compute::max(times.as_ref()) {
            self.max_seen = self.max_seen.max(m);
        }
        let now = Instant::now();
        self.last_data = now;
        if self.idle {
            self.idle = false;
            out.emit_idle(false);
        }
        out.emit(batch);
        self.maybe_emit(now, out);
        Ok(())
    }

    /// Upstream watermarks are replaced by this operator's own.
    fn process_watermark(&mut self, _watermark: i64, _out: &mut Collector) -> OpResult<()> {
        Ok(())
    }

    fn process_idle(&mut self, _idle: bool, _out: &mut Collector) -> OpResult<()> {
        Ok(())
    }

    fn on_processing_time(&mut self, now: Instant, out: &mut Collector) -> OpResult<()> {
        self.maybe_emit(now, out);
        if let Some(t) = self.idle_timeout {
            if !self.idle && now.duration_since(self.last_data) >= t {
                self.idle = true;
                out.emit_idle(true);
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Collector) -> OpResult<()> {
        // End of input: everything seen so far is complete.
        if self.max_seen > self.emitted {
            self.emitted = self.max_seen;
            out.emit_watermark(self.max_seen);
        }
        Ok(())
    }
}
