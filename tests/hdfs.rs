//! End-to-end tests of `file_sink` on `hdfs://` against a real HDFS (Hadoop's
//! MiniDFSCluster, a NameNode and a DataNode) on loopback: Parquet parts in
//! partition directories hold every window exactly once through a restart
//! of the whole file system mid-run, and settings that cannot work (no
//! NameNode in the URI, an unreachable NameNode, a directory the user may
//! not write) are clear errors before any record. Checkpoints, savepoints and the job
//! store on HDFS are tested in `checkpoints.rs`; the web-events pipeline's
//! JSON on HDFS through a task-manager kill in `kafka.rs`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use weir_tests::dfs::{visible, Dfs};
use weir_tests::{bin, unique, wait_until, Cluster};

const LONG: Duration = Duration::from_secs(180);

/// 200,000 generated bids: event `i` at `i / 10` ms on channel `i % 4`, so
/// 20 one-second windows of 2,500 bids per channel.
const EVENTS: u64 = 200_000;
const WINDOWS: usize = 20;
const PER_WINDOW: i64 = 2_500;

/// Bids counted per channel and second into Parquet parts under `path`,
/// one directory per channel.
fn bids_job(path: &str, rate: u64) -> String {
    format!(
        r#"name: bids-to-hdfs
parallelism: 2
operators:
  - uid: bids
    kind: datagen
    config: {{events: {EVENTS}, rate: {rate}, batch_size: 500}}
  - uid: timestamps
    kind: watermark
    config: {{timestamp_column: event_time_ms, max_out_of_orderness: 0s}}
  - uid: per-channel
    kind: window
    config:
      key: [channel]
      timestamp_column: event_time_ms
      window: {{type: tumbling, size: 1s}}
      aggregates:
        - {{fn: count, as: bids}}
  - uid: parts
    kind: file_sink
    config:
      path: {path}
      format: parquet
      partition_by: [channel]
edges:
  - {{from: bids, to: timestamps}}
  - {{from: timestamps, to: per-channel, partition: hash, key: [channel]}}
  - {{from: per-channel, to: parts, partition: hash, key: [channel]}}
checkpoints:
  interval: 300ms
  restart: {{strategy: fixed_delay, attempts: 100, delay: 500ms}}
"#
    )
}

/// (channel, window_start) -> bids in the committed Parquet parts under
/// `dir`, failing on a window written twice.
fn windows(dfs: &Dfs, dir: &str) -> anyhow::Result<BTreeMap<(String, i64), i64>> {
    let mut out = BTreeMap::new();
    for (rel, bytes) in dfs.files(dir)? {
        let channel = rel.split('/').next().and_then(|d| d.strip_prefix("channel=")).context("a channel directory")?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))?
            .build()?;
        for batch in reader {
            let batch = batch?;
            let starts = batch.column_by_name("window_start").context("window_start")?;
            let starts = arrow::compute::cast(starts, &arrow::datatypes::DataType::Int64)?;
            let bids = batch.column_by_name("bids").context("bids")?.as_primitive::<Int64Type>().clone();
            let starts = starts.as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                let key = (channel.to_string(), starts.value(i));
                anyhow::ensure!(!bids.is_null(i), "a null count in {rel}");
                if let Some(old) = out.insert(key.clone(), bids.value(i)) {
                    anyhow::bail!("window {key:?} written twice ({old} and {}), the second in {rel}", bids.value(i));
                }
            }
        }
    }
    Ok(out)
}

#[test]
fn parquet_parts_on_hdfs_hold_every_window_once_through_a_restart_of_the_file_system() -> anyhow::Result<()> {
    // A file system of its own: this test kills it.
    let mut dfs = Dfs::start()?;
    let dir = unique("bids", '-');
    let cluster = Cluster::start(2, 2, "1s")?;
    let job = cluster.submit(&cluster.write("bids.yaml", &bids_job(&format!("{}/{dir}", dfs.url()), 8_000)), &[])?;
    wait_until("some windows committed", LONG, || Ok((windows(&dfs, &dir)?.len() >= 8).then_some(())))
        .with_context(|| cluster.logs())?;
    dfs.restart()?;
    let status = cluster.wait_state(&job, &["FINISHED", "FAILED"], LONG).with_context(|| cluster.logs())?;
    assert_eq!(status["state"], "FINISHED", "{status:#}\n{}\n{}", cluster.logs(), dfs.log());
    let got = windows(&dfs, &dir)?;
    let wrong: Vec<_> = got.iter().filter(|(_, n)| **n != PER_WINDOW).collect();
    assert!(wrong.is_empty(), "windows with a wrong count: {wrong:?}\n{}", cluster.logs());
    let names = dfs.list(&dir)?;
    assert_eq!(
        got.len(),
        WINDOWS * 4,
        "{} of {} windows committed: {:?}\nfiles: {names:#?}\n{}",
        got.len(),
        WINDOWS * 4,
        got.keys().collect::<Vec<_>>(),
        cluster.logs()
    );
    let leftovers: Vec<String> = dfs.list(&dir)?.into_iter().filter(|r| !visible(r)).collect();
    assert!(leftovers.is_empty(), "hidden parts left behind after the job finished: {leftovers:?}");
    Ok(())
}

#[test]
fn settings_that_cannot_work_are_clear_errors_before_any_record() -> anyhow::Result<()> {
    let dfs = weir_tests::dfs::shared();
    let scratch = tempfile::tempdir()?;
    let dir = unique("bad", '-');
    let closed = format!("hdfs://127.0.0.1:{}/{dir}", weir_tests::free_port());
    // The file system's root belongs to the user that started it; another
    // user may read it but not create a directory in it.
    let denied = format!("{}/{dir}", dfs.url());
    let cases = [
        ("hdfs:///no-namenode".to_string(), None, "hdfs://NAMENODE:PORT/PATH"),
        (closed, None, "hdfs://127.0.0.1"),
        (denied, Some("weir-stranger"), "Permission denied: user=weir-stranger"),
    ];
    for (path, user, expected) in cases {
        let file = scratch.path().join("bad.yaml");
        let job =
            bids_job(&path, 10_000).replace("{strategy: fixed_delay, attempts: 100, delay: 500ms}", "{strategy: none}");
        std::fs::write(&file, job)?;
        let mut weir = Command::new(bin("weir"));
        if let Some(user) = user {
            weir.env("HADOOP_USER_NAME", user);
        }
        let run = weir.arg("local").arg(&file).output()?;
        let out = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
        assert!(!run.status.success() && out.contains(expected), "{path}: expected `{expected}` in:\n{out}");
    }
    assert!(dfs.list(&dir)?.is_empty(), "files were written");
    Ok(())
}
