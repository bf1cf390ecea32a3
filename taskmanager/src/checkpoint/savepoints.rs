//! Savepoints announced to a task manager: which checkpoint ids of a job
//! attempt are savepoints, and where each one's files go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use weir_types::{CheckpointId, JobId};

/// Savepoints announced to this task manager, by (job, attempt, checkpoint
/// id). A task taking checkpoint *n* looks here to know whether *n* is a
/// savepoint.
#[derive(Debug, Clone, Default)]
pub struct SavepointTable {
    inner: Arc<Mutex<Locations>>,
}

/// Savepoint directories by (job, attempt, checkpoint id).
type Locations = HashMap<(JobId, u32, CheckpointId), String>;

impl SavepointTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Locations> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that checkpoint `id` of a job attempt is a savepoint written to `location`.
    pub fn announce(&self, job: &JobId, attempt: u32, id: CheckpointId, location: &str) {
        self.lock().insert((job.clone(), attempt, id), location.to_string());
    }

    /// Forgets savepoints of a job attempt up to `id` (complete or failed).
    pub fn forget(&self, job: &JobId, attempt: u32, id: CheckpointId) {
        self.lock().retain(|(j, a, i), _| !(j == job && *a == attempt && *i <= id));
    }

    /// Where savepoint `id` goes, if checkpoint `id` is one.
    pub(crate) fn location(&self, job: &JobId, attempt: u32, id: CheckpointId) -> Option<String> {
        self.lock().get(&(job.clone(), attempt, id)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savepoints_are_known_per_attempt_until_forgotten() {
        let t = SavepointTable::default();
        let j = JobId::new("j");
        t.announce(&j, 1, CheckpointId(4), "file:///sp");
        assert_eq!(t.location(&j, 1, CheckpointId(4)).as_deref(), Some("file:///sp"));
        assert_eq!(t.location(&j, 2, CheckpointId(4)), None, "another attempt");
        t.forget(&j, 1, CheckpointId(3));
        assert!(t.location(&j, 1, CheckpointId(4)).is_some(), "only ids up to the notice");
        t.forget(&j, 1, CheckpointId(4));
        assert_eq!(t.location(&j, 1, CheckpointId(4)), None);
    }
}
