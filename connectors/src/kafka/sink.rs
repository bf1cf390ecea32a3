//! `kafka_sink`: writes rows to a topic, at least once or exactly once.
//!
//! **At least once**: records are sent as they arrive; at every barrier the
//! producer is flushed and any failed delivery fails the checkpoint, so a
//! completed checkpoint covers everything before its barrier.
//!
//! **Exactly once** uses Kafka transactions tied to checkpoints. The records
//! between barrier *n-1* and barrier *n* form *epoch n*. They go into a
//! transaction that is flushed (pre-committed) at barrier *n* and committed
//! when checkpoint *n* completes. librdkafka cannot take over a transaction
//! that another process began, so the protocol never needs to:
//!
//! 1. The checkpoint holds each epoch's records until the epoch is
//!    committed: what a commit needs can always be replayed.
//! 2. Every commit carries a *marker* in the same transaction: the epoch
//!    number, committed as the offset of the sink's own consumer group
//!    (named after its transactional id) through
//!    `send_offsets_to_transaction`. The marker becomes visible exactly when
//!    the transaction commits.
//! 3. On restore, `init_transactions` with the subtask's transactional id
//!    fences any earlier producer and resolves its transaction (committed if
//!    its commit had begun, aborted otherwise). The marker then says which
//!    epochs committed; the epochs of the checkpoint above it are produced
//!    again in one transaction with a new marker. So an epoch whose
//!    checkpoint completed is committed exactly once, however a crash falls.
//!
//! Only one transaction is open per subtask. While epoch *n* waits for its
//! checkpoint, the records of epoch *n+1* are held in memory and sent once
//! *n* commits. Transactional ids are `<prefix>-<subtask>`, so their number
//! is bounded by the parallelism. The argument in full: `docs/kafka.md`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Deserialize;
use weir_runtime::barrier::CheckpointMode;
use weir_runtime::error::{OpResult, OperatorError, PlanError};
use weir_runtime::operators::{
    duration, Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo,
};
use weir_runtime::state::{CheckpointId, StateReader, StateWriter, UNION};

use super::format::{encode_json, Format};
use super::{kafka_error, ConfigExt, Connection, DEFAULT_CONNECT_TIMEOUT};
use crate::failpoint;

/// Delivery guarantee of the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Flush at every barrier; a restore may write records again.
    #[default]
    AtLeastOnce,
    /// Kafka transactions committed with checkpoints.
    ExactlyOnce,
}

/// How records are spread over the topic's partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioning {
    /// By key (murmur2, as Java clients do); keyless records are spread.
    #[default]
    Key,
    /// Subtask `i` writes partition `i mod partitions` (keeps each
    /// subtask's order in one partition).
    Subtask,
}

/// The configuration of `kafka_sink`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Brokers, `host:port[,...]`.
    pub bootstrap_servers: String,
    /// How long to wait for the brokers (flushes, transaction calls).
    #[serde(default, with = "duration::option")]
    pub connect_timeout: Option<Duration>,
    /// librdkafka properties passed through.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Output topic.
    pub topic: String,
    /// `json` (every column as an object), `string` or `raw` (`value_column`).
    #[serde(default)]
    pub format: Format,
    /// Column written as the record key (text or integer); absent: no key.
    #[serde(default)]
    pub key_column: Option<String>,
    /// Column written as the value with `string` and `raw` (default `value`).
    #[serde(default)]
    pub value_column: Option<String>,
    /// `at_least_once` (default) or `exactly_once`.
    #[serde(default)]
    pub delivery: Delivery,
    /// `key` (default) or `subtask`.
    #[serde(default)]
    pub partitioning: Partitioning,
    /// Prefix of the transactional ids (default `weir-<uid>`); must be unique
    /// among the jobs writing to a cluster.
    #[serde(default)]
    pub transactional_id_prefix: Option<String>,
    /// Transaction timeout; longer than the checkpoint interval and at most
    /// the broker's `transaction.max.timeout.ms` (15 min by default).
    #[serde(default, with = "duration::option")]
    pub transaction_timeout: Option<Duration>,
}

const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(600);
const PRODUCERS: &str = "producers";
const EPOCHS: &str = "epochs";

impl SinkConfig {
    fn connection(&self) -> Connection {
        Connection {
            bootstrap_servers: self.bootstrap_servers.clone(),
            connect_timeout: self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            properties: self.properties.clone(),
        }
    }

    fn timeout(&self) -> Duration {
        self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }

    fn transactional_id(&self, uid: &str, subtask: u32) -> String {
        let prefix = self.transactional_id_prefix.clone().unwrap_or_else(|| format!("weir-{uid}"));
        format!("{prefix}-{subtask}")
    }
}

/// Factory of `kafka_sink`.
#[derive(Debug)]
pub struct KafkaSinkFactory;

impl KafkaSinkFactory {
    fn config(ctx: &PlanContext<'_>) -> Result<(SinkConfig, Columns), PlanError> {
        let c: SinkConfig = ctx.config()?;
        c.connection().validate(ctx)?;
        if c.topic.trim().is_empty() {
            return Err(ctx.error("topic must not be empty").field("config.topic"));
        }
        let schema = &ctx.inputs[0];
        let key = match &c.key_column {
            Some(k) => {
                let i = schema
                    .index_of(k)
                    .map_err(|_| ctx.error(format!("no column `{k}` in the input")).field("config.key_column"))?;
                let dt = schema.field(i).data_type();
                if !(matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary) || dt.is_integer()) {
                    return Err(ctx
                        .error(format!("key column `{k}` has type {dt}; it must be text, bytes or an integer"))
                        .field("config.key_column"));
                }
                Some(i)
            }
            None => None,
        };
        let value = match c.format {
            Format::Json => {
                if c.value_column.is_some() {
                    return Err(ctx
                        .error("value_column is for the string and raw formats; json writes every column")
                        .field("config.value_column"));
                }
                None
            }
            Format::String | Format::Raw => {
                let v = c.value_column.clone().unwrap_or_else(|| "value".into());
                let i = schema
                    .index_of(&v)
                    .map_err(|_| ctx.error(format!("no column `{v}` in the input")).field("config.value_column"))?;
                let dt = schema.field(i).data_type();
                if !matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary) {
                    return Err(ctx
                        .error(format!("value column `{v}` has type {dt}; it must be text or bytes"))
                        .field("config.value_column"));
                }
                Some(i)
            }
        };
        if c.delivery == Delivery::ExactlyOnce {
            let Some(cp) = ctx.checkpoint else {
                return Err(ctx
                    .error("delivery exactly_once commits with checkpoints: add a `checkpoints:` section to the job")
                    .field("config.delivery"));
            };
            if cp.mode != CheckpointMode::ExactlyOnce {
                return Err(ctx
                    .error("delivery exactly_once needs checkpoints in exactly_once mode")
                    .field("config.delivery"));
            }
            let t = c.transaction_timeout.unwrap_or(DEFAULT_TRANSACTION_TIMEOUT);
            if t <= cp.interval {
                return Err(ctx
                    .error(format!(
                        "transaction_timeout {t:?} must be longer than the checkpoint interval {:?}: the broker would abort each transaction before its checkpoint completes",
                        cp.interval
                    ))
                    .field("config.transaction_timeout"));
            }
        } else if c.transactional_id_prefix.is_some() || c.transaction_timeout.is_some() {
            return Err(ctx.error("transactions are only used with delivery: exactly_once").field("config.delivery"));
        }
        Ok((c, Columns { key, value }))
    }
}

#[derive(Debug, Clone, Copy)]
struct Columns {
    key: Option<usize>,
    value: Option<usize>,
}

impl OperatorFactory for KafkaSinkFactory {
    fn kind(&self) -> &str {
        "kafka_sink"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn state_types(&self, _ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        vec![
            (PRODUCERS.into(), "union map (subtask, epoch) -> transactional id".into()),
            (EPOCHS.into(), "union map (subtask, epoch) -> records of an uncommitted epoch".into()),
        ]
    }
    fn is_sink(&self) -> bool {
        true
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Self::config(ctx)?;
        Ok(ctx.inputs[0].clone())
    }
    fn create(&self, ctx: &PlanContext<'_>, subtask: SubtaskInfo) -> Result<Instance, PlanError> {
        let (config, columns) = Self::config(ctx)?;
        Ok(Instance::Operator(Box::new(KafkaSink {
            uid: ctx.uid.to_string(),
            transactional_id: config.transactional_id(ctx.uid, subtask.index),
            config,
            columns,
            subtask,
            producer: None,
            markers: None,
            txn: Txn::None,
            open: Records::default(),
            pending: VecDeque::new(),
            written: BTreeSet::new(),
            partition: None,
            last_checkpoint: 0,
            count: 0,
        })))
    }
}

/// A producer context that counts failed deliveries.
#[derive(Debug, Default)]
pub struct CountingContext {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                *self.first_error.lock().expect("error slot") = Some(e.to_string());
            }
        }
    }
}

impl CountingContext {
    /// Fails if any delivery failed so far.
    pub fn check(&self, what: &str) -> OpResult<()> {
        let n = self.failed.load(Ordering::Relaxed);
        if n == 0 {
            return Ok(());
        }
        let first = self.first_error.lock().expect("error slot").clone().unwrap_or_default();
        Err(OperatorError::External {
            system: "kafka",
            message: format!("{what}: {n} records were not delivered; first: {first}"),
        })
    }
}

type TxProducer = ThreadedProducer<CountingContext>;

/// Serialized records: keys and values in one buffer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Records {
    bytes: Vec<u8>,
    /// Per record: key range (absent: no key), value range.
    spans: Vec<Span>,
}

/// Where one record's key and value are in [`Records::bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    key: Option<(usize, usize)>,
    value: (usize, usize),
}

impl Records {
    fn push(&mut self, key: Option<&[u8]>, value: &[u8]) {
        let k = key.map(|k| {
            let s = self.bytes.len();
            self.bytes.extend_from_slice(k);
            (s, self.bytes.len())
        });
        let s = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.spans.push(Span { key: k, value: (s, self.bytes.len()) });
    }

    fn len(&self) -> usize {
        self.spans.len()
    }

    fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (Option<&[u8]>, &[u8])> {
        self.spans.iter().map(|s| (s.key.map(|(a, b)| &self.bytes[a..b]), &self.bytes[s.value.0..s.value.1]))
    }

    fn append(&mut self, other: Records) {
        for (k, v) in other.iter() {
            self.push(k, v);
        }
    }

    /// `count`, then per record `key length or -1`, key, `value length`, value.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + 8 * self.spans.len() + 4);
        out.extend_from_slice(&(self.spans.len() as u32).to_be_bytes());
        for (k, v) in self.iter() {
            match k {
                Some(k) => {
                    out.extend_from_slice(&(k.len() as i32).to_be_bytes());
                    out.extend_from_slice(k);
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v);
        }
        out
    }

    fn decode(mut b: &[u8]) -> OpResult<Records> {
        let bad = || OperatorError::State("kafka sink records in the checkpoint do not decode".into());
        let take = |n: usize, b: &mut &[u8]| -> OpResult<Vec<u8>> {
            if b.len() < n {
                return Err(bad());
            }
            let (h, t) = b.split_at(n);
            *b = t;
            Ok(h.to_vec())
        };
        let n = u32::from_be_bytes(take(4, &mut b)?.try_into().map_err(|_| bad())?);
        let mut r = Records::default();
        for _ in 0..n {
            let kl = i32::from_be_bytes(take(4, &mut b)?.try_into().map_err(|_| bad())?);
            let key = if kl >= 0 { Some(take(kl as usize, &mut b)?) } else { None };
            let vl = u32::from_be_bytes(take(4, &mut b)?.try_into().map_err(|_| bad())?);
            let value = take(vl as usize, &mut b)?;
            r.push(key.as_deref(), &value);
        }
        if !b.is_empty() {
            return Err(bad());
        }
        Ok(r)
    }
}

/// The records between two barriers, closed by checkpoint `checkpoint`.
#[derive(Debug)]
struct Epoch {
    checkpoint: u64,
    records: Records,
    /// Whether they are in the producer's current transaction.
    produced: bool,
}

/// The producer's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Txn {
    /// None open.
    None,
    /// Open, holding records of the open epoch.
    Open,
    /// Flushed at a barrier, holding closed epochs up to `.0`; waits for
    /// checkpoint `.0` to complete.
    Precommitted(u64),
}

/// One subtask of `kafka_sink`.
pub struct KafkaSink {
    uid: String,
    transactional_id: String,
    config: SinkConfig,
    columns: Columns,
    subtask: SubtaskInfo,
    producer: Option<TxProducer>,
    /// The consumer of the sink's marker group (exactly once).
    markers: Option<BaseConsumer>,
    txn: Txn,
    /// Records since the last barrier (the open epoch).
    open: Records,
    /// Closed epochs not known to be committed, oldest first.
    pending: VecDeque<Epoch>,
    /// State keys the backend holds (incremental snapshots delete the rest).
    written: BTreeSet<(String, Vec<u8>)>,
    /// The partition this subtask writes (`partitioning: subtask`).
    partition: Option<i32>,
    /// The newest checkpoint whose barrier passed.
    last_checkpoint: u64,
    count: u64,
}

fn epoch_key(subtask: u32, epoch: u64) -> Vec<u8> {
    let mut k = subtask.to_be_bytes().to_vec();
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

impl KafkaSink {
    fn exactly_once(&self) -> bool {
        self.config.delivery == Delivery::ExactlyOnce
    }

    fn producer_config(&self, transactional_id: Option<&str>) -> rdkafka::config::ClientConfig {
        let mut c = self.config.connection().client_config();
        c.set_if_unset("partitioner", "murmur2_random")
            .set_if_unset("linger.ms", "5")
            .set_if_unset("client.id", format!("weir-{}-{}", self.uid, self.subtask.index))
            .set("enable.idempotence", "true");
        if let Some(id) = transactional_id {
            let t = self.config.transaction_timeout.unwrap_or(DEFAULT_TRANSACTION_TIMEOUT);
            c.set("transactional.id", id).set("transaction.timeout.ms", t.as_millis().to_string());
        }
        c
    }

    /// A transactional producer for `id` that has fenced every earlier
    /// producer of that id, and the consumer of its marker group.
    fn fenced(&self, id: &str) -> OpResult<(TxProducer, BaseConsumer)> {
        let timeout = self.config.timeout();
        let producer: TxProducer = self
            .producer_config(Some(id))
            .create_with_context(CountingContext::default())
            .map_err(|e| kafka_error("creating a transactional producer", e))?;
        producer.init_transactions(timeout).map_err(|e| {
            kafka_error(
                format!("initialising transactions for `{id}` at {} (is the broker reachable and transaction_timeout within its transaction.max.timeout.ms?)", self.config.bootstrap_servers),
                e,
            )
        })?;
        let mut cc = self.config.connection().client_config();
        cc.set("group.id", id).set("enable.auto.commit", "false").set("isolation.level", "read_committed");
        let markers: BaseConsumer = cc.create().map_err(|e| kafka_error("creating the marker consumer", e))?;
        Ok((producer, markers))
    }

    /// The newest epoch committed under the marker group `id`.
    fn committed_epoch(&self, markers: &BaseConsumer) -> OpResult<Option<u64>> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.config.topic, 0);
        let got = markers
            .committed_offsets(tpl, self.config.timeout())
            .map_err(|e| kafka_error("reading the sink's commit marker", e))?;
        let Some(elem) = got.find_partition(&self.config.topic, 0) else {
            return Err(OperatorError::External {
                system: "kafka",
                message: "the commit marker lookup returned nothing".into(),
            });
        };
        elem.error().map_err(|e| kafka_error("reading the sink's commit marker", e))?;
        Ok(match elem.offset() {
            Offset::Offset(o) if o >= 0 => Some(o as u64),
            _ => None,
        })
    }

    fn ensure_open(&mut self) -> OpResult<()> {
        self.resolve_partition()?;
        if self.producer.is_some() {
            return Ok(());
        }
        if self.exactly_once() {
            let (p, m) = self.fenced(&self.transactional_id.clone())?;
            // Nothing of this id is pending (a restore would have opened it):
            // whatever its marker says belongs to an earlier job, whose
            // checkpoint ids this job's would otherwise be compared with.
            // Reset it to 0 in an empty transaction.
            if self.committed_epoch(&m)?.is_some_and(|e| e > 0) {
                p.begin_transaction().map_err(|e| kafka_error("beginning a transaction", e))?;
                Self::commit(&p, &m, &self.config.topic, 0, self.config.timeout())?;
            }
            self.producer = Some(p);
            self.markers = Some(m);
        } else {
            let p: TxProducer = self
                .producer_config(None)
                .create_with_context(CountingContext::default())
                .map_err(|e| kafka_error("creating a producer", e))?;
            self.producer = Some(p);
        }
        Ok(())
    }

    /// With `partitioning: subtask`: the partition this subtask writes.
    fn resolve_partition(&mut self) -> OpResult<()> {
        if self.config.partitioning == Partitioning::Subtask && self.partition.is_none() {
            let p: TxProducer = self
                .producer_config(None)
                .create_with_context(CountingContext::default())
                .map_err(|e| kafka_error("creating a producer", e))?;
            let topic = &self.config.topic;
            let md = p.client().fetch_metadata(Some(topic), self.config.timeout()).map_err(|e| {
                kafka_error(
                    format!("reading the metadata of topic `{topic}` from {}", self.config.bootstrap_servers),
                    e,
                )
            })?;
            let n = md.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len());
            if n == 0 {
                return Err(OperatorError::External {
                    system: "kafka",
                    message: format!("topic `{topic}` has no partitions (does it exist?)"),
                });
            }
            self.partition = Some((self.subtask.index % n as u32) as i32);
        }
        Ok(())
    }

    fn send_all<'a>(
        &self,
        producer: &TxProducer,
        records: impl Iterator<Item = (Option<&'a [u8]>, &'a [u8])>,
    ) -> OpResult<()> {
        let topic = self.config.topic.as_str();
        for (k, v) in records {
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(v);
            if let Some(p) = self.partition {
                record = record.partition(p);
            }
            if let Some(k) = k {
                record = record.key(k);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        producer.flush(self.config.timeout()).map_err(|e| kafka_error("flushing the producer", e))?;
                    }
                    Err((e, _)) => return Err(kafka_error(format!("sending to `{topic}`"), e)),
                }
            }
        }
        Ok(())
    }

    /// Commits the current transaction with marker `epoch`.
    fn commit(
        producer: &TxProducer,
        markers: &BaseConsumer,
        topic: &str,
        epoch: u64,
        timeout: Duration,
    ) -> OpResult<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(epoch as i64))
            .map_err(|e| kafka_error("building the commit marker", e))?;
        let group = markers.group_metadata().ok_or_else(|| OperatorError::External {
            system: "kafka",
            message: "the marker consumer has no group metadata".into(),
        })?;
        producer
            .send_offsets_to_transaction(&tpl, &group, timeout)
            .map_err(|e| kafka_error(format!("adding the commit marker of epoch {epoch}"), e))?;
        producer.commit_transaction(timeout).map_err(|e| kafka_error(format!("committing epoch {epoch}"), e))?;
        producer.context().check("committing")
    }

    /// Produces `epochs` in one transaction and commits it.
    fn replay(&self, producer: &TxProducer, markers: &BaseConsumer, epochs: &[&Epoch]) -> OpResult<()> {
        let Some(last) = epochs.last().map(|e| e.checkpoint) else { return Ok(()) };
        producer.begin_transaction().map_err(|e| kafka_error("beginning a transaction", e))?;
        for e in epochs {
            self.send_all(producer, e.records.iter())?;
        }
        Self::commit(producer, markers, &self.config.topic, last, self.config.timeout())
    }

    fn begin(&mut self) -> OpResult<()> {
        self.producer.as_ref().expect("open").begin_transaction().map_err(|e| kafka_error("beginning a transaction", e))
    }

    /// After a commit, or when no transaction is open: sends what waits.
    /// Closed epochs covered by checkpoint `complete` are committed now; the
    /// others go into a transaction pre-committed for the newest of them;
    /// with none left, the open epoch's records start a new transaction.
    fn advance(&mut self, complete: Option<u64>) -> OpResult<()> {
        debug_assert_eq!(self.txn, Txn::None);
        let timeout = self.config.timeout();
        let covered: Vec<usize> = match complete {
            Some(id) => (0..self.pending.len()).filter(|&i| self.pending[i].checkpoint <= id).collect(),
            None => Vec::new(),
        };
        if !covered.is_empty() {
            let producer = self.producer.as_ref().expect("open");
            let markers = self.markers.as_ref().expect("exactly once has markers");
            let epochs: Vec<&Epoch> = covered.iter().map(|&i| &self.pending[i]).collect();
            self.replay(producer, markers, &epochs)?;
            let n = covered.len();
            self.pending.drain(..n);
        }
        if let Some(last) = self.pending.back().map(|e| e.checkpoint) {
            self.begin()?;
            let producer = self.producer.as_ref().expect("open");
            for e in &self.pending {
                self.send_all(producer, e.records.iter())?;
            }
            for e in &mut self.pending {
                e.produced = true;
            }
            producer.flush(timeout).map_err(|e| kafka_error("flushing the producer", e))?;
            self.txn = Txn::Precommitted(last);
        } else if !self.open.is_empty() {
            self.begin()?;
            let producer = self.producer.as_ref().expect("open");
            self.send_all(producer, self.open.iter())?;
            self.txn = Txn::Open;
        }
        Ok(())
    }

    fn encode(&self, batch: &RecordBatch) -> OpResult<KeysAndValues> {
        let n = batch.num_rows();
        let keys: Vec<Option<Vec<u8>>> = match self.columns.key {
            None => vec![None; n],
            Some(i) => column_bytes(batch.column(i).as_ref())?,
        };
        let values: Vec<Vec<u8>> = match self.columns.value {
            None => encode_json(batch)?,
            Some(i) => column_bytes(batch.column(i).as_ref())?
                .into_iter()
                .enumerate()
                .map(|(r, v)| {
                    v.ok_or_else(|| {
                        OperatorError::InvalidData(format!(
                            "row {r} has a null value column: Kafka values here must not be null"
                        ))
                    })
                })
                .collect::<OpResult<_>>()?,
        };
        Ok((keys, values))
    }
}

/// Per row: the key (if any) and the value.
type KeysAndValues = (Vec<Option<Vec<u8>>>, Vec<Vec<u8>>);

/// The bytes of each row of a text, binary or integer column.
fn column_bytes(col: &dyn Array) -> OpResult<Vec<Option<Vec<u8>>>> {
    let rows = 0..col.len();
    Ok(match col.data_type() {
        DataType::Utf8 => {
            let a = col.as_string::<i32>();
            rows.map(|r| a.is_valid(r).then(|| a.value(r).as_bytes().to_vec())).collect()
        }
        DataType::LargeUtf8 => {
            let a = col.as_string::<i64>();
            rows.map(|r| a.is_valid(r).then(|| a.value(r).as_bytes().to_vec())).collect()
        }
        DataType::Binary => {
            let a = col.as_binary::<i32>();
            rows.map(|r| a.is_valid(r).then(|| a.value(r).to_vec())).collect()
        }
        dt if dt.is_integer() => {
            let a = arrow::compute::cast(col, &DataType::Int64)?;
            let a = a.as_primitive::<arrow::datatypes::Int64Type>();
            rows.map(|r| a.is_valid(r).then(|| a.value(r).to_string().into_bytes())).collect()
        }
        other => return Err(OperatorError::InvalidData(format!("a column of type {other} cannot be a key or value"))),
    })
}

impl Operator for KafkaSink {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, _out: &mut Collector) -> OpResult<()> {
        self.ensure_open()?;
        let (keys, values) = self.encode(&batch)?;
        self.count += batch.num_rows() as u64;
        if !self.exactly_once() {
            let producer = self.producer.as_ref().expect("open");
            return self.send_all(producer, keys.iter().map(|k| k.as_deref()).zip(values.iter().map(Vec::as_slice)));
        }
        let mut fresh = Records::default();
        for (k, v) in keys.iter().zip(&values) {
            fresh.push(k.as_deref(), v);
        }
        match self.txn {
            Txn::None => {
                self.open.append(fresh);
                self.advance(None)?;
            }
            Txn::Open => {
                self.send_all(self.producer.as_ref().expect("open"), fresh.iter())?;
                self.open.append(fresh);
            }
            // A transaction waits for its checkpoint: hold the records.
            Txn::Precommitted(_) => self.open.append(fresh),
        }
        Ok(())
    }

    fn on_processing_time(&mut self, _now: std::time::Instant, _out: &mut Collector) -> OpResult<()> {
        // Open (and so fence the subtask's transactional id, aborting what an
        // earlier run left open) without waiting for the first record.
        self.ensure_open()
    }

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        self.ensure_open()?;
        let timeout = self.config.timeout();
        let producer = self.producer.as_ref().expect("open");
        if !self.exactly_once() {
            producer.flush(timeout).map_err(|e| kafka_error("flushing at a checkpoint barrier", e))?;
            return producer.context().check("flushing at a checkpoint barrier");
        }
        let id = w.checkpoint().0;
        self.last_checkpoint = self.last_checkpoint.max(id);
        let records = std::mem::take(&mut self.open);
        match self.txn {
            Txn::Open => {
                producer.flush(timeout).map_err(|e| kafka_error("pre-committing at a checkpoint barrier", e))?;
                producer.context().check("pre-committing at a checkpoint barrier")?;
                self.pending.push_back(Epoch { checkpoint: id, records, produced: true });
                self.txn = Txn::Precommitted(id);
            }
            Txn::Precommitted(_) if !records.is_empty() => {
                self.pending.push_back(Epoch { checkpoint: id, records, produced: false })
            }
            Txn::Precommitted(_) | Txn::None => {}
        }
        // What a restore needs: this subtask's transactional id, and every
        // epoch that may not be committed yet.
        let mut want: BTreeMap<(String, Vec<u8>), Vec<u8>> = BTreeMap::new();
        want.insert(
            (PRODUCERS.into(), self.subtask.index.to_be_bytes().to_vec()),
            self.transactional_id.clone().into_bytes(),
        );
        for e in &self.pending {
            want.insert((EPOCHS.into(), epoch_key(self.subtask.index, e.checkpoint)), e.records.encode());
        }
        if !w.full() {
            for gone in self.written.iter().filter(|k| !want.contains_key(*k)) {
                w.delete(&gone.0, UNION, gone.1.clone());
            }
        }
        for (k, v) in &want {
            if w.full() || !self.written.contains(k) {
                w.put_union(&k.0, k.1.clone(), v.clone());
            }
        }
        self.written = want.into_keys().collect();
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        if !self.exactly_once() {
            return Ok(());
        }
        // Union state: the epochs and ids of every subtask of the previous
        // run. This subtask finishes those of the old subtasks `j` with
        // `j mod parallelism = index` (its own, at unchanged parallelism).
        let mut ids: BTreeMap<u32, String> = BTreeMap::new();
        for e in r.state(PRODUCERS) {
            let j = u32::from_be_bytes(
                e.key.as_slice().try_into().map_err(|_| OperatorError::State("kafka sink producer key".into()))?,
            );
            let id = String::from_utf8(e.value.clone().unwrap_or_default())
                .map_err(|_| OperatorError::State("kafka sink transactional id".into()))?;
            ids.insert(j, id);
        }
        let mut epochs: BTreeMap<u32, Vec<Epoch>> = BTreeMap::new();
        for e in r.state(EPOCHS) {
            if e.key.len() != 12 {
                return Err(OperatorError::State("kafka sink epoch key does not decode".into()));
            }
            let j = u32::from_be_bytes(e.key[..4].try_into().expect("4 bytes"));
            let checkpoint = u64::from_be_bytes(e.key[4..].try_into().expect("8 bytes"));
            let records = Records::decode(e.value.as_deref().unwrap_or_default())?;
            epochs.entry(j).or_default().push(Epoch { checkpoint, records, produced: false });
        }
        for (k, _) in ids.iter() {
            self.written.insert((PRODUCERS.into(), k.to_be_bytes().to_vec()));
        }
        for (j, es) in &epochs {
            for e in es {
                self.written.insert((EPOCHS.into(), epoch_key(*j, e.checkpoint)));
            }
        }
        self.resolve_partition()?;
        let p = self.subtask.parallelism;
        for (&j, id) in ids.iter().filter(|(&j, _)| j % p == self.subtask.index) {
            let (producer, markers) = self.fenced(id)?;
            let committed = self.committed_epoch(&markers)?;
            let mut mine: Vec<Epoch> = epochs.remove(&j).unwrap_or_default();
            mine.sort_by_key(|e| e.checkpoint);
            // Markers only grow: later commits (even at the end of input) stay above these.
            let newest = mine.last().map(|e| e.checkpoint).into_iter().chain(committed);
            self.last_checkpoint = newest.fold(self.last_checkpoint, u64::max);
            let todo: Vec<&Epoch> = mine.iter().filter(|e| committed.is_none_or(|c| e.checkpoint > c)).collect();
            let records: usize = todo.iter().map(|e| e.records.len()).sum();
            if !todo.is_empty() {
                self.replay(&producer, &markers, &todo)?;
            }
            tracing::info!(
                operator = %self.uid,
                subtask = self.subtask.index,
                transactional_id = %id,
                committed_epoch = ?committed,
                replayed_epochs = todo.len(),
                replayed_records = records,
                "kafka sink recovered its transactions"
            );
            if *id == self.transactional_id {
                self.producer = Some(producer);
                self.markers = Some(markers);
            }
        }
        Ok(())
    }

    fn checkpoint_complete(&mut self, id: CheckpointId) -> OpResult<()> {
        let id = id.0;
        if !self.exactly_once() {
            return Ok(());
        }
        let commits_now = matches!(self.txn, Txn::Precommitted(up_to) if up_to <= id)
            || self.pending.iter().any(|e| e.checkpoint <= id);
        if !commits_now {
            return Ok(());
        }
        failpoint::hit("kafka_sink_before_commit");
        if let Txn::Precommitted(up_to) = self.txn {
            if up_to <= id {
                let producer = self.producer.as_ref().expect("open");
                let markers = self.markers.as_ref().expect("exactly once has markers");
                Self::commit(producer, markers, &self.config.topic, up_to, self.config.timeout())?;
                self.pending.retain(|e| !e.produced);
                self.txn = Txn::None;
            }
        }
        if self.txn == Txn::None {
            self.advance(Some(id))?;
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Collector) -> OpResult<()> {
        let Some(producer) = self.producer.as_ref() else { return Ok(()) };
        let timeout = self.config.timeout();
        if !self.exactly_once() {
            producer.flush(timeout).map_err(|e| kafka_error("flushing at the end of input", e))?;
            return producer.context().check("flushing at the end of input");
        }
        // The input ended: everything written is final (like the file sink,
        // there is no last checkpoint). What follows the newest checkpoint
        // commits under the marker of the epoch after it.
        let markers = self.markers.as_ref().expect("exactly once has markers");
        let last = self.last_checkpoint + 1;
        match self.txn {
            Txn::Precommitted(up_to) => {
                Self::commit(producer, markers, &self.config.topic, up_to, timeout)?;
                self.pending.retain(|e| !e.produced);
            }
            Txn::Open => {
                Self::commit(producer, markers, &self.config.topic, last, timeout)?;
                self.open = Records::default();
            }
            Txn::None => {}
        }
        self.txn = Txn::None;
        let mut rest = Records::default();
        for e in std::mem::take(&mut self.pending) {
            rest.append(e.records);
        }
        rest.append(std::mem::take(&mut self.open));
        if !rest.is_empty() {
            let epoch = Epoch { checkpoint: last, records: rest, produced: false };
            self.replay(producer, markers, &[&epoch])?;
        }
        Ok(())
    }

    fn sink_records(&self) -> u64 {
        self.count
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        // A cancelled or failed subtask leaves its transaction to be fenced
        // and aborted by the next `init_transactions` of its id; abort it now
        // when we can, so read_committed consumers are not held up.
        if let (Some(p), Txn::Open | Txn::Precommitted(_)) = (&self.producer, self.txn) {
            let _ = p.abort_transaction(Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use weir_runtime::builder::JobBuilder;
    use weir_runtime::checkpointing::CheckpointConfig;
    use weir_runtime::graph::Plan;

    fn plan(sink: serde_json::Value, checkpoints: Option<CheckpointConfig>) -> Result<Plan, PlanError> {
        let mut b = JobBuilder::new("t");
        b.operator("src", "values", json!({"schema": [{"name": "k", "type": "string"}], "rows": [{"k": "a"}]}));
        b.operator("out", "kafka_sink", sink);
        b.forward("src", "out");
        if let Some(c) = checkpoints {
            b.checkpoints(c);
        }
        Plan::new(&b.build(), &crate::registry(), 1)
    }

    #[test]
    fn exactly_once_is_checked_against_the_checkpoints() {
        let sink = |extra: serde_json::Value| {
            let mut c =
                json!({"bootstrap_servers": "b:9092", "topic": "t", "delivery": "exactly_once", "key_column": "k"});
            c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            c
        };
        let every = |s| Some(CheckpointConfig::every(Duration::from_secs(s)));
        plan(sink(json!({})), every(1)).unwrap();
        let e = plan(sink(json!({})), None).unwrap_err().to_string();
        assert!(e.contains("checkpoints"), "{e}");
        let e = plan(sink(json!({"transaction_timeout": "5s"})), every(10)).unwrap_err().to_string();
        assert!(e.contains("transaction_timeout") && e.contains("longer than the checkpoint interval"), "{e}");
        let e =
            plan(json!({"bootstrap_servers": "b", "topic": "t", "key_column": "nope"}), None).unwrap_err().to_string();
        assert!(e.contains("no column `nope`"), "{e}");
        let e = plan(json!({"bootstrap_servers": "b", "topic": "t", "properties": {"transactional.id": "x"}}), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("set by Weir itself"), "{e}");
    }

    #[test]
    fn records_round_trip() {
        let mut r = Records::default();
        r.push(Some(b"k1"), b"v1");
        r.push(None, b"");
        r.push(Some(b""), b"value three");
        let back = Records::decode(&r.encode()).unwrap();
        assert_eq!(back, r);
        let items: Vec<_> = back.iter().collect();
        assert_eq!(items[0], (Some(&b"k1"[..]), &b"v1"[..]));
        assert_eq!(items[1], (None, &b""[..]));
        let mut enc = r.encode();
        enc.pop();
        assert!(Records::decode(&enc).is_err());
    }
}
