//! Runs whole plans in one process: every subtask a task, joined by local
//! credit-based channels, exactly as a task manager wires them.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir_runtime::barrier::{CheckpointId, CheckpointMode};
use weir_runtime::builder::JobBuilder;
use weir_runtime::channel::Inbox;
use weir_runtime::graph::{channel_index, JobGraph, Partitioning, Plan};
use weir_runtime::task::{Chain, OutputEdge, Task, TaskControl, TaskCounters, TaskEvent, TaskOptions};

/// Every subtask of a plan as a task, wired with local channels.
struct Pipeline {
    plan: Plan,
    /// (vertex, subtask, control sender, events receiver, counters, handle)
    tasks: Vec<Running>,
    cancel: CancellationToken,
}

struct Running {
    vertex: u32,
    control: mpsc::UnboundedSender<TaskControl>,
    events: mpsc::UnboundedReceiver<TaskEvent>,
    counters: Arc<TaskCounters>,
    handle: tokio::task::JoinHandle<Result<(), weir_runtime::task::TaskError>>,
}

impl Pipeline {
    fn start(graph: &JobGraph, credits: usize, mode: CheckpointMode) -> Pipeline {
        let plan = Plan::new(graph, 0).unwrap();
        let mut inboxes: Vec<Vec<Option<Inbox>>> = plan
            .vertices
            .iter()
            .map(|v| {
                let has_inputs = !plan.inputs_of(v.id).is_empty();
                (0..v.parallelism)
                    .map(|_| has_inputs.then(|| Inbox::new(&plan.input_channels(v.id), credits)))
                    .collect()
            })
            .collect();
        let handles: Vec<Vec<Option<_>>> =
            inboxes.iter().map(|v| v.iter().map(|i| i.as_ref().map(|i| i.handle())).collect()).collect();
        let cancel = CancellationToken::new();
        let mut tasks = Vec::new();
        for v in &plan.vertices {
            let tail = *v.operators.last().unwrap();
            let schema = plan.output_schemas[tail].clone();
            for s in 0..v.parallelism {
                let mut outputs = Vec::new();
                for e in plan.outputs_of(v.id) {
                    let edge = &plan.graph.edges[e.edge];
                    let down = &plan.vertices[e.to as usize];
                    let targets: Vec<u32> = if edge.partitioning == Partitioning::Forward {
                        vec![s]
                    } else {
                        (0..down.parallelism).collect()
                    };
                    let chan = channel_index(edge.partitioning, s);
                    let channels = targets
                        .iter()
                        .map(|&d| {
                            handles[e.to as usize][d as usize]
                                .as_ref()
                                .unwrap()
                                .output_channel(e.input, chan, "t")
                                .unwrap()
                        })
                        .collect();
                    let key = edge.key.iter().map(|k| schema.index_of(k).unwrap()).collect();
                    outputs.push(OutputEdge::new(edge.partitioning, key, plan.graph.max_parallelism, channels));
                }
                let counters = Arc::new(TaskCounters::default());
                let (control, control_rx) = mpsc::unbounded_channel();
                let (events_tx, events) = mpsc::unbounded_channel();
                let task = Task {
                    chain: Chain::new(&plan, v.id, s).unwrap(),
                    inbox: inboxes[v.id as usize][s as usize].take(),
                    outputs,
                    options: TaskOptions { checkpoint_mode: mode, ..TaskOptions::default() },
                    counters: counters.clone(),
                    control: Some(control_rx),
                    events: Some(events_tx),
                };
                let handle = tokio::spawn(task.run(cancel.clone()));
                tasks.push(Running { vertex: v.id, control, events, counters, handle });
            }
        }
        Pipeline { plan, tasks, cancel }
    }

    /// Waits for every task to end; returns the rows written by sinks.
    async fn finish(self) -> u64 {
        let mut total = 0;
        for t in self.tasks {
            t.handle.await.unwrap().unwrap();
            total += t.counters.sink_records.load(Ordering::Relaxed);
        }
        total
    }

    fn is_source(&self, vertex: u32) -> bool {
        self.plan.inputs_of(vertex).is_empty()
    }

    /// Triggers checkpoint `id` at the sources one after the other — each
    /// only once the previous one has produced more rows after its barrier, so
    /// that data overtakes barriers unless alignment holds it back — and waits
    /// until every task took it; returns each task's `records_in` at the checkpoint.
    async fn checkpoint(&mut self, id: u64) -> Vec<(u32, u64)> {
        let id = CheckpointId(id);
        let deadline = std::time::Duration::from_secs(30);
        let mut taken = vec![None; self.tasks.len()];
        let sources: Vec<usize> = (0..self.tasks.len()).filter(|&i| self.is_source(self.tasks[i].vertex)).collect();
        for &i in &sources {
            self.tasks[i].control.send(TaskControl::TriggerCheckpoint(id)).unwrap();
            let at = Self::taken(&mut self.tasks[i], id, deadline).await;
            taken[i] = Some(at);
            let counters = self.tasks[i].counters.clone();
            tokio::time::timeout(deadline, async {
                while counters.records_in.load(Ordering::Relaxed) <= at {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("the source goes on after its barrier");
        }
        for (i, t) in self.tasks.iter_mut().enumerate() {
            if taken[i].is_none() {
                taken[i] = Some(Self::taken(t, id, deadline).await);
            }
        }
        self.tasks.iter().zip(taken).map(|(t, r)| (t.vertex, r.unwrap())).collect()
    }

    /// Waits for task `t` to report checkpoint `id`; returns its `records_in` then.
    async fn taken(t: &mut Running, id: CheckpointId, deadline: std::time::Duration) -> u64 {
        match tokio::time::timeout(deadline, t.events.recv()).await.expect("checkpoint in time").unwrap() {
            TaskEvent::CheckpointTaken { id: got, records_in } if got == id => records_in,
            other => panic!("unexpected {other:?} while waiting for checkpoint {id}"),
        }
    }
}

/// Runs `graph` to completion; returns the rows written by sinks.
async fn run(graph: &JobGraph, credits: usize) -> u64 {
    Pipeline::start(graph, credits, CheckpointMode::ExactlyOnce).finish().await
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

/// Checkpoints taken while W2 runs: with aligned barriers, the rows the
/// window subtasks had received at checkpoint n are exactly the rows the
/// sources had produced before barrier n; without alignment, at least those.
async fn barriers_cut_the_stream_consistently(mode: CheckpointMode) {
    let mut g = w2(0, 2);
    g.operators[0].config = json!({"rate": 200_000, "batch_size": 500});
    g.operators[2].parallelism = 3;
    g.operators[3].parallelism = 3;
    let mut p = Pipeline::start(&g, 2, mode);
    for n in 1..=3 {
        let taken = p.checkpoint(n).await;
        let produced: u64 = taken.iter().filter(|(v, _)| p.is_source(*v)).map(|(_, r)| r).sum();
        let received: u64 = taken.iter().filter(|(v, _)| !p.is_source(*v)).map(|(_, r)| r).sum();
        assert!(produced > 0, "checkpoint {n}: sources produced nothing");
        match mode {
            CheckpointMode::ExactlyOnce => assert_eq!(received, produced, "checkpoint {n}"),
            CheckpointMode::AtLeastOnce => assert!(received >= produced, "checkpoint {n}: {received} < {produced}"),
        }
    }
    p.cancel.cancel();
    for t in p.tasks {
        assert!(matches!(t.handle.await.unwrap(), Err(weir_runtime::task::TaskError::Canceled)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aligned_barriers_cut_the_stream_exactly() {
    barriers_cut_the_stream_consistently(CheckpointMode::ExactlyOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unaligned_barriers_cut_the_stream_at_least_once() {
    barriers_cut_the_stream_consistently(CheckpointMode::AtLeastOnce).await;
}
