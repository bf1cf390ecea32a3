//! State file layouts: heap snapshot files (every entry; also the
//! canonical files of savepoints) and RocksDB change files (puts, deletions
//! and range deletions, in order). Both are part of the checkpoint and
//! savepoint formats.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use weir_types::{CheckpointId, StateEntry};

/// First bytes of a heap snapshot file.
const HEAP_MAGIC: &[u8; 8] = b"WEIRST01";

/// First bytes of a RocksDB backend's change file.
const CHANGES_MAGIC: &[u8; 8] = b"WEIRCH01";

/// How a local name of a RocksDB snapshot's file ends if the file holds the
/// changes of one checkpoint (`<checkpoint>.changes`).
pub(crate) const CHANGES_SUFFIX: &str = ".changes";

/// Encodes entries as a heap snapshot file.
pub fn encode_entries(entries: &[StateEntry]) -> Bytes {
    let mut b = BytesMut::new();
    encode_entries_into(entries, &mut b);
    b.freeze()
}

/// Appends the heap snapshot file of `entries` to `b`.
pub(crate) fn encode_entries_into(entries: &[StateEntry], b: &mut BytesMut) {
    let size: usize = entries
        .iter()
        .map(|e| 16 + e.operator.len() + e.state.len() + e.key.len() + e.value.as_ref().map_or(0, Vec::len))
        .sum();
    b.reserve(size + 16);
    b.put_slice(HEAP_MAGIC);
    b.put_u64(entries.len() as u64);
    for e in entries {
        put_entry(b, e, e.value.as_deref().unwrap_or_default());
    }
}

/// Appends `e` with `value` as its value bytes (the layout
/// [`decode_entry`] reads).
fn put_entry(b: &mut BytesMut, e: &StateEntry, value: &[u8]) {
    b.put_u16(e.operator.len() as u16);
    b.put_slice(e.operator.as_bytes());
    b.put_u16(e.state.len() as u16);
    b.put_slice(e.state.as_bytes());
    b.put_u32(e.key_group);
    b.put_u32(e.key.len() as u32);
    b.put_slice(&e.key);
    b.put_u32(value.len() as u32);
    b.put_slice(value);
}

/// Encodes the changes of keyed state among `entries` (operator state is
/// skipped) as a change file: puts, deletions and range deletions, in order.
pub(crate) fn encode_changes(entries: &[StateEntry]) -> Bytes {
    let keyed = || entries.iter().filter(|e| e.is_keyed());
    let size: usize = keyed()
        .map(|e| {
            let value = e.value.as_ref().or(e.delete_to.as_ref()).map_or(0, Vec::len);
            17 + e.operator.len() + e.state.len() + e.key.len() + value
        })
        .sum();
    let mut b = BytesMut::with_capacity(size + 16);
    b.put_slice(CHANGES_MAGIC);
    b.put_u64(keyed().count() as u64);
    for e in keyed() {
        let (kind, value) = match (&e.value, &e.delete_to) {
            (Some(v), _) => (0u8, v.as_slice()),
            (None, None) => (1, &[][..]),
            (None, Some(to)) => (2, to.as_slice()),
        };
        b.put_u8(kind);
        put_entry(&mut b, e, value);
    }
    b.freeze()
}

/// Decodes a change file.
pub(crate) fn decode_changes(mut b: Bytes) -> Result<Vec<StateEntry>, String> {
    let magic = take(&mut b, 8, "the header")?;
    if magic.as_ref() != CHANGES_MAGIC {
        return Err("not a change file (bad magic)".into());
    }
    let n = take(&mut b, 8, "the header")?.get_u64();
    let mut out = Vec::with_capacity(n.min(1 << 20) as usize);
    for _ in 0..n {
        let kind = take(&mut b, 1, "a change's kind")?.get_u8();
        let mut e = decode_entry(&mut b)?;
        match kind {
            0 => {}
            1 => e.value = None,
            2 => e.delete_to = e.value.take(),
            k => return Err(format!("unknown change kind {k}")),
        }
        out.push(e);
    }
    if b.has_remaining() {
        return Err(format!("{} bytes after the last change", b.remaining()));
    }
    Ok(out)
}

/// The checkpoint a change file's local name is of.
pub(crate) fn change_checkpoint(local: &str) -> Option<CheckpointId> {
    local.strip_suffix(CHANGES_SUFFIX)?.parse().ok().map(CheckpointId)
}

fn take(b: &mut Bytes, n: usize, what: &str) -> Result<Bytes, String> {
    if b.remaining() < n {
        return Err(format!("truncated in {what}"));
    }
    Ok(b.split_to(n))
}

/// An encoded entry (its value bytes as `value`).
fn decode_entry(b: &mut Bytes) -> Result<StateEntry, String> {
    let text = |b: Bytes, what: &str| String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not UTF-8"));
    let len = take(b, 2, "an operator name")?.get_u16() as usize;
    let operator = text(take(b, len, "an operator name")?, "an operator name")?;
    let len = take(b, 2, "a state name")?.get_u16() as usize;
    let state = text(take(b, len, "a state name")?, "a state name")?;
    let key_group = take(b, 4, "a key group")?.get_u32();
    let len = take(b, 4, "a key")?.get_u32() as usize;
    let key = take(b, len, "a key")?.to_vec();
    let len = take(b, 4, "a value")?.get_u32() as usize;
    let value = Some(take(b, len, "a value")?.to_vec());
    Ok(StateEntry { operator, state, key_group, key, value, delete_to: None })
}

/// Decodes a heap snapshot file.
pub fn decode_entries(mut b: Bytes) -> Result<Vec<StateEntry>, String> {
    let magic = take(&mut b, 8, "the header")?;
    if magic.as_ref() != HEAP_MAGIC {
        return Err("not a state file (bad magic)".into());
    }
    let n = take(&mut b, 8, "the header")?.get_u64();
    let mut out = Vec::with_capacity(n.min(1 << 20) as usize);
    for _ in 0..n {
        out.push(decode_entry(&mut b)?);
    }
    if b.has_remaining() {
        return Err(format!("{} bytes after the last entry", b.remaining()));
    }
    Ok(out)
}
