//! The functions users write: keyed process functions (one or two inputs)
//! with state and timers, and aggregate functions for windows; and what
//! they see while they run ([`Context`]).

use std::any::Any;
use std::collections::HashMap;
use std::hash::Hash;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;
use weir_runtime::state::Timers;

use crate::record::Record;
use crate::state::{KeyedScope, KeyedStore, StateValue, States};

/// The result of user code; an error fails the task (and the job restarts
/// from its latest checkpoint if it has a restart strategy).
pub type Result<T = ()> = anyhow::Result<T>;

/// An error raised by Weir on behalf of user code (state that does not
/// decode, a value that does not encode).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct UserError(String);

impl UserError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// A type records can be keyed by.
pub trait Key: Serialize + DeserializeOwned + Hash + Eq + Clone + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Hash + Eq + Clone + Send + Sync + 'static> Key for T {}

/// Names a side output of type `T`: a function emits to it with
/// [`Context::output`], and [`crate::DataStream::side_output`] reads it.
pub struct OutputTag<T> {
    pub(crate) name: String,
    _t: PhantomData<fn() -> T>,
}

impl<T> OutputTag<T> {
    /// A tag called `name` (unique among the side outputs of one operator).
    pub fn new(name: &str) -> Self {
        Self { name: name.to_string(), _t: PhantomData }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<T> Clone for OutputTag<T> {
    fn clone(&self) -> Self {
        Self::new(&self.name)
    }
}

impl<T> std::fmt::Debug for OutputTag<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OutputTag({})", self.name)
    }
}

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeDomain {
    /// Event time: fires when the watermark passes it.
    EventTime,
    /// Processing time: fires when the wall clock passes it.
    ProcessingTime,
}

/// A keyed function of one input, with keyed state and timers (Flink's
/// `KeyedProcessFunction`).
pub trait KeyedProcessFunction: Clone + Send + Sync + 'static {
    /// The key.
    type Key: Key;
    /// Input records.
    type In: Record;
    /// Output records.
    type Out: Record;

    /// Declares the function's state (called once per subtask, before any
    /// record, and at planning to learn the states' names and types).
    fn open(&mut self, _states: &mut States) {}

    /// One input record.
    fn process_element(&mut self, value: Self::In, ctx: &mut Context<'_, Self::Key, Self::Out>) -> Result;

    /// A timer registered for the current key fired.
    fn on_timer(
        &mut self,
        _timestamp: i64,
        _domain: TimeDomain,
        _ctx: &mut Context<'_, Self::Key, Self::Out>,
    ) -> Result {
        Ok(())
    }
}

/// A keyed function of two inputs sharing keyed state and timers (Flink's
/// `KeyedCoProcessFunction`, after `connect(...).key_by(...)`).
pub trait KeyedCoProcessFunction: Clone + Send + Sync + 'static {
    /// The key both inputs are keyed by.
    type Key: Key;
    /// Records of the first input.
    type In1: Record;
    /// Records of the second input.
    type In2: Record;
    /// Output records.
    type Out: Record;

    /// Declares the function's state.
    fn open(&mut self, _states: &mut States) {}

    /// One record of the first input.
    fn process_element1(&mut self, value: Self::In1, ctx: &mut Context<'_, Self::Key, Self::Out>) -> Result;

    /// One record of the second input.
    fn process_element2(&mut self, value: Self::In2, ctx: &mut Context<'_, Self::Key, Self::Out>) -> Result;

    /// A timer registered for the current key fired.
    fn on_timer(
        &mut self,
        _timestamp: i64,
        _domain: TimeDomain,
        _ctx: &mut Context<'_, Self::Key, Self::Out>,
    ) -> Result {
        Ok(())
    }
}

/// Incremental aggregation of a window's records (Flink's `AggregateFunction`).
pub trait AggregateFunction: Send + Sync + 'static {
    /// Input records.
    type In: Record;
    /// The accumulator, kept in state.
    type Acc: StateValue;
    /// The result.
    type Out: Record;

    /// A fresh accumulator.
    fn create_accumulator(&self) -> Self::Acc;
    /// Adds a record.
    fn add(&self, value: &Self::In, acc: &mut Self::Acc);
    /// The result of an accumulator.
    fn get_result(&self, acc: &Self::Acc) -> Self::Out;
    /// Merges `other` into `acc` (session windows that merge).
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc);
}

/// Side outputs being filled by a function, by tag name.
#[derive(Default)]
pub(crate) struct SideBuffers {
    pub(crate) by_name: HashMap<String, Box<dyn SideBuffer>>,
}

/// A side output's values, kept as their type until they become a batch.
pub(crate) trait SideBuffer: Send {
    fn push(&mut self, value: Box<dyn Any>, timestamp: Option<i64>);
    /// Rows buffered.
    fn len(&self) -> usize;
    /// The buffered values as a batch (and clears them).
    fn take(&mut self) -> weir_runtime::error::OpResult<arrow::array::RecordBatch>;
}

/// What a keyed function sees while it handles a record or a timer: the
/// current key, the record's event time, the watermark, timers, state (via
/// its handles) and the outputs.
pub struct Context<'a, K, O> {
    pub(crate) key: &'a K,
    pub(crate) key_bytes: &'a [u8],
    pub(crate) key_group: u32,
    pub(crate) store: &'a mut KeyedStore,
    pub(crate) timestamp: Option<i64>,
    pub(crate) watermark: i64,
    pub(crate) now: i64,
    pub(crate) event_timers: &'a mut Timers,
    pub(crate) processing_timers: &'a mut Timers,
    pub(crate) out: &'a mut Vec<(O, Option<i64>)>,
    pub(crate) side: &'a mut SideBuffers,
}

impl<K, O> std::fmt::Debug for Context<'_, K, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("timestamp", &self.timestamp).field("watermark", &self.watermark).finish()
    }
}

impl<K, O> Context<'_, K, O> {
    /// The key of the record or timer at hand.
    pub fn key(&self) -> &K {
        self.key
    }

    /// The event time of the record (or the timer's time), if the stream has event time.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// The current watermark (`i64::MIN` before the first).
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }

    /// The current processing time (milliseconds since the epoch).
    pub fn current_processing_time(&self) -> i64 {
        self.now
    }

    /// Emits a record, with the event time of the record or timer at hand.
    pub fn collect(&mut self, value: O) {
        self.out.push((value, self.timestamp));
    }

    /// Emits a record with event time `timestamp`.
    pub fn collect_with_timestamp(&mut self, value: O, timestamp: i64) {
        self.out.push((value, Some(timestamp)));
    }

    /// Emits `value` to the side output `tag` (dropped if no stream reads it).
    pub fn output<X: Record>(&mut self, tag: &OutputTag<X>, value: X) {
        if let Some(buf) = self.side.by_name.get_mut(&tag.name) {
            buf.push(Box::new(value), self.timestamp);
        }
    }

    /// A timer for the current key when the watermark passes `time`.
    pub fn register_event_time_timer(&mut self, time: i64) {
        self.event_timers.register(time, self.key_group, self.key_bytes.to_vec());
    }

    /// Removes the current key's event-time timer at `time`.
    pub fn delete_event_time_timer(&mut self, time: i64) {
        self.event_timers.delete(time, self.key_group, self.key_bytes);
    }

    /// A timer for the current key when processing time reaches `time` (ms since the epoch).
    pub fn register_processing_time_timer(&mut self, time: i64) {
        self.processing_timers.register(time, self.key_group, self.key_bytes.to_vec());
    }

    /// Removes the current key's processing-time timer at `time`.
    pub fn delete_processing_time_timer(&mut self, time: i64) {
        self.processing_timers.delete(time, self.key_group, self.key_bytes);
    }
}

impl<K, O> KeyedScope for Context<'_, K, O> {
    fn scope(&mut self) -> (&mut KeyedStore, &[u8], u32, i64) {
        (self.store, self.key_bytes, self.key_group, self.now)
    }
}
