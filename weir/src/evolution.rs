//! State type evolution: whether a savepoint's state, written with one
//! version of a type, can be read by the type a new version of the job
//! declares.
//!
//! Every typed state records the shape of its type (field names, types,
//! which may be absent) in the savepoint. On restore, a value of the
//! recorded shape is built — every field present, with a placeholder value
//! (absent where the shape allows it) — and read as the new type: what
//! serde accepts there, it accepts in the state. So a struct that gained
//! an `Option` field or a field with `#[serde(default)]`, or lost a field,
//! restores; one whose field changed type, or that gained a required
//! field, is refused at submission naming the state and both types.

use arrow::datatypes::{DataType, FieldRef};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::record::tracing;

/// The shape of a type, as savepoints record it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Shape {
    Null,
    Bool,
    Int,
    Float,
    String,
    Bytes,
    List {
        item: Box<Shape>,
    },
    Map {
        key: Box<Shape>,
        value: Box<Shape>,
    },
    Struct {
        fields: Vec<Member>,
    },
    Union {
        variants: Vec<Member>,
    },
    /// A type whose shape is not traced: only the same Rust type reads it.
    Opaque {
        rust: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Member {
    name: String,
    nullable: bool,
    shape: Shape,
}

fn shape(dt: &DataType) -> Shape {
    match dt {
        DataType::Null => Shape::Null,
        DataType::Boolean => Shape::Bool,
        d if d.is_integer() => Shape::Int,
        d if d.is_floating() => Shape::Float,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Shape::String,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => Shape::Bytes,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            Shape::List { item: Box::new(shape(f.data_type())) }
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => {
                Shape::Map { key: Box::new(shape(kv[0].data_type())), value: Box::new(shape(kv[1].data_type())) }
            }
            other => Shape::Opaque { rust: other.to_string() },
        },
        DataType::Struct(fields) => Shape::Struct { fields: fields.iter().map(member).collect() },
        DataType::Union(fields, _) => Shape::Union { variants: fields.iter().map(|(_, f)| member(f)).collect() },
        DataType::Dictionary(_, v) => shape(v),
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _) | DataType::Time32(_) | DataType::Time64(_) => {
            Shape::String
        }
        other => Shape::Opaque { rust: other.to_string() },
    }
}

fn member(f: &FieldRef) -> Member {
    Member { name: f.name().clone(), nullable: f.is_nullable(), shape: shape(f.data_type()) }
}

fn shape_of<V: Serialize + DeserializeOwned>() -> Shape {
    let opts = tracing().map_as_struct(false);
    match Vec::<FieldRef>::from_type::<serde_arrow::utils::Item<V>>(opts) {
        Ok(fields) if fields.len() == 1 => {
            let m = member(&fields[0]);
            if m.nullable {
                // An Option<T> at the top: null is a value it may hold.
                Shape::Union { variants: vec![Member { name: "some".into(), nullable: true, shape: m.shape }] }
            } else {
                m.shape
            }
        }
        _ => Shape::Opaque { rust: std::any::type_name::<V>().to_string() },
    }
}

use serde_arrow::schema::SchemaLike;

/// The description of a state of `kind` (value, list) holding `V`.
pub(crate) fn describe<V: Serialize + DeserializeOwned>(kind: &str) -> String {
    json!({"state": kind, "type": shape_of::<V>()}).to_string()
}

/// The description of a map state from `K` to `V`.
pub(crate) fn describe_map<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>() -> String {
    json!({"state": "map", "key": shape_of::<K>(), "type": shape_of::<V>()}).to_string()
}

/// The description of a window state of `window` (its assigner) whose
/// entries are `V`.
pub(crate) fn describe_window<V: Serialize + DeserializeOwned>(window: &str) -> String {
    json!({"state": "window", "window": window, "type": shape_of::<V>()}).to_string()
}

/// Whether a window state of `window` with entries `V` reads state recorded as `recorded`.
pub(crate) fn reads_window<V: Serialize + DeserializeOwned>(window: &str, recorded: &str) -> Result<(), String> {
    let doc = parse(recorded)?;
    let was = doc.get("window").and_then(Value::as_str).unwrap_or_default();
    if was != window {
        return Err(format!("the windows were {was} and are {window} now"));
    }
    check::<V>(&field(&doc, "type")?, &shape_of::<V>())
}

/// A JSON value of shape `s`: every field present, with a placeholder.
fn sample(s: &Shape) -> Value {
    match s {
        Shape::Null => Value::Null,
        Shape::Bool => json!(false),
        Shape::Int => json!(0),
        Shape::Float => json!(0.5),
        Shape::String => json!(""),
        Shape::Bytes => json!([]),
        Shape::List { item } => json!([sample(item)]),
        Shape::Map { .. } => json!({}),
        Shape::Struct { fields } => Value::Object(
            fields.iter().map(|m| (m.name.clone(), if m.nullable { Value::Null } else { sample(&m.shape) })).collect(),
        ),
        Shape::Union { variants } => match variants.first() {
            Some(v) if v.name == "some" => sample(&v.shape),
            Some(v) => json!({ v.name.clone(): sample(&v.shape) }),
            None => Value::Null,
        },
        Shape::Opaque { .. } => Value::Null,
    }
}

fn check<V: DeserializeOwned>(recorded: &Shape, now: &Shape) -> Result<(), String> {
    if let Shape::Opaque { rust } = recorded {
        return match now {
            Shape::Opaque { rust: r } if r == rust => Ok(()),
            _ => Err(format!("the recorded type {rust} is not traced, so only the same type reads it")),
        };
    }
    // A value that may be absent is tried absent and present.
    let mut samples = vec![sample(recorded)];
    if let Shape::Union { variants } = recorded {
        if variants.first().is_some_and(|v| v.name == "some") {
            samples.push(Value::Null);
        }
    }
    for s in samples {
        serde_json::from_value::<V>(s).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn parse(recorded: &str) -> Result<Value, String> {
    serde_json::from_str(recorded).map_err(|_| format!("`{recorded}` is not a typed state's description"))
}

fn field(doc: &Value, name: &str) -> Result<Shape, String> {
    serde_json::from_value(doc.get(name).cloned().unwrap_or(Value::Null)).map_err(|e| e.to_string())
}

/// Whether a value or list state declared with `V` reads state recorded as `recorded`.
pub(crate) fn reads<V: Serialize + DeserializeOwned>(recorded: &str) -> Result<(), String> {
    let doc = parse(recorded)?;
    check::<V>(&field(&doc, "type")?, &shape_of::<V>())
}

/// Whether a map state declared from `K` to `V` reads state recorded as `recorded`.
pub(crate) fn reads_map<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>(
    recorded: &str,
) -> Result<(), String> {
    let doc = parse(recorded)?;
    check::<K>(&field(&doc, "key")?, &shape_of::<K>()).map_err(|e| format!("its keys: {e}"))?;
    check::<V>(&field(&doc, "type")?, &shape_of::<V>())
}

#[cfg(test)]
mod tests {
    use super::*;

    mod v1 {
        use serde::{Deserialize, Serialize};
        #[derive(Serialize, Deserialize)]
        pub struct Points {
            pub total: f64,
            pub points: i64,
        }
    }

    #[derive(Serialize, Deserialize)]
    struct GainedOptional {
        total: f64,
        points: i64,
        tier: Option<String>,
    }

    #[derive(Serialize, Deserialize)]
    struct GainedDefault {
        total: f64,
        points: i64,
        #[serde(default)]
        visits: u32,
    }

    #[derive(Serialize, Deserialize)]
    struct LostOne {
        points: i64,
    }

    #[derive(Serialize, Deserialize)]
    struct GainedRequired {
        total: f64,
        points: i64,
        tier: String,
    }

    #[derive(Serialize, Deserialize)]
    struct Retyped {
        total: f64,
        points: String,
    }

    #[test]
    fn compatible_evolutions_restore_and_real_changes_are_refused() {
        let recorded = describe::<v1::Points>("value");
        assert!(reads::<v1::Points>(&recorded).is_ok());
        assert!(reads::<GainedOptional>(&recorded).is_ok());
        assert!(reads::<GainedDefault>(&recorded).is_ok());
        assert!(reads::<LostOne>(&recorded).is_ok());
        let e = reads::<GainedRequired>(&recorded).unwrap_err();
        assert!(e.contains("missing field `tier`"), "{e}");
        let e = reads::<Retyped>(&recorded).unwrap_err();
        assert!(e.contains("expected a string"), "{e}");
        // Values that may be absent cannot become ones that may not.
        let optional = describe::<Option<i64>>("value");
        assert!(reads::<Option<i64>>(&optional).is_ok());
        assert!(reads::<i64>(&optional).is_err());
        assert!(reads::<Option<i64>>(&describe::<i64>("value")).is_ok());
    }

    #[test]
    fn maps_check_their_keys_and_values() {
        let recorded = describe_map::<String, v1::Points>();
        assert!(reads_map::<String, GainedOptional>(&recorded).is_ok());
        let e = reads_map::<i64, v1::Points>(&recorded).unwrap_err();
        assert!(e.starts_with("its keys:"), "{e}");
        assert!(reads::<i64>("not json").unwrap_err().contains("not a typed state"));
    }
}
