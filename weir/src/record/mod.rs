//! Users' types as Arrow rows: every typed stream carries batches whose
//! columns are the fields of its record type (traced from its serde
//! implementation), plus hidden columns the runtime needs: the record's
//! event time ([`TIMESTAMP`]) once timestamps are assigned, and its key
//! ([`KEY`]) on the way into a keyed operator.

mod memo;
mod rows;

use std::cell::Cell;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_arrow::schema::{SchemaLike, TracingOptions};
use weir_runtime::error::{OpResult, OperatorError};
use weir_runtime::operators::PlanContext;
use weir_runtime::PlanError;

/// A type a stream can carry: any serde type with named fields.
pub trait Record: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> Record for T {}

/// Hidden column holding a record's event time (milliseconds since the epoch).
pub const TIMESTAMP: &str = "__weir_ts";

/// Hidden column holding a record's key on the way into a keyed operator.
pub const KEY: &str = "__weir_key";

/// How record types become Arrow types: `Utf8` strings and small lists, as
/// the built-in operators and connectors use them.
pub(crate) fn tracing() -> TracingOptions {
    TracingOptions::default()
        .strings_as_large_utf8(false)
        .sequence_as_large_list(false)
        .bytes_as_large_binary(false)
        .allow_null_fields(true)
}

/// The Arrow fields of record type `T`.
pub fn fields_of<T: Record>() -> Result<Vec<FieldRef>, PlanError> {
    Vec::<FieldRef>::from_type::<T>(tracing()).map_err(|e| {
        PlanError::job(format!(
            "type {} cannot be a record: {e} (a record is a struct with named fields of serde types)",
            std::any::type_name::<T>()
        ))
    })
}

/// The Arrow type of a single value of type `V` (keys, state values).
pub(crate) fn field_of_value<V: Serialize + DeserializeOwned>() -> Result<FieldRef, String> {
    let fields = Vec::<FieldRef>::from_type::<serde_arrow::utils::Item<V>>(tracing()).map_err(|e| e.to_string())?;
    fields.into_iter().next().ok_or_else(|| "no field".to_string())
}

/// The schema of a stream of `fields`, with the hidden timestamp column if `timestamped`.
pub(crate) fn stream_schema(fields: &[FieldRef], timestamped: bool) -> SchemaRef {
    let mut all: Vec<FieldRef> = fields.to_vec();
    if timestamped {
        all.push(Arc::new(Field::new(TIMESTAMP, DataType::Int64, false)));
    }
    Arc::new(Schema::new(all))
}

/// Where a record type's fields and the hidden columns are in an input batch.
#[derive(Debug, Clone)]
pub(crate) struct InputLayout {
    /// Indices of the record's fields.
    pub(crate) fields: Vec<usize>,
    /// Index of [`TIMESTAMP`], if the stream carries event time.
    pub(crate) timestamp: Option<usize>,
    /// Index of [`KEY`], if the stream is keyed.
    pub(crate) key: Option<usize>,
    /// Whether records are read by the fast path ([`rows`]): every field
    /// is of a type it reads, and the record type has not refused it.
    pub(crate) fast: Cell<bool>,
}

fn compatible(want: &DataType, got: &DataType) -> bool {
    match (want, got) {
        (DataType::Utf8 | DataType::LargeUtf8, DataType::Utf8 | DataType::LargeUtf8) => true,
        (DataType::Binary | DataType::LargeBinary, DataType::Binary | DataType::LargeBinary) => true,
        (DataType::List(a) | DataType::LargeList(a), DataType::List(b) | DataType::LargeList(b)) => {
            compatible(a.data_type(), b.data_type())
        }
        (DataType::Struct(a), DataType::Struct(b)) => a
            .iter()
            .all(|f| b.iter().find(|g| g.name() == f.name()).is_some_and(|g| compatible(f.data_type(), g.data_type()))),
        (want, got) => want == got,
    }
}

impl InputLayout {
    /// Checks that input `input` of the operator being planned holds the
    /// fields of a record type, and finds them.
    pub(crate) fn of(
        ctx: &PlanContext<'_>,
        input: usize,
        fields: &[FieldRef],
        type_name: &str,
    ) -> Result<Self, PlanError> {
        let schema = &ctx.inputs[input];
        let mut at = Vec::with_capacity(fields.len());
        for f in fields {
            let Ok(i) = schema.index_of(f.name()) else {
                return Err(ctx.error(format!(
                    "its input has no column `{}` for field `{}` of {type_name} (columns: {})",
                    f.name(),
                    f.name(),
                    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                )));
            };
            let got = schema.field(i).data_type();
            if !compatible(f.data_type(), got) {
                return Err(ctx.error(format!(
                    "field `{}` of {type_name} is {} but the input column is {got}",
                    f.name(),
                    f.data_type()
                )));
            }
            at.push(i);
        }
        let fast = at.iter().all(|&i| rows::readable(schema.field(i).data_type()));
        Ok(Self {
            fields: at,
            timestamp: schema.index_of(TIMESTAMP).ok(),
            key: schema.index_of(KEY).ok(),
            fast: Cell::new(fast),
        })
    }

    /// The records of a batch, to own.
    pub(crate) fn records<T: Record>(&self, batch: &RecordBatch) -> OpResult<Vec<T>> {
        let view = batch.project(&self.fields)?;
        let (mut records, hit) = memo::take::<T>(&view);
        if !hit {
            self.decode(&view, &mut records)?;
        }
        Ok(records)
    }

    /// Runs `f` over the records of a batch. With `pass_on`, the operator
    /// passes the batch's record columns on untouched and the next typed
    /// operator of its chain reads the records without decoding them again
    /// (see [`memo`]).
    pub(crate) fn with_records<T: Record, R>(
        &self,
        batch: &RecordBatch,
        pass_on: bool,
        f: impl FnOnce(&[T]) -> OpResult<R>,
    ) -> OpResult<R> {
        let view = batch.project(&self.fields)?;
        let (mut records, hit) = memo::take::<T>(&view);
        if !hit {
            self.decode(&view, &mut records)?;
        }
        let result = f(&records);
        memo::put(&view, records, pass_on && result.is_ok());
        result
    }

    /// Decodes `view` (the record's columns) into `records` (empty).
    fn decode<T: Record>(&self, view: &RecordBatch, records: &mut Vec<T>) -> OpResult<()> {
        if self.fast.get() {
            match rows::read_into::<T>(view, records) {
                Some(Ok(())) => return Ok(()),
                Some(Err(e)) => return Err(OperatorError::InvalidData(format!("reading records: {e}"))),
                None => self.fast.set(false),
            }
        }
        *records = serde_arrow::from_record_batch(view)
            .map_err(|e| OperatorError::InvalidData(format!("reading records: {e}")))?;
        Ok(())
    }

    /// The event times of a batch's rows, if the stream carries them.
    pub(crate) fn timestamps<'a>(&self, batch: &'a RecordBatch) -> Option<&'a Int64Array> {
        self.timestamp.and_then(|i| batch.column(i).as_any().downcast_ref::<Int64Array>())
    }
}

/// A batch of `items` with `fields`, and their event times if given.
pub(crate) fn to_batch<T: Serialize>(
    schema: &SchemaRef,
    fields: &[FieldRef],
    items: &[T],
    timestamps: Option<Vec<i64>>,
) -> OpResult<RecordBatch> {
    let batch = serde_arrow::to_record_batch(fields, &items)
        .map_err(|e| OperatorError::InvalidData(format!("writing records: {e}")))?;
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    if let Some(ts) = timestamps {
        columns.push(Arc::new(Int64Array::from(ts)));
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Purchase {
        customer: String,
        total: f64,
        items: Vec<String>,
        note: Option<String>,
    }

    #[test]
    fn records_round_trip_through_batches_with_their_event_time() {
        let fields = fields_of::<Purchase>().unwrap();
        let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["customer", "total", "items", "note"]);
        assert_eq!(fields[0].data_type(), &DataType::Utf8);
        let schema = stream_schema(&fields, true);
        let items = vec![
            Purchase { customer: "a".into(), total: 1.5, items: vec!["x".into()], note: None },
            Purchase { customer: "b".into(), total: 2.0, items: vec![], note: Some("gift".into()) },
        ];
        let batch = to_batch(&schema, &fields, &items, Some(vec![10, 20])).unwrap();
        let layout = InputLayout { fields: vec![0, 1, 2, 3], timestamp: Some(4), key: None, fast: Cell::new(false) };
        assert_eq!(layout.records::<Purchase>(&batch).unwrap(), items);
        assert_eq!(layout.timestamps(&batch).unwrap().values(), &[10, 20]);
    }

    #[test]
    fn types_without_named_fields_are_refused_with_their_name() {
        let e = fields_of::<i64>().unwrap_err();
        assert!(e.message.contains("i64"), "{e}");
        assert_eq!(field_of_value::<i64>().unwrap().data_type(), &DataType::Int64);
    }
}
