//! The exactly-once protocol: transactional producers, commit markers,
//! committing epochs when their checkpoint completes, replaying them after
//! a crash.

use std::time::Duration;

use arrow::array::RecordBatch;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use weir_runtime::error::{OpResult, OperatorError};

use super::super::format::encode_json;
use super::super::{kafka_error, ConfigExt};

use super::*;
use crate::changes::Op;

impl KafkaSink {
    pub(super) fn exactly_once(&self) -> bool {
        self.config.delivery == Delivery::ExactlyOnce
    }

    pub(super) fn producer_config(&self, transactional_id: Option<&str>) -> OpResult<rdkafka::config::ClientConfig> {
        let mut c = self.config.connection().client_config()?;
        c.set_if_unset("partitioner", "murmur2_random")
            .set_if_unset("linger.ms", "5")
            .set_if_unset("client.id", format!("weir-{}-{}", self.uid, self.subtask.index))
            .set("enable.idempotence", "true");
        if let Some(id) = transactional_id {
            let t = self.config.transaction_timeout.unwrap_or(DEFAULT_TRANSACTION_TIMEOUT);
            c.set("transactional.id", id).set("transaction.timeout.ms", t.as_millis().to_string());
        }
        Ok(c)
    }

    /// A transactional producer for `id` that has fenced every earlier
    /// producer of that id, and the consumer of its marker group.
    pub(super) fn fenced(&self, id: &str) -> OpResult<(TxProducer, BaseConsumer)> {
        let timeout = self.config.timeout();
        let producer: TxProducer = self
            .producer_config(Some(id))?
            .create_with_context(CountingContext::default())
            .map_err(|e| kafka_error("creating a transactional producer", e))?;
        producer.init_transactions(timeout).map_err(|e| {
            kafka_error(
                format!("initialising transactions for `{id}` at {} (is the broker reachable and transaction_timeout within its transaction.max.timeout.ms?)", self.config.bootstrap_servers),
                e,
            )
        })?;
        let mut cc = self.config.connection().client_config()?;
        cc.set("group.id", id).set("enable.auto.commit", "false").set("isolation.level", "read_committed");
        let markers: BaseConsumer = cc.create().map_err(|e| kafka_error("creating the marker consumer", e))?;
        Ok((producer, markers))
    }

    /// The newest epoch committed under the marker group `id`.
    pub(super) fn committed_epoch(&self, markers: &BaseConsumer) -> OpResult<Option<u64>> {
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

    pub(super) fn ensure_open(&mut self) -> OpResult<()> {
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
                .producer_config(None)?
                .create_with_context(CountingContext::default())
                .map_err(|e| kafka_error("creating a producer", e))?;
            self.producer = Some(p);
        }
        Ok(())
    }

    /// With `partitioning: subtask`: the partition this subtask writes.
    pub(super) fn resolve_partition(&mut self) -> OpResult<()> {
        if self.config.partitioning == Partitioning::Subtask && self.partition.is_none() {
            let p: TxProducer = self
                .producer_config(None)?
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

    pub(super) fn send_all<'a>(
        &self,
        producer: &TxProducer,
        records: impl Iterator<Item = (Option<&'a [u8]>, Option<&'a [u8]>)>,
    ) -> OpResult<()> {
        let topic = self.config.topic.as_str();
        for (k, v) in records {
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
            if let Some(v) = v {
                record = record.payload(v);
            }
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
    pub(super) fn commit(
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
    pub(super) fn replay(&self, producer: &TxProducer, markers: &BaseConsumer, epochs: &[&Epoch]) -> OpResult<()> {
        let Some(last) = epochs.last().map(|e| e.checkpoint) else { return Ok(()) };
        producer.begin_transaction().map_err(|e| kafka_error("beginning a transaction", e))?;
        for e in epochs {
            self.send_all(producer, e.records.iter())?;
        }
        Self::commit(producer, markers, &self.config.topic, last, self.config.timeout())
    }

    pub(super) fn begin(&mut self) -> OpResult<()> {
        self.producer.as_ref().expect("open").begin_transaction().map_err(|e| kafka_error("beginning a transaction", e))
    }

    /// After a commit, or when no transaction is open: sends what waits.
    /// Closed epochs covered by checkpoint `complete` are committed now; the
    /// others go into a transaction pre-committed for the newest of them;
    /// with none left, the open epoch's records start a new transaction.
    pub(super) fn advance(&mut self, complete: Option<u64>) -> OpResult<()> {
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

    /// The records of `batch`: keys and values, with the last change per
    /// key and tombstones for deletes when the sink writes an upsert topic.
    pub(super) fn encode(&self, batch: &RecordBatch) -> OpResult<KeysAndValues> {
        let n = batch.num_rows();
        let keys: Vec<Option<Vec<u8>>> = match (self.columns.key, &self.columns.key_json[..]) {
            (Some(i), _) => column_bytes(batch.column(i).as_ref())?,
            (None, []) => vec![None; n],
            (None, cols) => encode_json(&batch.project(cols)?)?.into_iter().map(Some).collect(),
        };
        let values: Vec<Vec<u8>> = match self.columns.value {
            None => encode_json(&batch.project(&self.columns.value_json)?)?,
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
        let Some(op) = self.columns.op else { return Ok((keys, values.into_iter().map(Some).collect())) };
        // An upsert topic: the last change of each key in the batch, a
        // delete as a tombstone.
        let ops = crate::changes::ops(batch, Some(op))?;
        let rows: Vec<(Op, KeyAndValue)> = ops.into_iter().zip(keys.into_iter().zip(values)).collect();
        let last = crate::changes::last_per_key(rows, |(k, _)| k.clone().unwrap_or_default());
        Ok(last
            .into_iter()
            .map(|(op, (k, v))| match op {
                Op::Upsert => (k, Some(v)),
                Op::Delete => (k, None),
            })
            .unzip())
    }
}

/// One row's key (if any) and value.
type KeyAndValue = (Option<Vec<u8>>, Vec<u8>);
