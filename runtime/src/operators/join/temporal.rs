//! `temporal_join`: each row of a stream joined with the version of a
//! versioned table that was valid at the row's event time — Flink SQL's
//! event-time temporal join (`JOIN rates FOR SYSTEM_TIME AS OF o.ts`).
//!
//! The right input is the table's history: each row is a new version of
//! its key from its event time on (an updating input's `-D` ends the key's
//! versions; `-U` is skipped, its `+U` follows). A left row waits until the
//! watermark (the smaller of both inputs') reaches its time, so that every
//! version up to it has arrived, and is then joined with the latest version
//! at or before its time; without one, an inner join drops it and a left
//! join pads it with nulls. The answer is the same on every run, whatever
//! the arrival order. The output only appends and keeps the left row's
//! time; a left row already behind the watermark is joined at once.
//!
//! State: per key, its versions from the last one the watermark has passed
//! on (older ones can no longer be read), its waiting left rows, and a
//! timer per waiting time.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use serde::Deserialize;

use super::{join_keys, key_rows, output_fields, pair_columns, side_rows, split_changes, JoinType};
use crate::error::{OpResult, OperatorError, PlanError};
use crate::keygroup::key_group;
use crate::operators::watermark::{event_times, time_column};
use crate::operators::{Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use crate::state::{KeyedValues, StateCodec, StateReader, StateWriter, Timers};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    left_key: Vec<String>,
    right_key: Vec<String>,
    left_time: String,
    right_time: String,
    /// `inner` or `left`.
    #[serde(default)]
    join_type: JoinType,
    #[serde(default)]
    right_prefix: String,
    #[serde(default)]
    names: Option<Vec<String>>,
    /// The change-kind column of an updating right input.
    #[serde(default)]
    right_op_column: Option<String>,
}

#[derive(Debug)]
struct Planned {
    keys: [Vec<usize>; 2],
    key_types: Vec<DataType>,
    times: [usize; 2],
    join_type: JoinType,
    /// Each input's columns (the right one without its change kinds).
    inputs: [SchemaRef; 2],
    right_op: Option<usize>,
    schema: SchemaRef,
}

fn plan(ctx: &PlanContext<'_>) -> Result<Planned, PlanError> {
    let c: Config = ctx.config()?;
    if !matches!(c.join_type, JoinType::Inner | JoinType::Left) {
        return Err(ctx.error("a temporal join is inner or left").field("config.join_type"));
    }
    let mut inputs = [ctx.inputs[0].clone(), ctx.inputs[1].clone()];
    let mut right_op = None;
    if let Some(op) = &c.right_op_column {
        let field = "config.right_op_column";
        let i = inputs[1]
            .index_of(op)
            .map_err(|_| ctx.error(format!("no column `{op}` in the right input")).field(field))?;
        if inputs[1].field(i).data_type() != &DataType::Utf8 {
            return Err(ctx.error(format!("change-kind column `{op}` must be a string")).field(field));
        }
        let rest: Vec<Field> =
            inputs[1].fields().iter().enumerate().filter(|(j, _)| *j != i).map(|(_, f)| f.as_ref().clone()).collect();
        inputs[1] = Arc::new(Schema::new(rest));
        right_op = Some(i);
    }
    let (keys, key_types) = join_keys(ctx, &inputs, &c.left_key, &c.right_key)?;
    let times = [
        time_column(ctx, &inputs[0], &c.left_time, "config.left_time")?,
        time_column(ctx, &inputs[1], &c.right_time, "config.right_time")?,
    ];
    let fields = output_fields(ctx, &inputs, c.join_type, &c.right_prefix, c.names.as_deref())?;
    Ok(Planned {
        keys,
        key_types,
        times,
        join_type: c.join_type,
        inputs,
        right_op,
        schema: Arc::new(Schema::new(fields)),
    })
}

/// Factory of `temporal_join`.
#[derive(Debug)]
pub struct TemporalJoinFactory;

const VERSIONS: &str = "versions";
const WAITING: &str = "waiting";
const TIMERS: &str = "timers";

impl OperatorFactory for TemporalJoinFactory {
    fn kind(&self) -> &str {
        "temporal_join"
    }
    fn arity(&self) -> Arity {
        Arity::Two
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Ok(plan(ctx)?.schema)
    }
    fn state_types(&self, ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        let Ok(p) = plan(ctx) else { return Vec::new() };
        let keys: Vec<String> = p.key_types.iter().map(|t| t.to_string()).collect();
        let keys = keys.join(", ");
        vec![
            (VERSIONS.into(), format!("versions by [{keys}] of [{}]", super::describe_columns(&p.inputs[1]))),
            (WAITING.into(), format!("rows by [{keys}] of [{}]", super::describe_columns(&p.inputs[0]))),
            (TIMERS.into(), "times of waiting rows".into()),
        ]
    }
    fn create(&self, ctx: &PlanContext<'_>, info: SubtaskInfo) -> Result<Instance, PlanError> {
        let p = plan(ctx)?;
        let err = |e: arrow::error::ArrowError| ctx.error(e.to_string());
        let keys = RowConverter::new(p.key_types.iter().map(|t| SortField::new(t.clone())).collect()).map_err(err)?;
        let (rows, nulls) = side_rows(&p.inputs).map_err(err)?;
        Ok(Instance::Operator(Box::new(TemporalJoin {
            keys,
            rows,
            nulls,
            versions: KeyedValues::new(VERSIONS),
            waiting: KeyedValues::new(WAITING),
            timers: Timers::new(TIMERS),
            watermark: i64::MIN,
            max_parallelism: info.max_parallelism,
            p,
        })))
    }
}

/// Timed rows: a key's versions (`None`: deleted from then on), sorted by
/// time, or its waiting left rows.
#[derive(Debug, Clone, Default, PartialEq)]
struct Timed(Vec<(i64, Option<Vec<u8>>)>);

impl StateCodec for Timed {
    fn encode(&self, out: &mut Vec<u8>) {
        for (t, row) in &self.0 {
            out.extend_from_slice(&t.to_be_bytes());
            match row {
                Some(r) => {
                    out.extend_from_slice(&(r.len() as u32).to_be_bytes());
                    out.extend_from_slice(r);
                }
                None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
            }
        }
    }
    fn decode(mut b: &[u8]) -> OpResult<Self> {
        let bad = || OperatorError::State("restored temporal join rows do not decode".into());
        let mut out = Vec::new();
        while !b.is_empty() {
            let t = i64::from_be_bytes(b.get(..8).ok_or_else(bad)?.try_into().expect("8 bytes"));
            let n = u32::from_be_bytes(b.get(8..12).ok_or_else(bad)?.try_into().expect("4 bytes"));
            b = &b[12..];
            if n == u32::MAX {
                out.push((t, None));
            } else {
                out.push((t, Some(b.get(..n as usize).ok_or_else(bad)?.to_vec())));
                b = &b[n as usize..];
            }
        }
        Ok(Timed(out))
    }
}

struct TemporalJoin {
    p: Planned,
    keys: RowConverter,
    rows: Vec<RowConverter>,
    nulls: Vec<Vec<u8>>,
    versions: KeyedValues<Timed>,
    waiting: KeyedValues<Timed>,
    timers: Timers,
    watermark: i64,
    max_parallelism: u32,
}

/// A joined pair: the left row and its version (`None`: padded).
type Pair = (Vec<u8>, Option<Vec<u8>>);

impl TemporalJoin {
    /// The version of `key` valid at `t`, as a pair with `left` (or nothing
    /// for an inner join without one).
    fn resolve(&self, key: &[u8], t: i64, left: Vec<u8>, out: &mut Vec<Pair>) {
        let version = self.versions.get(key).and_then(|v| {
            let at = v.0.partition_point(|(vt, _)| *vt <= t);
            at.checked_sub(1).and_then(|i| v.0[i].1.clone())
        });
        if version.is_some() || self.p.join_type == JoinType::Left {
            out.push((left, version));
        }
    }

    /// Drops the versions of `key` that no row can read any more: those
    /// before the last one at or before the watermark.
    fn prune(&mut self, key: &[u8]) {
        let wm = self.watermark;
        let Some(v) = self.versions.get(key) else { return };
        let current = v.0.partition_point(|(t, _)| *t <= wm);
        if current <= 1 {
            return;
        }
        let rest: Vec<_> = v.0[current - 1..].to_vec();
        if rest.len() == 1 && rest[0].1.is_none() {
            self.versions.remove(key);
        } else {
            self.versions.get_mut(key).expect("present").0 = rest;
        }
    }

    fn emit(&self, pairs: Vec<Pair>, out: &mut Collector) -> OpResult<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let refs: Vec<_> = pairs.iter().map(|(l, r)| (Some(l.as_slice()), r.as_deref())).collect();
        let columns = pair_columns(&self.rows, &self.nulls, &self.p.schema, &refs)?;
        out.emit(RecordBatch::try_new(self.p.schema.clone(), columns)?);
        Ok(())
    }

    fn probe(&mut self, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let (keys, hashes, nulls) = key_rows(&self.keys, &batch, &self.p.keys[0], &self.p.key_types)?;
        let times = event_times(&batch, self.p.times[0])?;
        let rows = self.rows[0].convert_columns(batch.columns())?;
        let mut pairs = Vec::new();
        for (r, &hash) in hashes.iter().enumerate() {
            let (row, t) = (rows.row(r).data().to_vec(), times.value(r));
            if nulls.as_ref().is_some_and(|n| n.is_null(r)) {
                // A null key has no version.
                if self.p.join_type == JoinType::Left {
                    pairs.push((row, None));
                }
                continue;
            }
            let key = keys.row(r).data();
            if t <= self.watermark {
                self.resolve(key, t, row, &mut pairs);
                continue;
            }
            let kg = key_group(hash, self.max_parallelism);
            match self.waiting.get_mut(key) {
                Some(w) => w.0.push((t, Some(row))),
                None => self.waiting.put(kg, key.to_vec(), Timed(vec![(t, Some(row))])),
            }
            self.timers.register(t, kg, key.to_vec());
        }
        self.emit(pairs, out)
    }

    fn version(&mut self, batch: RecordBatch) -> OpResult<()> {
        let (ops, batch) = match self.p.right_op {
            Some(i) => {
                let (ops, rows) = split_changes(&batch, i)?;
                (Some(ops), rows)
            }
            None => (None, batch),
        };
        let (keys, hashes, nulls) = key_rows(&self.keys, &batch, &self.p.keys[1], &self.p.key_types)?;
        let times = event_times(&batch, self.p.times[1])?;
        let rows = self.rows[1].convert_columns(batch.columns())?;
        let mut touched = BTreeSet::new();
        for (r, &hash) in hashes.iter().enumerate() {
            if nulls.as_ref().is_some_and(|n| n.is_null(r)) {
                continue;
            }
            let op = ops.as_ref().filter(|o| o.is_valid(r)).map(|o| o.value(r));
            let row = match op {
                Some("-U") => continue,
                Some("-D") => None,
                _ => Some(rows.row(r).data().to_vec()),
            };
            let (key, t) = (keys.row(r).data(), times.value(r));
            let kg = key_group(hash, self.max_parallelism);
            match self.versions.get_mut(key) {
                Some(v) => {
                    // After the versions of the same time that came before.
                    let at = v.0.partition_point(|(vt, _)| *vt <= t);
                    v.0.insert(at, (t, row));
                }
                None => self.versions.put(kg, key.to_vec(), Timed(vec![(t, row)])),
            }
            touched.insert(key.to_vec());
        }
        for key in touched {
            self.prune(&key);
        }
        Ok(())
    }
}

impl Operator for TemporalJoin {
    fn process_batch(&mut self, input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if input == 0 {
            self.probe(batch, out)
        } else {
            self.version(batch)
        }
    }

    /// Joins the waiting rows the watermark reached, then passes it on.
    fn process_watermark(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        self.join_until(watermark, out)?;
        out.emit_watermark(watermark);
        Ok(())
    }

    /// The end of the input: every version has come, so every waiting row
    /// is joined.
    fn finish(&mut self, out: &mut Collector) -> OpResult<()> {
        self.join_until(i64::MAX, out)
    }

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        self.versions.snapshot(w);
        self.waiting.snapshot(w);
        self.timers.snapshot(w);
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        self.versions.restore(r)?;
        self.waiting.restore(r)?;
        self.timers.restore(r)
    }
}

impl TemporalJoin {
    /// Joins the waiting rows at or before `watermark`.
    fn join_until(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        self.watermark = self.watermark.max(watermark);
        let due: BTreeSet<Vec<u8>> = self.timers.fire(watermark).into_iter().map(|(_, _, key)| key).collect();
        let mut pairs = Vec::new();
        for key in due {
            let Some(waiting) = self.waiting.get(&key).cloned() else { continue };
            let (ready, later): (Vec<_>, Vec<_>) = waiting.0.into_iter().partition(|(t, _)| *t <= watermark);
            for (t, row) in ready {
                self.resolve(&key, t, row.expect("left rows are present"), &mut pairs);
            }
            if later.is_empty() {
                self.waiting.remove(&key);
            } else {
                self.waiting.get_mut(&key).expect("present").0 = later;
            }
            self.prune(&key);
        }
        self.emit(pairs, out)
    }
}

#[cfg(test)]
mod tests;
