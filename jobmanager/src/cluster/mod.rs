//! The job manager's core: a thin actor over pure state machines. One task
//! owns all cluster state — task manager [`Membership`], every [`Job`] —
//! and is driven by [`Command`]s from the gRPC service and by its own
//! timer. It turns each command into a transition of a state machine and
//! each returned [`Effect`] into I/O ([`effects`]): RPCs to task managers,
//! timers, storage writes, answers. Nothing else mutates that state, so
//! every decision is sequential, and every decision is a unit test of the
//! machine that makes it.

mod command;
mod effects;
mod view;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{info, warn};
use weir_proto::v1;
use weir_proto::v1::task_manager_service_client::TaskManagerServiceClient;
use weir_runtime::operators::Registry;
use weir_runtime::plan::Plan;
use weir_state::{CheckpointStorage, S3Options};
use weir_types::{CheckpointId, JobId};

pub use command::ClusterError;
pub use command::ClusterHandle;
pub(crate) use command::{Command, Reply};

use crate::coordinator::{Acknowledgement, Coordinator};
use crate::job::{Checkpoints, Effect, Job, JobState, RequestId, Settings, TaskReport};
use crate::membership::{Membership, Registration};
use crate::restore::{self, RestorePoint};

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
    /// TLS, roles and tokens: how callers are known, and how task managers
    /// are reached.
    pub security: weir_security::Security,
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
            security: weir_security::Security::default(),
        }
    }
}

/// A random number for decisions that should not line up (first checkpoint
/// delays, savepoint directory names).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

/// The job manager core.
pub(crate) struct Cluster {
    opts: JobManagerOptions,
    rx: mpsc::Receiver<Command>,
    tx: mpsc::Sender<Command>,
    membership: Membership,
    clients: BTreeMap<String, TaskManagerServiceClient<Channel>>,
    jobs: BTreeMap<JobId, Job>,
    order: Vec<JobId>,
    /// Long polls waiting for a job to end.
    waiters: Vec<(JobId, Instant, Reply<v1::JobDetails>)>,
    /// Savepoint requests waiting for their savepoint, by request id.
    answers: HashMap<RequestId, Reply<v1::TriggerSavepointResponse>>,
    next_request: u64,
    /// Slots were given back: jobs waiting for slots get another try.
    reschedule: bool,
    /// Where job records are kept (the default checkpoint storage).
    records: Option<CheckpointStorage>,
    /// The operator kinds jobs may use.
    registry: Arc<Registry>,
}

impl Cluster {
    /// A core planning jobs with the kinds of `registry`, and its handle;
    /// run it with [`Cluster::run`].
    pub(crate) fn new(opts: JobManagerOptions, registry: Arc<Registry>) -> (Cluster, ClusterHandle) {
        let (tx, rx) = mpsc::channel(1024);
        let handle = ClusterHandle { tx: tx.clone() };
        let records = CheckpointStorage::from_uri_with(&opts.checkpoint_storage, &opts.s3)
            .map_err(|e| warn!(error = %e, "job records disabled: the checkpoint storage does not open"))
            .ok();
        let core = Cluster {
            rx,
            tx,
            membership: Membership::default(),
            clients: BTreeMap::new(),
            jobs: BTreeMap::new(),
            order: Vec::new(),
            waiters: Vec::new(),
            answers: HashMap::new(),
            next_request: 0,
            reschedule: false,
            records,
            opts,
            registry,
        };
        (core, handle)
    }

    fn settings(&self) -> Settings {
        Settings { slot_wait_timeout: self.opts.slot_wait_timeout, suspect_wait: self.opts.heartbeat_timeout }
    }

    /// Processes commands and timers until `shutdown`.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
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
            while std::mem::take(&mut self.reschedule) {
                self.schedule_waiting();
            }
            if !self.waiters.is_empty() {
                self.answer_waiters();
            }
        }
        info!("job manager core stopped");
    }

    /// Runs a transition of job `id` and carries out its effects.
    fn with_job(&mut self, id: &JobId, transition: impl FnOnce(&mut Job, Instant) -> Vec<Effect>) {
        let Some(job) = self.jobs.get_mut(id) else { return };
        let effects = transition(job, Instant::now());
        self.apply(id, effects);
    }

    /// Answers long polls whose job ended or whose time is up.
    fn answer_waiters(&mut self) {
        let now = Instant::now();
        let waiters = std::mem::take(&mut self.waiters);
        for (id, deadline, reply) in waiters {
            let ended = self.jobs.get(&id).is_none_or(|j| j.state.is_terminal());
            if ended || deadline <= now || reply.is_closed() {
                let _ = reply.send(self.details(id.as_str()));
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
            Command::Savepoint { job, target, stop, reply, accepted } => {
                self.request_savepoint(job, target, stop, reply, accepted)
            }
            Command::SavepointWritten { job, id, result } => {
                self.with_job(&job, |j, now| j.savepoint_written(id, result, now))
            }
            Command::List(reply) => {
                let _ = reply.send(Ok(self.order.iter().map(|id| self.jobs[id].summary()).collect()));
            }
            Command::Get(id, wait, reply) => {
                let ended = self.jobs.get(&JobId::new(id.clone())).is_none_or(|j| j.state.is_terminal());
                match wait {
                    Some(d) if !ended => self.waiters.push((JobId::new(id), Instant::now() + d, reply)),
                    _ => {
                        let _ = reply.send(self.details(&id));
                    }
                }
            }
            Command::Cancel(raw, reply) => {
                let id = JobId::new(raw.clone());
                let Some(job) = self.jobs.get_mut(&id) else {
                    let _ = reply.send(Err(ClusterError::UnknownJob(raw)));
                    return;
                };
                match job.cancel(Instant::now()) {
                    Ok(effects) => {
                        self.apply(&id, effects);
                        let _ = reply.send(Ok(self.jobs[&id].shown_state().to_proto()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ClusterError::WrongState(e.0)));
                    }
                }
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
                let now = Instant::now();
                let known = self.membership.heartbeat(&req.task_manager_id, req.memory_bytes, now, SystemTime::now());
                if known {
                    for r in req.counters {
                        let (Some(key), Some(counters)) = (r.task, r.counters) else { continue };
                        let Some(job) = self.jobs.get_mut(&JobId::new(key.job_id)) else { continue };
                        job.task_counters((key.vertex, key.subtask), key.attempt, counters, now);
                    }
                }
                let _ = reply.send(Ok(v1::HeartbeatResponse { known }));
            }
            Command::TaskState(r) => {
                let Some(key) = r.task.clone() else { return };
                let report = TaskReport {
                    task: (key.vertex, key.subtask),
                    attempt: key.attempt,
                    state: v1::TaskState::try_from(r.state).unwrap_or(v1::TaskState::TaskFailed),
                    counters: r.counters,
                    failure: weir_proto::failure_from_proto(&r.failure, r.failure_class),
                    exchange: r.exchange_failure,
                };
                let settings = self.settings();
                self.with_job(&JobId::new(key.job_id), |j, now| j.task_state(report, &settings, now));
            }
            Command::DeployFailed { job, attempt, task_manager, error, unreachable } => {
                if unreachable && self.membership.contains(&task_manager) {
                    // Nothing listens at its address any more: the task manager
                    // is gone (its heartbeat would time out soon). Losing it now
                    // keeps the restart from picking its slots again.
                    self.lose_task_manager(&task_manager, &format!("unreachable: {error}"));
                    return;
                }
                let reason = format!("deploying to task manager {task_manager} failed: {error}");
                self.with_job(&job, |j, now| j.deploy_failed(attempt, reason, now));
            }
            Command::Acknowledge(req) => {
                let Some(key) = req.task.clone() else { return };
                let ack = Acknowledgement {
                    checkpoint: CheckpointId(req.checkpoint_id),
                    attempt: key.attempt,
                    task: (key.vertex, key.subtask),
                    snapshot: req.snapshot.as_ref().map(weir_proto::snapshot_from_proto).unwrap_or_default(),
                    uploaded_bytes: req.uploaded_bytes,
                    alignment: Duration::from_millis(req.alignment_ms),
                    sync: Duration::from_millis(req.sync_ms),
                    asynchronous: Duration::from_millis(req.async_ms),
                };
                self.with_job(&JobId::new(key.job_id), |j, now| j.acknowledge(ack, now));
            }
            Command::Decline(req) => {
                let Some(key) = req.task.clone() else { return };
                let failure = weir_proto::failure_from_proto(
                    &format!("subtask {} of vertex {} declined: {}", key.subtask, key.vertex, req.reason),
                    req.error_class,
                );
                let id = CheckpointId(req.checkpoint_id);
                self.with_job(&JobId::new(key.job_id), |j, now| j.checkpoint_failed(key.attempt, id, failure, now));
            }
            Command::CheckpointDue(job, attempt) => self.with_job(&job, |j, now| j.checkpoint_due(attempt, now)),
            Command::TriggerFailed { job, attempt, id, failure, unreachable } => {
                if let Some(tm) = unreachable.filter(|tm| self.membership.contains(tm)) {
                    // As for a deployment: nothing listens at its address, so
                    // the task manager is lost now, once, and the restart that
                    // follows does not pick its slots again.
                    self.lose_task_manager(&tm, &format!("unreachable: {}", failure.message));
                    return;
                }
                let failure = failure.context("triggering failed");
                self.with_job(&job, |j, now| j.checkpoint_failed(attempt, id, failure, now))
            }
            Command::MetadataWritten { job, id, result } => {
                self.with_job(&job, |j, now| j.metadata_written(id, result, now))
            }
            Command::RestartReady { job, attempt, restore } => {
                self.with_job(&job, |j, now| j.restart_ready(attempt, restore, now));
                self.try_schedule(&job);
            }
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
        let plan = Plan::new(&domain, &self.registry, req.default_parallelism)
            .map_err(|e| ClusterError::InvalidJob(e.to_string()))?;
        if let Some(start) = &start {
            if plan.graph.checkpoint.is_none() {
                return Err(ClusterError::InvalidJob(
                    "starting from a savepoint needs a `checkpoints:` section (it names the state backend)".into(),
                ));
            }
            let allow = req.allow_non_restored_state;
            let dropped = match start {
                RestorePoint::Savepoint(sp) => restore::compat::check(&plan, sp.metadata(), sp.uri(), allow),
                RestorePoint::Retained(r) => restore::compat::check_retained(&plan, &r.meta, &r.uri, allow),
                RestorePoint::Checkpoint(_) => Ok(Vec::new()),
            }
            .map_err(ClusterError::InvalidJob)?;
            if !dropped.is_empty() {
                warn!(savepoint = %start.uri(), operators = ?dropped, "state of operators the job no longer has is not restored (--allow-non-restored-state)");
            }
        }
        let id = JobId::new(uuid::Uuid::new_v4().simple().to_string());
        let after = start.as_ref().map_or(CheckpointId(0), RestorePoint::checkpoint_id);
        let checkpoints = match &plan.graph.checkpoint {
            Some(c) => {
                let uri = c.storage.clone().unwrap_or_else(|| self.opts.checkpoint_storage.clone());
                let storage = CheckpointStorage::from_uri_with(&uri, &self.opts.s3)
                    .map_err(|e| ClusterError::InvalidJob(format!("checkpoints.storage: {e}")))?;
                let coordinator = Coordinator::new(id.clone(), c.clone(), plan.graph.max_parallelism, after);
                Some(Checkpoints::new(coordinator, storage))
            }
            None => None,
        };
        if let Some(start) = &start {
            info!(job_id = %id, savepoint = %start.uri(), checkpoint = %after, "starting from a savepoint");
        }
        info!(job_id = %id, name = %domain.name, subtasks = plan.subtask_count(), slots = plan.slots_needed(), checkpoints = checkpoints.is_some(), "job submitted");
        let job = Job::submitted(id.clone(), Arc::new(plan), checkpoints, start, Instant::now(), SystemTime::now());
        self.jobs.insert(id.clone(), job);
        self.order.push(id.clone());
        self.apply(&id, vec![Effect::SaveRecord]);
        self.try_schedule(&id);
        Ok(id.to_string())
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
        let (offers, settings) = (self.membership.offers(), self.settings());
        self.with_job(id, |j, now| j.schedule(&offers, &settings, now, random()));
    }

    fn register(&mut self, req: v1::RegisterTaskManagerRequest) -> v1::RegisterTaskManagerResponse {
        let reply =
            v1::RegisterTaskManagerResponse { heartbeat_interval_ms: self.opts.heartbeat_interval.as_millis() as u64 };
        let channel = match weir_security::lazy_channel(
            &req.rpc_address,
            self.opts.security.tls.as_ref(),
            Duration::from_secs(5),
        ) {
            Ok(c) => c,
            Err(e) => {
                warn!(task_manager = %req.task_manager_id, address = %req.rpc_address, error = %e, "bad task manager address");
                return reply;
            }
        };
        if self.membership.contains(&req.task_manager_id) {
            // A task manager that registers again has lost its tasks.
            self.lose_task_manager(&req.task_manager_id, "it registered again (restarted)");
        }
        let registration = self.membership.register(
            &req.task_manager_id,
            &req.rpc_address,
            req.slots,
            Instant::now(),
            SystemTime::now(),
        );
        debug_assert_eq!(registration, Registration::New, "a known task manager was lost first");
        self.clients.insert(req.task_manager_id.clone(), TaskManagerServiceClient::new(channel));
        info!(task_manager = %req.task_manager_id, address = %req.rpc_address, slots = req.slots, "task manager registered");
        self.reschedule = true;
        reply
    }

    fn lose_task_manager(&mut self, tm: &str, why: &str) {
        let Some(member) = self.membership.remove(tm) else { return };
        self.clients.remove(tm);
        warn!(task_manager = %tm, address = %member.address, why, "task manager lost");
        let affected: Vec<JobId> = self.jobs.keys().cloned().collect();
        for id in affected {
            self.with_job(&id, |j, now| j.task_manager_lost(tm, &member.address, why, now));
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let timeout = self.opts.heartbeat_timeout;
        for tm in self.membership.silent(now, timeout) {
            self.lose_task_manager(&tm, &format!("no heartbeat for {timeout:?}"));
        }
        let ids: Vec<JobId> = self.jobs.keys().cloned().collect();
        for id in ids {
            self.with_job(&id, |j, now| j.tick(now));
        }
        self.reschedule = true;
    }

    fn request_savepoint(
        &mut self,
        raw: String,
        target: String,
        stop: bool,
        reply: Reply<v1::TriggerSavepointResponse>,
        accepted: Option<oneshot::Sender<()>>,
    ) {
        let id = JobId::new(raw.clone());
        if !self.jobs.contains_key(&id) {
            let _ = reply.send(Err(ClusterError::UnknownJob(raw)));
            return;
        }
        let target = match (target.is_empty(), &self.opts.savepoint_dir) {
            (false, _) => target,
            (true, Some(d)) => d.clone(),
            (true, None) => {
                let _ = reply.send(Err(ClusterError::InvalidJob(
                    "no savepoint target: pass one, or set the job manager's savepoint_dir".into(),
                )));
                return;
            }
        };
        if let Err(e) = CheckpointStorage::from_uri_with(&target, &self.opts.s3) {
            let _ = reply.send(Err(ClusterError::InvalidJob(format!("savepoint target: {e}"))));
            return;
        }
        let suffix = format!("{:016x}", random());
        let location = format!("{}/savepoint-{}-{}", target.trim_end_matches('/'), id.short(), &suffix[..8]);
        self.next_request += 1;
        let request = RequestId(self.next_request);
        let job = self.jobs.get_mut(&id).expect("checked above");
        match job.request_savepoint(request, location, stop, Instant::now()) {
            Ok(effects) => {
                self.answers.insert(request, reply);
                if let Some(accepted) = accepted {
                    let _ = accepted.send(());
                }
                self.apply(&id, effects);
            }
            Err(e) => {
                let _ = reply.send(Err(ClusterError::WrongState(e.0)));
            }
        }
    }

    /// Takes over a job a previous job manager was running: it restarts from
    /// its latest complete checkpoint once task managers offer slots.
    fn resume(&mut self, r: v1::JobRecord) {
        let id = JobId::new(r.job_id.clone());
        if self.jobs.contains_key(&id) {
            return;
        }
        let built = (|| -> Result<(Arc<Plan>, Checkpoints), String> {
            let graph = r.graph.as_ref().ok_or("the record has no graph")?;
            let domain = weir_proto::graph_from_proto(graph).map_err(|e| e.to_string())?;
            let plan = Plan::new(&domain, &self.registry, 0).map_err(|e| e.to_string())?;
            let config = plan.graph.checkpoint.clone().ok_or("the job has no checkpoints")?;
            let storage = CheckpointStorage::from_uri_with(&r.storage, &self.opts.s3).map_err(|e| e.to_string())?;
            let coordinator = Coordinator::new(id.clone(), config, plan.graph.max_parallelism, CheckpointId(0));
            Ok((Arc::new(plan), Checkpoints::new(coordinator, storage)))
        })();
        let (plan, checkpoints) = match built {
            Ok(b) => b,
            Err(e) => {
                warn!(job_id = %id, error = %e, "a job record cannot be resumed");
                return;
            }
        };
        info!(job_id = %id, name = %r.name, attempt = r.attempt, "resuming a job of a previous job manager");
        let storage = checkpoints.storage.clone();
        let submitted = SystemTime::UNIX_EPOCH + Duration::from_millis(r.submitted_ms.max(0) as u64);
        let job = Job::resumed(id.clone(), plan, checkpoints, r.attempt, r.restarts, submitted, Instant::now());
        self.jobs.insert(id.clone(), job);
        self.order.push(id.clone());
        let (tx, attempt, s3) = (self.tx.clone(), r.attempt, self.opts.s3.clone());
        tokio::spawn(async move {
            let start =
                if r.savepoint.is_empty() { Ok(None) } else { restore::load_start(&r.savepoint, &s3).await.map(Some) };
            let restore = match start {
                Ok(sp) => restore::find_restore_point(Some(storage), &id, sp).await,
                Err(e) => Err(e),
            };
            let _ = tx.send(Command::RestartReady { job: id, attempt, restore }).await;
        });
    }
}
