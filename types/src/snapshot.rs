//! What a checkpoint is made of, as the job manager records it: every
//! subtask's part (its files, with sizes and checksums) and the metadata
//! that makes the checkpoint complete. The same types travel in protobuf
//! between task managers and the job manager and are written as the
//! checkpoint's `_metadata` (JSON with a checksum, see `weir-state`).

use serde::{Deserialize, Serialize};

use crate::{CheckpointId, JobId};

/// Version of the checkpoint metadata format written by this build.
pub const METADATA_VERSION: u32 = 1;

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
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskSnapshot {
    /// Operator uids of the task's chain, head first.
    pub operators: Vec<String>,
    /// Subtask index.
    pub subtask: u32,
    /// State files.
    pub files: Vec<FileHandle>,
    /// Backend that wrote the files (`heap`, `rocksdb`, or `savepoint` for
    /// the parts of a savepoint).
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// Format version.
    pub version: u32,
    /// Job id.
    pub job_id: JobId,
    /// Checkpoint id.
    pub checkpoint_id: CheckpointId,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Metadata written before this crate existed (with the unused `inline`
    /// field) still reads, and ids keep their bare JSON form.
    #[test]
    fn earlier_metadata_documents_still_parse() {
        let doc = r#"{"version":1,"job_id":"ab12","checkpoint_id":7,"timestamp_ms":5,
            "tasks":[{"operators":["gen"],"subtask":0,"files":[{"path":"p","size":3,"crc32":9}],"inline":null,"backend":"heap"}]}"#;
        let m: CheckpointMetadata = serde_json::from_str(doc).unwrap();
        assert_eq!(m.checkpoint_id, CheckpointId(7));
        assert_eq!(m.job_id, JobId::new("ab12"));
        assert_eq!(m.files().count(), 1);
        let back = serde_json::to_value(&m).unwrap();
        assert_eq!(back["checkpoint_id"], 7);
        assert_eq!(back["job_id"], "ab12");
    }
}
