//! The subtasks of one job attempt: where each runs and what it last reported.

use std::collections::BTreeMap;
use std::time::Instant;

use weir_proto::v1;
use weir_runtime::plan::Plan;

use crate::scheduler::TaskPlacement;

/// One subtask of the running attempt.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskEntry {
    /// Its vertex's name (operator uids joined with ` -> `).
    pub(crate) vertex_name: String,
    /// Its vertex's parallelism.
    pub(crate) parallelism: u32,
    /// The task manager it runs on.
    pub(crate) task_manager: String,
    /// Its last reported state.
    pub(crate) state: v1::TaskState,
    /// Its last reported counters.
    pub(crate) counters: v1::TaskCounters,
    /// Why it failed, if it did.
    pub(crate) failure: String,
    /// Rates between its last two counter reports.
    pub(crate) rates: Rates,
    /// The report the next rates are measured from.
    base: Option<(Instant, v1::TaskCounters)>,
}

/// Rates of a task between two reports of its counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Rates {
    /// Rows read per second.
    pub(crate) records_in: f64,
    /// Rows sent per second.
    pub(crate) records_out: f64,
    /// Share of the interval spent waiting to send (0 to 1).
    pub(crate) backpressure: f64,
}

/// Reports closer together than this say little about a rate (a final
/// report right after a heartbeat): the rates are measured over longer.
const MIN_RATE_INTERVAL_S: f64 = 0.2;

impl TaskEntry {
    /// Takes `counters` reported at `now`, and the rates since the report
    /// they are measured from.
    pub(crate) fn update(&mut self, counters: v1::TaskCounters, now: Instant) {
        match &self.base {
            None => self.base = Some((now, counters)),
            Some((at, old)) => {
                let secs = now.saturating_duration_since(*at).as_secs_f64();
                if secs >= MIN_RATE_INTERVAL_S {
                    let per_s = |new: u64, old: u64| new.saturating_sub(old) as f64 / secs;
                    self.rates = Rates {
                        records_in: per_s(counters.records_in, old.records_in),
                        records_out: per_s(counters.records_out, old.records_out),
                        backpressure: (per_s(counters.backpressure_ns, old.backpressure_ns) / 1e9).clamp(0.0, 1.0),
                    };
                    self.base = Some((now, counters));
                }
            }
        }
        if terminal(self.state) {
            self.rates = Rates::default();
        }
        self.counters = counters;
    }
}

/// Whether a task state is final.
pub(crate) fn terminal(s: v1::TaskState) -> bool {
    matches!(s, v1::TaskState::TaskFinished | v1::TaskState::TaskFailed | v1::TaskState::TaskCanceled)
}

/// The subtasks of an attempt, by (vertex, subtask).
#[derive(Debug, Clone, Default)]
pub(crate) struct Tasks(pub(crate) BTreeMap<(u32, u32), TaskEntry>);

impl Tasks {
    /// Every subtask of `placements`, deploying.
    pub(crate) fn deploying(plan: &Plan, placements: &[TaskPlacement]) -> Self {
        Tasks(
            placements
                .iter()
                .map(|p| {
                    let v = &plan.vertices[p.vertex as usize];
                    let entry = TaskEntry {
                        vertex_name: v.name.clone(),
                        parallelism: v.parallelism,
                        task_manager: p.task_manager.clone(),
                        state: v1::TaskState::Deploying,
                        counters: v1::TaskCounters::default(),
                        failure: String::new(),
                        rates: Rates::default(),
                        base: None,
                    };
                    ((p.vertex, p.subtask), entry)
                })
                .collect(),
        )
    }

    /// Whether every subtask reached a final state.
    pub(crate) fn all_terminal(&self) -> bool {
        self.0.values().all(|t| terminal(t.state))
    }

    /// Whether a checkpoint can start: every task runs or has finished
    /// (finished ones take no part), and some source still runs.
    pub(crate) fn ready_for_barriers(&self, plan: &Plan) -> bool {
        use v1::TaskState::{TaskFinished, TaskRunning};
        self.0.values().all(|t| matches!(t.state, TaskRunning | TaskFinished))
            && self.0.iter().any(|((v, _), t)| t.state == TaskRunning && plan.inputs_of(*v).is_empty())
    }

    /// Whether every subtask got past restoring its state (runs or ended).
    pub(crate) fn started(&self) -> bool {
        use v1::TaskState::{Deploying, TaskInitializing};
        !self.0.values().any(|t| matches!(t.state, Deploying | TaskInitializing))
    }

    /// How many subtasks run.
    pub(crate) fn running(&self) -> usize {
        self.0.values().filter(|t| t.state == v1::TaskState::TaskRunning).count()
    }

    /// Finished subtasks, as checkpoints name them.
    pub(crate) fn finished(&self, plan: &Plan) -> Vec<(Vec<String>, u32)> {
        self.0
            .iter()
            .filter(|(_, t)| t.state == v1::TaskState::TaskFinished)
            .map(|((v, s), _)| (plan.vertex_uids(*v), *s))
            .collect()
    }

    /// Task managers running a source task (checkpoint triggers go there).
    pub(crate) fn source_task_managers(&self, plan: &Plan) -> Vec<String> {
        let mut tms: Vec<String> = self
            .0
            .iter()
            .filter(|((v, _), t)| plan.inputs_of(*v).is_empty() && t.state == v1::TaskState::TaskRunning)
            .map(|(_, t)| t.task_manager.clone())
            .collect();
        tms.sort();
        tms.dedup();
        tms
    }

    /// Every task manager with a subtask of the attempt.
    pub(crate) fn task_managers(&self) -> Vec<String> {
        let mut tms: Vec<String> = self.0.values().map(|t| t.task_manager.clone()).collect();
        tms.sort();
        tms.dedup();
        tms
    }

    /// Sum of a counter over every subtask.
    pub(crate) fn sum(&self, f: impl Fn(&v1::TaskCounters) -> u64) -> u64 {
        self.0.values().map(|t| f(&t.counters)).sum()
    }
}
