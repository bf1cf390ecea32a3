//! Sinks: `discard` (counts and drops), `stdout` (JSON lines, prefixed with the
//! subtask number like Flink's print sink when parallel) and `jsonl_file`
//! (one JSON-lines file per subtask in a directory).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};

use super::{Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use crate::error::{OpResult, OperatorError, PlanError};
use crate::state::{CheckpointId, StateReader, StateWriter};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// Factory of `discard`.
#[derive(Debug)]
pub struct DiscardFactory;

impl OperatorFactory for DiscardFactory {
    fn kind(&self) -> &str {
        "discard"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn is_sink(&self) -> bool {
        true
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        ctx.config::<Empty>()?;
        Ok(ctx.inputs[0].clone())
    }
    fn create(&self, _: &PlanContext<'_>, _: SubtaskInfo) -> Result<Instance, PlanError> {
        Ok(Instance::Operator(Box::new(Discard { count: 0 })))
    }
}

struct Discard {
    count: u64,
}

impl Operator for Discard {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, _out: &mut Collector) -> OpResult<()> {
        self.count += batch.num_rows() as u64;
        Ok(())
    }
    fn sink_records(&self) -> u64 {
        self.count
    }
}

fn to_json_lines(batch: &RecordBatch) -> OpResult<Vec<u8>> {
    let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
    w.write(batch)?;
    w.finish()?;
    Ok(w.into_inner())
}

/// Factory of `stdout`.
#[derive(Debug)]
pub struct StdoutFactory;

impl OperatorFactory for StdoutFactory {
    fn kind(&self) -> &str {
        "stdout"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn is_sink(&self) -> bool {
        true
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        ctx.config::<Empty>()?;
        Ok(ctx.inputs[0].clone())
    }
    fn create(&self, _: &PlanContext<'_>, s: SubtaskInfo) -> Result<Instance, PlanError> {
        let prefix = if s.parallelism > 1 { format!("{}> ", s.index + 1) } else { String::new() };
        Ok(Instance::Operator(Box::new(Stdout { prefix, count: 0 })))
    }
}

struct Stdout {
    prefix: String,
    count: u64,
}

impl Operator for Stdout {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, _out: &mut Collector) -> OpResult<()> {
        let lines = to_json_lines(&batch)?;
        let mut text = Vec::with_capacity(lines.len() + batch.num_rows() * self.prefix.len());
        for line in lines.split_inclusive(|&b| b == b'\n') {
            text.extend_from_slice(self.prefix.as_bytes());
            text.extend_from_slice(line);
        }
        std::io::stdout()
            .lock()
            .write_all(&text)
            .map_err(|source| OperatorError::Io { path: "stdout".into(), source })?;
        self.count += batch.num_rows() as u64;
        Ok(())
    }
    fn sink_records(&self) -> u64 {
        self.count
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    path: PathBuf,
}

/// Factory of `jsonl_file`.
#[derive(Debug)]
pub struct JsonlFileFactory;

impl OperatorFactory for JsonlFileFactory {
    fn kind(&self) -> &str {
        "jsonl_file"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn state_types(&self, _ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        vec![("parts".into(), PARTS_TYPE.into())]
    }
    fn state_restorable(&self, _name: &str, declared: &str, recorded: &str) -> Result<(), String> {
        // Savepoints of the first format (part numbers only) restore too.
        if declared == recorded || recorded == PARTS_TYPE_V1 {
            Ok(())
        } else {
            Err("the two are incompatible".into())
        }
    }
    fn is_sink(&self) -> bool {
        true
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        let c: FileConfig = ctx.config()?;
        if c.path.as_os_str().is_empty() {
            return Err(ctx.error("path must name a directory").field("config.path"));
        }
        Ok(ctx.inputs[0].clone())
    }
    fn create(&self, ctx: &PlanContext<'_>, s: SubtaskInfo) -> Result<Instance, PlanError> {
        let c: FileConfig = ctx.config()?;
        Ok(Instance::Operator(Box::new(JsonlFile::new(c.path, s.index))))
    }
}

/// A part file being written.
struct Part {
    seq: u64,
    file: BufWriter<File>,
}

/// The `parts` state: the next part number and the pending parts, each with
/// where it was written and where it becomes visible (so that a restore with
/// another `path` still commits them where they are).
const PARTS_TYPE: &str = "next part number and pending parts of the subtask with their paths: json";
/// The first form of `parts`, part numbers in the sink's directory.
const PARTS_TYPE_V1: &str = "next part number and pending parts of the subtask: [u64]";

/// The `parts` state as JSON.
#[derive(Debug, Serialize, Deserialize)]
struct PartsState {
    seq: u64,
    pending: Vec<PendingPart>,
}

/// A pre-committed part: its in-progress file and its visible name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PendingPart {
    checkpoint: u64,
    from: PathBuf,
    to: PathBuf,
}

/// Writes JSON lines with two-phase commit: rows go to a hidden in-progress
/// part file; at a checkpoint barrier the file is flushed, synced and
/// becomes *pending* (recorded in the checkpoint); once the checkpoint
/// completes it is renamed to its visible name. On restore, pending files of
/// the restored checkpoint are committed and every other in-progress file of
/// the subtask is deleted, so readers of `part-*.jsonl` see each row exactly
/// once. Without checkpoints the single part file is committed at the end.
struct JsonlFile {
    dir: PathBuf,
    subtask: u32,
    current: Option<Part>,
    /// Next part number.
    seq: u64,
    /// Pre-committed parts.
    pending: Vec<PendingPart>,
    committed: u64,
    cleaned: bool,
    count: u64,
}

impl JsonlFile {
    /// Subtask `subtask`'s sink into `dir`, before anything was written.
    fn new(dir: PathBuf, subtask: u32) -> Self {
        Self { dir, subtask, current: None, seq: 0, pending: Vec::new(), committed: 0, cleaned: false, count: 0 }
    }

    fn io(&self, path: &Path, source: std::io::Error) -> OperatorError {
        OperatorError::Io { path: path.display().to_string(), source }
    }

    fn in_progress(&self, seq: u64) -> PathBuf {
        self.dir.join(format!(".part-{}-{seq}.inprogress", self.subtask))
    }

    fn visible(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("part-{}-{seq}.jsonl", self.subtask))
    }

    /// Deletes in-progress files of this subtask that no checkpoint covers
    /// (written after the checkpoint restored from, or by an earlier run).
    fn clean(&mut self) -> OpResult<()> {
        if self.cleaned {
            return Ok(());
        }
        self.cleaned = true;
        std::fs::create_dir_all(&self.dir).map_err(|e| self.io(&self.dir, e))?;
        let prefix = format!(".part-{}-", self.subtask);
        let keep: Vec<PathBuf> = self.pending.iter().map(|p| p.from.clone()).collect();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| self.io(&self.dir, e))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(".inprogress") && !keep.contains(&entry.path()) {
                std::fs::remove_file(entry.path()).map_err(|e| self.io(&entry.path(), e))?;
                tracing::info!(file = %entry.path().display(), "deleted an uncommitted part file");
            }
        }
        Ok(())
    }

    fn file(&mut self) -> OpResult<&mut BufWriter<File>> {
        self.clean()?;
        if self.current.is_none() {
            let seq = self.seq;
            self.seq += 1;
            let path = self.in_progress(seq);
            let f = File::create(&path).map_err(|e| self.io(&path, e))?;
            self.current = Some(Part { seq, file: BufWriter::with_capacity(1 << 16, f) });
        }
        Ok(&mut self.current.as_mut().expect("opened above").file)
    }

    /// Flushes and syncs the current part; returns it as pending on `checkpoint`.
    fn close_current(&mut self, checkpoint: u64) -> OpResult<Option<PendingPart>> {
        let Some(mut part) = self.current.take() else { return Ok(None) };
        let path = self.in_progress(part.seq);
        part.file.flush().and_then(|_| part.file.get_ref().sync_all()).map_err(|e| self.io(&path, e))?;
        Ok(Some(PendingPart { checkpoint, from: path, to: self.visible(part.seq) }))
    }

    /// Makes a part visible (idempotent: done already if only the visible file exists).
    fn commit(&mut self, part: &PendingPart) -> OpResult<()> {
        match std::fs::rename(&part.from, &part.to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && part.to.exists() => {}
            Err(e) => return Err(self.io(&part.from, e)),
        }
        self.committed += 1;
        Ok(())
    }
}

impl Operator for JsonlFile {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, _out: &mut Collector) -> OpResult<()> {
        let lines = to_json_lines(&batch)?;
        let res = self.file()?.write_all(&lines);
        res.map_err(|e| OperatorError::Io { path: self.dir.display().to_string(), source: e })?;
        self.count += batch.num_rows() as u64;
        Ok(())
    }

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        self.clean()?;
        if let Some(part) = self.close_current(w.checkpoint().0)? {
            self.pending.push(part);
        }
        let state = PartsState { seq: self.seq, pending: self.pending.clone() };
        let v = serde_json::to_vec(&state).map_err(|e| OperatorError::State(format!("file sink state: {e}")))?;
        w.put_subtask("parts", Vec::new(), v);
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        let Some(e) = r.state("parts").next() else { return Ok(()) };
        let v = e.value.as_deref().unwrap_or_default();
        let state = if v.first() == Some(&b'{') {
            serde_json::from_slice::<PartsState>(v)
                .map_err(|e| OperatorError::State(format!("file sink state is malformed: {e}")))?
        } else {
            // The first format: part numbers in this sink's directory.
            if v.len() < 8 || v.len() % 8 != 0 {
                return Err(OperatorError::State("file sink state is malformed".into()));
            }
            let words: Vec<u64> = v.chunks(8).map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes"))).collect();
            let pending = words[1..]
                .iter()
                .map(|&seq| PendingPart { checkpoint: 0, from: self.in_progress(seq), to: self.visible(seq) })
                .collect();
            PartsState { seq: words[0], pending }
        };
        self.seq = state.seq;
        // The restored checkpoint is complete: what it pre-committed is
        // committed now, where it was written.
        for part in &state.pending {
            self.commit(part)?;
        }
        self.pending.clear();
        self.clean()
    }

    fn checkpoint_complete(&mut self, id: CheckpointId) -> OpResult<()> {
        // A completed checkpoint covers every part pre-committed at or before its barrier.
        let (done, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.pending).into_iter().partition(|p| p.checkpoint <= id.0);
        self.pending = later;
        for part in &done {
            self.commit(part)?;
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Collector) -> OpResult<()> {
        self.file()?; // an empty part still says this subtask ran and finished
        if let Some(part) = self.close_current(0)? {
            self.pending.push(part);
        }
        for part in std::mem::take(&mut self.pending) {
            self.commit(&part)?;
        }
        Ok(())
    }

    fn sink_records(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn sink(dir: &Path) -> JsonlFile {
        JsonlFile::new(dir.to_path_buf(), 1)
    }

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_restore_with_another_path_commits_the_pending_parts_where_they_were_written() {
        let tmp = tempfile::tempdir().unwrap();
        let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
        let mut a = sink(&old);
        a.process_batch(0, batch(&[1, 2]), &mut Collector::default()).unwrap();
        let mut w = StateWriter::new("out", CheckpointId(3), true);
        a.snapshot_state(&mut w).unwrap();
        let entries = w.into_entries();
        assert_eq!(names(&old), [".part-1-0.inprogress"], "pending until the checkpoint completes");

        let mut b = sink(&new);
        b.restore_state(&StateReader::new("out", &entries)).unwrap();
        assert_eq!(names(&old), ["part-1-0.jsonl"], "committed in the directory it was written to");
        assert_eq!(std::fs::read_to_string(old.join("part-1-0.jsonl")).unwrap(), "{\"n\":1}\n{\"n\":2}\n");
        b.process_batch(0, batch(&[3]), &mut Collector::default()).unwrap();
        b.finish(&mut Collector::default()).unwrap();
        assert_eq!(names(&new), ["part-1-1.jsonl"], "new parts go to the new path, numbered on");
        // Restoring again (a second failure) finds the part committed already.
        sink(&new).restore_state(&StateReader::new("out", &entries)).unwrap();
    }

    #[test]
    fn state_of_the_first_format_still_restores() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path()).unwrap();
        std::fs::write(tmp.path().join(".part-1-4.inprogress"), "{\"n\":9}\n").unwrap();
        std::fs::write(tmp.path().join(".part-1-5.inprogress"), "uncovered\n").unwrap();
        let mut v = 6u64.to_be_bytes().to_vec();
        v.extend_from_slice(&4u64.to_be_bytes());
        let mut w = StateWriter::new("out", CheckpointId(1), true);
        w.put_subtask("parts", Vec::new(), v);
        let entries = w.into_entries();
        let mut s = sink(tmp.path());
        s.restore_state(&StateReader::new("out", &entries)).unwrap();
        assert_eq!(names(tmp.path()), ["part-1-4.jsonl"], "the covered part committed, the other deleted");
        assert_eq!(s.seq, 6);
        let f = JsonlFileFactory;
        assert!(f.state_restorable("parts", PARTS_TYPE, PARTS_TYPE_V1).is_ok());
        assert!(f.state_restorable("parts", PARTS_TYPE, "something else").is_err());
    }
}
