//! Tables as Weir operators: a `CREATE TABLE`'s connector and options,
//! with Flink's option names, become a source (plus operators for computed
//! columns and watermarks) or a sink. See `docs/sql.md` for each option.

use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr};
use datafusion::sql::sqlparser::tokenizer::Location;
use serde_json::{json, Map, Value};
use weir_runtime::graph::Partitioning;

use crate::builder::{quoted, Builder, Col, Rel, OP};
use crate::error::{did_you_mean, SqlError};
use crate::expr::{interval_ms, quoted_ident, resolve, resolve_column};
use crate::parse::{ColumnKind, TableDef};
use crate::settings::Settings;
use crate::types::SqlType;

mod databases;
mod filesystem;
mod kafka;
mod nexmark;
mod search;
use databases::{jdbc_sink, mongodb_sink, JDBC_OPTIONS, MONGODB_OPTIONS};
use filesystem::{filesystem_sink, filesystem_source, FILESYSTEM_SINK_OPTIONS};
use kafka::{kafka_sink, kafka_source, upsert_kafka_sink, upsert_kafka_source, UPSERT_KAFKA_OPTIONS};

/// Connectors `CREATE TABLE` accepts.
const CONNECTORS: &[&str] = &[
    "kafka",
    "upsert-kafka",
    "datagen",
    "nexmark",
    "filesystem",
    "jdbc",
    "mongodb",
    "elasticsearch-7",
    "elasticsearch-6",
    "opensearch",
    "print",
    "blackhole",
];

/// Columns of Weir's benchmark generator, which the `datagen` connector runs.
const DATAGEN_COLUMNS: &[(&str, SqlType)] = &[
    ("auction", SqlType::BigInt),
    ("bidder", SqlType::BigInt),
    ("price", SqlType::BigInt),
    ("event_time_ms", SqlType::BigInt),
    ("channel", SqlType::String),
];

/// The `WITH` options of a table, taken one by one; whatever is left when
/// the connector is done is an unknown option.
struct Options<'a> {
    table: &'a TableDef,
    left: Vec<(String, String, Location)>,
}

impl<'a> Options<'a> {
    fn new(table: &'a TableDef) -> Self {
        Self { table, left: table.options.clone() }
    }

    fn take(&mut self, key: &str) -> Option<(String, Location)> {
        let i = self.left.iter().position(|(k, _, _)| k == key)?;
        let (_, v, at) = self.left.remove(i);
        Some((v, at))
    }

    fn value(&mut self, key: &str) -> Option<String> {
        self.take(key).map(|(v, _)| v)
    }

    fn required(&mut self, key: &str) -> Result<String, SqlError> {
        self.value(key).ok_or_else(|| {
            SqlError::at(
                self.table.name.span.start,
                format!("table `{}` needs the option '{key}'", self.table.name.value),
            )
        })
    }

    /// Every option starting with `prefix`, without it.
    fn prefixed(&mut self, prefix: &str) -> Vec<(String, String)> {
        let (with, without): (Vec<_>, Vec<_>) = self.left.drain(..).partition(|(k, _, _)| k.starts_with(prefix));
        self.left = without;
        with.into_iter().map(|(k, v, _)| (k[prefix.len()..].to_string(), v)).collect()
    }

    fn bool(&mut self, key: &str, default: bool) -> Result<bool, SqlError> {
        match self.take(key) {
            None => Ok(default),
            Some((v, at)) => match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(SqlError::at(at, format!("option '{key}' is true or false, not '{v}'"))),
            },
        }
    }

    /// Fails on an option no one took, naming the closest known one. A
    /// known option left untaken belongs to the table's other role (a
    /// source's `scan.*` on a table written to): ignored, as in Flink.
    fn finish(self, known: &[&str]) -> Result<(), SqlError> {
        match self.left.iter().find(|(k, _, _)| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some((k, _, at)) => Err(SqlError::at(
                *at,
                format!(
                    "unknown option '{k}' for the {} connector{}",
                    connector_name(self.table),
                    did_you_mean(k, known.iter().copied())
                ),
            )),
        }
    }
}

fn connector_name(t: &TableDef) -> String {
    t.options.iter().find(|(k, _, _)| k == "connector").map(|(_, v, _)| v.clone()).unwrap_or_default()
}

/// Checks a table's connector when it is declared.
pub fn check_connector(t: &TableDef) -> Result<(), SqlError> {
    let Some((_, c, at)) = t.options.iter().find(|(k, _, _)| k == "connector") else {
        return Err(SqlError::at(t.name.span.start, format!("table `{}` needs the option 'connector'", t.name.value)));
    };
    match c.as_str() {
        c if CONNECTORS.contains(&c) => Ok(()),
        "hbase-2.2" => Err(SqlError::at(
            *at,
            format!("not supported: the '{c}' connector (Weir SQL has {})", CONNECTORS.join(", ")),
        )),
        other => Err(SqlError::at(
            *at,
            format!(
                "unknown connector '{other}'{}; Weir SQL has {}",
                did_you_mean(other, CONNECTORS.iter().copied()),
                CONNECTORS.join(", ")
            ),
        )),
    }
}

/// The physical columns of a table with their types.
fn physical(t: &TableDef) -> Vec<(String, SqlType, bool)> {
    t.columns
        .iter()
        .filter_map(|c| match &c.kind {
            ColumnKind::Physical(ty) => Some((c.name.value.clone(), ty.clone(), c.not_null)),
            _ => None,
        })
        .collect()
}

/// Adds the operators reading `t` and returns their output.
pub fn source(b: &mut Builder, t: &TableDef, settings: &Settings) -> Result<Rel, SqlError> {
    let name = t.name.value.clone();
    let mut opts = Options::new(t);
    let connector = opts.required("connector")?;
    let watermark = watermark_spec(t)?;
    let rowtime_physical = watermark.as_ref().is_some_and(|(c, _)| physical(t).iter().any(|(n, _, _)| n == c));
    let idle = settings.idle_timeout.filter(|d| !d.is_zero());
    let mut renames = Vec::new();
    let mut changelog = false;
    // An upsert table's key: its rows go through `changelog_normalize`.
    let mut upsert_key = None;
    // The kafka source tracks a watermark on a physical column per partition.
    let source_watermark = |config: &mut Map<String, Value>| {
        if let (Some((column, ooo)), true) = (&watermark, rowtime_physical) {
            let mut w = Map::new();
            w.insert("column".into(), json!(column));
            w.insert("max_out_of_orderness".into(), json!(format!("{ooo}ms")));
            if let Some(d) = idle {
                w.insert("idle_timeout".into(), json!(format!("{}ms", d.as_millis())));
            }
            config.insert("watermark".into(), Value::Object(w));
        }
    };
    let (uid, columns, watermark_done) = match connector.as_str() {
        "kafka" => {
            let (mut config, columns, r) = kafka_source(t, &mut opts)?;
            renames = r;
            changelog = config.contains_key("op_column");
            source_watermark(&mut config);
            (b.add(&name, "kafka_source", Value::Object(config), 0), columns, rowtime_physical)
        }
        "upsert-kafka" => {
            let (mut config, columns, key) = upsert_kafka_source(t, &mut opts)?;
            changelog = true;
            upsert_key = Some(key);
            source_watermark(&mut config);
            (b.add(&name, "kafka_source", Value::Object(config), 0), columns, rowtime_physical)
        }
        "datagen" => {
            let mut config = Map::new();
            if let Some((v, at)) = opts.take("number-of-rows") {
                config.insert(
                    "events".into(),
                    json!(v.parse::<u64>().map_err(|_| SqlError::at(at, "'number-of-rows' is a whole number"))?),
                );
            }
            if let Some((v, at)) = opts.take("rows-per-second") {
                config.insert(
                    "rate".into(),
                    json!(v.parse::<u64>().map_err(|_| SqlError::at(at, "'rows-per-second' is a whole number"))?),
                );
            }
            if let Some((k, _, at)) = opts.left.iter().find(|(k, _, _)| k.starts_with("fields.")) {
                return Err(SqlError::at(*at, format!("not supported: '{k}': Weir's datagen produces the benchmark generator's columns ({}) by their formulas", DATAGEN_COLUMNS.iter().map(|c| c.0).collect::<Vec<_>>().join(", "))));
            }
            for (n, ty, _) in physical(t) {
                match DATAGEN_COLUMNS.iter().find(|(c, _)| *c == n) {
                    Some((_, want)) if *want == ty => {}
                    Some((_, want)) => {
                        return Err(SqlError::at(
                            t.name.span.start,
                            format!("datagen column `{n}` is {want}, declared {ty}"),
                        ))
                    }
                    None => {
                        return Err(SqlError::at(
                            t.name.span.start,
                            format!(
                                "datagen has no column `{n}`{}; it produces {}",
                                did_you_mean(&n, DATAGEN_COLUMNS.iter().map(|c| c.0)),
                                DATAGEN_COLUMNS.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
                            ),
                        ))
                    }
                }
            }
            let columns = DATAGEN_COLUMNS.iter().map(|(n, t)| Col::typed(*n, t.clone())).collect();
            (b.add(&name, "datagen", Value::Object(config), 0), columns, false)
        }
        "nexmark" => {
            let (config, columns) = nexmark::source(t, &mut opts)?;
            (b.add(&name, "nexmark_source", Value::Object(config), 0), columns, false)
        }
        "filesystem" => {
            let (config, columns) = filesystem_source(t, &mut opts)?;
            (b.add(&name, "file_source", Value::Object(config), 0), columns, false)
        }
        other => {
            return Err(SqlError::at(
                t.name.span.start,
                format!("table `{name}` uses the '{other}' connector, which is a sink only"),
            ))
        }
    };
    opts.finish(&known_source_options(&connector))?;
    let mut rel = Rel {
        uid,
        columns,
        rowtime: None,
        proctime: None,
        origin: name.clone(),
        qualifiers: Vec::new(),
        changelog,
        window: None,
    };
    // Exactly the declared physical and metadata columns, in order (and a
    // changelog's change kinds).
    let op: Vec<Value> = if changelog { vec![json!(OP)] } else { Vec::new() };
    let wanted: Vec<&str> = t
        .columns
        .iter()
        .filter(|c| !matches!(c.kind, ColumnKind::Computed(_)))
        .map(|c| c.name.value.as_str())
        .collect();
    if rel.names().collect::<Vec<_>>() != wanted {
        let mut cols = Vec::new();
        let mut out = Vec::new();
        for w in &wanted {
            match renames.iter().find(|(_, to)| to == w) {
                Some((from, _)) => {
                    cols.push(json!({"name": w, "expr": quoted(from)}));
                    out.push(Col { name: w.to_string(), ty: rel.column(from).and_then(|c| c.ty.clone()) });
                }
                None => {
                    cols.push(json!(w));
                    out.push(rel.column(w).cloned().expect("the connector produces every declared column"));
                }
            }
        }
        cols.extend(op.iter().cloned());
        rel.uid = b.then(&rel, &format!("{name}.columns"), "project", json!({"columns": cols}));
        rel.columns = out;
    }
    // Upserts made a changelog that takes back what each replaces.
    if let Some(key) = upsert_key {
        let uid = b.add(&format!("{name}.normalize"), "changelog_normalize", json!({"key": key, "op_column": OP}), 0);
        b.connect(&rel.uid, &uid, Partitioning::Hash, key);
        rel.uid = uid;
    }
    // Computed columns, in one `map`.
    let computed: Vec<_> = t
        .columns
        .iter()
        .filter_map(|c| match &c.kind {
            ColumnKind::Computed(e) => Some((c.name.value.clone(), (**e).clone())),
            _ => None,
        })
        .collect();
    if !computed.is_empty() {
        let mut cols = Vec::new();
        for (n, e) in &computed {
            let mut e = e.clone();
            resolve(&mut e, |id| {
                resolve_column(&rel, &id.value, id.span.start).map(|c| Expr::Identifier(quoted_ident(&c)))
            })?;
            cols.push(json!({"name": n, "expr": e.to_string()}));
        }
        rel.uid = b.then(&rel, &format!("{name}.computed"), "map", json!({"columns": cols}));
        for (n, e) in &computed {
            let ty = watermark.as_ref().filter(|(c, _)| c == n).map(|_| SqlType::Timestamp);
            rel.columns.push(Col { name: n.clone(), ty });
            if crate::query::is_proctime_call(e) {
                rel.proctime = Some(n.clone());
            }
        }
        // Declaration order, as Flink shows a table's columns.
        let order: Vec<&str> = t.columns.iter().map(|c| c.name.value.as_str()).collect();
        let cols: Vec<Value> = order.iter().map(|n| json!(n)).chain(op.iter().cloned()).collect();
        if rel.names().collect::<Vec<_>>() != order {
            rel.uid = b.then(&rel, &format!("{name}.columns"), "project", json!({"columns": cols}));
            let mut ordered = Vec::new();
            for n in order {
                ordered.push(rel.column(n).cloned().expect("every declared column is present"));
            }
            rel.columns = ordered;
        }
    }
    if let Some((column, ooo)) = watermark {
        if !watermark_done {
            let mut config = Map::new();
            config.insert("timestamp_column".into(), json!(column));
            config.insert("max_out_of_orderness".into(), json!(format!("{ooo}ms")));
            if let Some(d) = idle {
                config.insert("idle_timeout".into(), json!(format!("{}ms", d.as_millis())));
            }
            rel.uid = b.then(&rel, &format!("{name}.watermark"), "watermark", Value::Object(config));
        }
        rel.rowtime = Some(column);
    }
    Ok(rel)
}

/// `WATERMARK FOR c AS c [- INTERVAL ...]` as (column, Weir's
/// out-of-orderness in ms). Flink's SQL watermark is `max(expr)`; Weir's
/// is `max - out_of_orderness - 1`, so the delay is taken 1 ms shorter to
/// fire windows at the same watermark as Flink.
fn watermark_spec(t: &TableDef) -> Result<Option<(String, u64)>, SqlError> {
    let Some((column, expr)) = &t.watermark else { return Ok(None) };
    let Some(col) = t.columns.iter().find(|c| c.name.value == column.value) else {
        return Err(SqlError::at(
            column.span.start,
            format!(
                "WATERMARK FOR an unknown column `{}`{}",
                column.value,
                did_you_mean(&column.value, t.columns.iter().map(|c| c.name.value.as_str()))
            ),
        ));
    };
    if let ColumnKind::Physical(ty) | ColumnKind::Metadata { ty, .. } = &col.kind {
        if *ty != SqlType::Timestamp {
            return Err(SqlError::at(
                column.span.start,
                format!("the watermark column `{}` must be TIMESTAMP(3) or TIMESTAMP_LTZ(3), not {ty}", column.value),
            ));
        }
    }
    let is_column = |e: &Expr| matches!(e, Expr::Identifier(id) if id.value == column.value);
    let delay = match expr {
        e if is_column(e) => 0,
        Expr::BinaryOp { left, op: BinaryOperator::Minus, right } if is_column(left) => interval_ms(right)?,
        other => {
            use datafusion::sql::sqlparser::ast::Spanned;
            return Err(SqlError::at(
                other.span().start,
                format!(
                    "not supported: the watermark expression `{other}`; write `{0} - INTERVAL 'n' SECOND` or `{0}`",
                    column.value
                ),
            ));
        }
    };
    Ok(Some((column.value.clone(), delay.saturating_sub(1))))
}

fn known_source_options(connector: &str) -> Vec<&'static str> {
    match connector {
        "kafka" => vec![
            "connector",
            "topic",
            "topic-pattern",
            "properties.bootstrap.servers",
            "properties.group.id",
            "scan.startup.mode",
            "scan.startup.timestamp-millis",
            "scan.bounded.mode",
            "format",
            "value.format",
            "key.format",
            "key.fields",
            "value.fields-include",
            "json.fail-on-missing-field",
            "json.ignore-parse-errors",
            "json.timestamp-format.standard",
            "debezium-json.schema-include",
            "debezium-json.ignore-parse-errors",
            "debezium-json.timestamp-format.standard",
            "scan.topic-partition-discovery.interval",
            "sink.partitioner",
            "sink.delivery-guarantee",
            "sink.transactional-id-prefix",
        ],
        "datagen" => vec!["connector", "number-of-rows", "rows-per-second"],
        "filesystem" => [
            FILESYSTEM_SINK_OPTIONS,
            &["json.fail-on-missing-field", "json.ignore-parse-errors", "csv.ignore-parse-errors"],
        ]
        .concat(),
        "upsert-kafka" => UPSERT_KAFKA_OPTIONS.to_vec(),
        "nexmark" => nexmark::OPTIONS.to_vec(),
        _ => vec!["connector"],
    }
}

/// The value written for column `src` of type `ty`: cast to the declared
/// type, timestamps as Flink's text (`2026-03-01 08:00:00.123`) where rows
/// are written as text, also inside a `ROW`.
fn sink_expr(src: String, ty: &SqlType, text: bool) -> String {
    match ty {
        SqlType::Timestamp if text => format!("to_char({src}, '%Y-%m-%d %H:%M:%S%.3f')"),
        SqlType::Row(fields) if text && ty.holds_timestamp() => {
            let parts: Vec<String> = fields
                .iter()
                .map(|(f, t)| {
                    let field = format!("get_field({src}, '{}')", f.replace('\'', "''"));
                    format!("'{}', {}", f.replace('\'', "''"), sink_expr(field, t, text))
                })
                .collect();
            format!("CASE WHEN {src} IS NULL THEN NULL ELSE named_struct({}) END", parts.join(", "))
        }
        _ => match ty.cast_target() {
            Some(cast) => format!("CAST({src} AS {cast})"),
            None => src,
        },
    }
}

/// Adds the sink writing `input` into `t`. The query's columns are matched
/// to the table's by position (or to the listed columns), cast to the
/// declared types, and timestamps written as Flink's json format writes
/// them (`2026-03-01 08:00:00.123`).
pub fn sink(b: &mut Builder, t: &TableDef, input: Rel, listed: &[String], at: Location) -> Result<(), SqlError> {
    let name = t.name.value.clone();
    let mut opts = Options::new(t);
    let connector = opts.required("connector")?;
    let targets: Vec<(String, SqlType)> = physical(t).into_iter().map(|(n, ty, _)| (n, ty)).collect();
    let targets: Vec<(String, SqlType)> = if listed.is_empty() {
        targets
    } else {
        let mut out = Vec::new();
        for l in listed {
            match targets.iter().find(|(n, _)| n == l) {
                Some(x) => out.push(x.clone()),
                None => {
                    return Err(SqlError::at(
                        at,
                        format!(
                            "table `{name}` has no column `{l}`{}",
                            did_you_mean(l, targets.iter().map(|(n, _)| n.as_str()))
                        ),
                    ))
                }
            }
        }
        if out.len() != targets.len() {
            return Err(SqlError::at(
                at,
                format!("not supported: writing some of the columns of `{name}` (list them all)"),
            ));
        }
        out
    };
    if input.columns.len() != targets.len() {
        return Err(SqlError::at(
            at,
            format!(
                "the query gives {} columns ({}) and table `{name}` takes {} ({})",
                input.columns.len(),
                input.names().collect::<Vec<_>>().join(", "),
                targets.len(),
                targets.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    // Timestamps become Flink's text form where rows are written as text;
    // typed sinks (JDBC, Parquet) keep them typed.
    let format = t.options.iter().find(|(k, _, _)| k == "format").map(|(_, v, _)| v.as_str());
    let json_out = match connector.as_str() {
        "blackhole" | "jdbc" | "mongodb" => false,
        // Documents take timestamps as ISO 8601 text, which the cluster maps to dates.
        c if search::NAMES.contains(&c) => false,
        "filesystem" => format != Some("parquet"),
        _ => true,
    };
    let mut cols = Vec::new();
    for ((target, ty), col) in targets.iter().zip(&input.columns) {
        if let (Some(have), true) = (&col.ty, matches!(ty, SqlType::Timestamp)) {
            if *have != SqlType::Timestamp {
                return Err(SqlError::at(
                    at,
                    format!("column `{target}` of `{name}` is {ty}, the query gives {have} (`{}`)", col.name),
                ));
            }
        }
        cols.push(json!({"name": target, "expr": sink_expr(quoted(&col.name), ty, json_out)}));
    }
    let mut rel = input;
    if rel.changelog {
        cols.push(json!(OP));
        updating_sink(t, &connector, at)?;
    }
    rel.uid = b.then(&rel, &format!("{name}.columns"), "project", json!({"columns": cols}));
    let (kind, mut config) = match connector.as_str() {
        "kafka" => ("kafka_sink", kafka_sink(t, &mut opts, &targets)?),
        "upsert-kafka" => ("kafka_sink", upsert_kafka_sink(t, &mut opts)?),
        "jdbc" => ("jdbc_sink", jdbc_sink(t, &mut opts)?),
        "mongodb" => ("mongodb_sink", mongodb_sink(t, &mut opts)?),
        c if search::NAMES.contains(&c) => ("elasticsearch_sink", search::elasticsearch_sink(t, &mut opts)?),
        "filesystem" => ("file_sink", filesystem_sink(t, &mut opts)?),
        "print" => {
            opts.take("print-identifier");
            if opts.bool("standard-error", false)? {
                return Err(SqlError::at(t.name.span.start, "not supported: 'standard-error' = 'true'"));
            }
            ("stdout", json!({}))
        }
        "blackhole" => ("discard", json!({})),
        "datagen" | "nexmark" => {
            return Err(SqlError::at(
                at,
                format!("table `{name}` uses the {connector} connector, which is a source only"),
            ))
        }
        other => return Err(SqlError::at(t.name.span.start, format!("unknown connector '{other}'"))),
    };
    let known: Vec<&str> = match connector.as_str() {
        "filesystem" => FILESYSTEM_SINK_OPTIONS.to_vec(),
        "print" => vec!["connector", "print-identifier", "standard-error"],
        "jdbc" => JDBC_OPTIONS.to_vec(),
        "upsert-kafka" => UPSERT_KAFKA_OPTIONS.to_vec(),
        "mongodb" => MONGODB_OPTIONS.to_vec(),
        c if search::NAMES.contains(&c) => search::OPTIONS.to_vec(),
        _ => known_source_options(&connector),
    };
    opts.finish(&known)?;
    if rel.changelog && !t.primary_key.is_empty() {
        config["op_column"] = json!(OP);
    }
    let uid = b.add(&name, kind, config, 0);
    b.connect(&rel.uid, &uid, weir_runtime::graph::Partitioning::Forward, Vec::new());
    Ok(())
}

/// Checks that table `t` can take an updating result: a sink that writes
/// by a declared primary key, or one that shows every change.
fn updating_sink(t: &TableDef, connector: &str, at: Location) -> Result<(), SqlError> {
    let name = &t.name.value;
    let keyed = ["jdbc", "mongodb", "upsert-kafka"].contains(&connector) || search::NAMES.contains(&connector);
    if keyed && t.primary_key.is_empty() {
        return Err(SqlError::at(
            at,
            format!("the query's result is updating (a GROUP BY without a window, or SELECT DISTINCT), and table `{name}` has no primary key to write the changes by: declare PRIMARY KEY (...) NOT ENFORCED"),
        ));
    }
    if keyed || connector == "print" || connector == "blackhole" {
        return Ok(());
    }
    Err(SqlError::at(
        at,
        format!("the query's result is updating (a GROUP BY without a window, or SELECT DISTINCT), and table `{name}` (connector '{connector}') only appends rows: write it to a table with a primary key of the upsert-kafka, jdbc, mongodb or elasticsearch connector, or aggregate in windows"),
    ))
}

/// Bytes in a Flink memory size (`128MB`, `1 gb`, `4096`).
fn memory_size(v: &str) -> Option<u64> {
    let t = v.trim().to_ascii_lowercase();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..digits].parse().ok()?;
    let unit = match t[digits..].trim() {
        "" | "b" | "bytes" => 1,
        "k" | "kb" | "kibibytes" => 1 << 10,
        "m" | "mb" | "mebibytes" => 1 << 20,
        "g" | "gb" | "gibibytes" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(unit)
}
