//! The `debezium_json` format: change events as Debezium writes them,
//! `{"before": {...}, "after": {...}, "op": "c"}` (inside `"payload"` when
//! the converter includes its schema), read as a changelog. A create or
//! snapshot read (`c`, `r`) is an insert of `after`; an update (`u`) takes
//! back `before` and inserts `after`; a delete (`d`) takes back `before`.
//! A record without a value (Kafka's tombstone after a delete) is skipped.
//! An event missing the image its kind needs, or of another kind, is a bad
//! record.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StructArray};
use arrow::compute::interleave;
use arrow::datatypes::{DataType, Field};
use weir_runtime::error::OpResult;

/// The envelope decoded from each value, around the row's `fields`.
pub fn envelope_fields(fields: &[Field], schema_include: bool) -> Vec<Field> {
    let row = DataType::Struct(fields.iter().map(|f| f.clone().with_nullable(true)).collect::<Vec<_>>().into());
    let envelope = vec![
        Field::new("before", row.clone(), true),
        Field::new("after", row, true),
        Field::new("op", DataType::Utf8, true),
    ];
    if schema_include {
        vec![Field::new("payload", DataType::Struct(envelope.into()), true)]
    } else {
        envelope
    }
}

/// Change rows unfolded from decoded envelopes.
#[derive(Debug)]
pub struct Unfolded {
    /// The row columns, one row per change.
    pub columns: Vec<ArrayRef>,
    /// Per change: the index of its envelope, and its kind.
    pub changes: Vec<(usize, &'static str)>,
    /// Envelopes that are not changes this format knows, with the reason.
    pub bad: Vec<(usize, String)>,
}

/// Unfolds a batch of envelopes (as [`envelope_fields`] decodes them) into
/// change rows.
pub fn unfold(envelopes: &RecordBatch, schema_include: bool) -> OpResult<Unfolded> {
    let parts: Vec<ArrayRef> = if schema_include {
        let payload = envelopes.column(0).as_struct();
        (0..3)
            .map(|i| match payload.nulls() {
                // A missing payload leaves its fields null.
                Some(nulls) => {
                    let child = payload.column(i).to_data().into_builder().nulls(Some(nulls.clone()));
                    arrow::array::make_array(child.build().expect("the payload's own nulls fit its fields"))
                }
                None => payload.column(i).clone(),
            })
            .collect()
    } else {
        envelopes.columns().to_vec()
    };
    let (before, after) = (parts[0].as_struct(), parts[1].as_struct());
    let op = parts[2].as_string::<i32>();
    let mut changes = Vec::with_capacity(envelopes.num_rows());
    // (image, row): image 0 is `before`, 1 is `after`.
    let mut picks: Vec<(usize, usize)> = Vec::with_capacity(envelopes.num_rows());
    let mut bad = Vec::new();
    for r in 0..envelopes.num_rows() {
        let has = |s: &StructArray| s.is_valid(r);
        let kind = if op.is_valid(r) { op.value(r) } else { "" };
        let wanted: &[(usize, &'static str)] = match kind {
            "c" | "r" => &[(1, "+I")],
            "u" => &[(0, "-U"), (1, "+U")],
            "d" => &[(0, "-D")],
            "" => {
                bad.push((r, "the change event has no \"op\"".to_string()));
                continue;
            }
            other => {
                bad.push((r, format!("the change event's \"op\" is `{other}`; known: c, r, u, d")));
                continue;
            }
        };
        if let Some((image, _)) = wanted.iter().find(|(image, _)| !has(if *image == 0 { before } else { after })) {
            let which = if *image == 0 { "before" } else { "after" };
            bad.push((r, format!("the `{kind}` change event has no \"{which}\" row")));
            continue;
        }
        for &(image, change) in wanted {
            picks.push((image, r));
            changes.push((r, change));
        }
    }
    let columns = (0..before.num_columns())
        .map(|c| interleave(&[before.column(c).as_ref(), after.column(c).as_ref()], &picks))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Unfolded { columns, changes, bad })
}

/// The change-kind column of unfolded rows.
pub fn change_column(changes: &[(usize, &'static str)]) -> ArrayRef {
    Arc::new(arrow::array::StringArray::from_iter_values(changes.iter().map(|c| c.1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::format::JsonDecoder;

    fn fields() -> Vec<Field> {
        vec![Field::new("id", DataType::Int64, false), Field::new("name", DataType::Utf8, true)]
    }

    fn decode(values: &[&str], include: bool) -> (RecordBatch, Vec<(usize, String)>) {
        let mut d = JsonDecoder::new(envelope_fields(&fields(), include), 16).unwrap();
        let values: Vec<Option<&[u8]>> = values.iter().map(|v| Some(v.as_bytes())).collect();
        let decoded = d.decode(&values).unwrap();
        (decoded.batch, decoded.bad)
    }

    fn rows(u: &Unfolded) -> Vec<String> {
        (0..u.changes.len())
            .map(|r| {
                let cells: Vec<String> =
                    u.columns.iter().map(|c| arrow::util::display::array_value_to_string(c, r).unwrap()).collect();
                format!("{} {} {}", u.changes[r].0, u.changes[r].1, cells.join(","))
            })
            .collect()
    }

    #[test]
    fn creates_updates_and_deletes_become_changes_and_the_rest_bad_records() {
        let (batch, bad) = decode(
            &[
                r#"{"before": null, "after": {"id": 1, "name": "a"}, "op": "c", "ts_ms": 5}"#,
                r#"{"before": {"id": 1, "name": "a"}, "after": {"id": 1, "name": "b"}, "op": "u"}"#,
                r#"{"before": {"id": 1, "name": "b"}, "after": null, "op": "d"}"#,
                r#"{"before": null, "after": {"id": 2}, "op": "r"}"#,
                r#"{"before": null, "after": {"id": 3}, "op": "u"}"#,
                r#"{"after": {"id": 4}, "op": "t"}"#,
                r#"{"after": {"id": 4}}"#,
            ],
            false,
        );
        assert!(bad.is_empty(), "{bad:?}");
        let u = unfold(&batch, false).unwrap();
        assert_eq!(rows(&u), ["0 +I 1,a", "1 -U 1,a", "1 +U 1,b", "2 -D 1,b", "3 +I 2,"]);
        let reasons: Vec<&str> = u.bad.iter().map(|b| b.1.as_str()).collect();
        assert_eq!(u.bad.iter().map(|b| b.0).collect::<Vec<_>>(), [4, 5, 6]);
        assert!(reasons[0].contains("no \"before\" row"), "{reasons:?}");
        assert!(reasons[1].contains("is `t`"), "{reasons:?}");
        assert!(reasons[2].contains("no \"op\""), "{reasons:?}");
    }

    #[test]
    fn the_envelope_may_come_inside_a_payload_with_its_schema() {
        let (batch, bad) = decode(
            &[
                r#"{"schema": {"type": "struct"}, "payload": {"before": null, "after": {"id": 7, "name": "x"}, "op": "c"}}"#,
                r#"{"schema": {"type": "struct"}}"#,
            ],
            true,
        );
        assert!(bad.is_empty(), "{bad:?}");
        let u = unfold(&batch, true).unwrap();
        assert_eq!(rows(&u), ["0 +I 7,x"]);
        assert_eq!(u.bad.len(), 1, "no payload: no op");
    }
}
