//! The JobGraph: operators with stable uids joined by typed edges, and the
//! [`Plan`] derived from it — validated, with an Arrow schema fixed on every
//! edge and forward-connected operators chained into vertices.
//!
//! Planning is deterministic: the job manager plans a graph at submit time to
//! reject invalid jobs, and every task manager re-plans the same graph to
//! instantiate its tasks.

use std::collections::{HashMap, HashSet};
use std::fmt;

use arrow::datatypes::SchemaRef;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};

use crate::error::PlanError;
use crate::operators::{Arity, OperatorFactory, PlanContext, Registry};
use std::sync::Arc;

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

/// A chain of operators that runs as one task per subtask.
#[derive(Debug, Clone)]
pub struct Vertex {
    /// Index of the vertex within the plan.
    pub id: u32,
    /// Operator indices (into `JobGraph::operators`), head first.
    pub operators: Vec<usize>,
    /// Parallelism shared by every operator of the chain.
    pub parallelism: u32,
    /// Operator uids joined with ` -> `.
    pub name: String,
}

/// An edge between two vertices (edges inside a chain do not appear here).
#[derive(Debug, Clone)]
pub struct VertexEdge {
    /// Index into `JobGraph::edges` (the edge's wire identity).
    pub edge: usize,
    /// Producing vertex.
    pub from: u32,
    /// Consuming vertex.
    pub to: u32,
    /// Input index of the consuming vertex's head operator.
    pub input: u32,
}

/// A validated job: resolved parallelism, schemas on every edge, chains.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The graph with every operator's parallelism resolved.
    pub graph: JobGraph,
    /// Output schema of every operator (sinks: their input schema).
    pub output_schemas: Vec<SchemaRef>,
    /// Input schemas of every operator, by input index.
    pub input_schemas: Vec<Vec<SchemaRef>>,
    /// Chains, in topological order.
    pub vertices: Vec<Vertex>,
    /// Edges between vertices.
    pub vertex_edges: Vec<VertexEdge>,
    /// States each operator declares (`(name, type)`), by operator index.
    pub state_types: Vec<Vec<(String, String)>>,
    /// Each operator's factory, resolved from the registry at planning.
    pub factories: Vec<Arc<dyn OperatorFactory>>,
    /// Sorted, in topological order.
    topo: Vec<usize>,
}

impl JobGraph {
    /// Index of the operator with this uid.
    pub fn operator_index(&self, uid: &str) -> Option<usize> {
        self.operators.iter().position(|o| o.uid == uid)
    }
}

fn edge_name(e: &EdgeSpec) -> String {
    format!("edge {} -> {}", e.from, e.to)
}

fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 128
        && uid.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Plan {
    /// Operator uids of vertex `v`, head first (how checkpoints name a task's chain).
    pub fn vertex_uids(&self, v: u32) -> Vec<String> {
        self.vertices[v as usize].operators.iter().map(|&o| self.graph.operators[o].uid.clone()).collect()
    }

    /// The vertex running operator `uid`.
    pub fn vertex_of(&self, uid: &str) -> Option<&Vertex> {
        let i = self.graph.operator_index(uid)?;
        self.vertices.iter().find(|v| v.operators.contains(&i))
    }

    /// Validates `graph` against the kinds of `registry` and derives its
    /// plan. `default_parallelism` (if not 0) overrides the graph's default
    /// for operators that set none.
    pub fn new(graph: &JobGraph, registry: &Registry, default_parallelism: u32) -> Result<Plan, PlanError> {
        let mut graph = graph.clone();
        if graph.operators.is_empty() {
            return Err(PlanError::job("the job has no operators"));
        }
        if graph.max_parallelism == 0 {
            graph.max_parallelism = DEFAULT_MAX_PARALLELISM;
        }
        if graph.max_parallelism > 32768 {
            return Err(PlanError::job(format!(
                "max_parallelism {} is above the limit of 32768",
                graph.max_parallelism
            ))
            .field("max_parallelism"));
        }
        if let Some(c) = &graph.checkpoint {
            c.validate()?;
        }
        let default = match (default_parallelism, graph.default_parallelism) {
            (0, 0) => 1,
            (0, d) => d,
            (d, _) => d,
        };

        // Operators: uids, kinds, parallelism.
        let mut seen = HashSet::new();
        let mut factories = Vec::with_capacity(graph.operators.len());
        for op in &mut graph.operators {
            if !valid_uid(&op.uid) {
                return Err(PlanError::operator(
                    &op.uid,
                    op.line,
                    "a uid must be 1-128 characters of A-Z, a-z, 0-9, '-', '_' or '.'",
                )
                .field("uid"));
            }
            if !seen.insert(op.uid.clone()) {
                return Err(
                    PlanError::operator(&op.uid, op.line, "duplicate uid: every operator needs its own").field("uid")
                );
            }
            let Some(factory) = registry.get(&op.kind) else {
                return Err(PlanError::operator(
                    &op.uid,
                    op.line,
                    format!(
                        "unknown operator kind `{}`; known kinds: {}",
                        op.kind,
                        registry.kinds().collect::<Vec<_>>().join(", ")
                    ),
                )
                .field("kind"));
            };
            factories.push(factory.clone());
            if op.parallelism == 0 {
                op.parallelism = default;
            }
            if op.parallelism > graph.max_parallelism {
                return Err(PlanError::operator(
                    &op.uid,
                    op.line,
                    format!("parallelism {} exceeds max_parallelism {}", op.parallelism, graph.max_parallelism),
                )
                .field("parallelism"));
            }
        }

        // Edges: endpoints, inputs, partitioning constraints.
        let index: HashMap<&str, usize> =
            graph.operators.iter().enumerate().map(|(i, o)| (o.uid.as_str(), i)).collect();
        let mut dag: DiGraph<usize, usize> = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..graph.operators.len()).map(|i| dag.add_node(i)).collect();
        let mut inputs_of: Vec<Vec<usize>> = vec![Vec::new(); graph.operators.len()];
        let mut outputs_of: Vec<Vec<usize>> = vec![Vec::new(); graph.operators.len()];
        for (ei, e) in graph.edges.iter().enumerate() {
            let from = *index.get(e.from.as_str()).ok_or_else(|| {
                PlanError::operator(&edge_name(e), e.line, format!("no operator has uid `{}`", e.from)).field("from")
            })?;
            let to = *index.get(e.to.as_str()).ok_or_else(|| {
                PlanError::operator(&edge_name(e), e.line, format!("no operator has uid `{}`", e.to)).field("to")
            })?;
            if from == to {
                return Err(PlanError::operator(&edge_name(e), e.line, "an operator cannot feed itself"));
            }
            let (pf, pt) = (graph.operators[from].parallelism, graph.operators[to].parallelism);
            match e.partitioning {
                Partitioning::Forward if pf != pt => {
                    return Err(PlanError::operator(
                        &edge_name(e),
                        e.line,
                        format!("forward needs equal parallelism on both ends ({} has {pf}, {} has {pt}); use rebalance or hash", e.from, e.to),
                    )
                    .field("partition"))
                }
                Partitioning::Hash if e.key.is_empty() => {
                    return Err(PlanError::operator(&edge_name(e), e.line, "hash partitioning needs at least one key column").field("key"))
                }
                Partitioning::Forward | Partitioning::Broadcast | Partitioning::Rebalance if !e.key.is_empty() => {
                    return Err(PlanError::operator(
                        &edge_name(e),
                        e.line,
                        format!("a key only applies to hash partitioning, not {}", e.partitioning),
                    )
                    .field("key"))
                }
                _ => {}
            }
            dag.add_edge(nodes[from], nodes[to], ei);
            inputs_of[to].push(ei);
            outputs_of[from].push(ei);
        }

        // Arity: every input of every operator is fed exactly once.
        for (i, op) in graph.operators.iter().enumerate() {
            let factory = &factories[i];
            let want = match factory.arity() {
                Arity::Source => 0,
                Arity::One => 1,
                Arity::Two => 2,
            };
            let mut fed = vec![0u32; want];
            for &ei in &inputs_of[i] {
                let e = &graph.edges[ei];
                match fed.get_mut(e.input as usize) {
                    Some(n) => *n += 1,
                    None => {
                        return Err(PlanError::operator(
                            &edge_name(e),
                            e.line,
                            if want == 0 {
                                format!("`{}` is a source ({}) and takes no input", op.uid, op.kind)
                            } else {
                                format!("`{}` ({}) has inputs 0..{}, not {}", op.uid, op.kind, want - 1, e.input)
                            },
                        )
                        .field("input"))
                    }
                }
            }
            if let Some(missing) = fed.iter().position(|&n| n == 0) {
                return Err(PlanError::operator(
                    &op.uid,
                    op.line,
                    format!("input {missing} of this {} operator is not connected: add an edge to it", op.kind),
                ));
            }
            if let Some(dup) = fed.iter().position(|&n| n > 1) {
                return Err(PlanError::operator(
                    &op.uid,
                    op.line,
                    format!("input {dup} is fed by {} edges; union is not supported, use one edge per input", fed[dup]),
                ));
            }
            if factory.is_sink() && !outputs_of[i].is_empty() {
                let e = &graph.edges[outputs_of[i][0]];
                return Err(PlanError::operator(
                    &edge_name(e),
                    e.line,
                    format!("`{}` is a sink and has no output", op.uid),
                )
                .field("from"));
            }
        }

        let topo: Vec<usize> = petgraph::algo::toposort(&dag, None)
            .map_err(|cycle| {
                let op = &graph.operators[dag[cycle.node_id()]];
                PlanError::operator(&op.uid, op.line, "the job graph has a cycle through this operator")
            })?
            .into_iter()
            .map(|n| dag[n])
            .collect();

        // Schemas, in topological order.
        let mut output_schemas: Vec<Option<SchemaRef>> = vec![None; graph.operators.len()];
        let mut input_schemas: Vec<Vec<SchemaRef>> = vec![Vec::new(); graph.operators.len()];
        let mut state_types: Vec<Vec<(String, String)>> = vec![Vec::new(); graph.operators.len()];
        for &i in &topo {
            let op = &graph.operators[i];
            let mut edges: Vec<&EdgeSpec> = inputs_of[i].iter().map(|&ei| &graph.edges[ei]).collect();
            edges.sort_by_key(|e| e.input);
            let mut schemas = Vec::with_capacity(edges.len());
            for e in &edges {
                let upstream = index[e.from.as_str()];
                let schema = output_schemas[upstream].clone().expect("topological order");
                for k in &e.key {
                    if schema.index_of(k).is_err() {
                        return Err(PlanError::operator(
                            &edge_name(e),
                            e.line,
                            format!(
                                "key column `{k}` is not in the output of `{}` (columns: {})",
                                e.from,
                                column_list(&schema)
                            ),
                        )
                        .field("key"));
                    }
                }
                schemas.push(schema);
            }
            let ctx = PlanContext {
                uid: &op.uid,
                line: op.line,
                config: &op.config,
                inputs: &schemas,
                input_edges: &edges,
                parallelism: op.parallelism,
                checkpoint: graph.checkpoint.as_ref(),
            };
            let factory = &factories[i];
            let out = factory.plan(&ctx)?;
            state_types[i] = factory.state_types(&ctx);
            output_schemas[i] = Some(out);
            input_schemas[i] = schemas;
        }
        let output_schemas: Vec<SchemaRef> = output_schemas.into_iter().map(|s| s.expect("planned")).collect();

        let (vertices, vertex_edges) = chain(&graph, &topo, &inputs_of, &outputs_of, &index);
        Ok(Plan { graph, output_schemas, input_schemas, vertices, vertex_edges, state_types, factories, topo })
    }

    /// Operators in topological order.
    pub fn topological_order(&self) -> &[usize] {
        &self.topo
    }

    /// Total subtasks over all vertices.
    pub fn subtask_count(&self) -> u32 {
        self.vertices.iter().map(|v| v.parallelism).sum()
    }

    /// Slots needed under slot sharing: the largest vertex parallelism.
    pub fn slots_needed(&self) -> u32 {
        self.vertices.iter().map(|v| v.parallelism).max().unwrap_or(0)
    }

    /// Edges entering `vertex`, ordered by input index.
    pub fn inputs_of(&self, vertex: u32) -> Vec<&VertexEdge> {
        let mut v: Vec<&VertexEdge> = self.vertex_edges.iter().filter(|e| e.to == vertex).collect();
        v.sort_by_key(|e| e.input);
        v
    }

    /// Number of channels of each input of `vertex`: one for a forward edge,
    /// else one per upstream subtask.
    pub fn input_channels(&self, vertex: u32) -> Vec<u32> {
        self.inputs_of(vertex)
            .iter()
            .map(|e| match self.graph.edges[e.edge].partitioning {
                Partitioning::Forward => 1,
                _ => self.vertices[e.from as usize].parallelism,
            })
            .collect()
    }

    /// Edges leaving `vertex`, in edge order.
    pub fn outputs_of(&self, vertex: u32) -> Vec<&VertexEdge> {
        self.vertex_edges.iter().filter(|e| e.from == vertex).collect()
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

fn column_list(schema: &SchemaRef) -> String {
    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}

/// Chains operator `a` into its successor `b` when the edge between them is
/// forward, both have the same parallelism, `a` has no other output, `b` no
/// other input, and both allow chaining.
fn chain(
    graph: &JobGraph,
    topo: &[usize],
    inputs_of: &[Vec<usize>],
    outputs_of: &[Vec<usize>],
    index: &HashMap<&str, usize>,
) -> (Vec<Vertex>, Vec<VertexEdge>) {
    let chained_edge = |ei: usize| -> bool {
        let e = &graph.edges[ei];
        let (a, b) = (index[e.from.as_str()], index[e.to.as_str()]);
        let (oa, ob) = (&graph.operators[a], &graph.operators[b]);
        e.partitioning == Partitioning::Forward
            && oa.parallelism == ob.parallelism
            && outputs_of[a].len() == 1
            && inputs_of[b].len() == 1
            && oa.chainable
            && ob.chainable
    };
    let mut vertex_of = vec![u32::MAX; graph.operators.len()];
    let mut vertices: Vec<Vertex> = Vec::new();
    for &i in topo {
        if vertex_of[i] != u32::MAX {
            continue;
        }
        // `i` heads a chain unless its single input edge is chained, in which
        // case its predecessor (earlier in topological order) already took it.
        let id = vertices.len() as u32;
        let mut ops = vec![i];
        vertex_of[i] = id;
        let mut cur = i;
        while outputs_of[cur].len() == 1 && chained_edge(outputs_of[cur][0]) {
            let next = index[graph.edges[outputs_of[cur][0]].to.as_str()];
            ops.push(next);
            vertex_of[next] = id;
            cur = next;
        }
        let name = ops.iter().map(|&o| graph.operators[o].uid.as_str()).collect::<Vec<_>>().join(" -> ");
        vertices.push(Vertex { id, operators: ops, parallelism: graph.operators[i].parallelism, name });
    }
    let mut vertex_edges = Vec::new();
    for (ei, e) in graph.edges.iter().enumerate() {
        let (a, b) = (index[e.from.as_str()], index[e.to.as_str()]);
        if vertex_of[a] != vertex_of[b] {
            vertex_edges.push(VertexEdge { edge: ei, from: vertex_of[a], to: vertex_of[b], input: e.input });
        }
    }
    (vertices, vertex_edges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::JobBuilder;

    fn w2(p: u32) -> JobGraph {
        let mut b = JobBuilder::new("w2");
        b.default_parallelism(p);
        b.operator("gen", "datagen", serde_json::json!({"events": 1000}));
        b.operator("ts", "watermark", serde_json::json!({"timestamp_column": "event_time_ms"}));
        b.operator(
            "win",
            "window",
            serde_json::json!({
                "key": ["auction"], "timestamp_column": "event_time_ms",
                "window": {"type": "tumbling", "size": "10s"},
                "aggregates": [{"fn": "count", "as": "count"}, {"fn": "sum", "column": "price", "as": "sum"}]
            }),
        );
        b.operator("sink", "discard", serde_json::json!({}));
        b.forward("gen", "ts");
        b.hash("ts", "win", &["auction"]);
        b.forward("win", "sink");
        b.build()
    }

    #[test]
    fn chains_forward_edges_with_equal_parallelism() {
        let plan = Plan::new(&w2(2), &Registry::builtins(), 0).unwrap();
        let names: Vec<&str> = plan.vertices.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["gen -> ts", "win -> sink"]);
        assert_eq!(plan.vertex_edges.len(), 1);
        assert_eq!(plan.slots_needed(), 2);
        assert_eq!(plan.subtask_count(), 4);
    }

    #[test]
    fn does_not_chain_across_parallelism_change_or_when_disabled() {
        let mut g = w2(2);
        g.operators[3].parallelism = 1;
        g.edges[2].partitioning = Partitioning::Rebalance;
        let plan = Plan::new(&g, &Registry::builtins(), 0).unwrap();
        assert_eq!(plan.vertices.len(), 3);

        let mut g = w2(2);
        g.operators[1].chainable = false;
        let plan = Plan::new(&g, &Registry::builtins(), 0).unwrap();
        let names: Vec<&str> = plan.vertices.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["gen", "ts", "win -> sink"]);
    }

    #[test]
    fn command_line_parallelism_overrides_the_job_default_only() {
        let mut g = w2(2);
        g.operators[3].parallelism = 1;
        g.edges[2].partitioning = Partitioning::Rebalance;
        let plan = Plan::new(&g, &Registry::builtins(), 4).unwrap();
        let ps: Vec<u32> = plan.graph.operators.iter().map(|o| o.parallelism).collect();
        assert_eq!(ps, [4, 4, 4, 1]);
    }

    #[test]
    fn rejects_unknown_kind_with_operator_and_line() {
        let mut g = w2(2);
        g.operators[1].kind = "nope".into();
        g.operators[1].line = 9;
        let e = Plan::new(&g, &Registry::builtins(), 0).unwrap_err();
        assert_eq!(e.operator.as_deref(), Some("ts"));
        assert_eq!(e.line, 9);
        assert_eq!(e.field.as_deref(), Some("kind"));
        assert!(e.message.contains("unknown operator kind `nope`"), "{e}");
    }

    #[test]
    fn rejects_forward_with_unequal_parallelism() {
        let mut g = w2(2);
        g.operators[3].parallelism = 1;
        let e = Plan::new(&g, &Registry::builtins(), 0).unwrap_err();
        assert!(e.message.contains("forward needs equal parallelism"), "{e}");
        assert_eq!(e.operator.as_deref(), Some("edge win -> sink"));
    }

    #[test]
    fn rejects_cycles_duplicates_dangling_edges_and_unknown_keys() {
        let mut g = w2(2);
        g.edges.push(EdgeSpec {
            from: "win".into(),
            to: "ts".into(),
            partitioning: Partitioning::Forward,
            key: vec![],
            input: 0,
            line: 0,
        });
        g.operators[3].kind = "map".into();
        g.operators[3].config = serde_json::json!({"columns": []});
        assert!(Plan::new(&g, &Registry::builtins(), 0).is_err());

        let mut g = w2(2);
        g.operators[2].uid = "ts".into();
        assert!(Plan::new(&g, &Registry::builtins(), 0).unwrap_err().message.contains("duplicate uid"));

        let mut g = w2(2);
        g.edges[0].from = "ghost".into();
        assert!(Plan::new(&g, &Registry::builtins(), 0).unwrap_err().message.contains("no operator has uid `ghost`"));

        let mut g = w2(2);
        g.edges[1].key = vec!["nosuch".into()];
        let e = Plan::new(&g, &Registry::builtins(), 0).unwrap_err();
        assert!(e.message.contains("key column `nosuch`"), "{e}");
    }

    #[test]
    fn rejects_unconnected_inputs_and_sink_outputs() {
        let mut g = w2(2);
        g.edges.remove(1);
        let e = Plan::new(&g, &Registry::builtins(), 0).unwrap_err();
        assert_eq!(e.operator.as_deref(), Some("win"));
        assert!(e.message.contains("not connected"), "{e}");
    }

    #[test]
    fn edge_schemas_are_fixed_at_plan_time() {
        let plan = Plan::new(&w2(2), &Registry::builtins(), 0).unwrap();
        let win = plan.graph.operator_index("win").unwrap();
        let cols: Vec<&str> = plan.output_schemas[win].fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(cols, ["auction", "window_start", "window_end", "count", "sum"]);
    }
}
