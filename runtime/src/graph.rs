//! The JobGraph: operators with stable uids joined by typed edges — what
//! every front end (YAML job files, the Rust builder, the typed API)
//! produces and what the job manager runs. [`crate::plan`] validates a graph
//! and derives its plan.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Default number of key groups.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// How records move along an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioning {
    /// Upstream subtask `i` feeds downstream subtask `i`; parallelism must match.
    Forward,
    /// Rows go to the subtask owning the key group of their key.
    Hash,
    /// Every downstream subtask receives every row.
    Broadcast,
    /// Batches are spread round-robin over downstream subtasks.
    Rebalance,
}

impl fmt::Display for Partitioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Partitioning::Forward => "forward",
            Partitioning::Hash => "hash",
            Partitioning::Broadcast => "broadcast",
            Partitioning::Rebalance => "rebalance",
        })
    }
}

/// One operator of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorSpec {
    /// Stable identity across job versions.
    pub uid: String,
    /// Registry name of the implementation.
    pub kind: String,
    /// Number of parallel subtasks; 0 takes the job's default.
    pub parallelism: u32,
    /// The operator's own configuration (a JSON object).
    pub config: serde_json::Value,
    /// Whether the operator may share a task with its neighbours.
    pub chainable: bool,
    /// 1-based line in the job file, 0 if unknown.
    pub line: u32,
}

/// A directed connection between two operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeSpec {
    /// Upstream operator uid.
    pub from: String,
    /// Downstream operator uid.
    pub to: String,
    /// How rows are routed.
    pub partitioning: Partitioning,
    /// Key columns, for [`Partitioning::Hash`].
    pub key: Vec<String>,
    /// Which input of `to` this edge feeds.
    pub input: u32,
    /// Which output of `from` it leaves: empty for the main output, else
    /// the name of a side output (a window's `late` records, a typed
    /// operator's output tag).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
    /// 1-based line in the job file, 0 if unknown.
    pub line: u32,
}

/// A job: what every front end compiles to and what the job manager runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobGraph {
    /// Human-readable job name.
    pub name: String,
    /// Number of key groups (upper bound for parallelism).
    pub max_parallelism: u32,
    /// Parallelism of operators that leave theirs at 0 (0 means 1).
    pub default_parallelism: u32,
    /// Operators, in declaration order.
    pub operators: Vec<OperatorSpec>,
    /// Edges, in declaration order; an edge's index identifies it on the wire.
    pub edges: Vec<EdgeSpec>,
    /// Checkpointing and restarts (`None`: neither).
    pub checkpoint: Option<crate::checkpointing::CheckpointConfig>,
}

impl JobGraph {
    /// Index of the operator with this uid.
    pub fn operator_index(&self, uid: &str) -> Option<usize> {
        self.operators.iter().position(|o| o.uid == uid)
    }
}

/// Index, within its input, of the channel from upstream subtask `source`
/// on an edge of `partitioning` (a forward edge has a single channel).
pub fn channel_index(partitioning: Partitioning, source: u32) -> u32 {
    if partitioning == Partitioning::Forward {
        0
    } else {
        source
    }
}
