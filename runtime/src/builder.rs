//! The Rust builder API: the programmatic twin of a YAML job file. Both
//! produce the same [`JobGraph`].
//!
//! ```
//! use weir_runtime::builder::JobBuilder;
//! use serde_json::json;
//!
//! let mut job = JobBuilder::new("w1-passthrough");
//! job.default_parallelism(2);
//! job.operator("gen", "datagen", json!({"events": 1000}));
//! job.operator("price", "map", json!({"columns": [{"name": "price", "expr": "price * 908 / 1000"}]}));
//! job.operator("even", "filter", json!({"predicate": "auction % 2 = 0"}));
//! job.operator("sink", "discard", json!({}));
//! job.forward("gen", "price").forward("price", "even").forward("even", "sink");
//! let graph = job.build();
//! assert_eq!(graph.operators.len(), 4);
//! ```

use crate::graph::{EdgeSpec, JobGraph, OperatorSpec, Partitioning, DEFAULT_MAX_PARALLELISM};

/// Builds a [`JobGraph`] operator by operator.
#[derive(Debug, Clone)]
pub struct JobBuilder {
    graph: JobGraph,
}

impl JobBuilder {
    /// Enables checkpoints (and restarts) with `config`.
    pub fn checkpoints(&mut self, config: crate::checkpointing::CheckpointConfig) -> &mut Self {
        self.graph.checkpoint = Some(config);
        self
    }

    /// A new, empty job.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            graph: JobGraph {
                name: name.into(),
                max_parallelism: DEFAULT_MAX_PARALLELISM,
                default_parallelism: 0,
                operators: Vec::new(),
                edges: Vec::new(),
                checkpoint: None,
            },
        }
    }

    /// Parallelism of operators that do not set their own.
    pub fn default_parallelism(&mut self, p: u32) -> &mut Self {
        self.graph.default_parallelism = p;
        self
    }

    /// Number of key groups.
    pub fn max_parallelism(&mut self, p: u32) -> &mut Self {
        self.graph.max_parallelism = p;
        self
    }

    /// Adds an operator running at the job's default parallelism.
    pub fn operator(&mut self, uid: &str, kind: &str, config: serde_json::Value) -> &mut Self {
        self.graph.operators.push(OperatorSpec {
            uid: uid.into(),
            kind: kind.into(),
            parallelism: 0,
            config,
            chainable: true,
            line: 0,
        });
        self
    }

    /// Sets the parallelism of the most recently added operator.
    pub fn parallelism(&mut self, p: u32) -> &mut Self {
        if let Some(op) = self.graph.operators.last_mut() {
            op.parallelism = p;
        }
        self
    }

    /// Keeps the most recently added operator out of any chain.
    pub fn disable_chaining(&mut self) -> &mut Self {
        if let Some(op) = self.graph.operators.last_mut() {
            op.chainable = false;
        }
        self
    }

    /// Connects `from` to input `input` of `to`.
    pub fn edge(&mut self, from: &str, to: &str, partitioning: Partitioning, key: &[&str], input: u32) -> &mut Self {
        self.graph.edges.push(EdgeSpec {
            from: from.into(),
            to: to.into(),
            partitioning,
            key: key.iter().map(|k| k.to_string()).collect(),
            input,
            output: String::new(),
            line: 0,
        });
        self
    }

    /// Connects side output `output` of `from` to input `input` of `to`.
    pub fn side_output(
        &mut self,
        from: &str,
        output: &str,
        to: &str,
        partitioning: Partitioning,
        key: &[&str],
        input: u32,
    ) -> &mut Self {
        self.edge(from, to, partitioning, key, input);
        if let Some(e) = self.graph.edges.last_mut() {
            e.output = output.to_string();
        }
        self
    }

    /// A forward edge into input 0.
    pub fn forward(&mut self, from: &str, to: &str) -> &mut Self {
        self.edge(from, to, Partitioning::Forward, &[], 0)
    }

    /// A hash edge on `key` into input 0.
    pub fn hash(&mut self, from: &str, to: &str, key: &[&str]) -> &mut Self {
        self.edge(from, to, Partitioning::Hash, key, 0)
    }

    /// A rebalance edge into input 0.
    pub fn rebalance(&mut self, from: &str, to: &str) -> &mut Self {
        self.edge(from, to, Partitioning::Rebalance, &[], 0)
    }

    /// The operator with `uid`, to change it after it was added.
    pub fn operator_mut(&mut self, uid: &str) -> Option<&mut OperatorSpec> {
        self.graph.operators.iter_mut().find(|o| o.uid == uid)
    }

    /// The graph built so far.
    pub fn build(&self) -> JobGraph {
        self.graph.clone()
    }
}
