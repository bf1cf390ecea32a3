//! `weir bench`: the workloads of the Flink baseline (see
//! `../shared/bench/flink/README.md` in the project's workspace), run through
//! the real runtime on an embedded cluster, printing the baseline's result line.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;
use weir_runtime::builder::JobBuilder;
use weir_runtime::graph::JobGraph;

use crate::client;
use crate::embedded::Embedded;

/// A benchmark workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// W1: generator -> map -> filter -> discard (stateless, chained).
    W1,
    /// W2: generator -> watermarks -> hash(auction) -> 10 s tumbling count/sum -> discard.
    W2,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::W1 => "passthrough",
            Workload::W2 => "tumble",
        }
    }

    /// The workload's job graph; the same as `jobs/w1-passthrough.yaml` and
    /// `jobs/w2-tumble.yaml` with `events` and parallelism set.
    pub fn graph(self, events: u64, parallelism: u32) -> JobGraph {
        let mut b = JobBuilder::new(format!("w{}-{}", self as u8 + 1, self.name()));
        b.default_parallelism(parallelism);
        b.operator("gen", "datagen", json!({ "events": events }));
        match self {
            Workload::W1 => {
                b.operator("price", "map", json!({"columns": [{"name": "price", "expr": "price * 908 / 1000"}]}));
                b.operator("even-auctions", "filter", json!({"predicate": "auction % 2 = 0"}));
                b.operator("sink", "discard", json!({}));
                b.forward("gen", "price").forward("price", "even-auctions").forward("even-auctions", "sink");
            }
            Workload::W2 => {
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
        b.build()
    }

    /// The result count the specification expects.
    pub fn expected(self, n: u64) -> u64 {
        match self {
            Workload::W1 => n.div_ceil(2),
            Workload::W2 => (n / 100_000) * 10_000 + (n % 100_000).min(10_000),
        }
    }
}

/// Runs one workload and prints its result line.
pub async fn run(w: Workload, events: u64, parallelism: u32) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(parallelism >= 1, "parallelism must be at least 1");
    let graph = w.graph(events, parallelism);
    let cluster = Embedded::start(parallelism).await?;
    let mut c = client::connect(&cluster.url).await?;
    let started = Instant::now();
    let id = client::submit(&mut c, &graph, None).await?;
    let details = client::wait_for_end(&mut c, &id, Duration::from_secs(60)).await?;
    let seconds = started.elapsed().as_secs_f64();
    cluster.shutdown().await?;
    if client::state(&details) != weir_proto::v1::JobState::Finished {
        anyhow::bail!("the job did not finish: {}", details.failure);
    }
    let results = details.sink_records;
    println!(
        "workload={} engine=weir parallelism={parallelism} events={events} seconds={seconds:.3} events_per_sec={:.0} results={results}",
        w.name(),
        events as f64 / seconds
    );
    let want = w.expected(events);
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
        for (w, file) in [(Workload::W1, "w1-passthrough.yaml"), (Workload::W2, "w2-tumble.yaml")] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs").join(file);
            let mut parsed = weir_runtime::spec::parse_job_yaml(&std::fs::read_to_string(path).unwrap()).unwrap();
            parsed.operators.iter_mut().for_each(|o| o.line = 0);
            parsed.edges.iter_mut().for_each(|e| e.line = 0);
            assert_eq!(parsed, w.graph(20_000_000, 2), "{file}");
        }
    }

    #[test]
    fn expected_counts_follow_the_specification() {
        assert_eq!(Workload::W1.expected(20_000_000), 10_000_000);
        assert_eq!(Workload::W1.expected(7), 4);
        assert_eq!(Workload::W2.expected(20_000_000), 2_000_000);
        assert_eq!(Workload::W2.expected(1_234_567), 130_000);
    }
}
