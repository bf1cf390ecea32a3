//! Polling the consumer and decoding records into batches; bad records
//! to the dead-letter topic or a failure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::topic_partition_list::Offset;
use weir_runtime::error::{OpResult, OperatorError};
use weir_runtime::operators::watermark::event_times;
use weir_runtime::operators::Collector;

use super::super::debezium::{change_column, unfold};
use super::super::format::Format;
use super::super::kafka_error;

use super::*;

impl KafkaSource {
    /// Reads up to a batch of records and emits them.
    pub(super) fn read(&mut self, out: &mut Collector) -> OpResult<bool> {
        let open = self.open.as_mut().expect("open");
        let mut values: Vec<u8> = Vec::new();
        let mut value_ranges: Vec<Option<(usize, usize)>> = Vec::new();
        let mut meta: Vec<RecordMeta> = Vec::new();
        let wants_key = self.config.metadata.key.is_some() || self.config.upsert_key.is_some();
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
        let (value_columns, rejected, changes) = if self.config.upsert_key.is_some() {
            let keys: Vec<Option<&[u8]>> = candidates.iter().map(|&i| meta[i].key.as_deref()).collect();
            self.decode_upserts(&candidate_values, &keys)?
        } else {
            self.decode_values(&candidate_values)?
        };
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
        // A changelog format's rows: each record's changes, in order.
        let rows: Vec<usize> = match &changes {
            Some(c) => c.iter().map(|(j, _)| candidates[*j]).collect(),
            None => good,
        };
        let batch = self.build_batch(value_columns, &rows, &meta, changes.as_deref())?;
        if let Some(col) = self.watermark_column {
            if batch.num_rows() > 0 {
                let times = event_times(&batch, col)?;
                for (row, &i) in rows.iter().enumerate() {
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
    /// A changelog format gives a row per change instead, and per row the
    /// index of its record (into `values`) and its change kind.
    pub(super) fn decode_values(&mut self, values: &[Option<&[u8]>]) -> OpResult<DecodedValues> {
        let open = self.open.as_mut().expect("open");
        match self.config.format {
            Format::Json => {
                let d = open.decoder.as_mut().expect("json decoder").decode(values)?;
                Ok((d.batch.columns().to_vec(), d.bad, None))
            }
            Format::DebeziumJson => {
                // Tombstones (records without a value) carry no change.
                let present: Vec<usize> = (0..values.len()).filter(|&i| values[i].is_some()).collect();
                let kept: Vec<Option<&[u8]>> = present.iter().map(|&i| values[i]).collect();
                let d = open.decoder.as_mut().expect("json decoder").decode(&kept)?;
                let mut bad: BadRecords = d.bad.iter().map(|(j, why)| (present[*j], why.clone())).collect();
                // Envelope `e` of the batch is value `decoded[e]`.
                let decoded: Vec<usize> =
                    (0..kept.len()).filter(|j| !d.bad.iter().any(|b| b.0 == *j)).map(|j| present[j]).collect();
                let u = unfold(&d.batch, self.config.schema_include)?;
                bad.extend(u.bad.into_iter().map(|(e, why)| (decoded[e], why)));
                bad.sort_by_key(|b| b.0);
                let changes = u.changes.into_iter().map(|(e, kind)| (decoded[e], kind)).collect();
                Ok((u.columns, bad, Some(changes)))
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
                Ok((vec![Arc::new(b.finish())], bad, None))
            }
            Format::Raw => {
                let mut b = BinaryBuilder::new();
                for v in values {
                    b.append_option(*v);
                }
                Ok((vec![Arc::new(b.finish())], Vec::new(), None))
            }
        }
    }

    /// The output batch: the value columns of the good records (in order),
    /// their metadata columns, and a changelog format's change kinds.
    pub(super) fn build_batch(
        &self,
        mut columns: Vec<ArrayRef>,
        good: &[usize],
        meta: &[RecordMeta],
        changes: Option<&[(usize, &'static str)]>,
    ) -> OpResult<RecordBatch> {
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
        if let Some(c) = changes {
            columns.push(change_column(c));
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    pub(super) fn handle_bad(
        &mut self,
        bad: &[(usize, String)],
        values: &[Option<&[u8]>],
        meta: &[RecordMeta],
    ) -> OpResult<()> {
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

    /// Moves positions past what the consumer skipped without delivering:
    /// transaction markers and aborted records. (A bounded source whose
    /// partition ends with a commit marker would otherwise never reach its end.)
    pub(super) fn skip_control_records(&mut self) -> OpResult<()> {
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

    pub(super) fn check_dead_letters(&self) -> OpResult<()> {
        if let Some(p) = self.open.as_ref().and_then(|o| o.dead_letters.as_ref()) {
            p.flush(self.timeout()).map_err(|e| kafka_error("flushing dead letters", e))?;
            p.context().check("delivering dead letters")?;
        }
        Ok(())
    }
}

pub(super) struct RecordMeta {
    pub(super) partition_index: u32,
    pub(super) offset: i64,
    pub(super) timestamp: Option<i64>,
    pub(super) key: Option<Vec<u8>>,
    pub(super) headers: Option<String>,
}
