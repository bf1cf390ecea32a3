//! Tests of the JDBC sink's planning: what `weir validate` refuses without
//! a database.

use std::time::Duration;

use serde_json::json;
use weir_runtime::builder::JobBuilder;
use weir_runtime::checkpointing::CheckpointConfig;
use weir_runtime::plan::Plan;

use super::*;

fn plan(sink: serde_json::Value, checkpoints: Option<CheckpointConfig>) -> Result<Plan, PlanError> {
    let mut b = JobBuilder::new("t");
    let schema =
        json!([{"name": "op", "type": "string"}, {"name": "id", "type": "int64"}, {"name": "v", "type": "float64"}]);
    b.operator("src", "values", json!({"schema": schema, "rows": [{"op": "+I", "id": 1, "v": 1.0}]}));
    b.operator("out", "jdbc_sink", sink);
    b.forward("src", "out");
    if let Some(c) = checkpoints {
        b.checkpoints(c);
    }
    Plan::new(&b.build(), &crate::registry(), 1)
}

fn sink(extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"url": "jdbc:mysql://127.0.0.1:3306/app", "table": "t"});
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    c
}

#[test]
fn configurations_are_checked_without_a_database() {
    let every = || Some(CheckpointConfig::every(Duration::from_secs(1)));
    plan(sink(json!({"key": ["id"], "op_column": "op", "delivery": "exactly_once"})), every()).unwrap();
    plan(sink(json!({})), None).unwrap();
    let refused = [
        (sink(json!({"delivery": "exactly_once"})), None, "add a `checkpoints:` section"),
        (sink(json!({"op_column": "op"})), None, "deletes need the destination's key"),
        (sink(json!({"op_column": "id", "key": ["id"]})), None, "must be text"),
        (sink(json!({"key": ["nope"]})), None, "key column `nope` is not a written column"),
        (sink(json!({"key": ["op"], "op_column": "op"})), None, "key column `op` is not a written column"),
        (sink(json!({"key": ["id", "id"]})), None, "named twice"),
        (sink(json!({"url": "jdbc:oracle:thin:@h:1521/x"})), None, "not a database URL"),
        (sink(json!({"url": "jdbc:mysql://h:3306"})), None, "names no database"),
        (sink(json!({"password": "a", "password_env": "B"})), None, "give the password one way"),
        (sink(json!({"buffer_flush_max_rows": 0})), None, "at least 1"),
        (sink(json!({"sink_id": "x"})), None, "delivery: exactly_once"),
        (sink(json!({"tabel": "t"})), None, "unknown field `tabel`"),
    ];
    for (config, cp, expected) in refused {
        let e = plan(config.clone(), cp).expect_err(&format!("{config} should be refused")).to_string();
        assert!(e.contains(expected), "{config}: expected `{expected}` in: {e}");
    }
}

#[test]
fn the_default_sink_id_names_the_table_and_the_operator() {
    let c: JdbcConfig = serde_json::from_value(sink(json!({}))).unwrap();
    assert_eq!(c.sink_id("counts"), "t/counts");
    assert_eq!(c.buffer_flush_interval, Duration::from_secs(1));
}
