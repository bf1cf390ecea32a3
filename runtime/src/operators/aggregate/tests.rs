//! Tests of the group aggregation.

use super::*;
use crate::channel::StreamElement;
use crate::graph::{EdgeSpec, Partitioning};
use crate::state::CheckpointId;
use serde_json::json;

fn input_schema(updating: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
        Field::new("f", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
    ];
    if updating {
        fields.push(Field::new("op", DataType::Utf8, false));
    }
    Arc::new(Schema::new(fields))
}

fn context<'a>(config: &'a serde_json::Value, inputs: &'a [SchemaRef], edges: &'a [&'a EdgeSpec]) -> PlanContext<'a> {
    PlanContext { uid: "agg", line: 0, config, inputs, input_edges: edges, parallelism: 2, checkpoint: None }
}

fn edge(config: &serde_json::Value) -> EdgeSpec {
    let key = config["key"]
        .as_array()
        .map_or(Vec::new(), |k| k.iter().filter_map(|k| k.as_str().map(String::from)).collect());
    EdgeSpec {
        from: "src".into(),
        to: "agg".into(),
        partitioning: Partitioning::Hash,
        key,
        input: 0,
        output: String::new(),
        line: 0,
    }
}

fn operator(config: serde_json::Value) -> Box<dyn Operator> {
    let updating = config.get("input_op_column").is_some();
    let inputs = [input_schema(updating)];
    let edge = edge(&config);
    match GroupAggregateFactory
        .create(&context(&config, &inputs, &[&edge]), SubtaskInfo { index: 0, parallelism: 2, max_parallelism: 128 })
        .unwrap()
    {
        Instance::Operator(o) => o,
        Instance::Source(_) => unreachable!(),
    }
}

fn plan_error(config: serde_json::Value) -> String {
    let inputs = [input_schema(false)];
    let edge = edge(&config);
    GroupAggregateFactory.plan(&context(&config, &inputs, &[&edge])).unwrap_err().to_string()
}

type Row<'a> = (Option<&'a str>, Option<i64>, Option<f64>, Option<&'a str>);

fn batch(rows: &[Row<'_>], ops: Option<&[&str]>) -> RecordBatch {
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
        Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        Arc::new(StringArray::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
    ];
    if let Some(ops) = ops {
        columns.push(Arc::new(StringArray::from_iter_values(ops.iter())));
    }
    RecordBatch::try_new(input_schema(ops.is_some()), columns).unwrap()
}

/// Output rows as text, in order.
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

fn all_aggregates() -> serde_json::Value {
    json!([
        {"fn": "count", "as": "n"}, {"fn": "sum", "column": "v", "as": "sum"},
        {"fn": "min", "column": "s", "as": "lo"}, {"fn": "max", "column": "v", "as": "hi"},
        {"fn": "avg", "column": "f", "as": "avg"}, {"fn": "count_distinct", "column": "s", "as": "ds"}
    ])
}

#[test]
fn each_batch_updates_a_key_once_with_its_previous_result_taken_back() {
    let mut agg = operator(json!({"key": ["k"], "aggregates": all_aggregates()}));
    let mut out = Collector::default();
    let b1 = batch(
        &[
            (Some("a"), Some(1), Some(1.0), Some("x")),
            (Some("b"), Some(5), None, None),
            (Some("a"), Some(2), Some(2.0), Some("w")),
        ],
        None,
    );
    agg.process_batch(0, b1, &mut out).unwrap();
    assert_eq!(rows(&mut out), vec!["a,2,3,w,2,1.5,2,+I", "b,1,5,,5,,0,+I"]);
    let b2 = batch(&[(Some("a"), Some(4), Some(3.0), Some("x")), (None, None, None, Some("z"))], None);
    agg.process_batch(0, b2, &mut out).unwrap();
    assert_eq!(
        rows(&mut out),
        vec!["a,2,3,w,2,1.5,2,-U", "a,3,7,w,4,2.0,2,+U", ",1,,z,,,1,+I"],
        "a null key is a key; nulls are not aggregated"
    );
}

#[test]
fn an_updating_input_retracts_every_aggregate_and_deletes_emptied_keys() {
    let mut agg = operator(json!({"key": ["k"], "aggregates": all_aggregates(), "input_op_column": "op"}));
    let mut out = Collector::default();
    let b1 = batch(
        &[
            (Some("a"), Some(9), Some(1.0), Some("m")),
            (Some("a"), Some(3), Some(3.0), Some("c")),
            (Some("b"), Some(1), Some(1.0), Some("q")),
        ],
        Some(&["+I", "+I", "+I"]),
    );
    agg.process_batch(0, b1, &mut out).unwrap();
    assert_eq!(rows(&mut out), vec!["a,2,12,c,9,2.0,2,+I", "b,1,1,q,1,1.0,1,+I"]);
    // The 9 is updated to 4: the max gives way to the next value.
    let b2 = batch(
        &[
            (Some("a"), Some(9), Some(1.0), Some("m")),
            (Some("a"), Some(4), Some(1.0), Some("m")),
            (Some("b"), Some(1), Some(1.0), Some("q")),
        ],
        Some(&["-U", "+U", "-D"]),
    );
    agg.process_batch(0, b2, &mut out).unwrap();
    assert_eq!(rows(&mut out), vec!["a,2,12,c,9,2.0,2,-U", "a,2,7,c,4,2.0,2,+U", "b,1,1,q,1,1.0,1,-D"]);
    // A retraction of a key with no state is ignored; one that changes
    // nothing visible emits nothing.
    let b3 = batch(
        &[
            (Some("gone"), Some(1), None, None),
            (Some("a"), Some(4), Some(1.0), Some("m")),
            (Some("a"), Some(4), Some(1.0), Some("m")),
        ],
        Some(&["-D", "-U", "+U"]),
    );
    agg.process_batch(0, b3, &mut out).unwrap();
    assert_eq!(rows(&mut out), Vec::<String>::new());
    let bad = batch(&[(Some("a"), Some(1), None, None)], Some(&["+X"]));
    let err = agg.process_batch(0, bad, &mut out).unwrap_err().to_string();
    assert!(err.contains("\"+X\"") && err.contains("none of +I, +U, -U, -D"), "{err}");
}

#[test]
fn keys_alone_make_a_distinct_result() {
    let mut agg = operator(json!({"key": ["k", "s"], "op_column": "kind"}));
    let mut out = Collector::default();
    let b = batch(
        &[(Some("a"), None, None, Some("x")), (Some("a"), None, None, Some("x")), (Some("a"), None, None, Some("y"))],
        None,
    );
    agg.process_batch(0, b.clone(), &mut out).unwrap();
    assert_eq!(rows(&mut out), vec!["a,x,+I", "a,y,+I"]);
    agg.process_batch(0, b, &mut out).unwrap();
    assert!(rows(&mut out).is_empty(), "rows seen before change nothing");
}

#[test]
fn snapshots_restore_by_key_group_and_only_changed_keys_are_written_again() {
    let cfg = json!({"key": ["k"], "aggregates": all_aggregates()});
    let mut agg = operator(cfg.clone());
    let mut out = Collector::default();
    let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    let first: Vec<Row<'_>> = keys.iter().map(|k| (Some(k.as_str()), Some(1), Some(1.0), Some("s"))).collect();
    agg.process_batch(0, batch(&first, None), &mut out).unwrap();
    out.drain();
    let mut w = StateWriter::new("agg", CheckpointId(1), true);
    agg.snapshot_state(&mut w).unwrap();
    let entries = w.into_entries();
    assert_eq!(entries.len(), 50);
    agg.process_batch(0, batch(&[(Some("k7"), Some(1), None, None)], None), &mut out).unwrap();
    assert_eq!(rows(&mut out), vec!["k7,1,1,s,1,1.0,1,-U", "k7,2,2,s,1,1.0,1,+U"]);
    let mut w = StateWriter::new("agg", CheckpointId(2), false);
    agg.snapshot_state(&mut w).unwrap();
    assert_eq!(w.into_entries().len(), 1, "an incremental snapshot writes the one key that changed");
    // Two subtasks restore halves of the key groups; each continues its keys.
    let mut seen = 0;
    for half in [0..64u32, 64..128] {
        let mine: Vec<_> = entries.iter().filter(|e| half.contains(&e.key_group)).cloned().collect();
        seen += mine.len();
        let mut restored = operator(cfg.clone());
        restored.restore_state(&StateReader::new("agg", &mine)).unwrap();
        for e in &mine {
            let key = keys.iter().find(|k| restored_key(k, &e.key)).unwrap();
            restored
                .process_batch(0, batch(&[(Some(key.as_str()), Some(2), Some(3.0), Some("t"))], None), &mut out)
                .unwrap();
            assert_eq!(rows(&mut out), vec![format!("{key},1,1,s,1,1.0,1,-U"), format!("{key},2,3,s,2,2.0,2,+U")]);
        }
    }
    assert_eq!(seen, 50);
    let other = operator(json!({"key": ["k"], "aggregates": [{"fn": "count", "as": "n"}]}));
    let mut other = other;
    let err = other.restore_state(&StateReader::new("agg", &entries)).unwrap_err().to_string();
    assert!(err.contains("6 accumulators per key; this aggregation has 1"), "{err}");
}

/// Whether row bytes `bytes` are the key `k`.
fn restored_key(k: &str, bytes: &[u8]) -> bool {
    let conv = RowConverter::new(vec![SortField::new(DataType::Utf8)]).unwrap();
    let rows = conv.convert_columns(&[Arc::new(StringArray::from(vec![k])) as ArrayRef]).unwrap();
    rows.row(0).data() == bytes
}

#[test]
fn idle_keys_expire_after_the_ttl_without_output() {
    let mut agg = operator(json!({"key": ["k"], "aggregates": [{"fn": "count", "as": "n"}], "state_ttl": "50ms"}));
    let mut out = Collector::default();
    agg.process_batch(0, batch(&[(Some("a"), None, None, None)], None), &mut out).unwrap();
    assert_eq!(rows(&mut out), vec!["a,1,+I"]);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(10);
    // Sweep until the key is gone: its next row starts again from +I.
    loop {
        agg.on_processing_time(Instant::now(), &mut out).unwrap();
        let mut w = StateWriter::new("agg", CheckpointId(1), true);
        agg.snapshot_state(&mut w).unwrap();
        if w.into_entries().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the key never expired");
        std::thread::yield_now();
    }
    assert!(start.elapsed() >= Duration::from_millis(45), "expired before its TTL");
    assert!(rows(&mut out).is_empty(), "expiry emits nothing");
    agg.process_batch(0, batch(&[(Some("a"), None, None, None)], None), &mut out).unwrap();
    assert_eq!(rows(&mut out), vec!["a,1,+I"]);
}

#[test]
fn bad_configurations_name_the_field() {
    let cases = [
        (json!({"key": []}), "at least one key column"),
        (json!({"key": ["nope"]}), "no column `nope`"),
        (json!({"key": ["k"], "aggregates": [{"fn": "sum", "column": "s", "as": "x"}]}), "needs a number"),
        (json!({"key": ["k"], "aggregates": [{"fn": "min", "as": "x"}]}), "min needs a column"),
        (json!({"key": ["k"], "aggregates": [{"fn": "count", "as": "k"}]}), "`k` already exists"),
        (json!({"key": ["k"], "aggregates": [{"fn": "count", "as": "op"}]}), "`op` already exists"),
        (json!({"key": ["k"], "input_op_column": "v"}), "must be text"),
        (json!({"key": ["k"], "aggregates": [{"fn": "median", "as": "x"}]}), "unknown variant `median`"),
    ];
    for (cfg, want) in cases {
        let err = plan_error(cfg.clone());
        assert!(err.contains(want), "{cfg}: {err}");
    }
}

#[test]
fn sums_and_means_of_distinct_values_retract_one_occurrence_at_a_time() {
    let aggs =
        json!([{"fn": "sum_distinct", "column": "v", "as": "s"}, {"fn": "avg_distinct", "column": "f", "as": "a"}]);
    let mut agg = operator(json!({"key": ["k"], "aggregates": aggs, "input_op_column": "op"}));
    let mut out = Collector::default();
    let row = |v: i64, f: f64| (Some("a"), Some(v), Some(f), None);
    let b1 = batch(&[row(5, 0.5), row(5, 0.5), row(7, -0.0), row(7, 0.0)], Some(&["+I", "+I", "+I", "+I"]));
    agg.process_batch(0, b1, &mut out).unwrap();
    assert_eq!(rows(&mut out), vec!["a,12,0.25,+I"], "5 and 7 once each; -0 and 0 are one value");
    agg.process_batch(0, batch(&[row(5, 0.5)], Some(&["-D"])), &mut out).unwrap();
    assert_eq!(rows(&mut out), Vec::<String>::new(), "one 5 is left: nothing changes");
    agg.process_batch(0, batch(&[row(5, 0.5)], Some(&["-D"])), &mut out).unwrap();
    assert_eq!(rows(&mut out), vec!["a,12,0.25,-U", "a,7,0.0,+U"]);
}
