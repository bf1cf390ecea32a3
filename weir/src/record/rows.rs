//! The fast way from Arrow rows to records: a `serde` deserializer that
//! hands a struct its fields in order (`visit_seq`), straight from typed
//! columns, for records whose fields are numbers, booleans, strings and
//! bytes (optional or not). Field names are checked once per batch, not
//! per row, and strings are not validated again. Other records (nested
//! structs, lists, maps, enums, hand-written `Deserialize`s that want a
//! map) go through `serde_arrow`.

use std::cell::Cell;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, LargeBinaryArray, LargeStringArray, PrimitiveArray,
    RecordBatch, StringArray,
};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type,
    UInt8Type,
};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, SeqAccess, Visitor};

/// Whether the fast path reads columns of this type.
pub(super) fn readable(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Boolean
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Binary
            | DataType::LargeBinary
    )
}

/// One column, typed.
enum Column<'a> {
    I8(&'a PrimitiveArray<Int8Type>),
    I16(&'a PrimitiveArray<Int16Type>),
    I32(&'a PrimitiveArray<Int32Type>),
    I64(&'a PrimitiveArray<Int64Type>),
    U8(&'a PrimitiveArray<UInt8Type>),
    U16(&'a PrimitiveArray<UInt16Type>),
    U32(&'a PrimitiveArray<UInt32Type>),
    U64(&'a PrimitiveArray<UInt64Type>),
    F32(&'a PrimitiveArray<Float32Type>),
    F64(&'a PrimitiveArray<Float64Type>),
    Bool(&'a BooleanArray),
    Str(&'a StringArray),
    LargeStr(&'a LargeStringArray),
    Bytes(&'a BinaryArray),
    LargeBytes(&'a LargeBinaryArray),
}

impl<'a> Column<'a> {
    fn of(array: &'a ArrayRef) -> Option<Self> {
        Some(match array.data_type() {
            DataType::Int8 => Column::I8(array.as_primitive()),
            DataType::Int16 => Column::I16(array.as_primitive()),
            DataType::Int32 => Column::I32(array.as_primitive()),
            DataType::Int64 => Column::I64(array.as_primitive()),
            DataType::UInt8 => Column::U8(array.as_primitive()),
            DataType::UInt16 => Column::U16(array.as_primitive()),
            DataType::UInt32 => Column::U32(array.as_primitive()),
            DataType::UInt64 => Column::U64(array.as_primitive()),
            DataType::Float32 => Column::F32(array.as_primitive()),
            DataType::Float64 => Column::F64(array.as_primitive()),
            DataType::Boolean => Column::Bool(array.as_boolean()),
            DataType::Utf8 => Column::Str(array.as_string()),
            DataType::LargeUtf8 => Column::LargeStr(array.as_string()),
            DataType::Binary => Column::Bytes(array.as_binary()),
            DataType::LargeBinary => Column::LargeBytes(array.as_binary()),
            _ => return None,
        })
    }

    fn visit<'de, V: Visitor<'de>>(&self, row: usize, visitor: V) -> Result<V::Value, Error> {
        match self {
            Column::I8(a) => visitor.visit_i8(a.value(row)),
            Column::I16(a) => visitor.visit_i16(a.value(row)),
            Column::I32(a) => visitor.visit_i32(a.value(row)),
            Column::I64(a) => visitor.visit_i64(a.value(row)),
            Column::U8(a) => visitor.visit_u8(a.value(row)),
            Column::U16(a) => visitor.visit_u16(a.value(row)),
            Column::U32(a) => visitor.visit_u32(a.value(row)),
            Column::U64(a) => visitor.visit_u64(a.value(row)),
            Column::F32(a) => visitor.visit_f32(a.value(row)),
            Column::F64(a) => visitor.visit_f64(a.value(row)),
            Column::Bool(a) => visitor.visit_bool(a.value(row)),
            Column::Str(a) => visitor.visit_str(a.value(row)),
            Column::LargeStr(a) => visitor.visit_str(a.value(row)),
            Column::Bytes(a) => visitor.visit_bytes(a.value(row)),
            Column::LargeBytes(a) => visitor.visit_bytes(a.value(row)),
        }
    }

    fn is_null(&self, row: usize) -> bool {
        let array: &dyn Array = match self {
            Column::I8(a) => *a,
            Column::I16(a) => *a,
            Column::I32(a) => *a,
            Column::I64(a) => *a,
            Column::U8(a) => *a,
            Column::U16(a) => *a,
            Column::U32(a) => *a,
            Column::U64(a) => *a,
            Column::F32(a) => *a,
            Column::F64(a) => *a,
            Column::Bool(a) => *a,
            Column::Str(a) => *a,
            Column::LargeStr(a) => *a,
            Column::Bytes(a) => *a,
            Column::LargeBytes(a) => *a,
        };
        array.is_null(row)
    }
}

/// Why the fast path did not read a row.
#[derive(Debug)]
pub(super) struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// The columns of a batch, in the order of a record type's fields.
struct Columns<'a> {
    columns: Vec<Column<'a>>,
    /// Which of them hold nulls.
    nullable: Vec<bool>,
    names: Vec<&'a str>,
    /// The field list a struct asked for last, once checked against `names`.
    checked: Cell<Option<*const &'static str>>,
}

/// Reads every row of `batch` (its columns are a record type's fields, in
/// order) as a `T` into `out` (empty); `None` when the fast path cannot
/// read this batch or this type (the first row fails: `out` is left
/// empty), and the caller takes the general one.
pub(super) fn read_into<T: DeserializeOwned>(batch: &RecordBatch, out: &mut Vec<T>) -> Option<Result<(), Error>> {
    let columns: Option<Vec<Column<'_>>> = batch.columns().iter().map(Column::of).collect();
    let columns = Columns {
        columns: columns?,
        nullable: batch.columns().iter().map(|c| c.null_count() > 0).collect(),
        names: batch.schema_ref().fields().iter().map(|f| f.name().as_str()).collect(),
        checked: Cell::new(None),
    };
    out.reserve(batch.num_rows());
    for row in 0..batch.num_rows() {
        match T::deserialize(Row { columns: &columns, row }) {
            Ok(t) => out.push(t),
            Err(_) if row == 0 => return None,
            Err(e) => {
                out.clear();
                return Some(Err(e));
            }
        }
    }
    Some(Ok(()))
}

/// One row, as a struct.
struct Row<'c, 'a> {
    columns: &'c Columns<'a>,
    row: usize,
}

impl<'de> Deserializer<'de> for Row<'_, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        Err(Error("a record is read as a struct with named fields".into()))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let cols = self.columns;
        if cols.checked.get() != Some(fields.as_ptr()) {
            if fields.len() != cols.names.len() || fields.iter().zip(&cols.names).any(|(f, n)| f != n) {
                return Err(Error("the record's fields are not the batch's columns".into()));
            }
            cols.checked.set(Some(fields.as_ptr()));
        }
        visitor.visit_seq(Fields { columns: cols, row: self.row, next: 0 })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// A row's fields, in order.
struct Fields<'c, 'a> {
    columns: &'c Columns<'a>,
    row: usize,
    next: usize,
}

impl<'de> SeqAccess<'de> for Fields<'_, '_> {
    type Error = Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, Error> {
        let i = self.next;
        if i == self.columns.columns.len() {
            return Ok(None);
        }
        self.next += 1;
        let null = self.columns.nullable[i] && self.columns.columns[i].is_null(self.row);
        seed.deserialize(Value { column: &self.columns.columns[i], name: self.columns.names[i], row: self.row, null })
            .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.columns.columns.len() - self.next)
    }
}

/// One field's value.
struct Value<'c, 'a> {
    column: &'c Column<'a>,
    name: &'c str,
    row: usize,
    null: bool,
}

impl<'de> Deserializer<'de> for Value<'_, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.null {
            return Err(Error(format!("field `{}` is null and its type is not an Option", self.name)));
        }
        self.column.visit(self.row, visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.null {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::record::fields_of;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Bid {
        auction: i64,
        #[serde(rename = "who")]
        bidder: u32,
        price: f64,
        channel: String,
        note: Option<String>,
        ok: bool,
        raw: Option<serde_bytes_like::Bytes>,
    }

    mod serde_bytes_like {
        use serde::{Deserialize, Serialize};

        /// Bytes as a newtype over a byte vector read with `visit_bytes`.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Bytes(pub Vec<u8>);

        impl Serialize for Bytes {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for Bytes {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Bytes;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                        Ok(Bytes(v.to_vec()))
                    }
                }
                d.deserialize_bytes(V)
            }
        }
    }

    fn bids() -> Vec<Bid> {
        vec![
            Bid {
                auction: 1,
                bidder: 7,
                price: 2.5,
                channel: "apple".into(),
                note: None,
                ok: true,
                raw: Some(serde_bytes_like::Bytes(vec![1, 2])),
            },
            Bid {
                auction: -3,
                bidder: 0,
                price: 0.0,
                channel: "".into(),
                note: Some("n".into()),
                ok: false,
                raw: None,
            },
        ]
    }

    fn read<T: DeserializeOwned>(batch: &RecordBatch) -> Option<Result<Vec<T>, Error>> {
        let mut out = Vec::new();
        read_into(batch, &mut out).map(|r| r.map(|()| out))
    }

    fn batch_of<T: Serialize + crate::record::Record>(items: &[T]) -> RecordBatch {
        serde_arrow::to_record_batch(&fields_of::<T>().unwrap(), &items).unwrap()
    }

    #[test]
    fn flat_records_are_read_in_field_order_with_their_nulls() {
        let batch = batch_of(&bids());
        assert!(batch.schema().fields().iter().all(|f| readable(f.data_type())), "{:?}", batch.schema());
        let read: Vec<Bid> = read(&batch).expect("the fast path reads flat records").unwrap();
        assert_eq!(read, bids());
    }

    #[test]
    fn columns_in_another_order_than_the_fields_are_left_to_the_general_path() {
        let batch = batch_of(&bids());
        let reordered = batch.project(&[1, 0, 2, 3, 4, 5, 6]).unwrap();
        assert!(read::<Bid>(&reordered).is_none());
    }

    #[test]
    fn types_that_want_a_map_are_left_to_the_general_path() {
        /// Reads itself from a map only, as some hand-written types do.
        #[derive(Debug, Serialize)]
        struct MapOnly {
            a: i64,
        }
        impl<'de> Deserialize<'de> for MapOnly {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = MapOnly;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a map")
                    }
                    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<MapOnly, M::Error> {
                        let mut a = None;
                        while let Some((k, v)) = m.next_entry::<String, i64>()? {
                            if k == "a" {
                                a = Some(v);
                            }
                        }
                        Ok(MapOnly { a: a.ok_or_else(|| serde::de::Error::missing_field("a"))? })
                    }
                }
                d.deserialize_struct("MapOnly", &["a"], V)
            }
        }
        let schema = Arc::new(Schema::new(vec![Field::new("a", arrow::datatypes::DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![4, 5]))]).unwrap();
        assert!(read::<MapOnly>(&batch).is_none());
        let general: Vec<MapOnly> = serde_arrow::from_record_batch(&batch).unwrap();
        assert_eq!(general.iter().map(|m| m.a).collect::<Vec<_>>(), [4, 5]);
    }

    #[test]
    fn a_null_in_a_field_that_is_not_optional_is_an_error_naming_it() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Named {
            name: String,
        }
        let schema = Arc::new(Schema::new(vec![Field::new("name", arrow::datatypes::DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![Some("a"), None]))]).unwrap();
        let e = read::<Named>(&batch).expect("the first row reads").unwrap_err();
        assert!(e.to_string().contains("`name` is null"), "{e}");
    }
}
