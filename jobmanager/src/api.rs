//! The job manager's one service layer: what the CLI (over gRPC) and the
//! REST API ask of the core, with the same checks and the same errors for
//! both, so that they can never disagree.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use weir_proto::v1;
use weir_security::{AllowedPaths, SubmitLimits};

use crate::cluster::{ClusterError, ClusterHandle, Command};

/// How many savepoint triggers are remembered for polling.
const TRIGGERS_KEPT: usize = 256;

/// Where a savepoint asked for without waiting stands.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerStatus {
    /// Not complete yet.
    InProgress,
    /// Written (and the job stopped, if asked).
    Completed(v1::TriggerSavepointResponse),
    /// It failed; the job goes on (unless it failed for another reason).
    Failed(String),
}

/// Savepoints triggered without waiting, by trigger id.
#[derive(Debug, Default)]
struct Triggers {
    status: HashMap<String, (String, TriggerStatus)>,
    order: VecDeque<String>,
}

/// The operations of the job manager, shared by its gRPC and REST faces.
#[derive(Debug, Clone)]
pub struct Api {
    cluster: ClusterHandle,
    s3: weir_state::S3Options,
    allowed: AllowedPaths,
    limits: SubmitLimits,
    triggers: Arc<Mutex<Triggers>>,
}

impl Api {
    /// Operations on `cluster`; `s3` opens savepoints that jobs start from;
    /// jobs may only name local paths under the allowed roots and ask for
    /// no more than the limits of `security`.
    pub(crate) fn new(cluster: ClusterHandle, s3: weir_state::S3Options, security: &weir_security::Security) -> Self {
        Self { cluster, s3, allowed: security.allowed_paths.clone(), limits: security.limits, triggers: Arc::default() }
    }

    /// Refuses a job that asks for more than the limits allow, or names a
    /// local path outside the allowed roots: in an operator's settings, as
    /// its checkpoint storage, or as the savepoint it starts from.
    fn check_submission(&self, req: &v1::SubmitJobRequest) -> Result<(), ClusterError> {
        let invalid = ClusterError::InvalidJob;
        let graph = req.graph.as_ref().ok_or_else(|| invalid("the request has no job graph".into()))?;
        let graph = weir_proto::graph_from_proto(graph).map_err(|e| invalid(e.to_string()))?;
        let limits = self.limits;
        if graph.operators.len() > limits.max_operators {
            return Err(invalid(format!(
                "the job has {} operators; this cluster takes at most {} (security.max_operators)",
                graph.operators.len(),
                limits.max_operators
            )));
        }
        let default = [req.default_parallelism, graph.default_parallelism].into_iter().find(|p| *p > 0).unwrap_or(1);
        for op in &graph.operators {
            let p = if op.parallelism > 0 { op.parallelism } else { default };
            if p > limits.max_parallelism {
                return Err(invalid(format!(
                    "{} asks for parallelism {p}; this cluster allows at most {} (security.max_parallelism)",
                    op.uid, limits.max_parallelism
                )));
            }
        }
        for op in &graph.operators {
            for (field, path) in weir_security::local_paths(&op.config) {
                self.allowed.check(&path).map_err(|e| {
                    let line = if op.line > 0 { format!(" at line {}", op.line) } else { String::new() };
                    invalid(format!("{}{line}, field `{field}`: {e}", op.uid))
                })?;
            }
        }
        if let Some(storage) = graph.checkpoint.as_ref().and_then(|c| c.storage.as_deref()) {
            self.allowed.check(storage).map_err(|e| invalid(format!("checkpoints.storage: {e}")))?;
        }
        if !req.from_savepoint.is_empty() {
            self.allowed
                .check(&req.from_savepoint)
                .map_err(|e| invalid(format!("the savepoint to start from: {e}")))?;
        }
        Ok(())
    }

    /// Submits a job. The savepoint it starts from is read and verified
    /// (every file's checksum) before the job exists, so that a bad one is
    /// refused at submission and nothing is scheduled.
    pub async fn submit(&self, req: v1::SubmitJobRequest) -> Result<String, ClusterError> {
        self.check_submission(&req)?;
        let savepoint = if req.from_savepoint.is_empty() {
            None
        } else {
            let start = crate::restore::load_start(&req.from_savepoint, &self.s3)
                .await
                .map_err(|e| ClusterError::InvalidJob(format!("cannot start from {}: {e}", req.from_savepoint)))?;
            Some(start)
        };
        self.cluster.ask(|r| Command::Submit(req, savepoint, r)).await
    }

    /// Takes a savepoint of a running job (and stops it, if asked) and waits
    /// until it is written.
    pub async fn savepoint(
        &self,
        job: String,
        target: String,
        stop: bool,
    ) -> Result<v1::TriggerSavepointResponse, ClusterError> {
        self.check_target(&target)?;
        self.cluster.ask(|reply| Command::Savepoint { job, target, stop, reply, accepted: None }).await
    }

    /// Starts a savepoint of a running job without waiting for it to be
    /// written: the answer is a trigger id for [`Api::savepoint_status`]. A
    /// request that fails its checks (unknown job, job not running, no
    /// target) is refused at once, as [`Api::savepoint`] would refuse it.
    pub async fn trigger_savepoint(&self, job: String, target: String, stop: bool) -> Result<String, ClusterError> {
        self.check_target(&target)?;
        let (accepted, started) = oneshot::channel();
        let (reply, answer) = oneshot::channel();
        let cmd = Command::Savepoint { job: job.clone(), target, stop, reply, accepted: Some(accepted) };
        self.cluster.tx.send(cmd).await.map_err(|_| ClusterError::ShuttingDown)?;
        if started.await.is_err() {
            // Refused: the core answered why before dropping `accepted`.
            return match answer.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(_)) | Err(_) => Err(ClusterError::ShuttingDown),
            };
        }
        let trigger = uuid::Uuid::new_v4().simple().to_string();
        {
            let mut t = self.triggers.lock().expect("trigger table poisoned");
            if t.order.len() == TRIGGERS_KEPT {
                if let Some(old) = t.order.pop_front() {
                    t.status.remove(&old);
                }
            }
            t.order.push_back(trigger.clone());
            t.status.insert(trigger.clone(), (job, TriggerStatus::InProgress));
        }
        let triggers = self.triggers.clone();
        let id = trigger.clone();
        tokio::spawn(async move {
            let status = match answer.await {
                Ok(Ok(done)) => TriggerStatus::Completed(done),
                Ok(Err(e)) => TriggerStatus::Failed(e.to_string()),
                Err(_) => TriggerStatus::Failed(ClusterError::ShuttingDown.to_string()),
            };
            if let Some(entry) = triggers.lock().expect("trigger table poisoned").status.get_mut(&id) {
                entry.1 = status;
            }
        });
        Ok(trigger)
    }

    /// Refuses a savepoint directory outside the allowed roots.
    fn check_target(&self, target: &str) -> Result<(), ClusterError> {
        if target.is_empty() {
            return Ok(());
        }
        self.allowed.check(target).map_err(|e| ClusterError::InvalidJob(format!("savepoint target: {e}")))
    }

    /// Where savepoint `trigger` of `job` stands.
    pub fn savepoint_status(&self, job: &str, trigger: &str) -> Result<TriggerStatus, ClusterError> {
        let t = self.triggers.lock().expect("trigger table poisoned");
        match t.status.get(trigger) {
            Some((j, status)) if j == job => Ok(status.clone()),
            _ => Err(ClusterError::UnknownTrigger(trigger.to_string())),
        }
    }

    /// Every job, in submission order.
    pub async fn list(&self) -> Result<Vec<v1::JobSummary>, ClusterError> {
        self.cluster.ask(Command::List).await
    }

    /// A job in detail; with `wait_for_end`, answers once it has ended or
    /// that long has passed.
    pub async fn get(&self, job: String, wait_for_end: Option<Duration>) -> Result<v1::JobDetails, ClusterError> {
        self.cluster.ask(|r| Command::Get(job, wait_for_end, r)).await
    }

    /// Cancels a job; answers its state after the request.
    pub async fn cancel(&self, job: String) -> Result<v1::JobState, ClusterError> {
        self.cluster.ask(|r| Command::Cancel(job, r)).await
    }

    /// Task managers and running jobs.
    pub async fn overview(&self) -> Result<v1::ClusterOverviewResponse, ClusterError> {
        self.cluster.ask(Command::Overview).await
    }

    /// The job manager's metrics in Prometheus' text format.
    pub async fn metrics(&self) -> Result<String, ClusterError> {
        self.cluster.ask(Command::Metrics).await
    }
}
