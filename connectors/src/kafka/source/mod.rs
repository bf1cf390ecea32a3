//! `kafka_source`: reads topics into Arrow batches.
//!
//! - **Assignment.** Partitions are assigned to subtasks deterministically
//!   (round robin from a per-topic start), without a consumer-group
//!   rebalance: subtask `i` of `P` reads partition `p` of topic `t` when
//!   `(hash(t) + p) mod P = i`. The same rule places partitions found later
//!   by partition discovery, which start at their earliest offset.
//! - **Positions.** At every barrier the source writes the next offset of
//!   each of its partitions into the checkpoint; on restore every partition
//!   is seeked to its checkpointed offset — never to the group's committed
//!   offset. Positions are union state: after a parallelism change each
//!   subtask picks the positions of the partitions it now owns. Offsets are
//!   committed to the consumer group when a checkpoint completes, for
//!   monitoring only.
//! - **Reading committed data only** (`isolation.level=read_committed`), so
//!   a pipeline behind an exactly-once Kafka sink sees each record once.
//! - **Watermarks** per partition: the source's watermark is the minimum over
//!   its partitions of `max event time - max_out_of_orderness - 1`; a
//!   partition silent for `idle_timeout` is left out, and a subtask whose
//!   partitions are all idle (or which owns none) marks itself idle, so it
//!   does not hold back event time downstream.
//! - **Bad records** (values that do not decode) go to `dead_letter_topic`
//!   with headers saying where they came from and why, or fail the job
//!   (`on_error: fail`). They are counted, never dropped silently.

mod config;
mod partitions;
mod read;
mod state;
#[cfg(test)]
mod tests;
mod upsert;
mod watermarks;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, SchemaRef};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::producer::ThreadedProducer;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::Offset;
use weir_runtime::error::PlanError;
use weir_runtime::operators::{Arity, Instance, OperatorFactory, PlanContext, SubtaskInfo};
use weir_runtime::state::CheckpointId;

use super::format::{Format, JsonDecoder};

use config::*;
pub use config::{partition_owner, MetadataColumns, OnError, SourceConfig, StartMode, StopMode, WatermarkSpec};
use state::decode_position_key;

/// Factory of `kafka_source`.
#[derive(Debug)]
pub struct KafkaSourceFactory;

impl KafkaSourceFactory {
    fn config(ctx: &PlanContext<'_>) -> Result<(SourceConfig, SchemaRef), PlanError> {
        let c: SourceConfig = ctx.config()?;
        c.connection().validate(ctx)?;
        match (c.topics().is_empty(), &c.topic_pattern) {
            (true, None) => {
                return Err(ctx.error("name a `topic`, `topics` or a `topic_pattern` to read").field("config.topic"))
            }
            (false, Some(_)) => {
                return Err(ctx
                    .error("give either topic names (`topic`, `topics`) or a `topic_pattern`, not both")
                    .field("config.topic_pattern"))
            }
            _ => {}
        }
        c.pattern().map_err(|e| ctx.error(e).field("config.topic_pattern"))?;
        if c.batch_size == 0 || c.batch_size > 1 << 20 {
            return Err(ctx.error("batch_size must be between 1 and 1048576").field("config.batch_size"));
        }
        if !matches!(c.format, Format::Json | Format::DebeziumJson) && !c.schema.is_empty() {
            return Err(ctx
                .error("a schema is only read by the json and debezium_json formats")
                .field("config.schema"));
        }
        if c.format != Format::DebeziumJson && c.schema_include {
            return Err(ctx
                .error("schema_include is an option of the debezium_json format")
                .field("config.schema_include"));
        }
        if c.op_column.is_some() && c.format != Format::DebeziumJson && c.upsert_key.is_none() {
            return Err(ctx
                .error("op_column is for changelogs: the debezium_json format, or an upsert_key")
                .field("config.op_column"));
        }
        if c.upsert_key.is_some() && c.format != Format::Json {
            return Err(ctx.error("an upsert topic's values are read with the json format").field("config.format"));
        }
        match (c.on_error, &c.dead_letter_topic) {
            (OnError::DeadLetter, None) => {
                return Err(ctx
                    .error("on_error: dead_letter needs a dead_letter_topic")
                    .field("config.dead_letter_topic"))
            }
            (OnError::Fail, Some(_)) => {
                return Err(ctx
                    .error("dead_letter_topic is only used with on_error: dead_letter")
                    .field("config.dead_letter_topic"))
            }
            _ => {}
        }
        let schema = c.schema().map_err(|(field, m)| ctx.error(m).field(field))?;
        if let Some(w) = &c.watermark {
            let idx = schema.index_of(&w.column).map_err(|_| {
                ctx.error(format!("no column `{}` in the source's output", w.column)).field("config.watermark.column")
            })?;
            if !matches!(schema.field(idx).data_type(), DataType::Int64 | DataType::Timestamp(_, _)) {
                return Err(ctx
                    .error(format!("event-time column `{}` must be int64 milliseconds or a timestamp", w.column))
                    .field("config.watermark.column"));
            }
            if w.interval == Some(Duration::ZERO) {
                return Err(ctx.error("interval must be positive").field("config.watermark.interval"));
            }
        }
        Ok((c, schema))
    }
}

impl OperatorFactory for KafkaSourceFactory {
    fn kind(&self) -> &str {
        "kafka_source"
    }

    fn state_types(&self, _ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        // Positions are per (topic, partition), whatever the topics: a job
        // reading other topics restores the partitions it still reads.
        vec![
            (OFFSETS.into(), "union map (topic, partition) -> next offset: i64".into()),
            (ENDS.into(), "union map (topic, partition) -> end offset: i64".into()),
            (RUNNING.into(), "union set of subtask: u32".into()),
        ]
    }

    fn describe_entry(&self, state: &str, key: &[u8], value: &[u8]) -> Option<serde_json::Value> {
        if state != OFFSETS && state != ENDS {
            return None;
        }
        let (topic, partition) = decode_position_key(key)?;
        let offset = i64::from_be_bytes(value.try_into().ok()?);
        let what = if state == OFFSETS { "offset" } else { "end" };
        Some(serde_json::json!({"topic": topic, "partition": partition, what: offset}))
    }

    fn arity(&self) -> Arity {
        Arity::Source
    }

    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Ok(Self::config(ctx)?.1)
    }

    fn create(&self, ctx: &PlanContext<'_>, subtask: SubtaskInfo) -> Result<Instance, PlanError> {
        let (config, schema) = Self::config(ctx)?;
        Ok(Instance::Source(Box::new(KafkaSource::new(ctx.uid, config, schema, subtask))))
    }
}

/// One partition a subtask reads.
#[derive(Debug)]
struct PartitionState {
    topic: String,
    partition: i32,
    /// Next offset to read; [`BEGINNING`] until the first record of a
    /// partition that starts at its earliest offset.
    next: i64,
    /// Offset to stop before (bounded sources).
    end: Option<i64>,
    max_event_time: i64,
    last_data: Instant,
}

impl PartitionState {
    fn done(&self) -> bool {
        self.end.is_some_and(|end| self.next >= end || (self.next == BEGINNING && end == 0))
    }
}

/// Next offsets by topic and partition.
type Positions = Vec<(String, i32, i64)>;

/// Indexes of records that do not decode, with the reason.
type BadRecords = Vec<(usize, String)>;

/// Value columns, bad records, and a changelog format's changes (record
/// index and change kind per row).
type DecodedValues = (Vec<ArrayRef>, BadRecords, Option<Vec<(usize, &'static str)>>);

/// A position meaning "the earliest offset", as stored in checkpoints.
const BEGINNING: i64 = -2;

fn offset_of(next: i64) -> Offset {
    if next == BEGINNING {
        Offset::Beginning
    } else {
        Offset::Offset(next)
    }
}

/// The open connection of a subtask.
/// Receives the consumer's statistics (every second): each partition's last
/// stable offset, from which the source's lag is computed.
#[derive(Debug, Default, Clone)]
struct OffsetsContext {
    stable: Arc<Mutex<HashMap<(String, i32), i64>>>,
}

impl ClientContext for OffsetsContext {
    fn stats(&self, statistics: Statistics) {
        let mut stable = self.stable.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                if partition >= 0 && p.ls_offset >= 0 {
                    stable.insert((topic.clone(), partition), p.ls_offset);
                }
            }
        }
    }
}

impl ConsumerContext for OffsetsContext {}

struct Open {
    consumer: BaseConsumer<OffsetsContext>,
    dead_letters: Option<ThreadedProducer<super::sink::CountingContext>>,
    decoder: Option<JsonDecoder>,
    /// The decoder of an upsert topic's JSON keys.
    key_decoder: Option<JsonDecoder>,
}

/// One subtask of `kafka_source`.
pub struct KafkaSource {
    uid: String,
    config: SourceConfig,
    schema: SchemaRef,
    subtask: SubtaskInfo,
    open: Option<Open>,
    partitions: Vec<PartitionState>,
    /// Position in `partitions` by topic and partition.
    index: HashMap<String, HashMap<i32, usize>>,
    restored: HashMap<(String, i32), i64>,
    /// Stop offsets restored (bounded sources keep the ends of their first start).
    restored_ends: HashMap<(String, i32), i64>,
    /// Whether this run continues from a checkpoint: then partitions without
    /// a position are ones found after it, and start at their earliest offset.
    resumed: bool,
    last_discovery: Instant,
    /// Positions written at checkpoints not yet complete, oldest first.
    snapshots: VecDeque<(CheckpointId, Positions)>,
    watermark_column: Option<usize>,
    last_watermark_at: Instant,
    emitted_watermark: i64,
    idle: bool,
    bad_records: u64,
    last_error_log: Option<Instant>,
    /// Last stable offsets per partition, from the consumer's statistics.
    stable: Arc<Mutex<HashMap<(String, i32), i64>>>,
}
