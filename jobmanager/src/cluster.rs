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

use crate::scheduler::{allocate, place, SlotOffer, TaskPlacement};

/// Timing of the job manager.
#[derive(Debug, Clone, Copy)]
pub struct JobManagerOptions {
    /// How often task managers heartbeat.
    pub heartbeat_interval: Duration,
    /// A task manager silent this long is declared lost.
    pub heartbeat_timeout: Duration,
    /// How long a submitted job waits for enough free slots before failing.
    pub slot_wait_timeout: Duration,
}

impl Default for JobManagerOptions {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
            slot_wait_timeout: Duration::from_secs(30),
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
    /// Submit a job.
    Submit(v1::SubmitJobRequest, Reply<String>),
    /// List jobs.
    List(Reply<Vec<v1::JobSummary>>),
    /// Details of a job, optionally once it has ended (long poll up to the duration).
    Get(String, Option<Duration>, Reply<v1::JobDetails>),
    /// Cancel a job.
    Cancel(String, Reply<v1::JobState>),
    /// Cluster overview.
    Overview(Reply<v1::ClusterOverviewResponse>),
    /// A task manager registers.
    Register(v1::RegisterTaskManagerRequest, Reply<v1::RegisterTaskManagerResponse>),
    /// A task manager heartbeats.
    Heartbeat(v1::HeartbeatRequest, Reply<v1::HeartbeatResponse>),
    /// A task changed state.
    TaskState(v1::TaskStateReport),
    /// A deployment RPC failed.
    DeployFailed { job: JobId, attempt: u32, task_manager: String, error: String },
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
}

impl Cluster {
    /// A core and its handle; run it with [`Cluster::run`].
    pub fn new(opts: JobManagerOptions) -> (Cluster, ClusterHandle) {
        let (tx, rx) = mpsc::channel(1024);
        let handle = ClusterHandle { tx: tx.clone() };
        (
            Cluster {
                opts,
                rx,
                tx,
                tms: BTreeMap::new(),
                jobs: BTreeMap::new(),
                order: Vec::new(),
                waiters: Vec::new(),
            },
            handle,
        )
    }

    /// Processes commands and timers until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
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
            Command::Submit(req, reply) => {
                let _ = reply.send(self.submit(req));
            }
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
            Command::DeployFailed { job, attempt, task_manager, error } => {
                if self.jobs.get(&job).is_some_and(|j| j.attempt == attempt && j.state == JobState::Running) {
                    self.fail_job(&job, format!("deploying to task manager {task_manager} failed: {error}"));
                }
            }
        }
    }

    fn submit(&mut self, req: v1::SubmitJobRequest) -> Result<String, ClusterError> {
        let graph = req.graph.ok_or_else(|| ClusterError::InvalidJob("the request has no job graph".into()))?;
        let domain = weir_proto::graph_from_proto(&graph).map_err(|e| ClusterError::InvalidJob(e.to_string()))?;
        let plan = Plan::new(&domain, req.default_parallelism).map_err(|e| ClusterError::InvalidJob(e.to_string()))?;
        let id = JobId::random();
        info!(job_id = %id, name = %domain.name, subtasks = plan.subtask_count(), slots = plan.slots_needed(), "job submitted");
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
        };
        self.jobs.insert(id.clone(), job);
        self.order.push(id.clone());
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
        for p in placements {
            let mut client = self.tms[&p.task_manager].client.clone();
            let req = v1::DeployTaskRequest {
                task: Some(v1::TaskKey {
                    job_id: id.0.clone(),
                    vertex: p.vertex,
                    subtask: p.subtask,
                    attempt: job.attempt,
                }),
                graph: Some(job.graph.clone()),
                placements: wire.clone(),
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
                    self.fail_job(&id, reason);
                }
            }
            v1::TaskState::TaskFinished | v1::TaskState::TaskCanceled | v1::TaskState::TaskFailed => {
                self.maybe_complete(&id);
            }
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
        job.state = JobState::Failed;
        job.failure = Some(reason);
        job.ended = Some(SystemTime::now());
        job.suspect = None;
        self.cancel_tasks(id);
        self.release(id);
    }

    fn cancel(&mut self, raw: &str) -> Result<v1::JobState, ClusterError> {
        let id = JobId(raw.to_string());
        let job = self.jobs.get_mut(&id).ok_or_else(|| ClusterError::UnknownJob(raw.into()))?;
        match job.state {
            JobState::Created => {
                job.state = JobState::Canceled;
                job.ended = Some(SystemTime::now());
            }
            JobState::Running => {
                info!(job_id = %id, "cancelling job");
                job.state = JobState::Cancelling;
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
                    self.fail_job(&id, reason);
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
            self.fail_job(&id, reason);
        }
        self.schedule_waiting();
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
        })
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
