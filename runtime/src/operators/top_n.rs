//! `top_n`: the first `limit` rows of each partition key by an order — Flink
//! SQL's Top-N (`ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...) <= N`)
//! without a window. Its result is updating: each output row carries its
//! rank (1 is first) and its change kind in a text column. A batch that
//! changes a partition's ranking emits, for every rank whose row changed,
//! `-U` the old row and `+U` the new one, and `+I` for a rank newly filled.
//!
//! The input only adds rows: a row that ranks below `limit` can never rise
//! again, so each partition keeps just its first `limit` rows. Rows that
//! sort equal keep their arrival order (a later one ranks after).
//!
//! State: one entry per partition key (its kept rows, as sort and row
//! bytes), written only for partitions that changed since the last
//! checkpoint.
//!
//! With `window_end_column` it is a window Top-N (Flink's Top-N over the
//! rows of one window, `PARTITION BY window_start, window_end, ...`): the
//! column must be a partition key, and a partition's rows are ranked
//! quietly until the watermark reaches the window's last instant
//! (`window_end - 1`); then its first rows are emitted once, with their
//! ranks, and forgotten. The result only appends, so it has no change-kind
//! column. Rows of a window the watermark already passed are late and
//! dropped, as in Flink.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{take_record_batch, SortOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use serde::Deserialize;

use super::watermark::{event_times, time_column};
use super::{Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use crate::error::{OpResult, OperatorError, PlanError};
use crate::keygroup::{hash_rows, key_group};
use crate::state::{KeyedValues, StateCodec, StateReader, StateWriter, Timers};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    partition_key: Vec<String>,
    order_by: Vec<OrderBy>,
    limit: usize,
    #[serde(default = "default_rank")]
    rank_column: String,
    #[serde(default = "default_op")]
    op_column: String,
    /// A window Top-N: the column holding each row's window end
    /// (milliseconds, or a millisecond timestamp).
    #[serde(default)]
    window_end_column: Option<String>,
}

fn default_rank() -> String {
    "rank".into()
}

fn default_op() -> String {
    "op".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderBy {
    column: String,
    #[serde(default)]
    descending: bool,
    /// Default: nulls last ascending, first descending (as Flink SQL).
    #[serde(default)]
    nulls_first: Option<bool>,
}

#[derive(Debug)]
struct Planned {
    key: Vec<usize>,
    order: Vec<(usize, SortOptions)>,
    limit: usize,
    /// A window Top-N's window-end column.
    window_end: Option<usize>,
    schema: SchemaRef,
    input: SchemaRef,
}

fn plan(ctx: &PlanContext<'_>) -> Result<Planned, PlanError> {
    let c: Config = ctx.config()?;
    let input = ctx.inputs[0].clone();
    let column = |name: &str, field: &str| {
        input.index_of(name).map_err(|_| ctx.error(format!("no column `{name}` in the input")).field(field))
    };
    if c.partition_key.is_empty() {
        return Err(ctx.error("a Top-N needs at least one partition key column").field("config.partition_key"));
    }
    let key = ctx.key_columns(0, &c.partition_key, "config.partition_key")?;
    if c.order_by.is_empty() {
        return Err(ctx.error("a Top-N needs an order").field("config.order_by"));
    }
    let order = c
        .order_by
        .iter()
        .map(|o| {
            let i = column(&o.column, "config.order_by")?;
            Ok((i, SortOptions { descending: o.descending, nulls_first: o.nulls_first.unwrap_or(o.descending) }))
        })
        .collect::<Result<Vec<_>, PlanError>>()?;
    if c.limit == 0 {
        return Err(ctx.error("limit must be at least 1").field("config.limit"));
    }
    let window_end = match &c.window_end_column {
        None => None,
        Some(name) => {
            let at = "config.window_end_column";
            let i = time_column(ctx, &input, name, at)?;
            if !c.partition_key.contains(name) {
                return Err(ctx.error(format!("`{name}` must also be a partition key column")).field(at));
            }
            Some(i)
        }
    };
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    // A window Top-N only appends: no change kinds.
    let added = if window_end.is_some() { vec![&c.rank_column] } else { vec![&c.rank_column, &c.op_column] };
    for name in &added {
        if fields.iter().any(|f| f.name() == *name) {
            return Err(ctx.error(format!("output column `{name}` already exists")).field("config"));
        }
    }
    fields.push(Field::new(&c.rank_column, DataType::Int64, false));
    if window_end.is_none() {
        fields.push(Field::new(&c.op_column, DataType::Utf8, false));
    }
    Ok(Planned { key, order, limit: c.limit, window_end, schema: Arc::new(Schema::new(fields)), input })
}

/// Factory of `top_n`.
#[derive(Debug)]
pub struct TopNFactory;

/// The kept rows of every partition key.
const ROWS_STATE: &str = "rows";
/// A window Top-N's partitions by the last instant of their window.
const TIMERS_STATE: &str = "timers";

impl OperatorFactory for TopNFactory {
    fn kind(&self) -> &str {
        "top_n"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Ok(plan(ctx)?.schema)
    }
    fn state_types(&self, ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        let Ok(p) = plan(ctx) else { return Vec::new() };
        let name = |i: usize| p.input.field(i).name().clone();
        let order: Vec<String> =
            p.order.iter().map(|(i, o)| format!("{}{}", name(*i), if o.descending { " desc" } else { "" })).collect();
        let keys: Vec<String> = p.key.iter().map(|&i| name(i)).collect();
        let rows = format!(
            "first {} by [{}] per [{}] of [{}]",
            p.limit,
            order.join(", "),
            keys.join(", "),
            super::join::describe_columns(&p.input)
        );
        match p.window_end {
            None => vec![(ROWS_STATE.into(), rows)],
            Some(end) => vec![
                (ROWS_STATE.into(), format!("{rows} until {} passes", name(end))),
                (TIMERS_STATE.into(), format!("partitions by the end of their window in {}", name(end))),
            ],
        }
    }
    fn create(&self, ctx: &PlanContext<'_>, info: SubtaskInfo) -> Result<Instance, PlanError> {
        let p = plan(ctx)?;
        let field = |i: usize| p.input.field(i).data_type().clone();
        let err = |e: arrow::error::ArrowError| ctx.error(e.to_string());
        let keys = RowConverter::new(p.key.iter().map(|&i| SortField::new(field(i))).collect()).map_err(err)?;
        let sort = RowConverter::new(p.order.iter().map(|(i, o)| SortField::new_with_options(field(*i), *o)).collect())
            .map_err(err)?;
        let rows = RowConverter::new(p.input.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())
            .map_err(err)?;
        Ok(Instance::Operator(Box::new(TopN {
            keys,
            sort,
            rows,
            state: KeyedValues::new(ROWS_STATE),
            timers: Timers::new(TIMERS_STATE),
            watermark: i64::MIN,
            max_parallelism: info.max_parallelism,
            p,
        })))
    }
}

/// A partition's first rows, in rank order: (sort bytes, row bytes).
#[derive(Debug, Clone, Default, PartialEq)]
struct Ranked(Vec<(Vec<u8>, Vec<u8>)>);

impl Ranked {
    /// Adds a row where its sort bytes rank it, keeping the first `limit`
    /// (an equal row ranks after those already kept).
    fn insert(&mut self, sort: &[u8], row: &[u8], limit: usize) {
        let at = self.0.partition_point(|(x, _)| x.as_slice() <= sort);
        if at < limit {
            self.0.insert(at, (sort.to_vec(), row.to_vec()));
            self.0.truncate(limit);
        }
    }
}

impl StateCodec for Ranked {
    fn encode(&self, out: &mut Vec<u8>) {
        for (sort, row) in &self.0 {
            for b in [sort, row] {
                out.extend_from_slice(&(b.len() as u32).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }
    fn decode(mut b: &[u8]) -> OpResult<Self> {
        fn take(b: &mut &[u8]) -> OpResult<Vec<u8>> {
            let bad = || OperatorError::State("restored Top-N rows do not decode".into());
            let n = u32::from_be_bytes(b.get(..4).ok_or_else(bad)?.try_into().expect("4 bytes")) as usize;
            let v = b.get(4..4 + n).ok_or_else(bad)?.to_vec();
            *b = &b[4 + n..];
            Ok(v)
        }
        let mut out = Vec::new();
        while !b.is_empty() {
            let sort = take(&mut b)?;
            out.push((sort, take(&mut b)?));
        }
        Ok(Ranked(out))
    }
}

struct TopN {
    p: Planned,
    keys: RowConverter,
    sort: RowConverter,
    rows: RowConverter,
    state: KeyedValues<Ranked>,
    /// A window Top-N's partitions, due at their window's last instant.
    timers: Timers,
    watermark: i64,
    max_parallelism: u32,
}

/// A batch's rows by partition key, partitions in the order they come.
fn partitions(keys: &Rows, n: usize) -> Vec<(&[u8], Vec<usize>)> {
    let mut index: HashMap<&[u8], usize> = HashMap::new();
    let mut parts: Vec<(&[u8], Vec<usize>)> = Vec::new();
    for r in 0..n {
        let key = keys.row(r).data();
        let i = *index.entry(key).or_insert_with(|| {
            parts.push((key, Vec::new()));
            parts.len() - 1
        });
        parts[i].1.push(r);
    }
    parts
}

impl TopN {
    /// Output rows of `changes`: (row bytes, rank, change kind).
    fn emit(&self, changes: Vec<(Vec<u8>, i64, &'static str)>, out: &mut Collector) -> OpResult<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let parser = self.rows.parser();
        let mut columns: Vec<ArrayRef> = self.rows.convert_rows(changes.iter().map(|c| parser.parse(&c.0)))?;
        columns.push(Arc::new(Int64Array::from_iter_values(changes.iter().map(|c| c.1))));
        if self.p.window_end.is_none() {
            columns.push(Arc::new(StringArray::from_iter_values(changes.iter().map(|c| c.2))));
        }
        out.emit(RecordBatch::try_new(self.p.schema.clone(), columns)?);
        Ok(())
    }

    /// Emits the first rows of the windows closed at `watermark`.
    fn close_until(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        self.watermark = self.watermark.max(watermark);
        let mut due = Vec::new();
        for (_, _, key) in self.timers.fire(watermark) {
            if let Some(ranked) = self.state.remove(&key) {
                due.extend(ranked.0.into_iter().enumerate().map(|(i, (_, row))| (row, i as i64 + 1, "+I")));
            }
        }
        self.emit(due, out)
    }

    /// A window Top-N ranks the rows of windows still open and registers
    /// each partition for its window's last instant; late rows are dropped.
    fn rank_in_windows(&mut self, batch: RecordBatch, end: usize) -> OpResult<()> {
        let ends = event_times(&batch, end)?;
        let open: Vec<u32> = (0..batch.num_rows())
            .filter(|&r| ends.value(r).saturating_sub(1) > self.watermark)
            .map(|r| r as u32)
            .collect();
        if open.is_empty() {
            return Ok(());
        }
        let batch =
            if open.len() == batch.num_rows() { batch } else { take_record_batch(&batch, &UInt32Array::from(open))? };
        let ends = event_times(&batch, end)?;
        let key_columns: Vec<ArrayRef> = self.p.key.iter().map(|&i| batch.column(i).clone()).collect();
        let keys = self.keys.convert_columns(&key_columns)?;
        let mut hashes = Vec::new();
        hash_rows(&key_columns, &mut hashes)?;
        let sort_columns: Vec<ArrayRef> = self.p.order.iter().map(|(i, _)| batch.column(*i).clone()).collect();
        let sorts = self.sort.convert_columns(&sort_columns)?;
        let rows = self.rows.convert_columns(batch.columns())?;
        for (key, picks) in partitions(&keys, batch.num_rows()) {
            let kg = key_group(hashes[picks[0]], self.max_parallelism);
            let mut ranked = self.state.get(key).cloned().unwrap_or_default();
            let fresh = ranked.0.is_empty();
            for &r in &picks {
                ranked.insert(sorts.row(r).data(), rows.row(r).data(), self.p.limit);
            }
            self.state.put(kg, key.to_vec(), ranked);
            if fresh {
                self.timers.register(ends.value(picks[0]) - 1, kg, key.to_vec());
            }
        }
        Ok(())
    }
}

impl Operator for TopN {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if let Some(end) = self.p.window_end {
            return self.rank_in_windows(batch, end);
        }
        let key_columns: Vec<ArrayRef> = self.p.key.iter().map(|&i| batch.column(i).clone()).collect();
        let keys = self.keys.convert_columns(&key_columns)?;
        let mut hashes = Vec::new();
        hash_rows(&key_columns, &mut hashes)?;
        let sort_columns: Vec<ArrayRef> = self.p.order.iter().map(|(i, _)| batch.column(*i).clone()).collect();
        let sorts = self.sort.convert_columns(&sort_columns)?;
        let rows = self.rows.convert_columns(batch.columns())?;
        let mut changes = Vec::new();
        for (key, picks) in partitions(&keys, batch.num_rows()) {
            let kg = key_group(hashes[picks[0]], self.max_parallelism);
            let before = self.state.get(key).cloned().unwrap_or_default();
            let mut after = before.clone();
            for r in picks {
                after.insert(sorts.row(r).data(), rows.row(r).data(), self.p.limit);
            }
            if after == before {
                continue;
            }
            for (i, (_, row)) in after.0.iter().enumerate() {
                let rank = i as i64 + 1;
                match before.0.get(i) {
                    None => changes.push((row.clone(), rank, "+I")),
                    Some((_, old)) if old != row => {
                        changes.push((old.clone(), rank, "-U"));
                        changes.push((row.clone(), rank, "+U"));
                    }
                    Some(_) => {}
                }
            }
            self.state.put(kg, key.to_vec(), after);
        }
        self.emit(changes, out)
    }

    /// A window Top-N emits the partitions whose window the watermark
    /// closed, then passes the watermark on.
    fn process_watermark(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        self.close_until(watermark, out)?;
        out.emit_watermark(watermark);
        Ok(())
    }

    /// The end of the input closes every window.
    fn finish(&mut self, out: &mut Collector) -> OpResult<()> {
        self.close_until(i64::MAX, out)
    }

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        self.state.snapshot(w);
        if self.p.window_end.is_some() {
            self.timers.snapshot(w);
        }
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        self.state.restore(r)?;
        if self.p.window_end.is_some() {
            self.timers.restore(r)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
