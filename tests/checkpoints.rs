//! Exactly-once recovery across processes: a checkpointed job survives
//! `kill -9` of a task manager and writes exactly what a run without failure
//! writes; a damaged newest checkpoint is skipped for the one before it. The
//! same holds with checkpoints, savepoints and the job store on HDFS, and
//! with checkpoints and the job store on the S3-compatible server, through
//! its restart and an outage.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weir_tests::s3::S3Server;
use weir_tests::{bin, committed, unique, wait_until, Cluster, Rng};

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

/// Where a test keeps its checkpoints: a local directory, a directory on
/// the shared HDFS, or a prefix of a bucket on an S3-compatible server.
enum Storage {
    Local(PathBuf),
    Hdfs(String),
    S3 {
        /// `s3://bucket/prefix`.
        uri: String,
        /// Where the server keeps those objects as files.
        local: PathBuf,
    },
}

/// Which storage a test's checkpoints go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Disk,
    /// Local disk, with mutual TLS on every connection of the cluster.
    DiskOverTls,
    Hdfs,
    S3,
}

/// A fresh prefix of bucket `weir-lake` on `server`.
fn s3_storage(server: &S3Server, name: &str) -> Storage {
    let prefix = unique(&format!("weir-{name}"), '-');
    Storage::S3 { uri: format!("s3://weir-lake/{prefix}"), local: server.local("weir-lake", &prefix) }
}

/// What the job manager and task managers need to reach `server`.
fn s3_env(server: &S3Server) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&str, String)> = server.env().iter().map(|(k, v)| (*k, v.to_string())).collect();
    env.push(("AWS_ENDPOINT_URL", server.endpoint()));
    env
}

fn start_cluster(
    tms: usize,
    heartbeat_timeout: &str,
    jm_flags: &[&str],
    env: &[(&str, String)],
) -> anyhow::Result<Cluster> {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Cluster::start_with_env(tms, 2, heartbeat_timeout, jm_flags, &env)
}

impl Storage {
    fn hdfs(name: &str) -> Storage {
        Storage::Hdfs(unique(&format!("weir-{name}"), '-'))
    }

    fn uri(&self) -> String {
        match self {
            Storage::Local(dir) => format!("file://{}", dir.display()),
            Storage::Hdfs(dir) => format!("{}/{dir}", weir_tests::dfs::shared().url()),
            Storage::S3 { uri, .. } => uri.clone(),
        }
    }

    /// The newest complete checkpoint of `job`: its id and its metadata.
    fn newest_metadata(&self, job: &str) -> Option<(u64, Vec<u8>)> {
        let id = |name: &str| -> Option<u64> { name.strip_prefix("chk-")?.strip_suffix("/_metadata")?.parse().ok() };
        match self {
            Storage::Local(dir) | Storage::S3 { local: dir, .. } => {
                newest_metadata(dir, job).map(|(id, p)| (id, std::fs::read(p).unwrap_or_default()))
            }
            Storage::Hdfs(dir) => {
                let dfs = weir_tests::dfs::shared();
                let dir = format!("{dir}/{job}");
                let (cp, rel) = dfs.list(&dir).ok()?.into_iter().filter_map(|r| Some((id(&r)?, r))).max()?;
                Some((cp, dfs.read(&dir, &rel).ok()?))
            }
        }
    }
}

/// Files under `dir/job` that no complete checkpoint needs: files of a
/// checkpoint directory without metadata, and shared files that no
/// checkpoint's metadata names.
fn leftovers(dir: &Path, job: &str) -> Vec<String> {
    let root = dir.join(job);
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path().strip_prefix(&root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let metadata: Vec<String> = files
        .iter()
        .filter(|f| f.ends_with("/_metadata"))
        .map(|f| String::from_utf8_lossy(&std::fs::read(root.join(f)).unwrap_or_default()).into_owned())
        .collect();
    files
        .into_iter()
        .filter(|f| match f.split_once('/') {
            Some(("shared", _)) => !metadata.iter().any(|m| m.contains(&format!("/{f}\""))),
            Some((chk, _)) => !root.join(chk).join("_metadata").exists(),
            None => true,
        })
        .collect()
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
fn survive_kill(backend: &str, damage_newest: bool, on: On) -> anyhow::Result<u64> {
    let s3 = weir_tests::s3::shared_s3();
    let env = if on == On::S3 { s3_env(s3) } else { Vec::new() };
    let pki = tempfile::tempdir()?;
    let mut cluster = if on == On::DiskOverTls {
        // One certificate for every process and the CLI: all roles.
        let files = weir_tests::pki::Ca::new(pki.path(), "weir-ca")?.issue("weir-cluster")?;
        Cluster::start_secure(2, 2, "1s", &[], files.env(), files.env())?
    } else {
        start_cluster(2, "1s", &[], &env)?
    };
    let scratch = cluster.dir.path().to_path_buf();
    let expected = reference(&scratch);
    let out = scratch.join("out");
    let storage = match on {
        On::Disk | On::DiskOverTls => Storage::Local(scratch.join("checkpoints")),
        On::Hdfs => Storage::hdfs(backend),
        On::S3 => s3_storage(s3, backend),
    };
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
    // The job manager times the recovery from the moment it noticed the loss.
    let recovery = wait_until("the first checkpoint after the recovery", LONG, || {
        let r = cluster.weir_json(&["checkpoints", &id])?["recovery"].clone();
        Ok(r["checkpoint_after_ms"].as_u64().is_some().then_some(r))
    })?;
    let running = recovery["running_after_ms"].as_u64().expect("running again");
    assert!(running <= recovery["checkpoint_after_ms"].as_u64().unwrap(), "{recovery:#}");
    let place = match on {
        On::Disk => "local disk",
        On::DiskOverTls => "local disk (over TLS)",
        On::Hdfs => "HDFS",
        On::S3 => "S3",
    };
    eprintln!("{backend}, checkpoints on {place}: recovery as the job manager timed it: {recovery}");
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
    // Local state: the finished tasks removed their RocksDB directories; the
    // killed task manager could not, and the next task manager to start on
    // the host deletes what it left.
    let local = scratch.join("state");
    wait_until("the finished tasks' local state to be removed", LONG, || {
        Ok((std::fs::read_dir(local.join("tm-a"))?.count() == 0).then_some(()))
    })?;
    assert!(local.join("tm-b").exists(), "the killed task manager's directory");
    cluster.start_taskmanager("tm-c", 1, &[])?;
    assert!(!local.join("tm-b").exists(), "swept when tm-c started");
    assert!(local.join("tm-a").exists() && local.join("tm-c").exists());
    // What the checkpoints cut short by the kill wrote is swept once the job ended.
    if let Storage::Local(dir) | Storage::S3 { local: dir, .. } = &storage {
        wait_until("only complete checkpoints' files in storage", LONG, || {
            Ok(leftovers(dir, &id).is_empty().then_some(()))
        })
        .map_err(|e| anyhow::anyhow!("{e}: {:?}\n{}", leftovers(dir, &id), cluster.jobmanager.log()))?;
    }
    Ok(restored)
}

#[test]
fn heap_state_survives_kill_9_of_a_task_manager_exactly_once() -> anyhow::Result<()> {
    survive_kill("heap", false, On::Disk).map(|_| ())
}

/// The same with mutual TLS on every connection: job manager, task
/// managers, their data exchange and the CLI.
#[test]
fn heap_state_survives_kill_9_of_a_task_manager_exactly_once_with_tls_everywhere() -> anyhow::Result<()> {
    survive_kill("heap", false, On::DiskOverTls).map(|_| ())
}

#[test]
fn rocksdb_state_survives_kill_9_of_a_task_manager_exactly_once() -> anyhow::Result<()> {
    survive_kill("rocksdb", false, On::Disk).map(|_| ())
}

#[test]
fn rocksdb_state_without_a_changelog_survives_kill_9_of_a_task_manager_exactly_once() -> anyhow::Result<()> {
    survive_kill("rocksdb-no-changelog", false, On::Disk).map(|_| ())
}

/// RocksDB's files, the change files and the metadata on HDFS: written
/// there, restored from there after the kill.
#[test]
fn rocksdb_state_with_checkpoints_on_hdfs_survives_kill_9_of_a_task_manager_exactly_once() -> anyhow::Result<()> {
    survive_kill("rocksdb", false, On::Hdfs).map(|_| ())
}

/// The same with RocksDB's files, the change files and the metadata on the
/// S3-compatible server.
#[test]
fn rocksdb_state_with_checkpoints_on_s3_survives_kill_9_of_a_task_manager_exactly_once() -> anyhow::Result<()> {
    survive_kill("rocksdb", false, On::S3).map(|_| ())
}

#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_one_before() -> anyhow::Result<()> {
    survive_kill("heap", true, On::Disk).map(|_| ())
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

/// The newest completed checkpoint of job `id`, if any.
fn newest_completed(cluster: &Cluster, id: &str) -> anyhow::Result<Option<u64>> {
    Ok(completed_checkpoints(cluster, id)?.into_iter().max())
}

/// Waits until a checkpoint newer than `after` completes; returns its id.
fn next_completed(cluster: &Cluster, id: &str, after: Option<u64>, what: &str) -> anyhow::Result<u64> {
    wait_until(what, LONG, || Ok(newest_completed(cluster, id)?.filter(|n| Some(*n) > after)))
        .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs()))
}

/// Checkpoints and the job manager's job store on an S3-compatible server
/// of the test's own. The server is killed and started again at once, and
/// later killed and left down for 10 s, while the job runs: the requests of
/// the checkpoints in flight wait for the server instead of failing them, so
/// the job never restarts, checkpoints complete again after each fault, and
/// the output is exactly that of a run without failure.
#[test]
fn checkpoints_on_s3_ride_out_a_server_restart_and_a_10s_outage() -> anyhow::Result<()> {
    const OUTAGE: Duration = Duration::from_secs(10);
    let mut server = S3Server::own(&["weir-lake"])?;
    let storage = s3_storage(&server, "outage");
    let store = format!("{}-jobmanager", storage.uri());
    let cluster = start_cluster(2, "2s", &["--checkpoint-storage", &store], &s3_env(&server))?;
    let scratch = cluster.dir.path().to_path_buf();
    let expected = reference(&scratch);
    let out = scratch.join("out");
    // 30 s of input at 30,000 events/s: the job outlives both faults.
    let file = cluster.write("job.yaml", &job(&out, &storage.uri(), "rocksdb", Some(30_000), 1));
    let id = cluster.submit(&file, &[])?;
    let first = next_completed(&cluster, &id, None, "a completed checkpoint")?;

    server.stop();
    server.resume()?;
    let restarted = Instant::now();
    let after_restart = next_completed(&cluster, &id, Some(first), "a checkpoint after the server's restart")?;
    eprintln!("checkpoint {after_restart} completed {:?} after the server's restart", restarted.elapsed());

    server.stop();
    // The length of the fault, not a wait for a condition.
    std::thread::sleep(OUTAGE);
    let before = newest_completed(&cluster, &id)?;
    server.resume()?;
    let resumed = Instant::now();
    let after_outage = next_completed(&cluster, &id, before, "a checkpoint after the outage")?;
    eprintln!("checkpoint {after_outage} completed {:?} after the outage", resumed.elapsed());

    let status = cluster.wait_state(&id, &["FINISHED", "FAILED"], LONG)?;
    assert_eq!(status["state"], "FINISHED", "{status:#}\n{}", cluster.logs());
    // Requests to the server are retried for longer than the outage: the job never failed over.
    assert_eq!(status["restarts"], 0, "{status:#}\n{}", cluster.logs());
    let got = committed(&out);
    assert_eq!(got.len(), expected.len(), "rows\n{}", cluster.logs());
    assert!(got == expected, "the output differs from a run without failure");
    // The checkpoints and the job record are objects on the server.
    assert!(storage.newest_metadata(&id).is_some(), "a retained checkpoint on the server");
    Ok(())
}

/// Points of a task manager's side of a checkpoint where the crash test
/// aborts one: after the snapshot, between two uploaded files, after the
/// files before the acknowledgement, after it, after a RocksDB base was
/// uploaded, and in the sink's commit after the checkpoint completed.
const TASK_MANAGER_POINTS: [&str; 6] = [
    "checkpoint_snapshot_taken",
    "checkpoint_file_upload",
    "checkpoint_files_written",
    "checkpoint_acknowledged",
    "state_base_uploaded",
    "file_sink_before_commit",
];

/// The job manager's: before the metadata of a complete checkpoint is
/// written, after it, and while a subsumed checkpoint is deleted.
const JOB_MANAGER_POINTS: [&str; 3] = ["jm_before_metadata", "jm_metadata_written", "jm_discarding"];

/// The crash test's choices, reproducible: the seed is printed, and
/// `WEIR_CRASH_SEED` replays a run.
struct Dice(Rng);

impl Dice {
    fn seeded() -> (Dice, u64) {
        let seed = std::env::var("WEIR_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
        (Dice(Rng(seed | 1)), seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }

    /// One of `points`, armed to abort at its first to sixth hit.
    fn point(&mut self, points: &[&str]) -> String {
        let point = points[self.below(points.len() as u64) as usize];
        format!("{point}@{}", 1 + self.below(6))
    }
}

/// The point a process's log says it aborted at.
fn crashed_at(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("failpoint reached: "))?;
    Some(line.split("failpoint reached: ").nth(1)?.split(' ').next()?.to_string())
}

/// Twenty crashes of the job manager and the task managers at random points
/// of checkpoints, each process armed with a crash point when it starts (a
/// process that reaches none within 10 s is killed with SIGKILL instead).
/// The job then finishes with exactly the output of a run without failure,
/// its checkpoint storage holds only the files of the retained checkpoints,
/// and no task manager keeps local state.
#[test]
fn twenty_crashes_in_the_middle_of_checkpoints_leave_only_the_retained_checkpoints() -> anyhow::Result<()> {
    const CRASHES: usize = 20;
    let (mut dice, seed) = Dice::seeded();
    eprintln!("crash test seed {seed} (WEIR_CRASH_SEED={seed} replays its choices)");
    let mut cluster = start_cluster(0, "1s", &[], &[])?;
    let scratch = cluster.dir.path().to_path_buf();
    let expected = reference(&scratch);
    let (out, storage) = (scratch.join("out"), scratch.join("checkpoints"));
    let armed = dice.point(&JOB_MANAGER_POINTS);
    cluster.restart_jobmanager_with(&[("WEIR_FAILPOINT", &armed)])?;
    wait_until("the job manager to answer", LONG, || Ok(cluster.weir_json(&["taskmanagers"]).ok()))?;
    let tms = ["tm-a", "tm-b"];
    for tm in tms {
        // One slot each: the job needs both task managers, so both take part in every checkpoint.
        let armed = dice.point(&TASK_MANAGER_POINTS);
        cluster.start_taskmanager(tm, 1, &[("WEIR_FAILPOINT", &armed)])?;
    }
    let text = job(&out, &format!("file://{}", storage.display()), "rocksdb", Some(10_000), 2)
        .replace("attempts: 3", "attempts: 1000");
    let id = cluster.submit(&cluster.write("job.yaml", &text), &[])?;
    let mut crashes: Vec<String> = Vec::new();
    let deadline = Instant::now() + LONG * 3;
    let status = loop {
        anyhow::ensure!(Instant::now() < deadline, "the job did not end; crashes: {crashes:?}\n{}", cluster.logs());
        let armed = crashes.len() < CRASHES;
        // A process that died, or (once every crash happened) the job's end.
        let event = wait_until("a process to crash at its failpoint", Duration::from_secs(10), || {
            let mut dead: Vec<String> =
                tms.iter().filter(|tm| cluster.taskmanager(tm).exited().is_some()).map(|tm| tm.to_string()).collect();
            if cluster.jobmanager.exited().is_some() {
                dead.insert(0, "jobmanager".into());
            }
            if !dead.is_empty() {
                return Ok(Some(Err(dead)));
            }
            if armed {
                return Ok(None);
            }
            let s = cluster.weir_json(&["status", &id])?;
            Ok(["FINISHED", "FAILED"].contains(&s["state"].as_str().unwrap_or("")).then_some(Ok(s)))
        });
        let dead = match event {
            Ok(Ok(status)) => break status,
            Ok(Err(dead)) => dead,
            Err(_) if armed => {
                // No crash point reached in time: a crash at whatever point the job is.
                let state = cluster.weir_json(&["status", &id])?["state"].clone();
                anyhow::ensure!(
                    state != "FINISHED" && state != "FAILED",
                    "the job ended ({state}) after only {} crashes: {crashes:?}\n{}",
                    crashes.len(),
                    cluster.logs()
                );
                let victim = ["jobmanager", "tm-a", "tm-b"][dice.below(3) as usize];
                match victim {
                    "jobmanager" => cluster.jobmanager.kill9(),
                    tm => cluster.taskmanager(tm).kill9(),
                }
                vec![victim.to_string()]
            }
            Err(_) => continue,
        };
        for name in dead {
            let log = if name == "jobmanager" { cluster.jobmanager.log() } else { cluster.taskmanager(&name).log() };
            let how = crashed_at(&log).unwrap_or_else(|| "kill -9".into());
            crashes.push(format!("{name}: {how}"));
            // Armed again until the last crash; a process still armed after it may crash once more.
            let points: &[&str] = if name == "jobmanager" { &JOB_MANAGER_POINTS } else { &TASK_MANAGER_POINTS };
            let armed = if crashes.len() < CRASHES { dice.point(points) } else { String::new() };
            if name == "jobmanager" {
                cluster.restart_jobmanager_with(&[("WEIR_FAILPOINT", &armed)])?;
            } else {
                cluster.spawn_taskmanager(&name, 1, &[("WEIR_FAILPOINT", &armed)])?;
            }
        }
    };
    eprintln!("crashes: {crashes:#?}");
    assert_eq!(status["state"], "FINISHED", "{status:#}\n{}", cluster.logs());
    let got = committed(&out);
    assert_eq!(got.len(), expected.len(), "rows after {CRASHES} crashes\n{}", cluster.logs());
    assert!(got == expected, "the output differs from a run without failure");
    wait_until("only the retained checkpoints' files in storage", LONG, || {
        Ok(leftovers(&storage, &id).is_empty().then_some(()))
    })
    .map_err(|e| anyhow::anyhow!("{e}: {:?}\n{}", leftovers(&storage, &id), cluster.jobmanager.log()))?;
    let retained: Vec<String> = std::fs::read_dir(storage.join(&id))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("chk-"))
        .collect();
    let inside = |d: &String| -> Vec<String> {
        std::fs::read_dir(storage.join(&id).join(d))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert!(
        !retained.is_empty() && retained.len() <= 2,
        "two checkpoints retained at most: {:?}",
        retained.iter().map(|d| (d, inside(d))).collect::<Vec<_>>()
    );
    let local = scratch.join("state");
    wait_until("no task manager to keep local state", LONG, || {
        Ok(tms.iter().all(|tm| std::fs::read_dir(local.join(tm)).is_ok_and(|mut d| d.next().is_none())).then_some(()))
    })?;
    let record = scratch.join("jobmanager-storage").join("_jobs").join(format!("{id}.pb"));
    wait_until("the job record to be deleted", LONG, || Ok((!record.exists()).then_some(())))?;
    Ok(())
}
