//! Accumulators: one column per aggregate, indexed by slot.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow::row::{RowConverter, SortField};

use super::*;

// ------------------------------------------------------------------ accumulators

/// One vector per aggregate, indexed by slot.
#[derive(Debug, Clone)]
pub(super) enum AccColumn {
    Count(Vec<i64>),
    SumInt(Vec<i64>, Vec<bool>),
    SumFloat(Vec<f64>, Vec<bool>),
    MinInt(Vec<i64>, Vec<bool>),
    MaxInt(Vec<i64>, Vec<bool>),
    MinFloat(Vec<f64>, Vec<bool>),
    MaxFloat(Vec<f64>, Vec<bool>),
    Avg(Vec<f64>, Vec<i64>),
    /// The distinct values (row bytes) of each slot, and what the result is
    /// of them.
    Distinct(Vec<HashSet<Box<[u8]>>>, Distinct),
}

/// The result of a slot's distinct values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Distinct {
    /// How many there are.
    Count,
    /// Their sum, of int64 values.
    SumInt,
    /// Their sum, of float64 values.
    SumFloat,
    /// Their mean (float64 values).
    Avg,
}

#[derive(Debug, Clone)]
pub(super) struct Accumulators {
    pub(super) cols: Vec<AccColumn>,
}

/// An aggregate's input for one batch.
pub(super) enum AggInput {
    Rows,
    NonNull(Option<arrow::buffer::NullBuffer>),
    Int(Int64Array),
    Float(Float64Array),
    /// Row bytes of the values, with their nulls.
    Bytes(arrow::row::Rows, Option<arrow::buffer::NullBuffer>),
}

impl Accumulators {
    pub(super) fn new(aggs: &[AggPlan]) -> Self {
        let cols = aggs
            .iter()
            .map(|a| match (a.func, a.float) {
                (AggFn::Count, _) => AccColumn::Count(Vec::new()),
                (AggFn::Sum, false) => AccColumn::SumInt(Vec::new(), Vec::new()),
                (AggFn::Sum, true) => AccColumn::SumFloat(Vec::new(), Vec::new()),
                (AggFn::Min, false) => AccColumn::MinInt(Vec::new(), Vec::new()),
                (AggFn::Max, false) => AccColumn::MaxInt(Vec::new(), Vec::new()),
                (AggFn::Min, true) => AccColumn::MinFloat(Vec::new(), Vec::new()),
                (AggFn::Max, true) => AccColumn::MaxFloat(Vec::new(), Vec::new()),
                (AggFn::Avg, _) => AccColumn::Avg(Vec::new(), Vec::new()),
                (AggFn::CountDistinct, _) => AccColumn::Distinct(Vec::new(), Distinct::Count),
                (AggFn::SumDistinct, false) => AccColumn::Distinct(Vec::new(), Distinct::SumInt),
                (AggFn::SumDistinct, true) => AccColumn::Distinct(Vec::new(), Distinct::SumFloat),
                (AggFn::AvgDistinct, _) => AccColumn::Distinct(Vec::new(), Distinct::Avg),
            })
            .collect();
        Self { cols }
    }

    pub(super) fn grow(&mut self) {
        for c in &mut self.cols {
            match c {
                AccColumn::Count(v) => v.push(0),
                AccColumn::SumInt(v, s) | AccColumn::MinInt(v, s) | AccColumn::MaxInt(v, s) => {
                    v.push(0);
                    s.push(false)
                }
                AccColumn::SumFloat(v, s) | AccColumn::MinFloat(v, s) | AccColumn::MaxFloat(v, s) => {
                    v.push(0.0);
                    s.push(false)
                }
                AccColumn::Avg(v, n) => {
                    v.push(0.0);
                    n.push(0)
                }
                AccColumn::Distinct(v, _) => v.push(HashSet::new()),
            }
        }
    }

    /// Reads each aggregate's input column once per batch.
    pub(super) fn inputs(aggs: &[AggPlan], batch: &RecordBatch) -> OpResult<Vec<AggInput>> {
        aggs.iter()
            .map(|a| {
                Ok(match (a.func, a.column) {
                    (_, None) => AggInput::Rows,
                    (AggFn::CountDistinct, Some(c)) => {
                        let col = batch.column(c);
                        let conv = RowConverter::new(vec![SortField::new(col.data_type().clone())])?;
                        AggInput::Bytes(conv.convert_columns(std::slice::from_ref(col))?, col.logical_nulls())
                    }
                    // Distinct numbers, as the row bytes of int64 or float64 values.
                    (AggFn::SumDistinct | AggFn::AvgDistinct, Some(c)) => {
                        let t = number_type(a.func == AggFn::AvgDistinct || a.float);
                        let col = cast(batch.column(c), &t)?;
                        let conv = RowConverter::new(vec![SortField::new(t)])?;
                        AggInput::Bytes(conv.convert_columns(std::slice::from_ref(&col))?, col.logical_nulls())
                    }
                    (AggFn::Count, Some(c)) => AggInput::NonNull(batch.column(c).logical_nulls()),
                    (AggFn::Avg, Some(c)) => AggInput::Float(
                        cast(batch.column(c), &DataType::Float64)?.as_primitive::<Float64Type>().clone(),
                    ),
                    (_, Some(c)) if a.float => AggInput::Float(
                        cast(batch.column(c), &DataType::Float64)?.as_primitive::<Float64Type>().clone(),
                    ),
                    (_, Some(c)) => {
                        AggInput::Int(cast(batch.column(c), &DataType::Int64)?.as_primitive::<Int64Type>().clone())
                    }
                })
            })
            .collect()
    }

    /// Adds rows `rows[i]` into slots `slots[i]`.
    pub(super) fn update(&mut self, inputs: &[AggInput], rows: &[u32], slots: &[u32]) {
        for (col, input) in self.cols.iter_mut().zip(inputs) {
            let pairs = rows.iter().zip(slots).map(|(&r, &s)| (r as usize, s as usize));
            match (col, input) {
                (AccColumn::Count(v), AggInput::Rows) => {
                    for (_, s) in pairs {
                        v[s] += 1;
                    }
                }
                (AccColumn::Count(v), AggInput::NonNull(nulls)) => {
                    for (r, s) in pairs {
                        if nulls.as_ref().is_none_or(|n| n.is_valid(r)) {
                            v[s] += 1;
                        }
                    }
                }
                (AccColumn::SumInt(v, seen), AggInput::Int(a)) => {
                    let vals = a.values();
                    if a.null_count() == 0 {
                        for (r, s) in pairs {
                            v[s] = v[s].wrapping_add(vals[r]);
                            seen[s] = true;
                        }
                    } else {
                        for (r, s) in pairs.filter(|(r, _)| a.is_valid(*r)) {
                            v[s] = v[s].wrapping_add(vals[r]);
                            seen[s] = true;
                        }
                    }
                }
                (AccColumn::SumFloat(v, seen), AggInput::Float(a)) => {
                    for (r, s) in pairs.filter(|(r, _)| a.is_valid(*r)) {
                        v[s] += a.value(r);
                        seen[s] = true;
                    }
                }
                (AccColumn::MinInt(v, seen), AggInput::Int(a)) => {
                    for (r, s) in pairs.filter(|(r, _)| a.is_valid(*r)) {
                        let x = a.value(r);
                        v[s] = if seen[s] { v[s].min(x) } else { x };
                        seen[s] = true;
                    }
                }
                (AccColumn::MaxInt(v, seen), AggInput::Int(a)) => {
                    for (r, s) in pairs.filter(|(r, _)| a.is_valid(*r)) {
                        let x = a.value(r);
                        v[s] = if seen[s] { v[s].max(x) } else { x };
                        seen[s] = true;
                    }
                }
                (AccColumn::MinFloat(v, seen), AggInput::Float(a)) => {
                    for (r, s) in pairs.filter(|(r, _)| a.is_valid(*r)) {
                        let x = a.value(r);
                        v[s] = if seen[s] { v[s].min(x) } else { x };
                        seen[s] = true;
                    }
                }
                (AccColumn::MaxFloat(v, seen), AggInput::Float(a)) => {
                    for (r, s) in pairs.filter(|(r, _)| a.is_valid(*r)) {
                        let x = a.value(r);
                        v[s] = if seen[s] { v[s].max(x) } else { x };
                        seen[s] = true;
                    }
                }
                (AccColumn::Avg(sum, n), AggInput::Float(a)) => {
                    for (r, s) in pairs.filter(|(r, _)| a.is_valid(*r)) {
                        sum[s] += a.value(r);
                        n[s] += 1;
                    }
                }
                (AccColumn::Distinct(sets, _), AggInput::Bytes(rows, nulls)) => {
                    for (r, s) in pairs.filter(|(r, _)| nulls.as_ref().is_none_or(|n| n.is_valid(*r))) {
                        let v = rows.row(r).data();
                        if !sets[s].contains(v) {
                            sets[s].insert(v.into());
                        }
                    }
                }
                _ => unreachable!("accumulator and input kinds are planned together"),
            }
        }
    }

    /// Folds slot `src` into slot `dst` (merging session windows).
    pub(super) fn merge(&mut self, dst: usize, src: usize) {
        fn opt<T: Copy>(v: &mut [T], seen: &mut [bool], dst: usize, src: usize, f: impl Fn(T, T) -> T) {
            if seen[src] {
                v[dst] = if seen[dst] { f(v[dst], v[src]) } else { v[src] };
                seen[dst] = true;
            }
        }
        for c in &mut self.cols {
            match c {
                AccColumn::Count(v) => v[dst] += v[src],
                AccColumn::SumInt(v, s) => opt(v, s, dst, src, i64::wrapping_add),
                AccColumn::SumFloat(v, s) => opt(v, s, dst, src, |a, b| a + b),
                AccColumn::MinInt(v, s) => opt(v, s, dst, src, i64::min),
                AccColumn::MaxInt(v, s) => opt(v, s, dst, src, i64::max),
                AccColumn::MinFloat(v, s) => opt(v, s, dst, src, f64::min),
                AccColumn::MaxFloat(v, s) => opt(v, s, dst, src, f64::max),
                AccColumn::Avg(sum, n) => {
                    sum[dst] += sum[src];
                    n[dst] += n[src];
                }
                AccColumn::Distinct(sets, _) => {
                    let from = std::mem::take(&mut sets[src]);
                    sets[dst].extend(from);
                }
            }
        }
    }

    /// Resets slot `s` for reuse.
    pub(super) fn reset(&mut self, s: usize) {
        for c in &mut self.cols {
            match c {
                AccColumn::Count(v) => v[s] = 0,
                AccColumn::SumInt(v, seen) | AccColumn::MinInt(v, seen) | AccColumn::MaxInt(v, seen) => {
                    v[s] = 0;
                    seen[s] = false
                }
                AccColumn::SumFloat(v, seen) | AccColumn::MinFloat(v, seen) | AccColumn::MaxFloat(v, seen) => {
                    v[s] = 0.0;
                    seen[s] = false
                }
                AccColumn::Avg(v, n) => {
                    v[s] = 0.0;
                    n[s] = 0
                }
                AccColumn::Distinct(sets, _) => sets[s] = HashSet::new(),
            }
        }
    }

    /// Output columns for `slots`.
    pub(super) fn columns(&self, slots: &[u32]) -> OpResult<Vec<ArrayRef>> {
        let pick_i = |v: &[i64], seen: Option<&[bool]>| -> ArrayRef {
            Arc::new(
                slots
                    .iter()
                    .map(|&s| seen.is_none_or(|seen| seen[s as usize]).then_some(v[s as usize]))
                    .collect::<Int64Array>(),
            )
        };
        let pick_f = |v: &[f64], seen: &[bool]| -> ArrayRef {
            Arc::new(slots.iter().map(|&s| seen[s as usize].then_some(v[s as usize])).collect::<Float64Array>())
        };
        self.cols
            .iter()
            .map(|c| {
                Ok(match c {
                    AccColumn::Count(v) => {
                        Arc::new(Int64Array::from_iter_values(slots.iter().map(|&s| v[s as usize]))) as ArrayRef
                    }
                    AccColumn::SumInt(v, s) | AccColumn::MinInt(v, s) | AccColumn::MaxInt(v, s) => pick_i(v, Some(s)),
                    AccColumn::SumFloat(v, s) | AccColumn::MinFloat(v, s) | AccColumn::MaxFloat(v, s) => pick_f(v, s),
                    AccColumn::Avg(sum, n) => Arc::new(
                        slots
                            .iter()
                            .map(|&s| (n[s as usize] > 0).then(|| sum[s as usize] / n[s as usize] as f64))
                            .collect::<Float64Array>(),
                    ),
                    AccColumn::Distinct(sets, Distinct::Count) => {
                        Arc::new(Int64Array::from_iter_values(slots.iter().map(|&s| sets[s as usize].len() as i64)))
                            as ArrayRef
                    }
                    AccColumn::Distinct(sets, how) => distinct_numbers(sets, *how, slots)?,
                })
            })
            .collect()
    }
}

/// The type distinct numbers are kept as.
fn number_type(float: bool) -> DataType {
    if float {
        DataType::Float64
    } else {
        DataType::Int64
    }
}

/// The sums or means of the distinct numbers of `slots` (null where a slot
/// has none), decoded from their row bytes.
fn distinct_numbers(sets: &[HashSet<Box<[u8]>>], how: Distinct, slots: &[u32]) -> OpResult<ArrayRef> {
    let float = how != Distinct::SumInt;
    let conv = RowConverter::new(vec![SortField::new(number_type(float))])?;
    let parser = conv.parser();
    let mut ints = Vec::with_capacity(slots.len());
    let mut floats = Vec::with_capacity(slots.len());
    for &s in slots {
        let set = &sets[s as usize];
        if set.is_empty() {
            ints.push(None);
            floats.push(None);
            continue;
        }
        let values = conv.convert_rows(set.iter().map(|b| parser.parse(b)))?.remove(0);
        if float {
            let sum: f64 = values.as_primitive::<Float64Type>().values().iter().sum();
            floats.push(Some(if how == Distinct::Avg { sum / set.len() as f64 } else { sum }));
        } else {
            ints.push(Some(values.as_primitive::<Int64Type>().values().iter().fold(0i64, |a, b| a.wrapping_add(*b))));
        }
    }
    Ok(if float { Arc::new(Float64Array::from(floats)) } else { Arc::new(Int64Array::from(ints)) })
}
