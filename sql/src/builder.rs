//! The job graph a script compiles to, built operator by operator, and the
//! relations (an operator's output with its columns) queries pass along.

use std::collections::HashSet;

use serde_json::Value;
use weir_runtime::graph::{EdgeSpec, OperatorSpec, Partitioning};

use crate::types::SqlType;

/// A column of a relation; its type when the planner knows it (declared
/// columns, window bounds, counts), `None` for computed expressions, whose
/// type the runtime derives when the job is planned.
#[derive(Debug, Clone, PartialEq)]
pub struct Col {
    /// Its name.
    pub name: String,
    /// Its type, if known here.
    pub ty: Option<SqlType>,
}

impl Col {
    /// A column of a known type.
    pub fn typed(name: impl Into<String>, ty: SqlType) -> Self {
        Self { name: name.into(), ty: Some(ty) }
    }
}

/// The output of an operator, as a query sees it.
#[derive(Debug, Clone)]
pub struct Rel {
    /// The operator producing it.
    pub uid: String,
    /// Its columns, in order.
    pub columns: Vec<Col>,
    /// The event-time attribute, if it has one.
    pub rowtime: Option<String>,
    /// The processing-time attribute, if it has one: a `PROCTIME()` column.
    pub proctime: Option<String>,
    /// The table it reads, for the uids of operators over it.
    pub origin: String,
    /// In the `FROM` of a join: each input's name (its alias, or the
    /// table's name) and its columns as `(name in the input, name here)`,
    /// for qualified references such as `b.id`. Empty elsewhere.
    pub qualifiers: Vec<Qualifier>,
    /// Whether it is updating: a changelog whose rows carry their change
    /// kind (`+I`, `-U`, `+U`, `-D`) in the hidden column [`OP`], which is
    /// not in `columns`.
    pub changelog: bool,
    /// The window bounds it carries: the rows of a window table-valued
    /// function, or of a window aggregation that selects both bounds.
    /// Window aggregations, window Top-N and window joins group, partition
    /// and join by them.
    pub window: Option<WindowBounds>,
}

/// The window bounds of a relation's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowBounds {
    /// The `window_start` column's name.
    pub start: String,
    /// The `window_end` column's name.
    pub end: String,
    /// The window operator's spec of the table function the rows come
    /// straight from (none after a window aggregation).
    pub spec: Option<Value>,
}

/// The change-kind column of an updating relation.
pub const OP: &str = "__op";

/// The columns of one input of a join, under its alias.
#[derive(Debug, Clone)]
pub struct Qualifier {
    /// The alias (or table name).
    pub name: String,
    /// `(column in the input, column of the joined relation)`.
    pub columns: Vec<(String, String)>,
}

impl Rel {
    /// Column names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.name.as_str())
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Col> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Operators and edges of the job being compiled.
#[derive(Debug, Default)]
pub struct Builder {
    /// Operators in the order they were added.
    pub operators: Vec<OperatorSpec>,
    /// Edges in the order they were added.
    pub edges: Vec<EdgeSpec>,
    uids: HashSet<String>,
    /// Line of the statement being compiled: plan errors name it.
    pub line: u32,
}

impl Builder {
    /// Adds an operator under a uid made from `base` (characters a uid may
    /// not hold become `_`; a uid taken already gets `-2`, `-3`, ...).
    pub fn add(&mut self, base: &str, kind: &str, config: Value, parallelism: u32) -> String {
        let base: String =
            base.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
        let mut uid = base.clone();
        let mut n = 2;
        while self.uids.contains(&uid) {
            uid = format!("{base}-{n}");
            n += 1;
        }
        self.uids.insert(uid.clone());
        self.operators.push(OperatorSpec {
            uid: uid.clone(),
            kind: kind.to_string(),
            parallelism,
            config,
            chainable: true,
            line: self.line,
        });
        uid
    }

    /// Joins two operators.
    pub fn connect(&mut self, from: &str, to: &str, partitioning: Partitioning, key: Vec<String>) {
        self.connect_input(from, to, 0, partitioning, key);
    }

    /// Joins two operators, into input `input` of `to`.
    pub fn connect_input(&mut self, from: &str, to: &str, input: u32, partitioning: Partitioning, key: Vec<String>) {
        self.edges.push(EdgeSpec {
            from: from.to_string(),
            to: to.to_string(),
            partitioning,
            key,
            input,
            output: String::new(),
            line: self.line,
        });
    }

    /// Adds an operator fed by `input` over a forward edge.
    pub fn then(&mut self, input: &Rel, base: &str, kind: &str, config: Value) -> String {
        let uid = self.add(base, kind, config, 0);
        self.connect(&input.uid, &uid, Partitioning::Forward, Vec::new());
        uid
    }
}

/// `"name"`: a column name quoted for DataFusion's SQL, which folds
/// unquoted names to lower case; Flink's names are case-sensitive.
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A short, stable fingerprint of `text` (FNV-1a), for uids that must
/// change when what an operator's state means changes.
pub fn fingerprint(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:08x}", (h >> 32) as u32 ^ h as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_sanitized_and_unique() {
        let mut b = Builder::default();
        assert_eq!(b.add("my table", "discard", Value::Null, 0), "my_table");
        assert_eq!(b.add("my table", "discard", Value::Null, 0), "my_table-2");
        assert_eq!(fingerprint("a"), fingerprint("a"));
        assert_ne!(fingerprint("a"), fingerprint("b"));
    }
}
