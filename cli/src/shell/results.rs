//! A query's result in the shell: the `collect` sink that hands each batch
//! to the shell, and the rows as a table that changes with them.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::util::display::array_value_to_string;
use weir_runtime::error::{OpResult, PlanError};
use weir_runtime::operators::{Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};

/// The operator kind of the shell's result sink.
pub const COLLECT: &str = "shell_collect";

/// The change-kind column of updating results.
const OP: &str = "__op";

/// Factory of the result sink: every subtask sends its batches to the
/// shell, to the receiver of the query it runs for.
#[derive(Debug)]
pub struct CollectFactory(Mutex<Sender<RecordBatch>>);

impl CollectFactory {
    /// A new receiver for the next query (an older query's subtasks, still
    /// stopping, send to the old one, which is gone).
    pub fn receiver(&self) -> Receiver<RecordBatch> {
        let (tx, rx) = std::sync::mpsc::channel();
        *self.0.lock().expect("the result sender") = tx;
        rx
    }
}

impl OperatorFactory for CollectFactory {
    fn kind(&self) -> &str {
        COLLECT
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn is_sink(&self) -> bool {
        true
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Ok(ctx.inputs[0].clone())
    }
    fn create(&self, _: &PlanContext<'_>, _: SubtaskInfo) -> Result<Instance, PlanError> {
        let to = self.0.lock().expect("the result sender").clone();
        Ok(Instance::Operator(Box::new(Collect { to, count: 0 })))
    }
}

struct Collect {
    to: Sender<RecordBatch>,
    count: u64,
}

impl Operator for Collect {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, _out: &mut Collector) -> OpResult<()> {
        self.count += batch.num_rows() as u64;
        // The shell stopped listening (the query was cancelled): nothing to do.
        let _ = self.to.send(batch);
        Ok(())
    }
    fn sink_records(&self) -> u64 {
        self.count
    }
}

/// How results are shown (`sql-client.execution.result-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The current rows as a table, redrawn as they change.
    Table,
    /// Every change as it comes, with its kind.
    Changelog,
}

/// The rows of a query's result so far.
#[derive(Debug, Default)]
pub struct Rows {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Changes in arrival order (changelog mode prints them).
    pending: Vec<(String, Vec<String>)>,
    changed: bool,
}

impl Rows {
    /// Applies every batch received so far.
    pub fn drain(&mut self, from: &Receiver<RecordBatch>) {
        while let Ok(batch) = from.try_recv() {
            self.apply(&batch);
        }
    }

    fn apply(&mut self, batch: &RecordBatch) {
        let schema = batch.schema();
        let op = schema.index_of(OP).ok();
        if self.columns.is_empty() {
            self.columns = schema.fields().iter().filter(|f| f.name() != OP).map(|f| f.name().clone()).collect();
        }
        let ops = op.map(|i| batch.column(i).as_string::<i32>());
        for r in 0..batch.num_rows() {
            let row: Vec<String> = (0..batch.num_columns())
                .filter(|&c| Some(c) != op)
                .map(|c| array_value_to_string(batch.column(c), r).unwrap_or_default())
                .collect();
            let kind = ops.map_or("+I", |o| o.value(r));
            match kind {
                "-U" | "-D" => {
                    if let Some(i) = self.rows.iter().position(|x| *x == row) {
                        self.rows.remove(i);
                    }
                }
                _ => self.rows.push(row.clone()),
            }
            self.pending.push((kind.to_string(), row));
            self.changed = true;
        }
    }

    /// The current rows as a table.
    pub fn table(&self) -> String {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
        t.set_header(self.columns.clone());
        for r in &self.rows {
            t.add_row(r.clone());
        }
        format!("{t}\n{} row{}\n", self.rows.len(), if self.rows.len() == 1 { "" } else { "s" })
    }

    /// The changes since the last call, one line each: the kind, then the values.
    pub fn changes(&mut self) -> String {
        let mut out = String::new();
        for (kind, row) in self.pending.drain(..) {
            out.push_str(&format!("{kind} | {}\n", row.join(" | ")));
        }
        out
    }

    /// Whether rows changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The column names.
    pub fn header(&self) -> String {
        format!("op | {}\n", self.columns.join(" | "))
    }

    /// Whether the result has columns yet (a first batch came).
    pub fn started(&self) -> bool {
        !self.columns.is_empty()
    }
}

/// The result sink's factory, for the shell's registry.
pub fn collector() -> Arc<CollectFactory> {
    Arc::new(CollectFactory(Mutex::new(std::sync::mpsc::channel().0)))
}
