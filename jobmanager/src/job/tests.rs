//! The job's transitions, one by one, without I/O.

use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use weir_runtime::builder::JobBuilder;
use weir_runtime::checkpointing::{CheckpointConfig, RestartStrategy};
use weir_runtime::operators::Registry;
use weir_types::TaskSnapshot;

use super::*;
use crate::coordinator::Acknowledgement;
use crate::scheduler::SlotOffer;

fn plan(checkpoints: Option<CheckpointConfig>) -> Arc<Plan> {
    let mut b = JobBuilder::new("t");
    b.default_parallelism(2);
    b.operator("gen", "datagen", serde_json::json!({"events": 10})).disable_chaining();
    b.operator("out", "discard", serde_json::json!({}));
    b.rebalance("gen", "out");
    if let Some(c) = checkpoints {
        b.checkpoints(c);
    }
    Arc::new(Plan::new(&b.build(), &Registry::builtins(), 0).unwrap())
}

fn checkpointed(restart: RestartStrategy) -> CheckpointConfig {
    let mut c = CheckpointConfig::every(Duration::from_secs(1));
    c.restart = restart;
    c
}

fn job(checkpoints: Option<CheckpointConfig>, now: Instant) -> Job {
    let plan = plan(checkpoints);
    let cps = plan.graph.checkpoint.clone().map(|c| {
        let id = JobId::new("j");
        Checkpoints::new(
            Coordinator::new(id, c, plan.graph.max_parallelism, CheckpointId(0)),
            CheckpointStorage::from_uri("memory://").unwrap(),
        )
    });
    Job::submitted(JobId::new("j"), plan, cps, None, now, SystemTime::now())
}

const SETTINGS: Settings =
    Settings { slot_wait_timeout: Duration::from_secs(30), suspect_wait: Duration::from_secs(5) };

fn offers(free: &[(&str, u32)]) -> Vec<SlotOffer> {
    free.iter().map(|(tm, n)| SlotOffer { task_manager: tm.to_string(), free: *n }).collect()
}

fn report(j: &Job, task: (u32, u32), state: v1::TaskState) -> TaskReport {
    TaskReport {
        task,
        attempt: j.attempt,
        state,
        counters: None,
        failure: Failure::new(ErrorClass::Transient, ""),
        exchange: false,
    }
}

fn failed(j: &Job, task: (u32, u32), why: &str, exchange: bool) -> TaskReport {
    TaskReport {
        failure: Failure::new(ErrorClass::Transient, why),
        exchange,
        ..report(j, task, v1::TaskState::TaskFailed)
    }
}

/// Schedules the job on two task managers and reports every task running.
fn running(j: &mut Job, now: Instant) -> Vec<Effect> {
    let mut effects = j.schedule(&offers(&[("a", 1), ("b", 1)]), &SETTINGS, now, 0);
    let keys: Vec<(u32, u32)> = j.tasks.0.keys().copied().collect();
    for k in keys {
        effects.extend(j.task_state(report(j, k, v1::TaskState::TaskRunning), &SETTINGS, now));
    }
    effects
}

fn names(effects: &[Effect]) -> Vec<&'static str> {
    effects
        .iter()
        .map(|e| match e {
            Effect::Allocate(_) => "allocate",
            Effect::Release => "release",
            Effect::Deploy { .. } => "deploy",
            Effect::CancelTasks { .. } => "cancel",
            Effect::ArmTrigger { .. } => "arm",
            Effect::Trigger { .. } => "trigger",
            Effect::TriggerSavepoint { .. } => "trigger-savepoint",
            Effect::WriteMetadata(_) => "write-metadata",
            Effect::WriteSavepoint { .. } => "write-savepoint",
            Effect::Notify { aborted: false, .. } => "notify",
            Effect::Notify { aborted: true, .. } => "notify-aborted",
            Effect::Discard { .. } => "discard",
            Effect::Restart { .. } => "restart",
            Effect::SaveRecord => "save-record",
            Effect::Ended => "ended",
            Effect::Answer { result: Ok(_), .. } => "answer-ok",
            Effect::Answer { result: Err(_), .. } => "answer-err",
        })
        .collect()
}

fn ack(j: &Job, id: CheckpointId, task: (u32, u32)) -> Acknowledgement {
    Acknowledgement {
        checkpoint: id,
        attempt: j.attempt,
        task,
        snapshot: TaskSnapshot { subtask: task.1, ..Default::default() },
        uploaded_bytes: 0,
        alignment: Duration::ZERO,
        sync: Duration::ZERO,
        asynchronous: Duration::ZERO,
    }
}

#[test]
fn a_job_waits_for_slots_then_deploys_every_subtask() {
    let now = Instant::now();
    let mut j = job(None, now);
    assert!(j.schedule(&offers(&[("a", 1)]), &SETTINGS, now, 0).is_empty(), "two slots needed");
    assert_eq!(j.state, JobState::Created);
    let effects = j.schedule(&offers(&[("a", 1), ("b", 1)]), &SETTINGS, now, 0);
    assert_eq!(names(&effects), ["allocate", "deploy"]);
    let Effect::Deploy { placements, .. } = &effects[1] else { unreachable!() };
    assert_eq!(placements.len(), 4, "two vertices of parallelism 2");
    assert_eq!(j.state, JobState::Running);
    assert!(j.schedule(&offers(&[("a", 9)]), &SETTINGS, now, 0).is_empty(), "scheduled once");
}

#[test]
fn a_job_that_waits_too_long_for_slots_fails() {
    let now = Instant::now();
    let mut j = job(None, now);
    let later = now + SETTINGS.slot_wait_timeout;
    let effects = j.schedule(&offers(&[("a", 1)]), &SETTINGS, later, 0);
    assert_eq!(j.state, JobState::Failed);
    assert!(j.failure.as_deref().unwrap().contains("needs 2, 1 are free"), "{:?}", j.failure);
    assert_eq!(names(&effects), ["cancel", "ended", "release"]);
}

#[test]
fn every_task_finishing_finishes_the_job() {
    let now = Instant::now();
    let mut j = job(None, now);
    running(&mut j, now);
    let keys: Vec<(u32, u32)> = j.tasks.0.keys().copied().collect();
    for (i, k) in keys.iter().enumerate() {
        let effects = j.task_state(report(&j, *k, v1::TaskState::TaskFinished), &SETTINGS, now);
        if i + 1 < keys.len() {
            assert!(effects.is_empty() && j.state == JobState::Running);
        } else {
            assert_eq!(names(&effects), ["ended", "release"]);
        }
    }
    assert_eq!(j.state, JobState::Finished);
    assert!(j.ended.is_some());
}

#[test]
fn reports_of_another_attempt_or_of_ended_tasks_change_nothing() {
    let now = Instant::now();
    let mut j = job(None, now);
    running(&mut j, now);
    let mut old = failed(&j, (0, 0), "boom", false);
    old.attempt = 0;
    assert!(j.task_state(old, &SETTINGS, now).is_empty());
    assert_eq!(j.state, JobState::Running);
}

#[test]
fn heartbeat_counters_update_running_tasks_of_the_current_attempt_only() {
    let now = Instant::now();
    let mut j = job(None, now);
    running(&mut j, now);
    let live = |bad| v1::TaskCounters { records_in: 10, records_out: 10, bad_records: bad, ..Default::default() };
    j.task_counters((0, 0), j.attempt, live(3), now);
    assert_eq!(j.tasks.0[&(0, 0)].counters.bad_records, 3, "a running task's counters show while it runs");
    j.task_counters((0, 0), j.attempt + 1, live(9), now);
    assert_eq!(j.tasks.0[&(0, 0)].counters.bad_records, 3, "another attempt's counters are ignored");
    let mut done = report(&j, (0, 1), v1::TaskState::TaskFinished);
    done.counters = Some(live(5));
    j.task_state(done, &SETTINGS, now);
    j.task_counters((0, 1), j.attempt, live(1), now);
    assert_eq!(j.tasks.0[&(0, 1)].counters.bad_records, 5, "an ended task keeps its final counters");
    assert_eq!(j.details().bad_records, 8);
}

#[test]
fn rates_and_backpressure_come_from_the_last_two_reports_far_enough_apart() {
    let now = Instant::now();
    let mut j = job(None, now);
    running(&mut j, now);
    let sample = |rows, waited_ms: u64| v1::TaskCounters {
        records_in: rows,
        records_out: rows * 2,
        backpressure_ns: waited_ms * 1_000_000,
        watermark_ms: Some(1_000),
        ..Default::default()
    };
    j.task_counters((0, 0), j.attempt, sample(100, 0), now);
    let t = &j.details().tasks[0];
    assert_eq!((t.records_in_per_second, t.backpressure), (0.0, 0.0), "one report gives no rate");
    let later = now + Duration::from_secs(2);
    j.task_counters((0, 0), j.attempt, sample(1_100, 500), later);
    let t = &j.details().tasks[0];
    assert_eq!((t.records_in_per_second, t.records_out_per_second), (500.0, 1_000.0));
    assert_eq!(t.backpressure, 0.25, "0.5 s of 2 s spent waiting to send");
    assert_eq!(t.watermark_ms, Some(1_000));
    j.task_counters((0, 0), j.attempt, sample(1_200, 500), later + Duration::from_millis(10));
    let t = &j.details().tasks[0];
    assert_eq!(t.records_in_per_second, 500.0, "a report right after another keeps the rates");
    assert_eq!(t.records_in, 1_200, "but its counters show");
    let mut done = report(&j, (0, 0), v1::TaskState::TaskFinished);
    done.counters = Some(sample(1_300, 500));
    j.task_state(done, &SETTINGS, later + Duration::from_secs(1));
    assert_eq!(j.details().tasks[0].records_in_per_second, 0.0, "an ended task moves nothing");
}

#[test]
fn a_task_failure_without_checkpoints_fails_the_job() {
    let now = Instant::now();
    let mut j = job(None, now);
    running(&mut j, now);
    let effects = j.task_state(failed(&j, (1, 0), "division by zero", false), &SETTINGS, now);
    assert_eq!(j.state, JobState::Failed);
    assert!(j.failure.as_deref().unwrap().contains("out (1/2) on task manager a failed: division by zero"));
    assert_eq!(names(&effects), ["cancel", "ended", "release"]);
}

#[test]
fn a_task_failure_with_a_restart_strategy_restarts_from_the_latest_checkpoint() {
    let now = Instant::now();
    let mut j =
        job(Some(checkpointed(RestartStrategy::FixedDelay { attempts: 1, delay: Duration::from_millis(5) })), now);
    running(&mut j, now);
    let effects = j.task_state(failed(&j, (0, 1), "boom", false), &SETTINGS, now);
    assert_eq!(names(&effects), ["cancel", "release", "restart"]);
    assert_eq!((j.state, j.restarts, j.attempt), (JobState::Restarting, 1, 1));
    assert!(j.tasks.0.is_empty());
    // A stale restart notice changes nothing; the right one makes attempt 2 wait for slots.
    assert!(j.restart_ready(7, Ok(None), now).is_empty());
    assert_eq!(names(&j.restart_ready(1, Ok(None), now)), ["save-record"]);
    assert_eq!((j.state, j.attempt), (JobState::Created, 2));
    running(&mut j, now);
    // The strategy allowed one restart: the next failure is final.
    j.task_state(failed(&j, (0, 0), "again", false), &SETTINGS, now);
    assert_eq!(j.state, JobState::Failed);
    assert!(j.failure.as_deref().unwrap().ends_with("(after 1 restarts)"), "{:?}", j.failure);
}

/// A job whose every attempt fails while its tasks restore their state
/// shows RESTARTING from the first failure until it fails for good, never
/// RUNNING; an attempt whose tasks all restored shows RUNNING again.
#[test]
fn a_job_that_fails_in_every_restore_never_shows_running() {
    let now = Instant::now();
    let mut j = job(Some(checkpointed(RestartStrategy::FixedDelay { attempts: 2, delay: Duration::ZERO })), now);
    running(&mut j, now);
    assert_eq!(j.shown_state(), JobState::Running);
    let mut shown = Vec::new();
    for _ in 0..3 {
        j.task_state(failed(&j, (1, 0), "restoring: no such file", false), &SETTINGS, now);
        shown.push(j.shown_state());
        if j.state.is_terminal() {
            break;
        }
        j.restart_ready(j.attempt, Ok(None), now);
        shown.push(j.shown_state());
        j.schedule(&offers(&[("a", 1), ("b", 1)]), &SETTINGS, now, 0);
        shown.push(j.shown_state());
        for k in j.tasks.0.keys().copied().collect::<Vec<_>>() {
            j.task_state(report(&j, k, v1::TaskState::TaskInitializing), &SETTINGS, now);
        }
        shown.push(j.shown_state());
    }
    assert!(!shown.contains(&JobState::Running), "{shown:?}");
    assert_eq!(shown.last(), Some(&JobState::Failed));
    assert_eq!(j.summary().state(), v1::JobState::Failed);
    // Had the last attempt restored, it would have shown as running.
    let mut k = job(Some(checkpointed(RestartStrategy::FixedDelay { attempts: 1, delay: Duration::ZERO })), now);
    running(&mut k, now);
    k.task_state(failed(&k, (1, 0), "boom", false), &SETTINGS, now);
    k.restart_ready(k.attempt, Ok(None), now);
    k.schedule(&offers(&[("a", 1), ("b", 1)]), &SETTINGS, now, 0);
    assert_eq!((k.state, k.summary().state()), (JobState::Running, v1::JobState::Restarting));
    running(&mut k, now);
    assert_eq!(k.summary().state(), v1::JobState::Running);
}

/// The restart strategy sees when failures happen: with failure_rate, a job
/// failing now and then keeps restarting, one failing often fails.
#[test]
fn failure_rate_restarts_rare_failures_and_fails_a_burst() {
    let t0 = Instant::now();
    let rate =
        RestartStrategy::FailureRate { max_failures: 2, interval: Duration::from_secs(60), delay: Duration::ZERO };
    let mut j = job(Some(checkpointed(rate)), t0);
    for minute in 0..5 {
        let now = t0 + Duration::from_secs(60 * minute);
        running(&mut j, now);
        j.task_state(failed(&j, (1, 0), "rare", false), &SETTINGS, now);
        assert_eq!(j.state, JobState::Restarting, "failure in minute {minute}");
        j.restart_ready(j.attempt, Ok(None), now);
    }
    for s in [1, 2, 3] {
        let now = t0 + Duration::from_secs(300 + s);
        running(&mut j, now);
        j.task_state(failed(&j, (1, 0), "burst", false), &SETTINGS, now);
        j.restart_ready(j.attempt, Ok(None), now);
    }
    assert_eq!(j.state, JobState::Failed);
    assert_eq!(j.restarts, 7);
}

#[test]
fn failures_are_kept_with_where_they_happened_and_what_the_job_did() {
    let now = Instant::now();
    let mut j =
        job(Some(checkpointed(RestartStrategy::FixedDelay { attempts: 1, delay: Duration::from_millis(5) })), now);
    running(&mut j, now);
    j.task_state(failed(&j, (0, 1), "division by zero", false), &SETTINGS, now);
    j.restart_ready(1, Ok(None), now);
    running(&mut j, now);
    j.task_manager_lost("b", "http://b:6124", "no heartbeat for 5s", now);
    let e = &j.details().exceptions;
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!((e[0].attempt, e[0].restarted, e[0].task.as_str()), (1, true, "gen (2/2)"));
    assert!(e[0].message.ends_with("failed: division by zero"), "{}", e[0].message);
    assert!(!e[0].task_manager_id.is_empty());
    assert_eq!((e[1].attempt, e[1].restarted, e[1].task_manager_id.as_str()), (2, false, "b"));
    assert!(e[1].message.contains("task manager b at http://b:6124 was lost"), "{}", e[1].message);
    assert_eq!(j.state, JobState::Failed);
}

#[test]
fn the_exception_history_keeps_the_newest_failures() {
    let now = Instant::now();
    let attempts = EXCEPTIONS_KEPT as u32 + 5;
    let mut j = job(Some(checkpointed(RestartStrategy::FixedDelay { attempts, delay: Duration::ZERO })), now);
    for _ in 0..attempts {
        running(&mut j, now);
        j.task_state(failed(&j, (1, 0), "flaky", false), &SETTINGS, now);
        j.restart_ready(j.attempt, Ok(None), now);
    }
    let e = &j.details().exceptions;
    assert_eq!(e.len(), EXCEPTIONS_KEPT);
    assert_eq!(e.last().unwrap().attempt, attempts, "the newest is kept");
    assert_eq!(e[0].attempt, attempts - EXCEPTIONS_KEPT as u32 + 1, "the oldest are dropped");
}

#[test]
fn a_failed_lookup_of_the_restore_point_uses_up_a_restart() {
    let now = Instant::now();
    let mut j = job(Some(checkpointed(RestartStrategy::FixedDelay { attempts: 2, delay: Duration::ZERO })), now);
    running(&mut j, now);
    j.task_state(failed(&j, (0, 0), "boom", false), &SETTINGS, now);
    let storage_down = Failure::new(ErrorClass::Transient, "connection refused");
    assert_eq!(names(&j.restart_ready(1, Err(storage_down.clone()), now)), ["restart"]);
    assert_eq!((j.state, j.restarts), (JobState::Restarting, 2));
    assert!(j.failure.as_deref().unwrap().contains("transient error"));
    j.restart_ready(1, Err(storage_down), now);
    assert_eq!(j.state, JobState::Failed, "no restart left");
}

#[test]
fn a_data_plane_failure_waits_for_a_lost_task_manager_to_explain_it() {
    let now = Instant::now();
    let mut j = job(Some(checkpointed(RestartStrategy::FixedDelay { attempts: 3, delay: Duration::ZERO })), now);
    running(&mut j, now);
    assert!(j.task_state(failed(&j, (1, 1), "channel closed", true), &SETTINGS, now).is_empty());
    assert_eq!(j.state, JobState::Running, "suspected, not yet failed");
    assert!(j.tick(now + Duration::from_secs(4)).is_empty());
    // The loss of task manager b explains it: the restart names the loss.
    let effects = j.task_manager_lost("b", "http://b", "no heartbeat for 5s", now + Duration::from_secs(4));
    assert_eq!(names(&effects), ["cancel", "release", "restart"]);
    assert!(j.failure.as_deref().unwrap().contains("task manager b at http://b was lost"), "{:?}", j.failure);
    assert!(j.tick(now + Duration::from_secs(60)).is_empty(), "the suspicion is gone with the restart");
}

#[test]
fn an_unexplained_data_plane_failure_restarts_after_the_wait() {
    let now = Instant::now();
    let mut j = job(Some(checkpointed(RestartStrategy::FixedDelay { attempts: 3, delay: Duration::ZERO })), now);
    running(&mut j, now);
    j.task_state(failed(&j, (1, 1), "channel closed", true), &SETTINGS, now);
    let effects = j.tick(now + SETTINGS.suspect_wait);
    assert_eq!(names(&effects), ["cancel", "release", "restart"]);
    assert!(j.failure.as_deref().unwrap().contains("channel closed"));
}

#[test]
fn cancelling_follows_the_state() {
    let now = Instant::now();
    let mut waiting = job(None, now);
    assert_eq!(names(&waiting.cancel(now).unwrap()), ["ended"]);
    assert_eq!(waiting.state, JobState::Canceled);
    assert!(waiting.cancel(now).unwrap_err().0.contains("already ended"));

    let mut j = job(None, now);
    running(&mut j, now);
    assert_eq!(names(&j.cancel(now).unwrap()), ["cancel"]);
    assert_eq!(j.state, JobState::Cancelling);
    assert!(j.cancel(now).unwrap().is_empty(), "cancelling twice is fine");
    let keys: Vec<(u32, u32)> = j.tasks.0.keys().copied().collect();
    let mut last = Vec::new();
    for k in keys {
        last = j.task_state(report(&j, k, v1::TaskState::TaskCanceled), &SETTINGS, now);
    }
    assert_eq!(names(&last), ["ended", "release"]);
    assert_eq!(j.state, JobState::Canceled);
}

#[test]
fn a_lost_task_manager_ends_a_cancelling_job_s_tasks_on_it() {
    let now = Instant::now();
    let mut j = job(None, now);
    running(&mut j, now);
    j.cancel(now).unwrap();
    for k in [(0, 0), (1, 0)] {
        j.task_state(report(&j, k, v1::TaskState::TaskCanceled), &SETTINGS, now);
    }
    let effects = j.task_manager_lost("b", "http://b", "gone", now);
    assert_eq!(names(&effects), ["ended", "release"]);
    assert_eq!(j.state, JobState::Canceled);
    assert!(j.task_manager_lost("b", "http://b", "gone", now).is_empty(), "ended jobs ignore losses");
}

#[test]
fn a_checkpoint_is_triggered_at_sources_completed_and_committed() {
    let now = Instant::now();
    let mut j = job(Some(checkpointed(RestartStrategy::None)), now);
    let effects = running(&mut j, now);
    assert!(names(&effects).contains(&"arm"), "{:?}", names(&effects));
    assert!(j.arm_trigger(now).is_empty(), "armed once");
    let due = now + Duration::from_secs(1);
    let effects = j.checkpoint_due(j.attempt, due);
    let [Effect::Trigger { id, task_managers, .. }] = &effects[..] else { panic!("{:?}", names(&effects)) };
    assert_eq!(task_managers, &["a".to_string(), "b".to_string()], "sources run on both");
    let id = *id;
    let keys: Vec<(u32, u32)> = j.tasks.0.keys().copied().collect();
    let mut last = Vec::new();
    for k in keys {
        last = j.acknowledge(ack(&j, id, k), due);
    }
    let [Effect::WriteMetadata(meta)] = &last[..] else { panic!("{:?}", names(&last)) };
    let effects = j.metadata_written(id, Ok(meta.clone()), due);
    assert_eq!(names(&effects), ["notify", "discard", "arm"]);
    assert_eq!(j.details().checkpoints[0].status, v1::CheckpointStatus::Completed as i32);
}

/// A recovery is timed from the failure: until every task of the new
/// attempt runs, and until the first checkpoint after that. A failure
/// during a recovery belongs to it.
#[test]
fn a_recovery_is_timed_until_tasks_run_and_until_the_next_checkpoint() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut j = job(Some(checkpointed(RestartStrategy::FixedDelay { attempts: 3, delay: Duration::ZERO })), t0);
    running(&mut j, t0);
    assert!(j.details().recovery.is_none(), "no failure yet");
    j.task_state(failed(&j, (1, 0), "boom", false), &SETTINGS, at(1000));
    j.restart_ready(j.attempt, Ok(None), at(1100));
    j.schedule(&offers(&[("a", 1), ("b", 1)]), &SETTINGS, at(1200), 0);
    // Failing again while restoring: still the same recovery.
    j.task_state(failed(&j, (0, 0), "restore failed", false), &SETTINGS, at(1300));
    j.restart_ready(j.attempt, Ok(None), at(1400));
    j.schedule(&offers(&[("a", 1), ("b", 1)]), &SETTINGS, at(1500), 0);
    let keys: Vec<(u32, u32)> = j.tasks.0.keys().copied().collect();
    let (last, others) = keys.split_last().unwrap();
    for k in others {
        j.task_state(report(&j, *k, v1::TaskState::TaskRunning), &SETTINGS, at(1600));
    }
    j.task_state(report(&j, *last, v1::TaskState::TaskInitializing), &SETTINGS, at(1600));
    assert_eq!(j.details().recovery.unwrap().running_after_ms, None, "one task still restoring");
    j.task_state(report(&j, *last, v1::TaskState::TaskRunning), &SETTINGS, at(1700));
    let r = j.details().recovery.unwrap();
    assert_eq!((r.running_after_ms, r.checkpoint_after_ms), (Some(700), None));
    let effects = j.checkpoint_due(j.attempt, at(2000));
    let Some(Effect::Trigger { id, .. }) = effects.into_iter().next() else { panic!("a trigger") };
    let mut last = Vec::new();
    for k in keys {
        last = j.acknowledge(ack(&j, id, k), at(2100));
    }
    let [Effect::WriteMetadata(meta)] = &last[..] else { panic!("{:?}", names(&last)) };
    j.metadata_written(id, Ok(meta.clone()), at(2200));
    let r = j.details().recovery.unwrap();
    assert_eq!((r.running_after_ms, r.checkpoint_after_ms), (Some(700), Some(1200)));
}

#[test]
fn a_failed_checkpoint_beyond_the_tolerance_restarts_the_job() {
    let now = Instant::now();
    let mut j = job(Some(checkpointed(RestartStrategy::FixedDelay { attempts: 1, delay: Duration::ZERO })), now);
    running(&mut j, now);
    let due = now + Duration::from_secs(1);
    let Effect::Trigger { id, .. } = j.checkpoint_due(1, due).remove(0) else { panic!() };
    let declined = Failure::new(ErrorClass::Transient, "subtask 0 declined: disk full");
    let effects = j.checkpoint_failed(1, id, declined, due);
    assert_eq!(names(&effects), ["discard", "cancel", "release", "restart"]);
    assert!(j.failure.as_deref().unwrap().contains("disk full"));
}

#[test]
fn savepoints_wait_for_running_tasks_and_answer_their_request() {
    let now = Instant::now();
    let mut j = job(Some(checkpointed(RestartStrategy::None)), now);
    let waiting = j.request_savepoint(RequestId(1), "file:///sp/a".into(), false, now).unwrap();
    assert!(waiting.is_empty(), "no task runs yet");
    let effects = running(&mut j, now);
    assert!(!names(&effects).contains(&"trigger-savepoint"), "triggered by the next trigger tick");
    let effects = j.checkpoint_due(1, now + Duration::from_secs(1));
    let [Effect::TriggerSavepoint { id, everyone, .. }] = &effects[..] else { panic!("{:?}", names(&effects)) };
    assert_eq!(everyone.len(), 2);
    let id = *id;
    let keys: Vec<(u32, u32)> = j.tasks.0.keys().copied().collect();
    let mut last = Vec::new();
    for k in keys {
        last = j.acknowledge(ack(&j, id, k), now);
    }
    assert_eq!(names(&last), ["write-savepoint"]);
    let effects = j.savepoint_written(id, Ok(42), now);
    let Effect::Answer { request, result: Ok(done) } = &effects[0] else { panic!("{:?}", names(&effects)) };
    assert_eq!((*request, done.state_bytes, done.location.as_str()), (RequestId(1), 42, "file:///sp/a"));
}

#[test]
fn a_failed_stop_with_savepoint_resumes_the_sources_and_a_second_stop_is_refused() {
    let now = Instant::now();
    let mut j = job(Some(checkpointed(RestartStrategy::None)), now);
    running(&mut j, now);
    let effects = j.request_savepoint(RequestId(1), "file:///sp/a".into(), true, now).unwrap();
    let [Effect::TriggerSavepoint { id, stop: true, .. }] = &effects[..] else { panic!("{:?}", names(&effects)) };
    let id = *id;
    assert!(j
        .request_savepoint(RequestId(2), "file:///sp/b".into(), true, now)
        .unwrap_err()
        .0
        .contains("already stopping"));
    let effects = j.checkpoint_failed(1, id, Failure::new(ErrorClass::User, "target not writable"), now);
    assert_eq!(names(&effects), ["answer-err", "notify-aborted", "discard"], "the trigger timer is still armed");
    assert_eq!(j.state, JobState::Running, "a failed savepoint never fails the job");
}

#[test]
fn savepoint_requests_are_answered_when_the_job_stops_running() {
    let now = Instant::now();
    let mut j = job(Some(checkpointed(RestartStrategy::None)), now);
    j.request_savepoint(RequestId(1), "file:///sp/a".into(), false, now).unwrap();
    assert_eq!(names(&j.cancel(now).unwrap()), ["answer-err", "ended"]);
    let mut no_checkpoints = job(None, now);
    assert!(no_checkpoints
        .request_savepoint(RequestId(2), "x".into(), false, now)
        .unwrap_err()
        .0
        .contains("no `checkpoints:`"));
}

#[test]
fn a_finished_task_abandons_the_running_checkpoint() {
    let now = Instant::now();
    let mut j = job(Some(checkpointed(RestartStrategy::None)), now);
    running(&mut j, now);
    let Effect::Trigger { id, .. } = j.checkpoint_due(1, now + Duration::from_secs(1)).remove(0) else { panic!() };
    let effects = j.task_state(report(&j, (0, 0), v1::TaskState::TaskFinished), &SETTINGS, now);
    assert_eq!(names(&effects), ["discard", "arm"]);
    assert!(j.acknowledge(ack(&j, id, (0, 1)), now).is_empty(), "late acknowledgements change nothing");
}

proptest! {
    /// Whatever tasks report, in whatever order, a job never leaves a final
    /// state, and once every task ended it is in one (or restarting).
    #[test]
    fn final_states_are_final(events in proptest::collection::vec((0u32..2, 0u32..2, 0u8..4), 1..40)) {
        let now = Instant::now();
        let mut j = job(Some(checkpointed(RestartStrategy::None)), now);
        running(&mut j, now);
        let mut ended = None;
        for (v, s, what) in events {
            let state = match what {
                0 => v1::TaskState::TaskRunning,
                1 => v1::TaskState::TaskFinished,
                2 => v1::TaskState::TaskCanceled,
                _ => v1::TaskState::TaskFailed,
            };
            let r = TaskReport { failure: Failure::new(ErrorClass::Transient, "x"), ..report(&j, (v, s), state) };
            j.task_state(r, &SETTINGS, now);
            if let Some(e) = ended {
                prop_assert_eq!(j.state, e);
            } else if j.state.is_terminal() {
                ended = Some(j.state);
            }
        }
        if j.tasks.all_terminal() {
            prop_assert!(j.state.is_terminal() || j.state == JobState::Restarting, "{:?}", j.state);
        }
    }
}
