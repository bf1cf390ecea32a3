//! `file_sink`: rows into part files on local disk, S3-compatible storage
//! or HDFS, as JSON lines, CSV or Parquet, rolled by size, by time and at
//! every checkpoint, and partitioned into directories by column values
//! (`page=home/`) and event time (`dt=2026-03-01/hour=08/`).
//!
//! **Exactly once.** A part is written under a hidden name
//! (`.part-….inprogress`, which Hive, Spark and Trino skip) when it rolls;
//! it gets its final name only when the checkpoint that covers it
//! completes. At barrier *n* every open part rolls, and the parts rolled
//! since barrier *n-1* — each as its hidden and final path, with the base
//! URI — go into the checkpoint. When checkpoint *n* completes they are
//! renamed. On restore from checkpoint *n*, parts recorded in it are renamed
//! (a part already renamed is skipped) and every other hidden part of this
//! sink's subtasks — written after the barrier, never covered by a
//! checkpoint — is deleted: after any crash, no final file holds a
//! duplicate row or a partial file. Recorded parts carry their base URI, so
//! a job restored with another `path` still finishes the old parts.
//!
//! Parquet parts cannot be resumed, so every part rolls at each
//! checkpoint whatever the format. Without checkpoints parts are renamed as
//! soon as they roll and at the end of input.

mod commit;
mod config;
mod parts;
mod source;
#[cfg(test)]
mod tests;

pub use source::FileSourceFactory;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use weir_runtime::error::{OpResult, OperatorError, PlanError};
use weir_runtime::operators::{Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use weir_runtime::state::{subtask_epoch_key, CheckpointId, StateReader, StateWriter, UnionKeys};

use commit::Committer;
pub use commit::{PartitionCommit, Trigger};
pub use config::{storage_uri, Compression, CsvSettings, FileFormat, FileSinkConfig, TimePartition};
use parts::{PartWriter, Partitioner};

use crate::blocking::wait;
use weir_types::failpoint;

const SUBTASKS: &str = "subtasks";
const EPOCHS: &str = "epochs";
const PARTITIONS: &str = "partitions";

/// Factory of `file_sink`.
#[derive(Debug)]
pub struct FileSinkFactory;

impl FileSinkFactory {
    fn config(ctx: &PlanContext<'_>) -> Result<(FileSinkConfig, String, Partitioner, Option<String>), PlanError> {
        let c: FileSinkConfig = ctx.config()?;
        let uri = c.uri().map_err(|e| ctx.error(e).field("config.path"))?;
        if c.max_part_bytes == 0 {
            return Err(ctx.error("max_part_bytes must be at least 1").field("config.max_part_bytes"));
        }
        if c.part_prefix.is_empty() || c.part_prefix.contains('/') || c.part_prefix.starts_with(['.', '_']) {
            return Err(ctx
                .error("part_prefix must be a plain file name start (no `/`, not starting with `.` or `_`)")
                .field("config.part_prefix"));
        }
        let schema = &ctx.inputs[0];
        let mut columns = Vec::new();
        for name in &c.partition_by {
            let i = schema
                .index_of(name)
                .map_err(|_| ctx.error(format!("no column `{name}` in the input")).field("config.partition_by"))?;
            if columns.iter().any(|(n, _)| n == name) {
                return Err(ctx.error(format!("column `{name}` is named twice")).field("config.partition_by"));
            }
            columns.push((name.clone(), i));
        }
        let time = match &c.time_partition {
            Some(t) => {
                let i = schema.index_of(&t.column).map_err(|_| {
                    ctx.error(format!("no column `{}` in the input", t.column)).field("config.time_partition.column")
                })?;
                let dt = schema.field(i).data_type();
                if !(dt.is_integer() || matches!(dt, DataType::Timestamp(_, _))) {
                    return Err(ctx
                        .error(format!(
                            "event-time column `{}` is {dt}; it must hold epoch milliseconds or timestamps",
                            t.column
                        ))
                        .field("config.time_partition.column"));
                }
                check_pattern(&t.pattern).map_err(|e| ctx.error(e).field("config.time_partition.pattern"))?;
                Some((i, t.pattern.clone()))
            }
            None => None,
        };
        let written: Vec<usize> = (0..schema.fields().len()).filter(|i| !columns.iter().any(|(_, c)| c == i)).collect();
        if written.is_empty() {
            return Err(ctx
                .error("every column is a partition column: nothing is left to write")
                .field("config.partition_by"));
        }
        // The partition columns in directory order: those of partition_by,
        // then the names of the time pattern's `name=` directories.
        let time_names = c.time_partition.iter().flat_map(|t| t.pattern.split('/').filter_map(|d| d.split_once('=')));
        let names: Vec<String> =
            columns.iter().map(|(n, _)| n.clone()).chain(time_names.map(|(n, _)| n.to_string())).collect();
        let commit_pattern = match &c.partition_commit {
            Some(pc) => Some(
                pc.check(&names)
                    .map_err(|(e, field)| ctx.error(e).field(format!("config.partition_commit.{field}")))?,
            ),
            None => None,
        };
        let schema = parts::written_schema(schema, &written).map_err(|e| ctx.error(e.to_string()))?;
        if c.format == FileFormat::Csv {
            c.csv.delimiter_byte().map_err(|e| ctx.error(e).field("config.csv.delimiter"))?;
            if let Some(f) = schema.fields().iter().find(|f| f.data_type().is_nested()) {
                return Err(ctx
                    .error(format!("column `{}` is {}, which CSV cannot hold", f.name(), f.data_type()))
                    .field("config.format"));
            }
        }
        Ok((c, uri, Partitioner { columns, time, written, schema }, commit_pattern))
    }
}

/// Checks a `strftime` pattern: valid, relative, no `..`.
fn check_pattern(pattern: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(pattern).any(|i| matches!(i, Item::Error)) {
        return Err(format!("`{pattern}` is not a valid strftime pattern"));
    }
    if pattern.starts_with('/') || pattern.split('/').any(|p| p == ".." || p.is_empty()) {
        return Err(format!("`{pattern}` must be a relative directory path"));
    }
    Ok(())
}

impl OperatorFactory for FileSinkFactory {
    fn kind(&self) -> &str {
        "file_sink"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn is_sink(&self) -> bool {
        true
    }
    fn state_types(&self, _ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        vec![
            (SUBTASKS.into(), "union map subtask -> base uri".into()),
            (EPOCHS.into(), "union map (subtask, epoch) -> parts to commit (json)".into()),
            (PARTITIONS.into(), "union map subtask -> partitions waiting for their success file (json)".into()),
        ]
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Self::config(ctx)?;
        Ok(ctx.inputs[0].clone())
    }
    fn create(&self, ctx: &PlanContext<'_>, subtask: SubtaskInfo) -> Result<Instance, PlanError> {
        let (config, uri, partitioner, pattern) = Self::config(ctx)?;
        let committer = match (&config.partition_commit, pattern) {
            (Some(pc), Some(pattern)) => {
                Some(Committer::new(pc.clone(), pattern, ctx.uid, subtask.index, subtask.parallelism))
            }
            _ => None,
        };
        Ok(Instance::Operator(Box::new(FileSink {
            committer,
            uid: ctx.uid.to_string(),
            run: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
            checkpointed: ctx.checkpoint.is_some(),
            config,
            uri,
            partitioner,
            subtask,
            store: None,
            reached: false,
            open: BTreeMap::new(),
            next_part: 0,
            rolled: Vec::new(),
            pending: VecDeque::new(),
            written: BTreeSet::new(),
            count: 0,
        })))
    }
}

/// A part that rolled: where it waits, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Part {
    hidden: String,
    fin: String,
}

/// The parts of one epoch, as recorded in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EpochParts {
    base: String,
    parts: Vec<Part>,
}

struct OpenPart {
    writer: PartWriter,
    opened: Instant,
}

/// The store of the sink's base URI and the prefix within it.
#[derive(Clone)]
struct Store {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl Store {
    fn open(uri: &str, s3: &config::S3Settings) -> OpResult<Store> {
        if uri.starts_with("memory:") {
            return Err(OperatorError::InvalidData("file_sink cannot write to memory://".into()));
        }
        let (store, prefix) = open_store(uri, s3)?;
        Ok(Store { store, prefix })
    }

    /// The store path of `rel`, taken as written: directory names are
    /// already escaped (`hms=08%3A05`), and `StorePath::from` would escape
    /// their `%` once more.
    fn path(&self, rel: &str) -> StorePath {
        let full = if self.prefix.is_empty() { rel.to_string() } else { format!("{}/{rel}", self.prefix) };
        StorePath::parse(&full).unwrap_or_else(|_| StorePath::from(full))
    }
}

/// The store of a storage URI and the prefix within it.
fn open_store(uri: &str, s3: &config::S3Settings) -> OpResult<(Arc<dyn ObjectStore>, String)> {
    let opts = weir_state::S3Options {
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        path_style: s3.path_style,
        ..Default::default()
    };
    weir_state::object_store_for(uri, &opts)
        .map_err(|e| OperatorError::External { system: "storage", message: format!("opening {uri}: {e}") })
}

fn storage_error(doing: String, e: object_store::Error) -> OperatorError {
    OperatorError::External { system: "storage", message: format!("{doing}: {e}") }
}

/// Renames each part to its final name; a part already renamed (the hidden
/// object gone, the final one there) is skipped.
async fn commit(store: Store, parts: Vec<Part>) -> OpResult<usize> {
    let mut n = 0;
    for p in parts {
        let (from, to) = (store.path(&p.hidden), store.path(&p.fin));
        let Err(e) = store.store.rename(&from, &to).await else {
            n += 1;
            continue;
        };
        // Renamed already, by an earlier attempt of this commit? Stores
        // report a missing source differently (HDFS as the NameNode's
        // FileNotFoundException), so look rather than match the error.
        let pending = !matches!(store.store.head(&from).await, Err(object_store::Error::NotFound { .. }));
        if pending {
            return Err(storage_error(format!("committing {to}"), e));
        }
        match store.store.head(&to).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => {
                return Err(OperatorError::State(format!(
                    "part {} is neither pending at {from} nor committed: the checkpoint's files were removed",
                    p.fin
                )))
            }
            Err(e) => return Err(storage_error(format!("committing {to}"), e)),
        }
    }
    Ok(n)
}

/// One subtask of `file_sink`.
pub struct FileSink {
    uid: String,
    /// Distinguishes the part names of this run from those of earlier runs.
    run: String,
    checkpointed: bool,
    config: FileSinkConfig,
    uri: String,
    partitioner: Partitioner,
    subtask: SubtaskInfo,
    store: Option<Store>,
    /// Whether the storage answered once (checked before the first record).
    reached: bool,
    /// Open parts by directory.
    open: BTreeMap<String, OpenPart>,
    next_part: u64,
    /// Parts rolled since the last barrier.
    rolled: Vec<Part>,
    /// Parts of closed epochs waiting for their checkpoint.
    pending: VecDeque<(u64, Vec<Part>)>,
    written: UnionKeys,
    count: u64,
    /// Success files of finished partitions, when configured.
    committer: Option<Committer>,
}

/// The directories of parts (relative to the sink's base).
fn dirs_of(parts: &[Part]) -> BTreeSet<&str> {
    parts.iter().map(|p| p.fin.rsplit_once('/').map_or("", |(d, _)| d)).collect()
}

impl FileSink {
    fn store(&mut self) -> OpResult<Store> {
        if self.store.is_none() {
            self.store = Some(Store::open(&self.uri, &self.config.s3)?);
        }
        Ok(self.store.clone().expect("opened"))
    }

    /// Checks once, before the first record is written, that the storage
    /// answers and lets this sink write its directory: it writes a small
    /// hidden file and deletes it. An unreachable NameNode or endpoint,
    /// refused credentials or a missing permission fail the job at start,
    /// with the storage's reason, instead of at the first roll.
    fn ensure_reached(&mut self) -> OpResult<()> {
        if self.reached {
            return Ok(());
        }
        let store = self.store()?;
        let probe = store.path(&format!("{}{}.probe", self.hidden_prefix(self.subtask.index), self.run));
        let uri = self.uri.clone();
        wait(async move {
            let fail = |e| storage_error(format!("writing to {uri}"), e);
            store.store.put(&probe, bytes::Bytes::new().into()).await.map_err(fail)?;
            store.store.delete(&probe).await.map_err(fail)
        })?;
        self.reached = true;
        Ok(())
    }

    /// The hidden-name prefix of this sink's subtask `j`.
    fn hidden_prefix(&self, j: u32) -> String {
        format!(".{}-{}-{j}-", self.config.part_prefix, self.uid)
    }

    /// Closes the part of `dir`, writes it under its hidden name, and
    /// commits it at once when the job has no checkpoints.
    fn roll(&mut self, dir: &str) -> OpResult<()> {
        let Some(part) = self.open.remove(dir) else { return Ok(()) };
        let bytes = part.writer.finish()?;
        let ext = self.config.format.extension();
        let name = format!(
            "{}-{}-{}-{}-{}.{ext}",
            self.config.part_prefix, self.uid, self.subtask.index, self.run, self.next_part
        );
        self.next_part += 1;
        let join = |n: &str| if dir.is_empty() { n.to_string() } else { format!("{dir}/{n}") };
        let p = Part { hidden: join(&format!(".{name}.inprogress")), fin: join(&name) };
        let store = self.store()?;
        let path = store.path(&p.hidden);
        let s = store.clone();
        wait(async move {
            s.store.put(&path, bytes.into()).await.map(|_| ()).map_err(|e| storage_error(format!("writing {path}"), e))
        })?;
        if self.checkpointed {
            self.rolled.push(p);
        } else {
            let parts = vec![p];
            if let Some(c) = &mut self.committer {
                c.committed(dirs_of(&parts));
            }
            wait(commit(store, parts))?;
        }
        Ok(())
    }

    fn roll_all(&mut self) -> OpResult<()> {
        let dirs: Vec<String> = self.open.keys().cloned().collect();
        for d in dirs {
            self.roll(&d)?;
        }
        Ok(())
    }
}

/// Whether hidden file `name` is one this sink's subtask wrote, given the
/// subtask's hidden prefix (`.part-<uid>-<j>-`): the prefix, then the run
/// (eight hex digits), then `-<n>.` for a part or `.` for a probe. The whole
/// shape is checked, not the prefix alone: a uid may itself contain `-`, and
/// the parts of a sink `lake-1` must not pass for those of subtask 1 of a
/// sink `lake` writing to the same directory.
fn named_after(name: &str, prefix: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else { return false };
    let Some((run, rest)) = rest.split_at_checked(8) else { return false };
    if !run.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    match rest.strip_prefix('-') {
        Some(n) => n.split_once('.').is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        None => rest.starts_with('.'),
    }
}

/// Deletes the hidden files whose names start with one of `prefixes` and
/// that `keep` does not hold (paths relative to the store's prefix).
async fn clean_up(store: Store, prefixes: Vec<String>, keep: BTreeSet<String>) -> OpResult<usize> {
    let root = (!store.prefix.is_empty()).then(|| StorePath::from(store.prefix.as_str()));
    let listed: Vec<object_store::ObjectMeta> = store
        .store
        .list(root.as_ref())
        .try_collect()
        .await
        .map_err(|e| storage_error(format!("listing {}", store.prefix), e))?;
    let base = format!("{}/", store.prefix);
    let mut n = 0;
    for m in listed {
        let name = m.location.filename().unwrap_or_default();
        let rel = m.location.as_ref().strip_prefix(base.as_str()).unwrap_or(m.location.as_ref());
        // Every hidden file named after these subtasks that no checkpoint
        // keeps: parts written after the last barrier, start-up probes, and
        // what a writer killed inside a put left (the HDFS store writes
        // `.{name}.tmp.{i}` and renames it when the put completes; the file
        // may still be under the dead writer's lease, HDFS deletes it anyway).
        let own = match name.strip_prefix('.') {
            Some(rest) if rest.starts_with('.') => rest,
            _ => name,
        };
        if prefixes.iter().any(|p| named_after(own, p)) && !keep.contains(rel) {
            store.store.delete(&m.location).await.map_err(|e| storage_error(format!("deleting {}", m.location), e))?;
            n += 1;
        }
    }
    Ok(n)
}

impl Operator for FileSink {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, _out: &mut Collector) -> OpResult<()> {
        self.ensure_reached()?;
        self.count += batch.num_rows() as u64;
        for (dir, rows) in self.partitioner.split(&batch)? {
            let part = match self.open.get_mut(&dir) {
                Some(p) => p,
                None => {
                    let writer = PartWriter::new(
                        self.config.format,
                        self.config.compression,
                        self.config.csv,
                        &self.partitioner.schema,
                    )?;
                    self.open.entry(dir.clone()).or_insert(OpenPart { writer, opened: Instant::now() })
                }
            };
            part.writer.write(&rows)?;
            if part.writer.size() >= self.config.max_part_bytes {
                self.roll(&dir)?;
            }
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        if let Some(c) = &mut self.committer {
            c.watermark(watermark);
        }
        out.emit_watermark(watermark);
        Ok(())
    }

    fn on_processing_time(&mut self, now: Instant, _out: &mut Collector) -> OpResult<()> {
        self.ensure_reached()?;
        let old: Vec<String> = self
            .open
            .iter()
            .filter(|(_, p)| now.duration_since(p.opened) >= self.config.rollover_interval)
            .map(|(d, _)| d.clone())
            .collect();
        for d in old {
            self.roll(&d)?;
        }
        Ok(())
    }

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        self.roll_all()?;
        let id = w.checkpoint().0;
        let parts = std::mem::take(&mut self.rolled);
        if !parts.is_empty() {
            self.pending.push_back((id, parts));
        }
        let mut want: BTreeMap<(String, Vec<u8>), Vec<u8>> = BTreeMap::new();
        want.insert((SUBTASKS.into(), self.subtask.index.to_be_bytes().to_vec()), self.uri.clone().into_bytes());
        for (epoch, parts) in &self.pending {
            let record = EpochParts { base: self.uri.clone(), parts: parts.clone() };
            let bytes = serde_json::to_vec(&record).map_err(|e| OperatorError::State(e.to_string()))?;
            want.insert((EPOCHS.into(), subtask_epoch_key(self.subtask.index, *epoch)), bytes);
        }
        if self.committer.is_some() {
            let store = self.store()?;
            let c = self.committer.as_mut().expect("checked");
            c.barrier(&store, id)?;
            if !c.pending.is_empty() {
                let bytes = serde_json::to_vec(&c.pending).map_err(|e| OperatorError::State(e.to_string()))?;
                want.insert((PARTITIONS.into(), self.subtask.index.to_be_bytes().to_vec()), bytes);
            }
        }
        self.written = w.put_union_entries(&self.written, want);
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        // Union state: the parts of every subtask of the previous run. This
        // subtask finishes those of the old subtasks `j` with
        // `j mod parallelism = index`.
        let p = self.subtask.parallelism;
        let mine = |j: u32| j % p == self.subtask.index;
        let mut olds: BTreeMap<u32, String> = BTreeMap::new();
        for e in r.state(SUBTASKS) {
            let j = u32::from_be_bytes(
                e.key.as_slice().try_into().map_err(|_| OperatorError::State("file sink subtask key".into()))?,
            );
            let base = String::from_utf8(e.value.clone().unwrap_or_default())
                .map_err(|_| OperatorError::State("file sink base uri".into()))?;
            self.written.insert((SUBTASKS.into(), e.key.clone()));
            if mine(j) {
                olds.insert(j, base);
            }
        }
        for e in r.state(PARTITIONS) {
            self.written.insert((PARTITIONS.into(), e.key.clone()));
            let j = u32::from_be_bytes(
                e.key.as_slice().try_into().map_err(|_| OperatorError::State("file sink partitions key".into()))?,
            );
            let Some(c) = self.committer.as_mut().filter(|_| mine(j)) else { continue };
            let pending: BTreeMap<String, i64> = serde_json::from_slice(e.value.as_deref().unwrap_or_default())
                .map_err(|e| OperatorError::State(format!("file sink partitions do not decode: {e}")))?;
            for (dir, t) in pending {
                c.pending.entry(dir).or_insert(t);
            }
        }
        let mut by_base: BTreeMap<String, Vec<Part>> = BTreeMap::new();
        for e in r.state(EPOCHS) {
            if e.key.len() != 12 {
                return Err(OperatorError::State("file sink epoch key does not decode".into()));
            }
            self.written.insert((EPOCHS.into(), e.key.clone()));
            let j = u32::from_be_bytes(e.key[..4].try_into().expect("4 bytes"));
            if !mine(j) {
                continue;
            }
            let record: EpochParts = serde_json::from_slice(e.value.as_deref().unwrap_or_default())
                .map_err(|e| OperatorError::State(format!("file sink epoch does not decode: {e}")))?;
            by_base.entry(record.base).or_default().extend(record.parts);
        }
        // Every recorded epoch belongs to a complete checkpoint: commit it,
        // in the store it was written to.
        let mut committed = 0;
        let mut keep: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (base, parts) in by_base {
            let store = if base == self.uri { self.store()? } else { Store::open(&base, &self.config.s3)? };
            keep.entry(base.clone()).or_default().extend(parts.iter().map(|p| p.hidden.clone()));
            if let Some(c) = self.committer.as_mut().filter(|_| base == self.uri) {
                c.committed(dirs_of(&parts));
            }
            committed += wait(commit(store, parts))?;
        }
        // Hidden parts no checkpoint records were written after the barrier.
        let mut removed = 0;
        let prefixes: Vec<String> = olds.keys().map(|&j| self.hidden_prefix(j)).collect();
        let bases: BTreeSet<String> = olds.into_values().collect();
        for base in bases {
            let store = if base == self.uri { self.store()? } else { Store::open(&base, &self.config.s3)? };
            let k = keep.remove(&base).unwrap_or_default();
            removed += wait(clean_up(store, prefixes.clone(), k))?;
        }
        tracing::info!(
            operator = %self.uid,
            subtask = self.subtask.index,
            committed_parts = committed,
            removed_parts = removed,
            "file sink recovered its parts"
        );
        Ok(())
    }

    fn checkpoint_complete(&mut self, id: CheckpointId) -> OpResult<()> {
        let mut parts = Vec::new();
        while self.pending.front().is_some_and(|(e, _)| *e <= id.0) {
            parts.extend(self.pending.pop_front().expect("checked").1);
        }
        if !parts.is_empty() {
            failpoint::hit("file_sink_before_commit");
            let store = self.store()?;
            if let Some(c) = &mut self.committer {
                c.committed(dirs_of(&parts));
            }
            wait(commit(store, parts))?;
        }
        if self.committer.is_some() {
            let store = self.store()?;
            self.committer.as_mut().expect("checked").complete(&store, id.0)?;
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Collector) -> OpResult<()> {
        // The input ended: everything written is final.
        self.roll_all()?;
        let mut parts = std::mem::take(&mut self.rolled);
        for (_, p) in std::mem::take(&mut self.pending) {
            parts.extend(p);
        }
        if !parts.is_empty() {
            let store = self.store()?;
            if let Some(c) = &mut self.committer {
                c.committed(dirs_of(&parts));
            }
            wait(commit(store, parts))?;
        }
        if self.committer.is_some() {
            let store = self.store()?;
            self.committer.as_mut().expect("checked").finish(&store)?;
        }
        Ok(())
    }

    fn sink_records(&self) -> u64 {
        self.count
    }
}
