//! Operator state as checkpoints see it, and keyed state for operators.
//!
//! Operators keep their working state in memory in the layout that suits
//! them and exchange it with the state backend only at checkpoint barriers
//! and on restore, as [`StateEntry`]s: `(operator, state name, key group,
//! key, value)`. Keyed entries carry their key group, so that a restore at a
//! different parallelism picks exactly the key groups a subtask owns;
//! subtask-scoped entries ([`NON_KEYED`]: source positions, broadcast
//! tables) go back to the subtask with the same index.
//!
//! A backend asks for *full* snapshots (heap: every entry each time) or for
//! *changes* (RocksDB: puts and deletes since the previous checkpoint);
//! [`StateWriter::full`] tells an operator which. The keyed state types here
//! ([`KeyedValues`], [`KeyedLists`], [`KeyedMaps`], [`Timers`]) track what
//! changed so that operators built on them get incremental snapshots for free.
//!
//! Where the state lives and how it is persisted is up to the task manager
//! (see `weir-state`); this module has no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::error::{OpResult, OperatorError};

pub use weir_types::{CheckpointId, StateEntry, NON_KEYED, UNION};

/// Where an operator writes its state at a barrier.
#[derive(Debug)]
pub struct StateWriter {
    operator: String,
    checkpoint: CheckpointId,
    full: bool,
    entries: Vec<StateEntry>,
}

impl StateWriter {
    /// A writer for `operator`'s state in checkpoint `checkpoint`.
    pub fn new(operator: &str, checkpoint: CheckpointId, full: bool) -> Self {
        Self { operator: operator.to_string(), checkpoint, full, entries: Vec::new() }
    }

    /// The checkpoint being taken.
    pub fn checkpoint(&self) -> CheckpointId {
        self.checkpoint
    }

    /// Whether the backend wants every entry (true) or only changes since
    /// the previous snapshot (false).
    pub fn full(&self) -> bool {
        self.full
    }

    /// Sets a keyed entry.
    pub fn put(&mut self, state: &str, key_group: u32, key: Vec<u8>, value: Vec<u8>) {
        self.entries.push(StateEntry {
            operator: self.operator.clone(),
            state: state.to_string(),
            key_group,
            key,
            value: Some(value),
            delete_to: None,
        });
    }

    /// Deletes a keyed entry (ignored by full snapshots).
    pub fn delete(&mut self, state: &str, key_group: u32, key: Vec<u8>) {
        if !self.full {
            self.entries.push(StateEntry {
                operator: self.operator.clone(),
                state: state.to_string(),
                key_group,
                key,
                value: None,
                delete_to: None,
            });
        }
    }

    /// Deletes every key of `state` in `key_group` from `from` (inclusive)
    /// to `to` (exclusive), in the byte order of keys (ignored by full
    /// snapshots). One entry, however many keys it covers.
    pub fn delete_range(&mut self, state: &str, key_group: u32, from: Vec<u8>, to: Vec<u8>) {
        if !self.full {
            self.entries.push(StateEntry {
                operator: self.operator.clone(),
                state: state.to_string(),
                key_group,
                key: from,
                value: None,
                delete_to: Some(to),
            });
        }
    }

    /// Sets an entry of this subtask (not keyed).
    pub fn put_subtask(&mut self, state: &str, key: Vec<u8>, value: Vec<u8>) {
        self.put(state, NON_KEYED, key, value);
    }

    /// Sets an entry of union state (see [`UNION`]). A restore hands every
    /// subtask the entries of all subtasks, so the operator must tell them
    /// apart (or merge the same key written by several subtasks).
    pub fn put_union(&mut self, state: &str, key: Vec<u8>, value: Vec<u8>) {
        self.put(state, UNION, key, value);
    }

    /// Writes union state that an operator keeps whole in memory (e.g. a
    /// transactional sink's uncommitted epochs): `want` is every entry,
    /// `(state, key) -> value`, and `held` the keys the previous snapshot
    /// left. A full snapshot writes all of `want`; an incremental one
    /// deletes the keys gone and writes the new ones (a key's value never
    /// changes once written). Returns the keys now held.
    pub fn put_union_entries(&mut self, held: &UnionKeys, want: BTreeMap<(String, Vec<u8>), Vec<u8>>) -> UnionKeys {
        if !self.full {
            for gone in held.iter().filter(|k| !want.contains_key(*k)) {
                self.delete(&gone.0, UNION, gone.1.clone());
            }
        }
        let mut now = UnionKeys::new();
        for (k, v) in want {
            if self.full || !held.contains(&k) {
                self.put_union(&k.0, k.1.clone(), v);
            }
            now.insert(k);
        }
        now
    }

    /// The entries written.
    pub fn into_entries(self) -> Vec<StateEntry> {
        self.entries
    }
}

/// Keys of union state an operator holds: (state name, key).
pub type UnionKeys = BTreeSet<(String, Vec<u8>)>;

/// The key of a subtask's entry for a checkpoint epoch: subtask and
/// epoch, big-endian, so entries sort by subtask, then epoch.
pub fn subtask_epoch_key(subtask: u32, epoch: u64) -> Vec<u8> {
    let mut k = subtask.to_be_bytes().to_vec();
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

/// An operator's restored state.
#[derive(Debug)]
pub struct StateReader<'a> {
    entries: Vec<&'a StateEntry>,
}

impl<'a> StateReader<'a> {
    /// The entries of `operator` among `all`.
    pub fn new(operator: &str, all: &'a [StateEntry]) -> Self {
        Self { entries: all.iter().filter(|e| e.operator == operator).collect() }
    }

    /// Entries of state `name`.
    pub fn state(&self, name: &'a str) -> impl Iterator<Item = &'a StateEntry> + '_ {
        self.entries.iter().copied().filter(move |e| e.state == name && e.value.is_some())
    }

    /// Whether nothing was restored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// How a value is stored in a snapshot.
pub trait StateCodec: Sized {
    /// Appends the encoded value.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes a value.
    fn decode(bytes: &[u8]) -> OpResult<Self>;
}

fn bad(what: &str) -> OperatorError {
    OperatorError::State(format!("restored {what} does not decode"))
}

impl StateCodec for i64 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn decode(b: &[u8]) -> OpResult<Self> {
        Ok(i64::from_be_bytes(b.try_into().map_err(|_| bad("i64"))?))
    }
}

impl StateCodec for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(b: &[u8]) -> OpResult<Self> {
        Ok(b.to_vec())
    }
}

impl StateCodec for String {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(b: &[u8]) -> OpResult<Self> {
        String::from_utf8(b.to_vec()).map_err(|_| bad("string"))
    }
}

/// A list: each element length-prefixed.
impl<T: StateCodec> StateCodec for Vec<T>
where
    T: ListElement,
{
    fn encode(&self, out: &mut Vec<u8>) {
        for v in self {
            let mut one = Vec::new();
            v.encode(&mut one);
            out.extend_from_slice(&(one.len() as u32).to_be_bytes());
            out.extend_from_slice(&one);
        }
    }
    fn decode(mut b: &[u8]) -> OpResult<Self> {
        let mut out = Vec::new();
        while !b.is_empty() {
            if b.len() < 4 {
                return Err(bad("list"));
            }
            let n = u32::from_be_bytes(b[..4].try_into().expect("4 bytes")) as usize;
            b = &b[4..];
            if b.len() < n {
                return Err(bad("list"));
            }
            out.push(T::decode(&b[..n])?);
            b = &b[n..];
        }
        Ok(out)
    }
}

/// Marker for types that may be list elements (keeps `Vec<u8>` a byte string).
pub trait ListElement {}
impl ListElement for i64 {}
impl ListElement for String {}

/// Value state: one value per key, partitioned by key group, with the
/// changes since the last snapshot tracked for incremental checkpoints.
#[derive(Debug)]
pub struct KeyedValues<V> {
    name: &'static str,
    values: HashMap<Vec<u8>, (u32, V)>,
    dirty: HashSet<Vec<u8>>,
    removed: HashMap<Vec<u8>, u32>,
}

impl<V: StateCodec> KeyedValues<V> {
    /// An empty state called `name`.
    pub fn new(name: &'static str) -> Self {
        Self { name, values: HashMap::new(), dirty: HashSet::new(), removed: HashMap::new() }
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.values.get(key).map(|(_, v)| v)
    }

    /// Sets the value of `key` (in key group `kg`).
    pub fn put(&mut self, kg: u32, key: Vec<u8>, value: V) {
        self.removed.remove(&key);
        self.dirty.insert(key.clone());
        self.values.insert(key, (kg, value));
    }

    /// Mutable access to the value of `key`, marking it changed.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let (_, v) = self.values.get_mut(key)?;
        self.dirty.insert(key.to_vec());
        Some(v)
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        let (kg, v) = self.values.remove(key)?;
        self.dirty.remove(key);
        self.removed.insert(key.to_vec(), kg);
        Some(v)
    }

    /// Every key and value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.values.iter().map(|(k, (_, v))| (k.as_slice(), v))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Writes the state (all of it, or what changed since the last call).
    pub fn snapshot(&mut self, w: &mut StateWriter) {
        let mut buf = Vec::new();
        let mut put = |w: &mut StateWriter, k: &[u8], kg: u32, v: &V| {
            buf.clear();
            v.encode(&mut buf);
            w.put(self.name, kg, k.to_vec(), buf.clone());
        };
        if w.full() {
            for (k, (kg, v)) in &self.values {
                put(w, k, *kg, v);
            }
        } else {
            for k in &self.dirty {
                if let Some((kg, v)) = self.values.get(k) {
                    put(w, k, *kg, v);
                }
            }
            for (k, kg) in &self.removed {
                w.delete(self.name, *kg, k.clone());
            }
        }
        self.dirty.clear();
        self.removed.clear();
    }

    /// Restores from a snapshot (replacing the current content).
    pub fn restore(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        self.values.clear();
        self.dirty.clear();
        self.removed.clear();
        for e in r.state(self.name) {
            let v = V::decode(e.value.as_deref().unwrap_or_default())?;
            self.values.insert(e.key.clone(), (e.key_group, v));
        }
        Ok(())
    }
}

/// List state: a list of values per key.
pub type KeyedLists<V> = KeyedValues<Vec<V>>;

/// Map state: per key, a map of user keys to values; stored as one entry per
/// (key, user key) so that one change rewrites one entry.
pub type KeyedMaps<V> = KeyedValues<V>;

/// Composite key of a map state entry: the key, then the user key.
pub fn map_key(key: &[u8], user_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + key.len() + user_key.len());
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k.extend_from_slice(key);
    k.extend_from_slice(user_key);
    k
}

/// Event-time or processing-time timers of a keyed operator, ordered by time.
#[derive(Debug)]
pub struct Timers {
    name: &'static str,
    queue: BTreeSet<(i64, u32, Vec<u8>)>,
    added: HashSet<(i64, u32, Vec<u8>)>,
    removed: HashSet<(i64, u32, Vec<u8>)>,
}

impl Timers {
    /// An empty timer queue called `name`.
    pub fn new(name: &'static str) -> Self {
        Self { name, queue: BTreeSet::new(), added: HashSet::new(), removed: HashSet::new() }
    }

    /// Registers a timer for `key` (key group `kg`) at `time` (idempotent).
    pub fn register(&mut self, time: i64, kg: u32, key: Vec<u8>) {
        let t = (time, kg, key);
        if self.queue.insert(t.clone()) {
            self.removed.remove(&t);
            self.added.insert(t);
        }
    }

    /// Removes the timer for `key` (key group `kg`) at `time`, if registered.
    pub fn delete(&mut self, time: i64, kg: u32, key: &[u8]) {
        let t = (time, kg, key.to_vec());
        if self.queue.remove(&t) && !self.added.remove(&t) {
            self.removed.insert(t);
        }
    }

    /// The earliest timer's time.
    pub fn next(&self) -> Option<i64> {
        self.queue.first().map(|t| t.0)
    }

    /// Removes and returns every timer at or before `time`, earliest first.
    pub fn fire(&mut self, time: i64) -> Vec<(i64, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(first) = self.queue.first() {
            if first.0 > time {
                break;
            }
            let t = self.queue.pop_first().expect("checked");
            if !self.added.remove(&t) {
                self.removed.insert(t.clone());
            }
            out.push(t);
        }
        out
    }

    /// Number of timers.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no timer is registered.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn entry_key(time: i64, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(8 + key.len());
        k.extend_from_slice(&time.to_be_bytes());
        k.extend_from_slice(key);
        k
    }

    /// Writes the timers (all, or changes).
    pub fn snapshot(&mut self, w: &mut StateWriter) {
        if w.full() {
            for (t, kg, k) in &self.queue {
                w.put(self.name, *kg, Self::entry_key(*t, k), Vec::new());
            }
        } else {
            for (t, kg, k) in &self.added {
                w.put(self.name, *kg, Self::entry_key(*t, k), Vec::new());
            }
            for (t, kg, k) in &self.removed {
                w.delete(self.name, *kg, Self::entry_key(*t, k));
            }
        }
        self.added.clear();
        self.removed.clear();
    }

    /// Restores the timers.
    pub fn restore(&mut self, r: &StateReader<'_>) -> OpResult<()> {
        self.queue.clear();
        self.added.clear();
        self.removed.clear();
        for e in r.state(self.name) {
            if e.key.len() < 8 {
                return Err(bad("timer"));
            }
            let t = i64::from_be_bytes(e.key[..8].try_into().expect("8 bytes"));
            self.queue.insert((t, e.key_group, e.key[8..].to_vec()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies snapshots the way an incremental backend does.
    fn apply(store: &mut HashMap<(String, u32, Vec<u8>), Vec<u8>>, entries: Vec<StateEntry>) {
        for e in entries {
            let k = (e.state, e.key_group, e.key);
            match e.value {
                Some(v) => store.insert(k, v),
                None => store.remove(&k),
            };
        }
    }

    fn as_entries(store: &HashMap<(String, u32, Vec<u8>), Vec<u8>>) -> Vec<StateEntry> {
        store
            .iter()
            .map(|((s, kg, k), v)| StateEntry {
                operator: "op".into(),
                state: s.clone(),
                key_group: *kg,
                key: k.clone(),
                value: Some(v.clone()),
                delete_to: None,
            })
            .collect()
    }

    #[test]
    fn incremental_snapshots_add_up_to_the_full_one() {
        let mut s: KeyedValues<i64> = KeyedValues::new("count");
        let mut timers = Timers::new("timers");
        let mut store = HashMap::new();
        for round in 0..5i64 {
            for k in 0..20i64 {
                if (k + round) % 3 == 0 {
                    s.remove(&k.to_be_bytes());
                } else {
                    s.put((k % 7) as u32, k.to_be_bytes().to_vec(), k * round);
                    timers.register(round * 10 + k, (k % 7) as u32, k.to_be_bytes().to_vec());
                }
            }
            timers.fire(round * 10 + 5);
            timers.delete(round * 10 + 7, 0, 7i64.to_be_bytes().as_slice());
            let mut w = StateWriter::new("op", CheckpointId(1), false);
            s.snapshot(&mut w);
            timers.snapshot(&mut w);
            apply(&mut store, w.into_entries());
        }
        let mut full = StateWriter::new("op", CheckpointId(1), true);
        s.snapshot(&mut full);
        timers.snapshot(&mut full);
        let mut expected = HashMap::new();
        apply(&mut expected, full.into_entries());
        assert_eq!(store, expected);

        let entries = as_entries(&store);
        let r = StateReader::new("op", &entries);
        let mut back: KeyedValues<i64> = KeyedValues::new("count");
        back.restore(&r).unwrap();
        let mut t2 = Timers::new("timers");
        t2.restore(&r).unwrap();
        assert_eq!(back.len(), s.len());
        for (k, v) in s.iter() {
            assert_eq!(back.get(k), Some(v));
        }
        assert_eq!(t2.queue, timers.queue);
    }

    #[test]
    fn lists_round_trip_and_reject_garbage() {
        let v = vec!["a".to_string(), String::new(), "ccc".into()];
        let mut b = Vec::new();
        v.encode(&mut b);
        assert_eq!(Vec::<String>::decode(&b).unwrap(), v);
        assert!(Vec::<String>::decode(&b[..b.len() - 1]).is_err());
        assert!(i64::decode(b"abc").is_err());
    }
}
