//! Stateless typed operators: `map`, `flat_map`, `filter`, and the two that
//! prepare records for what follows: event time from a field (the hidden
//! timestamp column, ahead of the built-in `watermark` operator) and keys
//! (the hidden key column a hash edge partitions on).

use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray, BooleanArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use weir_runtime::error::{OpResult, OperatorError};
use weir_runtime::operators::{Arity, Collector, Instance, Operator};

use super::process::KeyFn;
use super::{user, FnFactory};
use crate::functions::Key;
use crate::record::{stream_schema, to_batch, InputLayout, Record, KEY, TIMESTAMP};

/// A function from one record to any number of others (map and flat_map).
pub(crate) type FlatFn<T, U> = Box<dyn FnMut(T, &mut Vec<U>) -> anyhow::Result<()> + Send>;

/// `map` and `flat_map`: every output record keeps its input's event time.
pub(crate) struct FlatMapOp<T, U> {
    pub(crate) layout: InputLayout,
    pub(crate) fields: Vec<FieldRef>,
    pub(crate) schema: SchemaRef,
    pub(crate) f: FlatFn<T, U>,
}

impl<T: Record, U: Record> Operator for FlatMapOp<T, U> {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let items: Vec<T> = self.layout.records(&batch)?;
        let ts = self.layout.timestamps(&batch);
        let mut outs = Vec::with_capacity(items.len());
        let mut out_ts = Vec::new();
        for (r, item) in items.into_iter().enumerate() {
            let before = outs.len();
            (self.f)(item, &mut outs).map_err(user)?;
            if let Some(ts) = ts {
                out_ts.resize(outs.len(), ts.value(r));
            }
            debug_assert!(ts.is_none() || out_ts.len() == outs.len() && before <= outs.len());
        }
        out.emit(to_batch(&self.schema, &self.fields, &outs, ts.map(|_| out_ts))?);
        Ok(())
    }
}

/// `filter`: keeps the rows for which the predicate holds, as they are.
pub(crate) struct FilterOp<T> {
    pub(crate) layout: InputLayout,
    pub(crate) predicate: Box<dyn FnMut(&T) -> bool + Send>,
}

impl<T: Record> Operator for FilterOp<T> {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let predicate = &mut self.predicate;
        let keep: BooleanArray = self
            .layout
            .with_records(&batch, false, |items: &[T]| Ok(items.iter().map(|t| Some(predicate(t))).collect()))?;
        out.emit(arrow::compute::filter_record_batch(&batch, &keep)?);
        Ok(())
    }
}

/// The schema of `input` with `name` (of type `dt`) appended, replacing a
/// column of that name.
pub(crate) fn with_column(input: &SchemaRef, name: &str, dt: DataType) -> SchemaRef {
    let mut fields: Vec<FieldRef> = input.fields().iter().filter(|f| f.name() != name).cloned().collect();
    fields.push(Arc::new(Field::new(name, dt, false)));
    Arc::new(Schema::new(fields))
}

fn replace_column(batch: &RecordBatch, schema: &SchemaRef, name: &str, column: ArrayRef) -> OpResult<RecordBatch> {
    let mut columns: Vec<ArrayRef> = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(f, _)| f.name() != name)
        .map(|(_, c)| c.clone())
        .collect();
    columns.push(column);
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Event time of each record from a function of it, into [`TIMESTAMP`].
pub(crate) struct TimestampOp<T> {
    pub(crate) layout: InputLayout,
    pub(crate) schema: SchemaRef,
    pub(crate) f: Box<dyn Fn(&T) -> i64 + Send>,
}

impl<T: Record> Operator for TimestampOp<T> {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let f = &self.f;
        let ts: Int64Array = self.layout.with_records(&batch, true, |items: &[T]| Ok(items.iter().map(f).collect()))?;
        out.emit(replace_column(&batch, &self.schema, TIMESTAMP, Arc::new(ts))?);
        Ok(())
    }
}

/// How a key becomes the [`KEY`] column: as its own Arrow type when it is
/// one a column can be keyed by (integers, strings, booleans), else as its
/// encoded bytes.
pub(crate) fn key_type<K: Key>() -> DataType {
    match crate::record::field_of_value::<K>() {
        Ok(f) if weir_runtime::keygroup::is_key_type(f.data_type()) && !f.is_nullable() => f.data_type().clone(),
        _ => DataType::Binary,
    }
}

/// The [`KEY`] column of `keys`.
pub(crate) fn key_column<K: Key>(keys: Vec<K>, dt: &DataType) -> OpResult<ArrayRef> {
    // The common key types become their column directly.
    let keys: Box<dyn std::any::Any> = Box::new(keys);
    let keys = match keys.downcast::<Vec<i64>>() {
        Ok(k) if dt == &DataType::Int64 => return Ok(Arc::new(Int64Array::from(*k))),
        Ok(k) => k as Box<dyn std::any::Any>,
        Err(k) => k,
    };
    let keys = match keys.downcast::<Vec<String>>() {
        Ok(k) if dt == &DataType::Utf8 => return Ok(Arc::new(arrow::array::StringArray::from(*k))),
        Ok(k) => k as Box<dyn std::any::Any>,
        Err(k) => k,
    };
    let keys: Vec<K> = *keys.downcast::<Vec<K>>().expect("the keys' own type");
    if dt == &DataType::Binary {
        let bytes: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| crate::state::store_encode(k).map_err(|e| OperatorError::User(e.to_string())))
            .collect::<OpResult<_>>()?;
        return Ok(Arc::new(BinaryArray::from_iter_values(bytes.iter())));
    }
    let field = Arc::new(Field::new("item", dt.clone(), false));
    serde_arrow::to_arrow(&[field], serde_arrow::utils::Items(&keys))
        .map_err(|e| OperatorError::User(format!("a key does not encode: {e}")))?
        .into_iter()
        .next()
        .ok_or_else(|| OperatorError::User("a key does not encode".into()))
}

/// The key of each record from a function of it, into [`KEY`].
pub(crate) struct KeyOp<T, K> {
    pub(crate) layout: InputLayout,
    pub(crate) schema: SchemaRef,
    pub(crate) key_type: DataType,
    pub(crate) f: KeyFn<T, K>,
}

impl<T: Record, K: Key> Operator for KeyOp<T, K> {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let (f, key_type) = (&self.f, &self.key_type);
        let column = self.layout.with_records(&batch, true, |items: &[T]| {
            let keys: Vec<K> = items.iter().map(|t| f(t)).collect();
            key_column(keys, key_type)
        })?;
        out.emit(replace_column(&batch, &self.schema, KEY, column)?);
        Ok(())
    }
}

/// The schema of a stream of `fields` with the hidden columns of `input`.
pub(crate) fn typed_output(fields: &[FieldRef], input: &SchemaRef) -> SchemaRef {
    stream_schema(fields, input.index_of(TIMESTAMP).is_ok())
}

/// The factory of `map`, `try_map` and `flat_map`.
pub(crate) fn flat_map_factory<T: Record, U: Record>(
    kind: String,
    in_fields: Vec<FieldRef>,
    out_fields: Vec<FieldRef>,
    f: impl FnMut(T, &mut Vec<U>) -> anyhow::Result<()> + Clone + Send + Sync + 'static,
) -> FnFactory {
    let type_name = std::any::type_name::<T>();
    let (fi, fo) = (in_fields.clone(), out_fields.clone());
    FnFactory::new(
        kind,
        Arity::One,
        Box::new(move |ctx| {
            InputLayout::of(ctx, 0, &fi, type_name)?;
            Ok(typed_output(&fo, &ctx.inputs[0]))
        }),
        Box::new(move |ctx, _, _| {
            let layout = InputLayout::of(ctx, 0, &in_fields, type_name)?;
            let schema = typed_output(&out_fields, &ctx.inputs[0]);
            Ok(Instance::Operator(Box::new(FlatMapOp {
                layout,
                fields: out_fields.clone(),
                schema,
                f: Box::new(f.clone()),
            })))
        }),
    )
}

/// The factory of `filter`.
pub(crate) fn filter_factory<T: Record>(
    kind: String,
    fields: Vec<FieldRef>,
    predicate: impl FnMut(&T) -> bool + Clone + Send + Sync + 'static,
) -> FnFactory {
    let type_name = std::any::type_name::<T>();
    let f2 = fields.clone();
    FnFactory::new(
        kind,
        Arity::One,
        Box::new(move |ctx| {
            InputLayout::of(ctx, 0, &f2, type_name)?;
            Ok(ctx.inputs[0].clone())
        }),
        Box::new(move |ctx, _, _| {
            let layout = InputLayout::of(ctx, 0, &fields, type_name)?;
            Ok(Instance::Operator(Box::new(FilterOp { layout, predicate: Box::new(predicate.clone()) })))
        }),
    )
}

/// The factory of the operator that gives records their event time.
pub(crate) fn timestamp_factory<T: Record>(
    kind: String,
    fields: Vec<FieldRef>,
    f: Arc<dyn Fn(&T) -> i64 + Send + Sync>,
) -> FnFactory {
    let type_name = std::any::type_name::<T>();
    let f2 = fields.clone();
    FnFactory::new(
        kind,
        Arity::One,
        Box::new(move |ctx| {
            InputLayout::of(ctx, 0, &f2, type_name)?;
            Ok(with_column(&ctx.inputs[0], TIMESTAMP, DataType::Int64))
        }),
        Box::new(move |ctx, _, _| {
            let layout = InputLayout::of(ctx, 0, &fields, type_name)?;
            let schema = with_column(&ctx.inputs[0], TIMESTAMP, DataType::Int64);
            let f = f.clone();
            Ok(Instance::Operator(Box::new(TimestampOp { layout, schema, f: Box::new(move |t| f(t)) })))
        }),
    )
}

/// The factory of the operator that gives records their key.
pub(crate) fn key_factory<T: Record, K: Key>(kind: String, fields: Vec<FieldRef>, f: KeyFn<T, K>) -> FnFactory {
    let type_name = std::any::type_name::<T>();
    let f2 = fields.clone();
    let dt = key_type::<K>();
    let dt2 = dt.clone();
    FnFactory::new(
        kind,
        Arity::One,
        Box::new(move |ctx| {
            InputLayout::of(ctx, 0, &f2, type_name)?;
            Ok(with_column(&ctx.inputs[0], KEY, dt2.clone()))
        }),
        Box::new(move |ctx, _, _| {
            let layout = InputLayout::of(ctx, 0, &fields, type_name)?;
            let schema = with_column(&ctx.inputs[0], KEY, dt.clone());
            Ok(Instance::Operator(Box::new(KeyOp { layout, schema, key_type: dt.clone(), f: f.clone() })))
        }),
    )
}
