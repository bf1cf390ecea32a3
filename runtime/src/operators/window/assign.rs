//! Assigning records to windows: fixed (tumbling, sliding) windows by
//! start, sessions per key, merged when a record bridges their gap.

use std::collections::BTreeMap;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::SchemaRef;

use super::*;
use keys::KeyIndex;

// ------------------------------------------------------------------ windows

/// Keys and accumulators of one fixed (tumbling or sliding) window.
pub(super) struct FixedWindow {
    pub(super) index: KeyIndex,
    pub(super) accs: Accumulators,
    /// It fired; it is kept (allowed lateness) until the watermark passes
    /// its end plus the allowed lateness.
    pub(super) fired: bool,
}

/// A session: `[start, end)` where `end` is the last event time plus the gap.
#[derive(Debug, Clone, Copy)]
pub(super) struct Session {
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) slot: u32,
    /// It fired and is kept for the allowed lateness.
    pub(super) fired: bool,
}

/// Session windows: per key, its open sessions; accumulators by slot.
pub(super) struct Sessions {
    pub(super) index: KeyIndex,
    /// By key slot, sessions sorted by start, disjoint.
    pub(super) open: Vec<Vec<Session>>,
    pub(super) accs: Option<Accumulators>,
    /// Accumulator slots of sessions (separate from key slots).
    pub(super) free: Vec<u32>,
    pub(super) used: u32,
    /// Nothing fires or is purged before the watermark reaches this.
    pub(super) min_due: i64,
}

impl Default for Sessions {
    fn default() -> Self {
        Self { index: KeyIndex::default(), open: Vec::new(), accs: None, free: Vec::new(), used: 0, min_due: i64::MAX }
    }
}

impl WindowOperator {
    /// A fixed window's size and the distance between the ends of a
    /// record's windows (a cumulating window's step); a session's gap.
    pub(super) fn size_slide(&self) -> (i64, i64) {
        match self.p.window {
            WindowSpec::Tumbling { size, .. } => (millis(size), millis(size)),
            WindowSpec::Sliding { size, slide, .. } => (millis(size), millis(slide)),
            WindowSpec::Cumulate { step, size, .. } => (millis(size), millis(step)),
            WindowSpec::Session { gap } => (millis(gap), 0),
        }
    }

    /// Windows are aligned to multiples of this plus [`Self::offset`]:
    /// the slide, or a cumulating window's size.
    fn align(&self) -> i64 {
        match self.p.window {
            WindowSpec::Cumulate { size, .. } => millis(size),
            _ => self.size_slide().1,
        }
    }

    fn offset(&self) -> i64 {
        match self.p.window {
            WindowSpec::Tumbling { offset, .. }
            | WindowSpec::Sliding { offset, .. }
            | WindowSpec::Cumulate { offset, .. } => offset.map_or(0, millis),
            WindowSpec::Session { .. } => 0,
        }
    }

    /// The bounds of the fixed window stored under `key`: windows are kept
    /// by their end minus the size (their start, but for a cumulating
    /// window, whose windows share a start and differ in their ends).
    pub(super) fn bounds(&self, key: i64) -> (i64, i64) {
        let (size, _) = self.size_slide();
        let end = key + size;
        match self.p.window {
            WindowSpec::Cumulate { .. } => {
                let last = end - 1;
                (last - (last - self.offset()).rem_euclid(size), end)
            }
            _ => (key, end),
        }
    }

    /// Adds a batch to its fixed windows. Windows whose end the watermark
    /// already passed (allowed lateness) fire the keys the batch touched at
    /// once. Returns the rows that were late for every window they belong to.
    pub(super) fn absorb_fixed(
        &mut self,
        batch: &RecordBatch,
        times: &Int64Array,
        out: &mut Collector,
    ) -> OpResult<Vec<u32>> {
        let (size, slide) = self.size_slide();
        let (align, offset) = (self.align(), self.offset());
        let lateness = self.p.lateness;
        let keys = self.keys.extract(batch, &self.p.key)?;
        let inputs = Accumulators::inputs(&self.p.aggs, batch)?;
        let t = times.values();
        let per_record = size / slide + i64::from(size % slide != 0);
        let mut rows: Vec<u32> = Vec::new();
        // Per row: whether some window took it.
        let mut taken = vec![false; t.len()];
        // Windows past their end that took records: the slots to fire again.
        let mut refire: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for k in 0..per_record {
            // Window k of each row: the k-th most recent start at or before
            // t (of a cumulating window: the k-th latest end after t, less
            // the size).
            let start_of = |ts: i64| ts - (ts - offset).rem_euclid(align) - k * slide;
            let mut r = 0usize;
            while r < t.len() {
                let start = start_of(t[r]);
                // A run of rows with that window, all inside it or all not.
                let inside = t[r] < start + size;
                let mut end_run = r + 1;
                while end_run < t.len() && start_of(t[end_run]) == start && (t[end_run] < start + size) == inside {
                    end_run += 1;
                }
                let run = r..end_run;
                r = end_run;
                if !inside {
                    // The oldest candidate may not cover t: with size % slide
                    // != 0, or a cumulating window ending at or before t.
                    continue;
                }
                let last = start + size - 1;
                if last.saturating_add(lateness) <= self.watermark {
                    continue; // purged, or would have been: late for this window
                }
                let (aggs, groups) = (&self.p.aggs, self.max_parallelism);
                self.dirty.insert(start);
                let w = self.windows.entry(start).or_insert_with(|| FixedWindow {
                    index: KeyIndex::with_groups(groups),
                    accs: Accumulators::new(aggs),
                    fired: false,
                });
                rows.clear();
                rows.extend(run.clone().map(|i| i as u32));
                self.slots.clear();
                for &row in &rows {
                    let s = w.index.slot(&keys, row as usize, &mut w.accs);
                    self.slots.push(s);
                    taken[row as usize] = true;
                }
                w.accs.update(&inputs, &rows, &self.slots);
                if last <= self.watermark {
                    refire.entry(start).or_default().extend_from_slice(&self.slots);
                }
            }
        }
        for (start, mut slots) in refire {
            slots.sort_unstable();
            slots.dedup();
            let (from, to) = self.bounds(start);
            let w = self.windows.get_mut(&start).expect("just absorbed records");
            w.fired = true;
            out.emit(window_rows(&self.keys, &self.p.schema, w, from, to, &slots)?);
        }
        Ok(taken.iter().enumerate().filter(|(_, &took)| !took).map(|(r, _)| r as u32).collect())
    }

    /// Adds a batch to its sessions, merging the ones a record bridges.
    /// Sessions past their end (allowed lateness) fire again at once.
    /// Returns the late rows: those that would open a session already past
    /// its end and the allowed lateness.
    pub(super) fn absorb_sessions(
        &mut self,
        batch: &RecordBatch,
        times: &Int64Array,
        out: &mut Collector,
    ) -> OpResult<Vec<u32>> {
        let (gap, _) = self.size_slide();
        let (lateness, watermark) = (self.p.lateness, self.watermark);
        let keys = self.keys.extract(batch, &self.p.key)?;
        let inputs = Accumulators::inputs(&self.p.aggs, batch)?;
        let s = &mut self.sessions;
        let accs = s.accs.get_or_insert_with(|| Accumulators::new(&self.p.aggs));
        // Key slots index `open`; the accumulators grown by the index are unused
        // (session accumulators are allocated per session below).
        let mut key_accs = Accumulators { cols: Vec::new() };
        let mut late = Vec::new();
        // (key slot, session start) of sessions past their end that took records.
        let mut refire: Vec<(u32, i64)> = Vec::new();
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
            let session = if first == last {
                // Sessions are kept until their end plus the allowed lateness,
                // so only a record that starts a session of its own can be late.
                if (end - 1).saturating_add(lateness) <= watermark {
                    late.push(r as u32);
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
                list.insert(first, Session { start, end, slot, fired: false });
                list[first]
            } else {
                let mut merged = list[first];
                for other in list.drain(first + 1..last).collect::<Vec<_>>() {
                    accs.merge(merged.slot as usize, other.slot as usize);
                    s.free.push(other.slot);
                    merged.start = merged.start.min(other.start);
                    merged.end = merged.end.max(other.end);
                    merged.fired |= other.fired;
                }
                merged.start = merged.start.min(start);
                merged.end = merged.end.max(end);
                // A session that grew past the watermark fires again at its new end.
                merged.fired &= merged.end - 1 <= watermark;
                list[first] = merged;
                merged
            };
            accs.update(&inputs, &[r as u32], &[session.slot]);
            s.min_due = s.min_due.min(session.end - 1);
            if session.end - 1 <= watermark {
                refire.push((key as u32, session.start));
            }
        }
        refire.sort_unstable();
        refire.dedup();
        let mut fire = Vec::new();
        for (key, start) in refire {
            // A later record of the batch may have merged it into another.
            if let Some(x) = s.open[key as usize].iter_mut().find(|x| x.start <= start && start < x.end) {
                if x.end - 1 <= watermark {
                    x.fired = true;
                    fire.push((key, *x));
                }
            }
        }
        fire.dedup_by_key(|(k, x)| (*k, x.start));
        if !fire.is_empty() {
            let accs = s.accs.as_ref().expect("sessions took records");
            out.emit(session_rows(&self.keys, &self.p.schema, &s.index, accs, &fire)?);
        }
        Ok(late)
    }
}

/// The rows of `slots` of a fixed window: keys, bounds and aggregates.
pub(super) fn window_rows(
    keys: &KeyCodec,
    schema: &SchemaRef,
    w: &FixedWindow,
    start: i64,
    end: i64,
    slots: &[u32],
) -> OpResult<RecordBatch> {
    let n = slots.len();
    let mut cols = keys.columns(&w.index, slots)?;
    cols.push(std::sync::Arc::new(Int64Array::from_value(start, n)));
    cols.push(std::sync::Arc::new(Int64Array::from_value(end, n)));
    cols.extend(w.accs.columns(slots)?);
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// The rows of sessions (with their key slots): keys, bounds and aggregates.
pub(super) fn session_rows(
    keys: &KeyCodec,
    schema: &SchemaRef,
    index: &KeyIndex,
    accs: &Accumulators,
    sessions: &[(u32, Session)],
) -> OpResult<RecordBatch> {
    let key_slots: Vec<u32> = sessions.iter().map(|(k, _)| *k).collect();
    let acc_slots: Vec<u32> = sessions.iter().map(|(_, x)| x.slot).collect();
    let mut cols = keys.columns(index, &key_slots)?;
    cols.push(std::sync::Arc::new(Int64Array::from_iter_values(sessions.iter().map(|(_, x)| x.start))));
    cols.push(std::sync::Arc::new(Int64Array::from_iter_values(sessions.iter().map(|(_, x)| x.end))));
    cols.extend(accs.columns(&acc_slots)?);
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}
