//! `interval_join`: an event-time join of two keyed streams. A left row `l`
//! and a right row `r` with equal keys meet when
//! `l.time + lower <= r.time <= l.time + upper` (bounds in milliseconds,
//! either may be negative) — Flink SQL's interval join, Kafka Streams'
//! stream–stream join with `JoinWindows`.
//!
//! Each side keeps its rows only while a row of the other side that is not
//! late could still meet them: a left row until the watermark reaches
//! `l.time + upper`, a right row until it reaches `r.time - lower`. With an
//! outer join, a kept row that met nobody is emitted with nulls for the
//! other side when it is dropped (a row that arrives too late to be kept is
//! padded at once). The output watermark is held back by
//! `max(0, upper, -lower)`, so no row the join emits is late for the
//! operators after it.
//!
//! State: the kept rows of each side, one entry per key group (an Arrow IPC
//! batch of the side's columns plus whether each row met a partner), so that
//! a restore at another parallelism takes exactly its key groups; only the
//! key groups that changed are written to an incremental backend.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{cast, interleave};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use serde::{Deserialize, Deserializer};

use super::{ipc_decode, ipc_encode, join_keys, output_fields, JoinType};
use crate::error::{OpResult, OperatorError, PlanError};
use crate::keygroup::{hash_rows, key_group};
use crate::operators::watermark::{event_times, time_column};
use crate::operators::{duration, Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use crate::state::{StateReader, StateWriter};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    left_key: Vec<String>,
    right_key: Vec<String>,
    left_time: String,
    right_time: String,
    #[serde(deserialize_with = "signed_ms")]
    lower: i64,
    #[serde(deserialize_with = "signed_ms")]
    upper: i64,
    #[serde(default)]
    join_type: JoinType,
    #[serde(default)]
    right_prefix: String,
    #[serde(default)]
    names: Option<Vec<String>>,
}

/// A bound: milliseconds as a number, or a duration that may be negative
/// (`-5s`, `10m`).
fn signed_ms<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Bound {
        Millis(i64),
        Text(String),
    }
    match Bound::deserialize(d)? {
        Bound::Millis(ms) => Ok(ms),
        Bound::Text(s) => {
            let (negative, magnitude) = match s.trim().strip_prefix('-') {
                Some(rest) => (true, rest.trim()),
                None => (false, s.trim()),
            };
            let ms = crate::operators::millis(duration::parse(magnitude).map_err(serde::de::Error::custom)?);
            Ok(if negative { -ms } else { ms })
        }
    }
}

#[derive(Debug, Clone)]
struct Planned {
    keys: [Vec<usize>; 2],
    times: [usize; 2],
    key_types: Vec<DataType>,
    lower: i64,
    upper: i64,
    join_type: JoinType,
    inputs: [SchemaRef; 2],
    schema: SchemaRef,
}

impl Planned {
    /// The times of the other side that a row of `side` at `t` meets.
    fn range(&self, side: usize, t: i64) -> (i64, i64) {
        if side == 0 {
            (t.saturating_add(self.lower), t.saturating_add(self.upper))
        } else {
            (t.saturating_sub(self.upper), t.saturating_sub(self.lower))
        }
    }

    /// The watermark at which a row of `side` at `t` can meet no row to come.
    fn expiry(&self, side: usize, t: i64) -> i64 {
        self.range(side, t).1
    }

    /// How far the output watermark stays behind the input's.
    fn hold_back(&self) -> i64 {
        self.upper.max(self.lower.saturating_neg()).max(0)
    }
}

fn plan(ctx: &PlanContext<'_>) -> Result<Planned, PlanError> {
    let c: Config = ctx.config()?;
    if c.lower > c.upper {
        return Err(ctx
            .error(format!("lower ({} ms) is after upper ({} ms): no pair of rows could ever meet", c.lower, c.upper))
            .field("config.lower"));
    }
    let inputs = [ctx.inputs[0].clone(), ctx.inputs[1].clone()];
    let (keys, key_types) = join_keys(ctx, &inputs, &c.left_key, &c.right_key)?;
    let times = [
        time_column(ctx, &inputs[0], &c.left_time, "config.left_time")?,
        time_column(ctx, &inputs[1], &c.right_time, "config.right_time")?,
    ];
    let fields = output_fields(ctx, &inputs, c.join_type, &c.right_prefix, c.names.as_deref())?;
    Ok(Planned {
        keys,
        times,
        key_types,
        lower: c.lower,
        upper: c.upper,
        join_type: c.join_type,
        inputs,
        schema: Arc::new(Schema::new(fields)),
    })
}

/// Factory of `interval_join`.
#[derive(Debug)]
pub struct IntervalJoinFactory;

impl OperatorFactory for IntervalJoinFactory {
    fn kind(&self) -> &str {
        "interval_join"
    }
    fn arity(&self) -> Arity {
        Arity::Two
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Ok(plan(ctx)?.schema)
    }
    fn state_types(&self, ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        let Ok(p) = plan(ctx) else { return Vec::new() };
        let columns = super::describe_columns;
        let keys: Vec<String> = p.key_types.iter().map(|t| t.to_string()).collect();
        STATES
            .iter()
            .zip(&p.inputs)
            .map(|(name, s)| {
                (name.to_string(), format!("rows by [{}] of [{}] with a matched flag", keys.join(", "), columns(s)))
            })
            .collect()
    }
    fn create(&self, ctx: &PlanContext<'_>, subtask: SubtaskInfo) -> Result<Instance, PlanError> {
        let p = plan(ctx)?;
        let converter = RowConverter::new(p.key_types.iter().map(|t| SortField::new(t.clone())).collect())
            .map_err(|e| ctx.error(e.to_string()))?;
        let null_row = |schema: &SchemaRef| {
            let nullable: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
            RecordBatch::try_new(
                Arc::new(Schema::new(nullable)),
                schema.fields().iter().map(|f| new_null_array(f.data_type(), 1)).collect(),
            )
            .map_err(|e| ctx.error(e.to_string()))
        };
        let null_rows = [null_row(&p.inputs[0])?, null_row(&p.inputs[1])?];
        Ok(Instance::Operator(Box::new(IntervalJoin {
            converter,
            sides: [Side::default(), Side::default()],
            null_rows,
            watermark: i64::MIN,
            emitted: i64::MIN,
            max_parallelism: subtask.max_parallelism.max(1),
            p,
        })))
    }
}

const STATES: [&str; 2] = ["left", "right"];
const MATCHED_COLUMN: &str = "__weir_matched";

/// A kept row: its time, where it is, and whether it met a partner.
#[derive(Debug, Clone, Copy)]
struct Kept {
    time: i64,
    batch: u32,
    row: u32,
    matched: bool,
}

/// The kept rows of one key.
#[derive(Debug)]
struct KeyRows {
    key_group: u32,
    /// The earliest expiry among `rows` that the expiry queue holds.
    next: i64,
    rows: Vec<Kept>,
}

/// The rows one side keeps.
#[derive(Default)]
struct Side {
    /// Input batches still holding kept rows (`None` once none is).
    batches: Vec<Option<RecordBatch>>,
    /// Kept rows per batch.
    live: Vec<u32>,
    keys: HashMap<Box<[u8]>, KeyRows>,
    /// (expiry, key): when to look at a key's rows again.
    expiry: BinaryHeap<Reverse<(i64, Box<[u8]>)>>,
    /// Key groups changed since the last snapshot.
    dirty: HashSet<u32>,
    kept: usize,
}

impl Side {
    fn push_batch(&mut self, batch: RecordBatch) -> u32 {
        self.batches.push(Some(batch));
        self.live.push(0);
        (self.batches.len() - 1) as u32
    }

    fn keep(&mut self, key: &[u8], key_group: u32, row: Kept, expiry: i64) {
        self.live[row.batch as usize] += 1;
        self.kept += 1;
        self.dirty.insert(key_group);
        if !self.keys.contains_key(key) {
            self.keys.insert(key.into(), KeyRows { key_group, next: i64::MAX, rows: Vec::new() });
        }
        let entry = self.keys.get_mut(key).expect("inserted");
        entry.rows.push(row);
        if expiry < entry.next {
            entry.next = expiry;
            self.expiry.push(Reverse((expiry, key.into())));
        }
    }

    /// Drops the batches no kept row points into any more.
    fn release(&mut self, from: usize) {
        for b in from..self.batches.len() {
            if self.live[b] == 0 {
                self.batches[b] = None;
            }
        }
        while self.batches.last().is_some_and(Option::is_none) {
            self.batches.pop();
            self.live.pop();
        }
    }

    /// Rows held in memory by the batches still referenced.
    fn held_rows(&self) -> usize {
        self.batches.iter().flatten().map(RecordBatch::num_rows).sum()
    }
}

/// Output rows as (batch, row) picks of each side; a pick of batch
/// `batches.len()` is that side's null row.
#[derive(Default)]
struct Pairs {
    picks: [Vec<(usize, usize)>; 2],
}

impl Pairs {
    fn push(&mut self, side: usize, this: (usize, usize), other: (usize, usize)) {
        self.picks[side].push(this);
        self.picks[1 - side].push(other);
    }
}

struct IntervalJoin {
    p: Planned,
    converter: RowConverter,
    sides: [Side; 2],
    null_rows: [RecordBatch; 2],
    /// The input watermark.
    watermark: i64,
    /// The last watermark emitted.
    emitted: i64,
    max_parallelism: u32,
}

impl IntervalJoin {
    fn keys(&self, side: usize, batch: &RecordBatch) -> OpResult<(Rows, Option<arrow::buffer::NullBuffer>, Vec<u32>)> {
        let mut widened: Vec<ArrayRef> = Vec::with_capacity(self.p.key_types.len());
        let mut originals: Vec<ArrayRef> = Vec::with_capacity(self.p.key_types.len());
        let mut nulls: Option<arrow::buffer::NullBuffer> = None;
        for (&c, t) in self.p.keys[side].iter().zip(&self.p.key_types) {
            let a = batch.column(c);
            nulls = arrow::buffer::NullBuffer::union(nulls.as_ref(), a.logical_nulls().as_ref());
            widened.push(if a.data_type() == t { a.clone() } else { cast(a, t)? });
            originals.push(a.clone());
        }
        let mut hashes = Vec::new();
        hash_rows(&originals, &mut hashes)?;
        let groups = hashes.into_iter().map(|h| key_group(h, self.max_parallelism)).collect();
        Ok((self.converter.convert_columns(&widened)?, nulls, groups))
    }

    /// Both sides' rows of `pairs` as output batches.
    fn emit(&self, pairs: &Pairs, out: &mut Collector) -> OpResult<()> {
        if pairs.picks[0].is_empty() {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.p.schema.fields().len());
        for s in 0..2 {
            let null = &self.null_rows[s];
            for c in 0..self.p.inputs[s].fields().len() {
                let arrays: Vec<&dyn Array> = self.sides[s]
                    .batches
                    .iter()
                    .map(|b| b.as_ref().unwrap_or(null).column(c).as_ref())
                    .chain(std::iter::once(null.column(c).as_ref()))
                    .collect();
                columns.push(interleave(&arrays, &pairs.picks[s])?);
            }
        }
        out.emit(RecordBatch::try_new(self.p.schema.clone(), columns)?);
        Ok(())
    }

    fn process(&mut self, side: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let times = event_times(&batch, self.p.times[side])?;
        let (rows, nulls, groups) = self.keys(side, &batch)?;
        let outer = self.p.join_type.outer(side);
        let other_outer = self.p.join_type.outer(1 - side);
        let watermark = self.watermark;
        let (this, other) = {
            let [l, r] = &mut self.sides;
            if side == 0 {
                (l, r)
            } else {
                (r, l)
            }
        };
        let b = this.push_batch(batch);
        let null_pick = (other.batches.len(), 0);
        let mut pairs = Pairs::default();
        for (r, &group) in groups.iter().enumerate() {
            if nulls.as_ref().is_some_and(|n| n.is_null(r)) {
                // A null key meets nobody.
                if outer {
                    pairs.push(side, (b as usize, r), null_pick);
                }
                continue;
            }
            let t = times.value(r);
            let key = rows.row(r);
            let (lo, hi) = self.p.range(side, t);
            let mut matched = false;
            if let Some(theirs) = other.keys.get_mut(key.as_ref()) {
                let mut newly = false;
                for k in theirs.rows.iter_mut().filter(|k| lo <= k.time && k.time <= hi) {
                    matched = true;
                    newly |= !k.matched;
                    k.matched = true;
                    pairs.push(side, (b as usize, r), (k.batch as usize, k.row as usize));
                }
                if newly && other_outer {
                    other.dirty.insert(theirs.key_group);
                }
            }
            let expiry = self.p.expiry(side, t);
            if expiry > watermark {
                this.keep(key.as_ref(), group, Kept { time: t, batch: b, row: r as u32, matched }, expiry);
            } else if outer && !matched {
                pairs.push(side, (b as usize, r), null_pick);
            }
        }
        self.emit(&pairs, out)?;
        self.sides[side].release(b as usize);
        self.compact_if_sparse(side)
    }

    /// Drops every kept row that can meet no row to come (all of them when
    /// `watermark` is `i64::MAX`), padding the unmatched ones of outer sides.
    fn expire(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        for side in 0..2 {
            let outer = self.p.join_type.outer(side);
            let null_pick = (self.sides[1 - side].batches.len(), 0);
            let mut pairs = Pairs::default();
            let p = &self.p;
            let s = &mut self.sides[side];
            while let Some(Reverse((at, _))) = s.expiry.peek() {
                if *at > watermark {
                    break;
                }
                let Reverse((at, key)) = s.expiry.pop().expect("peeked");
                let Some(entry) = s.keys.get_mut(&key) else { continue };
                if entry.next != at {
                    continue; // superseded by an earlier expiry
                }
                let mut next = i64::MAX;
                let mut dropped = 0;
                entry.rows.retain(|k| {
                    let e = p.expiry(side, k.time);
                    if e > watermark {
                        next = next.min(e);
                        return true;
                    }
                    if outer && !k.matched {
                        pairs.push(side, (k.batch as usize, k.row as usize), null_pick);
                    }
                    s.live[k.batch as usize] -= 1;
                    dropped += 1;
                    false
                });
                s.kept -= dropped;
                if dropped > 0 {
                    s.dirty.insert(entry.key_group);
                }
                if entry.rows.is_empty() {
                    s.keys.remove(&key);
                } else {
                    entry.next = next;
                    s.expiry.push(Reverse((next, key)));
                }
            }
            self.emit(&pairs, out)?;
            self.sides[side].release(0);
            self.compact_if_sparse(side)?;
        }
        Ok(())
    }

    /// Copies the kept rows of a side into one batch when the batches they
    /// point into hold mostly dropped rows.
    fn compact_if_sparse(&mut self, side: usize) -> OpResult<()> {
        let s = &self.sides[side];
        let held = s.held_rows();
        if held < 65_536 || held < 4 * s.kept {
            return Ok(());
        }
        let mut picks = Vec::with_capacity(s.kept);
        for entry in s.keys.values() {
            picks.extend(entry.rows.iter().map(|k| (k.batch as usize, k.row as usize)));
        }
        let compacted = self.gather(side, &picks)?;
        let s = &mut self.sides[side];
        let mut i = 0u32;
        for entry in s.keys.values_mut() {
            for k in &mut entry.rows {
                k.batch = 0;
                k.row = i;
                i += 1;
            }
        }
        s.batches = vec![Some(compacted)];
        s.live = vec![i];
        Ok(())
    }

    /// The rows at `picks` of a side's batches, as one batch.
    fn gather(&self, side: usize, picks: &[(usize, usize)]) -> OpResult<RecordBatch> {
        let schema = &self.p.inputs[side];
        let null = &self.null_rows[side];
        let columns = (0..schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn Array> =
                    self.sides[side].batches.iter().map(|b| b.as_ref().unwrap_or(null).column(c).as_ref()).collect();
                Ok(interleave(&arrays, picks)?)
            })
            .collect::<OpResult<Vec<_>>>()?;
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }

    fn state_schema(&self, side: usize) -> SchemaRef {
        let mut fields: Vec<Field> = self.p.inputs[side].fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(MATCHED_COLUMN, DataType::Boolean, false));
        Arc::new(Schema::new(fields))
    }

    fn snapshot_side(&mut self, side: usize, w: &mut StateWriter) -> OpResult<()> {
        let s = &self.sides[side];
        let wanted: HashSet<u32> =
            if w.full() { s.keys.values().map(|e| e.key_group).collect() } else { s.dirty.clone() };
        let mut by_group: HashMap<u32, Vec<Kept>> = HashMap::new();
        for entry in s.keys.values().filter(|e| wanted.contains(&e.key_group)) {
            by_group.entry(entry.key_group).or_default().extend(entry.rows.iter().copied());
        }
        let schema = self.state_schema(side);
        for &group in &wanted {
            let key = group.to_be_bytes().to_vec();
            let Some(rows) = by_group.get(&group) else {
                w.delete(STATES[side], group, key);
                continue;
            };
            let picks: Vec<(usize, usize)> = rows.iter().map(|k| (k.batch as usize, k.row as usize)).collect();
            let mut columns = self.gather(side, &picks)?.columns().to_vec();
            columns.push(Arc::new(BooleanArray::from_iter(rows.iter().map(|k| Some(k.matched)))));
            let batch = RecordBatch::try_new(schema.clone(), columns)?;
            w.put(STATES[side], group, key, ipc_encode(&schema, &[batch])?);
        }
        self.sides[side].dirty.clear();
        Ok(())
    }

    fn restore_side(&mut self, side: usize, r: &StateReader<'_>) -> OpResult<()> {
        self.sides[side] = Side::default();
        for e in r.state(STATES[side]) {
            for batch in ipc_decode(e.value.as_deref().unwrap_or_default())? {
                let n = batch.num_columns();
                if n != self.p.inputs[side].fields().len() + 1 {
                    return Err(OperatorError::State(format!(
                        "the {} rows of the join have {n} columns",
                        STATES[side]
                    )));
                }
                let matched = batch.column(n - 1).as_boolean().clone();
                let rows = RecordBatch::try_new(self.p.inputs[side].clone(), batch.columns()[..n - 1].to_vec())?;
                let times = event_times(&rows, self.p.times[side])?;
                let (keys, _, groups) = self.keys(side, &rows)?;
                let s = &mut self.sides[side];
                let b = s.push_batch(rows);
                for (i, &group) in groups.iter().enumerate() {
                    let t = times.value(i);
                    let kept = Kept { time: t, batch: b, row: i as u32, matched: matched.value(i) };
                    s.keep(keys.row(i).as_ref(), group, kept, self.p.expiry(side, t));
                }
            }
        }
        self.sides[side].dirty.clear();
        Ok(())
    }
}

impl Operator for IntervalJoin {
    fn process_batch(&mut self, input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        self.process(input.min(1), batch, out)
    }

    fn process_watermark(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        self.expire(watermark, out)?;
        let held = if watermark == i64::MAX { i64::MAX } else { watermark.saturating_sub(self.p.hold_back()) };
        if held > self.emitted {
            self.emitted = held;
            out.emit_watermark(held);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Collector) -> OpResult<()> {
        self.expire(i64::MAX, out)
    }

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        self.snapshot_side(0, w)?;
        self.snapshot_side(1, w)
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        self.restore_side(0, r)?;
        self.restore_side(1, r)
    }
}

#[cfg(test)]
mod tests;
