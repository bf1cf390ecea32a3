//! A keyed process function with state and an event-time timer, written
//! against the public API, runs on a local cluster, is stopped with a
//! savepoint, and resumes from it: counts continue where they stopped, the
//! timer registered before the savepoint fires after it, and a state whose
//! type changed incompatibly is refused naming the state and both types.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir::prelude::*;
use weir::LocalCluster;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bid {
    auction: i64,
    bidder: i64,
    price: i64,
    event_time_ms: i64,
    channel: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Count {
    key: i64,
    count: i64,
    fired: bool,
}

/// How far after a key's first record its timer fires, in event time.
const TIMER_DELAY_MS: i64 = 60_000;

/// Counts records per key; a key's first record sets a timer that reports
/// the count when it fires.
#[derive(Clone, Default)]
struct Counter {
    count: Option<ValueState<i64>>,
}

impl KeyedProcessFunction for Counter {
    type Key = i64;
    type In = Bid;
    type Out = Count;

    fn open(&mut self, states: &mut States) {
        self.count = Some(states.value("count"));
    }

    fn process_element(&mut self, bid: Bid, ctx: &mut Context<'_, i64, Count>) -> weir::Result {
        let state = self.count.as_ref().expect("opened");
        let n = state.value(ctx)?.unwrap_or(0) + 1;
        state.update(ctx, &n)?;
        if n == 1 {
            ctx.register_event_time_timer(bid.event_time_ms + TIMER_DELAY_MS);
        }
        let key = *ctx.key();
        ctx.collect(Count { key, count: n, fired: false });
        Ok(())
    }

    fn on_timer(&mut self, _time: i64, _domain: TimeDomain, ctx: &mut Context<'_, i64, Count>) -> weir::Result {
        let n = self.count.as_ref().expect("opened").value(ctx)?.unwrap_or(0);
        let key = *ctx.key();
        ctx.collect(Count { key, count: n, fired: true });
        Ok(())
    }
}

/// The same operator, its state now text: not readable from counts.
#[derive(Clone, Default)]
struct TextCounter {
    count: Option<ValueState<String>>,
}

impl KeyedProcessFunction for TextCounter {
    type Key = i64;
    type In = Bid;
    type Out = Count;

    fn open(&mut self, states: &mut States) {
        self.count = Some(states.value("count"));
    }

    fn process_element(&mut self, _bid: Bid, _ctx: &mut Context<'_, i64, Count>) -> weir::Result {
        Ok(())
    }
}

fn job<F: KeyedProcessFunction<Key = i64, In = Bid, Out = Count>>(
    source: Source,
    f: F,
    out: &Path,
) -> StreamEnvironment {
    let env = StreamEnvironment::new("counter");
    env.set_parallelism(2);
    env.enable_checkpointing(CheckpointConfig::every(Duration::from_millis(200)));
    env.source::<Bid>("bids", source)
        .assign_timestamps_and_watermarks("times", WatermarkStrategy::monotonous(|b: &Bid| b.event_time_ms))
        .key_by(|b: &Bid| b.auction % 4)
        .process("count-by-key", f)
        .sink("out", Sink::jsonl_file(out));
    env
}

/// Every row the sink committed.
fn rows(dir: &Path) -> Vec<Count> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
    }
    out
}

/// Per key, the counts it reported (not the timers'), sorted.
fn counts(rows: &[Count]) -> BTreeMap<i64, Vec<i64>> {
    let mut by_key: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for r in rows.iter().filter(|r| !r.fired) {
        by_key.entry(r.key).or_default().push(r.count);
    }
    by_key.values_mut().for_each(|v| v.sort_unstable());
    by_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyed_state_and_timers_survive_a_savepoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let savepoints = dir.path().join("savepoints");
    const EVENTS: u64 = 200_000;

    // Run 1: a slow unbounded generator, stopped with a savepoint after a checkpoint.
    let first = job(Source::datagen(None, Some(4000.0)), Counter::default(), &out);
    let registry = Arc::new(first.registry());
    let cluster = LocalCluster::start(4, registry).await.unwrap();
    let id = cluster.submit(&first.graph().unwrap(), None).await.unwrap();
    cluster.wait_until(&id, Duration::from_secs(60), |s| s.completed_checkpoints >= 2).await.unwrap();
    let savepoint = cluster.savepoint(&id, Some(&format!("file://{}", savepoints.display())), true).await.unwrap();
    let before = rows(&out);
    assert!(before.iter().all(|r| !r.fired), "a timer fired before the savepoint: the test needs a longer delay");
    let stopped = counts(&before);
    assert_eq!(stopped.len(), 4, "every key has state before the savepoint");
    for (k, c) in &stopped {
        assert_eq!(c, &(1..=c.len() as i64).collect::<Vec<_>>(), "key {k} counted without gaps");
    }

    // A new version of the code whose state type cannot read the
    // savepoint's is refused at submission (a cluster runs one version of
    // an application's code: this one runs the new version).
    let text = job(Source::datagen(Some(EVENTS), None), TextCounter::default(), &out);
    let upgraded = LocalCluster::start(4, Arc::new(text.registry())).await.unwrap();
    let refused = format!("{:#}", upgraded.submit(&text.graph().unwrap(), Some(&savepoint)).await.unwrap_err());
    upgraded.shutdown().await.unwrap();
    for part in ["operator `count-by-key`", "state `count`", r#""t":"int""#, r#""t":"string""#] {
        assert!(refused.contains(part), "refusal names {part}: {refused}");
    }

    // Run 2: the same job, bounded, from the savepoint.
    let second = job(Source::datagen(Some(EVENTS), None), Counter::default(), &out);
    let id = cluster.submit(&second.graph().unwrap(), Some(&savepoint)).await.unwrap();
    let end = cluster.wait_for_end(&id).await.unwrap();
    assert_eq!(end.state, "FINISHED", "{}", end.failure);
    cluster.shutdown().await.unwrap();

    let all = rows(&out);
    let total = counts(&all);
    let emitted: usize = total.values().map(Vec::len).sum();
    assert_eq!(emitted as u64, EVENTS, "each generated event counted once over both runs");
    for (k, c) in &total {
        assert_eq!(c, &(1..=c.len() as i64).collect::<Vec<_>>(), "key {k} resumed its count");
    }
    // Each key's timer was set in run 1 and fired in run 2, once.
    let fired: Vec<&Count> = all.iter().filter(|r| r.fired).collect();
    assert_eq!(fired.len(), 4, "{fired:?}");
    for f in fired {
        assert!(f.count > stopped[&f.key].len() as i64, "timer of key {} fired after the restore", f.key);
    }
}
