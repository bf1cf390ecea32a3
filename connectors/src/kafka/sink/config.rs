//! The configuration of `kafka_sink`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use weir_runtime::operators::duration;

use super::super::format::Format;
use super::super::{Connection, DEFAULT_CONNECT_TIMEOUT};
pub use crate::delivery::Delivery;

/// How records are spread over the topic's partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioning {
    /// By key (murmur2, as Java clients do); keyless records are spread.
    #[default]
    Key,
    /// Subtask `i` writes partition `i mod partitions` (keeps each
    /// subtask's order in one partition).
    Subtask,
}

/// The configuration of `kafka_sink`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Brokers, `host:port[,...]`.
    pub bootstrap_servers: String,
    /// How long to wait for the brokers (flushes, transaction calls).
    #[serde(default, with = "duration::option")]
    pub connect_timeout: Option<Duration>,
    /// librdkafka properties passed through.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// TLS and SASL towards the brokers.
    #[serde(default)]
    pub security: Option<super::super::security::KafkaSecurity>,
    /// Output topic.
    pub topic: String,
    /// `json` (every column as an object), `string` or `raw` (`value_column`).
    #[serde(default)]
    pub format: Format,
    /// Column written as the record key (text or integer); absent: no key.
    #[serde(default)]
    pub key_column: Option<String>,
    /// Columns written as the record key, as a JSON object (instead of
    /// `key_column`): an upsert topic's key of several columns.
    #[serde(default)]
    pub key_columns: Vec<String>,
    /// A text column holding each row's change (`+I`, `+U`, `-U`, `-D`):
    /// the sink writes an upsert topic, `-D` (and a `-U` no later change of
    /// its key in the same batch replaces) as a tombstone. Needs a key; the
    /// column itself is not written.
    #[serde(default)]
    pub op_column: Option<String>,
    /// With `json`: leave the key columns out of the value (Flink's
    /// `value.fields-include` = `EXCEPT_KEY`).
    #[serde(default)]
    pub value_except_key: bool,
    /// Column written as the value with `string` and `raw` (default `value`).
    #[serde(default)]
    pub value_column: Option<String>,
    /// `at_least_once` (default) or `exactly_once`.
    #[serde(default)]
    pub delivery: Delivery,
    /// `key` (default) or `subtask`.
    #[serde(default)]
    pub partitioning: Partitioning,
    /// Prefix of the transactional ids (default `weir-<uid>`); must be unique
    /// among the jobs writing to a cluster.
    #[serde(default)]
    pub transactional_id_prefix: Option<String>,
    /// Transaction timeout; longer than the checkpoint interval and at most
    /// the broker's `transaction.max.timeout.ms` (15 min by default).
    #[serde(default, with = "duration::option")]
    pub transaction_timeout: Option<Duration>,
}

pub(super) const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(600);
pub(super) const PRODUCERS: &str = "producers";
pub(super) const EPOCHS: &str = "epochs";

impl SinkConfig {
    pub(super) fn connection(&self) -> Connection {
        Connection {
            bootstrap_servers: self.bootstrap_servers.clone(),
            connect_timeout: self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            properties: self.properties.clone(),
            security: self.security.clone(),
        }
    }

    pub(super) fn timeout(&self) -> Duration {
        self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }

    pub(super) fn transactional_id(&self, uid: &str, subtask: u32) -> String {
        let prefix = self.transactional_id_prefix.clone().unwrap_or_else(|| format!("weir-{uid}"));
        format!("{prefix}-{subtask}")
    }
}
