//! Operators: the traits every operator implements, the registry that task
//! managers instantiate them from by name, and the built-in operators.
//!
//! Operators work a whole Arrow batch at a time and see only a [`Collector`]
//! for their output: never channels, gRPC or files outside their own config.

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde::de::DeserializeOwned;

use crate::channel::StreamElement;
use crate::error::{OpResult, PlanError};
use crate::graph::EdgeSpec;
use crate::state::{CheckpointId, StateReader, StateWriter};

pub mod aggregate;
pub mod datagen;
pub mod join;
pub mod limit;
pub mod nexmark;
pub mod normalize;
pub mod over;
pub mod project;
pub mod registry;
pub mod replicate;

pub use registry::Registry;
pub mod sinks;
pub mod top_n;
pub mod values;
pub mod watermark;
pub mod window;

/// How many inputs an operator kind takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// A source: no input.
    Source,
    /// One input.
    One,
    /// Two inputs (0 and 1).
    Two,
}

/// What an operator's factory knows at plan time.
#[derive(Debug)]
pub struct PlanContext<'a> {
    /// The operator's uid.
    pub uid: &'a str,
    /// Its line in the job file (0 if unknown).
    pub line: u32,
    /// Its configuration.
    pub config: &'a serde_json::Value,
    /// Schemas of its inputs, by input index.
    pub inputs: &'a [SchemaRef],
    /// The edges feeding its inputs, by input index.
    pub input_edges: &'a [&'a EdgeSpec],
    /// Its resolved parallelism.
    pub parallelism: u32,
    /// The job's checkpointing, if on (sinks that commit with checkpoints
    /// check it).
    pub checkpoint: Option<&'a crate::checkpointing::CheckpointConfig>,
}

impl PlanContext<'_> {
    /// Decodes the typed configuration, rejecting unknown fields; an error
    /// names the field it is about (`config.window.size`).
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, PlanError> {
        serde_path_to_error::deserialize(self.config.clone()).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." || path.is_empty() { "config".to_string() } else { format!("config.{path}") };
            self.error(e.into_inner().to_string()).field(field)
        })
    }

    /// An error about this operator.
    pub fn error(&self, message: impl Into<String>) -> PlanError {
        PlanError::operator(self.uid, self.line, message)
    }

    /// The indexes of the key columns `key` of input `input`: each present
    /// and of a type that can be a key, and the input routed by them (see
    /// [`PlanContext::require_keyed_input`]). Errors name `field`.
    pub fn key_columns(&self, input: usize, key: &[String], field: &str) -> Result<Vec<usize>, PlanError> {
        let schema = &self.inputs[input];
        let mut columns = Vec::with_capacity(key.len());
        for k in key {
            let i = schema.index_of(k).map_err(|_| self.error(format!("no column `{k}` in the input")).field(field))?;
            let t = schema.field(i).data_type();
            if !crate::keygroup::is_key_type(t) {
                return Err(self.error(format!("key column `{k}` has type {t}, which cannot be a key")).field(field));
            }
            columns.push(i);
        }
        self.require_keyed_input(input, key, field)?;
        Ok(columns)
    }

    /// Checks that input `input` is routed by `key` (hash-partitioned on it),
    /// as keyed operators require; any routing works at parallelism 1.
    pub fn require_keyed_input(&self, input: usize, key: &[String], field: &str) -> Result<(), PlanError> {
        if self.parallelism == 1 {
            return Ok(());
        }
        let edge = self.input_edges[input];
        if edge.partitioning != crate::graph::Partitioning::Hash || edge.key != key {
            return Err(self
                .error(format!(
                    "this keyed operator runs at parallelism {} and needs input {input} partitioned by hash on [{}]; the edge from `{}` is {}{}",
                    self.parallelism,
                    key.join(", "),
                    edge.from,
                    edge.partitioning,
                    if edge.key.is_empty() { String::new() } else { format!(" on [{}]", edge.key.join(", ")) }
                ))
                .field(field));
        }
        Ok(())
    }
}

/// Where an instantiated operator runs.
#[derive(Debug, Clone, Copy)]
pub struct SubtaskInfo {
    /// Subtask index.
    pub index: u32,
    /// Parallelism of the operator.
    pub parallelism: u32,
    /// Number of key groups of the job.
    pub max_parallelism: u32,
}

/// Builds operators of one kind.
pub trait OperatorFactory: Send + Sync + std::fmt::Debug {
    /// Registry name.
    fn kind(&self) -> &str;
    /// Number of inputs.
    fn arity(&self) -> Arity;
    /// Whether the operator ends a pipeline (has no output edges).
    fn is_sink(&self) -> bool {
        false
    }
    /// Validates the configuration against the input schemas and returns the
    /// output schema (a sink returns its input schema).
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError>;
    /// The side outputs of the operator besides its main output: a name
    /// (what edges name as their `output`) and a schema each. An operator
    /// emits to side output `i` as port `i + 1` ([`Collector::emit_side`]).
    fn side_outputs(&self, _ctx: &PlanContext<'_>) -> Result<Vec<(String, SchemaRef)>, PlanError> {
        Ok(Vec::new())
    }
    /// The states the operator keeps, each with a description of its
    /// layout: `(state name, type)`. Savepoints record them, and a restore
    /// refuses state whose recorded type differs from the one declared now
    /// under the same operator uid and state name.
    fn state_types(&self, _ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Whether state `name`, recorded in a savepoint with type `recorded`,
    /// restores into this operator, which declares it as `declared`; the
    /// error says why not. By default the two must be equal; an operator
    /// whose state types evolve (the typed API's) knows which older types
    /// it still reads.
    fn state_restorable(&self, _name: &str, declared: &str, recorded: &str) -> Result<(), String> {
        if declared == recorded {
            Ok(())
        } else {
            Err("the two are incompatible".into())
        }
    }
    /// A readable form of one state entry for `weir savepoint inspect`
    /// (e.g. a Kafka source position as topic, partition and offset);
    /// `None`: the entry is shown by size only.
    fn describe_entry(&self, _state: &str, _key: &[u8], _value: &[u8]) -> Option<serde_json::Value> {
        None
    }
    /// Instantiates subtask `subtask` of the operator.
    fn create(&self, ctx: &PlanContext<'_>, subtask: SubtaskInfo) -> Result<Instance, PlanError>;
}

/// An instantiated operator.
pub enum Instance {
    /// A source.
    Source(Box<dyn SourceOperator>),
    /// An operator with inputs.
    Operator(Box<dyn Operator>),
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Instance::Source(_) => "Instance::Source",
            Instance::Operator(_) => "Instance::Operator",
        })
    }
}

/// Collects what an operator emits, in order.
#[derive(Debug, Default)]
pub struct Collector {
    elements: Vec<StreamElement>,
    side: Vec<(u32, RecordBatch)>,
}

impl Collector {
    /// Emits a batch (empty batches are dropped).
    pub fn emit(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.elements.push(StreamElement::Batch(batch));
        }
    }

    /// Emits a batch to side output port `port` (1 for the first side
    /// output the factory declares; empty batches are dropped). Side
    /// outputs leave the task directly: an operator with a consumed side
    /// output always ends its chain.
    pub fn emit_side(&mut self, port: u32, batch: RecordBatch) {
        debug_assert!(port > 0, "port 0 is the main output");
        if batch.num_rows() > 0 {
            self.side.push((port, batch));
        }
    }

    /// Takes the side-output batches emitted so far.
    pub fn take_side(&mut self) -> Vec<(u32, RecordBatch)> {
        std::mem::take(&mut self.side)
    }

    /// Emits a watermark.
    pub fn emit_watermark(&mut self, watermark: i64) {
        self.elements.push(StreamElement::Watermark(watermark));
    }

    /// Emits an idleness change.
    pub fn emit_idle(&mut self, idle: bool) {
        self.elements.push(StreamElement::Idle(idle));
    }

    /// Takes everything emitted so far.
    pub fn drain(&mut self) -> std::vec::Drain<'_, StreamElement> {
        self.elements.drain(..)
    }

    /// Whether nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    pub(crate) fn take(&mut self) -> Vec<StreamElement> {
        std::mem::take(&mut self.elements)
    }
}

/// An operator with one or two inputs.
pub trait Operator: Send {
    /// Processes one batch from input `input`.
    fn process_batch(&mut self, input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()>;

    /// Event time advanced to `watermark` (the minimum over all inputs).
    fn process_watermark(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        out.emit_watermark(watermark);
        Ok(())
    }

    /// All inputs became idle (`true`) or one became active again (`false`).
    fn process_idle(&mut self, idle: bool, out: &mut Collector) -> OpResult<()> {
        out.emit_idle(idle);
        Ok(())
    }

    /// Processing time passed; called on the task's timer.
    fn on_processing_time(&mut self, _now: Instant, _out: &mut Collector) -> OpResult<()> {
        Ok(())
    }

    /// Input `input` has ended (other inputs may still be running).
    fn end_input(&mut self, _input: usize, _out: &mut Collector) -> OpResult<()> {
        Ok(())
    }

    /// Every input has ended: emit whatever is still held.
    fn finish(&mut self, _out: &mut Collector) -> OpResult<()> {
        Ok(())
    }

    /// Records written to an external system (sinks only).
    fn sink_records(&self) -> u64 {
        0
    }

    /// At a checkpoint barrier: write the operator's state (all of it, or
    /// what changed since the previous snapshot — see [`StateWriter::full`]).
    /// Sinks with two-phase commit pre-commit here.
    fn snapshot_state(&mut self, _w: &mut StateWriter) -> OpResult<()> {
        Ok(())
    }

    /// Before any input: take over the state of a checkpoint.
    fn restore_state(&mut self, _r: &StateReader<'_>) -> OpResult<()> {
        Ok(())
    }

    /// Checkpoint `id` is complete (durable): commit what it covers.
    fn checkpoint_complete(&mut self, _id: CheckpointId) -> OpResult<()> {
        Ok(())
    }
}

/// What a source did on one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStatus {
    /// It emitted something; poll again.
    Emitted,
    /// Nothing to emit before this much time has passed.
    Wait(Duration),
    /// It has emitted everything it ever will.
    Finished,
}

/// A source: produces batches when polled.
pub trait SourceOperator: Send {
    /// Emits the next batch (or watermark), or says when to come back.
    fn poll(&mut self, out: &mut Collector) -> OpResult<SourceStatus>;

    /// At a checkpoint: write the source's position.
    fn snapshot_state(&mut self, _w: &mut StateWriter) -> OpResult<()> {
        Ok(())
    }

    /// Before the first poll: continue from a checkpointed position.
    fn restore_state(&mut self, _r: &StateReader<'_>) -> OpResult<()> {
        Ok(())
    }

    /// Checkpoint `id` is complete.
    fn checkpoint_complete(&mut self, _id: CheckpointId) -> OpResult<()> {
        Ok(())
    }

    /// Records read that could not be decoded (sent to a dead-letter
    /// destination or failing the job).
    fn bad_records(&self) -> u64 {
        0
    }

    /// Gauges worth exporting as metrics (read about once a second), e.g.
    /// a Kafka source's consumer lag per partition.
    fn gauges(&self) -> Vec<SourceGauge> {
        Vec::new()
    }
}

/// A gauge a source reports.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceGauge {
    /// Metric name (`weir_` prefix, base units).
    pub name: &'static str,
    /// Labels besides job, task and subtask.
    pub labels: Vec<(&'static str, String)>,
    /// Value.
    pub value: f64,
}

/// Parses a duration written as `10s`, `250ms`, `1m`.
pub mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    /// Deserialize a human-readable duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    /// Parses `s`, saying what is wrong in a user's words.
    pub fn parse(s: &str) -> Result<Duration, String> {
        if s.trim_start().starts_with('-') {
            return Err(format!("a duration cannot be negative: `{s}`"));
        }
        humantime::parse_duration(s)
            .map_err(|e| format!("invalid duration `{s}` ({e}): write a number and a unit, like 10s, 250ms or 1m"))
    }

    /// Optional variant.
    pub mod option {
        use super::*;
        /// Deserialize an optional human-readable duration.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let s: Option<String> = Option::deserialize(d)?;
            s.map(|s| parse(&s).map_err(serde::de::Error::custom)).transpose()
        }
    }
}

/// Milliseconds in a duration, as event-time arithmetic needs them.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
