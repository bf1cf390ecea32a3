//! Rows as the sink writes them: Arrow batches turned into typed values per
//! column, reduced per key (the last change of a key wins), and epochs kept
//! in checkpoints as Arrow IPC.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Date32Type, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use weir_runtime::error::{OpResult, OperatorError};

pub use crate::changes::Op;

/// How a column's values are bound as statement parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 64-bit signed integers.
    Int,
    /// 64-bit floats.
    Float,
    /// Booleans.
    Bool,
    /// Text.
    Text,
    /// Bytes.
    Bytes,
    /// A timestamp without time zone (UTC wall clock).
    Timestamp,
    /// A date.
    Date,
}

impl Kind {
    /// The kind of an Arrow type, or `None` if the sink cannot write it.
    pub fn of(dt: &DataType) -> Option<Kind> {
        Some(match dt {
            dt if dt.is_integer() => Kind::Int,
            DataType::Float16 | DataType::Float32 | DataType::Float64 => Kind::Float,
            DataType::Boolean => Kind::Bool,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Text,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Kind::Bytes,
            DataType::Timestamp(_, _) => Kind::Timestamp,
            DataType::Date32 | DataType::Date64 => Kind::Date,
            _ => return None,
        })
    }

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Int => "integer",
            Kind::Float => "floating point",
            Kind::Bool => "boolean",
            Kind::Text => "text",
            Kind::Bytes => "bytes",
            Kind::Timestamp => "timestamp",
            Kind::Date => "date",
        }
    }
}

/// One value, `None` for SQL NULL.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A timestamp (UTC).
    Timestamp(NaiveDateTime),
    /// A date.
    Date(NaiveDate),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Text(v) => write!(f, "'{v}'"),
            Value::Bytes(v) => write!(f, "<{} bytes>", v.len()),
            Value::Timestamp(v) => write!(f, "'{v}'"),
            Value::Date(v) => write!(f, "'{v}'"),
        }
    }
}

/// A row's values, in the sink's column order (`None` for NULL).
pub type Values = Vec<Option<Value>>;

/// A row to write: its change and its values.
pub type Row = (Op, Values);

/// Where the written columns and the change kind are in the input.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Input column index and kind of each written column.
    pub columns: Vec<(usize, Kind)>,
    /// Positions (in `columns`) of the key columns.
    pub key: Vec<usize>,
    /// Input column index of the change kind, if any.
    pub op: Option<usize>,
}

fn cast(col: &dyn Array, to: &DataType) -> OpResult<arrow::array::ArrayRef> {
    Ok(arrow::compute::cast_with_options(col, to, &CastOptions { safe: false, ..Default::default() })?)
}

/// Values of one column, by row.
fn column_values(col: &dyn Array, kind: Kind) -> OpResult<Vec<Option<Value>>> {
    let n = col.len();
    Ok(match kind {
        Kind::Int => {
            let a = cast(col, &DataType::Int64)?;
            let a = a.as_primitive::<Int64Type>();
            (0..n).map(|r| a.is_valid(r).then(|| Value::Int(a.value(r)))).collect()
        }
        Kind::Float => {
            let a = cast(col, &DataType::Float64)?;
            let a = a.as_primitive::<Float64Type>();
            (0..n).map(|r| a.is_valid(r).then(|| Value::Float(a.value(r)))).collect()
        }
        Kind::Bool => {
            let a = col.as_boolean();
            (0..n).map(|r| a.is_valid(r).then(|| Value::Bool(a.value(r)))).collect()
        }
        Kind::Text => {
            let a = cast(col, &DataType::Utf8)?;
            let a = a.as_string::<i32>();
            (0..n).map(|r| a.is_valid(r).then(|| Value::Text(a.value(r).to_string()))).collect()
        }
        Kind::Bytes => {
            let a = cast(col, &DataType::Binary)?;
            let a = a.as_binary::<i32>();
            (0..n).map(|r| a.is_valid(r).then(|| Value::Bytes(a.value(r).to_vec()))).collect()
        }
        Kind::Timestamp => {
            let a = cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            let a = a.as_primitive::<TimestampMicrosecondType>();
            let mut out = Vec::with_capacity(n);
            for r in 0..n {
                out.push(match a.is_valid(r) {
                    true => Some(Value::Timestamp(
                        DateTime::from_timestamp_micros(a.value(r))
                            .ok_or_else(|| {
                                OperatorError::InvalidData(format!("timestamp {} µs is out of range", a.value(r)))
                            })?
                            .naive_utc(),
                    )),
                    false => None,
                });
            }
            out
        }
        Kind::Date => {
            let a = cast(col, &DataType::Date32)?;
            let a = a.as_primitive::<Date32Type>();
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
            (0..n)
                .map(|r| a.is_valid(r).then(|| Value::Date(epoch + chrono::Duration::days(i64::from(a.value(r))))))
                .collect()
        }
    })
}

/// The rows of `batch`, in order, with their changes.
pub fn rows(batch: &RecordBatch, layout: &Layout) -> OpResult<Vec<Row>> {
    let columns: Vec<Vec<Option<Value>>> =
        layout.columns.iter().map(|&(i, kind)| column_values(batch.column(i), kind)).collect::<OpResult<_>>()?;
    let ops = crate::changes::ops(batch, layout.op)?;
    let mut columns: Vec<std::vec::IntoIter<Option<Value>>> = columns.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::with_capacity(batch.num_rows());
    for op in ops {
        let row: Vec<Option<Value>> = columns.iter_mut().map(|c| c.next().expect("one value per row")).collect();
        out.push((op, row));
    }
    Ok(out)
}

/// A key's values, encoded so that equal keys give equal bytes.
fn key_bytes(row: &[Option<Value>], key: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    for &i in key {
        match &row[i] {
            None => out.push(0),
            Some(Value::Int(v)) => {
                out.push(1);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Some(Value::Float(v)) => {
                out.push(2);
                out.extend_from_slice(&v.to_bits().to_be_bytes());
            }
            Some(Value::Bool(v)) => out.extend_from_slice(&[3, u8::from(*v)]),
            Some(Value::Text(s)) => {
                out.push(4);
                out.extend_from_slice(&(s.len() as u64).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Some(Value::Bytes(b)) => {
                out.push(5);
                out.extend_from_slice(&(b.len() as u64).to_be_bytes());
                out.extend_from_slice(b);
            }
            Some(Value::Timestamp(t)) => {
                out.push(6);
                out.extend_from_slice(&t.and_utc().timestamp_micros().to_be_bytes());
            }
            Some(Value::Date(d)) => {
                out.push(7);
                out.extend_from_slice(&d.to_string().into_bytes());
            }
        }
    }
    out
}

/// The changes to apply for `rows` (in order): with a key, the last change
/// of each key (upserts and deletes apart, so each statement touches a key
/// once); without one, every row is appended.
pub fn reduce(rows: Vec<Row>, key: &[usize]) -> (Vec<Values>, Vec<Values>) {
    if key.is_empty() {
        return (rows.into_iter().map(|(_, r)| r).collect(), Vec::new());
    }
    let (mut upserts, mut deletes) = (Vec::new(), Vec::new());
    for (op, row) in crate::changes::last_per_key(rows, |row| key_bytes(row, key)) {
        match op {
            Op::Upsert => upserts.push(row),
            Op::Delete => deletes.push(key.iter().map(|&k| row[k].clone()).collect()),
        }
    }
    (upserts, deletes)
}

/// A row's key (or its first values, without a key) for error messages.
pub fn describe(row: &[Option<Value>], names: &[String], key: &[usize]) -> String {
    let shown: Vec<usize> = if key.is_empty() { (0..row.len().min(3)).collect() } else { key.to_vec() };
    shown
        .iter()
        .map(|&i| format!("{} = {}", names[i], row[i].as_ref().map_or("NULL".into(), ToString::to_string)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Batches as Arrow IPC stream bytes (an epoch in a checkpoint).
pub fn encode(batches: &[RecordBatch]) -> OpResult<Vec<u8>> {
    let Some(first) = batches.first() else { return Ok(Vec::new()) };
    let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &first.schema())?;
    for b in batches {
        w.write(b)?;
    }
    Ok(w.into_inner()?)
}

/// The batches [`encode`] wrote.
pub fn decode(bytes: &[u8]) -> OpResult<Vec<RecordBatch>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| OperatorError::State(format!("jdbc sink epoch does not decode: {e}")))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| OperatorError::State(format!("jdbc sink epoch does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int32Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch(names: &[&str], counts: &[i32], ops: &[&str]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("n", DataType::Int32, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("op", DataType::Utf8, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(names.to_vec())),
                Arc::new(Int32Array::from(counts.to_vec())),
                Arc::new(TimestampMillisecondArray::from(vec![1_772_352_000_123; names.len()])),
                Arc::new(StringArray::from(ops.to_vec())),
            ],
        )
        .unwrap()
    }

    fn layout() -> Layout {
        Layout { columns: vec![(0, Kind::Text), (1, Kind::Int), (2, Kind::Timestamp)], key: vec![0], op: Some(3) }
    }

    #[test]
    fn the_last_change_of_each_key_wins_and_a_lone_old_version_deletes() {
        // c's -U has no +U after it (its new version was filtered out).
        let b = batch(
            &["a", "b", "a", "c", "b", "c", "d", "d"],
            &[1, 2, 3, 4, 0, 4, 6, 7],
            &["+I", "+I", "+U", "+I", "-D", "-U", "-U", "+U"],
        );
        let rows = rows(&b, &layout()).unwrap();
        assert_eq!(rows.len(), 8);
        let (upserts, deletes) = reduce(rows, &[0]);
        let up: Vec<(String, i64)> = upserts
            .iter()
            .map(|r| match (&r[0], &r[1]) {
                (Some(Value::Text(k)), Some(Value::Int(n))) => (k.clone(), *n),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(up, vec![("a".into(), 3), ("d".into(), 7)]);
        assert_eq!(deletes, vec![vec![Some(Value::Text("b".into()))], vec![Some(Value::Text("c".into()))]]);
        assert_eq!(
            upserts[0][2],
            Some(Value::Timestamp(DateTime::from_timestamp_millis(1_772_352_000_123).unwrap().naive_utc()))
        );
    }

    #[test]
    fn without_a_key_every_row_is_appended() {
        let b = batch(&["a", "a"], &[1, 1], &["+I", "+I"]);
        let (upserts, deletes) = reduce(rows(&b, &layout()).unwrap(), &[]);
        assert_eq!((upserts.len(), deletes.len()), (2, 0));
    }

    #[test]
    fn an_unknown_change_kind_is_refused() {
        let b = batch(&["a"], &[1], &["x"]);
        assert!(rows(&b, &layout()).unwrap_err().to_string().contains("none of +I"));
    }

    #[test]
    fn epochs_round_trip_through_ipc() {
        let b = batch(&["a", "b"], &[1, 2], &["+I", "+I"]);
        let back = decode(&encode(&[b.clone(), b.clone()]).unwrap()).unwrap();
        assert_eq!(back, vec![b.clone(), b]);
        assert!(decode(&encode(&[]).unwrap()).unwrap().is_empty());
        assert!(matches!(decode(b"garbage"), Err(OperatorError::State(_))));
    }
}
