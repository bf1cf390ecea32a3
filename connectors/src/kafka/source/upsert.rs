//! Upsert topics (Flink's `upsert-kafka` tables): each record is the latest
//! row of its key; one without a value deletes the key. The key's columns
//! come from the record key (a JSON object, or one text column), the other
//! columns from the value (fields of the key in the value are ignored), and
//! the change kind (`+U` an upsert, `-D` a delete) goes to the op column.
//! The `changelog_normalize` operator after the source turns these into a
//! full changelog.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, UInt32Array};
use arrow::compute::take;
use weir_runtime::error::OpResult;

use super::*;

impl KafkaSource {
    /// Decodes an upsert topic's records: per good record one row (value
    /// columns, then key columns), its change kind, and the bad records.
    pub(super) fn decode_upserts(
        &mut self,
        values: &[Option<&[u8]>],
        keys: &[Option<&[u8]>],
    ) -> OpResult<DecodedValues> {
        let open = self.open.as_mut().expect("open");
        let format = self.config.upsert_key.as_ref().expect("an upsert source").format;
        // A delete decodes as a row of nulls.
        let filled: Vec<Option<&[u8]>> = values.iter().map(|v| Some(v.unwrap_or(b"{}"))).collect();
        let v = open.decoder.as_mut().expect("json decoder").decode(&filled)?;
        let mut bad: BadRecords = v.bad.clone();
        let present: Vec<usize> = (0..keys.len()).filter(|&i| keys[i].is_some()).collect();
        bad.extend(
            (0..keys.len()).filter(|&i| keys[i].is_none()).map(|i| (i, "an upsert record needs a key".to_string())),
        );
        let (key_columns, key_rows): (Vec<ArrayRef>, Vec<usize>) = match format {
            KeyFormat::Json => {
                let present_keys: Vec<Option<&[u8]>> = present.iter().map(|&i| keys[i]).collect();
                let k = open.key_decoder.as_mut().expect("key decoder").decode(&present_keys)?;
                bad.extend(k.bad.iter().map(|(j, why)| (present[*j], format!("the key: {why}"))));
                let rows =
                    (0..present.len()).filter(|j| !k.bad.iter().any(|b| b.0 == *j)).map(|j| present[j]).collect();
                (k.batch.columns().to_vec(), rows)
            }
            KeyFormat::Raw => {
                // Keys were checked to be UTF-8 when read.
                let text =
                    present.iter().map(|&i| std::str::from_utf8(keys[i].unwrap_or_default()).unwrap_or_default());
                (vec![Arc::new(StringArray::from_iter_values(text)) as ArrayRef], present)
            }
        };
        bad.sort_by_key(|b| b.0);
        bad.dedup_by_key(|b| b.0);
        let value_rows: Vec<usize> = (0..values.len()).filter(|i| !v.bad.iter().any(|b| b.0 == *i)).collect();
        let good: Vec<usize> = (0..values.len()).filter(|i| bad.binary_search_by_key(i, |b| b.0).is_err()).collect();
        let pick = |rows: &[usize]| -> UInt32Array {
            good.iter().map(|i| rows.binary_search(i).expect("a good record decoded") as u32).collect()
        };
        let (vi, ki) = (pick(&value_rows), pick(&key_rows));
        let mut columns = Vec::new();
        for c in v.batch.columns() {
            columns.push(take(c.as_ref(), &vi, None)?);
        }
        for c in &key_columns {
            columns.push(take(c.as_ref(), &ki, None)?);
        }
        let changes = good.iter().map(|&i| (i, if values[i].is_some() { "+U" } else { "-D" })).collect();
        Ok((columns, bad, Some(changes)))
    }
}
