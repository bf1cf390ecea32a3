//! Records of an epoch held in memory and in checkpoints until their
//! transaction commits.

use weir_runtime::error::{OpResult, OperatorError};

/// Serialized records: keys and values in one buffer. A record without a
/// value is a tombstone (an upsert sink's delete).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Records {
    pub(super) bytes: Vec<u8>,
    /// Per record: key range (absent: no key), value range (absent: a tombstone).
    pub(super) spans: Vec<Span>,
}

/// Where one record's key and value are in [`Records::bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) key: Option<(usize, usize)>,
    pub(super) value: Option<(usize, usize)>,
}

impl Records {
    pub(super) fn push(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) {
        let mut span = |b: &[u8]| {
            let s = self.bytes.len();
            self.bytes.extend_from_slice(b);
            (s, self.bytes.len())
        };
        let key = key.map(&mut span);
        let value = value.map(&mut span);
        self.spans.push(Span { key, value });
    }

    pub(super) fn len(&self) -> usize {
        self.spans.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (Option<&[u8]>, Option<&[u8]>)> {
        let range = |r: Option<(usize, usize)>| r.map(|(a, b)| &self.bytes[a..b]);
        self.spans.iter().map(move |s| (range(s.key), range(s.value)))
    }

    pub(super) fn append(&mut self, other: Records) {
        for (k, v) in other.iter() {
            self.push(k, v);
        }
    }

    /// `count`, then per record `key length or -1`, key, `value length or
    /// -1`, value.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + 8 * self.spans.len() + 4);
        out.extend_from_slice(&(self.spans.len() as u32).to_be_bytes());
        for (k, v) in self.iter() {
            for part in [k, v] {
                match part {
                    Some(b) => {
                        out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                        out.extend_from_slice(b);
                    }
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
        }
        out
    }

    pub(super) fn decode(mut b: &[u8]) -> OpResult<Records> {
        let bad = || OperatorError::State("kafka sink records in the checkpoint do not decode".into());
        let take = |n: usize, b: &mut &[u8]| -> OpResult<Vec<u8>> {
            if b.len() < n {
                return Err(bad());
            }
            let (h, t) = b.split_at(n);
            *b = t;
            Ok(h.to_vec())
        };
        let n = u32::from_be_bytes(take(4, &mut b)?.try_into().map_err(|_| bad())?);
        let mut r = Records::default();
        for _ in 0..n {
            let part = |b: &mut &[u8]| -> OpResult<Option<Vec<u8>>> {
                let n = i32::from_be_bytes(take(4, b)?.try_into().map_err(|_| bad())?);
                if n >= 0 {
                    Ok(Some(take(n as usize, b)?))
                } else {
                    Ok(None)
                }
            };
            let key = part(&mut b)?;
            let value = part(&mut b)?;
            r.push(key.as_deref(), value.as_deref());
        }
        if !b.is_empty() {
            return Err(bad());
        }
        Ok(r)
    }
}
