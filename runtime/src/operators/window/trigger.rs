//! Firing windows once the watermark passes their end.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};

use super::*;

impl WindowOperator {
    /// Emits every window whose end is at or before `watermark + 1`.
    pub(super) fn fire(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        match self.p.window {
            WindowSpec::Session { .. } => self.fire_sessions(watermark, out),
            _ => {
                let (size, _) = self.size_slide();
                while let Some(entry) = self.windows.first_entry() {
                    let start = *entry.key();
                    if start.saturating_add(size - 1) > watermark {
                        break;
                    }
                    let w = entry.remove();
                    self.dirty.remove(&start);
                    if let Some(kgs) = self.persisted.remove(&start) {
                        self.fired.push((start, kgs));
                    }
                    let n = w.index.len();
                    let slots: Vec<u32> = (0..n as u32).collect();
                    let mut cols = self.keys.columns(&w.index, &slots)?;
                    cols.push(Arc::new(Int64Array::from_value(start, n)));
                    cols.push(Arc::new(Int64Array::from_value(start + size, n)));
                    cols.extend(w.accs.columns(&slots));
                    out.emit(RecordBatch::try_new(self.p.schema.clone(), cols)?);
                }
                Ok(())
            }
        }
    }

    pub(super) fn fire_sessions(&mut self, watermark: i64, out: &mut Collector) -> OpResult<()> {
        let s = &mut self.sessions;
        if s.open.is_empty() || s.min_end.saturating_sub(1) > watermark {
            return Ok(());
        }
        let Some(accs) = s.accs.as_mut() else { return Ok(()) };
        let (mut key_slots, mut acc_slots, mut starts, mut ends) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut min_end = i64::MAX;
        for (key, list) in s.open.iter_mut().enumerate() {
            list.retain(|x| {
                if x.end - 1 <= watermark {
                    key_slots.push(key as u32);
                    acc_slots.push(x.slot);
                    starts.push(x.start);
                    ends.push(x.end);
                    false
                } else {
                    min_end = min_end.min(x.end);
                    true
                }
            });
        }
        s.min_end = min_end;
        if key_slots.is_empty() {
            return Ok(());
        }
        let mut cols = self.keys.columns(&s.index, &key_slots)?;
        cols.push(Arc::new(Int64Array::from(starts)));
        cols.push(Arc::new(Int64Array::from(ends)));
        cols.extend(accs.columns(&acc_slots));
        s.free.extend_from_slice(&acc_slots);
        out.emit(RecordBatch::try_new(self.p.schema.clone(), cols)?);
        Ok(())
    }
}
