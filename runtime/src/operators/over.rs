//! `over_aggregate`: aggregates over each row's preceding rows of its
//! partition, in event-time order — Flink SQL's OVER aggregation
//! (`SUM(x) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 10 PRECEDING AND
//! CURRENT ROW)`). Each row is emitted once, with its aggregates, when the
//! watermark passes its time, so rows are aggregated in time order whatever
//! their arrival order; rows behind the watermark are late and dropped, as
//! in Flink.
//!
//! Frames: `rows` (the row and its `preceding` rows before it; rows of one
//! time in arrival order), `range` (every row of the partition within
//! `preceding` of the row's time, rows of the same time included) and
//! `unbounded` (every row up to it; `peers: true` includes rows of the same
//! time, as `RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW` does).
//!
//! State: per key its rows waiting for the watermark, and the aggregate
//! inputs of the rows a later frame can still reach (or the running
//! aggregates of an unbounded frame); a timer per waiting time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use serde::Deserialize;

use super::watermark::{event_times, time_column};
use super::{duration, millis, Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use crate::error::{OpResult, OperatorError, PlanError};
use crate::keygroup::{hash_rows, key_group};
use crate::state::{KeyedValues, StateCodec, StateReader, StateWriter, Timers};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    partition_key: Vec<String>,
    time_column: String,
    frame: FrameSpec,
    aggregates: Vec<AggSpec>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum FrameSpec {
    Rows {
        preceding: u32,
    },
    Range {
        #[serde(with = "duration")]
        preceding: Duration,
    },
    Unbounded {
        #[serde(default)]
        peers: bool,
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

#[derive(Debug)]
struct Planned {
    key: Vec<usize>,
    time: usize,
    frame: FrameSpec,
    /// Per aggregate: function, input column, whether it reads floats.
    aggs: Vec<(AggFn, Option<usize>, bool)>,
    input: SchemaRef,
    schema: SchemaRef,
}

fn plan(ctx: &PlanContext<'_>) -> Result<Planned, PlanError> {
    let c: Config = ctx.config()?;
    let input = ctx.inputs[0].clone();
    let column = |name: &str, field: &str| {
        input.index_of(name).map_err(|_| ctx.error(format!("no column `{name}` in the input")).field(field.to_string()))
    };
    if c.partition_key.is_empty() {
        return Err(ctx.error("an OVER aggregation needs a partition key column").field("config.partition_key"));
    }
    let key = ctx.key_columns(0, &c.partition_key, "config.partition_key")?;
    let time = time_column(ctx, &input, &c.time_column, "config.time_column")?;
    if c.aggregates.is_empty() {
        return Err(ctx.error("at least one aggregate is needed").field("config.aggregates"));
    }
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut aggs = Vec::new();
    for (i, a) in c.aggregates.iter().enumerate() {
        let at = format!("config.aggregates[{i}]");
        let col = match &a.column {
            Some(n) => Some(column(n, &format!("{at}.column"))?),
            None if a.func == AggFn::Count => None,
            None => return Err(ctx.error("this aggregate needs a column").field(format!("{at}.column"))),
        };
        let float = match col.map(|c| input.field(c).data_type()) {
            Some(t) if t.is_floating() => true,
            Some(t) if t.is_integer() || a.func == AggFn::Count => false,
            Some(t) => {
                return Err(ctx
                    .error(format!("cannot aggregate a column of type {t}; it needs a number"))
                    .field(format!("{at}.column")))
            }
            None => false,
        };
        if fields.iter().any(|f| f.name() == &a.name) {
            return Err(ctx.error(format!("output column `{}` already exists", a.name)).field(format!("{at}.as")));
        }
        let dt = match a.func {
            AggFn::Count => DataType::Int64,
            AggFn::Avg => DataType::Float64,
            _ if float => DataType::Float64,
            _ => DataType::Int64,
        };
        fields.push(Field::new(&a.name, dt, a.func != AggFn::Count));
        aggs.push((a.func, col, float));
    }
    Ok(Planned { key, time, frame: c.frame, aggs, input, schema: Arc::new(Schema::new(fields)) })
}

/// Factory of `over_aggregate`.
#[derive(Debug)]
pub struct OverAggregateFactory;

const KEYS: &str = "partitions";
const TIMERS: &str = "timers";

impl OperatorFactory for OverAggregateFactory {
    fn kind(&self) -> &str {
        "over_aggregate"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Ok(plan(ctx)?.schema)
    }
    fn state_types(&self, ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        let Ok(p) = plan(ctx) else { return Vec::new() };
        let aggs: Vec<String> = p
            .aggs
            .iter()
            .map(|(f, c, _)| {
                format!("{f:?}({})", c.map_or("*".to_string(), |c| p.input.field(c).name().clone())).to_lowercase()
            })
            .collect();
        vec![
            (
                KEYS.into(),
                format!("{:?} of [{}] over [{}]", p.frame, aggs.join(", "), super::join::describe_columns(&p.input)),
            ),
            (TIMERS.into(), "times of waiting rows".into()),
        ]
    }
    fn create(&self, ctx: &PlanContext<'_>, info: SubtaskInfo) -> Result<Instance, PlanError> {
        let p = plan(ctx)?;
        let err = |e: arrow::error::ArrowError| ctx.error(e.to_string());
        let field = |i: usize| SortField::new(p.input.field(i).data_type().clone());
        let keys = RowConverter::new(p.key.iter().map(|&i| field(i)).collect()).map_err(err)?;
        let rows = RowConverter::new((0..p.input.fields().len()).map(field).collect()).map_err(err)?;
        Ok(Instance::Operator(Box::new(Over {
            keys,
            rows,
            state: KeyedValues::new(KEYS),
            timers: Timers::new(TIMERS),
            watermark: i64::MIN,
            max_parallelism: info.max_parallelism,
            p,
        })))
    }
}

/// An aggregate input: a number, or null.
type Num = Option<f64>;

/// One partition: rows waiting for the watermark (time, row bytes, inputs)
/// and the rows a frame can still reach (time, inputs), or for an unbounded
/// frame one entry holding every row's running sums.
#[derive(Debug, Clone, Default, PartialEq)]
struct Partition {
    waiting: Vec<(i64, Vec<u8>, Vec<Num>)>,
    history: Vec<(i64, Vec<Num>)>,
    running: Vec<Running>,
}

/// Count of non-null inputs (rows, for COUNT(*)), sum, min and max.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Running {
    n: i64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
}

impl Running {
    fn add(&mut self, v: Num, counts_rows: bool) {
        match v {
            Some(x) => {
                self.n += 1;
                self.sum += x;
                self.min = Some(self.min.map_or(x, |m| m.min(x)));
                self.max = Some(self.max.map_or(x, |m| m.max(x)));
            }
            None if counts_rows => self.n += 1,
            None => {}
        }
    }
}

fn put_f64s(out: &mut Vec<u8>, values: &[Num]) {
    out.extend_from_slice(&(values.len() as u32).to_be_bytes());
    for v in values {
        match v {
            Some(x) => {
                out.push(1);
                out.extend_from_slice(&x.to_be_bytes());
            }
            None => out.push(0),
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> OpResult<&[u8]> {
        let bad = || OperatorError::State("restored OVER aggregation state does not decode".into());
        let (head, rest) = (self.0.get(..n).ok_or_else(bad)?, self.0.get(n..).ok_or_else(bad)?);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self) -> OpResult<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn i64(&mut self) -> OpResult<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn f64(&mut self) -> OpResult<f64> {
        Ok(f64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn nums(&mut self) -> OpResult<Vec<Num>> {
        let n = self.u32()? as usize;
        (0..n).map(|_| Ok(if self.take(1)?[0] == 1 { Some(self.f64()?) } else { None })).collect()
    }
    fn opt(&mut self) -> OpResult<Num> {
        Ok(if self.take(1)?[0] == 1 { Some(self.f64()?) } else { None })
    }
}

impl StateCodec for Partition {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.waiting.len() as u32).to_be_bytes());
        for (t, row, nums) in &self.waiting {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&(row.len() as u32).to_be_bytes());
            out.extend_from_slice(row);
            put_f64s(out, nums);
        }
        out.extend_from_slice(&(self.history.len() as u32).to_be_bytes());
        for (t, nums) in &self.history {
            out.extend_from_slice(&t.to_be_bytes());
            put_f64s(out, nums);
        }
        out.extend_from_slice(&(self.running.len() as u32).to_be_bytes());
        for r in &self.running {
            out.extend_from_slice(&r.n.to_be_bytes());
            out.extend_from_slice(&r.sum.to_be_bytes());
            put_f64s(out, &[r.min, r.max]);
        }
    }
    fn decode(b: &[u8]) -> OpResult<Self> {
        let mut r = Reader(b);
        let mut p = Partition::default();
        for _ in 0..r.u32()? {
            let t = r.i64()?;
            let n = r.u32()? as usize;
            let row = r.take(n)?.to_vec();
            p.waiting.push((t, row, r.nums()?));
        }
        for _ in 0..r.u32()? {
            let t = r.i64()?;
            p.history.push((t, r.nums()?));
        }
        for _ in 0..r.u32()? {
            let (n, sum) = (r.i64()?, r.f64()?);
            let _ = r.u32()?;
            let (min, max) = (r.opt()?, r.opt()?);
            p.running.push(Running { n, sum, min, max });
        }
        Ok(p)
    }
}

struct Over {
    p: Planned,
    keys: RowConverter,
    rows: RowConverter,
    state: KeyedValues<Partition>,
    timers: Timers,
    watermark: i64,
    max_parallelism: u32,
}

impl Over {
    /// The aggregate inputs of a batch, per aggregate, as numbers.
    fn inputs(&self, batch: &RecordBatch) -> OpResult<Vec<Option<Float64Array>>> {
        self.p
            .aggs
            .iter()
            .map(|(_, c, _)| {
                c.map(|c| Ok(cast(batch.column(c), &DataType::Float64)?.as_primitive::<Float64Type>().clone()))
                    .transpose()
            })
            .collect()
    }

    /// The aggregates of a frame of inputs.
    fn aggregate<'a>(&self, frame: impl Iterator<Item = &'a [Num]> + Clone) -> Vec<Running> {
        self.p
            .aggs
            .iter()
            .enumerate()
            .map(|(i, (_, c, _))| {
                let mut r = Running::default();
                for v in frame.clone() {
                    r.add(v[i], c.is_none());
                }
                r
            })
            .collect()
    }

    /// Emits the waiting rows at or before `watermark`, in time order.
    fn emit_until(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        self.watermark = self.watermark.max(watermark);
        let due: BTreeSet<Vec<u8>> = self.timers.fire(watermark).into_iter().map(|(_, _, k)| k).collect();
        let mut rows: Vec<(Vec<u8>, Vec<Running>)> = Vec::new();
        for key in due {
            let Some(mut part) = self.state.get(&key).cloned() else { continue };
            let (mut ready, later): (Vec<_>, Vec<_>) =
                std::mem::take(&mut part.waiting).into_iter().partition(|w| w.0 <= watermark);
            part.waiting = later;
            ready.sort_by_key(|w| w.0);
            let mut i = 0;
            while i < ready.len() {
                // Rows of one time: peers of each other.
                let j = i + ready[i..].iter().take_while(|w| w.0 == ready[i].0).count();
                let t = ready[i].0;
                match self.p.frame {
                    FrameSpec::Rows { preceding } => {
                        for (_, row, nums) in &ready[i..j] {
                            part.history.push((t, nums.clone()));
                            let from = part.history.len().saturating_sub(preceding as usize + 1);
                            rows.push((
                                row.clone(),
                                self.aggregate(part.history[from..].iter().map(|h| h.1.as_slice())),
                            ));
                        }
                        let keep = part.history.len().saturating_sub(preceding as usize);
                        part.history.drain(..keep);
                    }
                    FrameSpec::Range { preceding } => {
                        part.history.extend(ready[i..j].iter().map(|w| (t, w.2.clone())));
                        let from = t - millis(preceding);
                        let aggs = self.aggregate(part.history.iter().filter(|h| h.0 >= from).map(|h| h.1.as_slice()));
                        rows.extend(ready[i..j].iter().map(|w| (w.1.clone(), aggs.clone())));
                    }
                    FrameSpec::Unbounded { peers } => {
                        if part.running.is_empty() {
                            part.running = vec![Running::default(); self.p.aggs.len()];
                        }
                        let add = |running: &mut Vec<Running>, nums: &[Num], aggs: &[(AggFn, Option<usize>, bool)]| {
                            for (a, r) in running.iter_mut().enumerate() {
                                r.add(nums[a], aggs[a].1.is_none());
                            }
                        };
                        if peers {
                            for w in &ready[i..j] {
                                add(&mut part.running, &w.2, &self.p.aggs);
                            }
                            rows.extend(ready[i..j].iter().map(|w| (w.1.clone(), part.running.clone())));
                        } else {
                            for w in &ready[i..j] {
                                add(&mut part.running, &w.2, &self.p.aggs);
                                rows.push((w.1.clone(), part.running.clone()));
                            }
                        }
                    }
                }
                i = j;
            }
            if let FrameSpec::Range { preceding } = self.p.frame {
                // Later rows come after the watermark: older rows are out of reach.
                let reach = watermark.saturating_sub(millis(preceding));
                part.history.retain(|h| h.0 >= reach);
            }
            *self.state.get_mut(&key).expect("present") = part;
        }
        self.emit(rows, out)
    }

    fn emit(&self, rows: Vec<(Vec<u8>, Vec<Running>)>, out: &mut Collector) -> OpResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let parser = self.rows.parser();
        let mut columns: Vec<ArrayRef> = self.rows.convert_rows(rows.iter().map(|r| parser.parse(&r.0)))?;
        for (a, (func, _, float)) in self.p.aggs.iter().enumerate() {
            let values = rows.iter().map(|r| &r.1[a]);
            let column: ArrayRef = match func {
                AggFn::Count => Arc::new(Int64Array::from_iter_values(values.map(|r| r.n))),
                AggFn::Avg => Arc::new(Float64Array::from_iter(values.map(|r| (r.n > 0).then(|| r.sum / r.n as f64)))),
                f => {
                    let pick = |r: &Running| match f {
                        AggFn::Sum => (r.n > 0).then_some(r.sum),
                        AggFn::Min => r.min,
                        _ => r.max,
                    };
                    if *float {
                        Arc::new(Float64Array::from_iter(values.map(pick)))
                    } else {
                        Arc::new(Int64Array::from_iter(values.map(|r| pick(r).map(|x| x as i64))))
                    }
                }
            };
            columns.push(column);
        }
        out.emit(RecordBatch::try_new(self.p.schema.clone(), columns)?);
        Ok(())
    }
}

impl Operator for Over {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, _out: &mut Collector) -> OpResult<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let key_columns: Vec<ArrayRef> = self.p.key.iter().map(|&i| batch.column(i).clone()).collect();
        let keys = self.keys.convert_columns(&key_columns)?;
        let mut hashes = Vec::new();
        hash_rows(&key_columns, &mut hashes)?;
        let times = event_times(&batch, self.p.time)?;
        let rows = self.rows.convert_columns(batch.columns())?;
        let inputs = self.inputs(&batch)?;
        for (r, &hash) in hashes.iter().enumerate() {
            let t = times.value(r);
            if t <= self.watermark {
                continue; // late
            }
            let nums: Vec<Num> =
                inputs.iter().map(|c| c.as_ref().and_then(|c| c.is_valid(r).then(|| c.value(r)))).collect();
            let key = keys.row(r).data();
            let kg = key_group(hash, self.max_parallelism);
            let entry = (t, rows.row(r).data().to_vec(), nums);
            match self.state.get_mut(key) {
                Some(p) => p.waiting.push(entry),
                None => self.state.put(kg, key.to_vec(), Partition { waiting: vec![entry], ..Partition::default() }),
            }
            self.timers.register(t, kg, key.to_vec());
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        self.emit_until(watermark, out)?;
        out.emit_watermark(watermark);
        Ok(())
    }

    fn finish(&mut self, out: &mut Collector) -> OpResult<()> {
        self.emit_until(i64::MAX, out)
    }

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        self.state.snapshot(w);
        self.timers.snapshot(w);
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        self.state.restore(r)?;
        self.timers.restore(r)
    }
}

#[cfg(test)]
mod tests;
