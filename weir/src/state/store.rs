//! Where a typed operator's keyed state lives between checkpoints: in
//! memory, per state, by key (and user key for maps), with what changed
//! since the last snapshot tracked so that incremental backends get only
//! the changes.
//!
//! An entry's value is 8 bytes of the processing time it was last written
//! (big-endian milliseconds; time to live counts from it) followed by the
//! value in MessagePack with named fields.

use std::collections::{BTreeMap, HashMap};

use serde::de::DeserializeOwned;
use serde::Serialize;
use weir_runtime::error::{OpResult, OperatorError};
use weir_runtime::state::{map_key, StateReader, StateWriter};

use super::{Kind, StateSpec};
use crate::UserError;

/// A value, encoded.
#[derive(Debug, Clone)]
struct Cell {
    kg: u32,
    touched: i64,
    bytes: Vec<u8>,
}

/// The entries of one state.
#[derive(Debug)]
enum Table {
    /// Value and list states: one entry per key.
    Single(HashMap<Vec<u8>, Cell>),
    /// Map states: per key, its entries by user key.
    Map(HashMap<Vec<u8>, BTreeMap<Vec<u8>, Cell>>),
}

/// Encodes a key or value in MessagePack with named fields.
pub(crate) fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, UserError> {
    rmp_serde::to_vec_named(v).map_err(|e| UserError::new(format!("a state value does not encode: {e}")))
}

/// Decodes a key or value [`encode`] wrote.
pub(crate) fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, UserError> {
    rmp_serde::from_slice(bytes).map_err(|e| UserError::new(format!("a key does not decode: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8], state: &str) -> Result<T, UserError> {
    rmp_serde::from_slice(bytes).map_err(|e| UserError::new(format!("a value of state `{state}` does not decode: {e}")))
}

/// The keyed state of one typed operator subtask.
#[derive(Debug)]
#[doc(hidden)]
pub struct KeyedStore {
    specs: Vec<StateSpec>,
    tables: Vec<Table>,
    /// Entries written or removed since the last snapshot: (state, snapshot key) -> key group.
    changed: HashMap<(usize, Vec<u8>), u32>,
}

impl KeyedStore {
    /// A store of the states `specs` declare.
    pub(crate) fn new(specs: Vec<StateSpec>) -> Self {
        let tables = specs
            .iter()
            .map(|s| match s.kind {
                Kind::Value | Kind::List => Table::Single(HashMap::new()),
                Kind::Map => Table::Map(HashMap::new()),
            })
            .collect();
        Self { specs, tables, changed: HashMap::new() }
    }

    fn spec(&self, id: usize) -> &StateSpec {
        self.specs.get(id).unwrap_or_else(|| {
            panic!("a state handle is used before `open` declared it (States::value, ::list or ::map)")
        })
    }

    fn expired(&self, id: usize, cell: &Cell, now: i64) -> bool {
        self.specs[id].ttl.is_some_and(|ttl| now.saturating_sub(cell.touched) >= ttl.after.as_millis() as i64)
    }

    fn snapshot_key(key: &[u8], uk: Option<&[u8]>) -> Vec<u8> {
        match uk {
            None => key.to_vec(),
            Some(uk) => map_key(key, uk),
        }
    }

    fn cell(&mut self, id: usize, key: &[u8], uk: Option<&[u8]>) -> Option<&mut Cell> {
        match (&mut self.tables[id], uk) {
            (Table::Single(t), None) => t.get_mut(key),
            (Table::Map(t), Some(uk)) => t.get_mut(key)?.get_mut(uk),
            _ => unreachable!("handles are typed by their kind"),
        }
    }

    /// The value of `key` (and `uk` in a map), unless absent or expired.
    pub(crate) fn get<V: DeserializeOwned>(
        &mut self,
        id: usize,
        key: &[u8],
        uk: Option<&[u8]>,
        now: i64,
    ) -> Result<Option<V>, UserError> {
        let spec = self.spec(id);
        let (name, refresh) = (spec.name.clone(), spec.ttl.is_some_and(|t| t.refresh_on_read));
        let Some(cell) = self.cell(id, key, uk).cloned() else { return Ok(None) };
        if self.expired(id, &cell, now) {
            self.remove(id, key, uk);
            return Ok(None);
        }
        if refresh {
            if let Some(c) = self.cell(id, key, uk) {
                c.touched = now;
            }
            self.changed.insert((id, Self::snapshot_key(key, uk)), cell.kg);
        }
        decode(&cell.bytes, &name).map(Some)
    }

    /// Sets the value of `key` (and `uk` in a map), in key group `kg`.
    pub(crate) fn put<V: Serialize + ?Sized>(
        &mut self,
        id: usize,
        key: &[u8],
        uk: Option<&[u8]>,
        kg: u32,
        value: &V,
        now: i64,
    ) -> Result<(), UserError> {
        self.spec(id);
        let cell = Cell { kg, touched: now, bytes: encode(value)? };
        match (&mut self.tables[id], uk) {
            (Table::Single(t), None) => {
                t.insert(key.to_vec(), cell);
            }
            (Table::Map(t), Some(uk)) => {
                t.entry(key.to_vec()).or_default().insert(uk.to_vec(), cell);
            }
            _ => unreachable!("handles are typed by their kind"),
        }
        self.changed.insert((id, Self::snapshot_key(key, uk)), kg);
        Ok(())
    }

    /// Removes the value of `key` (and `uk` in a map).
    pub(crate) fn remove(&mut self, id: usize, key: &[u8], uk: Option<&[u8]>) {
        self.spec(id);
        let removed = match (&mut self.tables[id], uk) {
            (Table::Single(t), None) => t.remove(key),
            (Table::Map(t), Some(uk)) => {
                let inner = t.get_mut(key);
                let removed = inner.and_then(|m| m.remove(uk));
                if t.get(key).is_some_and(BTreeMap::is_empty) {
                    t.remove(key);
                }
                removed
            }
            _ => unreachable!("handles are typed by their kind"),
        };
        if let Some(cell) = removed {
            self.changed.insert((id, Self::snapshot_key(key, uk)), cell.kg);
        }
    }

    /// Every live entry of `key`'s map.
    pub(crate) fn entries<K: DeserializeOwned, V: DeserializeOwned>(
        &mut self,
        id: usize,
        key: &[u8],
        now: i64,
    ) -> Result<Vec<(K, V)>, UserError> {
        let name = self.spec(id).name.clone();
        let Table::Map(t) = &self.tables[id] else { unreachable!("handles are typed by their kind") };
        let Some(inner) = t.get(key) else { return Ok(Vec::new()) };
        let (live, dead): (Vec<_>, Vec<_>) =
            inner.iter().map(|(uk, c)| (uk.clone(), c.clone())).partition(|(_, c)| !self.expired(id, c, now));
        for (uk, _) in dead {
            self.remove(id, key, Some(&uk));
        }
        live.into_iter().map(|(uk, c)| Ok((decode(&uk, &name)?, decode(&c.bytes, &name)?))).collect()
    }

    /// Removes `key`'s whole map.
    pub(crate) fn clear_map(&mut self, id: usize, key: &[u8]) {
        self.spec(id);
        let Table::Map(t) = &mut self.tables[id] else { unreachable!("handles are typed by their kind") };
        if let Some(inner) = t.remove(key) {
            for (uk, cell) in inner {
                self.changed.insert((id, map_key(key, &uk)), cell.kg);
            }
        }
    }

    /// Drops every expired entry.
    pub(crate) fn expire(&mut self, now: i64) {
        let mut gone: Vec<(usize, Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for (id, table) in self.tables.iter().enumerate() {
            if self.specs[id].ttl.is_none() {
                continue;
            }
            match table {
                Table::Single(t) => {
                    gone.extend(t.iter().filter(|(_, c)| self.expired(id, c, now)).map(|(k, _)| (id, k.clone(), None)))
                }
                Table::Map(t) => {
                    for (k, inner) in t {
                        gone.extend(
                            inner
                                .iter()
                                .filter(|(_, c)| self.expired(id, c, now))
                                .map(|(uk, _)| (id, k.clone(), Some(uk.clone()))),
                        );
                    }
                }
            }
        }
        for (id, key, uk) in gone {
            self.remove(id, &key, uk.as_deref());
        }
    }

    fn stored(cell: &Cell) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + cell.bytes.len());
        v.extend_from_slice(&cell.touched.to_be_bytes());
        v.extend_from_slice(&cell.bytes);
        v
    }

    /// Writes the state: every entry, or what changed since the last snapshot.
    pub(crate) fn snapshot(&mut self, w: &mut StateWriter) {
        if w.full() {
            for (id, table) in self.tables.iter().enumerate() {
                let name = &self.specs[id].name;
                match table {
                    Table::Single(t) => {
                        for (k, c) in t {
                            w.put(name, c.kg, k.clone(), Self::stored(c));
                        }
                    }
                    Table::Map(t) => {
                        for (k, inner) in t {
                            for (uk, c) in inner {
                                w.put(name, c.kg, map_key(k, uk), Self::stored(c));
                            }
                        }
                    }
                }
            }
        } else {
            for ((id, skey), kg) in std::mem::take(&mut self.changed) {
                let name = self.specs[id].name.clone();
                let cell = match &self.tables[id] {
                    Table::Single(t) => t.get(&skey).cloned(),
                    Table::Map(t) => split_map_key(&skey).and_then(|(k, uk)| t.get(k)?.get(uk).cloned()),
                };
                match cell {
                    Some(c) => w.put(&name, c.kg, skey, Self::stored(&c)),
                    None => w.delete(&name, kg, skey),
                }
            }
        }
        self.changed.clear();
    }

    /// Takes over the restored entries of every declared state.
    pub(crate) fn restore(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        for id in 0..self.specs.len() {
            let name = self.specs[id].name.clone();
            for e in r.state(&name) {
                let v = e.value.as_deref().unwrap_or_default();
                if v.len() < 8 {
                    return Err(OperatorError::State(format!("an entry of state `{name}` is truncated")));
                }
                let cell = Cell {
                    kg: e.key_group,
                    touched: i64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
                    bytes: v[8..].to_vec(),
                };
                match &mut self.tables[id] {
                    Table::Single(t) => {
                        t.insert(e.key.clone(), cell);
                    }
                    Table::Map(t) => {
                        let (k, uk) = split_map_key(&e.key)
                            .ok_or_else(|| OperatorError::State(format!("a key of map state `{name}` is malformed")))?;
                        t.entry(k.to_vec()).or_default().insert(uk.to_vec(), cell);
                    }
                }
            }
        }
        self.changed.clear();
        Ok(())
    }
}

/// The key and user key of a map entry's snapshot key ([`map_key`]).
fn split_map_key(k: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = u32::from_be_bytes(k.get(..4)?.try_into().ok()?) as usize;
    let rest = &k[4..];
    (rest.len() >= n).then(|| rest.split_at(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{States, Ttl};
    use std::time::Duration;
    use weir_types::CheckpointId;

    fn store() -> (KeyedStore, usize, usize, usize) {
        let mut s = States::default();
        s.value::<i64>("count");
        s.map_with_ttl::<String, i64>("seen", Ttl::after(Duration::from_millis(100)));
        s.list::<String>("names");
        (KeyedStore::new(s.specs), 0, 1, 2)
    }

    fn apply(into: &mut Vec<weir_types::StateEntry>, w: StateWriter) {
        for e in w.into_entries() {
            into.retain(|x| !(x.state == e.state && x.key == e.key));
            if e.value.is_some() {
                into.push(e);
            }
        }
    }

    #[test]
    fn incremental_snapshots_add_up_and_restore_every_kind() {
        let (mut s, count, seen, names) = store();
        let mut stored = Vec::new();
        s.put(count, b"a", None, 3, &5i64, 0).unwrap();
        s.put(seen, b"a", Some(&encode("x").unwrap()), 3, &1i64, 0).unwrap();
        s.put(seen, b"a", Some(&encode("y").unwrap()), 3, &2i64, 0).unwrap();
        s.put(names, b"b", None, 7, &vec!["n".to_string()], 0).unwrap();
        let mut w = StateWriter::new("op", CheckpointId(1), false);
        s.snapshot(&mut w);
        apply(&mut stored, w);
        s.remove(seen, b"a", Some(&encode("x").unwrap()));
        s.put(count, b"a", None, 3, &6i64, 0).unwrap();
        let mut w = StateWriter::new("op", CheckpointId(2), false);
        s.snapshot(&mut w);
        apply(&mut stored, w);
        assert_eq!(stored.len(), 3, "count, seen[y], names");
        let (mut back, ..) = store();
        back.restore(&StateReader::new("op", &stored)).unwrap();
        assert_eq!(back.get::<i64>(count, b"a", None, 50).unwrap(), Some(6));
        assert_eq!(back.entries::<String, i64>(seen, b"a", 50).unwrap(), vec![("y".to_string(), 2)]);
        assert_eq!(back.get::<Vec<String>>(names, b"b", None, 50).unwrap(), Some(vec!["n".to_string()]));
    }

    #[test]
    fn expired_entries_are_never_returned_and_leave_state() {
        let (mut s, _, seen, _) = store();
        let x = encode("x").unwrap();
        s.put(seen, b"a", Some(&x), 1, &1i64, 0).unwrap();
        assert_eq!(s.get::<i64>(seen, b"a", Some(&x), 99).unwrap(), Some(1));
        assert_eq!(s.get::<i64>(seen, b"a", Some(&x), 100).unwrap(), None);
        let mut w = StateWriter::new("op", CheckpointId(1), false);
        s.snapshot(&mut w);
        let e = w.into_entries();
        assert!(e.iter().all(|e| e.value.is_none()), "the expired entry is deleted from state");
        s.put(seen, b"b", Some(&x), 1, &1i64, 0).unwrap();
        s.expire(1_000);
        assert!(s.entries::<String, i64>(seen, b"b", 1_000).unwrap().is_empty());
    }
}
