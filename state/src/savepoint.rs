//! Savepoints: snapshots that users own, move and restore into changed jobs.
//!
//! A savepoint is one directory holding a `_metadata` document and one
//! state file per (operator, subtask) that had state. Unlike a checkpoint
//! it is
//!
//! - **self-contained and relocatable**: the metadata names its files
//!   relative to the directory and nothing outside it, so the directory can
//!   be copied to another path or bucket;
//! - **backend-independent**: every file is in the canonical entry format
//!   ([`crate::encode_entries`]) whatever backend wrote it, so a
//!   heap job restores a RocksDB savepoint and the other way round;
//! - **organised by operator uid**, with each operator's kind, parallelism,
//!   declared state types and the key-group range of each subtask, so that
//!   a changed job (operators added or removed, chains and parallelism
//!   different) takes exactly the state of the operators it still has.
//!
//! The metadata ends with a CRC-32 line like a checkpoint's, and names every
//! file with its size and CRC-32; [`Savepoint::load`] verifies all of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_types::{CheckpointId, JobId};

use weir_types::StateEntry;

use crate::codec::decode_entries;
use crate::{checked_body, with_checksum, CheckpointStorage, FileHandle, S3Options, StorageError};

/// `format` of every savepoint's metadata.
pub const SAVEPOINT_FORMAT: &str = "weir-savepoint";

/// Version of the savepoint format written by this build.
pub const SAVEPOINT_VERSION: u32 = 1;

const METADATA: &str = "_metadata";

/// A state an operator declares, with a description of its layout: two
/// declarations with different types cannot restore into each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateType {
    /// State name within the operator.
    pub name: String,
    /// Layout description (e.g. `tumbling(size=1m) by [name: Utf8] of [count]`).
    #[serde(rename = "type")]
    pub type_name: String,
}

/// One subtask's part of an operator in a savepoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavepointSubtask {
    /// Subtask index in the job that took the savepoint.
    pub subtask: u32,
    /// Key groups the subtask owned, `[first, end)`.
    pub key_groups: [u32; 2],
    /// Its state file (`None`: the subtask had no state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileHandle>,
}

/// One operator in a savepoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavepointOperator {
    /// The operator's uid (how a restoring job finds its state).
    pub uid: String,
    /// Its kind (`window`, `kafka_source`, ...).
    pub kind: String,
    /// Its parallelism when the savepoint was taken.
    pub parallelism: u32,
    /// The states it declared.
    #[serde(default)]
    pub states: Vec<StateType>,
    /// Every subtask, by index.
    pub subtasks: Vec<SavepointSubtask>,
}

impl SavepointOperator {
    /// Whether any subtask wrote state.
    pub fn has_state(&self) -> bool {
        self.subtasks.iter().any(|s| s.file.is_some())
    }
}

/// The metadata of a savepoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavepointMetadata {
    /// Always [`SAVEPOINT_FORMAT`].
    pub format: String,
    /// Format version.
    pub version: u32,
    /// Job that took it.
    pub job_id: JobId,
    /// That job's name.
    pub job_name: String,
    /// Checkpoint id of the savepoint (a job restored from it continues
    /// numbering after it).
    pub checkpoint_id: CheckpointId,
    /// When it was triggered (ms since the epoch).
    pub timestamp_ms: i64,
    /// Number of key groups of the job (a restoring job must have the same).
    pub max_parallelism: u32,
    /// The backend of the job that took it (informational: files are canonical).
    pub backend: String,
    /// Whether the job stopped with it (`weir stop --savepoint`).
    #[serde(default)]
    pub stopped: bool,
    /// Every operator of the job, stateful or not.
    pub operators: Vec<SavepointOperator>,
}

impl SavepointMetadata {
    /// The operator with this uid.
    pub fn operator(&self, uid: &str) -> Option<&SavepointOperator> {
        self.operators.iter().find(|o| o.uid == uid)
    }

    /// Every file the savepoint names.
    pub fn files(&self) -> impl Iterator<Item = &FileHandle> {
        self.operators.iter().flat_map(|o| o.subtasks.iter().filter_map(|s| s.file.as_ref()))
    }

    /// Total size of its state files.
    pub fn state_bytes(&self) -> u64 {
        self.files().map(|f| f.size).sum()
    }
}

/// File name of an operator subtask's state inside a savepoint directory.
pub fn state_file_name(uid: &str, subtask: u32) -> String {
    // Uids are restricted to [A-Za-z0-9._-], so they are safe in paths.
    format!("{uid}-{subtask}.state")
}

/// A verified savepoint.
#[derive(Debug, Clone)]
pub struct Savepoint {
    uri: String,
    storage: CheckpointStorage,
    meta: SavepointMetadata,
}

fn what(uri: &str) -> String {
    format!("savepoint {uri}")
}

fn unusable(uri: &str, reason: impl Into<String>) -> StorageError {
    StorageError::Unusable { what: what(uri), reason: reason.into() }
}

/// Opens the directory of a savepoint that must already exist.
fn open_existing(uri: &str, s3: &S3Options) -> Result<CheckpointStorage, StorageError> {
    if let Some(dir) = uri.strip_prefix("file://") {
        if dir.starts_with('/') && !std::path::Path::new(dir).is_dir() {
            return Err(unusable(uri, "no such directory"));
        }
    }
    CheckpointStorage::from_uri_with(uri, s3)
}

impl Savepoint {
    /// Writes the metadata of a savepoint whose files are in `storage` (last,
    /// once every file is stored).
    pub async fn write_metadata(storage: &CheckpointStorage, meta: &SavepointMetadata) -> Result<(), StorageError> {
        storage.put_object(METADATA, bytes::Bytes::from(with_checksum(meta))).await
    }

    /// Loads and verifies the savepoint at `uri`: its metadata checksum,
    /// format and version, and the size and CRC-32 of every file it names.
    pub async fn load(uri: &str, s3: &S3Options) -> Result<Savepoint, StorageError> {
        let uri = uri.trim_end_matches('/');
        let storage = open_existing(uri, s3)?;
        let meta = Self::read_metadata(uri, &storage).await?;
        for f in meta.files() {
            storage.read_relative(&what(uri), f).await?;
        }
        Ok(Savepoint { uri: uri.to_string(), storage, meta })
    }

    async fn read_metadata(uri: &str, storage: &CheckpointStorage) -> Result<SavepointMetadata, StorageError> {
        let raw = storage
            .get_object(METADATA)
            .await?
            .ok_or_else(|| unusable(uri, "it has no _metadata (not a savepoint, or an incomplete one)"))?;
        let body = checked_body(&raw).map_err(|reason| unusable(uri, reason))?;
        let meta: SavepointMetadata =
            serde_json::from_str(body).map_err(|e| unusable(uri, format!("its metadata does not parse: {e}")))?;
        if meta.format != SAVEPOINT_FORMAT {
            return Err(unusable(uri, format!("its metadata is of format `{}`, not a savepoint", meta.format)));
        }
        if meta.version > SAVEPOINT_VERSION {
            return Err(unusable(
                uri,
                format!("format version {} is newer than this build understands ({SAVEPOINT_VERSION})", meta.version),
            ));
        }
        Ok(meta)
    }

    /// Where it is.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Its metadata.
    pub fn metadata(&self) -> &SavepointMetadata {
        &self.meta
    }

    /// The storage rooted at its directory.
    pub fn storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    /// The entries of one state file.
    pub async fn read_entries(&self, file: &FileHandle) -> Result<Vec<StateEntry>, StorageError> {
        let bytes = self.storage.read_relative(&what(&self.uri), file).await?;
        decode_entries(bytes)
            .map_err(|reason| unusable(&self.uri, format!("file {} is malformed: {reason}", file.path)))
    }

    /// Per operator uid, the entries of all its subtasks.
    pub async fn entries_by_operator(&self) -> Result<BTreeMap<String, Vec<StateEntry>>, StorageError> {
        let mut out: BTreeMap<String, Vec<StateEntry>> = BTreeMap::new();
        for op in &self.meta.operators {
            for s in &op.subtasks {
                if let Some(f) = &s.file {
                    out.entry(op.uid.clone()).or_default().extend(self.read_entries(f).await?);
                }
            }
        }
        Ok(out)
    }

    /// Deletes the savepoint at `uri`: the metadata first (so that a partly
    /// deleted savepoint is never taken for a valid one), then every file it
    /// names. Refuses a directory whose metadata is not a savepoint's.
    /// Returns the number of files deleted.
    pub async fn dispose(uri: &str, s3: &S3Options) -> Result<usize, StorageError> {
        let uri = uri.trim_end_matches('/');
        let storage = open_existing(uri, s3)?;
        let meta = Self::read_metadata(uri, &storage).await?;
        storage.delete_object(METADATA).await?;
        let mut n = 1;
        for f in meta.files() {
            storage.delete_object(&f.path).await?;
            n += 1;
        }
        if let Some(dir) = uri.strip_prefix("file://") {
            // Only an empty directory goes: anything else in it is not ours.
            let _ = std::fs::remove_dir(dir);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_entries;
    use weir_types::NON_KEYED;

    fn entry(op: &str, kg: u32) -> StateEntry {
        StateEntry {
            operator: op.into(),
            state: "s".into(),
            key_group: kg,
            key: vec![1],
            value: Some(vec![2]),
            delete_to: None,
        }
    }

    async fn write_one(dir: &std::path::Path) -> String {
        let uri = format!("file://{}", dir.join("sp").display());
        let storage = CheckpointStorage::from_uri(&uri).unwrap();
        let file = storage
            .write_relative(&state_file_name("w", 0), encode_entries(&[entry("w", 3), entry("w", NON_KEYED)]))
            .await
            .unwrap();
        let meta = SavepointMetadata {
            format: SAVEPOINT_FORMAT.into(),
            version: SAVEPOINT_VERSION,
            job_id: "j".into(),
            job_name: "job".into(),
            checkpoint_id: CheckpointId(7),
            timestamp_ms: 1,
            max_parallelism: 128,
            backend: "heap".into(),
            stopped: true,
            operators: vec![SavepointOperator {
                uid: "w".into(),
                kind: "window".into(),
                parallelism: 1,
                states: vec![StateType { name: "s".into(), type_name: "t".into() }],
                subtasks: vec![SavepointSubtask { subtask: 0, key_groups: [0, 128], file: Some(file) }],
            }],
        };
        Savepoint::write_metadata(&storage, &meta).await.unwrap();
        uri
    }

    #[tokio::test]
    async fn a_moved_savepoint_still_loads_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let uri = write_one(dir.path()).await;
        let sp = Savepoint::load(&uri, &S3Options::default()).await.unwrap();
        assert_eq!(sp.metadata().checkpoint_id, CheckpointId(7));
        assert_eq!(sp.entries_by_operator().await.unwrap()["w"].len(), 2);

        // Relocated: the copy is valid on its own.
        let moved = dir.path().join("elsewhere");
        std::fs::rename(dir.path().join("sp"), &moved).unwrap();
        let moved_uri = format!("file://{}", moved.display());
        Savepoint::load(&moved_uri, &S3Options::default()).await.unwrap();

        // A truncated state file is named.
        let file = moved.join(state_file_name("w", 0));
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 3]).unwrap();
        let err = Savepoint::load(&moved_uri, &S3Options::default()).await.unwrap_err().to_string();
        assert!(err.contains("w-0.state") && err.contains("bytes"), "{err}");

        // Truncated metadata is refused, and so is a directory that is not a savepoint.
        let meta = moved.join(METADATA);
        let text = std::fs::read(&meta).unwrap();
        std::fs::write(&meta, &text[..text.len() / 2]).unwrap();
        let err = Savepoint::load(&moved_uri, &S3Options::default()).await.unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        let err = Savepoint::dispose(&format!("file://{}", dir.path().display()), &S3Options::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no _metadata"), "{err}");
        let missing = format!("file://{}", dir.path().join("nothing").display());
        let err = Savepoint::load(&missing, &S3Options::default()).await.unwrap_err().to_string();
        assert!(err.contains("no such directory"), "{err}");
        assert!(!dir.path().join("nothing").exists(), "loading does not create directories");
    }

    #[test]
    fn checkpoint_directories_split_into_storage_job_and_id() {
        let split = CheckpointStorage::split_checkpoint_uri;
        assert_eq!(
            split("file:///var/cp/abc/chk-12/"),
            Some(("file:///var/cp".into(), "abc".into(), CheckpointId(12)))
        );
        assert_eq!(
            split("s3://bucket/prefix/abc/chk-3"),
            Some(("s3://bucket/prefix".into(), "abc".into(), CheckpointId(3)))
        );
        assert_eq!(split("file:///var/sp/savepoint-1234-abcd"), None);
        assert_eq!(split("s3://abc/chk-3"), None);
    }

    #[tokio::test]
    async fn dispose_deletes_what_the_metadata_names() {
        let dir = tempfile::tempdir().unwrap();
        let uri = write_one(dir.path()).await;
        assert_eq!(Savepoint::dispose(&uri, &S3Options::default()).await.unwrap(), 2);
        assert!(!dir.path().join("sp").exists());
    }
}
