//! Tests of the Kafka sink's planning and record encoding.

use super::*;
use serde_json::json;
use weir_runtime::builder::JobBuilder;
use weir_runtime::checkpointing::CheckpointConfig;
use weir_runtime::plan::Plan;

fn plan(sink: serde_json::Value, checkpoints: Option<CheckpointConfig>) -> Result<Plan, PlanError> {
    let mut b = JobBuilder::new("t");
    b.operator("src", "values", json!({"schema": [{"name": "k", "type": "string"}], "rows": [{"k": "a"}]}));
    b.operator("out", "kafka_sink", sink);
    b.forward("src", "out");
    if let Some(c) = checkpoints {
        b.checkpoints(c);
    }
    Plan::new(&b.build(), &crate::registry(), 1)
}

#[test]
fn exactly_once_is_checked_against_the_checkpoints() {
    let sink = |extra: serde_json::Value| {
        let mut c = json!({"bootstrap_servers": "b:9092", "topic": "t", "delivery": "exactly_once", "key_column": "k"});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    };
    let every = |s| Some(CheckpointConfig::every(Duration::from_secs(s)));
    plan(sink(json!({})), every(1)).unwrap();
    let e = plan(sink(json!({})), None).unwrap_err().to_string();
    assert!(e.contains("checkpoints"), "{e}");
    let e = plan(sink(json!({"transaction_timeout": "5s"})), every(10)).unwrap_err().to_string();
    assert!(e.contains("transaction_timeout") && e.contains("longer than the checkpoint interval"), "{e}");
    let e = plan(json!({"bootstrap_servers": "b", "topic": "t", "key_column": "nope"}), None).unwrap_err().to_string();
    assert!(e.contains("no column `nope`"), "{e}");
    let e = plan(json!({"bootstrap_servers": "b", "topic": "t", "properties": {"transactional.id": "x"}}), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("set by Weir itself"), "{e}");
}

#[test]
fn records_round_trip() {
    let mut r = Records::default();
    r.push(Some(b"k1"), Some(b"v1"));
    r.push(None, Some(b""));
    r.push(Some(b""), Some(b"value three"));
    r.push(Some(b"gone"), None);
    let back = Records::decode(&r.encode()).unwrap();
    assert_eq!(back, r);
    let items: Vec<_> = back.iter().collect();
    assert_eq!(items[0], (Some(&b"k1"[..]), Some(&b"v1"[..])));
    assert_eq!(items[1], (None, Some(&b""[..])));
    assert_eq!(items[3], (Some(&b"gone"[..]), None), "a tombstone");
    let mut enc = r.encode();
    enc.pop();
    assert!(Records::decode(&enc).is_err());
}
