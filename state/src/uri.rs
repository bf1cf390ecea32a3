//! Opening checkpoint storage from a URI: `file:///dir`, `s3://bucket/prefix`,
//! `hdfs://namenode:port/dir` or `memory://`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use object_store::memory::InMemory;
use object_store::ObjectStore;
use serde::Deserialize;

use crate::{CheckpointStorage, StorageError};

/// S3 settings; unset fields come from the standard `AWS_*` environment
/// variables. Credentials are never logged (the `Debug` form hides them).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Options {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000` (default: AWS).
    pub endpoint: Option<String>,
    /// Region (default `us-east-1` when the environment sets none).
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`); default true.
    pub path_style: Option<bool>,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "<set>"))
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<set>"))
            .field("path_style", &self.path_style)
            .finish()
    }
}

impl CheckpointStorage {
    /// Storage for a URI: `file:///absolute/dir`, `s3://bucket/prefix` (S3
    /// settings from the environment), `hdfs://namenode:port/dir` or
    /// `memory://`.
    pub fn from_uri(uri: &str) -> Result<Self, StorageError> {
        Self::from_uri_with(uri, &S3Options::default())
    }

    /// Like [`CheckpointStorage::from_uri`], with S3 settings that override
    /// the environment.
    pub fn from_uri_with(uri: &str, s3: &S3Options) -> Result<Self, StorageError> {
        let (store, prefix) = object_store_for(uri, s3)?;
        Ok(Self::new(store, &prefix, uri))
    }
}

/// The object store a storage URI names and the prefix inside it:
/// `file:///absolute/dir` (created if missing), `s3://bucket/prefix` (S3
/// settings from `s3`, then the environment), `hdfs://namenode:port/dir`
/// (or `hdfs://nameservice/dir`, resolved through `HADOOP_CONF_DIR`) or
/// `memory://`. Checkpoints, savepoints, the job store and the file sink
/// open their storage through it, so all take the same URIs and settings.
pub fn object_store_for(uri: &str, s3: &S3Options) -> Result<(Arc<dyn ObjectStore>, String), StorageError> {
    if let Some(rest) = uri.strip_prefix("hdfs://") {
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err(StorageError::Uri(uri.to_string()));
        }
        return Ok((hdfs_store(authority)?, prefix.trim_matches('/').to_string()));
    }
    if let Some(rest) = uri.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StorageError::Uri(uri.to_string()));
        }
        let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        let endpoint = s3.endpoint.clone().or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        if let Some(e) = &endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        if let Some(r) = &s3.region {
            b = b.with_region(r);
        } else if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            b = b.with_region("us-east-1");
        }
        if let Some(k) = &s3.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &s3.secret_access_key {
            b = b.with_secret_access_key(k);
        }
        // Path-style addressing unless asked otherwise: what self-hosted servers expect.
        b = b.with_virtual_hosted_style_request(!s3.path_style.unwrap_or(true));
        let store = b.with_retry(s3_retry()).build()?;
        return Ok((Arc::new(store), prefix.trim_end_matches('/').to_string()));
    }
    if uri == "memory://" || uri == "memory:///" {
        return Ok((Arc::new(InMemory::new()), String::new()));
    }
    if let Some(dir) = uri.strip_prefix("file://") {
        if !dir.starts_with('/') {
            return Err(StorageError::Uri(uri.to_string()));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Store(object_store::Error::Generic { store: "file", source: Box::new(e) }))?;
        // Deleting a directory's last file deletes the directory too (up to the
        // root), as with object stores, which have no directories: otherwise
        // every discarded checkpoint would leave an empty `chk-<n>` behind.
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
        return Ok((Arc::new(fs), String::new()));
    }
    Err(StorageError::Uri(uri.to_string()))
}

/// How S3 requests are retried: for a minute or so, so that a server that
/// restarts or fails over, or a short network outage, delays a checkpoint or
/// a sink's commit instead of failing it (and restarting the job).
/// `object_store`'s default gives up after about two seconds against a
/// server that refuses connections: its backoff is drawn between the first
/// delay and `base` times the last one, so with `base` 2 it hardly grows.
/// With `base` 3 it grows by about half each time, up to 5 s.
fn s3_retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(200),
            max_backoff: std::time::Duration::from_secs(5),
            base: 3.0,
        },
        max_retries: 20,
        retry_timeout: std::time::Duration::from_secs(180),
    }
}

/// The store of one HDFS cluster (`authority` is `host:port` or a name
/// service), shared by every storage of the process that names it, so they
/// share its NameNode connections.
///
/// The client's connections and background tasks live on a small runtime of
/// their own: a storage opened on one runtime (the job manager's, a task's)
/// and used from another (the connectors') keeps working whichever of them
/// ends first.
fn hdfs_store(authority: &str) -> Result<Arc<dyn ObjectStore>, StorageError> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let mut stores = STORES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = stores.get(authority) {
        return Ok(s.clone());
    }
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weir-hdfs")
            .enable_all()
            .build()
            .expect("starting the HDFS client's runtime")
    });
    let url = format!("hdfs://{authority}");
    let client = hdfs_native::ClientBuilder::new()
        .with_url(&url)
        .with_io_runtime(runtime.handle().clone())
        .build()
        .map_err(|e| StorageError::Store(object_store::Error::Generic { store: "hdfs", source: Box::new(e) }))?;
    let store: Arc<dyn ObjectStore> = Arc::new(hdfs_native_object_store::HdfsObjectStore::new(client));
    stores.insert(authority.to_string(), store.clone());
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hdfs_uris_name_a_namenode_and_a_directory() {
        let (_, prefix) = object_store_for("hdfs://127.0.0.1:8020/lake/events/", &S3Options::default()).unwrap();
        assert_eq!(prefix, "lake/events");
        let (_, prefix) = object_store_for("hdfs://127.0.0.1:8021", &S3Options::default()).unwrap();
        assert_eq!(prefix, "");
        for bad in ["hdfs:///lake", "hdfs://", "hdfs:/lake"] {
            let e = object_store_for(bad, &S3Options::default()).expect_err(bad);
            assert!(e.to_string().contains("hdfs://namenode:port/path"), "{bad}: {e}");
        }
    }
}
