//! `group_aggregate`: a keyed aggregation without windows, whose result is
//! updating — a changelog — as Flink SQL's `GROUP BY` without a window.
//!
//! Each output row carries its change kind in a text column (`op` unless
//! `op_column` names another), as the sinks that write by key read them:
//! `+I` a key's first result, `-U` its previous result followed by `+U` its
//! new one, `-D` a result that is gone (every row of the key was taken
//! back). A batch updates each key once: a key whose rows in one batch
//! leave its result as it was emits nothing.
//!
//! The input may be updating too (`input_op_column`: its `+I`/`+U` rows add,
//! `-U`/`-D` rows take back), as when one aggregation reads another's
//! result; every aggregate then retracts exactly — MIN and MAX keep their
//! values with counts, so a retracted extreme gives way to the next.
//! `count_distinct` always does.
//!
//! State: one entry per key (its accumulators and row count), written only
//! for keys that changed since the last checkpoint. With `state_ttl` a key
//! that no row touched for that long (processing time) is dropped without
//! output, as Flink's `table.exec.state.ttl` does; a later row of the key
//! starts it again from `+I`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use serde::Deserialize;

use super::{duration, millis, Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use crate::error::{OpResult, OperatorError, PlanError};
use crate::keygroup::{hash_rows, is_key_type, key_group};
use crate::state::{KeyedValues, StateCodec, StateReader, StateWriter};

mod accs;
#[cfg(test)]
mod tests;

use accs::{Acc, Kind, Out, Reader, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    key: Vec<String>,
    #[serde(default)]
    aggregates: Vec<AggSpec>,
    /// The output's change-kind column.
    #[serde(default = "default_op")]
    op_column: String,
    /// The input's change-kind column, if the input is updating.
    #[serde(default)]
    input_op_column: Option<String>,
    /// Keys idle this long are dropped.
    #[serde(default, with = "duration::option")]
    state_ttl: Option<Duration>,
}

fn default_op() -> String {
    "op".into()
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

/// How one aggregate reads its input.
#[derive(Debug, Clone)]
struct AggPlan {
    kind: Kind,
    column: Option<usize>,
}

#[derive(Debug, Clone)]
struct Planned {
    key: Vec<usize>,
    aggs: Vec<AggPlan>,
    input_op: Option<usize>,
    ttl: Option<i64>,
    schema: SchemaRef,
    input: SchemaRef,
}

fn plan(ctx: &PlanContext<'_>) -> Result<Planned, PlanError> {
    let c: Config = ctx.config()?;
    let input = ctx.inputs[0].clone();
    let column = |name: &str, field: String| {
        input.index_of(name).map_err(|_| ctx.error(format!("no column `{name}` in the input")).field(field))
    };
    let input_op = match &c.input_op_column {
        Some(name) => {
            let i = column(name, "config.input_op_column".into())?;
            if !matches!(input.field(i).data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
                return Err(ctx
                    .error(format!("input_op_column `{name}` must be text (+I, +U, -U, -D)"))
                    .field("config.input_op_column"));
            }
            Some(i)
        }
        None => None,
    };
    if c.key.is_empty() {
        return Err(ctx.error("a group aggregation needs at least one key column").field("config.key"));
    }
    let key = ctx.key_columns(0, &c.key, "config.key")?;
    let mut fields: Vec<Field> = key.iter().map(|&i| input.field(i).as_ref().clone()).collect();
    let updating = input_op.is_some();
    let mut aggs = Vec::new();
    for (i, a) in c.aggregates.iter().enumerate() {
        let at = format!("config.aggregates[{i}]");
        if fields.iter().any(|f| f.name() == &a.name) || a.name == c.op_column {
            return Err(ctx.error(format!("output column `{}` already exists", a.name)).field(format!("{at}.as")));
        }
        let name = format!("{:?}", a.func).to_lowercase();
        let col = match &a.column {
            None if a.func == AggFn::Count => None,
            None => return Err(ctx.error(format!("{name} needs a column")).field(format!("{at}.column"))),
            Some(n) => Some(column(n, format!("{at}.column"))?),
        };
        let t = col.map(|i| input.field(i).data_type().clone());
        let float = t.as_ref().is_some_and(|t| t.is_floating());
        let (out_type, nullable) = match (a.func, &t) {
            (AggFn::Count | AggFn::CountDistinct, _) => (DataType::Int64, false),
            (AggFn::Sum | AggFn::Avg | AggFn::SumDistinct | AggFn::AvgDistinct, Some(t))
                if !t.is_integer() && !t.is_floating() =>
            {
                return Err(ctx
                    .error(format!("{name} cannot aggregate a column of type {t}; it needs a number"))
                    .field(format!("{at}.column")))
            }
            (AggFn::Avg | AggFn::AvgDistinct, _) => (DataType::Float64, true),
            (AggFn::Sum | AggFn::SumDistinct, _) if float => (DataType::Float64, true),
            (AggFn::Sum | AggFn::SumDistinct, _) => (DataType::Int64, true),
            (_, Some(t)) if !is_key_type(t) && !t.is_floating() => {
                return Err(ctx
                    .error(format!("{name} cannot compare values of type {t}"))
                    .field(format!("{at}.column")))
            }
            (_, t) => (t.clone().expect("min and max have a column"), true),
        };
        fields.push(Field::new(&a.name, out_type, nullable));
        aggs.push(AggPlan { kind: Kind::new(a.func, float, updating), column: col });
    }
    if fields.iter().any(|f| f.name() == &c.op_column) {
        return Err(ctx.error(format!("output column `{}` already exists", c.op_column)).field("config.op_column"));
    }
    fields.push(Field::new(&c.op_column, DataType::Utf8, false));
    let ttl = match c.state_ttl {
        Some(d) if d.is_zero() => None,
        Some(d) => Some(millis(d)),
        None => None,
    };
    Ok(Planned { key, aggs, input_op, ttl, schema: Arc::new(Schema::new(fields)), input })
}

/// Factory of `group_aggregate`.
#[derive(Debug)]
pub struct GroupAggregateFactory;

/// The state of every key.
const KEYS_STATE: &str = "keys";

impl OperatorFactory for GroupAggregateFactory {
    fn kind(&self) -> &str {
        "group_aggregate"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Ok(plan(ctx)?.schema)
    }
    fn state_types(&self, ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        let Ok(p) = plan(ctx) else { return Vec::new() };
        let field = |i: usize| p.input.field(i);
        let keys: Vec<String> =
            p.key.iter().map(|&i| format!("{}: {}", field(i).name(), field(i).data_type())).collect();
        let aggs: Vec<String> = p
            .aggs
            .iter()
            .map(|a| {
                let column =
                    a.column.map_or("*".to_string(), |c| format!("{}: {}", field(c).name(), field(c).data_type()));
                format!("{:?}({column})", a.kind).to_lowercase()
            })
            .collect();
        vec![(KEYS_STATE.into(), format!("group by [{}] of [{}]", keys.join(", "), aggs.join(", ")))]
    }
    fn create(&self, ctx: &PlanContext<'_>, info: SubtaskInfo) -> Result<Instance, PlanError> {
        let p = plan(ctx)?;
        let sort = |i: usize| SortField::new(p.input.field(i).data_type().clone());
        let keys = RowConverter::new(p.key.iter().map(|&i| sort(i)).collect()).map_err(|e| ctx.error(e.to_string()))?;
        let mut values = Vec::new();
        for a in &p.aggs {
            values.push(match (a.kind, a.column) {
                (Kind::Min | Kind::Max | Kind::MinMulti | Kind::MaxMulti | Kind::Distinct, Some(c)) => {
                    let conv = RowConverter::new(vec![sort(c)]).map_err(|e| ctx.error(e.to_string()))?;
                    let null = conv
                        .convert_columns(&[arrow::array::new_null_array(p.input.field(c).data_type(), 1)])
                        .map_err(|e| ctx.error(e.to_string()))?;
                    Some((conv, null.row(0).as_ref().to_vec()))
                }
                _ => None,
            });
        }
        Ok(Instance::Operator(Box::new(GroupAggregate {
            keys,
            values,
            state: KeyedValues::new(KEYS_STATE),
            max_parallelism: info.max_parallelism,
            last_sweep: None,
            ignored_retractions: 0,
            expired: 0,
            p,
        })))
    }
}

/// One key's aggregation.
#[derive(Debug, Clone, PartialEq)]
struct KeyState {
    /// Rows added minus rows taken back: at 0 the key's result is gone.
    rows: i64,
    /// When a row last touched the key (milliseconds since the epoch; only
    /// kept with a TTL).
    touched: i64,
    accs: Vec<Acc>,
}

impl StateCodec for KeyState {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.rows.to_be_bytes());
        out.extend_from_slice(&self.touched.to_be_bytes());
        for a in &self.accs {
            a.encode(out);
        }
    }
    fn decode(bytes: &[u8]) -> OpResult<Self> {
        let mut r = Reader(bytes);
        let rows = r.i64()?;
        let touched = r.i64()?;
        let mut accs = Vec::new();
        while !r.is_empty() {
            accs.push(Acc::decode(&mut r)?);
        }
        Ok(KeyState { rows, touched, accs })
    }
}

struct GroupAggregate {
    p: Planned,
    /// Key columns to row bytes (and back, for output).
    keys: RowConverter,
    /// Per aggregate: the converter of the values MIN, MAX and
    /// COUNT(DISTINCT) keep as row bytes, with a null's bytes.
    values: Vec<Option<(RowConverter, Vec<u8>)>>,
    state: KeyedValues<KeyState>,
    max_parallelism: u32,
    last_sweep: Option<Instant>,
    /// `-U`/`-D` rows of keys with no state (expired, or never seen).
    ignored_retractions: u64,
    expired: u64,
}

/// One aggregate's column of a batch, read once.
enum Input {
    Rows,
    NonNull(Option<arrow::buffer::NullBuffer>),
    Int(Int64Array),
    Float(Float64Array),
    Bytes(Rows, Option<arrow::buffer::NullBuffer>),
}

impl Input {
    fn value(&self, r: usize) -> Value<'_> {
        match self {
            Input::Rows => Value::Present,
            Input::NonNull(n) => match n {
                Some(n) if n.is_null(r) => Value::Null,
                _ => Value::Present,
            },
            Input::Int(a) if a.is_null(r) => Value::Null,
            Input::Int(a) => Value::Int(a.value(r)),
            Input::Float(a) if a.is_null(r) => Value::Null,
            Input::Float(a) => Value::Float(a.value(r)),
            Input::Bytes(_, Some(n)) if n.is_null(r) => Value::Null,
            Input::Bytes(rows, _) => Value::Bytes(rows.row(r).data()),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The change kind of each row of an updating input: +1 adds, -1 takes back.
fn signs(batch: &RecordBatch, op: usize) -> OpResult<Vec<i64>> {
    let a = cast(batch.column(op), &DataType::Utf8)?;
    a.as_string::<i32>()
        .iter()
        .map(|v| match v {
            Some("+I" | "+U") => Ok(1),
            Some("-U" | "-D") => Ok(-1),
            other => Err(OperatorError::InvalidData(format!("change kind {other:?} is none of +I, +U, -U, -D"))),
        })
        .collect()
}

impl GroupAggregate {
    fn inputs(&self, batch: &RecordBatch) -> OpResult<Vec<Input>> {
        let mut out = Vec::with_capacity(self.p.aggs.len());
        for (a, conv) in self.p.aggs.iter().zip(&self.values) {
            let Some(c) = a.column else {
                out.push(Input::Rows);
                continue;
            };
            let col = batch.column(c);
            out.push(match (a.kind, conv) {
                (_, Some((conv, _))) => {
                    Input::Bytes(conv.convert_columns(std::slice::from_ref(col))?, col.logical_nulls())
                }
                (Kind::Count, _) => Input::NonNull(col.logical_nulls()),
                (Kind::SumInt | Kind::DistinctSumInt, _) => {
                    Input::Int(cast(col, &DataType::Int64)?.as_primitive::<Int64Type>().clone())
                }
                _ => Input::Float(cast(col, &DataType::Float64)?.as_primitive::<Float64Type>().clone()),
            });
        }
        Ok(out)
    }

    fn result(&self, s: &KeyState) -> Vec<Out> {
        self.p.aggs.iter().zip(&s.accs).map(|(a, acc)| acc.out(a.kind)).collect()
    }

    /// The output rows of `changes` (key bytes, result, change kind).
    fn emit(&self, changes: Vec<(Vec<u8>, Vec<Out>, &'static str)>, out: &mut Collector) -> OpResult<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let parser = self.keys.parser();
        let mut columns: Vec<ArrayRef> = self.keys.convert_rows(changes.iter().map(|c| parser.parse(&c.0)))?;
        for (i, (conv, a)) in self.values.iter().zip(&self.p.aggs).enumerate() {
            let column = changes.iter().map(|c| &c.1[i]);
            columns.push(match conv {
                Some((conv, null)) if a.kind != Kind::Distinct => {
                    let parser = conv.parser();
                    let rows = column.map(|o| match o {
                        Out::Bytes(Some(b)) => parser.parse(b),
                        _ => parser.parse(null),
                    });
                    conv.convert_rows(rows)?.remove(0)
                }
                _ => match self.p.schema.field(self.p.key.len() + i).data_type() {
                    DataType::Float64 => Arc::new(
                        column
                            .map(|o| match o {
                                Out::Float(v) => *v,
                                _ => None,
                            })
                            .collect::<Float64Array>(),
                    ) as ArrayRef,
                    _ => Arc::new(
                        column
                            .map(|o| match o {
                                Out::Int(v) => *v,
                                _ => None,
                            })
                            .collect::<Int64Array>(),
                    ),
                },
            });
        }
        columns.push(Arc::new(StringArray::from_iter_values(changes.iter().map(|c| c.2))));
        out.emit(RecordBatch::try_new(self.p.schema.clone(), columns)?);
        Ok(())
    }

    /// Drops keys idle longer than the TTL, at most every tenth of it.
    fn expire(&mut self, now: Instant) {
        let Some(ttl) = self.p.ttl else { return };
        let every = Duration::from_millis((ttl / 10).clamp(10, 60_000) as u64);
        if self.last_sweep.is_some_and(|t| now.duration_since(t) < every) {
            return;
        }
        self.last_sweep = Some(now);
        let oldest = now_ms() - ttl;
        let idle: Vec<Vec<u8>> =
            self.state.iter().filter(|(_, s)| s.touched < oldest).map(|(k, _)| k.to_vec()).collect();
        for k in &idle {
            self.state.remove(k);
        }
        self.expired += idle.len() as u64;
    }
}

impl Operator for GroupAggregate {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let key_columns: Vec<ArrayRef> = self.p.key.iter().map(|&i| batch.column(i).clone()).collect();
        let rows = self.keys.convert_columns(&key_columns)?;
        let mut hashes = Vec::new();
        hash_rows(&key_columns, &mut hashes)?;
        let signs = match self.p.input_op {
            Some(op) => signs(&batch, op)?,
            None => vec![1; n],
        };
        let inputs = self.inputs(&batch)?;
        let touched = if self.p.ttl.is_some() { now_ms() } else { 0 };
        // The batch's rows by key, keys in the order they first come: each
        // key's state is looked up and marked changed once per batch.
        let mut index: HashMap<&[u8], usize> = HashMap::new();
        let mut keys: Vec<(&[u8], Vec<u32>)> = Vec::new();
        for r in 0..n {
            let key = rows.row(r).data();
            let i = *index.entry(key).or_insert_with(|| {
                keys.push((key, Vec::new()));
                keys.len() - 1
            });
            keys[i].1.push(r as u32);
        }
        let mut changes = Vec::new();
        for (key, picks) in keys {
            let prev = self.state.get(key).map(|s| self.result(s));
            if prev.is_none() {
                let accs = self.p.aggs.iter().map(|a| a.kind.empty()).collect();
                let kg = key_group(hashes[picks[0] as usize], self.max_parallelism);
                self.state.put(kg, key.to_vec(), KeyState { rows: 0, touched, accs });
            }
            let st = self.state.get_mut(key).expect("present");
            st.touched = touched;
            for &r in &picks {
                let (r, sign) = (r as usize, signs[r as usize]);
                if sign < 0 && st.rows <= 0 {
                    // Nothing to take back: the key expired, or never came.
                    self.ignored_retractions += 1;
                    continue;
                }
                st.rows += sign;
                for ((acc, a), input) in st.accs.iter_mut().zip(&self.p.aggs).zip(&inputs) {
                    acc.apply(a.kind, sign, input.value(r));
                }
            }
            let after = if st.rows > 0 {
                Some(self.p.aggs.iter().zip(&st.accs).map(|(a, acc)| acc.out(a.kind)).collect::<Vec<_>>())
            } else {
                self.state.remove(key);
                None
            };
            match (prev, after) {
                (None, Some(a)) => changes.push((key.to_vec(), a, "+I")),
                (Some(b), None) => changes.push((key.to_vec(), b, "-D")),
                (Some(b), Some(a)) if a != b => {
                    changes.push((key.to_vec(), b, "-U"));
                    changes.push((key.to_vec(), a, "+U"));
                }
                _ => {}
            }
        }
        self.emit(changes, out)
    }

    fn on_processing_time(&mut self, now: Instant, _out: &mut Collector) -> OpResult<()> {
        self.expire(now);
        Ok(())
    }

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        self.state.snapshot(w);
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        self.state.restore(r)?;
        let want = self.p.aggs.len();
        if let Some((_, s)) = self.state.iter().find(|(_, s)| s.accs.len() != want) {
            return Err(OperatorError::State(format!(
                "restored aggregate state has {} accumulators per key; this aggregation has {want}",
                s.accs.len()
            )));
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Collector) -> OpResult<()> {
        if self.ignored_retractions > 0 || self.expired > 0 {
            tracing::info!(
                ignored_retractions = self.ignored_retractions,
                expired_keys = self.expired,
                keys = self.state.len(),
                "group aggregation finished"
            );
        }
        Ok(())
    }
}
