//! `elasticsearch_sink`: writes rows as JSON documents into Elasticsearch
//! or OpenSearch indexes through the bulk API — indexed under an `_id` made
//! of key columns (deleted by it, for retractions), or under ids the
//! cluster assigns.
//!
//! Actions are buffered and sent when `bulk_flush_max_actions` are
//! buffered, when they reach `bulk_flush_max_bytes`, every
//! `bulk_flush_interval`, and at every barrier: a completed checkpoint
//! means every document before it is indexed. After a restore the rows
//! since that checkpoint are sent again; with a key they overwrite the same
//! documents, so each is in the index once. Without a key a replay indexes
//! duplicates: at least once.
//!
//! Per item of a bulk response: a document turned away for now (429, 5xx)
//! is sent again with backoff; a document refused (a mapping conflict, a
//! malformed value) goes to `dead_letter_index` with the error, or fails
//! the task when there is none.

mod bulk;
mod config;
mod index;

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use weir_runtime::error::{OpResult, OperatorError, PlanError};
use weir_runtime::operators::{Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use weir_runtime::state::StateWriter;

use crate::blocking::{runtime, start, wait};
use crate::changes::{self, Op};
pub use bulk::EsError;
use bulk::{Action, Es, Outcome};
pub use config::{Backoff, BackoffStrategy, EsConfig};
use index::IndexPattern;

/// Factory of `elasticsearch_sink`.
#[derive(Debug)]
pub struct ElasticsearchSinkFactory;

/// Where the written columns, the key and the change kind are in the input.
#[derive(Debug, Clone)]
struct Layout {
    /// Input column indexes of the written columns.
    columns: Vec<usize>,
    /// Input column indexes of the key columns.
    key: Vec<usize>,
    /// Input column index of the change kind, if any.
    op: Option<usize>,
    index: IndexPattern,
}

impl ElasticsearchSinkFactory {
    fn config(ctx: &PlanContext<'_>) -> Result<(EsConfig, Layout), PlanError> {
        let c: EsConfig = ctx.config()?;
        c.check().map_err(|(field, e)| ctx.error(e).field(field))?;
        let schema = &ctx.inputs[0];
        let op = match &c.op_column {
            Some(name) => Some(
                changes::op_column(schema, name, !c.key.is_empty())
                    .map_err(|e| ctx.error(e).field("config.op_column"))?,
            ),
            None => None,
        };
        let columns: Vec<usize> = (0..schema.fields().len()).filter(|i| Some(*i) != op).collect();
        let mut key = Vec::new();
        for k in &c.key {
            let i = schema.index_of(k).ok().filter(|i| columns.contains(i)).ok_or_else(|| {
                ctx.error(format!("key column `{k}` is not a written column of the input")).field("config.key")
            })?;
            if key.contains(&i) {
                return Err(ctx.error(format!("key column `{k}` is named twice")).field("config.key"));
            }
            key.push(i);
        }
        let index = IndexPattern::parse(&c.index, schema).map_err(|e| ctx.error(e).field("config.index"))?;
        Ok((c, Layout { columns, key, op, index }))
    }
}

impl OperatorFactory for ElasticsearchSinkFactory {
    fn kind(&self) -> &str {
        "elasticsearch_sink"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn is_sink(&self) -> bool {
        true
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Self::config(ctx)?;
        Ok(ctx.inputs[0].clone())
    }
    fn create(&self, ctx: &PlanContext<'_>, subtask: SubtaskInfo) -> Result<Instance, PlanError> {
        let (config, layout) = Self::config(ctx)?;
        Ok(Instance::Operator(Box::new(ElasticsearchSink {
            uid: ctx.uid.to_string(),
            config,
            layout,
            subtask,
            es: None,
            open: Vec::new(),
            open_actions: 0,
            open_bytes: 0,
            first_buffered: None,
            count: 0,
            dead_lettered: 0,
            in_flight: None,
        })))
    }
}

/// One subtask of `elasticsearch_sink`.
pub struct ElasticsearchSink {
    uid: String,
    config: EsConfig,
    layout: Layout,
    subtask: SubtaskInfo,
    es: Option<Arc<Es>>,
    /// Actions not yet sent, with their (index, id) for reduction.
    open: Vec<(Op, Action)>,
    open_actions: usize,
    open_bytes: usize,
    first_buffered: Option<Instant>,
    count: u64,
    dead_lettered: u64,
    /// The bulk request on its way, if any: one at a time, so requests
    /// reach the cluster in order, while the next one fills.
    in_flight: Option<std::sync::mpsc::Receiver<Result<Outcome, EsError>>>,
}

impl ElasticsearchSink {
    fn error(&self, e: EsError) -> OperatorError {
        match e {
            EsError::Transient(message) => OperatorError::External { system: "elasticsearch", message },
            EsError::Permanent(message) => {
                OperatorError::InvalidData(format!("elasticsearch sink `{}`: {message}", self.uid))
            }
        }
    }

    /// Connects and checks the cluster, the login and (for a fixed index)
    /// the right to use the index, once.
    fn ensure_open(&mut self) -> OpResult<Arc<Es>> {
        if let Some(es) = &self.es {
            return Ok(es.clone());
        }
        let config = self.config.clone();
        let index = self.layout.index.fixed().map(str::to_string);
        let es = Arc::new(wait(async move { Es::open(&config, index.as_deref()).await }).map_err(|e| self.error(e))?);
        tracing::info!(operator = %self.uid, subtask = self.subtask.index, index = %self.config.index, "elasticsearch sink connected");
        self.es = Some(es.clone());
        Ok(es)
    }

    /// The actions of `batch`, in order.
    fn actions(&self, batch: &RecordBatch) -> OpResult<Vec<(Op, Action)>> {
        let ops = changes::ops(batch, self.layout.op)?;
        let indexes = self.layout.index.names(batch)?;
        let docs = json_lines(&batch.project(&self.layout.columns)?)?;
        let ids: Vec<Option<String>> = if self.layout.key.is_empty() {
            vec![None; batch.num_rows()]
        } else {
            let keys = self
                .layout
                .key
                .iter()
                .map(|&i| arrow::compute::cast(batch.column(i), &DataType::Utf8))
                .collect::<Result<Vec<_>, _>>()?;
            (0..batch.num_rows())
                .map(|r| {
                    let mut id = String::new();
                    for (n, k) in keys.iter().enumerate() {
                        let k = k.as_string::<i32>();
                        if k.is_null(r) {
                            return Err(OperatorError::InvalidData(format!(
                                "elasticsearch sink `{}`: key column `{}` is null in a row; a document needs its whole key",
                                self.uid,
                                batch.schema().field(self.layout.key[n]).name()
                            )));
                        }
                        if n > 0 {
                            id.push_str(&self.config.key_delimiter);
                        }
                        id.push_str(k.value(r));
                    }
                    Ok(Some(id))
                })
                .collect::<OpResult<_>>()?
        };
        let mut out = Vec::with_capacity(batch.num_rows());
        for (((op, index), id), doc) in ops.into_iter().zip(indexes).zip(ids).zip(docs) {
            let doc = (op == Op::Upsert).then_some(doc);
            out.push((op, Action { index, id, doc }));
        }
        Ok(out)
    }

    /// Sends the buffered actions as one bulk request once the one before
    /// it is done, without waiting for it: the next request fills meanwhile.
    fn send(&mut self) -> OpResult<()> {
        if self.open.is_empty() {
            return Ok(());
        }
        let es = self.ensure_open()?;
        self.settle()?;
        let open = std::mem::take(&mut self.open);
        let actions: Vec<Action> = if self.layout.key.is_empty() {
            open.into_iter().map(|(_, a)| a).collect()
        } else {
            let key = |a: &Action| format!("{}\u{0}{}", a.index, a.id.as_deref().unwrap_or_default()).into_bytes();
            changes::last_per_key(open, key).into_iter().map(|(_, a)| a).collect()
        };
        self.in_flight = Some(start(async move { es.bulk(actions).await }));
        self.open_actions = 0;
        self.open_bytes = 0;
        self.first_buffered = None;
        Ok(())
    }

    /// Waits for the request on its way, if any, and takes its outcome.
    fn settle(&mut self) -> OpResult<()> {
        let Some(rx) = self.in_flight.take() else { return Ok(()) };
        let result = rx.recv().expect("the connectors' runtime dropped a call");
        self.take(result)
    }

    /// Takes the outcome of the request on its way if it is done already,
    /// so a failure surfaces without waiting for the next request.
    fn poll(&mut self) -> OpResult<()> {
        let done = match &self.in_flight {
            Some(rx) => rx.try_recv().ok(),
            None => None,
        };
        match done {
            Some(result) => {
                self.in_flight = None;
                self.take(result)
            }
            None => Ok(()),
        }
    }

    fn take(&mut self, result: Result<Outcome, EsError>) -> OpResult<()> {
        let outcome = result.map_err(|e| self.error(e))?;
        if outcome.dead_lettered > 0 {
            self.dead_lettered += outcome.dead_lettered;
            tracing::warn!(operator = %self.uid, subtask = self.subtask.index, refused = outcome.dead_lettered, total = self.dead_lettered, "documents went to the dead-letter index");
        }
        Ok(())
    }

    /// Sends what is buffered and waits until every action is indexed.
    fn flush(&mut self) -> OpResult<()> {
        self.send()?;
        self.settle()
    }
}

/// Each row of `batch` as a JSON object (nulls left out, timestamps as ISO
/// 8601 text, which the cluster's date detection maps to `date`).
fn json_lines(batch: &RecordBatch) -> OpResult<Vec<String>> {
    let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
    w.write(batch)?;
    w.finish()?;
    let text = String::from_utf8(w.into_inner())
        .map_err(|e| OperatorError::InvalidData(format!("a document is not UTF-8: {e}")))?;
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.len() != batch.num_rows() {
        return Err(OperatorError::InvalidData(format!("{} documents from {} rows", lines.len(), batch.num_rows())));
    }
    Ok(lines)
}

impl Operator for ElasticsearchSink {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, _out: &mut Collector) -> OpResult<()> {
        self.ensure_open()?;
        self.count += batch.num_rows() as u64;
        let actions = self.actions(&batch)?;
        self.open_actions += actions.len();
        self.open_bytes += actions.iter().map(|(_, a)| a.size()).sum::<usize>();
        self.first_buffered.get_or_insert_with(Instant::now);
        self.open.extend(actions);
        if self.open_actions >= self.config.bulk_flush_max_actions
            || self.open_bytes >= self.config.bulk_flush_max_bytes
        {
            self.send()?;
        }
        Ok(())
    }

    fn on_processing_time(&mut self, now: Instant, _out: &mut Collector) -> OpResult<()> {
        // Connect (and check the cluster) without waiting for the first row.
        self.ensure_open()?;
        self.poll()?;
        if self.first_buffered.is_some_and(|t| now.duration_since(t) >= self.config.bulk_flush_interval) {
            self.send()?;
        }
        Ok(())
    }

    fn snapshot_state(&mut self, _w: &mut StateWriter) -> OpResult<()> {
        // A completed checkpoint means every document before its barrier is indexed.
        self.flush()
    }

    fn finish(&mut self, _out: &mut Collector) -> OpResult<()> {
        self.flush()
    }

    fn sink_records(&self) -> u64 {
        self.count
    }
}

impl Drop for ElasticsearchSink {
    fn drop(&mut self) {
        // Connections close with the client, on the connectors' runtime.
        if let Some(es) = self.es.take() {
            runtime().spawn(async move { drop(es) });
        }
    }
}
