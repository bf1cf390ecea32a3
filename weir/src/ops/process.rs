//! Keyed process functions as operators: one input ([`ProcessOp`]) or two
//! ([`CoProcessOp`]), sharing one core — the keyed store, event-time and
//! processing-time timers, outputs.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{FieldRef, SchemaRef};
use weir_runtime::error::{OpResult, OperatorError};
use weir_runtime::keygroup::{hash_rows, key_group};
use weir_runtime::operators::{Arity, Collector, Instance, Operator, PlanContext};
use weir_runtime::state::{StateReader, StateWriter, Timers};

use super::{flush_sides, now_ms, side_buffers, user, FnFactory, SideOutput, StateDecl};
use crate::functions::{Context, Key, KeyedCoProcessFunction, KeyedProcessFunction, SideBuffers, TimeDomain};
use crate::record::{stream_schema, to_batch, InputLayout, Record, TIMESTAMP};
use crate::state::{store_decode, store_encode, KeyedStore, States};

/// State names of the timers (user states cannot start with `__`).
pub(crate) const EVENT_TIMERS: &str = "__event_timers";
pub(crate) const PROCESSING_TIMERS: &str = "__processing_timers";

/// How often expired state is swept out (it is also dropped when read).
const TTL_SWEEP_MS: i64 = 1_000;

/// What every keyed typed operator keeps: state, timers, outputs.
pub(crate) struct KeyedCore<K, O> {
    pub(crate) store: KeyedStore,
    pub(crate) event: Timers,
    pub(crate) processing: Timers,
    pub(crate) watermark: i64,
    pub(crate) max_parallelism: u32,
    pub(crate) fields: Vec<FieldRef>,
    pub(crate) schema: SchemaRef,
    pub(crate) timestamped: bool,
    pub(crate) side: SideBuffers,
    pub(crate) ports: Vec<(String, u32)>,
    pub(crate) out: Vec<(O, Option<i64>)>,
    pub(crate) hashes: Vec<u64>,
    pub(crate) last_sweep: i64,
    pub(crate) _key: std::marker::PhantomData<fn() -> K>,
}

impl<K: Key, O: Record> KeyedCore<K, O> {
    /// Key groups of a batch's rows, from its key column.
    fn key_groups(&mut self, batch: &RecordBatch, key: usize) -> OpResult<Vec<u32>> {
        hash_rows(&[batch.column(key).clone()], &mut self.hashes)?;
        Ok(self.hashes.iter().map(|&h| key_group(h, self.max_parallelism)).collect())
    }

    /// Runs `f` once per record of a batch, with the context of its key.
    fn each_record<T: Record>(
        &mut self,
        layout: &InputLayout,
        batch: &RecordBatch,
        key_fn: &(dyn Fn(&T) -> K + Send + Sync),
        mut f: impl FnMut(T, &mut Context<'_, K, O>) -> anyhow::Result<()>,
    ) -> OpResult<()> {
        let items: Vec<T> = layout.records(batch)?;
        let key_col = layout.key.ok_or_else(|| OperatorError::InvalidData("a keyed input has no key column".into()))?;
        let kgs = self.key_groups(batch, key_col)?;
        let ts: Option<Vec<i64>> = layout.timestamps(batch).map(|a| a.values().to_vec());
        let now = now_ms();
        for (r, item) in items.into_iter().enumerate() {
            let key = key_fn(&item);
            let key_bytes = store_encode(&key).map_err(|e| OperatorError::User(e.to_string()))?;
            let mut ctx = Context {
                key: &key,
                key_bytes: &key_bytes,
                key_group: kgs[r],
                store: &mut self.store,
                timestamp: ts.as_ref().map(|t| t[r]),
                watermark: self.watermark,
                now,
                event_timers: &mut self.event,
                processing_timers: &mut self.processing,
                out: &mut self.out,
                side: &mut self.side,
            };
            f(item, &mut ctx).map_err(user)?;
        }
        Ok(())
    }

    /// Fires the timers of `domain` due at `time`, earliest first, with
    /// the context of their key (timers registered meanwhile fire too).
    fn fire(
        &mut self,
        domain: TimeDomain,
        time: i64,
        mut on_timer: impl FnMut(i64, &mut Context<'_, K, O>) -> anyhow::Result<()>,
    ) -> OpResult<()> {
        let now = now_ms();
        loop {
            let due = match domain {
                TimeDomain::EventTime => self.event.fire(time),
                TimeDomain::ProcessingTime => self.processing.fire(time),
            };
            if due.is_empty() {
                return Ok(());
            }
            for (t, kg, key_bytes) in due {
                let key: K = store_decode(&key_bytes).map_err(|e| OperatorError::State(e.to_string()))?;
                let mut ctx = Context {
                    key: &key,
                    key_bytes: &key_bytes,
                    key_group: kg,
                    store: &mut self.store,
                    timestamp: (domain == TimeDomain::EventTime).then_some(t),
                    watermark: self.watermark,
                    now,
                    event_timers: &mut self.event,
                    processing_timers: &mut self.processing,
                    out: &mut self.out,
                    side: &mut self.side,
                };
                on_timer(t, &mut ctx).map_err(user)?;
            }
        }
    }

    /// Emits what the function collected and what its side outputs hold.
    fn flush(&mut self, out: &mut Collector) -> OpResult<()> {
        if !self.out.is_empty() {
            let collected = std::mem::take(&mut self.out);
            let watermark = self.watermark;
            let (items, ts): (Vec<O>, Vec<i64>) =
                collected.into_iter().map(|(o, t)| (o, t.unwrap_or(watermark))).unzip();
            out.emit(to_batch(&self.schema, &self.fields, &items, self.timestamped.then_some(ts))?);
        }
        flush_sides(&mut self.side, &self.ports, out)
    }

    fn snapshot(&mut self, w: &mut StateWriter) {
        self.store.snapshot(w);
        self.event.snapshot(w);
        self.processing.snapshot(w);
    }

    fn restore(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        self.store.restore(r)?;
        self.event.restore(r)?;
        self.processing.restore(r)
    }

    fn on_processing_time(
        &mut self,
        out: &mut Collector,
        on_timer: impl FnMut(i64, &mut Context<'_, K, O>) -> anyhow::Result<()>,
    ) -> OpResult<()> {
        let now = now_ms();
        if self.processing.next().is_some_and(|t| t <= now) {
            self.fire(TimeDomain::ProcessingTime, now, on_timer)?;
        }
        if now - self.last_sweep >= TTL_SWEEP_MS {
            self.last_sweep = now;
            self.store.expire(now);
        }
        self.flush(out)
    }

    fn advance(
        &mut self,
        watermark: i64,
        out: &mut Collector,
        on_timer: impl FnMut(i64, &mut Context<'_, K, O>) -> anyhow::Result<()>,
    ) -> OpResult<()> {
        if watermark > self.watermark {
            self.watermark = watermark;
            self.fire(TimeDomain::EventTime, watermark, on_timer)?;
            self.flush(out)?;
        }
        out.emit_watermark(watermark);
        Ok(())
    }
}

/// Extracts a key from a record.
pub(crate) type KeyFn<T, K> = Arc<dyn Fn(&T) -> K + Send + Sync>;

/// The key functions of a two-input operator's inputs.
pub(crate) type KeyFns<A, B, K> = (KeyFn<A, K>, KeyFn<B, K>);

/// A keyed process function of one input.
pub(crate) struct ProcessOp<F: KeyedProcessFunction> {
    pub(crate) f: F,
    pub(crate) key_fn: KeyFn<F::In, F::Key>,
    pub(crate) layout: InputLayout,
    pub(crate) core: KeyedCore<F::Key, F::Out>,
}

impl<F: KeyedProcessFunction> Operator for ProcessOp<F> {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let f = &mut self.f;
        self.core.each_record(&self.layout, &batch, self.key_fn.as_ref(), |v, ctx| f.process_element(v, ctx))?;
        self.core.flush(out)
    }

    fn process_watermark(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        let f = &mut self.f;
        self.core.advance(watermark, out, |t, ctx| f.on_timer(t, TimeDomain::EventTime, ctx))
    }

    fn on_processing_time(&mut self, _now: std::time::Instant, out: &mut Collector) -> OpResult<()> {
        let f = &mut self.f;
        self.core.on_processing_time(out, |t, ctx| f.on_timer(t, TimeDomain::ProcessingTime, ctx))
    }

    fn finish(&mut self, out: &mut Collector) -> OpResult<()> {
        // The end of a bounded input: every event-time timer fires.
        self.process_watermark(i64::MAX, out)
    }

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        self.core.snapshot(w);
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        self.core.restore(r)
    }
}

/// A keyed process function of two inputs.
pub(crate) struct CoProcessOp<F: KeyedCoProcessFunction> {
    pub(crate) f: F,
    pub(crate) key_fns: KeyFns<F::In1, F::In2, F::Key>,
    pub(crate) layouts: (InputLayout, InputLayout),
    pub(crate) core: KeyedCore<F::Key, F::Out>,
}

impl<F: KeyedCoProcessFunction> Operator for CoProcessOp<F> {
    fn process_batch(&mut self, input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let f = &mut self.f;
        if input == 0 {
            let key_fn = self.key_fns.0.as_ref();
            self.core.each_record(&self.layouts.0, &batch, key_fn, |v, ctx| f.process_element1(v, ctx))?;
        } else {
            let key_fn = self.key_fns.1.as_ref();
            self.core.each_record(&self.layouts.1, &batch, key_fn, |v, ctx| f.process_element2(v, ctx))?;
        }
        self.core.flush(out)
    }

    fn process_watermark(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        let f = &mut self.f;
        self.core.advance(watermark, out, |t, ctx| f.on_timer(t, TimeDomain::EventTime, ctx))
    }

    fn on_processing_time(&mut self, _now: std::time::Instant, out: &mut Collector) -> OpResult<()> {
        let f = &mut self.f;
        self.core.on_processing_time(out, |t, ctx| f.on_timer(t, TimeDomain::ProcessingTime, ctx))
    }

    fn finish(&mut self, out: &mut Collector) -> OpResult<()> {
        self.process_watermark(i64::MAX, out)
    }

    fn snapshot_state(&mut self, w: &mut StateWriter) -> OpResult<()> {
        self.core.snapshot(w);
        Ok(())
    }

    fn restore_state(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        self.core.restore(r)
    }
}

impl<K: Key, O: Record> KeyedCore<K, O> {
    /// A subtask's core: a store of `states`, no timers yet.
    fn new(
        states: States,
        fields: Vec<FieldRef>,
        timestamped: bool,
        sides: &[SideOutput],
        max_parallelism: u32,
    ) -> Self {
        let (side, ports) = side_buffers(sides);
        Self {
            store: KeyedStore::new(states.specs),
            event: Timers::new(EVENT_TIMERS),
            processing: Timers::new(PROCESSING_TIMERS),
            watermark: i64::MIN,
            max_parallelism,
            schema: stream_schema(&fields, timestamped),
            fields,
            timestamped,
            side,
            ports,
            out: Vec::new(),
            hashes: Vec::new(),
            last_sweep: 0,
            _key: std::marker::PhantomData,
        }
    }
}

/// Whether an operator's output carries event time: when any input does.
fn timestamped(ctx: &PlanContext<'_>) -> bool {
    ctx.inputs.iter().any(|s| s.index_of(TIMESTAMP).is_ok())
}

/// The factory of a keyed process function of one input.
pub(crate) fn process_factory<F: KeyedProcessFunction>(
    kind: String,
    f: F,
    key_fn: KeyFn<F::In, F::Key>,
    in_fields: Vec<FieldRef>,
    out_fields: Vec<FieldRef>,
) -> FnFactory {
    let type_name = std::any::type_name::<F::In>();
    let mut probe = States::default();
    f.clone().open(&mut probe);
    let states = StateDecl::keyed::<F::Key>(&probe);
    let (fi, fo) = (in_fields.clone(), out_fields.clone());
    let mut factory = FnFactory::new(
        kind,
        Arity::One,
        Box::new(move |ctx| {
            InputLayout::of(ctx, 0, &fi, type_name)?;
            Ok(stream_schema(&fo, timestamped(ctx)))
        }),
        Box::new(move |ctx, subtask, sides| {
            let layout = InputLayout::of(ctx, 0, &in_fields, type_name)?;
            let mut f = f.clone();
            let mut states = States::default();
            f.open(&mut states);
            let core = KeyedCore::new(states, out_fields.clone(), timestamped(ctx), sides, subtask.max_parallelism);
            Ok(Instance::Operator(Box::new(ProcessOp { f, key_fn: key_fn.clone(), layout, core })))
        }),
    );
    factory.states = states;
    factory
}

/// The factory of a keyed process function of two inputs.
pub(crate) fn co_process_factory<F: KeyedCoProcessFunction>(
    kind: String,
    f: F,
    key_fns: KeyFns<F::In1, F::In2, F::Key>,
    in_fields: (Vec<FieldRef>, Vec<FieldRef>),
    out_fields: Vec<FieldRef>,
) -> FnFactory {
    let names = (std::any::type_name::<F::In1>(), std::any::type_name::<F::In2>());
    let mut probe = States::default();
    f.clone().open(&mut probe);
    let states = StateDecl::keyed::<F::Key>(&probe);
    let (fi, fo) = (in_fields.clone(), out_fields.clone());
    let mut factory = FnFactory::new(
        kind,
        Arity::Two,
        Box::new(move |ctx| {
            InputLayout::of(ctx, 0, &fi.0, names.0)?;
            InputLayout::of(ctx, 1, &fi.1, names.1)?;
            Ok(stream_schema(&fo, timestamped(ctx)))
        }),
        Box::new(move |ctx, subtask, sides| {
            let layouts =
                (InputLayout::of(ctx, 0, &in_fields.0, names.0)?, InputLayout::of(ctx, 1, &in_fields.1, names.1)?);
            let mut f = f.clone();
            let mut states = States::default();
            f.open(&mut states);
            let core = KeyedCore::new(states, out_fields.clone(), timestamped(ctx), sides, subtask.max_parallelism);
            Ok(Instance::Operator(Box::new(CoProcessOp { f, key_fns: key_fns.clone(), layouts, core })))
        }),
    );
    factory.states = states;
    factory
}
