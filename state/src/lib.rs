//! Checkpoint storage: the files a checkpoint is made of and its metadata,
//! in any object store (`file://` by default, memory for tests; S3 through
//! the same `object_store` interface).
//!
//! Layout under the storage root (see `docs/checkpoints.md`):
//!
//! ```text
//! <job_id>/chk-<id>/<file>        state written by tasks while the checkpoint runs
//! <job_id>/chk-<id>/_metadata     written last, once every task acknowledged
//! <job_id>/shared/<file>          RocksDB SST files, shared by the checkpoints that contain them
//! ```
//!
//! A checkpoint exists only once its `_metadata` does. The metadata names
//! every file with its size and CRC-32 and carries its own checksum, so a
//! missing file, a damaged file or truncated metadata is detected when the
//! checkpoint is loaded; [`CheckpointStorage::latest_valid`] then falls back
//! to the next older checkpoint.
//!
//! This crate does I/O and integrity checks only; deciding *when* a
//! checkpoint completes belongs to the coordinator.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

pub mod backend;
pub mod savepoint;

/// Version of the metadata format written by this build.
pub const METADATA_VERSION: u32 = 1;

const METADATA: &str = "_metadata";
const SHARED: &str = "shared";
const CHECKSUM_PREFIX: &str = "\n#crc32:";

/// What can go wrong, and whether trying again may help.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object store failed (unreachable, denied, ...): often transient.
    #[error("checkpoint storage: {0}")]
    Store(#[from] object_store::Error),
    /// A checkpoint exists but cannot be trusted; use an older one.
    #[error("checkpoint {checkpoint} of job {job} is unusable: {reason}")]
    Corrupt {
        /// Job id.
        job: String,
        /// Checkpoint id.
        checkpoint: u64,
        /// What is wrong (which file, which check).
        reason: String,
    },
    /// A savepoint (or another self-contained snapshot) cannot be trusted.
    #[error("{what} is unusable: {reason}")]
    Unusable {
        /// What was read (`savepoint file:///...`).
        what: String,
        /// What is wrong (which file, which check).
        reason: String,
    },
    /// The storage URI is not supported or malformed: a configuration error.
    #[error("unsupported checkpoint storage URI `{0}`: use file:///absolute/path, s3://bucket/prefix or memory://")]
    Uri(String),
}

impl StorageError {
    /// Whether retrying the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Store(e) if !matches!(e, object_store::Error::NotFound { .. }))
    }
}

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

/// A file of a checkpoint, as the metadata names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHandle {
    /// Path relative to the storage root.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC-32 (IEEE) of the content.
    pub crc32: u32,
}

/// What one subtask contributed to a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSnapshot {
    /// Operator uids of the task's chain, head first.
    pub operators: Vec<String>,
    /// Subtask index.
    pub subtask: u32,
    /// State files.
    pub files: Vec<FileHandle>,
    /// Source positions and other small values, inline.
    #[serde(default)]
    pub inline: serde_json::Value,
    /// Backend that wrote the files (`heap` or `rocksdb`).
    #[serde(default)]
    pub backend: String,
    /// For each file, its name in the backend's local directory (RocksDB).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_names: Vec<String>,
    /// Savepoint parts (`backend` = `savepoint`): for each file, the uid of
    /// the operator whose entries it holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_operators: Vec<String>,
    /// Parallelism of the vertex that wrote this part, when it may differ
    /// from the restoring one (savepoints); 0: the restoring vertex's.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parallelism: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The metadata of a complete checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// Format version.
    pub version: u32,
    /// Job id.
    pub job_id: String,
    /// Checkpoint id.
    pub checkpoint_id: u64,
    /// When the checkpoint was triggered (ms since the epoch).
    pub timestamp_ms: i64,
    /// Every subtask's part.
    pub tasks: Vec<TaskSnapshot>,
    /// Number of key groups of the job (0: not recorded).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_parallelism: u32,
    /// Subtasks (operator uids of the chain, subtask index) that had
    /// finished before the checkpoint: a restore ends them at once instead
    /// of running their input again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finished: Vec<(Vec<String>, u32)>,
}

impl CheckpointMetadata {
    /// Every file the checkpoint names.
    pub fn files(&self) -> impl Iterator<Item = &FileHandle> {
        self.tasks.iter().flat_map(|t| t.files.iter())
    }
}

/// Serializes a metadata document followed by the line `#crc32:XXXXXXXX`.
fn with_checksum<T: Serialize>(meta: &T) -> Vec<u8> {
    let mut body = serde_json::to_vec_pretty(meta).expect("metadata serializes");
    let sum = crc32(&body);
    body.extend_from_slice(format!("{CHECKSUM_PREFIX}{sum:08x}\n").as_bytes());
    body
}

/// The document of a metadata file whose checksum line matches.
fn checked_body(raw: &[u8]) -> Result<&str, &'static str> {
    let text = std::str::from_utf8(raw).map_err(|_| "its metadata is not UTF-8")?;
    let (body, sum) = text.rsplit_once(CHECKSUM_PREFIX).ok_or("its metadata is truncated (no checksum)")?;
    let want = u32::from_str_radix(sum.trim(), 16).map_err(|_| "its metadata checksum is malformed")?;
    if crc32(body.as_bytes()) != want {
        return Err("its metadata fails its checksum");
    }
    Ok(body)
}

trait JoinPath {
    fn join_path(self, rel: &str) -> Path;
}

impl JoinPath for Path {
    fn join_path(self, rel: &str) -> Path {
        rel.split('/').filter(|p| !p.is_empty()).fold(self, |p, part| p.join(part))
    }
}

/// Checkpoints of all jobs under one root of an object store.
#[derive(Clone)]
pub struct CheckpointStorage {
    store: Arc<dyn ObjectStore>,
    root: Path,
    uri: String,
}

impl fmt::Debug for CheckpointStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointStorage").field("uri", &self.uri).finish()
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.finalize()
}

impl CheckpointStorage {
    /// Storage in `store` under `root` (`uri` names it in messages).
    pub fn new(store: Arc<dyn ObjectStore>, root: &str, uri: &str) -> Self {
        Self { store, root: Path::from(root), uri: uri.to_string() }
    }

    /// Storage for a URI: `file:///absolute/dir`, `s3://bucket/prefix` (S3
    /// settings from the environment) or `memory://`.
    pub fn from_uri(uri: &str) -> Result<Self, StorageError> {
        Self::from_uri_with(uri, &S3Options::default())
    }

    /// Like [`CheckpointStorage::from_uri`], with S3 settings that override
    /// the environment.
    pub fn from_uri_with(uri: &str, s3: &S3Options) -> Result<Self, StorageError> {
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
            let store = b.build()?;
            return Ok(Self::new(Arc::new(store), prefix.trim_end_matches('/'), uri));
        }
        if uri == "memory://" || uri == "memory:///" {
            return Ok(Self::new(Arc::new(InMemory::new()), "", uri));
        }
        if let Some(dir) = uri.strip_prefix("file://") {
            if !dir.starts_with('/') {
                return Err(StorageError::Uri(uri.to_string()));
            }
            std::fs::create_dir_all(dir).map_err(|e| {
                StorageError::Store(object_store::Error::Generic { store: "file", source: Box::new(e) })
            })?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
            return Ok(Self::new(Arc::new(fs), "", uri));
        }
        Err(StorageError::Uri(uri.to_string()))
    }

    /// The URI this storage was opened with.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn dir(&self, job: &str, checkpoint: u64) -> Path {
        self.root.clone().join(job).join(format!("chk-{checkpoint}"))
    }

    fn corrupt(job: &str, checkpoint: u64, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt { job: job.to_string(), checkpoint, reason: reason.into() }
    }

    /// Writes a state file of checkpoint `checkpoint`; returns its handle for the metadata.
    pub async fn write_file(
        &self,
        job: &str,
        checkpoint: u64,
        name: &str,
        bytes: Bytes,
    ) -> Result<FileHandle, StorageError> {
        let path = self.dir(job, checkpoint).join(name);
        let handle = FileHandle { path: path.to_string(), size: bytes.len() as u64, crc32: crc32(&bytes) };
        self.store.put(&path, PutPayload::from_bytes(bytes)).await?;
        Ok(handle)
    }

    /// Writes a file shared between checkpoints (RocksDB's files, change
    /// files), under `<job>/shared/`.
    pub async fn write_shared_file(&self, job: &str, name: &str, bytes: Bytes) -> Result<FileHandle, StorageError> {
        let handle = self.shared_handle(job, name, &bytes);
        self.store.put(&Path::from(handle.path.as_str()), PutPayload::from_bytes(bytes)).await?;
        Ok(handle)
    }

    /// The handle [`CheckpointStorage::write_shared_file`] returns for these
    /// bytes, known before they are written: a later checkpoint can name the
    /// file while it is still being written.
    pub fn shared_handle(&self, job: &str, name: &str, bytes: &[u8]) -> FileHandle {
        let path = self.root.clone().join(job).join(SHARED).join(name);
        FileHandle { path: path.to_string(), size: bytes.len() as u64, crc32: crc32(bytes) }
    }

    /// Whether a file lives in the shared area (its lifetime is decided by reference counting).
    pub fn is_shared(handle: &FileHandle) -> bool {
        handle.path.split('/').rev().nth(1) == Some(SHARED)
    }

    /// Deletes shared files that no retained checkpoint references any more.
    pub async fn delete_shared(&self, files: &[FileHandle]) -> Result<(), StorageError> {
        for f in files.iter().filter(|f| Self::is_shared(f)) {
            match self.store.delete(&Path::from(f.path.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Reads a file named by a metadata, checking its size and checksum.
    pub async fn read_file(&self, job: &str, checkpoint: u64, handle: &FileHandle) -> Result<Bytes, StorageError> {
        let bytes = match self.store.get(&Path::from(handle.path.as_str())).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Self::corrupt(job, checkpoint, format!("file {} is missing", handle.path)))
            }
            Err(e) => return Err(e.into()),
        };
        if bytes.len() as u64 != handle.size {
            return Err(Self::corrupt(
                job,
                checkpoint,
                format!("file {} has {} bytes, the metadata says {}", handle.path, bytes.len(), handle.size),
            ));
        }
        if crc32(&bytes) != handle.crc32 {
            return Err(Self::corrupt(job, checkpoint, format!("file {} fails its checksum", handle.path)));
        }
        Ok(bytes)
    }

    /// Writes a file at `name` relative to the root (savepoints name their
    /// files relative to their own directory, so that they can be moved).
    pub async fn write_relative(&self, name: &str, bytes: Bytes) -> Result<FileHandle, StorageError> {
        let handle = FileHandle { path: name.to_string(), size: bytes.len() as u64, crc32: crc32(&bytes) };
        self.store.put(&self.root.clone().join_path(name), PutPayload::from_bytes(bytes)).await?;
        Ok(handle)
    }

    /// Reads a file written by [`CheckpointStorage::write_relative`],
    /// checking its size and checksum; `what` names the snapshot in errors.
    pub async fn read_relative(&self, what: &str, handle: &FileHandle) -> Result<Bytes, StorageError> {
        let unusable = |reason: String| StorageError::Unusable { what: what.to_string(), reason };
        let bytes = match self.store.get(&self.root.clone().join_path(&handle.path)).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(unusable(format!("file {} is missing", handle.path)))
            }
            Err(e) => return Err(e.into()),
        };
        if bytes.len() as u64 != handle.size {
            return Err(unusable(format!(
                "file {} has {} bytes, the metadata says {}",
                handle.path,
                bytes.len(),
                handle.size
            )));
        }
        if crc32(&bytes) != handle.crc32 {
            return Err(unusable(format!("file {} fails its checksum", handle.path)));
        }
        Ok(bytes)
    }

    /// Makes a checkpoint complete by writing its metadata (last).
    pub async fn complete(&self, meta: &CheckpointMetadata) -> Result<(), StorageError> {
        let body = with_checksum(meta);
        let path = self.dir(&meta.job_id, meta.checkpoint_id).join(METADATA);
        self.store.put(&path, PutPayload::from(body)).await?;
        Ok(())
    }

    /// Loads a checkpoint's metadata, verifying it and every file it names.
    pub async fn load(&self, job: &str, checkpoint: u64) -> Result<CheckpointMetadata, StorageError> {
        let path = self.dir(job, checkpoint).join(METADATA);
        let raw = match self.store.get(&path).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Self::corrupt(job, checkpoint, "it has no metadata"))
            }
            Err(e) => return Err(e.into()),
        };
        let body = checked_body(&raw).map_err(|reason| Self::corrupt(job, checkpoint, reason))?;
        let meta: CheckpointMetadata = serde_json::from_str(body)
            .map_err(|e| Self::corrupt(job, checkpoint, format!("its metadata does not parse: {e}")))?;
        if meta.version > METADATA_VERSION {
            return Err(Self::corrupt(
                job,
                checkpoint,
                format!("metadata version {} is newer than this build understands ({METADATA_VERSION})", meta.version),
            ));
        }
        if meta.job_id != job || meta.checkpoint_id != checkpoint {
            return Err(Self::corrupt(job, checkpoint, "its metadata belongs to another checkpoint"));
        }
        for f in meta.files() {
            self.read_file(job, checkpoint, f).await?;
        }
        Ok(meta)
    }

    /// Splits the URI of one checkpoint's directory,
    /// `<storage root>/<job id>/chk-<id>`, into the storage root's URI, the
    /// job id and the checkpoint id (`None`: not such a URI).
    pub fn split_checkpoint_uri(uri: &str) -> Option<(String, String, u64)> {
        let uri = uri.trim_end_matches('/');
        let (rest, dir) = uri.rsplit_once('/')?;
        let id = dir.strip_prefix("chk-")?.parse().ok()?;
        let (root, job) = rest.rsplit_once('/')?;
        if job.is_empty() || root.ends_with(':') || root.ends_with(":/") {
            return None;
        }
        Some((root.to_string(), job.to_string(), id))
    }

    /// Ids of the checkpoints of `job` that have metadata, oldest first.
    pub async fn checkpoints(&self, job: &str) -> Result<Vec<u64>, StorageError> {
        let prefix = self.root.clone().join(job);
        let listing = self.store.list_with_delimiter(Some(&prefix)).await?;
        let mut ids: Vec<u64> = Vec::new();
        for dir in listing.common_prefixes {
            let Some(id) = dir.filename().and_then(|n| n.strip_prefix("chk-")).and_then(|n| n.parse().ok()) else {
                continue;
            };
            match self.store.head(&dir.clone().join(METADATA)).await {
                Ok(_) => ids.push(id),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// The newest checkpoint of `job` that loads and verifies; newer ones
    /// that do not are logged with the reason and skipped.
    pub async fn latest_valid(&self, job: &str) -> Result<Option<CheckpointMetadata>, StorageError> {
        for id in self.checkpoints(job).await?.into_iter().rev() {
            match self.load(job, id).await {
                Ok(meta) => return Ok(Some(meta)),
                Err(e @ StorageError::Corrupt { .. }) => {
                    tracing::warn!(job_id = job, checkpoint = id, error = %e, "skipping an unusable checkpoint");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Deletes every file of a checkpoint (complete or not).
    pub async fn discard(&self, job: &str, checkpoint: u64) -> Result<(), StorageError> {
        let dir = self.dir(job, checkpoint);
        let paths: Vec<Path> = self.store.list(Some(&dir)).map_ok(|m| m.location).try_collect().await?;
        // The metadata goes first, so that a partly deleted checkpoint is never taken for complete.
        let (meta, rest): (Vec<Path>, Vec<Path>) = paths.into_iter().partition(|p| p.filename() == Some(METADATA));
        for p in meta.into_iter().chain(rest) {
            match self.store.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes a small object under the root (job manager records).
    pub async fn put_object(&self, path: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.store.put(&self.root.clone().join_path(path), PutPayload::from_bytes(bytes)).await?;
        Ok(())
    }

    /// Reads an object written by [`CheckpointStorage::put_object`] (`None` if absent).
    pub async fn get_object(&self, path: &str) -> Result<Option<Bytes>, StorageError> {
        match self.store.get(&self.root.clone().join_path(path)).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an object (absent is fine).
    pub async fn delete_object(&self, path: &str) -> Result<(), StorageError> {
        match self.store.delete(&self.root.clone().join_path(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Names of the objects directly under `dir` (relative to the root).
    pub async fn list_objects(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        let prefix = self.root.clone().join_path(dir);
        let listing = self.store.list_with_delimiter(Some(&prefix)).await?;
        Ok(listing.objects.into_iter().filter_map(|o| o.location.filename().map(str::to_string)).collect())
    }

    /// The underlying store (for tests that damage checkpoints on purpose).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }
}
