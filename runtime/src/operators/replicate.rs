//! `replicate`: each row as many times as its `count_column` says (none
//! for 0 or null), without that column — SQL's `INTERSECT ALL` and `EXCEPT
//! ALL`, whose rows come as often as the sides' counts allow. With
//! `op_column` the input is a changelog and so is the output: each copy of
//! an insert or update-after is an insert (`+I`), each copy of a delete or
//! update-before a delete (`-D`), since an update's two halves may come in
//! different numbers. Stateless.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, Int64Type, Schema, SchemaRef};
use serde::Deserialize;

use super::{Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use crate::error::{OpResult, PlanError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// How many times each row is written (an integer column).
    count_column: String,
    /// The change-kind column of a changelog input (`+I`, `-U`, `+U`, `-D`).
    #[serde(default)]
    op_column: Option<String>,
}

#[derive(Debug, Clone)]
struct Planned {
    count: usize,
    op: Option<usize>,
    /// The input's columns but the count.
    kept: Vec<usize>,
    schema: SchemaRef,
}

fn plan(ctx: &PlanContext<'_>) -> Result<Planned, PlanError> {
    let c: Config = ctx.config()?;
    let input = &ctx.inputs[0];
    let count = input
        .index_of(&c.count_column)
        .map_err(|_| ctx.error(format!("no column `{}` in the input", c.count_column)).field("config.count_column"))?;
    if !input.field(count).data_type().is_integer() {
        return Err(ctx
            .error(format!(
                "count_column `{}` is {}; it must be an integer",
                c.count_column,
                input.field(count).data_type()
            ))
            .field("config.count_column"));
    }
    let op = match &c.op_column {
        None => None,
        Some(o) => {
            let i = input
                .index_of(o)
                .map_err(|_| ctx.error(format!("no column `{o}` in the input")).field("config.op_column"))?;
            if input.field(i).data_type() != &DataType::Utf8 {
                return Err(ctx.error(format!("op_column `{o}` must be a string")).field("config.op_column"));
            }
            Some(i)
        }
    };
    let kept: Vec<usize> = (0..input.fields().len()).filter(|&i| i != count).collect();
    let schema = Arc::new(Schema::new(kept.iter().map(|&i| input.field(i).clone()).collect::<Vec<_>>()));
    let op = op.map(|i| kept.iter().position(|&k| k == i).expect("the op column is kept"));
    Ok(Planned { count, op, kept, schema })
}

/// Factory of `replicate`.
#[derive(Debug)]
pub struct ReplicateFactory;

impl OperatorFactory for ReplicateFactory {
    fn kind(&self) -> &str {
        "replicate"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Ok(plan(ctx)?.schema)
    }
    fn create(&self, ctx: &PlanContext<'_>, _: SubtaskInfo) -> Result<Instance, PlanError> {
        Ok(Instance::Operator(Box::new(Replicate { p: plan(ctx)? })))
    }
}

struct Replicate {
    p: Planned,
}

impl Operator for Replicate {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let counts = cast(batch.column(self.p.count), &DataType::Int64)?;
        let counts = counts.as_primitive::<Int64Type>();
        let mut picks: Vec<u32> = Vec::new();
        for r in 0..batch.num_rows() {
            if counts.is_valid(r) && counts.value(r) > 0 {
                picks.extend(std::iter::repeat_n(r as u32, counts.value(r) as usize));
            }
        }
        if picks.is_empty() {
            return Ok(());
        }
        let rows = take_record_batch(&batch.project(&self.p.kept)?, &UInt32Array::from(picks))?;
        let rows = match self.p.op {
            None => rows,
            Some(o) => {
                // Each copy is a whole insert or delete.
                let ops = rows.column(o).as_string::<i32>();
                let single: StringArray =
                    ops.iter().map(|k| Some(if matches!(k, Some("-U") | Some("-D")) { "-D" } else { "+I" })).collect();
                let mut columns = rows.columns().to_vec();
                columns[o] = Arc::new(single);
                RecordBatch::try_new(self.p.schema.clone(), columns)?
            }
        };
        out.emit(rows);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::StreamElement;
    use crate::graph::{EdgeSpec, Partitioning};
    use arrow::array::Int64Array;
    use arrow::datatypes::Field;
    use serde_json::json;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("v", DataType::Utf8, false),
            Field::new("n", DataType::Int64, true),
            Field::new("op", DataType::Utf8, false),
        ]))
    }

    fn create(config: serde_json::Value) -> Result<Box<dyn Operator>, PlanError> {
        let edge = EdgeSpec {
            from: "src".into(),
            to: "r".into(),
            partitioning: Partitioning::Forward,
            key: vec![],
            input: 0,
            output: String::new(),
            line: 0,
        };
        let ctx = PlanContext {
            uid: "r",
            line: 0,
            config: &config,
            inputs: &[schema()],
            input_edges: &[&edge],
            parallelism: 1,
            checkpoint: None,
        };
        Ok(match ReplicateFactory.create(&ctx, SubtaskInfo { index: 0, parallelism: 1, max_parallelism: 128 })? {
            Instance::Operator(o) => o,
            Instance::Source(_) => unreachable!(),
        })
    }

    #[test]
    fn each_row_comes_as_often_as_its_count_and_updates_become_whole_inserts_and_deletes() {
        let mut op = create(json!({"count_column": "n", "op_column": "op"})).unwrap();
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c", "a", "a"])),
                Arc::new(Int64Array::from(vec![Some(2), Some(0), None, Some(2), Some(3)])),
                Arc::new(StringArray::from(vec!["+I", "+I", "+I", "-U", "+U"])),
            ],
        )
        .unwrap();
        let mut out = Collector::default();
        op.process_batch(0, batch, &mut out).unwrap();
        let rows: Vec<String> = out
            .drain()
            .filter_map(|e| match e {
                StreamElement::Batch(b) => Some(b),
                _ => None,
            })
            .flat_map(|b| {
                assert_eq!(b.num_columns(), 2, "the count is dropped");
                let (v, o) = (b.column(0).as_string::<i32>().clone(), b.column(1).as_string::<i32>().clone());
                (0..b.num_rows()).map(move |i| format!("{}{}", o.value(i), v.value(i))).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(rows, ["+Ia", "+Ia", "-Da", "-Da", "+Ia", "+Ia", "+Ia"]);
        let e = create(json!({"count_column": "v"})).err().unwrap().to_string();
        assert!(e.contains("must be an integer"), "{e}");
    }
}
