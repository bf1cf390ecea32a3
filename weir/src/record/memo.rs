//! Records decoded from a batch, kept for the next typed operator of the
//! same chain. Event time and keys are assigned by operators that pass
//! their input's columns on untouched (and the built-in watermark operator
//! between them does too), so the operator after one of them would decode
//! the very same arrays again; it finds them here instead. A hit needs the
//! same record type and the same column arrays (`Arc` identity: the memo
//! holds the arrays, so they cannot be freed and their memory reused while
//! it does). A miss reuses the memo's buffer, so steady decoding allocates
//! no record vectors.

use std::any::Any;
use std::cell::RefCell;

use arrow::array::{ArrayRef, RecordBatch};

/// One thread's last decoded batch.
struct Decoded {
    /// The columns the records were decoded from (empty: a spare buffer).
    columns: Vec<ArrayRef>,
    /// A `Vec<T>`.
    records: Box<dyn Any>,
}

thread_local! {
    static LAST: RefCell<Option<Decoded>> = const { RefCell::new(None) };
}

fn same(a: &[ArrayRef], b: &[ArrayRef]) -> bool {
    !a.is_empty() && a.len() == b.len() && a.iter().zip(b).all(|(x, y)| std::sync::Arc::ptr_eq(x, y))
}

/// The records of `view` if this thread decoded them last, else the
/// thread's spare buffer (empty) and `false`.
pub(super) fn take<T: 'static>(view: &RecordBatch) -> (Vec<T>, bool) {
    let last = LAST.with(|m| m.borrow_mut().take());
    match last {
        Some(d) if d.records.is::<Vec<T>>() => {
            let hit = same(&d.columns, view.columns());
            let mut records = *d.records.downcast::<Vec<T>>().expect("checked above");
            if !hit {
                records.clear();
            }
            (records, hit)
        }
        other => {
            // Another type's buffer: keep it for that type's operators.
            LAST.with(|m| *m.borrow_mut() = other);
            (Vec::new(), false)
        }
    }
}

/// Keeps `records` of `view` for the next operator of the chain (`pass_on`),
/// or only their buffer.
pub(super) fn put<T: 'static>(view: &RecordBatch, mut records: Vec<T>, pass_on: bool) {
    let columns = if pass_on {
        view.columns().to_vec()
    } else {
        records.clear();
        Vec::new()
    };
    LAST.with(|m| *m.borrow_mut() = Some(Decoded { columns, records: Box::new(records) }));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(values: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).unwrap()
    }

    #[test]
    fn the_same_arrays_of_the_same_type_hit_and_anything_else_misses() {
        let b = batch(vec![1, 2]);
        assert_eq!(take::<i64>(&b), (vec![], false));
        put(&b, vec![1i64, 2], true);
        assert!(!take::<u8>(&b).1, "another type misses");
        assert_eq!(take::<i64>(&b), (vec![1, 2], true));
        put(&b, vec![1i64, 2], true);
        let equal_but_other_arrays = batch(vec![1, 2]);
        let (buffer, hit) = take::<i64>(&equal_but_other_arrays);
        assert!(!hit && buffer.is_empty() && buffer.capacity() >= 2, "a miss reuses the buffer");
        put(&b, vec![1i64, 2], false);
        assert!(!take::<i64>(&b).1, "records not passed on are not found");
    }
}
