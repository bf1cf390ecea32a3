//! Chaining: which operators share a task.

use std::collections::HashMap;

use crate::graph::{JobGraph, Partitioning};

use super::{Vertex, VertexEdge};

/// Chains operator `a` into its successor `b` when the edge between them is
/// forward, both have the same parallelism, `a` has no other output, `b` no
/// other input, and both allow chaining.
pub(super) fn chain(
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
            && e.output.is_empty()
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
