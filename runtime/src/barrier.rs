//! Checkpoint barriers and their alignment across input channels.
//!
//! Sources emit barrier *n* in-band after the records that precede
//! checkpoint *n*. A task with several input channels must take its snapshot
//! for *n* only once barrier *n* has arrived on every channel:
//!
//! - **exactly-once** (aligned): a channel that delivered barrier *n* is
//!   blocked — what follows on it is held back — until the barrier has arrived
//!   on every other open channel. The snapshot then reflects exactly the
//!   records before the barriers, and the held elements are released in order.
//! - **at-least-once**: nothing is held back; the snapshot is taken when the
//!   last barrier arrives, so it may include records that follow the barrier on
//!   the faster channels (replayed again after a restore).
//!
//! A channel that ended counts as aligned. A newer barrier arriving while an
//! older checkpoint is still aligning aborts the older one. The [`Aligner`] is
//! pure: it never blocks, it only decides what to deliver and when to
//! checkpoint, and leaves credits to the caller (a held element keeps its
//! credit until it is delivered, so a blocked channel backpressures its
//! producer instead of buffering without bound).

use std::collections::{BTreeMap, VecDeque};

pub use weir_types::CheckpointId;

/// How barriers are aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointMode {
    /// Aligned barriers: every record is reflected in state exactly once.
    ExactlyOnce,
    /// No alignment: lower latency, records may be replayed after a restore.
    AtLeastOnce,
}

/// An element of one channel, as the aligner sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Item<T> {
    /// Anything that is not a barrier or the end (data, watermarks, ...).
    Element(T),
    /// The channel ended.
    End,
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action<T> {
    /// Process this item of channel `.0` now (and return its credit).
    Deliver(usize, Item<T>),
    /// Every open channel delivered barrier `.0`: snapshot, then forward the barrier.
    Checkpoint(CheckpointId),
    /// The alignment of `.0` was given up for a newer checkpoint.
    Aborted(CheckpointId),
}

/// Barrier alignment over a fixed set of channels.
#[derive(Debug)]
pub struct Aligner<T> {
    mode: CheckpointMode,
    ended: Vec<bool>,
    /// The checkpoint being aligned and which channels delivered its barrier.
    current: Option<(CheckpointId, Vec<bool>)>,
    /// Per channel, what arrived after its barrier (exactly-once only).
    held: Vec<VecDeque<Held<T>>>,
    /// At-least-once: every checkpoint whose barriers are arriving.
    pending: BTreeMap<CheckpointId, Vec<bool>>,
    last: Option<CheckpointId>,
}

#[derive(Debug)]
enum Held<T> {
    Item(Item<T>),
    Barrier(CheckpointId),
}

impl<T> Aligner<T> {
    /// An aligner over `channels` channels.
    pub fn new(channels: usize, mode: CheckpointMode) -> Self {
        Self {
            mode,
            ended: vec![false; channels],
            current: None,
            held: (0..channels).map(|_| VecDeque::new()).collect(),
            pending: BTreeMap::new(),
            last: None,
        }
    }

    /// The oldest checkpoint whose barriers are still arriving, if any.
    pub fn aligning(&self) -> Option<CheckpointId> {
        self.current.as_ref().map(|(id, _)| *id).or_else(|| self.pending.keys().next().copied())
    }

    fn blocked(&self, ch: usize) -> bool {
        self.mode == CheckpointMode::ExactlyOnce && self.current.as_ref().is_some_and(|(_, seen)| seen[ch])
    }

    /// An element arrived on channel `ch`.
    pub fn element(&mut self, ch: usize, item: T, out: &mut Vec<Action<T>>) {
        self.item(ch, Item::Element(item), out);
    }

    /// Channel `ch` ended.
    pub fn end(&mut self, ch: usize, out: &mut Vec<Action<T>>) {
        self.item(ch, Item::End, out);
    }

    fn item(&mut self, ch: usize, item: Item<T>, out: &mut Vec<Action<T>>) {
        if self.blocked(ch) {
            self.held[ch].push_back(Held::Item(item));
            return;
        }
        let end = matches!(item, Item::End);
        out.push(Action::Deliver(ch, item));
        if end {
            self.ended[ch] = true;
            self.try_complete(out);
        }
    }

    /// Barrier `id` arrived on channel `ch`.
    pub fn barrier(&mut self, ch: usize, id: CheckpointId, out: &mut Vec<Action<T>>) {
        if self.blocked(ch) {
            self.held[ch].push_back(Held::Barrier(id));
            return;
        }
        if self.last.is_some_and(|last| id <= last) {
            return; // a barrier of a checkpoint already taken or given up
        }
        if self.mode == CheckpointMode::AtLeastOnce {
            let n = self.ended.len();
            self.pending.entry(id).or_insert_with(|| vec![false; n])[ch] = true;
            return self.try_complete(out);
        }
        match &self.current {
            Some((cur, _)) if *cur > id => return,
            Some((cur, _)) if *cur < id => {
                let old = *cur;
                out.push(Action::Aborted(old));
                self.last = Some(old);
                self.current = None;
                self.release(out);
                // Releasing may itself have started (or finished) this checkpoint.
                return self.barrier(ch, id, out);
            }
            _ => {}
        }
        let n = self.ended.len();
        let (_, seen) = self.current.get_or_insert_with(|| (id, vec![false; n]));
        seen[ch] = true;
        self.try_complete(out);
    }

    fn try_complete(&mut self, out: &mut Vec<Action<T>>) {
        if self.mode == CheckpointMode::AtLeastOnce {
            // The newest checkpoint complete on every channel wins; older ones are given up.
            let done = self.pending.iter().rev().find(|(_, seen)| seen.iter().zip(&self.ended).all(|(&s, &e)| s || e));
            if let Some((&id, _)) = done {
                let older: Vec<CheckpointId> = self.pending.range(..id).map(|(k, _)| *k).collect();
                out.extend(older.into_iter().map(Action::Aborted));
                self.pending = self.pending.split_off(&CheckpointId(id.0 + 1));
                out.push(Action::Checkpoint(id));
                self.last = Some(id);
            }
            return;
        }
        let Some((id, seen)) = &self.current else { return };
        if !seen.iter().zip(&self.ended).all(|(&s, &e)| s || e) {
            return;
        }
        let id = *id;
        out.push(Action::Checkpoint(id));
        self.last = Some(id);
        self.current = None;
        self.release(out);
    }

    /// Replays held elements, channel by channel, in arrival order.
    fn release(&mut self, out: &mut Vec<Action<T>>) {
        for ch in 0..self.held.len() {
            while !self.blocked(ch) {
                let Some(h) = self.held[ch].pop_front() else { break };
                match h {
                    Held::Item(item) => self.item(ch, item, out),
                    Held::Barrier(id) => self.barrier(ch, id, out),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Per channel: values, with barriers 1..=m at the given cut points.
    #[derive(Debug, Clone)]
    struct Channel {
        values: Vec<u64>,
        cuts: Vec<usize>,
    }

    enum Ev {
        Value(u64),
        Barrier(u64),
        End,
    }

    fn events(c: &Channel) -> Vec<Ev> {
        let mut out = Vec::new();
        let mut b = 0;
        for (i, &v) in c.values.iter().enumerate() {
            while b < c.cuts.len() && c.cuts[b] == i {
                b += 1;
                out.push(Ev::Barrier(b as u64));
            }
            out.push(Ev::Value(v));
        }
        while b < c.cuts.len() {
            b += 1;
            out.push(Ev::Barrier(b as u64));
        }
        out.push(Ev::End);
        out
    }

    fn channel(m: usize) -> impl Strategy<Value = Channel> {
        (prop::collection::vec(1u64..1000, 0..20), prop::collection::vec(0usize..21, m)).prop_map(
            |(values, mut cuts)| {
                for c in &mut cuts {
                    *c = (*c).min(values.len());
                }
                cuts.sort();
                Channel { values, cuts }
            },
        )
    }

    /// Feeds the channels in the interleaving `order` (channel picks); returns
    /// the state (sum of delivered values) at each checkpoint and what each
    /// channel delivered.
    fn run(chans: &[Channel], order: &[usize], mode: CheckpointMode) -> (Vec<(u64, u64)>, Vec<Vec<u64>>) {
        let mut streams: Vec<VecDeque<Ev>> = chans.iter().map(|c| events(c).into()).collect();
        let mut a = Aligner::new(chans.len(), mode);
        let mut out = Vec::new();
        let mut sum = 0;
        let mut snaps = Vec::new();
        let mut delivered = vec![Vec::new(); chans.len()];
        let mut ended = vec![false; chans.len()];
        let mut picks = order.iter().cycle();
        while streams.iter().any(|s| !s.is_empty()) {
            let pick = *picks.next().unwrap();
            let ch = (0..chans.len()).map(|k| (pick + k) % chans.len()).find(|&c| !streams[c].is_empty()).unwrap();
            match streams[ch].pop_front().unwrap() {
                Ev::Value(v) => a.element(ch, v, &mut out),
                Ev::Barrier(b) => a.barrier(ch, CheckpointId(b), &mut out),
                Ev::End => a.end(ch, &mut out),
            }
            for act in out.drain(..) {
                match act {
                    Action::Deliver(c, Item::Element(v)) => {
                        assert!(!ended[c], "nothing after the end");
                        sum += v;
                        delivered[c].push(v);
                    }
                    Action::Deliver(c, Item::End) => ended[c] = true,
                    Action::Checkpoint(id) => snaps.push((id.0, sum)),
                    Action::Aborted(id) => panic!("checkpoint {id} aborted without a newer barrier"),
                }
            }
        }
        assert!(ended.iter().all(|&e| e), "every end is delivered");
        (snaps, delivered)
    }

    proptest! {
        #[test]
        fn aligned_snapshots_hold_exactly_the_records_before_the_barriers(
            m in 0usize..4,
            chans in prop::collection::vec(channel(3), 1..5),
            order in prop::collection::vec(0usize..5, 1..50),
        ) {
            let chans: Vec<Channel> = chans.into_iter().map(|mut c| { c.cuts.truncate(m); c }).collect();
            let (snaps, delivered) = run(&chans, &order, CheckpointMode::ExactlyOnce);
            prop_assert_eq!(snaps.len(), m, "every checkpoint completes, in order");
            for (k, &(id, sum)) in snaps.iter().enumerate() {
                prop_assert_eq!(id, k as u64 + 1);
                let want: u64 = chans.iter().map(|c| c.values[..c.cuts[k]].iter().sum::<u64>()).sum();
                prop_assert_eq!(sum, want, "checkpoint {} reflects exactly the records before its barriers", id);
            }
            for (c, d) in chans.iter().zip(&delivered) {
                prop_assert_eq!(&c.values, d, "order kept, nothing lost or repeated");
            }
        }

        #[test]
        fn at_least_once_snapshots_hold_at_least_the_records_before_the_barriers(
            chans in prop::collection::vec(channel(2), 1..5),
            order in prop::collection::vec(0usize..5, 1..50),
        ) {
            let (snaps, delivered) = run(&chans, &order, CheckpointMode::AtLeastOnce);
            prop_assert_eq!(snaps.len(), 2);
            for (k, &(_, sum)) in snaps.iter().enumerate() {
                let before: u64 = chans.iter().map(|c| c.values[..c.cuts[k]].iter().sum::<u64>()).sum();
                prop_assert!(sum >= before);
            }
            for (c, d) in chans.iter().zip(&delivered) {
                prop_assert_eq!(&c.values, d);
            }
        }
    }

    #[test]
    fn a_newer_barrier_aborts_the_older_alignment() {
        let mut a = Aligner::new(2, CheckpointMode::ExactlyOnce);
        let mut out = Vec::new();
        a.barrier(0, CheckpointId(1), &mut out);
        a.element(0, 7, &mut out);
        assert!(out.is_empty(), "held behind barrier 1");
        a.barrier(1, CheckpointId(2), &mut out);
        assert_eq!(out, vec![Action::Aborted(CheckpointId(1)), Action::Deliver(0, Item::Element(7))]);
        out.clear();
        a.barrier(1, CheckpointId(1), &mut out);
        a.barrier(0, CheckpointId(2), &mut out);
        assert_eq!(out, vec![Action::Checkpoint(CheckpointId(2))]);
    }

    #[test]
    fn an_ended_channel_counts_as_aligned() {
        let mut a: Aligner<u64> = Aligner::new(2, CheckpointMode::ExactlyOnce);
        let mut out = Vec::new();
        a.barrier(0, CheckpointId(1), &mut out);
        a.end(1, &mut out);
        assert_eq!(out, vec![Action::Deliver(1, Item::End), Action::Checkpoint(CheckpointId(1))]);
    }
}
