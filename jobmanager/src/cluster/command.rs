//! What the job manager's core is asked, and how it answers.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use weir_proto::v1;
use weir_types::{CheckpointId, CheckpointMetadata, Failure, JobId};

use crate::restore::RestorePoint;

/// Errors returned to clients.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The job (or request) is invalid; nothing was scheduled.
    #[error("{0}")]
    InvalidJob(String),
    /// No such job.
    #[error("no job with id {0}")]
    UnknownJob(String),
    /// No such savepoint trigger (of that job).
    #[error("no savepoint trigger with id {0} for this job")]
    UnknownTrigger(String),
    /// The request does not fit the job's state.
    #[error("{0}")]
    WrongState(String),
    /// The job manager is shutting down.
    #[error("the job manager is shutting down")]
    ShuttingDown,
}

/// Where an answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, ClusterError>>;

/// Requests to the job manager core.
#[derive(Debug)]
pub(crate) enum Command {
    /// Submit a job (starting from a loaded savepoint, if given).
    Submit(v1::SubmitJobRequest, Option<RestorePoint>, Reply<String>),
    /// Take a savepoint of a running job (and stop it, if asked). `reply`
    /// answers once it is written; `accepted`, if given, hears as soon as
    /// the request passed its checks and the savepoint started.
    Savepoint {
        job: String,
        target: String,
        stop: bool,
        reply: Reply<v1::TriggerSavepointResponse>,
        accepted: Option<oneshot::Sender<()>>,
    },
    /// A savepoint's metadata was written (its state size), or not.
    SavepointWritten { job: JobId, id: CheckpointId, result: Result<u64, Failure> },
    /// List jobs.
    List(Reply<Vec<v1::JobSummary>>),
    /// Details of a job, optionally once it has ended (long poll up to the duration).
    Get(String, Option<Duration>, Reply<v1::JobDetails>),
    /// Cancel a job.
    Cancel(String, Reply<v1::JobState>),
    /// Cluster overview.
    Overview(Reply<v1::ClusterOverviewResponse>),
    /// Prometheus exposition of the job manager's metrics.
    Metrics(Reply<String>),
    /// A task manager registers.
    Register(v1::RegisterTaskManagerRequest, Reply<v1::RegisterTaskManagerResponse>),
    /// A task manager heartbeats.
    Heartbeat(v1::HeartbeatRequest, Reply<v1::HeartbeatResponse>),
    /// A task changed state.
    TaskState(v1::TaskStateReport),
    /// A deployment RPC failed.
    DeployFailed { job: JobId, attempt: u32, task_manager: String, error: String, unreachable: bool },
    /// A subtask stored its part of a checkpoint.
    Acknowledge(v1::AcknowledgeCheckpointRequest),
    /// A subtask could not take its part of a checkpoint.
    Decline(v1::DeclineCheckpointRequest),
    /// Time to trigger a checkpoint of a job attempt (if nothing prevents it).
    CheckpointDue(JobId, u32),
    /// Triggering a checkpoint failed on a task manager (`unreachable`:
    /// the task manager, when nothing listened at its address).
    TriggerFailed { job: JobId, attempt: u32, id: CheckpointId, failure: Failure, unreachable: Option<String> },
    /// A checkpoint's metadata was written (or not).
    MetadataWritten { job: JobId, id: CheckpointId, result: Result<CheckpointMetadata, Failure> },
    /// A restart's delay passed and its restore point was looked up.
    RestartReady { job: JobId, attempt: u32, restore: Result<Option<RestorePoint>, Failure> },
    /// Records of jobs a previous job manager was running.
    Recovered(Result<Vec<v1::JobRecord>, Failure>),
}

/// A cheap handle to the job manager core.
#[derive(Debug, Clone)]
pub struct ClusterHandle {
    pub(crate) tx: mpsc::Sender<Command>,
}

impl ClusterHandle {
    /// Sends `make(reply)` and waits for the answer.
    pub(crate) async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| ClusterError::ShuttingDown)?;
        rx.await.map_err(|_| ClusterError::ShuttingDown)?
    }

    /// Sends a command that has no answer.
    pub(crate) async fn tell(&self, cmd: Command) {
        let _ = self.tx.send(cmd).await;
    }
}
