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
use weir_runtime::graph::{channel_index, JobGraph, Partitioning};
use weir_runtime::operators::Registry;
use weir_runtime::plan::Plan;
use weir_runtime::state::StateEntry;
use weir_runtime::task::{
    Chain, Checkpointer, OutputEdge, SnapshotTiming, Task, TaskControl, TaskCounters, TaskEvent, TaskOptions,
};

type Entries = std::collections::BTreeMap<(String, String, u32, Vec<u8>), Vec<u8>>;

/// Keeps every task's state per checkpoint in memory, applying incremental
/// snapshots on top of the previous checkpoint the way RocksDB does.
#[derive(Debug, Default)]
struct MemStore {
    full: bool,
    state: std::sync::Mutex<std::collections::HashMap<(u32, u32), std::collections::BTreeMap<u64, Entries>>>,
}

impl MemStore {
    fn entries(&self, vertex: u32, subtask: u32, id: u64) -> Vec<StateEntry> {
        let g = self.state.lock().unwrap();
        let Some(e) = g.get(&(vertex, subtask)).and_then(|m| m.get(&id)) else { return vec![] };
        e.iter()
            .map(|((operator, state, key_group, key), v)| StateEntry {
                operator: operator.clone(),
                state: state.clone(),
                key_group: *key_group,
                key: key.clone(),
                value: Some(v.clone()),
                delete_to: None,
            })
            .collect()
    }
}

#[derive(Debug)]
struct MemCheckpointer {
    store: Arc<MemStore>,
    task: (u32, u32),
}

impl Checkpointer for MemCheckpointer {
    fn full_snapshots(&self) -> bool {
        self.store.full
    }
    fn checkpoint(&mut self, id: CheckpointId, entries: Vec<StateEntry>, _: SnapshotTiming) -> Result<(), String> {
        let mut g = self.store.state.lock().unwrap();
        let per = g.entry(self.task).or_default();
        let mut state = if self.store.full { Entries::new() } else { per.values().last().cloned().unwrap_or_default() };
        for e in entries {
            let k = (e.operator, e.state, e.key_group, e.key);
            match e.value {
                Some(v) => state.insert(k, v),
                None => state.remove(&k),
            };
        }
        per.insert(id.0, state);
        Ok(())
    }
}

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
        Self::start_with(graph, &Registry::builtins(), credits, mode, None, None)
    }

    /// Starts with state kept in `store`, restored from checkpoint `restore`.
    fn start_with(
        graph: &JobGraph,
        registry: &Registry,
        credits: usize,
        mode: CheckpointMode,
        store: Option<Arc<MemStore>>,
        restore: Option<u64>,
    ) -> Pipeline {
        let plan = Plan::new(graph, registry, 0).unwrap();
        let mut inboxes: Vec<Vec<Option<Inbox>>> = plan
            .vertices
            .iter()
            .map(|v| {
                let has_inputs = !plan.inputs_of(v.id).is_empty();
                (0..v.parallelism)
                    .map(|_| {
                        has_inputs
                            .then(|| Inbox::new(&plan.input_channels(v.id), credits).with_ports(plan.input_ports(v.id)))
                    })
                    .collect()
            })
            .collect();
        let handles: Vec<Vec<Option<_>>> =
            inboxes.iter().map(|v| v.iter().map(|i| i.as_ref().map(|i| i.handle())).collect()).collect();
        let cancel = CancellationToken::new();
        let mut tasks = Vec::new();
        for v in &plan.vertices {
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
                                .output_channel(plan.input_slot(e.edge).unwrap(), chan, "t")
                                .unwrap()
                        })
                        .collect();
                    let schema = plan.edge_schema(e.edge);
                    let key = edge.key.iter().map(|k| schema.index_of(k).unwrap()).collect();
                    outputs.push(
                        OutputEdge::new(edge.partitioning, key, plan.graph.max_parallelism, channels)
                            .from_port(plan.edge_ports[e.edge]),
                    );
                }
                let counters = Arc::new(TaskCounters::default());
                let (control, control_rx) = mpsc::unbounded_channel();
                let (events_tx, events) = mpsc::unbounded_channel();
                let mut chain = Chain::new(&plan, v.id, s).unwrap();
                if let (Some(store), Some(id)) = (&store, restore) {
                    chain.restore(&store.entries(v.id, s, id)).unwrap();
                }
                let checkpointer = store
                    .clone()
                    .map(|store| Box::new(MemCheckpointer { store, task: (v.id, s) }) as Box<dyn Checkpointer>);
                let task = Task {
                    chain,
                    inbox: inboxes[v.id as usize][s as usize].take(),
                    outputs,
                    options: TaskOptions { checkpoint_mode: mode, ..TaskOptions::default() },
                    counters: counters.clone(),
                    control: Some(control_rx),
                    events: Some(events_tx),
                    checkpointer,
                    finished: false,
                };
                let handle = tokio::spawn(task.run(cancel.clone()));
                tasks.push(Running { vertex: v.id, control, events, counters, handle });
            }
        }
        Pipeline { plan, tasks, cancel }
    }

    /// Waits for every task to end; returns the rows written by each sink, by uid.
    async fn finish_by_sink(self) -> std::collections::BTreeMap<String, u64> {
        let mut by_sink = std::collections::BTreeMap::new();
        for t in self.tasks {
            t.handle.await.unwrap().unwrap();
            let name = self.plan.vertices[t.vertex as usize].name.clone();
            *by_sink.entry(name).or_default() += t.counters.sink_records.load(Ordering::Relaxed);
        }
        by_sink
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
        output: String::new(),
        line: 0,
    });
    assert_eq!(run(&g, 2).await, 10_000 + 2 * 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_union_of_two_sources_counts_every_row_of_both_in_one_window() {
    // Two generators (2 and 3 subtasks) into one input of a keyed window;
    // its windows close only once both inputs' event time passed them.
    let mut b = JobBuilder::new("union");
    b.operator("left", "datagen", json!({"events": 50_000, "batch_size": 500})).parallelism(2);
    b.operator("right", "datagen", json!({"events": 30_000, "batch_size": 700})).parallelism(3);
    b.operator("lts", "watermark", json!({"timestamp_column": "event_time_ms", "interval": "1ms"})).parallelism(2);
    b.operator("rts", "watermark", json!({"timestamp_column": "event_time_ms", "interval": "1ms"})).parallelism(3);
    b.operator(
        "win",
        "window",
        json!({"key": ["channel"], "timestamp_column": "event_time_ms", "window": {"type": "tumbling", "size": "1h"},
               "aggregates": [{"fn": "count", "as": "count"}]}),
    )
    .parallelism(2);
    b.operator("sum", "filter", json!({"predicate": "true"})).parallelism(2);
    b.operator("sink", "discard", json!({})).parallelism(2);
    b.forward("left", "lts").forward("right", "rts");
    b.hash("lts", "win", &["channel"]).hash("rts", "win", &["channel"]);
    b.forward("win", "sum").forward("sum", "sink");
    let g = b.build();
    let plan = Plan::new(&g, &Registry::builtins(), 0).unwrap();
    let win = plan.vertices.iter().find(|v| v.name.starts_with("win")).unwrap();
    assert_eq!(plan.input_ports(win.id), [0, 0], "both edges feed input 0");
    // One window per channel (4 channels, all events in one hour): 4 rows.
    assert_eq!(run(&g, 2).await, 4);
    // The counts add up to both inputs.
    let mut b2 = JobBuilder::new("union-rows");
    b2.operator("left", "datagen", json!({"events": 50_000, "batch_size": 500})).parallelism(2);
    b2.operator("right", "datagen", json!({"events": 30_000, "batch_size": 700})).parallelism(3);
    b2.operator("all", "filter", json!({"predicate": "true"})).parallelism(2);
    b2.operator("sink", "discard", json!({})).parallelism(2);
    b2.rebalance("left", "all").rebalance("right", "all").forward("all", "sink");
    assert_eq!(run(&b2.build(), 1).await, 80_000);
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
async fn at_least_once_barriers_cut_the_stream_with_no_record_missing() {
    barriers_cut_the_stream_consistently(CheckpointMode::AtLeastOnce).await;
}

/// Sorted lines of the committed part files in `dir`; fails on leftovers.
fn committed_lines(dir: &std::path::Path) -> Vec<String> {
    let mut lines = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".jsonl") {
            lines.extend(std::fs::read_to_string(e.path()).unwrap().lines().map(str::to_string));
        }
    }
    lines.sort();
    lines
}

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".inprogress"))
        .collect()
}

fn w2_to_files(events: u64, dir: &std::path::Path, rate: Option<u64>) -> JobGraph {
    let mut g = w2(events, 2);
    if let Some(r) = rate {
        g.operators[0].config = json!({"events": events, "rate": r, "batch_size": 500});
    }
    g.operators[3].kind = "jsonl_file".into();
    g.operators[3].config = json!({"path": dir});
    g
}

/// A run that "crashes" after some checkpoints and resumes from the last
/// completed one writes exactly the rows of an uninterrupted run: window
/// state and source positions come back, uncommitted output is discarded.
async fn recovery_gives_the_output_of_a_run_without_failure(full: bool) {
    let n = 360_000;
    let reference = tempfile::tempdir().unwrap();
    run(&w2_to_files(n, reference.path(), None), 4).await;
    let expected = committed_lines(reference.path());
    assert_eq!(expected.len(), 30_000 + 10_000);

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemStore { full, ..Default::default() });
    let graph = w2_to_files(n, dir.path(), Some(400_000));
    let mut p =
        Pipeline::start_with(&graph, &Registry::builtins(), 2, CheckpointMode::ExactlyOnce, Some(store.clone()), None);
    for id in 1..=2 {
        p.checkpoint(id).await;
        for t in &p.tasks {
            let _ = t.control.send(TaskControl::CheckpointComplete(CheckpointId(id)));
        }
    }
    // Checkpoint 3 is taken by every task but never completes; then the job dies.
    p.checkpoint(3).await;
    p.cancel.cancel();
    for t in p.tasks {
        let _ = t.handle.await.unwrap();
    }
    let partial = committed_lines(dir.path()).len();
    assert!(partial < expected.len(), "the crash came before the end ({partial} rows committed)");

    let p = Pipeline::start_with(&graph, &Registry::builtins(), 2, CheckpointMode::ExactlyOnce, Some(store), Some(2));
    p.finish().await;
    assert_eq!(committed_lines(dir.path()), expected, "nothing lost, nothing doubled");
    assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_from_full_snapshots_is_exact() {
    recovery_gives_the_output_of_a_run_without_failure(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_from_incremental_snapshots_is_exact() {
    recovery_gives_the_output_of_a_run_without_failure(false).await;
}

/// `odd-to-side`: even values of column `n` on the main output, odd ones on
/// the side output `odd` — an operator kind of a test's own registry.
#[derive(Debug)]
struct OddToSide;

struct OddToSideOp;

impl weir_runtime::operators::OperatorFactory for OddToSide {
    fn kind(&self) -> &str {
        "odd-to-side"
    }
    fn arity(&self) -> weir_runtime::operators::Arity {
        weir_runtime::operators::Arity::One
    }
    fn plan(
        &self,
        ctx: &weir_runtime::operators::PlanContext<'_>,
    ) -> Result<arrow::datatypes::SchemaRef, weir_runtime::PlanError> {
        Ok(ctx.inputs[0].clone())
    }
    fn side_outputs(
        &self,
        ctx: &weir_runtime::operators::PlanContext<'_>,
    ) -> Result<Vec<(String, arrow::datatypes::SchemaRef)>, weir_runtime::PlanError> {
        Ok(vec![("odd".into(), ctx.inputs[0].clone())])
    }
    fn create(
        &self,
        _ctx: &weir_runtime::operators::PlanContext<'_>,
        _subtask: weir_runtime::operators::SubtaskInfo,
    ) -> Result<weir_runtime::operators::Instance, weir_runtime::PlanError> {
        Ok(weir_runtime::operators::Instance::Operator(Box::new(OddToSideOp)))
    }
}

impl weir_runtime::operators::Operator for OddToSideOp {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: arrow::array::RecordBatch,
        out: &mut weir_runtime::operators::Collector,
    ) -> weir_runtime::error::OpResult<()> {
        use arrow::array::{AsArray, BooleanArray};
        let n = batch.column_by_name("auction").expect("planned").as_primitive::<arrow::datatypes::Int64Type>();
        let odd: BooleanArray = n.iter().map(|v| v.map(|v| v % 2 != 0)).collect();
        let even = arrow::compute::not(&odd)?;
        out.emit(arrow::compute::filter_record_batch(&batch, &even)?);
        out.emit_side(1, arrow::compute::filter_record_batch(&batch, &odd)?);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_outputs_reach_only_the_edges_that_leave_them() {
    let mut registry = Registry::builtins();
    registry.register(OddToSide).unwrap();
    let mut b = JobBuilder::new("split");
    b.default_parallelism(2);
    b.operator("gen", "datagen", json!({"events": 10_001, "batch_size": 100}));
    b.operator("split", "odd-to-side", json!({}));
    b.operator("evens", "discard", json!({})).parallelism(3);
    b.operator("odds", "discard", json!({})).parallelism(1);
    b.forward("gen", "split").rebalance("split", "evens");
    b.side_output("split", "odd", "odds", Partitioning::Rebalance, &[], 0);
    let by_sink =
        Pipeline::start_with(&b.build(), &registry, 2, CheckpointMode::ExactlyOnce, None, None).finish_by_sink().await;
    // auction = (i * 7919) % 10000: odd exactly when i is odd.
    assert_eq!(by_sink.get("evens"), Some(&5_001));
    assert_eq!(by_sink.get("odds"), Some(&5_000));
    assert!(Plan::new(&b.build(), &Registry::builtins(), 0)
        .unwrap_err()
        .message
        .contains("unknown operator kind `odd-to-side`"));
}
