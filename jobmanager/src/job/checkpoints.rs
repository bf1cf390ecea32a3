//! A job's checkpoint and savepoint transitions: triggers, acknowledgements,
//! completion and failure, and the savepoint queue.

use std::time::{Instant, SystemTime};

use tracing::info;
use weir_types::{CheckpointId, CheckpointMetadata, Failure};

use super::*;
use crate::coordinator::{Acknowledgement, Next, SavepointSpec};

impl Job {
    /// Arms the trigger timer of a running job with checkpoints.
    pub(crate) fn arm_trigger(&mut self, now: Instant) -> Vec<Effect> {
        let Some(c) = &mut self.checkpoints else { return Vec::new() };
        if self.state != JobState::Running || c.armed {
            return Vec::new();
        }
        let Some(at) = c.coordinator.next_trigger_at(now) else { return Vec::new() };
        c.armed = true;
        vec![Effect::ArmTrigger { attempt: self.attempt, at }]
    }

    /// The trigger timer of `attempt` fired at `now`.
    pub(crate) fn checkpoint_due(&mut self, attempt: u32, now: Instant) -> Vec<Effect> {
        if self.attempt != attempt {
            return Vec::new();
        }
        let Some(c) = &mut self.checkpoints else { return Vec::new() };
        c.armed = false;
        // Barriers start at sources and must reach every task still running.
        if self.state != JobState::Running || !self.tasks.ready_for_barriers(&self.plan) {
            return Vec::new();
        }
        if self.savepoints.wants_barriers() {
            return self.try_savepoint(now); // savepoints asked for go first
        }
        let c = self.checkpoints.as_mut().expect("checked");
        match c.coordinator.next_trigger_at(now) {
            Some(at) if at <= now => {}
            Some(_) => return self.arm_trigger(now),
            None => return Vec::new(),
        }
        let (running, finished) = (self.tasks.running(), self.tasks.finished(&self.plan));
        let id = c.coordinator.trigger(attempt, running, None, finished, now, wall_ms(SystemTime::now()));
        tracing::debug!(job_id = %self.id, checkpoint = %id, "triggering checkpoint");
        vec![Effect::Trigger { attempt, id, task_managers: self.tasks.source_task_managers(&self.plan) }]
    }

    /// A subtask acknowledged its part of a checkpoint.
    pub(crate) fn acknowledge(&mut self, ack: Acknowledgement, now: Instant) -> Vec<Effect> {
        let Some(c) = &mut self.checkpoints else { return Vec::new() };
        match c.coordinator.acknowledge(self.attempt, ack, now) {
            Next::Write(meta) => vec![Effect::WriteMetadata(meta)],
            Next::WriteSavepoint { id, spec, trigger_ms, parts } => {
                let meta = savepoint::metadata(&self.plan, &self.id, id, trigger_ms, spec.stop, &parts);
                vec![Effect::WriteSavepoint { id, location: spec.location, meta: Box::new(meta) }]
            }
            Next::Nothing | Next::Failed { .. } => Vec::new(),
        }
    }

    /// Checkpoint `id` failed: a subtask declined it, or its trigger or its
    /// metadata could not be written.
    pub(crate) fn checkpoint_failed(
        &mut self,
        attempt: u32,
        id: CheckpointId,
        failure: Failure,
        now: Instant,
    ) -> Vec<Effect> {
        if attempt != self.attempt {
            return Vec::new();
        }
        let Some(c) = &mut self.checkpoints else { return Vec::new() };
        let next = c.coordinator.fail(id, failure, now);
        self.after_checkpoint_failure(next, now)
    }

    /// The metadata of checkpoint `id` was written (or not).
    pub(crate) fn metadata_written(
        &mut self,
        id: CheckpointId,
        result: Result<CheckpointMetadata, Failure>,
        now: Instant,
    ) -> Vec<Effect> {
        let Some(c) = &mut self.checkpoints else { return Vec::new() };
        let meta = match result {
            Ok(m) => m,
            Err(e) => {
                let next = c.coordinator.fail(id, e.context("writing its metadata failed"), now);
                return self.after_checkpoint_failure(next, now);
            }
        };
        let Some(done) = c.coordinator.written(meta, now) else { return Vec::new() };
        let info = c.coordinator.info(id).cloned().unwrap_or_default();
        info!(job_id = %self.id, checkpoint = %id, duration_ms = info.duration_ms, size_bytes = info.size_bytes, state_bytes = info.state_bytes, alignment_ms = info.alignment_ms, "checkpoint complete");
        if let Some(r) = self.recovery.as_mut().filter(|r| r.running_after.is_some() && r.checkpoint_after.is_none()) {
            r.checkpoint_after = Some(now.saturating_duration_since(r.failed));
        }
        // Sinks commit on this notice.
        let mut effects =
            vec![self.notify(done.id, false), Effect::Discard { checkpoints: done.discard, shared: done.unreferenced }];
        effects.extend(self.arm_trigger(now));
        effects
    }

    pub(super) fn notify(&self, id: CheckpointId, aborted: bool) -> Effect {
        Effect::Notify { attempt: self.attempt, id, aborted, task_managers: self.tasks.task_managers() }
    }

    /// The running checkpoint is given up (it never counts as a failure).
    pub(super) fn abandon_checkpoint(&mut self, reason: &str, now: Instant) -> Vec<Effect> {
        let Some(c) = &mut self.checkpoints else { return Vec::new() };
        let Next::Failed { id, failure, .. } = c.coordinator.abandon(reason, now) else { return Vec::new() };
        info!(job_id = %self.id, checkpoint = %id, reason, "checkpoint abandoned");
        let mut effects = self.answer_failed_savepoints(id, &failure.message);
        effects.push(Effect::Discard { checkpoints: vec![id], shared: Vec::new() });
        effects
    }

    pub(super) fn after_checkpoint_failure(&mut self, next: Next, now: Instant) -> Vec<Effect> {
        let Next::Failed { id, failure, fail_job } = next else { return Vec::new() };
        warn!(job_id = %self.id, checkpoint = %id, class = %failure.class, reason = %failure, "checkpoint failed");
        let mut effects = self.answer_failed_savepoints(id, &failure.message);
        effects.push(Effect::Discard { checkpoints: vec![id], shared: Vec::new() });
        if fail_job {
            let tolerable = self.checkpoints.as_ref().map(|c| c.coordinator.config.tolerable_failures).unwrap_or(0);
            effects.extend(self.fail_or_restart(
                format!("checkpoint {id} failed ({failure}) and more than {tolerable} consecutive checkpoint failures are not tolerated"),
                now,
            ));
        } else {
            effects.extend(self.arm_trigger(now));
        }
        effects
    }

    // ------------------------------------------------------------ savepoints

    /// A savepoint into `location` was asked for (and the job stops with it
    /// if `stop`); the answer comes as [`Effect::Answer`] for `request`.
    pub(crate) fn request_savepoint(
        &mut self,
        request: RequestId,
        location: String,
        stop: bool,
        now: Instant,
    ) -> Result<Vec<Effect>, WrongState> {
        if self.checkpoints.is_none() {
            return Err(WrongState(format!(
                "job {} has no `checkpoints:` section: savepoints are taken like checkpoints and need its state backend",
                self.id
            )));
        }
        if !matches!(self.state, JobState::Running | JobState::Created | JobState::Restarting) {
            return Err(WrongState(format!("job {} is not running ({:?})", self.id, self.state)));
        }
        if self.savepoints.stopping() {
            return Err(WrongState(format!("job {} is already stopping with a savepoint", self.id)));
        }
        self.savepoints.push(request, location, stop);
        Ok(self.try_savepoint(now))
    }

    /// Triggers the oldest waiting savepoint if nothing is in the way.
    pub(super) fn try_savepoint(&mut self, now: Instant) -> Vec<Effect> {
        if self.state != JobState::Running || !self.tasks.ready_for_barriers(&self.plan) {
            return Vec::new(); // tried again when the tasks run
        }
        let Some(c) = &mut self.checkpoints else { return Vec::new() };
        if c.coordinator.pending_id().is_some() {
            return Vec::new(); // tried again when the running checkpoint ends
        }
        let Some(next) = self.savepoints.next() else { return Vec::new() };
        let spec = SavepointSpec { location: next.location.clone(), stop: next.stop };
        let (running, finished) = (self.tasks.running(), self.tasks.finished(&self.plan));
        let id =
            c.coordinator.trigger(self.attempt, running, Some(spec.clone()), finished, now, wall_ms(SystemTime::now()));
        self.savepoints.trigger_next(id);
        info!(job_id = %self.id, checkpoint = %id, location = %spec.location, stop = spec.stop, "triggering savepoint");
        vec![Effect::TriggerSavepoint {
            attempt: self.attempt,
            id,
            location: spec.location,
            stop: spec.stop,
            everyone: self.tasks.task_managers(),
            sources: self.tasks.source_task_managers(&self.plan),
        }]
    }

    /// The metadata of savepoint `id` was written (its state size), or not.
    pub(crate) fn savepoint_written(
        &mut self,
        id: CheckpointId,
        result: Result<u64, Failure>,
        now: Instant,
    ) -> Vec<Effect> {
        let Some(c) = &mut self.checkpoints else { return Vec::new() };
        let state_bytes = match result {
            Ok(b) => b,
            Err(e) => {
                let next = c.coordinator.fail(id, e.context("writing its metadata failed"), now);
                return self.after_checkpoint_failure(next, now);
            }
        };
        let Some(spec) = c.coordinator.savepoint_written(id, state_bytes, now) else { return Vec::new() };
        let took = c.coordinator.info(id).map(|i| i.duration_ms).unwrap_or(0);
        info!(job_id = %self.id, checkpoint = %id, location = %spec.location, state_bytes, duration_ms = took, stop = spec.stop, "savepoint complete");
        let done = SavepointDone { location: spec.location.clone(), checkpoint: id, state_bytes };
        let mut effects: Vec<Effect> = self
            .savepoints
            .take_triggered(id, false)
            .into_iter()
            .map(|r| Effect::Answer { request: r.id, result: Ok(done.clone()) })
            .collect();
        if spec.stop {
            // Sinks commit everything up to the savepoint, then sources stop
            // and the job ends FINISHED with its state in the savepoint.
            effects.push(self.notify(id, false));
        } else {
            effects.extend(self.try_savepoint(now));
            effects.extend(self.arm_trigger(now));
        }
        effects
    }

    /// Answers the requests of savepoint `id`, which failed; a
    /// stop-with-savepoint that failed lets the paused sources resume.
    pub(super) fn answer_failed_savepoints(&mut self, id: CheckpointId, reason: &str) -> Vec<Effect> {
        let failed = self.savepoints.take_triggered(id, true);
        let stop = failed.iter().any(|r| r.stop);
        let mut effects: Vec<Effect> = failed
            .into_iter()
            .map(|r| Effect::Answer {
                request: r.id,
                result: Err(WrongState(format!("savepoint {id} failed: {reason}"))),
            })
            .collect();
        if stop && self.state == JobState::Running {
            effects.push(self.notify(id, true));
        }
        effects
    }

    /// Fails every savepoint request of a job that stops running.
    pub(super) fn drop_savepoints(&mut self, why: &str) -> Vec<Effect> {
        self.savepoints
            .drain()
            .into_iter()
            .map(|r| Effect::Answer { request: r.id, result: Err(WrongState(format!("no savepoint: {why}"))) })
            .collect()
    }
}
