//! `values`: a bounded source of rows written in the job file, e.g. a small
//! dimension table. Rows are split over subtasks by position (`row % P`).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;

use super::{Arity, Collector, Instance, OperatorFactory, PlanContext, SourceOperator, SourceStatus, SubtaskInfo};
use crate::error::{OpResult, PlanError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    schema: Vec<Column>,
    rows: Vec<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Column {
    name: String,
    #[serde(rename = "type")]
    data_type: String,
    #[serde(default = "yes")]
    nullable: bool,
}

fn yes() -> bool {
    true
}

/// Maps a type name of the job file to an Arrow type.
pub fn parse_type(name: &str) -> Option<DataType> {
    Some(match name.to_ascii_lowercase().as_str() {
        "bool" | "boolean" => DataType::Boolean,
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" | "int" => DataType::Int32,
        "int64" | "bigint" | "long" => DataType::Int64,
        "uint8" => DataType::UInt8,
        "uint16" => DataType::UInt16,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "float32" | "float" => DataType::Float32,
        "float64" | "double" => DataType::Float64,
        "string" | "utf8" => DataType::Utf8,
        _ => return None,
    })
}

fn build(ctx: &PlanContext<'_>) -> Result<(SchemaRef, Config), PlanError> {
    let c: Config = ctx.config()?;
    if c.schema.is_empty() {
        return Err(ctx.error("schema needs at least one column").field("config.schema"));
    }
    let mut fields = Vec::with_capacity(c.schema.len());
    for (i, col) in c.schema.iter().enumerate() {
        let dt = parse_type(&col.data_type).ok_or_else(|| {
            ctx.error(format!(
                "unknown type `{}`; use one of bool, int8..int64, uint8..uint64, float32, float64, string",
                col.data_type
            ))
            .field(format!("config.schema[{i}].type"))
        })?;
        fields.push(Field::new(&col.name, dt, col.nullable));
    }
    let schema = Arc::new(Schema::new(fields));
    for (i, row) in c.rows.iter().enumerate() {
        if let Some(k) = row.keys().find(|k| schema.index_of(k).is_err()) {
            return Err(ctx.error(format!("column `{k}` is not in the schema")).field(format!("config.rows[{i}]")));
        }
    }
    decode(&schema, &c.rows)
        .map_err(|e| ctx.error(format!("rows do not match the schema: {e}")).field("config.rows"))?;
    Ok((schema, c))
}

fn decode(
    schema: &SchemaRef,
    rows: &[serde_json::Map<String, serde_json::Value>],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut decoder =
        arrow::json::ReaderBuilder::new(schema.clone()).with_batch_size(rows.len().max(1)).build_decoder()?;
    decoder.serialize(rows)?;
    Ok(decoder.flush()?.unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
}

/// Factory of `values`.
#[derive(Debug)]
pub struct ValuesFactory;

impl OperatorFactory for ValuesFactory {
    fn kind(&self) -> &str {
        "values"
    }

    fn arity(&self) -> Arity {
        Arity::Source
    }

    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Ok(build(ctx)?.0)
    }

    fn create(&self, ctx: &PlanContext<'_>, subtask: SubtaskInfo) -> Result<Instance, PlanError> {
        let (schema, c) = build(ctx)?;
        let mine: Vec<_> = c
            .rows
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i as u32 % subtask.parallelism == subtask.index)
            .map(|(_, r)| r)
            .collect();
        let batch = decode(&schema, &mine).map_err(|e| ctx.error(e.to_string()))?;
        Ok(Instance::Source(Box::new(Values { batch: Some(batch) })))
    }
}

struct Values {
    batch: Option<RecordBatch>,
}

impl SourceOperator for Values {
    fn poll(&mut self, out: &mut Collector) -> OpResult<SourceStatus> {
        match self.batch.take() {
            Some(b) => {
                out.emit(b);
                Ok(SourceStatus::Emitted)
            }
            None => Ok(SourceStatus::Finished),
        }
    }
}
