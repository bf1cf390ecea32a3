//! The operators of one subtask of a vertex, instantiated from the plan,
//! and how elements travel down the chain.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::barrier::CheckpointId;
use crate::channel::StreamElement;
use crate::error::OperatorError;
use crate::operators::{Collector, Instance, Operator, PlanContext, SourceOperator, SubtaskInfo};
use crate::plan::Plan;
use crate::state::{StateEntry, StateReader, StateWriter};

use super::*;

/// The operators of one subtask of a vertex, instantiated from the plan.
pub struct Chain {
    pub(super) source: Option<(String, Box<dyn SourceOperator>)>,
    pub(super) ops: Vec<Box<dyn Operator>>,
    pub(super) uids: Vec<String>,
    pub(super) scratch: Vec<Collector>,
    /// What left the tail, with its port (0: the main output; side
    /// outputs only from the tail operator, which alone can have them consumed).
    pub(super) tail: Vec<(u32, StreamElement)>,
    /// Per operator (source first), rows in and out.
    pub(super) rows: Arc<Vec<OperatorRows>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain").field("operators", &self.uids).finish()
    }
}

impl Chain {
    /// Instantiates subtask `subtask` of `vertex`.
    pub fn new(plan: &Plan, vertex: u32, subtask: u32) -> Result<Chain, crate::PlanError> {
        let v = &plan.vertices[vertex as usize];
        let mut source = None;
        let mut ops = Vec::new();
        let mut uids = Vec::new();
        for &oi in &v.operators {
            let op = &plan.graph.operators[oi];
            let factory = &plan.factories[oi];
            let edges = plan.input_edge_specs(oi);
            let ctx = PlanContext {
                uid: &op.uid,
                line: op.line,
                config: &op.config,
                inputs: &plan.input_schemas[oi],
                input_edges: &edges,
                parallelism: op.parallelism,
                checkpoint: plan.graph.checkpoint.as_ref(),
            };
            let info = SubtaskInfo {
                index: subtask,
                parallelism: op.parallelism,
                max_parallelism: plan.graph.max_parallelism,
            };
            match factory.create(&ctx, info)? {
                Instance::Source(s) => source = Some((op.uid.clone(), s)),
                Instance::Operator(o) => {
                    ops.push(o);
                    uids.push(op.uid.clone());
                }
            }
        }
        let scratch = (0..ops.len()).map(|_| Collector::default()).collect();
        let rows = source
            .iter()
            .map(|(u, _)| u)
            .chain(uids.iter())
            .map(|uid| OperatorRows {
                uid: uid.clone(),
                rows_in: AtomicU64::new(0),
                rows_out: AtomicU64::new(0),
                bytes_in: AtomicU64::new(0),
                bytes_out: AtomicU64::new(0),
            })
            .collect();
        Ok(Chain { source, ops, uids, scratch, tail: Vec::new(), rows: Arc::new(rows) })
    }

    /// Rows in and out of each operator, readable while the task runs.
    pub fn operator_rows(&self) -> Arc<Vec<OperatorRows>> {
        self.rows.clone()
    }

    pub(super) fn rows_at(&self, level: usize) -> &OperatorRows {
        &self.rows[level + usize::from(self.source.is_some())]
    }

    pub(super) fn fail(&self, level: usize, source: OperatorError) -> TaskError {
        TaskError::Operator { operator: self.uids[level].clone(), source }
    }

    /// Pushes `element` into operator `level` (on input `input`) and
    /// everything it emits down the chain; what leaves the tail is queued.
    pub(super) fn feed(&mut self, level: usize, input: usize, element: StreamElement) -> Result<(), TaskError> {
        if level == self.ops.len() {
            self.tail.push((0, element));
            return Ok(());
        }
        let mut out = std::mem::take(&mut self.scratch[level]);
        if let StreamElement::Batch(b) = &element {
            let rows = self.rows_at(level);
            rows.rows_in.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
            rows.bytes_in.fetch_add(b.get_array_memory_size() as u64, Ordering::Relaxed);
        }
        let op = &mut self.ops[level];
        let res = match element {
            StreamElement::Batch(b) => op.process_batch(input, b, &mut out),
            StreamElement::Watermark(w) => op.process_watermark(w, &mut out),
            StreamElement::Idle(i) => op.process_idle(i, &mut out),
            StreamElement::EndOfInput | StreamElement::Stop | StreamElement::Barrier(_) | StreamElement::Broken(_) => {
                Ok(())
            }
        };
        res.map_err(|e| self.fail(level, e))?;
        self.forward(level, out)
    }

    /// Counts what operator `level` emitted into `out` and pushes it on.
    pub(super) fn forward(&mut self, level: usize, mut out: Collector) -> Result<(), TaskError> {
        let emitted = out.take();
        let side = out.take_side();
        self.scratch[level] = out;
        let (mut rows, mut bytes) = (0, 0);
        if level + 1 == self.ops.len() {
            // Side outputs of the tail go out ahead of what follows them on
            // the main output (a watermark must not overtake them).
            for (port, b) in side {
                rows += b.num_rows() as u64;
                bytes += b.get_array_memory_size() as u64;
                self.tail.push((port, StreamElement::Batch(b)));
            }
        }
        for e in &emitted {
            if let StreamElement::Batch(b) = e {
                rows += b.num_rows() as u64;
                bytes += b.get_array_memory_size() as u64;
            }
        }
        if rows > 0 {
            let counters = self.rows_at(level);
            counters.rows_out.fetch_add(rows, Ordering::Relaxed);
            counters.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        }
        for e in emitted {
            self.feed(level + 1, 0, e)?;
        }
        Ok(())
    }

    /// Runs `f` on operator `level`, then pushes its output down the chain.
    pub(super) fn call(
        &mut self,
        level: usize,
        f: impl FnOnce(&mut dyn Operator, &mut Collector) -> Result<(), OperatorError>,
    ) -> Result<(), TaskError> {
        let mut out = std::mem::take(&mut self.scratch[level]);
        f(self.ops[level].as_mut(), &mut out).map_err(|e| self.fail(level, e))?;
        self.forward(level, out)
    }

    pub(super) fn end_input(&mut self, input: usize) -> Result<(), TaskError> {
        if self.ops.is_empty() {
            return Ok(());
        }
        self.call(0, |op, out| op.end_input(input, out))
    }

    pub(super) fn finish(&mut self) -> Result<(), TaskError> {
        for level in 0..self.ops.len() {
            self.call(level, |op, out| op.finish(out))?;
        }
        Ok(())
    }

    pub(super) fn on_processing_time(&mut self, now: Instant) -> Result<(), TaskError> {
        for level in 0..self.ops.len() {
            self.call(level, |op, out| op.on_processing_time(now, out))?;
        }
        Ok(())
    }

    pub(super) fn sink_records(&self) -> u64 {
        self.ops.iter().map(|o| o.sink_records()).sum()
    }

    /// Operator uids of the chain, head (source) first.
    pub fn operator_uids(&self) -> Vec<String> {
        self.source.iter().map(|(u, _)| u.clone()).chain(self.uids.iter().cloned()).collect()
    }

    /// Hands restored state to every operator of the chain (before it runs).
    pub fn restore(&mut self, entries: &[StateEntry]) -> Result<(), TaskError> {
        if let Some((uid, s)) = &mut self.source {
            s.restore_state(&StateReader::new(uid, entries))
                .map_err(|source| TaskError::Operator { operator: uid.clone(), source })?;
        }
        for (level, op) in self.ops.iter_mut().enumerate() {
            let uid = &self.uids[level];
            op.restore_state(&StateReader::new(uid, entries))
                .map_err(|source| TaskError::Operator { operator: uid.clone(), source })?;
        }
        Ok(())
    }

    /// Every operator's state for checkpoint `id` (the source is passed in
    /// by the source loop, which holds it while running).
    pub(super) fn snapshot(
        &mut self,
        id: CheckpointId,
        full: bool,
        source: Option<(&str, &mut dyn SourceOperator)>,
    ) -> Result<Vec<StateEntry>, TaskError> {
        let mut entries = Vec::new();
        if let Some((uid, s)) = source {
            let mut w = StateWriter::new(uid, id, full);
            s.snapshot_state(&mut w).map_err(|source| TaskError::Operator { operator: uid.to_string(), source })?;
            entries.extend(w.into_entries());
        }
        for (level, op) in self.ops.iter_mut().enumerate() {
            let uid = &self.uids[level];
            let mut w = StateWriter::new(uid, id, full);
            op.snapshot_state(&mut w).map_err(|source| TaskError::Operator { operator: uid.clone(), source })?;
            entries.extend(w.into_entries());
        }
        Ok(entries)
    }

    pub(super) fn checkpoint_complete(
        &mut self,
        id: CheckpointId,
        source: Option<&mut dyn SourceOperator>,
    ) -> Result<(), TaskError> {
        if let (Some(s), Some((uid, _))) = (source, &self.source) {
            s.checkpoint_complete(id).map_err(|source| TaskError::Operator { operator: uid.clone(), source })?;
        }
        for level in 0..self.ops.len() {
            self.call(level, |op, _| op.checkpoint_complete(id))?;
        }
        Ok(())
    }
}
