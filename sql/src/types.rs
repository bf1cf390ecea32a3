//! Column types of Flink SQL, as far as Weir's connectors need them.

use std::fmt;

use datafusion::sql::sqlparser::ast::DataType;

/// A declared column type.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlType {
    /// `STRING`, `VARCHAR(n)`, `CHAR(n)`.
    String,
    /// `BOOLEAN`.
    Boolean,
    /// `TINYINT`.
    TinyInt,
    /// `SMALLINT`.
    SmallInt,
    /// `INT`, `INTEGER`.
    Int,
    /// `BIGINT`.
    BigInt,
    /// `FLOAT`, `REAL`.
    Float,
    /// `DOUBLE`.
    Double,
    /// `TIMESTAMP(p)` and `TIMESTAMP_LTZ(p)`: event time, in milliseconds.
    Timestamp,
    /// `ROW<name type, ...>`.
    Row(Vec<(String, SqlType)>),
    /// Anything else, as written (`DECIMAL(10, 2)`, `DATE`, `ARRAY<INT>`, ...).
    Other(String),
}

impl SqlType {
    /// From sqlparser's type.
    pub fn from_ast(t: &DataType) -> Self {
        use DataType as D;
        match t {
            D::String(_) | D::Varchar(_) | D::Char(_) | D::CharVarying(_) | D::Text | D::Character(_) => {
                SqlType::String
            }
            D::Boolean | D::Bool => SqlType::Boolean,
            D::TinyInt(_) => SqlType::TinyInt,
            D::SmallInt(_) => SqlType::SmallInt,
            D::Int(_) | D::Integer(_) => SqlType::Int,
            D::BigInt(_) => SqlType::BigInt,
            D::Float(_) | D::Real => SqlType::Float,
            D::Double(_) | D::DoublePrecision => SqlType::Double,
            D::Timestamp(_, _) => SqlType::Timestamp,
            D::Custom(name, _) if name.to_string().eq_ignore_ascii_case("TIMESTAMP_LTZ") => SqlType::Timestamp,
            other => SqlType::Other(other.to_string()),
        }
    }

    /// The type name of Weir's JSON decoders (`kafka_source` schemas), if
    /// they can read it.
    pub fn json_type(&self) -> Option<String> {
        Some(match self {
            SqlType::String => "string".into(),
            SqlType::Boolean => "boolean".into(),
            SqlType::TinyInt | SqlType::SmallInt | SqlType::Int => "int32".into(),
            SqlType::BigInt => "int64".into(),
            SqlType::Float | SqlType::Double => "float64".into(),
            SqlType::Timestamp => "timestamp".into(),
            SqlType::Row(fields) => {
                let mut parts = Vec::with_capacity(fields.len());
                for (name, t) in fields {
                    parts.push(format!("{name} {}", t.json_type()?));
                }
                format!("row<{}>", parts.join(", "))
            }
            SqlType::Other(_) => return None,
        })
    }

    /// The type of field `name` of a `ROW` (exactly, or ignoring case when
    /// that finds one), with its declared name.
    pub fn field(&self, name: &str) -> Option<(&str, &SqlType)> {
        let SqlType::Row(fields) = self else { return None };
        let exact = fields.iter().find(|(n, _)| n == name);
        let found = exact.or_else(|| {
            let mut folded = fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
            match (folded.next(), folded.next()) {
                (Some(one), None) => Some(one),
                _ => None,
            }
        });
        found.map(|(n, t)| (n.as_str(), t))
    }

    /// The type of a `CAST` in DataFusion's SQL, for types a cast can reach.
    pub fn cast_target(&self) -> Option<&'static str> {
        Some(match self {
            SqlType::String => "VARCHAR",
            SqlType::Boolean => "BOOLEAN",
            SqlType::TinyInt => "TINYINT",
            SqlType::SmallInt => "SMALLINT",
            SqlType::Int => "INT",
            SqlType::BigInt => "BIGINT",
            SqlType::Float => "FLOAT",
            SqlType::Double => "DOUBLE",
            SqlType::Timestamp | SqlType::Row(_) | SqlType::Other(_) => return None,
        })
    }

    /// Whether it is a timestamp or a `ROW` holding one.
    pub fn holds_timestamp(&self) -> bool {
        match self {
            SqlType::Timestamp => true,
            SqlType::Row(fields) => fields.iter().any(|(_, t)| t.holds_timestamp()),
            _ => false,
        }
    }

    /// Whether it is an integer type.
    pub fn is_integer(&self) -> bool {
        matches!(self, SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt)
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlType::String => f.write_str("STRING"),
            SqlType::Boolean => f.write_str("BOOLEAN"),
            SqlType::TinyInt => f.write_str("TINYINT"),
            SqlType::SmallInt => f.write_str("SMALLINT"),
            SqlType::Int => f.write_str("INT"),
            SqlType::BigInt => f.write_str("BIGINT"),
            SqlType::Float => f.write_str("FLOAT"),
            SqlType::Double => f.write_str("DOUBLE"),
            SqlType::Timestamp => f.write_str("TIMESTAMP(3)"),
            SqlType::Row(fields) => {
                f.write_str("ROW<")?;
                for (i, (n, t)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{n} {t}")?;
                }
                f.write_str(">")
            }
            SqlType::Other(s) => f.write_str(s),
        }
    }
}
