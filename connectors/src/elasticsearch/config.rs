//! The configuration of `elasticsearch_sink`: which cluster, which index,
//! how documents are identified, and how bulk requests are flushed and
//! retried.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use weir_runtime::operators::duration;

/// The configuration of `elasticsearch_sink`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EsConfig {
    /// Nodes of the cluster, `http://host:9200` or `https://…`; requests go
    /// to the first that answers.
    pub hosts: Vec<String>,
    /// The index: a name, or a pattern with `{column}` (the column's value)
    /// and `{column|yyyy-MM-dd}` (a timestamp column's date) parts, e.g.
    /// `web-events-{ts|yyyy-MM-dd}`.
    pub index: String,
    /// Columns whose values, joined by `key_delimiter`, make each document's
    /// `_id`: a replay overwrites the same documents. Absent: the cluster
    /// assigns ids (at least once).
    #[serde(default)]
    pub key: Vec<String>,
    /// What joins the key columns' values into an id.
    #[serde(default = "default_delimiter")]
    pub key_delimiter: String,
    /// A text column holding each row's change kind, as Flink writes them:
    /// `+I`/`+U` index, `-D` and `-U` delete (a `+U` of the key written with the `-U` wins). It is not written.
    #[serde(default)]
    pub op_column: Option<String>,
    /// Login name (HTTP basic authentication).
    #[serde(default)]
    pub username: Option<String>,
    /// The password, written in the job (prefer `password_env` or `password_file`).
    #[serde(default)]
    pub password: Option<String>,
    /// An environment variable of the task manager holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file on the task manager holding the password.
    #[serde(default)]
    pub password_file: Option<String>,
    /// Send a bulk request when this many actions are buffered.
    #[serde(default = "default_max_actions")]
    pub bulk_flush_max_actions: usize,
    /// Send a bulk request when the buffered actions take this many bytes.
    #[serde(default = "default_max_bytes")]
    pub bulk_flush_max_bytes: usize,
    /// Send buffered actions at least this often.
    #[serde(default = "default_interval", with = "duration")]
    pub bulk_flush_interval: Duration,
    /// Retries of actions the cluster turned away for now (429, 5xx) and of
    /// requests that failed on the way.
    #[serde(default)]
    pub backoff: Backoff,
    /// An index for documents the cluster refuses (a mapping conflict, a
    /// malformed value): each is written there with the error, and the job
    /// goes on. Absent: such a document fails the task.
    #[serde(default)]
    pub dead_letter_index: Option<String>,
    /// How long to wait for a connection.
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// How long to wait for a bulk response.
    #[serde(default = "default_request_timeout", with = "duration")]
    pub request_timeout: Duration,
}

/// How retried actions wait (Flink's `sink.bulk-flush.backoff.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// `exponential` (default), `constant` or `disabled`.
    #[serde(default)]
    pub strategy: BackoffStrategy,
    /// Retries at most.
    #[serde(default = "default_retries")]
    pub max_retries: usize,
    /// The (first) delay.
    #[serde(default = "default_delay", with = "duration")]
    pub delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { strategy: BackoffStrategy::default(), max_retries: default_retries(), delay: default_delay() }
    }
}

/// How the delay between retries grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffStrategy {
    /// Doubling from `delay`, up to 10 s.
    #[default]
    Exponential,
    /// Always `delay`.
    Constant,
    /// No retries: the task fails.
    Disabled,
}

fn default_delimiter() -> String {
    "_".into()
}
fn default_max_actions() -> usize {
    1000
}
fn default_max_bytes() -> usize {
    5 << 20
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_retries() -> usize {
    8
}
fn default_delay() -> Duration {
    Duration::from_millis(100)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}

impl fmt::Debug for EsConfig {
    // Never shows a password, wherever the configuration is printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EsConfig")
            .field("hosts", &self.hosts.iter().map(|h| crate::secret::redact(h)).collect::<Vec<_>>())
            .field("index", &self.index)
            .field("key", &self.key)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl EsConfig {
    /// Checks what can be checked without a cluster; `Err` holds the field
    /// and the problem.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.hosts.is_empty() {
            return Err(("config.hosts", "name at least one host, e.g. http://127.0.0.1:9200".into()));
        }
        for h in &self.hosts {
            let url = reqwest::Url::parse(h)
                .map_err(|e| ("config.hosts", format!("`{}` is not a URL: {e}", crate::secret::redact(h))))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err((
                    "config.hosts",
                    format!("`{}` is not an http:// or https:// URL of a node", crate::secret::redact(h)),
                ));
            }
        }
        if let Some(dl) = &self.dead_letter_index {
            super::index::check_static_name(dl).map_err(|e| ("config.dead_letter_index", e))?;
        }
        crate::secret::check_sources(
            self.password.is_some(),
            self.password_env.is_some(),
            self.password_file.is_some(),
        )
        .map_err(|e| ("config.password", e))?;
        if self.bulk_flush_max_actions == 0 {
            return Err(("config.bulk_flush_max_actions", "bulk_flush_max_actions must be at least 1".into()));
        }
        Ok(())
    }

    /// The password, read from where the configuration says.
    pub fn password(&self) -> Result<Option<String>, String> {
        crate::secret::read(self.password.as_deref(), self.password_env.as_deref(), self.password_file.as_deref())
    }
}
