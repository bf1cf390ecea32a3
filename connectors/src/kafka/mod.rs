//! Apache Kafka, through librdkafka (`rdkafka`).
//!
//! - [`source`]: `kafka_source` — partitions spread over subtasks, offsets in
//!   every checkpoint and rewound on restore, per-partition watermarks with
//!   idleness, JSON or raw records, a dead-letter topic for records that do
//!   not decode.
//! - [`sink`]: `kafka_sink` — at-least-once (flush at every barrier) or
//!   exactly-once (one Kafka transaction per checkpoint epoch, committed when
//!   the checkpoint completes, replayable from the checkpoint when a crash
//!   falls between completion and commit; see `docs/kafka.md`).
//! - [`format`]: JSON decoding against a declared schema, and encoding.
//! - [`debezium`]: Debezium's change events read as a changelog.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use weir_runtime::error::OperatorError;
use weir_runtime::operators::PlanContext;
use weir_runtime::PlanError;

pub mod debezium;
pub mod format;
pub mod security;
pub mod sink;
pub mod source;

/// Connection settings shared by the source and the sink (each config
/// spells the fields out: serde cannot flatten into `deny_unknown_fields`).
#[derive(Debug, Clone)]
pub struct Connection {
    /// `host:port[,host:port...]` of the brokers.
    pub bootstrap_servers: String,
    /// How long to wait for the brokers when opening (metadata, transactions).
    pub connect_timeout: Duration,
    /// librdkafka properties passed through as they are.
    pub properties: BTreeMap<String, String>,
    /// TLS and SASL towards the brokers.
    pub security: Option<security::KafkaSecurity>,
}

/// `connect_timeout` when a job leaves it out.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Properties Weir sets itself; a job may not override them.
const RESERVED: &[&str] = &[
    "bootstrap.servers",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "isolation.level",
    "transactional.id",
    "enable.idempotence",
    "group.id",
];

impl Connection {
    /// Checks the settings at plan time.
    pub fn validate(&self, ctx: &PlanContext<'_>) -> Result<(), PlanError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(ctx.error("bootstrap_servers must name at least one broker").field("config.bootstrap_servers"));
        }
        if let Some(k) = self.properties.keys().find(|k| RESERVED.contains(&k.as_str())) {
            return Err(ctx
                .error(format!("property `{k}` is set by Weir itself; use the operator's own fields"))
                .field(format!("config.properties.{k}")));
        }
        if let Some(s) = &self.security {
            s.validate().map_err(|(field, msg)| ctx.error(msg).field(field))?;
        }
        Ok(())
    }

    /// A client configuration with the brokers, the pass-through
    /// properties and the security settings (passwords read here, on the
    /// task manager).
    pub fn client_config(&self) -> Result<ClientConfig, OperatorError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        if let Some(s) = &self.security {
            s.apply(&mut c).map_err(|message| OperatorError::External { system: "kafka", message })?;
        }
        Ok(c)
    }
}

/// Defaults that a job's `properties` may override.
pub(crate) trait ConfigExt {
    /// Sets `key` unless the configuration has it already.
    fn set_if_unset(&mut self, key: &str, value: impl Into<String>) -> &mut Self;
}

impl ConfigExt for ClientConfig {
    fn set_if_unset(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        if self.get(key).is_none() {
            self.set(key, value.into());
        }
        self
    }
}

/// An operator error for a Kafka failure, naming what was being done.
pub fn kafka_error(what: impl std::fmt::Display, e: KafkaError) -> OperatorError {
    OperatorError::External { system: "kafka", message: format!("{what}: {e}") }
}
