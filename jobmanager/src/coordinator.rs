//! The checkpoint coordinator of one job: when to trigger, which
//! acknowledgements are still missing, when a checkpoint is complete or has
//! failed, and which completed checkpoints to keep.
//!
//! It is bookkeeping only: the cluster core sends the RPCs and writes the
//! metadata, and tells the coordinator what happened. A checkpoint is
//! complete once its metadata is written, which happens only after every
//! subtask acknowledged; only then are tasks notified (sinks commit).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weir_proto::v1;
use weir_runtime::checkpointing::CheckpointConfig;
use weir_state::{CheckpointMetadata, CheckpointStorage, FileHandle, TaskSnapshot, METADATA_VERSION};

/// Checkpoints kept in a job's history (shown by `weir checkpoints`).
const HISTORY: usize = 64;

/// A savepoint being taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavepointSpec {
    /// Its directory.
    pub location: String,
    /// Whether the job stops with it.
    pub stop: bool,
}

struct Pending {
    id: u64,
    savepoint: Option<SavepointSpec>,
    finished: Vec<(Vec<String>, u32)>,
    attempt: u32,
    started: Instant,
    trigger_ms: i64,
    expected: usize,
    acks: BTreeMap<(u32, u32), TaskSnapshot>,
    uploaded: u64,
    alignment_ms: u64,
    sync_ms: u64,
    async_ms: u64,
    writing: bool,
}

/// What to do after an event.
#[derive(Debug)]
pub enum Next {
    /// Nothing.
    Nothing,
    /// Every subtask acknowledged: write this metadata, then report back.
    Write(CheckpointMetadata),
    /// Every subtask of a savepoint acknowledged: write its metadata (built
    /// from these parts), then report back.
    WriteSavepoint {
        /// Checkpoint id of the savepoint.
        id: u64,
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
        id: u64,
        /// Why.
        reason: String,
        /// Consecutive failures exceed the tolerance.
        fail_job: bool,
    },
}

/// A completed checkpoint's effects for the cluster to carry out.
#[derive(Debug)]
pub struct Completed {
    /// Its id.
    pub id: u64,
    /// Checkpoints no longer retained (to delete).
    pub discard: Vec<u64>,
    /// Shared files no retained checkpoint references any more (to delete).
    pub unreferenced: Vec<FileHandle>,
}

/// Coordinator of one job.
pub struct Coordinator {
    /// The job's configuration.
    pub config: CheckpointConfig,
    /// Where its checkpoints go.
    pub storage: CheckpointStorage,
    job: String,
    next_id: u64,
    pending: Option<Pending>,
    last_trigger: Option<Instant>,
    /// When the first checkpoint of the current deployment is due.
    first_due: Option<Instant>,
    last_end: Option<Instant>,
    failures: u32,
    retained: VecDeque<CheckpointMetadata>,
    history: VecDeque<v1::CheckpointInfo>,
    /// Checkpoints completed since the job started.
    pub completed: u64,
    /// Checkpoints (and savepoints) failed since the job started.
    pub failed: u64,
    /// Savepoints completed since the job started.
    pub savepoints: u64,
    /// Sum and max of completed checkpoint durations (ms).
    pub durations: (u64, u64),
    /// Key groups of the job (recorded in every checkpoint's metadata).
    pub max_parallelism: u32,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("job", &self.job).field("next_id", &self.next_id).finish()
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Coordinator {
    /// A coordinator for `job`, whose ids continue after `last_id`.
    pub fn new(job: &str, config: CheckpointConfig, storage: CheckpointStorage, last_id: u64) -> Self {
        Self {
            config,
            storage,
            job: job.to_string(),
            next_id: last_id + 1,
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
            durations: (0, 0),
            max_parallelism: 0,
        }
    }

    /// Starts the schedule of a new deployment of the job (a submission or
    /// a restart). Its first checkpoint is due after a random delay between
    /// `min_pause` and `interval`, as in Flink: a checkpoint at the moment
    /// tasks start would hold next to nothing and compete with their
    /// start-up, and random phases keep the checkpoints of jobs deployed
    /// together apart (and away from any fixed phase of the jobs' own timers,
    /// such as watermark intervals). Later ones follow at the interval.
    pub fn deployed(&mut self, now: Instant) {
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let lo = self.config.min_pause.min(self.config.interval);
        let span = (self.config.interval - lo).as_nanos() as u64;
        let delay = lo + Duration::from_nanos(if span == 0 { 0 } else { random % (span + 1) });
        self.last_trigger = None;
        self.first_due = Some(now + delay);
    }

    /// When the next checkpoint may be triggered (`None`: one is running).
    pub fn next_trigger_at(&self, now: Instant) -> Option<Instant> {
        if self.pending.is_some() {
            return None;
        }
        let by_interval = self.last_trigger.map_or(self.first_due.unwrap_or(now), |t| t + self.config.interval);
        let by_pause = self.last_end.map_or(now, |t| t + self.config.min_pause);
        Some(by_interval.max(by_pause))
    }

    /// Starts checkpoint n+1 for `attempt` (a savepoint if `savepoint` is
    /// set), expecting `tasks` acknowledgements; `finished` names the
    /// subtasks that ended before it (they take no part).
    pub fn trigger(
        &mut self,
        attempt: u32,
        tasks: usize,
        savepoint: Option<SavepointSpec>,
        finished: Vec<(Vec<String>, u32)>,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let now = Instant::now();
        self.last_trigger = Some(now);
        let is_savepoint = savepoint.is_some();
        self.pending = Some(Pending {
            id,
            savepoint,
            finished,
            attempt,
            started: now,
            trigger_ms: now_ms(),
            expected: tasks,
            acks: BTreeMap::new(),
            uploaded: 0,
            alignment_ms: 0,
            sync_ms: 0,
            async_ms: 0,
            writing: false,
        });
        self.push_history(v1::CheckpointInfo {
            id,
            status: v1::CheckpointStatus::InProgress as i32,
            trigger_time_ms: now_ms(),
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

    fn history_mut(&mut self, id: u64) -> Option<&mut v1::CheckpointInfo> {
        self.history.iter_mut().rev().find(|c| c.id == id)
    }

    /// A subtask acknowledged.
    pub fn acknowledge(&mut self, attempt: u32, r: &v1::AcknowledgeCheckpointRequest) -> Result<Next, String> {
        let Some(p) = self.pending.as_mut() else { return Ok(Next::Nothing) };
        let key = r.task.as_ref().ok_or("an acknowledgement without a task")?;
        if p.id != r.checkpoint_id || p.attempt != attempt || key.attempt != attempt {
            return Ok(Next::Nothing); // late acknowledgement of an abandoned checkpoint
        }
        let snap: TaskSnapshot = serde_json::from_str(&r.snapshot_json).map_err(|e| {
            format!("the snapshot of subtask {} of vertex {} does not parse: {e}", key.subtask, key.vertex)
        })?;
        p.acks.insert((key.vertex, key.subtask), snap);
        p.uploaded += r.uploaded_bytes;
        p.alignment_ms = p.alignment_ms.max(r.alignment_ms);
        p.sync_ms = p.sync_ms.max(r.sync_ms);
        p.async_ms = p.async_ms.max(r.async_ms);
        let (acked, uploaded, alignment) = (p.acks.len() as u32, p.uploaded, p.alignment_ms);
        let (sync, asynchronous, since) = (p.sync_ms, p.async_ms, p.started.elapsed().as_millis() as u64);
        let done = p.acks.len() == p.expected && !p.writing;
        let id = p.id;
        if let Some(h) = self.history_mut(id) {
            h.acknowledged = acked;
            h.size_bytes = uploaded;
            h.alignment_ms = alignment;
            h.sync_ms = sync;
            h.async_ms = asynchronous;
            h.acked_ms = since;
        }
        if !done {
            return Ok(Next::Nothing);
        }
        let p = self.pending.as_mut().expect("checked");
        p.writing = true;
        if let Some(spec) = p.savepoint.clone() {
            let parts = p.acks.iter().map(|(k, v)| (*k, v.clone())).collect();
            return Ok(Next::WriteSavepoint { id: p.id, spec, trigger_ms: p.trigger_ms, parts });
        }
        Ok(Next::Write(CheckpointMetadata {
            version: METADATA_VERSION,
            job_id: self.job.clone(),
            checkpoint_id: p.id,
            timestamp_ms: p.trigger_ms,
            tasks: p.acks.values().cloned().collect(),
            finished: p.finished.clone(),
            max_parallelism: self.max_parallelism,
        }))
    }

    /// The metadata of the pending checkpoint was written: it is complete.
    pub fn written(&mut self, meta: CheckpointMetadata) -> Option<Completed> {
        let p = self.pending.take_if(|p| p.id == meta.checkpoint_id)?;
        let took = p.started.elapsed().as_millis() as u64;
        self.last_end = Some(Instant::now());
        self.failures = 0;
        self.completed += 1;
        self.durations = (self.durations.0 + took, self.durations.1.max(took));
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

    /// The metadata of the pending savepoint was written: it is complete.
    /// Savepoints are not retained checkpoints: the job's recovery and the
    /// retention of its checkpoints do not change.
    pub fn savepoint_written(&mut self, id: u64, state_bytes: u64) -> Option<SavepointSpec> {
        let p = self.pending.take_if(|p| p.id == id && p.savepoint.is_some())?;
        let took = p.started.elapsed().as_millis() as u64;
        self.last_end = Some(Instant::now());
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

    /// The savepoint being taken, if the pending checkpoint is one.
    pub fn pending_savepoint(&self) -> Option<(u64, &SavepointSpec)> {
        self.pending.as_ref().and_then(|p| p.savepoint.as_ref().map(|s| (p.id, s)))
    }

    /// The pending checkpoint failed (declined, timed out, metadata not
    /// written). A failed savepoint never counts towards the tolerance.
    pub fn fail(&mut self, id: u64, reason: &str, counts: bool) -> Next {
        let Some(p) = self.pending.take_if(|p| p.id == id) else { return Next::Nothing };
        self.last_end = Some(Instant::now());
        self.failed += 1;
        let counts = counts && p.savepoint.is_none();
        if counts {
            self.failures += 1;
        }
        if let Some(h) = self.history_mut(id) {
            h.status = v1::CheckpointStatus::CheckpointFailed as i32;
            h.duration_ms = p.started.elapsed().as_millis() as u64;
            h.failure = reason.to_string();
        }
        Next::Failed {
            id,
            reason: reason.to_string(),
            fail_job: counts && self.failures > self.config.tolerable_failures,
        }
    }

    /// The pending checkpoint if it ran past its timeout.
    pub fn timed_out(&self, now: Instant) -> Option<u64> {
        self.pending.as_ref().filter(|p| now.duration_since(p.started) > self.config.timeout).map(|p| p.id)
    }

    /// The id of the running checkpoint.
    pub fn pending_id(&self) -> Option<u64> {
        self.pending.as_ref().map(|p| p.id)
    }

    /// The job failed or restarts: the running checkpoint is abandoned and
    /// the failure count starts over with the new attempt.
    pub fn abandon(&mut self, reason: &str) -> Option<u64> {
        let id = self.pending_id()?;
        self.fail(id, reason, false);
        Some(id)
    }

    /// Resets the trigger clock (a new attempt starts).
    pub fn restart(&mut self, restored: Option<&CheckpointMetadata>) {
        self.last_trigger = None;
        self.last_end = None;
        self.failures = 0;
        if let Some(m) = restored {
            self.next_id = self.next_id.max(m.checkpoint_id + 1);
            if !self.retained.iter().any(|r| r.checkpoint_id == m.checkpoint_id) {
                self.retained.push_back(m.clone());
            }
        }
    }

    /// Numbers the next checkpoint after `id` (a job restored from a
    /// savepoint goes on from the savepoint's id).
    pub fn continue_after(&mut self, id: u64) {
        self.next_id = self.next_id.max(id + 1);
    }

    /// The newest completed checkpoint (not savepoint) of the history.
    pub fn last_completed(&self) -> Option<&v1::CheckpointInfo> {
        self.history.iter().rev().find(|c| c.status == v1::CheckpointStatus::Completed as i32 && !c.savepoint)
    }

    /// Checkpoint history, oldest first.
    pub fn history(&self) -> Vec<v1::CheckpointInfo> {
        self.history.iter().cloned().collect()
    }

    /// One checkpoint of the history.
    pub fn info(&self, id: u64) -> Option<&v1::CheckpointInfo> {
        self.history.iter().rev().find(|c| c.id == id)
    }

    /// How long the checkpoint timeout is.
    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator(retained: u32, tolerable: u32) -> Coordinator {
        let mut c = CheckpointConfig::every(Duration::from_millis(100));
        c.retained = retained;
        c.tolerable_failures = tolerable;
        Coordinator::new("job", c, CheckpointStorage::from_uri("memory://").unwrap(), 0)
    }

    fn ack(id: u64, vertex: u32, subtask: u32, files: Vec<FileHandle>) -> v1::AcknowledgeCheckpointRequest {
        let snap = TaskSnapshot {
            operators: vec!["op".into()],
            subtask,
            files,
            inline: serde_json::Value::Null,
            backend: "rocksdb".into(),
            local_names: vec![],
            file_operators: vec![],
            parallelism: 0,
        };
        v1::AcknowledgeCheckpointRequest {
            task: Some(v1::TaskKey { job_id: "job".into(), vertex, subtask, attempt: 1 }),
            checkpoint_id: id,
            snapshot_json: serde_json::to_string(&snap).unwrap(),
            uploaded_bytes: 10,
            alignment_ms: subtask as u64,
            ..Default::default()
        }
    }

    fn file(path: &str) -> FileHandle {
        FileHandle { path: path.into(), size: 3, crc32: 0 }
    }

    #[test]
    fn completes_only_after_every_acknowledgement_and_retains_shared_files() {
        let mut c = coordinator(1, 0);
        let id = c.trigger(1, 2, None, vec![]);
        assert!(c.next_trigger_at(Instant::now()).is_none(), "one checkpoint at a time");
        let a = file("job/shared/a.sst");
        assert!(matches!(c.acknowledge(1, &ack(id, 0, 0, vec![a.clone()])).unwrap(), Next::Nothing));
        assert!(matches!(c.acknowledge(2, &ack(id, 0, 1, vec![])).unwrap(), Next::Nothing), "another attempt");
        let Next::Write(meta) = c.acknowledge(1, &ack(id, 0, 1, vec![file("job/chk-1/x")])).unwrap() else {
            panic!("all acknowledged")
        };
        assert_eq!(meta.tasks.len(), 2);
        let done = c.written(meta).unwrap();
        assert!(done.discard.is_empty());
        let h = c.history();
        assert_eq!(h[0].status, v1::CheckpointStatus::Completed as i32);
        assert_eq!((h[0].size_bytes, h[0].alignment_ms, h[0].acknowledged), (20, 1, 2));

        // Checkpoint 2 still uses a.sst; checkpoint 3 no longer does.
        let id2 = c.trigger(1, 1, None, vec![]);
        let Next::Write(m2) = c.acknowledge(1, &ack(id2, 0, 0, vec![a.clone(), file("job/shared/b.sst")])).unwrap()
        else {
            panic!()
        };
        let done = c.written(m2).unwrap();
        assert_eq!(done.discard, vec![1]);
        assert!(done.unreferenced.is_empty(), "a.sst is still referenced by checkpoint 2");
        let id3 = c.trigger(1, 1, None, vec![]);
        let Next::Write(m3) = c.acknowledge(1, &ack(id3, 0, 0, vec![file("job/shared/b.sst")])).unwrap() else {
            panic!()
        };
        let done = c.written(m3).unwrap();
        assert_eq!(done.discard, vec![2]);
        assert_eq!(done.unreferenced, vec![a]);
    }

    #[test]
    fn savepoints_are_not_retained_and_their_failures_are_tolerated() {
        let mut c = coordinator(1, 0);
        let spec = SavepointSpec { location: "file:///sp/savepoint-1".into(), stop: false };
        let id = c.trigger(1, 1, Some(spec.clone()), vec![]);
        assert_eq!(c.pending_savepoint().map(|(i, s)| (i, s.clone())), Some((id, spec.clone())));
        let Next::WriteSavepoint { id: got, spec: s, parts, .. } = c.acknowledge(1, &ack(id, 0, 0, vec![])).unwrap()
        else {
            panic!("a savepoint's metadata is written by its own path")
        };
        assert_eq!((got, s, parts.len()), (id, spec.clone(), 1));
        assert_eq!(c.savepoint_written(id, 9), Some(spec.clone()));
        assert!(c.retained.is_empty(), "a savepoint is not a retained checkpoint");
        assert_eq!(c.history()[0].location, "file:///sp/savepoint-1");
        // A failed savepoint does not fail the job even with no tolerance.
        let id = c.trigger(1, 1, Some(spec), vec![]);
        assert!(matches!(c.fail(id, "declined", true), Next::Failed { fail_job: false, .. }));
        // And checkpoint ids go on from it.
        assert_eq!(c.trigger(1, 1, None, vec![]), id + 1);
    }

    #[test]
    fn failures_beyond_the_tolerance_fail_the_job() {
        let mut c = coordinator(1, 1);
        let id = c.trigger(1, 3, None, vec![]);
        assert!(matches!(c.fail(id, "declined", true), Next::Failed { fail_job: false, .. }));
        let id = c.trigger(1, 3, None, vec![]);
        assert!(matches!(c.fail(id, "timeout", true), Next::Failed { fail_job: true, .. }));
        assert_eq!(c.history()[1].failure, "timeout");
        // Late acknowledgements of a failed checkpoint change nothing.
        assert!(matches!(c.acknowledge(1, &ack(id, 0, 0, vec![])).unwrap(), Next::Nothing));
    }

    #[test]
    fn the_first_checkpoint_of_a_deployment_waits_between_min_pause_and_interval() {
        let mut c = coordinator(1, 0);
        c.config.min_pause = Duration::from_millis(20);
        let t0 = Instant::now();
        let firsts: BTreeSet<Instant> = (0..50)
            .map(|_| {
                c.deployed(t0);
                c.next_trigger_at(t0).unwrap()
            })
            .collect();
        assert!(firsts.iter().all(|&f| f >= t0 + c.config.min_pause && f <= t0 + c.config.interval));
        assert!(firsts.len() > 1, "the delay is random");
        // After a trigger the interval counts from it.
        c.deployed(t0);
        c.trigger(1, 1, None, vec![]);
        assert!(c.next_trigger_at(Instant::now()).is_none(), "one at a time");
    }

    #[test]
    fn trigger_respects_interval_and_min_pause() {
        let mut c = coordinator(1, 0);
        c.config.min_pause = Duration::from_millis(500);
        let t0 = Instant::now();
        assert!(c.next_trigger_at(t0).unwrap() <= t0);
        let id = c.trigger(1, 1, None, vec![]);
        c.fail(id, "x", false);
        let next = c.next_trigger_at(Instant::now()).unwrap();
        assert!(next >= t0 + Duration::from_millis(500), "the pause runs from the end of the last checkpoint");
    }
}
