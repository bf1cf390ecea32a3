//! `datagen`: the benchmark generator of the Flink baseline, bit for bit.
//!
//! Event `i` has `auction = (i * 7919) % 10000`, `bidder = (i * 104729) % 100000`,
//! `price = 100 + (i * 31) % 10000`, `event_time_ms = 1700000000000 + i / 10`
//! and `channel = ["apple", "google", "facebook", "baidu"][i % 4]`. Subtask `k`
//! of `P` emits `i = k, k+P, k+2P, ...` in increasing order, below `events`
//! when bounded. With `rate` set, the whole operator emits at most that many
//! events per second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;

use super::{Arity, Collector, Instance, OperatorFactory, PlanContext, SourceOperator, SourceStatus, SubtaskInfo};
use crate::error::{OpResult, OperatorError, PlanError};
use crate::state::{StateCodec, StateReader, StateWriter};

/// Event time of event 0.
pub const BASE_TIME_MS: i64 = 1_700_000_000_000;
const CHANNELS: [&str; 4] = ["apple", "google", "facebook", "baidu"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Number of events in total; absent for an unbounded stream.
    #[serde(default)]
    events: Option<u64>,
    /// Events per second over all subtasks; absent for as fast as possible.
    #[serde(default)]
    rate: Option<f64>,
    /// Rows per batch.
    #[serde(default = "default_batch_size")]
    batch_size: usize,
}

fn default_batch_size() -> usize {
    8192
}

/// The generator's output schema.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("bidder", DataType::Int64, false),
        Field::new("price", DataType::Int64, false),
        Field::new("event_time_ms", DataType::Int64, false),
        Field::new("channel", DataType::Utf8, false),
    ]))
}

/// Factory of `datagen`.
#[derive(Debug)]
pub struct DatagenFactory;

impl OperatorFactory for DatagenFactory {
    fn kind(&self) -> &str {
        "datagen"
    }

    fn arity(&self) -> Arity {
        Arity::Source
    }

    fn state_types(&self, _ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        vec![("position".into(), "next event number of the subtask: i64".into())]
    }

    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        let c: Config = ctx.config()?;
        if c.batch_size == 0 || c.batch_size > 1 << 20 {
            return Err(ctx.error("batch_size must be between 1 and 1048576").field("config.batch_size"));
        }
        if let Some(r) = c.rate {
            if !(r.is_finite() && r > 0.0) {
                return Err(ctx.error("rate must be a positive number of events per second").field("config.rate"));
            }
        }
        if let Some(n) = c.events {
            if n > i64::MAX as u64 / 104_729 {
                return Err(ctx.error("events is too large for 64-bit generator arithmetic").field("config.events"));
            }
        }
        Ok(schema())
    }

    fn create(&self, ctx: &PlanContext<'_>, subtask: SubtaskInfo) -> Result<Instance, PlanError> {
        let c: Config = ctx.config()?;
        let end = c.events.map(|n| n as i64).unwrap_or(i64::MAX / 104_729);
        Ok(Instance::Source(Box::new(Datagen::new(
            subtask.index as i64,
            subtask.parallelism as i64,
            end,
            c.batch_size,
            c.rate.map(|r| r / f64::from(subtask.parallelism)),
        ))))
    }
}

/// One subtask of the generator.
pub struct Datagen {
    first: i64,
    next: i64,
    stride: i64,
    end: i64,
    batch_size: usize,
    schema: SchemaRef,
    /// Channel columns of a full batch, by `first i % 4`: the column only
    /// depends on that, so full batches share one of four arrays.
    channel_cache: [Option<ArrayRef>; 4],
    rate: Option<Pacer>,
}

struct Pacer {
    per_second: f64,
    started: Instant,
    emitted: u64,
}

impl Datagen {
    /// Subtask emitting `i = first, first + stride, ... < end`.
    pub fn new(first: i64, stride: i64, end: i64, batch_size: usize, rate_per_subtask: Option<f64>) -> Self {
        let batch_size = match rate_per_subtask {
            // At low rates, small batches keep latency low (about 100 per second).
            Some(r) => batch_size.min(((r / 100.0) as usize).max(1)),
            None => batch_size,
        };
        Self {
            first,
            next: first,
            stride,
            end,
            batch_size,
            schema: schema(),
            channel_cache: Default::default(),
            rate: rate_per_subtask.map(|per_second| Pacer { per_second, started: Instant::now(), emitted: 0 }),
        }
    }

    /// Position of the generator: the next `i` it will emit.
    pub fn position(&self) -> i64 {
        self.next
    }

    fn channel_column(&mut self, first: i64, n: usize) -> ArrayRef {
        let build = |first: i64, stride: i64, n: usize| -> ArrayRef {
            let values: Vec<&str> = (0..n as i64).map(|j| CHANNELS[((first + j * stride) % 4) as usize]).collect();
            Arc::new(StringArray::from(values))
        };
        if n != self.batch_size {
            return build(first, self.stride, n);
        }
        let slot = (first % 4) as usize;
        let stride = self.stride;
        self.channel_cache[slot].get_or_insert_with(|| build(first, stride, n)).clone()
    }
}

impl SourceOperator for Datagen {
    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        w.put_subtask("position", Vec::new(), self.next.to_be_bytes().to_vec());
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        if let Some(e) = r.state("position").next() {
            let pos = i64::decode(e.value.as_deref().unwrap_or_default())?;
            if pos < self.first || (pos - self.first) % self.stride != 0 {
                return Err(OperatorError::State(format!(
                    "the checkpointed position {pos} does not belong to subtask {} of {}: the generator cannot change parallelism",
                    self.first, self.stride
                )));
            }
            self.next = pos;
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut Collector) -> OpResult<SourceStatus> {
        if self.next >= self.end {
            return Ok(SourceStatus::Finished);
        }
        if let Some(p) = &self.rate {
            let allowed = p.started.elapsed().as_secs_f64() * p.per_second;
            if (p.emitted as f64) >= allowed {
                let wait =
                    (p.emitted as f64 + self.batch_size as f64) / p.per_second - p.started.elapsed().as_secs_f64();
                return Ok(SourceStatus::Wait(Duration::from_secs_f64(wait.clamp(0.0005, 1.0))));
            }
        }
        let remaining = (self.end - self.next + self.stride - 1) / self.stride;
        let n = (self.batch_size as i64).min(remaining) as usize;
        let first = self.next;
        let (mut auction, mut bidder, mut price, mut time) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let mut i = first;
        for _ in 0..n {
            auction.push((i * 7919) % 10_000);
            bidder.push((i * 104_729) % 100_000);
            price.push(100 + (i * 31) % 10_000);
            time.push(BASE_TIME_MS + i / 10);
            i += self.stride;
        }
        self.next = i;
        let channel = self.channel_column(first, n);
        let batch = RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(Int64Array::from(auction)),
                Arc::new(Int64Array::from(bidder)),
                Arc::new(Int64Array::from(price)),
                Arc::new(Int64Array::from(time)),
                channel,
            ],
        )?;
        if let Some(p) = &mut self.rate {
            p.emitted += n as u64;
        }
        out.emit(batch);
        Ok(SourceStatus::Emitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::StreamElement;
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;

    fn drain(mut g: Datagen) -> Vec<RecordBatch> {
        let mut out = Collector::default();
        while g.poll(&mut out).unwrap() == SourceStatus::Emitted {}
        out.drain()
            .map(|e| match e {
                StreamElement::Batch(b) => b,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn matches_the_specification() {
        let batches = drain(Datagen::new(1, 3, 20, 4, None));
        let b = arrow::compute::concat_batches(&schema(), &batches).unwrap();
        let col = |i: usize| b.column(i).as_primitive::<Int64Type>().values().to_vec();
        let is: Vec<i64> = (1..20).step_by(3).collect();
        assert_eq!(col(0), is.iter().map(|i| (i * 7919) % 10000).collect::<Vec<_>>());
        assert_eq!(col(1), is.iter().map(|i| (i * 104729) % 100000).collect::<Vec<_>>());
        assert_eq!(col(2), is.iter().map(|i| 100 + (i * 31) % 10000).collect::<Vec<_>>());
        assert_eq!(col(3), is.iter().map(|i| BASE_TIME_MS + i / 10).collect::<Vec<_>>());
        let channels: Vec<&str> = b.column(4).as_string::<i32>().iter().map(|s| s.unwrap()).collect();
        assert_eq!(channels, is.iter().map(|i| CHANNELS[(i % 4) as usize]).collect::<Vec<_>>());
    }

    #[test]
    fn cached_channel_columns_match_direct_ones() {
        // Stride 3 over full batches of 5 cycles through every `first % 4`.
        let batches = drain(Datagen::new(0, 3, 3 * 5 * 9, 5, None));
        let mut i = 0i64;
        for b in &batches {
            for s in b.column(4).as_string::<i32>().iter() {
                assert_eq!(s.unwrap(), CHANNELS[(i % 4) as usize]);
                i += 3;
            }
        }
        assert_eq!(i, 3 * 5 * 9);
    }

    #[test]
    fn parallel_instances_cover_every_event_once() {
        let total: usize = (0..3).flat_map(|k| drain(Datagen::new(k, 3, 1000, 64, None))).map(|b| b.num_rows()).sum();
        assert_eq!(total, 1000);
    }
}
