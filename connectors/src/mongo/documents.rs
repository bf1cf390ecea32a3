//! Arrow rows as BSON documents: each column becomes a field of the same
//! name, converted a column at a time. Integers stay 32- or 64-bit,
//! timestamps and dates become BSON dates (milliseconds, UTC), decimals
//! Decimal128, nested rows documents and lists arrays; a null is a BSON null.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, DecimalType, Float64Type, Int32Type, Int64Type, TimeUnit,
    TimestampMillisecondType, UInt64Type,
};
use mongodb::bson::{spec::BinarySubtype, Binary, Bson, DateTime, Decimal128, Document};
use weir_runtime::error::{OpResult, OperatorError};

/// Whether the sink can write a column of type `dt`; `Err` names what it cannot.
pub fn check(dt: &DataType) -> Result<(), String> {
    match dt {
        dt if dt.is_integer() || dt.is_floating() => Ok(()),
        DataType::Boolean
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_)
        | DataType::Timestamp(_, _)
        | DataType::Date32
        | DataType::Date64
        | DataType::Decimal128(_, _)
        | DataType::Null => Ok(()),
        DataType::Struct(fields) => fields.iter().try_for_each(|f| check(f.data_type())),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => check(f.data_type()),
        other => Err(format!("type {other}")),
    }
}

fn cast(col: &dyn Array, to: &DataType) -> OpResult<ArrayRef> {
    Ok(arrow::compute::cast(col, to)?)
}

fn nulls_or<T>(col: &dyn Array, f: impl Fn(usize) -> T) -> Vec<Bson>
where
    T: Into<Bson>,
{
    (0..col.len()).map(|r| if col.is_valid(r) { f(r).into() } else { Bson::Null }).collect()
}

/// The values of one column, one per row.
pub fn column(col: &dyn Array) -> OpResult<Vec<Bson>> {
    let n = col.len();
    Ok(match col.data_type() {
        DataType::Null => vec![Bson::Null; n],
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            let a = cast(col, &DataType::Int32)?;
            let a = a.as_primitive::<Int32Type>();
            nulls_or(a, |r| Bson::Int32(a.value(r)))
        }
        DataType::Int64 | DataType::UInt32 => {
            let a = cast(col, &DataType::Int64)?;
            let a = a.as_primitive::<Int64Type>();
            nulls_or(a, |r| Bson::Int64(a.value(r)))
        }
        DataType::UInt64 => {
            let a = col.as_primitive::<UInt64Type>();
            let mut out = Vec::with_capacity(n);
            for r in 0..n {
                out.push(match a.is_valid(r) {
                    true => Bson::Int64(i64::try_from(a.value(r)).map_err(|_| {
                        OperatorError::InvalidData(format!("{} does not fit a BSON 64-bit integer", a.value(r)))
                    })?),
                    false => Bson::Null,
                });
            }
            out
        }
        dt if dt.is_floating() => {
            let a = cast(col, &DataType::Float64)?;
            let a = a.as_primitive::<Float64Type>();
            nulls_or(a, |r| Bson::Double(a.value(r)))
        }
        DataType::Boolean => {
            let a = col.as_boolean();
            nulls_or(a, |r| Bson::Boolean(a.value(r)))
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let a = cast(col, &DataType::Utf8)?;
            let a = a.as_string::<i32>();
            nulls_or(a, |r| Bson::String(a.value(r).to_string()))
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            let a = cast(col, &DataType::Binary)?;
            let a = a.as_binary::<i32>();
            nulls_or(a, |r| Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: a.value(r).to_vec() }))
        }
        DataType::Timestamp(_, _) => {
            let a = cast(col, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
            let a = a.as_primitive::<TimestampMillisecondType>();
            nulls_or(a, |r| Bson::DateTime(DateTime::from_millis(a.value(r))))
        }
        DataType::Date32 | DataType::Date64 => {
            let a = cast(col, &DataType::Date32)?;
            let a = a.as_primitive::<Date32Type>();
            nulls_or(a, |r| Bson::DateTime(DateTime::from_millis(i64::from(a.value(r)) * 86_400_000)))
        }
        DataType::Decimal128(precision, scale) => {
            let a = col.as_primitive::<Decimal128Type>();
            let mut out = Vec::with_capacity(n);
            for r in 0..n {
                out.push(match a.is_valid(r) {
                    true => {
                        let text = Decimal128Type::format_decimal(a.value(r), *precision, *scale);
                        Bson::Decimal128(text.parse::<Decimal128>().map_err(|e| {
                            OperatorError::InvalidData(format!("decimal {text} does not fit BSON's Decimal128: {e}"))
                        })?)
                    }
                    false => Bson::Null,
                });
            }
            out
        }
        DataType::Struct(fields) => {
            let a = col.as_struct();
            let children: Vec<Vec<Bson>> = a.columns().iter().map(|c| column(c)).collect::<OpResult<_>>()?;
            let mut children: Vec<std::vec::IntoIter<Bson>> = children.into_iter().map(Vec::into_iter).collect();
            let mut out = Vec::with_capacity(n);
            for r in 0..n {
                let mut doc = Document::new();
                for (f, values) in fields.iter().zip(children.iter_mut()) {
                    doc.insert(f.name().clone(), values.next().expect("one value per row"));
                }
                out.push(if a.is_valid(r) { Bson::Document(doc) } else { Bson::Null });
            }
            out
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            let a = cast(col, &DataType::LargeList(list_item(col.data_type())))?;
            let a = a.as_list::<i64>();
            let values = column(a.values())?;
            let offsets = a.value_offsets();
            (0..n)
                .map(|r| match a.is_valid(r) {
                    true => Bson::Array(values[offsets[r] as usize..offsets[r + 1] as usize].to_vec()),
                    false => Bson::Null,
                })
                .collect()
        }
        other => return Err(OperatorError::InvalidData(format!("mongodb sink cannot write type {other}"))),
    })
}

fn list_item(dt: &DataType) -> arrow::datatypes::FieldRef {
    match dt {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => f.clone(),
        _ => unreachable!("called on lists only"),
    }
}

/// The documents of `batch`'s columns `columns` (input index, field name).
pub fn documents(batch: &RecordBatch, columns: &[(usize, String)]) -> OpResult<Vec<Document>> {
    let values: Vec<Vec<Bson>> = columns.iter().map(|(i, _)| column(batch.column(*i))).collect::<OpResult<_>>()?;
    let mut values: Vec<std::vec::IntoIter<Bson>> = values.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::with_capacity(batch.num_rows());
    for _ in 0..batch.num_rows() {
        let mut doc = Document::new();
        for ((_, name), v) in columns.iter().zip(values.iter_mut()) {
            doc.insert(name.clone(), v.next().expect("one value per row"));
        }
        out.push(doc);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        Date32Array, Decimal128Array, Int16Array, Int64Array, ListArray, StringArray, StructArray,
        TimestampMicrosecondArray, UInt64Array,
    };
    use arrow::datatypes::{Field, Fields, Int32Type as I32, Schema};
    use mongodb::bson::doc;

    use super::*;

    #[test]
    fn rows_become_documents_with_bson_types() {
        let address = StructArray::from(vec![(
            Arc::new(Field::new("zip", DataType::Utf8, true)),
            Arc::new(StringArray::from(vec![Some("04107"), None])) as ArrayRef,
        )]);
        let tags = ListArray::from_iter_primitive::<I32, _, _>(vec![Some(vec![Some(1), Some(2)]), None]);
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("small", DataType::Int16, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("day", DataType::Date32, true),
            Field::new("price", DataType::Decimal128(10, 2), true),
            Field::new("address", address.data_type().clone(), true),
            Field::new("tags", tags.data_type().clone(), true),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(Int16Array::from(vec![Some(7), None])),
                Arc::new(TimestampMicrosecondArray::from(vec![Some(1_772_352_000_123_456), None])),
                Arc::new(Date32Array::from(vec![Some(1), None])),
                Arc::new(Decimal128Array::from(vec![Some(12345), None]).with_precision_and_scale(10, 2).unwrap()),
                Arc::new(address),
                Arc::new(tags),
            ],
        )
        .unwrap();
        let names = ["id", "small", "ts", "day", "price", "address", "tags"];
        let columns: Vec<(usize, String)> = names.iter().enumerate().map(|(i, n)| (i, n.to_string())).collect();
        let docs = documents(&batch, &columns).unwrap();
        assert_eq!(
            docs[0],
            doc! {
                "id": 1i64, "small": 7, "ts": DateTime::from_millis(1_772_352_000_123),
                "day": DateTime::from_millis(86_400_000), "price": "123.45".parse::<Decimal128>().unwrap(),
                "address": {"zip": "04107"}, "tags": [1, 2],
            }
        );
        assert_eq!(
            docs[1],
            doc! {
                "id": 2i64, "small": Bson::Null, "ts": Bson::Null, "day": Bson::Null, "price": Bson::Null,
                "address": {"zip": Bson::Null}, "tags": Bson::Null,
            }
        );
    }

    #[test]
    fn unsigned_values_beyond_i64_and_unknown_types_are_refused() {
        let a = UInt64Array::from(vec![u64::MAX]);
        assert!(column(&a).unwrap_err().to_string().contains("does not fit"));
        assert!(
            check(&DataType::Map(Arc::new(Field::new("e", DataType::Struct(Fields::empty()), false)), false)).is_err()
        );
        assert!(check(&DataType::List(Arc::new(Field::new("i", DataType::Int32, true)))).is_ok());
    }
}
