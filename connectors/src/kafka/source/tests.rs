//! Tests of the Kafka source's configuration and position keys.

use super::state::{decode_position_key, position_key};
use super::*;

#[test]
fn partitions_spread_evenly_and_deterministically() {
    for p in 1..6u32 {
        let mut counts = vec![0; p as usize];
        for partition in 0..12 {
            counts[partition_owner("payments", partition, p) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 1, "parallelism {p}: {counts:?}");
    }
}

#[test]
fn position_keys_round_trip() {
    for (t, p) in [("a", 0), ("topic.with-dots", 17), ("", i32::MAX)] {
        assert_eq!(decode_position_key(&position_key(t, p)), Some((t.to_string(), p)));
    }
    assert_eq!(decode_position_key(b"ab"), None);
}

/// Job files reach operators as JSON values (YAML tags play no part).
fn yaml(text: &str) -> Result<SourceConfig, serde_json::Error> {
    serde_json::from_value(serde_yaml_ng::from_str::<serde_json::Value>(text).unwrap())
}

#[test]
fn configs_are_checked() {
    let ok: SourceConfig = yaml(
        "bootstrap_servers: x:9092\ntopic: t\nschema: [{name: id, type: int64}]\nstart: {timestamp: 5}\nmetadata: {key: k}\n",
    )
    .unwrap();
    assert_eq!(ok.start, StartMode::Timestamp(5));
    assert_eq!(ok.schema().unwrap().fields().len(), 2);
    let dup: SourceConfig =
        yaml("bootstrap_servers: x\ntopic: t\nschema: [{name: k, type: int64}]\nmetadata: {key: k}\n").unwrap();
    assert!(dup.schema().unwrap_err().1.contains("already exists"));
    assert!(yaml("bootstrap_servers: x\ntopic: t\nbogus: 1\n").is_err());
}
