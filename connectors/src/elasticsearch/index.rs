//! Index names: fixed, or made per row from a pattern of literal text,
//! `{column}` (the column's value) and `{column|yyyy-MM-dd}` (the date of a
//! timestamp column, in UTC, with Java's date pattern letters as Flink
//! takes them).

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Schema, TimeUnit, TimestampMillisecondType};
use chrono::DateTime;
use weir_runtime::error::{OpResult, OperatorError};

/// A part of an index pattern.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    /// A column's value as text.
    Value(usize),
    /// A timestamp column's date, as a chrono format.
    Date(usize, String),
}

/// An index name, or a pattern of one.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexPattern {
    parts: Vec<Part>,
}

/// Java date pattern letters to chrono's, longest first.
const LETTERS: &[(&str, &str)] =
    &[("yyyy", "%Y"), ("yy", "%y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"), ("mm", "%M"), ("ss", "%S")];

fn date_format(java: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = java;
    'outer: while let Some(c) = rest.chars().next() {
        for (j, c_fmt) in LETTERS {
            if let Some(r) = rest.strip_prefix(j) {
                out.push_str(c_fmt);
                rest = r;
                continue 'outer;
            }
        }
        if c.is_ascii_alphabetic() {
            return Err(format!(
                "date pattern `{java}`: `{c}` is not supported (use yyyy, yy, MM, dd, HH, mm, ss and separators)"
            ));
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    Ok(out)
}

/// Checks a name the sink writes as is: the cluster takes lowercase names
/// without `\ / * ? " < > | , #`, spaces or a leading `-`, `_` or `+`.
pub fn check_static_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an index name cannot be empty".into());
    }
    if name.chars().any(|c| c.is_uppercase() || "\\/*?\"<>|,# ".contains(c)) || name.starts_with(['-', '_', '+']) {
        return Err(format!(
            "`{name}` is not a valid index name: lowercase, without \\ / * ? \" < > | , # or spaces, not starting with - _ +"
        ));
    }
    Ok(())
}

impl IndexPattern {
    /// Parses `pattern` against the input's `schema`.
    pub fn parse(pattern: &str, schema: &Schema) -> Result<IndexPattern, String> {
        let mut parts = Vec::new();
        let mut rest = pattern;
        while !rest.is_empty() {
            match rest.find('{') {
                None => {
                    parts.push(Part::Text(rest.to_string()));
                    break;
                }
                Some(open) => {
                    if open > 0 {
                        parts.push(Part::Text(rest[..open].to_string()));
                    }
                    let close =
                        rest[open..].find('}').ok_or_else(|| format!("index `{pattern}`: a `{{` is not closed"))?;
                    let inner = &rest[open + 1..open + close];
                    let (column, format) = match inner.split_once('|') {
                        Some((c, f)) => (c.trim(), Some(f.trim())),
                        None => (inner.trim(), None),
                    };
                    let i = schema
                        .index_of(column)
                        .map_err(|_| format!("index `{pattern}`: no column `{column}` in the input"))?;
                    let dt = schema.field(i).data_type();
                    parts.push(match format {
                        Some(f) => {
                            if !matches!(
                                dt,
                                DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 | DataType::Int64
                            ) {
                                return Err(format!(
                                    "index `{pattern}`: `{column}` is {dt}, not a timestamp, so it has no date"
                                ));
                            }
                            Part::Date(i, date_format(f)?)
                        }
                        None => Part::Value(i),
                    });
                    rest = &rest[open + close + 1..];
                }
            }
        }
        let p = IndexPattern { parts };
        if let Some(name) = p.fixed() {
            check_static_name(name)?;
        }
        Ok(p)
    }

    /// The name, when it does not depend on the row.
    pub fn fixed(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// The index of every row of `batch`.
    pub fn names(&self, batch: &RecordBatch) -> OpResult<Vec<String>> {
        let n = batch.num_rows();
        if let Some(name) = self.fixed() {
            return Ok(vec![name.to_string(); n]);
        }
        let mut out = vec![String::new(); n];
        for part in &self.parts {
            match part {
                Part::Text(t) => out.iter_mut().for_each(|s| s.push_str(t)),
                Part::Value(i) => {
                    let a = arrow::compute::cast(batch.column(*i), &DataType::Utf8)?;
                    let a = a.as_string::<i32>();
                    for (r, s) in out.iter_mut().enumerate() {
                        if a.is_null(r) {
                            return Err(null_part(batch, *i));
                        }
                        s.push_str(&a.value(r).to_lowercase());
                    }
                }
                Part::Date(i, format) => {
                    let col = batch.column(*i);
                    let a = match col.data_type() {
                        // Milliseconds since the epoch, as Weir's event times often are.
                        DataType::Int64 => arrow::compute::cast(
                            &arrow::compute::cast(col, &DataType::Int64)?,
                            &DataType::Timestamp(TimeUnit::Millisecond, None),
                        )?,
                        _ => arrow::compute::cast(col, &DataType::Timestamp(TimeUnit::Millisecond, None))?,
                    };
                    let a = a.as_primitive::<TimestampMillisecondType>();
                    for (r, s) in out.iter_mut().enumerate() {
                        if a.is_null(r) {
                            return Err(null_part(batch, *i));
                        }
                        let t = DateTime::from_timestamp_millis(a.value(r)).ok_or_else(|| {
                            OperatorError::InvalidData(format!("timestamp {} ms is out of range", a.value(r)))
                        })?;
                        s.push_str(&t.format(format).to_string());
                    }
                }
            }
        }
        Ok(out)
    }
}

fn null_part(batch: &RecordBatch, i: usize) -> OperatorError {
    OperatorError::InvalidData(format!(
        "column `{}` is null in a row, and the index name is made of it",
        batch.schema().field(i).name()
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Field;

    use super::*;

    fn batch() -> RecordBatch {
        let schema =
            Schema::new(vec![Field::new("ts", DataType::Int64, true), Field::new("site", DataType::Utf8, true)]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(vec![Some(1_772_352_000_123), Some(1_772_438_399_999)])),
                Arc::new(StringArray::from(vec![Some("Shop"), Some("blog")])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn patterns_name_an_index_per_row() {
        let b = batch();
        let p = IndexPattern::parse("web-{site}-{ts|yyyy-MM-dd}", &b.schema()).unwrap();
        assert_eq!(p.names(&b).unwrap(), vec!["web-shop-2026-03-01", "web-blog-2026-03-02"]);
        let p = IndexPattern::parse("events-{ts|yyyy.MM.dd-HH}", &b.schema()).unwrap();
        assert_eq!(p.names(&b).unwrap()[0], "events-2026.03.01-08");
        let fixed = IndexPattern::parse("web-events", &b.schema()).unwrap();
        assert_eq!(fixed.fixed(), Some("web-events"));
    }

    #[test]
    fn bad_patterns_say_why() {
        let s = batch().schema();
        assert!(IndexPattern::parse("web-{nope}", &s).unwrap_err().contains("no column `nope`"));
        assert!(IndexPattern::parse("web-{site|yyyy}", &s).unwrap_err().contains("not a timestamp"));
        assert!(IndexPattern::parse("web-{ts|yyyy-QQ}", &s).unwrap_err().contains("`Q` is not supported"));
        assert!(IndexPattern::parse("web-{ts", &s).unwrap_err().contains("not closed"));
        assert!(IndexPattern::parse("Web", &s).unwrap_err().contains("not a valid index name"));
    }
}
