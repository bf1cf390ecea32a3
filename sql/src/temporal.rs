//! Event-time temporal joins: `FROM orders o [LEFT] JOIN rates FOR
//! SYSTEM_TIME AS OF o.ts AS r ON o.currency = r.currency` joins each order
//! with the version of its rate valid at the order's time. The table after
//! `AS OF` is versioned: it declares a `PRIMARY KEY` and a watermark, and
//! its rows (appended, or a changelog such as `debezium-json`'s) are the
//! versions of their key from their event time on. The join runs as
//! `temporal_join`, keyed by the primary key; the result only appends and
//! keeps the left input's event-time attribute.

use datafusion::sql::sqlparser::ast::{Expr, Join, ObjectNamePart, Spanned, TableFactor, TableVersion};
use serde_json::{json, Value};
use weir_runtime::graph::Partitioning;

use crate::builder::{fingerprint, quoted, Col, Rel, OP};
use crate::error::SqlError;
use crate::expr::span_start;
use crate::join::{combine, conjuncts, key_condition, qualify, Kind};
use crate::query::Planner;

impl Planner<'_> {
    /// `left [LEFT] JOIN table FOR SYSTEM_TIME AS OF left.time ON keys`.
    pub(crate) fn temporal_join(
        &mut self,
        left: Rel,
        j: &Join,
        kind: Kind,
        on: &Expr,
        version: &TableVersion,
    ) -> Result<Rel, SqlError> {
        let at = j.relation.span().start;
        let TableFactor::Table { name, .. } = &j.relation else { unreachable!("only tables have versions") };
        let TableVersion::ForSystemTimeAsOf(time) = version else {
            return Err(SqlError::at(at, "not supported: this kind of table version; write FOR SYSTEM_TIME AS OF"));
        };
        if !matches!(kind, Kind::Inner | Kind::Left) {
            return Err(SqlError::at(at, format!("not supported: a {} temporal join (inner or LEFT)", kind.name())));
        }
        if left.changelog {
            return Err(SqlError::at(
                at,
                "not supported: a temporal join of an updating input (its left side must only append rows)",
            ));
        }
        // AS OF the left side's event-time attribute: versions by event
        // time; AS OF another of its columns (`PROCTIME()`): a lookup of the
        // table as it is when the row arrives.
        let time_column = match qualify(time, &left)? {
            Expr::Identifier(id) => Some(id.value),
            _ => None,
        };
        let Some(time_column) = time_column else {
            return Err(SqlError::at(
                span_start(time),
                format!("FOR SYSTEM_TIME AS OF `{time}`: name a time column of the left input (its event-time attribute, or a PROCTIME() column)"),
            ));
        };
        let event_time = left.rowtime.as_deref() == Some(time_column.as_str());
        // The versioned table: a table with a primary key and a watermark.
        let table_name = name.0.last().and_then(ObjectNamePart::as_ident).map(|i| i.value.clone()).unwrap_or_default();
        let Some(def) = self.catalog.tables.get(&table_name) else {
            return Err(SqlError::at(
                at,
                format!("a temporal join reads a table with a PRIMARY KEY and a watermark; `{table_name}` is not such a table"),
            ));
        };
        let primary_key: Vec<String> = def.primary_key.iter().map(|i| i.value.clone()).collect();
        if primary_key.is_empty() {
            return Err(SqlError::at(
                at,
                format!("table `{table_name}` is not versioned: declare its PRIMARY KEY (...) NOT ENFORCED"),
            ));
        }
        let mut unversioned = j.relation.clone();
        if let TableFactor::Table { version, .. } = &mut unversioned {
            *version = None;
        }
        let right = self.factor(&unversioned)?;
        if event_time && right.rowtime.is_none() {
            return Err(SqlError::at(
                at,
                format!("table `{table_name}` is not versioned: declare a WATERMARK on its event time"),
            ));
        }
        // The join's keys must be the table's primary key.
        let sides = [&left, &right];
        let mut keys: Vec<(String, String)> = Vec::new();
        let mut rest: Vec<&Expr> = Vec::new();
        for c in conjuncts(on) {
            if !key_condition(&sides, c, &mut keys)? {
                rest.push(c);
            }
        }
        let mut right_key: Vec<String> = keys.iter().map(|k| k.1.clone()).collect();
        right_key.sort();
        let mut want = primary_key.clone();
        want.sort();
        if right_key != want {
            return Err(SqlError::at(
                span_start(on),
                format!("a temporal join's ON equates the primary key of `{table_name}` ({}) with columns of the other side, and no other column of it", primary_key.join(", ")),
            ));
        }
        if !rest.is_empty() && kind != Kind::Inner {
            return Err(SqlError::at(
                span_start(rest[0]),
                "not supported: conditions besides the keys in the ON of a LEFT temporal join; filter the input in a subquery",
            ));
        }
        if !event_time {
            // A bounded table is read whole before the first lookup.
            let option = |k: &str| def.options.iter().find(|o| o.0 == k).map(|o| o.1.as_str());
            let bounded = option("scan.bounded.mode") == Some("latest-offset")
                || (option("connector") == Some("datagen") && option("number-of-rows").is_some());
            return self.lookup_join(left, right, kind, keys, &rest, bounded);
        }
        let (left_time, right_time) = (time_column, right.rowtime.clone().expect("checked above"));
        let (names, right_names, qualifiers) = combine(&left, &right);
        let (left_key, right_key): (Vec<String>, Vec<String>) = keys.into_iter().unzip();
        let meaning = format!("{left_key:?}|{right_key:?}|{left_time}|{right_time}|{}", kind.name());
        let base = format!("{}-{}.temporal-join-{}", left.origin, right.origin, fingerprint(&meaning));
        let mut config = json!({
            "left_key": left_key, "right_key": right_key, "left_time": left_time, "right_time": right_time,
            "join_type": kind.name(), "names": names,
        });
        if right.changelog {
            config["right_op_column"] = json!(OP);
        }
        let uid = self.b.add(&base, "temporal_join", config, 0);
        self.b.connect_input(&left.uid, &uid, 0, Partitioning::Hash, left_key);
        self.b.connect_input(&right.uid, &uid, 1, Partitioning::Hash, right_key);
        let mut columns = left.columns.clone();
        columns.extend(right.columns.iter().zip(&right_names).map(|(c, n)| Col { name: n.clone(), ty: c.ty.clone() }));
        let out = Rel {
            uid,
            columns,
            rowtime: Some(left_time),
            origin: format!("{}-{}", left.origin, right.origin),
            qualifiers,
            changelog: false,
            window: None,
        };
        self.filter_rest(out, &rest)
    }

    /// A processing-time lookup join: each left row meets the right table's
    /// row of its key as it is when the row arrives (`lookup_join`, the
    /// table built from the right input: the last row per key, a changelog's
    /// deletes removing theirs).
    fn lookup_join(
        &mut self,
        left: Rel,
        right: Rel,
        kind: Kind,
        keys: Vec<(String, String)>,
        rest: &[&Expr],
        bounded: bool,
    ) -> Result<Rel, SqlError> {
        let (names, right_names, qualifiers) = combine(&left, &right);
        let (left_key, right_key): (Vec<String>, Vec<String>) = keys.into_iter().unzip();
        // The table's rows, with whether a row deletes its key and a marker
        // telling a match from padding.
        let mut table = right.clone();
        let mut cols: Vec<Value> = right.names().map(|n| json!(n)).collect();
        cols.push(json!({"name": PRESENT, "expr": "true"}));
        if right.changelog {
            let keep = format!("{} <> '-U'", quoted(OP));
            table.uid = self.b.then(
                &table,
                &format!("{}.lookup-table-filter", self.context),
                "filter",
                json!({"predicate": keep}),
            );
            cols.push(json!({"name": DELETE, "expr": format!("{} = '-D'", quoted(OP))}));
        }
        table.uid = self.b.then(&table, &format!("{}.lookup-table", self.context), "project", json!({"columns": cols}));
        let values: Vec<String> = right
            .names()
            .filter(|n| !right_key.iter().any(|k| k == n))
            .map(str::to_string)
            .chain([PRESENT.to_string()])
            .collect();
        let meaning = format!("{left_key:?}|{right_key:?}|{}", kind.name());
        let base = format!("{}-{}.lookup-join-{}", left.origin, right.origin, fingerprint(&meaning));
        let mut config = json!({
            "key": left_key, "table_key": right_key, "columns": values, "join_type": kind.name(), "prefix": TABLE_PREFIX,
        });
        if right.changelog {
            config["delete_column"] = json!(DELETE);
        }
        if bounded {
            config["bootstrap"] = json!(true);
        }
        let uid = self.b.add(&base, "lookup_join", config, 0);
        self.b.connect_input(&left.uid, &uid, 0, Partitioning::Hash, left_key.clone());
        self.b.connect_input(&table.uid, &uid, 1, Partitioning::Hash, right_key.clone());
        // The output as Flink's: the left's columns, then the right's (its
        // key columns are the left's keys where a row matched).
        let present = quoted(&format!("{TABLE_PREFIX}{PRESENT}"));
        let mut out_cols: Vec<Value> = left.names().map(|n| json!(n)).collect();
        for (c, name) in right.names().zip(&right_names) {
            let expr = match right_key.iter().position(|k| k == c) {
                Some(i) => format!("CASE WHEN {present} THEN {} END", quoted(&left_key[i])),
                None => quoted(&format!("{TABLE_PREFIX}{c}")),
            };
            out_cols.push(json!({"name": name, "expr": expr}));
        }
        let joined = Rel {
            uid,
            columns: Vec::new(),
            rowtime: None,
            origin: String::new(),
            qualifiers: Vec::new(),
            changelog: false,
            window: None,
        };
        let project = self.b.then(
            &joined,
            &format!("{}.lookup-join-output", self.context),
            "project",
            json!({"columns": out_cols}),
        );
        let mut columns = left.columns.clone();
        columns.extend(right.columns.iter().zip(&right_names).map(|(c, n)| Col { name: n.clone(), ty: c.ty.clone() }));
        debug_assert_eq!(columns.len(), names.len());
        let out = Rel {
            uid: project,
            columns,
            rowtime: left.rowtime.clone(),
            origin: format!("{}-{}", left.origin, right.origin),
            qualifiers,
            changelog: false,
            window: None,
        };
        self.filter_rest(out, rest)
    }
}

/// The lookup join's names for the table's columns, its deletes and its
/// match marker.
const TABLE_PREFIX: &str = "__table.";
const DELETE: &str = "__delete";
const PRESENT: &str = "__present";

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::tests::{compiled, error};

    const TABLES: &str = "
CREATE TABLE orders (id BIGINT, currency STRING, amount BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
  WITH ('connector' = 'kafka', 'topic' = 'orders', 'properties.bootstrap.servers' = 'h:9092', 'format' = 'json');
CREATE TABLE rates (currency STRING, rate BIGINT, ts TIMESTAMP(3), PRIMARY KEY (currency) NOT ENFORCED,
  WATERMARK FOR ts AS ts)
  WITH ('connector' = 'kafka', 'topic' = 'rates', 'properties.bootstrap.servers' = 'h:9092', 'format' = 'debezium-json');
";

    #[test]
    fn a_join_for_system_time_as_of_the_left_time_is_a_temporal_join_by_the_primary_key() {
        let g = compiled(&format!(
            "{TABLES} SELECT o.id, o.amount * r.rate AS converted, r.ts FROM orders AS o
  LEFT JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON r.currency = o.currency;"
        ));
        let j = g.operators.iter().find(|o| o.kind == "temporal_join").expect("a temporal join");
        assert!(j.uid.starts_with("orders-rates.temporal-join-"), "{}", j.uid);
        assert_eq!(
            j.config,
            json!({"left_key": ["currency"], "right_key": ["currency"], "left_time": "ts", "right_time": "ts",
                   "join_type": "left", "names": ["id", "currency", "amount", "ts", "currency0", "rate", "ts0"],
                   "right_op_column": "__op"})
        );
        for (kind, edge) in g.edges.iter().filter(|e| e.to == j.uid).map(|e| (e.input, &e.key)).collect::<Vec<_>>() {
            assert_eq!(edge, &["currency"], "input {kind} is hashed by the key");
        }
        // Inner, with another condition: a filter after it.
        let g = compiled(&format!(
            "{TABLES} SELECT o.id FROM orders o JOIN rates FOR SYSTEM_TIME AS OF o.ts r ON o.currency = r.currency AND r.rate > 2;"
        ));
        assert!(g.operators.iter().any(|o| o.kind == "filter" && o.uid.ends_with("join-filter")));
    }

    #[test]
    fn as_of_a_processing_time_it_is_a_lookup_join_of_the_table_as_it_is() {
        let g = compiled(&format!(
            "{} SELECT o.id, r.rate, r.currency FROM orders AS o
  LEFT JOIN rates FOR SYSTEM_TIME AS OF o.proc AS r ON o.currency = r.currency;",
            TABLES.replace("ts TIMESTAMP(3),\n  WATERMARK", "ts TIMESTAMP(3), proc AS PROCTIME(),\n  WATERMARK")
        ));
        let j = g.operators.iter().find(|o| o.kind == "lookup_join").expect("a lookup join");
        assert!(j.uid.starts_with("orders-rates.lookup-join-"), "{}", j.uid);
        assert_eq!(
            j.config,
            json!({"key": ["currency"], "table_key": ["currency"], "columns": ["rate", "ts", "__present"],
                   "join_type": "left", "prefix": "__table.", "delete_column": "__delete"})
        );
        let table = g.operators.iter().find(|o| o.uid.ends_with("lookup-table")).expect("the table's rows");
        assert_eq!(table.config["columns"][4], json!({"name": "__delete", "expr": "\"__op\" = '-D'"}));
        let computed = g.operators.iter().find(|o| o.uid == "orders.computed").expect("the proctime column");
        assert_eq!(computed.config["columns"][0]["expr"], "PROCTIME()");
    }

    #[test]
    fn what_a_temporal_join_cannot_be_is_refused() {
        let q = |join: &str| error(&format!("{TABLES} SELECT o.id FROM orders o {join};"));
        let e = q("JOIN rates FOR SYSTEM_TIME AS OF o.ts r ON o.id = r.rate");
        assert!(e.contains("equates the primary key of `rates` (currency)"), "{e}");
        let e = q("FULL JOIN rates FOR SYSTEM_TIME AS OF o.ts r ON o.currency = r.currency");
        assert!(e.contains("not supported: a full temporal join"), "{e}");
        let e = q("JOIN orders FOR SYSTEM_TIME AS OF o.ts r ON o.currency = r.currency");
        assert!(e.contains("table `orders` is not versioned: declare its PRIMARY KEY"), "{e}");
    }
}
