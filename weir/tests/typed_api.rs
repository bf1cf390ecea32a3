//! The typed API end to end on a local cluster, against results computed
//! here from the generator's formulas: `filter`, `map`, `flat_map`, event
//! time, `key_by` and a tumbling window with an aggregate function; and two
//! connected inputs meeting in a keyed co-process function with value and
//! list state and a side output.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
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

/// A bid after `map`: a field renamed, a price doubled, an optional field.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Priced {
    auction: i64,
    cents: i64,
    event_time_ms: i64,
    apple: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Total {
    count: i64,
    sum: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row {
    auction: i64,
    start: i64,
    count: i64,
    sum: i64,
}

struct Sum;

impl AggregateFunction for Sum {
    type In = Priced;
    type Acc = Total;
    type Out = Total;

    fn create_accumulator(&self) -> Total {
        Total::default()
    }
    fn add(&self, p: &Priced, acc: &mut Total) {
        acc.count += 1;
        acc.sum += p.cents;
    }
    fn get_result(&self, acc: &Total) -> Total {
        *acc
    }
    fn merge(&self, acc: &mut Total, other: Total) {
        acc.count += other.count;
        acc.sum += other.sum;
    }
}

/// Every row the jsonl files of `dir` hold.
fn rows<T: DeserializeOwned>(dir: &Path) -> Vec<T> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                out.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")));
            }
        }
    }
    out
}

async fn run_to_end(env: &StreamEnvironment) {
    let cluster = LocalCluster::start(4, Arc::new(env.registry())).await.unwrap();
    let id = cluster.submit(&env.graph().unwrap(), None).await.unwrap();
    let end = cluster.wait_for_end(&id).await.unwrap();
    assert_eq!(end.state, "FINISHED", "{}", end.failure);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stateless_functions_and_a_tumbling_window_compute_what_the_formulas_say() {
    const EVENTS: i64 = 300_000;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();

    let env = StreamEnvironment::new("windows");
    env.set_parallelism(2);
    env.source::<Bid>("bids", Source::datagen(Some(EVENTS as u64), None))
        .filter("even", |b: &Bid| b.auction % 2 == 0)
        .map("priced", |b: Bid| Priced {
            auction: b.auction,
            cents: b.price * 2,
            event_time_ms: b.event_time_ms,
            apple: (b.channel == "apple").then_some(b.channel),
        })
        // Apple's bids count twice.
        .flat_map("twice", |p: Priced| if p.apple.is_some() { vec![p.clone(), p] } else { vec![p] })
        .assign_timestamps_and_watermarks("times", WatermarkStrategy::monotonous(|p: &Priced| p.event_time_ms))
        .key_by(|p: &Priced| p.auction)
        .window(EventTimeWindows::tumbling(std::time::Duration::from_secs(10)))
        .aggregate("sum", Sum)
        .map("flat", |w: Windowed<i64, Total>| Row {
            auction: w.key,
            start: w.window_start,
            count: w.value.count,
            sum: w.value.sum,
        })
        .sink("out", Sink::jsonl_file(&out));
    run_to_end(&env).await;

    // The generator's formulas (bench/flink's specification), through the same steps.
    let mut want: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for i in 0..EVENTS {
        let auction = (i * 7919) % 10_000;
        if auction % 2 != 0 {
            continue;
        }
        let price = 100 + (i * 31) % 10_000;
        let t = 1_700_000_000_000 + i / 10;
        let times = if i % 4 == 0 { 2 } else { 1 };
        let e = want.entry((auction, t - t % 10_000)).or_default();
        e.0 += times;
        e.1 += times * price * 2;
    }
    let got: Vec<Row> = rows(&out);
    let mut by_window: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for r in &got {
        assert!(by_window.insert((r.auction, r.start), (r.count, r.sum)).is_none(), "{r:?} fired twice");
    }
    assert_eq!(by_window.len(), want.len());
    assert_eq!(by_window, want);
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Name {
    id: i64,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Order {
    id: i64,
    order: i64,
    amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Named {
    name: String,
    order: i64,
    amount: i64,
}

/// Orders meet their customer's name whichever arrives first; big orders
/// also go to a side output.
#[derive(Clone)]
struct Enrich {
    big: OutputTag<Order>,
    name: Option<ValueState<String>>,
    waiting: Option<ListState<Order>>,
}

impl KeyedCoProcessFunction for Enrich {
    type Key = i64;
    type In1 = Name;
    type In2 = Order;
    type Out = Named;

    fn open(&mut self, states: &mut States) {
        self.name = Some(states.value("name"));
        self.waiting = Some(states.list("waiting"));
    }

    fn process_element1(&mut self, n: Name, ctx: &mut Context<'_, i64, Named>) -> weir::Result {
        let (name, waiting) = (self.name.as_ref().unwrap(), self.waiting.as_ref().unwrap());
        name.update(ctx, &n.name)?;
        for o in waiting.get(ctx)? {
            ctx.collect(Named { name: n.name.clone(), order: o.order, amount: o.amount });
        }
        waiting.clear(ctx);
        Ok(())
    }

    fn process_element2(&mut self, o: Order, ctx: &mut Context<'_, i64, Named>) -> weir::Result {
        if o.amount >= 900 {
            ctx.output(&self.big, o.clone());
        }
        match self.name.as_ref().unwrap().value(ctx)? {
            Some(name) => ctx.collect(Named { name, order: o.order, amount: o.amount }),
            None => self.waiting.as_ref().unwrap().add(ctx, o)?,
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connected_inputs_share_keyed_state_and_feed_a_side_output() {
    let dir = tempfile::tempdir().unwrap();
    let (out, big) = (dir.path().join("out"), dir.path().join("big"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&big).unwrap();
    let names: Vec<Name> = (0..50).map(|id| Name { id, name: format!("customer-{id}") }).collect();
    let orders: Vec<Order> =
        (0..2000).map(|order| Order { id: order % 50, order, amount: (order * 37) % 1000 }).collect();

    let env = StreamEnvironment::new("enrich");
    env.set_parallelism(2);
    let tag = OutputTag::<Order>::new("big");
    let named = env
        .from_values("names", names)
        .connect(&env.from_values("orders", orders.clone()))
        .key_by(|n: &Name| n.id, |o: &Order| o.id)
        .process("enrich", Enrich { big: tag.clone(), name: None, waiting: None });
    named.sink("out", Sink::jsonl_file(&out));
    named.side_output(&tag).sink("big", Sink::jsonl_file(&big));
    run_to_end(&env).await;

    let mut got: Vec<Named> = rows(&out);
    got.sort();
    let mut want: Vec<Named> =
        orders.iter().map(|o| Named { name: format!("customer-{}", o.id), order: o.order, amount: o.amount }).collect();
    want.sort();
    assert_eq!(got, want, "every order once, with its customer's name");
    let mut got_big: Vec<Order> = rows(&big);
    got_big.sort();
    let mut want_big: Vec<Order> = orders.into_iter().filter(|o| o.amount >= 900).collect();
    want_big.sort();
    assert!(!want_big.is_empty());
    assert_eq!(got_big, want_big);
}
