//! Tests of the OVER aggregation.

use super::*;
use crate::channel::StreamElement;
use crate::graph::{EdgeSpec, Partitioning};
use crate::state::CheckpointId;
use arrow::array::StringArray;
use serde_json::json;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("t", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
    ]))
}

fn over(frame: serde_json::Value) -> Box<dyn Operator> {
    let edge = EdgeSpec {
        from: "src".into(),
        to: "over".into(),
        partitioning: Partitioning::Hash,
        key: vec!["k".into()],
        input: 0,
        output: String::new(),
        line: 0,
    };
    let config = json!({"partition_key": ["k"], "time_column": "t", "frame": frame, "aggregates": [
        {"fn": "count", "as": "n"}, {"fn": "sum", "column": "v", "as": "s"}, {"fn": "max", "column": "v", "as": "hi"},
        {"fn": "avg", "column": "v", "as": "mean"}]});
    let inputs = [schema()];
    let ctx = PlanContext {
        uid: "over",
        line: 0,
        config: &config,
        inputs: &inputs,
        input_edges: &[&edge],
        parallelism: 2,
        checkpoint: None,
    };
    match OverAggregateFactory.create(&ctx, SubtaskInfo { index: 0, parallelism: 2, max_parallelism: 128 }).unwrap() {
        Instance::Operator(o) => o,
        Instance::Source(_) => unreachable!(),
    }
}

fn batch(rows: &[(&str, i64, Option<i64>)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        ],
    )
    .unwrap()
}

fn rows(out: &mut Collector) -> Vec<String> {
    let mut v = Vec::new();
    for e in out.drain() {
        if let StreamElement::Batch(b) = e {
            for r in 0..b.num_rows() {
                let cells: Vec<String> =
                    b.columns().iter().map(|c| arrow::util::display::array_value_to_string(c, r).unwrap()).collect();
                v.push(cells.join(","));
            }
        }
    }
    v
}

/// Out of order rows of two keys, for every frame.
fn input() -> RecordBatch {
    batch(&[
        ("a", 3, Some(30)),
        ("a", 1, Some(10)),
        ("b", 1, Some(5)),
        ("a", 2, None),
        ("a", 3, Some(31)),
        ("a", 6, Some(60)),
    ])
}

#[test]
fn rows_frames_aggregate_the_row_and_its_preceding_rows_in_time_order() {
    let mut o = over(json!({"type": "rows", "preceding": 1}));
    let mut out = Collector::default();
    o.process_batch(0, input(), &mut out).unwrap();
    assert!(rows(&mut out).is_empty(), "nothing before the watermark");
    o.process_watermark(3, &mut out).unwrap();
    let mut got = rows(&mut out);
    got.sort();
    // a: t1 (10) | t2 (null, 10) | t3 (30, null) | t3 (31, 30); b: t1 (5).
    assert_eq!(
        got,
        ["a,1,10,1,10,10,10.0", "a,2,,2,10,10,10.0", "a,3,30,2,30,30,30.0", "a,3,31,2,61,31,30.5", "b,1,5,1,5,5,5.0"]
    );
    // A late row is dropped; the rest survives a snapshot and restore.
    o.process_batch(0, batch(&[("a", 2, Some(1000))]), &mut out).unwrap();
    let mut w = StateWriter::new("over", CheckpointId(1), true);
    o.snapshot_state(&mut w).unwrap();
    let entries = w.into_entries();
    let mut restored = over(json!({"type": "rows", "preceding": 1}));
    restored.restore_state(&StateReader::new("over", &entries)).unwrap();
    restored.finish(&mut out).unwrap();
    assert_eq!(rows(&mut out), ["a,6,60,2,91,60,45.5"]);
}

#[test]
fn range_and_unbounded_frames_include_rows_of_the_same_time() {
    let mut o = over(json!({"type": "range", "preceding": "1ms"}));
    let mut out = Collector::default();
    o.process_batch(0, input(), &mut out).unwrap();
    o.finish(&mut out).unwrap();
    let mut got = rows(&mut out);
    got.sort();
    // a at 3 sees 2..3: null, 30, 31; at 6 only itself.
    assert_eq!(
        got,
        [
            "a,1,10,1,10,10,10.0",
            "a,2,,2,10,10,10.0",
            "a,3,30,3,61,31,30.5",
            "a,3,31,3,61,31,30.5",
            "a,6,60,1,60,60,60.0",
            "b,1,5,1,5,5,5.0"
        ]
    );
    let mut o = over(json!({"type": "unbounded", "peers": true}));
    o.process_batch(0, input(), &mut out).unwrap();
    o.finish(&mut out).unwrap();
    let mut got = rows(&mut out);
    got.sort();
    assert_eq!(
        got,
        [
            "a,1,10,1,10,10,10.0",
            "a,2,,2,10,10,10.0",
            "a,3,30,4,71,31,23.666666666666668",
            "a,3,31,4,71,31,23.666666666666668",
            "a,6,60,5,131,60,32.75",
            "b,1,5,1,5,5,5.0"
        ]
    );
}
