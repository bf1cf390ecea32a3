//! The configuration of `kafka_source`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;
use weir_runtime::keygroup::hash_bytes;
use weir_runtime::operators::duration;

use super::super::format::{value_fields, ColumnSpec, Format};
use super::super::{Connection, DEFAULT_CONNECT_TIMEOUT};

/// Where a partition without a checkpointed position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StartMode {
    /// The partition's earliest offset.
    #[default]
    Earliest,
    /// The partition's end at the time the job starts.
    Latest,
    /// The consumer group's committed offset (earliest when there is none).
    Committed,
    /// The first record at or after this time (milliseconds since the epoch).
    Timestamp(i64),
}

/// Where a bounded source stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMode {
    /// At each partition's end as seen when the source opens.
    Latest,
}

/// What happens to a record whose value does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Fail the job, naming the record.
    #[default]
    Fail,
    /// Send it to `dead_letter_topic` and go on.
    DeadLetter,
}

/// Names of the optional columns that carry a record's metadata.
/// The key of an upsert topic: its columns, read from the record key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertKey {
    /// `json`: an object of the columns; `raw`: one string column, the key's text.
    pub format: KeyFormat,
    pub columns: Vec<ColumnSpec>,
}

/// How an upsert key is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyFormat {
    Json,
    Raw,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataColumns {
    /// The record key as UTF-8 text.
    #[serde(default)]
    pub key: Option<String>,
    /// The topic.
    #[serde(default)]
    pub topic: Option<String>,
    /// The partition.
    #[serde(default)]
    pub partition: Option<String>,
    /// The offset.
    #[serde(default)]
    pub offset: Option<String>,
    /// The record timestamp.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// The headers as a JSON object of strings.
    #[serde(default)]
    pub headers: Option<String>,
}

/// Per-partition watermarks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkSpec {
    /// Event-time column: int64 milliseconds or a timestamp.
    pub column: String,
    /// How late a record may be relative to the newest of its partition.
    #[serde(default, with = "duration::option")]
    pub max_out_of_orderness: Option<Duration>,
    /// A partition silent this long stops holding back the watermark.
    #[serde(default, with = "duration::option")]
    pub idle_timeout: Option<Duration>,
    /// Period between watermarks.
    #[serde(default, with = "duration::option")]
    pub interval: Option<Duration>,
}

/// The configuration of `kafka_source`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Brokers, `host:port[,...]`.
    pub bootstrap_servers: String,
    /// How long to wait for the brokers when opening.
    #[serde(default, with = "duration::option")]
    pub connect_timeout: Option<Duration>,
    /// librdkafka properties passed through.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// TLS and SASL towards the brokers.
    #[serde(default)]
    pub security: Option<super::super::security::KafkaSecurity>,
    /// One topic...
    #[serde(default)]
    pub topic: Option<String>,
    /// ...or several...
    #[serde(default)]
    pub topics: Vec<String>,
    /// ...or every topic whose whole name matches this regular expression
    /// (internal topics, named `__…`, excepted), found again by every
    /// partition discovery, so topics created later are read too.
    #[serde(default)]
    pub topic_pattern: Option<String>,
    /// Consumer group offsets are committed to on checkpoint completion (and
    /// read by `start: committed`); default `weir-<uid>`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Start position of partitions without a checkpointed one.
    #[serde(default)]
    pub start: StartMode,
    /// Stop position; absent: read forever.
    #[serde(default)]
    pub stop: Option<StopMode>,
    /// Value format.
    #[serde(default)]
    pub format: Format,
    /// Columns of the `json` format (of the rows of `debezium_json`).
    #[serde(default)]
    pub schema: Vec<ColumnSpec>,
    /// `debezium_json`: the column holding each row's change kind (`+I`,
    /// `-U`, `+U`, `-D`); default `op`.
    #[serde(default)]
    pub op_column: Option<String>,
    /// `debezium_json`: each event is inside `"payload"`, beside its schema.
    #[serde(default)]
    pub schema_include: bool,
    /// Records are upserts by their key (a record without a value deletes
    /// its key), read as rows with a change kind in `op_column`.
    #[serde(default)]
    pub upsert_key: Option<UpsertKey>,
    /// Metadata columns.
    #[serde(default)]
    pub metadata: MetadataColumns,
    /// Per-partition watermarks.
    #[serde(default)]
    pub watermark: Option<WatermarkSpec>,
    /// Bad records: fail or dead-letter.
    #[serde(default)]
    pub on_error: OnError,
    /// Topic for bad records.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Period of partition discovery; `0s` turns it off.
    #[serde(default, with = "duration::option")]
    pub partition_discovery: Option<Duration>,
    /// Most records per batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_batch_size() -> usize {
    8192
}

pub(super) const DEFAULT_DISCOVERY: Duration = Duration::from_secs(10);
pub(super) const DEFAULT_WATERMARK_INTERVAL: Duration = Duration::from_millis(200);
/// How long an empty poll waits before the source is polled again.
pub(super) const EMPTY_POLL_WAIT: Duration = Duration::from_millis(2);
/// Least time between two warnings about transient consumer errors.
pub(super) const ERROR_LOG_PERIOD: Duration = Duration::from_secs(5);
/// State name of partition positions (and of `stop` ends).
pub(super) const OFFSETS: &str = "offsets";
/// State name of the entry each subtask writes so that a restore knows it resumes.
pub(super) const RUNNING: &str = "running";
/// State name of the stop offsets of a bounded source, fixed at its first start.
pub(super) const ENDS: &str = "ends";

impl SourceConfig {
    pub(super) fn connection(&self) -> Connection {
        Connection {
            bootstrap_servers: self.bootstrap_servers.clone(),
            connect_timeout: self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            properties: self.properties.clone(),
            security: self.security.clone(),
        }
    }

    pub(super) fn topics(&self) -> Vec<String> {
        self.topic.iter().chain(self.topics.iter()).cloned().collect()
    }

    /// The compiled `topic_pattern`, matching whole names.
    pub(super) fn pattern(&self) -> Result<Option<regex::Regex>, String> {
        self.topic_pattern
            .as_deref()
            .map(|p| {
                regex::Regex::new(&format!("^(?:{p})$"))
                    .map_err(|e| format!("topic_pattern `{p}` is not a regular expression: {e}"))
            })
            .transpose()
    }

    /// The change-kind column of a changelog format or of upserts.
    pub(super) fn op_column(&self) -> Option<&str> {
        (self.format == Format::DebeziumJson || self.upsert_key.is_some())
            .then(|| self.op_column.as_deref().unwrap_or("op"))
    }

    /// The columns of an upsert key (never null: a record's key has them).
    pub(super) fn key_fields(&self) -> Result<Vec<Field>, String> {
        let Some(u) = &self.upsert_key else { return Ok(Vec::new()) };
        if u.columns.is_empty() {
            return Err("an upsert key needs at least one column".into());
        }
        Ok(value_fields(Format::Json, &u.columns)?.into_iter().map(|f| f.with_nullable(false)).collect())
    }

    pub(super) fn group_id(&self, uid: &str) -> String {
        self.group_id.clone().unwrap_or_else(|| format!("weir-{uid}"))
    }

    /// The output schema: value columns, then metadata columns.
    pub(super) fn schema(&self) -> Result<SchemaRef, (String, String)> {
        let mut fields = value_fields(self.format, &self.schema).map_err(|m| ("config.schema".to_string(), m))?;
        if let Some(u) = &self.upsert_key {
            // A delete has only its key: the value's columns may be null.
            fields = fields.into_iter().map(|f| f.with_nullable(true)).collect();
            for f in self.key_fields().map_err(|m| ("config.upsert_key.columns".to_string(), m))? {
                if fields.iter().any(|v| v.name() == f.name()) {
                    return Err((
                        "config.upsert_key.columns".into(),
                        format!("column `{}` is in the schema too; the key's columns come from the key", f.name()),
                    ));
                }
                fields.push(f);
            }
            if u.format == KeyFormat::Raw && !matches!(&u.columns[..], [c] if c.ty == "string") {
                return Err(("config.upsert_key".into(), "a raw key is one string column".into()));
            }
        }
        let m = &self.metadata;
        let extra = [
            (&m.key, DataType::Utf8, true, "key"),
            (&m.topic, DataType::Utf8, false, "topic"),
            (&m.partition, DataType::Int32, false, "partition"),
            (&m.offset, DataType::Int64, false, "offset"),
            (&m.timestamp, DataType::Timestamp(TimeUnit::Millisecond, None), true, "timestamp"),
            (&m.headers, DataType::Utf8, false, "headers"),
        ];
        for (name, dt, nullable, what) in extra {
            if let Some(name) = name {
                if fields.iter().any(|f| f.name() == name) {
                    return Err((format!("config.metadata.{what}"), format!("column `{name}` already exists")));
                }
                fields.push(Field::new(name, dt, nullable));
            }
        }
        if let Some(op) = self.op_column() {
            if fields.iter().any(|f| f.name() == op) {
                return Err(("config.op_column".into(), format!("column `{op}` already exists")));
            }
            fields.push(Field::new(op, DataType::Utf8, false));
        }
        Ok(Arc::new(Schema::new(fields)))
    }
}

/// Subtask of `parallelism` that reads `partition` of `topic`.
pub fn partition_owner(topic: &str, partition: i32, parallelism: u32) -> u32 {
    let p = u64::from(parallelism);
    ((hash_bytes(topic.as_bytes()) % p + partition as u64 % p) % p) as u32
}
