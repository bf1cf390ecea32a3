//! A task's output edges: partitioning, per-channel buffers, flushing.

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};

use crate::channel::{OutputChannel, StreamElement};
use crate::error::OperatorError;
use crate::graph::Partitioning;
use crate::keygroup::{hash_rows, key_group, subtask_for_key_group};

use super::*;

/// How an output edge picks channels.
#[derive(Debug)]
pub enum Partitioner {
    /// One channel (forward).
    Single,
    /// By key group of the key columns.
    Hash {
        /// Key column indices in the edge's schema.
        key: Vec<usize>,
        /// Number of key groups.
        max_parallelism: u32,
    },
    /// Every channel.
    Broadcast,
    /// Round-robin over channels, per batch.
    Rebalance {
        /// Next channel.
        next: usize,
    },
}

/// One output edge of a task: a partitioner over channels, with a buffer per channel.
#[derive(Debug)]
pub struct OutputEdge {
    /// The port of the task's tail operator this edge leaves (0: its main output).
    pub(super) port: u32,
    pub(super) partitioner: Partitioner,
    pub(super) channels: Vec<OutputChannel>,
    pub(super) pending: Vec<(Vec<RecordBatch>, usize)>,
    pub(super) hashes: Vec<u64>,
    pub(super) picks: Vec<Vec<u32>>,
}

impl OutputEdge {
    /// An edge of the given partitioning over `channels` (downstream subtask
    /// order; a forward edge has exactly one).
    pub fn new(
        partitioning: Partitioning,
        key: Vec<usize>,
        max_parallelism: u32,
        channels: Vec<OutputChannel>,
    ) -> Self {
        let partitioner = match partitioning {
            Partitioning::Forward => Partitioner::Single,
            Partitioning::Hash => Partitioner::Hash { key, max_parallelism },
            Partitioning::Broadcast => Partitioner::Broadcast,
            Partitioning::Rebalance => Partitioner::Rebalance { next: 0 },
        };
        let n = channels.len();
        Self {
            partitioner,
            port: 0,
            channels,
            pending: vec![(Vec::new(), 0); n],
            hashes: Vec::new(),
            picks: vec![Vec::new(); n],
        }
    }

    /// The edge leaves side output port `port` of the tail operator.
    pub fn from_port(mut self, port: u32) -> Self {
        self.port = port;
        self
    }

    pub(super) async fn push(
        &mut self,
        channel: usize,
        batch: RecordBatch,
        opts: &TaskOptions,
    ) -> Result<(), OperatorError> {
        let (buf, rows) = &mut self.pending[channel];
        *rows += batch.num_rows();
        buf.push(batch);
        if *rows >= opts.min_batch_rows {
            self.flush_channel(channel).await?;
        }
        Ok(())
    }

    pub(super) async fn flush_channel(&mut self, channel: usize) -> Result<(), OperatorError> {
        let (buf, rows) = &mut self.pending[channel];
        if buf.is_empty() {
            return Ok(());
        }
        let batch = if buf.len() == 1 {
            buf.pop().expect("one batch")
        } else {
            let b = concat_batches(&buf[0].schema(), buf.iter())?;
            buf.clear();
            b
        };
        *rows = 0;
        self.channels[channel].send(StreamElement::Batch(batch)).await
    }

    pub(super) async fn flush(&mut self) -> Result<(), OperatorError> {
        for c in 0..self.channels.len() {
            self.flush_channel(c).await?;
        }
        Ok(())
    }

    pub(super) async fn send_batch(&mut self, batch: RecordBatch, opts: &TaskOptions) -> Result<(), OperatorError> {
        let n = self.channels.len();
        match &mut self.partitioner {
            Partitioner::Single => self.push(0, batch, opts).await,
            Partitioner::Rebalance { next } => {
                let c = *next;
                *next = (c + 1) % n;
                self.push(c, batch, opts).await
            }
            Partitioner::Broadcast => {
                for c in 0..n {
                    self.push(c, batch.clone(), opts).await?;
                }
                Ok(())
            }
            Partitioner::Hash { key, max_parallelism } => {
                let cols: Vec<_> = key.iter().map(|&k| batch.column(k).clone()).collect();
                hash_rows(&cols, &mut self.hashes)?;
                for p in &mut self.picks {
                    p.clear();
                }
                let (m, p) = (*max_parallelism, n as u32);
                for (r, &h) in self.hashes.iter().enumerate() {
                    self.picks[subtask_for_key_group(key_group(h, m), m, p) as usize].push(r as u32);
                }
                for c in 0..n {
                    let picked = self.picks[c].len();
                    if picked == 0 {
                        continue;
                    }
                    let part = if picked == batch.num_rows() {
                        batch.clone()
                    } else {
                        take_record_batch(&batch, &UInt32Array::from(std::mem::take(&mut self.picks[c])))?
                    };
                    self.push(c, part, opts).await?;
                }
                Ok(())
            }
        }
    }

    pub(super) async fn send_control(&mut self, element: StreamElement) -> Result<(), OperatorError> {
        self.flush().await?;
        for ch in &self.channels {
            ch.send(element.clone()).await?;
        }
        Ok(())
    }
}
