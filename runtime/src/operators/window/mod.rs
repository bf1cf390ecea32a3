//! `window`: keyed event-time windows — tumbling, sliding and session — with
//! `count`, `count_distinct`, `sum`, `sum_distinct`, `min`, `max`, `avg` and
//! `avg_distinct`.
//!
//! A window `[start, end)` fires once the watermark reaches `end - 1`, emitting
//! one row per key with events in it: the key columns, `window_start`,
//! `window_end` (milliseconds) and the aggregates. With `allowed_lateness`
//! the window is kept that much longer: a record that arrives for it after
//! it fired is added and fires an updated row for its key at once. Records
//! for a window past its end and the allowed lateness are late: they are
//! counted and go, as they came, to the side output `late` (dropped if no
//! edge takes it). At the end of a bounded input every remaining window
//! fires.
//!
//! Accumulators are columnar (one vector per aggregate, indexed by a slot per
//! key and window), so a batch is absorbed with one hash lookup per row and
//! tight loops per aggregate.
//!
//! - [`keys`]: key columns to slots;
//! - [`accumulate`]: the aggregates' columns;
//! - [`assign`]: which windows a record belongs to;
//! - [`trigger`]: when windows fire and are purged;
//! - [`state`]: the checkpoint layout of windows and sessions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use serde::Deserialize;

use super::watermark::{event_times, time_column};
use super::{duration, millis, Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use crate::error::{OpResult, OperatorError, PlanError};
use crate::state::{StateReader, StateWriter};

mod accumulate;
mod assign;
mod keys;
mod state;
#[cfg(test)]
mod tests;
mod trigger;
mod tvf;

pub use tvf::WindowAssignFactory;

use accumulate::Accumulators;
use assign::{FixedWindow, Sessions};
use keys::KeyCodec;
use state::{FIXED_STATE, SESSION_STATE};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    key: Vec<String>,
    /// The event-time column; with `processing_time`, none.
    #[serde(default)]
    timestamp_column: Option<String>,
    /// Windows by the task manager's clock: each row belongs to the windows
    /// of the moment it arrives, and a window fires when the clock passes
    /// its end (Flink's processing-time windows).
    #[serde(default)]
    processing_time: bool,
    window: WindowSpec,
    aggregates: Vec<AggSpec>,
    /// How long after a window's end records are still added to it (each
    /// one fires an updated result for its key); later ones are late.
    #[serde(default, with = "duration::option")]
    allowed_lateness: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum WindowSpec {
    Tumbling {
        #[serde(with = "duration")]
        size: Duration,
        /// Windows start at `offset` plus a multiple of the size.
        #[serde(default, with = "duration::option")]
        offset: Option<Duration>,
    },
    Sliding {
        #[serde(with = "duration")]
        size: Duration,
        #[serde(with = "duration")]
        slide: Duration,
        /// Windows start at `offset` plus a multiple of the slide.
        #[serde(default, with = "duration::option")]
        offset: Option<Duration>,
    },
    /// Windows growing by `step` from the start of each `size`-long
    /// period: `[s, s + step)`, `[s, s + 2 step)`, ... `[s, s + size)`.
    Cumulate {
        #[serde(with = "duration")]
        step: Duration,
        #[serde(with = "duration")]
        size: Duration,
        /// Periods start at `offset` plus a multiple of the size.
        #[serde(default, with = "duration::option")]
        offset: Option<Duration>,
    },
    Session {
        #[serde(with = "duration")]
        gap: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AggFn {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    CountDistinct,
    SumDistinct,
    AvgDistinct,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AggSpec {
    #[serde(rename = "fn")]
    func: AggFn,
    #[serde(default)]
    column: Option<String>,
    #[serde(rename = "as")]
    name: String,
}

/// How one aggregate reads its input and what it outputs.
#[derive(Debug, Clone)]
struct AggPlan {
    func: AggFn,
    /// Input column, if any (count without one counts rows).
    column: Option<usize>,
    /// Whether the input is read as float (otherwise as int64).
    float: bool,
}

#[derive(Debug, Clone)]
struct Planned {
    key: Vec<usize>,
    /// Single non-null integer key: the fast path.
    int_key: bool,
    /// The event-time column; `None` for processing time.
    time: Option<usize>,
    window: WindowSpec,
    aggs: Vec<AggPlan>,
    schema: SchemaRef,
    input: SchemaRef,
    /// Allowed lateness in milliseconds (0: a window is dropped when it fires).
    lateness: i64,
}

fn plan(ctx: &PlanContext<'_>) -> Result<Planned, PlanError> {
    let c: Config = ctx.config()?;
    let input = ctx.inputs[0].clone();
    if c.key.is_empty() {
        return Err(ctx.error("a keyed window needs at least one key column").field("config.key"));
    }
    let key = ctx.key_columns(0, &c.key, "config.key")?;
    let mut fields: Vec<Field> = key.iter().map(|&i| input.field(i).as_ref().clone()).collect();
    let int_key = key.len() == 1 && !input.field(key[0]).is_nullable() && input.field(key[0]).data_type().is_integer();
    let time = match (&c.timestamp_column, c.processing_time) {
        (Some(t), false) => Some(time_column(ctx, &input, t, "config.timestamp_column")?),
        (None, true) => None,
        (Some(_), true) => {
            return Err(ctx
                .error("processing-time windows take no timestamp_column: rows are timed as they arrive")
                .field("config.timestamp_column"))
        }
        (None, false) => {
            return Err(ctx
                .error("set timestamp_column (event time), or processing_time: true")
                .field("config.timestamp_column"))
        }
    };
    if time.is_none() && c.allowed_lateness.is_some() {
        return Err(ctx
            .error("processing-time windows have no late rows, so no allowed_lateness")
            .field("config.allowed_lateness"));
    }
    match c.window {
        WindowSpec::Tumbling { size, .. } if size.as_millis() == 0 => {
            return Err(ctx.error("size must be at least 1ms").field("config.window.size"))
        }
        WindowSpec::Sliding { size, slide, .. } if slide.as_millis() == 0 || size < slide => {
            return Err(ctx.error("slide must be at least 1ms and at most size").field("config.window.slide"))
        }
        WindowSpec::Sliding { size, slide, .. } if millis(size) / millis(slide) > 1000 => {
            return Err(ctx.error("size / slide must be at most 1000 windows per record").field("config.window.slide"))
        }
        WindowSpec::Cumulate { step, size, .. }
            if step.as_millis() == 0 || size < step || millis(size) % millis(step) != 0 =>
        {
            return Err(ctx.error("step must be at least 1ms and divide size").field("config.window.step"))
        }
        WindowSpec::Cumulate { step, size, .. } if millis(size) / millis(step) > 1000 => {
            return Err(ctx.error("size / step must be at most 1000 windows per record").field("config.window.step"))
        }
        WindowSpec::Session { gap } if gap.as_millis() == 0 => {
            return Err(ctx.error("gap must be at least 1ms").field("config.window.gap"))
        }
        _ => {}
    }
    fields.push(Field::new("window_start", DataType::Int64, false));
    fields.push(Field::new("window_end", DataType::Int64, false));
    if c.aggregates.is_empty() {
        return Err(ctx.error("at least one aggregate is needed").field("config.aggregates"));
    }
    let mut aggs = Vec::new();
    for (i, a) in c.aggregates.iter().enumerate() {
        let at = format!("config.aggregates[{i}]");
        if fields.iter().any(|f| f.name() == &a.name) {
            return Err(ctx.error(format!("output column `{}` already exists", a.name)).field(format!("{at}.as")));
        }
        let column =
            match &a.column {
                None if a.func == AggFn::Count => None,
                None => {
                    return Err(ctx
                        .error(format!("{:?} needs a column", a.func).to_lowercase())
                        .field(format!("{at}.column")))
                }
                Some(name) => Some(input.index_of(name).map_err(|_| {
                    ctx.error(format!("no column `{name}` in the input")).field(format!("{at}.column"))
                })?),
            };
        let float = match column.map(|i| input.field(i).data_type()) {
            None => false,
            Some(t) if t.is_integer() => false,
            Some(t) if t.is_floating() => true,
            Some(_) if matches!(a.func, AggFn::Count | AggFn::CountDistinct) => false,
            Some(t) => {
                return Err(ctx
                    .error(
                        format!("{:?} cannot aggregate a column of type {t}; it needs a number", a.func).to_lowercase(),
                    )
                    .field(format!("{at}.column")))
            }
        };
        let (dt, nullable) = match a.func {
            AggFn::Count | AggFn::CountDistinct => (DataType::Int64, false),
            AggFn::Avg | AggFn::AvgDistinct => (DataType::Float64, true),
            _ if float => (DataType::Float64, true),
            _ => (DataType::Int64, true),
        };
        fields.push(Field::new(&a.name, dt, nullable));
        // Counting a column counts its non-null values; reading it as a number is not needed.
        aggs.push(AggPlan {
            func: a.func,
            column,
            float: float && !matches!(a.func, AggFn::Count | AggFn::CountDistinct),
        });
    }
    let lateness = c.allowed_lateness.map_or(0, millis);
    let schema = Arc::new(Schema::new(fields));
    Ok(Planned { key, int_key, time, window: c.window, aggs, schema, input, lateness })
}

/// `, offset=...` of a window whose starts are shifted (nothing otherwise,
/// so the state types of windows without one read as before).
fn offset_text(offset: Option<Duration>) -> String {
    match offset.filter(|o| !o.is_zero()) {
        Some(o) => format!(", offset={}", humantime::format_duration(o)),
        None => String::new(),
    }
}

/// The task manager's clock, in milliseconds since the epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Factory of `window`.
#[derive(Debug)]
pub struct WindowFactory;

impl OperatorFactory for WindowFactory {
    fn kind(&self) -> &str {
        "window"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Ok(plan(ctx)?.schema)
    }
    /// `late`: records that arrive after their windows' end plus the
    /// allowed lateness, as they came in.
    fn side_outputs(&self, ctx: &PlanContext<'_>) -> Result<Vec<(String, SchemaRef)>, PlanError> {
        Ok(vec![(LATE.to_string(), ctx.inputs[0].clone())])
    }
    fn state_types(&self, ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        let Ok(p) = plan(ctx) else { return Vec::new() };
        let span = |d: Duration| humantime::format_duration(d).to_string();
        let (name, window) = match p.window {
            WindowSpec::Tumbling { size, offset } => {
                (FIXED_STATE, format!("tumbling(size={}{})", span(size), offset_text(offset)))
            }
            WindowSpec::Sliding { size, slide, offset } => {
                (FIXED_STATE, format!("sliding(size={}, slide={}{})", span(size), span(slide), offset_text(offset)))
            }
            WindowSpec::Cumulate { step, size, offset } => {
                (FIXED_STATE, format!("cumulate(step={}, size={}{})", span(step), span(size), offset_text(offset)))
            }
            WindowSpec::Session { gap } => (SESSION_STATE, format!("session(gap={})", span(gap))),
        };
        let keys: Vec<String> =
            p.key.iter().map(|&i| format!("{}: {}", p.input.field(i).name(), p.input.field(i).data_type())).collect();
        let aggs: Vec<String> = p
            .aggs
            .iter()
            .map(|a| {
                let func = format!("{:?}", a.func).to_lowercase();
                let column = a.column.map(|c| p.input.field(c).name().as_str()).unwrap_or("*");
                format!("{func}({column}){}", if a.float { ": float" } else { "" })
            })
            .collect();
        let clock = if p.time.is_none() { " by processing time" } else { "" };
        vec![(name.to_string(), format!("{window}{clock} by [{}] of [{}]", keys.join(", "), aggs.join(", ")))]
    }
    fn create(&self, ctx: &PlanContext<'_>, info: SubtaskInfo) -> Result<Instance, PlanError> {
        let p = plan(ctx)?;
        let keys = if p.int_key {
            KeyCodec::Int(p.input.field(p.key[0]).data_type().clone())
        } else {
            let fields = p.key.iter().map(|&i| SortField::new(p.input.field(i).data_type().clone())).collect();
            KeyCodec::Rows(RowConverter::new(fields).map_err(|e| ctx.error(e.to_string()))?)
        };
        Ok(Instance::Operator(Box::new(WindowOperator {
            keys,
            windows: BTreeMap::new(),
            sessions: Sessions::default(),
            watermark: i64::MIN,
            late: 0,
            slots: Vec::new(),
            max_parallelism: info.max_parallelism,
            dirty: std::collections::BTreeSet::new(),
            persisted: std::collections::BTreeMap::new(),
            sessions_persisted: std::collections::BTreeSet::new(),
            purged: Vec::new(),
            p,
        })))
    }
}

struct WindowOperator {
    p: Planned,
    keys: KeyCodec,
    windows: BTreeMap<i64, FixedWindow>,
    sessions: Sessions,
    watermark: i64,
    late: u64,
    slots: Vec<u32>,
    max_parallelism: u32,
    /// Fixed windows that absorbed records since the last snapshot.
    dirty: std::collections::BTreeSet<i64>,
    /// Fixed windows in the last snapshot, with the key groups they wrote
    /// (an incremental snapshot deletes them once they fire).
    persisted: BTreeMap<i64, Vec<u32>>,
    /// Key groups written by the last session snapshot.
    sessions_persisted: std::collections::BTreeSet<u32>,
    /// Persisted windows purged since the last snapshot (fired, and past
    /// the allowed lateness), with the key groups they had written.
    purged: Vec<(i64, Vec<u32>)>,
}

/// The side output of late records.
const LATE: &str = "late";
/// Its port.
const LATE_PORT: u32 = 1;

impl Operator for WindowOperator {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let times = match self.p.time {
            Some(c) => event_times(&batch, c)?,
            // The clock, which never goes back below what fired already.
            None => {
                let now = now_ms().max(self.watermark.saturating_add(1));
                Arc::new(arrow::array::Int64Array::from(vec![now; batch.num_rows()]))
            }
        };
        let late = match self.p.window {
            WindowSpec::Session { .. } => self.absorb_sessions(&batch, &times, out)?,
            _ => self.absorb_fixed(&batch, &times, out)?,
        };
        if !late.is_empty() {
            self.late += late.len() as u64;
            let rows = arrow::array::UInt32Array::from(late);
            out.emit_side(LATE_PORT, arrow::compute::take_record_batch(&batch, &rows)?);
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        // Processing-time windows have no event time: the result has none.
        if self.p.time.is_none() || watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        self.fire(watermark, out)?;
        out.emit_watermark(watermark);
        Ok(())
    }

    fn on_processing_time(&mut self, _now: std::time::Instant, out: &mut Collector) -> OpResult<()> {
        if self.p.time.is_some() {
            return Ok(());
        }
        // Windows that ended by the clock fire; as a watermark, the clock
        // is the last millisecond that has passed.
        let passed = now_ms() - 1;
        if passed > self.watermark {
            self.watermark = passed;
            self.fire(passed, out)?;
        }
        Ok(())
    }

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        match self.p.window {
            WindowSpec::Session { .. } => self.snapshot_sessions(w),
            _ => self.snapshot_fixed(w),
        }
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        self.restore(r)
    }

    fn finish(&mut self, out: &mut Collector) -> OpResult<()> {
        self.fire(i64::MAX, out)?;
        if self.late > 0 {
            tracing::info!(late_records = self.late, "window dropped late records");
        }
        Ok(())
    }
}
