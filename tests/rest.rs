//! The job manager's REST API over real HTTP, against real job manager and
//! task manager processes: submit, watch a job run and checkpoint, take a
//! savepoint, stop with one, cancel; every error status with its message;
//! and that a rejected request schedules nothing.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use weir_tests::{bin, http, http_json, wait_until, Cluster};

const LONG: Duration = Duration::from_secs(120);

/// An unbounded, rate-limited, checkpointed job: generator, watermarks, a
/// keyed window, a sink that drops rows.
fn job(name: &str, storage: &Path) -> String {
    format!(
        "name: {name}
parallelism: 2
operators:
  - uid: gen
    kind: datagen
    config: {{rate: 20000, batch_size: 500}}
  - uid: timestamps
    kind: watermark
    config: {{timestamp_column: event_time_ms, interval: 50ms}}
  - uid: per-auction
    kind: window
    config:
      key: [auction]
      timestamp_column: event_time_ms
      window: {{type: tumbling, size: 1s}}
      aggregates: [{{fn: count, as: bids}}]
  - uid: drop
    kind: discard
edges:
  - {{from: gen, to: timestamps}}
  - {{from: timestamps, to: per-auction, partition: hash, key: [auction]}}
  - {{from: per-auction, to: drop}}
checkpoints:
  interval: 300ms
  storage: file://{storage}
",
        storage = storage.display()
    )
}

fn url(c: &Cluster, path: &str) -> String {
    format!("http://{}{path}", c.rest)
}

fn get(c: &Cluster, path: &str) -> anyhow::Result<(u16, Value)> {
    http_json("GET", &url(c, path), None)
}

fn post(c: &Cluster, path: &str, content_type: &str, body: impl Into<Vec<u8>>) -> anyhow::Result<(u16, Value)> {
    http_json("POST", &url(c, path), Some((content_type, body.into())))
}

fn submit(c: &Cluster, yaml: &str) -> anyhow::Result<String> {
    let (status, body) = post(c, "/v1/jobs", "application/yaml", yaml)?;
    assert_eq!(status, 202, "{body}");
    Ok(body["id"].as_str().expect("an id").to_string())
}

fn state(c: &Cluster, id: &str) -> anyhow::Result<String> {
    Ok(get(c, &format!("/v1/jobs/{id}"))?.1["state"].as_str().unwrap_or("").to_string())
}

fn wait_state(c: &Cluster, id: &str, want: &str) -> anyhow::Result<Value> {
    wait_until(&format!("job {id} {want}"), LONG, || {
        let (_, d) = get(c, &format!("/v1/jobs/{id}"))?;
        Ok((d["state"] == want).then_some(d))
    })
}

/// Polls a savepoint trigger until it is no longer in progress.
fn wait_trigger(c: &Cluster, id: &str, trigger: &str) -> anyhow::Result<Value> {
    wait_until("the savepoint", LONG, || {
        let (status, s) = get(c, &format!("/v1/jobs/{id}/savepoints/{trigger}"))?;
        assert_eq!(status, 200, "{s}");
        Ok((s["status"] != "IN_PROGRESS").then_some(s))
    })
}

#[test]
fn a_job_submitted_over_rest_runs_checkpoints_takes_a_savepoint_and_stops_with_one() -> anyhow::Result<()> {
    let c = Cluster::start(2, 2, "5s")?;
    let (status, o) = get(&c, "/v1/overview")?;
    assert_eq!(status, 200);
    assert_eq!((o["task_managers"].as_u64(), o["slots_total"].as_u64()), (Some(2), Some(4)), "{o}");
    let (_, tms) = get(&c, "/v1/taskmanagers")?;
    assert_eq!(tms["task_managers"].as_array().map(Vec::len), Some(2), "{tms}");

    let id = submit(&c, &job("over-rest", &c.dir.path().join("storage")))?;
    let (_, list) = get(&c, "/v1/jobs")?;
    assert_eq!(list["jobs"][0]["id"], id.as_str(), "{list}");

    // Running, with its graph: chained vertices naming every operator, the
    // hash link between them, and live rates and watermarks.
    let details = wait_until("records flowing with watermarks", LONG, || {
        let (_, d) = get(&c, &format!("/v1/jobs/{id}"))?;
        let v = d["vertices"].as_array().cloned().unwrap_or_default();
        let flowing = d["state"] == "RUNNING"
            && v.iter().all(|v| v["state"] == "RUNNING")
            && v.first().is_some_and(|v| v["records_out_per_second"].as_f64() > Some(0.0))
            && v.iter().all(|v| v["watermark_ms"].is_i64());
        Ok(flowing.then_some(d))
    })?;
    let vertices = details["vertices"].as_array().unwrap();
    let uids: Vec<&str> =
        vertices.iter().flat_map(|v| v["operators"].as_array().unwrap()).map(|o| o["uid"].as_str().unwrap()).collect();
    assert_eq!(uids, ["gen", "timestamps", "per-auction", "drop"], "{details}");
    assert_eq!(vertices.len(), 2, "source and watermarks chain, window and sink chain: {details}");
    assert_eq!(details["links"], json!([{"from": 0, "to": 1, "partitioning": "HASH", "key": ["auction"]}]));
    for v in vertices {
        assert_eq!(v["subtasks"].as_array().map(Vec::len), Some(2), "{v}");
        for s in v["subtasks"].as_array().unwrap() {
            assert!(s["task_manager_id"].as_str().is_some_and(|t| t.starts_with("tm-")), "{s}");
            assert!((0.0..=1.0).contains(&s["backpressure"].as_f64().unwrap()), "{s}");
        }
    }
    // The generator runs at 20 000 rows/s over both subtasks.
    let rate = vertices[0]["records_out_per_second"].as_f64().unwrap();
    assert!((5_000.0..=40_000.0).contains(&rate), "source rate {rate}");

    // Checkpoints complete, each acknowledged by every subtask.
    let cps = wait_until("two completed checkpoints", LONG, || {
        let (_, cps) = get(&c, &format!("/v1/jobs/{id}/checkpoints"))?;
        Ok((cps["counts"]["completed"].as_u64() >= Some(2)).then_some(cps))
    })?;
    let done = cps["history"].as_array().unwrap().iter().find(|h| h["status"] == "COMPLETED").unwrap();
    assert_eq!(done["acknowledged"], 4, "{done}");
    assert_eq!(done["subtask_acks"].as_array().map(Vec::len), Some(4), "{done}");
    assert!(cps["latest"]["completed"].is_u64(), "{cps}");
    let (_, exceptions) = get(&c, &format!("/v1/jobs/{id}/exceptions"))?;
    assert_eq!(exceptions, json!({"exceptions": []}));

    // A savepoint, polled to completion; the job keeps running.
    let target = c.dir.path().join("savepoints");
    let body = json!({"target": format!("file://{}", target.display())}).to_string();
    let (status, t) = post(&c, &format!("/v1/jobs/{id}/savepoints"), "application/json", body.clone())?;
    assert_eq!(status, 202, "{t}");
    let s = wait_trigger(&c, &id, t["request_id"].as_str().unwrap())?;
    assert_eq!(s["status"], "COMPLETED", "{s}");
    let location = s["location"].as_str().unwrap();
    assert!(Path::new(location.trim_start_matches("file://")).join("_metadata").exists(), "{location}");
    assert_eq!(state(&c, &id)?, "RUNNING");
    let (_, cps) = get(&c, &format!("/v1/jobs/{id}/checkpoints"))?;
    assert_eq!(cps["latest"]["savepoint"], s["checkpoint_id"], "{cps}");

    // Stop with a savepoint: the job ends FINISHED, and the CLI sees the same.
    let (status, t) = post(&c, &format!("/v1/jobs/{id}/stop"), "application/json", body)?;
    assert_eq!(status, 202, "{t}");
    let s = wait_trigger(&c, &id, t["request_id"].as_str().unwrap())?;
    assert_eq!(s["status"], "COMPLETED", "{s}");
    wait_state(&c, &id, "FINISHED")?;
    let cli = c.weir_json(&["status", &id])?;
    assert_eq!(cli["state"], "FINISHED", "{cli}");

    // A new job from that savepoint, given as JSON with its options.
    let resumed = json!({"job": job("resumed", &c.dir.path().join("storage-2")), "from_savepoint": s["location"]});
    let (status, r) = post(&c, "/v1/jobs", "application/json", resumed.to_string())?;
    assert_eq!(status, 202, "{r}");
    let rid = r["id"].as_str().unwrap();
    let d = wait_state(&c, rid, "RUNNING")?;
    assert_eq!(d["restored_from"], s["checkpoint_id"], "{d}");
    let (status, cancelled) = post(&c, &format!("/v1/jobs/{rid}/cancel"), "application/json", "")?;
    assert_eq!(status, 202, "{cancelled}");
    wait_state(&c, rid, "CANCELED")?;
    Ok(())
}

#[test]
fn rejected_requests_answer_json_errors_with_their_status_and_schedule_nothing() -> anyhow::Result<()> {
    let c = Cluster::start_with(1, 2, "5s", &["--rest-max-body", "64KiB"])?;
    let jobs = |c: &Cluster| -> anyhow::Result<usize> { Ok(get(c, "/v1/jobs")?.1["jobs"].as_array().unwrap().len()) };

    // A malformed job file: 400 with the message `weir validate` prints.
    let bad = "name: broken\noperators:\n  - uid: gen\n    kind: datagen\n    confg: {}\n";
    let (status, e) = post(&c, "/v1/jobs", "application/yaml", bad)?;
    assert_eq!(status, 400, "{e}");
    let file = c.dir.path().join("broken.yaml");
    std::fs::write(&file, bad)?;
    let out = Command::new(bin("weir")).arg("validate").arg(&file).output()?;
    let validate = String::from_utf8_lossy(&out.stderr);
    let message = e["error"].as_str().unwrap();
    assert!(message.contains("confg") && validate.contains(message), "REST: {message}\nweir validate: {validate}");

    // An unknown operator kind, and a parallelism of 0.
    let unknown = "name: odd\noperators:\n  - uid: x\n    kind: teleport\n";
    let (status, e) = post(&c, "/v1/jobs", "application/yaml", unknown)?;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("teleport"), "{e}");
    let good = job("fine", &c.dir.path().join("storage"));
    let (status, e) = post(&c, "/v1/jobs?parallelism=0", "application/yaml", good.clone())?;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("at least 1"), "{e}");
    let (status, e) = post(&c, "/v1/jobs", "application/json", "{not json")?;
    assert_eq!(status, 400, "{e}");

    // A savepoint that does not exist.
    let missing = json!({"job": good, "from_savepoint": format!("file://{}/nowhere", c.dir.path().display())});
    let (status, e) = post(&c, "/v1/jobs", "application/json", missing.to_string())?;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("cannot start from"), "{e}");

    // A body over the limit.
    let huge = format!("{good}\n# {}\n", "x".repeat(100 << 10));
    let (status, e) = post(&c, "/v1/jobs", "application/yaml", huge)?;
    assert_eq!(status, 413, "{e}");
    assert!(e["error"].as_str().unwrap().contains("65536 bytes"), "{e}");
    assert_eq!(jobs(&c)?, 0, "no rejected request scheduled a job");

    // Unknown jobs, triggers and paths.
    for (method, path) in [
        ("GET", "/v1/jobs/nope"),
        ("GET", "/v1/jobs/nope/checkpoints"),
        ("GET", "/v1/jobs/nope/exceptions"),
        ("POST", "/v1/jobs/nope/cancel"),
        ("POST", "/v1/jobs/nope/savepoints"),
        ("POST", "/v1/jobs/nope/stop"),
        ("GET", "/v1/jobs/nope/savepoints/nothing"),
        ("GET", "/v1/nothing"),
    ] {
        let (status, e) = http_json(method, &url(&c, path), None)?;
        assert_eq!(status, 404, "{method} {path}: {e}");
        assert!(e["error"].as_str().is_some_and(|m| !m.is_empty()), "{method} {path}: {e}");
    }

    // Wrong states: a savepoint with no target and no default directory,
    // then requests on an ended job.
    let id = submit(&c, &job("short-lived", &c.dir.path().join("storage")))?;
    wait_state(&c, &id, "RUNNING")?;
    let (status, e) = post(&c, &format!("/v1/jobs/{id}/savepoints"), "application/json", "")?;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("savepoint_dir"), "{e}");
    let (status, e) = post(&c, &format!("/v1/jobs/{id}/savepoints"), "application/json", "{\"taget\": \"x\"}")?;
    assert_eq!(status, 400, "a misspelt field is refused: {e}");
    let (status, _) = post(&c, &format!("/v1/jobs/{id}/cancel"), "application/json", "")?;
    assert_eq!(status, 202);
    wait_state(&c, &id, "CANCELED")?;
    let (status, e) = post(&c, &format!("/v1/jobs/{id}/cancel"), "application/json", "")?;
    assert_eq!(status, 409, "{e}");
    let target = json!({"target": format!("file://{}", c.dir.path().display())}).to_string();
    let (status, e) = post(&c, &format!("/v1/jobs/{id}/stop"), "application/json", target)?;
    assert_eq!(status, 409, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("CANCELED") || e["error"].as_str().unwrap().contains("Canceled"),
        "{e}"
    );
    assert_eq!(jobs(&c)?, 1, "only the accepted job exists");

    // The OpenAPI document is generated from the handlers: every route is in it.
    let (status, doc) = get(&c, "/v1/openapi.json")?;
    assert_eq!(status, 200);
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    for p in [
        "/v1/overview",
        "/v1/taskmanagers",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/checkpoints",
        "/v1/jobs/{id}/exceptions",
        "/v1/jobs/{id}/cancel",
        "/v1/jobs/{id}/savepoints",
        "/v1/jobs/{id}/stop",
        "/v1/jobs/{id}/savepoints/{trigger}",
    ] {
        assert!(paths.iter().any(|k| *k == p), "{p} missing from {paths:?}");
    }
    assert!(doc["components"]["schemas"]["JobDetails"].is_object());
    let (status, _) = http("GET", &url(&c, "/healthz"), None)?;
    assert_eq!(status, 200);
    Ok(())
}

#[test]
fn a_sql_script_is_submitted_like_a_job_file() -> anyhow::Result<()> {
    let c = Cluster::start(1, 2, "5s")?;
    let script = "SET 'parallelism.default' = '2';
CREATE TABLE bids (auction BIGINT, price BIGINT, event_time_ms BIGINT, channel STRING)
  WITH ('connector' = 'datagen', 'rows-per-second' = '1000');
CREATE TABLE nowhere (auction BIGINT, price BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO nowhere SELECT auction, price FROM bids WHERE channel = 'apple';
";
    let (status, r) = post(&c, "/v1/jobs?name=apple-bids", "application/sql", script)?;
    assert_eq!(status, 202, "{r}");
    let d = wait_state(&c, r["id"].as_str().unwrap(), "RUNNING")?;
    assert_eq!(d["name"], "apple-bids");
    let uids: Vec<&str> = d["vertices"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| v["operators"].as_array().unwrap())
        .map(|o| o["uid"].as_str().unwrap())
        .collect();
    assert!(uids.contains(&"bids") && uids.contains(&"nowhere"), "{uids:?}");

    // The same through a JSON envelope, and a script with a mistake.
    let env = json!({"sql": script, "name": "again"});
    let (status, r) = post(&c, "/v1/jobs", "application/json", env.to_string())?;
    assert_eq!(status, 202, "{r}");
    let (status, e) = post(&c, "/v1/jobs", "application/sql", script.replace("FROM bids", "FROM bidz"))?;
    assert_eq!(status, 400, "{e}");
    let message = e["error"].as_str().unwrap();
    assert!(message.contains("unknown table or view `bidz`") && message.contains('^'), "{message}");
    assert_eq!(get(&c, "/v1/jobs")?.1["jobs"].as_array().map(Vec::len), Some(2), "the bad script scheduled nothing");
    Ok(())
}

#[test]
fn with_a_token_file_the_api_needs_a_token_of_the_right_role() -> anyhow::Result<()> {
    let secrets = tempfile::tempdir()?;
    let file = secrets.path().join("tokens");
    let (reader, admin) = ("reader-5f0c1e2d3a4b5c6d", "admin-9a8b7c6d5e4f3a2b");
    std::fs::write(&file, format!("# who may do what\n{reader} read\n{admin} admin\n"))?;
    // The CLI presents the admin token over gRPC: the same file guards both.
    let cli = vec![("WEIR_TOKEN".to_string(), admin.to_string())];
    let c = Cluster::start_secure(1, 2, "5s", &["--rest-token-file", file.to_str().unwrap()], Vec::new(), cli)?;
    let with = |token: &str, method: &str, path: &str, body: Option<&str>| {
        let url = url(&c, path);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let client = reqwest::Client::new();
            let mut req = client.request(reqwest::Method::from_bytes(method.as_bytes())?, url).bearer_auth(token);
            if let Some(b) = body {
                req = req.header("content-type", "application/yaml").body(b.to_string());
            }
            let res = req.send().await?;
            Ok::<_, anyhow::Error>((res.status().as_u16(), res.text().await?))
        })
    };

    // Probes, the page and the API's description are open; the API is not.
    for path in ["/healthz", "/readyz", "/", "/v1/openapi.json"] {
        assert_eq!(http("GET", &url(&c, path), None)?.0, 200, "{path}");
    }
    let (status, e) = get(&c, "/v1/jobs")?;
    assert_eq!(status, 401, "{e}");
    assert!(e["error"].as_str().unwrap().contains("bearer token"), "{e}");
    assert_eq!(with("not-a-token-at-all-really", "GET", "/v1/jobs", None)?.0, 401);

    // A reader reads but may not submit; an admin submits and cancels.
    let yaml = job("guarded", &c.dir.path().join("storage"));
    assert_eq!(with(reader, "GET", "/v1/overview", None)?.0, 200);
    let (status, e) = with(reader, "POST", "/v1/jobs", Some(&yaml))?;
    assert_eq!(status, 403, "{e}");
    assert_eq!(with(reader, "GET", "/v1/jobs", None)?.1, r#"{"jobs":[]}"#, "a refused submission scheduled nothing");
    let (status, body) = with(admin, "POST", "/v1/jobs", Some(&yaml))?;
    assert_eq!(status, 202, "{body}");
    let id = serde_json::from_str::<Value>(&body)?["id"].as_str().unwrap().to_string();
    assert_eq!(with(reader, "POST", &format!("/v1/jobs/{id}/cancel"), None)?.0, 403);
    assert_eq!(with(admin, "POST", &format!("/v1/jobs/{id}/cancel"), None)?.0, 202);
    Ok(())
}
