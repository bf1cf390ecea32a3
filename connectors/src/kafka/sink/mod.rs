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

mod config;
mod records;
#[cfg(test)]
mod tests;
mod transactions;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use rdkafka::client::ClientContext;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use weir_runtime::error::{OpResult, OperatorError, PlanError};
use weir_runtime::operators::{Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use weir_runtime::state::{subtask_epoch_key, CheckpointId, StateReader, StateWriter, UnionKeys};

use super::format::Format;
use super::kafka_error;
use weir_types::failpoint;

use config::*;
pub use config::{Delivery, Partitioning, SinkConfig};
use records::Records;

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
        let index = |name: &str, field: &str| {
            schema.index_of(name).map_err(|_| ctx.error(format!("no column `{name}` in the input")).field(field))
        };
        if c.key_column.is_some() && !c.key_columns.is_empty() {
            return Err(ctx.error("give key_column or key_columns, not both").field("config.key_columns"));
        }
        let key_json = c.key_columns.iter().map(|k| index(k, "config.key_columns")).collect::<Result<Vec<_>, _>>()?;
        let op = match &c.op_column {
            Some(name) => Some(
                crate::changes::op_column(schema, name, c.key_column.is_some() || !key_json.is_empty())
                    .map_err(|e| ctx.error(e).field("config.op_column"))?,
            ),
            None => None,
        };
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
        if c.value_except_key && (c.format != Format::Json || (key.is_none() && key_json.is_empty())) {
            return Err(ctx.error("value_except_key needs the json format and a key").field("config.value_except_key"));
        }
        let value_json: Vec<usize> = (0..schema.fields().len())
            .filter(|i| Some(*i) != op)
            .filter(|i| !c.value_except_key || (Some(*i) != key && !key_json.contains(i)))
            .collect();
        let value = match c.format {
            Format::DebeziumJson => return Err(ctx
                .error("the debezium_json format is read by kafka sources only; write json (or an upsert sink) instead")
                .field("config.format")),
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
        if let Some(cp) = c.delivery.check(ctx)? {
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
        Ok((c, Columns { key, key_json, op, value, value_json }))
    }
}

/// Which columns make a record.
#[derive(Debug, Clone)]
struct Columns {
    /// The key as text (`key_column`).
    key: Option<usize>,
    /// The key as a JSON object (`key_columns`).
    key_json: Vec<usize>,
    /// The change kind (`op_column`).
    op: Option<usize>,
    /// The value as text (`string`, `raw`).
    value: Option<usize>,
    /// The value's columns as a JSON object (`json`).
    value_json: Vec<usize>,
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
    written: UnionKeys,
    /// The partition this subtask writes (`partitioning: subtask`).
    partition: Option<i32>,
    /// The newest checkpoint whose barrier passed.
    last_checkpoint: u64,
    count: u64,
}

/// Per record: the key (if any) and the value (none: a tombstone).
type KeysAndValues = (Vec<Option<Vec<u8>>>, Vec<Option<Vec<u8>>>);

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
            return self.send_all(producer, keys.iter().map(|k| k.as_deref()).zip(values.iter().map(|v| v.as_deref())));
        }
        let mut fresh = Records::default();
        for (k, v) in keys.iter().zip(&values) {
            fresh.push(k.as_deref(), v.as_deref());
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
            want.insert((EPOCHS.into(), subtask_epoch_key(self.subtask.index, e.checkpoint)), e.records.encode());
        }
        self.written = w.put_union_entries(&self.written, want);
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
                self.written.insert((EPOCHS.into(), subtask_epoch_key(*j, e.checkpoint)));
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
