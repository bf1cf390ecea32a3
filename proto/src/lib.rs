//! Weir's gRPC services and messages, generated from `proto/weir.proto`, and
//! the conversions between them and the runtime's domain types.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("weir.v1");
}

mod convert;
mod snapshot;

pub use convert::{graph_from_proto, graph_to_proto};
pub use snapshot::{class_from_proto, class_to_proto, failure_from_proto, snapshot_from_proto, snapshot_to_proto};
pub use v1::*;

/// A task state as users read it (`RUNNING`, not `TASK_RUNNING`), in the
/// CLI's output and the REST API alike.
pub fn task_state_name(s: v1::TaskState) -> &'static str {
    match s {
        v1::TaskState::Deploying => "DEPLOYING",
        v1::TaskState::TaskInitializing => "INITIALIZING",
        v1::TaskState::TaskRunning => "RUNNING",
        v1::TaskState::TaskFinished => "FINISHED",
        v1::TaskState::TaskFailed => "FAILED",
        v1::TaskState::TaskCanceled => "CANCELED",
        v1::TaskState::Unspecified => "UNKNOWN",
    }
}

/// A checkpoint's status as users read it (`FAILED`, not `CHECKPOINT_FAILED`).
pub fn checkpoint_status_name(s: v1::CheckpointStatus) -> &'static str {
    match s {
        v1::CheckpointStatus::InProgress => "IN_PROGRESS",
        v1::CheckpointStatus::Completed => "COMPLETED",
        v1::CheckpointStatus::CheckpointFailed => "FAILED",
        v1::CheckpointStatus::Unspecified => "UNKNOWN",
    }
}
