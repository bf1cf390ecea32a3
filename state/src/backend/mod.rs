//! State backends: how a subtask's operator state becomes checkpoint files
//! and comes back on restore.
//!
//! Operators keep their working state in memory, in whatever layout is
//! fastest for them (columnar accumulators for windows), and hand it to the
//! backend as [`StateEntry`]s at a barrier — never per record. The backend
//! decides what a checkpoint costs:
//!
//! - [`BackendKind::Heap`]: every checkpoint is a full snapshot — one file
//!   per subtask holding every entry.
//! - [`BackendKind::Rocksdb`]: operators hand over only what changed since
//!   the previous checkpoint (puts and deletes). A checkpoint writes those
//!   changes as a *change file* and names, besides it, the newest uploaded
//!   copy of the local RocksDB (the *base*) and the change files of the
//!   checkpoints since that copy. After the checkpoint's files are on their
//!   way, the backend applies the changes to the database and, in the
//!   background, uploads a new base: only its SST files that no earlier
//!   upload holds. Restoring opens the base and replays the change files in
//!   order. The database's work is so kept off the checkpoint's critical
//!   path, at the price of writing each change twice (once as a change
//!   file, once inside an SST) and of a short replay on restore.
//!
//!   Every file of a base and every change file lives under `<job>/shared/`
//!   and is referenced by every checkpoint that names it; the job manager
//!   deletes one when no retained checkpoint names it any more.
//!
//!   When the database holds changes that neither a base nor the change
//!   files have (after a savepoint, after a restore into another layout, or
//!   when a change file could not be written), the next checkpoint applies
//!   its changes and uploads the database itself, as its own base.
//!
//!   State of a subtask rather than of keys (sources' positions, sinks'
//!   transactions) stays out of RocksDB, in memory, and every checkpoint
//!   writes it whole in a small file of its own.
//!
//! The parts: [`rocks`] (the local database and its bases and change
//! files), [`codec`] (the file layouts), [`upload`] (writing a snapshot's
//! files), [`restore`] (reading them back).
//!
//! Each checkpoint happens in parts: [`TaskBackend::snapshot`] takes the
//! operators' entries (heap: encodes them; RocksDB: encodes the changes);
//! [`Upload::run`] then writes the files; [`TaskBackend::apply`] hands the
//! changes to RocksDB and may start the upload of a new base. All of it runs
//! off the task's thread while the task goes on processing records.

mod restore;
mod rocks;
mod upload;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path as FsPath;

use bytes::BytesMut;

pub use weir_types::{BackendKind, StateEntry, NON_KEYED, UNION};
use weir_types::{CheckpointId, Classify, ErrorClass, JobId};

pub use crate::codec::{decode_entries, encode_entries};
pub use upload::{SavepointUpload, Upload, Uploaded};

use crate::codec::{change_checkpoint, encode_changes, encode_entries_into, CHANGES_SUFFIX};
use crate::{CheckpointStorage, FileHandle, StorageError};
use rocks::{is_operator_state, rocks_options, uuid_like, Base, Change, Rocks, OPERATOR_STATE_FILE};
use upload::{Pending, SavepointSource};

/// Errors of a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Storage failed or a file is damaged.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// RocksDB failed.
    #[error("rocksdb: {0}")]
    RocksDb(#[from] rocksdb::Error),
    /// Local disk failed.
    #[error("local state directory {path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A file a checkpoint names depends on another that was not written.
    #[error("the change file {path} of an earlier checkpoint was not written")]
    Unwritten {
        /// The file.
        path: String,
    },
    /// A snapshot came before the changes of the previous one were applied.
    #[error("the changes of checkpoint {checkpoint} were not applied to the local database before the next snapshot")]
    Unapplied {
        /// The checkpoint whose changes are missing.
        checkpoint: CheckpointId,
    },
    /// The snapshot was declined before any file was written (a
    /// savepoint whose target does not open).
    #[error("{0}")]
    Declined(weir_types::Failure),
    /// A state file does not decode.
    #[error("state file {path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl Classify for BackendError {
    fn class(&self) -> ErrorClass {
        match self {
            BackendError::Storage(e) => e.class(),
            // The local disk or database: a restart on a fresh directory may help.
            BackendError::RocksDb(_) | BackendError::Io { .. } | BackendError::Unwritten { .. } => {
                ErrorClass::Transient
            }
            BackendError::Unapplied { .. } => ErrorClass::Internal,
            BackendError::Declined(f) => f.class,
            BackendError::Malformed { .. } => ErrorClass::Corrupt,
        }
    }
}

pub(crate) fn io(path: &FsPath, source: std::io::Error) -> BackendError {
    BackendError::Io { path: path.display().to_string(), source }
}

/// Where a subtask's state goes.
#[derive(Debug, Clone)]
pub struct TaskIdentity {
    /// Job id.
    pub job: JobId,
    /// Vertex index.
    pub vertex: u32,
    /// Subtask index.
    pub subtask: u32,
    /// Operator uids of the chain.
    pub operators: Vec<String>,
}

/// The backend of one subtask.
pub struct TaskBackend {
    kind: BackendKind,
    storage: CheckpointStorage,
    me: TaskIdentity,
    rocks: Option<Rocks>,
    spare: Spare,
}

/// The buffer of the last heap file, handed back by the upload that wrote
/// it: the next checkpoint encodes into memory that is already mapped. A
/// fresh buffer of several MiB costs one page fault per 4 KiB, milliseconds
/// on every checkpoint. It holds about one heap file per subtask.
type Spare = std::sync::Arc<std::sync::Mutex<Option<BytesMut>>>;

impl std::fmt::Debug for TaskBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskBackend").field("kind", &self.kind).field("storage", &self.storage).finish()
    }
}

impl TaskBackend {
    /// A backend for one subtask. `local_dir` holds RocksDB's working files.
    pub fn open(
        kind: BackendKind,
        storage: CheckpointStorage,
        me: TaskIdentity,
        local_dir: &FsPath,
    ) -> Result<Self, BackendError> {
        let rocks = match kind {
            BackendKind::Heap => None,
            BackendKind::Rocksdb => {
                let dir = local_dir.join(format!("{}-v{}-{}-{}", me.job, me.vertex, me.subtask, uuid_like()));
                std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
                let opts = rocks_options();
                let db = rocksdb::DB::open(&opts, dir.join("db"))?;
                Some(Rocks {
                    db,
                    opts,
                    dir,
                    uploaded: HashMap::new(),
                    operator_state: Default::default(),
                    keyed: false,
                    // An empty database needs no files.
                    base: Some(Base { checkpoint: CheckpointId(0), files: Vec::new() }),
                    log: Vec::new(),
                    unapplied: None,
                    floor: CheckpointId(0),
                    materializing: false,
                    fresh_bytes: 0,
                    changelog: true,
                })
            }
        };
        Ok(Self { kind, storage, me, rocks, spare: Spare::default() })
    }

    /// Whether operators must hand over all their state at every checkpoint
    /// (heap) or only what changed since the previous one (RocksDB).
    pub fn wants_full_snapshots(&self) -> bool {
        self.kind == BackendKind::Heap
    }

    /// The synchronous part of checkpoint `checkpoint`. The entries stay
    /// the caller's, who can free them when it suits (large window state
    /// is tens of thousands of allocations, milliseconds to free).
    ///
    /// A RocksDB backend then wants the same entries in
    /// [`TaskBackend::apply`] before its next snapshot.
    pub fn snapshot(&mut self, checkpoint: CheckpointId, entries: &[StateEntry]) -> Result<Upload, BackendError> {
        let mut upload = Upload {
            storage: self.storage.clone(),
            me: self.me.clone(),
            checkpoint,
            kind: self.kind,
            files: Vec::new(),
            cleanup: None,
            spare: None,
            earlier_bytes: 0,
            base: None,
            background: false,
        };
        let me = &self.me;
        match &mut self.rocks {
            None => {
                if !entries.is_empty() {
                    let name = format!("v{}-{}.state", me.vertex, me.subtask);
                    let mut buf = self.spare.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
                    buf.clear();
                    encode_entries_into(entries, &mut buf);
                    let bytes = buf.freeze();
                    upload.spare = Some(self.spare.clone());
                    upload.files.push((name.clone(), Pending::Bytes { name, bytes, shared: false }));
                }
            }
            Some(r) => {
                r.applied()?;
                entries.iter().filter(|e| is_operator_state(e)).for_each(|e| r.apply_operator_state(e));
                let base = r.base.as_ref().filter(|_| r.changelog && r.log.iter().all(Change::usable));
                if let Some(base) = base {
                    // The base, the change files since, and this checkpoint's.
                    for (local, h) in &base.files {
                        upload.files.push((local.clone(), Pending::Reused(h.clone())));
                    }
                    for c in &r.log {
                        let pending = Pending::Earlier { handle: c.handle.clone(), written: c.written.clone() };
                        upload.files.push((c.local.clone(), pending));
                    }
                    upload.earlier_bytes = std::mem::take(&mut r.fresh_bytes);
                    if entries.iter().any(|e| !is_operator_state(e)) {
                        let local = format!("{checkpoint}{CHANGES_SUFFIX}");
                        let name = format!("v{}-{}-{}-{local}", me.vertex, me.subtask, uuid_like());
                        let bytes = encode_changes(entries);
                        let handle = self.storage.shared_handle(&me.job, &name, &bytes);
                        let (tx, rx) = tokio::sync::watch::channel(None);
                        upload.files.push((local.clone(), Pending::Changes { name, bytes, written: tx }));
                        r.log.push(Change { local, handle, written: Some(rx) });
                        r.unapplied = Some(checkpoint);
                    }
                } else {
                    // The database itself, with this checkpoint's changes.
                    r.apply(entries)?;
                    r.diverged(checkpoint);
                    if let Some(cp_dir) = r.link(&format!("chk-{checkpoint}"))? {
                        upload.files = r.base_files(&cp_dir, me)?;
                        upload.cleanup = Some(cp_dir);
                    }
                    upload.base = Some(checkpoint);
                }
                if let Some(bytes) = r.operator_state_file() {
                    let name = format!("v{}-{}-{OPERATOR_STATE_FILE}", me.vertex, me.subtask);
                    upload.files.push((OPERATOR_STATE_FILE.to_string(), Pending::Bytes { name, bytes, shared: false }));
                }
            }
        }
        Ok(upload)
    }

    /// The part of checkpoint `checkpoint` after its files are on their
    /// way: a RocksDB backend applies the changes its snapshot wrote as a
    /// change file (the same `entries`) to the database, and returns the
    /// upload of a new base unless one is under way. Report the upload's
    /// outcome with [`TaskBackend::uploaded`] or
    /// [`TaskBackend::base_failed`].
    pub fn apply(&mut self, checkpoint: CheckpointId, entries: &[StateEntry]) -> Result<Option<Upload>, BackendError> {
        let me = &self.me;
        let Some(r) = self.rocks.as_mut().filter(|r| r.unapplied == Some(checkpoint)) else { return Ok(None) };
        r.unapplied = None;
        r.apply(entries)?;
        if r.materializing {
            return Ok(None);
        }
        let Some(cp_dir) = r.link(&format!("base-{checkpoint}"))? else { return Ok(None) };
        r.materializing = true;
        Ok(Some(Upload {
            storage: self.storage.clone(),
            me: me.clone(),
            checkpoint,
            kind: self.kind,
            files: r.base_files(&cp_dir, me)?,
            cleanup: Some(cp_dir),
            spare: None,
            earlier_bytes: 0,
            base: Some(checkpoint),
            background: true,
        }))
    }

    /// Whether a RocksDB backend's checkpoints write change files (the
    /// default) or apply the changes and upload the database's new files
    /// before they are acknowledged: fewer bytes uploaded (the SSTs are
    /// compressed, the change files are not), longer checkpoints.
    pub fn set_changelog(&mut self, on: bool) {
        if let Some(r) = &mut self.rocks {
            r.changelog = on;
        }
    }

    /// Whether [`TaskBackend::apply`] wants the entries of the last snapshot.
    pub fn applies_later(&self) -> bool {
        self.rocks.as_ref().is_some_and(|r| r.unapplied.is_some())
    }

    /// The synchronous part of a savepoint: operators' entries (heap: all of
    /// them; RocksDB: the changes, applied to the local database like a
    /// checkpoint's so that later checkpoints stay incremental) become a
    /// full, canonical copy of the subtask's state, one file per operator,
    /// written into `target` (the savepoint's directory) by
    /// [`SavepointUpload::run`].
    pub fn savepoint(
        &mut self,
        checkpoint: CheckpointId,
        entries: Vec<StateEntry>,
        target: CheckpointStorage,
    ) -> Result<SavepointUpload, BackendError> {
        let source = match &mut self.rocks {
            None => SavepointSource::Entries(entries),
            Some(r) => {
                r.applied()?;
                let dir = r.apply_and_link(&entries, &format!("sp-{checkpoint}"))?;
                // No change file holds these changes.
                r.diverged(checkpoint);
                SavepointSource::RocksDb(dir, r.operator_state.values().cloned().collect())
            }
        };
        Ok(SavepointUpload { target, me: self.me.clone(), source })
    }

    /// Records what an upload of this backend produced: RocksDB reuses its
    /// SST files in later uploads, and a base it wrote becomes the one later
    /// checkpoints name, unless a newer one already is. Returns the files of
    /// a base written in the background that no checkpoint will name (it
    /// came too late): the caller deletes them.
    pub fn uploaded(&mut self, done: &Uploaded) -> Vec<FileHandle> {
        let Some(r) = &mut self.rocks else { return Vec::new() };
        if done.background {
            r.materializing = false;
        }
        let accepted = done.base.is_some_and(|checkpoint| {
            checkpoint >= r.floor && r.base.as_ref().is_none_or(|b| b.checkpoint < checkpoint)
        });
        if done.background && !accepted {
            return done.new_shared.iter().map(|(_, h)| h.clone()).collect();
        }
        r.uploaded.extend(done.new_shared.iter().filter(|(n, _)| n.ends_with(".sst")).cloned());
        let Some(checkpoint) = done.base.filter(|_| accepted) else { return Vec::new() };
        let files = done
            .snapshot
            .local_names
            .iter()
            .zip(&done.snapshot.files)
            .filter(|(n, _)| *n != OPERATOR_STATE_FILE)
            .map(|(n, f)| (n.clone(), f.clone()))
            .collect();
        r.base = Some(Base { checkpoint, files });
        // The base holds the changes up to its checkpoint.
        r.log.retain(|c| change_checkpoint(&c.local).is_some_and(|id| id > checkpoint));
        if done.background {
            r.fresh_bytes += done.uploaded_bytes;
        }
        Vec::new()
    }

    /// The storage checkpoints of this backend go to.
    pub fn storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    /// A base uploaded in the background was not written: the change files
    /// go on until the next one is.
    pub fn base_failed(&mut self) {
        if let Some(r) = &mut self.rocks {
            r.materializing = false;
        }
    }
}

impl Drop for TaskBackend {
    fn drop(&mut self) {
        if let Some(r) = self.rocks.take() {
            let dir = r.dir.clone();
            drop(r);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
