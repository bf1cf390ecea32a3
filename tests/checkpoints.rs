//! Exactly-once recovery across processes: a checkpointed job survives
//! `kill -9` of a task manager and writes exactly what a run without failure
//! writes; a damaged newest checkpoint is skipped for the one before it. The
//! same holds with checkpoints, savepoints and the job store on HDFS.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weir_tests::{bin, committed, wait_until, Cluster};

const LONG: Duration = Duration::from_secs(120);
const EVENTS: u64 = 900_000;

/// W2 into the exactly-once file sink, rate-limited so that the job is
/// still running when a task manager dies. `backend` is `heap`, `rocksdb`,
/// or `rocksdb-no-changelog` (RocksDB with `changelog: false`).
fn job(out: &Path, storage: &str, backend: &str, rate: Option<u64>, retained: u32) -> String {
    let backend = match backend {
        "rocksdb-no-changelog" => "rocksdb\n  changelog: false",
        other => other,
    };
    let rate = rate.map(|r| format!(", rate: {r}, batch_size: 1000")).unwrap_or_default();
    format!(
        "name: w2-to-files
parallelism: 2
operators:
  - uid: gen
    kind: datagen
    config: {{events: {EVENTS}{rate}}}
  - uid: timestamps
    kind: watermark
    config: {{timestamp_column: event_time_ms, interval: 50ms}}
  - uid: tumble
    kind: window
    config:
      key: [auction]
      timestamp_column: event_time_ms
      window: {{type: tumbling, size: 10s}}
      aggregates: [{{fn: count, as: count}}, {{fn: sum, column: price, as: sum}}]
  - uid: files
    kind: jsonl_file
    config: {{path: {out}}}
edges:
  - {{from: gen, to: timestamps}}
  - {{from: timestamps, to: tumble, partition: hash, key: [auction]}}
  - {{from: tumble, to: files}}
checkpoints:
  interval: 200ms
  backend: {backend}
  storage: {storage}
  retained: {retained}
  restart: {{strategy: fixed_delay, attempts: 3, delay: 500ms}}
",
        out = out.display(),
    )
}

/// Where a test keeps its checkpoints: a local directory or a directory on
/// the shared HDFS.
enum Storage {
    Local(PathBuf),
    Hdfs(String),
}

impl Storage {
    fn hdfs(name: &str) -> Storage {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Storage::Hdfs(format!("weir-{name}-{}-{n}", std::process::id()))
    }

    fn uri(&self) -> String {
        match self {
            Storage::Local(dir) => format!("file://{}", dir.display()),
            Storage::Hdfs(dir) => format!("{}/{dir}", weir_tests::dfs::shared().url()),
        }
    }

    /// The newest complete checkpoint of `job`: its id and its metadata.
    fn newest_metadata(&self, job: &str) -> Option<(u64, Vec<u8>)> {
        let id = |name: &str| -> Option<u64> { name.strip_prefix("chk-")?.strip_suffix("/_metadata")?.parse().ok() };
        match self {
            Storage::Local(dir) => newest_metadata(dir, job).map(|(id, p)| (id, std::fs::read(p).unwrap_or_default())),
            Storage::Hdfs(dir) => {
                let dfs = weir_tests::dfs::shared();
                let dir = format!("{dir}/{job}");
                let (cp, rel) = dfs.list(&dir).ok()?.into_iter().filter_map(|r| Some((id(&r)?, r))).max()?;
                Some((cp, dfs.read(&dir, &rel).ok()?))
            }
        }
    }
}

/// The output of the same job without failures, run on an embedded cluster.
fn reference(scratch: &Path) -> Vec<String> {
    let out = scratch.join("reference-out");
    let storage = scratch.join("reference-checkpoints");
    let file = scratch.join("reference.yaml");
    std::fs::write(&file, job(&out, &format!("file://{}", storage.display()), "heap", None, 1)).unwrap();
    let run = std::process::Command::new(bin("weir")).args(["local"]).arg(&file).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let lines = committed(&out);
    assert_eq!(lines.len() as u64, (EVENTS / 100_000) * 10_000, "the specification's count");
    lines
}

fn completed_checkpoints(cluster: &Cluster, id: &str) -> anyhow::Result<Vec<u64>> {
    let c = cluster.weir_json(&["checkpoints", id])?;
    Ok(c["checkpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "COMPLETED")
        .filter_map(|c| c["id"].as_u64())
        .collect())
}

fn newest_metadata(storage: &Path, job: &str) -> Option<(u64, PathBuf)> {
    std::fs::read_dir(storage.join(job))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let id: u64 = e.file_name().to_string_lossy().strip_prefix("chk-")?.parse().ok()?;
            let meta = e.path().join("_metadata");
            meta.exists().then_some((id, meta))
        })
        .max_by_key(|(id, _)| *id)
}

/// Runs the job on two task managers, kills one with SIGKILL after a few
/// checkpoints, optionally truncates the newest checkpoint's metadata, and
/// checks the output against the reference. Returns the checkpoint restored.
fn survive_kill(backend: &str, damage_newest: bool, hdfs: bool) -> anyhow::Result<u64> {
    let mut cluster = Cluster::start(2, 2, "1s")?;
    let scratch = cluster.dir.path().to_path_buf();
    let expected = reference(&scratch);
    let out = scratch.join("out");
    let storage = if hdfs { Storage::hdfs(backend) } else { Storage::Local(scratch.join("checkpoints")) };
    let file = cluster.write("job.yaml", &job(&out, &storage.uri(), backend, Some(150_000), 2));
    let id = cluster.submit(&file, &[])?;
    wait_until("three completed checkpoints", LONG, || {
        Ok((completed_checkpoints(&cluster, &id)?.len() >= 3).then_some(()))
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs()))?;
    let killed = Instant::now();
    cluster.taskmanager("tm-b").kill9();
    let mut skipped = None;
    if damage_newest {
        // No checkpoint can complete without tm-b's tasks: the newest one stays the newest.
        let Storage::Local(dir) = &storage else { anyhow::bail!("only local checkpoints are damaged") };
        let (cp, meta) = newest_metadata(dir, &id).expect("a complete checkpoint on disk");
        let raw = std::fs::read(&meta)?;
        std::fs::write(&meta, &raw[..raw.len() / 2])?;
        skipped = Some(cp);
    }
    // Recovery: the job runs again (attempt 2, every task running) on tm-a alone.
    let status = wait_until("the job to run again after the kill", LONG, || {
        let s = cluster.weir_json(&["status", &id])?;
        let tasks = s["tasks"].as_array().cloned().unwrap_or_default();
        let running =
            s["attempt"].as_u64() >= Some(2) && !tasks.is_empty() && tasks.iter().all(|t| t["state"] == "RUNNING");
        Ok((running || s["state"] == "FINISHED" || s["state"] == "FAILED").then_some(s))
    })?;
    eprintln!(
        "{backend}: running again {:?} after kill -9 (heartbeat timeout 1s, restart delay 500ms)",
        killed.elapsed()
    );
    assert_ne!(status["state"], "FAILED", "{status:#}\n{}", cluster.logs());
    let status = cluster.wait_state(&id, &["FINISHED", "FAILED"], LONG)?;
    assert_eq!(status["state"], "FINISHED", "{status:#}\n{}", cluster.logs());
    assert_eq!(status["restarts"], 1, "{status:#}");
    let restored = status["restored_from"].as_u64().expect("restored from a checkpoint");
    if let Some(bad) = skipped {
        assert_eq!(restored, bad - 1, "the damaged checkpoint {bad} is skipped for the one before it");
        assert!(cluster.jobmanager.log().contains("skipping an unusable checkpoint"), "{}", cluster.logs());
    }
    assert!(status["tasks"].as_array().unwrap().iter().all(|t| t["task_manager"] == "tm-a"), "{status:#}");
    if backend.starts_with("rocksdb") {
        // The windows' part: with a changelog, a base of the local database and the
        // change files since; without, the database's files alone.
        let (_, meta) = storage.newest_metadata(&id).expect("a retained checkpoint");
        let meta = String::from_utf8_lossy(&meta);
        let changelog = backend == "rocksdb";
        assert_eq!(meta.contains(".changes\""), changelog, "change files named only with a changelog: {meta}");
    }
    let got = committed(&out);
    assert_eq!(got.len(), expected.len(), "rows after recovery\n{}", cluster.logs());
    assert!(got == expected, "the output differs from a run without failure");
    Ok(restored)
}

#[test]
fn heap_state_survives_kill_9_of_a_task_manager_exactly_once() -> anyhow::Result<()> {
    survive_kill("heap", false, false).map(|_| ())
}

#[test]
fn rocksdb_state_survives_kill_9_of_a_task_manager_exactly_once() -> anyhow::Result<()> {
    survive_kill("rocksdb", false, false).map(|_| ())
}

#[test]
fn rocksdb_state_without_a_changelog_survives_kill_9_of_a_task_manager_exactly_once() -> anyhow::Result<()> {
    survive_kill("rocksdb-no-changelog", false, false).map(|_| ())
}

/// RocksDB's files, the change files and the metadata on HDFS: written
/// there, restored from there after the kill.
#[test]
fn rocksdb_state_with_checkpoints_on_hdfs_survives_kill_9_of_a_task_manager_exactly_once() -> anyhow::Result<()> {
    survive_kill("rocksdb", false, true).map(|_| ())
}

#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_one_before() -> anyhow::Result<()> {
    survive_kill("heap", true, false).map(|_| ())
}

/// The job manager dies with `kill -9` while a checkpointed job runs; a new
/// job manager started with the same storage resumes the job from its latest
/// checkpoint once the task managers registered again, and the output is
/// exact.
#[test]
fn a_restarted_job_manager_resumes_its_jobs() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(2, 2, "2s")?;
    let scratch = cluster.dir.path().to_path_buf();
    let expected = reference(&scratch);
    let (out, storage) = (scratch.join("out"), scratch.join("checkpoints"));
    let file =
        cluster.write("job.yaml", &job(&out, &format!("file://{}", storage.display()), "rocksdb", Some(150_000), 1));
    let id = cluster.submit(&file, &[])?;
    let record = scratch.join("jobmanager-storage").join("_jobs").join(format!("{id}.pb"));
    assert!(record.exists() || wait_until("the job record", LONG, || Ok(record.exists().then_some(()))).is_ok());
    wait_until("two completed checkpoints", LONG, || {
        Ok((completed_checkpoints(&cluster, &id)?.len() >= 2).then_some(()))
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs()))?;
    cluster.restart_jobmanager()?;
    let status = cluster
        .wait_state(&id, &["FINISHED", "FAILED"], LONG)
        .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs()))?;
    assert_eq!(status["state"], "FINISHED", "{status:#}\n{}", cluster.logs());
    assert!(status["restored_from"].as_u64().is_some(), "resumed from a checkpoint: {status:#}");
    assert!(committed(&out) == expected, "the output differs from a run without failure\n{}", cluster.logs());
    // The job ended and its record is gone: a further restart resumes nothing.
    let record = scratch.join("jobmanager-storage").join("_jobs").join(format!("{id}.pb"));
    wait_until("the job record to be deleted", LONG, || Ok((!record.exists()).then_some(())))?;
    cluster.restart_jobmanager()?;
    wait_until("the job manager to answer", LONG, || Ok(cluster.weir_json(&["list"]).ok()))?;
    let jobs = cluster.weir_json(&["list"])?;
    assert_eq!(jobs.as_array().map(|a| a.len()), Some(0), "{jobs:#}");
    Ok(())
}

/// Everything on HDFS: the job manager's job store, the job's checkpoints and
/// its savepoint. The job manager dies with `kill -9` and a new one resumes
/// the job from what HDFS holds; the job then stops with a savepoint on HDFS,
/// and a new run from that savepoint ends with exactly the output of a run
/// without failure.
#[test]
fn with_everything_on_hdfs_a_job_survives_a_job_manager_kill_and_resumes_from_a_savepoint() -> anyhow::Result<()> {
    let dfs = weir_tests::dfs::shared();
    let Storage::Hdfs(dir) = Storage::hdfs("everything") else { unreachable!() };
    let base = format!("{}/{dir}", dfs.url());
    let store = format!("{base}/jobmanager");
    let mut cluster = Cluster::start_with(2, 2, "2s", &["--checkpoint-storage", &store])?;
    let scratch = cluster.dir.path().to_path_buf();
    let expected = reference(&scratch);
    let out = scratch.join("out");
    let file = cluster.write("job.yaml", &job(&out, &format!("{base}/checkpoints"), "rocksdb", Some(50_000), 1));
    let id = cluster.submit(&file, &[])?;
    let record = format!("{id}.pb");
    wait_until("the job record on HDFS", LONG, || {
        Ok(dfs.list(&format!("{dir}/jobmanager/_jobs"))?.contains(&record).then_some(()))
    })?;
    wait_until("two completed checkpoints", LONG, || {
        Ok((completed_checkpoints(&cluster, &id)?.len() >= 2).then_some(()))
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs()))?;
    cluster.restart_jobmanager()?;
    let status = wait_until("the job to run again under the new job manager", LONG, || {
        let Ok(s) = cluster.weir_json(&["status", &id]) else { return Ok(None) };
        let tasks = s["tasks"].as_array().cloned().unwrap_or_default();
        let running = s["state"] == "RUNNING" && !tasks.is_empty() && tasks.iter().all(|t| t["state"] == "RUNNING");
        Ok((running || s["state"] == "FINISHED" || s["state"] == "FAILED").then_some(s))
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs()))?;
    assert_eq!(status["state"], "RUNNING", "{status:#}\n{}", cluster.logs());
    assert!(status["restored_from"].as_u64().is_some(), "resumed from a checkpoint on HDFS: {status:#}");
    let stopped = cluster.weir_json(&["stop", &id, "--savepoint", &format!("{base}/savepoints")])?;
    let savepoint = stopped["location"].as_str().expect("a savepoint location").to_string();
    assert!(savepoint.starts_with(&format!("{base}/savepoints/")), "{savepoint}");
    assert!(
        dfs.list(savepoint.strip_prefix(&format!("{}/", dfs.url())).unwrap())?.iter().any(|r| r == "_metadata"),
        "the savepoint's metadata on HDFS"
    );
    let resumed = cluster.submit(&file, &["--from-savepoint", &savepoint])?;
    let status = cluster.wait_state(&resumed, &["FINISHED", "FAILED"], LONG)?;
    assert_eq!(status["state"], "FINISHED", "{status:#}\n{}", cluster.logs());
    assert!(committed(&out) == expected, "the output differs from a run without failure\n{}", cluster.logs());
    Ok(())
}
