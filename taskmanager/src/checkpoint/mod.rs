//! A task's side of checkpoints: its state backend, the asynchronous upload
//! of each snapshot, and the acknowledgement (or decline) to the job manager.
//!
//! The task hands each snapshot to a state thread of its own, which feeds
//! the backend in checkpoint order (heap encodes its file; RocksDB encodes
//! a change file) and then starts the upload. RocksDB's own work, applying
//! the changes to its database and uploading a new base, waits until the
//! checkpoint completes (or the next snapshot comes; [`order`] decides).
//! The state thread is started before the task lowers its thread's
//! priority, so this work runs at the process's priority instead of
//! competing with every busy task for the cores, and the task goes on
//! processing meanwhile.

mod background;
mod order;
mod savepoints;

pub use background::Background;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tonic::transport::Channel;
use tracing::{debug, warn};
use weir_proto::v1;
use weir_proto::v1::job_manager_service_client::JobManagerServiceClient;
use weir_runtime::keygroup::key_group_range;
use weir_runtime::task::{Checkpointer, SnapshotTiming};
use weir_state::backend::{BackendError, TaskBackend, TaskIdentity, Uploaded};
use weir_state::{CheckpointStorage, TaskSnapshot};
use weir_types::{failpoint, BackendKind, CheckpointId, Classify, ErrorClass, Failure, JobId, StateEntry};

use order::{snapshot_kind, SnapshotKind, Unapplied};
pub use savepoints::SavepointTable;

/// The checkpointing of one task.
pub struct TaskCheckpointer {
    key: v1::TaskKey,
    job: JobId,
    full: bool,
    savepoints: SavepointTable,
    to_state_thread: Option<std::sync::mpsc::Sender<ToStateThread>>,
    state_thread: Option<std::thread::JoinHandle<()>>,
    /// Why the backend could not take a snapshot: it is then behind the
    /// operators (which handed over their changes), so the task must fail.
    failed: Arc<Mutex<Option<Failure>>>,
}

/// What the state thread is handed.
enum ToStateThread {
    /// A snapshot.
    Snapshot(Handover),
    /// A checkpoint completed.
    Completed(CheckpointId),
}

/// A snapshot on its way from the task to the backend.
struct Handover {
    id: CheckpointId,
    entries: Vec<StateEntry>,
    timing: SnapshotTiming,
    savepoint: Option<String>,
    handed_over: Instant,
}

/// Writing a snapshot's files.
type UploadFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Uploaded, BackendError>> + Send>>;

/// What the state thread and the uploads it starts share.
struct StateThread {
    backend: Arc<Mutex<TaskBackend>>,
    key: v1::TaskKey,
    jm: JobManagerServiceClient<Channel>,
    runtime: tokio::runtime::Handle,
    background: Arc<Background>,
    s3: weir_state::S3Options,
    state_bytes: Arc<std::sync::atomic::AtomicU64>,
    failed: Arc<Mutex<Option<Failure>>>,
}

impl std::fmt::Debug for TaskCheckpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCheckpointer").field("key", &self.key).finish()
    }
}

/// What a deployment needs to set up checkpointing for a task.
#[derive(Debug)]
pub struct CheckpointSetup<'a> {
    /// The storage of the job's checkpoints.
    pub storage: CheckpointStorage,
    /// `heap` or `rocksdb`.
    pub backend: BackendKind,
    /// RocksDB: checkpoints write change files (see `TaskBackend::set_changelog`).
    pub changelog: bool,
    /// Local directory for RocksDB.
    pub state_dir: &'a Path,
    /// Operators of the task's chain.
    pub operators: Vec<String>,
    /// Parallelism of the task's vertex.
    pub parallelism: u32,
    /// Key groups of the job.
    pub max_parallelism: u32,
    /// Savepoints announced to the task manager.
    pub savepoints: SavepointTable,
    /// S3 settings for savepoint directories.
    pub s3: weir_state::S3Options,
    /// Where the size of the state of the last snapshot goes (a metric).
    pub state_bytes: Arc<std::sync::atomic::AtomicU64>,
    /// Counts the uploads running in the background.
    pub background: Arc<Background>,
}

/// State a task restores: where the files are, the checkpoint (or
/// savepoint) id, and the parts of every subtask that wrote them.
#[derive(Debug)]
pub struct Restore {
    /// The storage holding the files (the checkpoint storage, or a savepoint's directory).
    pub from: CheckpointStorage,
    /// Checkpoint id.
    pub checkpoint: CheckpointId,
    /// The parts.
    pub snapshots: Vec<TaskSnapshot>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TaskCheckpointer {
    /// Opens the backend of a task, restoring `restore` (snapshots of every
    /// subtask of the vertex in checkpoint `checkpoint`) if given. Returns
    /// the checkpointer and the restored entries for the chain.
    pub async fn open(
        setup: CheckpointSetup<'_>,
        key: v1::TaskKey,
        jm: JobManagerServiceClient<Channel>,
        runtime: tokio::runtime::Handle,
        restore: Option<Restore>,
    ) -> Result<(TaskCheckpointer, Vec<StateEntry>), Failure> {
        let job = JobId::new(key.job_id.clone());
        let me =
            TaskIdentity { job: job.clone(), vertex: key.vertex, subtask: key.subtask, operators: setup.operators };
        let mut backend = TaskBackend::open(setup.backend, setup.storage, me, setup.state_dir)
            .map_err(|e| Failure::of(&e).context(format!("opening the {} state backend", setup.backend)))?;
        backend.set_changelog(setup.changelog);
        let mut entries = Vec::new();
        if let Some(Restore { from, checkpoint, snapshots }) = restore {
            let started = Instant::now();
            let groups = key_group_range(setup.max_parallelism, setup.parallelism, key.subtask);
            // Parts that say which parallelism wrote them (savepoints) are
            // laid out like this vertex only if it was the same; otherwise
            // a checkpoint of the same job has one part per subtask.
            let same_layout = if snapshots.iter().all(|s| s.parallelism > 0) {
                snapshots.iter().all(|s| s.parallelism == setup.parallelism)
            } else {
                snapshots.len() as u32 == setup.parallelism
            };
            entries = backend
                .restore(&from, checkpoint, &snapshots, groups, same_layout)
                .await
                .map_err(|e| Failure::of(&e).context(format!("restoring checkpoint {checkpoint}")))?;
            debug!(checkpoint = %checkpoint, entries = entries.len(), took = ?started.elapsed(), "state restored");
        }
        let failed = Arc::new(Mutex::new(None));
        let full = backend.wants_full_snapshots();
        let state = StateThread {
            backend: Arc::new(Mutex::new(backend)),
            key: key.clone(),
            jm,
            runtime,
            background: setup.background,
            s3: setup.s3,
            state_bytes: setup.state_bytes,
            failed: failed.clone(),
        };
        let (tx, inbox) = std::sync::mpsc::channel::<ToStateThread>();
        let thread = std::thread::Builder::new()
            .name(format!("state-{}-{}", key.vertex, key.subtask))
            .spawn(move || {
                let mut unapplied = Unapplied::default();
                for message in inbox {
                    match message {
                        ToStateThread::Snapshot(handover) => {
                            if let Some((id, entries)) = unapplied.before_snapshot() {
                                state.apply_changes(id, &entries);
                            }
                            if let Some((id, entries)) = state.take_snapshot(handover) {
                                unapplied.hold(id, entries);
                            }
                        }
                        ToStateThread::Completed(done) => {
                            if let Some((id, entries)) = unapplied.completed(done) {
                                state.apply_changes(id, &entries);
                            }
                        }
                    }
                }
            })
            .map_err(|e| {
                Failure::new(ErrorClass::Transient, format!("starting the state backend's thread failed: {e}"))
            })?;
        let cp = TaskCheckpointer {
            key,
            job,
            full,
            savepoints: setup.savepoints,
            to_state_thread: Some(tx),
            state_thread: Some(thread),
            failed,
        };
        Ok((cp, entries))
    }
}

impl Checkpointer for TaskCheckpointer {
    fn full_snapshots(&self) -> bool {
        self.full
    }

    fn checkpoint(&mut self, id: CheckpointId, entries: Vec<StateEntry>, timing: SnapshotTiming) -> Result<(), String> {
        if let Some(failure) = lock(&self.failed).clone() {
            return Err(failure.to_string());
        }
        let savepoint = self.savepoints.location(&self.job, self.key.attempt, id);
        let handover = Handover { id, entries, timing, savepoint, handed_over: Instant::now() };
        match &self.to_state_thread {
            Some(tx) if tx.send(ToStateThread::Snapshot(handover)).is_ok() => Ok(()),
            _ => Err("the state backend's thread has stopped".into()),
        }
    }

    fn checkpoint_complete(&mut self, id: CheckpointId) {
        if let Some(tx) = &self.to_state_thread {
            let _ = tx.send(ToStateThread::Completed(id));
        }
    }
}

impl Drop for TaskCheckpointer {
    fn drop(&mut self) {
        // The state thread finishes what it was handed (uploads go on in the runtime).
        drop(self.to_state_thread.take());
        if let Some(t) = self.state_thread.take() {
            let _ = t.join();
        }
    }
}

impl StateThread {
    /// Feeds one snapshot to the backend and starts its upload and
    /// acknowledgement (or declines the checkpoint). Returns the entries if
    /// the backend wants them again ([`StateThread::apply_changes`]).
    fn take_snapshot(&self, handover: Handover) -> Option<(CheckpointId, Vec<StateEntry>)> {
        let Handover { id, entries, timing, savepoint, handed_over } = handover;
        let kind = snapshot_kind(savepoint.as_deref(), |location| {
            CheckpointStorage::from_uri_with(location, &self.s3).map_err(|e| Failure::of(&e))
        });
        let is_savepoint = !matches!(kind, SnapshotKind::Checkpoint);
        // The entries are freed only after the acknowledgement: for large
        // window state that is tens of thousands of allocations, several
        // milliseconds that need not delay the checkpoint.
        let (upload, mut entries, applies_later): (Result<UploadFuture, Failure>, Vec<_>, bool) = {
            let mut b = lock(&self.backend);
            match kind {
                SnapshotKind::Checkpoint => {
                    let upload = taken(b.snapshot(id, &entries), "taking the state snapshot failed")
                        .map(|u| Box::pin(u.run()) as UploadFuture);
                    (upload, entries, b.applies_later())
                }
                SnapshotKind::Savepoint(target) => {
                    let upload = taken(b.savepoint(id, entries, target), "taking the savepoint snapshot failed")
                        .map(|u| Box::pin(u.run()) as UploadFuture);
                    (upload, Vec::new(), false)
                }
                SnapshotKind::UnwritableSavepoint(e) => {
                    let upload = taken(b.snapshot(id, &entries), "taking the state snapshot failed")
                        .map(|_| Box::pin(async move { Err(BackendError::Declined(e)) }) as UploadFuture);
                    (upload, entries, b.applies_later())
                }
            }
        };
        // The backend may want the entries again (RocksDB applies them once
        // the checkpoint completes); otherwise they go with the upload.
        let spent = if applies_later { Vec::new() } else { std::mem::take(&mut entries) };
        let upload = match upload {
            Ok(u) => u,
            Err(failure) => {
                // The backend is behind the operators now: the task fails at
                // its next checkpoint, and this one is declined.
                warn!(checkpoint = %id, vertex = self.key.vertex, subtask = self.key.subtask, error = %failure, "the state backend could not take a snapshot");
                *lock(&self.failed) = Some(failure.clone());
                let (key, mut jm) = (self.key.clone(), self.jm.clone());
                self.background.spawn(&self.runtime, async move {
                    let _ = jm.decline_checkpoint(decline(key, id, &failure)).await;
                });
                return None;
            }
        };
        debug!(checkpoint = %id, vertex = self.key.vertex, subtask = self.key.subtask, took = ?handed_over.elapsed(), "backend snapshot taken");
        failpoint::hit("checkpoint_snapshot_taken");
        let (backend, key, mut jm, state_bytes) =
            (self.backend.clone(), self.key.clone(), self.jm.clone(), self.state_bytes.clone());
        self.background.spawn(&self.runtime, async move {
            let started = Instant::now();
            let result = upload.await;
            debug!(checkpoint = %id, vertex = key.vertex, subtask = key.subtask, took = ?started.elapsed(), "checkpoint files written");
            let sent = match result {
                Ok(done) => {
                    failpoint::hit("checkpoint_files_written");
                    // Only when there is something to record: the state
                    // thread may hold the backend for a while, applying changes.
                    if done.concerns_backend() {
                        lock(&backend).uploaded(&done);
                    }
                    if !is_savepoint {
                        let size: u64 = done.snapshot.files.iter().map(|f| f.size).sum();
                        state_bytes.store(size, std::sync::atomic::Ordering::Relaxed);
                    }
                    jm.acknowledge_checkpoint(v1::AcknowledgeCheckpointRequest {
                        task: Some(key.clone()),
                        checkpoint_id: id.0,
                        snapshot: Some(weir_proto::snapshot_to_proto(&done.snapshot)),
                        alignment_ms: timing.alignment.as_millis() as u64,
                        sync_ms: timing.sync.as_millis() as u64,
                        async_ms: handed_over.elapsed().as_millis() as u64,
                        uploaded_bytes: done.uploaded_bytes,
                    })
                    .await
                }
                Err(e) => {
                    let failure = Failure::of(&e);
                    warn!(checkpoint = %id, vertex = key.vertex, subtask = key.subtask, class = %failure.class, error = %failure, "checkpoint upload failed");
                    jm.decline_checkpoint(decline(key.clone(), id, &failure)).await
                }
            };
            match sent {
                Ok(_) => failpoint::hit("checkpoint_acknowledged"),
                Err(e) => warn!(checkpoint = %id, error = %e.message(), "reporting a checkpoint to the job manager failed"),
            }
            drop(spent);
        });
        applies_later.then_some((id, entries))
    }

    /// Hands a checkpoint's changes to the backend after its files were
    /// written, and uploads a new base in the background if one is due.
    fn apply_changes(&self, id: CheckpointId, entries: &[StateEntry]) {
        let started = Instant::now();
        let base = match lock(&self.backend).apply(id, entries) {
            Ok(base) => base,
            Err(e) => {
                // The database is behind the operators: the task fails at its next checkpoint.
                let failure = Failure::of(&e).context(format!("applying the changes of checkpoint {id} failed"));
                warn!(checkpoint = %id, vertex = self.key.vertex, subtask = self.key.subtask, error = %failure, "the state backend could not apply changes");
                *lock(&self.failed) = Some(failure);
                return;
            }
        };
        debug!(checkpoint = %id, vertex = self.key.vertex, subtask = self.key.subtask, took = ?started.elapsed(), "changes applied");
        let Some(base) = base else { return };
        let (backend, key) = (self.backend.clone(), self.key.clone());
        self.background.spawn(&self.runtime, async move {
            let started = Instant::now();
            match base.run().await {
                Ok(done) => {
                    debug!(checkpoint = %id, vertex = key.vertex, subtask = key.subtask, bytes = done.uploaded_bytes, took = ?started.elapsed(), "state base uploaded");
                    failpoint::hit("state_base_uploaded");
                    let (orphans, storage) = {
                        let mut b = lock(&backend);
                        (b.uploaded(&done), b.storage().clone())
                    };
                    if let Err(e) = storage.delete_shared(&orphans).await {
                        warn!(vertex = key.vertex, subtask = key.subtask, error = %e, "deleting a superseded state base failed");
                    }
                }
                Err(e) => {
                    // Checkpoints go on naming change files until the next base.
                    warn!(checkpoint = %id, vertex = key.vertex, subtask = key.subtask, error = %e, "uploading a state base failed");
                    lock(&backend).base_failed();
                }
            }
        });
    }
}

/// A backend's result, its error as a failure saying what was being done.
fn taken<U>(r: Result<U, BackendError>, what: &str) -> Result<U, Failure> {
    r.map_err(|e| Failure::of(&e).context(what))
}

fn decline(key: v1::TaskKey, id: CheckpointId, failure: &Failure) -> v1::DeclineCheckpointRequest {
    v1::DeclineCheckpointRequest {
        task: Some(key),
        checkpoint_id: id.0,
        reason: failure.message.clone(),
        error_class: weir_proto::class_to_proto(failure.class()) as i32,
    }
}
