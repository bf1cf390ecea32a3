//! Multi-process tests: a real job manager and task managers on loopback,
//! driven through the `weir` CLI.

use std::collections::BTreeSet;
use std::time::Duration;

use weir_tests::{bin, committed, job_file, Cluster};

const LONG: Duration = Duration::from_secs(120);

/// W2 at parallelism 4 over two task managers: the result count is the
/// specification's, and subtasks ran on both task managers (so rows crossed
/// the network on the hash exchange).
#[test]
fn w2_at_parallelism_4_spans_two_task_managers_with_the_exact_result() -> anyhow::Result<()> {
    let cluster = Cluster::start(2, 2, "5s")?;
    let events: u64 = 1_234_567;
    let job =
        cluster.write("w2.yaml", &job_file("w2-tumble.yaml", &[("events: 20000000", &format!("events: {events}"))]));
    let id = cluster.submit(&job, &["--parallelism", "4"])?;
    let status = cluster.wait_state(&id, &["FINISHED", "FAILED", "CANCELED"], LONG)?;
    assert_eq!(status["state"], "FINISHED", "{status:#}\n{}", cluster.logs());
    let expected = (events / 100_000) * 10_000 + (events % 100_000).min(10_000);
    assert_eq!(status["sink_records"], expected, "{status:#}");
    let tasks = status["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 8, "two chains of four subtasks: {status:#}");
    let tms: BTreeSet<&str> = tasks.iter().map(|t| t["task_manager"].as_str().unwrap()).collect();
    assert_eq!(tms, BTreeSet::from(["tm-a", "tm-b"]));
    let window_in: u64 =
        tasks.iter().filter(|t| t["vertex"] == "tumble -> sink").map(|t| t["records_in"].as_u64().unwrap()).sum();
    assert_eq!(window_in, events, "every event reaches exactly one window subtask");
    Ok(())
}

/// An unbounded, rate-limited job that runs until stopped.
fn unbounded_job() -> String {
    job_file("w2-tumble.yaml", &[("events: 20000000", "rate: 20000"), ("name: w2-tumble", "name: endless")])
}

#[test]
fn a_killed_task_manager_fails_its_job_with_the_reason() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(2, 2, "2s")?;
    let job = cluster.write("endless.yaml", &unbounded_job());
    let id = cluster.submit(&job, &["--parallelism", "4"])?;
    weir_tests::wait_until("every task to run", LONG, || {
        let s = cluster.weir_json(&["status", &id])?;
        let tasks = s["tasks"].as_array().cloned().unwrap_or_default();
        Ok((!tasks.is_empty() && tasks.iter().all(|t| t["state"] == "RUNNING")).then_some(()))
    })?;
    cluster.taskmanager("tm-b").kill9();
    let status = cluster.wait_state(&id, &["FAILED"], Duration::from_secs(30))?;
    let failure = status["failure"].as_str().unwrap_or("");
    assert!(failure.contains("task manager tm-b") && failure.contains("lost"), "{failure}\n{}", cluster.logs());
    // The surviving task manager got its slots back.
    weir_tests::wait_until("tm-a to be free and tm-b gone", LONG, || {
        let o = cluster.weir_json(&["taskmanagers"])?;
        let tms = o["task_managers"].as_array().cloned().unwrap_or_default();
        Ok((tms.len() == 1 && tms[0]["id"] == "tm-a" && tms[0]["slots_free"] == 2).then_some(()))
    })?;
    Ok(())
}

#[test]
fn cancel_stops_a_running_job() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, 2, "5s")?;
    let job = cluster.write("endless.yaml", &unbounded_job());
    let id = cluster.submit(&job, &[])?;
    cluster.wait_state(&id, &["RUNNING"], LONG)?;
    let r = cluster.weir_json(&["cancel", &id])?;
    assert!(r["state"] == "CANCELLING" || r["state"] == "CANCELED", "{r}");
    let s = cluster.wait_state(&id, &["CANCELED"], LONG)?;
    assert!(s["tasks"].as_array().unwrap().iter().all(|t| t["state"] == "CANCELED"), "{s:#}");
    let out = cluster.weir(&["cancel", &id])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already ended"));
    Ok(())
}

/// Submits `text` and returns the CLI's stderr; the submission must fail and
/// leave no job behind.
fn rejected(cluster: &Cluster, text: &str) -> anyhow::Result<String> {
    let job = cluster.write("bad.yaml", text);
    let out = cluster.weir(&["run", job.to_str().unwrap()])?;
    assert!(!out.status.success(), "a bad job was accepted: {}", String::from_utf8_lossy(&out.stdout));
    let jobs = cluster.weir_json(&["list"])?;
    assert_eq!(jobs.as_array().map(|a| a.len()), Some(0), "nothing may be scheduled: {jobs}");
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn invalid_jobs_are_rejected_at_submit_with_precise_messages() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, 1, "5s")?;

    // Malformed YAML: an unclosed flow mapping, reported at the line where parsing fails.
    let err =
        rejected(&cluster, &job_file("w1-passthrough.yaml", &[("{from: gen, to: price}", "{from: gen, to: price")]))?;
    assert!(err.contains("bad.yaml: line 23: invalid job file"), "{err}");

    let err = rejected(&cluster, &job_file("w1-passthrough.yaml", &[("kind: filter", "kind: fliter")]))?;
    assert!(err.contains("job rejected"), "{err}");
    assert!(err.contains("even-auctions at line 15, field `kind`: unknown operator kind `fliter`"), "{err}");

    let err = rejected(&cluster, &job_file("w1-passthrough.yaml", &[("auction % 2 = 0", "channel + 1 > 0")]))?;
    assert!(err.contains("even-auctions at line 15, field `config.predicate`"), "{err}");
    assert!(err.contains("channel + 1 > 0"), "{err}");

    let err = rejected(&cluster, &job_file("w1-passthrough.yaml", &[("price * 908 / 1000", "price * channel")]))?;
    assert!(err.contains("price at line 10, field `config.columns[0].expr`"), "{err}");
    assert!(err.contains("Int64 * Utf8"), "{err}");
    Ok(())
}

#[test]
fn processes_shut_down_cleanly_on_sigterm() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(1, 1, "5s")?;
    let tm = cluster.taskmanager("tm-a");
    tm.signal(15);
    assert!(tm.wait_exit(Duration::from_secs(20))?.success(), "{}", tm.log());
    cluster.jobmanager.signal(15);
    let status = cluster.jobmanager.wait_exit(Duration::from_secs(20))?;
    assert!(status.success(), "{}", cluster.jobmanager.log());
    Ok(())
}

/// `weir local` runs the stream–table join example end to end.
#[test]
fn local_mode_runs_the_enrichment_join() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out_dir = dir.path().join("out");
    let text = job_file("enrich.yaml", &[("/tmp/weir-enrich-events", out_dir.to_str().unwrap())]);
    let job = dir.path().join("enrich.yaml");
    std::fs::write(&job, text)?;
    let out =
        std::process::Command::new(bin("weir")).args(["local", job.to_str().unwrap(), "--output", "json"]).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(status["state"], "FINISHED");
    let mut events = std::collections::BTreeMap::<String, u64>::new();
    for part in std::fs::read_dir(&out_dir)? {
        for line in std::fs::read_to_string(part?.path())?.lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            *events.entry(v["display_name"].as_str().unwrap().to_string()).or_default() +=
                v["events"].as_u64().unwrap();
        }
    }
    // 400000 events, channel = i % 4; the table's update renamed facebook.
    let want: std::collections::BTreeMap<String, u64> =
        ["Apple", "Baidu", "Facebook", "Google"].iter().map(|n| (n.to_string(), 100_000)).collect();
    assert_eq!(events, want);
    Ok(())
}

/// Two generators on two task managers feed one keyed window: the union of
/// their streams, across the network, counted whole per channel once both
/// inputs' event time passed the window.
#[test]
fn a_union_of_two_sources_across_task_managers_counts_every_row() -> anyhow::Result<()> {
    // One slot each: the job's two slots are on different task managers.
    let cluster = Cluster::start(2, 1, "5s")?;
    let out = cluster.dir.path().join("union-out");
    let job = cluster.write(
        "union.yaml",
        &format!(
            "name: union
operators:
  - {{uid: eu, kind: datagen, parallelism: 2, config: {{events: 40000, batch_size: 500}}}}
  - {{uid: us, kind: datagen, parallelism: 1, config: {{events: 25000, batch_size: 700}}}}
  - {{uid: eu-time, kind: watermark, parallelism: 2, config: {{timestamp_column: event_time_ms}}}}
  - {{uid: us-time, kind: watermark, parallelism: 1, config: {{timestamp_column: event_time_ms}}}}
  - uid: per-channel
    kind: window
    parallelism: 2
    config:
      key: [channel]
      timestamp_column: event_time_ms
      window: {{type: tumbling, size: 1h}}
      aggregates: [{{fn: count, as: n}}]
  - {{uid: out, kind: jsonl_file, parallelism: 2, config: {{path: {out}}}}}
edges:
  - {{from: eu, to: eu-time}}
  - {{from: us, to: us-time}}
  - {{from: eu-time, to: per-channel, partition: hash, key: [channel]}}
  - {{from: us-time, to: per-channel, partition: hash, key: [channel]}}
  - {{from: per-channel, to: out}}
",
            out = out.display()
        ),
    );
    let id = cluster.submit(&job, &[])?;
    let end = cluster.wait_state(&id, &["FINISHED", "FAILED"], LONG)?;
    assert_eq!(end["state"], "FINISHED", "{end:#}");
    let tms: BTreeSet<&str> =
        end["tasks"].as_array().unwrap().iter().map(|t| t["task_manager"].as_str().unwrap()).collect();
    assert_eq!(tms.len(), 2, "{end:#}");
    let rows: Vec<serde_json::Value> =
        committed(&out).iter().map(|l| serde_json::from_str(l)).collect::<Result<_, _>>()?;
    assert_eq!(rows.len(), 4, "one window per channel: {rows:?}");
    let total: i64 = rows.iter().map(|r| r["n"].as_i64().unwrap()).sum();
    assert_eq!(total, 65_000, "every row of both sources: {rows:?}");
    Ok(())
}
