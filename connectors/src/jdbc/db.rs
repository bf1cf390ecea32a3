//! The database side of `jdbc_sink`: a connection pool per subtask, the
//! schema check at start, and writes in transactions (with the committed
//! epoch, for exactly-once), retried on transient errors.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Row as _;

use super::config::{Dialect, JdbcConfig};
use super::rows::{Kind, Value, Values};

/// Why a database call failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// May succeed when tried again: connection lost, deadlock, server restarting.
    #[error("{0}")]
    Transient(String),
    /// Will fail again: a missing table, a constraint violation, bad credentials.
    #[error("{0}")]
    Permanent(String),
}

impl DbError {
    fn of(doing: &str, e: sqlx::Error) -> DbError {
        let message = format!("{doing}: {e}");
        if is_transient(&e) {
            DbError::Transient(message)
        } else {
            DbError::Permanent(message)
        }
    }
}

/// Whether retrying may help: the connection or the server went away, or
/// the transaction lost a deadlock or a serialization conflict.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(d) => {
            if let Some(my) = d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                // Deadlock, lock wait timeout, server shutdown, connection
                // killed, too many connections, read-only during failover.
                return matches!(my.number(), 1213 | 1205 | 1053 | 1927 | 1040 | 1290 | 2006 | 2013);
            }
            let code = d.code().unwrap_or_default();
            // PostgreSQL: connection exceptions (08), serialization failure,
            // deadlock, shutdown, cannot connect now, too many connections.
            code.starts_with("08") || matches!(code.as_ref(), "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300")
        }
        _ => false,
    }
}

/// How a column's values are bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind {
    kind: Kind,
    /// A PostgreSQL `timestamp with time zone`: bound as a UTC instant.
    zoned: bool,
}

/// A subtask's connections to the sink's table.
pub struct Db {
    dialect: Dialect,
    pool: Pool,
    table: String,
    columns: Vec<String>,
    binds: Vec<Bind>,
    key: Vec<usize>,
    epoch_table: String,
    sink_id: String,
    retries: usize,
}

enum Pool {
    My(MySqlPool),
    Pg(PgPool),
}

/// Runs `$body` with `$p` bound to the concrete pool.
macro_rules! with_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            Pool::My($p) => $body,
            Pool::Pg($p) => $body,
        }
    };
}

/// Binds one value to a query, typed by the column for NULLs.
macro_rules! bind {
    ($q:expr, $v:expr, $b:expr) => {
        match ($v, $b) {
            (Some(Value::Int(x)), _) => $q.bind(*x),
            (Some(Value::Float(x)), _) => $q.bind(*x),
            (Some(Value::Bool(x)), _) => $q.bind(*x),
            (Some(Value::Text(x)), _) => $q.bind(x.as_str()),
            (Some(Value::Bytes(x)), _) => $q.bind(x.as_slice()),
            (Some(Value::Timestamp(x)), Bind { zoned: true, .. }) => $q.bind(x.and_utc()),
            (Some(Value::Timestamp(x)), _) => $q.bind(*x),
            (Some(Value::Date(x)), _) => $q.bind(*x),
            (None, Bind { kind: Kind::Int, .. }) => $q.bind(None::<i64>),
            (None, Bind { kind: Kind::Float, .. }) => $q.bind(None::<f64>),
            (None, Bind { kind: Kind::Bool, .. }) => $q.bind(None::<bool>),
            (None, Bind { kind: Kind::Text, .. }) => $q.bind(None::<&str>),
            (None, Bind { kind: Kind::Bytes, .. }) => $q.bind(None::<&[u8]>),
            (None, Bind { kind: Kind::Timestamp, zoned: true }) => $q.bind(None::<chrono::DateTime<chrono::Utc>>),
            (None, Bind { kind: Kind::Timestamp, zoned: false }) => $q.bind(None::<chrono::NaiveDateTime>),
            (None, Bind { kind: Kind::Date, .. }) => $q.bind(None::<chrono::NaiveDate>),
        }
    };
}

/// Rows per statement: many, within the 65,535 parameters both servers allow.
fn chunk(columns: usize) -> usize {
    (60_000 / columns.max(1)).clamp(1, 1000)
}

/// What the sink writes: its table's columns (input order) and their kinds.
#[derive(Debug, Clone)]
pub struct Target {
    /// Column names.
    pub columns: Vec<String>,
    /// Their kinds.
    pub kinds: Vec<Kind>,
    /// Positions of the key columns.
    pub key: Vec<usize>,
}

impl Db {
    /// Connects, checks the table against `target` and, for exactly-once,
    /// creates the epoch table when it is missing.
    pub async fn open(config: &JdbcConfig, uid: &str, target: &Target, exactly_once: bool) -> Result<Db, DbError> {
        let (dialect, url) = super::config::driver_url(&config.url).map_err(DbError::Permanent)?;
        let password = config.password().map_err(DbError::Permanent)?;
        let size = config.pool_size.max(1);
        let bad_url = |e: sqlx::Error| DbError::Permanent(format!("the url `{}` does not parse: {e}", config.url));
        let connecting = format!("connecting to {} at {}", dialect.name(), crate::secret::redact(&config.url));
        let pool = match dialect {
            Dialect::MySql => {
                let mut o = MySqlConnectOptions::from_str(&url).map_err(bad_url)?.timezone(Some("+00:00".into()));
                if let Some(u) = &config.username {
                    o = o.username(u);
                }
                if let Some(p) = &password {
                    o = o.password(p);
                }
                let opts = MySqlPoolOptions::new().max_connections(size).acquire_timeout(config.connect_timeout);
                Pool::My(opts.connect_with(o).await.map_err(|e| DbError::of(&connecting, e))?)
            }
            Dialect::Postgres => {
                let mut o = PgConnectOptions::from_str(&url).map_err(bad_url)?.options([("timezone", "UTC")]);
                if let Some(u) = &config.username {
                    o = o.username(u);
                }
                if let Some(p) = &password {
                    o = o.password(p);
                }
                let opts = PgPoolOptions::new().max_connections(size).acquire_timeout(config.connect_timeout);
                Pool::Pg(opts.connect_with(o).await.map_err(|e| DbError::of(&connecting, e))?)
            }
        };
        let mut db = Db {
            dialect,
            pool,
            table: config.table.clone(),
            columns: target.columns.clone(),
            binds: Vec::new(),
            key: target.key.clone(),
            epoch_table: config.epoch_table.clone(),
            sink_id: config.sink_id(uid),
            retries: config.max_retries,
        };
        db.binds = db.check(target).await?;
        if exactly_once {
            let sql = dialect.create_epoch_table(&db.epoch_table);
            let doing = format!("creating the epoch table `{}`", db.epoch_table);
            with_pool!(&db.pool, p => sqlx::query(&sql).execute(p).await.map(|_| ()))
                .map_err(|e| DbError::of(&doing, e))?;
        }
        Ok(db)
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The rows of a catalog query `q` with text parameters `params`, as
    /// pairs of its first two (text) columns.
    async fn text_pairs(&self, q: &str, params: &[String], doing: &str) -> Result<Vec<(String, String)>, DbError> {
        with_pool!(&self.pool, p => {
            let mut query = sqlx::query(q);
            for v in params {
                query = query.bind(v.as_str());
            }
            query.fetch_all(p).await.map(|rows| {
                rows.iter().map(|r| (r.get::<String, _>(0), r.get::<String, _>(1))).collect()
            })
        })
        .map_err(|e| DbError::of(doing, e))
    }

    /// The table's columns and unique keys, checked against what the sink writes.
    async fn check(&self, target: &Target) -> Result<Vec<Bind>, DbError> {
        let (schema, table) = match self.table.split_once('.') {
            Some((s, t)) => (Some(s.to_string()), t.to_string()),
            None => (None, self.table.clone()),
        };
        let params: Vec<String> = schema.iter().cloned().chain([table.clone()]).collect();
        let q = self.dialect.columns_query(schema.is_some());
        let found = self.text_pairs(q, &params, &format!("reading the columns of table `{}`", self.table)).await?;
        if found.is_empty() {
            return Err(DbError::Permanent(format!(
                "table `{}` does not exist in the database of `{}` (create it before starting the job)",
                self.table,
                self.url_hint()
            )));
        }
        let types: BTreeMap<String, String> = found.into_iter().map(|(n, t)| (n.to_lowercase(), t)).collect();
        let mut binds = Vec::with_capacity(target.columns.len());
        let mut problems = Vec::new();
        for (name, &kind) in target.columns.iter().zip(&target.kinds) {
            match types.get(&name.to_lowercase()) {
                None => problems.push(format!("column `{name}` is missing")),
                Some(t) if !self.dialect.accepts(t, kind) => problems
                    .push(format!("column `{name}` is {t}, which cannot hold the sink's {} values", kind.name())),
                Some(t) => binds.push(Bind { kind, zoned: t.eq_ignore_ascii_case("timestamp with time zone") }),
            }
        }
        if !problems.is_empty() {
            return Err(DbError::Permanent(format!(
                "table `{}` does not fit the sink's rows: {} (the table has: {})",
                self.table,
                problems.join("; "),
                types.iter().map(|(n, t)| format!("{n} {t}")).collect::<Vec<_>>().join(", ")
            )));
        }
        if !target.key.is_empty() {
            let q = self.dialect.unique_keys_query(schema.is_some());
            let keys = self.text_pairs(q, &params, &format!("reading the keys of table `{}`", self.table)).await?;
            let mut constraints: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (c, col) in keys {
                constraints.entry(c).or_default().push(col.to_lowercase());
            }
            let mut want: Vec<String> = target.key.iter().map(|&i| target.columns[i].to_lowercase()).collect();
            want.sort();
            let fits = constraints.values_mut().any(|cols| {
                cols.sort();
                *cols == want
            });
            if !fits {
                return Err(DbError::Permanent(format!(
                    "table `{}` has no primary key or unique constraint on ({}): upserts by that key need one",
                    self.table,
                    want.join(", ")
                )));
            }
        }
        Ok(binds)
    }

    fn url_hint(&self) -> &'static str {
        self.dialect.name()
    }

    /// The newest epoch committed by old subtask `subtask`, if recorded.
    pub async fn committed_epoch(&self, subtask: u32) -> Result<Option<u64>, DbError> {
        let sql = format!(
            "SELECT epoch FROM {} WHERE sink_id = {} AND subtask = {}",
            self.dialect.quote(&self.epoch_table),
            self.dialect.param(1),
            self.dialect.param(2)
        );
        let doing = format!("reading the committed epoch of subtask {subtask}");
        let read = || async {
            with_pool!(&self.pool, p => sqlx::query(&sql).bind(self.sink_id.as_str()).bind(subtask as i32).fetch_optional(p).await
                .map(|r| r.map(|r| r.get::<i64, _>(0) as u64)))
            .map_err(|e| DbError::of(&doing, e))
        };
        read.retry(self.backoff()).when(|e| matches!(e, DbError::Transient(_))).await
    }

    /// Records that subtask `subtask` has committed nothing yet (a fresh
    /// start: checkpoint ids begin again at 1).
    pub async fn reset_epoch(&self, subtask: u32) -> Result<(), DbError> {
        let sql = self.dialect.set_epoch(&self.epoch_table);
        let doing = format!("resetting the committed epoch of subtask {subtask}");
        let write = || async {
            with_pool!(&self.pool, p => sqlx::query(&sql).bind(self.sink_id.as_str()).bind(subtask as i32).bind(0i64).execute(p).await.map(|_| ()))
                .map_err(|e| DbError::of(&doing, e))
        };
        write.retry(self.backoff()).when(|e| matches!(e, DbError::Transient(_))).await
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(8))
            .with_max_times(self.retries)
    }

    /// Writes `upserts` and `deletes` in one transaction, retried on
    /// transient errors. With `epoch` (subtask, epoch), the transaction
    /// first reads the subtask's committed epoch (locking its row) and
    /// writes nothing if it is at least `epoch` — so a retry after a lost
    /// COMMIT, or a replay after a crash, applies an epoch once — and
    /// records `epoch` with the rows. Returns whether it wrote.
    pub async fn write(
        &self,
        upserts: &[Values],
        deletes: &[Values],
        epoch: Option<(u32, u64)>,
    ) -> Result<bool, DbError> {
        let attempt = || async { self.write_once(upserts, deletes, epoch).await };
        attempt
            .retry(self.backoff())
            .when(|e| matches!(e, DbError::Transient(_)))
            .notify(|e, after| tracing::warn!(table = %self.table, error = %e, retry_in = ?after, "jdbc write failed; retrying"))
            .await
    }

    async fn write_once(
        &self,
        upserts: &[Values],
        deletes: &[Values],
        epoch: Option<(u32, u64)>,
    ) -> Result<bool, DbError> {
        let key_names: Vec<String> = self.key.iter().map(|&i| self.columns[i].clone()).collect();
        let key_binds: Vec<Bind> = self.key.iter().map(|&i| self.binds[i]).collect();
        let per_insert = chunk(self.columns.len());
        let per_delete = chunk(key_names.len());
        let table = &self.table;
        with_pool!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(|e| DbError::of("beginning a transaction", e))?;
            if let Some((subtask, n)) = epoch {
                let sql = self.dialect.lock_epoch(&self.epoch_table);
                let current: Option<i64> = sqlx::query(&sql)
                    .bind(self.sink_id.as_str())
                    .bind(subtask as i32)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| DbError::of("reading the committed epoch", e))?
                    .map(|r| r.get::<i64, _>(0));
                if current.is_some_and(|c| c as u64 >= n) {
                    tx.rollback().await.map_err(|e| DbError::of("ending a transaction", e))?;
                    return Ok(false);
                }
            }
            for rows in deletes.chunks(per_delete) {
                let sql = self.dialect.delete(table, &key_names, rows.len());
                let mut q = sqlx::query(&sql);
                for row in rows {
                    for (v, b) in row.iter().zip(&key_binds) {
                        q = bind!(q, v, *b);
                    }
                }
                q.execute(&mut *tx).await.map_err(|e| DbError::of(&format!("deleting from `{table}`"), e))?;
            }
            for rows in upserts.chunks(per_insert) {
                let sql = self.dialect.insert(table, &self.columns, &self.key, rows.len());
                let mut q = sqlx::query(&sql);
                for row in rows {
                    for (v, b) in row.iter().zip(&self.binds) {
                        q = bind!(q, v, *b);
                    }
                }
                q.execute(&mut *tx).await.map_err(|e| DbError::of(&format!("writing into `{table}`"), e))?;
            }
            if let Some((subtask, n)) = epoch {
                let sql = self.dialect.set_epoch(&self.epoch_table);
                sqlx::query(&sql)
                    .bind(self.sink_id.as_str())
                    .bind(subtask as i32)
                    .bind(n as i64)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| DbError::of("recording the committed epoch", e))?;
            }
            tx.commit().await.map_err(|e| DbError::of("committing", e))?;
            Ok(true)
        })
    }

    /// After a permanent failure of a batch: the first row that fails on its
    /// own (in a transaction rolled back at the end), described by its key.
    pub async fn locate_failure(&self, upserts: &[Values]) -> Option<String> {
        with_pool!(&self.pool, p => {
            let mut tx = p.begin().await.ok()?;
            let sql = self.dialect.insert(&self.table, &self.columns, &self.key, 1);
            let mut found = None;
            for row in upserts {
                let mut q = sqlx::query(&sql);
                for (v, b) in row.iter().zip(&self.binds) {
                    q = bind!(q, v, *b);
                }
                // A savepoint keeps the transaction usable after a failed row (PostgreSQL).
                sqlx::query("SAVEPOINT weir_row").execute(&mut *tx).await.ok()?;
                if let Err(e) = q.execute(&mut *tx).await {
                    found = Some(format!("{} ({})", super::rows::describe(row, &self.columns, &self.key), e));
                    break;
                }
                sqlx::query("RELEASE SAVEPOINT weir_row").execute(&mut *tx).await.ok()?;
            }
            let _ = tx.rollback().await;
            found
        })
    }

    /// Closes the connections.
    pub async fn close(&self) {
        with_pool!(&self.pool, p => p.close().await)
    }
}
