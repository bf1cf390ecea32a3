//! Which partitions a subtask reads and where each starts.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use weir_runtime::error::{OpResult, OperatorError};
use weir_runtime::operators::SubtaskInfo;

use super::super::debezium::envelope_fields;
use super::super::format::{value_fields, Format, JsonDecoder};
use super::super::{kafka_error, ConfigExt, DEFAULT_CONNECT_TIMEOUT};

use super::*;

impl KafkaSource {
    pub(super) fn new(uid: &str, config: SourceConfig, schema: SchemaRef, subtask: SubtaskInfo) -> Self {
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

    pub(super) fn timeout(&self) -> Duration {
        self.config.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }

    /// Connects, finds this subtask's partitions and their start positions,
    /// and assigns them.
    pub(super) fn open(&mut self) -> OpResult<()> {
        let conn = self.config.connection();
        let mut cc = conn.client_config()?;
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
                let mut pc = conn.client_config()?;
                pc.set("enable.idempotence", "true").set_if_unset("linger.ms", "5");
                Some(
                    pc.create_with_context(super::super::sink::CountingContext::default())
                        .map_err(|e| kafka_error("creating the dead-letter producer", e))?,
                )
            }
            None => None,
        };
        let fields = || value_fields(self.config.format, &self.config.schema).map_err(OperatorError::InvalidData);
        let decoder = match self.config.format {
            Format::Json => Some(JsonDecoder::new(fields()?, self.config.batch_size)?),
            Format::DebeziumJson => {
                Some(JsonDecoder::new(envelope_fields(&fields()?, self.config.schema_include), self.config.batch_size)?)
            }
            Format::String | Format::Raw => None,
        };
        let key_decoder = match &self.config.upsert_key {
            Some(u) if u.format == KeyFormat::Json => Some(JsonDecoder::new(
                self.config.key_fields().map_err(OperatorError::InvalidData)?,
                self.config.batch_size,
            )?),
            _ => None,
        };
        self.open = Some(Open { consumer, dead_letters, decoder, key_decoder });
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
    pub(super) fn discover(&mut self, initial: bool) -> OpResult<usize> {
        let timeout = self.timeout();
        let servers = self.config.bootstrap_servers.clone();
        let open = self.open.as_ref().expect("opened before discovery");
        let mut new = Vec::new();
        for (topic, partitions) in self.topic_partitions(open, &servers, timeout)? {
            for p in partitions {
                if partition_owner(&topic, p, self.subtask.parallelism) == self.subtask.index && !self.owns(&topic, p) {
                    new.push((topic.clone(), p));
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

    /// The partitions of every topic to read: the named ones (each must
    /// exist), or those whose name matches `topic_pattern` now.
    fn topic_partitions(&self, open: &Open, servers: &str, timeout: Duration) -> OpResult<Vec<(String, Vec<i32>)>> {
        let check = |topic: &str, err: Option<rdkafka::types::RDKafkaRespErr>| match err {
            Some(err) => Err(OperatorError::External {
                system: "kafka",
                message: format!(
                    "topic `{topic}` cannot be read from {servers}: {:?}",
                    rdkafka::types::RDKafkaErrorCode::from(err)
                ),
            }),
            None => Ok(()),
        };
        let mut out = Vec::new();
        if let Some(pattern) = self.config.pattern().map_err(OperatorError::InvalidData)? {
            let md = open
                .consumer
                .fetch_metadata(None, timeout)
                .map_err(|e| kafka_error(format!("cannot list the topics of {servers} within {timeout:?}"), e))?;
            for t in md.topics() {
                if t.name().starts_with("__") || !pattern.is_match(t.name()) {
                    continue;
                }
                check(t.name(), t.error())?;
                out.push((t.name().to_string(), t.partitions().iter().map(|p| p.id()).collect()));
            }
            return Ok(out);
        }
        for topic in self.config.topics() {
            let md = open.consumer.fetch_metadata(Some(&topic), timeout).map_err(|e| {
                kafka_error(format!("cannot read the metadata of topic `{topic}` from {servers} within {timeout:?}"), e)
            })?;
            let t = md.topics().iter().find(|t| t.name() == topic).ok_or_else(|| OperatorError::External {
                system: "kafka",
                message: format!("the brokers at {servers} returned no metadata for topic `{topic}`"),
            })?;
            check(&topic, t.error())?;
            out.push((topic, t.partitions().iter().map(|p| p.id()).collect()));
        }
        Ok(out)
    }

    pub(super) fn owns(&self, topic: &str, partition: i32) -> bool {
        self.index.get(topic).is_some_and(|m| m.contains_key(&partition))
    }

    /// The earliest and the end offset of a partition.
    pub(super) fn offset_range(&self, topic: &str, partition: i32) -> OpResult<(i64, i64)> {
        let open = self.open.as_ref().expect("open");
        open.consumer
            .fetch_watermarks(topic, partition, self.timeout())
            .map_err(|e| kafka_error(format!("reading the offsets of {topic}/{partition}"), e))
    }

    pub(super) fn start_position(&self, topic: &str, partition: i32) -> OpResult<i64> {
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

    pub(super) fn assign(&self) -> OpResult<()> {
        let open = self.open.as_ref().expect("open");
        let mut tpl = TopicPartitionList::new();
        for p in self.partitions.iter().filter(|p| !p.done()) {
            tpl.add_partition_offset(&p.topic, p.partition, offset_of(p.next))
                .map_err(|e| kafka_error("building the assignment", e))?;
        }
        open.consumer.assign(&tpl).map_err(|e| kafka_error("assigning partitions", e))
    }
}
