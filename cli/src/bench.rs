//! `weir bench`: the workloads of the Flink baseline (see
//! `../shared/bench/flink/README.md` in the project's workspace), run through
//! the real runtime on an embedded cluster, printing the baseline's result line.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use weir_runtime::builder::JobBuilder;
use weir_runtime::checkpointing::{BackendKind, CheckpointConfig, RestartStrategy};
use weir_runtime::graph::JobGraph;
use weir_runtime::operators::Registry;

use crate::client;
use crate::embedded::Embedded;
use crate::progress::Progress;

/// A benchmark workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// W1: generator -> map -> filter -> discard (stateless, chained).
    W1,
    /// W2: generator -> watermarks -> hash(auction) -> 10 s tumbling count/sum -> discard.
    W2,
    /// W3: W2 with exactly-once checkpoints every second, heap state (full snapshots).
    #[value(name = "w3-heap")]
    W3Heap,
    /// W3: W2 with exactly-once checkpoints every second, RocksDB state (incremental).
    #[value(name = "w3-rocksdb")]
    W3Rocksdb,
    /// W4's input: writes the generator's events as JSON into `--input-topic` (one partition per subtask).
    #[value(name = "w4-load")]
    W4Load,
    /// W4: Kafka source -> 10 s tumbling count/sum -> exactly-once Kafka sink, 1 s checkpoints.
    W4,
    /// W9: W1's events indexed into OpenSearch/Elasticsearch (`--opensearch`, `--index`), bulk API.
    W9,
}

/// Where W4 and W9 read and write.
#[derive(Debug, Clone, clap::Args)]
pub struct Systems {
    /// Kafka bootstrap servers of W4.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub kafka: String,
    /// Input topic of W4, with one partition per subtask.
    #[arg(long, default_value = "w4-in")]
    pub input_topic: String,
    /// Output topic of W4.
    #[arg(long, default_value = "w4-out")]
    pub output_topic: String,
    /// OpenSearch or Elasticsearch node of W9.
    #[arg(long, default_value = "http://127.0.0.1:9200")]
    pub opensearch: String,
    /// Index W9 writes (created by the node on first write when missing).
    #[arg(long, default_value = "w9")]
    pub index: String,
}

impl Default for Systems {
    fn default() -> Self {
        Systems {
            kafka: "127.0.0.1:9092".into(),
            input_topic: "w4-in".into(),
            output_topic: "w4-out".into(),
            opensearch: "http://127.0.0.1:9200".into(),
            index: "w9".into(),
        }
    }
}

impl Workload {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::W1 => "passthrough",
            Workload::W2 => "tumble",
            Workload::W3Heap | Workload::W3Rocksdb => "tumble-checkpointed",
            Workload::W4Load => "kafka-load",
            Workload::W4 => "kafka-tumble",
            Workload::W9 => "opensearch-index",
        }
    }

    fn number(self) -> u8 {
        match self {
            Workload::W1 => 1,
            Workload::W2 => 2,
            Workload::W3Heap | Workload::W3Rocksdb => 3,
            Workload::W4Load | Workload::W4 => 4,
            Workload::W9 => 9,
        }
    }

    fn backend(self) -> Option<BackendKind> {
        match self {
            Workload::W3Heap => Some(BackendKind::Heap),
            Workload::W3Rocksdb => Some(BackendKind::Rocksdb),
            Workload::W4 => Some(BackendKind::Heap),
            _ => None,
        }
    }

    /// The workload's job graph; the same as `jobs/w1-passthrough.yaml` and
    /// `jobs/w2-tumble.yaml` with `events` and parallelism set.
    pub fn graph(self, events: u64, parallelism: u32) -> JobGraph {
        if let Workload::W4Load | Workload::W4 | Workload::W9 = self {
            return self.file_graph(events, parallelism, &Systems::default());
        }
        let mut b = JobBuilder::new(format!("w{}-{}", self.number(), self.name()));
        b.default_parallelism(parallelism);
        b.operator("gen", "datagen", json!({ "events": events }));
        match self {
            Workload::W1 => {
                b.operator("price", "map", json!({"columns": [{"name": "price", "expr": "price * 908 / 1000"}]}));
                b.operator("even-auctions", "filter", json!({"predicate": "auction % 2 = 0"}));
                b.operator("sink", "discard", json!({}));
                b.forward("gen", "price").forward("price", "even-auctions").forward("even-auctions", "sink");
            }
            Workload::W4Load | Workload::W4 | Workload::W9 => unreachable!("these workloads come from job files"),
            Workload::W2 | Workload::W3Heap | Workload::W3Rocksdb => {
                b.operator(
                    "timestamps",
                    "watermark",
                    json!({"timestamp_column": "event_time_ms", "interval": "200ms"}),
                );
                b.operator(
                    "tumble",
                    "window",
                    json!({
                        "key": ["auction"],
                        "timestamp_column": "event_time_ms",
                        "window": {"type": "tumbling", "size": "10s"},
                        "aggregates": [{"fn": "count", "as": "count"}, {"fn": "sum", "column": "price", "as": "sum"}]
                    }),
                );
                b.operator("sink", "discard", json!({}));
                b.forward("gen", "timestamps").hash("timestamps", "tumble", &["auction"]).forward("tumble", "sink");
            }
        }
        if let Some(backend) = self.backend() {
            // The baseline's settings: 1 s exactly-once checkpoints, one at a time, no pause, no restarts.
            let mut c = CheckpointConfig::every(Duration::from_secs(1));
            c.backend = backend;
            c.restart = RestartStrategy::None;
            b.checkpoints(c);
        }
        b.build()
    }

    /// The graphs of the workloads on external systems: `jobs/w4-load.yaml`,
    /// `jobs/w4-kafka.yaml` and `jobs/w9-opensearch.yaml` with the brokers,
    /// topics, node, index, events and parallelism set.
    pub fn file_graph(self, events: u64, parallelism: u32, systems: &Systems) -> JobGraph {
        let text = match self {
            Workload::W4Load => include_str!("../../jobs/w4-load.yaml"),
            Workload::W9 => include_str!("../../jobs/w9-opensearch.yaml"),
            _ => include_str!("../../jobs/w4-kafka.yaml"),
        };
        let mut g = weir_runtime::spec::parse_job_yaml(text).expect("the workloads' job files parse");
        g.default_parallelism = parallelism;
        for op in &mut g.operators {
            op.line = 0;
            let c = &mut op.config;
            if c.get("bootstrap_servers").is_some() {
                c["bootstrap_servers"] = json!(systems.kafka);
            }
            match op.kind.as_str() {
                "datagen" => c["events"] = json!(events),
                "kafka_source" => c["topic"] = json!(systems.input_topic),
                "kafka_sink" if self == Workload::W4Load => c["topic"] = json!(systems.input_topic),
                "kafka_sink" => c["topic"] = json!(systems.output_topic),
                "elasticsearch_sink" => {
                    c["hosts"] = json!([systems.opensearch]);
                    c["index"] = json!(systems.index);
                }
                _ => {}
            }
        }
        g.edges.iter_mut().for_each(|e| e.line = 0);
        g
    }

    /// The result count the specification expects.
    pub fn expected(self, n: u64) -> u64 {
        match self {
            Workload::W1 | Workload::W9 => n.div_ceil(2),
            Workload::W4Load => n,
            Workload::W2 | Workload::W3Heap | Workload::W3Rocksdb | Workload::W4 => {
                (n / 100_000) * 10_000 + (n % 100_000).min(10_000)
            }
        }
    }
}

fn mean(values: impl Iterator<Item = u64>) -> f64 {
    let (sum, n) = values.fold((0u64, 0u64), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum as f64 / n as f64
    }
}

/// A workload an application adds to `bench` (besides the baseline's):
/// a label for its result line, its job graph for a number of events and a
/// parallelism, and the result count it must produce.
#[derive(Clone)]
pub struct BenchWorkload {
    /// `workload=` of the result line.
    pub label: String,
    /// The job graph for `(events, parallelism)`.
    pub build: Arc<dyn Fn(u64, u32) -> anyhow::Result<JobGraph> + Send + Sync>,
    /// The results the job must produce from `events` events.
    pub expected: fn(u64) -> u64,
    /// The state backend of its checkpoints, if it takes any (reported in the line).
    pub backend: Option<BackendKind>,
}

impl std::fmt::Debug for BenchWorkload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchWorkload").field("label", &self.label).finish()
    }
}

/// The workload a `bench` command names: the baseline's, or the application's own.
pub(crate) fn choose(
    name: &str,
    own: &std::collections::BTreeMap<String, BenchWorkload>,
    systems: &Systems,
) -> anyhow::Result<BenchWorkload> {
    if let Some(w) = own.get(name) {
        return Ok(w.clone());
    }
    let Ok(w) = <Workload as clap::ValueEnum>::from_str(name, true) else {
        let mut names: Vec<String> = <Workload as clap::ValueEnum>::value_variants()
            .iter()
            .filter_map(|v| clap::ValueEnum::to_possible_value(v).map(|p| p.get_name().to_string()))
            .collect();
        names.extend(own.keys().cloned());
        anyhow::bail!("unknown workload `{name}`: one of {}", names.join(", "));
    };
    let systems = systems.clone();
    Ok(BenchWorkload {
        label: w.name().to_string(),
        build: Arc::new(move |events, p| {
            Ok(match w {
                Workload::W4Load | Workload::W4 | Workload::W9 => w.file_graph(events, p, &systems),
                _ => w.graph(events, p),
            })
        }),
        expected: match w {
            Workload::W1 | Workload::W9 => |n| Workload::W1.expected(n),
            Workload::W4Load => |n| Workload::W4Load.expected(n),
            _ => |n| Workload::W2.expected(n),
        },
        backend: w.backend(),
    })
}

/// How a checkpointed workload checkpoints.
#[derive(Debug, Clone, Default)]
pub struct Checkpoints {
    /// The `changelog` setting (it matters to RocksDB only).
    pub changelog: bool,
    /// Where checkpoints go; `None`: a fresh local directory, removed afterwards.
    pub storage: Option<String>,
}

/// Runs one workload and prints its result line.
pub async fn run(
    w: BenchWorkload,
    events: u64,
    parallelism: u32,
    checkpoints: Checkpoints,
    registry: Arc<Registry>,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(parallelism >= 1, "parallelism must be at least 1");
    let mut graph = (w.build)(events, parallelism)?;
    let dir = tempfile::Builder::new().prefix("weir-bench-checkpoints").tempdir()?;
    if let Some(c) = graph.checkpoint.as_mut() {
        c.storage = Some(checkpoints.storage.unwrap_or_else(|| format!("file://{}", dir.path().display())));
        c.changelog = checkpoints.changelog;
    }
    let cluster = Embedded::start(parallelism, registry).await?;
    let mut c = client::connect(&cluster.url, &Default::default()).await?;
    let started = Instant::now();
    let id = client::submit(&mut c, &graph, None, &client::StartFrom::default()).await?;
    let details = client::wait_for_end(&mut c, &id, &Progress::hidden()).await?;
    let seconds = started.elapsed().as_secs_f64();
    cluster.shutdown().await?;
    if client::state(&details) != weir_proto::v1::JobState::Finished {
        anyhow::bail!("the job did not finish: {}", details.failure);
    }
    let results = details.sink_records;
    let mut line = format!(
        "workload={} engine=weir parallelism={parallelism} events={events} seconds={seconds:.3} events_per_sec={:.0} results={results}",
        w.label,
        events as f64 / seconds
    );
    if let Some(backend) = w.backend {
        let done: Vec<u64> = details
            .checkpoints
            .iter()
            .filter(|c| c.status() == weir_proto::v1::CheckpointStatus::Completed)
            .map(|c| c.duration_ms)
            .collect();
        let avg = if done.is_empty() { 0.0 } else { done.iter().sum::<u64>() as f64 / done.len() as f64 };
        let max = done.iter().max().copied().unwrap_or(0);
        line.push_str(&format!(
            " checkpoints={} state_backend={} checkpoint_avg_ms={avg:.1} checkpoint_max_ms={max}",
            done.len(),
            backend.name()
        ));
        // Sizes go to stderr: how much each checkpoint uploaded against the state it names.
        let completed: Vec<_> =
            details.checkpoints.iter().filter(|c| c.status() == weir_proto::v1::CheckpointStatus::Completed).collect();
        if !completed.is_empty() {
            let uploaded: u64 = completed.iter().map(|c| c.size_bytes).sum();
            let state: u64 = completed.iter().map(|c| c.state_bytes).sum();
            eprintln!(
                "checkpoint sizes: uploaded {:.1} MiB in total, {:.2} MiB per checkpoint on average; state named {:.2} MiB on average (max {:.2} MiB); alignment max {} ms; sync avg {:.1} ms, max {} ms; async avg {:.1} ms, max {} ms; metadata avg {:.1} ms",
                uploaded as f64 / 1048576.0,
                uploaded as f64 / 1048576.0 / completed.len() as f64,
                state as f64 / 1048576.0 / completed.len() as f64,
                completed.iter().map(|c| c.state_bytes).max().unwrap_or(0) as f64 / 1048576.0,
                completed.iter().map(|c| c.alignment_ms).max().unwrap_or(0),
                mean(completed.iter().map(|c| c.sync_ms)),
                completed.iter().map(|c| c.sync_ms).max().unwrap_or(0),
                mean(completed.iter().map(|c| c.async_ms)),
                completed.iter().map(|c| c.async_ms).max().unwrap_or(0),
                mean(completed.iter().map(|c| c.duration_ms.saturating_sub(c.acked_ms))),
            );
            for c in &completed {
                eprintln!(
                    "checkpoint {}: {} ms (acknowledged at {} ms; alignment {} ms, sync {} ms, async {} ms), uploaded {:.2} MiB",
                    c.id,
                    c.duration_ms,
                    c.acked_ms,
                    c.alignment_ms,
                    c.sync_ms,
                    c.async_ms,
                    c.size_bytes as f64 / 1048576.0
                );
            }
        }
    }
    println!("{line}");
    let want = (w.expected)(events);
    if results != want {
        eprintln!("error: results={results} but the specification expects {want}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `weir bench` runs exactly the example job files.
    #[test]
    fn workloads_match_the_example_job_files() {
        for (w, file) in [
            (Workload::W1, "w1-passthrough.yaml"),
            (Workload::W2, "w2-tumble.yaml"),
            (Workload::W3Heap, "w3-heap.yaml"),
            (Workload::W3Rocksdb, "w3-rocksdb.yaml"),
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs").join(file);
            let mut parsed = weir_runtime::spec::parse_job_yaml(&std::fs::read_to_string(path).unwrap()).unwrap();
            parsed.operators.iter_mut().for_each(|o| o.line = 0);
            parsed.edges.iter_mut().for_each(|e| e.line = 0);
            assert_eq!(parsed, w.graph(20_000_000, 2), "{file}");
        }
    }

    #[test]
    fn w4_graphs_come_from_their_job_files_and_plan() {
        let registry = weir_connectors::registry();
        let k = Systems {
            kafka: "10.0.0.1:9092".into(),
            input_topic: "in".into(),
            output_topic: "out".into(),
            ..Systems::default()
        };
        for w in [Workload::W4Load, Workload::W4] {
            let g = w.file_graph(1000, 3, &k);
            assert_eq!(g.default_parallelism, 3);
            weir_runtime::plan::Plan::new(&g, &registry, 1).unwrap();
        }
        let topic = |g: &JobGraph, kind: &str| {
            g.operators.iter().find(|o| o.kind == kind).map(|o| o.config["topic"].as_str().unwrap().to_string())
        };
        let load = Workload::W4Load.file_graph(1000, 3, &k);
        assert_eq!(topic(&load, "kafka_sink").as_deref(), Some("in"));
        assert_eq!(load.operators[0].config["events"], 1000);
        let job = Workload::W4.file_graph(1000, 3, &k);
        assert_eq!(topic(&job, "kafka_source").as_deref(), Some("in"));
        assert_eq!(topic(&job, "kafka_sink").as_deref(), Some("out"));
        assert_eq!(job.operators[0].config["bootstrap_servers"], "10.0.0.1:9092");
    }

    #[test]
    fn w9_graph_comes_from_its_job_file_with_the_node_and_index_set_and_plans() {
        let s = Systems { opensearch: "http://10.0.0.2:9200".into(), index: "bench-w9".into(), ..Systems::default() };
        let g = Workload::W9.file_graph(1000, 3, &s);
        weir_runtime::plan::Plan::new(&g, &weir_connectors::registry(), 1).unwrap();
        let sink = g.operators.iter().find(|o| o.kind == "elasticsearch_sink").unwrap();
        assert_eq!(
            (&sink.config["hosts"][0], &sink.config["index"]),
            (&json!("http://10.0.0.2:9200"), &json!("bench-w9"))
        );
        assert_eq!(g.operators[0].config["events"], 1000);
        assert_eq!(Workload::W9.expected(20_000_000), 10_000_000);
    }

    #[test]
    fn expected_counts_follow_the_specification() {
        assert_eq!(Workload::W1.expected(20_000_000), 10_000_000);
        assert_eq!(Workload::W1.expected(7), 4);
        assert_eq!(Workload::W2.expected(20_000_000), 2_000_000);
        assert_eq!(Workload::W2.expected(1_234_567), 130_000);
        assert_eq!(Workload::W3Rocksdb.expected(20_000_000), 2_000_000);
    }
}
