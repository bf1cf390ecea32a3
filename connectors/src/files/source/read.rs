//! Reading one file of `file_source`: JSON lines and CSV are fetched in
//! ranged reads and cut at line ends, so a position is a byte offset; a
//! Parquet file is fetched whole and read in batches, so a position is a
//! row count.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use weir_runtime::error::{OpResult, OperatorError};

use crate::blocking::wait;
use crate::files::config::CsvSettings;
use crate::files::storage_error;
use crate::kafka::format::JsonDecoder;

/// Bytes fetched per request of a line-based file.
const CHUNK: u64 = 4 << 20;

/// How the lines of a JSON or CSV file become rows.
pub enum LineFormat {
    /// One JSON object per line.
    Json(JsonDecoder),
    /// One CSV record per line.
    Csv { schema: SchemaRef, csv: CsvSettings, delimiter: u8 },
}

impl LineFormat {
    /// The rows of `lines`, or the index of the first line that does not
    /// decode and why.
    fn decode(&mut self, lines: &[&[u8]]) -> OpResult<Result<RecordBatch, (usize, String)>> {
        match self {
            LineFormat::Json(decoder) => {
                let values: Vec<Option<&[u8]>> = lines.iter().map(|l| Some(*l)).collect();
                let decoded = decoder.decode(&values)?;
                Ok(match decoded.bad.into_iter().next() {
                    Some(bad) => Err(bad),
                    None => Ok(decoded.batch),
                })
            }
            LineFormat::Csv { schema, delimiter, .. } => {
                if let Ok(batch) = csv_rows(schema, *delimiter, lines) {
                    return Ok(Ok(batch));
                }
                // Find the line at fault, one by one: only on the error path.
                for (i, line) in lines.iter().enumerate() {
                    if let Err(why) = csv_rows(schema, *delimiter, std::slice::from_ref(line)) {
                        return Ok(Err((i, why)));
                    }
                }
                Err(OperatorError::InvalidData("CSV lines decode one by one but not together".into()))
            }
        }
    }

    /// Whether the first line of a file names the columns.
    fn header(&self) -> bool {
        matches!(self, LineFormat::Csv { csv, .. } if csv.header)
    }
}

/// Decodes CSV lines (each ending in a newline, or the file's last line).
fn csv_rows(schema: &SchemaRef, delimiter: u8, lines: &[&[u8]]) -> Result<RecordBatch, String> {
    let mut decoder = arrow_csv::ReaderBuilder::new(schema.clone())
        .with_header(false)
        .with_delimiter(delimiter)
        .with_batch_size(lines.len().max(1))
        .build_decoder();
    for line in lines {
        let mut line = *line;
        while !line.is_empty() {
            let used = decoder.decode(line).map_err(|e| e.to_string())?;
            line = &line[used..];
        }
        if !line.ends_with(b"\n") {
            decoder.decode(b"\n").map_err(|e| e.to_string())?;
        }
    }
    let batch = decoder.flush().map_err(|e| e.to_string())?;
    Ok(batch.unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
}

/// The file being read.
pub enum Reading {
    /// A JSON or CSV file: bytes fetched but not yet cut into lines.
    Lines(LineReader),
    /// A Parquet file, fetched whole.
    Parquet { reader: ParquetRecordBatchReader, rows: u64 },
}

/// Where a batch came from, for error messages.
pub struct Batch {
    /// The rows.
    pub rows: RecordBatch,
    /// The position in the file after them.
    pub position: u64,
}

/// A line-based file read in ranged requests.
pub struct LineReader {
    store: Arc<dyn ObjectStore>,
    path: StorePath,
    size: u64,
    /// File offset of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
    /// Lines read since this reader opened (line numbers in errors).
    line: u64,
}

impl LineReader {
    /// Opens `path` (`size` bytes) at byte `from`.
    pub fn new(store: Arc<dyn ObjectStore>, path: StorePath, size: u64, from: u64) -> LineReader {
        LineReader { store, path, size, start: from, buf: Vec::new(), line: 0 }
    }

    fn fetched(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    /// Fetches the next chunk; false at the end of the file.
    fn fetch(&mut self) -> OpResult<bool> {
        let from = self.fetched();
        if from >= self.size {
            return Ok(false);
        }
        let to = (from + CHUNK).min(self.size);
        let (store, path) = (self.store.clone(), self.path.clone());
        let bytes = wait(async move { store.get_range(&path, from..to).await })
            .map_err(|e| storage_error(format!("reading {}", self.path), e))?;
        self.buf.extend_from_slice(&bytes);
        Ok(true)
    }

    /// Up to `max` rows from the next lines; `None` at the end of the file.
    /// A CSV header is skipped at the start of the file.
    pub fn next(&mut self, format: &mut LineFormat, max: usize, name: &str) -> OpResult<Option<Batch>> {
        if self.start == 0 && format.header() {
            let Some((_, end)) = self.take_lines(1)? else { return Ok(None) };
            self.line += 1;
            self.buf.drain(..end);
            self.start += end as u64;
        }
        let Some((count, end)) = self.take_lines(max)? else { return Ok(None) };
        let text = &self.buf[..end];
        let mut lines: Vec<&[u8]> = Vec::with_capacity(count);
        let mut numbers = Vec::with_capacity(count);
        for (i, l) in text.split_inclusive(|b| *b == b'\n').enumerate() {
            if !l.iter().all(u8::is_ascii_whitespace) {
                lines.push(l);
                numbers.push(self.line + 1 + i as u64);
            }
        }
        let rows = match format.decode(&lines)? {
            Ok(rows) => rows,
            Err((i, why)) => {
                return Err(OperatorError::InvalidData(format!("{name}: line {} does not decode: {why}", numbers[i])))
            }
        };
        self.line += count as u64;
        self.buf.drain(..end);
        self.start += end as u64;
        Ok(Some(Batch { rows, position: self.start }))
    }

    /// How many of the next lines (at most `max`, at least one) are in
    /// `buf` after fetching what they need, and where they end; `None` at
    /// the end of the file.
    fn take_lines(&mut self, max: usize) -> OpResult<Option<(usize, usize)>> {
        loop {
            let mut count = 0;
            let mut end = 0;
            for (i, b) in self.buf.iter().enumerate() {
                if *b == b'\n' {
                    count += 1;
                    end = i + 1;
                    if count == max {
                        break;
                    }
                }
            }
            if count == max {
                return Ok(Some((count, end)));
            }
            if !self.fetch()? {
                // The end: a last line without a newline counts too.
                if end < self.buf.len() {
                    return Ok(Some((count + 1, self.buf.len())));
                }
                return Ok((count > 0).then_some((count, end)));
            }
            if count > 0 && self.buf.len() as u64 >= CHUNK {
                return Ok(Some((count, end)));
            }
        }
    }
}

impl Reading {
    /// Opens a Parquet file, fetched whole, after its first `rows` rows.
    pub fn parquet(store: &Arc<dyn ObjectStore>, path: &StorePath, rows: u64, batch: usize) -> OpResult<Reading> {
        let (s, p) = (store.clone(), path.clone());
        let bytes: Bytes = wait(async move { s.get(&p).await?.bytes().await })
            .map_err(|e| storage_error(format!("reading {path}"), e))?;
        let bad =
            |e: parquet::errors::ParquetError| OperatorError::InvalidData(format!("{path}: not a Parquet file: {e}"));
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(bad)?
            .with_batch_size(batch)
            .with_offset(rows as usize)
            .build()
            .map_err(bad)?;
        Ok(Reading::Parquet { reader, rows })
    }
}

/// The next rows of a Parquet reader, as the declared columns: found by
/// name and cast to their declared types.
pub fn parquet_next(
    reader: &mut ParquetRecordBatchReader,
    rows: &mut u64,
    schema: &SchemaRef,
    name: &str,
) -> OpResult<Option<Batch>> {
    let Some(batch) = reader.next() else { return Ok(None) };
    let batch = batch.map_err(|e| OperatorError::InvalidData(format!("{name}: {e}")))?;
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let Some(column) = batch.column_by_name(f.name()) else {
            if f.is_nullable() {
                columns.push(arrow::array::new_null_array(f.data_type(), batch.num_rows()));
                continue;
            }
            return Err(OperatorError::InvalidData(format!("{name}: no column `{}` in the file", f.name())));
        };
        let column = arrow::compute::cast(column, f.data_type()).map_err(|e| {
            OperatorError::InvalidData(format!(
                "{name}: column `{}` is {} in the file, which does not read as {}: {e}",
                f.name(),
                column.data_type(),
                f.data_type()
            ))
        })?;
        if !f.is_nullable() && column.null_count() > 0 {
            return Err(OperatorError::InvalidData(format!("{name}: column `{}` holds nulls", f.name())));
        }
        columns.push(column);
    }
    *rows += batch.num_rows() as u64;
    let rows_out = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Some(Batch { rows: rows_out, position: *rows }))
}
