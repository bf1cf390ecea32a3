//! Savepoints on the job manager's side: the metadata a savepoint's parts
//! become, and the parts each new task of a job started from it reads.

use weir_runtime::keygroup::key_group_range;
use weir_runtime::plan::Plan;
use weir_state::savepoint::{
    SavepointMetadata, SavepointOperator, SavepointSubtask, StateType, SAVEPOINT_FORMAT, SAVEPOINT_VERSION,
};
use weir_types::{CheckpointId, JobId, TaskSnapshot};

/// The metadata of a savepoint of `plan` from every subtask's part.
pub(crate) fn metadata(
    plan: &Plan,
    job_id: &JobId,
    id: CheckpointId,
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
        job_id: job_id.clone(),
        job_name: plan.graph.name.clone(),
        checkpoint_id: id,
        timestamp_ms: trigger_ms,
        max_parallelism: max,
        backend: plan.graph.checkpoint.as_ref().map(|c| c.backend.name().to_string()).unwrap_or_default(),
        stopped,
        operators,
    }
}

/// The savepoint parts a task of vertex `vertex` restores: every subtask's
/// file of every operator of its chain, marked with the parallelism that
/// wrote it (each new subtask then picks its key groups, its own subtask
/// state and all union state).
pub(crate) fn restore_parts(plan: &Plan, sp: &SavepointMetadata, vertex: u32) -> Vec<TaskSnapshot> {
    let mut out = Vec::new();
    for uid in plan.vertex_uids(vertex) {
        let Some(op) = sp.operator(&uid) else { continue };
        for s in &op.subtasks {
            let Some(file) = &s.file else { continue };
            out.push(TaskSnapshot {
                operators: vec![uid.clone()],
                subtask: s.subtask,
                files: vec![file.clone()],
                backend: "savepoint".into(),
                local_names: Vec::new(),
                file_operators: vec![uid.clone()],
                parallelism: op.parallelism,
            });
        }
    }
    out
}
