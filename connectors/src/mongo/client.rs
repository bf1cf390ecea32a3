//! The sink's connection to MongoDB: one driver client per subtask (its own
//! connection pool), and the writes a flush makes — replacements by `_id`
//! with upsert, deletes by `_id`, or inserts — as batched `update`,
//! `delete` and `insert` commands, each retried on transient errors.
//!
//! The commands are sent as such (not through the driver's `bulk_write`,
//! which needs MongoDB 8), so any server speaking MongoDB's wire protocol
//! since 4.2 takes them, FerretDB among them.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::ErrorKind;
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};

use super::config::MongoConfig;

/// Statements per command: well under the server's limit of 100,000 and
/// its 16 MiB per command for documents of a few KiB.
const STATEMENTS: usize = 1000;
/// Encoded bytes per command before it is cut (a BSON document is at most
/// 16 MiB, and so is each command).
const COMMAND_BYTES: usize = 8 << 20;

/// Why a call failed: retrying may help, or it cannot.
#[derive(Debug)]
pub enum MongoError {
    /// The connection or the server went away, or no server takes writes.
    Transient(String),
    /// The configuration or the data is wrong (authentication, a document
    /// the server refuses).
    Permanent(String),
}

/// Server error codes that retrying may cure (network, shutdown, elections,
/// write-concern timeouts, conflicts), as the drivers' retry rules list them.
const TRANSIENT_CODES: &[i32] =
    &[6, 7, 50, 63, 64, 89, 91, 112, 134, 150, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436];

impl MongoError {
    fn of(doing: &str, e: mongodb::error::Error) -> MongoError {
        let transient = match e.kind.as_ref() {
            ErrorKind::Io(_) | ErrorKind::ServerSelection { .. } | ErrorKind::ConnectionPoolCleared { .. } => true,
            ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
            _ => e.contains_label("RetryableWriteError"),
        };
        let message = format!("{doing}: {e}");
        if transient {
            MongoError::Transient(message)
        } else {
            MongoError::Permanent(message)
        }
    }

    /// Its message.
    pub fn message(&self) -> &str {
        match self {
            MongoError::Transient(m) | MongoError::Permanent(m) => m,
        }
    }
}

/// What one flush writes: the last change of each `_id`, or documents to insert.
#[derive(Debug, Default)]
pub struct Writes {
    /// Replacements (inserted when missing), by `_id`.
    pub upserts: Vec<(Bson, Document)>,
    /// `_id`s to delete.
    pub deletes: Vec<Bson>,
    /// Documents to insert (no key: the server assigns `_id`).
    pub inserts: Vec<Document>,
}

/// A subtask's connection to its collection.
pub struct Mongo {
    client: Client,
    db: Database,
    collection: String,
    retries: usize,
    retry_interval: Duration,
}

impl Mongo {
    /// Connects and checks that the server answers and the login works.
    pub async fn open(config: &MongoConfig) -> Result<Mongo, MongoError> {
        let where_ = crate::secret::redact(&config.uri);
        let mut options = ClientOptions::parse(&config.uri)
            .await
            .map_err(|e| MongoError::Permanent(format!("connection string `{where_}`: {e}")))?;
        options.app_name = Some("weir".into());
        options.connect_timeout = Some(config.connect_timeout);
        options.server_selection_timeout = Some(config.connect_timeout);
        let password = config.password().map_err(MongoError::Permanent)?;
        if config.username.is_some() || password.is_some() {
            let mut c = options.credential.take().unwrap_or_default();
            if let Some(u) = &config.username {
                c.username = Some(u.clone());
            }
            if password.is_some() {
                c.password = password;
            }
            options.credential = Some(c);
        }
        let client = Client::with_options(options)
            .map_err(|e| MongoError::Permanent(format!("connection string `{where_}`: {e}")))?;
        let db = client.database(&config.database);
        let mongo = Mongo {
            client,
            db,
            collection: config.collection.clone(),
            retries: config.max_retries,
            retry_interval: config.retry_interval,
        };
        let ping = || async {
            mongo.db.run_command(doc! {"ping": 1}).await.map_err(|e| MongoError::of(&format!("reaching {where_}"), e))
        };
        ping.retry(mongo.backoff()).when(|e| matches!(e, MongoError::Transient(_))).await?;
        Ok(mongo)
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.retry_interval)
            .with_max_delay(Duration::from_secs(8))
            .with_max_times(self.retries)
    }

    /// Writes `w`: upserts, then deletes (their `_id`s differ), then inserts.
    pub async fn write(&self, w: Writes) -> Result<(), MongoError> {
        let upserts: Vec<Document> =
            w.upserts.into_iter().map(|(id, d)| doc! {"q": {"_id": id}, "u": d, "upsert": true}).collect();
        self.send("update", "updates", &upserts).await?;
        let deletes: Vec<Document> = w.deletes.into_iter().map(|id| doc! {"q": {"_id": id}, "limit": 1}).collect();
        self.send("delete", "deletes", &deletes).await?;
        self.send("insert", "documents", &w.inserts).await
    }

    /// Sends `statements` as `command`s of at most [`STATEMENTS`] statements
    /// and [`COMMAND_BYTES`] bytes, in order, each retried on transient errors.
    async fn send(&self, command: &str, field: &str, statements: &[Document]) -> Result<(), MongoError> {
        let mut start = 0;
        while start < statements.len() {
            let (mut end, mut bytes) = (start, 0);
            while end < statements.len() && end - start < STATEMENTS && (end == start || bytes < COMMAND_BYTES) {
                bytes += mongodb::bson::to_vec(&statements[end]).map_or(0, |v| v.len());
                end += 1;
            }
            let chunk = &statements[start..end];
            let call = || async {
                let body = doc! {command: &self.collection, field: chunk.to_vec(), "ordered": true};
                let reply = self
                    .db
                    .run_command(body)
                    .await
                    .map_err(|e| MongoError::of(&format!("{command} on {}", self.collection), e))?;
                check_reply(command, &self.collection, &reply, chunk)
            };
            call.retry(self.backoff())
                .when(|e| matches!(e, MongoError::Transient(_)))
                .notify(|e, after| tracing::warn!(collection = %self.collection, error = %e.message(), retry_in = ?after, "mongodb write failed; retrying"))
                .await?;
            start = end;
        }
        Ok(())
    }

    /// Closes the connections.
    pub async fn close(self) {
        self.client.shutdown().await;
    }
}

/// The outcome of a write command: the server answers `ok: 1` with per
/// statement `writeErrors`, or a `writeConcernError`.
fn check_reply(command: &str, collection: &str, reply: &Document, chunk: &[Document]) -> Result<(), MongoError> {
    if let Ok(errors) = reply.get_array("writeErrors") {
        if let Some(Bson::Document(first)) = errors.first() {
            let code = first.get_i32("code").unwrap_or_default();
            let message = first.get_str("errmsg").unwrap_or("no message");
            let index = first.get_i32("index").ok().and_then(|i| usize::try_from(i).ok());
            let id = index
                .and_then(|i| chunk.get(i))
                .and_then(|s| s.get_document("q").ok().and_then(|q| q.get("_id")).or_else(|| s.get("_id")))
                .map_or_else(|| "unknown".to_string(), ToString::to_string);
            let text = format!(
                "{command} on {collection}: the server refused the document with _id {id} (code {code}): {message}{}",
                if errors.len() > 1 { format!(" (and {} more)", errors.len() - 1) } else { String::new() }
            );
            return Err(if TRANSIENT_CODES.contains(&code) {
                MongoError::Transient(text)
            } else {
                MongoError::Permanent(text)
            });
        }
    }
    if let Ok(e) = reply.get_document("writeConcernError") {
        return Err(MongoError::Transient(format!("{command} on {collection}: write concern not met: {e}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_errors_name_the_document_and_transient_codes_retry() {
        let chunk = vec![doc! {"q": {"_id": "a"}, "u": {}}, doc! {"q": {"_id": "b"}, "u": {}}];
        let reply = doc! {"ok": 1, "writeErrors": [{"index": 1, "code": 11000, "errmsg": "duplicate key"}]};
        match check_reply("update", "c", &reply, &chunk) {
            Err(MongoError::Permanent(m)) => assert!(m.contains("_id \"b\"") && m.contains("duplicate key"), "{m}"),
            other => panic!("{other:?}"),
        }
        let reply = doc! {"ok": 1, "writeErrors": [{"index": 0, "code": 91, "errmsg": "shutting down"}]};
        assert!(matches!(check_reply("update", "c", &reply, &chunk), Err(MongoError::Transient(_))));
        let reply = doc! {"ok": 1, "writeConcernError": {"code": 64, "errmsg": "timeout"}};
        assert!(matches!(check_reply("update", "c", &reply, &chunk), Err(MongoError::Transient(_))));
        assert!(check_reply("update", "c", &doc! {"ok": 1, "n": 2}, &chunk).is_ok());
    }
}
