//! The database sinks of `CREATE TABLE`: Flink's `jdbc` connector (MySQL,
//! MariaDB, PostgreSQL) and its `mongodb` connector, which share how rows
//! are buffered and how a declared primary key makes them upsert.

use serde_json::{json, Map, Value};

use super::kafka::delivery_option;
use super::Options;
use crate::error::SqlError;
use crate::parse::TableDef;

/// The declared primary key makes a sink upsert, as in Flink.
pub(super) fn primary_key(t: &TableDef, c: &mut Map<String, Value>) {
    if !t.primary_key.is_empty() {
        c.insert("key".into(), json!(t.primary_key.iter().map(|k| k.value.clone()).collect::<Vec<_>>()));
    }
}

/// `sink.buffer-flush.max-rows`, `sink.buffer-flush.interval` and `sink.max-retries`.
fn buffering(opts: &mut Options<'_>, c: &mut Map<String, Value>) -> Result<(), SqlError> {
    if let Some((v, at)) = opts.take("sink.buffer-flush.max-rows") {
        let n: u64 = v
            .parse()
            .map_err(|_| SqlError::at(at, format!("sink.buffer-flush.max-rows is a number of rows, not '{v}'")))?;
        // Flink's 0 turns buffering off: every row is written at once.
        c.insert("buffer_flush_max_rows".into(), json!(n.max(1)));
    }
    if let Some(v) = opts.value("sink.buffer-flush.interval") {
        c.insert("buffer_flush_interval".into(), json!(v));
    }
    if let Some((v, at)) = opts.take("sink.max-retries") {
        let n: u64 = v.parse().map_err(|_| SqlError::at(at, format!("sink.max-retries is a number, not '{v}'")))?;
        c.insert("max_retries".into(), json!(n));
    }
    Ok(())
}

pub(super) fn no_sink_parallelism(opts: &mut Options<'_>) -> Result<(), SqlError> {
    if let Some((v, at)) = opts.take("sink.parallelism") {
        return Err(SqlError::at(
            at,
            format!("not supported: sink.parallelism ('{v}'); the sink runs at the job's parallelism"),
        ));
    }
    Ok(())
}

/// Flink's `jdbc` options, and Weir's for passwords kept out of the script
/// and for exactly-once delivery.
pub(super) const JDBC_OPTIONS: &[&str] = &[
    "connector",
    "url",
    "table-name",
    "username",
    "password",
    "password-env",
    "password-file",
    "sink.buffer-flush.max-rows",
    "sink.buffer-flush.interval",
    "sink.max-retries",
    "sink.delivery-guarantee",
    "sink.parallelism",
    "connection.max-retry-timeout",
];

pub(super) fn jdbc_sink(t: &TableDef, opts: &mut Options<'_>) -> Result<Value, SqlError> {
    let mut c = Map::new();
    c.insert("url".into(), json!(opts.required("url")?));
    c.insert("table".into(), json!(opts.required("table-name")?));
    for (option, field) in [
        ("username", "username"),
        ("password", "password"),
        ("password-env", "password_env"),
        ("password-file", "password_file"),
    ] {
        if let Some(v) = opts.value(option) {
            c.insert(field.into(), json!(v));
        }
    }
    primary_key(t, &mut c);
    buffering(opts, &mut c)?;
    if let Some(v) = opts.value("connection.max-retry-timeout") {
        c.insert("connect_timeout".into(), json!(v));
    }
    delivery_option(opts, &mut c)?;
    no_sink_parallelism(opts)?;
    Ok(Value::Object(c))
}

/// Flink's `mongodb` options, and Weir's for passwords kept out of the script.
pub(super) const MONGODB_OPTIONS: &[&str] = &[
    "connector",
    "uri",
    "database",
    "collection",
    "username",
    "password",
    "password-env",
    "password-file",
    "sink.buffer-flush.max-rows",
    "sink.buffer-flush.interval",
    "sink.max-retries",
    "sink.retry.interval",
    "sink.delivery-guarantee",
    "sink.parallelism",
];

pub(super) fn mongodb_sink(t: &TableDef, opts: &mut Options<'_>) -> Result<Value, SqlError> {
    let mut c = Map::new();
    for (option, field) in [("uri", "uri"), ("database", "database"), ("collection", "collection")] {
        c.insert(field.into(), json!(opts.required(option)?));
    }
    for (option, field) in [
        ("username", "username"),
        ("password", "password"),
        ("password-env", "password_env"),
        ("password-file", "password_file"),
        ("sink.retry.interval", "retry_interval"),
    ] {
        if let Some(v) = opts.value(option) {
            c.insert(field.into(), json!(v));
        }
    }
    primary_key(t, &mut c);
    buffering(opts, &mut c)?;
    if let Some((g, at)) = opts.take("sink.delivery-guarantee") {
        if g != "at-least-once" && g != "none" {
            return Err(SqlError::at(
                at,
                format!("sink.delivery-guarantee of the mongodb connector is at-least-once or none, not '{g}' (with a PRIMARY KEY a replay replaces the same documents)"),
            ));
        }
    }
    no_sink_parallelism(opts)?;
    Ok(Value::Object(c))
}
