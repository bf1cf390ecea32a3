//! The delivery guarantee a transactional sink gives.

use serde::Deserialize;

/// Delivery guarantee of a sink (`delivery: at_least_once | exactly_once`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Writes are flushed at every barrier (and, where the sink batches, by
    /// size and interval); a restore may write some again (idempotent where
    /// the destination has a key).
    #[default]
    AtLeastOnce,
    /// The writes of a checkpoint become visible together when the
    /// checkpoint completes (a Kafka transaction, a database transaction).
    ExactlyOnce,
}
