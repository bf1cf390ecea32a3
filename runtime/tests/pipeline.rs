//! Runs whole plans in one process: every subtask a task, joined by local
//! credit-based channels, exactly as a task manager wires them.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use weir_runtime::builder::JobBuilder;
use weir_runtime::channel::Inbox;
use weir_runtime::graph::{channel_index, JobGraph, Partitioning, Plan};
use weir_runtime::task::{Chain, OutputEdge, Task, TaskCounters, TaskOptions};

/// Runs `graph` to completion; returns the rows written by sinks.
async fn run(graph: &JobGraph, credits: usize) -> u64 {
    let plan = Plan::new(graph, 0).unwrap();
    // Inboxes first, so outputs can be wired to them.
    let mut inboxes = Vec::new();
    for v in &plan.vertices {
        let inputs = plan.inputs_of(v.id);
        let mut per_subtask = Vec::new();
        for _ in 0..v.parallelism {
            per_subtask.push((!inputs.is_empty()).then(|| Inbox::new(&plan.input_channels(v.id), credits)));
        }
        inboxes.push(per_subtask);
    }
    let mut handles = Vec::new();
    let mut counters = Vec::new();
    for v in &plan.vertices {
        let tail = *v.operators.last().unwrap();
        let schema = plan.output_schemas[tail].clone();
        for s in 0..v.parallelism {
            let mut outputs = Vec::new();
            for e in plan.outputs_of(v.id) {
                let edge = &plan.graph.edges[e.edge];
                let down = &plan.vertices[e.to as usize];
                let targets: Vec<u32> =
                    if edge.partitioning == Partitioning::Forward { vec![s] } else { (0..down.parallelism).collect() };
                let chan = channel_index(edge.partitioning, s);
                let channels = targets
                    .iter()
                    .map(|&d| {
                        inboxes[e.to as usize][d as usize]
                            .as_ref()
                            .unwrap()
                            .handle()
                            .output_channel(e.input, chan, "t")
                            .unwrap()
                    })
                    .collect();
                let key = edge.key.iter().map(|k| schema.index_of(k).unwrap()).collect();
                outputs.push(OutputEdge::new(edge.partitioning, key, plan.graph.max_parallelism, channels));
            }
            let c = Arc::new(TaskCounters::default());
            counters.push(c.clone());
            let task = Task {
                chain: Chain::new(&plan, v.id, s).unwrap(),
                inbox: inboxes[v.id as usize][s as usize].take(),
                outputs,
                options: TaskOptions::default(),
                counters: c,
            };
            handles.push(tokio::spawn(task.run(CancellationToken::new())));
        }
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    counters.iter().map(|c| c.sink_records.load(Ordering::Relaxed)).sum()
}

fn w2(events: u64, p: u32) -> JobGraph {
    let mut b = JobBuilder::new("w2");
    b.default_parallelism(p);
    b.operator("gen", "datagen", json!({"events": events, "batch_size": 1000}));
    b.operator("ts", "watermark", json!({"timestamp_column": "event_time_ms", "interval": "1ms"}));
    b.operator(
        "win",
        "window",
        json!({"key": ["auction"], "timestamp_column": "event_time_ms", "window": {"type": "tumbling", "size": "10s"},
               "aggregates": [{"fn": "count", "as": "count"}, {"fn": "sum", "column": "price", "as": "sum"}]}),
    );
    b.operator("sink", "discard", json!({}));
    b.forward("gen", "ts").hash("ts", "win", &["auction"]).forward("win", "sink");
    b.build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w2_gives_the_specified_count_at_any_parallelism_and_tiny_credits() {
    for (n, p) in [(250_000u64, 1u32), (250_000, 3), (123_456, 4)] {
        let expected = (n / 100_000) * 10_000 + (n % 100_000).min(10_000);
        assert_eq!(run(&w2(n, p), 1).await, expected, "n={n} p={p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w1_keeps_every_even_auction() {
    let mut b = JobBuilder::new("w1");
    b.default_parallelism(3);
    b.operator("gen", "datagen", json!({"events": 100_001}));
    b.operator("price", "map", json!({"columns": [{"name": "price", "expr": "price * 908 / 1000"}]}));
    b.operator("even", "filter", json!({"predicate": "auction % 2 = 0"}));
    b.operator("sink", "discard", json!({}));
    b.forward("gen", "price").forward("price", "even").forward("even", "sink");
    assert_eq!(run(&b.build(), 8).await, 50_001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_and_broadcast_deliver_every_row_the_right_number_of_times() {
    let mut b = JobBuilder::new("fanout");
    b.operator("gen", "datagen", json!({"events": 10_000, "batch_size": 100})).parallelism(2);
    b.operator("spread", "filter", json!({"predicate": "true"})).parallelism(3);
    b.operator("sink", "discard", json!({})).parallelism(3);
    b.operator("copies", "discard", json!({})).parallelism(2);
    b.rebalance("gen", "spread").forward("spread", "sink");
    let mut g = b.build();
    // A second output of `gen`, broadcast to both subtasks of `copies`.
    g.edges.push(weir_runtime::graph::EdgeSpec {
        from: "gen".into(),
        to: "copies".into(),
        partitioning: Partitioning::Broadcast,
        key: vec![],
        input: 0,
        line: 0,
    });
    assert_eq!(run(&g, 2).await, 10_000 + 2 * 10_000);
}
