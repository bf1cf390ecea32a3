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

use serde::Serialize;
use weir_types::{CheckpointId, Classify, ErrorClass, JobId};

pub mod backend;
mod codec;
pub mod savepoint;
mod storage;
mod uri;

pub use codec::{decode_entries, encode_entries};
pub use storage::{CheckpointStorage, Swept};
pub use uri::{object_store_for, S3Options};

pub use weir_types::{CheckpointMetadata, FileHandle, TaskSnapshot, METADATA_VERSION};

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
        job: JobId,
        /// Checkpoint id.
        checkpoint: CheckpointId,
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
    #[error("unsupported checkpoint storage URI `{0}`: use file:///absolute/path, s3://bucket/prefix, hdfs://namenode:port/path or memory://")]
    Uri(String),
}

impl Classify for StorageError {
    fn class(&self) -> ErrorClass {
        match self {
            StorageError::Store(object_store::Error::NotFound { .. }) => ErrorClass::Corrupt,
            StorageError::Store(
                object_store::Error::NotSupported { .. }
                | object_store::Error::NotImplemented { .. }
                | object_store::Error::InvalidPath { .. }
                | object_store::Error::UnknownConfigurationKey { .. },
            ) => ErrorClass::User,
            StorageError::Store(_) => ErrorClass::Transient,
            StorageError::Corrupt { .. } | StorageError::Unusable { .. } => ErrorClass::Corrupt,
            StorageError::Uri(_) => ErrorClass::User,
        }
    }
}

impl StorageError {
    /// Whether retrying the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        self.class().is_retriable()
    }
}

/// Serializes a metadata document followed by the line `#crc32:XXXXXXXX`.
pub(crate) fn with_checksum<T: Serialize>(meta: &T) -> Vec<u8> {
    let mut body = serde_json::to_vec_pretty(meta).expect("metadata serializes");
    let sum = crc32(&body);
    body.extend_from_slice(format!("{CHECKSUM_PREFIX}{sum:08x}\n").as_bytes());
    body
}

/// The document of a metadata file whose checksum line matches.
pub(crate) fn checked_body(raw: &[u8]) -> Result<&str, &'static str> {
    let text = std::str::from_utf8(raw).map_err(|_| "its metadata is not UTF-8")?;
    let (body, sum) = text.rsplit_once(CHECKSUM_PREFIX).ok_or("its metadata is truncated (no checksum)")?;
    let want = u32::from_str_radix(sum.trim(), 16).map_err(|_| "its metadata checksum is malformed")?;
    if crc32(body.as_bytes()) != want {
        return Err("its metadata fails its checksum");
    }
    Ok(body)
}

pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.finalize()
}
