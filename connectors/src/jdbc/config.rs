//! The configuration of `jdbc_sink`: where the table is, how to log in, and
//! how rows are written.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use weir_runtime::operators::duration;

pub use crate::delivery::Delivery;

/// The configuration of `jdbc_sink`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JdbcConfig {
    /// `jdbc:mysql://host:port/db`, `jdbc:mariadb://…`, `jdbc:postgresql://…`
    /// (the `jdbc:` prefix is optional).
    pub url: String,
    /// The table, optionally `schema.table`.
    pub table: String,
    /// Login name.
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
    /// The table's primary key: rows are upserted by it (and deleted by it
    /// for retractions). Absent: rows are appended.
    #[serde(default)]
    pub key: Vec<String>,
    /// A text column holding each row's change kind, as Flink writes them:
    /// `+I`/`+U` upsert, `-D` and `-U` delete (a `+U` of the key written with the `-U` wins). It is not written.
    #[serde(default)]
    pub op_column: Option<String>,
    /// `at_least_once` (default) or `exactly_once`.
    #[serde(default)]
    pub delivery: Delivery,
    /// At least once: write when this many rows are buffered.
    #[serde(default = "default_max_rows")]
    pub buffer_flush_max_rows: usize,
    /// At least once: write buffered rows at least this often.
    #[serde(default = "default_interval", with = "duration")]
    pub buffer_flush_interval: Duration,
    /// Retries of a write that failed for a transient reason (connection
    /// lost, deadlock, server restart), with exponential backoff.
    #[serde(default = "default_retries")]
    pub max_retries: usize,
    /// Connections per subtask.
    #[serde(default = "default_pool")]
    pub pool_size: u32,
    /// How long to wait for a connection.
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Exactly once: the name under which the sink records its committed
    /// epochs (default `<table>/<uid>`); unique among the jobs writing into
    /// one database.
    #[serde(default)]
    pub sink_id: Option<String>,
    /// Exactly once: the table of committed epochs, created when missing.
    #[serde(default = "default_epoch_table")]
    pub epoch_table: String,
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
fn default_pool() -> u32 {
    2
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_epoch_table() -> String {
    "weir_sink_epochs".into()
}

impl fmt::Debug for JdbcConfig {
    // Never shows the password, wherever the configuration is printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JdbcConfig")
            .field("url", &self.url)
            .field("table", &self.table)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("key", &self.key)
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// MySQL or MariaDB.
    MySql,
    /// PostgreSQL.
    Postgres,
}

impl Dialect {
    /// The system's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::MySql => "mysql",
            Dialect::Postgres => "postgresql",
        }
    }
}

/// A URL in the form the driver takes (`mysql://…`, `postgres://…`), and its dialect.
pub fn driver_url(url: &str) -> Result<(Dialect, String), String> {
    let bare = url.strip_prefix("jdbc:").unwrap_or(url);
    let (scheme, rest) = bare.split_once("://").ok_or_else(|| {
        format!("`{url}` is not a database URL; write jdbc:mysql://HOST:PORT/DB or jdbc:postgresql://HOST:PORT/DB")
    })?;
    let (dialect, scheme) = match scheme {
        "mysql" | "mariadb" => (Dialect::MySql, "mysql"),
        "postgresql" | "postgres" => (Dialect::Postgres, "postgres"),
        other => {
            return Err(format!(
                "database `{other}` in `{url}` is not supported; jdbc_sink writes to mysql, mariadb and postgresql"
            ))
        }
    };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("`{url}` names no host"));
    }
    let path = rest[host.len()..].split('?').next().unwrap_or_default();
    if path.trim_matches('/').is_empty() {
        return Err(format!("`{url}` names no database: add /DATABASE after the host"));
    }
    Ok((dialect, format!("{scheme}://{rest}")))
}

impl JdbcConfig {
    /// The name under which the sink records its epochs.
    pub fn sink_id(&self, uid: &str) -> String {
        self.sink_id.clone().unwrap_or_else(|| format!("{}/{uid}", self.table))
    }

    /// Checks that at most one source of the password is given.
    pub fn check_password_sources(&self) -> Result<(), String> {
        crate::secret::check_sources(self.password.is_some(), self.password_env.is_some(), self.password_file.is_some())
    }

    /// The password, read from where the configuration says (on the task
    /// manager that runs the sink).
    pub fn password(&self) -> Result<Option<String>, String> {
        crate::secret::read(self.password.as_deref(), self.password_env.as_deref(), self.password_file.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jdbc_urls_map_to_driver_urls() {
        assert_eq!(
            driver_url("jdbc:mysql://127.0.0.1:3306/weir").unwrap(),
            (Dialect::MySql, "mysql://127.0.0.1:3306/weir".into())
        );
        assert_eq!(driver_url("jdbc:mariadb://db/x?ssl-mode=disabled").unwrap().0, Dialect::MySql);
        assert_eq!(
            driver_url("jdbc:postgresql://h:5432/app").unwrap(),
            (Dialect::Postgres, "postgres://h:5432/app".into())
        );
        assert_eq!(driver_url("postgres://h/app").unwrap().0, Dialect::Postgres);
        assert!(driver_url("jdbc:oracle:thin:@h:1521/x").unwrap_err().contains("not a database URL"));
        assert!(driver_url("jdbc:sqlserver://h/x").unwrap_err().contains("not supported"));
        assert!(driver_url("jdbc:mysql://h:3306").unwrap_err().contains("names no database"));
        assert!(driver_url("jdbc:mysql:///db").unwrap_err().contains("names no host"));
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let c: JdbcConfig =
            serde_json::from_value(serde_json::json!({"url": "jdbc:mysql://h/d", "table": "t", "password": "hunter2"}))
                .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.password().unwrap().as_deref(), Some("hunter2"));
    }
}
