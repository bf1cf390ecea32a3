//! JobGraph <-> protobuf.

use std::time::Duration;

use weir_runtime::barrier::CheckpointMode;
use weir_runtime::checkpointing::{BackendKind, CheckpointConfig, RestartStrategy};
use weir_runtime::graph::{EdgeSpec, JobGraph, OperatorSpec, Partitioning};
use weir_runtime::PlanError;

use crate::v1;

fn partitioning_to_proto(p: Partitioning) -> v1::Partitioning {
    match p {
        Partitioning::Forward => v1::Partitioning::Forward,
        Partitioning::Hash => v1::Partitioning::Hash,
        Partitioning::Broadcast => v1::Partitioning::Broadcast,
        Partitioning::Rebalance => v1::Partitioning::Rebalance,
    }
}

/// The wire form of a job graph.
pub fn graph_to_proto(g: &JobGraph) -> v1::JobGraph {
    v1::JobGraph {
        name: g.name.clone(),
        max_parallelism: g.max_parallelism,
        default_parallelism: g.default_parallelism,
        operators: g
            .operators
            .iter()
            .map(|o| v1::Operator {
                uid: o.uid.clone(),
                kind: o.kind.clone(),
                parallelism: o.parallelism,
                config_json: o.config.to_string(),
                source_line: o.line,
                chainable: o.chainable,
            })
            .collect(),
        edges: g
            .edges
            .iter()
            .map(|e| v1::Edge {
                from: e.from.clone(),
                to: e.to.clone(),
                partitioning: partitioning_to_proto(e.partitioning) as i32,
                key: e.key.clone(),
                input: e.input,
                source_line: e.line,
                output: e.output.clone(),
            })
            .collect(),
        checkpoint: g.checkpoint.as_ref().map(checkpoint_to_proto),
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn checkpoint_to_proto(c: &CheckpointConfig) -> v1::CheckpointConfig {
    let restart = match &c.restart {
        RestartStrategy::None => v1::RestartStrategy { kind: "none".into(), ..Default::default() },
        RestartStrategy::FixedDelay { attempts, delay } => v1::RestartStrategy {
            kind: "fixed_delay".into(),
            attempts: *attempts,
            delay_ms: ms(*delay),
            ..Default::default()
        },
        RestartStrategy::ExponentialDelay { attempts, delay, max_delay, multiplier, reset_after } => {
            v1::RestartStrategy {
                kind: "exponential_delay".into(),
                attempts: *attempts,
                delay_ms: ms(*delay),
                max_delay_ms: ms(*max_delay),
                multiplier: *multiplier,
                reset_after_ms: ms(*reset_after),
                ..Default::default()
            }
        }
        RestartStrategy::FailureRate { max_failures, interval, delay } => v1::RestartStrategy {
            kind: "failure_rate".into(),
            attempts: *max_failures,
            delay_ms: ms(*delay),
            interval_ms: ms(*interval),
            ..Default::default()
        },
    };
    v1::CheckpointConfig {
        interval_ms: ms(c.interval),
        timeout_ms: ms(c.timeout),
        min_pause_ms: ms(c.min_pause),
        tolerable_failures: c.tolerable_failures,
        retained: c.retained,
        mode: match c.mode {
            CheckpointMode::ExactlyOnce => "exactly_once",
            CheckpointMode::AtLeastOnce => "at_least_once",
        }
        .into(),
        backend: c.backend.name().into(),
        storage: c.storage.clone().unwrap_or_default(),
        restart: Some(restart),
        changelog: Some(c.changelog),
    }
}

fn checkpoint_from_proto(c: &v1::CheckpointConfig) -> Result<CheckpointConfig, PlanError> {
    let bad = |field: &str, what: &str| PlanError::job(format!("unknown {what}")).field(format!("checkpoints.{field}"));
    let r = c.restart.clone().unwrap_or_default();
    let d = Duration::from_millis;
    let restart = match r.kind.as_str() {
        "" | "none" => RestartStrategy::None,
        "fixed_delay" => RestartStrategy::FixedDelay { attempts: r.attempts, delay: d(r.delay_ms) },
        "exponential_delay" => RestartStrategy::ExponentialDelay {
            attempts: r.attempts,
            delay: d(r.delay_ms),
            max_delay: d(r.max_delay_ms),
            multiplier: r.multiplier,
            reset_after: if r.reset_after_ms == 0 {
                weir_runtime::checkpointing::one_hour()
            } else {
                d(r.reset_after_ms)
            },
        },
        "failure_rate" => {
            RestartStrategy::FailureRate { max_failures: r.attempts, interval: d(r.interval_ms), delay: d(r.delay_ms) }
        }
        other => return Err(bad("restart", &format!("restart strategy `{other}`"))),
    };
    Ok(CheckpointConfig {
        interval: d(c.interval_ms),
        mode: match c.mode.as_str() {
            "" | "exactly_once" => CheckpointMode::ExactlyOnce,
            "at_least_once" => CheckpointMode::AtLeastOnce,
            other => return Err(bad("mode", &format!("checkpoint mode `{other}`"))),
        },
        backend: match c.backend.as_str() {
            "" | "heap" => BackendKind::Heap,
            "rocksdb" => BackendKind::Rocksdb,
            other => return Err(bad("backend", &format!("state backend `{other}`"))),
        },
        storage: (!c.storage.is_empty()).then(|| c.storage.clone()),
        timeout: d(c.timeout_ms),
        min_pause: d(c.min_pause_ms),
        tolerable_failures: c.tolerable_failures,
        retained: c.retained,
        restart,
        changelog: c.changelog.unwrap_or(true),
    })
}

/// A job graph from the wire; malformed fields are plan errors.
pub fn graph_from_proto(g: &v1::JobGraph) -> Result<JobGraph, PlanError> {
    let mut operators = Vec::with_capacity(g.operators.len());
    for o in &g.operators {
        let config: serde_json::Value = if o.config_json.is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_str(&o.config_json).map_err(|e| {
                PlanError::operator(&o.uid, o.source_line, format!("config is not valid JSON: {e}")).field("config")
            })?
        };
        operators.push(OperatorSpec {
            uid: o.uid.clone(),
            kind: o.kind.clone(),
            parallelism: o.parallelism,
            config,
            chainable: o.chainable,
            line: o.source_line,
        });
    }
    let mut edges = Vec::with_capacity(g.edges.len());
    for e in &g.edges {
        let partitioning = match v1::Partitioning::try_from(e.partitioning) {
            Ok(v1::Partitioning::Forward) => Partitioning::Forward,
            Ok(v1::Partitioning::Hash) => Partitioning::Hash,
            Ok(v1::Partitioning::Broadcast) => Partitioning::Broadcast,
            Ok(v1::Partitioning::Rebalance) => Partitioning::Rebalance,
            _ => {
                return Err(PlanError::operator(
                    &format!("edge {} -> {}", e.from, e.to),
                    e.source_line,
                    "partitioning is unspecified or unknown",
                )
                .field("partition"))
            }
        };
        edges.push(EdgeSpec {
            from: e.from.clone(),
            to: e.to.clone(),
            partitioning,
            key: e.key.clone(),
            input: e.input,
            output: e.output.clone(),
            line: e.source_line,
        });
    }
    Ok(JobGraph {
        name: g.name.clone(),
        max_parallelism: g.max_parallelism,
        default_parallelism: g.default_parallelism,
        operators,
        edges,
        checkpoint: g.checkpoint.as_ref().map(checkpoint_from_proto).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_runtime::builder::JobBuilder;

    #[test]
    fn round_trips() {
        let mut b = JobBuilder::new("rt");
        b.operator("gen", "datagen", serde_json::json!({"events": 10})).parallelism(3);
        b.operator("sink", "discard", serde_json::json!({})).disable_chaining();
        b.hash("gen", "sink", &["auction"]);
        let g = b.build();
        assert_eq!(graph_from_proto(&graph_to_proto(&g)).unwrap(), g);
        let mut c = CheckpointConfig::every(Duration::from_millis(250));
        c.backend = BackendKind::Rocksdb;
        c.storage = Some("file:///tmp/x".into());
        b.checkpoints(c.clone());
        assert_eq!(graph_from_proto(&graph_to_proto(&b.build())).unwrap(), b.build());
        // A graph from before the field existed keeps change files on.
        let mut old = graph_to_proto(&b.build());
        old.checkpoint.as_mut().unwrap().changelog = None;
        assert!(graph_from_proto(&old).unwrap().checkpoint.unwrap().changelog);
        c.restart = RestartStrategy::FixedDelay { attempts: 3, delay: Duration::from_millis(10) };
        c.changelog = false;
        b.checkpoints(c);
        assert_eq!(graph_from_proto(&graph_to_proto(&b.build())).unwrap(), b.build());
    }
}
