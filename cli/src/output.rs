//! Printing results as text or JSON.

use comfy_table::{CellAlignment, ContentArrangement, Table};
use serde_json::json;
use weir_proto::{checkpoint_status_name, task_state_name, v1};
use weir_runtime::plan::Plan;

/// comfy-table's style: a rule under the header, no borders, no lines
/// between rows (one character per table component, space for none).
const HEADER_RULE_ONLY: &str = "     ──            ";

/// A table with `header`, its columns numbered in `right` aligned right.
fn table(header: &[&str], right: &[usize]) -> Table {
    let mut t = Table::new();
    t.load_preset(HEADER_RULE_ONLY).set_content_arrangement(ContentArrangement::Dynamic).set_header(header);
    for &i in right {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

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
        v1::JobState::Restarting => "RESTARTING",
        v1::JobState::Unspecified => "UNKNOWN",
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
                return;
            }
            let mut t = table(&["job id", "state", "name"], &[]);
            for j in jobs {
                t.add_row(vec![j.job_id.as_str(), state_name(j.state()), j.name.as_str()]);
            }
            println!("{t}");
        }
    }
}

/// A job's details, as JSON.
pub fn details_json(d: &v1::JobDetails) -> serde_json::Value {
    let mut v = d.summary.as_ref().map(summary_json).unwrap_or_else(|| json!({}));
    v["failure"] = if d.failure.is_empty() { serde_json::Value::Null } else { json!(d.failure) };
    v["sink_records"] = json!(d.sink_records);
    v["bad_records"] = json!(d.bad_records);
    v["attempt"] = json!(d.attempt);
    v["restarts"] = json!(d.restarts);
    v["restored_from"] = if d.restored_from > 0 { json!(d.restored_from) } else { serde_json::Value::Null };
    v["recovery"] = recovery_json(d);
    v["checkpoints"] = d.checkpoints.iter().map(checkpoint_json).collect();
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
                "records_in_per_second": t.records_in_per_second,
                "records_out_per_second": t.records_out_per_second,
                "backpressure": t.backpressure,
                "watermark_ms": t.watermark_ms,
                "failure": if t.failure.is_empty() { None } else { Some(&t.failure) },
            })
        })
        .collect();
    v
}

/// A job's latest recovery as JSON (`null` if it had none).
fn recovery_json(d: &v1::JobDetails) -> serde_json::Value {
    match &d.recovery {
        Some(r) => json!({
            "failed_ms": r.failed_ms,
            "running_after_ms": r.running_after_ms,
            "checkpoint_after_ms": r.checkpoint_after_ms,
        }),
        None => serde_json::Value::Null,
    }
}

/// A job's latest recovery in words, if it had one.
fn recovery_line(d: &v1::JobDetails) -> Option<String> {
    let r = d.recovery.as_ref()?;
    let secs = |ms: u64| format!("{:.2} s", ms as f64 / 1000.0);
    let running =
        r.running_after_ms.map_or("not running yet".to_string(), |ms| format!("running again after {}", secs(ms)));
    let checkpoint =
        r.checkpoint_after_ms.map(|ms| format!(", first checkpoint after {}", secs(ms))).unwrap_or_default();
    Some(format!("latest recovery: {running}{checkpoint} (from the failure)"))
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
            if d.bad_records > 0 {
                println!("records that did not decode: {}", d.bad_records);
            }
            if d.restarts > 0 {
                println!("restarts: {} (attempt {})", d.restarts, d.attempt);
            }
            if d.restored_from > 0 {
                println!("restored from checkpoint {}", d.restored_from);
            }
            if let Some(line) = recovery_line(d) {
                println!("{line}");
            }
            if !d.checkpoints.is_empty() {
                let done: Vec<_> =
                    d.checkpoints.iter().filter(|c| c.status() == v1::CheckpointStatus::Completed).collect();
                let failed =
                    d.checkpoints.iter().filter(|c| c.status() == v1::CheckpointStatus::CheckpointFailed).count();
                print!("checkpoints: {} completed, {failed} failed (of the last {})", done.len(), d.checkpoints.len());
                match done.last() {
                    Some(c) => println!("; latest {} took {} ms, {} state", c.id, c.duration_ms, bytes(c.state_bytes)),
                    None => println!(),
                }
            }
            if d.tasks.is_empty() {
                return;
            }
            let mut table = table(
                &["task", "subtask", "state", "task manager", "records in", "records out", "in/s", "failure"],
                &[1, 4, 5, 6],
            );
            for t in &d.tasks {
                table.add_row(vec![
                    t.vertex.clone(),
                    format!("{}/{}", t.subtask + 1, t.parallelism),
                    task_state_name(t.state()).to_string(),
                    t.task_manager_id.clone(),
                    t.records_in.to_string(),
                    t.records_out.to_string(),
                    format!("{:.0}", t.records_in_per_second),
                    t.failure.clone(),
                ]);
            }
            println!("{table}");
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
                    "memory_bytes": t.memory_bytes,
                })).collect::<Vec<_>>(),
                "jobs_running": o.jobs_running,
            })
        ),
        Format::Text => {
            println!("{} task manager(s), {} job(s) running", o.task_managers.len(), o.jobs_running);
            if o.task_managers.is_empty() {
                return;
            }
            let mut table = table(&["id", "address", "slots free", "slots", "memory"], &[2, 3, 4]);
            for t in &o.task_managers {
                let memory = if t.memory_bytes > 0 { bytes(t.memory_bytes) } else { "-".into() };
                table.add_row(vec![
                    t.task_manager_id.clone(),
                    t.rpc_address.clone(),
                    t.slots_free.to_string(),
                    t.slots_total.to_string(),
                    memory,
                ]);
            }
            println!("{table}");
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

fn checkpoint_json(c: &v1::CheckpointInfo) -> serde_json::Value {
    json!({
        "id": c.id,
        "status": checkpoint_status_name(c.status()),
        "trigger_time_ms": c.trigger_time_ms,
        "duration_ms": c.duration_ms,
        "size_bytes": c.size_bytes,
        "state_bytes": c.state_bytes,
        "alignment_ms": c.alignment_ms,
        "sync_ms": c.sync_ms,
        "async_ms": c.async_ms,
        "acked_ms": c.acked_ms,
        "acknowledged": c.acknowledged,
        "tasks": c.tasks,
        "failure": if c.failure.is_empty() { None } else { Some(&c.failure) },
        "savepoint": c.savepoint,
        "location": if c.location.is_empty() { None } else { Some(&c.location) },
    })
}

pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// A job's checkpoint history.
pub fn checkpoints(fmt: Format, d: &v1::JobDetails) {
    match fmt {
        Format::Json => println!(
            "{}",
            json!({
                "job_id": d.summary.as_ref().map(|s| s.job_id.clone()),
                "restarts": d.restarts,
                "restored_from": if d.restored_from > 0 { Some(d.restored_from) } else { None },
                "recovery": recovery_json(d),
                "checkpoints": d.checkpoints.iter().map(checkpoint_json).collect::<Vec<_>>(),
            })
        ),
        Format::Text => {
            if d.checkpoints.is_empty() {
                println!("no checkpoints (the job has none configured, or none was triggered yet)");
                return;
            }
            let mut table = table(
                &[
                    "id",
                    "status",
                    "duration",
                    "uploaded",
                    "state",
                    "alignment",
                    "sync",
                    "async",
                    "acks",
                    "failure / location",
                ],
                &[0, 2, 3, 4, 5, 6, 7, 8],
            );
            for c in &d.checkpoints {
                let id = if c.savepoint { format!("{}s", c.id) } else { c.id.to_string() };
                let note = if c.location.is_empty() { c.failure.clone() } else { format!("savepoint {}", c.location) };
                table.add_row(vec![
                    id,
                    checkpoint_status_name(c.status()).to_string(),
                    format!("{} ms", c.duration_ms),
                    bytes(c.size_bytes),
                    bytes(c.state_bytes),
                    format!("{} ms", c.alignment_ms),
                    format!("{} ms", c.sync_ms),
                    format!("{} ms", c.async_ms),
                    format!("{}/{}", c.acknowledged, c.tasks),
                    note,
                ]);
            }
            println!("{table}");
            if let Some(line) = recovery_line(d) {
                println!("{line}");
            }
        }
    }
}

/// A list of names (an application's jobs).
pub fn names<'a>(fmt: Format, names: impl Iterator<Item = &'a String>) {
    let names: Vec<&String> = names.collect();
    match fmt {
        Format::Json => println!("{}", json!(names)),
        Format::Text => {
            if names.is_empty() {
                println!("no jobs of its own: run a job file");
            }
            for n in names {
                println!("{n}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovery_reads_as_far_as_it_got() {
        let mut d = v1::JobDetails::default();
        assert_eq!(recovery_line(&d), None, "no failure yet");
        assert_eq!(recovery_json(&d), serde_json::Value::Null);
        d.recovery = Some(v1::Recovery { failed_ms: 1, running_after_ms: None, checkpoint_after_ms: None });
        assert_eq!(recovery_line(&d).unwrap(), "latest recovery: not running yet (from the failure)");
        d.recovery = Some(v1::Recovery { failed_ms: 1, running_after_ms: Some(560), checkpoint_after_ms: Some(1704) });
        assert_eq!(
            recovery_line(&d).unwrap(),
            "latest recovery: running again after 0.56 s, first checkpoint after 1.70 s (from the failure)"
        );
        assert_eq!(recovery_json(&d)["checkpoint_after_ms"], 1704);
    }
}
