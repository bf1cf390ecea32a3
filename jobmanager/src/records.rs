//! Job records: what a restarted job manager needs to resume the jobs it was
//! running — each job's planned graph, attempt and checkpoint storage — kept
//! as `_jobs/<job_id>.pb` in the job manager's checkpoint storage. The
//! pointer to a job's latest complete checkpoint is the checkpoint storage
//! itself: the newest checkpoint whose metadata verifies.

use bytes::Bytes;
use prost::Message;
use weir_proto::v1;
use weir_state::{CheckpointStorage, StorageError};
use weir_types::{Failure, JobId};

const DIR: &str = "_jobs";

/// Writes (or replaces) the record of a job.
pub(crate) async fn save(storage: &CheckpointStorage, r: &v1::JobRecord) -> Result<(), StorageError> {
    storage.put_object(&format!("{DIR}/{}.pb", r.job_id), Bytes::from(r.encode_to_vec())).await
}

/// Deletes the record of a job that ended.
pub(crate) async fn remove(storage: &CheckpointStorage, job: &JobId) -> Result<(), StorageError> {
    storage.delete_object(&format!("{DIR}/{job}.pb")).await
}

/// Every record; unreadable ones are logged and skipped.
pub(crate) async fn load(storage: &CheckpointStorage) -> Result<Vec<v1::JobRecord>, Failure> {
    let names = storage.list_objects(DIR).await.map_err(|e| Failure::of(&e))?;
    let mut out = Vec::new();
    for name in names.into_iter().filter(|n| n.ends_with(".pb")) {
        match storage.get_object(&format!("{DIR}/{name}")).await {
            Ok(Some(bytes)) => match v1::JobRecord::decode(bytes) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(record = %name, error = %e, "skipping a job record that does not decode"),
            },
            Ok(None) => {}
            Err(e) => return Err(Failure::of(&e)),
        }
    }
    Ok(out)
}
