//! `file_source`: the rows of JSON-lines files on local disk — one file, or
//! every file under a directory (recursively, in name order; names starting
//! with `.` or `_`, such as in-progress parts and `_SUCCESS`, are skipped:
//! the `file_sink`'s finished parts read back). Bounded: it ends when every
//! file is read. Subtask `i` of `p` reads the files whose place in that
//! order is `i` mod `p`. A line that does not decode against the schema
//! fails the job naming the file and line. Each checkpoint records how far
//! every file was read (union state), so a restore resumes mid-file and
//! reads no line twice.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use serde::Deserialize;
use weir_runtime::error::{OpResult, OperatorError, PlanError};
use weir_runtime::operators::{
    Arity, Collector, Instance, OperatorFactory, PlanContext, SourceOperator, SourceStatus, SubtaskInfo,
};
use weir_runtime::state::{StateReader, StateWriter};

use crate::kafka::format::{value_fields, ColumnSpec, Format, JsonDecoder};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// A file, or a directory of files.
    path: PathBuf,
    /// `json` (one object per line).
    #[serde(default)]
    format: Option<String>,
    schema: Vec<ColumnSpec>,
    #[serde(default = "default_batch")]
    batch_size: usize,
}

fn default_batch() -> usize {
    8192
}

/// Factory of `file_source`.
#[derive(Debug)]
pub struct FileSourceFactory;

/// How far each file was read: path → byte offset.
const POSITIONS: &str = "positions";

fn plan(ctx: &PlanContext<'_>) -> Result<(Config, SchemaRef), PlanError> {
    let c: Config = ctx.config()?;
    if c.format.as_deref().is_some_and(|f| f != "json") {
        return Err(ctx.error("file_source reads the json format (one object per line)").field("config.format"));
    }
    if c.batch_size == 0 {
        return Err(ctx.error("batch_size must be at least 1").field("config.batch_size"));
    }
    let fields = value_fields(Format::Json, &c.schema).map_err(|m| ctx.error(m).field("config.schema"))?;
    Ok((c, Arc::new(arrow::datatypes::Schema::new(fields))))
}

impl OperatorFactory for FileSourceFactory {
    fn kind(&self) -> &str {
        "file_source"
    }
    fn arity(&self) -> Arity {
        Arity::Source
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Ok(plan(ctx)?.1)
    }
    fn state_types(&self, _ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        vec![(POSITIONS.into(), "union map file path -> bytes read: u64".into())]
    }
    fn create(&self, ctx: &PlanContext<'_>, subtask: SubtaskInfo) -> Result<Instance, PlanError> {
        let (c, schema) = plan(ctx)?;
        let decoder = JsonDecoder::new(schema.fields().iter().map(|f| f.as_ref().clone()).collect(), c.batch_size)
            .map_err(|e| ctx.error(e.to_string()))?;
        Ok(Instance::Source(Box::new(FileSource {
            root: c.path,
            batch: c.batch_size,
            subtask,
            decoder,
            files: None,
            positions: BTreeMap::new(),
            current: None,
        })))
    }
}

/// Every file to read under `root`, in name order.
fn list(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    if root.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d)? {
            let path = e?.path();
            let hidden =
                path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.') || n.starts_with('_'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

struct FileSource {
    root: PathBuf,
    batch: usize,
    subtask: SubtaskInfo,
    decoder: JsonDecoder,
    /// This subtask's files, once listed.
    files: Option<Vec<PathBuf>>,
    /// Bytes read of every file this subtask has opened (and restored ones).
    positions: BTreeMap<String, u64>,
    /// The file being read: its index in `files`, reader and line number.
    current: Option<(usize, BufReader<std::fs::File>, u64)>,
}

impl FileSource {
    fn io(&self, path: &Path, e: std::io::Error) -> OperatorError {
        OperatorError::Io { path: path.display().to_string(), source: e }
    }
}

impl SourceOperator for FileSource {
    fn poll(&mut self, out: &mut Collector) -> OpResult<SourceStatus> {
        if self.files.is_none() {
            let all = list(&self.root).map_err(|e| self.io(&self.root.clone(), e))?;
            let (i, p) = (self.subtask.index as usize, self.subtask.parallelism.max(1) as usize);
            self.files = Some(all.into_iter().enumerate().filter(|(n, _)| n % p == i).map(|(_, f)| f).collect());
        }
        let files = self.files.as_ref().expect("listed");
        let mut lines: Vec<Vec<u8>> = Vec::new();
        // Where each line is: the batch's file and line numbers.
        let (mut batch_file, mut numbers) = (String::new(), Vec::new());
        while lines.len() < self.batch {
            if self.current.is_none() {
                let next = files.iter().position(|f| self.positions.get(&f.display().to_string()) != Some(&u64::MAX));
                let Some(n) = next else { break };
                let path = &files[n];
                let mut file = std::fs::File::open(path).map_err(|e| self.io(path, e))?;
                let at = self.positions.get(&path.display().to_string()).copied().unwrap_or(0);
                file.seek(SeekFrom::Start(at)).map_err(|e| self.io(path, e))?;
                self.current = Some((n, BufReader::new(file), 0));
            }
            let (n, reader, line_no) = self.current.as_mut().expect("open");
            let path = files[*n].display().to_string();
            let mut line = Vec::new();
            let read =
                reader.read_until(b'\n', &mut line).map_err(|e| OperatorError::Io { path: path.clone(), source: e })?;
            if read == 0 {
                self.positions.insert(path, u64::MAX);
                self.current = None;
                if !lines.is_empty() {
                    break; // one file's lines per batch: errors name their file
                }
                continue;
            }
            *line_no += 1;
            *self.positions.entry(path.clone()).or_insert(0) += read as u64;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            batch_file = path;
            numbers.push(*line_no);
            lines.push(line);
        }
        if lines.is_empty() {
            return Ok(if self.current.is_none() { SourceStatus::Finished } else { SourceStatus::Emitted });
        }
        let values: Vec<Option<&[u8]>> = lines.iter().map(|l| Some(l.as_slice())).collect();
        let decoded = self.decoder.decode(&values)?;
        if let Some((i, why)) = decoded.bad.first() {
            return Err(OperatorError::InvalidData(format!(
                "{batch_file}: line {} does not decode: {why}",
                numbers[*i]
            )));
        }
        out.emit(decoded.batch);
        Ok(SourceStatus::Emitted)
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
            self.positions.insert(path, at);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, RecordBatch};
    use arrow::datatypes::Int64Type;
    use weir_runtime::channel::StreamElement;
    use weir_runtime::state::CheckpointId;

    fn source(dir: &Path, batch: usize, subtask: u32, parallelism: u32) -> Box<dyn SourceOperator> {
        let config = serde_json::json!({"path": dir, "schema": [{"name": "n", "type": "int64"}], "batch_size": batch});
        let ctx = PlanContext {
            uid: "files",
            line: 0,
            config: &config,
            inputs: &[],
            input_edges: &[],
            parallelism,
            checkpoint: None,
        };
        match FileSourceFactory.create(&ctx, SubtaskInfo { index: subtask, parallelism, max_parallelism: 128 }).unwrap()
        {
            Instance::Source(s) => s,
            Instance::Operator(_) => unreachable!(),
        }
    }

    fn numbers(out: &mut Collector) -> Vec<i64> {
        out.drain()
            .filter_map(|e| match e {
                StreamElement::Batch(b) => Some(b),
                _ => None,
            })
            .flat_map(|b: RecordBatch| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    }

    #[test]
    fn files_are_read_whole_once_and_a_restore_resumes_mid_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("dt=1")).unwrap();
        let write = |name: &str, from: i64, to: i64| {
            let text: String = (from..to).map(|n| format!("{{\"n\":{n}}}\n\n")).collect();
            std::fs::write(dir.path().join(name), text).unwrap();
        };
        write("a.json", 0, 10);
        write("dt=1/b.json", 10, 25);
        write(".part-c.inprogress", 100, 110);
        write("_SUCCESS", 200, 201);
        let mut s = source(dir.path(), 4, 0, 1);
        let mut out = Collector::default();
        assert_eq!(s.poll(&mut out).unwrap(), SourceStatus::Emitted);
        let mut seen = numbers(&mut out);
        assert_eq!(seen, [0, 1, 2, 3]);
        let mut w = StateWriter::new("files", CheckpointId(1), true);
        s.snapshot_state(&mut w).unwrap();
        let entries = w.into_entries();
        let mut restored = source(dir.path(), 4, 0, 1);
        restored.restore_state(&StateReader::new("files", &entries)).unwrap();
        while restored.poll(&mut out).unwrap() != SourceStatus::Finished {}
        seen.extend(numbers(&mut out));
        assert_eq!(seen, (0..25).collect::<Vec<_>>(), "every line once, hidden files skipped");
        // Two subtasks share the files.
        let (mut one, mut two) = (source(dir.path(), 100, 0, 2), source(dir.path(), 100, 1, 2));
        while one.poll(&mut out).unwrap() != SourceStatus::Finished {}
        assert_eq!(numbers(&mut out), (0..10).collect::<Vec<_>>());
        while two.poll(&mut out).unwrap() != SourceStatus::Finished {}
        assert_eq!(numbers(&mut out), (10..25).collect::<Vec<_>>());
    }

    #[test]
    fn a_bad_line_fails_naming_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), "{\"n\":1}\n{\"n\":\"two\"}\n").unwrap();
        let mut s = source(dir.path(), 10, 0, 1);
        let e = s.poll(&mut Collector::default()).unwrap_err().to_string();
        assert!(e.contains("a.json: line 2 does not decode"), "{e}");
    }
}
