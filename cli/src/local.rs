//! [`LocalCluster`]: an embedded cluster for programs and tests — submit a
//! job, watch it, take savepoints, stop it — over the same gRPC API the
//! command line uses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use weir_proto::v1;
use weir_runtime::graph::JobGraph;
use weir_runtime::operators::Registry;

use crate::client::{self, StartFrom};
use crate::embedded::Embedded;
use crate::progress::Progress;

/// A job's state as a [`LocalCluster`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// `RUNNING`, `FINISHED`, `FAILED`, ….
    pub state: String,
    /// Checkpoints completed by the job so far (of those still listed).
    pub completed_checkpoints: usize,
    /// Records written by its sinks.
    pub sink_records: u64,
    /// Why it failed, if it did.
    pub failure: String,
}

impl JobStatus {
    fn of(d: &v1::JobDetails) -> Self {
        Self {
            state: client::state(d).as_str_name().to_string(),
            completed_checkpoints: d
                .checkpoints
                .iter()
                .filter(|c| c.status() == v1::CheckpointStatus::Completed)
                .count(),
            sink_records: d.sink_records,
            failure: d.failure.clone(),
        }
    }

    /// Whether the job has ended.
    pub fn is_terminal(&self) -> bool {
        matches!(self.state.as_str(), "FINISHED" | "FAILED" | "CANCELED")
    }
}

/// A job manager and a task manager in this process, talking gRPC over
/// loopback as separate processes do.
pub struct LocalCluster {
    cluster: Embedded,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster").field("url", &self.cluster.url).finish()
    }
}

impl LocalCluster {
    /// Starts a cluster whose task manager has `slots` slots and whose
    /// processes plan and run the kinds of `registry`.
    pub async fn start(slots: u32, registry: Arc<Registry>) -> anyhow::Result<Self> {
        Ok(Self { cluster: Embedded::start(slots, registry).await? })
    }

    /// The job manager's URL (for `weir -m URL`).
    pub fn url(&self) -> &str {
        &self.cluster.url
    }

    /// Submits `graph`, from the savepoint at `savepoint` if given; returns the job id.
    pub async fn submit(&self, graph: &JobGraph, savepoint: Option<&str>) -> anyhow::Result<String> {
        let mut c = client::connect(&self.cluster.url, &Default::default()).await?;
        let from = StartFrom { savepoint: savepoint.map(str::to_string), allow_non_restored_state: false };
        client::submit(&mut c, graph, None, &from).await
    }

    /// The job's status now.
    pub async fn status(&self, job_id: &str) -> anyhow::Result<JobStatus> {
        let mut c = client::connect(&self.cluster.url, &Default::default()).await?;
        Ok(JobStatus::of(&client::details(&mut c, job_id).await?))
    }

    /// Waits until `ready` holds of the job's status, at most `timeout`.
    pub async fn wait_until(
        &self,
        job_id: &str,
        timeout: Duration,
        ready: impl Fn(&JobStatus) -> bool,
    ) -> anyhow::Result<JobStatus> {
        let deadline = Instant::now() + timeout;
        let mut c = client::connect(&self.cluster.url, &Default::default()).await?;
        loop {
            let req = v1::GetJobRequest { job_id: job_id.to_string(), wait_for_end_ms: 20 };
            let s = JobStatus::of(&c.get_job(req).await.map_err(client::status)?.into_inner());
            if ready(&s) {
                return Ok(s);
            }
            if s.is_terminal() {
                bail!("job {job_id} ended {} before the awaited condition ({})", s.state, s.failure);
            }
            if Instant::now() > deadline {
                bail!("job {job_id} did not reach the awaited condition within {timeout:?} (now {})", s.state);
            }
        }
    }

    /// Waits for the job to end.
    pub async fn wait_for_end(&self, job_id: &str) -> anyhow::Result<JobStatus> {
        let mut c = client::connect(&self.cluster.url, &Default::default()).await?;
        Ok(JobStatus::of(&client::wait_for_end(&mut c, job_id, &Progress::hidden()).await?))
    }

    /// Takes a savepoint under `dir` (the cluster's default location when
    /// `None`) and returns where it is; with `stop`, the job then finishes.
    pub async fn savepoint(&self, job_id: &str, dir: Option<&str>, stop: bool) -> anyhow::Result<String> {
        let mut c = client::connect(&self.cluster.url, &Default::default()).await?;
        let req = v1::TriggerSavepointRequest {
            job_id: job_id.to_string(),
            target: dir.unwrap_or_default().to_string(),
            stop,
        };
        let sp = c.trigger_savepoint(req).await.map_err(client::status)?.into_inner();
        if stop {
            let end = client::wait_for_end(&mut c, job_id, &Progress::hidden()).await?;
            if client::state(&end) != v1::JobState::Finished {
                bail!("job {job_id} ended {} after stop-with-savepoint", client::state(&end).as_str_name());
            }
        }
        Ok(sp.location)
    }

    /// Cancels the job and waits for it to end.
    pub async fn cancel(&self, job_id: &str) -> anyhow::Result<JobStatus> {
        let mut c = client::connect(&self.cluster.url, &Default::default()).await?;
        c.cancel_job(v1::CancelJobRequest { job_id: job_id.to_string() }).await.map_err(client::status)?;
        Ok(JobStatus::of(&client::wait_for_end(&mut c, job_id, &Progress::hidden()).await?))
    }

    /// Stops both processes' services.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.cluster.shutdown().await
    }
}
