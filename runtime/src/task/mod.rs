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
//!
//! - [`chain`]: the operators of one subtask, fed element by element;
//! - [`input`]: reading the input channels (alignment, watermarks, ends);
//! - [`source`]: the loop of a source task;
//! - [`output`]: partitioning and buffering the output per channel.

mod chain;
mod input;
mod output;
mod source;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::barrier::{CheckpointId, CheckpointMode};
use crate::channel::{Inbox, StreamElement};
use crate::error::OperatorError;
use crate::operators::SourceOperator;
use crate::state::StateEntry;

pub use chain::Chain;
pub use output::{OutputEdge, Partitioner};

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

impl weir_types::Classify for TaskError {
    fn class(&self) -> weir_types::ErrorClass {
        match self {
            TaskError::Canceled | TaskError::Exchange(_) => weir_types::ErrorClass::Transient,
            TaskError::Operator { source, .. } => source.class(),
        }
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

/// The next command, or never if the task has no control channel.
pub(super) async fn next_control(control: &mut Option<mpsc::UnboundedReceiver<TaskControl>>) -> Option<TaskControl> {
    match control {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
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
        for (port, element) in std::mem::take(&mut self.chain.tail) {
            match element {
                StreamElement::Batch(b) => {
                    self.counters.records_out.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    self.counters.bytes_out.fetch_add(b.get_array_memory_size() as u64, Ordering::Relaxed);
                    for out in self.outputs.iter_mut().filter(|o| o.port == port) {
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
}
