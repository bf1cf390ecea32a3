//! Tests of the interval join.

use super::*;
use crate::channel::StreamElement;
use crate::graph::{EdgeSpec, Partitioning};
use crate::keygroup::key_group_range;
use crate::state::CheckpointId;
use arrow::array::{Int32Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::TimeUnit;

fn left_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("t", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
    ]))
}

fn right_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("v", DataType::Int64, false),
    ]))
}

fn config(join_type: &str, lower: serde_json::Value, upper: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "left_key": ["k"], "right_key": ["id"], "left_time": "t", "right_time": "ts",
        "lower": lower, "upper": upper, "join_type": join_type,
    })
}

fn edge(input: u32, key: &str) -> EdgeSpec {
    EdgeSpec {
        from: format!("src{input}"),
        to: "j".into(),
        partitioning: Partitioning::Hash,
        key: vec![key.into()],
        input,
        output: String::new(),
        line: 0,
    }
}

fn planned(config: &serde_json::Value) -> Result<SchemaRef, PlanError> {
    let (l, r) = (edge(0, "k"), edge(1, "id"));
    let ctx = PlanContext {
        uid: "j",
        line: 0,
        config,
        inputs: &[left_schema(), right_schema()],
        input_edges: &[&l, &r],
        parallelism: 2,
        checkpoint: None,
    };
    IntervalJoinFactory.plan(&ctx)
}

fn join(config: &serde_json::Value, subtask: u32) -> Box<dyn Operator> {
    let (l, r) = (edge(0, "k"), edge(1, "id"));
    let ctx = PlanContext {
        uid: "j",
        line: 0,
        config,
        inputs: &[left_schema(), right_schema()],
        input_edges: &[&l, &r],
        parallelism: 2,
        checkpoint: None,
    };
    match IntervalJoinFactory.create(&ctx, SubtaskInfo { index: subtask, parallelism: 2, max_parallelism: 128 }) {
        Ok(Instance::Operator(o)) => o,
        other => panic!("{other:?}"),
    }
}

fn left(rows: &[(Option<i64>, i64, &str)]) -> RecordBatch {
    RecordBatch::try_new(
        left_schema(),
        vec![
            Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

fn right(rows: &[(i32, i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        right_schema(),
        vec![
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

/// Output rows as `k,t,name|id,ts,v` strings, sorted; and the watermarks.
fn drain(out: &mut Collector) -> (Vec<String>, Vec<i64>) {
    let (mut rows, mut marks) = (Vec::new(), Vec::new());
    for e in out.drain() {
        match e {
            StreamElement::Batch(b) => {
                for r in 0..b.num_rows() {
                    let cell = |c: usize| {
                        let a = b.column(c);
                        if a.is_null(r) {
                            "-".to_string()
                        } else if let Some(ts) = a.as_primitive_opt::<arrow::datatypes::TimestampMillisecondType>() {
                            ts.value(r).to_string()
                        } else {
                            arrow::util::display::array_value_to_string(a, r).unwrap()
                        }
                    };
                    rows.push(format!("{},{},{}|{},{},{}", cell(0), cell(1), cell(2), cell(3), cell(4), cell(5)));
                }
            }
            StreamElement::Watermark(w) => marks.push(w),
            _ => {}
        }
    }
    rows.sort();
    (rows, marks)
}

#[test]
fn rows_meet_within_inclusive_bounds_whichever_side_comes_first() {
    let c = config("inner", serde_json::json!("-2ms"), serde_json::json!(3));
    let lefts = left(&[(Some(1), 10, "a"), (Some(2), 10, "b"), (None, 10, "n")]);
    let rights = right(&[(1, 7, 70), (1, 8, 80), (1, 13, 130), (1, 14, 140), (3, 10, 100)]);
    let expected = vec!["1,10,a|1,13,130".to_string(), "1,10,a|1,8,80".to_string()];
    for left_first in [true, false] {
        let mut j = join(&c, 0);
        let mut out = Collector::default();
        let order = if left_first {
            [(0, lefts.clone()), (1, rights.clone())]
        } else {
            [(1, rights.clone()), (0, lefts.clone())]
        };
        for (input, b) in order {
            j.process_batch(input, b, &mut out).unwrap();
        }
        assert_eq!(drain(&mut out).0, expected, "left first: {left_first}");
    }
}

#[test]
fn outer_joins_pad_a_lonely_row_once_the_watermark_passes_its_reach() {
    let c = config("full", serde_json::json!("-2s"), serde_json::json!("3s"));
    let mut j = join(&c, 0);
    let mut out = Collector::default();
    j.process_batch(0, left(&[(Some(1), 10_000, "a"), (Some(2), 10_000, "b")]), &mut out).unwrap();
    j.process_batch(1, right(&[(1, 12_000, 1), (5, 11_000, 5)]), &mut out).unwrap();
    assert_eq!(drain(&mut out).0, vec!["1,10000,a|1,12000,1"]);
    // Held back by max(0, upper, -lower) = 3 s.
    j.process_watermark(12_999, &mut out).unwrap();
    assert_eq!(drain(&mut out), (vec![], vec![9_999]));
    // The right row of key 5 at 11 s can meet left rows up to 13 s; b (10 s)
    // can meet right rows up to 13 s.
    j.process_watermark(13_000, &mut out).unwrap();
    assert_eq!(drain(&mut out), (vec!["-,-,-|5,11000,5".into(), "2,10000,b|-,-,-".into()], vec![10_000]));
    // a met a partner: never padded.
    j.process_watermark(i64::MAX, &mut out).unwrap();
    assert_eq!(drain(&mut out), (vec![], vec![i64::MAX]));
    // A row too late to be kept is padded at once; a null key meets nobody.
    j.process_batch(0, left(&[(Some(1), 5_000, "late"), (None, 20_000, "n")]), &mut out).unwrap();
    assert_eq!(drain(&mut out).0, vec!["-,20000,n|-,-,-", "1,5000,late|-,-,-"]);
}

#[test]
fn a_left_join_pads_only_the_left_side_and_finish_flushes_what_is_kept() {
    let c = config("left", serde_json::json!(0), serde_json::json!("1s"));
    let mut j = join(&c, 0);
    let mut out = Collector::default();
    j.process_batch(0, left(&[(Some(1), 0, "a")]), &mut out).unwrap();
    j.process_batch(1, right(&[(9, 0, 9)]), &mut out).unwrap();
    assert!(drain(&mut out).0.is_empty());
    j.finish(&mut out).unwrap();
    assert_eq!(drain(&mut out).0, vec!["1,0,a|-,-,-"]);
}

#[test]
fn kept_rows_restore_by_key_group_into_another_parallelism() {
    let c = config("left", serde_json::json!("-1s"), serde_json::json!("1s"));
    let lefts: Vec<(Option<i64>, i64, &str)> = (0..200).map(|i| (Some(i % 50), 1_000 + i, "l")).collect();
    let rights: Vec<(i32, i64, i64)> = (0..200).map(|i| (i % 70, 1_500 + i64::from(i), i64::from(i))).collect();
    // One operator that never stops.
    let mut whole = join(&c, 0);
    let mut expected = Collector::default();
    whole.process_batch(0, left(&lefts), &mut expected).unwrap();
    whole.process_batch(1, right(&rights), &mut expected).unwrap();
    whole.finish(&mut expected).unwrap();
    let expected = drain(&mut expected).0;
    assert!(expected.len() > 200, "{}", expected.len());

    // Left rows, a snapshot, then a restore split over two subtasks.
    let mut first = join(&c, 0);
    let mut out = Collector::default();
    first.process_batch(0, left(&lefts), &mut out).unwrap();
    assert!(drain(&mut out).0.is_empty());
    let mut w = StateWriter::new("j", CheckpointId(1), true);
    first.snapshot_state(&mut w).unwrap();
    let entries = w.into_entries();
    assert!(entries.iter().all(|e| e.state == "left" && e.key_group < 128));
    let mut got = Vec::new();
    for subtask in 0..2 {
        let range = key_group_range(128, 2, subtask);
        let mine: Vec<_> = entries.iter().filter(|e| range.contains(&e.key_group)).cloned().collect();
        let mut j = join(&c, subtask);
        j.restore_state(&StateReader::new("j", &mine)).unwrap();
        // The right rows this subtask owns.
        let mut hashes = Vec::new();
        let all = right(&rights);
        hash_rows(&[all.column(0).clone()], &mut hashes).unwrap();
        let picks: Vec<u32> =
            (0..rights.len() as u32).filter(|&i| range.contains(&key_group(hashes[i as usize], 128))).collect();
        let mine = arrow::compute::take_record_batch(&all, &arrow::array::UInt32Array::from(picks)).unwrap();
        let mut out = Collector::default();
        j.process_batch(1, mine, &mut out).unwrap();
        j.finish(&mut out).unwrap();
        got.extend(drain(&mut out).0);
    }
    got.sort();
    assert_eq!(got, expected);
}

#[test]
fn incremental_snapshots_write_changed_key_groups_and_delete_emptied_ones() {
    let c = config("inner", serde_json::json!(0), serde_json::json!(10));
    let mut j = join(&c, 0);
    let mut out = Collector::default();
    j.process_batch(0, left(&[(Some(1), 100, "a"), (Some(2), 200, "b")]), &mut out).unwrap();
    let mut w = StateWriter::new("j", CheckpointId(1), false);
    j.snapshot_state(&mut w).unwrap();
    assert_eq!(w.into_entries().iter().filter(|e| e.value.is_some()).count(), 2);
    // Nothing changed: nothing written.
    let mut w = StateWriter::new("j", CheckpointId(2), false);
    j.snapshot_state(&mut w).unwrap();
    assert!(w.into_entries().is_empty());
    // Key 1's row expires at 110: its group is deleted, key 2's is untouched.
    j.process_watermark(150, &mut out).unwrap();
    let mut w = StateWriter::new("j", CheckpointId(3), false);
    j.snapshot_state(&mut w).unwrap();
    let entries = w.into_entries();
    assert_eq!(entries.len(), 1);
    assert!(entries[0].value.is_none());
    assert_eq!(entries[0].key_group, key_group(crate::keygroup::hash_i64(1), 128));
}

#[test]
fn plans_name_what_is_wrong() {
    let err = |c: serde_json::Value| planned(&c).unwrap_err().to_string();
    assert!(err(config("inner", serde_json::json!("5s"), serde_json::json!("1s")))
        .contains("lower (5000 ms) is after upper (1000 ms)"));
    let mut c = config("inner", serde_json::json!(0), serde_json::json!(1));
    c["right_key"] = serde_json::json!(["v"]);
    c["left_key"] = serde_json::json!(["name"]);
    assert!(err(c).contains("left key `name` (Utf8) and right key `v` (Int64) cannot be compared"));
    let mut c = config("inner", serde_json::json!(0), serde_json::json!(1));
    c["names"] = serde_json::json!(["a", "b", "c", "d", "e", "a"]);
    assert!(err(c).contains("column `a` would appear twice"));
    let mut c = config("inner", serde_json::json!(0), serde_json::json!(1));
    c["lower"] = serde_json::json!("soon");
    let e = err(c);
    assert!(e.contains("config.lower") && e.contains("invalid duration `soon`"), "{e}");
    // Outer joins make the padded side nullable.
    let s = planned(&config("right", serde_json::json!(0), serde_json::json!(1))).unwrap();
    assert!(s.field(1).is_nullable() && !s.field(4).is_nullable());
}
