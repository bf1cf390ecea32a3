//! Updating input as the sinks that write by key see it (JDBC, MongoDB): a
//! text column holds each row's change kind the way Flink writes them
//! (`+I`, `+U`, `-U`, `-D`), and of the rows written together only the last
//! change of each key counts.
//!
//! `-U` (the old version of an updated row) deletes its key like `-D`: it
//! is almost always followed by the `+U` of the new version, which wins as
//! the later change of the same key; but where the new version was filtered
//! out (a `HAVING` over an updating aggregation), the old row must go.

use std::collections::HashMap;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Schema};
use weir_runtime::error::{OpResult, OperatorError};

/// A change to a keyed destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Insert, or replace by key.
    Upsert,
    /// Delete by key.
    Delete,
}

/// The index of the change-kind column `name` in `schema`, checked: it must
/// be text, and deletes need a key to delete by.
pub fn op_column(schema: &Schema, name: &str, has_key: bool) -> Result<usize, String> {
    let i = schema.index_of(name).map_err(|_| format!("no column `{name}` in the input"))?;
    if !matches!(schema.field(i).data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
        return Err(format!("op_column `{name}` must be text (+I, +U, -U, -D)"));
    }
    if !has_key {
        return Err("deletes need the destination's key: give `key` with `op_column`".into());
    }
    Ok(i)
}

/// The change of each row of `batch`: upserts for every row without an
/// op column.
pub fn ops(batch: &RecordBatch, op: Option<usize>) -> OpResult<Vec<Op>> {
    let Some(i) = op else { return Ok(vec![Op::Upsert; batch.num_rows()]) };
    let a = arrow::compute::cast(batch.column(i), &DataType::Utf8)?;
    let a = a.as_string::<i32>();
    a.iter()
        .map(|v| match v {
            Some("+I" | "+U") => Ok(Op::Upsert),
            Some("-U" | "-D") => Ok(Op::Delete),
            other => Err(OperatorError::InvalidData(format!("change kind {other:?} is none of +I, +U, -U, -D"))),
        })
        .collect()
}

/// The last change of each key among `rows` (in their order), in the order
/// of those last changes; `key` gives a row's key as bytes that are equal
/// exactly when the keys are.
pub fn last_per_key<T>(rows: Vec<(Op, T)>, key: impl Fn(&T) -> Vec<u8>) -> Vec<(Op, T)> {
    let mut last: HashMap<Vec<u8>, usize> = HashMap::with_capacity(rows.len());
    for (i, (_, row)) in rows.iter().enumerate() {
        last.insert(key(row), i);
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    let mut rows: Vec<Option<(Op, T)>> = rows.into_iter().map(Some).collect();
    keep.into_iter().map(|i| rows[i].take().expect("each index once")).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::StringArray;
    use arrow::datatypes::Field;

    use super::*;

    #[test]
    fn the_last_change_of_each_key_wins_in_order() {
        let rows = vec![(Op::Upsert, ("a", 1)), (Op::Upsert, ("b", 2)), (Op::Delete, ("a", 3)), (Op::Upsert, ("c", 4))];
        let out = last_per_key(rows, |r| r.0.as_bytes().to_vec());
        assert_eq!(out, vec![(Op::Upsert, ("b", 2)), (Op::Delete, ("a", 3)), (Op::Upsert, ("c", 4))]);
    }

    #[test]
    fn change_kinds_are_read_and_unknown_ones_refused() {
        let schema = Arc::new(Schema::new(vec![Field::new("op", DataType::Utf8, true)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(vec!["+I", "-U", "+U", "-D"]))])
                .unwrap();
        assert_eq!(ops(&batch, Some(0)).unwrap(), vec![Op::Upsert, Op::Delete, Op::Upsert, Op::Delete]);
        assert_eq!(ops(&batch, None).unwrap(), vec![Op::Upsert; 4]);
        let bad = RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(vec!["x"]))]).unwrap();
        assert!(ops(&bad, Some(0)).unwrap_err().to_string().contains("none of +I"));
        assert!(op_column(&schema, "op", false).unwrap_err().contains("need the destination's key"));
        assert!(op_column(&schema, "kind", true).unwrap_err().contains("no column `kind`"));
        assert_eq!(op_column(&schema, "op", true), Ok(0));
    }
}
