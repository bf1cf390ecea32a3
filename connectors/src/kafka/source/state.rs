//! Partition positions in checkpoints, and the source's operator interface.

use std::time::Instant;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use weir_runtime::error::{OpResult, OperatorError};
use weir_runtime::operators::{Collector, SourceGauge, SourceOperator, SourceStatus};
use weir_runtime::state::{CheckpointId, StateReader, StateWriter};

use super::*;

/// Encodes a partition position key: topic, a zero byte, partition.
pub(super) fn position_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 5);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

pub(super) fn decode_position_key(k: &[u8]) -> Option<(String, i32)> {
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

    fn checkpoint_complete(&mut self, id: CheckpointId) -> OpResult<()> {
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
