//! Window keys: each key of a window gets a slot, its accumulators' index.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};

use super::*;
use crate::keygroup::{hash_i64, key_group, mix64};
use arrow::row::RowConverter;
use std::hash::{BuildHasherDefault, Hasher};

// ------------------------------------------------------------------ keys

/// Hashes an `i64` key with the same mix as key groups (no SipHash per row).
#[derive(Default)]
pub(super) struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix64(self.0 ^ u64::from(b));
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.0 = mix64(v as u64 ^ self.0);
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = mix64(u64::from(v) ^ self.0);
    }
}

pub(super) type Mix = BuildHasherDefault<MixHasher>;

pub(super) enum KeyCodec {
    /// One non-null integer column, widened to `i64`; holds the original type.
    Int(DataType),
    /// Any other key, in Arrow's row format.
    Rows(RowConverter),
}

/// Keys of a batch, ready for lookups.
pub(super) enum BatchKeys {
    Int(Int64Array),
    Rows(arrow::row::Rows),
}

/// A key index: key -> slot, and the keys by slot for output.
#[derive(Default)]
pub(super) struct KeyIndex {
    pub(super) ints: HashMap<i64, u32, Mix>,
    pub(super) int_keys: Vec<i64>,
    /// Key group of each integer key, computed once when the key arrives
    /// (if `max_parallelism` is set) so that a snapshot does not hash and
    /// divide for every key while the task is paused at a barrier.
    pub(super) int_groups: Vec<u32>,
    pub(super) max_parallelism: u32,
    pub(super) rows: HashMap<Box<[u8]>, u32>,
    pub(super) row_keys: Vec<Box<[u8]>>,
}

impl KeyIndex {
    /// An index that records the key groups of integer keys.
    pub(super) fn with_groups(max_parallelism: u32) -> Self {
        Self { max_parallelism, ..Self::default() }
    }

    pub(super) fn len(&self) -> usize {
        self.int_keys.len() + self.row_keys.len()
    }

    pub(super) fn push_int(&mut self, k: i64) {
        self.int_keys.push(k);
        if self.max_parallelism > 0 {
            self.int_groups.push(key_group(hash_i64(k), self.max_parallelism));
        }
    }

    /// Slot of row `r`'s key, inserting it (and growing `accs`) if new.
    #[inline]
    pub(super) fn slot(&mut self, keys: &BatchKeys, r: usize, accs: &mut Accumulators) -> u32 {
        match keys {
            BatchKeys::Int(a) => {
                let k = a.value(r);
                let next = self.int_keys.len() as u32;
                let slot = *self.ints.entry(k).or_insert(next);
                if slot == next {
                    self.push_int(k);
                    accs.grow();
                }
                slot
            }
            BatchKeys::Rows(rows) => {
                let k = rows.row(r);
                if let Some(&s) = self.rows.get(k.as_ref()) {
                    return s;
                }
                let s = self.row_keys.len() as u32;
                let owned: Box<[u8]> = k.as_ref().into();
                self.rows.insert(owned.clone(), s);
                self.row_keys.push(owned);
                accs.grow();
                s
            }
        }
    }
}

impl KeyCodec {
    pub(super) fn extract(&self, batch: &RecordBatch, key: &[usize]) -> OpResult<BatchKeys> {
        Ok(match self {
            KeyCodec::Int(_) => {
                let col = batch.column(key[0]);
                let col = if col.data_type() == &DataType::Int64 { col.clone() } else { cast(col, &DataType::Int64)? };
                BatchKeys::Int(col.as_primitive::<Int64Type>().clone())
            }
            KeyCodec::Rows(conv) => {
                let cols: Vec<ArrayRef> = key.iter().map(|&i| batch.column(i).clone()).collect();
                BatchKeys::Rows(conv.convert_columns(&cols)?)
            }
        })
    }

    /// Key columns for the given slots of `index`.
    pub(super) fn columns(&self, index: &KeyIndex, slots: &[u32]) -> OpResult<Vec<ArrayRef>> {
        Ok(match self {
            KeyCodec::Int(dt) => {
                let a: ArrayRef =
                    Arc::new(Int64Array::from_iter_values(slots.iter().map(|&s| index.int_keys[s as usize])));
                vec![if dt == &DataType::Int64 { a } else { cast(&a, dt)? }]
            }
            KeyCodec::Rows(conv) => {
                let parser = conv.parser();
                conv.convert_rows(slots.iter().map(|&s| parser.parse(&index.row_keys[s as usize])))?
            }
        })
    }
}

impl KeyIndex {
    pub(super) fn raw_key(&self, slot: u32) -> Vec<u8> {
        if self.row_keys.is_empty() {
            self.int_keys[slot as usize].to_le_bytes().to_vec()
        } else {
            self.row_keys[slot as usize].to_vec()
        }
    }

    /// Inserts a key in its snapshot form; returns its slot.
    pub(super) fn insert_raw(&mut self, codec: &KeyCodec, raw: &[u8], accs: &mut Accumulators) -> OpResult<u32> {
        let slot = self.len() as u32;
        match codec {
            KeyCodec::Int(_) => {
                let k = i64::from_le_bytes(
                    raw.try_into().map_err(|_| OperatorError::State("an integer window key is not 8 bytes".into()))?,
                );
                if let Some(&s) = self.ints.get(&k) {
                    return Ok(s);
                }
                self.ints.insert(k, slot);
                self.push_int(k);
            }
            KeyCodec::Rows(_) => {
                if let Some(&s) = self.rows.get(raw) {
                    return Ok(s);
                }
                self.rows.insert(raw.into(), slot);
                self.row_keys.push(raw.into());
            }
        }
        accs.grow();
        Ok(slot)
    }
}
