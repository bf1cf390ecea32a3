//! What the REST API answers and accepts, as JSON documents with their
//! OpenAPI schemas, built from the service layer's messages.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use weir_proto::{checkpoint_status_name, task_state_name, v1};

/// An error: what went wrong, in the words `weir` would use.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The message.
    pub error: String,
}

/// The cluster at a glance.
#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    /// Weir's version.
    pub version: String,
    /// Task managers registered.
    pub task_managers: u32,
    /// Slots of all task managers.
    pub slots_total: u32,
    /// Slots no job holds.
    pub slots_available: u32,
    /// Jobs by state.
    pub jobs_running: u32,
    pub jobs_finished: u32,
    pub jobs_canceled: u32,
    pub jobs_failed: u32,
}

/// A task manager.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskManager {
    /// Its id.
    pub id: String,
    /// Where the job manager and other task managers reach it.
    pub address: String,
    pub slots_total: u32,
    pub slots_free: u32,
    /// Its last heartbeat, in epoch milliseconds.
    pub last_heartbeat_ms: i64,
    /// Its resident memory at that heartbeat.
    pub memory_bytes: Option<u64>,
}

/// The task managers.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskManagers {
    pub task_managers: Vec<TaskManager>,
}

impl TaskManagers {
    pub(crate) fn from_proto(o: &v1::ClusterOverviewResponse) -> Self {
        let task_managers = o
            .task_managers
            .iter()
            .map(|t| TaskManager {
                id: t.task_manager_id.clone(),
                address: t.rpc_address.clone(),
                slots_total: t.slots_total,
                slots_free: t.slots_free,
                last_heartbeat_ms: t.last_heartbeat_ms,
                memory_bytes: (t.memory_bytes > 0).then_some(t.memory_bytes),
            })
            .collect();
        TaskManagers { task_managers }
    }
}

/// A job in a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobSummary {
    pub id: String,
    pub name: String,
    /// CREATED, RUNNING, RESTARTING, CANCELLING, FINISHED, FAILED or CANCELED.
    pub state: String,
    /// Submission, in epoch milliseconds.
    pub start_time_ms: i64,
    /// The end, in epoch milliseconds, once it ended.
    pub end_time_ms: Option<i64>,
}

impl JobSummary {
    pub(crate) fn from_proto(s: &v1::JobSummary) -> Self {
        JobSummary {
            id: s.job_id.clone(),
            name: s.name.clone(),
            state: s.state().as_str_name().to_string(),
            start_time_ms: s.start_time_ms,
            end_time_ms: (s.end_time_ms > 0).then_some(s.end_time_ms),
        }
    }
}

/// The jobs, in submission order.
#[derive(Debug, Serialize, ToSchema)]
pub struct Jobs {
    pub jobs: Vec<JobSummary>,
}

/// An operator of a vertex.
#[derive(Debug, Serialize, ToSchema)]
pub struct Operator {
    pub uid: String,
    pub kind: String,
}

/// One parallel instance of a vertex.
#[derive(Debug, Serialize, ToSchema)]
pub struct Subtask {
    /// Its index, from 0.
    pub subtask: u32,
    /// DEPLOYING, INITIALIZING, RUNNING, FINISHED, FAILED or CANCELED.
    pub state: String,
    /// The task manager it runs on.
    pub task_manager_id: String,
    pub records_in: u64,
    pub records_out: u64,
    pub records_in_per_second: f64,
    pub records_out_per_second: f64,
    /// Share of the last interval it waited to send (0 to 1).
    pub backpressure: f64,
    /// The last watermark it emitted, in epoch milliseconds.
    pub watermark_ms: Option<i64>,
    /// Size of the state its last snapshot references.
    pub state_bytes: u64,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub failure: String,
}

/// A vertex: operators chained into one task, run by `parallelism` subtasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct Vertex {
    pub index: u32,
    /// Operator uids joined with ` -> `.
    pub name: String,
    pub parallelism: u32,
    pub operators: Vec<Operator>,
    /// RUNNING when every subtask runs; otherwise the state most subtasks
    /// are in, failures first.
    pub state: String,
    /// Sums and rates over its subtasks.
    pub records_in: u64,
    pub records_out: u64,
    pub records_in_per_second: f64,
    pub records_out_per_second: f64,
    /// The highest backpressure of its subtasks (0 to 1).
    pub backpressure: f64,
    /// The lowest watermark of its subtasks, once each emitted one.
    pub watermark_ms: Option<i64>,
    pub subtasks: Vec<Subtask>,
}

/// Records flow from vertex `from` to vertex `to`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Link {
    pub from: u32,
    pub to: u32,
    /// FORWARD, HASH, BROADCAST or REBALANCE.
    pub partitioning: String,
    /// Key fields of a HASH link.
    pub key: Vec<String>,
    /// The side output of `from` it leaves; absent: the main output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// How long a job's recovery took, from the moment the job manager noticed
/// the failure.
#[derive(Debug, Serialize, ToSchema)]
pub struct Recovery {
    /// When the failure was noticed, in epoch milliseconds.
    pub failed_ms: i64,
    /// Until every task of the new attempt ran (absent: not yet).
    pub running_after_ms: Option<u64>,
    /// Until the first checkpoint after that completed (absent: not yet).
    pub checkpoint_after_ms: Option<u64>,
}

/// A job in detail.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobDetails {
    #[serde(flatten)]
    pub summary: JobSummary,
    /// When these details were taken, in epoch milliseconds.
    pub now_ms: i64,
    /// Execution attempt (1 + restarts).
    pub attempt: u32,
    pub restarts: u32,
    /// Checkpoint the current attempt restored from.
    pub restored_from: Option<u64>,
    /// The latest recovery from a failure, if the job had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
    /// Why the job failed, or last restarted.
    pub failure: Option<String>,
    /// Records written by its sinks.
    pub sink_records: u64,
    /// Records its sources could not decode.
    pub bad_records: u64,
    pub vertices: Vec<Vertex>,
    pub links: Vec<Link>,
}

/// The state a vertex shows for its subtasks' states.
fn vertex_state(states: &[v1::TaskState]) -> &'static str {
    use v1::TaskState::*;
    let first = |s: v1::TaskState| states.contains(&s).then(|| task_state_name(s));
    if !states.is_empty() && states.iter().all(|&s| s == TaskRunning) {
        return "RUNNING";
    }
    first(TaskFailed)
        .or_else(|| first(Deploying))
        .or_else(|| first(TaskInitializing))
        .or_else(|| first(TaskCanceled))
        .or_else(|| first(TaskRunning))
        .or_else(|| first(TaskFinished))
        .unwrap_or("CREATED")
}

impl JobDetails {
    pub(crate) fn from_proto(d: &v1::JobDetails) -> Self {
        let vertices = d
            .vertices
            .iter()
            .map(|v| {
                let tasks: Vec<&v1::TaskDetails> = d.tasks.iter().filter(|t| t.vertex_index == v.index).collect();
                let states: Vec<v1::TaskState> = tasks.iter().map(|t| t.state()).collect();
                let subtasks: Vec<Subtask> = tasks
                    .iter()
                    .map(|t| Subtask {
                        subtask: t.subtask,
                        state: task_state_name(t.state()).to_string(),
                        task_manager_id: t.task_manager_id.clone(),
                        records_in: t.records_in,
                        records_out: t.records_out,
                        records_in_per_second: t.records_in_per_second,
                        records_out_per_second: t.records_out_per_second,
                        backpressure: t.backpressure,
                        watermark_ms: t.watermark_ms,
                        state_bytes: t.state_bytes,
                        failure: t.failure.clone(),
                    })
                    .collect();
                let every_watermark: Option<Vec<i64>> = subtasks.iter().map(|s| s.watermark_ms).collect();
                Vertex {
                    index: v.index,
                    name: v.name.clone(),
                    parallelism: v.parallelism,
                    operators: v
                        .operators
                        .iter()
                        .map(|o| Operator { uid: o.uid.clone(), kind: o.kind.clone() })
                        .collect(),
                    state: vertex_state(&states).to_string(),
                    records_in: subtasks.iter().map(|s| s.records_in).sum(),
                    records_out: subtasks.iter().map(|s| s.records_out).sum(),
                    records_in_per_second: subtasks.iter().map(|s| s.records_in_per_second).sum(),
                    records_out_per_second: subtasks.iter().map(|s| s.records_out_per_second).sum(),
                    backpressure: subtasks.iter().map(|s| s.backpressure).fold(0.0, f64::max),
                    watermark_ms: every_watermark.filter(|w| !w.is_empty()).and_then(|w| w.into_iter().min()),
                    subtasks,
                }
            })
            .collect();
        let links = d
            .links
            .iter()
            .map(|l| Link {
                from: l.from,
                to: l.to,
                partitioning: l.partitioning().as_str_name().to_string(),
                key: l.key.clone(),
                output: (!l.output.is_empty()).then(|| l.output.clone()),
            })
            .collect();
        let summary = d.summary.as_ref().map(JobSummary::from_proto).unwrap_or_else(|| JobSummary {
            id: String::new(),
            name: String::new(),
            state: "UNKNOWN".into(),
            start_time_ms: 0,
            end_time_ms: None,
        });
        JobDetails {
            summary,
            now_ms: d.now_ms,
            attempt: d.attempt,
            restarts: d.restarts,
            restored_from: (d.restored_from > 0).then_some(d.restored_from),
            recovery: d.recovery.as_ref().map(|r| Recovery {
                failed_ms: r.failed_ms,
                running_after_ms: r.running_after_ms,
                checkpoint_after_ms: r.checkpoint_after_ms,
            }),
            failure: (!d.failure.is_empty()).then(|| d.failure.clone()),
            sink_records: d.sink_records,
            bad_records: d.bad_records,
            vertices,
            links,
        }
    }
}

/// One subtask's part of a checkpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubtaskAck {
    pub vertex: u32,
    pub subtask: u32,
    /// Trigger to its acknowledgement.
    pub acked_ms: u64,
    /// Bytes it uploaded.
    pub size_bytes: u64,
    pub alignment_ms: u64,
    pub sync_ms: u64,
    pub async_ms: u64,
}

/// One checkpoint or savepoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct Checkpoint {
    pub id: u64,
    /// IN_PROGRESS, COMPLETED or FAILED.
    pub status: String,
    pub savepoint: bool,
    /// Trigger time, in epoch milliseconds.
    pub trigger_time_ms: i64,
    /// Trigger to metadata written (or to failure).
    pub duration_ms: u64,
    /// Bytes this checkpoint uploaded.
    pub size_bytes: u64,
    /// Size of all the state it names (shared files included).
    pub state_bytes: u64,
    pub alignment_ms: u64,
    pub sync_ms: u64,
    pub async_ms: u64,
    /// Subtasks that acknowledged, of `subtasks`.
    pub acknowledged: u32,
    pub subtasks: u32,
    /// Where a savepoint was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub subtask_acks: Vec<SubtaskAck>,
}

impl Checkpoint {
    fn from_proto(c: &v1::CheckpointInfo) -> Self {
        Checkpoint {
            id: c.id,
            status: checkpoint_status_name(c.status()).to_string(),
            savepoint: c.savepoint,
            trigger_time_ms: c.trigger_time_ms,
            duration_ms: c.duration_ms,
            size_bytes: c.size_bytes,
            state_bytes: c.state_bytes,
            alignment_ms: c.alignment_ms,
            sync_ms: c.sync_ms,
            async_ms: c.async_ms,
            acknowledged: c.acknowledged,
            subtasks: c.tasks,
            location: (!c.location.is_empty()).then(|| c.location.clone()),
            failure: (!c.failure.is_empty()).then(|| c.failure.clone()),
            subtask_acks: c
                .subtask_acks
                .iter()
                .map(|a| SubtaskAck {
                    vertex: a.vertex,
                    subtask: a.subtask,
                    acked_ms: a.acked_ms,
                    size_bytes: a.size_bytes,
                    alignment_ms: a.alignment_ms,
                    sync_ms: a.sync_ms,
                    async_ms: a.async_ms,
                })
                .collect(),
        }
    }
}

/// Checkpoints in the recent history, by status.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointCounts {
    pub completed: u32,
    pub failed: u32,
    pub in_progress: u32,
    pub savepoints: u32,
}

/// The newest checkpoints of each kind.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatestCheckpoints {
    pub completed: Option<u64>,
    pub savepoint: Option<u64>,
    pub failed: Option<u64>,
    /// The checkpoint the current attempt restored from.
    pub restored: Option<u64>,
}

/// A job's checkpoint history.
#[derive(Debug, Serialize, ToSchema)]
pub struct Checkpoints {
    pub counts: CheckpointCounts,
    pub latest: LatestCheckpoints,
    /// Recent checkpoints and savepoints, oldest first.
    pub history: Vec<Checkpoint>,
}

impl Checkpoints {
    pub(crate) fn from_proto(d: &v1::JobDetails) -> Self {
        let history: Vec<Checkpoint> = d.checkpoints.iter().map(Checkpoint::from_proto).collect();
        let count = |f: &dyn Fn(&Checkpoint) -> bool| history.iter().filter(|c| f(c)).count() as u32;
        let last = |f: &dyn Fn(&Checkpoint) -> bool| history.iter().rev().find(|c| f(c)).map(|c| c.id);
        Checkpoints {
            counts: CheckpointCounts {
                completed: count(&|c| c.status == "COMPLETED"),
                failed: count(&|c| c.status == "FAILED"),
                in_progress: count(&|c| c.status == "IN_PROGRESS"),
                savepoints: count(&|c| c.savepoint && c.status == "COMPLETED"),
            },
            latest: LatestCheckpoints {
                completed: last(&|c| c.status == "COMPLETED" && !c.savepoint),
                savepoint: last(&|c| c.status == "COMPLETED" && c.savepoint),
                failed: last(&|c| c.status == "FAILED"),
                restored: (d.restored_from > 0).then_some(d.restored_from),
            },
            history,
        }
    }
}

/// A failure of a job.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobException {
    /// When, in epoch milliseconds.
    pub time_ms: i64,
    /// The attempt that failed.
    pub attempt: u32,
    /// What happened; its last part is the root cause.
    pub message: String,
    /// The subtask that failed (`uid -> uid (2/4)`), if one did.
    pub task: Option<String>,
    /// The task manager it happened on (or that was lost), if known.
    pub task_manager_id: Option<String>,
    /// The job restarted after it (false: the job failed for good).
    pub restarted: bool,
}

/// A job's failures, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct Exceptions {
    pub exceptions: Vec<JobException>,
}

impl Exceptions {
    pub(crate) fn from_proto(d: &v1::JobDetails) -> Self {
        let some = |s: &String| (!s.is_empty()).then(|| s.clone());
        let exceptions = d
            .exceptions
            .iter()
            .rev()
            .map(|e| JobException {
                time_ms: e.time_ms,
                attempt: e.attempt,
                message: e.message.clone(),
                task: some(&e.task),
                task_manager_id: some(&e.task_manager_id),
                restarted: e.restarted,
            })
            .collect();
        Exceptions { exceptions }
    }
}

/// Options of a submission, in the query string or a JSON envelope.
#[derive(Debug, Default, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct SubmitOptions {
    /// Parallelism of operators that name none.
    pub parallelism: Option<u32>,
    /// A savepoint (or retained checkpoint) directory to start from.
    pub from_savepoint: Option<String>,
    /// Drop savepoint state of operators the job no longer has.
    pub allow_non_restored_state: Option<bool>,
    /// The name of a SQL job (unless the script sets `pipeline.name`).
    pub name: Option<String>,
}

/// A submission as JSON: the job file (YAML text, or the job file's
/// content as a JSON object) and its options.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitEnvelope {
    /// The job file (as text, or as a JSON object); or give `sql`.
    #[schema(value_type = Option<Object>)]
    pub job: Option<serde_json::Value>,
    /// A SQL script; or give `job`.
    pub sql: Option<String>,
    /// The name of a SQL job (unless the script sets `pipeline.name`).
    pub name: Option<String>,
    /// Parallelism of operators that name none (over the query's).
    pub parallelism: Option<u32>,
    /// A savepoint (or retained checkpoint) directory to start from.
    pub from_savepoint: Option<String>,
    /// Drop savepoint state of operators the job no longer has.
    pub allow_non_restored_state: Option<bool>,
}

/// A submitted job.
#[derive(Debug, Serialize, ToSchema)]
pub struct Submitted {
    pub id: String,
}

/// A job's state after a request.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobStateBody {
    pub id: String,
    pub state: String,
}

/// A savepoint (or stop-with-savepoint) request.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SavepointRequest {
    /// Directory under which the savepoint is written (file:///dir,
    /// s3://bucket/prefix or hdfs://namenode:port/dir); absent: the job
    /// manager's savepoint_dir.
    pub target: Option<String>,
}

/// A savepoint started: poll its trigger.
#[derive(Debug, Serialize, ToSchema)]
pub struct Triggered {
    pub request_id: String,
}

/// Where a savepoint stands.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct SavepointStatus {
    /// IN_PROGRESS, COMPLETED or FAILED.
    pub status: String,
    /// The savepoint's directory, once written (what `run -s` takes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}
