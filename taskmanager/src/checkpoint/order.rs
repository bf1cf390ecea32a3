//! The decisions of a task's state thread, apart from their I/O: in which
//! order a backend sees snapshots and changes, and what kind of snapshot a
//! checkpoint is on this task.
//!
//! A RocksDB backend writes a checkpoint's changes as a change file at the
//! barrier and applies them to its database only later: once the checkpoint
//! completed (so as not to compete for the cores with tasks still taking
//! theirs), and in any case before the next snapshot (the database must
//! never fall behind by more than one checkpoint).

use weir_types::{CheckpointId, Failure, StateEntry};

/// Changes a backend took at a barrier and will apply to its database later.
#[derive(Debug, Default)]
pub(crate) struct Unapplied {
    held: Option<(CheckpointId, Vec<StateEntry>)>,
}

impl Unapplied {
    /// Holds the changes of checkpoint `id` until [`Unapplied::completed`]
    /// or [`Unapplied::before_snapshot`] hands them back.
    pub(crate) fn hold(&mut self, id: CheckpointId, entries: Vec<StateEntry>) {
        debug_assert!(self.held.is_none(), "changes are applied before the next snapshot is taken");
        self.held = Some((id, entries));
    }

    /// A snapshot is about to be taken: changes still held must reach the
    /// database first.
    pub(crate) fn before_snapshot(&mut self) -> Option<(CheckpointId, Vec<StateEntry>)> {
        self.held.take()
    }

    /// Checkpoint `done` completed: the changes of a checkpoint up to it
    /// may reach the database now; newer ones wait for their own.
    pub(crate) fn completed(&mut self, done: CheckpointId) -> Option<(CheckpointId, Vec<StateEntry>)> {
        self.held.take_if(|(id, _)| *id <= done)
    }
}

/// What checkpoint *n* is on this task.
#[derive(Debug)]
pub(crate) enum SnapshotKind<T> {
    /// A periodic checkpoint, into the job's checkpoint storage.
    Checkpoint,
    /// A savepoint, into this target.
    Savepoint(T),
    /// A savepoint whose target does not open: the operators' changes still
    /// reach the backend (they handed them over), and the savepoint is declined.
    UnwritableSavepoint(Failure),
}

/// The kind of a snapshot given the savepoint announced for it, if any,
/// and how to open a savepoint's target.
pub(crate) fn snapshot_kind<T>(
    savepoint: Option<&str>,
    open: impl FnOnce(&str) -> Result<T, Failure>,
) -> SnapshotKind<T> {
    match savepoint.map(open) {
        None => SnapshotKind::Checkpoint,
        Some(Ok(target)) => SnapshotKind::Savepoint(target),
        Some(Err(e)) => SnapshotKind::UnwritableSavepoint(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_types::ErrorClass;

    fn changes(n: u8) -> Vec<StateEntry> {
        vec![StateEntry {
            operator: "w".into(),
            state: "s".into(),
            key_group: 0,
            key: vec![n],
            value: Some(vec![n]),
            delete_to: None,
        }]
    }

    #[test]
    fn held_changes_wait_for_their_checkpoint_or_the_next_snapshot() {
        let mut u = Unapplied::default();
        assert!(u.before_snapshot().is_none());
        u.hold(CheckpointId(5), changes(5));
        assert!(u.completed(CheckpointId(4)).is_none(), "an older completion does not cover checkpoint 5");
        let (id, entries) = u.completed(CheckpointId(6)).expect("a newer one does");
        assert_eq!((id, entries), (CheckpointId(5), changes(5)));
        assert!(u.completed(CheckpointId(6)).is_none(), "handed back once");
        u.hold(CheckpointId(7), changes(7));
        assert_eq!(
            u.before_snapshot().map(|(id, _)| id),
            Some(CheckpointId(7)),
            "before the next snapshot at the latest"
        );
    }

    #[test]
    fn a_savepoint_whose_target_does_not_open_is_declined_not_skipped() {
        assert!(matches!(snapshot_kind::<()>(None, |_| unreachable!()), SnapshotKind::Checkpoint));
        assert!(matches!(snapshot_kind(Some("file:///sp"), |l| Ok(l.len())), SnapshotKind::Savepoint(10)));
        let bad = snapshot_kind::<()>(Some("ftp://x"), |_| Err(Failure::new(ErrorClass::User, "unsupported")));
        let SnapshotKind::UnwritableSavepoint(f) = bad else { panic!() };
        assert_eq!(f.class, ErrorClass::User);
    }
}
