//! Flink's `elasticsearch-7` (and `opensearch`) sink connector: a declared
//! primary key makes each document's id, and `index` may name a date
//! pattern of a timestamp column.

use serde_json::{json, Map, Value};

use super::databases::{no_sink_parallelism, primary_key};
use super::{memory_size, Options};
use crate::error::SqlError;
use crate::parse::TableDef;

/// The connector names it answers to.
pub(super) const NAMES: &[&str] = &["elasticsearch-7", "elasticsearch-6", "opensearch"];

/// Its options, with Flink's names.
pub(super) const OPTIONS: &[&str] = &[
    "connector",
    "hosts",
    "index",
    "document-id.key-delimiter",
    "username",
    "password",
    "password-env",
    "password-file",
    "format",
    "failure-handler",
    "sink.bulk-flush.max-actions",
    "sink.bulk-flush.max-size",
    "sink.bulk-flush.interval",
    "sink.bulk-flush.backoff.strategy",
    "sink.bulk-flush.backoff.max-retries",
    "sink.bulk-flush.backoff.delay",
    "sink.delivery-guarantee",
    "sink.parallelism",
    "connection.request-timeout",
];

pub(super) fn elasticsearch_sink(t: &TableDef, opts: &mut Options<'_>) -> Result<Value, SqlError> {
    let mut c = Map::new();
    let hosts: Vec<String> =
        opts.required("hosts")?.split(';').map(str::trim).filter(|h| !h.is_empty()).map(str::to_string).collect();
    c.insert("hosts".into(), json!(hosts));
    // Flink writes a date pattern `{ts|yyyy-MM-dd}` as Weir does.
    c.insert("index".into(), json!(opts.required("index")?));
    for (option, field) in [
        ("document-id.key-delimiter", "key_delimiter"),
        ("username", "username"),
        ("password", "password"),
        ("password-env", "password_env"),
        ("password-file", "password_file"),
        ("sink.bulk-flush.interval", "bulk_flush_interval"),
        ("connection.request-timeout", "request_timeout"),
    ] {
        if let Some(v) = opts.value(option) {
            c.insert(field.into(), json!(v));
        }
    }
    primary_key(t, &mut c);
    if let Some((v, at)) = opts.take("format") {
        if v != "json" {
            return Err(SqlError::at(at, format!("not supported: format '{v}' for documents (json)")));
        }
    }
    if let Some((v, at)) = opts.take("failure-handler") {
        if v != "fail" {
            return Err(SqlError::at(at, format!("not supported: failure-handler '{v}' (documents the cluster refuses fail the job; YAML jobs can send them to a dead_letter_index)")));
        }
    }
    if let Some((v, at)) = opts.take("sink.bulk-flush.max-actions") {
        let n: u64 =
            v.parse().map_err(|_| SqlError::at(at, format!("sink.bulk-flush.max-actions is a number, not '{v}'")))?;
        c.insert("bulk_flush_max_actions".into(), json!(n.max(1)));
    }
    if let Some((v, at)) = opts.take("sink.bulk-flush.max-size") {
        let n = memory_size(&v)
            .ok_or_else(|| SqlError::at(at, format!("sink.bulk-flush.max-size is a size like 2mb, not '{v}'")))?;
        c.insert("bulk_flush_max_bytes".into(), json!(n.max(1)));
    }
    let mut backoff = Map::new();
    if let Some((v, at)) = opts.take("sink.bulk-flush.backoff.strategy") {
        let s = match v.to_ascii_uppercase().as_str() {
            "EXPONENTIAL" => "exponential",
            "CONSTANT" => "constant",
            "DISABLED" | "NONE" => "disabled",
            _ => {
                return Err(SqlError::at(
                    at,
                    format!("sink.bulk-flush.backoff.strategy is EXPONENTIAL, CONSTANT or DISABLED, not '{v}'"),
                ))
            }
        };
        backoff.insert("strategy".into(), json!(s));
    }
    if let Some((v, at)) = opts.take("sink.bulk-flush.backoff.max-retries") {
        let n: u64 = v
            .parse()
            .map_err(|_| SqlError::at(at, format!("sink.bulk-flush.backoff.max-retries is a number, not '{v}'")))?;
        backoff.insert("max_retries".into(), json!(n));
    }
    if let Some(v) = opts.value("sink.bulk-flush.backoff.delay") {
        backoff.insert("delay".into(), json!(v));
    }
    if !backoff.is_empty() {
        c.insert("backoff".into(), Value::Object(backoff));
    }
    if let Some((g, at)) = opts.take("sink.delivery-guarantee") {
        if g != "at-least-once" && g != "none" {
            return Err(SqlError::at(
                at,
                format!("sink.delivery-guarantee of the elasticsearch connector is at-least-once or none, not '{g}' (with a PRIMARY KEY a replay overwrites the same documents)"),
            ));
        }
    }
    no_sink_parallelism(opts)?;
    Ok(Value::Object(c))
}
