//! One job's lifecycle as a pure state machine: scheduling, task reports,
//! failures and restarts, cancellation, checkpoints and savepoints.
//!
//! ```text
//! CREATED ──slots──▶ RUNNING ──every task finished──▶ FINISHED
//!    ▲                  │ ├──cancel──▶ CANCELLING ──tasks ended──▶ CANCELED
//!    │                  │ └──failure, no restart left──▶ FAILED
//!    └──restore found── RESTARTING ◀──failure, restart strategy allows──┘
//! ```
//!
//! Every transition takes what happened (and the time), changes the job and
//! returns the [`Effect`]s to carry out — RPCs, timers, storage writes,
//! answers — without doing any of them. The job manager's core
//! ([`crate::cluster`]) is the only caller: it turns messages into transitions
//! and effects into I/O.

mod checkpoints;
mod savepoints;
mod tasks;
#[cfg(test)]
mod tests;
mod view;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};
use weir_proto::v1;
use weir_runtime::checkpointing::RestartHistory;
use weir_runtime::plan::Plan;
use weir_state::savepoint::SavepointMetadata;
use weir_state::CheckpointStorage;
use weir_types::{CheckpointId, CheckpointMetadata, ErrorClass, Failure, FileHandle, JobId};

pub(crate) use savepoints::RequestId;
use savepoints::SavepointQueue;
pub(crate) use tasks::{terminal, Tasks};

use crate::coordinator::Coordinator;
use crate::restore::{savepoint, RestorePoint};
use crate::scheduler::{allocate, place, SlotOffer, TaskPlacement};

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobState {
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
    /// Whether the job has ended.
    pub(crate) fn is_terminal(self) -> bool {
        matches!(self, JobState::Finished | JobState::Failed | JobState::Canceled)
    }

    /// Every state, for metrics.
    pub(crate) const ALL: [JobState; 7] = [
        JobState::Created,
        JobState::Running,
        JobState::Restarting,
        JobState::Cancelling,
        JobState::Finished,
        JobState::Failed,
        JobState::Canceled,
    ];

    /// The wire form.
    pub(crate) fn to_proto(self) -> v1::JobState {
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

/// Why a job fails or restarts, and where it happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cause {
    /// What happened.
    pub(crate) message: String,
    /// The subtask that failed (`uid -> uid (2/4)`), if one did.
    pub(crate) task: String,
    /// The task manager it happened on (or that was lost), if known.
    pub(crate) task_manager: String,
}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Cause { message, ..Default::default() }
    }
}

/// How long a job took to recover from a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recovery {
    /// When the failure was noticed.
    pub(crate) failed: Instant,
    /// The same, on the wall clock.
    pub(crate) failed_wall: SystemTime,
    /// Until every task of the new attempt ran.
    pub(crate) running_after: Option<Duration>,
    /// Until the first checkpoint after that completed.
    pub(crate) checkpoint_after: Option<Duration>,
}

impl From<Instant> for Recovery {
    fn from(failed: Instant) -> Self {
        Recovery { failed, failed_wall: SystemTime::now(), running_after: None, checkpoint_after: None }
    }
}

impl Recovery {
    /// The wire form.
    pub(crate) fn to_proto(self) -> v1::Recovery {
        let ms = |d: Duration| d.as_millis() as u64;
        v1::Recovery {
            failed_ms: wall_ms(self.failed_wall),
            running_after_ms: self.running_after.map(ms),
            checkpoint_after_ms: self.checkpoint_after.map(ms),
        }
    }
}

/// How many failures a job's exception history keeps.
const EXCEPTIONS_KEPT: usize = 32;

/// A request that does not fit the job's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WrongState(pub(crate) String);

/// A savepoint that completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SavepointDone {
    /// Its directory.
    pub(crate) location: String,
    /// Its checkpoint id.
    pub(crate) checkpoint: CheckpointId,
    /// Size of its state files.
    pub(crate) state_bytes: u64,
}

/// What the core must do after a transition, in order.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Hold one slot on each of these task managers (one entry per slot).
    Allocate(Vec<String>),
    /// Give back every slot of the job (and try to schedule waiting jobs).
    Release,
    /// Deploy these subtasks of `attempt`.
    Deploy { attempt: u32, placements: Vec<TaskPlacement> },
    /// Cancel the tasks of `attempt` on these task managers.
    CancelTasks { attempt: u32, task_managers: Vec<String> },
    /// Report back at `at` that a checkpoint of `attempt` is due.
    ArmTrigger { attempt: u32, at: Instant },
    /// Sources of `attempt` on these task managers emit barrier `id`.
    Trigger { attempt: u32, id: CheckpointId, task_managers: Vec<String> },
    /// Announce savepoint `id` (written under `location`) to every task
    /// manager of the job, then trigger the sources.
    TriggerSavepoint {
        attempt: u32,
        id: CheckpointId,
        location: String,
        stop: bool,
        everyone: Vec<String>,
        sources: Vec<String>,
    },
    /// Write the metadata of a complete checkpoint, then report back.
    WriteMetadata(CheckpointMetadata),
    /// Write a savepoint's metadata into its directory, then report back.
    WriteSavepoint { id: CheckpointId, location: String, meta: Box<SavepointMetadata> },
    /// Tell the tasks of `attempt` that checkpoint `id` completed (sinks
    /// commit) or was aborted (sources paused by a stop resume).
    Notify { attempt: u32, id: CheckpointId, aborted: bool, task_managers: Vec<String> },
    /// Delete these checkpoints and shared files (no retained checkpoint needs them).
    Discard { checkpoints: Vec<CheckpointId>, shared: Vec<FileHandle> },
    /// After `delay`, look up what attempt `attempt + 1` restores from and report back.
    Restart { attempt: u32, delay: Duration },
    /// Write (or replace) the job's record, so a new job manager resumes it.
    SaveRecord,
    /// The job ended: delete its record, and sweep its checkpoint storage of
    /// files no complete checkpoint needs.
    Ended,
    /// Answer a savepoint request.
    Answer { request: RequestId, result: Result<SavepointDone, WrongState> },
}

/// A task's report, as the job needs it.
#[derive(Debug, Clone)]
pub(crate) struct TaskReport {
    /// (vertex, subtask).
    pub(crate) task: (u32, u32),
    /// The attempt it belongs to.
    pub(crate) attempt: u32,
    /// Its new state.
    pub(crate) state: v1::TaskState,
    /// Its counters, if it sent them.
    pub(crate) counters: Option<v1::TaskCounters>,
    /// Why it failed (empty message unless it did).
    pub(crate) failure: Failure,
    /// The failure came from the data plane (often the echo of a lost peer).
    pub(crate) exchange: bool,
}

/// Timing the job's transitions need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// How long a job waits for free slots before it fails.
    pub(crate) slot_wait_timeout: Duration,
    /// How long a data-plane failure waits for a lost task manager to explain it.
    pub(crate) suspect_wait: Duration,
}

/// A job's checkpointing: its coordinator and storage.
pub(crate) struct Checkpoints {
    /// Checkpoint bookkeeping.
    pub(crate) coordinator: Coordinator,
    /// Where its checkpoints go.
    pub(crate) storage: CheckpointStorage,
    /// A trigger timer is armed.
    armed: bool,
}

impl Checkpoints {
    /// Checkpointing of a job into `storage`.
    pub(crate) fn new(coordinator: Coordinator, storage: CheckpointStorage) -> Self {
        Self { coordinator, storage, armed: false }
    }
}

/// One job.
pub(crate) struct Job {
    /// Its id.
    pub(crate) id: JobId,
    /// Its name.
    pub(crate) name: String,
    /// The planned graph, as deployed and recorded.
    pub(crate) graph: v1::JobGraph,
    /// Its plan.
    pub(crate) plan: Arc<Plan>,
    /// Where it is in its lifecycle.
    pub(crate) state: JobState,
    /// The execution attempt (1 + restarts, continued by a resumed job).
    pub(crate) attempt: u32,
    /// When it was submitted.
    pub(crate) submitted: SystemTime,
    /// Since when the current attempt waits for slots.
    waiting_since: Instant,
    /// When it ended.
    pub(crate) ended: Option<SystemTime>,
    /// The subtasks of the current attempt.
    pub(crate) tasks: Tasks,
    /// Why it failed (or why it last restarted).
    pub(crate) failure: Option<String>,
    /// A data-plane failure waiting, until the deadline, for a lost task
    /// manager to explain it.
    suspect: Option<(Cause, Instant)>,
    /// Its failures, oldest first (the last [`EXCEPTIONS_KEPT`]).
    pub(crate) exceptions: std::collections::VecDeque<v1::JobException>,
    /// Checkpointing, if the job has it.
    pub(crate) checkpoints: Option<Checkpoints>,
    /// Restarts so far.
    pub(crate) restarts: u32,
    /// What the restart strategy remembers of the failures.
    history: RestartHistory,
    /// The latest recovery, if the job had one.
    pub(crate) recovery: Option<Recovery>,
    /// What the current attempt restores from.
    pub(crate) restore: Option<RestorePoint>,
    /// The savepoint (or retained checkpoint) the job started from.
    pub(crate) start: Option<RestorePoint>,
    /// Savepoints asked for.
    savepoints: SavepointQueue,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("id", &self.id).field("state", &self.state).field("attempt", &self.attempt).finish()
    }
}

fn wall_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Job {
    /// A job accepted at `now`, waiting for slots. `start` is the savepoint
    /// (or retained checkpoint) it starts from.
    pub(crate) fn submitted(
        id: JobId,
        plan: Arc<Plan>,
        checkpoints: Option<Checkpoints>,
        start: Option<RestorePoint>,
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        Job {
            id,
            name: plan.graph.name.clone(),
            graph: weir_proto::graph_to_proto(&plan.graph),
            plan,
            state: JobState::Created,
            attempt: 1,
            submitted: wall,
            waiting_since: now,
            ended: None,
            tasks: Tasks::default(),
            failure: None,
            suspect: None,
            exceptions: Default::default(),
            checkpoints,
            restarts: 0,
            history: RestartHistory::default(),
            recovery: None,
            restore: start.clone(),
            start,
            savepoints: SavepointQueue::default(),
        }
    }

    /// A job a previous job manager was running (from its record): it
    /// restarts from its latest checkpoint, above attempt `attempt`.
    pub(crate) fn resumed(
        id: JobId,
        plan: Arc<Plan>,
        checkpoints: Checkpoints,
        attempt: u32,
        restarts: u32,
        submitted: SystemTime,
        now: Instant,
    ) -> Self {
        let mut job = Self::submitted(id, plan, Some(checkpoints), None, now, submitted);
        job.state = JobState::Restarting;
        job.attempt = attempt;
        job.restarts = restarts;
        job.history = RestartHistory::after(restarts);
        job.recovery = Some(Recovery::from(now));
        job
    }

    /// Places the job on free slots if it waits for them; fails it if it
    /// waited longer than allowed. `random` spreads first checkpoints.
    pub(crate) fn schedule(&mut self, offers: &[SlotOffer], s: &Settings, now: Instant, random: u64) -> Vec<Effect> {
        if self.state != JobState::Created {
            return Vec::new();
        }
        let needed = self.plan.slots_needed();
        let Some(slots) = allocate(offers, needed) else {
            if now.saturating_duration_since(self.waiting_since) < s.slot_wait_timeout {
                return Vec::new();
            }
            let free: u32 = offers.iter().map(|o| o.free).sum();
            let reason = format!(
                "not enough task slots: the job needs {needed}, {free} are free on {} task manager(s) after waiting {:?}",
                offers.len(),
                s.slot_wait_timeout
            );
            return self.fail(reason, now);
        };
        let placements = place(&self.plan, &slots);
        self.tasks = Tasks::deploying(&self.plan, &placements);
        self.state = JobState::Running;
        if let Some(c) = &mut self.checkpoints {
            c.coordinator.deployed(now, random);
        }
        info!(job_id = %self.id, attempt = self.attempt, task_managers = ?self.tasks.task_managers(), "deploying job");
        vec![Effect::Allocate(slots), Effect::Deploy { attempt: self.attempt, placements }]
    }

    /// A running task's live counters (from its task manager's heartbeat):
    /// kept unless they belong to another attempt or the task has ended
    /// (its final report has the final counters).
    pub(crate) fn task_counters(&mut self, task: (u32, u32), attempt: u32, counters: v1::TaskCounters, now: Instant) {
        if attempt != self.attempt {
            return;
        }
        if let Some(t) = self.tasks.0.get_mut(&task).filter(|t| !terminal(t.state)) {
            t.update(counters, now);
        }
    }

    /// A task reported its state at `now`.
    pub(crate) fn task_state(&mut self, r: TaskReport, s: &Settings, now: Instant) -> Vec<Effect> {
        if r.attempt != self.attempt {
            return Vec::new();
        }
        let Some(task) = self.tasks.0.get_mut(&r.task) else { return Vec::new() };
        if terminal(task.state) {
            return Vec::new();
        }
        task.state = r.state;
        if let Some(c) = r.counters {
            task.update(c, now);
        } else if terminal(r.state) {
            task.rates = Default::default();
        }
        task.failure = r.failure.message.clone();
        let subtask = format!("{} ({}/{})", task.vertex_name, r.task.1 + 1, task.parallelism);
        let where_ = format!("{subtask} on task manager {}", task.task_manager);
        let cause = |message| Cause { message, task: subtask.clone(), task_manager: task.task_manager.clone() };
        match r.state {
            v1::TaskState::TaskFailed if self.state == JobState::Running => {
                let cause = cause(format!("{where_} failed: {}", r.failure));
                if r.exchange {
                    self.suspect.get_or_insert((cause, now + s.suspect_wait));
                    Vec::new()
                } else {
                    self.fail_or_restart(cause, now)
                }
            }
            // Only the job manager cancels tasks of a running job; a task
            // that ends so anyway (its task manager dropped it) is lost.
            v1::TaskState::TaskCanceled if self.state == JobState::Running => {
                let cause = cause(format!("{where_} was cancelled by its task manager"));
                self.fail_or_restart(cause, now)
            }
            v1::TaskState::TaskFinished | v1::TaskState::TaskCanceled | v1::TaskState::TaskFailed => {
                let mut effects = Vec::new();
                if r.state == v1::TaskState::TaskFinished {
                    // A finished task takes no more barriers: a checkpoint
                    // waiting for it cannot complete; later ones go on
                    // without it while other tasks run.
                    effects.extend(self.abandon_checkpoint("a task finished before the checkpoint completed", now));
                }
                effects.extend(self.maybe_complete());
                effects.extend(self.arm_trigger(now));
                effects
            }
            v1::TaskState::TaskRunning => {
                if self.tasks.started() {
                    if let Some(r) = self.recovery.as_mut().filter(|r| r.running_after.is_none()) {
                        r.running_after = Some(now.saturating_duration_since(r.failed));
                        info!(job_id = %self.id, attempt = self.attempt, after = ?r.running_after.unwrap_or_default(), "running again after a failure");
                    }
                }
                self.arm_trigger(now)
            }
            _ => Vec::new(),
        }
    }

    /// Moves a job whose tasks are all done to its final state.
    fn maybe_complete(&mut self) -> Vec<Effect> {
        if !self.tasks.all_terminal() {
            return Vec::new();
        }
        let next = match self.state {
            JobState::Running if self.tasks.0.values().all(|t| t.state == v1::TaskState::TaskFinished) => {
                JobState::Finished
            }
            JobState::Cancelling => JobState::Canceled,
            _ => return Vec::new(),
        };
        self.state = next;
        self.ended = Some(SystemTime::now());
        let records = self.tasks.sum(|c| c.sink_records);
        info!(job_id = %self.id, state = ?next, sink_records = records, "job ended");
        let mut effects = self.drop_savepoints("the job ended");
        effects.extend([Effect::Ended, Effect::Release]);
        effects
    }

    /// Keeps `cause` in the job's exception history.
    fn remember(&mut self, cause: Cause, restarted: bool) -> String {
        if self.exceptions.len() == EXCEPTIONS_KEPT {
            self.exceptions.pop_front();
        }
        self.exceptions.push_back(v1::JobException {
            time_ms: wall_ms(SystemTime::now()),
            attempt: self.attempt,
            message: cause.message.clone(),
            task: cause.task,
            task_manager_id: cause.task_manager,
            restarted,
        });
        cause.message
    }

    /// The job fails for good.
    pub(crate) fn fail(&mut self, cause: impl Into<Cause>, now: Instant) -> Vec<Effect> {
        if self.state.is_terminal() {
            return Vec::new();
        }
        let reason = self.remember(cause.into(), false);
        warn!(job_id = %self.id, reason = %reason, "job failed");
        let mut effects = self.abandon_checkpoint("the job failed", now);
        effects.extend(self.drop_savepoints("the job failed"));
        self.state = JobState::Failed;
        self.failure = Some(reason);
        self.ended = Some(SystemTime::now());
        self.suspect = None;
        effects.push(self.cancel_tasks());
        effects.extend([Effect::Ended, Effect::Release]);
        effects
    }

    /// The user cancels the job.
    pub(crate) fn cancel(&mut self, now: Instant) -> Result<Vec<Effect>, WrongState> {
        match self.state {
            JobState::Created | JobState::Restarting => {
                self.state = JobState::Canceled;
                self.ended = Some(SystemTime::now());
                let mut effects = self.drop_savepoints("the job is cancelled");
                effects.push(Effect::Ended);
                Ok(effects)
            }
            JobState::Running => {
                info!(job_id = %self.id, "cancelling job");
                let mut effects = self.abandon_checkpoint("the job is cancelled", now);
                self.state = JobState::Cancelling;
                effects.extend(self.drop_savepoints("the job is cancelled"));
                effects.push(self.cancel_tasks());
                effects.extend(self.maybe_complete());
                Ok(effects)
            }
            JobState::Cancelling => Ok(Vec::new()),
            s => Err(WrongState(format!("job {} has already ended ({s:?})", self.id))),
        }
    }

    /// Task manager `tm` (at `address`) was lost: its tasks are gone.
    pub(crate) fn task_manager_lost(&mut self, tm: &str, address: &str, why: &str, now: Instant) -> Vec<Effect> {
        if self.state.is_terminal() || !self.tasks.0.values().any(|t| t.task_manager == tm) {
            return Vec::new();
        }
        for t in self.tasks.0.values_mut().filter(|t| t.task_manager == tm && !terminal(t.state)) {
            t.state = v1::TaskState::TaskFailed;
            t.failure = format!("task manager lost: {why}");
        }
        match self.state {
            JobState::Running => {
                let message = format!("task manager {tm} at {address} was lost: {why}");
                self.fail_or_restart(Cause { message, task: String::new(), task_manager: tm.to_string() }, now)
            }
            JobState::Cancelling => self.maybe_complete(),
            _ => Vec::new(),
        }
    }

    /// Periodic checks at `now`: a suspected data-plane failure that no lost
    /// task manager explained, a checkpoint past its timeout.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Effect> {
        if let Some((cause, deadline)) = &self.suspect {
            if *deadline <= now && self.state == JobState::Running {
                let cause = cause.clone();
                return self.fail_or_restart(cause, now);
            }
        }
        let Some(c) = &mut self.checkpoints else { return Vec::new() };
        let Some(id) = c.coordinator.timed_out(now) else { return Vec::new() };
        let failure = Failure::new(
            ErrorClass::Transient,
            format!("not complete after {:?} (timeout)", c.coordinator.config.timeout),
        );
        let next = c.coordinator.fail(id, failure, now);
        self.after_checkpoint_failure(next, now)
    }

    /// Deploying a task of `attempt` failed.
    pub(crate) fn deploy_failed(&mut self, attempt: u32, reason: String, now: Instant) -> Vec<Effect> {
        if attempt != self.attempt || self.state != JobState::Running {
            return Vec::new();
        }
        self.fail_or_restart(reason, now)
    }

    /// A failure at `now` as the restart strategy sees it: the wait before
    /// the restart, or `None` if the job must fail for good.
    fn restart_delay(&mut self, now: Instant) -> Option<Duration> {
        let strategy = &self.checkpoints.as_ref()?.coordinator.config.restart;
        strategy.on_failure(&mut self.history, now)
    }

    /// Restarts the job per its restart strategy, or fails it.
    fn fail_or_restart(&mut self, cause: impl Into<Cause>, now: Instant) -> Vec<Effect> {
        let mut cause = cause.into();
        if self.state != JobState::Running {
            return self.fail(cause, now);
        }
        let Some(delay) = self.restart_delay(now) else {
            if self.restarts > 0 {
                cause.message = format!("{} (after {} restarts)", cause.message, self.restarts);
            }
            return self.fail(cause, now);
        };
        let reason = self.remember(cause, true);
        self.restarts += 1;
        // A failure before the previous one was recovered from is part of that recovery.
        if self.recovery.is_none_or(|r| r.running_after.is_some()) {
            self.recovery = Some(Recovery::from(now));
        }
        warn!(job_id = %self.id, attempt = self.attempt, restart = self.restarts, delay = ?delay, reason = %reason, "job failed; restarting from the latest complete checkpoint");
        let mut effects = self.abandon_checkpoint("the job is restarting", now);
        self.failure = Some(reason);
        effects.extend(self.drop_savepoints("the job failed and is restarting"));
        self.suspect = None;
        self.state = JobState::Restarting;
        effects.push(self.cancel_tasks());
        self.tasks = Tasks::default();
        effects.extend([Effect::Release, Effect::Restart { attempt: self.attempt, delay }]);
        effects
    }

    /// A restart's delay passed and its restore point was looked up.
    pub(crate) fn restart_ready(
        &mut self,
        attempt: u32,
        restore: Result<Option<RestorePoint>, Failure>,
        now: Instant,
    ) -> Vec<Effect> {
        if self.state != JobState::Restarting || self.attempt != attempt {
            return Vec::new();
        }
        let restore = match restore {
            Ok(r) => r,
            Err(e) => {
                // The lookup is part of the restart: it consumes an attempt of the strategy.
                let reason = format!("reading the latest checkpoint failed ({} error): {e}", e.class);
                return match self.restart_delay(now) {
                    Some(delay) => {
                        let reason = self.remember(reason.into(), true);
                        self.restarts += 1;
                        warn!(job_id = %self.id, restart = self.restarts, delay = ?delay, reason = %reason, "restart delayed");
                        self.failure = Some(reason);
                        vec![Effect::Restart { attempt, delay }]
                    }
                    None => self.fail(reason, now),
                };
            }
        };
        self.attempt += 1;
        match &restore {
            Some(RestorePoint::Checkpoint(m)) => {
                info!(job_id = %self.id, attempt = self.attempt, checkpoint = %m.checkpoint_id, "restarting from checkpoint")
            }
            Some(start @ (RestorePoint::Savepoint(_) | RestorePoint::Retained(_))) => {
                info!(job_id = %self.id, attempt = self.attempt, savepoint = %start.uri(), "restarting from the savepoint the job started from (no checkpoint yet)");
                self.start = Some(start.clone());
            }
            None => {
                info!(job_id = %self.id, attempt = self.attempt, "restarting without a checkpoint (none complete yet)")
            }
        }
        if let Some(c) = &mut self.checkpoints {
            match &restore {
                Some(RestorePoint::Checkpoint(m)) => c.coordinator.restart(Some(m)),
                Some(start) => {
                    c.coordinator.restart(None);
                    c.coordinator.continue_after(start.checkpoint_id());
                }
                None => c.coordinator.restart(None),
            }
            c.armed = false;
        }
        self.restore = restore;
        self.state = JobState::Created;
        self.waiting_since = now;
        vec![Effect::SaveRecord]
    }

    fn cancel_tasks(&self) -> Effect {
        Effect::CancelTasks { attempt: self.attempt, task_managers: self.tasks.task_managers() }
    }
}
