//! Printing results as text or JSON.

use serde_json::json;
use weir_proto::v1;
use weir_runtime::graph::Plan;

/// Output format of every command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Text,
    /// One JSON document.
    Json,
}

fn state_name(s: v1::JobState) -> &'static str {
    match s {
        v1::JobState::Created => "CREATED",
        v1::JobState::Running => "RUNNING",
        v1::JobState::Finished => "FINISHED",
        v1::JobState::Failed => "FAILED",
        v1::JobState::Cancelling => "CANCELLING",
        v1::JobState::Canceled => "CANCELED",
        v1::JobState::Unspecified => "UNKNOWN",
    }
}

fn task_state_name(s: v1::TaskState) -> &'static str {
    match s {
        v1::TaskState::Deploying => "DEPLOYING",
        v1::TaskState::TaskRunning => "RUNNING",
        v1::TaskState::TaskFinished => "FINISHED",
        v1::TaskState::TaskFailed => "FAILED",
        v1::TaskState::TaskCanceled => "CANCELED",
        v1::TaskState::Unspecified => "UNKNOWN",
    }
}

/// A submitted job's id.
pub fn job_id(fmt: Format, id: &str) {
    match fmt {
        Format::Text => println!("{id}"),
        Format::Json => println!("{}", json!({ "job_id": id })),
    }
}

fn summary_json(s: &v1::JobSummary) -> serde_json::Value {
    json!({
        "job_id": s.job_id,
        "name": s.name,
        "state": state_name(s.state()),
        "start_time_ms": s.start_time_ms,
        "end_time_ms": if s.end_time_ms > 0 { Some(s.end_time_ms) } else { None },
    })
}

/// A list of jobs.
pub fn jobs(fmt: Format, jobs: &[v1::JobSummary]) {
    match fmt {
        Format::Json => println!("{}", serde_json::Value::Array(jobs.iter().map(summary_json).collect())),
        Format::Text => {
            if jobs.is_empty() {
                println!("no jobs");
            }
            for j in jobs {
                println!("{}  {:<10}  {}", j.job_id, state_name(j.state()), j.name);
            }
        }
    }
}

/// A job's details, as JSON.
pub fn details_json(d: &v1::JobDetails) -> serde_json::Value {
    let mut v = d.summary.as_ref().map(summary_json).unwrap_or_else(|| json!({}));
    v["failure"] = if d.failure.is_empty() { serde_json::Value::Null } else { json!(d.failure) };
    v["sink_records"] = json!(d.sink_records);
    v["tasks"] = d
        .tasks
        .iter()
        .map(|t| {
            json!({
                "vertex": t.vertex,
                "subtask": t.subtask,
                "parallelism": t.parallelism,
                "task_manager": t.task_manager_id,
                "state": task_state_name(t.state()),
                "records_in": t.records_in,
                "records_out": t.records_out,
                "failure": if t.failure.is_empty() { None } else { Some(&t.failure) },
            })
        })
        .collect();
    v
}

/// A job's details.
pub fn details(fmt: Format, d: &v1::JobDetails) {
    match fmt {
        Format::Json => println!("{}", details_json(d)),
        Format::Text => {
            if let Some(s) = &d.summary {
                println!("job {} ({}): {}", s.job_id, s.name, state_name(s.state()));
                if s.end_time_ms > 0 {
                    println!("duration: {} ms", s.end_time_ms - s.start_time_ms);
                }
            }
            if !d.failure.is_empty() {
                println!("failure: {}", d.failure);
            }
            println!("records written by sinks: {}", d.sink_records);
            for t in &d.tasks {
                println!(
                    "  {:<40} {}/{}  {:<9} on {}  in={} out={}{}",
                    t.vertex,
                    t.subtask + 1,
                    t.parallelism,
                    task_state_name(t.state()),
                    t.task_manager_id,
                    t.records_in,
                    t.records_out,
                    if t.failure.is_empty() { String::new() } else { format!("  ({})", t.failure) }
                );
            }
        }
    }
}

/// The answer to a cancellation.
pub fn cancelled(fmt: Format, id: &str, state: v1::JobState) {
    match fmt {
        Format::Json => println!("{}", json!({ "job_id": id, "state": state_name(state) })),
        Format::Text => println!("job {id}: {}", state_name(state)),
    }
}

/// The task managers of a cluster.
pub fn task_managers(fmt: Format, o: &v1::ClusterOverviewResponse) {
    match fmt {
        Format::Json => println!(
            "{}",
            json!({
                "task_managers": o.task_managers.iter().map(|t| json!({
                    "id": t.task_manager_id, "address": t.rpc_address,
                    "slots_total": t.slots_total, "slots_free": t.slots_free,
                    "last_heartbeat_ms": t.last_heartbeat_ms,
                })).collect::<Vec<_>>(),
                "jobs_running": o.jobs_running,
            })
        ),
        Format::Text => {
            println!("{} task manager(s), {} job(s) running", o.task_managers.len(), o.jobs_running);
            for t in &o.task_managers {
                println!("  {}  {}  slots {}/{} free", t.task_manager_id, t.rpc_address, t.slots_free, t.slots_total);
            }
        }
    }
}

/// A validated plan.
pub fn plan(fmt: Format, plan: &Plan) {
    match fmt {
        Format::Json => println!(
            "{}",
            json!({
                "name": plan.graph.name,
                "slots_needed": plan.slots_needed(),
                "tasks": plan.vertices.iter().map(|v| json!({"name": v.name, "parallelism": v.parallelism})).collect::<Vec<_>>(),
            })
        ),
        Format::Text => {
            println!("job {} is valid: {} slot(s) needed", plan.graph.name, plan.slots_needed());
            for v in &plan.vertices {
                println!("  task {} x{}", v.name, v.parallelism);
            }
        }
    }
}
