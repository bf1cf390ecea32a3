//! The loop of a source task: poll, emit, take checkpoints when triggered,
//! stop with a savepoint when asked.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::barrier::CheckpointId;
use crate::channel::StreamElement;
use crate::operators::{Collector, SourceStatus};

use super::*;

impl Task {
    pub(super) async fn run_source(&mut self, cancel: &CancellationToken) -> Result<Ending, TaskError> {
        let (uid, mut source) = self.chain.source.take().expect("source task");
        let mut out = Collector::default();
        let mut last_tick = Instant::now();
        // Set while paused after the barrier of a stop-with-savepoint.
        let mut stopping: Option<CheckpointId> = None;
        let mut last_gauges = Instant::now() - GAUGE_PERIOD;
        let result = loop {
            if cancel.is_cancelled() {
                break Err(TaskError::Canceled);
            }
            if let Some(savepoint) = stopping {
                let ctl = tokio::select! {
                    _ = cancel.cancelled() => break Err(TaskError::Canceled),
                    ctl = next_control(&mut self.control) => ctl,
                    _ = tokio::time::sleep(self.options.tick) => {
                        if let Err(e) = self.tick(Instant::now()).await {
                            break Err(e);
                        }
                        continue;
                    }
                };
                match ctl {
                    Some(TaskControl::CheckpointComplete(id)) => {
                        if let Err(e) = self.checkpoint_complete(id, Some(source.as_mut())) {
                            break Err(e);
                        }
                        if let Err(e) = self.emit_tail().await {
                            break Err(e);
                        }
                        if id >= savepoint {
                            break Ok(Ending::Stopped { taken: Some(savepoint), completed: Some(id) });
                        }
                    }
                    Some(TaskControl::CheckpointAborted(id)) if id == savepoint => {
                        tracing::info!(checkpoint = %id, "the stop-with-savepoint failed: reading resumes");
                        stopping = None;
                    }
                    Some(_) => {}
                    None => break Err(TaskError::Canceled),
                }
                continue;
            }
            let status = match source.poll(&mut out) {
                Ok(s) => s,
                Err(e) => break Err(TaskError::Operator { operator: uid.clone(), source: e }),
            };
            self.counters.bad_records.store(source.bad_records(), Ordering::Relaxed);
            if self.chain.ops.is_empty() {
                for (port, b) in out.take_side() {
                    self.chain.tail.push((port, StreamElement::Batch(b)));
                }
            } else {
                out.take_side();
            }
            for element in out.take() {
                if let StreamElement::Batch(b) = &element {
                    self.counters.records_in.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    self.counters.bytes_in.fetch_add(b.get_array_memory_size() as u64, Ordering::Relaxed);
                    self.chain.rows[0].rows_out.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    self.chain.rows[0].bytes_out.fetch_add(b.get_array_memory_size() as u64, Ordering::Relaxed);
                }
                self.chain.feed(0, 0, element)?;
            }
            if last_gauges.elapsed() >= GAUGE_PERIOD {
                last_gauges = Instant::now();
                let gauges = source.gauges();
                *self.counters.source_gauges.lock().unwrap_or_else(|e| e.into_inner()) = gauges;
            }
            self.emit_tail().await?;
            // The completion of the stop's savepoint may already be queued
            // behind the stop itself (an idle source wakes to find both).
            let mut stopped = None;
            while let Some(Ok(ctl)) = self.control.as_mut().map(|c| c.try_recv()) {
                match ctl {
                    TaskControl::TriggerCheckpoint(id) => {
                        self.checkpoint(id, Some((uid.as_str(), source.as_mut())), Duration::ZERO).await?
                    }
                    TaskControl::StopWithSavepoint(id) => {
                        self.checkpoint(id, Some((uid.as_str(), source.as_mut())), Duration::ZERO).await?;
                        self.flush().await?;
                        stopping = Some(id);
                    }
                    TaskControl::CheckpointComplete(id) => {
                        self.checkpoint_complete(id, Some(source.as_mut()))?;
                        self.emit_tail().await?;
                        if let Some(savepoint) = stopping.filter(|s| id >= *s) {
                            stopped = Some(Ending::Stopped { taken: Some(savepoint), completed: Some(id) });
                        }
                    }
                    TaskControl::CheckpointAborted(id) if stopping == Some(id) => {
                        tracing::info!(checkpoint = %id, "the stop-with-savepoint failed: reading resumes");
                        stopping = None;
                    }
                    TaskControl::CheckpointAborted(_) => {}
                }
            }
            if let Some(ending) = stopped {
                break Ok(ending);
            }
            if stopping.is_some() {
                continue;
            }
            let now = Instant::now();
            if now.duration_since(last_tick) >= self.options.tick {
                last_tick = now;
                self.tick(now).await?;
            }
            match status {
                SourceStatus::Emitted => {}
                SourceStatus::Finished => break Ok(Ending::Drained),
                SourceStatus::Wait(d) => {
                    let d = d.min(self.options.tick);
                    tokio::select! {
                        _ = cancel.cancelled() => break Err(TaskError::Canceled),
                        _ = tokio::time::sleep(d) => {}
                    }
                }
            }
        };
        self.chain.source = Some((uid, source));
        result
    }
}
