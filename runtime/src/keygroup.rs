//! Key columns: which Arrow types can be keys and how the rows of a batch
//! hash (column by column, with [`weir_types::keygroup`]'s functions, which
//! this module re-exports). The hash is part of the state format: it must
//! never change for a given key value.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
pub use weir_types::keygroup::{
    combine, hash_bytes, hash_i64, key_group, key_group_range, mix64, subtask_for_key_group, NULL_HASH,
};

use crate::error::OperatorError;

/// Whether a column type can be a key.
pub fn is_key_type(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::Boolean
            | DataType::Timestamp(_, _)
    )
}

macro_rules! hash_ints {
    ($col:expr, $ty:ty, $out:expr, $first:expr) => {{
        let a = $col.as_primitive::<$ty>();
        for (i, h) in $out.iter_mut().enumerate() {
            let v = if a.is_null(i) { NULL_HASH } else { hash_i64(a.value(i) as i64) };
            *h = if $first { v } else { combine(*h, v) };
        }
    }};
}

/// Hashes the rows of `columns` (the key columns of one batch) into `out`,
/// resized to the number of rows.
pub fn hash_rows(columns: &[ArrayRef], out: &mut Vec<u64>) -> Result<(), OperatorError> {
    let rows = columns.first().map(|c| c.len()).unwrap_or(0);
    out.clear();
    out.resize(rows, 0);
    for (ci, col) in columns.iter().enumerate() {
        let first = ci == 0;
        match col.data_type() {
            DataType::Int64 if col.null_count() == 0 && first => {
                let a = col.as_primitive::<Int64Type>();
                for (h, &v) in out.iter_mut().zip(a.values().iter()) {
                    *h = hash_i64(v);
                }
            }
            DataType::Int8 => hash_ints!(col, Int8Type, out, first),
            DataType::Int16 => hash_ints!(col, Int16Type, out, first),
            DataType::Int32 => hash_ints!(col, Int32Type, out, first),
            DataType::Int64 => hash_ints!(col, Int64Type, out, first),
            // A timestamp hashes as its number in its unit.
            DataType::Timestamp(_, _) => {
                let ints = arrow::compute::cast(col, &DataType::Int64)?;
                hash_ints!(ints, Int64Type, out, first)
            }
            DataType::UInt8 => hash_ints!(col, UInt8Type, out, first),
            DataType::UInt16 => hash_ints!(col, UInt16Type, out, first),
            DataType::UInt32 => hash_ints!(col, UInt32Type, out, first),
            DataType::UInt64 => hash_ints!(col, UInt64Type, out, first),
            DataType::Boolean => {
                let a = col.as_boolean();
                for (i, h) in out.iter_mut().enumerate() {
                    let v = if a.is_null(i) { NULL_HASH } else { hash_i64(a.value(i) as i64) };
                    *h = if first { v } else { combine(*h, v) };
                }
            }
            DataType::Utf8 => {
                let a = col.as_string::<i32>();
                for (i, h) in out.iter_mut().enumerate() {
                    let v = if a.is_null(i) { NULL_HASH } else { hash_bytes(a.value(i).as_bytes()) };
                    *h = if first { v } else { combine(*h, v) };
                }
            }
            DataType::LargeUtf8 => {
                let a = col.as_string::<i64>();
                for (i, h) in out.iter_mut().enumerate() {
                    let v = if a.is_null(i) { NULL_HASH } else { hash_bytes(a.value(i).as_bytes()) };
                    *h = if first { v } else { combine(*h, v) };
                }
            }
            DataType::Binary => {
                let a = col.as_binary::<i32>();
                for (i, h) in out.iter_mut().enumerate() {
                    let v = if a.is_null(i) { NULL_HASH } else { hash_bytes(a.value(i)) };
                    *h = if first { v } else { combine(*h, v) };
                }
            }
            DataType::LargeBinary => {
                let a = col.as_binary::<i64>();
                for (i, h) in out.iter_mut().enumerate() {
                    let v = if a.is_null(i) { NULL_HASH } else { hash_bytes(a.value(i)) };
                    *h = if first { v } else { combine(*h, v) };
                }
            }
            other => {
                return Err(OperatorError::InvalidData(format!("a key column cannot have type {other}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};
    use proptest::prelude::*;
    use std::sync::Arc;

    proptest! {
        #[test]
        fn integer_width_does_not_change_the_hash(v in any::<i32>()) {
            let a: ArrayRef = Arc::new(Int32Array::from(vec![v]));
            let b: ArrayRef = Arc::new(Int64Array::from(vec![i64::from(v)]));
            let (mut ha, mut hb) = (Vec::new(), Vec::new());
            hash_rows(&[a], &mut ha).unwrap();
            hash_rows(&[b], &mut hb).unwrap();
            prop_assert_eq!(ha, hb);
        }
    }

    #[test]
    fn keys_spread_over_key_groups() {
        let a: ArrayRef = Arc::new(Int64Array::from((0..10_000).collect::<Vec<i64>>()));
        let mut h = Vec::new();
        hash_rows(&[a], &mut h).unwrap();
        let mut per_group = [0u32; 128];
        for v in h {
            per_group[key_group(v, 128) as usize] += 1;
        }
        assert!(per_group.iter().all(|&n| n > 40 && n < 120), "{per_group:?}");
    }

    #[test]
    fn composite_keys_differ_from_their_parts() {
        let a: ArrayRef = Arc::new(StringArray::from(vec!["x", "x"]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let mut h = Vec::new();
        hash_rows(&[a, b], &mut h).unwrap();
        assert_ne!(h[0], h[1]);
    }
}
