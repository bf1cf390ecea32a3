//! Key hashing and key groups.
//!
//! A key is hashed to a 64-bit value; its key group is `hash % max_parallelism`;
//! the subtask owning key group `g` at parallelism `p` is `g * p / max_parallelism`.
//! Subtask `i` thus owns the contiguous range [`key_group_range`], so state
//! kept per key group can be redistributed on rescale by moving whole ranges.
//!
//! The hash is part of the state format (savepoints store state by key group):
//! it must never change for a given key value.

use std::ops::Range;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};

use crate::error::OperatorError;

/// The murmur3 64-bit finaliser: a bijective mix with full avalanche.
#[inline]
pub fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Hash of an integer key (every integer type hashes as its `i64` value, so
/// widening a key column keeps its key groups).
#[inline]
pub fn hash_i64(v: i64) -> u64 {
    mix64(v as u64)
}

/// Hash of a byte-string key (FNV-1a, then mixed).
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

const NULL_HASH: u64 = 0x5bd1_e995_5bd1_e995;

#[inline]
fn combine(acc: u64, h: u64) -> u64 {
    mix64(acc ^ h.wrapping_add(0x9e37_79b9_7f4a_7c15).wrapping_add(acc << 6))
}

/// Key group of a key hash.
#[inline]
pub fn key_group(hash: u64, max_parallelism: u32) -> u32 {
    (hash % u64::from(max_parallelism)) as u32
}

/// Subtask index that owns key group `kg` at parallelism `p`.
#[inline]
pub fn subtask_for_key_group(kg: u32, max_parallelism: u32, p: u32) -> u32 {
    ((u64::from(kg) * u64::from(p)) / u64::from(max_parallelism)) as u32
}

/// Key groups owned by subtask `index` of `p`.
pub fn key_group_range(max_parallelism: u32, p: u32, index: u32) -> Range<u32> {
    let (m, p, i) = (u64::from(max_parallelism), u64::from(p), u64::from(index));
    let start = (i * m).div_ceil(p);
    let end = ((i + 1) * m).div_ceil(p);
    start as u32..end as u32
}

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
            | DataType::Boolean
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
        fn every_key_group_belongs_to_exactly_the_subtask_whose_range_holds_it(
            max_p in 1u32..=4096, p_seed in 0u32..4096, kg_seed in 0u32..4096,
        ) {
            let p = 1 + p_seed % max_p;
            let kg = kg_seed % max_p;
            let owner = subtask_for_key_group(kg, max_p, p);
            prop_assert!(owner < p);
            prop_assert!(key_group_range(max_p, p, owner).contains(&kg));
        }

        #[test]
        fn ranges_partition_all_key_groups(max_p in 1u32..=2048, p_seed in 0u32..2048) {
            let p = 1 + p_seed % max_p;
            let mut next = 0;
            for i in 0..p {
                let r = key_group_range(max_p, p, i);
                prop_assert_eq!(r.start, next);
                prop_assert!(r.end > r.start, "subtask {} of {} owns no key group", i, p);
                next = r.end;
            }
            prop_assert_eq!(next, max_p);
        }

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
    fn hash_is_stable() {
        // Part of the state format: these values must never change.
        assert_eq!(hash_i64(0), 0);
        assert_eq!(key_group(hash_i64(42), 128), key_group(hash_i64(42), 128));
        assert_eq!(hash_bytes(b"apple"), hash_bytes(b"apple"));
        assert_ne!(hash_bytes(b"apple"), hash_bytes(b"google"));
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
