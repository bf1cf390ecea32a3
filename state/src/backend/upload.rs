//! Writing a snapshot's files: a checkpoint's ([`Upload`]) and a
//! savepoint's ([`SavepointUpload`]).

use std::path::PathBuf;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::rocks::{read_rocks_dir, Written};
use crate::codec::encode_entries;
use weir_types::CheckpointId;

use super::{io, BackendError, BackendKind, Spare, StateEntry, TaskIdentity};
use crate::{CheckpointStorage, FileHandle, StorageError, TaskSnapshot};

/// The asynchronous part of a savepoint.
#[derive(Debug)]
pub struct SavepointUpload {
    pub(super) target: CheckpointStorage,
    pub(super) me: TaskIdentity,
    pub(super) source: SavepointSource,
}

#[derive(Debug)]
pub(super) enum SavepointSource {
    Entries(Vec<StateEntry>),
    /// A hard-linked RocksDB checkpoint to read every entry from, then
    /// delete (none if the database never held keyed state), and the
    /// operator state kept apart from it.
    RocksDb(Option<PathBuf>, Vec<StateEntry>),
}

impl SavepointUpload {
    /// Writes one canonical file per operator of the chain that has state;
    /// returns the subtask's part (file paths relative to the savepoint).
    pub async fn run(self) -> Result<Uploaded, BackendError> {
        let entries = match self.source {
            SavepointSource::Entries(e) => e,
            SavepointSource::RocksDb(None, operator_state) => operator_state,
            SavepointSource::RocksDb(Some(dir), operator_state) => {
                let read = {
                    let at = dir.clone();
                    tokio::task::spawn_blocking(move || read_rocks_dir(&at))
                        .await
                        .map_err(|e| BackendError::Malformed { path: dir.display().to_string(), reason: e.to_string() })
                };
                let _ = tokio::fs::remove_dir_all(&dir).await;
                let mut entries = read??;
                entries.extend(operator_state);
                entries
            }
        };
        let mut by_operator: std::collections::BTreeMap<&str, Vec<&StateEntry>> = Default::default();
        for e in entries.iter().filter(|e| e.value.is_some()) {
            by_operator.entry(e.operator.as_str()).or_default().push(e);
        }
        let mut snapshot = TaskSnapshot {
            operators: self.me.operators.clone(),
            subtask: self.me.subtask,
            files: Vec::new(),
            backend: "savepoint".into(),
            local_names: Vec::new(),
            file_operators: Vec::new(),
            parallelism: 0,
        };
        let mut uploaded_bytes = 0;
        for (uid, list) in by_operator {
            let owned: Vec<StateEntry> = list.into_iter().cloned().collect();
            let bytes = encode_entries(&owned);
            uploaded_bytes += bytes.len() as u64;
            let name = crate::savepoint::state_file_name(uid, self.me.subtask);
            snapshot.files.push(self.target.write_relative(&name, bytes).await?);
            snapshot.file_operators.push(uid.to_string());
        }
        Ok(Uploaded { snapshot, uploaded_bytes, new_shared: Vec::new(), base: None, background: false })
    }
}

/// The asynchronous part of a checkpoint: files to write.
#[derive(Debug)]
pub struct Upload {
    pub(super) storage: CheckpointStorage,
    pub(super) me: TaskIdentity,
    pub(super) checkpoint: CheckpointId,
    pub(super) kind: BackendKind,
    /// (local name, file to upload or an already uploaded handle).
    pub(super) files: Vec<(String, Pending)>,
    /// A directory to delete once uploaded (RocksDB checkpoint hard links).
    pub(super) cleanup: Option<PathBuf>,
    /// Where the heap file's buffer goes once written.
    pub(super) spare: Option<Spare>,
    /// Bytes written earlier that this checkpoint is the first to name
    /// (a base uploaded in the background).
    pub(super) earlier_bytes: u64,
    /// The checkpoint whose base this upload writes, if it writes one.
    pub(super) base: Option<CheckpointId>,
    /// Whether it writes only a base, in the background (no checkpoint
    /// names it yet).
    pub(super) background: bool,
}

#[derive(Debug)]
pub(super) enum Pending {
    Bytes {
        name: String,
        bytes: Bytes,
        shared: bool,
    },
    File {
        path: PathBuf,
        name: String,
        shared: bool,
    },
    Reused(FileHandle),
    /// A change file of this checkpoint: whether it was written goes to
    /// the later checkpoints that name it too.
    Changes {
        name: String,
        bytes: Bytes,
        written: tokio::sync::watch::Sender<Option<bool>>,
    },
    /// A change file of an earlier checkpoint, maybe still being written.
    Earlier {
        handle: FileHandle,
        written: Option<Written>,
    },
}

/// What an upload produced.
#[derive(Debug)]
pub struct Uploaded {
    /// The subtask's part of the checkpoint.
    pub snapshot: TaskSnapshot,
    /// Bytes written by this checkpoint.
    pub uploaded_bytes: u64,
    /// Newly uploaded shared files (so the backend can reuse them).
    pub new_shared: Vec<(String, FileHandle)>,
    /// The checkpoint whose base this upload wrote, if it wrote one.
    pub base: Option<CheckpointId>,
    /// Whether it wrote only a base, in the background.
    pub background: bool,
}

impl Uploaded {
    /// Whether the backend must hear of this upload
    /// ([`TaskBackend::uploaded`]): it wrote files to reuse or a base.
    pub fn concerns_backend(&self) -> bool {
        !self.new_shared.is_empty() || self.base.is_some()
    }
}

/// How many files of one upload are written at once. An object store
/// answers each write after a round trip, so a checkpoint of many files
/// (RocksDB's, change files) waits for a few round trips instead of one per
/// file.
const PARALLEL_WRITES: usize = 8;

/// How many MiB of local files one upload holds in memory at once (a file
/// larger than that is read alone).
const READ_BUDGET_MIB: u32 = 64;

/// One file of an upload, written (or reused).
struct Settled {
    local: String,
    handle: FileHandle,
    /// Bytes this upload wrote for it.
    written: u64,
    /// A shared file written now, that later checkpoints may reuse.
    new_shared: bool,
}

impl Upload {
    /// Writes the files, several at once; returns the subtask's part of the
    /// checkpoint (files in the order they were handed over).
    pub async fn run(mut self) -> Result<Uploaded, BackendError> {
        let mut snapshot = TaskSnapshot {
            operators: self.me.operators.clone(),
            subtask: self.me.subtask,
            files: Vec::new(),
            backend: self.kind.name().to_string(),
            local_names: Vec::new(),
            file_operators: Vec::new(),
            parallelism: 0,
        };
        let files = std::mem::take(&mut self.files);
        let budget = tokio::sync::Semaphore::new(READ_BUDGET_MIB as usize);
        let settled: Vec<Settled> = {
            let (this, budget) = (&self, &budget);
            futures::stream::iter(files)
                .map(|(local, pending)| this.settle(local, pending, budget))
                .buffered(PARALLEL_WRITES)
                .try_collect()
                .await?
        };
        let mut uploaded_bytes = self.earlier_bytes;
        let mut new_shared = Vec::new();
        for s in settled {
            uploaded_bytes += s.written;
            if s.new_shared {
                new_shared.push((s.local.clone(), s.handle.clone()));
            }
            snapshot.files.push(s.handle);
            snapshot.local_names.push(s.local);
        }
        if let Some(dir) = self.cleanup.take() {
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
        Ok(Uploaded { snapshot, uploaded_bytes, new_shared, base: self.base, background: self.background })
    }

    /// Writes one file (or waits for the earlier upload that writes it).
    async fn settle(
        &self,
        local: String,
        pending: Pending,
        budget: &tokio::sync::Semaphore,
    ) -> Result<Settled, BackendError> {
        let done = |handle, written, new_shared| Settled { local: local.clone(), handle, written, new_shared };
        Ok(match pending {
            Pending::Reused(h) => done(h, 0, false),
            Pending::Bytes { name, bytes, shared } => {
                let size = bytes.len() as u64;
                let written = self.write(&name, bytes.clone(), shared).await?;
                // The store let go of its copy: the buffer is ours again.
                if let (Some(spare), Ok(mut buf)) = (&self.spare, bytes.try_into_mut()) {
                    buf.clear();
                    *spare.lock().unwrap_or_else(|e| e.into_inner()) = Some(buf);
                }
                done(written, size, false)
            }
            Pending::File { path, name, shared } => {
                let size = tokio::fs::metadata(&path).await.map_err(|e| io(&path, e))?.len();
                let mib = size.div_ceil(1 << 20).clamp(1, READ_BUDGET_MIB as u64) as u32;
                let _memory = budget.acquire_many(mib).await.expect("the budget is never closed");
                let bytes = tokio::fs::read(&path).await.map_err(|e| io(&path, e))?;
                let size = bytes.len() as u64;
                let h = self.write(&name, Bytes::from(bytes), shared).await?;
                done(h, size, shared)
            }
            Pending::Changes { name, bytes, written } => {
                let size = bytes.len() as u64;
                let h = self.write(&name, bytes, true).await;
                // Dropping `written` unsent (an error above, or this write
                // cancelled by another one's error) tells later checkpoints
                // that the file is missing.
                let _ = written.send(Some(h.is_ok()));
                done(h?, size, false)
            }
            Pending::Earlier { handle, written: None } => done(handle, 0, false),
            Pending::Earlier { handle, written: Some(mut written) } => {
                // A later checkpoint must not complete naming a file that is not there.
                let ok = written.wait_for(Option::is_some).await.ok().and_then(|w| *w).unwrap_or(false);
                if !ok {
                    return Err(BackendError::Unwritten { path: handle.path });
                }
                done(handle, 0, false)
            }
        })
    }

    async fn write(&self, name: &str, bytes: Bytes, shared: bool) -> Result<FileHandle, StorageError> {
        // A crash between two files of one upload leaves some of them behind.
        weir_types::failpoint::hit("checkpoint_file_upload");
        if shared {
            self.storage.write_shared_file(&self.me.job, name, bytes).await
        } else {
            self.storage.write_file(&self.me.job, self.checkpoint, name, bytes).await
        }
    }
}
