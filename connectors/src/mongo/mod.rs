//! `mongodb_sink`: writes rows as documents into a MongoDB collection —
//! replaced by an `_id` made of key columns (deleted by it for
//! retractions), or inserted.
//!
//! Rows are buffered and written when `buffer_flush_max_rows` rows are
//! buffered, every `buffer_flush_interval`, and at every barrier, so a
//! completed checkpoint covers every row before it. After a restore the
//! rows since that checkpoint are written again: with a key they replace
//! the same documents with the same values, so the collection ends as if
//! each row had been written once (a reader may briefly see an older
//! version of a document while the replay catches up). Without a key a
//! replay inserts duplicates: at least once.
//!
//! Of the rows written together only the last change of each `_id` is
//! sent, so the changes of one key are applied in order as long as one
//! subtask writes each key (partition the sink's input by the key).

mod client;
mod config;
mod documents;

use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use mongodb::bson::{Bson, Document};
use weir_runtime::error::{OpResult, OperatorError, PlanError};
use weir_runtime::operators::{Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use weir_runtime::state::StateWriter;

use crate::blocking::{runtime, wait};
use crate::changes::{self, Op};
pub use client::MongoError;
use client::{Mongo, Writes};
pub use config::MongoConfig;

/// Factory of `mongodb_sink`.
#[derive(Debug)]
pub struct MongoSinkFactory;

/// Where the written fields, the key and the change kind are in the input.
#[derive(Debug, Clone)]
struct Layout {
    /// Input column index and field name of each written column.
    columns: Vec<(usize, String)>,
    /// Names of the key columns (the `_id`).
    key: Vec<String>,
    /// Input column index of the change kind, if any.
    op: Option<usize>,
}

impl MongoSinkFactory {
    fn config(ctx: &PlanContext<'_>) -> Result<(MongoConfig, Layout), PlanError> {
        let c: MongoConfig = ctx.config()?;
        c.check().map_err(|(field, e)| ctx.error(e).field(field))?;
        let schema = &ctx.inputs[0];
        let op = match &c.op_column {
            Some(name) => Some(
                changes::op_column(schema, name, !c.key.is_empty())
                    .map_err(|e| ctx.error(e).field("config.op_column"))?,
            ),
            None => None,
        };
        let mut columns = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            if Some(i) == op {
                continue;
            }
            documents::check(f.data_type()).map_err(|what| {
                ctx.error(format!("column `{}` has {what}, which mongodb_sink cannot write", f.name()))
            })?;
            columns.push((i, f.name().clone()));
        }
        for (n, k) in c.key.iter().enumerate() {
            if !columns.iter().any(|(_, name)| name == k) {
                return Err(ctx
                    .error(format!("key column `{k}` is not a written column of the input"))
                    .field("config.key"));
            }
            if c.key[..n].contains(k) {
                return Err(ctx.error(format!("key column `{k}` is named twice")).field("config.key"));
            }
        }
        let has_id = columns.iter().any(|(_, name)| name == "_id");
        if has_id && c.key != ["_id"] {
            return Err(ctx
                .error("the input has a column `_id`: write `key: [_id]` to replace documents by it, or rename it")
                .field("config.key"));
        }
        let key = c.key.clone();
        Ok((c, Layout { columns, key, op }))
    }
}

impl OperatorFactory for MongoSinkFactory {
    fn kind(&self) -> &str {
        "mongodb_sink"
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
        Ok(Instance::Operator(Box::new(MongoSink {
            uid: ctx.uid.to_string(),
            config,
            layout,
            subtask,
            mongo: None,
            open: Vec::new(),
            open_rows: 0,
            first_buffered: None,
            count: 0,
        })))
    }
}

/// One subtask of `mongodb_sink`.
pub struct MongoSink {
    uid: String,
    config: MongoConfig,
    layout: Layout,
    subtask: SubtaskInfo,
    mongo: Option<Arc<Mongo>>,
    /// Rows not yet written.
    open: Vec<RecordBatch>,
    open_rows: usize,
    first_buffered: Option<Instant>,
    count: u64,
}

impl MongoSink {
    fn error(&self, e: MongoError) -> OperatorError {
        match e {
            MongoError::Transient(message) => OperatorError::External { system: "mongodb", message },
            MongoError::Permanent(message) => {
                OperatorError::InvalidData(format!("mongodb sink `{}`: {message}", self.uid))
            }
        }
    }

    /// Connects and checks the server and login, once.
    fn ensure_open(&mut self) -> OpResult<Arc<Mongo>> {
        if let Some(m) = &self.mongo {
            return Ok(m.clone());
        }
        let config = self.config.clone();
        let mongo = Arc::new(wait(async move { Mongo::open(&config).await }).map_err(|e| self.error(e))?);
        tracing::info!(operator = %self.uid, subtask = self.subtask.index, database = %self.config.database, collection = %self.config.collection, "mongodb sink connected");
        self.mongo = Some(mongo.clone());
        Ok(mongo)
    }

    /// What the buffered rows change: the last change of each `_id`, or
    /// every row as an insert without a key.
    fn writes(&self, batches: &[RecordBatch]) -> OpResult<Writes> {
        let mut rows: Vec<(Op, Document)> = Vec::new();
        for b in batches {
            let ops = changes::ops(b, self.layout.op)?;
            let docs = documents::documents(b, &self.layout.columns)?;
            rows.extend(ops.into_iter().zip(docs));
        }
        let mut w = Writes::default();
        if self.layout.key.is_empty() {
            w.inserts = rows.into_iter().map(|(_, d)| d).collect();
            return Ok(w);
        }
        let mut keyed = Vec::with_capacity(rows.len());
        for (op, d) in rows {
            let id = self.id(&d)?;
            keyed.push((op, (id, d)));
        }
        let key =
            |(id, _): &(Bson, Document)| mongodb::bson::to_vec(&mongodb::bson::doc! {"k": id}).unwrap_or_default();
        for (op, (id, mut d)) in changes::last_per_key(keyed, key) {
            match op {
                Op::Upsert => {
                    d.insert("_id", id.clone());
                    w.upserts.push((id, d));
                }
                Op::Delete => w.deletes.push(id),
            }
        }
        Ok(w)
    }

    /// A document's `_id`: the key column's value, or a document of the key
    /// columns' values.
    fn id(&self, d: &Document) -> OpResult<Bson> {
        let value = |k: &String| match d.get(k) {
            Some(Bson::Null) | None => Err(OperatorError::InvalidData(format!(
                "mongodb sink `{}`: key column `{k}` is null in a row; a document needs its whole key",
                self.uid
            ))),
            Some(v) => Ok(v.clone()),
        };
        match self.layout.key.as_slice() {
            [one] => value(one),
            keys => {
                let mut id = Document::new();
                for k in keys {
                    id.insert(k.clone(), value(k)?);
                }
                Ok(Bson::Document(id))
            }
        }
    }

    fn flush(&mut self) -> OpResult<()> {
        if self.open.is_empty() {
            return Ok(());
        }
        let mongo = self.ensure_open()?;
        let writes = self.writes(&self.open)?;
        wait(async move { mongo.write(writes).await }).map_err(|e| self.error(e))?;
        self.open.clear();
        self.open_rows = 0;
        self.first_buffered = None;
        Ok(())
    }
}

impl Operator for MongoSink {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, _out: &mut Collector) -> OpResult<()> {
        self.ensure_open()?;
        self.count += batch.num_rows() as u64;
        self.open_rows += batch.num_rows();
        self.first_buffered.get_or_insert_with(Instant::now);
        self.open.push(batch);
        if self.open_rows >= self.config.buffer_flush_max_rows {
            self.flush()?;
        }
        Ok(())
    }

    fn on_processing_time(&mut self, now: Instant, _out: &mut Collector) -> OpResult<()> {
        // Connect (and check the server and login) without waiting for the first row.
        self.ensure_open()?;
        if self.first_buffered.is_some_and(|t| now.duration_since(t) >= self.config.buffer_flush_interval) {
            self.flush()?;
        }
        Ok(())
    }

    fn snapshot_state(&mut self, _w: &mut StateWriter) -> OpResult<()> {
        // A completed checkpoint covers every row before its barrier.
        self.flush()
    }

    fn finish(&mut self, _out: &mut Collector) -> OpResult<()> {
        self.flush()
    }

    fn sink_records(&self) -> u64 {
        self.count
    }
}

impl Drop for MongoSink {
    fn drop(&mut self) {
        if let Some(m) = self.mongo.take().and_then(|m| Arc::try_unwrap(m).ok()) {
            runtime().spawn(m.close());
        }
    }
}
