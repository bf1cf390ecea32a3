//! What the core shows: job details, the cluster overview and metrics
//! (names in `docs/metrics.md`).

use weir_proto::v1;
use weir_types::JobId;

use super::{Cluster, ClusterError};
use crate::job::JobState;

fn millis(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Cluster {
    pub(super) fn details(&self, raw: &str) -> Result<v1::JobDetails, ClusterError> {
        let job = self.jobs.get(&JobId::new(raw)).ok_or_else(|| ClusterError::UnknownJob(raw.into()))?;
        Ok(job.details())
    }

    pub(super) fn overview(&self) -> v1::ClusterOverviewResponse {
        v1::ClusterOverviewResponse {
            task_managers: self
                .membership
                .members()
                .map(|m| v1::TaskManagerInfo {
                    task_manager_id: m.id.clone(),
                    rpc_address: m.address.clone(),
                    slots_total: m.slots,
                    slots_free: m.free(),
                    last_heartbeat_ms: millis(m.last_heartbeat_wall),
                    memory_bytes: m.memory_bytes,
                })
                .collect(),
            jobs_running: self.jobs.values().filter(|j| j.shown_state() == JobState::Running).count() as u32,
        }
    }

    /// The job manager's metrics.
    pub(super) fn metrics(&self) -> String {
        let mut e = weir_telemetry::metrics::Exposition::new();
        e.gauge("weir_jobmanager_task_managers", "Task managers registered.", &[], self.membership.len() as f64);
        let (total, free) = self.membership.slots();
        e.gauge("weir_jobmanager_slots", "Slots of all registered task managers.", &[], f64::from(total));
        e.gauge("weir_jobmanager_slots_free", "Slots no job holds.", &[], f64::from(free));
        for state in JobState::ALL {
            let n = self.jobs.values().filter(|j| j.shown_state() == state).count();
            let name = state.to_proto().as_str_name();
            e.gauge("weir_jobs", "Jobs by state.", &[("state", name)], n as f64);
        }
        for job in self.order.iter().filter_map(|id| self.jobs.get(id)) {
            let id = job.id.to_string();
            let l = [("job_id", id.as_str()), ("job_name", job.name.as_str())];
            e.gauge(
                "weir_job_running",
                "1 while the job runs.",
                &l,
                f64::from(u8::from(job.shown_state() == JobState::Running)),
            );
            e.counter("weir_job_restarts_total", "Restarts of the job after failures.", &l, f64::from(job.restarts));
            let recovery = job.recovery.map(|r| [("running", r.running_after), ("checkpoint", r.checkpoint_after)]);
            for (phase, took) in recovery.into_iter().flatten() {
                let Some(took) = took else { continue };
                e.gauge(
                    "weir_job_recovery_seconds",
                    "The job's latest recovery: from the failure until its tasks ran again (phase running), and until the first checkpoint after that (phase checkpoint).",
                    &[l[0], l[1], ("phase", phase)],
                    took.as_secs_f64(),
                );
            }
            let Some(c) = job.checkpoints.as_ref().map(|c| &c.coordinator) else { continue };
            e.counter("weir_checkpoints_completed_total", "Checkpoints completed.", &l, c.completed as f64);
            e.counter("weir_checkpoints_failed_total", "Checkpoints and savepoints failed.", &l, c.failed as f64);
            e.counter("weir_savepoints_completed_total", "Savepoints completed.", &l, c.savepoints as f64);
            if let Some(last) = c.last_completed() {
                e.gauge("weir_checkpoint_last_id", "Id of the newest completed checkpoint.", &l, last.id as f64);
                e.gauge(
                    "weir_checkpoint_last_duration_seconds",
                    "Trigger to metadata of the newest completed checkpoint.",
                    &l,
                    last.duration_ms as f64 / 1000.0,
                );
                e.gauge(
                    "weir_checkpoint_last_size_bytes",
                    "Bytes the newest completed checkpoint uploaded.",
                    &l,
                    last.size_bytes as f64,
                );
                e.gauge(
                    "weir_checkpoint_last_state_bytes",
                    "Size of all state the newest completed checkpoint references.",
                    &l,
                    last.state_bytes as f64,
                );
                e.gauge(
                    "weir_checkpoint_last_alignment_seconds",
                    "Longest barrier alignment of the newest completed checkpoint.",
                    &l,
                    last.alignment_ms as f64 / 1000.0,
                );
            }
        }
        e.finish()
    }
}
