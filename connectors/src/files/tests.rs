//! Tests of the file sink: planning, and its commit protocol on a local
//! directory (the end-to-end tests run it on an S3-compatible server).

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{Field, Schema};
use serde_json::json;
use weir_runtime::builder::JobBuilder;
use weir_runtime::checkpointing::CheckpointConfig;
use weir_runtime::graph::{EdgeSpec, Partitioning};
use weir_runtime::plan::Plan;

use super::*;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("page", DataType::Utf8, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("n", DataType::Int64, false),
    ]))
}

fn plan(sink: serde_json::Value) -> Result<Plan, PlanError> {
    let mut b = JobBuilder::new("t");
    let cols =
        json!([{"name": "page", "type": "string"}, {"name": "ts", "type": "int64"}, {"name": "n", "type": "int64"}]);
    b.operator("src", "values", json!({"schema": cols, "rows": [{"page": "a", "ts": 1, "n": 1}]}));
    b.operator("out", "file_sink", sink);
    b.forward("src", "out");
    Plan::new(&b.build(), &crate::registry(), 1)
}

#[test]
fn configurations_are_checked_when_planned() {
    plan(json!({"path": "/tmp/x", "format": "parquet", "partition_by": ["page"], "time_partition": {"column": "ts"}}))
        .unwrap();
    plan(json!({"path": "s3://bucket/events", "format": "csv"})).unwrap();
    plan(json!({"path": "hdfs://namenode:8020/lake/events", "format": "json"})).unwrap();
    let refused = [
        (json!({"path": "relative/dir"}), "neither an absolute path"),
        (json!({"path": "hdfs:///lake/events"}), "hdfs://NAMENODE:PORT/PATH"),
        (json!({"path": "/tmp/x", "partition_by": ["nope"]}), "no column `nope`"),
        (json!({"path": "/tmp/x", "partition_by": ["page", "ts", "n"]}), "nothing is left to write"),
        (json!({"path": "/tmp/x", "time_partition": {"column": "page"}}), "must hold epoch milliseconds or timestamps"),
        (json!({"path": "/tmp/x", "time_partition": {"column": "ts", "pattern": "../%Y"}}), "relative directory path"),
        (
            json!({"path": "/tmp/x", "time_partition": {"column": "ts", "pattern": "dt=%Q"}}),
            "not a valid strftime pattern",
        ),
        (json!({"path": "/tmp/x", "part_prefix": ".hidden"}), "part_prefix"),
        (json!({"path": "/tmp/x", "format": "orc"}), "unknown variant `orc`"),
        (json!({"path": "/tmp/x", "partition_commit": {}}), "partition commit needs partitions"),
        (
            json!({"path": "/tmp/x", "partition_by": ["page"], "partition_commit": {"trigger": "partition_time", "timestamp_pattern": "$dt"}}),
            "`$dt` is not a partition column (they are: page)",
        ),
        (json!({"path": "/tmp/x", "csv": {"delimiter": "\n"}, "format": "csv"}), "the CSV delimiter"),
    ];
    for (config, expected) in refused {
        let e = plan(config.clone()).expect_err(&format!("{config} should be refused")).to_string();
        assert!(e.contains(expected), "{config}: expected `{expected}` in: {e}");
    }
}

fn sink(dir: &std::path::Path, checkpointed: bool) -> Box<dyn Operator> {
    let config = json!({"path": dir.to_str().unwrap(), "format": "json", "partition_by": ["page"]});
    sink_of(config, checkpointed, 0, 1)
}

fn sink_of(config: serde_json::Value, checkpointed: bool, index: u32, parallelism: u32) -> Box<dyn Operator> {
    let edge = EdgeSpec {
        from: "src".into(),
        to: "out".into(),
        partitioning: Partitioning::Forward,
        key: vec![],
        input: 0,
        output: String::new(),
        line: 0,
    };
    let cp = CheckpointConfig::every(Duration::from_secs(1));
    let ctx = PlanContext {
        uid: "out",
        line: 0,
        config: &config,
        inputs: &[schema()],
        input_edges: &[&edge],
        parallelism,
        checkpoint: checkpointed.then_some(&cp),
    };
    match FileSinkFactory.create(&ctx, SubtaskInfo { index, parallelism, max_parallelism: 128 }).unwrap() {
        Instance::Operator(op) => op,
        Instance::Source(_) => unreachable!(),
    }
}

fn rows(from: i64, to: i64) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(
                (from..to).map(|i| if i % 2 == 0 { "even" } else { "odd" }).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from((from..to).collect::<Vec<_>>())),
            Arc::new(Int64Array::from((from..to).collect::<Vec<_>>())),
        ],
    )
    .unwrap()
}

/// (visible rows' `n`, hidden file count) under `dir`.
fn files(dir: &std::path::Path) -> (Vec<i64>, usize) {
    let (mut ns, mut hidden) = (Vec::new(), 0);
    for sub in ["page=even", "page=odd"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
        for e in entries {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                hidden += 1;
                continue;
            }
            for line in std::fs::read_to_string(e.path()).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert!(v.get("page").is_none(), "the partition column is not written");
                ns.push(v["n"].as_i64().unwrap());
            }
        }
    }
    ns.sort();
    (ns, hidden)
}

#[test]
fn parts_become_visible_when_their_checkpoint_completes_and_a_restore_finishes_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Collector::default();
    let mut a = sink(dir.path(), true);
    a.process_batch(0, rows(0, 10), &mut out).unwrap();
    let mut w1 = StateWriter::new("out", CheckpointId(1), true);
    a.snapshot_state(&mut w1).unwrap();
    assert_eq!(files(dir.path()), (vec![], 2), "rolled at the barrier, hidden until checkpoint 1 completes");
    a.checkpoint_complete(CheckpointId(1)).unwrap();
    assert_eq!(files(dir.path()), ((0..10).collect(), 0));
    a.process_batch(0, rows(10, 20), &mut out).unwrap();
    let mut w2 = StateWriter::new("out", CheckpointId(2), true);
    a.snapshot_state(&mut w2).unwrap();
    // Rows after barrier 2, rolled, then the process dies before checkpoint 2's commit.
    a.process_batch(0, rows(20, 30), &mut out).unwrap();
    let mut w3 = StateWriter::new("out", CheckpointId(3), true);
    a.snapshot_state(&mut w3).unwrap();
    drop(a);
    assert_eq!(files(dir.path()), ((0..10).collect(), 4));

    // What a crash can leave besides parts: a probe, a write torn inside a
    // put; and a hidden file of another sink, which must stay.
    let torn = dir.path().join("page=even/..part-out-0-deadbeef-7.jsonl.inprogress.tmp.1");
    let probe = dir.path().join(".part-out-0-deadbeef.probe");
    let foreign = dir.path().join("page=odd/.part-other-0-deadbeef-1.jsonl.inprogress");
    // Sink `out-0`'s subtask 1: its names start like those of `out`'s subtask 0.
    let lookalike = dir.path().join("page=odd/.part-out-0-1-deadbeef-1.jsonl.inprogress");
    for f in [&torn, &probe, &foreign, &lookalike] {
        std::fs::write(f, "x").unwrap();
    }

    // Restored from checkpoint 2: its parts commit, the later ones go.
    let entries = w2.into_entries();
    let mut b = sink(dir.path(), true);
    b.restore_state(&StateReader::new("out", &entries)).unwrap();
    assert_eq!((torn.exists(), probe.exists(), foreign.exists(), lookalike.exists()), (false, false, true, true));
    std::fs::remove_file(&foreign).unwrap();
    std::fs::remove_file(&lookalike).unwrap();
    assert_eq!(files(dir.path()), ((0..20).collect(), 0));
    // Restoring the same checkpoint again (a second failure) changes nothing.
    let mut c = sink(dir.path(), true);
    c.restore_state(&StateReader::new("out", &entries)).unwrap();
    assert_eq!(files(dir.path()), ((0..20).collect(), 0));
    c.process_batch(0, rows(20, 30), &mut out).unwrap();
    c.finish(&mut out).unwrap();
    assert_eq!(files(dir.path()), ((0..30).collect(), 0));
}

#[test]
fn without_checkpoints_parts_commit_as_they_roll() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Collector::default();
    let mut a = sink(dir.path(), false);
    a.process_batch(0, rows(0, 10), &mut out).unwrap();
    a.on_processing_time(Instant::now() + Duration::from_secs(3600), &mut out).unwrap();
    assert_eq!(files(dir.path()), ((0..10).collect(), 0));
    a.process_batch(0, rows(10, 12), &mut out).unwrap();
    a.finish(&mut out).unwrap();
    assert_eq!(files(dir.path()), ((0..12).collect(), 0));
}

/// Rows at these times (ms), all on page `p`.
fn timed(times: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(vec!["p"; times.len()])),
            Arc::new(Int64Array::from(times.to_vec())),
            Arc::new(Int64Array::from(times.to_vec())),
        ],
    )
    .unwrap()
}

#[test]
fn success_files_mark_an_hour_once_every_subtasks_watermark_passed_it() {
    const HOUR: i64 = 3_600_000;
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"path": dir.path().to_str().unwrap(), "time_partition": {"column": "ts"},
        "partition_commit": {"trigger": "partition_time", "delay": "1h", "timestamp_pattern": "$dt $hour:00:00"}});
    let success = |hour: u32| dir.path().join(format!("dt=1970-01-01/hour={hour:02}/_SUCCESS")).exists();
    let mut out = Collector::default();
    let (mut a, mut b) = (sink_of(config.clone(), true, 0, 2), sink_of(config, true, 1, 2));
    a.process_batch(0, timed(&[10, HOUR + 10]), &mut out).unwrap();
    b.process_batch(0, timed(&[20]), &mut out).unwrap();
    let barrier = |a: &mut Box<dyn Operator>, b: &mut Box<dyn Operator>, id: u64| {
        for s in [a, b] {
            s.snapshot_state(&mut StateWriter::new("out", CheckpointId(id), true)).unwrap();
        }
    };
    // Subtask 0 is past hour 0 (and its hour of delay), subtask 1 is not.
    a.process_watermark(HOUR + 1, &mut out).unwrap();
    b.process_watermark(HOUR / 2, &mut out).unwrap();
    barrier(&mut a, &mut b, 1);
    a.checkpoint_complete(CheckpointId(1)).unwrap();
    b.checkpoint_complete(CheckpointId(1)).unwrap();
    assert!(dir.path().join("dt=1970-01-01/hour=00/part-out-0-").parent().unwrap().exists());
    assert!(!success(0), "subtask 1's watermark has not passed hour 0 yet");
    b.process_watermark(HOUR + 1, &mut out).unwrap();
    barrier(&mut a, &mut b, 2);
    a.checkpoint_complete(CheckpointId(2)).unwrap();
    assert!(success(0), "both watermarks passed hour 0 plus its delay");
    assert!(!success(1), "hour 1 is not over");
    // At the end of input, the last subtask to end marks what is left.
    b.checkpoint_complete(CheckpointId(2)).unwrap();
    a.finish(&mut out).unwrap();
    assert!(!success(1), "subtask 1 has not ended");
    // A finished subtask still takes part in checkpoints; it stays ended.
    a.snapshot_state(&mut StateWriter::new("out", CheckpointId(3), true)).unwrap();
    b.finish(&mut out).unwrap();
    assert!(success(1));
    // The last marker takes its directory with it.
    let markers = std::fs::read_dir(dir.path().join(".weir-commit-out")).map_or(0, |d| d.count());
    assert_eq!(markers, 0, "markers removed");
}

#[test]
fn by_processing_time_a_partition_is_marked_when_its_parts_commit() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"path": dir.path().to_str().unwrap(), "partition_by": ["page"],
        "partition_commit": {"success_file": "_DONE"}});
    let mut out = Collector::default();
    let mut a = sink_of(config, true, 0, 1);
    a.process_batch(0, rows(0, 4), &mut out).unwrap();
    a.snapshot_state(&mut StateWriter::new("out", CheckpointId(1), true)).unwrap();
    assert!(!dir.path().join("page=odd/_DONE").exists(), "not before the checkpoint completes");
    a.checkpoint_complete(CheckpointId(1)).unwrap();
    assert!(dir.path().join("page=odd/_DONE").exists() && dir.path().join("page=even/_DONE").exists());
    // The success file does not count as a part.
    assert_eq!(files(dir.path()), ((0..4).collect(), 0));
}
