//! Accumulators of a group aggregation that can take rows back: each one
//! adds a row (`sign` +1) or retracts one (`sign` -1), and gives its
//! current result.

use std::collections::BTreeMap;

use super::AggFn;
use crate::error::{OpResult, OperatorError};

/// One aggregate's running value for one key.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Acc {
    /// Rows (or non-null values) counted.
    Count(i64),
    /// An integer sum and how many values are in it (null when none).
    SumInt { sum: i64, n: i64 },
    /// A float sum and how many values are in it.
    SumFloat { sum: f64, n: i64 },
    /// Sum and count of an average.
    Avg { sum: f64, n: i64 },
    /// The smallest or largest value so far, of an input that only adds
    /// rows (order-preserving row bytes).
    Extreme(Option<Vec<u8>>),
    /// Every value with how often it occurs: MIN and MAX of an updating
    /// input (a retracted extreme gives way to the next one), and
    /// COUNT(DISTINCT).
    Multiset(BTreeMap<Vec<u8>, i64>),
}

/// An aggregate's result, comparable to tell whether an update changed it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Out {
    Int(Option<i64>),
    Float(Option<f64>),
    /// Row bytes of a MIN or MAX (`None`: null).
    Bytes(Option<Vec<u8>>),
}

/// One row's input to one aggregate.
#[derive(Debug, Clone, Copy)]
pub(super) enum Value<'a> {
    /// A row with no value read (COUNT(*)), or a non-null value that is not
    /// read either (COUNT(column)).
    Present,
    /// A null: aggregates skip it.
    Null,
    Int(i64),
    Float(f64),
    Bytes(&'a [u8]),
}

/// How an aggregate keeps its value (fixed when the operator is planned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Count,
    SumInt,
    SumFloat,
    Avg,
    Min,
    Max,
    /// MIN or MAX over an updating input.
    MinMulti,
    MaxMulti,
    Distinct,
    /// SUM(DISTINCT) of int64 values, of float64 values; AVG(DISTINCT).
    DistinctSumInt,
    DistinctSumFloat,
    DistinctAvg,
}

impl Kind {
    pub(super) fn new(func: AggFn, float: bool, updating: bool) -> Self {
        match func {
            AggFn::Count => Kind::Count,
            AggFn::Sum if float => Kind::SumFloat,
            AggFn::Sum => Kind::SumInt,
            AggFn::Avg => Kind::Avg,
            AggFn::Min if updating => Kind::MinMulti,
            AggFn::Max if updating => Kind::MaxMulti,
            AggFn::Min => Kind::Min,
            AggFn::Max => Kind::Max,
            AggFn::CountDistinct => Kind::Distinct,
            AggFn::SumDistinct if float => Kind::DistinctSumFloat,
            AggFn::SumDistinct => Kind::DistinctSumInt,
            AggFn::AvgDistinct => Kind::DistinctAvg,
        }
    }

    pub(super) fn empty(self) -> Acc {
        match self {
            Kind::Count => Acc::Count(0),
            Kind::SumInt => Acc::SumInt { sum: 0, n: 0 },
            Kind::SumFloat => Acc::SumFloat { sum: 0.0, n: 0 },
            Kind::Avg => Acc::Avg { sum: 0.0, n: 0 },
            Kind::Min | Kind::Max => Acc::Extreme(None),
            Kind::MinMulti
            | Kind::MaxMulti
            | Kind::Distinct
            | Kind::DistinctSumInt
            | Kind::DistinctSumFloat
            | Kind::DistinctAvg => Acc::Multiset(BTreeMap::new()),
        }
    }
}

impl Acc {
    /// Adds (`sign` 1) or retracts (`sign` -1) one value.
    pub(super) fn apply(&mut self, kind: Kind, sign: i64, v: Value<'_>) {
        if matches!(v, Value::Null) {
            return;
        }
        match (self, v) {
            (Acc::Count(n), _) => *n += sign,
            (Acc::SumInt { sum, n }, Value::Int(x)) => {
                *sum = sum.wrapping_add(sign.wrapping_mul(x));
                *n += sign;
            }
            (Acc::SumFloat { sum, n }, Value::Float(x)) | (Acc::Avg { sum, n }, Value::Float(x)) => {
                *sum += sign as f64 * x;
                *n += sign;
                if *n == 0 {
                    // No rounding residue outlives the values it came from.
                    *sum = 0.0;
                }
            }
            (Acc::Extreme(best), Value::Bytes(x)) => {
                let better = match best {
                    None => true,
                    Some(b) if kind == Kind::Min => x < b.as_slice(),
                    Some(b) => x > b.as_slice(),
                };
                if better {
                    *best = Some(x.to_vec());
                }
            }
            // Distinct numbers, kept by their bytes (a float's with -0 as 0).
            (Acc::Multiset(m), Value::Int(x)) => count(m, sign, &x.to_be_bytes()),
            (Acc::Multiset(m), Value::Float(x)) => count(m, sign, &(x + 0.0).to_bits().to_be_bytes()),
            (Acc::Multiset(m), Value::Bytes(x)) => count(m, sign, x),
            _ => unreachable!("accumulators and their inputs are planned together"),
        }
    }

    /// The current result.
    pub(super) fn out(&self, kind: Kind) -> Out {
        match self {
            Acc::Count(n) => Out::Int(Some(*n)),
            Acc::SumInt { sum, n } => Out::Int((*n > 0).then_some(*sum)),
            Acc::SumFloat { sum, n } => Out::Float((*n > 0).then_some(*sum)),
            Acc::Avg { sum, n } => Out::Float((*n > 0).then(|| sum / *n as f64)),
            Acc::Extreme(b) => Out::Bytes(b.clone()),
            Acc::Multiset(m) => match kind {
                Kind::Distinct => Out::Int(Some(m.len() as i64)),
                Kind::DistinctSumInt => Out::Int(
                    (!m.is_empty())
                        .then(|| m.keys().map(|k| i64::from_be_bytes(eight(k))).fold(0i64, i64::wrapping_add)),
                ),
                Kind::DistinctSumFloat | Kind::DistinctAvg => Out::Float((!m.is_empty()).then(|| {
                    let sum: f64 = m.keys().map(|k| f64::from_bits(u64::from_be_bytes(eight(k)))).sum();
                    if kind == Kind::DistinctAvg {
                        sum / m.len() as f64
                    } else {
                        sum
                    }
                })),
                Kind::MinMulti => Out::Bytes(m.keys().next().cloned()),
                _ => Out::Bytes(m.keys().next_back().cloned()),
            },
        }
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        let bytes = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        };
        match self {
            Acc::Count(n) => {
                out.push(0);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Acc::SumInt { sum, n } => {
                out.push(1);
                out.extend_from_slice(&sum.to_be_bytes());
                out.extend_from_slice(&n.to_be_bytes());
            }
            Acc::SumFloat { sum, n } | Acc::Avg { sum, n } => {
                out.push(if matches!(self, Acc::Avg { .. }) { 3 } else { 2 });
                out.extend_from_slice(&sum.to_be_bytes());
                out.extend_from_slice(&n.to_be_bytes());
            }
            Acc::Extreme(None) => out.push(4),
            Acc::Extreme(Some(b)) => {
                out.push(5);
                bytes(out, b);
            }
            Acc::Multiset(m) => {
                out.push(6);
                out.extend_from_slice(&(m.len() as u32).to_be_bytes());
                for (v, c) in m {
                    bytes(out, v);
                    out.extend_from_slice(&c.to_be_bytes());
                }
            }
        }
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> OpResult<Self> {
        Ok(match r.u8()? {
            0 => Acc::Count(r.i64()?),
            1 => Acc::SumInt { sum: r.i64()?, n: r.i64()? },
            2 => Acc::SumFloat { sum: f64::from_bits(r.i64()? as u64), n: r.i64()? },
            3 => Acc::Avg { sum: f64::from_bits(r.i64()? as u64), n: r.i64()? },
            4 => Acc::Extreme(None),
            5 => Acc::Extreme(Some(r.bytes()?.to_vec())),
            6 => {
                let len = r.u32()?;
                let mut m = BTreeMap::new();
                for _ in 0..len {
                    let v = r.bytes()?.to_vec();
                    m.insert(v, r.i64()?);
                }
                Acc::Multiset(m)
            }
            t => return Err(bad(&format!("accumulator tag {t}"))),
        })
    }
}

/// Adds (`sign` 1) or takes back (-1) one occurrence of `x`.
fn count(m: &mut BTreeMap<Vec<u8>, i64>, sign: i64, x: &[u8]) {
    if sign > 0 {
        *m.entry(x.to_vec()).or_insert(0) += 1;
    } else if let Some(c) = m.get_mut(x) {
        *c -= 1;
        if *c <= 0 {
            m.remove(x);
        }
    }
}

/// The eight bytes of a distinct number's key.
fn eight(k: &[u8]) -> [u8; 8] {
    k.try_into().unwrap_or_default()
}

fn bad(what: &str) -> OperatorError {
    OperatorError::State(format!("restored aggregate state does not decode: {what}"))
}

/// Reads the encoded state of one key.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> OpResult<&'a [u8]> {
        if self.0.len() < n {
            return Err(bad("too short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> OpResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> OpResult<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    pub(super) fn i64(&mut self) -> OpResult<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> OpResult<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_averages_retract_to_null() {
        let mut s = Kind::SumInt.empty();
        s.apply(Kind::SumInt, 1, Value::Int(5));
        s.apply(Kind::SumInt, 1, Value::Null);
        s.apply(Kind::SumInt, 1, Value::Int(7));
        assert_eq!(s.out(Kind::SumInt), Out::Int(Some(12)));
        s.apply(Kind::SumInt, -1, Value::Int(5));
        s.apply(Kind::SumInt, -1, Value::Int(7));
        assert_eq!(s.out(Kind::SumInt), Out::Int(None), "no value left: null, as SQL's SUM");
        let mut a = Kind::Avg.empty();
        a.apply(Kind::Avg, 1, Value::Float(0.1));
        a.apply(Kind::Avg, 1, Value::Float(0.2));
        a.apply(Kind::Avg, -1, Value::Float(0.1));
        a.apply(Kind::Avg, -1, Value::Float(0.2));
        assert_eq!(a, Acc::Avg { sum: 0.0, n: 0 });
    }

    #[test]
    fn a_retracted_extreme_gives_way_to_the_next() {
        let mut m = Kind::MaxMulti.empty();
        for x in [b"b".as_slice(), b"d", b"d", b"a"] {
            m.apply(Kind::MaxMulti, 1, Value::Bytes(x));
        }
        m.apply(Kind::MaxMulti, -1, Value::Bytes(b"d"));
        assert_eq!(m.out(Kind::MaxMulti), Out::Bytes(Some(b"d".to_vec())), "one d is left");
        m.apply(Kind::MaxMulti, -1, Value::Bytes(b"d"));
        assert_eq!(m.out(Kind::MaxMulti), Out::Bytes(Some(b"b".to_vec())));
        assert_eq!(m.out(Kind::MinMulti), Out::Bytes(Some(b"a".to_vec())));
        let mut d = Kind::Distinct.empty();
        for x in [b"x".as_slice(), b"y", b"x"] {
            d.apply(Kind::Distinct, 1, Value::Bytes(x));
        }
        assert_eq!(d.out(Kind::Distinct), Out::Int(Some(2)));
        d.apply(Kind::Distinct, -1, Value::Bytes(b"x"));
        assert_eq!(d.out(Kind::Distinct), Out::Int(Some(2)), "x is still there once");
    }

    #[test]
    fn every_accumulator_survives_encoding() {
        let mut multi = BTreeMap::new();
        multi.insert(b"k".to_vec(), 3);
        let all = [
            Acc::Count(-2),
            Acc::SumInt { sum: i64::MIN, n: 4 },
            Acc::SumFloat { sum: 1.25, n: 1 },
            Acc::Avg { sum: -0.5, n: 2 },
            Acc::Extreme(None),
            Acc::Extreme(Some(vec![1, 2])),
            Acc::Multiset(multi),
        ];
        let mut buf = Vec::new();
        for a in &all {
            a.encode(&mut buf);
        }
        let mut r = Reader(&buf);
        for a in &all {
            assert_eq!(&Acc::decode(&mut r).unwrap(), a);
        }
        assert!(r.is_empty());
        assert!(Acc::decode(&mut Reader(&[9])).unwrap_err().to_string().contains("tag 9"));
    }
}
