//! The `filesystem` connector: tables read by `file_source` and written
//! by `file_sink`, with Flink's option names.

use serde_json::{json, Map, Value};

use super::{memory_size, physical, Options};
use crate::builder::Col;
use crate::error::SqlError;
use crate::parse::TableDef;

/// A `filesystem` table read: `file_source` over its path, every physical
/// column from the files, except `PARTITIONED BY` columns, which come from
/// the `name=value` directories.
pub(super) fn filesystem_source(
    t: &TableDef,
    opts: &mut Options<'_>,
) -> Result<(Map<String, Value>, Vec<Col>), SqlError> {
    let path = opts.required("path")?;
    let path = match path.strip_prefix("file://") {
        Some(local) if !local.starts_with('/') => local.to_string(),
        _ => path,
    };
    let (format, at) = opts
        .take("format")
        .ok_or_else(|| SqlError::at(t.name.span.start, "the filesystem connector needs 'format'"))?;
    if !matches!(format.as_str(), "json" | "csv" | "parquet") {
        return Err(SqlError::at(at, format!("not supported: reading format '{format}' (json, csv or parquet)")));
    }
    let fail_on_missing = opts.bool("json.fail-on-missing-field", false)?;
    for key in ["json.ignore-parse-errors", "csv.ignore-parse-errors"] {
        if let Some((v, at)) = opts.take(key) {
            if v.eq_ignore_ascii_case("true") {
                return Err(SqlError::at(at, format!("not supported: {key} = true; a bad line fails the job")));
            }
        }
    }
    let mut c = Map::new();
    if format == "csv" {
        c.insert("csv".into(), csv_settings(opts)?);
    }
    let mut schema = Vec::new();
    let mut columns = Vec::new();
    for (n, ty, not_null) in physical(t) {
        let Some(jt) = ty.json_type() else {
            return Err(SqlError::at(
                t.name.span.start,
                format!("not supported: column `{n}` of type {ty} in a {format} file"),
            ));
        };
        schema.push(json!({"name": n, "type": jt, "nullable": !(not_null || fail_on_missing)}));
        columns.push(Col::typed(n, ty));
    }
    c.insert("path".into(), json!(path));
    c.insert("format".into(), json!(format));
    c.insert("schema".into(), json!(schema));
    if !t.partitioned_by.is_empty() {
        c.insert("partition_by".into(), json!(t.partitioned_by.iter().map(|p| p.value.clone()).collect::<Vec<_>>()));
    }
    Ok((c, columns))
}

/// Flink's `csv` format: no header line, and `csv.field-delimiter`.
fn csv_settings(opts: &mut Options<'_>) -> Result<Value, SqlError> {
    let mut csv = json!({"header": false});
    if let Some((v, at)) = opts.take("csv.field-delimiter") {
        let d = match v.as_str() {
            "\\t" => '\t',
            _ => {
                let mut chars = v.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if c.is_ascii() && c != '"' && c != '\n' => c,
                    _ => {
                        return Err(SqlError::at(at, format!("csv.field-delimiter is one ASCII character, not '{v}'")))
                    }
                }
            }
        };
        csv["delimiter"] = json!(d.to_string());
    }
    Ok(csv)
}

pub(super) const FILESYSTEM_SINK_OPTIONS: &[&str] = &[
    "connector",
    "path",
    "format",
    "json.timestamp-format.standard",
    "csv.field-delimiter",
    "sink.rolling-policy.file-size",
    "sink.rolling-policy.rollover-interval",
    "sink.rolling-policy.check-interval",
    "sink.partition-commit.policy.kind",
    "sink.partition-commit.trigger",
    "sink.partition-commit.delay",
    "sink.partition-commit.watermark-time-zone",
    "sink.partition-commit.success-file.name",
    "partition.time-extractor.kind",
    "partition.time-extractor.timestamp-pattern",
    "partition.time-extractor.timestamp-formatter",
    "parquet.compression",
];

/// Flink's partition commit options as `file_sink`'s `partition_commit`;
/// `None` without a commit policy (the other options then do nothing, as
/// in Flink).
fn partition_commit(opts: &mut Options<'_>) -> Result<Option<Value>, SqlError> {
    let policy = opts.take("sink.partition-commit.policy.kind");
    let trigger = opts.take("sink.partition-commit.trigger");
    let delay = opts.take("sink.partition-commit.delay");
    let name = opts.take("sink.partition-commit.success-file.name");
    let pattern = opts.take("partition.time-extractor.timestamp-pattern");
    let formatter = opts.take("partition.time-extractor.timestamp-formatter");
    for (key, only) in
        [("sink.partition-commit.watermark-time-zone", "UTC"), ("partition.time-extractor.kind", "default")]
    {
        if let Some((v, at)) = opts.take(key) {
            if !v.eq_ignore_ascii_case(only) {
                return Err(SqlError::at(at, format!("not supported: {key} '{v}' (only '{only}')")));
            }
        }
    }
    let Some((policy, at)) = policy else { return Ok(None) };
    if let Some(kind) = policy.split(',').map(str::trim).find(|k| *k != "success-file") {
        return Err(SqlError::at(
            at,
            format!("not supported: sink.partition-commit.policy.kind '{kind}' (Weir writes success files, 'success-file'; it has no metastore)"),
        ));
    }
    let mut pc = Map::new();
    if let Some((v, at)) = trigger {
        let t = match v.as_str() {
            "process-time" => "process_time",
            "partition-time" => "partition_time",
            _ => {
                return Err(SqlError::at(
                    at,
                    format!("sink.partition-commit.trigger is 'process-time' or 'partition-time', not '{v}'"),
                ))
            }
        };
        pc.insert("trigger".into(), json!(t));
    }
    if let Some((v, at)) = delay {
        pc.insert("delay".into(), crate::settings::duration_value(&v).map_err(|e| SqlError::at(at, e))?);
    }
    if let Some((v, _)) = name {
        pc.insert("success_file".into(), json!(v));
    }
    if let Some((v, _)) = pattern {
        pc.insert("timestamp_pattern".into(), json!(v));
    }
    if let Some((v, _)) = formatter {
        pc.insert("timestamp_format".into(), json!(crate::expr::java_pattern(&v)));
    }
    Ok(Some(Value::Object(pc)))
}

pub(super) fn filesystem_sink(t: &TableDef, opts: &mut Options<'_>) -> Result<Value, SqlError> {
    let mut c = Map::new();
    let path = opts.required("path")?;
    let path = match path.strip_prefix("file://") {
        Some(local) if !local.starts_with('/') => local.to_string(),
        _ => path,
    };
    c.insert("path".into(), json!(path));
    let (f, at) = opts
        .take("format")
        .ok_or_else(|| SqlError::at(t.name.span.start, "the filesystem connector needs 'format'"))?;
    match f.as_str() {
        "json" | "parquet" => c.insert("format".into(), json!(f)),
        "csv" => {
            c.insert("csv".into(), csv_settings(opts)?);
            c.insert("format".into(), json!(f))
        }
        other => {
            return Err(SqlError::at(
                at,
                format!("not supported: the '{other}' format in the filesystem sink (json, csv or parquet)"),
            ))
        }
    };
    if let Some((v, at)) = opts.take("json.timestamp-format.standard") {
        if v != "SQL" {
            return Err(SqlError::at(at, "not supported: json.timestamp-format.standard other than SQL in sinks"));
        }
    }
    if let Some((v, at)) = opts.take("parquet.compression") {
        let codec = match v.to_ascii_lowercase().as_str() {
            "snappy" => "snappy",
            "zstd" => "zstd",
            "none" | "uncompressed" => "none",
            _ => return Err(SqlError::at(at, format!("parquet.compression is snappy, zstd or none, not '{v}'"))),
        };
        c.insert("compression".into(), json!(codec));
    }
    if let Some((v, at)) = opts.take("sink.rolling-policy.file-size") {
        let n = memory_size(&v).ok_or_else(|| {
            SqlError::at(at, format!("sink.rolling-policy.file-size is a size like 128MB, not '{v}'"))
        })?;
        c.insert("max_part_bytes".into(), json!(n));
    }
    if let Some((v, at)) = opts.take("sink.rolling-policy.rollover-interval") {
        c.insert("rollover_interval".into(), crate::settings::duration_value(&v).map_err(|e| SqlError::at(at, e))?);
    }
    // The task's timer checks rolling often enough.
    opts.take("sink.rolling-policy.check-interval");
    if let Some(commit) = partition_commit(opts)? {
        if t.partitioned_by.is_empty() {
            return Err(SqlError::at(
                t.name.span.start,
                "sink.partition-commit.policy.kind needs partitions: declare PARTITIONED BY (...)",
            ));
        }
        c.insert("partition_commit".into(), commit);
    }
    if !t.partitioned_by.is_empty() {
        c.insert("partition_by".into(), json!(t.partitioned_by.iter().map(|p| p.value.clone()).collect::<Vec<_>>()));
    }
    Ok(Value::Object(c))
}
