//! Health probes and Prometheus metrics of the real binaries: readiness
//! follows registration, counters move while a job runs, and checkpoint
//! metrics appear once a checkpoint completed.

use std::process::Command;
use std::time::Duration;

use weir_tests::{bin, free_ports, http_get, metric_values, spawn, wait_until};

const LONG: Duration = Duration::from_secs(60);

fn job(storage: &std::path::Path) -> String {
    format!(
        "name: metered
parallelism: 2
operators:
  - uid: gen
    kind: datagen
    config: {{events: 100000000, rate: 50000, batch_size: 500}}
  - uid: timestamps
    kind: watermark
    config: {{timestamp_column: event_time_ms, interval: 50ms}}
  - uid: tumble
    kind: window
    config:
      key: [auction]
      timestamp_column: event_time_ms
      window: {{type: tumbling, size: 10s}}
      aggregates: [{{fn: count, as: count}}]
  - uid: out
    kind: discard
edges:
  - {{from: gen, to: timestamps}}
  - {{from: timestamps, to: tumble, partition: hash, key: [auction]}}
  - {{from: tumble, to: out}}
checkpoints:
  interval: 200ms
  storage: file://{}
",
        storage.display()
    )
}

#[test]
fn probes_follow_registration_and_metrics_follow_the_job() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ports = free_ports(4);
    let (rpc, rest, jm_metrics, tm_metrics) = (ports[0], ports[1], ports[2], ports[3]);
    let (rest, jm_metrics, tm_metrics) =
        (format!("127.0.0.1:{rest}"), format!("127.0.0.1:{jm_metrics}"), format!("127.0.0.1:{tm_metrics}"));
    let url = format!("http://127.0.0.1:{rpc}");

    // A task manager without its job manager: alive, not ready.
    let _tm = spawn(
        "tm",
        Command::new(bin("weir-taskmanager"))
            .args(["--jobmanager", &url, "--slots", "4", "--id", "tm-m"])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("WEIR_TASKMANAGER_METRICS_ADDR", &tm_metrics),
        dir.path(),
    )?;
    wait_until(
        "the task manager's /healthz",
        LONG,
        || Ok((http_get(&tm_metrics, "/healthz")?.0 == 200).then_some(())),
    )?;
    assert_eq!(http_get(&tm_metrics, "/readyz")?.0, 503, "not registered yet");
    let (_, text) = http_get(&tm_metrics, "/metrics")?;
    assert_eq!(metric_values(&text, "weir_taskmanager_registered", &[]), vec![0.0], "{text}");

    let _jm = spawn(
        "jm",
        Command::new(bin("weir-jobmanager")).args([
            "--rpc-addr",
            &format!("127.0.0.1:{rpc}"),
            "--rest-addr",
            &rest,
            "--metrics-addr",
            &jm_metrics,
            "--heartbeat-interval",
            "250ms",
            "--checkpoint-storage",
            &format!("file://{}", dir.path().join("jm").display()),
        ]),
        dir.path(),
    )?;
    wait_until("the job manager's /readyz", LONG, || Ok((http_get(&rest, "/readyz")?.0 == 200).then_some(())))?;
    wait_until("the task manager's /readyz", LONG, || Ok((http_get(&tm_metrics, "/readyz")?.0 == 200).then_some(())))?;
    assert_eq!(http_get(&rest, "/nothing")?.0, 404);

    let file = dir.path().join("job.yaml");
    std::fs::write(&file, job(&dir.path().join("checkpoints")))?;
    let out =
        Command::new(bin("weir")).args(["run"]).arg(&file).args(["--jobmanager", &url, "--output", "json"]).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout)?["job_id"].as_str().unwrap().to_string();
    let job = [("job_id", id.as_str())];

    // Counters move.
    let read = |name: &str, labels: &[(&str, &str)]| -> anyhow::Result<f64> {
        let (_, text) = http_get(&tm_metrics, "/metrics")?;
        Ok(metric_values(&text, name, labels).iter().sum())
    };
    let first = wait_until("records to flow", LONG, || {
        let n = read("weir_operator_records_out_total", &[("job_id", &id), ("operator", "gen")])?;
        Ok((n > 0.0).then_some(n))
    })?;
    wait_until("the counters to move on", LONG, || {
        let n = read("weir_operator_records_out_total", &[("job_id", &id), ("operator", "gen")])?;
        Ok((n > first).then_some(()))
    })?;
    let (_, text) = http_get(&tm_metrics, "/metrics")?;
    for name in [
        "weir_task_records_in_total",
        "weir_task_records_out_total",
        "weir_task_bytes_in_total",
        "weir_task_bytes_out_total",
        "weir_task_backpressure_seconds_total",
        "weir_operator_records_in_total",
        "weir_operator_bytes_in_total",
        "weir_operator_bytes_out_total",
    ] {
        assert!(
            metric_values(&text, name, &job).iter().sum::<f64>() > 0.0 || name.contains("backpressure"),
            "{name}\n{text}"
        );
        assert!(!metric_values(&text, name, &job).is_empty(), "{name} is exported\n{text}");
    }
    wait_until("a watermark lag", LONG, || {
        let (_, text) = http_get(&tm_metrics, "/metrics")?;
        Ok((!metric_values(&text, "weir_task_watermark_lag_seconds", &job).is_empty()).then_some(()))
    })?;

    // Checkpoint metrics once a checkpoint completed.
    wait_until("a completed checkpoint in the job manager's metrics", LONG, || {
        let (_, text) = http_get(&jm_metrics, "/metrics")?;
        let done = metric_values(&text, "weir_checkpoints_completed_total", &job);
        Ok((done.first().is_some_and(|n| *n >= 1.0)).then_some(()))
    })?;
    let (_, text) = http_get(&jm_metrics, "/metrics")?;
    for name in [
        "weir_checkpoint_last_duration_seconds",
        "weir_checkpoint_last_size_bytes",
        "weir_checkpoint_last_state_bytes",
        "weir_checkpoint_last_alignment_seconds",
        "weir_job_restarts_total",
    ] {
        assert_eq!(metric_values(&text, name, &job).len(), 1, "{name}\n{text}");
    }
    assert_eq!(metric_values(&text, "weir_jobs", &[("state", "RUNNING")]), vec![1.0], "{text}");
    assert_eq!(metric_values(&text, "weir_jobmanager_task_managers", &[]), vec![1.0], "{text}");
    wait_until("state sizes on the task manager", LONG, || {
        Ok((read("weir_task_state_bytes", &[("job_id", &id)])? > 0.0).then_some(()))
    })?;
    let (status, jobs) = http_get(&rest, "/v1/jobs")?;
    assert_eq!(status, 200);
    assert!(jobs.contains(&id) && jobs.contains("RUNNING"), "{jobs}");
    Ok(())
}
