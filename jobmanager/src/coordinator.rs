//! The checkpoint coordinator of one job: when to trigger, which
//! acknowledgements are still missing, when a checkpoint is complete or has
//! failed, and which completed checkpoints to keep.
//!
//! It is a pure state machine: no I/O, no clock. The job manager's core
//! passes the time in, sends the RPCs and writes the metadata, and tells the
//! coordinator what happened. A checkpoint is complete once its metadata is
//! written, which happens only after every subtask acknowledged; only then
//! are tasks notified (sinks commit).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use weir_proto::v1;
use weir_runtime::checkpointing::CheckpointConfig;
use weir_state::CheckpointStorage;
use weir_types::{
    CheckpointId, CheckpointMetadata, ErrorClass, Failure, FileHandle, JobId, TaskSnapshot, METADATA_VERSION,
};

/// Checkpoints kept in a job's history (shown by `weir checkpoints`).
const HISTORY: usize = 64;

/// A savepoint being taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SavepointSpec {
    /// Its directory.
    pub(crate) location: String,
    /// Whether the job stops with it.
    pub(crate) stop: bool,
}

/// A subtask's acknowledgement of a checkpoint, as the coordinator needs it.
#[derive(Debug, Clone)]
pub(crate) struct Acknowledgement {
    /// The checkpoint.
    pub(crate) checkpoint: CheckpointId,
    /// The attempt of the job the subtask belongs to.
    pub(crate) attempt: u32,
    /// (vertex, subtask).
    pub(crate) task: (u32, u32),
    /// Its part of the checkpoint.
    pub(crate) snapshot: TaskSnapshot,
    /// Bytes it uploaded for this checkpoint.
    pub(crate) uploaded_bytes: u64,
    /// Barrier alignment, synchronous and asynchronous parts on the subtask.
    pub(crate) alignment: Duration,
    pub(crate) sync: Duration,
    pub(crate) asynchronous: Duration,
}

struct Pending {
    id: CheckpointId,
    savepoint: Option<SavepointSpec>,
    finished: Vec<(Vec<String>, u32)>,
    attempt: u32,
    started: Instant,
    trigger_ms: i64,
    expected: usize,
    acks: BTreeMap<(u32, u32), TaskSnapshot>,
    uploaded: u64,
    alignment: Duration,
    sync: Duration,
    asynchronous: Duration,
    writing: bool,
}

/// What to do after an event.
#[derive(Debug)]
pub(crate) enum Next {
    /// Nothing.
    Nothing,
    /// Every subtask acknowledged: write this metadata, then report back.
    Write(CheckpointMetadata),
    /// Every subtask of a savepoint acknowledged: write its metadata (built
    /// from these parts), then report back.
    WriteSavepoint {
        /// Checkpoint id of the savepoint.
        id: CheckpointId,
        /// What was asked for.
        spec: SavepointSpec,
        /// When it was triggered (ms since the epoch).
        trigger_ms: i64,
        /// Every subtask's part, by (vertex, subtask).
        parts: Vec<((u32, u32), TaskSnapshot)>,
    },
    /// The checkpoint failed; fail the job over if `fail_job` is set.
    Failed {
        /// Checkpoint id.
        id: CheckpointId,
        /// Why, with its class.
        failure: Failure,
        /// Consecutive failures exceed the tolerance.
        fail_job: bool,
    },
}

/// A completed checkpoint's effects for the cluster to carry out.
#[derive(Debug)]
pub(crate) struct Completed {
    /// Its id.
    pub(crate) id: CheckpointId,
    /// Checkpoints no longer retained (to delete).
    pub(crate) discard: Vec<CheckpointId>,
    /// Shared files no retained checkpoint references any more (to delete).
    pub(crate) unreferenced: Vec<FileHandle>,
}

/// Coordinator of one job.
pub(crate) struct Coordinator {
    /// The job's configuration.
    pub(crate) config: CheckpointConfig,
    job: JobId,
    next_id: CheckpointId,
    pending: Option<Pending>,
    last_trigger: Option<Instant>,
    /// When the first checkpoint of the current deployment is due.
    first_due: Option<Instant>,
    last_end: Option<Instant>,
    failures: u32,
    retained: VecDeque<CheckpointMetadata>,
    history: VecDeque<v1::CheckpointInfo>,
    /// Checkpoints completed since the job started.
    pub(crate) completed: u64,
    /// Checkpoints (and savepoints) failed since the job started.
    pub(crate) failed: u64,
    /// Savepoints completed since the job started.
    pub(crate) savepoints: u64,
    /// Key groups of the job (recorded in every checkpoint's metadata).
    max_parallelism: u32,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("job", &self.job).field("next_id", &self.next_id).finish()
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Coordinator {
    /// A coordinator for `job` with `max_parallelism` key groups, whose ids
    /// continue after `last_id`.
    pub(crate) fn new(job: JobId, config: CheckpointConfig, max_parallelism: u32, last_id: CheckpointId) -> Self {
        Self {
            config,
            job,
            next_id: last_id.next(),
            pending: None,
            last_trigger: None,
            first_due: None,
            last_end: None,
            failures: 0,
            retained: VecDeque::new(),
            history: VecDeque::new(),
            completed: 0,
            failed: 0,
            savepoints: 0,
            max_parallelism,
        }
    }

    /// Starts the schedule of a new deployment of the job (a submission or
    /// a restart). Its first checkpoint is due after a delay between
    /// `min_pause` and `interval` picked by `random`, as in Flink: a
    /// checkpoint at the moment tasks start would hold next to nothing and
    /// compete with their start-up, and random phases keep the checkpoints
    /// of jobs deployed together apart (and away from any fixed phase of the
    /// jobs' own timers, such as watermark intervals). Later ones follow at
    /// the interval.
    pub(crate) fn deployed(&mut self, now: Instant, random: u64) {
        let lo = self.config.min_pause.min(self.config.interval);
        let span = (self.config.interval - lo).as_nanos() as u64;
        let delay = lo + Duration::from_nanos(if span == 0 { 0 } else { random % (span + 1) });
        self.last_trigger = None;
        self.first_due = Some(now + delay);
    }

    /// When the next checkpoint may be triggered (`None`: one is running).
    pub(crate) fn next_trigger_at(&self, now: Instant) -> Option<Instant> {
        if self.pending.is_some() {
            return None;
        }
        let by_interval = self.last_trigger.map_or(self.first_due.unwrap_or(now), |t| t + self.config.interval);
        let by_pause = self.last_end.map_or(now, |t| t + self.config.min_pause);
        Some(by_interval.max(by_pause))
    }

    /// Starts the next checkpoint for `attempt` (a savepoint if `savepoint`
    /// is set) at `now` (`wall_ms` since the epoch), expecting `tasks`
    /// acknowledgements; `finished` names the subtasks that ended before it
    /// (they take no part).
    pub(crate) fn trigger(
        &mut self,
        attempt: u32,
        tasks: usize,
        savepoint: Option<SavepointSpec>,
        finished: Vec<(Vec<String>, u32)>,
        now: Instant,
        wall_ms: i64,
    ) -> CheckpointId {
        let id = self.next_id;
        self.next_id = id.next();
        self.last_trigger = Some(now);
        let is_savepoint = savepoint.is_some();
        self.pending = Some(Pending {
            id,
            savepoint,
            finished,
            attempt,
            started: now,
            trigger_ms: wall_ms,
            expected: tasks,
            acks: BTreeMap::new(),
            uploaded: 0,
            alignment: Duration::ZERO,
            sync: Duration::ZERO,
            asynchronous: Duration::ZERO,
            writing: false,
        });
        self.push_history(v1::CheckpointInfo {
            id: id.0,
            status: v1::CheckpointStatus::InProgress as i32,
            trigger_time_ms: wall_ms,
            tasks: tasks as u32,
            savepoint: is_savepoint,
            ..Default::default()
        });
        id
    }

    fn push_history(&mut self, info: v1::CheckpointInfo) {
        self.history.push_back(info);
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }

    fn history_mut(&mut self, id: CheckpointId) -> Option<&mut v1::CheckpointInfo> {
        self.history.iter_mut().rev().find(|c| c.id == id.0)
    }

    /// A subtask acknowledged at `now`, while the job runs attempt `attempt`.
    pub(crate) fn acknowledge(&mut self, attempt: u32, ack: Acknowledgement, now: Instant) -> Next {
        let Some(p) = self.pending.as_mut() else { return Next::Nothing };
        if p.id != ack.checkpoint || p.attempt != attempt || ack.attempt != attempt {
            return Next::Nothing; // late acknowledgement of an abandoned checkpoint
        }
        let subtask = v1::SubtaskAck {
            vertex: ack.task.0,
            subtask: ack.task.1,
            acked_ms: ms(now.saturating_duration_since(p.started)),
            size_bytes: ack.uploaded_bytes,
            alignment_ms: ms(ack.alignment),
            sync_ms: ms(ack.sync),
            async_ms: ms(ack.asynchronous),
        };
        p.acks.insert(ack.task, ack.snapshot);
        p.uploaded += ack.uploaded_bytes;
        p.alignment = p.alignment.max(ack.alignment);
        p.sync = p.sync.max(ack.sync);
        p.asynchronous = p.asynchronous.max(ack.asynchronous);
        let (acked, uploaded, alignment) = (p.acks.len() as u32, p.uploaded, p.alignment);
        let (sync, asynchronous, since) = (p.sync, p.asynchronous, now.saturating_duration_since(p.started));
        let done = p.acks.len() == p.expected && !p.writing;
        let id = p.id;
        if let Some(h) = self.history_mut(id) {
            h.acknowledged = acked;
            h.size_bytes = uploaded;
            h.alignment_ms = ms(alignment);
            h.sync_ms = ms(sync);
            h.async_ms = ms(asynchronous);
            h.acked_ms = ms(since);
            h.subtask_acks.push(subtask);
        }
        if !done {
            return Next::Nothing;
        }
        let p = self.pending.as_mut().expect("checked");
        p.writing = true;
        if let Some(spec) = p.savepoint.clone() {
            let parts = p.acks.iter().map(|(k, v)| (*k, v.clone())).collect();
            return Next::WriteSavepoint { id: p.id, spec, trigger_ms: p.trigger_ms, parts };
        }
        Next::Write(CheckpointMetadata {
            version: METADATA_VERSION,
            job_id: self.job.clone(),
            checkpoint_id: p.id,
            timestamp_ms: p.trigger_ms,
            tasks: p.acks.values().cloned().collect(),
            finished: p.finished.clone(),
            max_parallelism: self.max_parallelism,
        })
    }

    /// The metadata of the pending checkpoint was written at `now`: it is complete.
    pub(crate) fn written(&mut self, meta: CheckpointMetadata, now: Instant) -> Option<Completed> {
        let p = self.pending.take_if(|p| p.id == meta.checkpoint_id)?;
        let took = ms(now.saturating_duration_since(p.started));
        self.last_end = Some(now);
        self.failures = 0;
        self.completed += 1;
        let state_bytes: u64 = meta.files().map(|f| f.size).sum();
        if let Some(h) = self.history_mut(p.id) {
            h.status = v1::CheckpointStatus::Completed as i32;
            h.duration_ms = took;
            h.state_bytes = state_bytes;
        }
        self.retained.push_back(meta);
        let mut discard = Vec::new();
        let mut dropped = Vec::new();
        while self.retained.len() > self.config.retained as usize {
            let old = self.retained.pop_front().expect("non-empty");
            discard.push(old.checkpoint_id);
            dropped.push(old);
        }
        let live: BTreeSet<&str> = self.retained.iter().flat_map(|m| m.files()).map(|f| f.path.as_str()).collect();
        let unreferenced = dropped
            .iter()
            .flat_map(|m| m.files())
            .filter(|f| CheckpointStorage::is_shared(f) && !live.contains(f.path.as_str()))
            .cloned()
            .collect();
        Some(Completed { id: p.id, discard, unreferenced })
    }

    /// The metadata of the pending savepoint was written at `now`: it is
    /// complete. Savepoints are not retained checkpoints: the job's recovery
    /// and the retention of its checkpoints do not change.
    pub(crate) fn savepoint_written(
        &mut self,
        id: CheckpointId,
        state_bytes: u64,
        now: Instant,
    ) -> Option<SavepointSpec> {
        let p = self.pending.take_if(|p| p.id == id && p.savepoint.is_some())?;
        let took = ms(now.saturating_duration_since(p.started));
        self.last_end = Some(now);
        let spec = p.savepoint.expect("checked");
        self.savepoints += 1;
        if let Some(h) = self.history_mut(id) {
            h.status = v1::CheckpointStatus::Completed as i32;
            h.duration_ms = took;
            h.state_bytes = state_bytes;
            h.location = spec.location.clone();
        }
        Some(spec)
    }

    /// The pending checkpoint failed at `now` (declined, timed out, metadata
    /// not written). Failures of savepoints and failures that are the
    /// user's (a target that cannot be written) never count towards the
    /// tolerance; the others fail the job over once more of them in a row
    /// than the tolerance allows.
    pub(crate) fn fail(&mut self, id: CheckpointId, failure: Failure, now: Instant) -> Next {
        self.end(id, failure, now, true)
    }

    fn end(&mut self, id: CheckpointId, failure: Failure, now: Instant, may_count: bool) -> Next {
        let Some(p) = self.pending.take_if(|p| p.id == id) else { return Next::Nothing };
        self.last_end = Some(now);
        self.failed += 1;
        let counts = may_count && p.savepoint.is_none() && failure.class != ErrorClass::User;
        if counts {
            self.failures += 1;
        }
        if let Some(h) = self.history_mut(id) {
            h.status = v1::CheckpointStatus::CheckpointFailed as i32;
            h.duration_ms = ms(now.saturating_duration_since(p.started));
            h.failure = failure.message.clone();
        }
        let fail_job = counts && self.failures > self.config.tolerable_failures;
        Next::Failed { id, failure, fail_job }
    }

    /// The pending checkpoint if it ran past its timeout at `now`.
    pub(crate) fn timed_out(&self, now: Instant) -> Option<CheckpointId> {
        self.pending.as_ref().filter(|p| now.saturating_duration_since(p.started) > self.config.timeout).map(|p| p.id)
    }

    /// The id of the running checkpoint.
    pub(crate) fn pending_id(&self) -> Option<CheckpointId> {
        self.pending.as_ref().map(|p| p.id)
    }

    /// The running checkpoint is given up (the job fails, restarts or is
    /// cancelled, or a task finished before it completed); it never counts
    /// as a failure of checkpointing. Returns what became of it.
    pub(crate) fn abandon(&mut self, reason: &str, now: Instant) -> Next {
        let Some(id) = self.pending_id() else { return Next::Nothing };
        self.end(id, Failure::new(ErrorClass::Transient, reason), now, false)
    }

    /// Resets the trigger clock (a new attempt starts).
    pub(crate) fn restart(&mut self, restored: Option<&CheckpointMetadata>) {
        self.last_trigger = None;
        self.last_end = None;
        self.failures = 0;
        if let Some(m) = restored {
            self.next_id = self.next_id.max(m.checkpoint_id.next());
            if !self.retained.iter().any(|r| r.checkpoint_id == m.checkpoint_id) {
                self.retained.push_back(m.clone());
            }
        }
    }

    /// Numbers the next checkpoint after `id` (a job restored from a
    /// savepoint goes on from the savepoint's id).
    pub(crate) fn continue_after(&mut self, id: CheckpointId) {
        self.next_id = self.next_id.max(id.next());
    }

    /// The newest completed checkpoint (not savepoint) of the history.
    pub(crate) fn last_completed(&self) -> Option<&v1::CheckpointInfo> {
        self.history.iter().rev().find(|c| c.status == v1::CheckpointStatus::Completed as i32 && !c.savepoint)
    }

    /// Checkpoint history, oldest first.
    pub(crate) fn history(&self) -> Vec<v1::CheckpointInfo> {
        self.history.iter().cloned().collect()
    }

    /// One checkpoint of the history.
    pub(crate) fn info(&self, id: CheckpointId) -> Option<&v1::CheckpointInfo> {
        self.history.iter().rev().find(|c| c.id == id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator(retained: u32, tolerable: u32) -> Coordinator {
        let mut c = CheckpointConfig::every(Duration::from_millis(100));
        c.retained = retained;
        c.tolerable_failures = tolerable;
        Coordinator::new(JobId::new("job"), c, 128, CheckpointId(0))
    }

    fn ack(id: CheckpointId, attempt: u32, vertex: u32, subtask: u32, files: Vec<FileHandle>) -> Acknowledgement {
        Acknowledgement {
            checkpoint: id,
            attempt,
            task: (vertex, subtask),
            snapshot: TaskSnapshot {
                operators: vec!["op".into()],
                subtask,
                files,
                backend: "rocksdb".into(),
                ..Default::default()
            },
            uploaded_bytes: 10,
            alignment: Duration::from_millis(u64::from(subtask)),
            sync: Duration::ZERO,
            asynchronous: Duration::ZERO,
        }
    }

    fn file(path: &str) -> FileHandle {
        FileHandle { path: path.into(), size: 3, crc32: 0 }
    }

    fn declined() -> Failure {
        Failure::new(ErrorClass::Transient, "declined")
    }

    #[test]
    fn completes_only_after_every_acknowledgement_and_retains_shared_files() {
        let now = Instant::now();
        let mut c = coordinator(1, 0);
        let id = c.trigger(1, 2, None, vec![], now, 0);
        assert!(c.next_trigger_at(now).is_none(), "one checkpoint at a time");
        let a = file("job/shared/a.sst");
        assert!(matches!(c.acknowledge(1, ack(id, 1, 0, 0, vec![a.clone()]), now), Next::Nothing));
        assert!(matches!(c.acknowledge(1, ack(id, 2, 0, 1, vec![]), now), Next::Nothing), "another attempt");
        let Next::Write(meta) = c.acknowledge(1, ack(id, 1, 0, 1, vec![file("job/chk-1/x")]), now) else {
            panic!("all acknowledged")
        };
        assert_eq!(meta.tasks.len(), 2);
        assert_eq!(meta.max_parallelism, 128);
        let done = c.written(meta, now).unwrap();
        assert!(done.discard.is_empty());
        let h = c.history();
        assert_eq!(h[0].status, v1::CheckpointStatus::Completed as i32);
        assert_eq!((h[0].size_bytes, h[0].alignment_ms, h[0].acknowledged), (20, 1, 2));

        // Checkpoint 2 still uses a.sst; checkpoint 3 no longer does.
        let id2 = c.trigger(1, 1, None, vec![], now, 0);
        let Next::Write(m2) = c.acknowledge(1, ack(id2, 1, 0, 0, vec![a.clone(), file("job/shared/b.sst")]), now)
        else {
            panic!()
        };
        let done = c.written(m2, now).unwrap();
        assert_eq!(done.discard, vec![CheckpointId(1)]);
        assert!(done.unreferenced.is_empty(), "a.sst is still referenced by checkpoint 2");
        let id3 = c.trigger(1, 1, None, vec![], now, 0);
        let Next::Write(m3) = c.acknowledge(1, ack(id3, 1, 0, 0, vec![file("job/shared/b.sst")]), now) else {
            panic!()
        };
        let done = c.written(m3, now).unwrap();
        assert_eq!(done.discard, vec![CheckpointId(2)]);
        assert_eq!(done.unreferenced, vec![a]);
    }

    #[test]
    fn savepoints_are_not_retained_and_their_failures_are_tolerated() {
        let now = Instant::now();
        let mut c = coordinator(1, 0);
        let spec = SavepointSpec { location: "file:///sp/savepoint-1".into(), stop: false };
        let id = c.trigger(1, 1, Some(spec.clone()), vec![], now, 0);
        let Next::WriteSavepoint { id: got, spec: s, parts, .. } = c.acknowledge(1, ack(id, 1, 0, 0, vec![]), now)
        else {
            panic!("a savepoint's metadata is written by its own path")
        };
        assert_eq!((got, s, parts.len()), (id, spec.clone(), 1));
        assert_eq!(c.savepoint_written(id, 9, now), Some(spec.clone()));
        assert!(c.retained.is_empty(), "a savepoint is not a retained checkpoint");
        assert_eq!(c.history()[0].location, "file:///sp/savepoint-1");
        // A failed savepoint does not fail the job even with no tolerance.
        let id = c.trigger(1, 1, Some(spec), vec![], now, 0);
        assert!(matches!(c.fail(id, declined(), now), Next::Failed { fail_job: false, .. }));
        // And checkpoint ids go on from it.
        assert_eq!(c.trigger(1, 1, None, vec![], now, 0), id.next());
    }

    #[test]
    fn failures_beyond_the_tolerance_fail_the_job_unless_they_are_the_user_s() {
        let now = Instant::now();
        let mut c = coordinator(1, 1);
        let id = c.trigger(1, 3, None, vec![], now, 0);
        assert!(matches!(c.fail(id, declined(), now), Next::Failed { fail_job: false, .. }));
        let id = c.trigger(1, 3, None, vec![], now, 0);
        let user = Failure::new(ErrorClass::User, "the target cannot be written");
        assert!(matches!(c.fail(id, user, now), Next::Failed { fail_job: false, .. }), "the user's: not counted");
        let id = c.trigger(1, 3, None, vec![], now, 0);
        let Next::Failed { fail_job: true, failure, .. } =
            c.fail(id, Failure::new(ErrorClass::Corrupt, "timeout"), now)
        else {
            panic!("the second counted failure in a row exceeds a tolerance of one")
        };
        assert_eq!(failure.class, ErrorClass::Corrupt, "the failure keeps its class");
        assert_eq!(c.history()[2].failure, "timeout");
        // Late acknowledgements of a failed checkpoint change nothing.
        assert!(matches!(c.acknowledge(1, ack(id, 1, 0, 0, vec![]), now), Next::Nothing));
    }

    #[test]
    fn abandoning_never_counts_as_a_failure() {
        let now = Instant::now();
        let mut c = coordinator(1, 0);
        assert!(matches!(c.abandon("nothing running", now), Next::Nothing));
        let id = c.trigger(1, 1, None, vec![], now, 0);
        let Next::Failed { id: got, fail_job: false, .. } = c.abandon("the job is restarting", now) else {
            panic!("abandoning ends the running checkpoint")
        };
        assert_eq!(got, id);
        let id = c.trigger(1, 1, None, vec![], now, 0);
        assert!(matches!(c.fail(id, declined(), now), Next::Failed { fail_job: true, .. }), "the first counted one");
    }

    #[test]
    fn the_first_checkpoint_of_a_deployment_waits_between_min_pause_and_interval() {
        let mut c = coordinator(1, 0);
        c.config.min_pause = Duration::from_millis(20);
        let t0 = Instant::now();
        let firsts: BTreeSet<Instant> = (0..50u64)
            .map(|r| {
                c.deployed(t0, r.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                c.next_trigger_at(t0).unwrap()
            })
            .collect();
        assert!(firsts.iter().all(|&f| f >= t0 + c.config.min_pause && f <= t0 + c.config.interval));
        assert!(firsts.len() > 1, "the delay follows the random draw");
        // After a trigger the interval counts from it.
        c.deployed(t0, 0);
        c.trigger(1, 1, None, vec![], t0, 0);
        assert!(c.next_trigger_at(t0).is_none(), "one at a time");
    }

    #[test]
    fn trigger_respects_interval_and_min_pause() {
        let mut c = coordinator(1, 0);
        c.config.min_pause = Duration::from_millis(500);
        let t0 = Instant::now();
        assert!(c.next_trigger_at(t0).unwrap() <= t0);
        let id = c.trigger(1, 1, None, vec![], t0, 0);
        let t1 = t0 + Duration::from_millis(30);
        c.fail(id, declined(), t1);
        assert_eq!(c.next_trigger_at(t1).unwrap(), t1 + Duration::from_millis(500), "the pause runs from the end");
        assert!(c.timed_out(t1).is_none());
    }

    #[test]
    fn a_timeout_is_reported_once_the_checkpoint_ran_past_it() {
        let mut c = coordinator(1, 0);
        c.config.timeout = Duration::from_secs(10);
        let t0 = Instant::now();
        let id = c.trigger(1, 1, None, vec![], t0, 0);
        assert_eq!(c.timed_out(t0 + Duration::from_secs(10)), None);
        assert_eq!(c.timed_out(t0 + Duration::from_secs(11)), Some(id));
    }
}
