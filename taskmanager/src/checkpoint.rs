//! A task's side of checkpoints: its state backend, the asynchronous upload
//! of each snapshot, and the acknowledgement (or decline) to the job manager.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tonic::transport::Channel;
use tracing::{debug, warn};
use weir_proto::v1;
use weir_proto::v1::job_manager_service_client::JobManagerServiceClient;
use weir_runtime::barrier::CheckpointId;
use weir_runtime::keygroup::key_group_range;
use weir_runtime::state::StateEntry;
use weir_runtime::task::{Checkpointer, SnapshotTiming};
use weir_state::backend::{self, BackendKind, TaskBackend, TaskIdentity};
use weir_state::{CheckpointStorage, TaskSnapshot};

/// Savepoints announced to this task manager, by (job, attempt, checkpoint
/// id): where each one's files go. A task taking checkpoint *n* looks here to
/// know whether *n* is a savepoint.
#[derive(Debug, Clone, Default)]
pub struct SavepointTable {
    inner: Arc<Mutex<HashMap<SavepointKey, String>>>,
}

/// (job, attempt, checkpoint id).
type SavepointKey = (String, u32, u64);

impl SavepointTable {
    /// Records that checkpoint `id` of a job attempt is a savepoint written to `location`.
    pub fn announce(&self, job: &str, attempt: u32, id: u64, location: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((job.to_string(), attempt, id), location.to_string());
    }

    /// Forgets savepoints of a job attempt up to `id` (complete or failed).
    pub fn forget(&self, job: &str, attempt: u32, id: u64) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(j, a, i), _| !(j == job && *a == attempt && *i <= id));
    }

    fn location(&self, job: &str, attempt: u32, id: u64) -> Option<String> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).get(&(job.to_string(), attempt, id)).cloned()
    }
}

/// The state backend of one task, shared with its uploads.
///
/// The task hands each snapshot to a worker thread of its own, which feeds
/// the backend in checkpoint order (heap encodes its file; RocksDB encodes
/// a change file) and then starts the upload. RocksDB's own work, applying
/// the changes to its database and uploading a new base, waits until the
/// checkpoint completes (or the next snapshot comes). The worker is started
/// before the task lowers its thread's priority, so this work runs at the
/// process's priority instead of competing with every busy task for the
/// cores, and the task goes on processing meanwhile.
pub struct TaskCheckpointer {
    key: v1::TaskKey,
    full: bool,
    savepoints: SavepointTable,
    jobs: Option<std::sync::mpsc::Sender<Work>>,
    worker: Option<std::thread::JoinHandle<()>>,
    /// Why the backend could not take a snapshot: it is then behind the
    /// operators (which handed over their changes), so the task must fail.
    failed: Arc<Mutex<Option<String>>>,
}

/// What the backend's thread is handed.
enum Work {
    /// A snapshot.
    Snapshot(Job),
    /// A checkpoint completed.
    Complete(CheckpointId),
}

/// Changes a backend wants to apply, held back until their checkpoint
/// completes.
type Held = (CheckpointId, Vec<backend::StateEntry>);

/// A snapshot on its way to the backend.
struct Job {
    id: CheckpointId,
    entries: Vec<StateEntry>,
    timing: SnapshotTiming,
    savepoint: Option<String>,
    handed_over: Instant,
}

/// Writing a snapshot's files.
type UploadFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<backend::Uploaded, backend::BackendError>> + Send>>;

/// What the worker and the uploads share.
struct Shared {
    backend: Arc<Mutex<TaskBackend>>,
    key: v1::TaskKey,
    jm: JobManagerServiceClient<Channel>,
    runtime: tokio::runtime::Handle,
    s3: weir_state::S3Options,
    state_bytes: Arc<std::sync::atomic::AtomicU64>,
    failed: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for TaskCheckpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCheckpointer").field("key", &self.key).finish()
    }
}

fn to_backend(e: StateEntry) -> backend::StateEntry {
    backend::StateEntry {
        operator: e.operator,
        state: e.state,
        key_group: e.key_group,
        key: e.key,
        value: e.value,
        delete_to: e.delete_to,
    }
}

fn from_backend(e: backend::StateEntry) -> StateEntry {
    StateEntry {
        operator: e.operator,
        state: e.state,
        key_group: e.key_group,
        key: e.key,
        value: e.value,
        delete_to: e.delete_to,
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
}

/// State a task restores: where the files are, the checkpoint (or
/// savepoint) id, and the parts of every subtask that wrote them.
#[derive(Debug)]
pub struct Restore {
    /// The storage holding the files (the checkpoint storage, or a savepoint's directory).
    pub from: CheckpointStorage,
    /// Checkpoint id.
    pub checkpoint: u64,
    /// The parts.
    pub snapshots: Vec<TaskSnapshot>,
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
    ) -> Result<(TaskCheckpointer, Vec<StateEntry>), String> {
        let me = TaskIdentity {
            job: key.job_id.clone(),
            vertex: key.vertex,
            subtask: key.subtask,
            operators: setup.operators,
        };
        let mut backend = TaskBackend::open(setup.backend, setup.storage, me, setup.state_dir)
            .map_err(|e| format!("opening the {} state backend: {e}", setup.backend.name()))?;
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
                .map_err(|e| format!("restoring checkpoint {checkpoint}: {e}"))?
                .into_iter()
                .map(from_backend)
                .collect();
            debug!(checkpoint, entries = entries.len(), took = ?started.elapsed(), "state restored");
        }
        let failed = Arc::new(Mutex::new(None));
        let full = backend.wants_full_snapshots();
        let shared = Shared {
            backend: Arc::new(Mutex::new(backend)),
            key: key.clone(),
            jm,
            runtime,
            s3: setup.s3,
            state_bytes: setup.state_bytes,
            failed: failed.clone(),
        };
        let (jobs, inbox) = std::sync::mpsc::channel::<Work>();
        let worker = std::thread::Builder::new()
            .name(format!("state-{}-{}", key.vertex, key.subtask))
            .spawn(move || {
                // RocksDB applies a checkpoint's changes once the checkpoint
                // completes, so as not to compete for the cores with tasks
                // still taking theirs; and always before the next snapshot.
                let mut held: Option<Held> = None;
                for work in inbox {
                    match work {
                        Work::Snapshot(job) => {
                            if let Some((id, entries)) = held.take() {
                                shared.apply(id, &entries);
                            }
                            held = shared.take(job);
                        }
                        Work::Complete(done) => {
                            if let Some((id, entries)) = held.take_if(|(id, _)| *id <= done) {
                                shared.apply(id, &entries);
                            }
                        }
                    }
                }
            })
            .map_err(|e| format!("starting the state backend's thread failed: {e}"))?;
        let cp = TaskCheckpointer {
            key,
            full,
            savepoints: setup.savepoints,
            jobs: Some(jobs),
            worker: Some(worker),
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
        if let Some(reason) = self.failed.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Err(reason);
        }
        let savepoint = self.savepoints.location(&self.key.job_id, self.key.attempt, id.0);
        let job = Job { id, entries, timing, savepoint, handed_over: Instant::now() };
        match &self.jobs {
            Some(jobs) if jobs.send(Work::Snapshot(job)).is_ok() => Ok(()),
            _ => Err("the state backend's thread has stopped".into()),
        }
    }

    fn checkpoint_complete(&mut self, id: CheckpointId) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Work::Complete(id));
        }
    }
}

impl Drop for TaskCheckpointer {
    fn drop(&mut self) {
        // The worker finishes what it was handed (uploads go on in the runtime).
        drop(self.jobs.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Shared {
    /// Feeds one snapshot to the backend and starts its upload and
    /// acknowledgement (or declines the checkpoint). Returns the entries if
    /// the backend wants them again ([`Shared::apply`]).
    fn take(&self, job: Job) -> Option<Held> {
        let Job { id, entries, timing, savepoint, handed_over } = job;
        let entries: Vec<_> = entries.into_iter().map(to_backend).collect();
        // The entries are freed only after the acknowledgement: for large
        // window state that is tens of thousands of allocations, several
        // milliseconds that need not delay the checkpoint.
        let (upload, mut entries, applies_later): (Result<UploadFuture, String>, Vec<_>, bool) = {
            let mut b = self.backend.lock().unwrap_or_else(|e| e.into_inner());
            match savepoint.as_deref().map(|location| CheckpointStorage::from_uri_with(location, &self.s3)) {
                None => {
                    let upload = b
                        .snapshot(id.0, &entries)
                        .map(|u| Box::pin(u.run()) as _)
                        .map_err(|e| format!("taking the state snapshot failed: {e}"));
                    (upload, entries, b.applies_later())
                }
                Some(Ok(target)) => {
                    let upload = b
                        .savepoint(id.0, entries, target)
                        .map(|u| Box::pin(u.run()) as _)
                        .map_err(|e| format!("taking the savepoint snapshot failed: {e}"));
                    (upload, Vec::new(), false)
                }
                // The operators' changes must still reach the backend; the
                // savepoint is declined below.
                Some(Err(e)) => {
                    let declined = weir_state::backend::BackendError::Storage(e);
                    let upload = b
                        .snapshot(id.0, &entries)
                        .map(|_| Box::pin(async move { Err(declined) }) as _)
                        .map_err(|e| format!("taking the state snapshot failed: {e}"));
                    (upload, entries, b.applies_later())
                }
            }
        };
        // The backend may want the entries again (RocksDB applies them once
        // the checkpoint completes); otherwise they go with the upload.
        let spent = if applies_later { Vec::new() } else { std::mem::take(&mut entries) };
        let upload = match upload {
            Ok(u) => u,
            Err(reason) => {
                // The backend is behind the operators now: the task fails at
                // its next checkpoint, and this one is declined.
                warn!(checkpoint = id.0, vertex = self.key.vertex, subtask = self.key.subtask, error = %reason, "the state backend could not take a snapshot");
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.clone());
                let (key, mut jm) = (self.key.clone(), self.jm.clone());
                self.runtime.spawn(async move {
                    let _ = jm
                        .decline_checkpoint(v1::DeclineCheckpointRequest {
                            task: Some(key),
                            checkpoint_id: id.0,
                            reason,
                        })
                        .await;
                });
                return None;
            }
        };
        debug!(checkpoint = id.0, vertex = self.key.vertex, subtask = self.key.subtask, took = ?handed_over.elapsed(), "backend snapshot taken");
        let (backend, key, mut jm) = (self.backend.clone(), self.key.clone(), self.jm.clone());
        let (state_bytes, is_savepoint) = (self.state_bytes.clone(), savepoint.is_some());
        self.runtime.spawn(async move {
            let started = Instant::now();
            let result = upload.await.map_err(|e| e.to_string());
            debug!(checkpoint = id.0, vertex = key.vertex, subtask = key.subtask, took = ?started.elapsed(), "checkpoint files written");
            let sent = match result {
                Ok(done) => {
                    // Only when there is something to record: the state
                    // thread may hold the backend for a while, applying changes.
                    if done.concerns_backend() {
                        backend.lock().unwrap_or_else(|e| e.into_inner()).uploaded(&done);
                    }
                    if !is_savepoint {
                        let size: u64 = done.snapshot.files.iter().map(|f| f.size).sum();
                        state_bytes.store(size, std::sync::atomic::Ordering::Relaxed);
                    }
                    let snapshot_json = serde_json::to_string(&done.snapshot).expect("snapshots serialize");
                    jm.acknowledge_checkpoint(v1::AcknowledgeCheckpointRequest {
                        task: Some(key.clone()),
                        checkpoint_id: id.0,
                        snapshot_json,
                        alignment_ms: timing.alignment.as_millis() as u64,
                        sync_ms: timing.sync.as_millis() as u64,
                        async_ms: handed_over.elapsed().as_millis() as u64,
                        uploaded_bytes: done.uploaded_bytes,
                    })
                    .await
                }
                Err(reason) => {
                    warn!(checkpoint = id.0, vertex = key.vertex, subtask = key.subtask, error = %reason, "checkpoint upload failed");
                    jm.decline_checkpoint(v1::DeclineCheckpointRequest {
                        task: Some(key.clone()),
                        checkpoint_id: id.0,
                        reason,
                    })
                    .await
                }
            };
            if let Err(e) = sent {
                warn!(checkpoint = id.0, error = %e.message(), "reporting a checkpoint to the job manager failed");
            }
            drop(spent);
        });
        applies_later.then_some((id, entries))
    }

    /// Hands a checkpoint's changes to the backend after its files were
    /// written, and uploads a new base in the background if one is due.
    fn apply(&self, id: CheckpointId, entries: &[backend::StateEntry]) {
        let started = Instant::now();
        let base = self.backend.lock().unwrap_or_else(|e| e.into_inner()).apply(id.0, entries);
        let base = match base {
            Ok(base) => base,
            Err(e) => {
                // The database is behind the operators: the task fails at its next checkpoint.
                let reason = format!("applying the changes of checkpoint {} failed: {e}", id.0);
                warn!(checkpoint = id.0, vertex = self.key.vertex, subtask = self.key.subtask, error = %reason, "the state backend could not apply changes");
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                return;
            }
        };
        debug!(checkpoint = id.0, vertex = self.key.vertex, subtask = self.key.subtask, took = ?started.elapsed(), "changes applied");
        let Some(base) = base else { return };
        let (backend, key) = (self.backend.clone(), self.key.clone());
        self.runtime.spawn(async move {
            let started = Instant::now();
            match base.run().await {
                Ok(done) => {
                    debug!(checkpoint = id.0, vertex = key.vertex, subtask = key.subtask, bytes = done.uploaded_bytes, took = ?started.elapsed(), "state base uploaded");
                    let (orphans, storage) = {
                        let mut b = backend.lock().unwrap_or_else(|e| e.into_inner());
                        (b.uploaded(&done), b.storage().clone())
                    };
                    if let Err(e) = storage.delete_shared(&orphans).await {
                        warn!(vertex = key.vertex, subtask = key.subtask, error = %e, "deleting a superseded state base failed");
                    }
                }
                Err(e) => {
                    // Checkpoints go on naming change files until the next base.
                    warn!(checkpoint = id.0, vertex = key.vertex, subtask = key.subtask, error = %e, "uploading a state base failed");
                    backend.lock().unwrap_or_else(|e| e.into_inner()).base_failed();
                }
            }
        });
    }
}
