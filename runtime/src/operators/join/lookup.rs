//! `lookup_join`: a keyed stream–table join. Input 0 is the stream; input 1
//! is an upsert changelog that builds the table (the last row per key wins;
//! a row whose `delete_column` is true removes its key). Each stream record is
//! joined with the table as it is when the record arrives — the semantics of
//! Kafka Streams' `GlobalKTable` join.
//!
//! Routing: the table input is either broadcast (every subtask holds the whole
//! table) or hash-partitioned on `table_key` while the stream is partitioned on
//! `key` (each subtask holds its share).
//!
//! With `every_row: true` (a table without a primary key: SQL lookup joins
//! on columns that need not be unique) the table keeps every row, and a
//! stream record meets each row of its key; such a table only appends (no
//! `delete_column`).
//!
//! With `bootstrap: true` the stream is held back until the table input has
//! ended, so that a bounded table is complete before the first lookup (for a
//! bounded table only: an unbounded table input never ends).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{cast, interleave, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use serde::Deserialize;

use super::{ipc_decode, ipc_encode, key_type};
use crate::error::{OpResult, OperatorError, PlanError};
use crate::graph::Partitioning;
use crate::keygroup::is_key_type;
use crate::operators::{Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use crate::state::{StateReader, StateWriter};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    key: Vec<String>,
    table_key: Vec<String>,
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default)]
    join_type: JoinType,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    delete_column: Option<String>,
    #[serde(default)]
    bootstrap: bool,
    #[serde(default)]
    every_row: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum JoinType {
    #[default]
    Inner,
    Left,
}

#[derive(Debug, Clone)]
struct Planned {
    key: Vec<usize>,
    table_key: Vec<usize>,
    key_types: Vec<DataType>,
    values: Vec<usize>,
    delete: Option<usize>,
    join_type: JoinType,
    bootstrap: bool,
    every_row: bool,
    schema: SchemaRef,
    value_schema: SchemaRef,
}

fn plan(ctx: &PlanContext<'_>) -> Result<Planned, PlanError> {
    let c: Config = ctx.config()?;
    let (stream, table) = (&ctx.inputs[0], &ctx.inputs[1]);
    if c.key.is_empty() || c.key.len() != c.table_key.len() {
        return Err(ctx
            .error("key and table_key need the same number (at least one) of columns")
            .field("config.table_key"));
    }
    let find = |schema: &SchemaRef, name: &str, field: &str, side: &str| {
        schema
            .index_of(name)
            .map_err(|_| ctx.error(format!("no column `{name}` in the {side} input")).field(field.to_string()))
    };
    let mut key = Vec::new();
    let mut table_key = Vec::new();
    let mut key_types = Vec::new();
    for (k, tk) in c.key.iter().zip(&c.table_key) {
        let (i, j) = (find(stream, k, "config.key", "stream")?, find(table, tk, "config.table_key", "table")?);
        let (a, b) = (stream.field(i).data_type(), table.field(j).data_type());
        if !is_key_type(a) || key_type(a) != key_type(b) {
            return Err(ctx
                .error(format!("stream key `{k}` ({a}) and table key `{tk}` ({b}) cannot be compared"))
                .field("config.table_key"));
        }
        key.push(i);
        table_key.push(j);
        key_types.push(key_type(a));
    }
    if c.every_row && c.delete_column.is_some() {
        return Err(ctx
            .error("a table that keeps every row only appends: every_row and delete_column exclude each other")
            .field("config.every_row"));
    }
    let delete = match &c.delete_column {
        None => None,
        Some(d) => {
            let i = find(table, d, "config.delete_column", "table")?;
            if table.field(i).data_type() != &DataType::Boolean {
                return Err(ctx.error(format!("delete_column `{d}` must be boolean")).field("config.delete_column"));
            }
            Some(i)
        }
    };
    let values: Vec<usize> = match &c.columns {
        Some(cols) => cols.iter().map(|n| find(table, n, "config.columns", "table")).collect::<Result<_, _>>()?,
        None => (0..table.fields().len()).filter(|i| !table_key.contains(i) && Some(*i) != delete).collect(),
    };
    let prefix = c.prefix.clone().unwrap_or_default();
    let mut fields: Vec<Field> = stream.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut value_fields = Vec::new();
    for &v in &values {
        let f = table.field(v);
        let name = format!("{prefix}{}", f.name());
        if fields.iter().any(|x| x.name() == &name) {
            return Err(ctx
                .error(format!("column `{name}` exists on both sides; set `prefix` to rename the table's columns"))
                .field("config.columns"));
        }
        let out = Field::new(name, f.data_type().clone(), f.is_nullable() || c.join_type == JoinType::Left);
        fields.push(out.clone());
        value_fields.push(out);
    }
    if ctx.parallelism > 1 {
        let table_edge = ctx.input_edges[1];
        match table_edge.partitioning {
            Partitioning::Broadcast => {}
            Partitioning::Hash if table_edge.key == c.table_key => ctx.require_keyed_input(0, &c.key, "config.key")?,
            _ => {
                return Err(ctx
                    .error(format!(
                        "at parallelism {} the table input must be broadcast, or hash-partitioned on [{}] with the stream on [{}]",
                        ctx.parallelism,
                        c.table_key.join(", "),
                        c.key.join(", ")
                    ))
                    .field("config.table_key"))
            }
        }
    }
    Ok(Planned {
        key,
        table_key,
        key_types,
        values,
        delete,
        join_type: c.join_type,
        bootstrap: c.bootstrap,
        every_row: c.every_row,
        schema: Arc::new(Schema::new(fields)),
        value_schema: Arc::new(Schema::new(value_fields)),
    })
}

/// Factory of `lookup_join`.
#[derive(Debug)]
pub struct LookupJoinFactory;

impl OperatorFactory for LookupJoinFactory {
    fn kind(&self) -> &str {
        "lookup_join"
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
        vec![
            (TABLE_STATE.into(), format!("table by [{}] of [{}]", keys.join(", "), columns(&p.value_schema))),
            (HELD_STATE.into(), format!("stream rows held back of [{}]", columns(&ctx.inputs[0]))),
        ]
    }
    fn create(&self, ctx: &PlanContext<'_>, _: SubtaskInfo) -> Result<Instance, PlanError> {
        let p = plan(ctx)?;
        let converter = RowConverter::new(p.key_types.iter().map(|t| SortField::new(t.clone())).collect())
            .map_err(|e| ctx.error(e.to_string()))?;
        // The row a left join uses for a missing key: nulls, so its columns
        // are nullable whatever the table declares (an inner join never uses it).
        let nullable: Vec<Field> =
            p.value_schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
        let null_row = RecordBatch::try_new(
            Arc::new(Schema::new(nullable)),
            p.value_schema.fields().iter().map(|f| new_null_array(f.data_type(), 1)).collect(),
        )
        .map_err(|e| ctx.error(e.to_string()))?;
        Ok(Instance::Operator(Box::new(LookupJoin {
            converter,
            batches: Vec::new(),
            index: HashMap::new(),
            more: HashMap::new(),
            dead: 0,
            null_row,
            table_ended: false,
            held: Vec::new(),
            held_watermark: None,
            p,
        })))
    }
}

/// Where a table row lives: (batch, row) in `LookupJoin::batches`.
type RowAt = (usize, usize);

struct LookupJoin {
    p: Planned,
    converter: RowConverter,
    /// Table values (projected), in arrival order.
    batches: Vec<RecordBatch>,
    /// Key -> (batch, row) of its latest value (with `every_row`, its first).
    index: HashMap<Box<[u8]>, RowAt>,
    /// With `every_row`: key -> its later rows.
    more: HashMap<Box<[u8]>, Vec<RowAt>>,
    /// Rows in `batches` no longer referenced by `index`.
    dead: usize,
    /// One all-null row: the "match" of unmatched rows in a left join.
    null_row: RecordBatch,
    table_ended: bool,
    held: Vec<RecordBatch>,
    held_watermark: Option<i64>,
}

impl LookupJoin {
    fn keys(
        &self,
        batch: &RecordBatch,
        cols: &[usize],
    ) -> OpResult<(arrow::row::Rows, Option<arrow::buffer::NullBuffer>)> {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(cols.len());
        let mut nulls: Option<arrow::buffer::NullBuffer> = None;
        for (&c, t) in cols.iter().zip(&self.p.key_types) {
            let a = batch.column(c);
            nulls = arrow::buffer::NullBuffer::union(nulls.as_ref(), a.logical_nulls().as_ref());
            arrays.push(if a.data_type() == t { a.clone() } else { cast(a, t)? });
        }
        Ok((self.converter.convert_columns(&arrays)?, nulls))
    }

    fn upsert(&mut self, batch: RecordBatch) -> OpResult<()> {
        let (rows, nulls) = self.keys(&batch, &self.p.table_key.clone())?;
        let deletes = self.p.delete.map(|d| batch.column(d).as_boolean().clone());
        let values = batch.project(&self.p.values)?;
        let b = self.batches.len();
        let mut kept = 0;
        for r in 0..batch.num_rows() {
            if nulls.as_ref().is_some_and(|n| n.is_null(r)) {
                continue;
            }
            let key: Box<[u8]> = rows.row(r).as_ref().into();
            if self.p.every_row {
                self.add(key, (b, r));
                kept += 1;
                continue;
            }
            let delete = deletes.as_ref().is_some_and(|d| d.is_valid(r) && d.value(r));
            let old = if delete { self.index.remove(&key) } else { self.index.insert(key, (b, r)) };
            if old.is_some() {
                self.dead += 1;
            }
            kept += 1;
        }
        self.dead += batch.num_rows() - kept;
        self.batches.push(values);
        self.compact()
    }

    /// Keeps one more row of `key` (`every_row`).
    fn add(&mut self, key: Box<[u8]>, at: RowAt) {
        match self.index.entry(key) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(at);
            }
            std::collections::hash_map::Entry::Occupied(o) => self.more.entry(o.key().clone()).or_default().push(at),
        }
    }

    /// Rewrites the table into one batch when most stored rows are dead.
    fn compact(&mut self) -> OpResult<()> {
        let live = self.index.len() + self.more.values().map(Vec::len).sum::<usize>();
        if self.dead < 4096 || self.dead < 2 * live {
            return Ok(());
        }
        // Every live row — a key's first and, with `every_row`, its others —
        // moves into one batch, in that order.
        let mut entries: Vec<(Box<[u8]>, RowAt)> = self.index.drain().collect();
        for (k, ats) in self.more.drain() {
            entries.extend(ats.into_iter().map(|at| (k.clone(), at)));
        }
        let picks: Vec<RowAt> = entries.iter().map(|(_, at)| *at).collect();
        let columns = self.gather(&picks)?;
        let merged = RecordBatch::try_new(self.p.value_schema.clone(), columns)?;
        self.batches = vec![merged];
        for (i, (k, _)) in entries.into_iter().enumerate() {
            self.add(k, (0, i));
        }
        self.dead = 0;
        Ok(())
    }

    /// Table value columns for `(batch, row)` picks; `batches.len()` picks the null row.
    fn gather(&self, picks: &[RowAt]) -> OpResult<Vec<ArrayRef>> {
        (0..self.p.values.len())
            .map(|c| {
                let arrays: Vec<&dyn Array> =
                    self.batches.iter().chain(std::iter::once(&self.null_row)).map(|b| b.column(c).as_ref()).collect();
                Ok(interleave(&arrays, picks)?)
            })
            .collect()
    }

    fn join(&self, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let (rows, nulls) = self.keys(&batch, &self.p.key)?;
        let mut stream_rows: Vec<u32> = Vec::with_capacity(batch.num_rows());
        let mut picks = Vec::with_capacity(batch.num_rows());
        let null_pick = (self.batches.len(), 0);
        // Whether some stream row meets several table rows.
        let mut repeated = false;
        for r in 0..batch.num_rows() {
            let hit =
                if nulls.as_ref().is_some_and(|n| n.is_null(r)) { None } else { self.index.get(rows.row(r).as_ref()) };
            match (hit, self.p.join_type) {
                (Some(&at), _) => {
                    stream_rows.push(r as u32);
                    picks.push(at);
                    let more = if self.p.every_row { self.more.get(rows.row(r).as_ref()) } else { None };
                    if let Some(more) = more {
                        stream_rows.extend(std::iter::repeat_n(r as u32, more.len()));
                        picks.extend(more);
                        repeated = true;
                    }
                }
                (None, JoinType::Left) => {
                    stream_rows.push(r as u32);
                    picks.push(null_pick);
                }
                (None, JoinType::Inner) => {}
            }
        }
        if stream_rows.is_empty() {
            return Ok(());
        }
        let left = if stream_rows.len() == batch.num_rows() && !repeated {
            batch
        } else {
            take_record_batch(&batch, &UInt32Array::from(stream_rows))?
        };
        let mut columns = left.columns().to_vec();
        columns.extend(self.gather(&picks)?);
        out.emit(RecordBatch::try_new(self.p.schema.clone(), columns)?);
        Ok(())
    }

    fn release(&mut self, out: &mut Collector) -> OpResult<()> {
        for b in std::mem::take(&mut self.held) {
            self.join(b, out)?;
        }
        if let Some(w) = self.held_watermark.take() {
            out.emit_watermark(w);
        }
        Ok(())
    }

    fn holding(&self) -> bool {
        self.p.bootstrap && !self.table_ended
    }
}

// The table is subtask state (a broadcast table is the same on every
// subtask; a hash-partitioned one is restored by subtask index): its live
// rows with their keys as one Arrow batch, plus the stream batches held
// while the table bootstraps.
const TABLE_STATE: &str = "table";
const HELD_STATE: &str = "held";
const KEY_COLUMN: &str = "__weir_key";

impl LookupJoin {
    fn table_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self.p.value_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(KEY_COLUMN, DataType::Binary, false));
        Arc::new(Schema::new(fields))
    }
}

impl Operator for LookupJoin {
    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        let more = self.more.iter().flat_map(|(k, ats)| ats.iter().map(move |at| (k, at)));
        let entries: Vec<(&Box<[u8]>, &RowAt)> = self.index.iter().chain(more).collect();
        let picks: Vec<RowAt> = entries.iter().map(|(_, at)| **at).collect();
        let mut columns = self.gather(&picks)?;
        columns.push(Arc::new(arrow::array::BinaryArray::from_iter_values(entries.iter().map(|(k, _)| k.as_ref()))));
        let schema = self.table_schema();
        let table = RecordBatch::try_new(schema.clone(), columns)?;
        let mut value = vec![self.table_ended as u8];
        value.extend(ipc_encode(&schema, &[table])?);
        w.put_subtask(TABLE_STATE, Vec::new(), value);
        if let Some(first) = self.held.first() {
            w.put_subtask(HELD_STATE, Vec::new(), ipc_encode(&first.schema(), &self.held)?);
        } else {
            w.delete(HELD_STATE, crate::state::NON_KEYED, Vec::new());
        }
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        if let Some(e) = r.state(TABLE_STATE).next() {
            let v = e.value.as_deref().unwrap_or_default();
            let (&ended, ipc) =
                v.split_first().ok_or_else(|| OperatorError::State("the join table is empty".into()))?;
            self.table_ended = ended != 0;
            self.batches.clear();
            self.index.clear();
            self.more.clear();
            for (b, batch) in ipc_decode(ipc)?.into_iter().enumerate() {
                let n = batch.num_columns();
                let keys = batch.column(n - 1).as_binary::<i32>().clone();
                for r in 0..keys.len() {
                    if self.p.every_row {
                        self.add(keys.value(r).into(), (b, r));
                    } else {
                        self.index.insert(keys.value(r).into(), (b, r));
                    }
                }
                self.batches.push(batch.project(&(0..n - 1).collect::<Vec<_>>())?);
            }
            self.dead = 0;
        }
        if let Some(e) = r.state(HELD_STATE).next() {
            self.held = ipc_decode(e.value.as_deref().unwrap_or_default())?;
        }
        Ok(())
    }

    fn process_batch(&mut self, input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        match input {
            0 if self.holding() => {
                self.held.push(batch);
                Ok(())
            }
            0 => self.join(batch, out),
            _ => self.upsert(batch),
        }
    }

    fn process_watermark(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        if self.holding() {
            self.held_watermark = Some(watermark);
        } else {
            out.emit_watermark(watermark);
        }
        Ok(())
    }

    fn end_input(&mut self, input: usize, out: &mut Collector) -> OpResult<()> {
        if input == 1 {
            self.table_ended = true;
            self.release(out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Collector) -> OpResult<()> {
        self.table_ended = true;
        self.release(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::StreamElement;
    use crate::graph::EdgeSpec;
    use crate::state::CheckpointId;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Int64Type;
    use serde_json::json;

    fn schemas() -> [SchemaRef; 2] {
        [
            Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)])),
            Arc::new(Schema::new(vec![
                Field::new("tk", DataType::Int64, true),
                Field::new("v", DataType::Utf8, false),
            ])),
        ]
    }

    fn create(config: serde_json::Value) -> Result<Box<dyn Operator>, PlanError> {
        let edge = |input: u32, key: &str| EdgeSpec {
            from: format!("src{input}"),
            to: "join".into(),
            partitioning: Partitioning::Hash,
            key: vec![key.into()],
            input,
            output: String::new(),
            line: 0,
        };
        let (e0, e1) = (edge(0, "k"), edge(1, "tk"));
        let inputs = schemas();
        let ctx = PlanContext {
            uid: "join",
            line: 0,
            config: &config,
            inputs: &inputs,
            input_edges: &[&e0, &e1],
            parallelism: 2,
            checkpoint: None,
        };
        Ok(match LookupJoinFactory.create(&ctx, SubtaskInfo { index: 0, parallelism: 2, max_parallelism: 128 })? {
            Instance::Operator(o) => o,
            Instance::Source(_) => unreachable!(),
        })
    }

    fn table(rows: &[(i64, &str)]) -> RecordBatch {
        RecordBatch::try_new(
            schemas()[1].clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap()
    }

    fn pairs(op: &mut Box<dyn Operator>, keys: &[i64]) -> Vec<(i64, Option<String>)> {
        let mut out = Collector::default();
        let batch = RecordBatch::try_new(schemas()[0].clone(), vec![Arc::new(Int64Array::from(keys.to_vec()))]);
        op.process_batch(0, batch.unwrap(), &mut out).unwrap();
        let mut got: Vec<(i64, Option<String>)> = out
            .drain()
            .filter_map(|e| match e {
                StreamElement::Batch(b) => Some(b),
                _ => None,
            })
            .flat_map(|b| {
                let (k, v) = (b.column(0).as_primitive::<Int64Type>().clone(), b.column(1).as_string::<i32>().clone());
                (0..b.num_rows()).map(move |i| (k.value(i), v.is_valid(i).then(|| v.value(i).to_string())))
            })
            .collect();
        got.sort();
        got
    }

    #[test]
    fn a_table_of_every_row_meets_each_row_of_a_key_and_restores_them_all() {
        let config = json!({"key": ["k"], "table_key": ["tk"], "join_type": "left", "every_row": true});
        let mut op = create(config.clone()).unwrap();
        let mut out = Collector::default();
        op.process_batch(1, table(&[(1, "a"), (2, "b"), (1, "c")]), &mut out).unwrap();
        op.process_batch(1, table(&[(1, "d")]), &mut out).unwrap();
        let want = vec![
            (1, Some("a".to_string())),
            (1, Some("c".to_string())),
            (1, Some("d".to_string())),
            (2, Some("b".to_string())),
            (3, None),
        ];
        assert_eq!(pairs(&mut op, &[1, 2, 3]), want);
        let mut w = StateWriter::new("join", CheckpointId(1), true);
        op.snapshot_state(&mut w).unwrap();
        let entries = w.into_entries();
        let mut restored = create(config).unwrap();
        restored.restore_state(&StateReader::new("join", &entries)).unwrap();
        assert_eq!(pairs(&mut restored, &[3, 2, 1]), want);

        // 9000 rows without a key make most stored rows dead, so the table
        // is compacted into one batch; every row of a key stays.
        let nulls = RecordBatch::try_new(
            schemas()[1].clone(),
            vec![Arc::new(Int64Array::from(vec![None; 9000])), Arc::new(StringArray::from(vec!["x"; 9000]))],
        )
        .unwrap();
        op.process_batch(1, nulls, &mut out).unwrap();
        assert_eq!(pairs(&mut op, &[1, 2, 3]), want);

        // By default the last row of a key wins.
        let mut last = create(json!({"key": ["k"], "table_key": ["tk"]})).unwrap();
        last.process_batch(1, table(&[(1, "a"), (1, "c")]), &mut out).unwrap();
        assert_eq!(pairs(&mut last, &[1]), [(1, Some("c".to_string()))]);
        let e = create(json!({"key": ["k"], "table_key": ["tk"], "every_row": true, "delete_column": "v"}));
        assert!(e.err().unwrap().to_string().contains("every_row and delete_column"));
    }
}
