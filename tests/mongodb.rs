//! End-to-end tests of `mongodb_sink` against a real MongoDB-compatible
//! server (FerretDB) on loopback: one document per key and window through a
//! task-manager `kill -9` and through a server restart, upserts and deletes
//! by `_id`, Flink's `mongodb` SQL connector, and clear errors for settings
//! that cannot work.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use mongodb::bson::{Bson, Document};
use weir_tests::mongo::{shared, MongoServer};
use weir_tests::{bin, unique, wait_until, Cluster};

const LONG: Duration = Duration::from_secs(180);

/// 200,000 generated bids: event `i` at `i / 10` ms on channel `i % 4`, so
/// 20 one-second windows of 2,500 bids per channel.
const EVENTS: u64 = 200_000;
const WINDOWS: usize = 20;
const PER_WINDOW: i64 = 2_500;

fn bids_job(uri: &str, database: &str, rate: u64) -> String {
    format!(
        r#"name: bids-to-mongodb
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
  - uid: docs
    kind: mongodb_sink
    config:
      uri: "{uri}"
      database: {database}
      collection: bid_counts
      key: [channel, window_start]
      buffer_flush_max_rows: 10
      max_retries: 8
      retry_interval: 250ms
edges:
  - {{from: bids, to: timestamps}}
  - {{from: timestamps, to: per-channel, partition: hash, key: [channel]}}
  - {{from: per-channel, to: docs, partition: hash, key: [channel]}}
checkpoints:
  interval: 300ms
  restart: {{strategy: fixed_delay, attempts: 5, delay: 500ms}}
"#
    )
}

/// (channel, window_start) -> bids, from each document, checking that its
/// `_id` is made of its key.
fn bid_counts(docs: &[Document]) -> anyhow::Result<BTreeMap<(String, i64), i64>> {
    let mut out = BTreeMap::new();
    for d in docs {
        let channel = d.get_str("channel")?.to_string();
        let start = d.get_i64("window_start")?;
        let id = d.get_document("_id")?;
        anyhow::ensure!(id.get_str("channel")? == channel && id.get_i64("window_start")? == start, "{d}");
        out.insert((channel, start), d.get_i64("bids")?);
    }
    Ok(out)
}

fn assert_exact(counts: &BTreeMap<(String, i64), i64>, what: &str) {
    let wrong: Vec<_> = counts.iter().filter(|(_, n)| **n != PER_WINDOW).collect();
    assert!(wrong.is_empty(), "{what}: windows with a wrong count: {wrong:?}");
    assert_eq!(counts.len(), WINDOWS * 4, "{what}: {} of {} windows written", counts.len(), WINDOWS * 4);
}

#[test]
fn one_document_per_window_through_a_taskmanager_kill() -> anyhow::Result<()> {
    let server = shared();
    let database = unique("kill", '_');
    let mut cluster = Cluster::start(2, 2, "1s")?;
    let job = cluster.submit(&cluster.write("bids.yaml", &bids_job(&server.uri(), &database, 10_000)), &[])?;
    wait_until("some windows written", LONG, || {
        Ok((server.documents(&database, "bid_counts")?.len() >= 8).then_some(()))
    })
    .with_context(|| cluster.logs())?;
    cluster.taskmanager("tm-b").kill9();
    let status = cluster.wait_state(&job, &["FINISHED", "FAILED"], LONG).with_context(|| cluster.logs())?;
    assert_eq!(status["state"], "FINISHED", "{status:#}\n{}", cluster.logs());
    assert!(status["restarts"].as_u64() >= Some(1), "the kill restarted nothing: {status:#}");
    let docs = server.documents(&database, "bid_counts")?;
    assert_eq!(docs.len(), WINDOWS * 4, "one document per channel and window");
    assert_exact(&bid_counts(&docs)?, "after a task manager's kill -9");
    Ok(())
}

#[test]
fn a_server_restart_mid_run_loses_and_repeats_nothing() -> anyhow::Result<()> {
    // A server of its own: this test kills it.
    let mut server = MongoServer::start()?;
    let database = unique("restart", '_');
    let cluster = Cluster::start(2, 2, "1s")?;
    let job = cluster.submit(&cluster.write("bids.yaml", &bids_job(&server.uri(), &database, 10_000)), &[])?;
    wait_until("some windows written", LONG, || {
        Ok((server.documents(&database, "bid_counts")?.len() >= 8).then_some(()))
    })
    .with_context(|| cluster.logs())?;
    server.restart()?;
    let status = cluster.wait_state(&job, &["FINISHED", "FAILED"], LONG).with_context(|| cluster.logs())?;
    assert_eq!(status["state"], "FINISHED", "{status:#}\n{}\n{}", cluster.logs(), server.log());
    assert_exact(&bid_counts(&server.documents(&database, "bid_counts")?)?, "after a server restart");
    Ok(())
}

/// `weir local` with `job`; returns (success, stdout + stderr).
fn local(dir: &std::path::Path, name: &str, job: &str) -> anyhow::Result<(bool, String)> {
    let file = dir.join(name);
    std::fs::write(&file, job)?;
    let out = Command::new(bin("weir")).arg("local").arg(&file).output()?;
    Ok((
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    ))
}

fn changes_job(uri: &str, database: &str, extra: &str) -> String {
    format!(
        r#"name: changes
parallelism: 1
operators:
  - uid: changes
    kind: values
    config:
      schema:
        - {{name: op, type: string}}
        - {{name: id, type: int64}}
        - {{name: name, type: string}}
        - {{name: score, type: float64}}
      rows:
        - {{op: "+I", id: 1, name: ada, score: 1.5}}
        - {{op: "+I", id: 2, name: bob, score: 2.0}}
        - {{op: "+I", id: 3, name: cy}}
        - {{op: "-U", id: 1, name: ada, score: 1.5}}
        - {{op: "+U", id: 1, name: ada, score: 9.25}}
        - {{op: "-D", id: 2, name: bob, score: 2.0}}
  - uid: docs
    kind: mongodb_sink
    config:
      uri: "{uri}"
      database: {database}
      collection: people
      key: [id]
      op_column: op
{extra}edges:
  - {{from: changes, to: docs}}
"#
    )
}

#[test]
fn documents_are_replaced_by_id_and_retracted_ones_deleted() -> anyhow::Result<()> {
    let server = shared();
    let database = unique("changes", '_');
    let dir = tempfile::tempdir()?;
    // Written in two flushes and in one: the same documents either way.
    for (run, extra) in ["      buffer_flush_max_rows: 2\n", ""].iter().enumerate() {
        let (ok, out) = local(dir.path(), "changes.yaml", &changes_job(&server.uri(), &database, extra))?;
        assert!(ok, "run {run}: {out}");
        let docs = server.documents(&database, "people")?;
        let got: Vec<(Bson, String, Bson, bool)> = docs
            .iter()
            .map(|d| {
                (
                    d.get("_id").cloned().unwrap(),
                    d.get_str("name").unwrap().into(),
                    d.get("score").cloned().unwrap(),
                    d.contains_key("op"),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Bson::Int64(1), "ada".into(), Bson::Double(9.25), false),
                (Bson::Int64(3), "cy".into(), Bson::Null, false),
            ],
            "run {run}"
        );
    }
    Ok(())
}

#[test]
fn settings_that_cannot_work_are_clear_errors_before_any_record() -> anyhow::Result<()> {
    let server = shared();
    let database = unique("bad", '_');
    let dir = tempfile::tempdir()?;
    let closed = format!("mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=500", weir_tests::free_port());
    let fast = "      connect_timeout: 500ms\n      max_retries: 0\n";
    let cases: [(String, &str); 3] = [
        (changes_job(&closed, &database, fast), "reaching mongodb://127.0.0.1:"),
        (changes_job("http://127.0.0.1:1", &database, ""), "is not a MongoDB connection string"),
        (
            changes_job(&server.uri(), &database, "").replace("key: [id]", "key: [nope]"),
            "key column `nope` is not a written column",
        ),
    ];
    for (job, expected) in cases {
        let (ok, out) = local(dir.path(), "bad.yaml", &job)?;
        assert!(!ok && out.contains(expected), "expected `{expected}` in:\n{out}");
    }
    assert!(server.documents(&database, "people")?.is_empty(), "documents were written");
    // A password never reaches the output.
    let secret = changes_job(&closed.replace("127.0.0.1", "weir:hunter2@127.0.0.1"), &database, fast);
    let (ok, out) = local(dir.path(), "secret.yaml", &secret)?;
    assert!(!ok && !out.contains("hunter2") && out.contains("weir:***@"), "{out}");
    Ok(())
}

/// Flink's `mongodb` connector in a SQL script: the primary key makes the
/// `_id`, window bounds land as BSON dates.
#[test]
fn the_sql_connector_replaces_windows_by_their_key() -> anyhow::Result<()> {
    let server = shared();
    let database = unique("sql", '_');
    let script = format!(
        r#"CREATE TABLE bids (
  channel STRING,
  event_time_ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(event_time_ms, 3),
  WATERMARK FOR ts AS ts
) WITH ('connector' = 'datagen', 'number-of-rows' = '{EVENTS}');

CREATE TABLE bid_counts (
  channel STRING,
  window_start TIMESTAMP(3),
  bids BIGINT,
  PRIMARY KEY (channel, window_start) NOT ENFORCED
) WITH (
  'connector' = 'mongodb',
  'uri' = '{uri}',
  'database' = '{database}',
  'collection' = 'bid_counts',
  'sink.buffer-flush.max-rows' = '10'
);

INSERT INTO bid_counts
SELECT channel, window_start, COUNT(*)
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY channel, window_start, window_end;
"#,
        uri = server.uri()
    );
    let dir = tempfile::tempdir()?;
    let (ok, out) = local(dir.path(), "counts.sql", &script)?;
    assert!(ok, "{out}");
    let docs = server.documents(&database, "bid_counts")?;
    assert_eq!(docs.len(), WINDOWS * 4);
    for d in &docs {
        assert_eq!(d.get_i64("bids")?, PER_WINDOW, "{d}");
        let start = d.get_datetime("window_start")?;
        // Event 0 is at 1,700,000,000,000 ms; windows are one second long.
        assert!((1_700_000_000_000..1_700_000_020_000).contains(&start.timestamp_millis()), "{d}");
        let id = d.get_document("_id")?;
        assert_eq!((id.get_str("channel")?, id.get_datetime("window_start")?), (d.get_str("channel")?, start), "{d}");
    }
    Ok(())
}
