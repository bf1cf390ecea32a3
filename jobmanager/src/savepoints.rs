//! Savepoints on the job manager's side: the metadata a savepoint's parts
//! become, whether a savepoint fits a job about to start from it, and which
//! parts each new task restores.
//!
//! State is matched by operator uid, never by position or chain: a job may
//! add, remove and re-chain operators and change parallelism, and each
//! operator it kept finds its state.

use std::collections::BTreeSet;
use std::sync::Arc;

use weir_runtime::graph::Plan;
use weir_runtime::keygroup::key_group_range;
use weir_state::savepoint::{
    Savepoint, SavepointMetadata, SavepointOperator, SavepointSubtask, StateType, SAVEPOINT_FORMAT, SAVEPOINT_VERSION,
};
use weir_state::{CheckpointMetadata, CheckpointStorage, S3Options, TaskSnapshot};

use crate::cluster::{RestorePoint, RetainedCheckpoint};

/// Loads and verifies what `weir run --from-savepoint URI` names: a
/// savepoint directory, or a retained checkpoint's directory
/// (`<storage>/<job id>/chk-<id>`).
pub async fn load_start(uri: &str, s3: &S3Options) -> Result<RestorePoint, String> {
    let uri = uri.trim_end_matches('/');
    if let Some((root, job, id)) = CheckpointStorage::split_checkpoint_uri(uri) {
        if let Some(dir) = uri.strip_prefix("file://") {
            if !std::path::Path::new(dir).is_dir() {
                return Err(format!("checkpoint {uri} is unusable: no such directory"));
            }
        }
        let storage = CheckpointStorage::from_uri_with(&root, s3).map_err(|e| e.to_string())?;
        let meta = storage.load(&job, id).await.map_err(|e| e.to_string())?;
        return Ok(RestorePoint::Retained(Arc::new(RetainedCheckpoint { uri: uri.to_string(), root, meta })));
    }
    let sp = Savepoint::load(uri, s3).await.map_err(|e| e.to_string())?;
    Ok(RestorePoint::Savepoint(Arc::new(sp)))
}

/// Checks that a job can start from a retained checkpoint of another job.
/// A checkpoint records which operators each task ran but not which of them
/// hold state or of what type: every operator it names that the job no
/// longer has needs `allow_non_restored`, and types are not compared.
pub fn check_retained(
    plan: &Plan,
    meta: &CheckpointMetadata,
    uri: &str,
    allow_non_restored: bool,
) -> Result<Vec<String>, String> {
    if meta.max_parallelism != 0 && meta.max_parallelism != plan.graph.max_parallelism {
        return Err(format!(
            "checkpoint {uri} was taken with max_parallelism {} and the job has {}: keyed state is split into that many key groups and cannot be re-split; set max_parallelism: {} in the job",
            meta.max_parallelism, plan.graph.max_parallelism, meta.max_parallelism
        ));
    }
    let named: BTreeSet<&String> = meta.tasks.iter().flat_map(|t| t.operators.iter()).collect();
    let gone: Vec<String> =
        named.into_iter().filter(|u| plan.graph.operator_index(u).is_none()).map(|u| u.to_string()).collect();
    if !gone.is_empty() && !allow_non_restored {
        return Err(format!(
            "checkpoint {uri} has operators this job does not have ({}); a checkpoint does not record which of them hold state, so pass --allow-non-restored-state to start without theirs",
            gone.iter().map(|u| format!("`{u}`")).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(gone)
}

/// The parts of a retained checkpoint a task of vertex `vertex` restores:
/// every old task that ran one of its operators (restoring entries filters
/// them by operator), marked with the parallelism of the old vertex.
pub fn retained_parts(plan: &Plan, meta: &CheckpointMetadata, vertex: u32) -> Vec<TaskSnapshot> {
    let uids = plan.vertex_uids(vertex);
    meta.tasks
        .iter()
        .filter(|t| t.operators.iter().any(|u| uids.contains(u)))
        .map(|t| {
            let mut part = t.clone();
            part.parallelism = meta.tasks.iter().filter(|o| o.operators == t.operators).count() as u32;
            part
        })
        .collect()
}

/// The metadata of a savepoint of `plan` from every subtask's part.
pub fn metadata(
    plan: &Plan,
    job_id: &str,
    id: u64,
    trigger_ms: i64,
    stopped: bool,
    parts: &[((u32, u32), TaskSnapshot)],
) -> SavepointMetadata {
    let max = plan.graph.max_parallelism;
    let operators = plan
        .graph
        .operators
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let vertex = plan.vertices.iter().find(|v| v.operators.contains(&i)).map(|v| v.id);
            let subtasks = (0..op.parallelism)
                .map(|s| {
                    let file =
                        parts.iter().filter(|((v, sub), _)| Some(*v) == vertex && *sub == s).find_map(|(_, snap)| {
                            let at = snap.file_operators.iter().position(|u| *u == op.uid)?;
                            snap.files.get(at).cloned()
                        });
                    let groups = key_group_range(max, op.parallelism, s);
                    SavepointSubtask { subtask: s, key_groups: [groups.start, groups.end], file }
                })
                .collect();
            SavepointOperator {
                uid: op.uid.clone(),
                kind: op.kind.clone(),
                parallelism: op.parallelism,
                states: plan.state_types[i]
                    .iter()
                    .map(|(name, t)| StateType { name: name.clone(), type_name: t.clone() })
                    .collect(),
                subtasks,
            }
        })
        .collect();
    SavepointMetadata {
        format: SAVEPOINT_FORMAT.into(),
        version: SAVEPOINT_VERSION,
        job_id: job_id.to_string(),
        job_name: plan.graph.name.clone(),
        checkpoint_id: id,
        timestamp_ms: trigger_ms,
        max_parallelism: max,
        backend: plan.graph.checkpoint.as_ref().map(|c| c.backend.name().to_string()).unwrap_or_default(),
        stopped,
        operators,
    }
}

/// Checks that a job can start from a savepoint. Returns the uids of
/// operators whose state is left behind (only with `allow_non_restored`).
pub fn check(plan: &Plan, sp: &SavepointMetadata, uri: &str, allow_non_restored: bool) -> Result<Vec<String>, String> {
    if sp.max_parallelism != plan.graph.max_parallelism {
        return Err(format!(
            "savepoint {uri} was taken with max_parallelism {} and the job has {}: keyed state is split into that many key groups and cannot be re-split; set max_parallelism: {} in the job",
            sp.max_parallelism, plan.graph.max_parallelism, sp.max_parallelism
        ));
    }
    let mut dropped = Vec::new();
    for saved in sp.operators.iter().filter(|o| o.has_state()) {
        let Some(i) = plan.graph.operator_index(&saved.uid) else {
            if allow_non_restored {
                dropped.push(saved.uid.clone());
                continue;
            }
            return Err(format!(
                "savepoint {uri} has state of operator `{}` ({}), which this job does not have; restore it under the same uid, or pass --allow-non-restored-state to start without that state",
                saved.uid, saved.kind
            ));
        };
        let op = &plan.graph.operators[i];
        if op.kind != saved.kind {
            return Err(format!(
                "operator `{}` is a {} in this job but a {} in savepoint {uri}: state does not restore across operator kinds; give the operator a new uid (and pass --allow-non-restored-state to drop the old state)",
                op.uid, op.kind, saved.kind
            ));
        }
        let declared = &plan.state_types[i];
        for st in &saved.states {
            match declared.iter().find(|(name, _)| *name == st.name) {
                Some((_, t)) if *t == st.type_name => {}
                Some((_, t)) => {
                    return Err(format!(
                        "operator `{}`: state `{}` in savepoint {uri} has type `{}` but this job declares `{}`; the two are incompatible (an operator whose definition changed this way needs a new uid, with --allow-non-restored-state to drop the old state)",
                        op.uid, st.name, st.type_name, t
                    ))
                }
                None if !declared.is_empty() => {
                    let now: Vec<String> = declared.iter().map(|(n, t)| format!("`{n}` ({t})")).collect();
                    return Err(format!(
                        "operator `{}`: state `{}` ({}) in savepoint {uri} is not a state of the operator in this job, which keeps {}; give the operator a new uid (and pass --allow-non-restored-state to drop the old state)",
                        op.uid,
                        st.name,
                        st.type_name,
                        now.join(", ")
                    ));
                }
                None => {}
            }
        }
    }
    Ok(dropped)
}

/// The savepoint parts a task of vertex `vertex` restores: every subtask's
/// file of every operator of its chain, marked with the parallelism that
/// wrote it (each new subtask then picks its key groups, its own subtask
/// state and all union state).
pub fn restore_parts(plan: &Plan, sp: &SavepointMetadata, vertex: u32) -> Vec<TaskSnapshot> {
    let mut out = Vec::new();
    for uid in plan.vertex_uids(vertex) {
        let Some(op) = sp.operator(&uid) else { continue };
        for s in &op.subtasks {
            let Some(file) = &s.file else { continue };
            out.push(TaskSnapshot {
                operators: vec![uid.clone()],
                subtask: s.subtask,
                files: vec![file.clone()],
                inline: serde_json::Value::Null,
                backend: "savepoint".into(),
                local_names: Vec::new(),
                file_operators: vec![uid.clone()],
                parallelism: op.parallelism,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_state::FileHandle;

    fn plan(window: &str, extra_filter: bool, parallelism: u32) -> Plan {
        let (filter, first_edge) = if extra_filter {
            (
                "  - {uid: only-a, kind: filter, config: {predicate: \"name <> 'x'\"}}\n",
                "  - {from: gen, to: only-a}\n  - {from: only-a, to: counts, partition: hash, key: [name]}\n",
            )
        } else {
            ("", "  - {from: gen, to: counts, partition: hash, key: [name]}\n")
        };
        let yaml = format!(
            "name: counts\nparallelism: {parallelism}\noperators:\n  - {{uid: gen, kind: values, config: {{schema: [{{name: name, type: string}}, {{name: ts, type: int64}}], rows: []}}}}\n{filter}  - {{uid: counts, kind: window, config: {{key: [name], timestamp_column: ts, window: {window}, aggregates: [{{fn: count, as: n}}]}}}}\n  - {{uid: out, kind: discard}}\nedges:\n{first_edge}  - {{from: counts, to: out}}\n"
        );
        let g = weir_runtime::spec::parse_job_yaml(&yaml).unwrap();
        Plan::new(&g, 0).unwrap()
    }

    fn with_files(mut meta: SavepointMetadata) -> SavepointMetadata {
        for op in meta.operators.iter_mut().filter(|o| o.uid == "counts") {
            for s in &mut op.subtasks {
                s.file = Some(FileHandle { path: format!("counts-{}.state", s.subtask), size: 1, crc32: 0 });
            }
        }
        meta
    }

    #[test]
    fn state_follows_uids_across_changed_jobs() {
        let v1 = plan("{type: tumbling, size: 1m}", false, 2);
        let meta = with_files(metadata(&v1, "job", 9, 0, true, &[]));
        let counts = meta.operator("counts").unwrap();
        assert_eq!(counts.subtasks.iter().map(|s| s.key_groups).collect::<Vec<_>>(), vec![[0, 64], [64, 128]]);
        assert!(counts.states[0].type_name.starts_with("tumbling(size=1m) by [name: Utf8] of [count(*)]"));

        // Version 2: a filter added, parallelism 3: the window's parts go to its new vertex.
        let v2 = plan("{type: tumbling, size: 1m}", true, 3);
        assert_eq!(check(&v2, &meta, "sp", false).unwrap(), Vec::<String>::new());
        let vertex = v2.vertex_of("counts").unwrap().id;
        let parts = restore_parts(&v2, &meta, vertex);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.parallelism == 2 && p.operators == vec!["counts".to_string()]));

        // A changed window under the same uid is refused, naming both types.
        let five = plan("{type: tumbling, size: 5m}", false, 2);
        let err = check(&five, &meta, "sp", true).unwrap_err();
        assert!(err.contains("`counts`") && err.contains("size=1m") && err.contains("size=5m"), "{err}");
        let session = plan("{type: session, gap: 1m}", false, 2);
        let err = check(&session, &meta, "sp", false).unwrap_err();
        assert!(err.contains("`windows`") && err.contains("sessions"), "{err}");
    }

    #[test]
    fn state_of_a_removed_operator_needs_the_flag() {
        let v1 = plan("{type: tumbling, size: 1m}", false, 2);
        let mut meta = with_files(metadata(&v1, "job", 9, 0, true, &[]));
        meta.operators.iter_mut().find(|o| o.uid == "counts").unwrap().uid = "old-counts".into();
        let err = check(&v1, &meta, "file:///sp", false).unwrap_err();
        assert!(err.contains("`old-counts`") && err.contains("--allow-non-restored-state"), "{err}");
        assert_eq!(check(&v1, &meta, "file:///sp", true).unwrap(), vec!["old-counts".to_string()]);
        meta.max_parallelism = 64;
        assert!(check(&v1, &meta, "sp", true).unwrap_err().contains("max_parallelism 64"));
    }
}
