//! Keyed event-time windows over typed records with an aggregate function:
//! tumbling, sliding and session windows, allowed lateness, late records to
//! a side output. Each window's accumulator per key is the function's own
//! type, kept in memory and written at checkpoints per (window, key group).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{FieldRef, SchemaRef};
use serde::{Deserialize, Serialize};
use weir_runtime::error::{OpResult, OperatorError};
use weir_runtime::keygroup::{hash_rows, key_group};
use weir_runtime::operators::{Collector, Operator, PlanContext};
use weir_runtime::state::{StateReader, StateWriter};
use weir_runtime::PlanError;

use super::process::KeyFn;
use super::{FnFactory, StateDecl};
use crate::evolution;
use crate::functions::{AggregateFunction, Key};
use crate::record::{stream_schema, to_batch, InputLayout};

/// A window's result for one key (and, with a session, its bounds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Windowed<K, V> {
    /// The key.
    pub key: K,
    /// The window's start (inclusive), in milliseconds.
    pub window_start: i64,
    /// The window's end (exclusive), in milliseconds.
    pub window_end: i64,
    /// The aggregate function's result.
    pub value: V,
}

/// Which windows a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Assigner {
    Tumbling { size: i64 },
    Sliding { size: i64, slide: i64 },
    Session { gap: i64 },
}

impl Assigner {
    pub(crate) fn describe(self) -> String {
        match self {
            Assigner::Tumbling { size } => format!("tumbling(size={size}ms)"),
            Assigner::Sliding { size, slide } => format!("sliding(size={size}ms, slide={slide}ms)"),
            Assigner::Session { gap } => format!("session(gap={gap}ms)"),
        }
    }
}

pub(crate) const FIXED_STATE: &str = "windows";
pub(crate) const SESSION_STATE: &str = "sessions";

/// Maps keyed by users' keys (foldhash: several times faster than SipHash
/// on small keys, and seeded per map).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A fixed window's accumulators, by key.
struct Pane<K, Acc> {
    accs: HashMap<K, (u32, Acc)>,
    fired: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session<Acc> {
    start: i64,
    end: i64,
    acc: Acc,
    fired: bool,
}

/// Per key: its key group and its sessions.
type Sessions<K, Acc> = HashMap<K, (u32, Vec<Session<Acc>>)>;

/// Sessions by key group, for snapshots.
type ByGroup<'a, K, Acc> = BTreeMap<u32, Vec<(&'a K, &'a Vec<Session<Acc>>)>>;

/// A keyed window operator of aggregate function `A`.
pub(crate) struct WindowOp<K: Key, A: AggregateFunction> {
    pub(crate) agg: Arc<A>,
    pub(crate) key_fn: KeyFn<A::In, K>,
    pub(crate) layout: InputLayout,
    pub(crate) assigner: Assigner,
    pub(crate) lateness: i64,
    pub(crate) late_port: Option<u32>,
    pub(crate) fields: Vec<FieldRef>,
    pub(crate) schema: SchemaRef,
    pub(crate) max_parallelism: u32,
    pub(crate) watermark: i64,
    fixed: BTreeMap<i64, Pane<K, A::Acc>>,
    sessions: Sessions<K, A::Acc>,
    dirty: BTreeSet<i64>,
    /// Fixed windows in the last snapshot, with the key groups they wrote.
    persisted: BTreeMap<i64, Vec<u32>>,
    /// Persisted windows purged since the last snapshot.
    purged: Vec<(i64, Vec<u32>)>,
    sessions_persisted: BTreeSet<u32>,
    hashes: Vec<u64>,
    /// Keys in the largest window fired so far: new windows start that big.
    pane_capacity: usize,
}

impl<K: Key, A: AggregateFunction> WindowOp<K, A> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        agg: Arc<A>,
        key_fn: KeyFn<A::In, K>,
        layout: InputLayout,
        assigner: Assigner,
        lateness: i64,
        late_port: Option<u32>,
        fields: Vec<FieldRef>,
        schema: SchemaRef,
        max_parallelism: u32,
    ) -> Self {
        Self {
            agg,
            key_fn,
            layout,
            assigner,
            lateness,
            late_port,
            fields,
            schema,
            max_parallelism,
            watermark: i64::MIN,
            fixed: BTreeMap::new(),
            sessions: HashMap::default(),
            dirty: BTreeSet::new(),
            persisted: BTreeMap::new(),
            purged: Vec::new(),
            sessions_persisted: BTreeSet::new(),
            hashes: Vec::new(),
            pane_capacity: 0,
        }
    }

    fn result(&self, key: &K, start: i64, end: i64, acc: &A::Acc) -> (Windowed<K, A::Out>, i64) {
        (Windowed { key: key.clone(), window_start: start, window_end: end, value: self.agg.get_result(acc) }, end - 1)
    }

    fn emit(&self, rows: Vec<(Windowed<K, A::Out>, i64)>, out: &mut Collector) -> OpResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let (items, ts): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
        out.emit(to_batch(&self.schema, &self.fields, &items, Some(ts))?);
        Ok(())
    }

    /// Adds a record to its fixed windows; returns whether any took it.
    fn absorb_fixed(&mut self, item: &A::In, key: &K, kg: u32, t: i64, refire: &mut Vec<(i64, K)>) -> bool {
        let (size, slide) = match self.assigner {
            Assigner::Tumbling { size } => (size, size),
            Assigner::Sliding { size, slide } => (size, slide),
            Assigner::Session { .. } => unreachable!("fixed windows only"),
        };
        let mut taken = false;
        let mut start = t - t.rem_euclid(slide);
        while start > t - size {
            let last = start + size - 1;
            if last.saturating_add(self.lateness) > self.watermark {
                let capacity = self.pane_capacity;
                let pane = self.fixed.entry(start).or_insert_with(|| Pane {
                    accs: HashMap::with_capacity_and_hasher(capacity, Default::default()),
                    fired: false,
                });
                match pane.accs.get_mut(key) {
                    Some((_, acc)) => self.agg.add(item, acc),
                    None => {
                        let mut acc = self.agg.create_accumulator();
                        self.agg.add(item, &mut acc);
                        pane.accs.insert(key.clone(), (kg, acc));
                    }
                }
                if self.dirty.last() != Some(&start) {
                    self.dirty.insert(start);
                }
                if last <= self.watermark {
                    refire.push((start, key.clone()));
                }
                taken = true;
            }
            start -= slide;
        }
        taken
    }

    /// Adds a record to its key's sessions; returns whether it was taken.
    fn absorb_session(&mut self, item: &A::In, key: &K, kg: u32, t: i64, refire: &mut Vec<(K, i64)>) -> bool {
        let Assigner::Session { gap } = self.assigner else { unreachable!("sessions only") };
        let (start, end) = (t, t + gap);
        let (agg, watermark, lateness) = (&self.agg, self.watermark, self.lateness);
        let list = &mut self.sessions.entry(key.clone()).or_insert_with(|| (kg, Vec::new())).1;
        let first = list.partition_point(|x| x.end < start);
        let mut last = first;
        while last < list.len() && list[last].start <= end {
            last += 1;
        }
        let at = if first == last {
            if (end - 1).saturating_add(lateness) <= watermark {
                return false;
            }
            list.insert(first, Session { start, end, acc: agg.create_accumulator(), fired: false });
            first
        } else {
            let merged: Vec<Session<A::Acc>> = list.drain(first + 1..last).collect();
            let s = &mut list[first];
            for other in merged {
                agg.merge(&mut s.acc, other.acc);
                s.start = s.start.min(other.start);
                s.end = s.end.max(other.end);
                s.fired |= other.fired;
            }
            s.start = s.start.min(start);
            s.end = s.end.max(end);
            s.fired &= s.end - 1 <= watermark;
            first
        };
        let s = &mut list[at];
        agg.add(item, &mut s.acc);
        if s.end - 1 <= watermark {
            refire.push((key.clone(), s.start));
        }
        true
    }

    /// Fires due windows, purges ones past their lateness.
    fn fire(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        let mut rows = Vec::new();
        match self.assigner {
            Assigner::Session { .. } => {
                let lateness = self.lateness;
                for (key, (_, list)) in self.sessions.iter_mut() {
                    list.retain_mut(|s| {
                        if s.end - 1 <= watermark && !s.fired {
                            s.fired = true;
                            rows.push((
                                Windowed {
                                    key: key.clone(),
                                    window_start: s.start,
                                    window_end: s.end,
                                    value: self.agg.get_result(&s.acc),
                                },
                                s.end - 1,
                            ));
                        }
                        !(s.fired && (s.end - 1).saturating_add(lateness) <= watermark)
                    });
                }
                self.sessions.retain(|_, (_, list)| !list.is_empty());
            }
            Assigner::Tumbling { size } | Assigner::Sliding { size, .. } => {
                let due: Vec<i64> =
                    self.fixed.keys().take_while(|s| s.saturating_add(size - 1) <= watermark).copied().collect();
                for start in due {
                    let purge = (start + size - 1).saturating_add(self.lateness) <= watermark;
                    let pane = self.fixed.get_mut(&start).expect("listed above");
                    if !pane.fired {
                        pane.fired = true;
                        self.pane_capacity = self.pane_capacity.max(pane.accs.len());
                        rows.reserve(pane.accs.len());
                        let pane = &self.fixed[&start];
                        rows.extend(pane.accs.iter().map(|(k, (_, acc))| self.result(k, start, start + size, acc)));
                        if !purge {
                            self.dirty.insert(start);
                        }
                    }
                    if purge {
                        self.fixed.remove(&start);
                        self.dirty.remove(&start);
                        if let Some(kgs) = self.persisted.remove(&start) {
                            self.purged.push((start, kgs));
                        }
                    }
                }
            }
        }
        self.emit(rows, out)
    }
}

fn encode<T: Serialize>(v: &T) -> OpResult<Vec<u8>> {
    rmp_serde::to_vec_named(v).map_err(|e| OperatorError::State(format!("window state does not encode: {e}")))
}

fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> OpResult<T> {
    rmp_serde::from_slice(b).map_err(|e| OperatorError::State(format!("window state does not decode: {e}")))
}

impl<K: Key, A: AggregateFunction> Operator for WindowOp<K, A> {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let key_col =
            self.layout.key.ok_or_else(|| OperatorError::InvalidData("a window's input has no key".into()))?;
        hash_rows(&[batch.column(key_col).clone()], &mut self.hashes)?;
        let ts = self
            .layout
            .timestamps(&batch)
            .ok_or_else(|| OperatorError::InvalidData("a window's input has no event time".into()))?
            .clone();
        let mut late = Vec::new();
        let (mut refire_fixed, mut refire_sessions) = (Vec::new(), Vec::new());
        let layout = self.layout.clone();
        layout.with_records(&batch, false, |items: &[A::In]| {
            for (r, item) in items.iter().enumerate() {
                let key = (self.key_fn)(item);
                let kg = key_group(self.hashes[r], self.max_parallelism);
                let t = ts.value(r);
                let taken = match self.assigner {
                    Assigner::Session { .. } => self.absorb_session(item, &key, kg, t, &mut refire_sessions),
                    _ => self.absorb_fixed(item, &key, kg, t, &mut refire_fixed),
                };
                if !taken {
                    late.push(r as u32);
                }
            }
            Ok(())
        })?;
        self.layout.fast.set(layout.fast.get());
        // Windows past their end that took records fire again for those keys.
        let mut rows = Vec::new();
        refire_fixed.sort_by_key(|(s, _)| *s);
        for (start, key) in refire_fixed {
            let size = match self.assigner {
                Assigner::Tumbling { size } | Assigner::Sliding { size, .. } => size,
                Assigner::Session { .. } => unreachable!(),
            };
            if let Some(pane) = self.fixed.get_mut(&start) {
                pane.fired = true;
                if let Some((_, acc)) = self.fixed[&start].accs.get(&key) {
                    rows.push(self.result(&key, start, start + size, acc));
                }
            }
        }
        for (key, start) in refire_sessions {
            let Some((_, list)) = self.sessions.get_mut(&key) else { continue };
            let Some(i) = list.iter().position(|s| s.start <= start && start < s.end) else { continue };
            list[i].fired = true;
            let s = &self.sessions[&key].1[i];
            rows.push(self.result(&key, s.start, s.end, &s.acc));
        }
        rows.dedup_by(|a, b| a.0.window_start == b.0.window_start && a.0.key == b.0.key);
        self.emit(rows, out)?;
        if !late.is_empty() {
            if let Some(port) = self.late_port {
                let rows = arrow::array::UInt32Array::from(late);
                out.emit_side(port, arrow::compute::take_record_batch(&batch, &rows)?);
            }
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        if watermark > self.watermark {
            self.watermark = watermark;
            self.fire(watermark, out)?;
        }
        out.emit_watermark(watermark);
        Ok(())
    }

    fn finish(&mut self, out: &mut Collector) -> OpResult<()> {
        self.fire(i64::MAX, out)
    }

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        if let Assigner::Session { .. } = self.assigner {
            let mut by_group: ByGroup<'_, K, A::Acc> = BTreeMap::new();
            for (k, (kg, list)) in &self.sessions {
                by_group.entry(*kg).or_default().push((k, list));
            }
            let now: BTreeSet<u32> = by_group.keys().copied().collect();
            for kg in self.sessions_persisted.difference(&now) {
                w.delete(SESSION_STATE, *kg, Vec::new());
            }
            for (kg, entries) in by_group {
                w.put(SESSION_STATE, kg, Vec::new(), encode(&entries)?);
            }
            self.sessions_persisted = now;
            return Ok(());
        }
        for (start, kgs) in self.purged.drain(..) {
            for kg in kgs {
                w.delete(FIXED_STATE, kg, start.to_be_bytes().to_vec());
            }
        }
        let starts: Vec<i64> =
            if w.full() { self.fixed.keys().copied().collect() } else { self.dirty.iter().copied().collect() };
        for start in starts {
            let Some(pane) = self.fixed.get(&start) else { continue };
            let mut by_group: BTreeMap<u32, Vec<(&K, &A::Acc)>> = BTreeMap::new();
            for (k, (kg, acc)) in &pane.accs {
                by_group.entry(*kg).or_default().push((k, acc));
            }
            let written: Vec<u32> = by_group.keys().copied().collect();
            for (kg, entries) in by_group {
                w.put(FIXED_STATE, kg, start.to_be_bytes().to_vec(), encode(&(pane.fired, entries))?);
            }
            self.persisted.insert(start, written);
        }
        self.dirty.clear();
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        for e in r.state(FIXED_STATE) {
            let start = i64::from_be_bytes(
                e.key.as_slice().try_into().map_err(|_| OperatorError::State("a window key is not 8 bytes".into()))?,
            );
            let (fired, entries): (bool, Vec<(K, A::Acc)>) = decode(e.value.as_deref().unwrap_or_default())?;
            let pane = self.fixed.entry(start).or_insert_with(|| Pane { accs: HashMap::default(), fired });
            pane.fired = fired;
            pane.accs.extend(entries.into_iter().map(|(k, acc)| (k, (e.key_group, acc))));
            self.persisted.entry(start).or_default().push(e.key_group);
        }
        for e in r.state(SESSION_STATE) {
            let entries: Vec<(K, Vec<Session<A::Acc>>)> = decode(e.value.as_deref().unwrap_or_default())?;
            self.sessions.extend(entries.into_iter().map(|(k, list)| (k, (e.key_group, list))));
            self.sessions_persisted.insert(e.key_group);
        }
        Ok(())
    }
}

/// What a window state's entries hold, as its description names them.
#[derive(Serialize, Deserialize)]
struct WindowEntry<K, Acc> {
    key: K,
    accumulator: Acc,
}

/// The factory of a keyed window with aggregate function `A`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn window_factory<K: Key, A: AggregateFunction>(
    kind: String,
    agg: Arc<A>,
    key_fn: KeyFn<A::In, K>,
    assigner: Assigner,
    lateness: i64,
    late: Option<String>,
    in_fields: Vec<FieldRef>,
    out_fields: Vec<FieldRef>,
) -> FnFactory {
    let type_name = std::any::type_name::<A::In>();
    let fi = in_fields.clone();
    let fo = out_fields.clone();
    let plan = move |ctx: &PlanContext<'_>| -> Result<InputLayout, PlanError> {
        let layout = InputLayout::of(ctx, 0, &fi, type_name)?;
        if layout.timestamp.is_none() {
            return Err(
                ctx.error("a window needs event time: assign timestamps and watermarks to the stream before keying it")
            );
        }
        Ok(layout)
    };
    let plan = Arc::new(plan);
    let p2 = plan.clone();
    let late_port = late.as_ref().map(|_| 1);
    let mut factory = FnFactory::new(
        kind,
        weir_runtime::operators::Arity::One,
        Box::new(move |ctx| {
            p2(ctx)?;
            Ok(stream_schema(&fo, true))
        }),
        Box::new(move |ctx, subtask, _| {
            let layout = plan(ctx)?;
            Ok(weir_runtime::operators::Instance::Operator(Box::new(WindowOp::new(
                agg.clone(),
                key_fn.clone(),
                layout,
                assigner,
                lateness,
                late_port,
                out_fields.clone(),
                stream_schema(&out_fields, true),
                subtask.max_parallelism,
            ))))
        }),
    );
    let name = match assigner {
        Assigner::Session { .. } => SESSION_STATE,
        _ => FIXED_STATE,
    };
    let window = assigner.describe();
    let w2 = window.clone();
    factory.states = vec![StateDecl {
        name: name.into(),
        desc: evolution::describe_window::<WindowEntry<K, A::Acc>>(&window),
        reads: Some(Arc::new(move |recorded| evolution::reads_window::<WindowEntry<K, A::Acc>>(&w2, recorded))),
    }];
    factory.late = late;
    factory
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use arrow::array::{ArrayRef, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use weir_runtime::channel::StreamElement;

    use super::*;
    use crate::record::{fields_of, KEY, TIMESTAMP};

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Ev {
        k: i64,
        v: i64,
    }

    struct Sum;

    impl AggregateFunction for Sum {
        type In = Ev;
        type Acc = i64;
        type Out = i64;
        fn create_accumulator(&self) -> i64 {
            0
        }
        fn add(&self, e: &Ev, acc: &mut i64) {
            *acc += e.v;
        }
        fn get_result(&self, acc: &i64) -> i64 {
            *acc
        }
        fn merge(&self, acc: &mut i64, other: i64) {
            *acc += other;
        }
    }

    fn op() -> WindowOp<i64, Sum> {
        let fields = fields_of::<Windowed<i64, i64>>().unwrap();
        let key_fn: KeyFn<Ev, i64> = Arc::new(|e: &Ev| e.k);
        let layout = InputLayout { fields: vec![0, 1], timestamp: Some(2), key: Some(3), fast: Cell::new(true) };
        let schema = stream_schema(&fields, true);
        WindowOp::new(Arc::new(Sum), key_fn, layout, Assigner::Tumbling { size: 10 }, 5, Some(1), fields, schema, 128)
    }

    /// Records (k, v, time).
    fn batch(rows: &[(i64, i64, i64)]) -> RecordBatch {
        let col = |f: fn(&(i64, i64, i64)) -> i64| -> ArrayRef { Arc::new(rows.iter().map(f).collect::<Int64Array>()) };
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
            Field::new(TIMESTAMP, DataType::Int64, false),
            Field::new(KEY, DataType::Int64, false),
        ]));
        RecordBatch::try_new(schema, vec![col(|r| r.0), col(|r| r.1), col(|r| r.2), col(|r| r.0)]).unwrap()
    }

    /// The window results emitted: (key, start, value).
    fn results(out: &mut Collector) -> Vec<(i64, i64, i64)> {
        let mut got = Vec::new();
        for e in out.drain() {
            if let StreamElement::Batch(b) = e {
                let rows: Vec<Windowed<i64, i64>> =
                    serde_arrow::from_record_batch(&b.project(&[0, 1, 2, 3]).unwrap()).unwrap();
                got.extend(rows.into_iter().map(|w| (w.key, w.window_start, w.value)));
            }
        }
        got
    }

    #[test]
    fn late_records_update_fired_windows_within_the_lateness_and_go_to_the_side_after_it() {
        let mut w = op();
        let mut out = Collector::default();
        w.process_batch(0, batch(&[(1, 10, 1), (1, 5, 2), (2, 7, 12)]), &mut out).unwrap();
        assert_eq!(results(&mut out), []);
        w.process_watermark(9, &mut out).unwrap();
        assert_eq!(results(&mut out), [(1, 0, 15)], "window [0, 10) fires at its end");
        // Late, but within the allowed 5 ms: the window fires again, updated.
        w.process_batch(0, batch(&[(1, 1, 3)]), &mut out).unwrap();
        assert_eq!(results(&mut out), [(1, 0, 16)]);
        assert!(out.take_side().is_empty());
        // Past the lateness the window is gone, and its records go to the side output.
        w.process_watermark(14, &mut out).unwrap();
        assert_eq!(results(&mut out), []);
        w.process_batch(0, batch(&[(1, 100, 4), (2, 1, 15)]), &mut out).unwrap();
        assert_eq!(results(&mut out), []);
        let side = out.take_side();
        assert_eq!(side.len(), 1);
        assert_eq!((side[0].0, side[0].1.num_rows()), (1, 1), "only the record of the purged window is late");
        let late = side[0].1.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(late.value(0), 100);
        w.finish(&mut out).unwrap();
        assert_eq!(results(&mut out), [(2, 10, 8)]);
    }
}
