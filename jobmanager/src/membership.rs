//! Task manager membership: who is registered, with how many slots, which
//! jobs hold which of them, and who has gone silent. Pure bookkeeping: the
//! caller passes the time in and carries out what the answers imply (a lost
//! task manager's jobs fail over; see [`crate::cluster`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use weir_types::JobId;

use crate::scheduler::SlotOffer;

/// A registered task manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// Its id.
    pub(crate) id: String,
    /// Where it serves gRPC.
    pub(crate) address: String,
    /// Slots it offers.
    pub(crate) slots: u32,
    /// Slots held, by job.
    allocated: BTreeMap<JobId, u32>,
    last_heartbeat: Instant,
    /// The last heartbeat in wall-clock time (for display).
    pub(crate) last_heartbeat_wall: SystemTime,
    /// Resident memory it reported with its last heartbeat (0: unknown).
    pub(crate) memory_bytes: u64,
}

impl Member {
    /// Slots no job holds.
    pub(crate) fn free(&self) -> u32 {
        self.slots.saturating_sub(self.allocated.values().sum())
    }
}

/// What a registration meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Registration {
    /// A task manager not known before.
    New,
    /// A known task manager registered again: it restarted, and every task
    /// it was running is gone.
    Restarted,
}

/// The task managers of a cluster.
#[derive(Debug, Default)]
pub(crate) struct Membership {
    members: BTreeMap<String, Member>,
}

impl Membership {
    /// Records a registration at `now`. A task manager that was known is
    /// replaced (its slots are free again).
    pub(crate) fn register(
        &mut self,
        id: &str,
        address: &str,
        slots: u32,
        now: Instant,
        wall: SystemTime,
    ) -> Registration {
        let member = Member {
            id: id.to_string(),
            address: address.to_string(),
            slots,
            allocated: BTreeMap::new(),
            last_heartbeat: now,
            last_heartbeat_wall: wall,
            memory_bytes: 0,
        };
        match self.members.insert(id.to_string(), member) {
            Some(_) => Registration::Restarted,
            None => Registration::New,
        }
    }

    /// Records a heartbeat; `false` if the task manager is not known (it
    /// must register again).
    pub(crate) fn heartbeat(&mut self, id: &str, memory_bytes: u64, now: Instant, wall: SystemTime) -> bool {
        match self.members.get_mut(id) {
            Some(m) => {
                m.last_heartbeat = now;
                m.last_heartbeat_wall = wall;
                m.memory_bytes = memory_bytes;
                true
            }
            None => false,
        }
    }

    /// Task managers silent for longer than `timeout` at `now`.
    pub(crate) fn silent(&self, now: Instant, timeout: Duration) -> Vec<String> {
        self.members
            .values()
            .filter(|m| now.saturating_duration_since(m.last_heartbeat) > timeout)
            .map(|m| m.id.clone())
            .collect()
    }

    /// Forgets a task manager (lost); returns what was known of it.
    pub(crate) fn remove(&mut self, id: &str) -> Option<Member> {
        self.members.remove(id)
    }

    /// A task manager.
    pub(crate) fn get(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    /// Whether a task manager is registered.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.members.contains_key(id)
    }

    /// Every task manager, in id order.
    pub(crate) fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Number of task managers.
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Free slots per task manager, for the scheduler.
    pub(crate) fn offers(&self) -> Vec<SlotOffer> {
        self.members.values().map(|m| SlotOffer { task_manager: m.id.clone(), free: m.free() }).collect()
    }

    /// `job` takes one slot on each task manager of `slots` (one entry per slot).
    pub(crate) fn allocate(&mut self, job: &JobId, slots: &[String]) {
        for tm in slots {
            if let Some(m) = self.members.get_mut(tm) {
                *m.allocated.entry(job.clone()).or_default() += 1;
            }
        }
    }

    /// `job` gives back every slot it holds.
    pub(crate) fn release(&mut self, job: &JobId) {
        for m in self.members.values_mut() {
            m.allocated.remove(job);
        }
    }

    /// Slots of all task managers, and how many of them are free.
    pub(crate) fn slots(&self) -> (u32, u32) {
        self.members.values().fold((0, 0), |(t, f), m| (t + m.slots, f + m.free()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> (Instant, SystemTime) {
        (Instant::now(), SystemTime::now())
    }

    #[test]
    fn a_second_registration_means_a_restart_and_frees_the_slots() {
        let (now, wall) = t0();
        let mut m = Membership::default();
        assert_eq!(m.register("a", "http://a", 2, now, wall), Registration::New);
        m.allocate(&JobId::new("j"), &["a".into(), "a".into()]);
        assert_eq!(m.slots(), (2, 0));
        assert_eq!(m.register("a", "http://a2", 3, now, wall), Registration::Restarted);
        assert_eq!(m.slots(), (3, 3));
        assert_eq!(m.get("a").unwrap().address, "http://a2");
    }

    #[test]
    fn silence_longer_than_the_timeout_is_reported_and_heartbeats_reset_it() {
        let (now, wall) = t0();
        let mut m = Membership::default();
        m.register("a", "http://a", 1, now, wall);
        m.register("b", "http://b", 1, now, wall);
        let timeout = Duration::from_secs(5);
        assert!(m.silent(now + Duration::from_secs(5), timeout).is_empty(), "exactly the timeout is not yet silent");
        assert!(m.heartbeat("b", 1 << 20, now + Duration::from_secs(4), wall));
        assert_eq!(m.silent(now + Duration::from_secs(6), timeout), vec!["a".to_string()]);
        assert!(!m.heartbeat("ghost", 0, now, wall), "an unknown task manager must register again");
        assert!(m.remove("a").is_some());
        assert!(m.silent(now + Duration::from_secs(6), timeout).is_empty());
    }

    #[test]
    fn allocations_are_per_job_and_released_per_job() {
        let (now, wall) = t0();
        let mut m = Membership::default();
        m.register("a", "http://a", 2, now, wall);
        m.register("b", "http://b", 2, now, wall);
        let (j1, j2) = (JobId::new("1"), JobId::new("2"));
        m.allocate(&j1, &["a".into(), "b".into()]);
        m.allocate(&j2, &["a".into()]);
        let free: Vec<u32> = m.offers().iter().map(|o| o.free).collect();
        assert_eq!(free, [0, 1]);
        m.release(&j1);
        let free: Vec<u32> = m.offers().iter().map(|o| o.free).collect();
        assert_eq!(free, [1, 2]);
        m.allocate(&j1, &["ghost".into()]);
        assert_eq!(m.slots(), (4, 3), "slots on unknown task managers are ignored");
    }
}
