//! Window state in checkpoints.

use std::collections::BTreeMap;

use super::*;
use crate::keygroup::{hash_i64, hash_rows, key_group};
use accumulate::AccColumn;
use assign::Session;
use keys::KeyIndex;
use std::borrow::Cow;

// ------------------------------------------------------------------ checkpoints
//
// Window state is written per (window, key group): one entry holds every key
// of that key group in that window with its accumulators, so a snapshot has
// a few thousand entries rather than one per key, and a restore at another
// parallelism still picks exactly the key groups it owns. Incremental
// snapshots rewrite only windows that absorbed records and delete the
// entries of windows that fired.
//
// A fixed window's entry is columnar: a marker (`u32::MAX`, which the
// original row-by-row layout can never start with: it would be the length of
// a 4 GiB key) and a format byte, the number of keys, the keys, then one
// column per aggregate. Integers are zigzag LEB128 varints and optional
// values carry a presence bitmap, so a typical key with a count and a sum
// takes 6 to 8 bytes instead of 29. Restore reads both layouts. Format byte
// 3 marks a window that already fired and is kept for its allowed lateness.
//
// A key group's sessions entry lists each key with its sessions; a negative
// session count says every session carries a byte after its bounds: whether
// it fired (kept for the allowed lateness). Windows without lateness never
// keep fired sessions, so their entries are as before.

pub(super) const FIXED_STATE: &str = "windows";
pub(super) const SESSION_STATE: &str = "sessions";

/// Start of a columnar fixed-window entry.
pub(super) const COLUMNAR: [u8; 5] = [0xff, 0xff, 0xff, 0xff, 2];
/// Start of a columnar entry of a window that fired (allowed lateness).
pub(super) const COLUMNAR_FIRED: [u8; 5] = [0xff, 0xff, 0xff, 0xff, 3];

pub(super) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

pub(super) struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    pub(super) fn take(&mut self, n: usize) -> OpResult<&'a [u8]> {
        if self.0.len() < n {
            return Err(OperatorError::State("window state is truncated".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub(super) fn i64(&mut self) -> OpResult<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    pub(super) fn f64(&mut self) -> OpResult<f64> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    pub(super) fn flag(&mut self) -> OpResult<bool> {
        Ok(self.take(1)?[0] != 0)
    }
    pub(super) fn key(&mut self) -> OpResult<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        self.take(n)
    }
    pub(super) fn uvarint(&mut self) -> OpResult<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(OperatorError::State("window state holds a malformed number".into()))
    }
    pub(super) fn ivarint(&mut self) -> OpResult<i64> {
        let u = self.uvarint()?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }
    pub(super) fn bitmap(&mut self, n: usize) -> OpResult<Vec<bool>> {
        let bytes = self.take(n.div_ceil(8))?;
        Ok((0..n).map(|i| bytes[i / 8] >> (i % 8) & 1 == 1).collect())
    }
}

impl Accumulators {
    /// Typical bytes per slot of [`Accumulators::scatter_columns`] (a capacity hint).
    pub(super) fn width_hint(&self) -> usize {
        self.cols.iter().map(|c| if matches!(c, AccColumn::Count(_)) { 2 } else { 5 }).sum()
    }

    /// Reads what [`Accumulators::scatter_columns`] wrote for `slots`.
    pub(super) fn decode_columns(&mut self, slots: &[u32], c: &mut Cursor<'_>) -> OpResult<()> {
        for col in &mut self.cols {
            match col {
                AccColumn::Count(v) => {
                    for &s in slots {
                        v[s as usize] = c.ivarint()?;
                    }
                }
                AccColumn::SumInt(v, seen) | AccColumn::MinInt(v, seen) | AccColumn::MaxInt(v, seen) => {
                    let present = c.bitmap(slots.len())?;
                    for (&s, p) in slots.iter().zip(present) {
                        seen[s as usize] = p;
                        v[s as usize] = if p { c.ivarint()? } else { 0 };
                    }
                }
                AccColumn::SumFloat(v, seen) | AccColumn::MinFloat(v, seen) | AccColumn::MaxFloat(v, seen) => {
                    let present = c.bitmap(slots.len())?;
                    for (&s, p) in slots.iter().zip(present) {
                        seen[s as usize] = p;
                        v[s as usize] = if p { c.f64()? } else { 0.0 };
                    }
                }
                AccColumn::Avg(sum, n) => {
                    for &s in slots {
                        sum[s as usize] = c.f64()?;
                    }
                    for &s in slots {
                        n[s as usize] = c.ivarint()?;
                    }
                }
                AccColumn::Distinct(sets, _) => {
                    for &s in slots {
                        sets[s as usize] = read_set(c)?;
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn encode(&self, s: usize, out: &mut Vec<u8>) {
        for c in &self.cols {
            match c {
                AccColumn::Count(v) => out.extend_from_slice(&v[s].to_le_bytes()),
                AccColumn::SumInt(v, seen) | AccColumn::MinInt(v, seen) | AccColumn::MaxInt(v, seen) => {
                    out.extend_from_slice(&v[s].to_le_bytes());
                    out.push(seen[s] as u8);
                }
                AccColumn::SumFloat(v, seen) | AccColumn::MinFloat(v, seen) | AccColumn::MaxFloat(v, seen) => {
                    out.extend_from_slice(&v[s].to_le_bytes());
                    out.push(seen[s] as u8);
                }
                AccColumn::Avg(sum, n) => {
                    out.extend_from_slice(&sum[s].to_le_bytes());
                    out.extend_from_slice(&n[s].to_le_bytes());
                }
                AccColumn::Distinct(sets, _) => put_set(out, &sets[s]),
            }
        }
    }

    pub(super) fn decode(&mut self, s: usize, c: &mut Cursor<'_>) -> OpResult<()> {
        for col in &mut self.cols {
            match col {
                AccColumn::Count(v) => v[s] = c.i64()?,
                AccColumn::SumInt(v, seen) | AccColumn::MinInt(v, seen) | AccColumn::MaxInt(v, seen) => {
                    v[s] = c.i64()?;
                    seen[s] = c.flag()?;
                }
                AccColumn::SumFloat(v, seen) | AccColumn::MinFloat(v, seen) | AccColumn::MaxFloat(v, seen) => {
                    v[s] = c.f64()?;
                    seen[s] = c.flag()?;
                }
                AccColumn::Avg(sum, n) => {
                    sum[s] = c.f64()?;
                    n[s] = c.i64()?;
                }
                AccColumn::Distinct(sets, _) => sets[s] = read_set(c)?,
            }
        }
        Ok(())
    }
}

/// Encodes every slot of a window (its key and accumulators) into one value
/// per key group, in key-group order, in the columnar layout: the slot
/// count, the keys, then one column per aggregate, each group's slots in
/// slot order. This runs while the task is paused at a barrier, so it is
/// one sequential pass per column: every slot's key and accumulators are
/// appended to its group's buffer, so the large per-slot vectors are read
/// in order and only the tails of the groups' buffers (a few dozen cache
/// lines) are written at random.
///
/// The groups' buffers are `scratch`, reused from window to window, so
/// those scattered writes land in cache; each group's bytes are then copied
/// out in one sequential run. (Scattering straight into freshly allocated
/// buffers missed the cache on nearly every new line and took about twice
/// as long.)
pub(super) fn encode_by_group(
    index: &KeyIndex,
    accs: &Accumulators,
    kgs: &[u32],
    max_parallelism: u32,
    fired: bool,
    scratch: &mut Vec<Vec<u8>>,
) -> Vec<(u32, Vec<u8>)> {
    let marker = if fired { &COLUMNAR_FIRED } else { &COLUMNAR };
    let groups = max_parallelism as usize;
    let mut counts = vec![0u32; groups];
    let mut key_bytes = vec![0usize; groups];
    if index.row_keys.is_empty() {
        for &kg in kgs {
            counts[kg as usize] += 1;
        }
        for (b, &n) in key_bytes.iter_mut().zip(&counts) {
            *b = n as usize * 3;
        }
    } else {
        for (key, &kg) in index.row_keys.iter().zip(kgs) {
            counts[kg as usize] += 1;
            key_bytes[kg as usize] += key.len() + 2;
        }
    }
    let width = accs.width_hint();
    scratch.resize_with(groups, Vec::new);
    let bufs = &mut scratch[..groups];
    for ((buf, &n), &keys) in bufs.iter_mut().zip(&counts).zip(&key_bytes) {
        buf.clear();
        if n > 0 {
            buf.reserve(COLUMNAR.len() + 5 + keys + n as usize * width);
            buf.extend_from_slice(marker);
            put_uvarint(buf, u64::from(n));
        }
    }
    if index.row_keys.is_empty() {
        for (&k, &kg) in index.int_keys.iter().zip(kgs) {
            put_ivarint(&mut bufs[kg as usize], k);
        }
    } else {
        for (key, &kg) in index.row_keys.iter().zip(kgs) {
            let buf = &mut bufs[kg as usize];
            put_uvarint(buf, key.len() as u64);
            buf.extend_from_slice(key);
        }
    }
    accs.scatter_columns(kgs, &counts, bufs);
    bufs.iter().enumerate().filter(|(_, b)| !b.is_empty()).map(|(g, b)| (g as u32, b.clone())).collect()
}

impl Accumulators {
    /// Appends every slot's accumulators to its group's buffer, one column
    /// after the other: counts and integers as zig-zag varints, floats as
    /// 8 little-endian bytes, and for aggregates that may have seen no value
    /// a presence bitmap first (then only the present values).
    pub(super) fn scatter_columns(&self, kgs: &[u32], counts: &[u32], bufs: &mut [Vec<u8>]) {
        for c in &self.cols {
            match c {
                AccColumn::Count(v) => {
                    for (&x, &kg) in v.iter().zip(kgs) {
                        put_ivarint(&mut bufs[kg as usize], x);
                    }
                }
                AccColumn::SumInt(v, seen) | AccColumn::MinInt(v, seen) | AccColumn::MaxInt(v, seen) => {
                    scatter_bitmap(kgs, counts, seen, bufs);
                    for ((&x, &p), &kg) in v.iter().zip(seen).zip(kgs) {
                        if p {
                            put_ivarint(&mut bufs[kg as usize], x);
                        }
                    }
                }
                AccColumn::SumFloat(v, seen) | AccColumn::MinFloat(v, seen) | AccColumn::MaxFloat(v, seen) => {
                    scatter_bitmap(kgs, counts, seen, bufs);
                    for ((&x, &p), &kg) in v.iter().zip(seen).zip(kgs) {
                        if p {
                            bufs[kg as usize].extend_from_slice(&x.to_le_bytes());
                        }
                    }
                }
                AccColumn::Avg(sum, n) => {
                    for (&x, &kg) in sum.iter().zip(kgs) {
                        bufs[kg as usize].extend_from_slice(&x.to_le_bytes());
                    }
                    for (&x, &kg) in n.iter().zip(kgs) {
                        put_ivarint(&mut bufs[kg as usize], x);
                    }
                }
                AccColumn::Distinct(sets, _) => {
                    for (set, &kg) in sets.iter().zip(kgs) {
                        put_set(&mut bufs[kg as usize], set);
                    }
                }
            }
        }
    }
}

/// A set of distinct values: their number, then each one's length and bytes
/// (varints), in no particular order.
fn put_set(out: &mut Vec<u8>, set: &std::collections::HashSet<Box<[u8]>>) {
    put_uvarint(out, set.len() as u64);
    for v in set {
        put_uvarint(out, v.len() as u64);
        out.extend_from_slice(v);
    }
}

fn read_set(c: &mut Cursor<'_>) -> OpResult<std::collections::HashSet<Box<[u8]>>> {
    let n = c.uvarint()? as usize;
    let mut set = std::collections::HashSet::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let len = c.uvarint()? as usize;
        set.insert(c.take(len)?.into());
    }
    Ok(set)
}

/// Each group's presence bits of `seen`, eight per byte, lowest bit first,
/// reserved at the end of its buffer and filled in slot order.
pub(super) fn scatter_bitmap(kgs: &[u32], counts: &[u32], seen: &[bool], bufs: &mut [Vec<u8>]) {
    let mut at = vec![0usize; bufs.len()];
    for ((buf, &n), at) in bufs.iter_mut().zip(counts).zip(&mut at) {
        *at = buf.len() * 8;
        buf.resize(buf.len() + (n as usize).div_ceil(8), 0);
    }
    for (&p, &kg) in seen.iter().zip(kgs) {
        let g = kg as usize;
        let bit = at[g];
        bufs[g][bit / 8] |= u8::from(p) << (bit % 8);
        at[g] += 1;
    }
}

impl WindowOperator {
    /// Key group of every slot of `index`.
    pub(super) fn key_groups<'a>(&self, index: &'a KeyIndex) -> OpResult<Cow<'a, [u32]>> {
        if let KeyCodec::Int(_) = self.keys {
            if index.max_parallelism == self.max_parallelism && index.int_groups.len() == index.int_keys.len() {
                return Ok(Cow::Borrowed(&index.int_groups));
            }
            // Every integer type hashes as its value widened to i64, which
            // is what the index holds: no key column to rebuild.
            return Ok(index.int_keys.iter().map(|&k| key_group(hash_i64(k), self.max_parallelism)).collect());
        }
        let slots: Vec<u32> = (0..index.len() as u32).collect();
        let cols = self.keys.columns(index, &slots)?;
        let mut hashes = Vec::new();
        hash_rows(&cols, &mut hashes)?;
        Ok(hashes.into_iter().map(|h| key_group(h, self.max_parallelism)).collect())
    }

    pub(super) fn snapshot_fixed(&mut self, w: &mut StateWriter) -> OpResult<()> {
        if !w.full() {
            // Fixed windows fire in the order of their starts, and none with
            // an earlier start can open again (its records would be late),
            // so the persisted windows that fired are, per key group, a
            // prefix of the non-negative starts in key order (big-endian):
            // one range deletion per key group instead of one per window.
            // (Negative starts sort after the others and go one by one.)
            let mut below: BTreeMap<u32, i64> = BTreeMap::new();
            for (start, kgs) in self.purged.drain(..) {
                for kg in kgs {
                    if start >= 0 {
                        let end = below.entry(kg).or_insert(start);
                        *end = (*end).max(start);
                    } else {
                        w.delete(FIXED_STATE, kg, start.to_be_bytes().to_vec());
                    }
                }
            }
            for (kg, last) in below {
                w.delete_range(FIXED_STATE, kg, 0i64.to_be_bytes().to_vec(), (last + 1).to_be_bytes().to_vec());
            }
        }
        self.purged.clear();
        let starts: Vec<i64> =
            if w.full() { self.windows.keys().copied().collect() } else { self.dirty.iter().copied().collect() };
        let mut scratch = Vec::new();
        for start in starts {
            let Some(win) = self.windows.get(&start) else { continue };
            let kgs = self.key_groups(&win.index)?;
            let groups = encode_by_group(&win.index, &win.accs, &kgs, self.max_parallelism, win.fired, &mut scratch);
            let written: Vec<u32> = groups.iter().map(|(kg, _)| *kg).collect();
            for (kg, value) in groups {
                w.put(FIXED_STATE, kg, start.to_be_bytes().to_vec(), value);
            }
            self.persisted.insert(start, written);
        }
        self.dirty.clear();
        Ok(())
    }

    /// Sessions are written per key group (every key with its open sessions).
    pub(super) fn snapshot_sessions(&mut self, w: &mut StateWriter) -> OpResult<()> {
        let s = &self.sessions;
        let mut by_group: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        if let Some(accs) = &s.accs {
            let kgs = self.key_groups(&s.index)?;
            for (key, list) in s.open.iter().enumerate() {
                if list.is_empty() {
                    continue;
                }
                let buf = by_group.entry(kgs[key]).or_default();
                let raw = s.index.raw_key(key as u32);
                buf.extend_from_slice(&(raw.len() as u32).to_le_bytes());
                buf.extend_from_slice(&raw);
                let flags = list.iter().any(|x| x.fired);
                let n = list.len() as i64;
                buf.extend_from_slice(&(if flags { -n } else { n }).to_le_bytes());
                for x in list {
                    buf.extend_from_slice(&x.start.to_le_bytes());
                    buf.extend_from_slice(&x.end.to_le_bytes());
                    if flags {
                        buf.push(u8::from(x.fired));
                    }
                    accs.encode(x.slot as usize, buf);
                }
            }
        }
        // Sessions change with every record: each snapshot rewrites them all,
        // deleting key groups that no longer hold any.
        let now: std::collections::BTreeSet<u32> = by_group.keys().copied().collect();
        for kg in self.sessions_persisted.difference(&now) {
            w.delete(SESSION_STATE, *kg, Vec::new());
        }
        for (kg, value) in by_group {
            w.put(SESSION_STATE, kg, Vec::new(), value);
        }
        self.sessions_persisted = now;
        Ok(())
    }

    pub(super) fn restore_sessions(&mut self, value: &[u8]) -> OpResult<()> {
        let s = &mut self.sessions;
        let accs = s.accs.get_or_insert_with(|| Accumulators::new(&self.p.aggs));
        let mut key_accs = Accumulators { cols: Vec::new() };
        let mut c = Cursor(value);
        while !c.0.is_empty() {
            let key = s.index.insert_raw(&self.keys, c.key()?, &mut key_accs)? as usize;
            while s.open.len() <= key {
                s.open.push(Vec::new());
            }
            let n = c.i64()?;
            for _ in 0..n.unsigned_abs() {
                let (start, end) = (c.i64()?, c.i64()?);
                let fired = n < 0 && c.flag()?;
                accs.grow();
                let slot = s.used;
                s.used += 1;
                accs.decode(slot as usize, &mut c)?;
                let list = &mut s.open[key];
                let at = list.partition_point(|x| x.start < start);
                list.insert(at, Session { start, end, slot, fired });
                s.min_due = s.min_due.min(end - 1);
            }
        }
        Ok(())
    }
}

impl WindowOperator {
    /// Takes over restored windows and sessions.
    pub(super) fn restore(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        for e in r.state(FIXED_STATE) {
            let start = i64::from_be_bytes(
                e.key.as_slice().try_into().map_err(|_| OperatorError::State("a window key is not 8 bytes".into()))?,
            );
            let (aggs, groups) = (&self.p.aggs, self.max_parallelism);
            let w = self.windows.entry(start).or_insert_with(|| FixedWindow {
                index: KeyIndex::with_groups(groups),
                accs: Accumulators::new(aggs),
                fired: false,
            });
            let value = e.value.as_deref().unwrap_or_default();
            let columnar = match value.strip_prefix(&COLUMNAR_FIRED[..]) {
                Some(rest) => {
                    w.fired = true;
                    Some(rest)
                }
                None => value.strip_prefix(&COLUMNAR[..]),
            };
            if let Some(rest) = columnar {
                let mut c = Cursor(rest);
                let n = c.uvarint()? as usize;
                let mut slots = Vec::with_capacity(n.min(rest.len()));
                for _ in 0..n {
                    let slot = if self.p.int_key {
                        w.index.insert_raw(&self.keys, &c.ivarint()?.to_le_bytes(), &mut w.accs)?
                    } else {
                        let len = c.uvarint()? as usize;
                        w.index.insert_raw(&self.keys, c.take(len)?, &mut w.accs)?
                    };
                    slots.push(slot);
                }
                w.accs.decode_columns(&slots, &mut c)?;
                if !c.0.is_empty() {
                    return Err(OperatorError::State(format!("{} bytes after the window state of {start}", c.0.len())));
                }
            } else {
                let mut c = Cursor(value);
                while !c.0.is_empty() {
                    let slot = w.index.insert_raw(&self.keys, c.key()?, &mut w.accs)?;
                    w.accs.decode(slot as usize, &mut c)?;
                }
            }
            self.persisted.entry(start).or_default().push(e.key_group);
        }
        for e in r.state(SESSION_STATE) {
            self.restore_sessions(e.value.as_deref().unwrap_or_default())?;
            self.sessions_persisted.insert(e.key_group);
        }
        Ok(())
    }
}
