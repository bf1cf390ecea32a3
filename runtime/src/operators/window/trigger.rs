//! Firing windows once the watermark passes their end, and purging them
//! once it passes their end plus the allowed lateness.

use super::assign::{session_rows, window_rows, Session};
use super::*;

impl WindowOperator {
    /// Emits every window whose end is at or before `watermark + 1` and has
    /// not fired yet; drops the ones past their allowed lateness.
    pub(super) fn fire(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        if let WindowSpec::Session { .. } = self.p.window {
            return self.fire_sessions(watermark, out);
        }
        let (size, _) = self.size_slide();
        let lateness = self.p.lateness;
        // Windows share one size, so ends follow starts: the due ones are a prefix.
        let due: Vec<i64> = self
            .windows
            .range(..)
            .take_while(|(s, _)| s.saturating_add(size - 1) <= watermark)
            .map(|(s, _)| *s)
            .collect();
        for start in due {
            let purge = (start + size - 1).saturating_add(lateness) <= watermark;
            let (from, to) = self.bounds(start);
            let w = self.windows.get_mut(&start).expect("listed above");
            if !w.fired {
                let slots: Vec<u32> = (0..w.index.len() as u32).collect();
                out.emit(window_rows(&self.keys, &self.p.schema, w, from, to, &slots)?);
                w.fired = true;
                if !purge {
                    // Kept for its allowed lateness: the next snapshot records that it fired.
                    self.dirty.insert(start);
                }
            }
            if purge {
                self.windows.remove(&start);
                self.dirty.remove(&start);
                if let Some(kgs) = self.persisted.remove(&start) {
                    self.purged.push((start, kgs));
                }
            }
        }
        Ok(())
    }

    pub(super) fn fire_sessions(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        let lateness = self.p.lateness;
        let s = &mut self.sessions;
        if s.open.is_empty() || s.min_due > watermark {
            return Ok(());
        }
        let Some(accs) = s.accs.as_mut() else { return Ok(()) };
        let mut fire: Vec<(u32, Session)> = Vec::new();
        let mut freed = Vec::new();
        let mut min_due = i64::MAX;
        for (key, list) in s.open.iter_mut().enumerate() {
            list.retain_mut(|x| {
                if x.end - 1 <= watermark && !x.fired {
                    x.fired = true;
                    fire.push((key as u32, *x));
                }
                if x.fired && (x.end - 1).saturating_add(lateness) <= watermark {
                    freed.push(x.slot);
                    return false;
                }
                min_due = min_due.min(if x.fired { (x.end - 1).saturating_add(lateness) } else { x.end - 1 });
                true
            });
        }
        s.min_due = min_due;
        if !fire.is_empty() {
            out.emit(session_rows(&self.keys, &self.p.schema, &s.index, accs, &fire)?);
        }
        s.free.extend_from_slice(&freed);
        Ok(())
    }
}
