//! SQL expressions over Arrow batches, compiled once at plan time into
//! DataFusion physical expressions and evaluated a whole batch at a time.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Schema};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use crate::error::OperatorError;

/// A compiled SQL expression with a known result type.
#[derive(Debug, Clone)]
pub struct CompiledExpr {
    sql: String,
    expr: Arc<dyn PhysicalExpr>,
    data_type: DataType,
    nullable: bool,
}

impl CompiledExpr {
    /// Parses, type-checks and compiles `sql` against `schema`. The error is a
    /// message for the user (what is wrong with the expression).
    pub fn compile(sql: &str, schema: &Schema) -> Result<Self, String> {
        let df_schema = DFSchema::try_from(schema.clone()).map_err(|e| e.to_string())?;
        // Casts to VARCHAR/STRING give Utf8, the string type of Weir's
        // batches, connectors and keys (DataFusion's default is Utf8View).
        let config = datafusion::prelude::SessionConfig::new()
            .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false);
        let ctx = SessionContext::new_with_config(config);
        crate::functions::register(&ctx);
        let logical = ctx.parse_sql_expr(sql, &df_schema).map_err(|e| clean(e.to_string()))?;
        let expr = ctx.create_physical_expr(logical, &df_schema).map_err(|e| clean(e.to_string()))?;
        let data_type = expr.data_type(schema).map_err(|e| clean(e.to_string()))?;
        let nullable = expr.nullable(schema).map_err(|e| clean(e.to_string()))?;
        Ok(Self { sql: sql.to_string(), expr, data_type, nullable })
    }

    /// The expression as written.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// Result type.
    pub fn data_type(&self) -> &DataType {
        &self.data_type
    }

    /// Whether the result may contain nulls.
    pub fn nullable(&self) -> bool {
        self.nullable
    }

    /// Evaluates the expression over a whole batch.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<ArrayRef, OperatorError> {
        let value = self.expr.evaluate(batch)?;
        Ok(value.into_array(batch.num_rows())?)
    }
}

/// DataFusion prefixes messages with its error class; users need the rest.
fn clean(msg: String) -> String {
    let msg = msg.trim();
    for prefix in ["Error during planning: ", "Schema error: ", "SQL error: ", "type_coercion\ncaused by\n"] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            return rest.trim().to_string();
        }
    }
    msg.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{Field, Int64Type};

    #[test]
    fn casts_to_strings_give_utf8() {
        let schema = Schema::new(vec![Field::new("n", DataType::Int64, false)]);
        for sql in ["CAST(n AS VARCHAR)", "CAST(n AS STRING)"] {
            assert_eq!(CompiledExpr::compile(sql, &schema).unwrap().data_type(), &DataType::Utf8, "{sql}");
        }
    }

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            ("price", Arc::new(Int64Array::from(vec![1000, 2001, 3999])) as ArrayRef),
            ("channel", Arc::new(StringArray::from(vec!["apple", "baidu", "google"])) as ArrayRef),
        ])
        .unwrap()
    }

    #[test]
    fn integer_arithmetic_truncates() {
        let b = batch();
        let e = CompiledExpr::compile("price * 908 / 1000", &b.schema()).unwrap();
        assert_eq!(e.data_type(), &DataType::Int64);
        let out = e.evaluate(&b).unwrap();
        assert_eq!(out.as_primitive::<Int64Type>().values().to_vec(), vec![908, 1816, 3631]);
    }

    #[test]
    fn predicates_are_boolean() {
        let b = batch();
        let e = CompiledExpr::compile("price % 2 = 0 AND channel <> 'baidu'", &b.schema()).unwrap();
        assert_eq!(e.data_type(), &DataType::Boolean);
        let out = e.evaluate(&b).unwrap();
        assert_eq!(out.as_boolean().iter().collect::<Vec<_>>(), vec![Some(true), Some(false), Some(false)]);
    }

    #[test]
    fn type_mismatch_and_unknown_columns_are_planning_errors() {
        let schema = Schema::new(vec![
            Field::new("price", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None), false),
        ]);
        let e = CompiledExpr::compile("price + ts", &schema).unwrap_err();
        assert!(e.to_lowercase().contains("cannot") || e.contains("coerc"), "{e}");
        let e = CompiledExpr::compile("nosuch + 1", &schema).unwrap_err();
        assert!(e.contains("nosuch"), "{e}");
        assert!(CompiledExpr::compile("price +", &schema).is_err());
    }
}
