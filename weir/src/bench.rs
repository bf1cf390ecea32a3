//! W2 of the Flink baseline written against the typed API (`weir bench
//! w2-typed`): the same job as `jobs/w2-tumble.yaml`, its timestamps, keys
//! and aggregate in Rust functions over a serde type.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{AggregateFunction, EventTimeWindows, Sink, Source, StreamEnvironment, WatermarkStrategy};

/// A bid as the generator makes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bid {
    auction: i64,
    bidder: i64,
    price: i64,
    event_time_ms: i64,
    channel: String,
}

/// Count and sum of prices.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct CountSum {
    count: i64,
    sum: i64,
}

struct CountAndSum;

impl AggregateFunction for CountAndSum {
    type In = Bid;
    type Acc = CountSum;
    type Out = CountSum;

    fn create_accumulator(&self) -> CountSum {
        CountSum::default()
    }
    fn add(&self, bid: &Bid, acc: &mut CountSum) {
        acc.count += 1;
        acc.sum += bid.price;
    }
    fn get_result(&self, acc: &CountSum) -> CountSum {
        *acc
    }
    fn merge(&self, acc: &mut CountSum, other: CountSum) {
        acc.count += other.count;
        acc.sum += other.sum;
    }
}

/// Builds typed W2 for `events` events at `parallelism`.
pub(crate) fn w2_typed(env: &StreamEnvironment, events: u64, parallelism: u32) -> anyhow::Result<()> {
    env.set_parallelism(parallelism);
    env.source::<Bid>("gen", Source::datagen(Some(events), None))
        .assign_timestamps_and_watermarks(
            "timestamps",
            WatermarkStrategy::monotonous(|b: &Bid| b.event_time_ms).with_interval(Duration::from_millis(200)),
        )
        .key_by(|b: &Bid| b.auction)
        .window(EventTimeWindows::tumbling(Duration::from_secs(10)))
        .aggregate("tumble", CountAndSum)
        .sink("sink", Sink::discard());
    Ok(())
}

/// The results W2 produces from `n` events (one per auction and window).
pub(crate) fn w2_expected(n: u64) -> u64 {
    (n / 100_000) * 10_000 + (n % 100_000).min(10_000)
}
