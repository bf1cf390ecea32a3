//! `map`, `project` and `filter`: SQL expressions over whole batches.
//!
//! - `map` computes columns and keeps every other input column: a computed
//!   column replaces an input column of the same name or is appended;
//! - `project` outputs exactly the listed columns;
//! - `filter` keeps the rows for which `predicate` is true (null is false).

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;

use super::{Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use crate::error::{OpResult, PlanError};
use crate::expr::CompiledExpr;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnsConfig {
    columns: Vec<ColumnEntry>,
}

/// A named expression; `expr` defaults to the column of the same name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ColumnEntry {
    Name(String),
    Expr {
        name: String,
        #[serde(default)]
        expr: Option<String>,
    },
}

impl ColumnEntry {
    fn name(&self) -> &str {
        match self {
            ColumnEntry::Name(n) | ColumnEntry::Expr { name: n, .. } => n,
        }
    }

    fn sql(&self) -> String {
        match self {
            ColumnEntry::Name(n) | ColumnEntry::Expr { name: n, expr: None } => {
                format!("\"{}\"", n.replace('"', "\"\""))
            }
            ColumnEntry::Expr { expr: Some(e), .. } => e.clone(),
        }
    }
}

/// Output column `i`: either input column `j` or a computed expression.
#[derive(Debug, Clone)]
enum Source {
    Input(usize),
    Computed(CompiledExpr),
}

/// Compiles `columns` against `input`. With `keep_input`, input columns not
/// named in `columns` are kept in place (map); otherwise only `columns` are
/// output (project).
fn compile_columns(ctx: &PlanContext<'_>, keep_input: bool) -> Result<(SchemaRef, Vec<Source>), PlanError> {
    let c: ColumnsConfig = ctx.config()?;
    let input = &ctx.inputs[0];
    let mut fields: Vec<Field> = Vec::new();
    let mut sources: Vec<Source> = Vec::new();
    if keep_input {
        for (j, f) in input.fields().iter().enumerate() {
            fields.push(f.as_ref().clone());
            sources.push(Source::Input(j));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, entry) in c.columns.iter().enumerate() {
        let name = entry.name();
        if name.is_empty() || !seen.insert(name.to_string()) {
            return Err(ctx
                .error(format!("column name `{name}` is empty or used twice"))
                .field(format!("config.columns[{i}].name")));
        }
        let sql = entry.sql();
        let expr = CompiledExpr::compile(&sql, input).map_err(|e| {
            ctx.error(format!("expression `{sql}` is invalid: {e}")).field(format!("config.columns[{i}].expr"))
        })?;
        let field = Field::new(name, expr.data_type().clone(), expr.nullable());
        // A plain reference to an input column costs nothing at run time.
        let source = match (entry, input.index_of(name)) {
            (ColumnEntry::Name(_), Ok(j)) | (ColumnEntry::Expr { expr: None, .. }, Ok(j)) => Source::Input(j),
            _ => Source::Computed(expr),
        };
        match fields.iter().position(|f| f.name() == name) {
            Some(at) if keep_input => {
                fields[at] = field;
                sources[at] = source;
            }
            _ => {
                fields.push(field);
                sources.push(source);
            }
        }
    }
    if fields.is_empty() {
        return Err(ctx.error("at least one column is needed").field("config.columns"));
    }
    Ok((Arc::new(Schema::new(fields)), sources))
}

struct Columns {
    schema: SchemaRef,
    sources: Vec<Source>,
}

impl Operator for Columns {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.sources.len());
        for s in &self.sources {
            columns.push(match s {
                Source::Input(j) => batch.column(*j).clone(),
                Source::Computed(e) => e.evaluate(&batch)?,
            });
        }
        out.emit(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }
}

/// Factory of `map`.
#[derive(Debug)]
pub struct MapFactory;

impl OperatorFactory for MapFactory {
    fn kind(&self) -> &str {
        "map"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Ok(compile_columns(ctx, true)?.0)
    }
    fn create(&self, ctx: &PlanContext<'_>, _: SubtaskInfo) -> Result<Instance, PlanError> {
        let (schema, sources) = compile_columns(ctx, true)?;
        Ok(Instance::Operator(Box::new(Columns { schema, sources })))
    }
}

/// Factory of `project`.
#[derive(Debug)]
pub struct ProjectFactory;

impl OperatorFactory for ProjectFactory {
    fn kind(&self) -> &str {
        "project"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Ok(compile_columns(ctx, false)?.0)
    }
    fn create(&self, ctx: &PlanContext<'_>, _: SubtaskInfo) -> Result<Instance, PlanError> {
        let (schema, sources) = compile_columns(ctx, false)?;
        Ok(Instance::Operator(Box::new(Columns { schema, sources })))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterConfig {
    predicate: String,
}

fn compile_predicate(ctx: &PlanContext<'_>) -> Result<CompiledExpr, PlanError> {
    let c: FilterConfig = ctx.config()?;
    let e = CompiledExpr::compile(&c.predicate, &ctx.inputs[0])
        .map_err(|e| ctx.error(format!("predicate `{}` is invalid: {e}", c.predicate)).field("config.predicate"))?;
    if e.data_type() != &DataType::Boolean {
        return Err(ctx
            .error(format!("predicate `{}` has type {}, but a filter needs a boolean", c.predicate, e.data_type()))
            .field("config.predicate"));
    }
    Ok(e)
}

/// Factory of `filter`.
#[derive(Debug)]
pub struct FilterFactory;

impl OperatorFactory for FilterFactory {
    fn kind(&self) -> &str {
        "filter"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        compile_predicate(ctx)?;
        Ok(ctx.inputs[0].clone())
    }
    fn create(&self, ctx: &PlanContext<'_>, _: SubtaskInfo) -> Result<Instance, PlanError> {
        Ok(Instance::Operator(Box::new(Filter { predicate: compile_predicate(ctx)? })))
    }
}

struct Filter {
    predicate: CompiledExpr,
}

impl Operator for Filter {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let mask = self.predicate.evaluate(&batch)?;
        let mask = mask.as_boolean();
        let keep = mask.true_count();
        if keep == batch.num_rows() {
            out.emit(batch);
        } else if keep > 0 {
            out.emit(filter_record_batch(&batch, mask)?);
        }
        Ok(())
    }
}
