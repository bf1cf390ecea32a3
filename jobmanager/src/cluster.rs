//! The job manager's core: one task owning all cluster state (task managers,
//! jobs, slots), driven by commands from the gRPC services and by its own
//! timer. Nothing else mutates that state, so every decision is sequential.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{info, warn};
use weir_proto::v1;
use weir_proto::v1::task_manager_service_client::TaskManagerServiceClient;
use weir_runtime::graph::Plan;

use weir_state::savepoint::Savepoint;
use weir_state::{CheckpointMetadata, CheckpointStorage, S3Options};

use crate::coordinator::{Coordinator, Next, SavepointSpec};
use crate::scheduler::{allocate, place, SlotOffer, TaskPlacement};

/// Timing and storage of the job manager.
#[derive(Debug, Clone)]
pub struct JobManagerOptions {
    /// How often task managers heartbeat.
    pub heartbeat_interval: Duration,
    /// A task manager silent this long is declared lost.
    pub heartbeat_timeout: Duration,
    /// How long a submitted job waits for enough free slots before failing.
    pub slot_wait_timeout: Duration,
    /// Checkpoint storage of jobs that name none.
    pub checkpoint_storage: String,
    /// S3 settings for checkpoint storage.
    pub s3: S3Options,
    /// Where savepoints go when a request names no target.
    pub savepoint_dir: Option<String>,
}

impl Default for JobManagerOptions {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
            slot_wait_timeout: Duration::from_secs(30),
            checkpoint_storage: format!("file://{}", std::env::temp_dir().join("weir-checkpoints").display()),
            s3: S3Options::default(),
            savepoint_dir: None,
        }
    }
}

/// Identity of a job: 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub String);

impl JobId {
    fn random() -> Self {
        JobId(uuid::Uuid::new_v4().simple().to_string())
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Accepted, waiting for slots.
    Created,
    /// Deployed.
    Running,
    /// Every task finished.
    Finished,
    /// A task or task manager failed.
    Failed,
    /// Cancellation requested, tasks stopping.
    Cancelling,
    /// Cancelled.
    Canceled,
    /// Failed; waiting to restart from the latest complete checkpoint.
    Restarting,
}

impl JobState {
    fn is_terminal(self) -> bool {
        matches!(self, JobState::Finished | JobState::Failed | JobState::Canceled)
    }

    fn to_proto(self) -> v1::JobState {
        match self {
            JobState::Created => v1::JobState::Created,
            JobState::Running => v1::JobState::Running,
            JobState::Finished => v1::JobState::Finished,
            JobState::Failed => v1::JobState::Failed,
            JobState::Cancelling => v1::JobState::Cancelling,
            JobState::Canceled => v1::JobState::Canceled,
            JobState::Restarting => v1::JobState::Restarting,
        }
    }
}

/// Errors returned to clients.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The job is invalid; nothing was scheduled.
    #[error("{0}")]
    InvalidJob(String),
    /// No such job.
    #[error("no job with id {0}")]
    UnknownJob(String),
    /// The request does not fit the job's state.
    #[error("{0}")]
    WrongState(String),
    /// The job manager is shutting down.
    #[error("the job manager is shutting down")]
    ShuttingDown,
}

type Reply<T> = oneshot::Sender<Result<T, ClusterError>>;

/// Requests to the job manager core.
#[derive(Debug)]
pub enum Command {
    /// Submit a job (starting from a loaded savepoint, if given).
    Submit(v1::SubmitJobRequest, Option<RestorePoint>, Reply<String>),
    /// Take a savepoint of a running job (and stop it, if asked).
    Savepoint { job: String, target: String, stop: bool, reply: Reply<v1::TriggerSavepointResponse> },
    /// A savepoint's metadata was written (its state size), or not.
    SavepointWritten { job: JobId, id: u64, result: Result<u64, String> },
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
    /// Triggering a checkpoint failed on a task manager.
    TriggerFailed { job: JobId, id: u64, error: String },
    /// A checkpoint's metadata was written (or not).
    MetadataWritten { job: JobId, id: u64, result: Result<CheckpointMetadata, String> },
    /// A restart's delay passed and its checkpoint was looked up.
    RestartReady { job: JobId, attempt: u32, restore: Result<Option<RestorePoint>, String> },
    /// Records of jobs a previous job manager was running.
    Recovered(Result<Vec<v1::JobRecord>, String>),
}

/// A cheap handle to the job manager core.
#[derive(Debug, Clone)]
pub struct ClusterHandle {
    tx: mpsc::Sender<Command>,
}

impl ClusterHandle {
    /// Sends `make(reply)` and waits for the answer.
    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| ClusterError::ShuttingDown)?;
        rx.await.map_err(|_| ClusterError::ShuttingDown)?
    }

    /// Sends a command that has no answer.
    pub async fn tell(&self, cmd: Command) {
        let _ = self.tx.send(cmd).await;
    }
}

/// A retained checkpoint of another job, to start a job from.
#[derive(Debug)]
pub struct RetainedCheckpoint {
    /// The checkpoint's directory, as given.
    pub uri: String,
    /// The URI of the storage holding it.
    pub root: String,
    /// Its verified metadata.
    pub meta: CheckpointMetadata,
}

/// What a job attempt restores from.
#[derive(Debug, Clone)]
pub enum RestorePoint {
    /// A checkpoint of the job itself.
    Checkpoint(Arc<CheckpointMetadata>),
    /// The savepoint the job was started from (no checkpoint of its own yet).
    Savepoint(Arc<Savepoint>),
    /// The retained checkpoint of another job the job was started from.
    Retained(Arc<RetainedCheckpoint>),
}

impl RestorePoint {
    fn checkpoint_id(&self) -> u64 {
        match self {
            RestorePoint::Checkpoint(m) => m.checkpoint_id,
            RestorePoint::Savepoint(s) => s.metadata().checkpoint_id,
            RestorePoint::Retained(r) => r.meta.checkpoint_id,
        }
    }

    /// Where a savepoint or retained checkpoint is (empty for the job's own checkpoints).
    pub fn uri(&self) -> &str {
        match self {
            RestorePoint::Checkpoint(_) => "",
            RestorePoint::Savepoint(s) => s.uri(),
            RestorePoint::Retained(r) => &r.uri,
        }
    }
}

/// Where a restarting job resumes: its newest valid checkpoint, else the
/// savepoint it started from, else nothing.
async fn find_restore_point(
    storage: Option<CheckpointStorage>,
    job: &str,
    start: Option<RestorePoint>,
) -> Result<Option<RestorePoint>, String> {
    if let Some(s) = storage {
        if let Some(m) = s.latest_valid(job).await.map_err(|e| e.to_string())? {
            return Ok(Some(RestorePoint::Checkpoint(Arc::new(m))));
        }
    }
    Ok(start)
}

/// A savepoint request waiting for (or answered by) its savepoint.
struct SavepointRequest {
    target: String,
    stop: bool,
    /// The checkpoint id it was triggered as.
    triggered: Option<u64>,
    reply: Reply<v1::TriggerSavepointResponse>,
}

struct TaskManager {
    id: String,
    address: String,
    slots: u32,
    allocated: BTreeMap<JobId, u32>,
    last_heartbeat: Instant,
    last_heartbeat_wall: SystemTime,
    client: TaskManagerServiceClient<Channel>,
}

impl TaskManager {
    fn free(&self) -> u32 {
        self.slots.saturating_sub(self.allocated.values().sum())
    }
}

#[derive(Debug, Clone)]
struct TaskEntry {
    vertex_name: String,
    parallelism: u32,
    task_manager: String,
    state: v1::TaskState,
    counters: v1::TaskCounters,
    failure: String,
}

struct Job {
    id: JobId,
    name: String,
    graph: v1::JobGraph,
    plan: Arc<Plan>,
    state: JobState,
    attempt: u32,
    submitted: SystemTime,
    submitted_at: Instant,
    ended: Option<SystemTime>,
    tasks: BTreeMap<(u32, u32), TaskEntry>,
    failure: Option<String>,
    /// A data-plane failure waiting to see whether a lost task manager explains it.
    suspect: Option<(String, Instant)>,
    /// Checkpointing, if the job has it.
    coordinator: Option<Coordinator>,
    /// A checkpoint trigger timer is pending.
    trigger_scheduled: bool,
    /// Restarts so far.
    restarts: u32,
    /// The checkpoint the current attempt restores from.
    restore: Option<RestorePoint>,
    /// The savepoint (or retained checkpoint) the job started from.
    start: Option<RestorePoint>,
    /// Savepoints asked for, oldest first.
    savepoints: Vec<SavepointRequest>,
    /// A stop-with-savepoint is under way: no other checkpoint is triggered.
    stopping: bool,
}

fn parts_json(parts: &[weir_state::TaskSnapshot]) -> String {
    if parts.is_empty() {
        String::new()
    } else {
        serde_json::to_string(parts).expect("snapshots serialize")
    }
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Job {
    fn summary(&self) -> v1::JobSummary {
        v1::JobSummary {
            job_id: self.id.0.clone(),
            name: self.name.clone(),
            state: self.state.to_proto() as i32,
            start_time_ms: millis(self.submitted),
            end_time_ms: self.ended.map(millis).unwrap_or(0),
        }
    }

    /// Whether a checkpoint can start: every task runs or has finished
    /// (finished ones take no part), and some source still runs.
    fn ready_for_barriers(&self) -> bool {
        use v1::TaskState::{TaskFinished, TaskRunning};
        self.tasks.values().all(|t| matches!(t.state, TaskRunning | TaskFinished))
            && self.tasks.iter().any(|((v, _), t)| t.state == TaskRunning && self.plan.inputs_of(*v).is_empty())
    }

    fn running_tasks(&self) -> usize {
        self.tasks.values().filter(|t| t.state == v1::TaskState::TaskRunning).count()
    }

    /// Finished subtasks, as checkpoints name them.
    fn finished_tasks(&self) -> Vec<(Vec<String>, u32)> {
        self.tasks
            .iter()
            .filter(|(_, t)| t.state == v1::TaskState::TaskFinished)
            .map(|((v, s), _)| (self.plan.vertex_uids(*v), *s))
            .collect()
    }

    /// Task managers running a source task of the job (checkpoint triggers go there).
    fn source_task_managers(&self) -> Vec<String> {
        let mut tms: Vec<String> = self
            .tasks
            .iter()
            .filter(|((v, _), t)| self.plan.inputs_of(*v).is_empty() && t.state == v1::TaskState::TaskRunning)
            .map(|(_, t)| t.task_manager.clone())
            .collect();
        tms.sort();
        tms.dedup();
        tms
    }

    fn task_managers(&self) -> Vec<String> {
        let mut tms: Vec<String> = self.tasks.values().map(|t| t.task_manager.clone()).collect();
        tms.sort();
        tms.dedup();
        tms
    }
}

fn task_terminal(s: v1::TaskState) -> bool {
    matches!(s, v1::TaskState::TaskFinished | v1::TaskState::TaskFailed | v1::TaskState::TaskCanceled)
}

/// The job manager core.
pub struct Cluster {
    opts: JobManagerOptions,
    rx: mpsc::Receiver<Command>,
    tx: mpsc::Sender<Command>,
    tms: BTreeMap<String, TaskManager>,
    jobs: BTreeMap<JobId, Job>,
    order: Vec<JobId>,
    /// Long polls waiting for a job to end.
    waiters: Vec<(JobId, Instant, Reply<v1::JobDetails>)>,
    /// Where job records are kept (the default checkpoint storage).
    records: Option<CheckpointStorage>,
}

impl Cluster {
    /// A core and its handle; run it with [`Cluster::run`].
    pub fn new(opts: JobManagerOptions) -> (Cluster, ClusterHandle) {
        let (tx, rx) = mpsc::channel(1024);
        let handle = ClusterHandle { tx: tx.clone() };
        (
            Cluster {
                rx,
                tx,
                tms: BTreeMap::new(),
                jobs: BTreeMap::new(),
                order: Vec::new(),
                waiters: Vec::new(),
                records: CheckpointStorage::from_uri_with(&opts.checkpoint_storage, &opts.s3)
                    .map_err(|e| warn!(error = %e, "job records disabled: the checkpoint storage does not open"))
                    .ok(),
                opts,
            },
            handle,
        )
    }

    /// Processes commands and timers until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if let Some(records) = self.records.clone() {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(Command::Recovered(crate::records::load(&records).await)).await;
            });
        }
        let mut ticker = tokio::time::interval(self.opts.heartbeat_interval.min(Duration::from_millis(500)) / 2);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => self.on_tick(),
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => break,
                },
            }
            if !self.waiters.is_empty() {
                self.answer_waiters();
            }
        }
        info!("job manager core stopped");
    }

    /// Answers long polls whose job ended or whose time is up.
    fn answer_waiters(&mut self) {
        let now = Instant::now();
        let waiters = std::mem::take(&mut self.waiters);
        for (id, deadline, reply) in waiters {
            let ended = self.jobs.get(&id).is_none_or(|j| j.state.is_terminal());
            if ended || deadline <= now || reply.is_closed() {
                let _ = reply.send(self.details(&id.0));
            } else {
                self.waiters.push((id, deadline, reply));
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Submit(req, savepoint, reply) => {
                let _ = reply.send(self.submit(req, savepoint));
            }
            Command::Savepoint { job, target, stop, reply } => self.request_savepoint(job, target, stop, reply),
            Command::SavepointWritten { job, id, result } => self.savepoint_written(&job, id, result),
            Command::List(reply) => {
                let _ = reply.send(Ok(self.order.iter().map(|id| self.jobs[id].summary()).collect()));
            }
            Command::Get(id, wait, reply) => {
                let ended = self.jobs.get(&JobId(id.clone())).is_none_or(|j| j.state.is_terminal());
                match wait {
                    Some(d) if !ended => self.waiters.push((JobId(id), Instant::now() + d, reply)),
                    _ => {
                        let _ = reply.send(self.details(&id));
                    }
                }
            }
            Command::Cancel(id, reply) => {
                let _ = reply.send(self.cancel(&id));
            }
            Command::Overview(reply) => {
                let _ = reply.send(Ok(self.overview()));
            }
            Command::Metrics(reply) => {
                let _ = reply.send(Ok(self.metrics()));
            }
            Command::Register(req, reply) => {
                let _ = reply.send(Ok(self.register(req)));
            }
            Command::Heartbeat(req, reply) => {
                let known = match self.tms.get_mut(&req.task_manager_id) {
                    Some(tm) => {
                        tm.last_heartbeat = Instant::now();
                        tm.last_heartbeat_wall = SystemTime::now();
                        true
                    }
                    None => false,
                };
                let _ = reply.send(Ok(v1::HeartbeatResponse { known }));
            }
            Command::TaskState(report) => self.task_state(report),
            Command::DeployFailed { job, attempt, task_manager, error, unreachable } => {
                if unreachable && self.tms.contains_key(&task_manager) {
                    // Nothing listens at its address any more: the task manager
                    // is gone (its heartbeat would time out soon). Losing it now
                    // keeps the restart from picking its slots again.
                    self.lose_task_manager(&task_manager, &format!("unreachable: {error}"));
                    return;
                }
                if self.jobs.get(&job).is_some_and(|j| j.attempt == attempt && j.state == JobState::Running) {
                    self.fail_or_restart(&job, format!("deploying to task manager {task_manager} failed: {error}"));
                }
            }
            Command::Acknowledge(req) => self.acknowledge(req),
            Command::Decline(req) => {
                let Some(key) = req.task.clone() else { return };
                let id = JobId(key.job_id.clone());
                let Some(job) = self.jobs.get_mut(&id) else { return };
                if job.attempt != key.attempt {
                    return;
                }
                let reason = format!("subtask {} of vertex {} declined: {}", key.subtask, key.vertex, req.reason);
                if let Some(next) = job.coordinator.as_mut().map(|c| c.fail(req.checkpoint_id, &reason, true)) {
                    self.after_checkpoint_failure(&id, next);
                }
            }
            Command::CheckpointDue(job, attempt) => self.checkpoint_due(&job, attempt),
            Command::TriggerFailed { job, id, error } => {
                let reason = format!("triggering failed: {error}");
                if let Some(next) =
                    self.jobs.get_mut(&job).and_then(|j| j.coordinator.as_mut()).map(|c| c.fail(id, &reason, true))
                {
                    self.after_checkpoint_failure(&job, next);
                }
            }
            Command::MetadataWritten { job, id, result } => self.metadata_written(&job, id, result),
            Command::RestartReady { job, attempt, restore } => self.restart_ready(&job, attempt, restore),
            Command::Recovered(Ok(records)) => {
                for r in records {
                    self.resume(r);
                }
            }
            Command::Recovered(Err(e)) => warn!(error = %e, "reading job records failed: no job is resumed"),
        }
    }

    fn submit(&mut self, req: v1::SubmitJobRequest, start: Option<RestorePoint>) -> Result<String, ClusterError> {
        let graph = req.graph.ok_or_else(|| ClusterError::InvalidJob("the request has no job graph".into()))?;
        let domain = weir_proto::graph_from_proto(&graph).map_err(|e| ClusterError::InvalidJob(e.to_string()))?;
        let plan = Plan::new(&domain, req.default_parallelism).map_err(|e| ClusterError::InvalidJob(e.to_string()))?;
        if let Some(start) = &start {
            if plan.graph.checkpoint.is_none() {
                return Err(ClusterError::InvalidJob(
                    "starting from a savepoint needs a `checkpoints:` section (it names the state backend)".into(),
                ));
            }
            let allow = req.allow_non_restored_state;
            let dropped = match start {
                RestorePoint::Savepoint(sp) => crate::savepoints::check(&plan, sp.metadata(), sp.uri(), allow),
                RestorePoint::Retained(r) => crate::savepoints::check_retained(&plan, &r.meta, &r.uri, allow),
                RestorePoint::Checkpoint(_) => Ok(Vec::new()),
            }
            .map_err(ClusterError::InvalidJob)?;
            if !dropped.is_empty() {
                warn!(savepoint = %start.uri(), operators = ?dropped, "state of operators the job no longer has is not restored (--allow-non-restored-state)");
            }
        }
        let id = JobId::random();
        let after = start.as_ref().map_or(0, RestorePoint::checkpoint_id);
        let coordinator = match &plan.graph.checkpoint {
            Some(c) => {
                let uri = c.storage.clone().unwrap_or_else(|| self.opts.checkpoint_storage.clone());
                let storage = CheckpointStorage::from_uri_with(&uri, &self.opts.s3)
                    .map_err(|e| ClusterError::InvalidJob(format!("checkpoints.storage: {e}")))?;
                let mut c = Coordinator::new(&id.0, c.clone(), storage, after);
                c.max_parallelism = plan.graph.max_parallelism;
                Some(c)
            }
            None => None,
        };
        if let Some(start) = &start {
            info!(job_id = %id, savepoint = %start.uri(), checkpoint = after, "starting from a savepoint");
        }
        info!(job_id = %id, name = %domain.name, subtasks = plan.subtask_count(), slots = plan.slots_needed(), checkpoints = coordinator.is_some(), "job submitted");
        let job = Job {
            id: id.clone(),
            name: domain.name.clone(),
            graph: weir_proto::graph_to_proto(&plan.graph),
            plan: Arc::new(plan),
            state: JobState::Created,
            attempt: 1,
            submitted: SystemTime::now(),
            submitted_at: Instant::now(),
            ended: None,
            tasks: BTreeMap::new(),
            failure: None,
            suspect: None,
            coordinator,
            trigger_scheduled: false,
            restarts: 0,
            restore: start.clone(),
            start,
            savepoints: Vec::new(),
            stopping: false,
        };
        self.jobs.insert(id.clone(), job);
        self.order.push(id.clone());
        self.save_record(&id);
        self.try_schedule(&id);
        Ok(id.0)
    }

    /// Tries to place every job still waiting for slots, oldest first.
    fn schedule_waiting(&mut self) {
        let waiting: Vec<JobId> =
            self.order.iter().filter(|j| self.jobs[*j].state == JobState::Created).cloned().collect();
        for j in waiting {
            self.try_schedule(&j);
        }
    }

    fn try_schedule(&mut self, id: &JobId) {
        let Some(job) = self.jobs.get(id) else { return };
        if job.state != JobState::Created {
            return;
        }
        let needed = job.plan.slots_needed();
        let offers: Vec<SlotOffer> =
            self.tms.values().map(|t| SlotOffer { task_manager: t.id.clone(), free: t.free() }).collect();
        let Some(slots) = allocate(&offers, needed) else {
            if job.submitted_at.elapsed() >= self.opts.slot_wait_timeout {
                let free: u32 = offers.iter().map(|o| o.free).sum();
                let reason = format!(
                    "not enough task slots: the job needs {needed}, {free} are free on {} task manager(s) after waiting {:?}",
                    self.tms.len(),
                    self.opts.slot_wait_timeout
                );
                self.fail_job(id, reason);
            }
            return;
        };
        let placements = place(&job.plan, &slots);
        let job = self.jobs.get_mut(id).expect("checked above");
        for tm in &slots {
            *self.tms.get_mut(tm).expect("offered").allocated.entry(id.clone()).or_default() += 1;
        }
        job.tasks = placements
            .iter()
            .map(|p| {
                let v = &job.plan.vertices[p.vertex as usize];
                (
                    (p.vertex, p.subtask),
                    TaskEntry {
                        vertex_name: v.name.clone(),
                        parallelism: v.parallelism,
                        task_manager: p.task_manager.clone(),
                        state: v1::TaskState::Deploying,
                        counters: v1::TaskCounters::default(),
                        failure: String::new(),
                    },
                )
            })
            .collect();
        job.state = JobState::Running;
        if let Some(c) = job.coordinator.as_mut() {
            c.deployed(Instant::now());
        }
        info!(job_id = %id, attempt = job.attempt, task_managers = ?job.task_managers(), "deploying job");
        self.deploy(id, &placements);
    }

    fn deploy(&self, id: &JobId, placements: &[TaskPlacement]) {
        let job = &self.jobs[id];
        let wire: Vec<v1::Placement> = placements
            .iter()
            .map(|p| v1::Placement {
                vertex: p.vertex,
                subtask: p.subtask,
                task_manager_id: p.task_manager.clone(),
                rpc_address: self.tms[&p.task_manager].address.clone(),
            })
            .collect();
        let storage = job.coordinator.as_ref().map(|c| c.storage.uri().to_string()).unwrap_or_default();
        for p in placements {
            let mut client = self.tms[&p.task_manager].client.clone();
            let (restore_json, restore_checkpoint, restore_storage) = match &job.restore {
                Some(RestorePoint::Checkpoint(meta)) => {
                    let uids = job.plan.vertex_uids(p.vertex);
                    let snaps: Vec<&weir_state::TaskSnapshot> =
                        meta.tasks.iter().filter(|t| t.operators == uids).collect();
                    (serde_json::to_string(&snaps).expect("snapshots serialize"), meta.checkpoint_id, String::new())
                }
                Some(RestorePoint::Savepoint(sp)) => {
                    let parts = crate::savepoints::restore_parts(&job.plan, sp.metadata(), p.vertex);
                    (parts_json(&parts), sp.metadata().checkpoint_id, sp.uri().to_string())
                }
                Some(RestorePoint::Retained(r)) => {
                    let parts = crate::savepoints::retained_parts(&job.plan, &r.meta, p.vertex);
                    (parts_json(&parts), r.meta.checkpoint_id, r.root.clone())
                }
                None => (String::new(), 0, String::new()),
            };
            let req = v1::DeployTaskRequest {
                task: Some(v1::TaskKey {
                    job_id: id.0.clone(),
                    vertex: p.vertex,
                    subtask: p.subtask,
                    attempt: job.attempt,
                }),
                graph: Some(job.graph.clone()),
                placements: wire.clone(),
                checkpoint_storage: storage.clone(),
                restore_json,
                restore_checkpoint,
                restore_storage,
                finished: matches!(&job.restore, Some(RestorePoint::Checkpoint(m))
                    if m.finished.iter().any(|(uids, s)| *s == p.subtask && *uids == job.plan.vertex_uids(p.vertex))),
            };
            let tx = self.tx.clone();
            let (job_id, attempt, tm) = (id.clone(), job.attempt, p.task_manager.clone());
            tokio::spawn(async move {
                if let Err(status) = client.deploy_task(req).await {
                    let _ = tx
                        .send(Command::DeployFailed {
                            job: job_id,
                            attempt,
                            task_manager: tm,
                            error: status.message().to_string(),
                            unreachable: status.code() == tonic::Code::Unavailable,
                        })
                        .await;
                }
            });
        }
    }

    fn task_state(&mut self, r: v1::TaskStateReport) {
        let Some(key) = r.task.clone() else { return };
        let id = JobId(key.job_id.clone());
        let Some(job) = self.jobs.get_mut(&id) else { return };
        if job.attempt != key.attempt {
            return;
        }
        let state = v1::TaskState::try_from(r.state).unwrap_or(v1::TaskState::TaskFailed);
        let Some(task) = job.tasks.get_mut(&(key.vertex, key.subtask)) else { return };
        if task_terminal(task.state) {
            return;
        }
        task.state = state;
        if let Some(c) = r.counters {
            task.counters = c;
        }
        task.failure = r.failure.clone();
        let where_ = format!(
            "{} ({}/{}) on task manager {}",
            task.vertex_name,
            key.subtask + 1,
            task.parallelism,
            task.task_manager
        );
        match state {
            v1::TaskState::TaskFailed if job.state == JobState::Running => {
                let reason = format!("{where_} failed: {}", r.failure);
                if r.exchange_failure {
                    if job.suspect.is_none() {
                        job.suspect = Some((reason, Instant::now() + self.opts.heartbeat_timeout));
                    }
                } else {
                    self.fail_or_restart(&id, reason);
                }
            }
            v1::TaskState::TaskFinished | v1::TaskState::TaskCanceled | v1::TaskState::TaskFailed => {
                if state == v1::TaskState::TaskFinished {
                    // A finished task takes no more barriers: a checkpoint
                    // waiting for it cannot complete; later ones go on
                    // without it while other tasks run.
                    if let Some(c) = job.coordinator.as_mut() {
                        if let Some(cp) = c.abandon("a task finished before the checkpoint completed") {
                            info!(job_id = %id, checkpoint = cp, "checkpoint abandoned: a task finished");
                        }
                    }
                }
                self.maybe_complete(&id);
                self.schedule_checkpoint(&id);
            }
            v1::TaskState::TaskRunning => self.schedule_checkpoint(&id),
            _ => {}
        }
    }

    /// Moves a job whose tasks are all done to its final state.
    fn maybe_complete(&mut self, id: &JobId) {
        let Some(job) = self.jobs.get_mut(id) else { return };
        if !job.tasks.values().all(|t| task_terminal(t.state)) {
            return;
        }
        let next = match job.state {
            JobState::Running if job.tasks.values().all(|t| t.state == v1::TaskState::TaskFinished) => {
                JobState::Finished
            }
            JobState::Cancelling => JobState::Canceled,
            _ => return,
        };
        job.state = next;
        job.ended = Some(SystemTime::now());
        let records: u64 = job.tasks.values().map(|t| t.counters.sink_records).sum();
        info!(job_id = %id, state = ?next, sink_records = records, "job ended");
        self.remove_record(id);
        self.release(id);
    }

    fn release(&mut self, id: &JobId) {
        for tm in self.tms.values_mut() {
            tm.allocated.remove(id);
        }
        self.schedule_waiting();
    }

    fn cancel_tasks(&self, id: &JobId) {
        let Some(job) = self.jobs.get(id) else { return };
        for tm in job.task_managers() {
            let Some(t) = self.tms.get(&tm) else { continue };
            let mut client = t.client.clone();
            let req = v1::CancelJobTasksRequest { job_id: id.0.clone(), attempt: job.attempt };
            tokio::spawn(async move {
                if let Err(e) = client.cancel_job_tasks(req).await {
                    warn!(task_manager = %tm, error = %e.message(), "cancelling tasks failed");
                }
            });
        }
    }

    fn fail_job(&mut self, id: &JobId, reason: String) {
        let Some(job) = self.jobs.get_mut(id) else { return };
        if job.state.is_terminal() {
            return;
        }
        warn!(job_id = %id, reason = %reason, "job failed");
        if let Some(c) = job.coordinator.as_mut() {
            c.abandon("the job failed");
        }
        self.drop_savepoint_requests(id, "the job failed");
        let job = self.jobs.get_mut(id).expect("checked");
        job.state = JobState::Failed;
        job.failure = Some(reason);
        job.ended = Some(SystemTime::now());
        job.suspect = None;
        self.cancel_tasks(id);
        self.remove_record(id);
        self.release(id);
    }

    fn cancel(&mut self, raw: &str) -> Result<v1::JobState, ClusterError> {
        let id = JobId(raw.to_string());
        let job = self.jobs.get_mut(&id).ok_or_else(|| ClusterError::UnknownJob(raw.into()))?;
        match job.state {
            JobState::Created | JobState::Restarting => {
                job.state = JobState::Canceled;
                job.ended = Some(SystemTime::now());
                self.remove_record(&id);
            }
            JobState::Running => {
                info!(job_id = %id, "cancelling job");
                if let Some(c) = job.coordinator.as_mut() {
                    c.abandon("the job is cancelled");
                }
                job.state = JobState::Cancelling;
                self.drop_savepoint_requests(&id, "the job is cancelled");
                self.cancel_tasks(&id);
                self.maybe_complete(&id);
            }
            JobState::Cancelling => {}
            s => return Err(ClusterError::WrongState(format!("job {raw} has already ended ({s:?})"))),
        }
        Ok(self.jobs[&id].state.to_proto())
    }

    fn register(&mut self, req: v1::RegisterTaskManagerRequest) -> v1::RegisterTaskManagerResponse {
        if self.tms.contains_key(&req.task_manager_id) {
            // A task manager that registers again has lost its tasks.
            self.lose_task_manager(&req.task_manager_id, "it registered again (restarted)");
        }
        let channel = Channel::from_shared(req.rpc_address.clone())
            .map(|e| e.connect_timeout(Duration::from_secs(5)).connect_lazy());
        match channel {
            Ok(channel) => {
                info!(task_manager = %req.task_manager_id, address = %req.rpc_address, slots = req.slots, "task manager registered");
                self.tms.insert(
                    req.task_manager_id.clone(),
                    TaskManager {
                        id: req.task_manager_id.clone(),
                        address: req.rpc_address.clone(),
                        slots: req.slots,
                        allocated: BTreeMap::new(),
                        last_heartbeat: Instant::now(),
                        last_heartbeat_wall: SystemTime::now(),
                        client: TaskManagerServiceClient::new(channel),
                    },
                );
                self.schedule_waiting();
            }
            Err(e) => {
                warn!(task_manager = %req.task_manager_id, address = %req.rpc_address, error = %e, "bad task manager address")
            }
        }
        v1::RegisterTaskManagerResponse { heartbeat_interval_ms: self.opts.heartbeat_interval.as_millis() as u64 }
    }

    fn lose_task_manager(&mut self, tm_id: &str, why: &str) {
        let Some(tm) = self.tms.remove(tm_id) else { return };
        warn!(task_manager = %tm_id, address = %tm.address, why, "task manager lost");
        let affected: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| !j.state.is_terminal() && j.tasks.values().any(|t| t.task_manager == tm_id))
            .map(|j| j.id.clone())
            .collect();
        for id in affected {
            let job = self.jobs.get_mut(&id).expect("listed above");
            for t in job.tasks.values_mut().filter(|t| t.task_manager == tm_id && !task_terminal(t.state)) {
                t.state = v1::TaskState::TaskFailed;
                t.failure = format!("task manager lost: {why}");
            }
            match job.state {
                JobState::Running => {
                    let reason = format!("task manager {tm_id} at {} was lost: {why}", tm.address);
                    self.fail_or_restart(&id, reason);
                }
                JobState::Cancelling => self.maybe_complete(&id),
                _ => {}
            }
        }
    }

    fn on_tick(&mut self) {
        let timeout = self.opts.heartbeat_timeout;
        let lost: Vec<String> =
            self.tms.values().filter(|t| t.last_heartbeat.elapsed() > timeout).map(|t| t.id.clone()).collect();
        for tm in lost {
            self.lose_task_manager(&tm, &format!("no heartbeat for {timeout:?}"));
        }
        let now = Instant::now();
        let expired: Vec<(JobId, String)> = self
            .jobs
            .values()
            .filter_map(|j| match &j.suspect {
                Some((reason, deadline)) if *deadline <= now && j.state == JobState::Running => {
                    Some((j.id.clone(), reason.clone()))
                }
                _ => None,
            })
            .collect();
        for (id, reason) in expired {
            self.fail_or_restart(&id, reason);
        }
        let timed_out: Vec<(JobId, u64)> = self
            .jobs
            .values()
            .filter_map(|j| j.coordinator.as_ref().and_then(|c| c.timed_out(now)).map(|cp| (j.id.clone(), cp)))
            .collect();
        for (id, cp) in timed_out {
            let job = self.jobs.get_mut(&id).expect("listed above");
            let c = job.coordinator.as_mut().expect("listed above");
            let reason = format!("not complete after {:?} (timeout)", c.timeout());
            let next = c.fail(cp, &reason, true);
            self.after_checkpoint_failure(&id, next);
        }
        self.schedule_waiting();
    }

    // ------------------------------------------------------------ checkpoints

    /// Arms the trigger timer of a running job with checkpoints.
    fn schedule_checkpoint(&mut self, id: &JobId) {
        let Some(job) = self.jobs.get_mut(id) else { return };
        if job.state != JobState::Running || job.trigger_scheduled {
            return;
        }
        let Some(at) = job.coordinator.as_ref().and_then(|c| c.next_trigger_at(Instant::now())) else { return };
        job.trigger_scheduled = true;
        let (tx, job_id, attempt) = (self.tx.clone(), id.clone(), job.attempt);
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let _ = tx.send(Command::CheckpointDue(job_id, attempt)).await;
        });
    }

    fn checkpoint_due(&mut self, id: &JobId, attempt: u32) {
        let Some(job) = self.jobs.get_mut(id) else { return };
        if job.attempt != attempt {
            return;
        }
        job.trigger_scheduled = false;
        if job.state != JobState::Running {
            return;
        }
        // Barriers start at sources and must reach every task still running.
        if !job.ready_for_barriers() {
            return;
        }
        if job.stopping || job.savepoints.iter().any(|r| r.triggered.is_none()) {
            return self.try_savepoint(id); // savepoints asked for go first
        }
        let (running, finished) = (job.running_tasks(), job.finished_tasks());
        let Some(c) = job.coordinator.as_mut() else { return };
        match c.next_trigger_at(Instant::now()) {
            Some(at) if at <= Instant::now() => {}
            Some(_) => return self.schedule_checkpoint(id),
            None => return,
        }
        let cp = c.trigger(attempt, running, None, finished);
        let sources = job.source_task_managers();
        tracing::debug!(job_id = %id, checkpoint = cp, "triggering checkpoint");
        for tm in sources {
            let Some(t) = self.tms.get(&tm) else { continue };
            let mut client = t.client.clone();
            let req =
                v1::TriggerCheckpointRequest { job_id: id.0.clone(), attempt, checkpoint_id: cp, ..Default::default() };
            let (tx, job_id) = (self.tx.clone(), id.clone());
            tokio::spawn(async move {
                if let Err(e) = client.trigger_checkpoint(req).await {
                    let error = format!("task manager {tm}: {}", e.message());
                    let _ = tx.send(Command::TriggerFailed { job: job_id, id: cp, error }).await;
                }
            });
        }
    }

    fn acknowledge(&mut self, req: v1::AcknowledgeCheckpointRequest) {
        let Some(key) = req.task.clone() else { return };
        let id = JobId(key.job_id.clone());
        let Some(job) = self.jobs.get_mut(&id) else { return };
        let attempt = job.attempt;
        let Some(c) = job.coordinator.as_mut() else { return };
        match c.acknowledge(attempt, &req) {
            Ok(Next::Write(meta)) => {
                let (storage, tx, job_id, cp) = (c.storage.clone(), self.tx.clone(), id.clone(), meta.checkpoint_id);
                tokio::spawn(async move {
                    let result = storage.complete(&meta).await.map(|_| meta).map_err(|e| e.to_string());
                    let _ = tx.send(Command::MetadataWritten { job: job_id, id: cp, result }).await;
                });
            }
            Ok(Next::WriteSavepoint { id: cp, spec, trigger_ms, parts }) => {
                let meta = crate::savepoints::metadata(&job.plan, &id.0, cp, trigger_ms, spec.stop, &parts);
                let (s3, tx, job_id) = (self.opts.s3.clone(), self.tx.clone(), id.clone());
                tokio::spawn(async move {
                    let result = async {
                        let storage = CheckpointStorage::from_uri_with(&spec.location, &s3)?;
                        Savepoint::write_metadata(&storage, &meta).await?;
                        Ok::<u64, weir_state::StorageError>(meta.state_bytes())
                    }
                    .await
                    .map_err(|e| e.to_string());
                    let _ = tx.send(Command::SavepointWritten { job: job_id, id: cp, result }).await;
                });
            }
            Ok(_) => {}
            Err(reason) => {
                let next = c.fail(req.checkpoint_id, &reason, true);
                self.after_checkpoint_failure(&id, next);
            }
        }
    }

    fn metadata_written(&mut self, id: &JobId, cp: u64, result: Result<CheckpointMetadata, String>) {
        let Some(job) = self.jobs.get_mut(id) else { return };
        let Some(c) = job.coordinator.as_mut() else { return };
        let meta = match result {
            Ok(m) => m,
            Err(e) => {
                let next = c.fail(cp, &format!("writing its metadata failed: {e}"), true);
                return self.after_checkpoint_failure(id, next);
            }
        };
        let Some(done) = c.written(meta) else { return };
        let storage = c.storage.clone();
        let info = c.info(cp).cloned().unwrap_or_default();
        info!(job_id = %id, checkpoint = cp, duration_ms = info.duration_ms, size_bytes = info.size_bytes, state_bytes = info.state_bytes, alignment_ms = info.alignment_ms, "checkpoint complete");
        // Sinks commit on this notice.
        self.notify_tasks(id, cp, false);
        let job_id = id.0.clone();
        tokio::spawn(async move {
            for old in done.discard {
                if let Err(e) = storage.discard(&job_id, old).await {
                    warn!(job_id, checkpoint = old, error = %e, "deleting a subsumed checkpoint failed");
                }
            }
            if let Err(e) = storage.delete_shared(&done.unreferenced).await {
                warn!(job_id, error = %e, "deleting unreferenced shared state files failed");
            }
        });
        self.schedule_checkpoint(id);
    }

    fn after_checkpoint_failure(&mut self, id: &JobId, next: Next) {
        let Next::Failed { id: cp, reason, fail_job } = next else { return };
        warn!(job_id = %id, checkpoint = cp, reason = %reason, "checkpoint failed");
        self.savepoint_failed(id, cp, &reason);
        if let Some(job) = self.jobs.get(id) {
            if let Some(c) = &job.coordinator {
                let (storage, job_id) = (c.storage.clone(), id.0.clone());
                tokio::spawn(async move {
                    let _ = storage.discard(&job_id, cp).await;
                });
            }
        }
        if fail_job {
            let tolerable = self.jobs[id].coordinator.as_ref().map(|c| c.config.tolerable_failures).unwrap_or(0);
            self.fail_or_restart(
                id,
                format!("checkpoint {cp} failed ({reason}) and more than {tolerable} consecutive checkpoint failures are not tolerated"),
            );
        } else {
            self.schedule_checkpoint(id);
        }
    }

    // ------------------------------------------------------------ savepoints

    fn request_savepoint(
        &mut self,
        raw: String,
        target: String,
        stop: bool,
        reply: Reply<v1::TriggerSavepointResponse>,
    ) {
        let id = JobId(raw.clone());
        let Some(job) = self.jobs.get_mut(&id) else {
            let _ = reply.send(Err(ClusterError::UnknownJob(raw)));
            return;
        };
        let refuse = |why: String| Err(ClusterError::WrongState(why));
        if job.coordinator.is_none() {
            let _ = reply.send(refuse(format!(
                "job {raw} has no `checkpoints:` section: savepoints are taken like checkpoints and need its state backend"
            )));
            return;
        }
        if !matches!(job.state, JobState::Running | JobState::Created | JobState::Restarting) {
            let _ = reply.send(refuse(format!("job {raw} is not running ({:?})", job.state)));
            return;
        }
        if job.stopping {
            let _ = reply.send(refuse(format!("job {raw} is already stopping with a savepoint")));
            return;
        }
        let target = if target.is_empty() {
            match &self.opts.savepoint_dir {
                Some(d) => d.clone(),
                None => {
                    let _ = reply.send(Err(ClusterError::InvalidJob(
                        "no savepoint target: pass one, or set the job manager's savepoint_dir".into(),
                    )));
                    return;
                }
            }
        } else {
            target
        };
        if let Err(e) = CheckpointStorage::from_uri_with(&target, &self.opts.s3) {
            let _ = reply.send(Err(ClusterError::InvalidJob(format!("savepoint target: {e}"))));
            return;
        }
        if stop {
            job.stopping = true;
        }
        job.savepoints.push(SavepointRequest { target, stop, triggered: None, reply });
        self.try_savepoint(&id);
    }

    /// Triggers the oldest waiting savepoint of a job if nothing is in the way.
    fn try_savepoint(&mut self, id: &JobId) {
        let Some(job) = self.jobs.get_mut(id) else { return };
        if job.state != JobState::Running || !job.ready_for_barriers() {
            return; // tried again when the tasks run
        }
        let (running, finished) = (job.running_tasks(), job.finished_tasks());
        let Some(c) = job.coordinator.as_mut() else { return };
        if c.pending_id().is_some() {
            return; // tried again when the running checkpoint ends
        }
        let Some(request) = job.savepoints.iter_mut().find(|r| r.triggered.is_none()) else { return };
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let location = format!("{}/savepoint-{}-{suffix}", request.target.trim_end_matches('/'), &id.0[..8]);
        let spec = SavepointSpec { location: location.clone(), stop: request.stop };
        let cp = c.trigger(job.attempt, running, Some(spec), finished);
        request.triggered = Some(cp);
        info!(job_id = %id, checkpoint = cp, location = %location, stop = request.stop, "triggering savepoint");
        let stop = request.stop;
        let attempt = job.attempt;
        let all = job.task_managers();
        let sources = job.source_task_managers();
        let clients = |tms: &[String]| -> Vec<(String, TaskManagerServiceClient<Channel>)> {
            tms.iter().filter_map(|tm| self.tms.get(tm).map(|t| (tm.clone(), t.client.clone()))).collect()
        };
        let (everyone, sources) = (clients(&all), clients(&sources));
        let (tx, job_id) = (self.tx.clone(), id.clone());
        tokio::spawn(async move {
            let req = |prepare: bool| v1::TriggerCheckpointRequest {
                job_id: job_id.0.clone(),
                attempt,
                checkpoint_id: cp,
                savepoint_location: location.clone(),
                stop,
                prepare,
            };
            // Every task manager learns that checkpoint `cp` is a savepoint
            // before any source emits its barrier.
            for (phase, targets) in [(true, everyone), (false, sources)] {
                for (tm, mut client) in targets {
                    if let Err(e) = client.trigger_checkpoint(req(phase)).await {
                        let error = format!("task manager {tm}: {}", e.message());
                        let _ = tx.send(Command::TriggerFailed { job: job_id, id: cp, error }).await;
                        return;
                    }
                }
            }
        });
    }

    fn savepoint_written(&mut self, id: &JobId, cp: u64, result: Result<u64, String>) {
        let Some(job) = self.jobs.get_mut(id) else { return };
        let Some(c) = job.coordinator.as_mut() else { return };
        let state_bytes = match result {
            Ok(b) => b,
            Err(e) => {
                let next = c.fail(cp, &format!("writing its metadata failed: {e}"), false);
                return self.after_checkpoint_failure(id, next);
            }
        };
        let Some(spec) = c.savepoint_written(cp, state_bytes) else { return };
        let took = c.info(cp).map(|i| i.duration_ms).unwrap_or(0);
        info!(job_id = %id, checkpoint = cp, location = %spec.location, state_bytes, duration_ms = took, stop = spec.stop, "savepoint complete");
        let (done, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut job.savepoints).into_iter().partition(|r| r.triggered == Some(cp));
        job.savepoints = waiting;
        for r in done {
            let _ = r.reply.send(Ok(v1::TriggerSavepointResponse {
                location: spec.location.clone(),
                checkpoint_id: cp,
                state_bytes,
            }));
        }
        if spec.stop {
            // Sinks commit everything up to the savepoint, then sources stop
            // and the job ends FINISHED with its state in the savepoint.
            self.notify_tasks(id, cp, false);
        } else {
            self.try_savepoint(id);
            self.schedule_checkpoint(id);
        }
    }

    /// Answers the requests of a failed savepoint; a stop-with-savepoint
    /// that failed lets the paused sources resume.
    fn savepoint_failed(&mut self, id: &JobId, cp: u64, reason: &str) {
        let Some(job) = self.jobs.get_mut(id) else { return };
        let (failed, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut job.savepoints).into_iter().partition(|r| r.triggered == Some(cp));
        job.savepoints = waiting;
        let mut stop = false;
        for r in failed {
            stop |= r.stop;
            let _ = r.reply.send(Err(ClusterError::WrongState(format!("savepoint {cp} failed: {reason}"))));
        }
        if stop {
            job.stopping = false;
            if job.state == JobState::Running {
                self.notify_tasks(id, cp, true);
            }
        }
    }

    /// Fails every savepoint request of a job that stops running.
    fn drop_savepoint_requests(&mut self, id: &JobId, why: &str) {
        let Some(job) = self.jobs.get_mut(id) else { return };
        for r in job.savepoints.drain(..) {
            let _ = r.reply.send(Err(ClusterError::WrongState(format!("no savepoint: {why}"))));
        }
        job.stopping = false;
    }

    /// Tells every task of the job that checkpoint `cp` completed (or was aborted).
    fn notify_tasks(&self, id: &JobId, cp: u64, aborted: bool) {
        let Some(job) = self.jobs.get(id) else { return };
        for tm in job.task_managers() {
            let Some(t) = self.tms.get(&tm) else { continue };
            let mut client = t.client.clone();
            let req = v1::NotifyCheckpointCompleteRequest {
                job_id: id.0.clone(),
                attempt: job.attempt,
                checkpoint_id: cp,
                aborted,
            };
            tokio::spawn(async move {
                if let Err(e) = client.notify_checkpoint_complete(req).await {
                    warn!(task_manager = %tm, checkpoint = cp, error = %e.message(), "notifying tasks of a checkpoint failed");
                }
            });
        }
    }

    // ------------------------------------------------------------ restarts

    /// Restarts a failed job per its restart strategy, or fails it.
    fn fail_or_restart(&mut self, id: &JobId, reason: String) {
        let Some(job) = self.jobs.get_mut(id) else { return };
        if job.state != JobState::Running {
            return self.fail_job(id, reason);
        }
        let delay = job.coordinator.as_ref().and_then(|c| c.config.restart.delay(job.restarts + 1));
        let Some(delay) = delay else {
            let reason = if job.restarts > 0 { format!("{reason} (after {} restarts)", job.restarts) } else { reason };
            return self.fail_job(id, reason);
        };
        job.restarts += 1;
        warn!(job_id = %id, attempt = job.attempt, restart = job.restarts, delay = ?delay, reason = %reason, "job failed; restarting from the latest complete checkpoint");
        if let Some(c) = job.coordinator.as_mut() {
            c.abandon("the job is restarting");
        }
        job.failure = Some(reason);
        self.drop_savepoint_requests(id, "the job failed and is restarting");
        let job = self.jobs.get_mut(id).expect("checked");
        job.suspect = None;
        job.state = JobState::Restarting;
        self.cancel_tasks(id);
        let job = self.jobs.get_mut(id).expect("checked");
        let attempt = job.attempt;
        job.tasks.clear();
        let storage = job.coordinator.as_ref().map(|c| c.storage.clone());
        let start = job.start.clone();
        for tm in self.tms.values_mut() {
            tm.allocated.remove(id);
        }
        let (tx, job_id) = (self.tx.clone(), id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let restore = find_restore_point(storage, &job_id.0, start).await;
            let _ = tx.send(Command::RestartReady { job: job_id, attempt, restore }).await;
        });
        self.schedule_waiting();
    }

    fn restart_ready(&mut self, id: &JobId, attempt: u32, restore: Result<Option<RestorePoint>, String>) {
        let Some(job) = self.jobs.get_mut(id) else { return };
        if job.state != JobState::Restarting || job.attempt != attempt {
            return;
        }
        let restore = match restore {
            Ok(r) => r,
            Err(e) => {
                job.state = JobState::Running; // so that the restart strategy applies again
                return self.fail_or_restart(id, format!("reading the latest checkpoint failed: {e}"));
            }
        };
        job.attempt += 1;
        match &restore {
            Some(RestorePoint::Checkpoint(m)) => {
                info!(job_id = %id, attempt = job.attempt, checkpoint = m.checkpoint_id, "restarting from checkpoint")
            }
            Some(start @ (RestorePoint::Savepoint(_) | RestorePoint::Retained(_))) => {
                info!(job_id = %id, attempt = job.attempt, savepoint = %start.uri(), "restarting from the savepoint the job started from (no checkpoint yet)");
                job.start = Some(start.clone());
            }
            None => info!(job_id = %id, attempt = job.attempt, "restarting without a checkpoint (none complete yet)"),
        }
        if let Some(c) = job.coordinator.as_mut() {
            match &restore {
                Some(RestorePoint::Checkpoint(m)) => c.restart(Some(m)),
                Some(start) => {
                    c.restart(None);
                    c.continue_after(start.checkpoint_id());
                }
                None => c.restart(None),
            }
        }
        job.restore = restore;
        job.state = JobState::Created;
        job.submitted_at = Instant::now();
        job.trigger_scheduled = false;
        self.save_record(id);
        self.try_schedule(id);
    }

    // ------------------------------------------------------------ job records

    fn save_record(&self, id: &JobId) {
        let (Some(records), Some(job)) = (self.records.clone(), self.jobs.get(id)) else { return };
        let Some(c) = &job.coordinator else { return };
        let rec = v1::JobRecord {
            job_id: id.0.clone(),
            name: job.name.clone(),
            attempt: job.attempt,
            graph: Some(job.graph.clone()),
            storage: c.storage.uri().to_string(),
            submitted_ms: millis(job.submitted),
            restarts: job.restarts,
            savepoint: job.start.as_ref().map(|s| s.uri().to_string()).unwrap_or_default(),
        };
        tokio::spawn(async move {
            if let Err(e) = crate::records::save(&records, &rec).await {
                warn!(job_id = %rec.job_id, error = %e, "writing the job record failed: a restarted job manager would not resume this job");
            }
        });
    }

    fn remove_record(&self, id: &JobId) {
        let Some(records) = self.records.clone() else { return };
        if self.jobs.get(id).is_none_or(|j| j.coordinator.is_none()) {
            return;
        }
        let job = id.0.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::records::remove(&records, &job).await {
                warn!(job_id = %job, error = %e, "removing the job record failed");
            }
        });
    }

    /// Takes over a job a previous job manager was running: it restarts from
    /// its latest complete checkpoint once task managers offer slots.
    fn resume(&mut self, r: v1::JobRecord) {
        let id = JobId(r.job_id.clone());
        if self.jobs.contains_key(&id) {
            return;
        }
        let built = (|| -> Result<(Arc<Plan>, Coordinator), String> {
            let graph = r.graph.as_ref().ok_or("the record has no graph")?;
            let domain = weir_proto::graph_from_proto(graph).map_err(|e| e.to_string())?;
            let plan = Plan::new(&domain, 0).map_err(|e| e.to_string())?;
            let config = plan.graph.checkpoint.clone().ok_or("the job has no checkpoints")?;
            let storage = CheckpointStorage::from_uri_with(&r.storage, &self.opts.s3).map_err(|e| e.to_string())?;
            let mut c = Coordinator::new(&r.job_id, config, storage, 0);
            c.max_parallelism = plan.graph.max_parallelism;
            Ok((Arc::new(plan), c))
        })();
        let (plan, coordinator) = match built {
            Ok(b) => b,
            Err(e) => {
                warn!(job_id = %id, error = %e, "a job record cannot be resumed");
                return;
            }
        };
        info!(job_id = %id, name = %r.name, attempt = r.attempt, "resuming a job of a previous job manager");
        let storage = coordinator.storage.clone();
        let job = Job {
            id: id.clone(),
            name: r.name.clone(),
            graph: r.graph.clone().unwrap_or_default(),
            plan,
            state: JobState::Restarting,
            attempt: r.attempt,
            submitted: UNIX_EPOCH + Duration::from_millis(r.submitted_ms.max(0) as u64),
            submitted_at: Instant::now(),
            ended: None,
            tasks: BTreeMap::new(),
            failure: None,
            suspect: None,
            coordinator: Some(coordinator),
            trigger_scheduled: false,
            restarts: r.restarts,
            restore: None,
            start: None,
            savepoints: Vec::new(),
            stopping: false,
        };
        self.jobs.insert(id.clone(), job);
        self.order.push(id.clone());
        let (tx, attempt, s3) = (self.tx.clone(), r.attempt, self.opts.s3.clone());
        tokio::spawn(async move {
            let start = if r.savepoint.is_empty() {
                Ok(None)
            } else {
                crate::savepoints::load_start(&r.savepoint, &s3).await.map(Some)
            };
            let restore = match start {
                Ok(sp) => find_restore_point(Some(storage), &id.0, sp).await,
                Err(e) => Err(e),
            };
            let _ = tx.send(Command::RestartReady { job: id, attempt, restore }).await;
        });
    }

    fn details(&self, raw: &str) -> Result<v1::JobDetails, ClusterError> {
        let job = self.jobs.get(&JobId(raw.to_string())).ok_or_else(|| ClusterError::UnknownJob(raw.into()))?;
        let tasks = job
            .tasks
            .iter()
            .map(|(&(_, subtask), t)| v1::TaskDetails {
                vertex: t.vertex_name.clone(),
                subtask,
                parallelism: t.parallelism,
                task_manager_id: t.task_manager.clone(),
                state: t.state as i32,
                records_in: t.counters.records_in,
                records_out: t.counters.records_out,
                failure: t.failure.clone(),
            })
            .collect();
        Ok(v1::JobDetails {
            summary: Some(job.summary()),
            failure: job.failure.clone().unwrap_or_default(),
            tasks,
            sink_records: job.tasks.values().map(|t| t.counters.sink_records).sum(),
            bad_records: job.tasks.values().map(|t| t.counters.bad_records).sum(),
            checkpoints: job.coordinator.as_ref().map(|c| c.history()).unwrap_or_default(),
            restarts: job.restarts,
            attempt: job.attempt,
            restored_from: job.restore.as_ref().map(RestorePoint::checkpoint_id).unwrap_or(0),
        })
    }

    /// The job manager's metrics (names in `docs/metrics.md`).
    fn metrics(&self) -> String {
        let mut e = weir_config::metrics::Exposition::new();
        e.gauge("weir_jobmanager_task_managers", "Task managers registered.", &[], self.tms.len() as f64);
        let total: u32 = self.tms.values().map(|t| t.slots).sum();
        let free: u32 = self.tms.values().map(|t| t.free()).sum();
        e.gauge("weir_jobmanager_slots", "Slots of all registered task managers.", &[], f64::from(total));
        e.gauge("weir_jobmanager_slots_free", "Slots no job holds.", &[], f64::from(free));
        for state in [
            JobState::Created,
            JobState::Running,
            JobState::Restarting,
            JobState::Cancelling,
            JobState::Finished,
            JobState::Failed,
            JobState::Canceled,
        ] {
            let n = self.jobs.values().filter(|j| j.state == state).count();
            let name = state.to_proto().as_str_name();
            e.gauge("weir_jobs", "Jobs by state.", &[("state", name)], n as f64);
        }
        for job in self.order.iter().filter_map(|id| self.jobs.get(id)) {
            let l = [("job_id", job.id.0.as_str()), ("job_name", job.name.as_str())];
            e.gauge(
                "weir_job_running",
                "1 while the job runs.",
                &l,
                f64::from(u8::from(job.state == JobState::Running)),
            );
            e.counter("weir_job_restarts_total", "Restarts of the job after failures.", &l, f64::from(job.restarts));
            let Some(c) = &job.coordinator else { continue };
            e.counter("weir_checkpoints_completed_total", "Checkpoints completed.", &l, c.completed as f64);
            e.counter("weir_checkpoints_failed_total", "Checkpoints and savepoints failed.", &l, c.failed as f64);
            e.counter("weir_savepoints_completed_total", "Savepoints completed.", &l, c.savepoints as f64);
            if let Some(last) = c.last_completed() {
                e.gauge("weir_checkpoint_last_id", "Id of the newest completed checkpoint.", &l, last.id as f64);
                e.gauge(
                    "weir_checkpoint_last_duration_seconds",
                    "Trigger to metadata of the newest completed checkpoint.",
                    &l,
                    last.duration_ms as f64 / 1000.0,
                );
                e.gauge(
                    "weir_checkpoint_last_size_bytes",
                    "Bytes the newest completed checkpoint uploaded.",
                    &l,
                    last.size_bytes as f64,
                );
                e.gauge(
                    "weir_checkpoint_last_state_bytes",
                    "Size of all state the newest completed checkpoint references.",
                    &l,
                    last.state_bytes as f64,
                );
                e.gauge(
                    "weir_checkpoint_last_alignment_seconds",
                    "Longest barrier alignment of the newest completed checkpoint.",
                    &l,
                    last.alignment_ms as f64 / 1000.0,
                );
            }
        }
        e.finish()
    }

    fn overview(&self) -> v1::ClusterOverviewResponse {
        v1::ClusterOverviewResponse {
            task_managers: self
                .tms
                .values()
                .map(|t| v1::TaskManagerInfo {
                    task_manager_id: t.id.clone(),
                    rpc_address: t.address.clone(),
                    slots_total: t.slots,
                    slots_free: t.free(),
                    last_heartbeat_ms: millis(t.last_heartbeat_wall),
                })
                .collect(),
            jobs_running: self.jobs.values().filter(|j| j.state == JobState::Running).count() as u32,
        }
    }
}
