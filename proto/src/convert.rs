//! JobGraph <-> protobuf.

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
            })
            .collect(),
    }
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
            line: e.source_line,
        });
    }
    Ok(JobGraph {
        name: g.name.clone(),
        max_parallelism: g.max_parallelism,
        default_parallelism: g.default_parallelism,
        operators,
        edges,
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
    }
}
