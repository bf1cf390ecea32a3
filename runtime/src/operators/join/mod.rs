//! Joins of two inputs: `lookup_join` (a stream against a table as it is
//! when each record arrives) and `interval_join` (two streams whose rows
//! meet when their event times are close enough).

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};

use crate::error::{OpResult, OperatorError};

pub mod interval;
pub mod lookup;

pub use interval::IntervalJoinFactory;
pub use lookup::LookupJoinFactory;

/// Key types are compared after widening: integers as int64, strings as utf8.
pub(crate) fn key_type(dt: &DataType) -> DataType {
    if dt.is_integer() {
        DataType::Int64
    } else if matches!(dt, DataType::LargeUtf8) {
        DataType::Utf8
    } else {
        dt.clone()
    }
}

/// Arrow IPC stream bytes of `batches`.
pub(crate) fn ipc_encode(schema: &SchemaRef, batches: &[RecordBatch]) -> OpResult<Vec<u8>> {
    let mut buf = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, schema)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    drop(w);
    Ok(buf)
}

/// Batches of Arrow IPC stream bytes.
pub(crate) fn ipc_decode(bytes: &[u8]) -> OpResult<Vec<RecordBatch>> {
    let r = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    r.collect::<Result<Vec<_>, _>>().map_err(|e| OperatorError::State(format!("restored batches do not decode: {e}")))
}

/// `name: type, ...` of a schema's columns, for a state type's description.
pub(crate) fn describe_columns(s: &arrow::datatypes::Schema) -> String {
    s.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
}
