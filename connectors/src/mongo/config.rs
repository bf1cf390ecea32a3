//! The configuration of `mongodb_sink`: where the collection is, how to log
//! in, and how documents are written.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use weir_runtime::operators::duration;

/// The configuration of `mongodb_sink`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// A MongoDB connection string: `mongodb://host:port/...` or
    /// `mongodb+srv://...`, with any of the driver's options.
    pub uri: String,
    /// The database.
    pub database: String,
    /// The collection.
    pub collection: String,
    /// Login name (else the one in `uri`, if any).
    #[serde(default)]
    pub username: Option<String>,
    /// The password, written in the job (prefer `password_env` or `password_file`).
    #[serde(default)]
    pub password: Option<String>,
    /// An environment variable of the task manager holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file on the task manager holding the password (e.g. a mounted secret).
    #[serde(default)]
    pub password_file: Option<String>,
    /// The columns whose values make each document's `_id` (one column: its
    /// value; several: a document of them): documents are replaced by it,
    /// and deleted by it for retractions. Absent: documents are inserted.
    #[serde(default)]
    pub key: Vec<String>,
    /// A text column holding each row's change kind, as Flink writes them:
    /// `+I`/`+U` upsert, `-D` and `-U` delete (a `+U` of the key written with the `-U` wins). It is not written.
    #[serde(default)]
    pub op_column: Option<String>,
    /// Write when this many rows are buffered.
    #[serde(default = "default_max_rows")]
    pub buffer_flush_max_rows: usize,
    /// Write buffered rows at least this often.
    #[serde(default = "default_interval", with = "duration")]
    pub buffer_flush_interval: Duration,
    /// Retries of a write that failed for a transient reason (connection
    /// lost, server restarting, no primary), with exponential backoff.
    #[serde(default = "default_retries")]
    pub max_retries: usize,
    /// The first backoff between retries (doubling up to 8 s).
    #[serde(default = "default_retry_interval", with = "duration")]
    pub retry_interval: Duration,
    /// How long to wait for a server that can take writes.
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
}

fn default_max_rows() -> usize {
    1000
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_retries() -> usize {
    3
}
fn default_retry_interval() -> Duration {
    Duration::from_millis(500)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl fmt::Debug for MongoConfig {
    // Never shows a password, wherever the configuration is printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoConfig")
            .field("uri", &crate::secret::redact(&self.uri))
            .field("database", &self.database)
            .field("collection", &self.collection)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl MongoConfig {
    /// Checks what can be checked without a server; `Err` holds the field
    /// and the problem.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let uri = self.uri.trim();
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            return Err((
                "config.uri",
                format!(
                    "`{}` is not a MongoDB connection string; write mongodb://HOST:PORT",
                    crate::secret::redact(uri)
                ),
            ));
        }
        if self.database.trim().is_empty() {
            return Err(("config.database", "database must not be empty".into()));
        }
        if self.collection.trim().is_empty() {
            return Err(("config.collection", "collection must not be empty".into()));
        }
        crate::secret::check_sources(
            self.password.is_some(),
            self.password_env.is_some(),
            self.password_file.is_some(),
        )
        .map_err(|e| ("config.password", e))?;
        if self.buffer_flush_max_rows == 0 {
            return Err(("config.buffer_flush_max_rows", "buffer_flush_max_rows must be at least 1".into()));
        }
        Ok(())
    }

    /// The password, read from where the configuration says.
    pub fn password(&self) -> Result<Option<String>, String> {
        crate::secret::read(self.password.as_deref(), self.password_env.as_deref(), self.password_file.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: serde_json::Value) -> MongoConfig {
        let mut v =
            serde_json::json!({"uri": "mongodb://u:hunter2@127.0.0.1:27017", "database": "d", "collection": "c"});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn passwords_never_show_and_bad_settings_name_their_field() {
        let c = config(serde_json::json!({"password": "s3cret"}));
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("s3cret"), "{shown}");
        assert_eq!(c.check(), Ok(()));
        assert_eq!(config(serde_json::json!({"uri": "http://h"})).check().unwrap_err().0, "config.uri");
        assert_eq!(config(serde_json::json!({"collection": " "})).check().unwrap_err().0, "config.collection");
        assert_eq!(
            config(serde_json::json!({"password": "a", "password_env": "B"})).check().unwrap_err().0,
            "config.password"
        );
        assert_eq!(c.buffer_flush_interval, Duration::from_secs(1));
    }
}
