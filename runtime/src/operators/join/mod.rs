//! Joins of two inputs: `lookup_join` (a stream against a table as it is
//! when each record arrives), `interval_join` (two streams whose rows meet
//! when their event times are close enough) and `regular_join` (two streams
//! whose rows meet whenever their keys are equal).

use arrow::array::{new_null_array, Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::buffer::NullBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, Rows, SortField};

use crate::error::{OpResult, OperatorError, PlanError};
use crate::keygroup::{hash_rows, is_key_type};
use crate::operators::PlanContext;

pub mod interval;
pub mod lookup;
pub mod regular;
pub mod temporal;

pub use interval::IntervalJoinFactory;
pub use lookup::LookupJoinFactory;
pub use regular::RegularJoinFactory;
pub use temporal::TemporalJoinFactory;

/// Join keys as row bytes, their hashes, and which are null.
pub(crate) type JoinKeys = (Rows, Vec<u64>, Option<NullBuffer>);

/// Per side, its columns to row bytes and back, and its all-null row (the
/// padding of an outer join).
pub(crate) fn side_rows(inputs: &[SchemaRef; 2]) -> Result<(Vec<RowConverter>, Vec<Vec<u8>>), ArrowError> {
    let mut rows = Vec::new();
    let mut nulls = Vec::new();
    for schema in inputs {
        let conv = RowConverter::new(schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
        let null: Vec<ArrayRef> = schema.fields().iter().map(|f| new_null_array(f.data_type(), 1)).collect();
        nulls.push(conv.convert_columns(&null)?.row(0).data().to_vec());
        rows.push(conv);
    }
    Ok((rows, nulls))
}

/// A changelog batch split into its change kinds (column `op`) and its rows.
pub(crate) fn split_changes(batch: &RecordBatch, op: usize) -> OpResult<(StringArray, RecordBatch)> {
    let ops = batch
        .column(op)
        .as_string_opt::<i32>()
        .cloned()
        .ok_or_else(|| OperatorError::InvalidData("the change-kind column is not a string column".into()))?;
    let keep: Vec<usize> = (0..batch.num_columns()).filter(|&j| j != op).collect();
    Ok((ops, batch.project(&keep)?))
}

/// A joined pair of row bytes (`None`: that side is padded).
pub(crate) type Pair<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// A batch's join keys: as row bytes of the widened types, their hashes
/// (of the columns as they are, as the edge partitioned them), and which
/// rows have a null key part (they meet nobody).
pub(crate) fn key_rows(
    converter: &RowConverter,
    batch: &RecordBatch,
    key: &[usize],
    key_types: &[DataType],
) -> OpResult<JoinKeys> {
    let mut widened: Vec<ArrayRef> = Vec::new();
    let mut originals: Vec<ArrayRef> = Vec::new();
    let mut nulls: Option<NullBuffer> = None;
    for (&c, t) in key.iter().zip(key_types) {
        let a = batch.column(c);
        nulls = NullBuffer::union(nulls.as_ref(), a.logical_nulls().as_ref());
        widened.push(if a.data_type() == t { a.clone() } else { cast(a, t)? });
        originals.push(a.clone());
    }
    let rows = converter.convert_columns(&widened)?;
    let mut hashes = Vec::new();
    hash_rows(&originals, &mut hashes)?;
    Ok((rows, hashes, nulls))
}

/// The output columns of joined pairs: per side, its row bytes (`None`:
/// padded with that side's all-null row), cast where the output made a
/// padded side nullable.
pub(crate) fn pair_columns<'a>(
    rows: &[RowConverter],
    nulls: &[Vec<u8>],
    schema: &SchemaRef,
    pairs: &[Pair<'a>],
) -> OpResult<Vec<ArrayRef>> {
    let mut columns: Vec<ArrayRef> = Vec::new();
    for s in 0..2 {
        let parser = rows[s].parser();
        let side = pairs.iter().map(|p| if s == 0 { p.0 } else { p.1 });
        let parsed = side.map(|r| parser.parse(r.unwrap_or(&nulls[s])));
        for c in rows[s].convert_rows(parsed)? {
            let field = schema.field(columns.len());
            columns.push(if c.data_type() == field.data_type() { c } else { cast(&c, field.data_type())? });
        }
    }
    Ok(columns)
}

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

/// Which unmatched rows a join keeps, padded with nulls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JoinType {
    #[default]
    Inner,
    Left,
    Right,
    Full,
}

impl JoinType {
    /// Whether unmatched rows of `side` (0 left, 1 right) are emitted.
    pub(crate) fn outer(self, side: usize) -> bool {
        matches!((self, side), (JoinType::Full, _) | (JoinType::Left, 0) | (JoinType::Right, 1))
    }
}

/// The key columns of both inputs of a join, checked to be comparable, and
/// the types they are compared as.
pub(crate) fn join_keys(
    ctx: &PlanContext<'_>,
    inputs: &[SchemaRef; 2],
    left_key: &[String],
    right_key: &[String],
) -> Result<([Vec<usize>; 2], Vec<DataType>), PlanError> {
    if left_key.is_empty() || left_key.len() != right_key.len() {
        return Err(ctx
            .error("left_key and right_key need the same number (at least one) of columns")
            .field("config.right_key"));
    }
    let side_name = ["left", "right"];
    let mut keys = [Vec::new(), Vec::new()];
    let mut key_types = Vec::new();
    for (l, r) in left_key.iter().zip(right_key) {
        let mut found = [0; 2];
        for (s, name) in [l, r].into_iter().enumerate() {
            let field = format!("config.{}_key", side_name[s]);
            found[s] = inputs[s]
                .index_of(name)
                .map_err(|_| ctx.error(format!("no column `{name}` in the {} input", side_name[s])).field(field))?;
        }
        let (a, b) = (inputs[0].field(found[0]).data_type(), inputs[1].field(found[1]).data_type());
        if !is_key_type(a) || key_type(a) != key_type(b) {
            return Err(ctx
                .error(format!("left key `{l}` ({a}) and right key `{r}` ({b}) cannot be compared"))
                .field("config.right_key"));
        }
        keys[0].push(found[0]);
        keys[1].push(found[1]);
        key_types.push(key_type(a));
    }
    ctx.require_keyed_input(0, left_key, "config.left_key")?;
    ctx.require_keyed_input(1, right_key, "config.right_key")?;
    Ok((keys, key_types))
}

/// A join's output columns: the left input's, then the right's (prefixed,
/// or all renamed by `names`); a side the other side's outer join pads is
/// nullable.
pub(crate) fn output_fields(
    ctx: &PlanContext<'_>,
    inputs: &[SchemaRef; 2],
    join_type: JoinType,
    right_prefix: &str,
    names: Option<&[String]>,
) -> Result<Vec<Field>, PlanError> {
    let mut fields: Vec<Field> = Vec::new();
    for (s, schema) in inputs.iter().enumerate() {
        let padded = join_type.outer(1 - s);
        for f in schema.fields() {
            let name = if s == 1 { format!("{right_prefix}{}", f.name()) } else { f.name().clone() };
            fields.push(Field::new(name, f.data_type().clone(), f.is_nullable() || padded));
        }
    }
    if let Some(names) = names {
        if names.len() != fields.len() {
            return Err(ctx
                .error(format!(
                    "names has {} entries; the output has {} columns (the left input's, then the right's)",
                    names.len(),
                    fields.len()
                ))
                .field("config.names"));
        }
        fields = fields.into_iter().zip(names).map(|(f, n)| f.with_name(n)).collect();
    }
    let mut seen = std::collections::HashSet::new();
    for f in &fields {
        if !seen.insert(f.name().as_str()) {
            return Err(ctx
                .error(format!("column `{}` would appear twice in the output; set `right_prefix` or `names`", f.name()))
                .field("config.right_prefix"));
        }
    }
    Ok(fields)
}
