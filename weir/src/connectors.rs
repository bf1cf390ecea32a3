//! Sources and sinks of typed streams: the connectors every job file uses
//! (Kafka, the generator, files, stdout), configured in code. A typed
//! source reads the columns its record type names; a typed sink writes the
//! record's fields as columns of their names.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use arrow::datatypes::{DataType, FieldRef};
use serde_json::{json, Value};
use weir_runtime::operators::millis;

/// Where a stream's records come from.
#[derive(Debug, Clone)]
pub struct Source(SourceKind);

#[derive(Debug, Clone)]
enum SourceKind {
    Kafka(KafkaSource),
    Raw { kind: String, config: Value },
    Invalid(String),
}

impl Source {
    /// The benchmark's bid generator (`datagen`): records with fields
    /// `auction`, `bidder`, `price`, `event_time_ms` (all `i64`) and
    /// `channel` (`String`); `events` in total (`None`: forever), at most
    /// `rate` per second over all subtasks (`None`: as fast as it can).
    pub fn datagen(events: Option<u64>, rate: Option<f64>) -> Self {
        let mut config = json!({});
        if let Some(n) = events {
            config["events"] = json!(n);
        }
        if let Some(r) = rate {
            config["rate"] = json!(r);
        }
        Self::raw("datagen", config)
    }

    /// Records read from Kafka, one JSON object per record value.
    pub fn kafka(source: KafkaSource) -> Self {
        Self(SourceKind::Kafka(source))
    }

    /// Any source kind of the registry with its configuration as a job file
    /// writes it; its columns must hold the record type's fields.
    pub fn raw(kind: &str, config: Value) -> Self {
        Self(SourceKind::Raw { kind: kind.to_string(), config })
    }

    pub(crate) fn invalid(message: String) -> Self {
        Self(SourceKind::Invalid(message))
    }

    /// The operator kind and configuration reading records of `fields`.
    pub(crate) fn config(&self, fields: &[FieldRef]) -> Result<(String, Value), String> {
        match &self.0 {
            SourceKind::Raw { kind, config } => Ok((kind.clone(), config.clone())),
            SourceKind::Invalid(message) => Err(message.clone()),
            SourceKind::Kafka(k) => Ok(("kafka_source".into(), k.config(fields)?)),
        }
    }
}

/// Where a Kafka source starts reading partitions it has no checkpointed
/// position for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The earliest offset.
    Earliest,
    /// The end of each partition when the job starts.
    Latest,
    /// The consumer group's committed offsets (earliest where none).
    Committed,
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// A Kafka source's configuration (see the job-file reference of
/// `kafka_source` for each setting).
#[derive(Debug, Clone)]
pub struct KafkaSource {
    bootstrap_servers: String,
    topics: Vec<String>,
    group_id: Option<String>,
    start: StartFrom,
    bounded: bool,
    dead_letter_topic: Option<String>,
    properties: BTreeMap<String, String>,
    batch_size: Option<usize>,
}

impl KafkaSource {
    /// Reads `topic` from the brokers at `bootstrap_servers`.
    pub fn new(bootstrap_servers: &str, topic: &str) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.to_string(),
            topics: vec![topic.to_string()],
            group_id: None,
            start: StartFrom::Earliest,
            bounded: false,
            dead_letter_topic: None,
            properties: BTreeMap::new(),
            batch_size: None,
        }
    }

    /// Reads `topic` too.
    pub fn topic(mut self, topic: &str) -> Self {
        self.topics.push(topic.to_string());
        self
    }

    /// The consumer group offsets are committed to (default `weir-<uid>`).
    pub fn group_id(mut self, group: &str) -> Self {
        self.group_id = Some(group.to_string());
        self
    }

    /// Where partitions without a checkpointed position start (default: earliest).
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    /// Stops at each partition's end as seen when the job starts.
    pub fn bounded(mut self) -> Self {
        self.bounded = true;
        self
    }

    /// Records whose value does not decode go to `topic` rather than failing the job.
    pub fn dead_letter_topic(mut self, topic: &str) -> Self {
        self.dead_letter_topic = Some(topic.to_string());
        self
    }

    /// A librdkafka consumer property.
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.properties.insert(key.to_string(), value.to_string());
        self
    }

    /// Most records per batch.
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = Some(rows);
        self
    }

    fn config(&self, fields: &[FieldRef]) -> Result<Value, String> {
        let schema: Vec<Value> = fields
            .iter()
            .map(|f| {
                let ty = match f.data_type() {
                    DataType::Utf8 | DataType::LargeUtf8 => "string",
                    DataType::Int32 => "int32",
                    DataType::Int64 => "int64",
                    DataType::Float64 => "float64",
                    DataType::Boolean => "boolean",
                    other => {
                        return Err(format!(
                            "field `{}` has type {other}; records read from Kafka have fields of String, i32, i64, f64 and bool (and their Options)",
                            f.name()
                        ))
                    }
                };
                Ok(json!({"name": f.name(), "type": ty, "nullable": f.is_nullable()}))
            })
            .collect::<Result<_, String>>()?;
        let mut c = json!({
            "bootstrap_servers": self.bootstrap_servers,
            "topics": self.topics,
            "format": "json",
            "schema": schema,
            "properties": self.properties,
        });
        c["start"] = match self.start {
            StartFrom::Earliest => json!("earliest"),
            StartFrom::Latest => json!("latest"),
            StartFrom::Committed => json!("committed"),
            StartFrom::Timestamp(t) => json!({ "timestamp": t }),
        };
        if let Some(g) = &self.group_id {
            c["group_id"] = json!(g);
        }
        if self.bounded {
            c["stop"] = json!("latest");
        }
        if let Some(t) = &self.dead_letter_topic {
            c["on_error"] = json!("dead_letter");
            c["dead_letter_topic"] = json!(t);
        }
        if let Some(n) = self.batch_size {
            c["batch_size"] = json!(n);
        }
        Ok(c)
    }
}

/// Where a stream's records go.
#[derive(Debug, Clone)]
pub struct Sink(SinkKind);

#[derive(Debug, Clone)]
enum SinkKind {
    Kafka(KafkaSink),
    Raw { kind: String, config: Value },
}

impl Sink {
    /// Records written to Kafka, one JSON object each.
    pub fn kafka(sink: KafkaSink) -> Self {
        Self(SinkKind::Kafka(sink))
    }

    /// Records printed to standard output as JSON lines.
    pub fn stdout() -> Self {
        Self::raw("stdout", json!({}))
    }

    /// Records counted and dropped.
    pub fn discard() -> Self {
        Self::raw("discard", json!({}))
    }

    /// Records written as JSON lines to part files under `dir`, committed
    /// with checkpoints.
    pub fn jsonl_file(dir: impl AsRef<Path>) -> Self {
        Self::raw("jsonl_file", json!({ "path": dir.as_ref() }))
    }

    /// Any sink kind of the registry with its configuration as a job file
    /// writes it.
    pub fn raw(kind: &str, config: Value) -> Self {
        Self(SinkKind::Raw { kind: kind.to_string(), config })
    }

    pub(crate) fn config(&self, fields: &[FieldRef]) -> Result<(String, Value), String> {
        match &self.0 {
            SinkKind::Raw { kind, config } => Ok((kind.clone(), config.clone())),
            SinkKind::Kafka(k) => Ok(("kafka_sink".into(), k.config(fields)?)),
        }
    }
}

/// A Kafka sink's configuration (see the job-file reference of `kafka_sink`).
#[derive(Debug, Clone)]
pub struct KafkaSink {
    bootstrap_servers: String,
    topic: String,
    key_field: Option<String>,
    exactly_once: bool,
    transactional_id_prefix: Option<String>,
    transaction_timeout: Option<Duration>,
    properties: BTreeMap<String, String>,
}

impl KafkaSink {
    /// Writes to `topic` on the brokers at `bootstrap_servers`, at least once.
    pub fn new(bootstrap_servers: &str, topic: &str) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.to_string(),
            topic: topic.to_string(),
            key_field: None,
            exactly_once: false,
            transactional_id_prefix: None,
            transaction_timeout: None,
            properties: BTreeMap::new(),
        }
    }

    /// Writes in Kafka transactions committed with checkpoints: readers
    /// with `isolation.level=read_committed` see each record once.
    pub fn exactly_once(mut self) -> Self {
        self.exactly_once = true;
        self
    }

    /// The record field written as the Kafka key (text or integer).
    pub fn key_field(mut self, field: &str) -> Self {
        self.key_field = Some(field.to_string());
        self
    }

    /// Prefix of the transactional ids (default `weir-<uid>`).
    pub fn transactional_id_prefix(mut self, prefix: &str) -> Self {
        self.transactional_id_prefix = Some(prefix.to_string());
        self
    }

    /// Transaction timeout (longer than the checkpoint interval).
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.transaction_timeout = Some(timeout);
        self
    }

    /// A librdkafka producer property.
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.properties.insert(key.to_string(), value.to_string());
        self
    }

    fn config(&self, fields: &[FieldRef]) -> Result<Value, String> {
        let mut c = json!({
            "bootstrap_servers": self.bootstrap_servers,
            "topic": self.topic,
            "format": "json",
            "delivery": if self.exactly_once { "exactly_once" } else { "at_least_once" },
            "properties": self.properties,
        });
        if let Some(k) = &self.key_field {
            if !fields.iter().any(|f| f.name() == k) {
                return Err(format!("the Kafka key field `{k}` is not a field of the records"));
            }
            c["key_column"] = json!(k);
        }
        if let Some(p) = &self.transactional_id_prefix {
            c["transactional_id_prefix"] = json!(p);
        }
        if let Some(t) = self.transaction_timeout {
            c["transaction_timeout"] = json!(format!("{}ms", millis(t)));
        }
        Ok(c)
    }
}
