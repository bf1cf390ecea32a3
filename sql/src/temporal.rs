//! Event-time temporal joins: `FROM orders o [LEFT] JOIN rates FOR
//! SYSTEM_TIME AS OF o.ts AS r ON o.currency = r.currency` joins each order
//! with the version of its rate valid at the order's time. The table after
//! `AS OF` is versioned: it declares a `PRIMARY KEY` and a watermark, and
//! its rows (appended, or a changelog such as `debezium-json`'s) are the
//! versions of their key from their event time on. The join runs as
//! `temporal_join`, keyed by the primary key; the result only appends and
//! keeps the left input's event-time attribute.

use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, Join, ObjectNamePart, Spanned, TableFactor, TableVersion};
use serde_json::{json, Value};
use weir_runtime::graph::Partitioning;

use crate::builder::{fingerprint, quoted, Col, Rel, OP};
use crate::error::SqlError;
use crate::expr::{span_start, to_sql};
use crate::join::{combine, conjuncts, key_condition, qualify, side_column, Kind};
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
        if event_time && primary_key.is_empty() {
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
        // The join's keys: equalities of a left column — or, in a lookup
        // join, of an expression of left columns — with a table column.
        let sides = [&left, &right];
        let mut keys: Vec<(String, String)> = Vec::new();
        let mut computed: Vec<(String, String)> = Vec::new();
        let mut rest: Vec<&Expr> = Vec::new();
        for c in conjuncts(on) {
            if key_condition(&sides, c, &mut keys)? {
                continue;
            }
            match computed_key(&sides, c)? {
                Some((expr, table_column)) if !event_time => {
                    let name = format!("{COMPUTED_KEY}{}", computed.len());
                    computed.push((name.clone(), expr));
                    keys.push((name, table_column));
                }
                _ => rest.push(c),
            }
        }
        let mut right_key: Vec<String> = keys.iter().map(|k| k.1.clone()).collect();
        right_key.sort();
        let mut want = primary_key.clone();
        want.sort();
        let by_primary_key = !want.is_empty() && right_key == want;
        if event_time && !by_primary_key {
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
            if keys.is_empty() {
                return Err(SqlError::at(
                    span_start(on),
                    format!("a lookup join's ON equates columns of `{table_name}` with the other side's: it has none"),
                ));
            }
            if !by_primary_key && right.changelog {
                return Err(SqlError::at(
                    span_start(on),
                    format!("`{table_name}` is updating: a lookup join of it equates its PRIMARY KEY ({}) with the other side", primary_key.join(", ")),
                ));
            }
            // A bounded table is read whole before the first lookup.
            let option = |k: &str| def.options.iter().find(|o| o.0 == k).map(|o| o.1.as_str());
            let bounded = option("scan.bounded.mode") == Some("latest-offset")
                || option("connector") == Some("filesystem")
                || (option("connector") == Some("datagen") && option("number-of-rows").is_some());
            let lookup = Lookup { kind, keys, computed, every_row: !by_primary_key, bounded };
            return self.lookup_join(left, right, lookup, &rest);
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
            proctime: left.proctime.clone(),
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
    fn lookup_join(&mut self, left: Rel, right: Rel, lookup: Lookup, rest: &[&Expr]) -> Result<Rel, SqlError> {
        let Lookup { kind, keys, computed, every_row, bounded } = lookup;
        let (names, right_names, qualifiers) = combine(&left, &right);
        let (left_key, right_key): (Vec<String>, Vec<String>) = keys.into_iter().unzip();
        // Keys computed from the left's columns ride along as hidden columns.
        let mut stream = left.clone();
        if !computed.is_empty() {
            let mut cols: Vec<Value> = left.names().map(|n| json!(n)).collect();
            cols.extend(computed.iter().map(|(name, expr)| json!({"name": name, "expr": expr})));
            stream.uid =
                self.b.then(&left, &format!("{}.lookup-keys", self.context), "project", json!({"columns": cols}));
        }
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
        // What the state means; the parts added later only when they are
        // used, so that the uids of earlier joins stay as they were.
        let mut meaning = format!("{left_key:?}|{right_key:?}|{}", kind.name());
        if !computed.is_empty() {
            let exprs: Vec<&str> = computed.iter().map(|c| c.1.as_str()).collect();
            meaning.push_str(&format!("|{exprs:?}"));
        }
        if every_row {
            meaning.push_str("|every row");
        }
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
        if every_row {
            config["every_row"] = json!(true);
        }
        let uid = self.b.add(&base, "lookup_join", config, 0);
        self.b.connect_input(&stream.uid, &uid, 0, Partitioning::Hash, left_key.clone());
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
            proctime: None,
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
            proctime: left.proctime.clone(),
            origin: format!("{}-{}", left.origin, right.origin),
            qualifiers,
            changelog: false,
            window: None,
        };
        self.filter_rest(out, rest)
    }
}

/// A lookup join's shape.
struct Lookup {
    kind: Kind,
    /// (stream column, table column) pairs.
    keys: Vec<(String, String)>,
    /// Hidden stream columns computed for keys: (name, expression).
    computed: Vec<(String, String)>,
    /// Whether the table keeps every row of a key (it has no primary key,
    /// or the ON does not equate it).
    every_row: bool,
    /// Whether the table is read whole before the first lookup.
    bounded: bool,
}

/// The names of hidden stream columns holding computed lookup keys.
const COMPUTED_KEY: &str = "__lookup_key";

/// `expr = table.column` (either way round), where `expr` is an expression
/// of the left side's columns that is not a plain column: the expression
/// in Weir's SQL and the table's column.
fn computed_key(sides: &[&Rel; 2], c: &Expr) -> Result<Option<(String, String)>, SqlError> {
    let Expr::BinaryOp { left: a, op: BinaryOperator::Eq, right: b } = c else { return Ok(None) };
    for (e, column) in [(a, b), (b, a)] {
        let Some((1, name)) = side_column(sides, column)? else { continue };
        if side_column(sides, e).is_ok_and(|s| s.is_some()) {
            continue;
        }
        let Ok(qualified) = qualify(e, sides[0]) else { continue };
        if let Ok(sql) = to_sql(&qualified, sides[0]) {
            return Ok(Some((sql, name)));
        }
    }
    Ok(None)
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
    fn a_lookup_join_of_a_table_without_a_primary_key_meets_every_row_of_a_computed_key() {
        let g = compiled(
            "CREATE TABLE bids (auction BIGINT, price BIGINT) WITH ('connector' = 'datagen');
CREATE TABLE side (key BIGINT, `value` STRING) WITH ('connector' = 'filesystem', 'path' = '/data/side.csv', 'format' = 'csv');
SELECT B.price, S.`value` FROM (SELECT *, PROCTIME() AS p FROM bids) B
  JOIN side FOR SYSTEM_TIME AS OF B.p AS S ON MOD(B.auction, 100) = S.key;",
        );
        let j = g.operators.iter().find(|o| o.kind == "lookup_join").expect("a lookup join");
        assert_eq!(
            j.config,
            json!({"key": ["__lookup_key0"], "table_key": ["key"], "columns": ["value", "__present"],
                   "join_type": "inner", "prefix": "__table.", "bootstrap": true, "every_row": true})
        );
        let keys = g.operators.iter().find(|o| o.uid.ends_with("lookup-keys")).expect("the computed key");
        assert_eq!(keys.config["columns"][3], json!({"name": "__lookup_key0", "expr": "((\"auction\") % (100))"}));
        let side = g.operators.iter().find(|o| o.kind == "file_source").expect("the file");
        assert_eq!(side.config["csv"], json!({"header": false}));
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
