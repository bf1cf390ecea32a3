//! `changelog_normalize`: an upsert stream (each row the latest value of
//! its key, or the key's deletion) made a full changelog, as Flink SQL does
//! after an `upsert-kafka` source. Rows carry their change kind in
//! `op_column`: `+I`/`+U` upsert the key's row, `-D` deletes the key (only
//! the key columns need to be set), `-U` is skipped. The output takes back
//! what it replaces: a key's first row is `+I`, a changed row `-U` the old
//! then `+U` the new, a delete `-D` the whole old row; a row equal to the
//! key's current one, or a delete of an unknown key, emits nothing. So
//! aggregations and joins downstream retract exactly.
//!
//! State: the current row of every key, written only for keys that changed
//! since the last checkpoint.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use serde::Deserialize;

use super::{Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use crate::error::{OpResult, PlanError};
use crate::keygroup::{hash_rows, key_group};
use crate::state::{KeyedValues, StateReader, StateWriter};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    key: Vec<String>,
    #[serde(default = "default_op")]
    op_column: String,
}

fn default_op() -> String {
    "op".into()
}

#[derive(Debug)]
struct Planned {
    key: Vec<usize>,
    op: usize,
    /// The input's columns without the change kinds.
    rows: SchemaRef,
    schema: SchemaRef,
}

fn plan(ctx: &PlanContext<'_>) -> Result<Planned, PlanError> {
    let c: Config = ctx.config()?;
    let input = ctx.inputs[0].clone();
    let op = input
        .index_of(&c.op_column)
        .map_err(|_| ctx.error(format!("no column `{}` in the input", c.op_column)).field("config.op_column"))?;
    if input.field(op).data_type() != &DataType::Utf8 {
        return Err(ctx
            .error(format!("change-kind column `{}` must be a string", c.op_column))
            .field("config.op_column"));
    }
    if c.key.is_empty() {
        return Err(ctx.error("a key of at least one column is needed").field("config.key"));
    }
    // Key indexes in the rows kept, which lack the change-kind column.
    let key: Vec<usize> =
        ctx.key_columns(0, &c.key, "config.key")?.into_iter().map(|i| if i > op { i - 1 } else { i }).collect();
    let rows: Vec<Field> =
        input.fields().iter().enumerate().filter(|(j, _)| *j != op).map(|(_, f)| f.as_ref().clone()).collect();
    // A delete's other columns are null: the output says so.
    let fields: Vec<Field> = input
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(f.is_nullable() || f.name() != &c.op_column))
        .collect();
    Ok(Planned { key, op, rows: Arc::new(Schema::new(rows)), schema: Arc::new(Schema::new(fields)) })
}

/// Factory of `changelog_normalize`.
#[derive(Debug)]
pub struct ChangelogNormalizeFactory;

const ROWS: &str = "rows";

impl OperatorFactory for ChangelogNormalizeFactory {
    fn kind(&self) -> &str {
        "changelog_normalize"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Ok(plan(ctx)?.schema)
    }
    fn state_types(&self, ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        let Ok(p) = plan(ctx) else { return Vec::new() };
        let keys: Vec<&str> = p.key.iter().map(|&i| p.rows.field(i).name().as_str()).collect();
        vec![(ROWS.into(), format!("row by [{}] of [{}]", keys.join(", "), super::join::describe_columns(&p.rows)))]
    }
    fn create(&self, ctx: &PlanContext<'_>, info: SubtaskInfo) -> Result<Instance, PlanError> {
        let p = plan(ctx)?;
        let err = |e: arrow::error::ArrowError| ctx.error(e.to_string());
        let field = |i: usize| SortField::new(p.rows.field(i).data_type().clone());
        let keys = RowConverter::new(p.key.iter().map(|&i| field(i)).collect()).map_err(err)?;
        let rows = RowConverter::new((0..p.rows.fields().len()).map(field).collect()).map_err(err)?;
        Ok(Instance::Operator(Box::new(Normalize {
            keys,
            rows,
            state: KeyedValues::new(ROWS),
            max_parallelism: info.max_parallelism,
            p,
        })))
    }
}

struct Normalize {
    p: Planned,
    keys: RowConverter,
    rows: RowConverter,
    state: KeyedValues<Vec<u8>>,
    max_parallelism: u32,
}

impl Operator for Normalize {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let (ops, batch) = super::join::split_changes(&batch, self.p.op)?;
        let key_columns: Vec<ArrayRef> = self.p.key.iter().map(|&i| batch.column(i).clone()).collect();
        let keys = self.keys.convert_columns(&key_columns)?;
        let mut hashes = Vec::new();
        hash_rows(&key_columns, &mut hashes)?;
        let rows = self.rows.convert_columns(batch.columns())?;
        let mut changes: Vec<(Vec<u8>, &'static str)> = Vec::new();
        for (r, &hash) in hashes.iter().enumerate() {
            let key = keys.row(r).data();
            let row = rows.row(r).data();
            match ops.value(r) {
                "-U" => {}
                "-D" => {
                    if let Some(old) = self.state.remove(key) {
                        changes.push((old, "-D"));
                    }
                }
                _ => match self.state.get(key) {
                    Some(old) if old.as_slice() == row => {}
                    Some(old) => {
                        changes.push((old.clone(), "-U"));
                        changes.push((row.to_vec(), "+U"));
                        self.state.get_mut(key).expect("present").clone_from(&row.to_vec());
                    }
                    None => {
                        changes.push((row.to_vec(), "+I"));
                        self.state.put(key_group(hash, self.max_parallelism), key.to_vec(), row.to_vec());
                    }
                },
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        let parser = self.rows.parser();
        let mut columns = self.rows.convert_rows(changes.iter().map(|c| parser.parse(&c.0)))?;
        columns.insert(self.p.op, Arc::new(StringArray::from_iter_values(changes.iter().map(|c| c.1))));
        out.emit(RecordBatch::try_new(self.p.schema.clone(), columns)?);
        Ok(())
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
mod tests {
    use super::*;
    use crate::channel::StreamElement;
    use crate::graph::{EdgeSpec, Partitioning};
    use crate::state::CheckpointId;
    use arrow::array::Int64Array;
    use serde_json::json;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Utf8, true),
            Field::new("op", DataType::Utf8, false),
        ]))
    }

    fn operator() -> Box<dyn Operator> {
        let edge = EdgeSpec {
            from: "src".into(),
            to: "n".into(),
            partitioning: Partitioning::Hash,
            key: vec!["id".into()],
            input: 0,
            output: String::new(),
            line: 0,
        };
        let config = json!({"key": ["id"]});
        let inputs = [schema()];
        let ctx = PlanContext {
            uid: "n",
            line: 0,
            config: &config,
            inputs: &inputs,
            input_edges: &[&edge],
            parallelism: 2,
            checkpoint: None,
        };
        match ChangelogNormalizeFactory
            .create(&ctx, SubtaskInfo { index: 0, parallelism: 2, max_parallelism: 128 })
            .unwrap()
        {
            Instance::Operator(o) => o,
            Instance::Source(_) => unreachable!(),
        }
    }

    fn batch(rows: &[(i64, Option<&str>, &str)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

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
        v
    }

    #[test]
    fn upserts_and_deletes_become_a_changelog_that_takes_back_what_it_replaces() {
        let mut n = operator();
        let mut out = Collector::default();
        n.process_batch(0, batch(&[(1, Some("a"), "+U"), (2, Some("x"), "+U"), (1, Some("b"), "+U")]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), ["1,a,+I", "2,x,+I", "1,a,-U", "1,b,+U"]);
        // The same row again changes nothing; a delete takes back the whole row.
        n.process_batch(0, batch(&[(1, Some("b"), "+U"), (2, None, "-D"), (3, None, "-D")]), &mut out).unwrap();
        assert_eq!(rows(&mut out), ["2,x,-D"], "an unknown key's delete emits nothing");
        let mut w = StateWriter::new("n", CheckpointId(1), true);
        n.snapshot_state(&mut w).unwrap();
        let entries = w.into_entries();
        let mut restored = operator();
        restored.restore_state(&StateReader::new("n", &entries)).unwrap();
        restored.process_batch(0, batch(&[(1, None, "-D")]), &mut out).unwrap();
        assert_eq!(rows(&mut out), ["1,b,-D"]);
    }
}
