//! Where a job attempt's state comes from: its own newest complete
//! checkpoint, the savepoint it started from, or a retained checkpoint of
//! another job — and which parts of it each new task reads.
//!
//! State is matched by operator uid, never by position or chain: a job may
//! add, remove and re-chain operators and change parallelism, and each
//! operator it kept finds its state ([`compat`] checks that it can).

pub(crate) mod compat;
pub(crate) mod savepoint;

use std::sync::Arc;

use weir_runtime::plan::Plan;
use weir_state::savepoint::Savepoint;
use weir_state::{CheckpointStorage, S3Options};
use weir_types::{CheckpointId, CheckpointMetadata, ErrorClass, Failure, JobId, TaskSnapshot};

/// A retained checkpoint of another job, to start a job from.
#[derive(Debug)]
pub(crate) struct RetainedCheckpoint {
    /// The checkpoint's directory, as given.
    pub(crate) uri: String,
    /// The URI of the storage holding it.
    pub(crate) root: String,
    /// Its verified metadata.
    pub(crate) meta: CheckpointMetadata,
}

/// What a job attempt restores from.
#[derive(Debug, Clone)]
pub(crate) enum RestorePoint {
    /// A checkpoint of the job itself.
    Checkpoint(Arc<CheckpointMetadata>),
    /// The savepoint the job was started from (no checkpoint of its own yet).
    Savepoint(Arc<Savepoint>),
    /// The retained checkpoint of another job the job was started from.
    Retained(Arc<RetainedCheckpoint>),
}

impl RestorePoint {
    /// The checkpoint id restored (the job's next checkpoint comes after it).
    pub(crate) fn checkpoint_id(&self) -> CheckpointId {
        match self {
            RestorePoint::Checkpoint(m) => m.checkpoint_id,
            RestorePoint::Savepoint(s) => s.metadata().checkpoint_id,
            RestorePoint::Retained(r) => r.meta.checkpoint_id,
        }
    }

    /// Where a savepoint or retained checkpoint is (empty for the job's own checkpoints).
    pub(crate) fn uri(&self) -> &str {
        match self {
            RestorePoint::Checkpoint(_) => "",
            RestorePoint::Savepoint(s) => s.uri(),
            RestorePoint::Retained(r) => &r.uri,
        }
    }

    /// What a task of `vertex` restores: the parts it reads, and the storage
    /// they are in when it is not the job's own checkpoint storage (empty).
    pub(crate) fn parts(&self, plan: &Plan, vertex: u32) -> (Vec<TaskSnapshot>, String) {
        match self {
            RestorePoint::Checkpoint(meta) => {
                let uids = plan.vertex_uids(vertex);
                (meta.tasks.iter().filter(|t| t.operators == uids).cloned().collect(), String::new())
            }
            RestorePoint::Savepoint(sp) => {
                (savepoint::restore_parts(plan, sp.metadata(), vertex), sp.uri().to_string())
            }
            RestorePoint::Retained(r) => (retained_parts(plan, &r.meta, vertex), r.root.clone()),
        }
    }

    /// Whether subtask `subtask` of `vertex` had finished before the
    /// checkpoint restored (it ends at once instead of running again).
    pub(crate) fn finished(&self, plan: &Plan, vertex: u32, subtask: u32) -> bool {
        match self {
            RestorePoint::Checkpoint(m) => {
                let uids = plan.vertex_uids(vertex);
                m.finished.iter().any(|(u, s)| *s == subtask && *u == uids)
            }
            _ => false,
        }
    }
}

fn failure(e: weir_state::StorageError) -> Failure {
    Failure::of(&e)
}

/// Loads and verifies what `weir run --from-savepoint URI` names: a
/// savepoint directory, or a retained checkpoint's directory
/// (`<storage>/<job id>/chk-<id>`).
pub(crate) async fn load_start(uri: &str, s3: &S3Options) -> Result<RestorePoint, Failure> {
    let uri = uri.trim_end_matches('/');
    if let Some((root, job, id)) = CheckpointStorage::split_checkpoint_uri(uri) {
        if let Some(dir) = uri.strip_prefix("file://") {
            if !std::path::Path::new(dir).is_dir() {
                return Err(Failure::new(ErrorClass::User, format!("checkpoint {uri} is unusable: no such directory")));
            }
        }
        let storage = CheckpointStorage::from_uri_with(&root, s3).map_err(failure)?;
        let meta = storage.load(&job, id).await.map_err(failure)?;
        return Ok(RestorePoint::Retained(Arc::new(RetainedCheckpoint { uri: uri.to_string(), root, meta })));
    }
    let sp = Savepoint::load(uri, s3).await.map_err(failure)?;
    Ok(RestorePoint::Savepoint(Arc::new(sp)))
}

/// Where a restarting job resumes: its newest valid checkpoint, else the
/// savepoint it started from, else nothing.
pub(crate) async fn find_restore_point(
    storage: Option<CheckpointStorage>,
    job: &JobId,
    start: Option<RestorePoint>,
) -> Result<Option<RestorePoint>, Failure> {
    if let Some(s) = storage {
        if let Some(m) = s.latest_valid(job).await.map_err(failure)? {
            return Ok(Some(RestorePoint::Checkpoint(Arc::new(m))));
        }
    }
    Ok(start)
}

/// The parts of a retained checkpoint a task of vertex `vertex` restores:
/// every old task that ran one of its operators (restoring entries filters
/// them by operator), marked with the parallelism of the old vertex.
fn retained_parts(plan: &Plan, meta: &CheckpointMetadata, vertex: u32) -> Vec<TaskSnapshot> {
    let uids = plan.vertex_uids(vertex);
    meta.tasks
        .iter()
        .filter(|t| t.operators.iter().any(|u| uids.contains(u)))
        .map(|t| {
            let mut part = t.clone();
            part.parallelism = meta.tasks.iter().filter(|o| o.operators == t.operators).count() as u32;
            part
        })
        .collect()
}
