//! End-to-end tests of `elasticsearch_sink` against a real OpenSearch node
//! (Elasticsearch's REST API) on loopback: one document per window through
//! a task-manager `kill -9` and through a restart of the node, daily indexes
//! from a date pattern, deletes from a changelog, refused documents in a
//! dead-letter index, Flink's SQL connector, and clear errors for settings
//! that cannot work.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use weir_tests::search::{shared, SearchNode};
use weir_tests::{bin, http_json, unique, wait_until, Cluster};

const LONG: Duration = Duration::from_secs(180);

/// 200,000 generated bids: event `i` at `i / 10` ms on channel `i % 4`, so
/// 20 one-second windows of 2,500 bids per channel, all on 2023-11-14.
const EVENTS: u64 = 200_000;
const WINDOWS: usize = 20;
const PER_WINDOW: u64 = 2_500;

fn bids_job(url: &str, prefix: &str, rate: u64) -> String {
    format!(
        r#"name: bids-to-opensearch
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
    kind: elasticsearch_sink
    config:
      hosts: ["{url}"]
      index: "{prefix}-{{window_start|yyyy-MM-dd}}"
      key: [channel, window_start]
      bulk_flush_max_actions: 10
      backoff: {{max_retries: 10, delay: 200ms}}
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

/// (channel, window_start) -> bids, checking that each id is made of the key.
fn bid_counts(docs: &BTreeMap<String, Value>) -> BTreeMap<(String, u64), u64> {
    let mut out = BTreeMap::new();
    for (id, d) in docs {
        let (channel, start) = (d["channel"].as_str().unwrap().to_string(), d["window_start"].as_u64().unwrap());
        assert_eq!(id, &format!("{channel}_{start}"), "the id is the key joined by _");
        out.insert((channel, start), d["bids"].as_u64().unwrap());
    }
    out
}

fn assert_exact(docs: &BTreeMap<String, Value>, what: &str) {
    let counts = bid_counts(docs);
    let wrong: Vec<_> = counts.iter().filter(|(_, n)| **n != PER_WINDOW).collect();
    assert!(wrong.is_empty(), "{what}: windows with a wrong count: {wrong:?}");
    assert_eq!(counts.len(), WINDOWS * 4, "{what}: {} of {} windows indexed", counts.len(), WINDOWS * 4);
}

#[test]
fn one_document_per_window_in_a_daily_index_through_a_taskmanager_kill() -> anyhow::Result<()> {
    let node = shared();
    let prefix = unique("kill", '-');
    // Event time 1,700,000,000,000 ms is 2023-11-14.
    let index = format!("{prefix}-2023-11-14");
    let mut cluster = Cluster::start(2, 2, "1s")?;
    let job = cluster.submit(&cluster.write("bids.yaml", &bids_job(&node.url(), &prefix, 10_000)), &[])?;
    wait_until("some windows indexed", LONG, || Ok((node.documents(&index)?.len() >= 8).then_some(())))
        .with_context(|| cluster.logs())?;
    cluster.taskmanager("tm-b").kill9();
    let status = cluster.wait_state(&job, &["FINISHED", "FAILED"], LONG).with_context(|| cluster.logs())?;
    assert_eq!(status["state"], "FINISHED", "{status:#}\n{}", cluster.logs());
    assert!(status["restarts"].as_u64() >= Some(1), "the kill restarted nothing: {status:#}");
    let docs = node.documents(&index)?;
    assert_exact(&docs, "after a task manager's kill -9");
    // The count agrees: no document besides those.
    let (_, count) = http_json("GET", &format!("{}/{index}/_count", node.url()), None)?;
    assert_eq!(count["count"], (WINDOWS * 4) as u64, "{count}");
    Ok(())
}

#[test]
fn a_node_restart_mid_run_loses_and_repeats_nothing() -> anyhow::Result<()> {
    // A node of its own: this test kills it.
    let mut node = SearchNode::start()?;
    let prefix = unique("restart", '-');
    let index = format!("{prefix}-2023-11-14");
    let cluster = Cluster::start(2, 2, "1s")?;
    let job = cluster.submit(&cluster.write("bids.yaml", &bids_job(&node.url(), &prefix, 10_000)), &[])?;
    wait_until("some windows indexed", LONG, || Ok((node.documents(&index)?.len() >= 8).then_some(())))
        .with_context(|| cluster.logs())?;
    node.restart()?;
    let status = cluster.wait_state(&job, &["FINISHED", "FAILED"], LONG).with_context(|| cluster.logs())?;
    assert_eq!(status["state"], "FINISHED", "{status:#}\n{}\n{}", cluster.logs(), node.log());
    assert_exact(&node.documents(&index)?, "after a node restart");
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

fn changes_job(url: &str, index: &str, extra: &str) -> String {
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
        - {{name: code, type: string}}
      rows:
        - {{op: "+I", id: 1, name: ada, code: "7"}}
        - {{op: "+I", id: 2, name: bob, code: "8"}}
        - {{op: "+I", id: 3, name: cy}}
        - {{op: "+I", id: 4, name: dee, code: "not a number"}}
        - {{op: "-U", id: 1, name: ada, code: "7"}}
        - {{op: "+U", id: 1, name: ada, code: "9"}}
        - {{op: "-D", id: 2, name: bob, code: "8"}}
  - uid: docs
    kind: elasticsearch_sink
    config:
      hosts: ["{url}"]
      index: {index}
      key: [id]
      op_column: op
{extra}edges:
  - {{from: changes, to: docs}}
"#
    )
}

#[test]
fn deletes_apply_and_refused_documents_go_to_the_dead_letter_index() -> anyhow::Result<()> {
    let node = shared();
    let (index, dead) = (unique("people", '-'), unique("people-dlq", '-'));
    // `code` is a number: "not a number" cannot be indexed.
    let mapping = json!({"mappings": {"properties": {"code": {"type": "long"}, "name": {"type": "keyword"}}}});
    let (status, v) = http_json(
        "PUT",
        &format!("{}/{index}", node.url()),
        Some(("application/json", serde_json::to_vec(&mapping)?)),
    )?;
    assert_eq!(status, 200, "{v}");
    let dir = tempfile::tempdir()?;
    // Without a dead-letter index the refused document fails the job, naming it.
    let (ok, out) = local(dir.path(), "fail.yaml", &changes_job(&node.url(), &index, ""))?;
    assert!(
        !ok && out.contains("refused the document with _id 4") && out.contains("mapper_parsing_exception"),
        "{out}"
    );
    let with_dlq = changes_job(&node.url(), &index, &format!("      dead_letter_index: {dead}\n"));
    let (ok, out) = local(dir.path(), "dlq.yaml", &with_dlq)?;
    assert!(ok, "{out}");
    let docs = node.documents(&index)?;
    let got: Vec<(&str, &Value)> = docs.iter().map(|(id, d)| (id.as_str(), &d["code"])).collect();
    assert_eq!(got, vec![("1", &json!("9")), ("3", &Value::Null)], "{docs:?}");
    let letters = node.documents(&dead)?;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = letters.values().next().unwrap();
    assert_eq!((letter["index"].as_str(), letter["id"].as_str()), (Some(index.as_str()), Some("4")), "{letter}");
    assert!(letter["error"].as_str().unwrap().starts_with("mapper_parsing_exception"), "{letter}");
    assert!(letter["document"].as_str().unwrap().contains("not a number"), "{letter}");
    Ok(())
}

#[test]
fn settings_that_cannot_work_are_clear_errors_before_any_record() -> anyhow::Result<()> {
    let node = shared();
    let index = unique("bad", '-');
    let dir = tempfile::tempdir()?;
    let closed = format!("http://127.0.0.1:{}", weir_tests::free_port());
    let fast = "      connect_timeout: 500ms\n      backoff: {strategy: disabled}\n";
    let cases: [(String, &str); 4] = [
        (changes_job(&closed, &index, fast), "no node answered"),
        (changes_job("ftp://127.0.0.1:1", &index, ""), "is not an http:// or https:// URL"),
        (changes_job(&node.url(), "People", ""), "not a valid index name"),
        (
            changes_job(&node.url(), &index, "").replace("key: [id]", "key: [nope]"),
            "key column `nope` is not a written column",
        ),
    ];
    for (job, expected) in cases {
        let (ok, out) = local(dir.path(), "bad.yaml", &job)?;
        assert!(!ok && out.contains(expected), "expected `{expected}` in:\n{out}");
    }
    assert!(node.documents(&index)?.is_empty(), "documents were written");
    Ok(())
}

/// Flink's `elasticsearch-7` connector in a SQL script: the primary key
/// makes the ids, window bounds land as dates.
#[test]
fn the_sql_connector_indexes_windows_by_their_key() -> anyhow::Result<()> {
    let node = shared();
    let index = unique("sql", '-');
    let script = format!(
        r#"CREATE TABLE bids (
  channel STRING,
  event_time_ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(event_time_ms, 3),
  WATERMARK FOR ts AS ts
) WITH ('connector' = 'datagen', 'number-of-rows' = '{EVENTS}');

CREATE TABLE bid_docs (
  channel STRING,
  window_start TIMESTAMP(3),
  bids BIGINT,
  PRIMARY KEY (channel, window_start) NOT ENFORCED
) WITH (
  'connector' = 'elasticsearch-7',
  'hosts' = '{url}',
  'index' = '{index}',
  'sink.bulk-flush.max-actions' = '10'
);

INSERT INTO bid_docs
SELECT channel, window_start, COUNT(*)
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY channel, window_start, window_end;
"#,
        url = node.url()
    );
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("docs.sql");
    std::fs::write(&file, script)?;
    let out = Command::new(bin("weir")).arg("local").arg(&file).output()?;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let docs = node.documents(&index)?;
    assert_eq!(docs.len(), WINDOWS * 4);
    assert!(docs.values().all(|d| d["bids"] == PER_WINDOW), "{docs:?}");
    // Event 0 is at 1,700,000,000,000 ms: 2023-11-14 22:13:20 UTC, mapped as a date.
    // Ids join the key's text forms, as Flink's connector does.
    assert!(docs.keys().all(|k| k.contains("_2023-11-14T22:13:")), "{:?}", docs.keys().take(3).collect::<Vec<_>>());
    let (_, mapping) = http_json("GET", &format!("{}/{index}/_mapping", node.url()), None)?;
    assert_eq!(mapping[&index]["mappings"]["properties"]["window_start"]["type"], "date", "{mapping}");
    Ok(())
}
