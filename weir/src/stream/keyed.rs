//! Keyed streams: process functions with keyed state and timers, windows,
//! and two connected inputs keyed alike.

use std::sync::Arc;
use std::time::Duration;

use weir_runtime::graph::Partitioning;
use weir_runtime::operators::millis;

use super::{DataStream, EventTimeWindows};
use crate::functions::{AggregateFunction, Key, KeyedCoProcessFunction, KeyedProcessFunction, OutputTag};
use crate::ops::process::{co_process_factory, process_factory, KeyFn};
use crate::ops::window::{window_factory, Windowed};
use crate::ops::FnFactory;
use crate::record::{Record, KEY};

/// A stream keyed by `K` (Flink's `KeyedStream`): what follows sees the
/// records of each key in one subtask, with that key's state and timers.
pub struct KeyedStream<K, T> {
    /// The records with their key column.
    pub(crate) stream: DataStream<T>,
    pub(crate) key: KeyFn<T, K>,
}

impl<K, T> std::fmt::Debug for KeyedStream<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedStream").field("uid", &self.stream.uid).finish()
    }
}

impl<K, T> Clone for KeyedStream<K, T> {
    fn clone(&self) -> Self {
        Self { stream: self.stream.clone(), key: self.key.clone() }
    }
}

/// Adds keyed operator `uid` made by `factory` (given its kind), its inputs
/// hash-partitioned by key; returns whether it was added.
fn add_keyed(
    first: &DataStream<impl Record>,
    uid: &str,
    inputs: &[(&str, &str)],
    factory: impl FnOnce(String) -> FnFactory,
) -> bool {
    let mut env = first.env.borrow_mut();
    if !env.claim(uid) {
        return false;
    }
    let kind = env.kind(uid);
    env.add_factory(uid, factory(kind));
    for (input, (from, output)) in inputs.iter().enumerate() {
        if output.is_empty() {
            env.builder.edge(from, uid, Partitioning::Hash, &[KEY], input as u32);
        } else {
            env.builder.side_output(from, output, uid, Partitioning::Hash, &[KEY], input as u32);
        }
    }
    true
}

impl<K: Key, T: Record> KeyedStream<K, T> {
    pub(crate) fn new(stream: DataStream<T>, key: KeyFn<T, K>) -> Self {
        Self { stream, key }
    }

    fn input(&self) -> (&str, &str) {
        (self.stream.uid.as_str(), self.stream.output.as_str())
    }

    /// Runs keyed process function `f` as operator `uid` (Flink's `process`).
    pub fn process<F>(&self, uid: &str, f: F) -> DataStream<F::Out>
    where
        F: KeyedProcessFunction<Key = K, In = T>,
    {
        let (fi, fo) = (self.stream.fields.clone(), self.stream.fields_of::<F::Out>());
        let key = self.key.clone();
        add_keyed(&self.stream, uid, &[self.input()], |kind| process_factory(kind, f, key, fi, fo));
        self.stream.next(uid, self.stream.timestamped)
    }

    /// Cuts each key's records into event-time windows.
    pub fn window(&self, windows: EventTimeWindows) -> WindowedStream<K, T> {
        WindowedStream { keyed: self.clone(), windows, lateness: Duration::ZERO, late: None }
    }
}

/// A keyed stream cut into windows, waiting for its aggregate function.
pub struct WindowedStream<K, T> {
    keyed: KeyedStream<K, T>,
    windows: EventTimeWindows,
    lateness: Duration,
    late: Option<String>,
}

impl<K, T> std::fmt::Debug for WindowedStream<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowedStream").field("windows", &self.windows).field("lateness", &self.lateness).finish()
    }
}

impl<K: Key, T: Record> WindowedStream<K, T> {
    /// How long after its end a window still takes records (Kafka Streams'
    /// grace period): each late record updates the window's result, which
    /// fires again.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness = lateness;
        self
    }

    /// Records later than the allowed lateness go to side output `tag` of
    /// the aggregated stream rather than being dropped.
    pub fn side_output_late_data(mut self, tag: &OutputTag<T>) -> Self {
        self.late = Some(tag.name().to_string());
        self
    }

    /// Aggregates each window with `agg` as operator `uid`: one record per
    /// key and window when the watermark passes the window's end, with the
    /// window's last millisecond as its event time.
    pub fn aggregate<A>(self, uid: &str, agg: A) -> DataStream<Windowed<K, A::Out>>
    where
        A: AggregateFunction<In = T>,
    {
        let stream = &self.keyed.stream;
        let (fi, fo) = (stream.fields.clone(), stream.fields_of::<Windowed<K, A::Out>>());
        let (key, assigner, late) = (self.keyed.key.clone(), self.windows.0, self.late.clone());
        let lateness = millis(self.lateness);
        add_keyed(stream, uid, &[self.keyed.input()], |kind| {
            window_factory(kind, Arc::new(agg), key, assigner, lateness, late, fi, fo)
        });
        stream.next(uid, true)
    }
}

/// Two streams feeding one function (Flink's `ConnectedStreams`).
pub struct ConnectedStreams<T, U> {
    first: DataStream<T>,
    second: DataStream<U>,
}

impl<T, U> std::fmt::Debug for ConnectedStreams<T, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectedStreams").field("first", &self.first.uid).field("second", &self.second.uid).finish()
    }
}

impl<T: Record, U: Record> ConnectedStreams<T, U> {
    pub(crate) fn new(first: DataStream<T>, second: DataStream<U>) -> Self {
        Self { first, second }
    }

    /// Keys both inputs by the same key type, each with its own function.
    pub fn key_by<K: Key>(
        &self,
        first: impl Fn(&T) -> K + Send + Sync + 'static,
        second: impl Fn(&U) -> K + Send + Sync + 'static,
    ) -> KeyedConnectedStreams<K, T, U> {
        KeyedConnectedStreams { first: self.first.key_by(first), second: self.second.key_by(second) }
    }
}

/// Two streams keyed alike, waiting for their keyed co-process function.
pub struct KeyedConnectedStreams<K, T, U> {
    first: KeyedStream<K, T>,
    second: KeyedStream<K, U>,
}

impl<K, T, U> std::fmt::Debug for KeyedConnectedStreams<K, T, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedConnectedStreams").finish_non_exhaustive()
    }
}

impl<K: Key, T: Record, U: Record> KeyedConnectedStreams<K, T, U> {
    /// Runs keyed co-process function `f` as operator `uid`: records of
    /// one key from either input meet in one subtask, with its state and timers.
    pub fn process<F>(&self, uid: &str, f: F) -> DataStream<F::Out>
    where
        F: KeyedCoProcessFunction<Key = K, In1 = T, In2 = U>,
    {
        let (a, b) = (&self.first.stream, &self.second.stream);
        let fields = (a.fields.clone(), b.fields.clone());
        let out = a.fields_of::<F::Out>();
        let keys = (self.first.key.clone(), self.second.key.clone());
        add_keyed(a, uid, &[self.first.input(), self.second.input()], |kind| {
            co_process_factory(kind, f, keys, fields, out)
        });
        a.next(uid, a.timestamped || b.timestamped)
    }
}
