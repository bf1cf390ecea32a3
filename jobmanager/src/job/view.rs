//! What a job shows: its summary, its details and its record.

use super::*;

impl Job {
    /// The state users see. A job that failed and restarted shows
    /// RESTARTING until every task of its new attempt has restored its
    /// state and runs: a job that fails again during every restore never
    /// looks as if it were running.
    pub(crate) fn shown_state(&self) -> JobState {
        if self.state == JobState::Running && self.restarts > 0 && !self.tasks.started() {
            JobState::Restarting
        } else {
            self.state
        }
    }

    /// The job in a list.
    pub(crate) fn summary(&self) -> v1::JobSummary {
        v1::JobSummary {
            job_id: self.id.to_string(),
            name: self.name.clone(),
            state: self.shown_state().to_proto() as i32,
            start_time_ms: wall_ms(self.submitted),
            end_time_ms: self.ended.map(wall_ms).unwrap_or(0),
        }
    }

    /// The job in detail.
    pub(crate) fn details(&self) -> v1::JobDetails {
        let tasks = self
            .tasks
            .0
            .iter()
            .map(|(&(vertex, subtask), t)| v1::TaskDetails {
                vertex: t.vertex_name.clone(),
                subtask,
                parallelism: t.parallelism,
                task_manager_id: t.task_manager.clone(),
                state: t.state as i32,
                records_in: t.counters.records_in,
                records_out: t.counters.records_out,
                failure: t.failure.clone(),
                vertex_index: vertex,
                records_in_per_second: t.rates.records_in,
                records_out_per_second: t.rates.records_out,
                backpressure: t.rates.backpressure,
                watermark_ms: t.counters.watermark_ms,
                state_bytes: t.counters.state_bytes,
            })
            .collect();
        let vertices = self
            .plan
            .vertices
            .iter()
            .map(|v| v1::VertexInfo {
                index: v.id,
                name: v.name.clone(),
                parallelism: v.parallelism,
                operators: v
                    .operators
                    .iter()
                    .map(|&o| {
                        let op = &self.plan.graph.operators[o];
                        v1::VertexOperator { uid: op.uid.clone(), kind: op.kind.clone() }
                    })
                    .collect(),
            })
            .collect();
        let links = self
            .plan
            .vertex_edges
            .iter()
            .map(|e| {
                let edge = &self.graph.edges[e.edge];
                v1::VertexLink {
                    from: e.from,
                    to: e.to,
                    partitioning: edge.partitioning,
                    key: edge.key.clone(),
                    output: edge.output.clone(),
                }
            })
            .collect();
        v1::JobDetails {
            summary: Some(self.summary()),
            failure: self.failure.clone().unwrap_or_default(),
            tasks,
            sink_records: self.tasks.sum(|c| c.sink_records),
            bad_records: self.tasks.sum(|c| c.bad_records),
            checkpoints: self.checkpoints.as_ref().map(|c| c.coordinator.history()).unwrap_or_default(),
            restarts: self.restarts,
            attempt: self.attempt,
            restored_from: self.restore.as_ref().map(|r| r.checkpoint_id().0).unwrap_or(0),
            exceptions: self.exceptions.iter().cloned().collect(),
            vertices,
            links,
            now_ms: wall_ms(SystemTime::now()),
            recovery: self.recovery.map(Recovery::to_proto),
        }
    }

    /// The job's record, for a new job manager to resume it (jobs with
    /// checkpoints only: without them there is nothing to resume from).
    pub(crate) fn record(&self) -> Option<v1::JobRecord> {
        let c = self.checkpoints.as_ref()?;
        Some(v1::JobRecord {
            job_id: self.id.to_string(),
            name: self.name.clone(),
            attempt: self.attempt,
            graph: Some(self.graph.clone()),
            storage: c.storage.uri().to_string(),
            submitted_ms: wall_ms(self.submitted),
            restarts: self.restarts,
            savepoint: self.start.as_ref().map(|s| s.uri().to_string()).unwrap_or_default(),
        })
    }
}
