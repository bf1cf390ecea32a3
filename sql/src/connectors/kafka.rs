//! The `kafka` connector's options: formats, key fields and delivery.

use super::*;

/// `kafka_source`'s configuration and the columns it produces.
/// Also returns the columns to rename (the source's name, the declared one).
#[allow(clippy::type_complexity)]
pub(super) fn kafka_source(
    t: &TableDef,
    opts: &mut Options<'_>,
) -> Result<(Map<String, Value>, Vec<Col>, Vec<(String, String)>), SqlError> {
    let mut c = Map::new();
    c.insert("bootstrap_servers".into(), json!(opts.required("properties.bootstrap.servers")?));
    match (opts.take("topic"), opts.take("topic-pattern")) {
        (Some(_), Some((_, at))) => {
            return Err(SqlError::at(at, "give either 'topic' or 'topic-pattern', not both"));
        }
        (None, Some((pattern, _))) => {
            c.insert("topic_pattern".into(), json!(pattern));
        }
        (topic, None) => {
            let (topic, _) = topic.ok_or_else(|| {
                SqlError::at(t.name.span.start, "the kafka connector needs 'topic' (or 'topic-pattern' to read from)")
            })?;
            let topics: Vec<&str> = topic.split(';').map(str::trim).filter(|s| !s.is_empty()).collect();
            if topics.len() == 1 {
                c.insert("topic".into(), json!(topics[0]));
            } else {
                c.insert("topics".into(), json!(topics));
            }
        }
    }
    if let Some(g) = opts.value("properties.group.id") {
        c.insert("group_id".into(), json!(g));
    }
    match opts.take("scan.startup.mode") {
        None => {}
        Some((m, at)) => {
            let start = match m.as_str() {
                "earliest-offset" => json!("earliest"),
                "latest-offset" => json!("latest"),
                "group-offsets" => json!("committed"),
                "timestamp" => {
                    let ms = opts.required("scan.startup.timestamp-millis")?;
                    json!({"timestamp": ms.parse::<i64>().map_err(|_| SqlError::at(at, "'scan.startup.timestamp-millis' is a number"))?})
                }
                other => return Err(SqlError::at(at, format!("not supported: scan.startup.mode '{other}' (use earliest-offset, latest-offset, group-offsets or timestamp)"))),
            };
            c.insert("start".into(), start);
        }
    }
    bounded_option(opts, &mut c)?;
    if let Some((v, at)) = opts.take("scan.topic-partition-discovery.interval") {
        let d = crate::settings::duration(&v).map_err(|m| SqlError::at(at, m))?;
        c.insert("partition_discovery".into(), json!(format!("{}ms", d.as_millis())));
    }
    if let Some(props) = properties(opts)? {
        c.insert("properties".into(), props);
    }
    let format = format_option(opts)?;
    let (key_fields, except_key) = key_options(t, opts)?;
    let fail_on_missing = opts.bool("json.fail-on-missing-field", false)?;
    if let Some((v, at)) = opts.take("json.ignore-parse-errors") {
        if v.eq_ignore_ascii_case("true") {
            return Err(SqlError::at(at, "not supported: json.ignore-parse-errors = true; a bad record fails the job (Weir's kafka_source can also send it to a dead-letter topic, see docs/kafka.md)"));
        }
    }
    if let Some((v, at)) = opts.take("json.timestamp-format.standard") {
        if !["SQL", "ISO-8601"].contains(&v.as_str()) {
            return Err(SqlError::at(at, "json.timestamp-format.standard is SQL or ISO-8601"));
        }
    }
    let mut columns = Vec::new();
    let mut metadata = Map::new();
    let value_columns: Vec<(String, SqlType, bool)> =
        physical(t).into_iter().filter(|(n, _, _)| !(except_key && key_fields.contains(n))).collect();
    match format.as_str() {
        "json" | "debezium-json" => {
            let mut schema = Vec::new();
            for (n, ty, not_null) in &value_columns {
                let Some(jt) = ty.json_type() else {
                    return Err(SqlError::at(
                        t.name.span.start,
                        format!("not supported: column `{n}` of type {ty} in the kafka connector's {format} format"),
                    ));
                };
                schema.push(json!({"name": n, "type": jt, "nullable": !(*not_null || fail_on_missing)}));
                columns.push(Col::typed(n.clone(), ty.clone()));
            }
            c.insert("schema".into(), json!(schema));
            if format == "json" {
                c.insert("format".into(), json!("json"));
            } else {
                debezium_options(opts, &mut c)?;
            }
        }
        "raw" => {
            let [(n, ty, _)] = &value_columns[..] else {
                return Err(SqlError::at(t.name.span.start, "the raw format reads one STRING column"));
            };
            if *ty != SqlType::String {
                return Err(SqlError::at(
                    t.name.span.start,
                    format!("the raw format reads one STRING column, `{n}` is {ty}"),
                ));
            }
            c.insert("format".into(), json!("string"));
            // Weir's string format calls the column `value`; renamed below.
            columns.push(Col::typed("value", SqlType::String));
        }
        other => return Err(unsupported_format(t, other)),
    }
    if except_key {
        let [k] = &key_fields[..] else { unreachable!("checked by key_options") };
        metadata.insert("key".into(), json!(k));
        columns.push(Col::typed(k.clone(), SqlType::String));
    }
    for col in &t.columns {
        if let ColumnKind::Metadata { ty, key } = &col.kind {
            let key = key.clone().unwrap_or_else(|| col.name.value.clone());
            let (weir, want) = match key.as_str() {
                "topic" => ("topic", SqlType::String),
                "partition" => ("partition", SqlType::Int),
                "offset" => ("offset", SqlType::BigInt),
                "timestamp" => ("timestamp", SqlType::Timestamp),
                "key" => ("key", SqlType::String),
                other => {
                    return Err(SqlError::at(
                        col.name.span.start,
                        format!(
                            "not supported: kafka metadata '{other}' (use topic, partition, offset, timestamp or key)"
                        ),
                    ))
                }
            };
            let _ = ty;
            metadata.insert(weir.into(), json!(col.name.value));
            columns.push(Col::typed(col.name.value.clone(), want));
        }
    }
    if !metadata.is_empty() {
        c.insert("metadata".into(), Value::Object(metadata));
    }
    // Weir's string format calls its column `value`: renamed to the declared one.
    let renames = match &value_columns[..] {
        [(n, _, _)] if format == "raw" && n != "value" => vec![("value".to_string(), n.clone())],
        _ => Vec::new(),
    };
    Ok((c, columns, renames))
}

/// `scan.bounded.mode`: `latest-offset` ends the source at the ends it
/// sees when it starts.
fn bounded_option(opts: &mut Options<'_>, c: &mut Map<String, Value>) -> Result<(), SqlError> {
    match opts.take("scan.bounded.mode") {
        None => {}
        Some((m, at)) => match m.as_str() {
            "latest-offset" => {
                c.insert("stop".into(), json!("latest"));
            }
            "unbounded" => {}
            other => {
                return Err(SqlError::at(
                    at,
                    format!("not supported: scan.bounded.mode '{other}' (use latest-offset or unbounded)"),
                ))
            }
        },
    }
    Ok(())
}

/// The `debezium-json` format: a changelog whose change kinds go to the
/// hidden column [`OP`].
fn debezium_options(opts: &mut Options<'_>, c: &mut Map<String, Value>) -> Result<(), SqlError> {
    c.insert("format".into(), json!("debezium_json"));
    c.insert("op_column".into(), json!(OP));
    if opts.bool("debezium-json.schema-include", false)? {
        c.insert("schema_include".into(), json!(true));
    }
    if let Some((v, at)) = opts.take("debezium-json.ignore-parse-errors") {
        if v.eq_ignore_ascii_case("true") {
            return Err(SqlError::at(at, "not supported: debezium-json.ignore-parse-errors = true; a bad change event fails the job (Weir's kafka_source can also send it to a dead-letter topic, see docs/kafka.md)"));
        }
    }
    if let Some((v, at)) = opts.take("debezium-json.timestamp-format.standard") {
        if !["SQL", "ISO-8601"].contains(&v.as_str()) {
            return Err(SqlError::at(at, "debezium-json.timestamp-format.standard is SQL or ISO-8601"));
        }
    }
    Ok(())
}

fn format_option(opts: &mut Options<'_>) -> Result<String, SqlError> {
    let format = opts.value("format");
    let value_format = opts.value("value.format");
    match (format, value_format) {
        (Some(f), None) | (None, Some(f)) => Ok(f),
        (Some(_), Some(_)) => {
            Err(SqlError::at(opts.table.name.span.start, "give 'format' or 'value.format', not both"))
        }
        (None, None) => Err(SqlError::at(
            opts.table.name.span.start,
            format!("table `{}` needs the option 'format' (json or raw)", opts.table.name.value),
        )),
    }
}

fn unsupported_format(t: &TableDef, f: &str) -> SqlError {
    let why = match f {
        "canal-json" | "maxwell-json" | "ogg-json" => "of the changelog formats Weir reads debezium-json",
        _ => "Weir SQL reads and writes json and raw",
    };
    SqlError::at(t.name.span.start, format!("not supported: format '{f}' ({why})"))
}

/// `key.fields` (one column, raw key format) and whether the value leaves
/// the key out (`value.fields-include` = `EXCEPT_KEY`).
fn key_options(t: &TableDef, opts: &mut Options<'_>) -> Result<(Vec<String>, bool), SqlError> {
    let fields: Vec<String> =
        opts.value("key.fields").map(|v| v.split(';').map(|s| s.trim().to_string()).collect()).unwrap_or_default();
    let key_format = opts.take("key.format");
    let include = opts.take("value.fields-include");
    if fields.is_empty() {
        return Ok((fields, false));
    }
    if let Some((f, at)) = &key_format {
        if f != "raw" {
            return Err(SqlError::at(
                *at,
                format!("not supported: key.format '{f}'; Weir reads and writes keys as text (raw)"),
            ));
        }
    }
    let [k] = &fields[..] else {
        return Err(SqlError::at(t.name.span.start, "not supported: several key.fields; a Kafka key is one column"));
    };
    match t.columns.iter().find(|c| c.name.value == *k) {
        Some(c) if matches!(c.kind, ColumnKind::Physical(SqlType::String)) => {}
        Some(_) => {
            return Err(SqlError::at(
                t.name.span.start,
                format!("the key field `{k}` must be a physical STRING column"),
            ))
        }
        None => return Err(SqlError::at(t.name.span.start, format!("key.fields names an unknown column `{k}`"))),
    }
    let except_key = match include {
        None => false,
        Some((v, at)) => match v.as_str() {
            "ALL" => false,
            "EXCEPT_KEY" => true,
            _ => return Err(SqlError::at(at, "value.fields-include is ALL or EXCEPT_KEY")),
        },
    };
    Ok((fields, except_key))
}

/// `sink.delivery-guarantee` as the sinks' `delivery`.
pub(super) fn delivery_option(opts: &mut Options<'_>, c: &mut Map<String, Value>) -> Result<(), SqlError> {
    if let Some((g, at)) = opts.take("sink.delivery-guarantee") {
        let d = match g.as_str() {
            "exactly-once" => "exactly_once",
            "at-least-once" | "none" => "at_least_once",
            other => {
                return Err(SqlError::at(
                    at,
                    format!("sink.delivery-guarantee is exactly-once, at-least-once or none, not '{other}'"),
                ))
            }
        };
        c.insert("delivery".into(), json!(d));
    }
    Ok(())
}

pub(super) fn kafka_sink(
    t: &TableDef,
    opts: &mut Options<'_>,
    columns: &[(String, SqlType)],
) -> Result<Value, SqlError> {
    let mut c = Map::new();
    c.insert("bootstrap_servers".into(), json!(opts.required("properties.bootstrap.servers")?));
    c.insert("topic".into(), json!(opts.required("topic")?));
    let format = format_option(opts)?;
    let (key_fields, except_key) = key_options(t, opts)?;
    if except_key {
        return Err(SqlError::at(
            t.name.span.start,
            "not supported: value.fields-include = EXCEPT_KEY in a sink; the value holds every column",
        ));
    }
    if let [k] = &key_fields[..] {
        c.insert("key_column".into(), json!(k));
    }
    match format.as_str() {
        "json" => {
            c.insert("format".into(), json!("json"));
        }
        "raw" => {
            let [(n, _)] = columns else {
                return Err(SqlError::at(t.name.span.start, "the raw format writes one STRING column"));
            };
            c.insert("format".into(), json!("string"));
            c.insert("value_column".into(), json!(n));
        }
        other => return Err(unsupported_format(t, other)),
    }
    delivery_option(opts, &mut c)?;
    if let Some(p) = opts.value("sink.transactional-id-prefix") {
        c.insert("transactional_id_prefix".into(), json!(p));
    }
    // `fixed` (each subtask writes one partition, keeping its order) is
    // Weir's `partitioning: subtask`; otherwise records are partitioned by
    // key like Kafka's Java client, and Flink's other choices are ignored.
    if opts.value("sink.partitioner").as_deref() == Some("fixed") {
        c.insert("partitioning".into(), json!("subtask"));
    }
    opts.take("properties.group.id");
    if let Some(props) = properties(opts)? {
        c.insert("properties".into(), props);
    }
    Ok(Value::Object(c))
}

/// Flink's `upsert-kafka` sink: each row is written under its primary key
/// (`key.format` json: the key columns as an object; raw: one STRING
/// column), a delete as a tombstone, so a compacted topic keeps each key's
/// latest row.
pub(super) fn upsert_kafka_sink(t: &TableDef, opts: &mut Options<'_>) -> Result<Value, SqlError> {
    let name = &t.name.value;
    if t.primary_key.is_empty() {
        return Err(SqlError::at(
            t.name.span.start,
            format!("upsert-kafka table `{name}` needs a PRIMARY KEY (...) NOT ENFORCED: its records are keyed by it"),
        ));
    }
    let key: Vec<String> = t.primary_key.iter().map(|k| k.value.clone()).collect();
    let mut c = Map::new();
    c.insert("bootstrap_servers".into(), json!(opts.required("properties.bootstrap.servers")?));
    c.insert("topic".into(), json!(opts.required("topic")?));
    let (key_format, at) = opts.take("key.format").ok_or_else(|| {
        SqlError::at(t.name.span.start, format!("upsert-kafka table `{name}` needs 'key.format' (json or raw)"))
    })?;
    match key_format.as_str() {
        "json" => {
            c.insert("key_columns".into(), json!(key));
        }
        "raw" => {
            let [k] = &key[..] else {
                return Err(SqlError::at(at, "key.format 'raw' writes one column: the primary key must be one column"));
            };
            c.insert("key_column".into(), json!(k));
        }
        other => return Err(SqlError::at(at, format!("not supported: key.format '{other}' (json or raw)"))),
    }
    let (value_format, at) = opts.take("value.format").ok_or_else(|| {
        SqlError::at(t.name.span.start, format!("upsert-kafka table `{name}` needs 'value.format' (json)"))
    })?;
    if value_format != "json" {
        return Err(SqlError::at(at, format!("not supported: value.format '{value_format}' (json)")));
    }
    c.insert("format".into(), json!("json"));
    if let Some((v, at)) = opts.take("value.fields-include") {
        match v.as_str() {
            "ALL" => {}
            "EXCEPT_KEY" => {
                c.insert("value_except_key".into(), json!(true));
            }
            _ => return Err(SqlError::at(at, "value.fields-include is ALL or EXCEPT_KEY")),
        }
    }
    delivery_option(opts, &mut c)?;
    if let Some(p) = opts.value("sink.transactional-id-prefix") {
        c.insert("transactional_id_prefix".into(), json!(p));
    }
    // Rows are reduced to the last change per key in each batch, and sent
    // as they come (or with the checkpoint's transaction): Flink's buffer
    // options have nothing left to do.
    opts.take("sink.buffer-flush.max-rows");
    opts.take("sink.buffer-flush.interval");
    if let Some(props) = properties(opts)? {
        c.insert("properties".into(), props);
    }
    Ok(Value::Object(c))
}

/// An `upsert-kafka` table read: `kafka_source` over its topic from the
/// earliest offset, each record an upsert of its key (a tombstone a
/// delete), the key's columns from the record key. Returns the config, the
/// source's columns (the value's, then the key's) and the primary key.
#[allow(clippy::type_complexity)]
pub(super) fn upsert_kafka_source(
    t: &TableDef,
    opts: &mut Options<'_>,
) -> Result<(Map<String, Value>, Vec<Col>, Vec<String>), SqlError> {
    let name = &t.name.value;
    if t.primary_key.is_empty() {
        return Err(SqlError::at(
            t.name.span.start,
            format!("upsert-kafka table `{name}` needs a PRIMARY KEY (...) NOT ENFORCED: its records are keyed by it"),
        ));
    }
    let key: Vec<String> = t.primary_key.iter().map(|k| k.value.clone()).collect();
    let mut c = Map::new();
    c.insert("bootstrap_servers".into(), json!(opts.required("properties.bootstrap.servers")?));
    c.insert("topic".into(), json!(opts.required("topic")?));
    if let Some(g) = opts.value("properties.group.id") {
        c.insert("group_id".into(), json!(g));
    }
    // An upsert table is its whole topic.
    c.insert("start".into(), json!("earliest"));
    bounded_option(opts, &mut c)?;
    let (key_format, at) = opts.take("key.format").ok_or_else(|| {
        SqlError::at(t.name.span.start, format!("upsert-kafka table `{name}` needs 'key.format' (json or raw)"))
    })?;
    let (value_format, value_at) = opts.take("value.format").ok_or_else(|| {
        SqlError::at(t.name.span.start, format!("upsert-kafka table `{name}` needs 'value.format' (json)"))
    })?;
    if value_format != "json" {
        return Err(SqlError::at(value_at, format!("not supported: value.format '{value_format}' (json)")));
    }
    if let Some((v, at)) = opts.take("value.fields-include") {
        // Either way the key's columns are read from the key.
        if v != "ALL" && v != "EXCEPT_KEY" {
            return Err(SqlError::at(at, "value.fields-include is ALL or EXCEPT_KEY"));
        }
    }
    let json_type = |n: &str, ty: &SqlType| {
        ty.json_type().ok_or_else(|| {
            SqlError::at(
                t.name.span.start,
                format!("not supported: column `{n}` of type {ty} in an upsert-kafka table"),
            )
        })
    };
    let (mut schema, mut key_schema) = (Vec::new(), Vec::new());
    let (mut columns, mut key_columns) = (Vec::new(), Vec::new());
    for (n, ty, _) in physical(t) {
        let spec = json!({"name": n, "type": json_type(&n, &ty)?, "nullable": true});
        if key.contains(&n) {
            key_schema.push((n.clone(), spec));
            key_columns.push(Col::typed(n, ty));
        } else {
            schema.push(spec);
            columns.push(Col::typed(n, ty));
        }
    }
    // The key object's fields in the primary key's order.
    key_schema.sort_by_key(|(n, _)| key.iter().position(|k| k == n));
    let key_schema: Vec<Value> = key_schema.into_iter().map(|(_, s)| s).collect();
    match key_format.as_str() {
        "json" => {}
        "raw" if key_columns.len() == 1 && key_columns[0].ty == Some(SqlType::String) => {}
        "raw" => return Err(SqlError::at(at, "key.format 'raw' reads one STRING column: the primary key must be one")),
        other => return Err(SqlError::at(at, format!("not supported: key.format '{other}' (json or raw)"))),
    }
    if t.columns.iter().any(|c| matches!(c.kind, ColumnKind::Metadata { .. })) {
        return Err(SqlError::at(t.name.span.start, "not supported: metadata columns in an upsert-kafka table"));
    }
    c.insert("format".into(), json!("json"));
    c.insert("schema".into(), json!(schema));
    c.insert("upsert_key".into(), json!({"format": key_format, "columns": key_schema}));
    c.insert("op_column".into(), json!(OP));
    if let Some(props) = properties(opts)? {
        c.insert("properties".into(), props);
    }
    columns.extend(key_columns);
    Ok((c, columns, key))
}

/// Flink's `upsert-kafka` options Weir takes.
pub(super) const UPSERT_KAFKA_OPTIONS: &[&str] = &[
    "connector",
    "topic",
    "properties.bootstrap.servers",
    "key.format",
    "value.format",
    "value.fields-include",
    "json.timestamp-format.standard",
    "scan.bounded.mode",
    "sink.delivery-guarantee",
    "sink.transactional-id-prefix",
    "sink.buffer-flush.max-rows",
    "sink.buffer-flush.interval",
];

/// The `properties.*` options as librdkafka properties. Flink passes them to
/// Kafka's Java client; the security settings Flink users write for it
/// become librdkafka's: `sasl.jaas.config`'s user name and password become
/// `sasl.username` and `sasl.password`, a PEM trust store becomes
/// `ssl.ca.location`, and an empty endpoint identification algorithm turns
/// host name checks off as it does in Java. Java key and trust stores
/// (JKS, PKCS12) are refused: librdkafka reads PEM.
fn properties(opts: &mut Options<'_>) -> Result<Option<Value>, SqlError> {
    let mut props: std::collections::BTreeMap<String, String> = opts.prefixed("properties.").into_iter().collect();
    if let Some(jaas) = props.remove("sasl.jaas.config") {
        let field = |name: &str| {
            let start = jaas.find(&format!("{name}=\""))? + name.len() + 2;
            let len = jaas[start..].find('"')?;
            Some(jaas[start..start + len].to_string())
        };
        let (Some(user), Some(password)) = (field("username"), field("password")) else {
            return Err(SqlError::script(
                "properties.sasl.jaas.config needs username=\"...\" and password=\"...\" (PlainLoginModule or ScramLoginModule)",
            ));
        };
        props.insert("sasl.username".into(), user);
        props.insert("sasl.password".into(), password);
    }
    let trust_type = props.remove("ssl.truststore.type").unwrap_or_else(|| "JKS".into());
    if let Some(location) = props.remove("ssl.truststore.location") {
        if !trust_type.eq_ignore_ascii_case("PEM") {
            return Err(SqlError::script(format!(
                "properties.ssl.truststore.location is a {trust_type} store, which librdkafka cannot read: convert it to PEM (properties.ssl.truststore.type = 'PEM') or set properties.ssl.ca.location"
            )));
        }
        props.insert("ssl.ca.location".into(), location);
    }
    if let Some(pem) = props.remove("ssl.keystore.location") {
        if !props.remove("ssl.keystore.type").is_some_and(|t| t.eq_ignore_ascii_case("PEM")) {
            return Err(SqlError::script(
                "properties.ssl.keystore.location must be PEM for librdkafka: set properties.ssl.certificate.location and properties.ssl.key.location instead",
            ));
        }
        props.insert("ssl.certificate.location".into(), pem.clone());
        props.insert("ssl.key.location".into(), pem);
    }
    if props.get("ssl.endpoint.identification.algorithm").is_some_and(|a| a.is_empty()) {
        props.insert("ssl.endpoint.identification.algorithm".into(), "none".into());
    }
    if props.is_empty() {
        return Ok(None);
    }
    Ok(Some(Value::Object(props.into_iter().map(|(k, v)| (k, json!(v))).collect())))
}
