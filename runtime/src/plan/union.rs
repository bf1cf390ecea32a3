//! Unions: several edges feeding one input of an operator. Their records
//! interleave as they arrive; event time is the minimum over every channel
//! of every edge, and the input ends once all of them ended. The edges must
//! carry the same columns and be partitioned alike, so that the operator
//! sees one input.

use arrow::datatypes::SchemaRef;

use crate::error::PlanError;
use crate::graph::EdgeSpec;

/// One schema and one (representative) edge per input, from `edges`
/// (sorted by input) and their `schemas`; a union's edges are checked to
/// agree.
pub(super) fn per_input<'a>(
    uid: &str,
    line: u32,
    edges: &[&'a EdgeSpec],
    schemas: Vec<SchemaRef>,
) -> Result<(Vec<SchemaRef>, Vec<&'a EdgeSpec>), PlanError> {
    let mut out_schemas: Vec<SchemaRef> = Vec::with_capacity(schemas.len());
    let mut out_edges: Vec<&EdgeSpec> = Vec::with_capacity(edges.len());
    for (e, schema) in edges.iter().zip(schemas) {
        let Some(first) = out_edges.last().filter(|f| f.input == e.input) else {
            out_edges.push(e);
            out_schemas.push(schema);
            continue;
        };
        let first_schema = out_schemas.last().expect("pushed together");
        if !same_columns(first_schema, &schema) {
            return Err(PlanError::operator(
                uid,
                line,
                format!(
                    "input {} is the union of the edges from `{}` and `{}`, which must carry the same columns: ({}) against ({})",
                    e.input,
                    first.from,
                    e.from,
                    columns(first_schema),
                    columns(&schema)
                ),
            ));
        }
        if first.partitioning != e.partitioning || first.key != e.key {
            return Err(PlanError::operator(
                uid,
                line,
                format!(
                    "input {} is the union of the edges from `{}` ({}) and `{}` ({}), which must be partitioned alike",
                    e.input,
                    first.from,
                    routing(first),
                    e.from,
                    routing(e)
                ),
            ));
        }
    }
    Ok((out_schemas, out_edges))
}

/// Same names, types and nullability, in the same order.
fn same_columns(a: &SchemaRef, b: &SchemaRef) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields().iter())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type() && x.is_nullable() == y.is_nullable())
}

fn columns(s: &SchemaRef) -> String {
    s.fields()
        .iter()
        .map(|f| format!("{} {}{}", f.name(), f.data_type(), if f.is_nullable() { "" } else { " not null" }))
        .collect::<Vec<_>>()
        .join(", ")
}

fn routing(e: &EdgeSpec) -> String {
    if e.key.is_empty() {
        e.partitioning.to_string()
    } else {
        format!("{} on [{}]", e.partitioning, e.key.join(", "))
    }
}
