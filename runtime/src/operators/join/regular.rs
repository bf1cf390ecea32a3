//! `regular_join`: two keyed streams joined on equal keys, whenever their
//! rows arrive — Flink SQL's regular join. Each side keeps every row it has
//! seen (until `state_ttl` drops a key idle that long), and a new row meets
//! every stored row of the other side with its key.
//!
//! An inner join of inputs that only add rows only adds rows: its output
//! has no change-kind column. An outer join's result is updating: a row
//! with no partner yet is written padded with nulls (`+I`), and when its
//! first partner comes that padded row is taken back (`-D`) before the
//! joined one is written (`+I`); the output then carries the change kind
//! in `op_column`. A row whose key is null meets nobody.
//!
//! An inner join also takes updating inputs (`left_op_column`,
//! `right_op_column`: a changelog's change kinds, `+I`, `-U`, `+U`, `-D`):
//! a row taken back (`-U`, `-D`) leaves its side's state, and each pair it
//! had made is taken back (`-D`); the output is then updating too.
//!
//! State: per side, one entry per key (its rows, with how many partners
//! each has met), written only for keys that changed since the last
//! checkpoint.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use serde::Deserialize;

use super::{join_keys, key_rows, output_fields, pair_columns, side_rows, split_changes, JoinType};
use crate::error::{OpResult, OperatorError, PlanError};
use crate::keygroup::key_group;
use crate::operators::{
    duration, millis, Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo,
};
use crate::state::{KeyedValues, StateCodec, StateReader, StateWriter};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    left_key: Vec<String>,
    right_key: Vec<String>,
    #[serde(default)]
    join_type: JoinType,
    #[serde(default)]
    right_prefix: String,
    #[serde(default)]
    names: Option<Vec<String>>,
    /// The change-kind column of an outer join's output.
    #[serde(default = "default_op")]
    op_column: String,
    #[serde(default, with = "duration::option")]
    state_ttl: Option<Duration>,
    /// The change-kind column of an updating left input.
    #[serde(default)]
    left_op_column: Option<String>,
    /// The change-kind column of an updating right input.
    #[serde(default)]
    right_op_column: Option<String>,
}

fn default_op() -> String {
    "op".into()
}

#[derive(Debug)]
struct Planned {
    keys: [Vec<usize>; 2],
    key_types: Vec<DataType>,
    join_type: JoinType,
    ttl: Option<i64>,
    /// Each input's columns without its change-kind column.
    inputs: [SchemaRef; 2],
    /// Where each updating input has its change-kind column.
    input_ops: [Option<usize>; 2],
    /// Whether the output carries change kinds (outer, or an updating input).
    updating: bool,
    schema: SchemaRef,
}

fn plan(ctx: &PlanContext<'_>) -> Result<Planned, PlanError> {
    let c: Config = ctx.config()?;
    let mut inputs = [ctx.inputs[0].clone(), ctx.inputs[1].clone()];
    let mut input_ops = [None, None];
    for (s, op) in [&c.left_op_column, &c.right_op_column].into_iter().enumerate() {
        let Some(op) = op else { continue };
        let field = format!("config.{}_op_column", SIDES[s]);
        let i = inputs[s]
            .index_of(op)
            .map_err(|_| ctx.error(format!("no column `{op}` in the {} input", SIDES[s])).field(field.clone()))?;
        if inputs[s].field(i).data_type() != &DataType::Utf8 {
            return Err(ctx.error(format!("change-kind column `{op}` must be a string")).field(field));
        }
        if c.join_type != JoinType::Inner {
            return Err(ctx
                .error("not supported: an outer join of an updating input (only inner joins take one)")
                .field(field));
        }
        let rest: Vec<Field> =
            inputs[s].fields().iter().enumerate().filter(|(j, _)| *j != i).map(|(_, f)| f.as_ref().clone()).collect();
        inputs[s] = Arc::new(Schema::new(rest));
        input_ops[s] = Some(i);
    }
    let (keys, key_types) = join_keys(ctx, &inputs, &c.left_key, &c.right_key)?;
    let mut fields = output_fields(ctx, &inputs, c.join_type, &c.right_prefix, c.names.as_deref())?;
    let updating = c.join_type != JoinType::Inner || input_ops.iter().any(Option::is_some);
    if updating {
        if fields.iter().any(|f| f.name() == &c.op_column) {
            return Err(ctx.error(format!("output column `{}` already exists", c.op_column)).field("config.op_column"));
        }
        fields.push(Field::new(&c.op_column, DataType::Utf8, false));
    }
    let ttl = c.state_ttl.filter(|d| !d.is_zero()).map(millis);
    Ok(Planned {
        keys,
        key_types,
        join_type: c.join_type,
        ttl,
        inputs,
        input_ops,
        updating,
        schema: Arc::new(Schema::new(fields)),
    })
}

/// Factory of `regular_join`.
#[derive(Debug)]
pub struct RegularJoinFactory;

/// Each side's rows by key.
const SIDES: [&str; 2] = ["left", "right"];

impl OperatorFactory for RegularJoinFactory {
    fn kind(&self) -> &str {
        "regular_join"
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
        (0..2)
            .map(|s| {
                let rows = super::describe_columns(&p.inputs[s]);
                (SIDES[s].to_string(), format!("rows by [{}] of [{rows}]", keys.join(", ")))
            })
            .collect()
    }
    fn create(&self, ctx: &PlanContext<'_>, info: SubtaskInfo) -> Result<Instance, PlanError> {
        let p = plan(ctx)?;
        let err = |e: arrow::error::ArrowError| ctx.error(e.to_string());
        let keys = RowConverter::new(p.key_types.iter().map(|t| SortField::new(t.clone())).collect()).map_err(err)?;
        let (rows, nulls) = side_rows(&p.inputs).map_err(err)?;
        Ok(Instance::Operator(Box::new(RegularJoin {
            keys,
            rows,
            nulls,
            state: [KeyedValues::new(SIDES[0]), KeyedValues::new(SIDES[1])],
            max_parallelism: info.max_parallelism,
            last_sweep: None,
            p,
        })))
    }
}

/// The rows of one key on one side: row bytes and how many partners each
/// has met; when a row last came (milliseconds since the epoch, with a TTL).
#[derive(Debug, Clone, Default, PartialEq)]
struct KeyRows {
    touched: i64,
    rows: Vec<(Vec<u8>, u32)>,
}

impl StateCodec for KeyRows {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.touched.to_be_bytes());
        for (row, matches) in &self.rows {
            out.extend_from_slice(&(row.len() as u32).to_be_bytes());
            out.extend_from_slice(row);
            out.extend_from_slice(&matches.to_be_bytes());
        }
    }
    fn decode(b: &[u8]) -> OpResult<Self> {
        let bad = || OperatorError::State("restored join rows do not decode".into());
        let mut at = 8;
        let touched = i64::from_be_bytes(b.get(..8).ok_or_else(bad)?.try_into().expect("8 bytes"));
        let mut rows = Vec::new();
        while at < b.len() {
            let n = u32::from_be_bytes(b.get(at..at + 4).ok_or_else(bad)?.try_into().expect("4 bytes")) as usize;
            let row = b.get(at + 4..at + 4 + n).ok_or_else(bad)?.to_vec();
            let m = u32::from_be_bytes(b.get(at + 4 + n..at + 8 + n).ok_or_else(bad)?.try_into().expect("4 bytes"));
            rows.push((row, m));
            at += 8 + n;
        }
        Ok(KeyRows { touched, rows })
    }
}

struct RegularJoin {
    p: Planned,
    keys: RowConverter,
    /// Per side: its columns to row bytes and back, and an all-null row.
    rows: Vec<RowConverter>,
    nulls: Vec<Vec<u8>>,
    state: [KeyedValues<KeyRows>; 2],
    max_parallelism: u32,
    last_sweep: Option<Instant>,
}

/// One output row: the left row, the right row (`None`: padded), the change kind.
type Joined = (Option<Vec<u8>>, Option<Vec<u8>>, &'static str);

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl RegularJoin {
    fn emit(&self, joined: Vec<Joined>, out: &mut Collector) -> OpResult<()> {
        if joined.is_empty() {
            return Ok(());
        }
        let pairs: Vec<_> = joined.iter().map(|j| (j.0.as_deref(), j.1.as_deref())).collect();
        let mut columns = pair_columns(&self.rows, &self.nulls, &self.p.schema, &pairs)?;
        if self.p.updating {
            columns.push(Arc::new(StringArray::from_iter_values(joined.iter().map(|j| j.2))));
        }
        out.emit(RecordBatch::try_new(self.p.schema.clone(), columns)?);
        Ok(())
    }

    fn expire(&mut self, now: Instant) {
        let Some(ttl) = self.p.ttl else { return };
        let every = Duration::from_millis((ttl / 10).clamp(10, 60_000) as u64);
        if self.last_sweep.is_some_and(|t| now.duration_since(t) < every) {
            return;
        }
        self.last_sweep = Some(now);
        let oldest = now_ms() - ttl;
        for side in &mut self.state {
            let idle: Vec<Vec<u8>> = side.iter().filter(|(_, r)| r.touched < oldest).map(|(k, _)| k.to_vec()).collect();
            for k in &idle {
                side.remove(k);
            }
        }
    }
}

impl Operator for RegularJoin {
    fn process_batch(&mut self, input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let (me, other) = (input, 1 - input);
        // An updating input's change kinds, and its rows without them.
        let (ops, batch) = match self.p.input_ops[me] {
            Some(i) => {
                let (ops, rows) = split_changes(&batch, i)?;
                (Some(ops), rows)
            }
            None => (None, batch),
        };
        let (keys, hashes, nulls) = key_rows(&self.keys, &batch, &self.p.keys[me], &self.p.key_types)?;
        let rows = self.rows[me].convert_columns(batch.columns())?;
        let touched = if self.p.ttl.is_some() { now_ms() } else { 0 };
        let (outer_me, outer_other) = (self.p.join_type.outer(me), self.p.join_type.outer(other));
        let pair = |mine: Vec<u8>, theirs: Option<Vec<u8>>, op| {
            if me == 0 {
                (Some(mine), theirs, op)
            } else {
                (theirs, Some(mine), op)
            }
        };
        let mut joined: Vec<Joined> = Vec::new();
        for (r, &hash) in hashes.iter().enumerate() {
            let row = rows.row(r).data();
            let retract = ops.as_ref().is_some_and(|o| o.is_valid(r) && matches!(o.value(r), "-U" | "-D"));
            if nulls.as_ref().is_some_and(|n| n.is_null(r)) {
                if outer_me {
                    joined.push(pair(row.to_vec(), None, "+I"));
                }
                continue;
            }
            if retract {
                // Only inner joins take updating inputs: the row leaves its
                // side, and the pairs it made are taken back.
                let key = keys.row(r).data();
                if let Some(mine) = self.state[me].get_mut(key) {
                    if let Some(i) = mine.rows.iter().position(|(x, _)| x.as_slice() == row) {
                        mine.rows.swap_remove(i);
                    }
                    if mine.rows.is_empty() {
                        self.state[me].remove(key);
                    }
                }
                if let Some(theirs) = self.state[other].get(key) {
                    for (their_row, _) in &theirs.rows {
                        joined.push(pair(row.to_vec(), Some(their_row.clone()), "-D"));
                    }
                }
                continue;
            }
            let key = keys.row(r).data();
            let mut matches = 0u32;
            if let Some(theirs) = self.state[other].get(key) {
                for (their_row, m) in &theirs.rows {
                    if outer_other && *m == 0 {
                        // Their row was written padded: take that back.
                        let padded = if me == 0 {
                            (None, Some(their_row.clone()), "-D")
                        } else {
                            (Some(their_row.clone()), None, "-D")
                        };
                        joined.push(padded);
                    }
                    joined.push(pair(row.to_vec(), Some(their_row.clone()), "+I"));
                    matches += 1;
                }
                if outer_other {
                    // Their rows have met one more partner (counts matter
                    // only while a row may still be padded).
                    for (_, m) in &mut self.state[other].get_mut(key).expect("present").rows {
                        *m = m.saturating_add(1);
                    }
                }
            }
            if matches == 0 && outer_me {
                joined.push(pair(row.to_vec(), None, "+I"));
            }
            match self.state[me].get_mut(key) {
                Some(mine) => {
                    mine.rows.push((row.to_vec(), matches));
                    mine.touched = touched;
                }
                None => {
                    let kg = key_group(hash, self.max_parallelism);
                    self.state[me].put(kg, key.to_vec(), KeyRows { touched, rows: vec![(row.to_vec(), matches)] });
                }
            }
        }
        self.emit(joined, out)
    }

    fn on_processing_time(&mut self, now: Instant, _out: &mut Collector) -> OpResult<()> {
        self.expire(now);
        Ok(())
    }

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        for side in &mut self.state {
            side.snapshot(w);
        }
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        for side in &mut self.state {
            side.restore(r)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
