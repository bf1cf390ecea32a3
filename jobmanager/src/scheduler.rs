//! Slot allocation and task placement: pure decisions, no I/O.
//!
//! Slot sharing: slot `i` of a job holds subtask `i` of every vertex whose
//! parallelism exceeds `i` (a pipeline slice, as in Flink), so a job needs as
//! many slots as its largest vertex parallelism. Slots are taken round-robin
//! across task managers so that subtasks spread over the cluster.

use weir_runtime::plan::Plan;

/// A task manager's free capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotOffer {
    /// Task manager id.
    pub task_manager: String,
    /// Free slots on it.
    pub free: u32,
}

/// Picks `needed` slots, round-robin over task managers (in id order).
/// Returns the task manager of each slot, or `None` if there are too few.
pub fn allocate(offers: &[SlotOffer], needed: u32) -> Option<Vec<String>> {
    let total: u32 = offers.iter().map(|o| o.free).sum();
    if total < needed {
        return None;
    }
    let mut offers: Vec<SlotOffer> = offers.iter().filter(|o| o.free > 0).cloned().collect();
    offers.sort_by(|a, b| a.task_manager.cmp(&b.task_manager));
    let mut slots = Vec::with_capacity(needed as usize);
    while slots.len() < needed as usize {
        for o in offers.iter_mut().filter(|o| o.free > 0) {
            if slots.len() == needed as usize {
                break;
            }
            o.free -= 1;
            slots.push(o.task_manager.clone());
        }
    }
    Some(slots)
}

/// One subtask's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPlacement {
    /// Vertex (chain) index.
    pub vertex: u32,
    /// Subtask index.
    pub subtask: u32,
    /// Task manager id.
    pub task_manager: String,
}

/// Places every subtask of `plan` on the slots of [`allocate`].
pub fn place(plan: &Plan, slots: &[String]) -> Vec<TaskPlacement> {
    let mut out = Vec::new();
    for v in &plan.vertices {
        for s in 0..v.parallelism {
            out.push(TaskPlacement { vertex: v.id, subtask: s, task_manager: slots[s as usize].clone() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_runtime::builder::JobBuilder;

    fn offer(tm: &str, free: u32) -> SlotOffer {
        SlotOffer { task_manager: tm.into(), free }
    }

    #[test]
    fn spreads_slots_round_robin() {
        let slots = allocate(&[offer("b", 2), offer("a", 2)], 4).unwrap();
        assert_eq!(slots, ["a", "b", "a", "b"]);
        let slots = allocate(&[offer("a", 3), offer("b", 1)], 4).unwrap();
        assert_eq!(slots, ["a", "b", "a", "a"]);
    }

    #[test]
    fn refuses_when_short_of_slots() {
        assert_eq!(allocate(&[offer("a", 1), offer("b", 2)], 4), None);
        assert_eq!(allocate(&[], 1), None);
        assert_eq!(allocate(&[], 0), Some(vec![]));
    }

    #[test]
    fn slot_i_holds_subtask_i_of_every_vertex() {
        let mut b = JobBuilder::new("j");
        b.default_parallelism(4);
        b.operator("gen", "datagen", serde_json::json!({"events": 1})).disable_chaining();
        b.operator("sink", "discard", serde_json::json!({})).parallelism(2);
        b.rebalance("gen", "sink");
        let plan = Plan::new(&b.build(), &weir_runtime::operators::Registry::builtins(), 0).unwrap();
        assert_eq!(plan.slots_needed(), 4);
        let slots = allocate(&[offer("a", 2), offer("b", 2)], plan.slots_needed()).unwrap();
        let placed = place(&plan, &slots);
        assert_eq!(placed.len(), 6);
        let on = |v: u32, s: u32| placed.iter().find(|p| p.vertex == v && p.subtask == s).unwrap().task_manager.clone();
        assert_eq!((on(0, 0), on(0, 1), on(0, 2), on(0, 3)), ("a".into(), "b".into(), "a".into(), "b".into()));
        assert_eq!((on(1, 0), on(1, 1)), ("a".into(), "b".into()));
    }
}
