//! The unit of operator state that checkpoints move.

/// Key group of state that belongs to a subtask rather than a key (a
/// source's position, a broadcast table): restored to the subtask with the
/// same index.
pub const NON_KEYED: u32 = u32::MAX;

/// Key group of *union* state: every subtask writes its own entries, and on
/// restore every subtask receives the entries of all subtasks (Kafka source
/// positions, sink transactions), so that an operator can redistribute
/// them itself after a parallelism change.
pub const UNION: u32 = u32::MAX - 1;

/// One piece of operator state: `(operator, state name, key group, key,
/// value)`. Keyed entries carry their key group, so that a restore at a
/// different parallelism picks exactly the key groups a subtask owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    /// Operator uid.
    pub operator: String,
    /// State name within the operator.
    pub state: String,
    /// Key group, or [`NON_KEYED`] / [`UNION`].
    pub key_group: u32,
    /// Key bytes (namespace and key).
    pub key: Vec<u8>,
    /// Value; `None` deletes the entry (incremental snapshots only).
    pub value: Option<Vec<u8>>,
    /// With `value: None`, the end (exclusive) of a range of keys of this
    /// state and key group, from `key` on, to delete at once.
    pub delete_to: Option<Vec<u8>>,
}

impl StateEntry {
    /// Whether the entry belongs to a key (not to a subtask or to all of them).
    pub fn is_keyed(&self) -> bool {
        self.key_group != NON_KEYED && self.key_group != UNION
    }
}
