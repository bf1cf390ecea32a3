//! Assigning records to windows: fixed (tumbling, sliding) windows by
//! start, sessions per key, merged when a record bridges their gap.

use arrow::array::{Int64Array, RecordBatch};

use super::*;
use keys::KeyIndex;

// ------------------------------------------------------------------ windows

/// Keys and accumulators of one fixed (tumbling or sliding) window.
pub(super) struct FixedWindow {
    pub(super) index: KeyIndex,
    pub(super) accs: Accumulators,
}

/// A session: `[start, end)` where `end` is the last event time plus the gap.
#[derive(Debug, Clone, Copy)]
pub(super) struct Session {
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) slot: u32,
}

/// Session windows: per key, its open sessions; accumulators by slot.
#[derive(Default)]
pub(super) struct Sessions {
    pub(super) index: KeyIndex,
    /// By key slot, sessions sorted by start, disjoint.
    pub(super) open: Vec<Vec<Session>>,
    pub(super) accs: Option<Accumulators>,
    /// Accumulator slots of sessions (separate from key slots).
    pub(super) free: Vec<u32>,
    pub(super) used: u32,
    /// Smallest end over open sessions (nothing fires before it).
    pub(super) min_end: i64,
}

impl WindowOperator {
    pub(super) fn size_slide(&self) -> (i64, i64) {
        match self.p.window {
            WindowSpec::Tumbling { size } => (millis(size), millis(size)),
            WindowSpec::Sliding { size, slide } => (millis(size), millis(slide)),
            WindowSpec::Session { gap } => (millis(gap), 0),
        }
    }

    pub(super) fn absorb_fixed(&mut self, batch: &RecordBatch, times: &Int64Array) -> OpResult<()> {
        let (size, slide) = self.size_slide();
        let keys = self.keys.extract(batch, &self.p.key)?;
        let inputs = Accumulators::inputs(&self.p.aggs, batch)?;
        let t = times.values();
        let per_record = size / slide + i64::from(size % slide != 0);
        let mut rows: Vec<u32> = Vec::new();
        for k in 0..per_record {
            // Window k of each row: the k-th most recent start at or before t.
            let start_of = |ts: i64| ts - ts.rem_euclid(slide) - k * slide;
            let mut r = 0usize;
            while r < t.len() {
                let start = start_of(t[r]);
                let mut end_run = r + 1;
                while end_run < t.len() && start_of(t[end_run]) == start {
                    end_run += 1;
                }
                let run = r..end_run;
                r = end_run;
                if t[run.start] >= start + size {
                    continue; // with size % slide != 0 the oldest candidate may not cover t
                }
                if start + size - 1 <= self.watermark {
                    self.late += run.len() as u64;
                    continue;
                }
                let (aggs, groups) = (&self.p.aggs, self.max_parallelism);
                self.dirty.insert(start);
                let w = self.windows.entry(start).or_insert_with(|| FixedWindow {
                    index: KeyIndex::with_groups(groups),
                    accs: Accumulators::new(aggs),
                });
                rows.clear();
                rows.extend(run.clone().map(|i| i as u32));
                self.slots.clear();
                for &row in &rows {
                    let s = w.index.slot(&keys, row as usize, &mut w.accs);
                    self.slots.push(s);
                }
                w.accs.update(&inputs, &rows, &self.slots);
            }
        }
        Ok(())
    }

    pub(super) fn absorb_sessions(&mut self, batch: &RecordBatch, times: &Int64Array) -> OpResult<()> {
        let (gap, _) = self.size_slide();
        let keys = self.keys.extract(batch, &self.p.key)?;
        let inputs = Accumulators::inputs(&self.p.aggs, batch)?;
        let s = &mut self.sessions;
        let accs = s.accs.get_or_insert_with(|| Accumulators::new(&self.p.aggs));
        // Key slots index `open`; the accumulators grown by the index are unused
        // (session accumulators are allocated per session below).
        let mut key_accs = Accumulators { cols: Vec::new() };
        for r in 0..batch.num_rows() {
            let t = times.value(r);
            let key = s.index.slot(&keys, r, &mut key_accs) as usize;
            if key == s.open.len() {
                s.open.push(Vec::new());
            }
            let (start, end) = (t, t + gap);
            let list = &mut s.open[key];
            // Sessions overlapping [start, end) merge with the new event.
            let first = list.partition_point(|x| x.end < start);
            let mut last = first;
            while last < list.len() && list[last].start <= end {
                last += 1;
            }
            let slot = if first == last {
                // Open sessions have not fired, so only a record that starts a
                // session of its own can be late.
                if end - 1 <= self.watermark {
                    self.late += 1;
                    continue;
                }
                let slot = match s.free.pop() {
                    Some(f) => {
                        accs.reset(f as usize);
                        f
                    }
                    None => {
                        accs.grow();
                        s.used += 1;
                        s.used - 1
                    }
                };
                list.insert(first, Session { start, end, slot });
                slot
            } else {
                let mut merged = list[first];
                for other in list.drain(first + 1..last).collect::<Vec<_>>() {
                    accs.merge(merged.slot as usize, other.slot as usize);
                    s.free.push(other.slot);
                    merged.start = merged.start.min(other.start);
                    merged.end = merged.end.max(other.end);
                }
                merged.start = merged.start.min(start);
                merged.end = merged.end.max(end);
                list[first] = merged;
                merged.slot
            };
            accs.update(&inputs, &[r as u32], &[slot]);
            s.min_end = s.min_end.min(end);
        }
        Ok(())
    }
}
