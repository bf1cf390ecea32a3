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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Deserialize;
use weir_runtime::error::{OpResult, OperatorError, PlanError};
use weir_runtime::keygroup::hash_bytes;
use weir_runtime::operators::watermark::event_times;
use weir_runtime::operators::{
    duration, millis, Arity, Collector, Instance, OperatorFactory, PlanContext, SourceGauge, SourceOperator,
    SourceStatus, SubtaskInfo,
};
use weir_runtime::state::{StateReader, StateWriter};

use super::format::{value_fields, ColumnSpec, Format, JsonDecoder};
use super::{kafka_error, ConfigExt, Connection, DEFAULT_CONNECT_TIMEOUT};

/// Where a partition without a checkpointed position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StartMode {
    /// The partition's earliest offset.
    #[default]
    Earliest,
    /// The partition's end at the time the job starts.
    Latest,
    /// The consumer group's committed offset (earliest when there is none).
    Committed,
    /// The first record at or after this time (milliseconds since the epoch).
    Timestamp(i64),
}

/// Where a bounded source stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMode {
    /// At each partition's end as seen when the source opens.
    Latest,
}

/// What happens to a record whose value does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Fail the job, naming the record.
    #[default]
    Fail,
    /// Send it to `dead_letter_topic` and go on.
    DeadLetter,
}

/// Names of the optional columns that carry a record's metadata.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataColumns {
    /// The record key as UTF-8 text.
    #[serde(default)]
    pub key: Option<String>,
    /// The topic.
    #[serde(default)]
    pub topic: Option<String>,
    /// The partition.
    #[serde(default)]
    pub partition: Option<String>,
    /// The offset.
    #[serde(default)]
    pub offset: Option<String>,
    /// The record timestamp.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// The headers as a JSON object of strings.
    #[serde(default)]
    pub headers: Option<String>,
}

/// Per-partition watermarks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkSpec {
    /// Event-time column: int64 milliseconds or a timestamp.
    pub column: String,
    /// How late a record may be relative to the newest of its partition.
    #[serde(default, with = "duration::option")]
    pub max_out_of_orderness: Option<Duration>,
    /// A partition silent this long stops holding back the watermark.
    #[serde(default, with = "duration::option")]
    pub idle_timeout: Option<Duration>,
    /// Period between watermarks.
    #[serde(default, with = "duration::option")]
    pub interval: Option<Duration>,
}

/// The configuration of `kafka_source`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Brokers, `host:port[,...]`.
    pub bootstrap_servers: String,
    /// How long to wait for the brokers when opening.
    #[serde(default, with = "duration::option")]
    pub connect_timeout: Option<Duration>,
    /// librdkafka properties passed through.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// One topic...
    #[serde(default)]
    pub topic: Option<String>,
    /// ...or several.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Consumer group offsets are committed to on checkpoint completion (and
    /// read by `start: committed`); default `weir-<uid>`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Start position of partitions without a checkpointed one.
    #[serde(default)]
    pub start: StartMode,
    /// Stop position; absent: read forever.
    #[serde(default)]
    pub stop: Option<StopMode>,
    /// Value format.
    #[serde(default)]
    pub format: Format,
    /// Columns of the `json` format.
    #[serde(default)]
    pub schema: Vec<ColumnSpec>,
    /// Metadata columns.
    #[serde(default)]
    pub metadata: MetadataColumns,
    /// Per-partition watermarks.
    #[serde(default)]
    pub watermark: Option<WatermarkSpec>,
    /// Bad records: fail or dead-letter.
    #[serde(default)]
    pub on_error: OnError,
    /// Topic for bad records.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Period of partition discovery; `0s` turns it off.
    #[serde(default, with = "duration::option")]
    pub partition_discovery: Option<Duration>,
    /// Most records per batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_batch_size() -> usize {
    8192
}

const DEFAULT_DISCOVERY: Duration = Duration::from_secs(10);
const DEFAULT_WATERMARK_INTERVAL: Duration = Duration::from_millis(200);
/// How long an empty poll waits before the source is polled again.
const EMPTY_POLL_WAIT: Duration = Duration::from_millis(2);
/// Least time between two warnings about transient consumer errors.
const ERROR_LOG_PERIOD: Duration = Duration::from_secs(5);
/// State name of partition positions (and of `stop` ends).
const OFFSETS: &str = "offsets";
/// State name of the entry each subtask writes so that a restore knows it resumes.
const RUNNING: &str = "running";
/// State name of the stop offsets of a bounded source, fixed at its first start.
const ENDS: &str = "ends";

impl SourceConfig {
    fn connection(&self) -> Connection {
        Connection {
            bootstrap_servers: self.bootstrap_servers.clone(),
            connect_timeout: self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            properties: self.properties.clone(),
        }
    }

    fn topics(&self) -> Vec<String> {
        self.topic.iter().chain(self.topics.iter()).cloned().collect()
    }

    fn group_id(&self, uid: &str) -> String {
        self.group_id.clone().unwrap_or_else(|| format!("weir-{uid}"))
    }

    /// The output schema: value columns, then metadata columns.
    fn schema(&self) -> Result<SchemaRef, (String, String)> {
        let mut fields = value_fields(self.format, &self.schema).map_err(|m| ("config.schema".to_string(), m))?;
        let m = &self.metadata;
        let extra = [
            (&m.key, DataType::Utf8, true, "key"),
            (&m.topic, DataType::Utf8, false, "topic"),
            (&m.partition, DataType::Int32, false, "partition"),
            (&m.offset, DataType::Int64, false, "offset"),
            (&m.timestamp, DataType::Timestamp(TimeUnit::Millisecond, None), true, "timestamp"),
            (&m.headers, DataType::Utf8, false, "headers"),
        ];
        for (name, dt, nullable, what) in extra {
            if let Some(name) = name {
                if fields.iter().any(|f| f.name() == name) {
                    return Err((format!("config.metadata.{what}"), format!("column `{name}` already exists")));
                }
                fields.push(Field::new(name, dt, nullable));
            }
        }
        Ok(Arc::new(Schema::new(fields)))
    }
}

/// Subtask of `parallelism` that reads `partition` of `topic`.
pub fn partition_owner(topic: &str, partition: i32, parallelism: u32) -> u32 {
    let p = u64::from(parallelism);
    ((hash_bytes(topic.as_bytes()) % p + partition as u64 % p) % p) as u32
}

/// Factory of `kafka_source`.
#[derive(Debug)]
pub struct KafkaSourceFactory;

impl KafkaSourceFactory {
    fn config(ctx: &PlanContext<'_>) -> Result<(SourceConfig, SchemaRef), PlanError> {
        let c: SourceConfig = ctx.config()?;
        c.connection().validate(ctx)?;
        if c.topics().is_empty() {
            return Err(ctx.error("name a `topic` or `topics` to read").field("config.topic"));
        }
        if c.batch_size == 0 || c.batch_size > 1 << 20 {
            return Err(ctx.error("batch_size must be between 1 and 1048576").field("config.batch_size"));
        }
        if c.format != Format::Json && !c.schema.is_empty() {
            return Err(ctx.error("a schema is only read by the json format").field("config.schema"));
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
    fn kind(&self) -> &'static str {
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
    snapshots: VecDeque<(u64, Positions)>,
    watermark_column: Option<usize>,
    last_watermark_at: Instant,
    emitted_watermark: i64,
    idle: bool,
    bad_records: u64,
    last_error_log: Option<Instant>,
    /// Last stable offsets per partition, from the consumer's statistics.
    stable: Arc<Mutex<HashMap<(String, i32), i64>>>,
}

impl KafkaSource {
    fn new(uid: &str, config: SourceConfig, schema: SchemaRef, subtask: SubtaskInfo) -> Self {
        let watermark_column = config.watermark.as_ref().and_then(|w| schema.index_of(&w.column).ok());
        Self {
            uid: uid.to_string(),
            config,
            schema,
            subtask,
            open: None,
            partitions: Vec::new(),
            index: HashMap::new(),
            restored: HashMap::new(),
            restored_ends: HashMap::new(),
            resumed: false,
            last_discovery: Instant::now(),
            snapshots: VecDeque::new(),
            watermark_column,
            last_watermark_at: Instant::now(),
            emitted_watermark: i64::MIN,
            idle: false,
            bad_records: 0,
            last_error_log: None,
            stable: Arc::default(),
        }
    }

    fn timeout(&self) -> Duration {
        self.config.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }

    /// Connects, finds this subtask's partitions and their start positions,
    /// and assigns them.
    fn open(&mut self) -> OpResult<()> {
        let conn = self.config.connection();
        let mut cc = conn.client_config();
        cc.set("group.id", self.config.group_id(&self.uid))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            .set_if_unset("auto.offset.reset", "earliest")
            // librdkafka pauses a partition's fetching for this long once its
            // local queue is full (default 1 s); a source that drains the
            // queue in milliseconds would sit idle for the rest of it.
            .set_if_unset("fetch.queue.backoff.ms", "10")
            .set_if_unset("client.id", format!("weir-{}-{}", self.uid, self.subtask.index))
            .set_if_unset("statistics.interval.ms", "1000");
        let context = OffsetsContext { stable: self.stable.clone() };
        let consumer: BaseConsumer<OffsetsContext> = cc
            .create_with_context(context)
            .map_err(|e| kafka_error(format!("creating a consumer for {}", conn.bootstrap_servers), e))?;
        let dead_letters = match &self.config.dead_letter_topic {
            Some(_) => {
                let mut pc = conn.client_config();
                pc.set("enable.idempotence", "true").set_if_unset("linger.ms", "5");
                Some(
                    pc.create_with_context(super::sink::CountingContext::default())
                        .map_err(|e| kafka_error("creating the dead-letter producer", e))?,
                )
            }
            None => None,
        };
        let decoder = match self.config.format {
            Format::Json => Some(JsonDecoder::new(
                value_fields(Format::Json, &self.config.schema).map_err(OperatorError::InvalidData)?,
                self.config.batch_size,
            )?),
            _ => None,
        };
        self.open = Some(Open { consumer, dead_letters, decoder });
        let found = self.discover(true)?;
        tracing::info!(
            operator = %self.uid,
            subtask = self.subtask.index,
            partitions = found,
            brokers = %conn.bootstrap_servers,
            "kafka source opened"
        );
        Ok(())
    }

    /// Looks up the topics' partitions and starts reading the new ones this
    /// subtask owns: at their checkpointed position, else (`initial`: when
    /// the source opens) per the start mode, else (found later) at the
    /// earliest offset. Returns how many partitions it reads.
    fn discover(&mut self, initial: bool) -> OpResult<usize> {
        let timeout = self.timeout();
        let servers = self.config.bootstrap_servers.clone();
        let open = self.open.as_ref().expect("opened before discovery");
        let mut new = Vec::new();
        for topic in self.config.topics() {
            let md = open.consumer.fetch_metadata(Some(&topic), timeout).map_err(|e| {
                kafka_error(format!("cannot read the metadata of topic `{topic}` from {servers} within {timeout:?}"), e)
            })?;
            let t = md.topics().iter().find(|t| t.name() == topic).ok_or_else(|| OperatorError::External {
                system: "kafka",
                message: format!("the brokers at {servers} returned no metadata for topic `{topic}`"),
            })?;
            if let Some(err) = t.error() {
                return Err(OperatorError::External {
                    system: "kafka",
                    message: format!(
                        "topic `{topic}` cannot be read from {servers}: {:?}",
                        rdkafka::types::RDKafkaErrorCode::from(err)
                    ),
                });
            }
            for p in t.partitions() {
                let key = (topic.clone(), p.id());
                if partition_owner(&topic, p.id(), self.subtask.parallelism) == self.subtask.index
                    && !self.owns(&key.0, key.1)
                {
                    new.push(key);
                }
            }
        }
        if new.is_empty() && !initial {
            return Ok(self.partitions.len());
        }
        new.sort();
        for (topic, partition) in new {
            let restored = self.restored.get(&(topic.clone(), partition)).copied();
            let next = match restored {
                Some(n) => n,
                // Partitions found after the start (before a restore, too)
                // begin at their earliest offset.
                None if !initial || self.resumed => BEGINNING,
                None => self.start_position(&topic, partition)?,
            };
            let (mut next, mut end) = (next, None);
            if self.config.stop == Some(StopMode::Latest) {
                let (low, high) = self.offset_range(&topic, partition)?;
                let stop = self.restored_ends.get(&(topic.clone(), partition)).copied().unwrap_or(high);
                // Nothing left to read if retention removed everything below the end.
                if next == BEGINNING && low >= stop {
                    next = low;
                }
                end = Some(stop);
            }
            if !initial {
                tracing::info!(operator = %self.uid, topic = %topic, partition, "found a new partition");
            }
            self.index.entry(topic.clone()).or_default().insert(partition, self.partitions.len());
            self.partitions.push(PartitionState {
                topic,
                partition,
                next,
                end,
                max_event_time: i64::MIN,
                last_data: Instant::now(),
            });
        }
        self.assign()?;
        Ok(self.partitions.len())
    }

    fn owns(&self, topic: &str, partition: i32) -> bool {
        self.index.get(topic).is_some_and(|m| m.contains_key(&partition))
    }

    /// The earliest and the end offset of a partition.
    fn offset_range(&self, topic: &str, partition: i32) -> OpResult<(i64, i64)> {
        let open = self.open.as_ref().expect("open");
        open.consumer
            .fetch_watermarks(topic, partition, self.timeout())
            .map_err(|e| kafka_error(format!("reading the offsets of {topic}/{partition}"), e))
    }

    fn start_position(&self, topic: &str, partition: i32) -> OpResult<i64> {
        let open = self.open.as_ref().expect("open");
        let timeout = self.timeout();
        match self.config.start {
            StartMode::Earliest => Ok(BEGINNING),
            StartMode::Latest => self.offset_range(topic, partition).map(|r| r.1),
            StartMode::Committed => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(topic, partition);
                let got = open
                    .consumer
                    .committed_offsets(tpl, timeout)
                    .map_err(|e| kafka_error(format!("reading the committed offset of {topic}/{partition}"), e))?;
                let elem = got.find_partition(topic, partition);
                if let Some(e) = &elem {
                    e.error()
                        .map_err(|e| kafka_error(format!("reading the committed offset of {topic}/{partition}"), e))?;
                }
                Ok(match elem.map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    // No committed offset: the earliest.
                    _ => BEGINNING,
                })
            }
            StartMode::Timestamp(ms) => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(topic, partition, Offset::Offset(ms))
                    .map_err(|e| kafka_error("building an offset lookup", e))?;
                let got = open
                    .consumer
                    .offsets_for_times(tpl, timeout)
                    .map_err(|e| kafka_error(format!("looking up offsets of {topic}/{partition} by time"), e))?;
                let elem = got.find_partition(topic, partition);
                if let Some(e) = &elem {
                    e.error()
                        .map_err(|e| kafka_error(format!("looking up offsets of {topic}/{partition} by time"), e))?;
                }
                match elem.map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Ok(o),
                    // No record at or after the time: start at the end.
                    _ => self.offset_range(topic, partition).map(|r| r.1),
                }
            }
        }
    }

    fn assign(&self) -> OpResult<()> {
        let open = self.open.as_ref().expect("open");
        let mut tpl = TopicPartitionList::new();
        for p in self.partitions.iter().filter(|p| !p.done()) {
            tpl.add_partition_offset(&p.topic, p.partition, offset_of(p.next))
                .map_err(|e| kafka_error("building the assignment", e))?;
        }
        open.consumer.assign(&tpl).map_err(|e| kafka_error("assigning partitions", e))
    }

    /// Reads up to a batch of records and emits them.
    fn read(&mut self, out: &mut Collector) -> OpResult<bool> {
        let open = self.open.as_mut().expect("open");
        let mut values: Vec<u8> = Vec::new();
        let mut value_ranges: Vec<Option<(usize, usize)>> = Vec::new();
        let mut meta: Vec<RecordMeta> = Vec::new();
        let wants_key = self.config.metadata.key.is_some();
        let wants_headers = self.config.metadata.headers.is_some();
        let now = Instant::now();
        while meta.len() < self.config.batch_size {
            let msg = match open.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    if let Some((code, reason)) = open.consumer.client().fatal_error() {
                        return Err(OperatorError::External {
                            system: "kafka",
                            message: format!("the consumer failed: {code:?}: {reason}"),
                        });
                    }
                    // Transient (a broker restarting, a connection reset):
                    // librdkafka retries. Logged at most every few seconds.
                    if self.last_error_log.is_none_or(|t| t.elapsed() >= ERROR_LOG_PERIOD) {
                        self.last_error_log = Some(Instant::now());
                        tracing::warn!(operator = %self.uid, error = %e, "kafka consumer error; retrying");
                    }
                    break;
                }
            };
            let Some(&pi) = self.index.get(msg.topic()).and_then(|m| m.get(&msg.partition())) else { continue };
            let p = &mut self.partitions[pi];
            if p.end.is_some_and(|end| msg.offset() >= end) {
                continue;
            }
            p.next = msg.offset() + 1;
            p.last_data = now;
            let range = msg.payload().map(|v| {
                let start = values.len();
                values.extend_from_slice(v);
                (start, values.len())
            });
            value_ranges.push(range);
            meta.push(RecordMeta {
                partition_index: pi as u32,
                offset: msg.offset(),
                timestamp: msg.timestamp().to_millis(),
                key: if wants_key || self.config.dead_letter_topic.is_some() {
                    msg.key().map(<[u8]>::to_vec)
                } else {
                    None
                },
                headers: if wants_headers {
                    msg.headers().map(|h| {
                        let mut m = serde_json::Map::new();
                        for hd in h.iter() {
                            let v = hd.value.map(|v| String::from_utf8_lossy(v).into_owned());
                            m.insert(hd.key.to_string(), v.map_or(serde_json::Value::Null, serde_json::Value::String));
                        }
                        serde_json::Value::Object(m).to_string()
                    })
                } else {
                    None
                },
            });
        }
        if meta.is_empty() {
            return Ok(false);
        }
        let slices: Vec<Option<&[u8]>> = value_ranges.iter().map(|r| r.map(|(a, b)| &values[a..b])).collect();
        // Keys that are not UTF-8 cannot fill a text key column.
        let mut bad: Vec<(usize, String)> = Vec::new();
        if wants_key {
            for (i, m) in meta.iter().enumerate() {
                if m.key.as_ref().is_some_and(|k| std::str::from_utf8(k).is_err()) {
                    bad.push((i, "the key is not UTF-8".to_string()));
                }
            }
        }
        let candidates: Vec<usize> = (0..meta.len()).filter(|i| !bad.iter().any(|b| b.0 == *i)).collect();
        let candidate_values: Vec<Option<&[u8]>> = candidates.iter().map(|&i| slices[i]).collect();
        let (value_columns, rejected) = self.decode_values(&candidate_values)?;
        let mut good = Vec::with_capacity(candidates.len());
        let mut rejected = rejected.into_iter().peekable();
        for (j, &i) in candidates.iter().enumerate() {
            match rejected.peek() {
                Some((r, _)) if *r == j => {
                    let (_, why) = rejected.next().expect("peeked");
                    bad.push((i, why));
                }
                _ => good.push(i),
            }
        }
        bad.sort_by_key(|b| b.0);
        if !bad.is_empty() {
            self.handle_bad(&bad, &slices, &meta)?;
        }
        let batch = self.build_batch(value_columns, &good, &meta)?;
        if let Some(col) = self.watermark_column {
            if batch.num_rows() > 0 {
                let times = event_times(&batch, col)?;
                for (row, &i) in good.iter().enumerate() {
                    let p = &mut self.partitions[meta[i].partition_index as usize];
                    p.max_event_time = p.max_event_time.max(times.value(row));
                }
            }
        }
        out.emit(batch);
        Ok(true)
    }

    /// Value columns holding exactly the records that decode, in order, and
    /// the indexes (into `values`) of those that do not, with the reason.
    fn decode_values(&mut self, values: &[Option<&[u8]>]) -> OpResult<(Vec<ArrayRef>, BadRecords)> {
        let open = self.open.as_mut().expect("open");
        match self.config.format {
            Format::Json => {
                let d = open.decoder.as_mut().expect("json decoder").decode(values)?;
                Ok((d.batch.columns().to_vec(), d.bad))
            }
            Format::String => {
                let mut b = StringBuilder::new();
                let mut bad = Vec::new();
                for (i, v) in values.iter().enumerate() {
                    match v.map(std::str::from_utf8) {
                        None => b.append_null(),
                        Some(Ok(s)) => b.append_value(s),
                        Some(Err(_)) => bad.push((i, "the value is not UTF-8".to_string())),
                        // (a bad value gets no row)
                    }
                }
                Ok((vec![Arc::new(b.finish())], bad))
            }
            Format::Raw => {
                let mut b = BinaryBuilder::new();
                for v in values {
                    b.append_option(*v);
                }
                Ok((vec![Arc::new(b.finish())], Vec::new()))
            }
        }
    }

    /// The output batch: the value columns of the good records (in order)
    /// and their metadata columns.
    fn build_batch(&self, mut columns: Vec<ArrayRef>, good: &[usize], meta: &[RecordMeta]) -> OpResult<RecordBatch> {
        let m = &self.config.metadata;
        let rows = || good.iter().map(|&i| &meta[i]);
        if m.key.is_some() {
            let mut b = StringBuilder::new();
            for r in rows() {
                b.append_option(r.key.as_deref().map(|k| std::str::from_utf8(k).unwrap_or_default()));
            }
            columns.push(Arc::new(b.finish()));
        }
        if m.topic.is_some() {
            let mut b = StringBuilder::new();
            for r in rows() {
                b.append_value(&self.partitions[r.partition_index as usize].topic);
            }
            columns.push(Arc::new(b.finish()));
        }
        if m.partition.is_some() {
            let mut b = Int32Builder::new();
            for r in rows() {
                b.append_value(self.partitions[r.partition_index as usize].partition);
            }
            columns.push(Arc::new(b.finish()));
        }
        if m.offset.is_some() {
            let mut b = Int64Builder::new();
            for r in rows() {
                b.append_value(r.offset);
            }
            columns.push(Arc::new(b.finish()));
        }
        if m.timestamp.is_some() {
            let mut b = TimestampMillisecondBuilder::new();
            for r in rows() {
                b.append_option(r.timestamp);
            }
            columns.push(Arc::new(b.finish()));
        }
        if m.headers.is_some() {
            let mut b = StringBuilder::new();
            for r in rows() {
                b.append_value(r.headers.as_deref().unwrap_or("{}"));
            }
            columns.push(Arc::new(b.finish()));
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    fn handle_bad(&mut self, bad: &[(usize, String)], values: &[Option<&[u8]>], meta: &[RecordMeta]) -> OpResult<()> {
        self.bad_records += bad.len() as u64;
        let open = self.open.as_ref().expect("open");
        let Some(producer) = &open.dead_letters else {
            let (i, why) = &bad[0];
            let p = &self.partitions[meta[*i].partition_index as usize];
            return Err(OperatorError::InvalidData(format!(
                "the record at {}/{} offset {} does not decode: {why} (set on_error: dead_letter to route bad records to a topic instead)",
                p.topic, p.partition, meta[*i].offset
            )));
        };
        let topic = self.config.dead_letter_topic.as_deref().expect("dead-letter topic with producer");
        for (i, why) in bad {
            let m = &meta[*i];
            let p = &self.partitions[m.partition_index as usize];
            let headers = OwnedHeaders::new()
                .insert(rdkafka::message::Header { key: "weir.error", value: Some(why.as_str()) })
                .insert(rdkafka::message::Header { key: "weir.source.topic", value: Some(p.topic.as_str()) })
                .insert(rdkafka::message::Header {
                    key: "weir.source.partition",
                    value: Some(&p.partition.to_string()),
                })
                .insert(rdkafka::message::Header { key: "weir.source.offset", value: Some(&m.offset.to_string()) })
                .insert(rdkafka::message::Header { key: "weir.operator", value: Some(self.uid.as_str()) });
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(headers);
            if let Some(k) = &m.key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = values[*i] {
                record = record.payload(v);
            }
            let mut record = record;
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        r,
                    )) => {
                        record = r;
                        producer.flush(self.timeout()).map_err(|e| kafka_error("flushing dead letters", e))?;
                    }
                    Err((e, _)) => return Err(kafka_error(format!("sending a bad record to `{topic}`"), e)),
                }
            }
            tracing::debug!(operator = %self.uid, topic = %p.topic, partition = p.partition, offset = m.offset, reason = %why, "bad record sent to the dead-letter topic");
        }
        tracing::warn!(
            operator = %self.uid,
            count = bad.len(),
            total = self.bad_records,
            dead_letter_topic = topic,
            "records that do not decode were sent to the dead-letter topic"
        );
        Ok(())
    }

    /// Emits the watermark (and idleness) of this subtask's partitions.
    fn watermarks(&mut self, now: Instant, out: &mut Collector) {
        let Some(spec) = &self.config.watermark else {
            // Without watermarks a subtask with nothing to read still must
            // not hold back event time downstream.
            if self.partitions.is_empty() && !self.idle {
                self.idle = true;
                out.emit_idle(true);
            }
            return;
        };
        if now.duration_since(self.last_watermark_at) < spec.interval.unwrap_or(DEFAULT_WATERMARK_INTERVAL) {
            return;
        }
        self.last_watermark_at = now;
        let lag = millis(spec.max_out_of_orderness.unwrap_or_default());
        let mut min: Option<i64> = None;
        for p in self.partitions.iter().filter(|p| !p.done()) {
            if spec.idle_timeout.is_some_and(|t| now.duration_since(p.last_data) >= t) {
                continue;
            }
            let wm = if p.max_event_time == i64::MIN {
                i64::MIN
            } else {
                p.max_event_time.saturating_sub(lag).saturating_sub(1)
            };
            min = Some(min.map_or(wm, |m: i64| m.min(wm)));
        }
        match min {
            None => {
                // Every partition is idle: event time catches up with the
                // furthest of them before the subtask goes idle, so that the
                // partition that fell silent last does not hold back what the
                // others allowed.
                let furthest = self
                    .partitions
                    .iter()
                    .filter(|p| !p.done() && p.max_event_time > i64::MIN)
                    .map(|p| p.max_event_time.saturating_sub(lag).saturating_sub(1))
                    .max();
                if let Some(wm) = furthest.filter(|wm| *wm > self.emitted_watermark) {
                    self.emitted_watermark = wm;
                    out.emit_watermark(wm);
                }
                if !self.idle {
                    self.idle = true;
                    out.emit_idle(true);
                }
            }
            Some(wm) => {
                if self.idle {
                    self.idle = false;
                    out.emit_idle(false);
                }
                if wm > self.emitted_watermark && wm > i64::MIN {
                    self.emitted_watermark = wm;
                    out.emit_watermark(wm);
                }
            }
        }
    }

    /// Moves positions past what the consumer skipped without delivering:
    /// transaction markers and aborted records. (A bounded source whose
    /// partition ends with a commit marker would otherwise never reach its end.)
    fn skip_control_records(&mut self) -> OpResult<()> {
        let open = self.open.as_ref().expect("open");
        let positions = open.consumer.position().map_err(|e| kafka_error("reading consumer positions", e))?;
        for p in self.partitions.iter_mut().filter(|p| !p.done()) {
            if let Some(Offset::Offset(pos)) = positions.find_partition(&p.topic, p.partition).map(|e| e.offset()) {
                if pos > p.next {
                    p.next = pos;
                }
            }
        }
        Ok(())
    }

    fn check_dead_letters(&self) -> OpResult<()> {
        if let Some(p) = self.open.as_ref().and_then(|o| o.dead_letters.as_ref()) {
            p.flush(self.timeout()).map_err(|e| kafka_error("flushing dead letters", e))?;
            p.context().check("delivering dead letters")?;
        }
        Ok(())
    }
}

struct RecordMeta {
    partition_index: u32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    headers: Option<String>,
}

/// Encodes a partition position key: topic, a zero byte, partition.
fn position_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 5);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

fn decode_position_key(k: &[u8]) -> Option<(String, i32)> {
    let (topic, rest) = k.split_at(k.len().checked_sub(5)?);
    if rest[0] != 0 {
        return None;
    }
    Some((String::from_utf8(topic.to_vec()).ok()?, i32::from_be_bytes(rest[1..5].try_into().ok()?)))
}

impl SourceOperator for KafkaSource {
    fn poll(&mut self, out: &mut Collector) -> OpResult<SourceStatus> {
        if self.open.is_none() {
            self.open()?;
        }
        let now = Instant::now();
        let every = self.config.partition_discovery.unwrap_or(DEFAULT_DISCOVERY);
        if !every.is_zero() && self.config.stop.is_none() && now.duration_since(self.last_discovery) >= every {
            self.last_discovery = now;
            // A broker restarting is no reason to fail: discovery runs again later.
            if let Err(e) = self.discover(false) {
                tracing::warn!(operator = %self.uid, error = %e, "partition discovery failed; retrying at the next interval");
            }
        }
        let read = self.read(out)?;
        if !read && self.config.stop.is_some() {
            self.skip_control_records()?;
        }
        self.watermarks(Instant::now(), out);
        if self.config.stop.is_some() && self.partitions.iter().all(PartitionState::done) {
            self.check_dead_letters()?;
            return Ok(SourceStatus::Finished);
        }
        Ok(if read { SourceStatus::Emitted } else { SourceStatus::Wait(EMPTY_POLL_WAIT) })
    }

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        // Dead letters before the barrier must be durable before the
        // checkpoint that moves past their records.
        self.check_dead_letters()?;
        let mut positions = Vec::with_capacity(self.partitions.len());
        for p in &self.partitions {
            w.put_union(OFFSETS, position_key(&p.topic, p.partition), p.next.to_be_bytes().to_vec());
            positions.push((p.topic.clone(), p.partition, p.next));
        }
        // Positions restored but not owned (yet) stay in the checkpoint, so
        // a later rescale still finds them.
        for ((topic, partition), next) in &self.restored {
            if !self.owns(topic, *partition) {
                w.put_union(OFFSETS, position_key(topic, *partition), next.to_be_bytes().to_vec());
            }
        }
        for p in &self.partitions {
            if let Some(end) = p.end {
                w.put_union(ENDS, position_key(&p.topic, p.partition), end.to_be_bytes().to_vec());
            }
        }
        for ((topic, partition), end) in &self.restored_ends {
            if !self.owns(topic, *partition) {
                w.put_union(ENDS, position_key(topic, *partition), end.to_be_bytes().to_vec());
            }
        }
        w.put_union(RUNNING, self.subtask.index.to_be_bytes().to_vec(), vec![1]);
        self.snapshots.push_back((w.checkpoint(), positions));
        while self.snapshots.len() > 16 {
            self.snapshots.pop_front();
        }
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        self.resumed = !r.is_empty();
        for (state, into) in [(OFFSETS, &mut self.restored), (ENDS, &mut self.restored_ends)] {
            for e in r.state(state) {
                let (topic, partition) = decode_position_key(&e.key)
                    .ok_or_else(|| OperatorError::State("a kafka source position key does not decode".into()))?;
                let v = e.value.as_deref().unwrap_or_default();
                let offset = i64::from_be_bytes(
                    v.try_into().map_err(|_| OperatorError::State("a kafka source position does not decode".into()))?,
                );
                // Every subtask's entries arrive (union state); keep the
                // largest if a partition appears twice.
                let slot = into.entry((topic, partition)).or_insert(offset);
                *slot = (*slot).max(offset);
            }
        }
        let mine = self
            .restored
            .keys()
            .filter(|(t, p)| partition_owner(t, *p, self.subtask.parallelism) == self.subtask.index)
            .count();
        tracing::info!(operator = %self.uid, subtask = self.subtask.index, positions = mine, "kafka source positions restored");
        Ok(())
    }

    fn bad_records(&self) -> u64 {
        self.bad_records
    }

    fn gauges(&self) -> Vec<SourceGauge> {
        let stable = self.stable.lock().unwrap_or_else(|e| e.into_inner());
        self.partitions
            .iter()
            .filter(|p| p.next >= 0)
            .filter_map(|p| {
                let end = *stable.get(&(p.topic.clone(), p.partition))?;
                Some(SourceGauge {
                    name: "weir_kafka_consumer_lag_records",
                    labels: vec![("topic", p.topic.clone()), ("partition", p.partition.to_string())],
                    value: (end - p.next).max(0) as f64,
                })
            })
            .collect()
    }

    fn checkpoint_complete(&mut self, id: u64) -> OpResult<()> {
        let mut newest = None;
        while self.snapshots.front().is_some_and(|(c, _)| *c <= id) {
            newest = self.snapshots.pop_front();
        }
        let (Some((_, positions)), Some(open)) = (newest, &self.open) else { return Ok(()) };
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, next) in positions.into_iter().filter(|p| p.2 >= 0) {
            let _ = tpl.add_partition_offset(&topic, partition, Offset::Offset(next));
        }
        if tpl.count() > 0 {
            // For monitoring only: restores never read these.
            if let Err(e) = open.consumer.commit(&tpl, CommitMode::Async) {
                tracing::warn!(operator = %self.uid, error = %e, "committing offsets to the consumer group failed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_evenly_and_deterministically() {
        for p in 1..6u32 {
            let mut counts = vec![0; p as usize];
            for partition in 0..12 {
                counts[partition_owner("payments", partition, p) as usize] += 1;
            }
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(max - min <= 1, "parallelism {p}: {counts:?}");
        }
    }

    #[test]
    fn position_keys_round_trip() {
        for (t, p) in [("a", 0), ("topic.with-dots", 17), ("", i32::MAX)] {
            assert_eq!(decode_position_key(&position_key(t, p)), Some((t.to_string(), p)));
        }
        assert_eq!(decode_position_key(b"ab"), None);
    }

    /// Job files reach operators as JSON values (YAML tags play no part).
    fn yaml(text: &str) -> Result<SourceConfig, serde_json::Error> {
        serde_json::from_value(serde_yaml::from_str::<serde_json::Value>(text).unwrap())
    }

    #[test]
    fn configs_are_checked() {
        let ok: SourceConfig = yaml(
            "bootstrap_servers: x:9092\ntopic: t\nschema: [{name: id, type: int64}]\nstart: {timestamp: 5}\nmetadata: {key: k}\n",
        )
        .unwrap();
        assert_eq!(ok.start, StartMode::Timestamp(5));
        assert_eq!(ok.schema().unwrap().fields().len(), 2);
        let dup: SourceConfig =
            yaml("bootstrap_servers: x\ntopic: t\nschema: [{name: k, type: int64}]\nmetadata: {key: k}\n").unwrap();
        assert!(dup.schema().unwrap_err().1.contains("already exists"));
        assert!(yaml("bootstrap_servers: x\ntopic: t\nbogus: 1\n").is_err());
    }
}
