//! The task loop: one subtask of one vertex (a chain of operators), reading
//! its input channels, pushing elements through the chain and writing the
//! chain's output to its output edges.
//!
//! Watermarks of a task are the minimum over its input channels (ended
//! channels count as +∞, idle ones are left out); the head operator sees one
//! watermark per advance. Output batches are partitioned per edge and
//! buffered per channel until they reach `min_batch_rows` or the buffer
//! timeout expires; control elements flush buffered data first, so order is
//! kept on every channel.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::barrier::{Action, Aligner, CheckpointId, CheckpointMode, Item};
use crate::channel::{Inbox, OutputChannel, StreamElement};
use crate::error::OperatorError;
use crate::graph::{Partitioning, Plan};
use crate::keygroup::{hash_rows, key_group, subtask_for_key_group};
use crate::operators::{
    registry, Collector, Instance, Operator, PlanContext, SourceOperator, SourceStatus, SubtaskInfo,
};
use crate::state::{StateEntry, StateReader, StateWriter};

/// Tunables of the data plane.
#[derive(Debug, Clone, Copy)]
pub struct TaskOptions {
    /// Longest time a partial batch waits in an output buffer.
    pub buffer_timeout: Duration,
    /// An output buffer is sent as soon as it holds this many rows.
    pub min_batch_rows: usize,
    /// Period of processing-time callbacks (watermark emission, idleness).
    pub tick: Duration,
    /// How barriers are aligned on tasks with several input channels.
    pub checkpoint_mode: CheckpointMode,
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self {
            buffer_timeout: Duration::from_millis(10),
            min_batch_rows: 1024,
            tick: Duration::from_millis(10),
            checkpoint_mode: CheckpointMode::ExactlyOnce,
        }
    }
}

/// Live counters of a task, readable while it runs (metrics read them).
#[derive(Debug)]
pub struct TaskCounters {
    /// Rows entering the chain (read from inputs, or produced by the source).
    pub records_in: AtomicU64,
    /// Rows leaving the chain's tail.
    pub records_out: AtomicU64,
    /// In-memory size of the batches entering the chain.
    pub bytes_in: AtomicU64,
    /// In-memory size of the batches leaving the chain's tail.
    pub bytes_out: AtomicU64,
    /// Rows written by sinks of the chain.
    pub sink_records: AtomicU64,
    /// Records the source could not decode.
    pub bad_records: AtomicU64,
    /// Nanoseconds spent waiting for credits to send output (backpressure);
    /// shared with the task's output channels.
    pub backpressure_ns: Arc<AtomicU64>,
    /// The last watermark the task emitted (`i64::MIN`: none yet).
    pub watermark: AtomicI64,
    /// Size of the state the task's last completed snapshot references.
    pub state_bytes: Arc<AtomicU64>,
    /// Gauges the source reports (Kafka consumer lag per partition).
    pub source_gauges: Mutex<Vec<SourceGauge>>,
}

impl Default for TaskCounters {
    fn default() -> Self {
        Self {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            sink_records: AtomicU64::new(0),
            bad_records: AtomicU64::new(0),
            backpressure_ns: Arc::new(AtomicU64::new(0)),
            watermark: AtomicI64::new(i64::MIN),
            state_bytes: Arc::new(AtomicU64::new(0)),
            source_gauges: Mutex::new(Vec::new()),
        }
    }
}

/// Rows in and out of one operator of a chain.
#[derive(Debug)]
pub struct OperatorRows {
    /// The operator's uid.
    pub uid: String,
    /// Rows it received.
    pub rows_in: AtomicU64,
    /// Rows it emitted.
    pub rows_out: AtomicU64,
    /// In-memory size of the batches it received.
    pub bytes_in: AtomicU64,
    /// In-memory size of the batches it emitted.
    pub bytes_out: AtomicU64,
}

pub use crate::operators::SourceGauge;

/// How often a source's gauges are read.
const GAUGE_PERIOD: Duration = Duration::from_secs(1);

/// Why a task stopped without finishing.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// It was cancelled.
    #[error("canceled")]
    Canceled,
    /// An operator failed.
    #[error("operator `{operator}` failed: {source}")]
    Operator {
        /// The operator's uid.
        operator: String,
        /// What went wrong.
        source: OperatorError,
    },
    /// The data plane failed (a channel closed early, a peer vanished).
    #[error("{0}")]
    Exchange(OperatorError),
}

/// The operators of one subtask of a vertex, instantiated from the plan.
pub struct Chain {
    source: Option<(String, Box<dyn SourceOperator>)>,
    ops: Vec<Box<dyn Operator>>,
    uids: Vec<String>,
    scratch: Vec<Collector>,
    tail: Vec<StreamElement>,
    /// Per operator (source first), rows in and out.
    rows: Arc<Vec<OperatorRows>>,
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
            let factory = registry::get(&op.kind)
                .ok_or_else(|| crate::PlanError::operator(&op.uid, op.line, format!("unknown kind `{}`", op.kind)))?;
            let edges: Vec<&crate::graph::EdgeSpec> = {
                let mut e: Vec<_> = plan.graph.edges.iter().filter(|e| e.to == op.uid).collect();
                e.sort_by_key(|e| e.input);
                e
            };
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

    fn rows_at(&self, level: usize) -> &OperatorRows {
        &self.rows[level + usize::from(self.source.is_some())]
    }

    fn fail(&self, level: usize, source: OperatorError) -> TaskError {
        TaskError::Operator { operator: self.uids[level].clone(), source }
    }

    /// Pushes `element` into operator `level` (on input `input`) and
    /// everything it emits down the chain; what leaves the tail is queued.
    fn feed(&mut self, level: usize, input: usize, element: StreamElement) -> Result<(), TaskError> {
        if level == self.ops.len() {
            self.tail.push(element);
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
    fn forward(&mut self, level: usize, mut out: Collector) -> Result<(), TaskError> {
        let emitted = out.take();
        self.scratch[level] = out;
        let (mut rows, mut bytes) = (0, 0);
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
    fn call(
        &mut self,
        level: usize,
        f: impl FnOnce(&mut dyn Operator, &mut Collector) -> Result<(), OperatorError>,
    ) -> Result<(), TaskError> {
        let mut out = std::mem::take(&mut self.scratch[level]);
        f(self.ops[level].as_mut(), &mut out).map_err(|e| self.fail(level, e))?;
        self.forward(level, out)
    }

    fn end_input(&mut self, input: usize) -> Result<(), TaskError> {
        if self.ops.is_empty() {
            return Ok(());
        }
        self.call(0, |op, out| op.end_input(input, out))
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        for level in 0..self.ops.len() {
            self.call(level, |op, out| op.finish(out))?;
        }
        Ok(())
    }

    fn on_processing_time(&mut self, now: Instant) -> Result<(), TaskError> {
        for level in 0..self.ops.len() {
            self.call(level, |op, out| op.on_processing_time(now, out))?;
        }
        Ok(())
    }

    fn sink_records(&self) -> u64 {
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
    fn snapshot(
        &mut self,
        id: CheckpointId,
        full: bool,
        source: Option<(&str, &mut dyn SourceOperator)>,
    ) -> Result<Vec<StateEntry>, TaskError> {
        let mut entries = Vec::new();
        if let Some((uid, s)) = source {
            let mut w = StateWriter::new(uid, id.0, full);
            s.snapshot_state(&mut w).map_err(|source| TaskError::Operator { operator: uid.to_string(), source })?;
            entries.extend(w.into_entries());
        }
        for (level, op) in self.ops.iter_mut().enumerate() {
            let uid = &self.uids[level];
            let mut w = StateWriter::new(uid, id.0, full);
            op.snapshot_state(&mut w).map_err(|source| TaskError::Operator { operator: uid.clone(), source })?;
            entries.extend(w.into_entries());
        }
        Ok(entries)
    }

    fn checkpoint_complete(
        &mut self,
        id: CheckpointId,
        source: Option<&mut dyn SourceOperator>,
    ) -> Result<(), TaskError> {
        if let (Some(s), Some((uid, _))) = (source, &self.source) {
            s.checkpoint_complete(id.0).map_err(|source| TaskError::Operator { operator: uid.clone(), source })?;
        }
        for level in 0..self.ops.len() {
            self.call(level, |op, _| op.checkpoint_complete(id.0))?;
        }
        Ok(())
    }
}

/// What a task does with its state at a checkpoint: the task manager's
/// state backend behind a transport-agnostic interface.
pub trait Checkpointer: Send + std::fmt::Debug {
    /// Whether operators must write all their state each time (heap) or
    /// only what changed (incremental backends).
    fn full_snapshots(&self) -> bool;

    /// Takes the task's state for checkpoint `id`. Runs while the task is
    /// paused at the barrier, so it should only copy; persisting and
    /// acknowledging happen asynchronously, owned by the implementation.
    /// An error fails the task.
    fn checkpoint(&mut self, id: CheckpointId, entries: Vec<StateEntry>, timing: SnapshotTiming) -> Result<(), String>;

    /// Checkpoint `id` is complete (every task acknowledged it and its
    /// metadata is written): work the implementation held back so as not to
    /// slow the checkpoint down may start.
    fn checkpoint_complete(&mut self, _id: CheckpointId) {}
}

/// How long the synchronous part of a checkpoint took on a task.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotTiming {
    /// From the first barrier of the checkpoint to the last one (aligned tasks).
    pub alignment: Duration,
    /// Snapshotting the operators.
    pub sync: Duration,
}

/// How an output edge picks channels.
#[derive(Debug)]
pub enum Partitioner {
    /// One channel (forward).
    Single,
    /// By key group of the key columns.
    Hash {
        /// Key column indices in the edge's schema.
        key: Vec<usize>,
        /// Number of key groups.
        max_parallelism: u32,
    },
    /// Every channel.
    Broadcast,
    /// Round-robin over channels, per batch.
    Rebalance {
        /// Next channel.
        next: usize,
    },
}

/// One output edge of a task: a partitioner over channels, with a buffer per channel.
#[derive(Debug)]
pub struct OutputEdge {
    partitioner: Partitioner,
    channels: Vec<OutputChannel>,
    pending: Vec<(Vec<RecordBatch>, usize)>,
    hashes: Vec<u64>,
    picks: Vec<Vec<u32>>,
}

impl OutputEdge {
    /// An edge of the given partitioning over `channels` (downstream subtask
    /// order; a forward edge has exactly one).
    pub fn new(
        partitioning: Partitioning,
        key: Vec<usize>,
        max_parallelism: u32,
        channels: Vec<OutputChannel>,
    ) -> Self {
        let partitioner = match partitioning {
            Partitioning::Forward => Partitioner::Single,
            Partitioning::Hash => Partitioner::Hash { key, max_parallelism },
            Partitioning::Broadcast => Partitioner::Broadcast,
            Partitioning::Rebalance => Partitioner::Rebalance { next: 0 },
        };
        let n = channels.len();
        Self {
            partitioner,
            channels,
            pending: vec![(Vec::new(), 0); n],
            hashes: Vec::new(),
            picks: vec![Vec::new(); n],
        }
    }

    async fn push(&mut self, channel: usize, batch: RecordBatch, opts: &TaskOptions) -> Result<(), OperatorError> {
        let (buf, rows) = &mut self.pending[channel];
        *rows += batch.num_rows();
        buf.push(batch);
        if *rows >= opts.min_batch_rows {
            self.flush_channel(channel).await?;
        }
        Ok(())
    }

    async fn flush_channel(&mut self, channel: usize) -> Result<(), OperatorError> {
        let (buf, rows) = &mut self.pending[channel];
        if buf.is_empty() {
            return Ok(());
        }
        let batch = if buf.len() == 1 {
            buf.pop().expect("one batch")
        } else {
            let b = concat_batches(&buf[0].schema(), buf.iter())?;
            buf.clear();
            b
        };
        *rows = 0;
        self.channels[channel].send(StreamElement::Batch(batch)).await
    }

    async fn flush(&mut self) -> Result<(), OperatorError> {
        for c in 0..self.channels.len() {
            self.flush_channel(c).await?;
        }
        Ok(())
    }

    async fn send_batch(&mut self, batch: RecordBatch, opts: &TaskOptions) -> Result<(), OperatorError> {
        let n = self.channels.len();
        match &mut self.partitioner {
            Partitioner::Single => self.push(0, batch, opts).await,
            Partitioner::Rebalance { next } => {
                let c = *next;
                *next = (c + 1) % n;
                self.push(c, batch, opts).await
            }
            Partitioner::Broadcast => {
                for c in 0..n {
                    self.push(c, batch.clone(), opts).await?;
                }
                Ok(())
            }
            Partitioner::Hash { key, max_parallelism } => {
                let cols: Vec<_> = key.iter().map(|&k| batch.column(k).clone()).collect();
                hash_rows(&cols, &mut self.hashes)?;
                for p in &mut self.picks {
                    p.clear();
                }
                let (m, p) = (*max_parallelism, n as u32);
                for (r, &h) in self.hashes.iter().enumerate() {
                    self.picks[subtask_for_key_group(key_group(h, m), m, p) as usize].push(r as u32);
                }
                for c in 0..n {
                    let picked = self.picks[c].len();
                    if picked == 0 {
                        continue;
                    }
                    let part = if picked == batch.num_rows() {
                        batch.clone()
                    } else {
                        take_record_batch(&batch, &UInt32Array::from(std::mem::take(&mut self.picks[c])))?
                    };
                    self.push(c, part, opts).await?;
                }
                Ok(())
            }
        }
    }

    async fn send_control(&mut self, element: StreamElement) -> Result<(), OperatorError> {
        self.flush().await?;
        for ch in &self.channels {
            ch.send(element.clone()).await?;
        }
        Ok(())
    }
}

/// The next command, or never if the task has no control channel.
async fn next_control(control: &mut Option<mpsc::UnboundedReceiver<TaskControl>>) -> Option<TaskControl> {
    match control {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

/// Watermark and end-of-input bookkeeping over all input channels.
#[derive(Debug)]
struct InputState {
    watermarks: Vec<Vec<i64>>,
    idle: Vec<Vec<bool>>,
    ended: Vec<Vec<bool>>,
    open_per_input: Vec<u32>,
    open: u32,
    current: i64,
    all_idle: bool,
}

impl InputState {
    fn new(channels: &[u32]) -> Self {
        Self {
            watermarks: channels.iter().map(|&n| vec![i64::MIN; n as usize]).collect(),
            idle: channels.iter().map(|&n| vec![false; n as usize]).collect(),
            ended: channels.iter().map(|&n| vec![false; n as usize]).collect(),
            open_per_input: channels.to_vec(),
            open: channels.iter().sum(),
            current: i64::MIN,
            all_idle: false,
        }
    }

    /// The combined watermark if it advanced.
    ///
    /// When every open channel is idle, event time catches up with the
    /// largest watermark any of them reached: otherwise the channel that
    /// went idle last would hold back forever what the others allowed.
    fn advance(&mut self) -> Option<i64> {
        let mut min = i64::MAX;
        let mut max = i64::MIN;
        let mut any = false;
        for (i, ws) in self.watermarks.iter().enumerate() {
            for (c, &w) in ws.iter().enumerate() {
                if self.ended[i][c] {
                    continue;
                }
                max = max.max(w);
                if self.idle[i][c] {
                    continue;
                }
                any = true;
                min = min.min(w);
            }
        }
        if !any && self.open > 0 {
            min = max;
        }
        if min > self.current && min != i64::MAX && min != i64::MIN {
            self.current = min;
            Some(min)
        } else {
            None
        }
    }

    /// Whether every open channel is idle, if that changed.
    fn idleness_changed(&mut self) -> Option<bool> {
        let mut all = self.open > 0;
        for (i, flags) in self.idle.iter().enumerate() {
            for (c, &idle) in flags.iter().enumerate() {
                if !self.ended[i][c] && !idle {
                    all = false;
                }
            }
        }
        (all != self.all_idle).then(|| {
            self.all_idle = all;
            all
        })
    }
}

/// Everything a task needs to run.
#[derive(Debug)]
pub struct Task {
    /// The chain to run.
    pub chain: Chain,
    /// Input channels (absent for a source task).
    pub inbox: Option<Inbox>,
    /// Output edges.
    pub outputs: Vec<OutputEdge>,
    /// Data-plane tunables.
    pub options: TaskOptions,
    /// Live counters.
    pub counters: Arc<TaskCounters>,
    /// Commands from the task manager (checkpoint triggers for sources).
    pub control: Option<mpsc::UnboundedReceiver<TaskControl>>,
    /// What the task reports while it runs (checkpoints taken).
    pub events: Option<mpsc::UnboundedSender<TaskEvent>>,
    /// Where state goes at checkpoints (`None`: barriers only pass through).
    pub checkpointer: Option<Box<dyn Checkpointer>>,
    /// The task had finished before the checkpoint it restores from: a
    /// source ends at once instead of producing its input again.
    pub finished: bool,
}

/// A command to a running task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskControl {
    /// Sources: emit barrier `.0` after what was emitted so far.
    TriggerCheckpoint(CheckpointId),
    /// Sources: emit barrier `.0` of a stop-with-savepoint, then read
    /// nothing more. Once the savepoint completes the task stops (sending
    /// [`StreamElement::Stop`]); if it fails, reading resumes.
    StopWithSavepoint(CheckpointId),
    /// Checkpoint `.0` is complete: operators commit what it covers.
    CheckpointComplete(CheckpointId),
    /// Checkpoint `.0` failed (sources paused for a stop-with-savepoint resume).
    CheckpointAborted(CheckpointId),
}

/// How a task's input ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Every input ended (or the source finished): flush and finish.
    Drained,
    /// Upstream stopped with a savepoint: keep what is held, commit the
    /// savepoint once its completion is known, stop.
    Stopped {
        /// The last checkpoint (the savepoint) this task took.
        taken: Option<CheckpointId>,
        /// The newest completion notice this task received.
        completed: Option<CheckpointId>,
    },
}

/// Something a running task reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    /// The task took its part of checkpoint `id` and forwarded the barrier.
    CheckpointTaken {
        /// The checkpoint.
        id: CheckpointId,
        /// Rows that had entered the chain before the barrier (for a source:
        /// rows it had produced).
        records_in: u64,
    },
    /// The task gave up aligning checkpoint `.0` for a newer one.
    CheckpointAborted(CheckpointId),
}

impl Task {
    /// Runs the task to the end of its input, or until cancelled or failed.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), TaskError> {
        let result = self.run_to_end(&cancel).await;
        self.counters.sink_records.store(self.chain.sink_records(), Ordering::Relaxed);
        // Once cancelled, a failure is the echo of the cancellation (a
        // neighbour that stopped first closed a channel), not a cause.
        result.map_err(|e| if cancel.is_cancelled() { TaskError::Canceled } else { e })
    }

    async fn run_to_end(&mut self, cancel: &CancellationToken) -> Result<(), TaskError> {
        let ending = if self.chain.source.is_some() {
            if self.finished {
                Ending::Drained
            } else {
                self.run_source(cancel).await?
            }
        } else {
            self.run_inputs(cancel).await?
        };
        let last = match ending {
            Ending::Drained => {
                self.chain.finish()?;
                self.emit_tail().await?;
                StreamElement::EndOfInput
            }
            Ending::Stopped { taken, completed } => {
                self.await_completion(cancel, taken, completed).await?;
                self.flush().await?;
                StreamElement::Stop
            }
        };
        for out in &mut self.outputs {
            out.send_control(last.clone()).await.map_err(TaskError::Exchange)?;
        }
        Ok(())
    }

    /// After a stop: waits until the savepoint this task took is known to be
    /// complete (sinks commit on that notice), so that the job ends only
    /// once everything up to the savepoint is committed.
    async fn await_completion(
        &mut self,
        cancel: &CancellationToken,
        taken: Option<CheckpointId>,
        mut completed: Option<CheckpointId>,
    ) -> Result<(), TaskError> {
        let Some(taken) = taken else { return Ok(()) };
        while completed < Some(taken) {
            let ctl = tokio::select! {
                _ = cancel.cancelled() => return Err(TaskError::Canceled),
                ctl = next_control(&mut self.control) => ctl,
            };
            match ctl {
                Some(TaskControl::CheckpointComplete(id)) => {
                    self.checkpoint_complete(id, None)?;
                    self.emit_tail().await?;
                    completed = completed.max(Some(id));
                }
                Some(_) => {}
                None => return Err(TaskError::Canceled),
            }
        }
        Ok(())
    }

    async fn emit_tail(&mut self) -> Result<(), TaskError> {
        for element in std::mem::take(&mut self.chain.tail) {
            match element {
                StreamElement::Batch(b) => {
                    self.counters.records_out.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    self.counters.bytes_out.fetch_add(b.get_array_memory_size() as u64, Ordering::Relaxed);
                    for out in &mut self.outputs {
                        out.send_batch(b.clone(), &self.options).await.map_err(TaskError::Exchange)?;
                    }
                }
                control => {
                    if let StreamElement::Watermark(w) = control {
                        self.counters.watermark.store(w, Ordering::Relaxed);
                    }
                    for out in &mut self.outputs {
                        out.send_control(control.clone()).await.map_err(TaskError::Exchange)?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), TaskError> {
        for out in &mut self.outputs {
            out.flush().await.map_err(TaskError::Exchange)?;
        }
        Ok(())
    }

    async fn tick(&mut self, now: Instant) -> Result<(), TaskError> {
        self.chain.on_processing_time(now)?;
        self.emit_tail().await?;
        self.flush().await?;
        self.counters.sink_records.store(self.chain.sink_records(), Ordering::Relaxed);
        Ok(())
    }

    async fn run_source(&mut self, cancel: &CancellationToken) -> Result<Ending, TaskError> {
        let (uid, mut source) = self.chain.source.take().expect("source task");
        let mut out = Collector::default();
        let mut last_tick = Instant::now();
        // Set while paused after the barrier of a stop-with-savepoint.
        let mut stopping: Option<CheckpointId> = None;
        let mut last_gauges = Instant::now() - GAUGE_PERIOD;
        let result = loop {
            if cancel.is_cancelled() {
                break Err(TaskError::Canceled);
            }
            if let Some(savepoint) = stopping {
                let ctl = tokio::select! {
                    _ = cancel.cancelled() => break Err(TaskError::Canceled),
                    ctl = next_control(&mut self.control) => ctl,
                    _ = tokio::time::sleep(self.options.tick) => {
                        if let Err(e) = self.tick(Instant::now()).await {
                            break Err(e);
                        }
                        continue;
                    }
                };
                match ctl {
                    Some(TaskControl::CheckpointComplete(id)) => {
                        if let Err(e) = self.checkpoint_complete(id, Some(source.as_mut())) {
                            break Err(e);
                        }
                        if let Err(e) = self.emit_tail().await {
                            break Err(e);
                        }
                        if id >= savepoint {
                            break Ok(Ending::Stopped { taken: Some(savepoint), completed: Some(id) });
                        }
                    }
                    Some(TaskControl::CheckpointAborted(id)) if id == savepoint => {
                        tracing::info!(checkpoint = %id, "the stop-with-savepoint failed: reading resumes");
                        stopping = None;
                    }
                    Some(_) => {}
                    None => break Err(TaskError::Canceled),
                }
                continue;
            }
            let status = match source.poll(&mut out) {
                Ok(s) => s,
                Err(e) => break Err(TaskError::Operator { operator: uid.clone(), source: e }),
            };
            self.counters.bad_records.store(source.bad_records(), Ordering::Relaxed);
            for element in out.take() {
                if let StreamElement::Batch(b) = &element {
                    self.counters.records_in.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    self.counters.bytes_in.fetch_add(b.get_array_memory_size() as u64, Ordering::Relaxed);
                    self.chain.rows[0].rows_out.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    self.chain.rows[0].bytes_out.fetch_add(b.get_array_memory_size() as u64, Ordering::Relaxed);
                }
                self.chain.feed(0, 0, element)?;
            }
            if last_gauges.elapsed() >= GAUGE_PERIOD {
                last_gauges = Instant::now();
                let gauges = source.gauges();
                *self.counters.source_gauges.lock().unwrap_or_else(|e| e.into_inner()) = gauges;
            }
            self.emit_tail().await?;
            while let Some(Ok(ctl)) = self.control.as_mut().map(|c| c.try_recv()) {
                match ctl {
                    TaskControl::TriggerCheckpoint(id) => {
                        self.checkpoint(id, Some((uid.as_str(), source.as_mut())), Duration::ZERO).await?
                    }
                    TaskControl::StopWithSavepoint(id) => {
                        self.checkpoint(id, Some((uid.as_str(), source.as_mut())), Duration::ZERO).await?;
                        self.flush().await?;
                        stopping = Some(id);
                    }
                    TaskControl::CheckpointComplete(id) => {
                        self.checkpoint_complete(id, Some(source.as_mut()))?;
                        self.emit_tail().await?;
                    }
                    TaskControl::CheckpointAborted(_) => {}
                }
            }
            if stopping.is_some() {
                continue;
            }
            let now = Instant::now();
            if now.duration_since(last_tick) >= self.options.tick {
                last_tick = now;
                self.tick(now).await?;
            }
            match status {
                SourceStatus::Emitted => {}
                SourceStatus::Finished => break Ok(Ending::Drained),
                SourceStatus::Wait(d) => {
                    let d = d.min(self.options.tick);
                    tokio::select! {
                        _ = cancel.cancelled() => break Err(TaskError::Canceled),
                        _ = tokio::time::sleep(d) => {}
                    }
                }
            }
        };
        self.chain.source = Some((uid, source));
        result
    }

    /// Checkpoint `id` is complete: operators commit, and the checkpointer
    /// hears of it.
    fn checkpoint_complete(
        &mut self,
        id: CheckpointId,
        source: Option<&mut dyn SourceOperator>,
    ) -> Result<(), TaskError> {
        self.chain.checkpoint_complete(id, source)?;
        if let Some(cp) = self.checkpointer.as_mut() {
            cp.checkpoint_complete(id);
        }
        Ok(())
    }

    /// Takes this task's part of checkpoint `id` and forwards the barrier
    /// behind everything emitted before it.
    async fn checkpoint(
        &mut self,
        id: CheckpointId,
        source: Option<(&str, &mut dyn SourceOperator)>,
        alignment: Duration,
    ) -> Result<(), TaskError> {
        let started = Instant::now();
        let entries = match &self.checkpointer {
            Some(cp) => Some(self.chain.snapshot(id, cp.full_snapshots(), source)?),
            None => None,
        };
        let sync = started.elapsed();
        tracing::debug!(checkpoint = %id, task = %self.chain.operator_uids().join(" -> "), sync = ?sync, alignment = ?alignment, "state snapshot taken");
        for out in &mut self.outputs {
            out.send_control(StreamElement::Barrier(id)).await.map_err(TaskError::Exchange)?;
        }
        if let (Some(cp), Some(entries)) = (self.checkpointer.as_mut(), entries) {
            // The operators handed over their state (incremental ones cleared
            // what they track as changed): a backend that could not take it
            // is out of step with them, so the task fails and restores.
            if let Err(reason) = cp.checkpoint(id, entries, SnapshotTiming { alignment, sync }) {
                return Err(TaskError::Operator {
                    operator: "checkpoint".into(),
                    source: OperatorError::State(format!("checkpoint {id}: {reason}")),
                });
            }
        }
        self.event(TaskEvent::CheckpointTaken { id, records_in: self.counters.records_in.load(Ordering::Relaxed) });
        Ok(())
    }

    fn event(&self, e: TaskEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(e);
        }
    }

    async fn run_inputs(&mut self, cancel: &CancellationToken) -> Result<Ending, TaskError> {
        let mut inbox = self.inbox.take().expect("a task without a source has inputs");
        let channels = inbox.channels();
        let mut state = InputState::new(&channels);
        // Channels are numbered across inputs for alignment.
        let flat: Vec<(u32, u32)> =
            channels.iter().enumerate().flat_map(|(i, &n)| (0..n).map(move |c| (i as u32, c))).collect();
        let offsets: Vec<usize> =
            channels.iter().scan(0usize, |acc, &n| Some(std::mem::replace(acc, *acc + n as usize))).collect();
        let mut aligner = Aligner::new(flat.len(), self.options.checkpoint_mode);
        let mut actions = Vec::new();
        let mut control = self.control.take();
        let mut first_barrier: Vec<(CheckpointId, Instant)> = Vec::new();
        // Channels that ended with a stop (not drained), and checkpoint progress.
        let mut stopped = vec![false; flat.len()];
        let (mut taken, mut completed): (Option<CheckpointId>, Option<CheckpointId>) = (None, None);
        let mut ticker = tokio::time::interval(self.options.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while state.open > 0 {
            // The timer goes before input so that a busy input cannot starve
            // timed flushes and processing-time callbacks.
            let envelope = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(TaskError::Canceled),
                now = ticker.tick() => {
                    self.tick(now.into_std()).await?;
                    continue;
                }
                Some(ctl) = next_control(&mut control) => {
                    if let TaskControl::CheckpointComplete(id) = ctl {
                        self.checkpoint_complete(id, None)?;
                        self.emit_tail().await?;
                        completed = completed.max(Some(id));
                    }
                    continue;
                }
                e = inbox.recv() => match e {
                    Some(e) => e,
                    None => return Err(TaskError::Exchange(OperatorError::ChannelClosed("all input channels closed".into()))),
                },
            };
            let ch = offsets[envelope.input as usize] + envelope.channel as usize;
            match envelope.element {
                StreamElement::Barrier(id) => {
                    // A barrier's credit comes back at once; held data keeps its credits.
                    inbox.release(envelope.input, envelope.channel);
                    if !first_barrier.iter().any(|(b, _)| *b == id) {
                        first_barrier.push((id, Instant::now()));
                    }
                    aligner.barrier(ch, id, &mut actions);
                }
                StreamElement::EndOfInput => aligner.end(ch, &mut actions),
                StreamElement::Stop => {
                    stopped[ch] = true;
                    aligner.end(ch, &mut actions)
                }
                StreamElement::Broken(why) => {
                    let (i, c) = flat[ch];
                    return Err(TaskError::Exchange(OperatorError::ChannelClosed(format!(
                        "input {i} channel {c}: {why}"
                    ))));
                }
                element => aligner.element(ch, element, &mut actions),
            }
            for action in std::mem::take(&mut actions) {
                match action {
                    Action::Deliver(ch, item) => {
                        let (i, c) = flat[ch];
                        match item {
                            Item::Element(element) => self.process(&mut state, i as usize, c as usize, element)?,
                            Item::End => self.end_channel(&mut state, i as usize, c as usize, !stopped[ch])?,
                        }
                        inbox.release(i, c);
                        self.emit_tail().await?;
                    }
                    Action::Checkpoint(id) => {
                        let since = first_barrier.iter().find(|(b, _)| *b == id).map(|(_, t)| t.elapsed());
                        first_barrier.retain(|(b, _)| *b > id);
                        self.checkpoint(id, None, since.unwrap_or_default()).await?;
                        taken = Some(id);
                    }
                    Action::Aborted(id) => {
                        tracing::debug!(checkpoint = %id, "alignment given up for a newer checkpoint");
                        self.event(TaskEvent::CheckpointAborted(id));
                    }
                }
            }
        }
        self.control = control;
        Ok(if stopped.contains(&true) { Ending::Stopped { taken, completed } } else { Ending::Drained })
    }

    /// Processes one element of input `i`, channel `c`.
    fn process(&mut self, state: &mut InputState, i: usize, c: usize, element: StreamElement) -> Result<(), TaskError> {
        match element {
            StreamElement::Batch(b) => {
                self.counters.records_in.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                self.counters.bytes_in.fetch_add(b.get_array_memory_size() as u64, Ordering::Relaxed);
                if state.idle[i][c] {
                    state.idle[i][c] = false;
                    if let Some(idle) = state.idleness_changed() {
                        self.chain.feed(0, 0, StreamElement::Idle(idle))?;
                    }
                }
                self.chain.feed(0, i, StreamElement::Batch(b))?;
            }
            StreamElement::Watermark(w) => {
                let slot = &mut state.watermarks[i][c];
                *slot = (*slot).max(w);
                if let Some(w) = state.advance() {
                    self.chain.feed(0, 0, StreamElement::Watermark(w))?;
                }
            }
            StreamElement::Idle(idle) => {
                state.idle[i][c] = idle;
                if let Some(all) = state.idleness_changed() {
                    self.chain.feed(0, 0, StreamElement::Idle(all))?;
                }
                if let Some(w) = state.advance() {
                    self.chain.feed(0, 0, StreamElement::Watermark(w))?;
                }
            }
            StreamElement::EndOfInput | StreamElement::Stop | StreamElement::Barrier(_) | StreamElement::Broken(_) => {
                unreachable!("handled by the task loop")
            }
        }
        Ok(())
    }

    /// Channel `c` of input `i` ended; `drained` is false when it stopped
    /// with a savepoint (then nothing is flushed and event time stays put).
    fn end_channel(&mut self, state: &mut InputState, i: usize, c: usize, drained: bool) -> Result<(), TaskError> {
        if state.ended[i][c] {
            return Ok(());
        }
        state.ended[i][c] = true;
        state.open -= 1;
        state.open_per_input[i] -= 1;
        if !drained {
            return Ok(());
        }
        if state.open_per_input[i] == 0 {
            self.chain.end_input(i)?;
        }
        if state.open > 0 {
            if let Some(w) = state.advance() {
                self.chain.feed(0, 0, StreamElement::Watermark(w))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_is_the_minimum_over_open_active_channels() {
        let mut s = InputState::new(&[2, 1]);
        s.watermarks[0][0] = 10;
        assert_eq!(s.advance(), None, "channels without a watermark hold it back");
        s.watermarks[0][1] = 5;
        s.watermarks[1][0] = 7;
        assert_eq!(s.advance(), Some(5));
        s.idle[0][1] = true;
        assert_eq!(s.advance(), Some(7));
        s.ended[1][0] = true;
        assert_eq!(s.advance(), Some(10));
        s.watermarks[0][1] = 3;
        s.idle[0][1] = false;
        assert_eq!(s.advance(), None, "the watermark never goes back");
    }

    #[test]
    fn when_every_channel_is_idle_event_time_catches_up_with_the_furthest() {
        let mut s = InputState::new(&[2]);
        s.watermarks[0][0] = 100;
        s.watermarks[0][1] = 500;
        assert_eq!(s.advance(), Some(100));
        s.idle[0][1] = true; // the furthest goes idle first
        assert_eq!(s.advance(), None);
        s.idle[0][0] = true;
        assert_eq!(s.advance(), Some(500), "all idle: the furthest watermark");
        s.idle[0][0] = false;
        assert_eq!(s.advance(), None, "never back");
    }

    #[test]
    fn all_idle_is_reported_once_per_change() {
        let mut s = InputState::new(&[2]);
        s.idle[0][0] = true;
        assert_eq!(s.idleness_changed(), None);
        s.idle[0][1] = true;
        assert_eq!(s.idleness_changed(), Some(true));
        assert_eq!(s.idleness_changed(), None);
        s.idle[0][0] = false;
        assert_eq!(s.idleness_changed(), Some(false));
    }
}
