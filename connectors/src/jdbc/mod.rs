//! `jdbc_sink`: writes rows into a MySQL, MariaDB or PostgreSQL table —
//! upserts by a primary key (deletes for retractions), or appends.
//!
//! **At least once**: rows are buffered and written in one transaction
//! when `buffer_flush_max_rows` rows are buffered, every
//! `buffer_flush_interval`, and at every barrier (so a completed checkpoint
//! covers every row before it). A restore may write some rows again; with a
//! key that only rewrites them.
//!
//! **Exactly once**: the rows between barrier *n-1* and barrier *n* form
//! *epoch n*. At barrier *n* they are written into the checkpoint; when
//! checkpoint *n* completes they are written into the table in one database
//! transaction that also records *n* as the subtask's committed epoch in the
//! epoch table, keyed by (sink id, subtask). The transaction first reads
//! that row (locking it) and writes nothing if the epoch is already
//! recorded. So an epoch becomes visible exactly once whatever fails: a
//! crash before the commit is followed by a restore from checkpoint *n*,
//! which holds the epoch and applies it (the record says it is missing); a
//! crash after the commit finds it recorded and skips it; a COMMIT whose
//! answer was lost is retried and skips. The argument in full:
//! `docs/jdbc.md`.
//!
//! Operators are synchronous; the sink drives the async driver (sqlx) on
//! the connectors' runtime ([`crate::blocking`]) and waits for each call.

mod config;
mod db;
mod dialect;
mod rows;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use weir_runtime::error::{OpResult, OperatorError, PlanError};
use weir_runtime::operators::{Arity, Collector, Instance, Operator, OperatorFactory, PlanContext, SubtaskInfo};
use weir_runtime::state::{subtask_epoch_key, CheckpointId, StateReader, StateWriter, UnionKeys};

pub use config::{Delivery, Dialect, JdbcConfig};
use db::{Db, DbError, Target};
use rows::{Kind, Layout};

use crate::blocking::{runtime, wait};
use weir_types::failpoint;

const SUBTASKS: &str = "subtasks";
const EPOCHS: &str = "epochs";

/// Factory of `jdbc_sink`.
#[derive(Debug)]
pub struct JdbcSinkFactory;

impl JdbcSinkFactory {
    fn config(ctx: &PlanContext<'_>) -> Result<(JdbcConfig, Layout, Target), PlanError> {
        let c: JdbcConfig = ctx.config()?;
        config::driver_url(&c.url).map_err(|e| ctx.error(e).field("config.url"))?;
        if c.table.trim().is_empty() {
            return Err(ctx.error("table must not be empty").field("config.table"));
        }
        c.check_password_sources().map_err(|e| ctx.error(e).field("config.password"))?;
        if c.buffer_flush_max_rows == 0 {
            return Err(ctx.error("buffer_flush_max_rows must be at least 1").field("config.buffer_flush_max_rows"));
        }
        let schema = &ctx.inputs[0];
        let op = match &c.op_column {
            Some(name) => Some(
                crate::changes::op_column(schema, name, !c.key.is_empty())
                    .map_err(|e| ctx.error(e).field("config.op_column"))?,
            ),
            None => None,
        };
        let mut columns = Vec::new();
        let mut names = Vec::new();
        let mut kinds = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            if Some(i) == op {
                continue;
            }
            let kind = Kind::of(f.data_type()).ok_or_else(|| {
                ctx.error(format!("column `{}` has type {}, which jdbc_sink cannot write", f.name(), f.data_type()))
            })?;
            columns.push((i, kind));
            names.push(f.name().clone());
            kinds.push(kind);
        }
        let mut key = Vec::new();
        for k in &c.key {
            let pos = names.iter().position(|n| n == k).ok_or_else(|| {
                ctx.error(format!("key column `{k}` is not a written column of the input")).field("config.key")
            })?;
            if key.contains(&pos) {
                return Err(ctx.error(format!("key column `{k}` is named twice")).field("config.key"));
            }
            key.push(pos);
        }
        c.delivery.check(ctx)?;
        if c.delivery != Delivery::ExactlyOnce && c.sink_id.is_some() {
            return Err(ctx.error("sink_id names the epochs of delivery: exactly_once").field("config.sink_id"));
        }
        let layout = Layout { columns, key: key.clone(), op };
        Ok((c, layout, Target { columns: names, kinds, key }))
    }
}

impl OperatorFactory for JdbcSinkFactory {
    fn kind(&self) -> &str {
        "jdbc_sink"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn is_sink(&self) -> bool {
        true
    }
    fn state_types(&self, _ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        vec![
            (SUBTASKS.into(), "union set of subtask".into()),
            (EPOCHS.into(), "union map (subtask, epoch) -> rows of an uncommitted epoch (arrow ipc)".into()),
        ]
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Self::config(ctx)?;
        Ok(ctx.inputs[0].clone())
    }
    fn create(&self, ctx: &PlanContext<'_>, subtask: SubtaskInfo) -> Result<Instance, PlanError> {
        let (config, layout, target) = Self::config(ctx)?;
        Ok(Instance::Operator(Box::new(JdbcSink {
            uid: ctx.uid.to_string(),
            config,
            layout,
            target,
            subtask,
            db: None,
            open: Vec::new(),
            open_rows: 0,
            first_buffered: None,
            pending: VecDeque::new(),
            written: BTreeSet::new(),
            restored: false,
            last_checkpoint: 0,
            count: 0,
        })))
    }
}

/// The rows between two barriers, closed by checkpoint `checkpoint`.
struct Epoch {
    checkpoint: u64,
    batches: Vec<RecordBatch>,
}

/// One subtask of `jdbc_sink`.
pub struct JdbcSink {
    uid: String,
    config: JdbcConfig,
    layout: Layout,
    target: Target,
    subtask: SubtaskInfo,
    db: Option<std::sync::Arc<Db>>,
    /// Rows since the last barrier (exactly once) or the last write.
    open: Vec<RecordBatch>,
    open_rows: usize,
    first_buffered: Option<Instant>,
    /// Closed epochs not known to be committed, oldest first.
    pending: VecDeque<Epoch>,
    /// State keys the backend holds (incremental snapshots delete the rest).
    written: UnionKeys,
    /// Whether a checkpoint restored this sink.
    restored: bool,
    /// The newest checkpoint whose barrier passed (or that was restored).
    last_checkpoint: u64,
    count: u64,
}

impl JdbcSink {
    fn exactly_once(&self) -> bool {
        self.config.delivery == Delivery::ExactlyOnce
    }

    fn error(&self, e: DbError) -> OperatorError {
        match e {
            DbError::Transient(message) => OperatorError::External { system: "jdbc", message },
            DbError::Permanent(message) => OperatorError::InvalidData(format!("jdbc sink `{}`: {message}", self.uid)),
        }
    }

    /// Connects and checks the table, once.
    fn ensure_open(&mut self) -> OpResult<std::sync::Arc<Db>> {
        if let Some(db) = &self.db {
            return Ok(db.clone());
        }
        let (config, uid, target, eo) =
            (self.config.clone(), self.uid.clone(), self.target.clone(), self.exactly_once());
        let db = std::sync::Arc::new(
            wait(async move { Db::open(&config, &uid, &target, eo).await }).map_err(|e| self.error(e))?,
        );
        if eo && !self.restored {
            // A fresh start: checkpoint ids begin again at 1, and an old,
            // higher record would make a later restore skip epochs.
            let (d, i) = (db.clone(), self.subtask.index);
            wait(async move { d.reset_epoch(i).await }).map_err(|e| self.error(e))?;
        }
        tracing::info!(operator = %self.uid, subtask = self.subtask.index, database = db.dialect().name(), table = %self.config.table, "jdbc sink connected");
        self.db = Some(db.clone());
        Ok(db)
    }

    /// Writes `batches` in one transaction; with `epoch`, exactly once.
    fn write(&mut self, batches: &[RecordBatch], epoch: Option<(u32, u64)>) -> OpResult<bool> {
        let db = self.ensure_open()?;
        let mut all = Vec::new();
        for b in batches {
            all.extend(rows::rows(b, &self.layout)?);
        }
        if all.is_empty() && epoch.is_none() {
            return Ok(false);
        }
        let (upserts, deletes) = rows::reduce(all, &self.layout.key);
        let d = db.clone();
        let result = wait(async move {
            let r = d.write(&upserts, &deletes, epoch).await;
            match r {
                Err(DbError::Permanent(m)) => {
                    let row = d.locate_failure(&upserts).await;
                    Err(DbError::Permanent(match row {
                        Some(row) => format!("{m}; the row that fails: {row}"),
                        None => m,
                    }))
                }
                other => other,
            }
        });
        result.map_err(|e| self.error(e))
    }

    fn flush(&mut self) -> OpResult<()> {
        let batches = std::mem::take(&mut self.open);
        self.open_rows = 0;
        self.first_buffered = None;
        self.write(&batches, None)?;
        Ok(())
    }

    /// Commits every pending epoch up to checkpoint `up_to` (and `extra`
    /// rows, at the end of input) under the newest epoch's number.
    fn commit(&mut self, up_to: u64, extra: Vec<RecordBatch>) -> OpResult<()> {
        let mut batches = Vec::new();
        let mut newest = None;
        while self.pending.front().is_some_and(|e| e.checkpoint <= up_to) {
            let e = self.pending.pop_front().expect("checked");
            newest = Some(e.checkpoint);
            batches.extend(e.batches);
        }
        if !extra.is_empty() {
            newest = Some(up_to);
            batches.extend(extra);
        }
        let Some(epoch) = newest else { return Ok(()) };
        failpoint::hit("jdbc_sink_before_commit");
        self.write(&batches, Some((self.subtask.index, epoch)))?;
        Ok(())
    }
}

impl Operator for JdbcSink {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, _out: &mut Collector) -> OpResult<()> {
        self.ensure_open()?;
        self.count += batch.num_rows() as u64;
        self.open_rows += batch.num_rows();
        self.first_buffered.get_or_insert_with(Instant::now);
        self.open.push(batch);
        if !self.exactly_once() && self.open_rows >= self.config.buffer_flush_max_rows {
            self.flush()?;
        }
        Ok(())
    }

    fn on_processing_time(&mut self, now: Instant, _out: &mut Collector) -> OpResult<()> {
        // Connect (and check the table) without waiting for the first row.
        self.ensure_open()?;
        if !self.exactly_once()
            && self.first_buffered.is_some_and(|t| now.duration_since(t) >= self.config.buffer_flush_interval)
        {
            self.flush()?;
        }
        Ok(())
    }

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        if !self.exactly_once() {
            return self.flush();
        }
        let id = w.checkpoint().0;
        self.last_checkpoint = self.last_checkpoint.max(id);
        if !self.open.is_empty() {
            let batches = std::mem::take(&mut self.open);
            self.open_rows = 0;
            self.first_buffered = None;
            self.pending.push_back(Epoch { checkpoint: id, batches });
        }
        let mut want: BTreeMap<(String, Vec<u8>), Vec<u8>> = BTreeMap::new();
        want.insert((SUBTASKS.into(), self.subtask.index.to_be_bytes().to_vec()), Vec::new());
        for e in &self.pending {
            want.insert(
                (EPOCHS.into(), subtask_epoch_key(self.subtask.index, e.checkpoint)),
                rows::encode(&e.batches)?,
            );
        }
        self.written = w.put_union_entries(&self.written, want);
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        if !self.exactly_once() {
            return Ok(());
        }
        // Union state: the epochs of every subtask of the previous run. This
        // subtask finishes those of the old subtasks `j` with
        // `j mod parallelism = index` (its own, at unchanged parallelism).
        let mut olds: BTreeSet<u32> = BTreeSet::new();
        for e in r.state(SUBTASKS) {
            let j = e.key.as_slice().try_into().map_err(|_| OperatorError::State("jdbc sink subtask key".into()))?;
            olds.insert(u32::from_be_bytes(j));
            self.written.insert((SUBTASKS.into(), e.key.clone()));
        }
        let mut epochs: BTreeMap<u32, Vec<Epoch>> = BTreeMap::new();
        for e in r.state(EPOCHS) {
            if e.key.len() != 12 {
                return Err(OperatorError::State("jdbc sink epoch key does not decode".into()));
            }
            let j = u32::from_be_bytes(e.key[..4].try_into().expect("4 bytes"));
            let checkpoint = u64::from_be_bytes(e.key[4..].try_into().expect("8 bytes"));
            let batches = rows::decode(e.value.as_deref().unwrap_or_default())?;
            self.written.insert((EPOCHS.into(), e.key.clone()));
            self.last_checkpoint = self.last_checkpoint.max(checkpoint);
            epochs.entry(j).or_default().push(Epoch { checkpoint, batches });
        }
        self.restored = olds.contains(&self.subtask.index);
        let p = self.subtask.parallelism;
        let mine: Vec<u32> = olds.iter().copied().filter(|j| j % p == self.subtask.index).collect();
        if mine.is_empty() {
            return Ok(());
        }
        let db = self.ensure_open()?;
        for j in mine {
            let mut es = epochs.remove(&j).unwrap_or_default();
            es.sort_by_key(|e| e.checkpoint);
            let d = db.clone();
            let committed = wait(async move { d.committed_epoch(j).await }).map_err(|e| self.error(e))?;
            let todo: Vec<Epoch> = es.into_iter().filter(|e| committed.is_none_or(|c| e.checkpoint > c)).collect();
            let rows: usize = todo.iter().flat_map(|e| &e.batches).map(RecordBatch::num_rows).sum();
            if let Some(newest) = todo.last().map(|e| e.checkpoint) {
                let batches: Vec<RecordBatch> = todo.iter().flat_map(|e| e.batches.iter().cloned()).collect();
                self.write(&batches, Some((j, newest)))?;
            }
            tracing::info!(
                operator = %self.uid,
                subtask = self.subtask.index,
                old_subtask = j,
                committed_epoch = ?committed,
                replayed_epochs = todo.len(),
                replayed_rows = rows,
                "jdbc sink recovered its epochs"
            );
        }
        Ok(())
    }

    fn checkpoint_complete(&mut self, id: CheckpointId) -> OpResult<()> {
        if self.exactly_once() {
            self.commit(id.0, Vec::new())?;
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Collector) -> OpResult<()> {
        if !self.exactly_once() {
            return self.flush();
        }
        // The input ended: everything written is final (like the Kafka and
        // file sinks, there is no last checkpoint). It commits under the
        // epoch after the newest checkpoint.
        let rest = std::mem::take(&mut self.open);
        let last = self.last_checkpoint + 1;
        if self.pending.is_empty() && rest.is_empty() {
            return Ok(());
        }
        self.commit(last, rest)
    }

    fn sink_records(&self) -> u64 {
        self.count
    }
}

impl Drop for JdbcSink {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            // Closing returns the connections; the runtime outlives the sink.
            runtime().spawn(async move { db.close().await });
        }
    }
}
