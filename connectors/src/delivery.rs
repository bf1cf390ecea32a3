//! The delivery guarantee a transactional sink gives.

use serde::Deserialize;
use weir_runtime::barrier::CheckpointMode;
use weir_runtime::checkpointing::CheckpointConfig;
use weir_runtime::error::PlanError;
use weir_runtime::operators::PlanContext;

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

impl Delivery {
    /// Checks that the job can give this guarantee: exactly once commits
    /// with checkpoints, which must then align barriers (exactly_once mode).
    /// Answers the job's checkpointing when the sink commits with it.
    pub fn check<'a>(self, ctx: &PlanContext<'a>) -> Result<Option<&'a CheckpointConfig>, PlanError> {
        if self != Delivery::ExactlyOnce {
            return Ok(None);
        }
        let Some(cp) = ctx.checkpoint else {
            return Err(ctx
                .error("delivery exactly_once commits with checkpoints: add a `checkpoints:` section to the job")
                .field("config.delivery"));
        };
        if cp.mode != CheckpointMode::ExactlyOnce {
            return Err(ctx
                .error("delivery exactly_once needs checkpoints in exactly_once mode")
                .field("config.delivery"));
        }
        Ok(Some(cp))
    }
}
