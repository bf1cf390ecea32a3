//! `limit`: the rows of its input after the first `offset`, at most `limit`
//! of them (SQL's `LIMIT n OFFSET m` of a stream without an order: which
//! rows those are depends on the order they arrive in, as in Flink). It
//! runs at parallelism 1 and counts the rows it has seen; the count is
//! checkpointed, so a restore neither repeats nor skips rows. Once the
//! limit is reached it drops what comes; watermarks pass through.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde::Deserialize;

use super::{Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use crate::error::{OpResult, OperatorError, PlanError};
use crate::state::{StateReader, StateWriter};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Rows to pass at most (none: every row after `offset`).
    #[serde(default)]
    limit: Option<u64>,
    /// Rows to skip first.
    #[serde(default)]
    offset: u64,
}

fn plan(ctx: &PlanContext<'_>) -> Result<Config, PlanError> {
    let c: Config = ctx.config()?;
    if ctx.parallelism != 1 {
        return Err(ctx
            .error(format!("limit counts every row of its input, so it runs at parallelism 1, not {}", ctx.parallelism))
            .field("parallelism"));
    }
    if c.limit.is_none() && c.offset == 0 {
        return Err(ctx.error("set limit, offset or both").field("config"));
    }
    Ok(c)
}

/// Factory of `limit`.
#[derive(Debug)]
pub struct LimitFactory;

/// The rows seen so far.
const SEEN: &str = "seen";

impl OperatorFactory for LimitFactory {
    fn kind(&self) -> &str {
        "limit"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        plan(ctx)?;
        Ok(Arc::clone(&ctx.inputs[0]))
    }
    fn state_types(&self, _ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        vec![(SEEN.into(), "rows seen: u64".into())]
    }
    fn create(&self, ctx: &PlanContext<'_>, _: SubtaskInfo) -> Result<Instance, PlanError> {
        let c = plan(ctx)?;
        Ok(Instance::Operator(Box::new(Limit { from: c.offset, to: c.limit.map(|n| c.offset + n), seen: 0 })))
    }
}

struct Limit {
    /// The rows passed are those numbered `from..to` (from 0, in arrival order).
    from: u64,
    to: Option<u64>,
    seen: u64,
}

impl Operator for Limit {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let (start, n) = (self.seen, batch.num_rows() as u64);
        self.seen += n;
        let first = self.from.saturating_sub(start).min(n);
        let end = self.to.map_or(n, |to| to.saturating_sub(start).min(n));
        if end > first {
            out.emit(batch.slice(first as usize, (end - first) as usize));
        }
        Ok(())
    }

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        w.put_subtask(SEEN, Vec::new(), self.seen.to_be_bytes().to_vec());
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        if let Some(e) = r.state(SEEN).next() {
            let bytes = e.value.as_deref().unwrap_or_default();
            let seen: [u8; 8] =
                bytes.try_into().map_err(|_| OperatorError::State("limit's row count does not decode".into()))?;
            self.seen = u64::from_be_bytes(seen);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::StreamElement;
    use crate::graph::{EdgeSpec, Partitioning};
    use crate::state::CheckpointId;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use serde_json::json;

    fn create(config: serde_json::Value, parallelism: u32) -> Result<Box<dyn Operator>, PlanError> {
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let edge = EdgeSpec {
            from: "src".into(),
            to: "limit".into(),
            partitioning: Partitioning::Rebalance,
            key: vec![],
            input: 0,
            output: String::new(),
            line: 0,
        };
        let ctx = PlanContext {
            uid: "limit",
            line: 0,
            config: &config,
            inputs: &[schema],
            input_edges: &[&edge],
            parallelism,
            checkpoint: None,
        };
        Ok(match LimitFactory.create(&ctx, SubtaskInfo { index: 0, parallelism, max_parallelism: 128 })? {
            Instance::Operator(o) => o,
            Instance::Source(_) => unreachable!(),
        })
    }

    fn feed(op: &mut Box<dyn Operator>, from: i64, to: i64) -> Vec<i64> {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(from..to))]).unwrap();
        let mut out = Collector::default();
        op.process_batch(0, batch, &mut out).unwrap();
        out.drain()
            .filter_map(|e| match e {
                StreamElement::Batch(b) => Some(b.column(0).as_primitive::<Int64Type>().values().to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn rows_after_the_offset_pass_up_to_the_limit_across_batches_and_restores() {
        let config = json!({"limit": 5, "offset": 3});
        let mut op = create(config.clone(), 1).unwrap();
        assert_eq!(feed(&mut op, 0, 2), Vec::<i64>::new());
        assert_eq!(feed(&mut op, 2, 5), [3, 4]);
        let mut w = StateWriter::new("limit", CheckpointId(1), true);
        op.snapshot_state(&mut w).unwrap();
        let entries = w.into_entries();
        let mut restored = create(config, 1).unwrap();
        restored.restore_state(&StateReader::new("limit", &entries)).unwrap();
        assert_eq!(feed(&mut restored, 5, 20), [5, 6, 7]);
        assert_eq!(feed(&mut restored, 20, 30), Vec::<i64>::new());
        let mut all = create(json!({"offset": 2}), 1).unwrap();
        assert_eq!(feed(&mut all, 0, 4), [2, 3]);
    }

    #[test]
    fn it_runs_alone_and_needs_a_bound() {
        let e = create(json!({"limit": 1}), 2).err().unwrap().to_string();
        assert!(e.contains("runs at parallelism 1, not 2"), "{e}");
        let e = create(json!({}), 1).err().unwrap().to_string();
        assert!(e.contains("set limit, offset or both"), "{e}");
    }
}
