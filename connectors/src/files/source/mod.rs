//! `file_source`: the rows of files on local disk, S3-compatible storage or
//! HDFS, as JSON lines, CSV or Parquet — one file, or every file under a
//! directory (recursively, in name order; names starting with `.` or `_`,
//! such as in-progress parts and `_SUCCESS`, are skipped: the `file_sink`'s
//! finished parts read back). Bounded: it ends when every file is read.
//! Subtask `i` of `p` reads the files whose place in that order is `i` mod
//! `p`. A line that does not decode against the schema fails the job naming
//! the file and line. Each checkpoint records how far every file was read
//! (bytes, or rows of a Parquet file; union state), so a restore resumes
//! mid-file and reads no row twice.

mod read;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Deserialize;
use weir_runtime::error::{OpResult, OperatorError, PlanError};
use weir_runtime::operators::{
    Arity, Collector, Instance, OperatorFactory, PlanContext, SourceOperator, SourceStatus, SubtaskInfo,
};
use weir_runtime::state::{StateReader, StateWriter};

use super::config::{storage_uri, CsvSettings, FileFormat, S3Settings};
use super::{parts, storage_error};
use crate::blocking::wait;
use crate::kafka::format::{value_fields, ColumnSpec, Format, JsonDecoder};
use read::{LineFormat, LineReader, Reading};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// A file, or a directory of files: an absolute path, `file:///…`,
    /// `s3://bucket/prefix` or `hdfs://namenode:port/path`.
    path: String,
    /// `json` (one object per line, the default), `csv` or `parquet`.
    #[serde(default)]
    format: FileFormat,
    /// CSV's header line and delimiter.
    #[serde(default)]
    csv: CsvSettings,
    schema: Vec<ColumnSpec>,
    /// Columns of `schema` read from `name=value` directories of each
    /// file's path (as `file_sink` writes them) rather than from the files.
    #[serde(default)]
    partition_by: Vec<String>,
    #[serde(default = "default_batch")]
    batch_size: usize,
    /// S3 endpoint, region and addressing.
    #[serde(default)]
    s3: S3Settings,
}

fn default_batch() -> usize {
    8192
}

/// Factory of `file_source`.
#[derive(Debug)]
pub struct FileSourceFactory;

/// How far each file was read: its URI → bytes (rows for Parquet).
const POSITIONS: &str = "positions";

/// A file's position once it is read to its end.
const DONE: u64 = u64::MAX;

/// What planning finds: the configuration, the URI, the rows' schema, and
/// the schema of the columns in the files.
type Planned = (Config, String, SchemaRef, SchemaRef);

fn plan(ctx: &PlanContext<'_>) -> Result<Planned, PlanError> {
    let c: Config = ctx.config()?;
    let uri = storage_uri(&c.path).map_err(|e| ctx.error(e).field("config.path"))?;
    if c.batch_size == 0 {
        return Err(ctx.error("batch_size must be at least 1").field("config.batch_size"));
    }
    let fields = value_fields(Format::Json, &c.schema).map_err(|m| ctx.error(m).field("config.schema"))?;
    for (i, name) in c.partition_by.iter().enumerate() {
        let Some(f) = fields.iter().find(|f| f.name() == name) else {
            return Err(ctx.error(format!("no column `{name}` in the schema")).field("config.partition_by"));
        };
        if c.partition_by[..i].contains(name) {
            return Err(ctx.error(format!("column `{name}` is named twice")).field("config.partition_by"));
        }
        if f.data_type().is_nested() {
            return Err(ctx
                .error(format!("partition column `{name}` is {}; a directory name holds a plain value", f.data_type()))
                .field("config.partition_by"));
        }
    }
    let in_files: Vec<_> = fields.iter().filter(|f| !c.partition_by.contains(f.name())).cloned().collect();
    if in_files.is_empty() {
        return Err(ctx
            .error("every column is a partition column: nothing is read from the files")
            .field("config.partition_by"));
    }
    if c.format == FileFormat::Csv {
        c.csv.delimiter_byte().map_err(|e| ctx.error(e).field("config.csv.delimiter"))?;
        if let Some(f) = in_files.iter().find(|f| f.data_type().is_nested()) {
            return Err(ctx
                .error(format!("column `{}` is {}, which CSV cannot hold", f.name(), f.data_type()))
                .field("config.schema"));
        }
    }
    let schema = |f: Vec<arrow::datatypes::Field>| Arc::new(arrow::datatypes::Schema::new(f));
    Ok((c, uri, schema(fields), schema(in_files)))
}

impl OperatorFactory for FileSourceFactory {
    fn kind(&self) -> &str {
        "file_source"
    }
    fn arity(&self) -> Arity {
        Arity::Source
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Ok(plan(ctx)?.2)
    }
    fn state_types(&self, _ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        vec![(POSITIONS.into(), "union map file uri -> bytes (parquet: rows) read: u64".into())]
    }
    fn create(&self, ctx: &PlanContext<'_>, subtask: SubtaskInfo) -> Result<Instance, PlanError> {
        let (c, uri, schema, in_files) = plan(ctx)?;
        let format = match c.format {
            FileFormat::Json => Some(LineFormat::Json(
                JsonDecoder::new(in_files.fields().iter().map(|f| f.as_ref().clone()).collect(), c.batch_size)
                    .map_err(|e| ctx.error(e.to_string()))?,
            )),
            FileFormat::Csv => Some(LineFormat::Csv {
                schema: in_files.clone(),
                csv: c.csv,
                delimiter: c.csv.delimiter_byte().map_err(|e| ctx.error(e))?,
            }),
            FileFormat::Parquet => None,
        };
        Ok(Instance::Source(Box::new(FileSource {
            uri,
            s3: c.s3,
            batch: c.batch_size,
            schema,
            in_files,
            partition_by: c.partition_by,
            subtask,
            format,
            store: None,
            files: None,
            positions: BTreeMap::new(),
            current: None,
        })))
    }
}

/// Opens the store of `uri`, and the path within it to list: a local path
/// is opened at its directory (or, for a file, its parent), and never
/// created.
fn open(uri: &str, s3: &S3Settings) -> OpResult<(Arc<dyn ObjectStore>, String)> {
    if let Some(local) = uri.strip_prefix("file://") {
        let path = std::path::Path::new(local);
        let meta = std::fs::metadata(path).map_err(|e| OperatorError::Io { path: local.to_string(), source: e })?;
        let (dir, name) = match (meta.is_dir(), path.parent(), path.file_name()) {
            (true, _, _) => (path, String::new()),
            (false, Some(parent), Some(name)) => (parent, name.to_string_lossy().into_owned()),
            _ => return Err(OperatorError::InvalidData(format!("`{local}` is neither a file nor a directory"))),
        };
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| storage_error(format!("opening {local}"), e))?;
        return Ok((Arc::new(fs), name));
    }
    super::open_store(uri, s3)
}

/// Every file to read at `prefix` — those under it not hidden by a name
/// starting with `.` or `_`, or else the object itself — in name order, with
/// sizes. Listing comes first: some S3-compatible servers answer a HEAD of a
/// "directory" with an error rather than "not found".
async fn list(store: Arc<dyn ObjectStore>, prefix: String) -> object_store::Result<Vec<(StorePath, u64)>> {
    let root = (!prefix.is_empty()).then(|| StorePath::from(prefix.as_str()));
    let depth = root.as_ref().map_or(0, |r| r.parts().count());
    let mut found: Vec<(StorePath, u64)> = store
        .list(root.as_ref())
        .try_filter(|meta| {
            let hidden = meta.location.parts().skip(depth).any(|p| p.as_ref().starts_with(['.', '_']));
            std::future::ready(!hidden)
        })
        .map_ok(|meta| (meta.location, meta.size))
        .try_collect()
        .await?;
    if found.is_empty() {
        if let Some(root) = root {
            match store.head(&root).await {
                Ok(meta) => found.push((meta.location, meta.size)),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    found.sort();
    Ok(found)
}

struct FileSource {
    uri: String,
    s3: S3Settings,
    batch: usize,
    /// The rows' schema, and that of the columns in the files.
    schema: SchemaRef,
    in_files: SchemaRef,
    partition_by: Vec<String>,
    subtask: SubtaskInfo,
    /// How lines become rows; `None` for Parquet.
    format: Option<LineFormat>,
    store: Option<(Arc<dyn ObjectStore>, String)>,
    /// This subtask's files (path in the store, size, URI), once listed.
    files: Option<Vec<(StorePath, u64, String)>>,
    /// How far every file this subtask opened (and restored ones) was read.
    positions: BTreeMap<String, u64>,
    /// The file being read: its index in `files`, and its reader.
    current: Option<(usize, Reading)>,
}

impl FileSource {
    /// The rows of `batch` (the columns in the files) with the partition
    /// columns taken from the `name=value` directories of `file`'s URI.
    fn with_partitions(&self, batch: RecordBatch, file: &str) -> OpResult<RecordBatch> {
        if self.partition_by.is_empty() {
            return Ok(batch);
        }
        let dirs: Vec<&str> = file.split('/').collect();
        let dirs = &dirs[..dirs.len().saturating_sub(1)];
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for f in self.schema.fields() {
            if !self.partition_by.contains(f.name()) {
                columns.push(batch.column_by_name(f.name()).expect("a column of the files").clone());
                continue;
            }
            let prefix = format!("{}=", f.name());
            let value = dirs.iter().rev().find_map(|d| d.strip_prefix(prefix.as_str())).ok_or_else(|| {
                OperatorError::InvalidData(format!("{file}: no `{}=…` directory in the path", f.name()))
            })?;
            let text = StringArray::from(vec![parts::unescape(value); batch.num_rows()]);
            let column = arrow::compute::cast(&text, f.data_type()).map_err(|e| {
                OperatorError::InvalidData(format!("{file}: `{}={value}` is not a {}: {e}", f.name(), f.data_type()))
            })?;
            if !f.is_nullable() && column.null_count() > 0 {
                return Err(OperatorError::InvalidData(format!("{file}: partition column `{}` is null", f.name())));
            }
            columns.push(column);
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// Lists the files once and keeps this subtask's share.
    fn files(&mut self) -> OpResult<&[(StorePath, u64, String)]> {
        if self.files.is_none() {
            let (store, prefix) = open(&self.uri, &self.s3)?;
            let uri = self.uri.clone();
            let all =
                wait(list(store.clone(), prefix.clone())).map_err(|e| storage_error(format!("listing {uri}"), e))?;
            if all.is_empty() {
                return Err(OperatorError::InvalidData(format!("no files to read at {uri}")));
            }
            let (i, p) = (self.subtask.index as usize, self.subtask.parallelism.max(1) as usize);
            let mine = all.into_iter().enumerate().filter(|(n, _)| n % p == i).map(|(_, (path, size))| {
                // The file's URI: `uri` itself when it names the file.
                let rel = path.as_ref().strip_prefix(prefix.as_str()).unwrap_or(path.as_ref()).trim_start_matches('/');
                let full = if rel.is_empty() { uri.clone() } else { format!("{uri}/{rel}") };
                (path, size, full)
            });
            self.files = Some(mine.collect());
            self.store = Some((store, prefix));
        }
        Ok(self.files.as_deref().expect("listed"))
    }

    /// Opens the next file this subtask has not read to its end.
    fn open_next(&mut self) -> OpResult<bool> {
        self.files()?;
        let files = self.files.as_deref().expect("listed");
        let Some(n) = files.iter().position(|f| self.positions.get(&f.2) != Some(&DONE)) else { return Ok(false) };
        let (path, size, full) = files[n].clone();
        let at = self.positions.get(&full).copied().unwrap_or(0);
        let store = self.store.as_ref().expect("listed").0.clone();
        let reading = match self.format {
            Some(_) => Reading::Lines(LineReader::new(store, path, size, at)),
            None => Reading::parquet(&store, &path, at, self.batch)?,
        };
        self.current = Some((n, reading));
        Ok(true)
    }
}

impl SourceOperator for FileSource {
    fn poll(&mut self, out: &mut Collector) -> OpResult<SourceStatus> {
        loop {
            if self.current.is_none() && !self.open_next()? {
                return Ok(SourceStatus::Finished);
            }
            let (n, reading) = self.current.as_mut().expect("open");
            let full = self.files.as_ref().expect("listed")[*n].2.clone();
            let next = match reading {
                Reading::Lines(r) => r.next(self.format.as_mut().expect("line format"), self.batch, &full)?,
                Reading::Parquet { reader, rows } => read::parquet_next(reader, rows, &self.in_files, &full)?,
            };
            match next {
                Some(batch) => {
                    let rows = self.with_partitions(batch.rows, &full)?;
                    self.positions.insert(full, batch.position);
                    if rows.num_rows() > 0 {
                        out.emit(rows);
                        return Ok(SourceStatus::Emitted);
                    }
                }
                None => {
                    self.positions.insert(full, DONE);
                    self.current = None;
                }
            }
        }
    }

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        for (path, at) in &self.positions {
            w.put_union(POSITIONS, path.as_bytes().to_vec(), at.to_be_bytes().to_vec());
        }
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        for e in r.state(POSITIONS) {
            let bad = || OperatorError::State("a restored file position does not decode".into());
            let at = u64::from_be_bytes(e.value.as_deref().unwrap_or_default().try_into().map_err(|_| bad())?);
            let path = String::from_utf8(e.key.clone()).map_err(|_| bad())?;
            // Positions of local files were once kept by plain path.
            let path = if path.starts_with('/') { format!("file://{path}") } else { path };
            self.positions.insert(path, at);
        }
        Ok(())
    }
}
