//! What a task manager knows about its tasks: running tasks (to cancel them)
//! and the inboxes of deployed tasks (for producers to connect to), with a
//! way to wait for an inbox that is not deployed yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use weir_runtime::channel::InboxHandle;
use weir_runtime::plan::Plan;
use weir_runtime::task::{TaskControl, TaskCounters};

/// Identity of a subtask of one execution attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskId {
    /// Job id.
    pub job: String,
    /// Execution attempt.
    pub attempt: u32,
    /// Vertex index.
    pub vertex: u32,
    /// Subtask index.
    pub subtask: u32,
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}/v{}/{}", self.job, self.attempt, self.vertex, self.subtask)
    }
}

/// A deployed task.
#[derive(Debug, Clone)]
pub struct RunningTask {
    /// Cancels it.
    pub cancel: CancellationToken,
    /// Its live counters.
    pub counters: Arc<TaskCounters>,
    /// Commands to it (checkpoint triggers and completions).
    pub control: tokio::sync::mpsc::UnboundedSender<TaskControl>,
    /// Whether it runs a source (checkpoint triggers go to sources).
    pub is_source: bool,
    /// Its chain's name (operator uids joined with ` -> `).
    pub name: String,
    /// Rows in and out of each operator of its chain.
    pub rows: Arc<Vec<weir_runtime::task::OperatorRows>>,
}

#[derive(Debug, Default)]
struct Inner {
    inboxes: HashMap<TaskId, InboxHandle>,
    tasks: HashMap<TaskId, RunningTask>,
    plans: HashMap<(String, u32), Arc<Plan>>,
}

/// Shared by the gRPC services and the task threads of one task manager.
#[derive(Debug, Default, Clone)]
pub struct Tasks {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

impl Tasks {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The plan of a job attempt, planned once per task manager.
    pub fn plan(
        &self,
        job: &str,
        attempt: u32,
        make: impl FnOnce() -> Result<Plan, String>,
    ) -> Result<Arc<Plan>, String> {
        if let Some(p) = self.lock().plans.get(&(job.to_string(), attempt)) {
            return Ok(p.clone());
        }
        let plan = Arc::new(make()?);
        Ok(self.lock().plans.entry((job.to_string(), attempt)).or_insert(plan).clone())
    }

    /// Records a deployed task (and its inbox, if it has inputs).
    pub fn add(&self, id: TaskId, task: RunningTask, inbox: Option<InboxHandle>) {
        let mut g = self.lock();
        if let Some(h) = inbox {
            g.inboxes.insert(id.clone(), h);
        }
        g.tasks.insert(id, task);
        drop(g);
        self.changed.notify_waiters();
    }

    /// Forgets a task that ended; drops the job's plan with its last task.
    pub fn remove(&self, id: &TaskId) {
        let mut g = self.lock();
        g.inboxes.remove(id);
        g.tasks.remove(id);
        if !g.tasks.keys().any(|t| t.job == id.job && t.attempt == id.attempt) {
            g.plans.remove(&(id.job.clone(), id.attempt));
        }
    }

    /// Waits up to `timeout` for the inbox of `id` to be deployed.
    pub async fn inbox(&self, id: &TaskId, timeout: Duration) -> Option<InboxHandle> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(h) = self.lock().inboxes.get(id) {
                return Some(h.clone());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Cancels the tasks of a job attempt (every attempt if `attempt` is 0).
    pub fn cancel_job(&self, job: &str, attempt: u32) -> usize {
        let g = self.lock();
        let mut n = 0;
        for (id, t) in g.tasks.iter() {
            if id.job == job && (attempt == 0 || id.attempt == attempt) {
                t.cancel.cancel();
                n += 1;
            }
        }
        n
    }

    /// Sends `ctl` to the tasks of a job attempt (only its sources if
    /// `sources_only`); returns how many received it.
    pub fn control(&self, job: &str, attempt: u32, ctl: TaskControl, sources_only: bool) -> u32 {
        let g = self.lock();
        let mut n = 0;
        for (id, t) in g.tasks.iter() {
            if id.job == job && id.attempt == attempt && (t.is_source || !sources_only) && t.control.send(ctl).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Every running task (for metrics and heartbeats).
    pub fn all(&self) -> Vec<(TaskId, RunningTask)> {
        let g = self.lock();
        let mut out: Vec<_> = g.tasks.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        out.sort_by(|a, b| (&a.0.job, a.0.vertex, a.0.subtask).cmp(&(&b.0.job, b.0.vertex, b.0.subtask)));
        out
    }

    /// Cancels every task.
    pub fn cancel_all(&self) {
        for t in self.lock().tasks.values() {
            t.cancel.cancel();
        }
    }
}
