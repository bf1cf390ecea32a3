//! `window`: keyed event-time windows — tumbling, sliding and session — with
//! `count`, `sum`, `min`, `max` and `avg`.
//!
//! A window `[start, end)` fires once the watermark reaches `end - 1`, emitting
//! one row per key with events in it: the key columns, `window_start`,
//! `window_end` (milliseconds) and the aggregates. Records for a window that
//! has already fired are late: they are dropped and counted. At the end of a
//! bounded input every remaining window fires.
//!
//! Accumulators are columnar (one vector per aggregate, indexed by a slot per
//! key and window), so a batch is absorbed with one hash lookup per row and
//! tight loops per aggregate.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use serde::Deserialize;

use super::watermark::{event_times, time_column};
use super::{duration, millis, Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use crate::error::{OpResult, OperatorError, PlanError};
use crate::keygroup::{hash_i64, hash_rows, is_key_type, key_group, mix64};
use crate::state::{StateReader, StateWriter};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    key: Vec<String>,
    timestamp_column: String,
    window: WindowSpec,
    aggregates: Vec<AggSpec>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum WindowSpec {
    Tumbling {
        #[serde(with = "duration")]
        size: Duration,
    },
    Sliding {
        #[serde(with = "duration")]
        size: Duration,
        #[serde(with = "duration")]
        slide: Duration,
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
    time: usize,
    window: WindowSpec,
    aggs: Vec<AggPlan>,
    schema: SchemaRef,
    input: SchemaRef,
}

fn plan(ctx: &PlanContext<'_>) -> Result<Planned, PlanError> {
    let c: Config = ctx.config()?;
    let input = ctx.inputs[0].clone();
    if c.key.is_empty() {
        return Err(ctx.error("a keyed window needs at least one key column").field("config.key"));
    }
    let mut key = Vec::new();
    let mut fields = Vec::new();
    for k in &c.key {
        let i =
            input.index_of(k).map_err(|_| ctx.error(format!("no column `{k}` in the input")).field("config.key"))?;
        let f = input.field(i);
        if !is_key_type(f.data_type()) {
            return Err(ctx
                .error(format!("key column `{k}` has type {}, which cannot be a key", f.data_type()))
                .field("config.key"));
        }
        key.push(i);
        fields.push(f.as_ref().clone());
    }
    ctx.require_keyed_input(0, &c.key, "config.key")?;
    let int_key = key.len() == 1 && !input.field(key[0]).is_nullable() && input.field(key[0]).data_type().is_integer();
    let time = time_column(ctx, &input, &c.timestamp_column, "config.timestamp_column")?;
    match c.window {
        WindowSpec::Tumbling { size } if size.as_millis() == 0 => {
            return Err(ctx.error("size must be at least 1ms").field("config.window.size"))
        }
        WindowSpec::Sliding { size, slide } if slide.as_millis() == 0 || size < slide => {
            return Err(ctx.error("slide must be at least 1ms and at most size").field("config.window.slide"))
        }
        WindowSpec::Sliding { size, slide } if millis(size) / millis(slide) > 1000 => {
            return Err(ctx.error("size / slide must be at most 1000 windows per record").field("config.window.slide"))
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
            Some(_) if a.func == AggFn::Count => false,
            Some(t) => {
                return Err(ctx
                    .error(
                        format!("{:?} cannot aggregate a column of type {t}; it needs a number", a.func).to_lowercase(),
                    )
                    .field(format!("{at}.column")))
            }
        };
        let (dt, nullable) = match a.func {
            AggFn::Count => (DataType::Int64, false),
            AggFn::Avg => (DataType::Float64, true),
            _ if float => (DataType::Float64, true),
            _ => (DataType::Int64, true),
        };
        fields.push(Field::new(&a.name, dt, nullable));
        // Counting a column counts its non-null values; reading it as a number is not needed.
        aggs.push(AggPlan { func: a.func, column, float: float && a.func != AggFn::Count });
    }
    Ok(Planned { key, int_key, time, window: c.window, aggs, schema: Arc::new(Schema::new(fields)), input })
}

/// Factory of `window`.
#[derive(Debug)]
pub struct WindowFactory;

impl OperatorFactory for WindowFactory {
    fn kind(&self) -> &'static str {
        "window"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Ok(plan(ctx)?.schema)
    }
    fn state_types(&self, ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        let Ok(p) = plan(ctx) else { return Vec::new() };
        let span = |d: Duration| humantime::format_duration(d).to_string();
        let (name, window) = match p.window {
            WindowSpec::Tumbling { size } => (FIXED_STATE, format!("tumbling(size={})", span(size))),
            WindowSpec::Sliding { size, slide } => {
                (FIXED_STATE, format!("sliding(size={}, slide={})", span(size), span(slide)))
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
        vec![(name.to_string(), format!("{window} by [{}] of [{}]", keys.join(", "), aggs.join(", ")))]
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
            fired: Vec::new(),
            p,
        })))
    }
}

// ------------------------------------------------------------------ keys

/// Hashes an `i64` key with the same mix as key groups (no SipHash per row).
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix64(self.0 ^ u64::from(b));
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.0 = mix64(v as u64 ^ self.0);
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = mix64(u64::from(v) ^ self.0);
    }
}

type Mix = BuildHasherDefault<MixHasher>;

enum KeyCodec {
    /// One non-null integer column, widened to `i64`; holds the original type.
    Int(DataType),
    /// Any other key, in Arrow's row format.
    Rows(RowConverter),
}

/// Keys of a batch, ready for lookups.
enum BatchKeys {
    Int(Int64Array),
    Rows(arrow::row::Rows),
}

/// A key index: key -> slot, and the keys by slot for output.
#[derive(Default)]
struct KeyIndex {
    ints: HashMap<i64, u32, Mix>,
    int_keys: Vec<i64>,
    /// Key group of each integer key, computed once when the key arrives
    /// (if `max_parallelism` is set) so that a snapshot does not hash and
    /// divide for every key while the task is paused at a barrier.
    int_groups: Vec<u32>,
    max_parallelism: u32,
    rows: HashMap<Box<[u8]>, u32>,
    row_keys: Vec<Box<[u8]>>,
}

impl KeyIndex {
    /// An index that records the key groups of integer keys.
    fn with_groups(max_parallelism: u32) -> Self {
        Self { max_parallelism, ..Self::default() }
    }

    fn len(&self) -> usize {
        self.int_keys.len() + self.row_keys.len()
    }

    fn push_int(&mut self, k: i64) {
        self.int_keys.push(k);
        if self.max_parallelism > 0 {
            self.int_groups.push(key_group(hash_i64(k), self.max_parallelism));
        }
    }

    /// Slot of row `r`'s key, inserting it (and growing `accs`) if new.
    #[inline]
    fn slot(&mut self, keys: &BatchKeys, r: usize, accs: &mut Accumulators) -> u32 {
        match keys {
            BatchKeys::Int(a) => {
                let k = a.value(r);
                let next = self.int_keys.len() as u32;
                let slot = *self.ints.entry(k).or_insert(next);
                if slot == next {
                    self.push_int(k);
                    accs.grow();
                }
                slot
            }
            BatchKeys::Rows(rows) => {
                let k = rows.row(r);
                if let Some(&s) = self.rows.get(k.as_ref()) {
                    return s;
                }
                let s = self.row_keys.len() as u32;
                let owned: Box<[u8]> = k.as_ref().into();
                self.rows.insert(owned.clone(), s);
                self.row_keys.push(owned);
                accs.grow();
                s
            }
        }
    }
}

impl KeyCodec {
    fn extract(&self, batch: &RecordBatch, key: &[usize]) -> OpResult<BatchKeys> {
        Ok(match self {
            KeyCodec::Int(_) => {
                let col = batch.column(key[0]);
                let col = if col.data_type() == &DataType::Int64 { col.clone() } else { cast(col, &DataType::Int64)? };
                BatchKeys::Int(col.as_primitive::<Int64Type>().clone())
            }
            KeyCodec::Rows(conv) => {
                let cols: Vec<ArrayRef> = key.iter().map(|&i| batch.column(i).clone()).collect();
                BatchKeys::Rows(conv.convert_columns(&cols)?)
            }
        })
    }

    /// Key columns for the given slots of `index`.
    fn columns(&self, index: &KeyIndex, slots: &[u32]) -> OpResult<Vec<ArrayRef>> {
        Ok(match self {
            KeyCodec::Int(dt) => {
                let a: ArrayRef =
                    Arc::new(Int64Array::from_iter_values(slots.iter().map(|&s| index.int_keys[s as usize])));
                vec![if dt == &DataType::Int64 { a } else { cast(&a, dt)? }]
            }
            KeyCodec::Rows(conv) => {
                let parser = conv.parser();
                conv.convert_rows(slots.iter().map(|&s| parser.parse(&index.row_keys[s as usize])))?
            }
        })
    }
}

// ------------------------------------------------------------------ accumulators

/// One vector per aggregate, indexed by slot.
#[derive(Debug, Clone)]
enum AccColumn {
    Count(Vec<i64>),
    SumInt(Vec<i64>, Vec<bool>),
    SumFloat(Vec<f64>, Vec<bool>),
    MinInt(Vec<i64>, Vec<bool>),
    MaxInt(Vec<i64>, Vec<bool>),
    MinFloat(Vec<f64>, Vec<bool>),
    MaxFloat(Vec<f64>, Vec<bool>),
    Avg(Vec<f64>, Vec<i64>),
}

#[derive(Debug, Clone)]
struct Accumulators {
    cols: Vec<AccColumn>,
}

/// An aggregate's input for one batch.
enum AggInput {
    Rows,
    NonNull(Option<arrow::buffer::NullBuffer>),
    Int(Int64Array),
    Float(Float64Array),
}

impl Accumulators {
    fn new(aggs: &[AggPlan]) -> Self {
        let cols = aggs
            .iter()
            .map(|a| match (a.func, a.float) {
                (AggFn::Count, _) => AccColumn::Count(Vec::new()),
                (AggFn::Sum, false) => AccColumn::SumInt(Vec::new(), Vec::new()),
                (AggFn::Sum, true) => AccColumn::SumFloat(Vec::new(), Vec::new()),
                (AggFn::Min, false) => AccColumn::MinInt(Vec::new(), Vec::new()),
                (AggFn::Max, false) => AccColumn::MaxInt(Vec::new(), Vec::new()),
                (AggFn::Min, true) => AccColumn::MinFloat(Vec::new(), Vec::new()),
                (AggFn::Max, true) => AccColumn::MaxFloat(Vec::new(), Vec::new()),
                (AggFn::Avg, _) => AccColumn::Avg(Vec::new(), Vec::new()),
            })
            .collect();
        Self { cols }
    }

    fn grow(&mut self) {
        for c in &mut self.cols {
            match c {
                AccColumn::Count(v) => v.push(0),
                AccColumn::SumInt(v, s) | AccColumn::MinInt(v, s) | AccColumn::MaxInt(v, s) => {
                    v.push(0);
                    s.push(false)
                }
                AccColumn::SumFloat(v, s) | AccColumn::MinFloat(v, s) | AccColumn::MaxFloat(v, s) => {
                    v.push(0.0);
                    s.push(false)
                }
                AccColumn::Avg(v, n) => {
                    v.push(0.0);
                    n.push(0)
                }
            }
        }
    }

    /// Reads each aggregate's input column once per batch.
    fn inputs(aggs: &[AggPlan], batch: &RecordBatch) -> OpResult<Vec<AggInput>> {
        aggs.iter()
            .map(|a| {
                Ok(match (a.func, a.column) {
                    (_, None) => AggInput::Rows,
                    (AggFn::Count, Some(c)) => AggInput::NonNull(batch.column(c).logical_nulls()),
                    (AggFn::Avg, Some(c)) => AggInput::Float(
                        cast(batch.column(c), &DataType::Float64)?.as_primitive::<Float64Type>().clone(),
                    ),
                    (_, Some(c)) if a.float => AggInput::Float(
                        cast(batch.column(c), &DataType::Float64)?.as_primitive::<Float64Type>().clone(),
                    ),
                    (_, Some(c)) => {
                        AggInput::Int(cast(batch.column(c), &DataType::Int64)?.as_primitive::<Int64Type>().clone())
                    }
                })
            })
            .collect()
    }

    /// Adds rows `rows[i]` into slots `slots[i]`.
    fn update(&mut self, inputs: &[AggInput], rows: &[u32], slots: &[u32]) {
        for (col, input) in self.cols.iter_mut().zip(inputs) {
            let pairs = rows.iter().zip(slots).map(|(&r, &s)| (r as usize, s as usize));
            match (col, input) {
                (AccColumn::Count(v), AggInput::Rows) => {
                    for (_, s) in pairs {
                        v[s] += 1;
                    }
                }
                (AccColumn::Count(v), AggInput::NonNull(nulls)) => {
                    for (r, s) in pairs {
                        if nulls.as_ref().is_none_or(|n| n.is_valid(r)) {
                            v[s] += 1;
                        }
                    }
                }
                (AccColumn::SumInt(v, seen), AggInput::Int(a)) => {
                    let vals = a.values();
                    if a.null_count() == 0 {
                        for (r, s) in pairs {
                            v[s] = v[s].wrapping_add(vals[r]);
                            seen[s] = true;
                        }
                    } else {
                        for (r, s) in pairs.filter(|(r, _)| a.is_valid(*r)) {
                            v[s] = v[s].wrapping_add(vals[r]);
                            seen[s] = true;
                        }
                    }
                }
                (AccColumn::SumFloat(v, seen), AggInput::Float(a)) => {
                    for (r, s) in pairs.filter(|(r, _)| a.is_valid(*r)) {
                        v[s] += a.value(r);
                        seen[s] = true;
                    }
                }
                (AccColumn::MinInt(v, seen), AggInput::Int(a)) => {
                    for (r, s) in pairs.filter(|(r, _)| a.is_valid(*r)) {
                        let x = a.value(r);
                        v[s] = if seen[s] { v[s].min(x) } else { x };
                        seen[s] = true;
                    }
                }
                (AccColumn::MaxInt(v, seen), AggInput::Int(a)) => {
                    for (r, s) in pairs.filter(|(r, _)| a.is_valid(*r)) {
                        let x = a.value(r);
                        v[s] = if seen[s] { v[s].max(x) } else { x };
                        seen[s] = true;
                    }
                }
                (AccColumn::MinFloat(v, seen), AggInput::Float(a)) => {
                    for (r, s) in pairs.filter(|(r, _)| a.is_valid(*r)) {
                        let x = a.value(r);
                        v[s] = if seen[s] { v[s].min(x) } else { x };
                        seen[s] = true;
                    }
                }
                (AccColumn::MaxFloat(v, seen), AggInput::Float(a)) => {
                    for (r, s) in pairs.filter(|(r, _)| a.is_valid(*r)) {
                        let x = a.value(r);
                        v[s] = if seen[s] { v[s].max(x) } else { x };
                        seen[s] = true;
                    }
                }
                (AccColumn::Avg(sum, n), AggInput::Float(a)) => {
                    for (r, s) in pairs.filter(|(r, _)| a.is_valid(*r)) {
                        sum[s] += a.value(r);
                        n[s] += 1;
                    }
                }
                _ => unreachable!("accumulator and input kinds are planned together"),
            }
        }
    }

    /// Folds slot `src` into slot `dst` (merging session windows).
    fn merge(&mut self, dst: usize, src: usize) {
        fn opt<T: Copy>(v: &mut [T], seen: &mut [bool], dst: usize, src: usize, f: impl Fn(T, T) -> T) {
            if seen[src] {
                v[dst] = if seen[dst] { f(v[dst], v[src]) } else { v[src] };
                seen[dst] = true;
            }
        }
        for c in &mut self.cols {
            match c {
                AccColumn::Count(v) => v[dst] += v[src],
                AccColumn::SumInt(v, s) => opt(v, s, dst, src, i64::wrapping_add),
                AccColumn::SumFloat(v, s) => opt(v, s, dst, src, |a, b| a + b),
                AccColumn::MinInt(v, s) => opt(v, s, dst, src, i64::min),
                AccColumn::MaxInt(v, s) => opt(v, s, dst, src, i64::max),
                AccColumn::MinFloat(v, s) => opt(v, s, dst, src, f64::min),
                AccColumn::MaxFloat(v, s) => opt(v, s, dst, src, f64::max),
                AccColumn::Avg(sum, n) => {
                    sum[dst] += sum[src];
                    n[dst] += n[src];
                }
            }
        }
    }

    /// Resets slot `s` for reuse.
    fn reset(&mut self, s: usize) {
        for c in &mut self.cols {
            match c {
                AccColumn::Count(v) => v[s] = 0,
                AccColumn::SumInt(v, seen) | AccColumn::MinInt(v, seen) | AccColumn::MaxInt(v, seen) => {
                    v[s] = 0;
                    seen[s] = false
                }
                AccColumn::SumFloat(v, seen) | AccColumn::MinFloat(v, seen) | AccColumn::MaxFloat(v, seen) => {
                    v[s] = 0.0;
                    seen[s] = false
                }
                AccColumn::Avg(v, n) => {
                    v[s] = 0.0;
                    n[s] = 0
                }
            }
        }
    }

    /// Output columns for `slots`.
    fn columns(&self, slots: &[u32]) -> Vec<ArrayRef> {
        let pick_i = |v: &[i64], seen: Option<&[bool]>| -> ArrayRef {
            Arc::new(
                slots
                    .iter()
                    .map(|&s| seen.is_none_or(|seen| seen[s as usize]).then_some(v[s as usize]))
                    .collect::<Int64Array>(),
            )
        };
        let pick_f = |v: &[f64], seen: &[bool]| -> ArrayRef {
            Arc::new(slots.iter().map(|&s| seen[s as usize].then_some(v[s as usize])).collect::<Float64Array>())
        };
        self.cols
            .iter()
            .map(|c| match c {
                AccColumn::Count(v) => {
                    Arc::new(Int64Array::from_iter_values(slots.iter().map(|&s| v[s as usize]))) as ArrayRef
                }
                AccColumn::SumInt(v, s) | AccColumn::MinInt(v, s) | AccColumn::MaxInt(v, s) => pick_i(v, Some(s)),
                AccColumn::SumFloat(v, s) | AccColumn::MinFloat(v, s) | AccColumn::MaxFloat(v, s) => pick_f(v, s),
                AccColumn::Avg(sum, n) => Arc::new(
                    slots
                        .iter()
                        .map(|&s| (n[s as usize] > 0).then(|| sum[s as usize] / n[s as usize] as f64))
                        .collect::<Float64Array>(),
                ),
            })
            .collect()
    }
}

// ------------------------------------------------------------------ windows

/// Keys and accumulators of one fixed (tumbling or sliding) window.
struct FixedWindow {
    index: KeyIndex,
    accs: Accumulators,
}

/// A session: `[start, end)` where `end` is the last event time plus the gap.
#[derive(Debug, Clone, Copy)]
struct Session {
    start: i64,
    end: i64,
    slot: u32,
}

/// Session windows: per key, its open sessions; accumulators by slot.
#[derive(Default)]
struct Sessions {
    index: KeyIndex,
    /// By key slot, sessions sorted by start, disjoint.
    open: Vec<Vec<Session>>,
    accs: Option<Accumulators>,
    /// Accumulator slots of sessions (separate from key slots).
    free: Vec<u32>,
    used: u32,
    /// Smallest end over open sessions (nothing fires before it).
    min_end: i64,
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
    /// Persisted windows that fired since the last snapshot.
    fired: Vec<(i64, Vec<u32>)>,
}

impl WindowOperator {
    fn size_slide(&self) -> (i64, i64) {
        match self.p.window {
            WindowSpec::Tumbling { size } => (millis(size), millis(size)),
            WindowSpec::Sliding { size, slide } => (millis(size), millis(slide)),
            WindowSpec::Session { gap } => (millis(gap), 0),
        }
    }

    fn absorb_fixed(&mut self, batch: &RecordBatch, times: &Int64Array) -> OpResult<()> {
        let (size, slide) = self.size_slide();
        let keys = self.keys.extract(batch, &self.p.key)?;
        let inputs = Accumulators::inputs(&self.p.aggs, batch)?;
        let t = times.values();
        let per_record = size / slide + i64::from(size % slide != 0);
        let mut rows: Vec<u32> = Vec::new();
        for k in 0..per_record {
            // Window k of each row: the k-th most recent start at or before t.
            let start_of = |ts: i64| ts - ts.rem_euclid(slide) - k * slide;
            let mut r = 0usize;
            while r < t.len() {
                let start = start_of(t[r]);
                let mut end_run = r + 1;
                while end_run < t.len() && start_of(t[end_run]) == start {
                    end_run += 1;
                }
                let run = r..end_run;
                r = end_run;
                if t[run.start] >= start + size {
                    continue; // with size % slide != 0 the oldest candidate may not cover t
                }
                if start + size - 1 <= self.watermark {
                    self.late += run.len() as u64;
                    continue;
                }
                let (aggs, groups) = (&self.p.aggs, self.max_parallelism);
                self.dirty.insert(start);
                let w = self.windows.entry(start).or_insert_with(|| FixedWindow {
                    index: KeyIndex::with_groups(groups),
                    accs: Accumulators::new(aggs),
                });
                rows.clear();
                rows.extend(run.clone().map(|i| i as u32));
                self.slots.clear();
                for &row in &rows {
                    let s = w.index.slot(&keys, row as usize, &mut w.accs);
                    self.slots.push(s);
                }
                w.accs.update(&inputs, &rows, &self.slots);
            }
        }
        Ok(())
    }

    fn absorb_sessions(&mut self, batch: &RecordBatch, times: &Int64Array) -> OpResult<()> {
        let (gap, _) = self.size_slide();
        let keys = self.keys.extract(batch, &self.p.key)?;
        let inputs = Accumulators::inputs(&self.p.aggs, batch)?;
        let s = &mut self.sessions;
        let accs = s.accs.get_or_insert_with(|| Accumulators::new(&self.p.aggs));
        // Key slots index `open`; the accumulators grown by the index are unused
        // (session accumulators are allocated per session below).
        let mut key_accs = Accumulators { cols: Vec::new() };
        for r in 0..batch.num_rows() {
            let t = times.value(r);
            let key = s.index.slot(&keys, r, &mut key_accs) as usize;
            if key == s.open.len() {
                s.open.push(Vec::new());
            }
            let (start, end) = (t, t + gap);
            let list = &mut s.open[key];
            // Sessions overlapping [start, end) merge with the new event.
            let first = list.partition_point(|x| x.end < start);
            let mut last = first;
            while last < list.len() && list[last].start <= end {
                last += 1;
            }
            let slot = if first == last {
                // Open sessions have not fired, so only a record that starts a
                // session of its own can be late.
                if end - 1 <= self.watermark {
                    self.late += 1;
                    continue;
                }
                let slot = match s.free.pop() {
                    Some(f) => {
                        accs.reset(f as usize);
                        f
                    }
                    None => {
                        accs.grow();
                        s.used += 1;
                        s.used - 1
                    }
                };
                list.insert(first, Session { start, end, slot });
                slot
            } else {
                let mut merged = list[first];
                for other in list.drain(first + 1..last).collect::<Vec<_>>() {
                    accs.merge(merged.slot as usize, other.slot as usize);
                    s.free.push(other.slot);
                    merged.start = merged.start.min(other.start);
                    merged.end = merged.end.max(other.end);
                }
                merged.start = merged.start.min(start);
                merged.end = merged.end.max(end);
                list[first] = merged;
                merged.slot
            };
            accs.update(&inputs, &[r as u32], &[slot]);
            s.min_end = s.min_end.min(end);
        }
        Ok(())
    }

    /// Emits every window whose end is at or before `watermark + 1`.
    fn fire(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        match self.p.window {
            WindowSpec::Session { .. } => self.fire_sessions(watermark, out),
            _ => {
                let (size, _) = self.size_slide();
                while let Some(entry) = self.windows.first_entry() {
                    let start = *entry.key();
                    if start.saturating_add(size - 1) > watermark {
                        break;
                    }
                    let w = entry.remove();
                    self.dirty.remove(&start);
                    if let Some(kgs) = self.persisted.remove(&start) {
                        self.fired.push((start, kgs));
                    }
                    let n = w.index.len();
                    let slots: Vec<u32> = (0..n as u32).collect();
                    let mut cols = self.keys.columns(&w.index, &slots)?;
                    cols.push(Arc::new(Int64Array::from_value(start, n)));
                    cols.push(Arc::new(Int64Array::from_value(start + size, n)));
                    cols.extend(w.accs.columns(&slots));
                    out.emit(RecordBatch::try_new(self.p.schema.clone(), cols)?);
                }
                Ok(())
            }
        }
    }

    fn fire_sessions(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        let s = &mut self.sessions;
        if s.open.is_empty() || s.min_end.saturating_sub(1) > watermark {
            return Ok(());
        }
        let Some(accs) = s.accs.as_mut() else { return Ok(()) };
        let (mut key_slots, mut acc_slots, mut starts, mut ends) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut min_end = i64::MAX;
        for (key, list) in s.open.iter_mut().enumerate() {
            list.retain(|x| {
                if x.end - 1 <= watermark {
                    key_slots.push(key as u32);
                    acc_slots.push(x.slot);
                    starts.push(x.start);
                    ends.push(x.end);
                    false
                } else {
                    min_end = min_end.min(x.end);
                    true
                }
            });
        }
        s.min_end = min_end;
        if key_slots.is_empty() {
            return Ok(());
        }
        let mut cols = self.keys.columns(&s.index, &key_slots)?;
        cols.push(Arc::new(Int64Array::from(starts)));
        cols.push(Arc::new(Int64Array::from(ends)));
        cols.extend(accs.columns(&acc_slots));
        s.free.extend_from_slice(&acc_slots);
        out.emit(RecordBatch::try_new(self.p.schema.clone(), cols)?);
        Ok(())
    }
}

// ------------------------------------------------------------------ checkpoints
//
// Window state is written per (window, key group): one entry holds every key
// of that key group in that window with its accumulators, so a snapshot has
// a few thousand entries rather than one per key, and a restore at another
// parallelism still picks exactly the key groups it owns. Incremental
// snapshots rewrite only windows that absorbed records and delete the
// entries of windows that fired.
//
// A fixed window's entry is columnar: a marker (`u32::MAX`, which the
// original row-by-row layout can never start with: it would be the length of
// a 4 GiB key) and a format byte, the number of keys, the keys, then one
// column per aggregate. Integers are zigzag LEB128 varints and optional
// values carry a presence bitmap, so a typical key with a count and a sum
// takes 6 to 8 bytes instead of 29. Restore reads both layouts.

const FIXED_STATE: &str = "windows";
const SESSION_STATE: &str = "sessions";

/// Start of a columnar fixed-window entry.
const COLUMNAR: [u8; 5] = [0xff, 0xff, 0xff, 0xff, 2];

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> OpResult<&'a [u8]> {
        if self.0.len() < n {
            return Err(OperatorError::State("window state is truncated".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn i64(&mut self) -> OpResult<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn f64(&mut self) -> OpResult<f64> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn flag(&mut self) -> OpResult<bool> {
        Ok(self.take(1)?[0] != 0)
    }
    fn key(&mut self) -> OpResult<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        self.take(n)
    }
    fn uvarint(&mut self) -> OpResult<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(OperatorError::State("window state holds a malformed number".into()))
    }
    fn ivarint(&mut self) -> OpResult<i64> {
        let u = self.uvarint()?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }
    fn bitmap(&mut self, n: usize) -> OpResult<Vec<bool>> {
        let bytes = self.take(n.div_ceil(8))?;
        Ok((0..n).map(|i| bytes[i / 8] >> (i % 8) & 1 == 1).collect())
    }
}

impl KeyIndex {
    fn raw_key(&self, slot: u32) -> Vec<u8> {
        if self.row_keys.is_empty() {
            self.int_keys[slot as usize].to_le_bytes().to_vec()
        } else {
            self.row_keys[slot as usize].to_vec()
        }
    }

    /// Inserts a key in its snapshot form; returns its slot.
    fn insert_raw(&mut self, codec: &KeyCodec, raw: &[u8], accs: &mut Accumulators) -> OpResult<u32> {
        let slot = self.len() as u32;
        match codec {
            KeyCodec::Int(_) => {
                let k = i64::from_le_bytes(
                    raw.try_into().map_err(|_| OperatorError::State("an integer window key is not 8 bytes".into()))?,
                );
                if let Some(&s) = self.ints.get(&k) {
                    return Ok(s);
                }
                self.ints.insert(k, slot);
                self.push_int(k);
            }
            KeyCodec::Rows(_) => {
                if let Some(&s) = self.rows.get(raw) {
                    return Ok(s);
                }
                self.rows.insert(raw.into(), slot);
                self.row_keys.push(raw.into());
            }
        }
        accs.grow();
        Ok(slot)
    }
}

impl Accumulators {
    /// Typical bytes per slot of [`Accumulators::scatter_columns`] (a capacity hint).
    fn width_hint(&self) -> usize {
        self.cols.iter().map(|c| if matches!(c, AccColumn::Count(_)) { 2 } else { 5 }).sum()
    }

    /// Reads what [`Accumulators::scatter_columns`] wrote for `slots`.
    fn decode_columns(&mut self, slots: &[u32], c: &mut Cursor<'_>) -> OpResult<()> {
        for col in &mut self.cols {
            match col {
                AccColumn::Count(v) => {
                    for &s in slots {
                        v[s as usize] = c.ivarint()?;
                    }
                }
                AccColumn::SumInt(v, seen) | AccColumn::MinInt(v, seen) | AccColumn::MaxInt(v, seen) => {
                    let present = c.bitmap(slots.len())?;
                    for (&s, p) in slots.iter().zip(present) {
                        seen[s as usize] = p;
                        v[s as usize] = if p { c.ivarint()? } else { 0 };
                    }
                }
                AccColumn::SumFloat(v, seen) | AccColumn::MinFloat(v, seen) | AccColumn::MaxFloat(v, seen) => {
                    let present = c.bitmap(slots.len())?;
                    for (&s, p) in slots.iter().zip(present) {
                        seen[s as usize] = p;
                        v[s as usize] = if p { c.f64()? } else { 0.0 };
                    }
                }
                AccColumn::Avg(sum, n) => {
                    for &s in slots {
                        sum[s as usize] = c.f64()?;
                    }
                    for &s in slots {
                        n[s as usize] = c.ivarint()?;
                    }
                }
            }
        }
        Ok(())
    }

    fn encode(&self, s: usize, out: &mut Vec<u8>) {
        for c in &self.cols {
            match c {
                AccColumn::Count(v) => out.extend_from_slice(&v[s].to_le_bytes()),
                AccColumn::SumInt(v, seen) | AccColumn::MinInt(v, seen) | AccColumn::MaxInt(v, seen) => {
                    out.extend_from_slice(&v[s].to_le_bytes());
                    out.push(seen[s] as u8);
                }
                AccColumn::SumFloat(v, seen) | AccColumn::MinFloat(v, seen) | AccColumn::MaxFloat(v, seen) => {
                    out.extend_from_slice(&v[s].to_le_bytes());
                    out.push(seen[s] as u8);
                }
                AccColumn::Avg(sum, n) => {
                    out.extend_from_slice(&sum[s].to_le_bytes());
                    out.extend_from_slice(&n[s].to_le_bytes());
                }
            }
        }
    }

    fn decode(&mut self, s: usize, c: &mut Cursor<'_>) -> OpResult<()> {
        for col in &mut self.cols {
            match col {
                AccColumn::Count(v) => v[s] = c.i64()?,
                AccColumn::SumInt(v, seen) | AccColumn::MinInt(v, seen) | AccColumn::MaxInt(v, seen) => {
                    v[s] = c.i64()?;
                    seen[s] = c.flag()?;
                }
                AccColumn::SumFloat(v, seen) | AccColumn::MinFloat(v, seen) | AccColumn::MaxFloat(v, seen) => {
                    v[s] = c.f64()?;
                    seen[s] = c.flag()?;
                }
                AccColumn::Avg(sum, n) => {
                    sum[s] = c.f64()?;
                    n[s] = c.i64()?;
                }
            }
        }
        Ok(())
    }
}

/// Encodes every slot of a window (its key and accumulators) into one value
/// per key group, in key-group order, in the columnar layout: the slot
/// count, the keys, then one column per aggregate, each group's slots in
/// slot order. This runs while the task is paused at a barrier, so it is
/// one sequential pass per column: every slot's key and accumulators are
/// appended to its group's buffer, so the large per-slot vectors are read
/// in order and only the tails of the groups' buffers (a few dozen cache
/// lines) are written at random.
///
/// The groups' buffers are `scratch`, reused from window to window, so
/// those scattered writes land in cache; each group's bytes are then copied
/// out in one sequential run. (Scattering straight into freshly allocated
/// buffers missed the cache on nearly every new line and took about twice
/// as long.)
fn encode_by_group(
    index: &KeyIndex,
    accs: &Accumulators,
    kgs: &[u32],
    max_parallelism: u32,
    scratch: &mut Vec<Vec<u8>>,
) -> Vec<(u32, Vec<u8>)> {
    let groups = max_parallelism as usize;
    let mut counts = vec![0u32; groups];
    let mut key_bytes = vec![0usize; groups];
    if index.row_keys.is_empty() {
        for &kg in kgs {
            counts[kg as usize] += 1;
        }
        for (b, &n) in key_bytes.iter_mut().zip(&counts) {
            *b = n as usize * 3;
        }
    } else {
        for (key, &kg) in index.row_keys.iter().zip(kgs) {
            counts[kg as usize] += 1;
            key_bytes[kg as usize] += key.len() + 2;
        }
    }
    let width = accs.width_hint();
    scratch.resize_with(groups, Vec::new);
    let bufs = &mut scratch[..groups];
    for ((buf, &n), &keys) in bufs.iter_mut().zip(&counts).zip(&key_bytes) {
        buf.clear();
        if n > 0 {
            buf.reserve(COLUMNAR.len() + 5 + keys + n as usize * width);
            buf.extend_from_slice(&COLUMNAR);
            put_uvarint(buf, u64::from(n));
        }
    }
    if index.row_keys.is_empty() {
        for (&k, &kg) in index.int_keys.iter().zip(kgs) {
            put_ivarint(&mut bufs[kg as usize], k);
        }
    } else {
        for (key, &kg) in index.row_keys.iter().zip(kgs) {
            let buf = &mut bufs[kg as usize];
            put_uvarint(buf, key.len() as u64);
            buf.extend_from_slice(key);
        }
    }
    accs.scatter_columns(kgs, &counts, bufs);
    bufs.iter().enumerate().filter(|(_, b)| !b.is_empty()).map(|(g, b)| (g as u32, b.clone())).collect()
}

impl Accumulators {
    /// Appends every slot's accumulators to its group's buffer, one column
    /// after the other: counts and integers as zig-zag varints, floats as
    /// 8 little-endian bytes, and for aggregates that may have seen no value
    /// a presence bitmap first (then only the present values).
    fn scatter_columns(&self, kgs: &[u32], counts: &[u32], bufs: &mut [Vec<u8>]) {
        for c in &self.cols {
            match c {
                AccColumn::Count(v) => {
                    for (&x, &kg) in v.iter().zip(kgs) {
                        put_ivarint(&mut bufs[kg as usize], x);
                    }
                }
                AccColumn::SumInt(v, seen) | AccColumn::MinInt(v, seen) | AccColumn::MaxInt(v, seen) => {
                    scatter_bitmap(kgs, counts, seen, bufs);
                    for ((&x, &p), &kg) in v.iter().zip(seen).zip(kgs) {
                        if p {
                            put_ivarint(&mut bufs[kg as usize], x);
                        }
                    }
                }
                AccColumn::SumFloat(v, seen) | AccColumn::MinFloat(v, seen) | AccColumn::MaxFloat(v, seen) => {
                    scatter_bitmap(kgs, counts, seen, bufs);
                    for ((&x, &p), &kg) in v.iter().zip(seen).zip(kgs) {
                        if p {
                            bufs[kg as usize].extend_from_slice(&x.to_le_bytes());
                        }
                    }
                }
                AccColumn::Avg(sum, n) => {
                    for (&x, &kg) in sum.iter().zip(kgs) {
                        bufs[kg as usize].extend_from_slice(&x.to_le_bytes());
                    }
                    for (&x, &kg) in n.iter().zip(kgs) {
                        put_ivarint(&mut bufs[kg as usize], x);
                    }
                }
            }
        }
    }
}

/// Each group's presence bits of `seen`, eight per byte, lowest bit first,
/// reserved at the end of its buffer and filled in slot order.
fn scatter_bitmap(kgs: &[u32], counts: &[u32], seen: &[bool], bufs: &mut [Vec<u8>]) {
    let mut at = vec![0usize; bufs.len()];
    for ((buf, &n), at) in bufs.iter_mut().zip(counts).zip(&mut at) {
        *at = buf.len() * 8;
        buf.resize(buf.len() + (n as usize).div_ceil(8), 0);
    }
    for (&p, &kg) in seen.iter().zip(kgs) {
        let g = kg as usize;
        let bit = at[g];
        bufs[g][bit / 8] |= u8::from(p) << (bit % 8);
        at[g] += 1;
    }
}

impl WindowOperator {
    /// Key group of every slot of `index`.
    fn key_groups<'a>(&self, index: &'a KeyIndex) -> OpResult<Cow<'a, [u32]>> {
        if let KeyCodec::Int(_) = self.keys {
            if index.max_parallelism == self.max_parallelism && index.int_groups.len() == index.int_keys.len() {
                return Ok(Cow::Borrowed(&index.int_groups));
            }
            // Every integer type hashes as its value widened to i64, which
            // is what the index holds: no key column to rebuild.
            return Ok(index.int_keys.iter().map(|&k| key_group(hash_i64(k), self.max_parallelism)).collect());
        }
        let slots: Vec<u32> = (0..index.len() as u32).collect();
        let cols = self.keys.columns(index, &slots)?;
        let mut hashes = Vec::new();
        hash_rows(&cols, &mut hashes)?;
        Ok(hashes.into_iter().map(|h| key_group(h, self.max_parallelism)).collect())
    }

    fn snapshot_fixed(&mut self, w: &mut StateWriter) -> OpResult<()> {
        if !w.full() {
            // Fixed windows fire in the order of their starts, and none with
            // an earlier start can open again (its records would be late),
            // so the persisted windows that fired are, per key group, a
            // prefix of the non-negative starts in key order (big-endian):
            // one range deletion per key group instead of one per window.
            // (Negative starts sort after the others and go one by one.)
            let mut below: BTreeMap<u32, i64> = BTreeMap::new();
            for (start, kgs) in self.fired.drain(..) {
                for kg in kgs {
                    if start >= 0 {
                        let end = below.entry(kg).or_insert(start);
                        *end = (*end).max(start);
                    } else {
                        w.delete(FIXED_STATE, kg, start.to_be_bytes().to_vec());
                    }
                }
            }
            for (kg, last) in below {
                w.delete_range(FIXED_STATE, kg, 0i64.to_be_bytes().to_vec(), (last + 1).to_be_bytes().to_vec());
            }
        }
        self.fired.clear();
        let starts: Vec<i64> =
            if w.full() { self.windows.keys().copied().collect() } else { self.dirty.iter().copied().collect() };
        let mut scratch = Vec::new();
        for start in starts {
            let Some(win) = self.windows.get(&start) else { continue };
            let kgs = self.key_groups(&win.index)?;
            let groups = encode_by_group(&win.index, &win.accs, &kgs, self.max_parallelism, &mut scratch);
            let written: Vec<u32> = groups.iter().map(|(kg, _)| *kg).collect();
            for (kg, value) in groups {
                w.put(FIXED_STATE, kg, start.to_be_bytes().to_vec(), value);
            }
            self.persisted.insert(start, written);
        }
        self.dirty.clear();
        Ok(())
    }

    /// Sessions are written per key group (every key with its open sessions).
    fn snapshot_sessions(&mut self, w: &mut StateWriter) -> OpResult<()> {
        let s = &self.sessions;
        let mut by_group: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        if let Some(accs) = &s.accs {
            let kgs = self.key_groups(&s.index)?;
            for (key, list) in s.open.iter().enumerate() {
                if list.is_empty() {
                    continue;
                }
                let buf = by_group.entry(kgs[key]).or_default();
                let raw = s.index.raw_key(key as u32);
                buf.extend_from_slice(&(raw.len() as u32).to_le_bytes());
                buf.extend_from_slice(&raw);
                buf.extend_from_slice(&(list.len() as i64).to_le_bytes());
                for x in list {
                    buf.extend_from_slice(&x.start.to_le_bytes());
                    buf.extend_from_slice(&x.end.to_le_bytes());
                    accs.encode(x.slot as usize, buf);
                }
            }
        }
        // Sessions change with every record: each snapshot rewrites them all,
        // deleting key groups that no longer hold any.
        let now: std::collections::BTreeSet<u32> = by_group.keys().copied().collect();
        for kg in self.sessions_persisted.difference(&now) {
            w.delete(SESSION_STATE, *kg, Vec::new());
        }
        for (kg, value) in by_group {
            w.put(SESSION_STATE, kg, Vec::new(), value);
        }
        self.sessions_persisted = now;
        Ok(())
    }

    fn restore_sessions(&mut self, value: &[u8]) -> OpResult<()> {
        let s = &mut self.sessions;
        let accs = s.accs.get_or_insert_with(|| Accumulators::new(&self.p.aggs));
        let mut key_accs = Accumulators { cols: Vec::new() };
        let mut c = Cursor(value);
        while !c.0.is_empty() {
            let key = s.index.insert_raw(&self.keys, c.key()?, &mut key_accs)? as usize;
            while s.open.len() <= key {
                s.open.push(Vec::new());
            }
            let n = c.i64()?;
            for _ in 0..n {
                let (start, end) = (c.i64()?, c.i64()?);
                accs.grow();
                let slot = s.used;
                s.used += 1;
                accs.decode(slot as usize, &mut c)?;
                let list = &mut s.open[key];
                let at = list.partition_point(|x| x.start < start);
                list.insert(at, Session { start, end, slot });
                s.min_end = s.min_end.min(end);
            }
        }
        Ok(())
    }
}

impl Operator for WindowOperator {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, _out: &mut Collector) -> OpResult<()> {
        let times = event_times(&batch, self.p.time)?;
        match self.p.window {
            WindowSpec::Session { .. } => self.absorb_sessions(&batch, &times),
            _ => self.absorb_fixed(&batch, &times),
        }
    }

    fn process_watermark(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        self.fire(watermark, out)?;
        out.emit_watermark(watermark);
        Ok(())
    }

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        match self.p.window {
            WindowSpec::Session { .. } => self.snapshot_sessions(w),
            _ => self.snapshot_fixed(w),
        }
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        for e in r.state(FIXED_STATE) {
            let start = i64::from_be_bytes(
                e.key.as_slice().try_into().map_err(|_| OperatorError::State("a window key is not 8 bytes".into()))?,
            );
            let (aggs, groups) = (&self.p.aggs, self.max_parallelism);
            let w = self
                .windows
                .entry(start)
                .or_insert_with(|| FixedWindow { index: KeyIndex::with_groups(groups), accs: Accumulators::new(aggs) });
            let value = e.value.as_deref().unwrap_or_default();
            if let Some(rest) = value.strip_prefix(&COLUMNAR[..]) {
                let mut c = Cursor(rest);
                let n = c.uvarint()? as usize;
                let mut slots = Vec::with_capacity(n.min(rest.len()));
                for _ in 0..n {
                    let slot = if self.p.int_key {
                        w.index.insert_raw(&self.keys, &c.ivarint()?.to_le_bytes(), &mut w.accs)?
                    } else {
                        let len = c.uvarint()? as usize;
                        w.index.insert_raw(&self.keys, c.take(len)?, &mut w.accs)?
                    };
                    slots.push(slot);
                }
                w.accs.decode_columns(&slots, &mut c)?;
                if !c.0.is_empty() {
                    return Err(OperatorError::State(format!("{} bytes after the window state of {start}", c.0.len())));
                }
            } else {
                let mut c = Cursor(value);
                while !c.0.is_empty() {
                    let slot = w.index.insert_raw(&self.keys, c.key()?, &mut w.accs)?;
                    w.accs.decode(slot as usize, &mut c)?;
                }
            }
            self.persisted.entry(start).or_default().push(e.key_group);
        }
        for e in r.state(SESSION_STATE) {
            self.restore_sessions(e.value.as_deref().unwrap_or_default())?;
            self.sessions_persisted.insert(e.key_group);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Collector) -> OpResult<()> {
        self.fire(i64::MAX, out)?;
        if self.late > 0 {
            tracing::info!(late_records = self.late, "window dropped late records");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::StreamElement;
    use crate::graph::{EdgeSpec, Partitioning};
    use arrow::array::StringArray;

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("t", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    fn window(config: serde_json::Value) -> Box<dyn Operator> {
        let schema = input_schema();
        let key: Vec<String> =
            config["key"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect();
        let edge =
            EdgeSpec { from: "src".into(), to: "w".into(), partitioning: Partitioning::Hash, key, input: 0, line: 0 };
        let ctx = PlanContext {
            uid: "w",
            line: 0,
            config: &config,
            inputs: &[schema],
            input_edges: &[&edge],
            parallelism: 2,
            checkpoint: None,
        };
        match WindowFactory.create(&ctx, SubtaskInfo { index: 0, parallelism: 2, max_parallelism: 128 }).unwrap() {
            Instance::Operator(o) => o,
            Instance::Source(_) => unreachable!(),
        }
    }

    fn batch(rows: &[(i64, &str, i64, Option<i64>)]) -> RecordBatch {
        RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    /// Output rows as strings, sorted.
    fn rows(out: &mut Collector) -> Vec<String> {
        let mut v = Vec::new();
        for e in out.drain() {
            if let StreamElement::Batch(b) = e {
                for r in 0..b.num_rows() {
                    let cells: Vec<String> = b
                        .columns()
                        .iter()
                        .map(|c| arrow::util::display::array_value_to_string(c, r).unwrap())
                        .collect();
                    v.push(cells.join(","));
                }
            }
        }
        v.sort();
        v
    }

    fn aggs() -> serde_json::Value {
        serde_json::json!([
            {"fn": "count", "as": "n"}, {"fn": "sum", "column": "v", "as": "sum"},
            {"fn": "min", "column": "v", "as": "lo"}, {"fn": "max", "column": "v", "as": "hi"},
            {"fn": "avg", "column": "v", "as": "avg"}, {"fn": "count", "column": "v", "as": "nv"}
        ])
    }

    #[test]
    fn tumbling_fires_on_watermark_and_aggregates_every_function() {
        let mut w = window(serde_json::json!({
            "key": ["k"], "timestamp_column": "t", "window": {"type": "tumbling", "size": "10ms"}, "aggregates": aggs()
        }));
        let mut out = Collector::default();
        w.process_batch(
            0,
            batch(&[(1, "a", 0, Some(5)), (1, "a", 9, Some(1)), (2, "b", 3, None), (1, "a", 10, Some(7))]),
            &mut out,
        )
        .unwrap();
        assert!(rows(&mut out).is_empty());
        w.process_watermark(8, &mut out).unwrap();
        assert!(rows(&mut out).is_empty(), "window [0,10) must wait for watermark 9");
        w.process_watermark(9, &mut out).unwrap();
        assert_eq!(rows(&mut out), ["1,0,10,2,6,1,5,3.0,2", "2,0,10,1,,,,,0"]);
        // A record for the fired window is late and dropped.
        w.process_batch(0, batch(&[(1, "a", 5, Some(100))]), &mut out).unwrap();
        w.finish(&mut out).unwrap();
        assert_eq!(rows(&mut out), ["1,10,20,1,7,7,7,7.0,1"]);
    }

    #[test]
    fn sliding_windows_cover_each_record_size_over_slide_times() {
        let mut w = window(serde_json::json!({
            "key": ["name"], "timestamp_column": "t",
            "window": {"type": "sliding", "size": "10ms", "slide": "5ms"},
            "aggregates": [{"fn": "count", "as": "n"}]
        }));
        let mut out = Collector::default();
        w.process_batch(0, batch(&[(0, "x", 7, None), (0, "x", 12, None)]), &mut out).unwrap();
        w.finish(&mut out).unwrap();
        assert_eq!(rows(&mut out), ["x,0,10,1", "x,10,20,1", "x,5,15,2"]);
    }

    #[test]
    fn sessions_merge_when_a_record_bridges_the_gap() {
        let mut w = window(serde_json::json!({
            "key": ["k"], "timestamp_column": "t", "window": {"type": "session", "gap": "10ms"},
            "aggregates": [{"fn": "count", "as": "n"}, {"fn": "sum", "column": "v", "as": "s"}]
        }));
        let mut out = Collector::default();
        w.process_batch(0, batch(&[(1, "", 0, Some(1)), (1, "", 25, Some(2)), (2, "", 3, Some(10))]), &mut out)
            .unwrap();
        // 14 opens [14,24); 8 then bridges [0,10) and [14,24) into [0,24).
        w.process_batch(0, batch(&[(1, "", 14, Some(3)), (1, "", 8, Some(4))]), &mut out).unwrap();
        w.process_watermark(30, &mut out).unwrap();
        assert_eq!(rows(&mut out), ["1,0,24,3,8", "2,3,13,1,10"]);
        w.process_batch(0, batch(&[(1, "", 20, Some(5))]), &mut out).unwrap();
        w.finish(&mut out).unwrap();
        // On its own [20,30) would be late, but it merges into the open [25,35).
        assert_eq!(rows(&mut out), ["1,20,35,2,7"]);
    }

    #[test]
    fn snapshots_split_by_key_group_restore_every_window() {
        use crate::keygroup::{hash_rows, key_group, key_group_range};
        use crate::state::{StateReader, StateWriter};
        for key in ["k", "name"] {
            let cfg = serde_json::json!({
                "key": [key], "timestamp_column": "t", "window": {"type": "tumbling", "size": "10ms"}, "aggregates": aggs()
            });
            let names: Vec<String> = (0..41).map(|i| format!("n{i}")).collect();
            let input: Vec<(i64, &str, i64, Option<i64>)> = (0..2000i64)
                .map(|i| (i % 37, names[(i % 41) as usize].as_str(), i % 30, (i % 3 != 0).then_some(i)))
                .collect();
            let mut original = window(cfg.clone());
            let mut out = Collector::default();
            original.process_batch(0, batch(&input), &mut out).unwrap();
            let mut w = StateWriter::new("w", 1, true);
            original.snapshot_state(&mut w).unwrap();
            let entries = w.into_entries();
            assert!(entries.iter().all(|e| e.key_group < 128 && e.state == FIXED_STATE));
            original.finish(&mut out).unwrap();
            let want = rows(&mut out);
            assert_eq!(want.len(), 3 * if key == "k" { 37 } else { 41 });
            // Two subtasks restore their key groups; together they give the
            // same output, and every key they emit is in their range.
            let mut got = Vec::new();
            for subtask in 0..2 {
                let range = key_group_range(128, 2, subtask);
                let mine: Vec<_> = entries.iter().filter(|e| range.contains(&e.key_group)).cloned().collect();
                let mut restored = window(cfg.clone());
                restored.restore_state(&StateReader::new("w", &mine)).unwrap();
                let mut out = Collector::default();
                restored.finish(&mut out).unwrap();
                let elements: Vec<_> = out.drain().collect();
                for e in elements {
                    let StreamElement::Batch(b) = e else { continue };
                    let mut hashes = Vec::new();
                    hash_rows(&[b.column(0).clone()], &mut hashes).unwrap();
                    assert!(
                        hashes.iter().all(|&h| range.contains(&key_group(h, 128))),
                        "{key}: a key outside its group"
                    );
                    out.emit(b);
                }
                got.extend(rows(&mut out));
            }
            got.sort();
            assert_eq!(got, want, "{key}");
        }
    }

    /// The columnar layout is what checkpoints hold: it must not drift.
    #[test]
    fn columnar_entries_keep_their_layout() {
        use crate::keygroup::{hash_i64, key_group};
        use crate::state::StateWriter;
        let cfg = serde_json::json!({
            "key": ["k"], "timestamp_column": "t", "window": {"type": "tumbling", "size": "10ms"},
            "aggregates": [{"fn": "count", "as": "n"}, {"fn": "sum", "column": "v", "as": "s"},
                           {"fn": "max", "column": "v", "as": "m"}]
        });
        // Two keys of one key group (the second seen only with nulls), one of another.
        let kg = |k: i64| key_group(hash_i64(k), 128);
        let mate = (6..).find(|&k| kg(k) == kg(5)).unwrap();
        let other = (6..).find(|&k| kg(k) != kg(5)).unwrap();
        let mut w = window(cfg);
        let input = [(5, "a", 1, Some(3)), (mate, "b", 2, None), (other, "c", 3, Some(-2)), (5, "a", 4, Some(70))];
        w.process_batch(0, batch(&input), &mut Collector::default()).unwrap();
        let mut sw = StateWriter::new("w", 1, true);
        w.snapshot_state(&mut sw).unwrap();
        let entries = sw.into_entries();
        // Zig-zag varints, written out here so that the encoder cannot drift with them.
        let zz = |v: i64| {
            let mut u = ((v << 1) ^ (v >> 63)) as u64;
            let mut out = Vec::new();
            while u >= 0x80 {
                out.push(u as u8 | 0x80);
                u >>= 7;
            }
            out.push(u as u8);
            out
        };
        let mut both = COLUMNAR.to_vec();
        both.push(2); // slots
        for v in [5, mate, 2, 1] {
            both.extend(zz(v)); // keys, then counts
        }
        both.push(0b01); // sum: presence bits, then the present values
        both.extend(zz(73));
        both.push(0b01); // max
        both.extend(zz(70));
        let mut alone = COLUMNAR.to_vec();
        alone.push(1);
        for v in [other, 1] {
            alone.extend(zz(v));
        }
        for _ in 0..2 {
            alone.push(0b1);
            alone.extend(zz(-2));
        }
        let mut want = vec![(kg(5), both), (kg(other), alone)];
        want.sort();
        let got: Vec<(u32, Vec<u8>)> = entries.into_iter().map(|e| (e.key_group, e.value.unwrap())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn incremental_snapshots_with_range_deletions_add_up_to_the_full_one() {
        use crate::state::StateWriter;
        use std::collections::BTreeMap as Map;
        let cfg = serde_json::json!({
            "key": ["k"], "timestamp_column": "t", "window": {"type": "sliding", "size": "20ms", "slide": "10ms"},
            "aggregates": [{"fn": "count", "as": "n"}]
        });
        let mut w = window(cfg);
        let mut out = Collector::default();
        // What an incremental backend holds: (key group, window start) -> value.
        let mut store: Map<(u32, Vec<u8>), Vec<u8>> = Map::new();
        for round in 0..6i64 {
            let rows: Vec<(i64, &str, i64, Option<i64>)> =
                (0..50).map(|i| (i % 13, "", round * 25 + i % 25, None)).collect();
            w.process_batch(0, batch(&rows), &mut out).unwrap();
            w.process_watermark(round * 25 + 5, &mut out).unwrap();
            let mut wr = StateWriter::new("w", round as u64, false);
            w.snapshot_state(&mut wr).unwrap();
            for e in wr.into_entries() {
                match (e.value, e.delete_to) {
                    (Some(v), _) => {
                        store.insert((e.key_group, e.key), v);
                    }
                    (None, None) => {
                        store.remove(&(e.key_group, e.key));
                    }
                    (None, Some(to)) => store.retain(|(kg, k), _| *kg != e.key_group || *k < e.key || *k >= to),
                }
            }
            let mut full = StateWriter::new("w", round as u64, true);
            w.snapshot_state(&mut full).unwrap();
            let want: Map<_, _> =
                full.into_entries().into_iter().map(|e| ((e.key_group, e.key), e.value.unwrap())).collect();
            assert_eq!(store, want, "round {round}");
        }
        drop(out);
    }

    #[test]
    fn entries_in_the_row_by_row_layout_still_restore() {
        use crate::state::{StateEntry, StateReader};
        let cfg = serde_json::json!({
            "key": ["k"], "timestamp_column": "t", "window": {"type": "tumbling", "size": "10ms"},
            "aggregates": [{"fn": "count", "as": "n"}, {"fn": "sum", "column": "v", "as": "s"}]
        });
        let mut value = Vec::new();
        for (key, count, sum) in [(5i64, 3i64, Some(42i64)), (7, 1, None)] {
            value.extend_from_slice(&8u32.to_le_bytes());
            value.extend_from_slice(&key.to_le_bytes());
            value.extend_from_slice(&count.to_le_bytes());
            value.extend_from_slice(&sum.unwrap_or(0).to_le_bytes());
            value.push(u8::from(sum.is_some()));
        }
        let entry = StateEntry {
            operator: "w".into(),
            state: FIXED_STATE.into(),
            key_group: 3,
            key: 0i64.to_be_bytes().to_vec(),
            value: Some(value),
            delete_to: None,
        };
        let mut w = window(cfg);
        w.restore_state(&StateReader::new("w", std::slice::from_ref(&entry))).unwrap();
        let mut out = Collector::default();
        w.finish(&mut out).unwrap();
        assert_eq!(rows(&mut out), ["5,0,10,3,42", "7,0,10,1,"]);
        // A columnar entry cut short is refused, not misread.
        let mut original = window(serde_json::json!({
            "key": ["k"], "timestamp_column": "t", "window": {"type": "tumbling", "size": "10ms"},
            "aggregates": [{"fn": "count", "as": "n"}, {"fn": "sum", "column": "v", "as": "s"}]
        }));
        original.process_batch(0, batch(&[(5, "", 1, Some(300))]), &mut out).unwrap();
        let mut wr = crate::state::StateWriter::new("w", 1, true);
        original.snapshot_state(&mut wr).unwrap();
        let mut entries = wr.into_entries();
        let v = entries[0].value.as_mut().unwrap();
        assert!(v.starts_with(&COLUMNAR));
        v.pop();
        let mut restored = window(serde_json::json!({
            "key": ["k"], "timestamp_column": "t", "window": {"type": "tumbling", "size": "10ms"},
            "aggregates": [{"fn": "count", "as": "n"}, {"fn": "sum", "column": "v", "as": "s"}]
        }));
        assert!(restored.restore_state(&StateReader::new("w", &entries)).is_err());
    }

    #[test]
    fn w2_window_counts_match_the_specification() {
        // Every full 10 s window holds every auction exactly 10 times.
        use crate::operators::datagen::Datagen;
        use crate::operators::SourceOperator;
        let cfg = serde_json::json!({
            "key": ["auction"], "timestamp_column": "event_time_ms",
            "window": {"type": "tumbling", "size": "10s"},
            "aggregates": [{"fn": "count", "as": "count"}, {"fn": "sum", "column": "price", "as": "sum"}]
        });
        let schema = crate::operators::datagen::schema();
        let edge = EdgeSpec {
            from: "g".into(),
            to: "w".into(),
            partitioning: Partitioning::Forward,
            key: vec![],
            input: 0,
            line: 0,
        };
        let ctx = PlanContext {
            uid: "w",
            line: 0,
            config: &cfg,
            inputs: &[schema],
            input_edges: &[&edge],
            parallelism: 1,
            checkpoint: None,
        };
        let Instance::Operator(mut w) =
            WindowFactory.create(&ctx, SubtaskInfo { index: 0, parallelism: 1, max_parallelism: 128 }).unwrap()
        else {
            unreachable!()
        };
        let n = 250_000i64;
        let mut g = Datagen::new(0, 1, n, 8192, None);
        let mut src = Collector::default();
        let mut out = Collector::default();
        while g.poll(&mut src).unwrap() == crate::operators::SourceStatus::Emitted {
            for e in src.drain() {
                if let StreamElement::Batch(b) = e {
                    w.process_batch(0, b, &mut out).unwrap();
                }
            }
        }
        w.finish(&mut out).unwrap();
        let mut results = 0;
        for e in out.drain() {
            if let StreamElement::Batch(b) = e {
                results += b.num_rows() as i64;
                let counts = b.column(3).as_primitive::<Int64Type>();
                let starts = b.column(1).as_primitive::<Int64Type>();
                for r in 0..b.num_rows() {
                    if starts.value(r) < crate::operators::datagen::BASE_TIME_MS + 20_000 {
                        assert_eq!(counts.value(r), 10);
                    }
                }
            }
        }
        assert_eq!(results, (n / 100_000) * 10_000 + (n % 100_000).min(10_000));
    }
}
