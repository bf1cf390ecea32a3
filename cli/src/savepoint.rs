//! `weir savepoint`, `weir stop --savepoint`, `weir savepoint inspect` and
//! `weir savepoint dispose`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use weir_proto::v1;
use weir_runtime::operators::Registry;
use weir_state::savepoint::Savepoint;
use weir_state::S3Options;

use crate::client::{self, Client};
use crate::output::{bytes, Format};
use crate::progress::{with_progress, Progress};

/// Takes a savepoint of a running job (stopping it if `stop`) and prints its location.
pub async fn trigger(
    c: &mut Client,
    fmt: Format,
    job_id: &str,
    target: Option<String>,
    stop: bool,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let deadline = tokio::time::Instant::now() + timeout;
    let req = v1::TriggerSavepointRequest { job_id: job_id.to_string(), target: target.unwrap_or_default(), stop };
    let label =
        if stop { format!("stopping job {job_id} with a savepoint") } else { format!("savepoint of job {job_id}") };
    let sp = tokio::time::timeout_at(deadline, with_progress(fmt, &label, c.trigger_savepoint(req)))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no savepoint of job {job_id} within {}: the job manager may still complete it (see `weir checkpoints {job_id}`)",
                humantime::format_duration(timeout)
            )
        })?
        .map_err(client::status)?
        .into_inner();
    let mut end = None;
    if stop {
        // Sources stopped at the savepoint; the job ends once sinks committed.
        let progress = Progress::start(fmt, "waiting for the job to finish");
        let d =
            tokio::time::timeout_at(deadline, client::wait_for_end(c, job_id, &progress)).await.map_err(|_| {
                progress.clear();
                anyhow::anyhow!(
                    "savepoint {} taken, but job {job_id} did not end within {}: see `weir status {job_id}`",
                    sp.location,
                    humantime::format_duration(timeout)
                )
            })??;
        end = Some(client::state(&d));
    }
    match fmt {
        Format::Json => println!(
            "{}",
            json!({
                "job_id": job_id,
                "location": sp.location,
                "checkpoint_id": sp.checkpoint_id,
                "state_bytes": sp.state_bytes,
                "job_state": end.map(|s| s.as_str_name()),
            })
        ),
        Format::Text => {
            println!("{}", sp.location);
            if let Some(s) = end {
                eprintln!("job {job_id} ended {}", s.as_str_name());
            }
        }
    }
    Ok(match end {
        Some(s) if s != v1::JobState::Finished => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}

/// Per state of an operator: entries, bytes and readable entries.
#[derive(Default)]
struct StateSummary {
    entries: u64,
    bytes: u64,
    described: Vec<serde_json::Value>,
}

/// Prints what a savepoint holds.
pub async fn inspect(fmt: Format, uri: &str, registry: &Registry) -> anyhow::Result<ExitCode> {
    let sp = with_progress(fmt, "reading the savepoint", Savepoint::load(uri, &S3Options::default())).await?;
    let meta = sp.metadata();
    let entries = sp.entries_by_operator().await?;
    let mut operators = Vec::new();
    for op in &meta.operators {
        let mut states: BTreeMap<String, StateSummary> = BTreeMap::new();
        for e in entries.get(&op.uid).into_iter().flatten() {
            let s = states.entry(e.state.clone()).or_default();
            s.entries += 1;
            let value = e.value.as_deref().unwrap_or_default();
            s.bytes += (e.key.len() + value.len()) as u64;
            let factory = registry.get(&op.kind);
            if let Some(d) = factory.and_then(|f| f.describe_entry(&e.state, &e.key, value)) {
                if !s.described.contains(&d) {
                    s.described.push(d);
                }
            }
        }
        let states: Vec<serde_json::Value> = states
            .into_iter()
            .map(|(name, s)| {
                let type_name = op.states.iter().find(|t| t.name == name).map(|t| t.type_name.clone());
                json!({"name": name, "type": type_name, "entries": s.entries, "bytes": s.bytes, "values": s.described})
            })
            .collect();
        operators.push(json!({
            "uid": op.uid,
            "kind": op.kind,
            "parallelism": op.parallelism,
            "states": states,
            "subtasks": op.subtasks.iter().map(|s| json!({
                "subtask": s.subtask,
                "key_groups": s.key_groups,
                "file": s.file.as_ref().map(|f| &f.path),
                "bytes": s.file.as_ref().map_or(0, |f| f.size),
            })).collect::<Vec<_>>(),
        }));
    }
    let doc = json!({
        "location": sp.uri(),
        "format": meta.format,
        "version": meta.version,
        "job_id": meta.job_id,
        "job_name": meta.job_name,
        "checkpoint_id": meta.checkpoint_id,
        "timestamp_ms": meta.timestamp_ms,
        "max_parallelism": meta.max_parallelism,
        "backend": meta.backend,
        "stopped": meta.stopped,
        "state_bytes": meta.state_bytes(),
        "operators": operators,
    });
    match fmt {
        Format::Json => println!("{doc}"),
        Format::Text => print_inspection(&doc),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_inspection(doc: &serde_json::Value) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or_default();
    println!("savepoint {}", s(&doc["location"]));
    println!(
        "  format {} v{}, job {} ({}), checkpoint {}, backend {}, max parallelism {}, {}{}",
        s(&doc["format"]),
        n(&doc["version"]),
        s(&doc["job_name"]),
        s(&doc["job_id"]),
        n(&doc["checkpoint_id"]),
        s(&doc["backend"]),
        n(&doc["max_parallelism"]),
        bytes(n(&doc["state_bytes"])),
        if doc["stopped"].as_bool() == Some(true) { ", taken by stop" } else { "" }
    );
    for op in doc["operators"].as_array().into_iter().flatten() {
        println!("operator {} ({}), parallelism {}", s(&op["uid"]), s(&op["kind"]), n(&op["parallelism"]));
        for st in op["states"].as_array().into_iter().flatten() {
            let type_name = st["type"].as_str().map(|t| format!(" : {t}")).unwrap_or_default();
            println!(
                "  state {}{type_name}: {} entries, {}",
                s(&st["name"]),
                n(&st["entries"]),
                bytes(n(&st["bytes"]))
            );
            for v in st["values"].as_array().into_iter().flatten() {
                let line: Vec<String> = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                    .collect();
                println!("    {}", line.join(" "));
            }
        }
        for sub in op["subtasks"].as_array().into_iter().flatten() {
            let groups = &sub["key_groups"];
            println!(
                "  subtask {}: key groups [{}, {}), {}",
                n(&sub["subtask"]),
                n(&groups[0]),
                n(&groups[1]),
                if sub["file"].is_null() { "no state".to_string() } else { bytes(n(&sub["bytes"])) }
            );
        }
    }
}

/// Deletes a savepoint.
pub async fn dispose(fmt: Format, uri: &str) -> anyhow::Result<ExitCode> {
    let files = Savepoint::dispose(uri, &S3Options::default()).await?;
    match fmt {
        Format::Json => println!("{}", json!({"location": uri, "disposed": true, "files": files})),
        Format::Text => println!("disposed savepoint {uri} ({files} files)"),
    }
    Ok(ExitCode::SUCCESS)
}
