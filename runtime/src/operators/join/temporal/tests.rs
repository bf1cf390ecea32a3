//! Tests of the temporal join.

use super::*;
use crate::channel::StreamElement;
use crate::graph::{EdgeSpec, Partitioning};
use crate::state::CheckpointId;
use arrow::array::{Int64Array, StringArray};
use serde_json::json;

/// Orders: (id, currency, time).
fn orders_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("currency", DataType::Utf8, true),
        Field::new("t", DataType::Int64, false),
    ]))
}

/// Rates: (currency, rate, time, change kind).
fn rates_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("cur", DataType::Utf8, false),
        Field::new("rate", DataType::Int64, false),
        Field::new("rt", DataType::Int64, false),
        Field::new("op", DataType::Utf8, false),
    ]))
}

fn edge(input: u32, key: &str) -> EdgeSpec {
    EdgeSpec {
        from: format!("src{input}"),
        to: "join".into(),
        partitioning: Partitioning::Hash,
        key: vec![key.into()],
        input,
        output: String::new(),
        line: 0,
    }
}

fn create(config: serde_json::Value) -> Result<Box<dyn Operator>, PlanError> {
    let (e0, e1) = (edge(0, "currency"), edge(1, "cur"));
    let inputs = [orders_schema(), rates_schema()];
    let ctx = PlanContext {
        uid: "join",
        line: 0,
        config: &config,
        inputs: &inputs,
        input_edges: &[&e0, &e1],
        parallelism: 2,
        checkpoint: None,
    };
    Ok(match TemporalJoinFactory.create(&ctx, SubtaskInfo { index: 0, parallelism: 2, max_parallelism: 128 })? {
        Instance::Operator(o) => o,
        Instance::Source(_) => unreachable!(),
    })
}

fn join(join_type: &str) -> Box<dyn Operator> {
    create(json!({"left_key": ["currency"], "right_key": ["cur"], "left_time": "t", "right_time": "rt",
                  "join_type": join_type, "right_op_column": "op"}))
    .unwrap()
}

fn orders(rows: &[(i64, Option<&str>, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        orders_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

fn rates(rows: &[(&str, i64, i64, &str)]) -> RecordBatch {
    RecordBatch::try_new(
        rates_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.3))),
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
    v.sort();
    v
}

#[test]
fn each_row_meets_the_version_valid_at_its_time_whatever_the_arrival_order() {
    let mut j = join("left");
    let mut out = Collector::default();
    // Orders first, rates later: nothing is joined before the watermark.
    j.process_batch(
        0,
        orders(&[(1, Some("EUR"), 10), (2, Some("EUR"), 25), (3, Some("USD"), 12), (4, Some("EUR"), 5)]),
        &mut out,
    )
    .unwrap();
    j.process_batch(
        1,
        rates(&[("EUR", 114, 20, "+U"), ("EUR", 110, 0, "+I"), ("USD", 100, 15, "+I"), ("EUR", 110, 20, "-U")]),
        &mut out,
    )
    .unwrap();
    assert!(rows(&mut out).is_empty());
    j.process_watermark(12, &mut out).unwrap();
    // USD had no version at 12: padded.
    assert_eq!(rows(&mut out), ["1,EUR,10,EUR,110,0", "3,USD,12,,,", "4,EUR,5,EUR,110,0"]);
    // EUR is deleted at 30; an order at 25 still sees 114, one at 31 nothing.
    j.process_batch(1, rates(&[("EUR", 114, 30, "-D")]), &mut out).unwrap();
    j.process_batch(0, orders(&[(5, Some("EUR"), 31), (6, None, 40)]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["6,,40,,,"], "a null key is padded at once");
    // A snapshot and restore keep the versions and the waiting rows.
    let mut w = StateWriter::new("join", CheckpointId(1), true);
    j.snapshot_state(&mut w).unwrap();
    let entries = w.into_entries();
    let mut restored = join("left");
    restored.restore_state(&StateReader::new("join", &entries)).unwrap();
    restored.process_watermark(40, &mut out).unwrap();
    assert_eq!(rows(&mut out), ["2,EUR,25,EUR,114,20", "5,EUR,31,,,"]);
}

#[test]
fn an_inner_join_drops_rows_without_a_version_and_late_rows_join_at_once() {
    let mut j = join("inner");
    let mut out = Collector::default();
    j.process_batch(1, rates(&[("EUR", 110, 0, "+I")]), &mut out).unwrap();
    j.process_batch(0, orders(&[(1, Some("USD"), 3), (2, Some("EUR"), 4)]), &mut out).unwrap();
    j.process_watermark(10, &mut out).unwrap();
    assert_eq!(rows(&mut out), ["2,EUR,4,EUR,110,0"]);
    j.process_batch(0, orders(&[(3, Some("EUR"), 7)]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["3,EUR,7,EUR,110,0"], "behind the watermark: joined as it comes");
    // The end of the input joins the rows still waiting.
    j.process_batch(0, orders(&[(4, Some("EUR"), 500)]), &mut out).unwrap();
    assert!(rows(&mut out).is_empty());
    j.finish(&mut out).unwrap();
    assert_eq!(rows(&mut out), ["4,EUR,500,EUR,110,0"]);
}

#[test]
fn outer_joins_other_than_left_are_refused() {
    let e = create(json!({"left_key": ["currency"], "right_key": ["cur"], "left_time": "t", "right_time": "rt", "join_type": "full"}))
        .map(|_| ())
        .unwrap_err();
    assert!(e.to_string().contains("inner or left"), "{e}");
}
