//! Sinks: `discard` (counts and drops), `stdout` (JSON lines, prefixed with the
//! subtask number like Flink's print sink when parallel) and `jsonl_file`
//! (one JSON-lines file per subtask in a directory).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde::Deserialize;

use super::{Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use crate::error::{OpResult, OperatorError, PlanError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// Factory of `discard`.
#[derive(Debug)]
pub struct DiscardFactory;

impl OperatorFactory for DiscardFactory {
    fn kind(&self) -> &'static str {
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
    fn kind(&self) -> &'static str {
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
    fn kind(&self) -> &'static str {
        "jsonl_file"
    }
    fn arity(&self) -> Arity {
        Arity::One
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
        Ok(Instance::Operator(Box::new(JsonlFile {
            path: c.path.join(format!("part-{}.jsonl", s.index)),
            dir: c.path,
            file: None,
            count: 0,
        })))
    }
}

struct JsonlFile {
    dir: PathBuf,
    path: PathBuf,
    file: Option<BufWriter<File>>,
    count: u64,
}

impl JsonlFile {
    fn io(&self, source: std::io::Error) -> OperatorError {
        OperatorError::Io { path: self.path.display().to_string(), source }
    }

    fn file(&mut self) -> OpResult<&mut BufWriter<File>> {
        if self.file.is_none() {
            std::fs::create_dir_all(&self.dir).map_err(|e| self.io(e))?;
            let f = File::create(&self.path).map_err(|e| self.io(e))?;
            self.file = Some(BufWriter::with_capacity(1 << 16, f));
        }
        Ok(self.file.as_mut().expect("opened above"))
    }
}

impl Operator for JsonlFile {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, _out: &mut Collector) -> OpResult<()> {
        let lines = to_json_lines(&batch)?;
        let res = self.file()?.write_all(&lines);
        res.map_err(|e| self.io(e))?;
        self.count += batch.num_rows() as u64;
        Ok(())
    }
    fn finish(&mut self, _out: &mut Collector) -> OpResult<()> {
        // An empty part file still says this subtask ran and finished.
        self.file()?;
        let res = match self.file.as_mut() {
            Some(f) => f.flush().and_then(|_| f.get_ref().sync_all()),
            None => Ok(()),
        };
        res.map_err(|e| self.io(e))
    }
    fn sink_records(&self) -> u64 {
        self.count
    }
}
