//! Whether a job can start from a savepoint or a retained checkpoint:
//! key groups, operators that are gone, kinds and state types that changed.

use std::collections::BTreeSet;

use weir_runtime::plan::Plan;
use weir_state::savepoint::SavepointMetadata;
use weir_types::CheckpointMetadata;

/// Checks that a job can start from a retained checkpoint of another job.
/// A checkpoint records which operators each task ran but not which of them
/// hold state or of what type: every operator it names that the job no
/// longer has needs `allow_non_restored`, and types are not compared.
pub(crate) fn check_retained(
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

/// Checks that a job can start from a savepoint. Returns the uids of
/// operators whose state is left behind (only with `allow_non_restored`).
pub(crate) fn check(
    plan: &Plan,
    sp: &SavepointMetadata,
    uri: &str,
    allow_non_restored: bool,
) -> Result<Vec<String>, String> {
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
                Some((_, t)) => {
                    if let Err(why) = plan.factories[i].state_restorable(&st.name, t, &st.type_name) {
                        return Err(format!(
                            "operator `{}`: state `{}` in savepoint {uri} has type `{}` but this job declares `{}`: {why} (an operator whose definition changed this way needs a new uid, with --allow-non-restored-state to drop the old state)",
                            op.uid, st.name, st.type_name, t
                        ));
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::savepoint::{metadata, restore_parts};
    use weir_types::{CheckpointId, FileHandle, JobId};

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
        Plan::new(&g, &weir_runtime::operators::Registry::builtins(), 0).unwrap()
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
        let meta = with_files(metadata(&v1, &JobId::new("job"), CheckpointId(9), 0, true, &[]));
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
        let mut meta = with_files(metadata(&v1, &JobId::new("job"), CheckpointId(9), 0, true, &[]));
        meta.operators.iter_mut().find(|o| o.uid == "counts").unwrap().uid = "old-counts".into();
        let err = check(&v1, &meta, "file:///sp", false).unwrap_err();
        assert!(err.contains("`old-counts`") && err.contains("--allow-non-restored-state"), "{err}");
        assert_eq!(check(&v1, &meta, "file:///sp", true).unwrap(), vec!["old-counts".to_string()]);
        meta.max_parallelism = 64;
        assert!(check(&v1, &meta, "sp", true).unwrap_err().contains("max_parallelism 64"));
    }
}
