//! The [`Plan`] of a JobGraph: validated against a registry, with an Arrow
//! schema fixed on every edge and forward-connected operators chained into
//! vertices ([`chain`]).
//!
//! Planning is deterministic: the job manager plans a graph at submit time to
//! reject invalid jobs, and every task manager re-plans the same graph to
//! instantiate its tasks.

mod chain;
#[cfg(test)]
mod tests;
mod union;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::error::PlanError;
use crate::graph::{EdgeSpec, JobGraph, Partitioning, DEFAULT_MAX_PARALLELISM};
use crate::operators::{Arity, OperatorFactory, PlanContext, Registry};

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
    /// Side outputs of every operator (name and schema), in port order:
    /// side output `i` is port `i + 1` (port 0 is the main output).
    pub side_schemas: Vec<Vec<(String, SchemaRef)>>,
    /// The port of its upstream operator each edge leaves, by edge index.
    pub edge_ports: Vec<u32>,
    /// Sorted, in topological order.
    topo: Vec<usize>,
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

        // Sinks have no outputs: said first, since the edge out of a sink
        // also shows up as a surplus input of the operator it feeds.
        for (i, op) in graph.operators.iter().enumerate() {
            let sink_output =
                outputs_of[i].iter().find(|&&ei| graph.edges[ei].output.is_empty()).filter(|_| factories[i].is_sink());
            if let Some(&ei) = sink_output {
                let e = &graph.edges[ei];
                return Err(PlanError::operator(
                    &edge_name(e),
                    e.line,
                    format!("`{}` is a sink and has no outputs: remove this edge", op.uid),
                )
                .field("from"));
            }
        }

        // Arity: every input of every operator is fed (by one edge, or by
        // several: their union).
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
        let mut side_schemas: Vec<Vec<(String, SchemaRef)>> = vec![Vec::new(); graph.operators.len()];
        for &i in &topo {
            let op = &graph.operators[i];
            let mut edges: Vec<&EdgeSpec> = inputs_of[i].iter().map(|&ei| &graph.edges[ei]).collect();
            edges.sort_by_key(|e| e.input);
            let mut schemas = Vec::with_capacity(edges.len());
            for e in &edges {
                let upstream = index[e.from.as_str()];
                let schema = if e.output.is_empty() {
                    output_schemas[upstream].clone().expect("topological order")
                } else {
                    let sides = &side_schemas[upstream];
                    match sides.iter().find(|(name, _)| *name == e.output) {
                        Some((_, schema)) => schema.clone(),
                        None => {
                            let known: Vec<&str> = sides.iter().map(|(n, _)| n.as_str()).collect();
                            return Err(PlanError::operator(
                                &edge_name(e),
                                e.line,
                                format!(
                                    "`{}` has no side output `{}`; {}",
                                    e.from,
                                    e.output,
                                    if known.is_empty() {
                                        "it has none".to_string()
                                    } else {
                                        format!("its side outputs: {}", known.join(", "))
                                    }
                                ),
                            )
                            .field("output"));
                        }
                    }
                };
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
            let (schemas, edges) = union::per_input(&op.uid, op.line, &edges, schemas)?;
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
            let sides = factory.side_outputs(&ctx)?;
            for (n, (name, _)) in sides.iter().enumerate() {
                if name.is_empty() || sides[..n].iter().any(|(other, _)| other == name) {
                    return Err(ctx.error(format!("side output names must be distinct and not empty: `{name}`")));
                }
            }
            side_schemas[i] = sides;
            output_schemas[i] = Some(out);
            input_schemas[i] = schemas;
        }
        let output_schemas: Vec<SchemaRef> = output_schemas.into_iter().map(|s| s.expect("planned")).collect();

        let edge_ports = graph
            .edges
            .iter()
            .map(|e| {
                let sides = &side_schemas[index[e.from.as_str()]];
                sides.iter().position(|(name, _)| *name == e.output).map_or(0, |p| p as u32 + 1)
            })
            .collect();
        let (vertices, vertex_edges) = chain::chain(&graph, &topo, &inputs_of, &outputs_of, &index);
        Ok(Plan {
            graph,
            output_schemas,
            input_schemas,
            vertices,
            vertex_edges,
            state_types,
            factories,
            side_schemas,
            edge_ports,
            topo,
        })
    }

    /// The schema of the batches on edge `edge` (an index into `graph.edges`).
    pub fn edge_schema(&self, edge: usize) -> SchemaRef {
        let e = &self.graph.edges[edge];
        let from = self.graph.operator_index(&e.from).expect("planned edges join planned operators");
        match self.edge_ports[edge] {
            0 => self.output_schemas[from].clone(),
            port => self.side_schemas[from][port as usize - 1].1.clone(),
        }
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

    /// The operator input each edge entering `vertex` feeds, in the order of
    /// [`Plan::inputs_of`] (several edges feed one input in a union).
    pub fn input_ports(&self, vertex: u32) -> Vec<usize> {
        self.inputs_of(vertex).iter().map(|e| e.input as usize).collect()
    }

    /// The position of vertex edge `edge` (an index into `graph.edges`)
    /// among the edges entering its target vertex: the inbox slot its
    /// channels arrive in.
    pub fn input_slot(&self, edge: usize) -> Option<u32> {
        let to = self.vertex_edges.iter().find(|e| e.edge == edge)?.to;
        self.inputs_of(to).iter().position(|e| e.edge == edge).map(|p| p as u32)
    }

    /// The edge of each input of operator `op` (the first, for a union;
    /// every edge of a union is partitioned alike).
    pub fn input_edge_specs(&self, op: usize) -> Vec<&EdgeSpec> {
        let uid = &self.graph.operators[op].uid;
        let mut edges: Vec<&EdgeSpec> = self.graph.edges.iter().filter(|e| &e.to == uid).collect();
        edges.sort_by_key(|e| e.input);
        edges.dedup_by_key(|e| e.input);
        edges
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

fn column_list(schema: &SchemaRef) -> String {
    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}
