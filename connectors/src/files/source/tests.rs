//! Unit tests of `file_source`.

use std::path::Path;

use super::*;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use weir_runtime::channel::StreamElement;
use weir_runtime::state::CheckpointId;

fn source(dir: &Path, batch: usize, subtask: u32, parallelism: u32) -> Box<dyn SourceOperator> {
    let config = serde_json::json!({"path": dir, "schema": [{"name": "n", "type": "int64"}], "batch_size": batch});
    create(config, subtask, parallelism)
}

fn create(config: serde_json::Value, subtask: u32, parallelism: u32) -> Box<dyn SourceOperator> {
    let ctx = PlanContext {
        uid: "files",
        line: 0,
        config: &config,
        inputs: &[],
        input_edges: &[],
        parallelism,
        checkpoint: None,
    };
    match FileSourceFactory.create(&ctx, SubtaskInfo { index: subtask, parallelism, max_parallelism: 128 }).unwrap() {
        Instance::Source(s) => s,
        Instance::Operator(_) => unreachable!(),
    }
}

fn numbers(out: &mut Collector) -> Vec<i64> {
    out.drain()
        .filter_map(|e| match e {
            StreamElement::Batch(b) => Some(b),
            _ => None,
        })
        .flat_map(|b: RecordBatch| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

#[test]
fn files_are_read_whole_once_and_a_restore_resumes_mid_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dt=1")).unwrap();
    let write = |name: &str, from: i64, to: i64| {
        let text: String = (from..to).map(|n| format!("{{\"n\":{n}}}\n\n")).collect();
        std::fs::write(dir.path().join(name), text).unwrap();
    };
    write("a.json", 0, 10);
    write("dt=1/b.json", 10, 25);
    write(".part-c.inprogress", 100, 110);
    write("_SUCCESS", 200, 201);
    let mut s = source(dir.path(), 4, 0, 1);
    let mut out = Collector::default();
    assert_eq!(s.poll(&mut out).unwrap(), SourceStatus::Emitted);
    let mut seen = numbers(&mut out);
    assert_eq!(seen, [0, 1], "four lines, two of them blank");
    let mut w = StateWriter::new("files", CheckpointId(1), true);
    s.snapshot_state(&mut w).unwrap();
    let entries = w.into_entries();
    let mut restored = source(dir.path(), 4, 0, 1);
    restored.restore_state(&StateReader::new("files", &entries)).unwrap();
    while restored.poll(&mut out).unwrap() != SourceStatus::Finished {}
    seen.extend(numbers(&mut out));
    assert_eq!(seen, (0..25).collect::<Vec<_>>(), "every line once, hidden files skipped");
    // Two subtasks share the files.
    let (mut one, mut two) = (source(dir.path(), 100, 0, 2), source(dir.path(), 100, 1, 2));
    while one.poll(&mut out).unwrap() != SourceStatus::Finished {}
    assert_eq!(numbers(&mut out), (0..10).collect::<Vec<_>>());
    while two.poll(&mut out).unwrap() != SourceStatus::Finished {}
    assert_eq!(numbers(&mut out), (10..25).collect::<Vec<_>>());
}

#[test]
fn a_bad_line_fails_naming_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.json"), "{\"n\":1}\n{\"n\":\"two\"}\n").unwrap();
    let mut s = source(dir.path(), 10, 0, 1);
    let e = s.poll(&mut Collector::default()).unwrap_err().to_string();
    assert!(e.contains("a.json: line 2 does not decode"), "{e}");
}

fn drain(s: &mut Box<dyn SourceOperator>, out: &mut Collector) {
    while s.poll(out).unwrap() != SourceStatus::Finished {}
}

fn snapshot(s: &mut Box<dyn SourceOperator>) -> Vec<weir_runtime::state::StateEntry> {
    let mut w = StateWriter::new("files", CheckpointId(1), true);
    s.snapshot_state(&mut w).unwrap();
    w.into_entries()
}

#[test]
fn csv_files_read_with_or_without_a_header_and_resume_mid_file() {
    let dir = tempfile::tempdir().unwrap();
    let rows: String = (0..7).map(|n| format!("{n};name {n};2026-03-01 08:00:0{n}.125\n")).collect();
    std::fs::write(dir.path().join("plain.csv"), &rows).unwrap();
    let schema = serde_json::json!([
        {"name": "n", "type": "int64"},
        {"name": "s", "type": "string"},
        {"name": "ts", "type": "timestamp", "nullable": true}
    ]);
    let plain = dir.path().join("plain.csv");
    let config = serde_json::json!({"path": plain, "format": "csv", "csv": {"header": false, "delimiter": ";"},
        "schema": schema, "batch_size": 3});
    let mut s = create(config.clone(), 0, 1);
    let mut out = Collector::default();
    assert_eq!(s.poll(&mut out).unwrap(), SourceStatus::Emitted);
    let mut seen = numbers(&mut out);
    assert_eq!(seen, [0, 1, 2]);
    let entries = snapshot(&mut s);
    let mut restored = create(config, 0, 1);
    restored.restore_state(&StateReader::new("files", &entries)).unwrap();
    drain(&mut restored, &mut out);
    let batches: Vec<RecordBatch> = out
        .drain()
        .filter_map(|e| match e {
            StreamElement::Batch(b) => Some(b),
            _ => None,
        })
        .collect();
    seen.extend(batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()));
    assert_eq!(seen, (0..7).collect::<Vec<_>>(), "a single file, every row once");
    let last = batches.last().unwrap();
    assert_eq!(last.column(1).as_string::<i32>().value(last.num_rows() - 1), "name 6");
    let ts = last.column(2).as_primitive::<arrow::datatypes::TimestampMillisecondType>();
    assert_eq!(ts.value(last.num_rows() - 1), 1_772_352_006_125, "Flink's timestamp text");

    // With a header line, and a last line without its newline.
    std::fs::write(dir.path().join("headed.csv"), "n,s,ts\n1,a,\n2,b,2026-03-01 08:00:00").unwrap();
    let config = serde_json::json!({"path": dir.path().join("headed.csv"), "format": "csv", "schema": schema});
    let mut s = create(config, 0, 1);
    drain(&mut s, &mut out);
    assert_eq!(numbers(&mut out), [1, 2]);

    // A bad field names its line.
    std::fs::write(dir.path().join("bad.csv"), "n,s,ts\n1,a,\nx,b,\n").unwrap();
    let config = serde_json::json!({"path": dir.path().join("bad.csv"), "format": "csv", "schema": schema});
    let e = create(config, 0, 1).poll(&mut out).unwrap_err().to_string();
    assert!(e.contains("bad.csv: line 3 does not decode"), "{e}");
}

#[test]
fn parquet_files_read_by_column_name_and_resume_after_the_rows_read() {
    use arrow::array::{Int32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let dir = tempfile::tempdir().unwrap();
    // The file has an extra column, and `n` as int32: read by name, cast.
    let schema = Arc::new(Schema::new(vec![
        Field::new("extra", DataType::Utf8, false),
        Field::new("n", DataType::Int32, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values((0..10).map(|n| format!("x{n}")))),
            Arc::new(Int32Array::from_iter_values(0..10)),
        ],
    )
    .unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(Vec::new(), schema, None).unwrap();
    w.write(&batch).unwrap();
    std::fs::write(dir.path().join("part-0.parquet"), w.into_inner().unwrap()).unwrap();
    let config = serde_json::json!({"path": format!("file://{}", dir.path().display()), "format": "parquet",
        "schema": [{"name": "n", "type": "int64"}], "batch_size": 4});
    let mut s = create(config.clone(), 0, 1);
    let mut out = Collector::default();
    s.poll(&mut out).unwrap();
    let mut seen = numbers(&mut out);
    assert_eq!(seen, [0, 1, 2, 3]);
    let entries = snapshot(&mut s);
    let mut restored = create(config, 0, 1);
    restored.restore_state(&StateReader::new("files", &entries)).unwrap();
    drain(&mut restored, &mut out);
    seen.extend(numbers(&mut out));
    assert_eq!(seen, (0..10).collect::<Vec<_>>());

    // A column the file lacks is an error naming it.
    let config = serde_json::json!({"path": dir.path(), "format": "parquet",
        "schema": [{"name": "m", "type": "int64"}]});
    let e = create(config, 0, 1).poll(&mut out).unwrap_err().to_string();
    assert!(e.contains("no column `m` in the file"), "{e}");
}

#[test]
fn a_missing_path_and_an_empty_directory_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Collector::default();
    let e = source(&dir.path().join("nowhere"), 10, 0, 1).poll(&mut out).unwrap_err().to_string();
    assert!(e.contains("nowhere"), "{e}");
    let e = source(dir.path(), 10, 0, 1).poll(&mut out).unwrap_err().to_string();
    assert!(e.contains("no files to read"), "{e}");
}

#[test]
fn partition_columns_are_read_from_the_directories_the_sink_names() {
    let dir = tempfile::tempdir().unwrap();
    let leaf = dir.path().join("dt=2026-03-01").join("page=a%2Fb");
    std::fs::create_dir_all(&leaf).unwrap();
    std::fs::write(leaf.join("part-0.jsonl"), "{\"n\":1}\n{\"n\":2}\n").unwrap();
    let null = dir.path().join("dt=2026-03-02").join("page=__HIVE_DEFAULT_PARTITION__");
    std::fs::create_dir_all(&null).unwrap();
    std::fs::write(null.join("part-0.jsonl"), "{\"n\":3}\n").unwrap();
    let config = serde_json::json!({"path": dir.path(), "partition_by": ["dt", "page"], "schema": [
        {"name": "page", "type": "string", "nullable": true},
        {"name": "n", "type": "int64"},
        {"name": "dt", "type": "string"}
    ]});
    let mut s = create(config, 0, 1);
    let mut out = Collector::default();
    drain(&mut s, &mut out);
    let rows: Vec<(Option<String>, i64, String)> = out
        .drain()
        .filter_map(|e| match e {
            StreamElement::Batch(b) => Some(b),
            _ => None,
        })
        .flat_map(|b| {
            (0..b.num_rows())
                .map(|i| {
                    let page = b.column(0).as_string::<i32>();
                    (
                        page.is_valid(i).then(|| page.value(i).to_string()),
                        b.column(1).as_primitive::<Int64Type>().value(i),
                        b.column(2).as_string::<i32>().value(i).to_string(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let day = |d: &str| d.to_string();
    assert_eq!(
        rows,
        [
            (Some("a/b".into()), 1, day("2026-03-01")),
            (Some("a/b".into()), 2, day("2026-03-01")),
            (None, 3, day("2026-03-02"))
        ]
    );
}
