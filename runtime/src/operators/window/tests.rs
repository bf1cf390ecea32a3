//! Tests of the window operator.

use super::state::COLUMNAR;
use super::*;
use crate::channel::StreamElement;
use crate::graph::{EdgeSpec, Partitioning};
use crate::state::CheckpointId;
use arrow::array::{AsArray, Int64Array, StringArray};
use arrow::datatypes::Int64Type;

fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("t", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
    ]))
}

fn window(config: serde_json::Value) -> Box<dyn Operator> {
    try_window(config).unwrap()
}

/// Why a window of this configuration is refused.
fn plan_error(config: serde_json::Value) -> String {
    try_window(config).err().expect("refused").to_string()
}

fn try_window(config: serde_json::Value) -> Result<Box<dyn Operator>, PlanError> {
    let schema = input_schema();
    let key: Vec<String> = config["key"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect();
    let edge = EdgeSpec {
        from: "src".into(),
        to: "w".into(),
        partitioning: Partitioning::Hash,
        key,
        input: 0,
        output: String::new(),
        line: 0,
    };
    let ctx = PlanContext {
        uid: "w",
        line: 0,
        config: &config,
        inputs: &[schema],
        input_edges: &[&edge],
        parallelism: 2,
        checkpoint: None,
    };
    Ok(match WindowFactory.create(&ctx, SubtaskInfo { index: 0, parallelism: 2, max_parallelism: 128 })? {
        Instance::Operator(o) => o,
        Instance::Source(_) => unreachable!(),
    })
}

fn batch(rows: &[(i64, &str, i64, Option<i64>)]) -> RecordBatch {
    RecordBatch::try_new(
        input_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
        ],
    )
    .unwrap()
}

/// Output rows as strings, sorted.
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
    v.sort();
    v
}

fn aggs() -> serde_json::Value {
    serde_json::json!([
        {"fn": "count", "as": "n"}, {"fn": "sum", "column": "v", "as": "sum"},
        {"fn": "min", "column": "v", "as": "lo"}, {"fn": "max", "column": "v", "as": "hi"},
        {"fn": "avg", "column": "v", "as": "avg"}, {"fn": "count", "column": "v", "as": "nv"}
    ])
}

#[test]
fn tumbling_fires_on_watermark_and_aggregates_every_function() {
    let mut w = window(serde_json::json!({
        "key": ["k"], "timestamp_column": "t", "window": {"type": "tumbling", "size": "10ms"}, "aggregates": aggs()
    }));
    let mut out = Collector::default();
    w.process_batch(
        0,
        batch(&[(1, "a", 0, Some(5)), (1, "a", 9, Some(1)), (2, "b", 3, None), (1, "a", 10, Some(7))]),
        &mut out,
    )
    .unwrap();
    assert!(rows(&mut out).is_empty());
    w.process_watermark(8, &mut out).unwrap();
    assert!(rows(&mut out).is_empty(), "window [0,10) must wait for watermark 9");
    w.process_watermark(9, &mut out).unwrap();
    assert_eq!(rows(&mut out), ["1,0,10,2,6,1,5,3.0,2", "2,0,10,1,,,,,0"]);
    // A record for the fired window is late and dropped.
    w.process_batch(0, batch(&[(1, "a", 5, Some(100))]), &mut out).unwrap();
    w.finish(&mut out).unwrap();
    assert_eq!(rows(&mut out), ["1,10,20,1,7,7,7,7.0,1"]);
}

#[test]
fn sliding_windows_cover_each_record_size_over_slide_times() {
    let mut w = window(serde_json::json!({
        "key": ["name"], "timestamp_column": "t",
        "window": {"type": "sliding", "size": "10ms", "slide": "5ms"},
        "aggregates": [{"fn": "count", "as": "n"}]
    }));
    let mut out = Collector::default();
    w.process_batch(0, batch(&[(0, "x", 7, None), (0, "x", 12, None)]), &mut out).unwrap();
    w.finish(&mut out).unwrap();
    assert_eq!(rows(&mut out), ["x,0,10,1", "x,10,20,1", "x,5,15,2"]);
}

#[test]
fn cumulating_windows_grow_by_their_step_and_each_fires_at_its_end() {
    let mut w = window(serde_json::json!({
        "key": ["name"], "timestamp_column": "t",
        "window": {"type": "cumulate", "step": "5ms", "size": "15ms"},
        "aggregates": [{"fn": "count", "as": "n"}, {"fn": "sum", "column": "v", "as": "s"}]
    }));
    let mut out = Collector::default();
    // In one batch: rows inside and outside of the same cumulating windows.
    w.process_batch(
        0,
        batch(&[(0, "x", 12, Some(100)), (0, "x", 1, Some(1)), (0, "x", 7, Some(10)), (0, "x", 16, Some(1000))]),
        &mut out,
    )
    .unwrap();
    w.process_watermark(4, &mut out).unwrap();
    assert_eq!(rows(&mut out), ["x,0,5,1,1"], "the first step fires alone");
    w.process_watermark(14, &mut out).unwrap();
    assert_eq!(rows(&mut out), ["x,0,10,2,11", "x,0,15,3,111"]);
    // The next period starts again from its first step.
    w.finish(&mut out).unwrap();
    assert_eq!(rows(&mut out), ["x,15,20,1,1000", "x,15,25,1,1000", "x,15,30,1,1000"]);
}

#[test]
fn offsets_shift_where_windows_start() {
    let config = |window: serde_json::Value| serde_json::json!({"key": ["name"], "timestamp_column": "t", "window": window, "aggregates": [{"fn": "count", "as": "n"}]});
    for (window, want) in [
        (serde_json::json!({"type": "tumbling", "size": "10ms", "offset": "3ms"}), vec!["x,-7,3,1", "x,3,13,2"]),
        (
            serde_json::json!({"type": "sliding", "size": "10ms", "slide": "5ms", "offset": "3ms"}),
            vec!["x,-2,8,2", "x,-7,3,1", "x,3,13,2", "x,8,18,1"],
        ),
        (
            serde_json::json!({"type": "cumulate", "step": "5ms", "size": "10ms", "offset": "3ms"}),
            vec!["x,-7,3,1", "x,3,13,2", "x,3,8,1"],
        ),
    ] {
        let mut w = self::window(config(window.clone()));
        let mut out = Collector::default();
        w.process_batch(0, batch(&[(0, "x", 2, None), (0, "x", 3, None), (0, "x", 9, None)]), &mut out).unwrap();
        w.finish(&mut out).unwrap();
        assert_eq!(rows(&mut out), want, "{window}");
    }
}

#[test]
fn sessions_merge_when_a_record_bridges_the_gap() {
    let mut w = window(serde_json::json!({
        "key": ["k"], "timestamp_column": "t", "window": {"type": "session", "gap": "10ms"},
        "aggregates": [{"fn": "count", "as": "n"}, {"fn": "sum", "column": "v", "as": "s"}]
    }));
    let mut out = Collector::default();
    w.process_batch(0, batch(&[(1, "", 0, Some(1)), (1, "", 25, Some(2)), (2, "", 3, Some(10))]), &mut out).unwrap();
    // 14 opens [14,24); 8 then bridges [0,10) and [14,24) into [0,24).
    w.process_batch(0, batch(&[(1, "", 14, Some(3)), (1, "", 8, Some(4))]), &mut out).unwrap();
    w.process_watermark(30, &mut out).unwrap();
    assert_eq!(rows(&mut out), ["1,0,24,3,8", "2,3,13,1,10"]);
    w.process_batch(0, batch(&[(1, "", 20, Some(5))]), &mut out).unwrap();
    w.finish(&mut out).unwrap();
    // On its own [20,30) would be late, but it merges into the open [25,35).
    assert_eq!(rows(&mut out), ["1,20,35,2,7"]);
}

#[test]
fn snapshots_split_by_key_group_restore_every_window() {
    use crate::keygroup::{hash_rows, key_group, key_group_range};
    use crate::state::{StateReader, StateWriter};
    for key in ["k", "name"] {
        let cfg = serde_json::json!({
            "key": [key], "timestamp_column": "t", "window": {"type": "tumbling", "size": "10ms"}, "aggregates": aggs()
        });
        let names: Vec<String> = (0..41).map(|i| format!("n{i}")).collect();
        let input: Vec<(i64, &str, i64, Option<i64>)> = (0..2000i64)
            .map(|i| (i % 37, names[(i % 41) as usize].as_str(), i % 30, (i % 3 != 0).then_some(i)))
            .collect();
        let mut original = window(cfg.clone());
        let mut out = Collector::default();
        original.process_batch(0, batch(&input), &mut out).unwrap();
        let mut w = StateWriter::new("w", CheckpointId(1), true);
        original.snapshot_state(&mut w).unwrap();
        let entries = w.into_entries();
        assert!(entries.iter().all(|e| e.key_group < 128 && e.state == FIXED_STATE));
        original.finish(&mut out).unwrap();
        let want = rows(&mut out);
        assert_eq!(want.len(), 3 * if key == "k" { 37 } else { 41 });
        // Two subtasks restore their key groups; together they give the
        // same output, and every key they emit is in their range.
        let mut got = Vec::new();
        for subtask in 0..2 {
            let range = key_group_range(128, 2, subtask);
            let mine: Vec<_> = entries.iter().filter(|e| range.contains(&e.key_group)).cloned().collect();
            let mut restored = window(cfg.clone());
            restored.restore_state(&StateReader::new("w", &mine)).unwrap();
            let mut out = Collector::default();
            restored.finish(&mut out).unwrap();
            let elements: Vec<_> = out.drain().collect();
            for e in elements {
                let StreamElement::Batch(b) = e else { continue };
                let mut hashes = Vec::new();
                hash_rows(&[b.column(0).clone()], &mut hashes).unwrap();
                assert!(hashes.iter().all(|&h| range.contains(&key_group(h, 128))), "{key}: a key outside its group");
                out.emit(b);
            }
            got.extend(rows(&mut out));
        }
        got.sort();
        assert_eq!(got, want, "{key}");
    }
}

/// The columnar layout is what checkpoints hold: it must not drift.
#[test]
fn columnar_entries_keep_their_layout() {
    use crate::keygroup::{hash_i64, key_group};
    use crate::state::StateWriter;
    let cfg = serde_json::json!({
        "key": ["k"], "timestamp_column": "t", "window": {"type": "tumbling", "size": "10ms"},
        "aggregates": [{"fn": "count", "as": "n"}, {"fn": "sum", "column": "v", "as": "s"},
                       {"fn": "max", "column": "v", "as": "m"}]
    });
    // Two keys of one key group (the second seen only with nulls), one of another.
    let kg = |k: i64| key_group(hash_i64(k), 128);
    let mate = (6..).find(|&k| kg(k) == kg(5)).unwrap();
    let other = (6..).find(|&k| kg(k) != kg(5)).unwrap();
    let mut w = window(cfg);
    let input = [(5, "a", 1, Some(3)), (mate, "b", 2, None), (other, "c", 3, Some(-2)), (5, "a", 4, Some(70))];
    w.process_batch(0, batch(&input), &mut Collector::default()).unwrap();
    let mut sw = StateWriter::new("w", CheckpointId(1), true);
    w.snapshot_state(&mut sw).unwrap();
    let entries = sw.into_entries();
    // Zig-zag varints, written out here so that the encoder cannot drift with them.
    let zz = |v: i64| {
        let mut u = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        while u >= 0x80 {
            out.push(u as u8 | 0x80);
            u >>= 7;
        }
        out.push(u as u8);
        out
    };
    let mut both = COLUMNAR.to_vec();
    both.push(2); // slots
    for v in [5, mate, 2, 1] {
        both.extend(zz(v)); // keys, then counts
    }
    both.push(0b01); // sum: presence bits, then the present values
    both.extend(zz(73));
    both.push(0b01); // max
    both.extend(zz(70));
    let mut alone = COLUMNAR.to_vec();
    alone.push(1);
    for v in [other, 1] {
        alone.extend(zz(v));
    }
    for _ in 0..2 {
        alone.push(0b1);
        alone.extend(zz(-2));
    }
    let mut want = vec![(kg(5), both), (kg(other), alone)];
    want.sort();
    let got: Vec<(u32, Vec<u8>)> = entries.into_iter().map(|e| (e.key_group, e.value.unwrap())).collect();
    assert_eq!(got, want);
}

#[test]
fn incremental_snapshots_with_range_deletions_add_up_to_the_full_one() {
    use crate::state::StateWriter;
    use std::collections::BTreeMap as Map;
    let cfg = serde_json::json!({
        "key": ["k"], "timestamp_column": "t", "window": {"type": "sliding", "size": "20ms", "slide": "10ms"},
        "aggregates": [{"fn": "count", "as": "n"}]
    });
    let mut w = window(cfg);
    let mut out = Collector::default();
    // What an incremental backend holds: (key group, window start) -> value.
    let mut store: Map<(u32, Vec<u8>), Vec<u8>> = Map::new();
    for round in 0..6i64 {
        let rows: Vec<(i64, &str, i64, Option<i64>)> =
            (0..50).map(|i| (i % 13, "", round * 25 + i % 25, None)).collect();
        w.process_batch(0, batch(&rows), &mut out).unwrap();
        w.process_watermark(round * 25 + 5, &mut out).unwrap();
        let mut wr = StateWriter::new("w", CheckpointId(round as u64), false);
        w.snapshot_state(&mut wr).unwrap();
        for e in wr.into_entries() {
            match (e.value, e.delete_to) {
                (Some(v), _) => {
                    store.insert((e.key_group, e.key), v);
                }
                (None, None) => {
                    store.remove(&(e.key_group, e.key));
                }
                (None, Some(to)) => store.retain(|(kg, k), _| *kg != e.key_group || *k < e.key || *k >= to),
            }
        }
        let mut full = StateWriter::new("w", CheckpointId(round as u64), true);
        w.snapshot_state(&mut full).unwrap();
        let want: Map<_, _> =
            full.into_entries().into_iter().map(|e| ((e.key_group, e.key), e.value.unwrap())).collect();
        assert_eq!(store, want, "round {round}");
    }
    drop(out);
}

#[test]
fn entries_in_the_row_by_row_layout_still_restore() {
    use crate::state::{StateEntry, StateReader};
    let cfg = serde_json::json!({
        "key": ["k"], "timestamp_column": "t", "window": {"type": "tumbling", "size": "10ms"},
        "aggregates": [{"fn": "count", "as": "n"}, {"fn": "sum", "column": "v", "as": "s"}]
    });
    let mut value = Vec::new();
    for (key, count, sum) in [(5i64, 3i64, Some(42i64)), (7, 1, None)] {
        value.extend_from_slice(&8u32.to_le_bytes());
        value.extend_from_slice(&key.to_le_bytes());
        value.extend_from_slice(&count.to_le_bytes());
        value.extend_from_slice(&sum.unwrap_or(0).to_le_bytes());
        value.push(u8::from(sum.is_some()));
    }
    let entry = StateEntry {
        operator: "w".into(),
        state: FIXED_STATE.into(),
        key_group: 3,
        key: 0i64.to_be_bytes().to_vec(),
        value: Some(value),
        delete_to: None,
    };
    let mut w = window(cfg);
    w.restore_state(&StateReader::new("w", std::slice::from_ref(&entry))).unwrap();
    let mut out = Collector::default();
    w.finish(&mut out).unwrap();
    assert_eq!(rows(&mut out), ["5,0,10,3,42", "7,0,10,1,"]);
    // A columnar entry cut short is refused, not misread.
    let mut original = window(serde_json::json!({
        "key": ["k"], "timestamp_column": "t", "window": {"type": "tumbling", "size": "10ms"},
        "aggregates": [{"fn": "count", "as": "n"}, {"fn": "sum", "column": "v", "as": "s"}]
    }));
    original.process_batch(0, batch(&[(5, "", 1, Some(300))]), &mut out).unwrap();
    let mut wr = crate::state::StateWriter::new("w", CheckpointId(1), true);
    original.snapshot_state(&mut wr).unwrap();
    let mut entries = wr.into_entries();
    let v = entries[0].value.as_mut().unwrap();
    assert!(v.starts_with(&COLUMNAR));
    v.pop();
    let mut restored = window(serde_json::json!({
        "key": ["k"], "timestamp_column": "t", "window": {"type": "tumbling", "size": "10ms"},
        "aggregates": [{"fn": "count", "as": "n"}, {"fn": "sum", "column": "v", "as": "s"}]
    }));
    assert!(restored.restore_state(&StateReader::new("w", &entries)).is_err());
}

#[test]
fn w2_window_counts_match_the_specification() {
    // Every full 10 s window holds every auction exactly 10 times.
    use crate::operators::datagen::Datagen;
    use crate::operators::SourceOperator;
    let cfg = serde_json::json!({
        "key": ["auction"], "timestamp_column": "event_time_ms",
        "window": {"type": "tumbling", "size": "10s"},
        "aggregates": [{"fn": "count", "as": "count"}, {"fn": "sum", "column": "price", "as": "sum"}]
    });
    let schema = crate::operators::datagen::schema();
    let edge = EdgeSpec {
        from: "g".into(),
        to: "w".into(),
        partitioning: Partitioning::Forward,
        key: vec![],
        input: 0,
        output: String::new(),
        line: 0,
    };
    let ctx = PlanContext {
        uid: "w",
        line: 0,
        config: &cfg,
        inputs: &[schema],
        input_edges: &[&edge],
        parallelism: 1,
        checkpoint: None,
    };
    let Instance::Operator(mut w) =
        WindowFactory.create(&ctx, SubtaskInfo { index: 0, parallelism: 1, max_parallelism: 128 }).unwrap()
    else {
        unreachable!()
    };
    let n = 250_000i64;
    let mut g = Datagen::new(0, 1, n, 8192, None);
    let mut src = Collector::default();
    let mut out = Collector::default();
    while g.poll(&mut src).unwrap() == crate::operators::SourceStatus::Emitted {
        for e in src.drain() {
            if let StreamElement::Batch(b) = e {
                w.process_batch(0, b, &mut out).unwrap();
            }
        }
    }
    w.finish(&mut out).unwrap();
    let mut results = 0;
    for e in out.drain() {
        if let StreamElement::Batch(b) = e {
            results += b.num_rows() as i64;
            let counts = b.column(3).as_primitive::<Int64Type>();
            let starts = b.column(1).as_primitive::<Int64Type>();
            for r in 0..b.num_rows() {
                if starts.value(r) < crate::operators::datagen::BASE_TIME_MS + 20_000 {
                    assert_eq!(counts.value(r), 10);
                }
            }
        }
    }
    assert_eq!(results, (n / 100_000) * 10_000 + (n % 100_000).min(10_000));
}

/// Side-output rows (port, row) as strings, sorted.
fn side_rows(out: &mut Collector) -> Vec<String> {
    let mut v = Vec::new();
    for (port, b) in out.take_side() {
        for r in 0..b.num_rows() {
            let cells: Vec<String> =
                b.columns().iter().map(|c| arrow::util::display::array_value_to_string(c, r).unwrap()).collect();
            v.push(format!("{port}:{}", cells.join(",")));
        }
    }
    v.sort();
    v
}

#[test]
fn late_records_go_to_the_late_side_output_as_they_came() {
    let mut w = window(serde_json::json!({
        "key": ["k"], "timestamp_column": "t", "window": {"type": "tumbling", "size": "10ms"},
        "aggregates": [{"fn": "count", "as": "n"}]
    }));
    let mut out = Collector::default();
    w.process_batch(0, batch(&[(1, "a", 1, Some(1))]), &mut out).unwrap();
    w.process_watermark(9, &mut out).unwrap();
    assert_eq!(rows(&mut out), ["1,0,10,1"]);
    w.process_batch(0, batch(&[(1, "a", 3, Some(2)), (2, "b", 12, Some(3)), (3, "c", 9, None)]), &mut out).unwrap();
    assert_eq!(side_rows(&mut out), ["1:1,a,3,2", "1:3,c,9,"], "late rows, untouched; the on-time row is absorbed");
    w.finish(&mut out).unwrap();
    assert_eq!(rows(&mut out), ["2,10,20,1"]);
}

#[test]
fn allowed_lateness_updates_fired_windows_and_purges_them_after_it() {
    let mut w = window(serde_json::json!({
        "key": ["k"], "timestamp_column": "t", "window": {"type": "tumbling", "size": "10ms"},
        "allowed_lateness": "5ms", "aggregates": [{"fn": "count", "as": "n"}, {"fn": "sum", "column": "v", "as": "s"}]
    }));
    let mut out = Collector::default();
    w.process_batch(0, batch(&[(1, "", 1, Some(1)), (2, "", 2, Some(2))]), &mut out).unwrap();
    w.process_watermark(9, &mut out).unwrap();
    assert_eq!(rows(&mut out), ["1,0,10,1,1", "2,0,10,1,2"]);
    // Within the lateness: the updated row of key 1 only, at once.
    w.process_batch(0, batch(&[(1, "", 4, Some(10))]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["1,0,10,2,11"]);
    assert!(side_rows(&mut out).is_empty());
    // The watermark passes end - 1 + lateness: the window is gone, nothing fires again.
    w.process_watermark(14, &mut out).unwrap();
    assert!(rows(&mut out).is_empty());
    w.process_batch(0, batch(&[(1, "", 5, Some(100))]), &mut out).unwrap();
    assert!(rows(&mut out).is_empty());
    assert_eq!(side_rows(&mut out), ["1:1,,5,100"]);
}

#[test]
fn a_fired_window_kept_for_its_lateness_does_not_fire_again_after_a_restore() {
    use crate::state::{StateReader, StateWriter};
    let cfg = serde_json::json!({
        "key": ["k"], "timestamp_column": "t", "window": {"type": "tumbling", "size": "10ms"},
        "allowed_lateness": "1s", "aggregates": [{"fn": "count", "as": "n"}]
    });
    let mut w = window(cfg.clone());
    let mut out = Collector::default();
    w.process_batch(0, batch(&[(1, "", 1, None), (1, "", 15, None)]), &mut out).unwrap();
    let mut first = StateWriter::new("w", CheckpointId(1), false);
    w.snapshot_state(&mut first).unwrap();
    w.process_watermark(9, &mut out).unwrap();
    assert_eq!(rows(&mut out), ["1,0,10,1"]);
    // The incremental snapshot after the firing rewrites the window as fired.
    let mut second = StateWriter::new("w", CheckpointId(2), false);
    w.snapshot_state(&mut second).unwrap();
    let second = second.into_entries();
    assert!(second.iter().any(|e| e.value.as_deref().is_some_and(|v| v.starts_with(&super::state::COLUMNAR_FIRED))));
    let mut entries = first.into_entries();
    entries.extend(second);
    let mut restored = window(cfg);
    restored.restore_state(&StateReader::new("w", &entries)).unwrap();
    restored.process_watermark(9, &mut out).unwrap();
    assert!(rows(&mut out).is_empty(), "[0,10) fired before the checkpoint");
    restored.process_batch(0, batch(&[(1, "", 2, None)]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["1,0,10,2"], "it still takes records within its lateness");
    restored.finish(&mut out).unwrap();
    assert_eq!(rows(&mut out), ["1,10,20,1"]);
}

#[test]
fn sessions_within_their_lateness_take_records_and_fire_again() {
    use crate::state::{StateReader, StateWriter};
    let cfg = serde_json::json!({
        "key": ["k"], "timestamp_column": "t", "window": {"type": "session", "gap": "10ms"},
        "allowed_lateness": "20ms", "aggregates": [{"fn": "count", "as": "n"}]
    });
    let mut w = window(cfg.clone());
    let mut out = Collector::default();
    w.process_batch(0, batch(&[(1, "", 0, None)]), &mut out).unwrap();
    w.process_watermark(15, &mut out).unwrap();
    assert_eq!(rows(&mut out), ["1,0,10,1"]);
    // Merges into the fired [0,10): [0,13) is still past the watermark, so it fires again.
    w.process_batch(0, batch(&[(1, "", 3, None)]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["1,0,13,2"]);
    // A session of its own within the lateness fires at once; the state keeps both.
    w.process_batch(0, batch(&[(2, "", 1, None)]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["2,1,11,1"]);
    let mut snap = StateWriter::new("w", CheckpointId(1), true);
    w.snapshot_state(&mut snap).unwrap();
    let entries = snap.into_entries();
    let mut restored = window(cfg);
    restored.restore_state(&StateReader::new("w", &entries)).unwrap();
    restored.process_watermark(20, &mut out).unwrap();
    assert!(rows(&mut out).is_empty(), "both fired before the snapshot");
    // Past end - 1 + lateness the sessions are gone: a record on its own is late.
    restored.process_watermark(40, &mut out).unwrap();
    restored.process_batch(0, batch(&[(1, "", 5, None)]), &mut out).unwrap();
    assert_eq!(side_rows(&mut out), ["1:1,,5,"]);
}

#[test]
fn the_window_declares_its_late_side_output_with_the_input_schema() {
    let config = serde_json::json!({
        "key": ["k"], "timestamp_column": "t", "window": {"type": "tumbling", "size": "10ms"},
        "aggregates": [{"fn": "count", "as": "n"}]
    });
    let schema = input_schema();
    let edge = EdgeSpec {
        from: "src".into(),
        to: "w".into(),
        partitioning: Partitioning::Hash,
        key: vec!["k".into()],
        input: 0,
        output: String::new(),
        line: 0,
    };
    let ctx = PlanContext {
        uid: "w",
        line: 0,
        config: &config,
        inputs: std::slice::from_ref(&schema),
        input_edges: &[&edge],
        parallelism: 2,
        checkpoint: None,
    };
    let sides = WindowFactory.side_outputs(&ctx).unwrap();
    assert_eq!(sides.len(), 1);
    assert_eq!((sides[0].0.as_str(), &sides[0].1), ("late", &schema));
}

#[test]
fn count_distinct_counts_each_value_once_through_merges_and_restores() {
    use crate::state::{StateReader, StateWriter};
    for window_spec in
        [serde_json::json!({"type": "tumbling", "size": "10ms"}), serde_json::json!({"type": "session", "gap": "10ms"})]
    {
        let cfg = serde_json::json!({
            "key": ["k"], "timestamp_column": "t", "window": window_spec,
            "aggregates": [{"fn": "count_distinct", "column": "name", "as": "names"}, {"fn": "count_distinct", "column": "v", "as": "vs"}]
        });
        let mut w = window(cfg.clone());
        let mut out = Collector::default();
        w.process_batch(
            0,
            batch(&[(1, "a", 0, Some(1)), (1, "b", 1, Some(1)), (1, "a", 2, None), (2, "a", 3, Some(2))]),
            &mut out,
        )
        .unwrap();
        // Sessions: 8 stretches key 1's [0,12) to [0,18); tumbling: all in [0,10).
        w.process_batch(0, batch(&[(1, "c", 8, Some(3)), (1, "b", 5, Some(1))]), &mut out).unwrap();
        let mut sw = StateWriter::new("w", CheckpointId(1), true);
        w.snapshot_state(&mut sw).unwrap();
        let entries = sw.into_entries();
        let mut restored = window(cfg);
        restored.restore_state(&StateReader::new("w", &entries)).unwrap();
        restored.finish(&mut out).unwrap();
        let got = rows(&mut out);
        let end = if window_spec["type"] == "session" { (18, 13) } else { (10, 10) };
        assert_eq!(
            got,
            [format!("1,0,{},3,2", end.0), format!("2,{},{},1,1", if end.0 == 18 { 3 } else { 0 }, end.1)],
            "{window_spec}"
        );
    }
}

#[test]
fn sums_and_means_of_distinct_values_count_each_value_once_through_merges_and_restores() {
    use crate::state::{StateReader, StateWriter};
    for window_spec in
        [serde_json::json!({"type": "tumbling", "size": "10ms"}), serde_json::json!({"type": "session", "gap": "10ms"})]
    {
        let cfg = serde_json::json!({
            "key": ["k"], "timestamp_column": "t", "window": window_spec,
            "aggregates": [{"fn": "sum_distinct", "column": "v", "as": "s"}, {"fn": "avg_distinct", "column": "v", "as": "a"}]
        });
        let mut w = window(cfg.clone());
        let mut out = Collector::default();
        w.process_batch(
            0,
            batch(&[(1, "a", 0, Some(1)), (1, "b", 1, Some(1)), (1, "a", 2, None), (2, "a", 3, Some(2))]),
            &mut out,
        )
        .unwrap();
        w.process_batch(0, batch(&[(1, "c", 8, Some(3)), (1, "b", 5, Some(1))]), &mut out).unwrap();
        let mut sw = StateWriter::new("w", CheckpointId(1), true);
        w.snapshot_state(&mut sw).unwrap();
        let entries = sw.into_entries();
        let mut restored = window(cfg);
        restored.restore_state(&StateReader::new("w", &entries)).unwrap();
        restored.finish(&mut out).unwrap();
        let got = rows(&mut out);
        let end = if window_spec["type"] == "session" { (18, 13) } else { (10, 10) };
        let start2 = if end.0 == 18 { 3 } else { 0 };
        // Key 1 saw 1, 1, null, 3, 1: the distinct values 1 and 3.
        assert_eq!(got, [format!("1,0,{},4,2.0", end.0), format!("2,{start2},{},2,2.0", end.1)], "{window_spec}");
    }
}

#[test]
fn processing_time_windows_take_rows_as_they_arrive_and_fire_by_the_clock() {
    let cfg = serde_json::json!({
        "key": ["k"], "processing_time": true, "window": {"type": "tumbling", "size": "20ms"},
        "aggregates": [{"fn": "count", "as": "n"}]
    });
    let mut w = window(cfg);
    let mut out = Collector::default();
    // The rows' own times (0 and 10^12) play no part.
    w.process_batch(0, batch(&[(1, "a", 0, None), (1, "a", 1_000_000_000_000, None), (2, "b", 5, None)]), &mut out)
        .unwrap();
    w.process_watermark(i64::MAX, &mut out).unwrap();
    assert!(out.drain().next().is_none(), "event time neither fires windows nor passes through");
    // Wait, with a deadline, for the clock to pass the window's end.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.is_empty() && std::time::Instant::now() < deadline {
        w.on_processing_time(std::time::Instant::now(), &mut out).unwrap();
        got = rows(&mut out);
    }
    assert_eq!(got.len(), 2, "both keys' window fired: {got:?}");
    let cells: Vec<Vec<i64>> =
        got.iter().map(|r| r.split(',').map(|c| c.parse().unwrap_or(-1)).collect::<Vec<i64>>()).collect();
    assert_eq!((cells[0][0], cells[0][3], cells[1][0], cells[1][3]), (1, 2, 2, 1));
    assert_eq!(cells[0][2] - cells[0][1], 20);
    assert!(
        cells[0][2] <= std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
    );
    let refused = serde_json::json!({
        "key": ["k"], "processing_time": true, "timestamp_column": "t", "window": {"type": "tumbling", "size": "20ms"},
        "aggregates": [{"fn": "count", "as": "n"}]
    });
    let e = plan_error(refused);
    assert!(e.contains("processing-time windows take no timestamp_column"), "{e}");
}
