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

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use serde::Deserialize;

use super::{Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use crate::error::{OpResult, OperatorError, PlanError};
use crate::keygroup::{hash_rows, is_key_type, key_group};
use crate::state::{KeyedValues, StateCodec, StateReader, StateWriter};

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
    let mut key = Vec::new();
    for k in &c.partition_key {
        let i = column(k, "config.partition_key")?;
        let t = input.field(i).data_type();
        if !is_key_type(t) {
            return Err(ctx
                .error(format!("key column `{k}` has type {t}, which cannot be a key"))
                .field("config.partition_key"));
        }
        key.push(i);
    }
    ctx.require_keyed_input(0, &c.partition_key, "config.partition_key")?;
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
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    for name in [&c.rank_column, &c.op_column] {
        if fields.iter().any(|f| f.name() == name) {
            return Err(ctx.error(format!("output column `{name}` already exists")).field("config"));
        }
    }
    fields.push(Field::new(&c.rank_column, DataType::Int64, false));
    fields.push(Field::new(&c.op_column, DataType::Utf8, false));
    Ok(Planned { key, order, limit: c.limit, schema: Arc::new(Schema::new(fields)), input })
}

/// Factory of `top_n`.
#[derive(Debug)]
pub struct TopNFactory;

/// The kept rows of every partition key.
const ROWS_STATE: &str = "rows";

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
        vec![(
            ROWS_STATE.into(),
            format!(
                "first {} by [{}] per [{}] of [{}]",
                p.limit,
                order.join(", "),
                keys.join(", "),
                super::join::describe_columns(&p.input)
            ),
        )]
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
            max_parallelism: info.max_parallelism,
            p,
        })))
    }
}

/// A partition's first rows, in rank order: (sort bytes, row bytes).
#[derive(Debug, Clone, Default, PartialEq)]
struct Ranked(Vec<(Vec<u8>, Vec<u8>)>);

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
    max_parallelism: u32,
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
        columns.push(Arc::new(StringArray::from_iter_values(changes.iter().map(|c| c.2))));
        out.emit(RecordBatch::try_new(self.p.schema.clone(), columns)?);
        Ok(())
    }
}

impl Operator for TopN {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let key_columns: Vec<ArrayRef> = self.p.key.iter().map(|&i| batch.column(i).clone()).collect();
        let keys = self.keys.convert_columns(&key_columns)?;
        let mut hashes = Vec::new();
        hash_rows(&key_columns, &mut hashes)?;
        let sort_columns: Vec<ArrayRef> = self.p.order.iter().map(|(i, _)| batch.column(*i).clone()).collect();
        let sorts = self.sort.convert_columns(&sort_columns)?;
        let rows = self.rows.convert_columns(batch.columns())?;
        // The batch's rows by partition, partitions in the order they come.
        let mut index: HashMap<&[u8], usize> = HashMap::new();
        let mut parts: Vec<(&[u8], Vec<usize>)> = Vec::new();
        for r in 0..batch.num_rows() {
            let key = keys.row(r).data();
            let i = *index.entry(key).or_insert_with(|| {
                parts.push((key, Vec::new()));
                parts.len() - 1
            });
            parts[i].1.push(r);
        }
        let mut changes = Vec::new();
        for (key, picks) in parts {
            let kg = key_group(hashes[picks[0]], self.max_parallelism);
            let before = self.state.get(key).cloned().unwrap_or_default();
            let mut after = before.clone();
            for r in picks {
                let s = sorts.row(r).data();
                let at = after.0.partition_point(|(x, _)| x.as_slice() <= s);
                if at < self.p.limit {
                    after.0.insert(at, (s.to_vec(), rows.row(r).data().to_vec()));
                    after.0.truncate(self.p.limit);
                }
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

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        self.state.snapshot(w);
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        self.state.restore(r)
    }
}

#[cfg(test)]
mod tests;
