//! Tests of the Top-N operator.

use super::*;
use crate::channel::StreamElement;
use crate::graph::{EdgeSpec, Partitioning};
use crate::state::CheckpointId;
use serde_json::json;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("cat", DataType::Utf8, false),
        Field::new("item", DataType::Utf8, false),
        Field::new("price", DataType::Int64, true),
    ]))
}

fn operator(config: serde_json::Value) -> Box<dyn Operator> {
    operator_over(config, schema())
}

fn operator_over(config: serde_json::Value, input: SchemaRef) -> Box<dyn Operator> {
    let edge = EdgeSpec {
        from: "src".into(),
        to: "top".into(),
        partitioning: Partitioning::Hash,
        key: config["partition_key"]
            .as_array()
            .map(|k| k.iter().filter_map(|c| c.as_str().map(String::from)).collect())
            .unwrap_or_default(),
        input: 0,
        output: String::new(),
        line: 0,
    };
    let inputs = [input];
    let ctx = PlanContext {
        uid: "top",
        line: 0,
        config: &config,
        inputs: &inputs,
        input_edges: &[&edge],
        parallelism: 2,
        checkpoint: None,
    };
    match TopNFactory.create(&ctx, SubtaskInfo { index: 0, parallelism: 2, max_parallelism: 128 }).unwrap() {
        Instance::Operator(o) => o,
        Instance::Source(_) => unreachable!(),
    }
}

fn batch(rows: &[(&str, &str, Option<i64>)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
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

fn top2() -> serde_json::Value {
    json!({"partition_key": ["cat"], "order_by": [{"column": "price", "descending": true}], "limit": 2})
}

#[test]
fn ranks_change_as_better_rows_arrive_and_worse_ones_are_never_kept() {
    let mut top = operator(top2());
    let mut out = Collector::default();
    top.process_batch(0, batch(&[("a", "x", Some(5)), ("b", "y", Some(1)), ("a", "z", Some(7))]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["a,z,7,1,+I", "a,x,5,2,+I", "b,y,1,1,+I"]);
    // 6 goes second: x drops out; 1 ranks below both and changes nothing.
    top.process_batch(0, batch(&[("a", "w", Some(6)), ("a", "v", Some(1))]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["a,x,5,2,-U", "a,w,6,2,+U"]);
    // An equal price ranks after the row already there; a null sorts first
    // in descending order, as in Flink SQL.
    top.process_batch(0, batch(&[("a", "u", Some(7))]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["a,w,6,2,-U", "a,u,7,2,+U"]);
    top.process_batch(0, batch(&[("b", "n", None)]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["b,y,1,1,-U", "b,n,,1,+U", "b,y,1,2,+I"]);
}

#[test]
fn partitions_restore_from_snapshots_and_rank_on() {
    let mut top = operator(top2());
    let mut out = Collector::default();
    top.process_batch(0, batch(&[("a", "x", Some(5)), ("a", "y", Some(3)), ("b", "z", Some(1))]), &mut out).unwrap();
    out.drain();
    let mut w = StateWriter::new("top", CheckpointId(1), true);
    top.snapshot_state(&mut w).unwrap();
    let entries = w.into_entries();
    assert_eq!(entries.len(), 2, "one entry per partition");
    let mut restored = operator(top2());
    restored.restore_state(&StateReader::new("top", &entries)).unwrap();
    restored.process_batch(0, batch(&[("a", "q", Some(4))]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["a,y,3,2,-U", "a,q,4,2,+U"]);
    assert!(Ranked::decode(&[0, 0, 0, 9, 1]).is_err(), "a damaged entry is an error");
}

#[test]
fn bad_configurations_are_refused() {
    let edge = EdgeSpec {
        from: "src".into(),
        to: "top".into(),
        partitioning: Partitioning::Hash,
        key: vec!["cat".into()],
        input: 0,
        output: String::new(),
        line: 0,
    };
    let inputs = [schema()];
    for (config, want) in [
        (json!({"partition_key": ["cat"], "order_by": [], "limit": 2}), "needs an order"),
        (json!({"partition_key": ["cat"], "order_by": [{"column": "nope"}], "limit": 2}), "no column `nope`"),
        (json!({"partition_key": ["cat"], "order_by": [{"column": "price"}], "limit": 0}), "at least 1"),
        (
            json!({"partition_key": ["cat"], "order_by": [{"column": "price"}], "limit": 1, "rank_column": "item"}),
            "`item` already exists",
        ),
        (
            json!({"partition_key": ["cat"], "order_by": [{"column": "price"}], "limit": 1, "window_end_column": "price"}),
            "must also be a partition key",
        ),
        (
            json!({"partition_key": ["cat"], "order_by": [{"column": "price"}], "limit": 1, "window_end_column": "item"}),
            "must be int64 milliseconds or a timestamp",
        ),
    ] {
        let ctx = PlanContext {
            uid: "top",
            line: 0,
            config: &config,
            inputs: &inputs,
            input_edges: &[&edge],
            parallelism: 2,
            checkpoint: None,
        };
        let err = TopNFactory.plan(&ctx).unwrap_err().to_string();
        assert!(err.contains(want), "{config}: {err}");
    }
}

/// Rows of (cat, window end, price) for a window Top-N.
fn windowed(rows: &[(&str, i64, i64)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("cat", DataType::Utf8, false),
        Field::new("end", DataType::Int64, false),
        Field::new("price", DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

fn window_top2() -> Box<dyn Operator> {
    let config = json!({"partition_key": ["cat", "end"], "order_by": [{"column": "price", "descending": true}],
        "limit": 2, "window_end_column": "end"});
    operator_over(config, windowed(&[]).schema())
}

#[test]
fn a_window_top_n_emits_each_windows_first_rows_once_when_the_watermark_closes_it() {
    let mut top = window_top2();
    let mut out = Collector::default();
    top.process_batch(0, windowed(&[("a", 10, 5), ("a", 10, 9), ("b", 10, 1), ("a", 20, 4)]), &mut out).unwrap();
    top.process_batch(0, windowed(&[("a", 10, 7)]), &mut out).unwrap();
    assert!(rows(&mut out).is_empty(), "nothing before the window closes");
    // The watermark at 9 is the last instant of the windows ending at 10.
    top.process_watermark(9, &mut out).unwrap();
    let elements = out.drain().collect::<Vec<_>>();
    assert!(matches!(elements.last(), Some(StreamElement::Watermark(9))), "the watermark follows the rows");
    let mut out2 = Collector::default();
    for e in elements {
        if let StreamElement::Batch(b) = e {
            out2.emit(b);
        }
    }
    assert_eq!(rows(&mut out2), ["a,10,9,1", "a,10,7,2", "b,10,1,1"]);
    // A row of a closed window is late and dropped; the next window is
    // snapshotted, restored and emitted when its watermark comes.
    top.process_batch(0, windowed(&[("a", 10, 100), ("a", 20, 6)]), &mut out).unwrap();
    let mut w = StateWriter::new("top", CheckpointId(1), true);
    top.snapshot_state(&mut w).unwrap();
    let entries = w.into_entries();
    let mut restored = window_top2();
    restored.restore_state(&StateReader::new("top", &entries)).unwrap();
    restored.process_watermark(15, &mut out).unwrap();
    assert!(rows(&mut out).is_empty());
    restored.process_watermark(19, &mut out).unwrap();
    assert_eq!(rows(&mut out), ["a,20,6,1", "a,20,4,2"]);
    restored.process_watermark(40, &mut out).unwrap();
    assert!(rows(&mut out).is_empty(), "each window is emitted once");
    // The end of the input closes the windows still open.
    restored.process_batch(0, windowed(&[("b", 100, 3)]), &mut out).unwrap();
    restored.finish(&mut out).unwrap();
    assert_eq!(rows(&mut out), ["b,100,3,1"]);
}
