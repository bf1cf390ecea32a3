//! Streams of typed records and what can be done with them.
//!
//! - [`DataStream`]: `map`, `flat_map`, `filter`, event time, keys, sinks;
//! - [`KeyedStream`]: keyed process functions and windows;
//! - [`ConnectedStreams`]: two keyed inputs sharing state and timers.

mod keyed;
mod time;

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use arrow::datatypes::FieldRef;
use serde_json::json;
use weir_runtime::graph::Partitioning;
use weir_runtime::PlanError;

pub use keyed::{ConnectedStreams, KeyedConnectedStreams, KeyedStream, WindowedStream};
pub use time::{EventTimeWindows, WatermarkStrategy};

use crate::connectors::Sink;
use crate::env::EnvInner;
use crate::functions::{Key, OutputTag};
use crate::ops::{stateless, SideOutput};
use crate::record::{fields_of, Record, TIMESTAMP};

/// A stream of records of type `T`: the output (main or side) of one operator.
pub struct DataStream<T> {
    pub(crate) env: Rc<RefCell<EnvInner>>,
    /// The operator the stream leaves.
    pub(crate) uid: String,
    /// The operator's output it is (empty: the main one).
    pub(crate) output: String,
    pub(crate) fields: Vec<FieldRef>,
    /// Whether records carry event time.
    pub(crate) timestamped: bool,
    /// Whether batches carry columns besides `T`'s fields and the event time.
    pub(crate) extra_columns: bool,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for DataStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStream").field("uid", &self.uid).field("output", &self.output).finish()
    }
}

impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        Self {
            env: self.env.clone(),
            uid: self.uid.clone(),
            output: self.output.clone(),
            fields: self.fields.clone(),
            timestamped: self.timestamped,
            extra_columns: self.extra_columns,
            _t: PhantomData,
        }
    }
}

impl<T: Record> DataStream<T> {
    pub(crate) fn new(env: Rc<RefCell<EnvInner>>, uid: &str, fields: Vec<FieldRef>, timestamped: bool) -> Self {
        Self {
            env,
            uid: uid.to_string(),
            output: String::new(),
            fields,
            timestamped,
            extra_columns: false,
            _t: PhantomData,
        }
    }

    /// A stream of `U` out of operator `uid`, which has just been added.
    fn next<U: Record>(&self, uid: &str, timestamped: bool) -> DataStream<U> {
        let fields = self.fields_of::<U>();
        DataStream::new(self.env.clone(), uid, fields, timestamped)
    }

    fn fields_of<U: Record>(&self) -> Vec<FieldRef> {
        fields_of::<U>().unwrap_or_else(|e| {
            self.env.borrow_mut().fail(e);
            Vec::new()
        })
    }

    /// The uid of the operator the stream leaves.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Adds typed operator `uid` made by `factory` (given its kind), fed by this stream.
    pub(crate) fn add(&self, uid: &str, factory: impl FnOnce(String) -> crate::ops::FnFactory) -> bool {
        let mut env = self.env.borrow_mut();
        if !env.claim(uid) {
            return false;
        }
        let kind = env.kind(uid);
        env.add_typed(uid, factory(kind), self, Partitioning::Forward);
        true
    }

    /// Each record becomes `f` of it (Flink's `map`).
    pub fn map<U: Record>(&self, uid: &str, f: impl Fn(T) -> U + Clone + Send + Sync + 'static) -> DataStream<U> {
        self.try_map(uid, move |t| Ok(f(t)))
    }

    /// Each record becomes `f` of it; an error fails the task (and the job
    /// restarts from its latest checkpoint if it may).
    pub fn try_map<U: Record>(
        &self,
        uid: &str,
        f: impl Fn(T) -> anyhow::Result<U> + Clone + Send + Sync + 'static,
    ) -> DataStream<U> {
        let (fi, fo) = (self.fields.clone(), self.fields_of::<U>());
        self.add(uid, |kind| {
            stateless::flat_map_factory(kind, fi, fo, move |t, out: &mut Vec<U>| {
                out.push(f(t)?);
                Ok(())
            })
        });
        self.next(uid, self.timestamped)
    }

    /// Each record becomes any number of records (Flink's `flatMap`).
    pub fn flat_map<U: Record, I: IntoIterator<Item = U>>(
        &self,
        uid: &str,
        f: impl Fn(T) -> I + Clone + Send + Sync + 'static,
    ) -> DataStream<U> {
        let (fi, fo) = (self.fields.clone(), self.fields_of::<U>());
        self.add(uid, |kind| {
            stateless::flat_map_factory(kind, fi, fo, move |t, out: &mut Vec<U>| {
                out.extend(f(t));
                Ok(())
            })
        });
        self.next(uid, self.timestamped)
    }

    /// The records for which `predicate` holds.
    pub fn filter(&self, uid: &str, predicate: impl Fn(&T) -> bool + Clone + Send + Sync + 'static) -> DataStream<T> {
        let fields = self.fields.clone();
        self.add(uid, |kind| stateless::filter_factory(kind, fields, predicate));
        let mut s = self.next::<T>(uid, self.timestamped);
        s.extra_columns = self.extra_columns;
        s
    }

    /// Gives records their event time and the stream watermarks (Flink's
    /// `assignTimestampsAndWatermarks`): operator `uid` computes each
    /// record's time, and `{uid}.watermarks` follows it with watermarks.
    pub fn assign_timestamps_and_watermarks(&self, uid: &str, strategy: WatermarkStrategy<T>) -> DataStream<T> {
        let fields = self.fields.clone();
        let f = strategy.timestamp.clone();
        if !self.add(uid, |kind| stateless::timestamp_factory(kind, fields, f)) {
            return self.next(uid, true);
        }
        let mut env = self.env.borrow_mut();
        let watermarks = env.derived(uid, "watermarks");
        env.builder.operator(&watermarks, "watermark", strategy.config(TIMESTAMP));
        env.builder.forward(uid, &watermarks);
        drop(env);
        let mut s = self.next::<T>(&watermarks, true);
        s.extra_columns = self.extra_columns;
        s
    }

    /// The stream keyed by `key` (Flink's `keyBy`): records of one key meet
    /// in one subtask of what follows, with that key's state and timers.
    pub fn key_by<K: Key>(&self, key: impl Fn(&T) -> K + Send + Sync + 'static) -> KeyedStream<K, T> {
        let key: Arc<dyn Fn(&T) -> K + Send + Sync> = Arc::new(key);
        let mut env = self.env.borrow_mut();
        let uid = env.derived(&self.uid, "key");
        let kind = env.kind(&uid);
        let factory = stateless::key_factory(kind, self.fields.clone(), key.clone());
        env.add_typed(&uid, factory, self, Partitioning::Forward);
        drop(env);
        let mut keyed = self.next::<T>(&uid, self.timestamped);
        keyed.extra_columns = true;
        KeyedStream::new(keyed, key)
    }

    /// The records a process function emitted to side output `tag`
    /// (Flink's `getSideOutput`), or a window's late records.
    pub fn side_output<X: Record>(&self, tag: &OutputTag<X>) -> DataStream<X> {
        let fields = self.fields_of::<X>();
        let mut env = self.env.borrow_mut();
        let kind = env.kind(&self.uid);
        let factory = env.factories.iter().find(|f| f.kind == kind).cloned();
        let late = factory.as_ref().is_some_and(|f| f.late.as_deref() == Some(tag.name()));
        match &factory {
            Some(_) if late => {}
            Some(f) if f.late.is_none() => {
                let mut sides = f.sides.lock().unwrap_or_else(|e| e.into_inner());
                if !sides.iter().any(|s| s.name == tag.name()) {
                    sides.push(SideOutput::of::<X>(tag.name(), fields.clone(), self.timestamped));
                }
            }
            _ => env.fail(PlanError::operator(
                &self.uid,
                0,
                format!(
                    "side output `{}`: only process functions have side outputs, and windows the one of their late records",
                    tag.name()
                ),
            )),
        }
        drop(env);
        DataStream {
            env: self.env.clone(),
            uid: self.uid.clone(),
            output: tag.name().to_string(),
            fields,
            timestamped: self.timestamped,
            extra_columns: late,
            _t: PhantomData,
        }
    }

    /// Two streams as the inputs of one keyed function
    /// ([`ConnectedStreams::key_by`], then `process`).
    pub fn connect<U: Record>(&self, other: &DataStream<U>) -> ConnectedStreams<T, U> {
        ConnectedStreams::new(self.clone(), other.clone())
    }

    /// Sets the parallelism of the operator the stream leaves.
    pub fn set_parallelism(self, parallelism: u32) -> Self {
        let mut env = self.env.borrow_mut();
        if parallelism == 0 {
            env.fail(PlanError::operator(&self.uid, 0, "parallelism must be at least 1").field("parallelism"));
        } else if let Some(op) = env.builder.operator_mut(&self.uid) {
            op.parallelism = parallelism;
        }
        drop(env);
        self
    }

    /// Writes the stream's records to `sink` (operator `uid`): the records'
    /// fields only, as columns of their names.
    pub fn sink(&self, uid: &str, sink: Sink) {
        let mut env = self.env.borrow_mut();
        let (kind, config) = match sink.config(&self.fields) {
            Ok(k) => k,
            Err(e) => {
                env.fail(PlanError::operator(uid, 0, e));
                return;
            }
        };
        if !env.claim(uid) {
            return;
        }
        let mut from = self.clone();
        if self.timestamped || self.extra_columns {
            // Only the record's fields reach the sink.
            let fields = env.derived(uid, "fields");
            let columns: Vec<&str> = self.fields.iter().map(|f| f.name().as_str()).collect();
            env.builder.operator(&fields, "project", json!({ "columns": columns }));
            env.connect(self, &fields, Partitioning::Forward, &[], 0);
            from = DataStream::new(self.env.clone(), &fields, self.fields.clone(), false);
        }
        env.builder.operator(uid, &kind, config);
        env.connect(&from, uid, Partitioning::Forward, &[], 0);
    }
}
