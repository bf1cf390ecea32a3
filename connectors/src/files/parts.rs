//! Part files being written: one encoder per format, and the directory
//! (partition) each row belongs to.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit, TimestampMillisecondType};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as Codec, ZstdLevel};
use parquet::file::properties::WriterProperties;
use weir_runtime::error::{OpResult, OperatorError};

use super::config::{Compression, CsvSettings, FileFormat};

/// An open part: rows encoded so far, in memory until the part rolls.
pub enum PartWriter {
    /// JSON lines.
    Json(Vec<u8>),
    /// CSV (with a header line unless configured otherwise).
    Csv(Box<arrow_csv::Writer<Vec<u8>>>, u64),
    /// Parquet (row groups flushed as they fill).
    Parquet(Box<ArrowWriter<Vec<u8>>>),
}

fn external(e: impl std::fmt::Display) -> OperatorError {
    OperatorError::InvalidData(format!("encoding a part file: {e}"))
}

impl PartWriter {
    /// A writer of `format` for rows of `schema`.
    pub fn new(
        format: FileFormat,
        compression: Compression,
        csv: CsvSettings,
        schema: &SchemaRef,
    ) -> OpResult<PartWriter> {
        Ok(match format {
            FileFormat::Json => PartWriter::Json(Vec::new()),
            FileFormat::Csv => {
                let delimiter = csv.delimiter_byte().map_err(OperatorError::InvalidData)?;
                let w = arrow_csv::WriterBuilder::new().with_header(csv.header).with_delimiter(delimiter);
                PartWriter::Csv(Box::new(w.build(Vec::new())), 0)
            }
            FileFormat::Parquet => {
                let codec = match compression {
                    Compression::None => Codec::UNCOMPRESSED,
                    Compression::Snappy => Codec::SNAPPY,
                    Compression::Zstd => Codec::ZSTD(ZstdLevel::default()),
                };
                let props = WriterProperties::builder().set_compression(codec).build();
                PartWriter::Parquet(Box::new(
                    ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props)).map_err(external)?,
                ))
            }
        })
    }

    /// Appends rows.
    pub fn write(&mut self, batch: &RecordBatch) -> OpResult<()> {
        match self {
            PartWriter::Json(buf) => {
                let mut w = arrow::json::LineDelimitedWriter::new(buf);
                w.write(batch)?;
                w.finish()?;
            }
            // An estimate: the CSV writer hides its buffer until the end.
            PartWriter::Csv(w, size) => {
                w.write(batch).map_err(external)?;
                *size += batch.get_array_memory_size() as u64;
            }
            PartWriter::Parquet(w) => w.write(batch).map_err(external)?,
        }
        Ok(())
    }

    /// Bytes the part holds so far (for Parquet, with the open row group's
    /// estimate).
    pub fn size(&self) -> u64 {
        match self {
            PartWriter::Json(buf) => buf.len() as u64,
            PartWriter::Csv(_, size) => *size,
            PartWriter::Parquet(w) => (w.bytes_written() + w.in_progress_size()) as u64,
        }
    }

    /// The complete file.
    pub fn finish(self) -> OpResult<Vec<u8>> {
        Ok(match self {
            PartWriter::Json(buf) => buf,
            PartWriter::Csv(w, _) => w.into_inner(),
            PartWriter::Parquet(w) => w.into_inner().map_err(external)?,
        })
    }
}

/// Where a column of the input is, for directory names.
#[derive(Debug, Clone)]
pub struct Partitioner {
    /// (name, index) of the `partition_by` columns.
    pub columns: Vec<(String, usize)>,
    /// Index and pattern of the event-time column.
    pub time: Option<(usize, String)>,
    /// Indexes of the columns written into files.
    pub written: Vec<usize>,
    /// Their schema.
    pub schema: SchemaRef,
}

/// A value as a directory name part: `/` and other characters unsafe in
/// paths escaped as `%XX`, NULL as Hive writes it.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' ' | '+' | ',') {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    if out.is_empty() || out == "." || out == ".." {
        return format!("%{}", out.len());
    }
    out
}

const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// The value a directory name part stands for (`None` for NULL): the
/// inverse of `escape`. A malformed escape is kept as written.
pub fn unescape(v: &str) -> Option<String> {
    match v {
        NULL_PARTITION => return None,
        "%0" => return Some(String::new()),
        "%1" => return Some(".".into()),
        "%2" => return Some("..".into()),
        _ => {}
    }
    let (b, mut out, mut i) = (v.as_bytes(), Vec::with_capacity(v.len()), 0);
    while i < b.len() {
        let hex = (b[i] == b'%').then(|| v.get(i + 1..i + 3)).flatten();
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

impl Partitioner {
    /// Whether rows go into directories at all.
    pub fn is_flat(&self) -> bool {
        self.columns.is_empty() && self.time.is_none()
    }

    /// The rows of `batch` by directory (relative, `a=1/dt=…`; "" when
    /// flat), holding only the written columns.
    pub fn split(&self, batch: &RecordBatch) -> OpResult<Vec<(String, RecordBatch)>> {
        let projected = batch.project(&self.written)?;
        if self.is_flat() {
            return Ok(vec![(String::new(), projected)]);
        }
        let n = batch.num_rows();
        let mut dirs: Vec<String> = vec![String::new(); n];
        for (name, i) in &self.columns {
            let col = arrow::compute::cast(batch.column(*i), &DataType::Utf8)?;
            let col = col.as_string::<i32>();
            for (r, dir) in dirs.iter_mut().enumerate() {
                let v = if col.is_valid(r) { escape(col.value(r)) } else { NULL_PARTITION.into() };
                dir.push_str(&format!("{name}={v}/"));
            }
        }
        if let Some((i, pattern)) = &self.time {
            let ms = event_millis(batch.column(*i))?;
            for (r, dir) in dirs.iter_mut().enumerate() {
                let t = ms.get(r).copied().flatten().ok_or_else(|| {
                    OperatorError::InvalidData("a row without event time cannot be put in a time partition".into())
                })?;
                let at = chrono::DateTime::from_timestamp_millis(t)
                    .ok_or_else(|| OperatorError::InvalidData(format!("event time {t} ms is out of range")))?;
                dir.push_str(&at.format(pattern).to_string());
                dir.push('/');
            }
        }
        let mut groups: HashMap<&str, Vec<u32>> = HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        for (r, d) in dirs.iter().enumerate() {
            let e = groups.entry(d.as_str()).or_default();
            if e.is_empty() {
                order.push(d.as_str());
            }
            e.push(r as u32);
        }
        if order.len() == 1 {
            return Ok(vec![(order[0].trim_end_matches('/').to_string(), projected)]);
        }
        let mut out = Vec::with_capacity(order.len());
        for d in order {
            let idx = UInt32Array::from(groups.remove(d).expect("grouped"));
            out.push((d.trim_end_matches('/').to_string(), arrow::compute::take_record_batch(&projected, &idx)?));
        }
        Ok(out)
    }
}

/// Event times in epoch milliseconds of an integer or timestamp column.
fn event_millis(col: &dyn Array) -> OpResult<Vec<Option<i64>>> {
    Ok(match col.data_type() {
        DataType::Timestamp(_, _) => {
            let c = arrow::compute::cast(col, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
            let c = c.as_primitive::<TimestampMillisecondType>();
            (0..c.len()).map(|r| c.is_valid(r).then(|| c.value(r))).collect()
        }
        _ => {
            let c = arrow::compute::cast(col, &DataType::Int64)?;
            let c = c.as_primitive::<Int64Type>();
            (0..c.len()).map(|r| c.is_valid(r).then(|| c.value(r))).collect()
        }
    })
}

/// The schema of the written columns.
pub fn written_schema(schema: &SchemaRef, written: &[usize]) -> OpResult<SchemaRef> {
    Ok(Arc::new(schema.project(written)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn directory_names_read_back_as_the_values_they_escape() {
        for v in ["", ".", "..", "a/b", "100%", "déjà vu", "x:1,2+3", "%0"] {
            assert_eq!(super::unescape(&super::escape(v)).as_deref(), Some(v), "{v}");
        }
        assert_eq!(super::unescape(super::NULL_PARTITION), None);
    }

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("page", DataType::Utf8, true),
            Field::new("ts", DataType::Int64, false),
            Field::new("n", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("a/b"), None, Some("a/b"), Some("home")])),
                // 2026-03-01 08:00, 09:30, 08:59, 08:00 UTC
                Arc::new(Int64Array::from(vec![
                    1_772_352_000_000,
                    1_772_357_400_000,
                    1_772_355_540_000,
                    1_772_352_000_000,
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_go_to_hive_style_directories_without_their_partition_columns() {
        let b = batch();
        let p = Partitioner {
            columns: vec![("page".into(), 0)],
            time: Some((1, "dt=%Y-%m-%d/hour=%H".into())),
            written: vec![1, 2],
            schema: written_schema(&b.schema(), &[1, 2]).unwrap(),
        };
        let parts = p.split(&b).unwrap();
        let dirs: Vec<(&str, usize)> = parts.iter().map(|(d, b)| (d.as_str(), b.num_rows())).collect();
        assert_eq!(
            dirs,
            vec![
                ("page=a%2Fb/dt=2026-03-01/hour=08", 2),
                ("page=__HIVE_DEFAULT_PARTITION__/dt=2026-03-01/hour=09", 1),
                ("page=home/dt=2026-03-01/hour=08", 1)
            ]
        );
        assert_eq!(parts[0].1.num_columns(), 2, "the partition column is not written");
        let flat = Partitioner { columns: vec![], time: None, written: vec![0, 1, 2], schema: b.schema() };
        assert_eq!(flat.split(&b).unwrap()[0].0, "");
    }

    #[test]
    fn every_format_encodes_a_whole_file() {
        let b = batch();
        for format in [FileFormat::Json, FileFormat::Csv, FileFormat::Parquet] {
            let mut w = PartWriter::new(format, Compression::Zstd, CsvSettings::default(), &b.schema()).unwrap();
            w.write(&b).unwrap();
            w.write(&b).unwrap();
            assert!(w.size() > 0 || format == FileFormat::Parquet);
            let bytes = w.finish().unwrap();
            match format {
                FileFormat::Json => assert_eq!(String::from_utf8(bytes).unwrap().lines().count(), 8),
                FileFormat::Csv => {
                    let text = String::from_utf8(bytes).unwrap();
                    assert_eq!(text.lines().next(), Some("page,ts,n"));
                    assert_eq!(text.lines().count(), 9);
                }
                FileFormat::Parquet => {
                    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                        bytes::Bytes::from(bytes),
                    )
                    .unwrap()
                    .build()
                    .unwrap();
                    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
                    assert_eq!(rows, 8);
                }
            }
        }
    }
}
