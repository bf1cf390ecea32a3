//! Record formats: how Kafka record values become Arrow rows and back.
//!
//! - `json`: each value is one JSON object decoded against the schema the job
//!   declares (column names, types, nullability). A value that is not such an
//!   object — malformed JSON, a missing non-nullable field, a wrong type — is
//!   a *bad record*: the source sends it to its dead-letter topic or fails,
//!   by configuration, and never drops it silently.
//! - `string`: the value as one UTF-8 column `value` (invalid UTF-8 is a bad record).
//! - `raw`: the value as one binary column `value`.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::json::reader::{Decoder, ReaderBuilder};
use serde::Deserialize;
use weir_runtime::error::{OpResult, OperatorError};

/// How record values are read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One JSON object per record, against a declared schema.
    #[default]
    Json,
    /// The value as UTF-8 text in a column `value`.
    String,
    /// The value as bytes in a column `value`.
    Raw,
    /// Debezium's JSON change events, read as a changelog (sources only).
    DebeziumJson,
}

/// A column of a declared JSON schema.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Field name in the JSON object and column name.
    pub name: String,
    /// `string`, `int32`, `int64`, `float64`, `boolean`, or `timestamp`
    /// (milliseconds since the epoch as a number, or an RFC 3339 string).
    #[serde(rename = "type")]
    pub ty: String,
    /// Whether the field may be missing or null.
    #[serde(default)]
    pub nullable: bool,
}

/// The Arrow type of a declared column type; `row<name type, ...>` is a
/// nested object (a struct column whose fields may be null).
pub fn data_type(ty: &str) -> Option<DataType> {
    let ty = ty.trim();
    if let Some(inner) = ty.strip_prefix("row<").and_then(|r| r.strip_suffix('>')) {
        let mut fields: Vec<Field> = Vec::new();
        for part in split_top_level(inner) {
            let (name, t) = part.trim().split_once(char::is_whitespace)?;
            if fields.iter().any(|f| f.name() == name) {
                return None;
            }
            fields.push(Field::new(name, data_type(t)?, true));
        }
        return (!fields.is_empty()).then(|| DataType::Struct(fields.into()));
    }
    Some(match ty {
        "string" | "utf8" => DataType::Utf8,
        "int32" | "int" => DataType::Int32,
        "int64" | "long" | "bigint" => DataType::Int64,
        "float64" | "double" => DataType::Float64,
        "boolean" | "bool" => DataType::Boolean,
        "timestamp" => DataType::Timestamp(TimeUnit::Millisecond, None),
        _ => return None,
    })
}

/// The comma-separated parts of `s` outside any `<...>`.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Type names accepted in schemas, for error messages.
pub const TYPE_NAMES: &str = "string, int32, int64, float64, boolean, timestamp, row<name type, ...>";

/// The value columns of a format: the declared schema for JSON, `value` otherwise.
pub fn value_fields(format: Format, schema: &[ColumnSpec]) -> Result<Vec<Field>, String> {
    match format {
        Format::Json | Format::DebeziumJson => {
            if schema.is_empty() {
                return Err("the json format needs a schema: a list of {name, type, nullable}".into());
            }
            let mut fields = Vec::with_capacity(schema.len());
            for c in schema {
                let dt = data_type(&c.ty)
                    .ok_or_else(|| format!("column `{}` has unknown type `{}`; known: {TYPE_NAMES}", c.name, c.ty))?;
                if fields.iter().any(|f: &Field| f.name() == &c.name) {
                    return Err(format!("column `{}` is declared twice", c.name));
                }
                // A change event's image may leave any field out.
                fields.push(Field::new(&c.name, dt, c.nullable || format == Format::DebeziumJson));
            }
            Ok(fields)
        }
        Format::String => Ok(vec![Field::new("value", DataType::Utf8, true)]),
        Format::Raw => Ok(vec![Field::new("value", DataType::Binary, true)]),
    }
}

/// Decodes JSON values against a schema, a batch at a time, and finds the
/// bad ones when a batch does not decode.
pub struct JsonDecoder {
    schema: SchemaRef,
    decoder: Decoder,
    /// Most values per call (the decoder preallocates for this many rows).
    capacity: usize,
    buf: Vec<u8>,
}

impl std::fmt::Debug for JsonDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonDecoder").field("schema", &self.schema).finish()
    }
}

/// What decoding a batch of values gave.
#[derive(Debug)]
pub struct Decoded {
    /// Rows of the values that decoded, in order.
    pub batch: RecordBatch,
    /// Indexes of the values that did not decode, with the reason.
    pub bad: Vec<(usize, String)>,
}

impl JsonDecoder {
    /// A decoder for `fields`, for up to `capacity` values per call.
    pub fn new(fields: Vec<Field>, capacity: usize) -> OpResult<Self> {
        let schema = Arc::new(Schema::new(fields));
        let decoder = Self::decoder(&schema, capacity)?;
        Ok(Self { schema, decoder, capacity, buf: Vec::new() })
    }

    fn decoder(schema: &SchemaRef, capacity: usize) -> OpResult<Decoder> {
        // One row more than values: a value holding two objects shows up as
        // a row count that does not match.
        Ok(ReaderBuilder::new(schema.clone()).with_batch_size(capacity + 1).build_decoder()?)
    }

    /// The decoded schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes `values` (`None`: a record without a value). The fast path
    /// decodes them all in one decoder, checking that each value gave
    /// exactly one row; only a batch holding a bad value is decoded again
    /// value by value to tell the bad ones from the good.
    pub fn decode(&mut self, values: &[Option<&[u8]>]) -> OpResult<Decoded> {
        if values.len() > self.capacity {
            return Err(OperatorError::InvalidData(format!(
                "{} values in one call; the decoder takes {}",
                values.len(),
                self.capacity
            )));
        }
        if values.iter().all(Option::is_some) {
            if let Ok(Some(batch)) = self.decode_each(values) {
                return Ok(Decoded { batch, bad: Vec::new() });
            }
            // The decoder may hold half a record after an error: start afresh.
            self.decoder = Self::decoder(&self.schema, self.capacity)?;
        }
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let Some(v) = v else {
                bad.push((i, "the record has no value".to_string()));
                continue;
            };
            self.buf.clear();
            self.buf.extend_from_slice(v);
            match self.decode_buffer() {
                Ok(Some(b)) if b.num_rows() == 1 => good.push(b),
                Ok(Some(b)) => bad.push((i, format!("the value holds {} JSON values, not one object", b.num_rows()))),
                Ok(None) => bad.push((i, "the value is empty".to_string())),
                Err(e) => {
                    self.decoder = Self::decoder(&self.schema, self.capacity)?;
                    bad.push((i, e.to_string()));
                }
            }
        }
        let batch = arrow::compute::concat_batches(&self.schema, &good)?;
        Ok(Decoded { batch, bad })
    }

    /// Decodes the values into one batch, checking after each that it held
    /// exactly one whole JSON object, so that row `i` is value `i`. `None`
    /// when a value held none, several or part of one (the caller then
    /// decodes them one by one, with a fresh decoder).
    fn decode_each(&mut self, values: &[Option<&[u8]>]) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
        for v in values.iter().flatten() {
            let before = self.decoder.len();
            let mut rest = *v;
            while !rest.is_empty() {
                let n = self.decoder.decode(rest)?;
                if n == 0 {
                    break;
                }
                rest = &rest[n..];
            }
            if !rest.is_empty() || self.decoder.has_partial_record() || self.decoder.len() != before + 1 {
                return Ok(None);
            }
        }
        let batch = self.decoder.flush()?;
        Ok(batch.filter(|b| b.num_rows() == values.len()))
    }

    fn decode_buffer(&mut self) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
        let mut rest = &self.buf[..];
        while !rest.is_empty() {
            let n = self.decoder.decode(rest)?;
            if n == 0 {
                break;
            }
            rest = &rest[n..];
        }
        if rest.iter().any(|b| !b.is_ascii_whitespace()) {
            // The decoder is full: there were more JSON values than values
            // (the caller starts a fresh decoder after an error).
            return Err(arrow::error::ArrowError::JsonError("a value holds more than one JSON object".into()));
        }
        if self.decoder.has_partial_record() {
            return Err(arrow::error::ArrowError::JsonError("the value ends in the middle of a JSON object".into()));
        }
        self.decoder.flush()
    }
}

/// Encodes rows as JSON objects, one per row (nulls left out).
pub fn encode_json(batch: &RecordBatch) -> OpResult<Vec<Vec<u8>>> {
    let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
    w.write(batch)?;
    w.finish()?;
    let text = w.into_inner();
    let rows: Vec<Vec<u8>> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
    if rows.len() != batch.num_rows() {
        return Err(OperatorError::InvalidData(format!(
            "JSON encoding gave {} lines for {} rows",
            rows.len(),
            batch.num_rows()
        )));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, Int64Array};
    use arrow::datatypes::Int64Type;

    fn decoder() -> JsonDecoder {
        let spec: Vec<ColumnSpec> = serde_json::from_str(
            r#"[{"name":"id","type":"int64"},{"name":"name","type":"string","nullable":true},{"name":"ts","type":"timestamp"}]"#,
        )
        .unwrap();
        JsonDecoder::new(value_fields(Format::Json, &spec).unwrap(), 16).unwrap()
    }

    #[test]
    fn decodes_good_values_in_one_pass() {
        let mut d = decoder();
        let vals: Vec<&[u8]> = vec![br#"{"id":1,"name":"a","ts":1000}"#, br#"{"id":2,"ts":"2024-01-01T00:00:00Z"}"#];
        let out = d.decode(&vals.iter().map(|v| Some(*v)).collect::<Vec<_>>()).unwrap();
        assert!(out.bad.is_empty());
        assert_eq!(out.batch.num_rows(), 2);
        assert_eq!(out.batch.column(0).as_primitive::<Int64Type>(), &Int64Array::from(vec![1, 2]));
        assert!(out.batch.column(1).is_null(1));
    }

    #[test]
    fn tells_bad_values_from_good_ones() {
        let mut d = decoder();
        let vals: Vec<Option<&[u8]>> = vec![
            Some(br#"{"id":1,"ts":1}"#),
            Some(b"{not json"),
            Some(br#"{"id":"x","ts":1}"#),
            Some(br#"{"name":"no id","ts":1}"#),
            None,
            Some(br#"{"id":1,"ts":1} {"id":2,"ts":2}"#),
            Some(br#"{"id":7,"ts":7}"#),
        ];
        let out = d.decode(&vals).unwrap();
        let bad: Vec<usize> = out.bad.iter().map(|b| b.0).collect();
        assert_eq!(bad, vec![1, 2, 3, 4, 5]);
        assert_eq!(out.batch.column(0).as_primitive::<Int64Type>(), &Int64Array::from(vec![1, 7]));
        // The decoder is usable after errors.
        let again = d.decode(&[Some(br#"{"id":3,"ts":3}"#.as_slice())]).unwrap();
        assert_eq!(again.batch.num_rows(), 1);
        assert!(again.bad.is_empty());
    }

    #[test]
    fn an_empty_value_and_a_value_of_two_objects_do_not_balance_out() {
        let mut d = decoder();
        let vals: Vec<Option<&[u8]>> = vec![
            Some(br#"{"id":1,"ts":1}"#),
            Some(b""),
            Some(br#"{"id":2,"ts":2}"#),
            Some(br#"{"id":3,"ts":3} {"id":4,"ts":4}"#),
            Some(b"   "),
            Some(br#"{"id":5,"ts":5}"#),
            Some(br#"{"id":6,"#),
            Some(br#""ts":6}"#),
            Some(br#"{"id":7,"ts":7}"#),
        ];
        let out = d.decode(&vals).unwrap();
        let bad: Vec<usize> = out.bad.iter().map(|b| b.0).collect();
        assert_eq!(bad, vec![1, 3, 4, 6, 7], "{:?}", out.bad);
        assert_eq!(out.batch.column(0).as_primitive::<Int64Type>(), &Int64Array::from(vec![1, 2, 5, 7]));

        // As many rows as values, but not one per value.
        let vals: Vec<Option<&[u8]>> = vec![
            Some(br#"{"id":1,"ts":1}"#),
            Some(b""),
            Some(br#"{"id":2,"ts":2}"#),
            Some(br#"{"id":3,"ts":3} {"id":4,"ts":4}"#),
            Some(br#"{"id":5,"ts":5}"#),
        ];
        let out = d.decode(&vals).unwrap();
        assert_eq!(out.bad.iter().map(|b| b.0).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(out.batch.column(0).as_primitive::<Int64Type>(), &Int64Array::from(vec![1, 2, 5]));
    }

    #[test]
    fn nested_rows_decode_into_struct_columns() {
        let t = data_type("row<id int64, name string, at timestamp, inner row<x int32, y string>>").unwrap();
        let DataType::Struct(fields) = &t else { panic!("{t:?}") };
        assert_eq!(fields.len(), 4);
        assert!(matches!(fields[3].data_type(), DataType::Struct(f) if f.len() == 2));
        assert!(data_type("row<>").is_none());
        assert!(data_type("row<id int64, id string>").is_none());
        assert!(data_type("row<id nothing>").is_none());
        let mut d = JsonDecoder::new(vec![Field::new("p", t, true)], 4).unwrap();
        let values: [&[u8]; 2] =
            [br#"{"p":{"id":7,"name":"a","at":"2026-03-01 08:00:00.123","inner":{"x":1,"y":"z"}}}"#, br#"{"p":null}"#];
        let out = d.decode(&values.map(Some)).unwrap();
        assert!(out.bad.is_empty(), "{:?}", out.bad);
        let p = out.batch.column(0).as_struct();
        assert_eq!(p.column(0).as_primitive::<Int64Type>().value(0), 7);
        assert_eq!(
            p.column(2).as_primitive::<arrow::datatypes::TimestampMillisecondType>().value(0),
            1_772_352_000_123
        );
        assert!(p.is_null(1));
    }

    #[test]
    fn encodes_one_object_per_row() {
        let mut d = decoder();
        let out = d.decode(&[Some(br#"{"id":5,"name":"n","ts":10}"#.as_slice())]).unwrap();
        let rows = encode_json(&out.batch).unwrap();
        assert_eq!(rows.len(), 1);
        let v: serde_json::Value = serde_json::from_slice(&rows[0]).unwrap();
        assert_eq!(v["id"], 5);
        assert_eq!(v["name"], "n");
    }
}
