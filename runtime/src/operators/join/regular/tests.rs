//! Tests of the regular join.

use super::*;
use crate::channel::StreamElement;
use crate::graph::{EdgeSpec, Partitioning};
use crate::state::CheckpointId;
use arrow::array::Int64Array;
use serde_json::json;

fn left_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("a", DataType::Utf8, false)]))
}

fn right_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("rid", DataType::Int32, false), Field::new("b", DataType::Utf8, false)]))
}

fn edge(to_input: u32, key: &str) -> EdgeSpec {
    EdgeSpec {
        from: format!("src{to_input}"),
        to: "join".into(),
        partitioning: Partitioning::Hash,
        key: vec![key.into()],
        input: to_input,
        output: String::new(),
        line: 0,
    }
}

fn operator(join_type: &str) -> Box<dyn Operator> {
    let config = json!({"left_key": ["id"], "right_key": ["rid"], "join_type": join_type});
    create(&config, [left_schema(), right_schema()]).unwrap()
}

fn create(config: &serde_json::Value, inputs: [SchemaRef; 2]) -> Result<Box<dyn Operator>, PlanError> {
    let (e0, e1) = (edge(0, "id"), edge(1, "rid"));
    let ctx = PlanContext {
        uid: "join",
        line: 0,
        config,
        inputs: &inputs,
        input_edges: &[&e0, &e1],
        parallelism: 2,
        checkpoint: None,
    };
    Ok(match RegularJoinFactory.create(&ctx, SubtaskInfo { index: 0, parallelism: 2, max_parallelism: 128 })? {
        Instance::Operator(o) => o,
        Instance::Source(_) => unreachable!(),
    })
}

fn left(rows: &[(Option<i64>, &str)]) -> RecordBatch {
    RecordBatch::try_new(
        left_schema(),
        vec![
            Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
        ],
    )
    .unwrap()
}

fn right(rows: &[(i32, &str)]) -> RecordBatch {
    RecordBatch::try_new(
        right_schema(),
        vec![
            Arc::new(arrow::array::Int32Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
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

#[test]
fn an_inner_join_meets_every_stored_row_of_the_key_and_only_adds_rows() {
    let mut j = operator("inner");
    let mut out = Collector::default();
    j.process_batch(0, left(&[(Some(1), "x"), (Some(2), "y"), (None, "n")]), &mut out).unwrap();
    assert!(rows(&mut out).is_empty());
    j.process_batch(1, right(&[(1, "p"), (1, "q"), (3, "r")]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["1,x,1,p", "1,x,1,q"], "an int32 key meets an int64 one");
    j.process_batch(0, left(&[(Some(1), "z")]), &mut out).unwrap();
    // Four columns: an inner join's output has no change-kind column.
    assert_eq!(rows(&mut out), ["1,z,1,p", "1,z,1,q"]);
}

#[test]
fn an_outer_join_takes_back_its_padded_row_when_a_partner_comes() {
    let mut j = operator("full");
    let mut out = Collector::default();
    j.process_batch(0, left(&[(Some(1), "x"), (None, "n")]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["1,x,,,+I", ",n,,,+I"], "a null key meets nobody: padded at once");
    j.process_batch(1, right(&[(1, "p"), (2, "q")]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["1,x,,,-D", "1,x,1,p,+I", ",,2,q,+I"]);
    j.process_batch(0, left(&[(Some(2), "y"), (Some(1), "w")]), &mut out).unwrap();
    assert_eq!(rows(&mut out), [",,2,q,-D", "2,y,2,q,+I", "1,w,1,p,+I"], "x already met p: nothing to take back");
}

#[test]
fn both_sides_restore_and_keep_their_partner_counts() {
    let mut j = operator("left");
    let mut out = Collector::default();
    j.process_batch(0, left(&[(Some(1), "x"), (Some(2), "y")]), &mut out).unwrap();
    j.process_batch(1, right(&[(2, "q")]), &mut out).unwrap();
    out.drain();
    let mut w = StateWriter::new("join", CheckpointId(1), true);
    j.snapshot_state(&mut w).unwrap();
    let entries = w.into_entries();
    assert_eq!(entries.len(), 3, "two left keys, one right key");
    let mut restored = operator("left");
    restored.restore_state(&StateReader::new("join", &entries)).unwrap();
    restored.process_batch(1, right(&[(1, "p"), (2, "r")]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["1,x,,,-D", "1,x,1,p,+I", "2,y,2,r,+I"]);
    assert!(KeyRows::decode(&[0; 7]).is_err(), "a damaged entry is an error");
}

/// An inner join whose right input is updating (`op` holds its change kinds).
fn updating_right_operator(join_type: &str) -> Result<Box<dyn Operator>, PlanError> {
    let config = json!({"left_key": ["id"], "right_key": ["rid"], "join_type": join_type, "right_op_column": "op"});
    create(&config, [left_schema(), changes(&[]).schema()])
}

fn changes(rows: &[(i32, &str, &str)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("rid", DataType::Int32, false),
        Field::new("b", DataType::Utf8, false),
        Field::new("op", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(arrow::array::Int32Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

#[test]
fn an_inner_join_of_an_updating_input_takes_back_the_pairs_of_a_retracted_row() {
    let mut j = updating_right_operator("inner").unwrap();
    let mut out = Collector::default();
    j.process_batch(0, left(&[(Some(1), "x"), (Some(2), "y")]), &mut out).unwrap();
    j.process_batch(1, changes(&[(1, "p", "+I"), (2, "q", "+I")]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["1,x,1,p,+I", "2,y,2,q,+I"], "the output carries change kinds");
    // p is updated to p2: its pair is taken back, the new one written.
    j.process_batch(1, changes(&[(1, "p", "-U"), (1, "p2", "+U")]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["1,x,1,p,-D", "1,x,1,p2,+I"]);
    // A new left row meets only what the right side still holds.
    j.process_batch(0, left(&[(Some(1), "z")]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["1,z,1,p2,+I"]);
    j.process_batch(1, changes(&[(2, "q", "-D")]), &mut out).unwrap();
    assert_eq!(rows(&mut out), ["2,y,2,q,-D"]);
    j.process_batch(0, left(&[(Some(2), "w")]), &mut out).unwrap();
    assert!(rows(&mut out).is_empty(), "q left the state");

    let err = updating_right_operator("left").err().expect("an outer join refuses an updating input");
    assert!(err.to_string().contains("not supported: an outer join of an updating input"), "{err}");
}
