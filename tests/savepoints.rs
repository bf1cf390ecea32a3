//! Savepoints across processes: stop a running job with a savepoint, start
//! a changed job from it (other parallelism, operators added or removed,
//! another state backend, the savepoint moved), and check that the output
//! of both runs together is exactly that of one run without interruption.

use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_tests::{bin, committed, wait_until, Cluster};

const LONG: Duration = Duration::from_secs(120);
const EVENTS: u64 = 600_000;

/// What varies between versions of the job.
#[derive(Clone)]
struct Version {
    backend: &'static str,
    /// Uid and size of the window.
    window: (&'static str, &'static str),
    /// A filter between the watermarks and the window (keeps every row).
    filter: bool,
    /// A second, stateful branch (a count per bidder into a discarding sink).
    side: bool,
    /// Events per second over the whole source (None: as fast as possible).
    rate: Option<u64>,
}

const V1: Version =
    Version { backend: "heap", window: ("tumble", "10s"), filter: false, side: false, rate: Some(60_000) };

/// W2 into the exactly-once file sink; the source and watermarks stay at
/// parallelism 2 (a generator's sequence depends on it), the rest follows
/// the job's parallelism.
fn job(out: &Path, storage: &Path, v: &Version) -> String {
    let rate = v.rate.map(|r| format!(", rate: {r}, batch_size: 1000")).unwrap_or_default();
    let (uid, size) = v.window;
    let into_window = if v.filter { "keep" } else { "timestamps" };
    let filter = if v.filter {
        "  - uid: keep\n    kind: filter\n    parallelism: 2\n    config: {predicate: \"price >= 0\"}\n"
    } else {
        ""
    };
    let filter_edge = if v.filter { "  - {from: timestamps, to: keep}\n" } else { "" };
    let side = if v.side {
        "  - uid: per-bidder\n    kind: window\n    config:\n      key: [bidder]\n      timestamp_column: event_time_ms\n      window: {type: tumbling, size: 10s}\n      aggregates: [{fn: count, as: n}]\n  - uid: drop\n    kind: discard\n"
    } else {
        ""
    };
    let side_edges = if v.side {
        "  - {from: timestamps, to: per-bidder, partition: hash, key: [bidder]}\n  - {from: per-bidder, to: drop}\n"
    } else {
        ""
    };
    format!(
        "name: w2-to-files
operators:
  - uid: gen
    kind: datagen
    parallelism: 2
    config: {{events: {EVENTS}{rate}}}
  - uid: timestamps
    kind: watermark
    parallelism: 2
    config: {{timestamp_column: event_time_ms, interval: 50ms}}
{filter}  - uid: {uid}
    kind: window
    config:
      key: [auction]
      timestamp_column: event_time_ms
      window: {{type: tumbling, size: {size}}}
      aggregates: [{{fn: count, as: count}}, {{fn: sum, column: price, as: sum}}]
  - uid: files
    kind: jsonl_file
    config: {{path: {out}}}
{side}edges:
  - {{from: gen, to: timestamps}}
{filter_edge}  - {{from: {into_window}, to: {uid}, partition: hash, key: [auction]}}
  - {{from: {uid}, to: files}}
{side_edges}checkpoints:
  interval: 300ms
  backend: {backend}
  storage: file://{storage}
  restart: {{strategy: none}}
",
        out = out.display(),
        storage = storage.display(),
        backend = v.backend,
    )
}

/// The output of version 1 without interruption, on an embedded cluster.
fn reference(scratch: &Path) -> Vec<String> {
    let out = scratch.join("reference-out");
    let file = scratch.join("reference.yaml");
    let v = Version { rate: None, ..V1 };
    std::fs::write(&file, job(&out, &scratch.join("reference-checkpoints"), &v)).unwrap();
    let run = std::process::Command::new(bin("weir")).args(["local", "-p", "2"]).arg(&file).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let lines = committed(&out);
    assert_eq!(lines.len() as u64, (EVENTS / 100_000) * 10_000, "the specification's count");
    lines
}

struct Scenario {
    cluster: Cluster,
    scratch: PathBuf,
    out: PathBuf,
    storage: PathBuf,
    savepoints: PathBuf,
    files: usize,
}

impl Scenario {
    fn start() -> anyhow::Result<Scenario> {
        let cluster = Cluster::start(2, 4, "2s")?;
        let scratch = cluster.dir.path().to_path_buf();
        Ok(Scenario {
            out: scratch.join("out"),
            storage: scratch.join("checkpoints"),
            savepoints: scratch.join("savepoints"),
            scratch,
            cluster,
            files: 0,
        })
    }

    fn file(&mut self, v: &Version) -> PathBuf {
        self.files += 1;
        self.cluster.write(&format!("job-{}.yaml", self.files), &job(&self.out, &self.storage, v))
    }

    /// Submits version `v` at `parallelism`, from `savepoint` if given.
    fn run(&mut self, v: &Version, parallelism: u32, savepoint: Option<&str>, flag: bool) -> anyhow::Result<String> {
        let file = self.file(v);
        let p = parallelism.to_string();
        let mut extra = vec!["--parallelism", p.as_str()];
        if let Some(sp) = savepoint {
            extra.extend(["--from-savepoint", sp]);
        }
        if flag {
            extra.push("--allow-non-restored-state");
        }
        self.cluster.submit(&file, &extra)
    }

    /// Fails unless submitting `v` from `savepoint` is refused; returns the message.
    fn refused(&mut self, v: &Version, savepoint: &str, flag: bool) -> String {
        let file = self.file(v);
        let mut args = vec!["run", file.to_str().unwrap(), "--from-savepoint", savepoint];
        if flag {
            args.push("--allow-non-restored-state");
        }
        let out = self.cluster.weir(&args).unwrap();
        assert!(!out.status.success(), "submission from {savepoint} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn wait_checkpoints(&self, id: &str, n: usize) -> anyhow::Result<()> {
        wait_until(&format!("{n} completed checkpoints of {id}"), LONG, || {
            let c = self.cluster.weir_json(&["checkpoints", id])?;
            let done = c["checkpoints"].as_array().into_iter().flatten().filter(|c| c["status"] == "COMPLETED").count();
            Ok((done >= n).then_some(()))
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.cluster.logs()))
    }

    /// `weir stop --savepoint`: returns the savepoint's location.
    fn stop(&self, id: &str) -> anyhow::Result<String> {
        let target = format!("file://{}", self.savepoints.display());
        let v = self.cluster.weir_json(&["stop", id, "--savepoint", &target])?;
        assert_eq!(v["job_state"], "FINISHED", "{v:#}\n{}", self.cluster.logs());
        let status = self.cluster.weir_json(&["status", id])?;
        assert_eq!(status["state"], "FINISHED", "{status:#}");
        Ok(v["location"].as_str().expect("a location").to_string())
    }

    fn finish(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        let s = self.cluster.wait_state(id, &["FINISHED", "FAILED", "CANCELED"], LONG)?;
        assert_eq!(s["state"], "FINISHED", "{s:#}\n{}", self.cluster.logs());
        Ok(s)
    }

    fn output(&self) -> Vec<String> {
        committed(&self.out)
    }
}

fn assert_same(got: &[String], expected: &[String], what: &str, cluster: &Cluster) {
    assert_eq!(got.len(), expected.len(), "{what}: rows\n{}", cluster.logs());
    assert!(got == expected, "{what}: the output differs from a run without interruption");
}

/// Version 1 at parallelism 2 stops with a savepoint; version 2 (a filter
/// added, parallelism 3) starts from it, takes a savepoint while running and
/// stops with another; version 1 again at parallelism 1 finishes the input.
/// Every window is counted exactly once. On the way: `inspect` shows the
/// state, and a window redefined under the same uid is refused.
#[test]
fn upgrades_through_savepoints_change_parallelism_both_ways_and_add_operators() -> anyhow::Result<()> {
    let mut s = Scenario::start()?;
    let expected = reference(&s.scratch);

    let first = s.run(&V1, 2, None, false)?;
    s.wait_checkpoints(&first, 8)?; // past the first 10 s window (100,000 events)
    let sp1 = s.stop(&first)?;
    let partial = s.output();
    assert!(!partial.is_empty() && partial.len() < expected.len(), "stopped mid-stream: {} rows", partial.len());

    // What the savepoint holds.
    let inspect = s.cluster.weir_json(&["savepoint", "inspect", &sp1])?;
    assert_eq!((inspect["format"].as_str(), inspect["version"].as_u64()), (Some("weir-savepoint"), Some(1)));
    assert_eq!(inspect["stopped"], true);
    let ops = inspect["operators"].as_array().unwrap();
    let tumble = ops.iter().find(|o| o["uid"] == "tumble").expect("the window");
    assert_eq!(tumble["parallelism"], 2);
    assert_eq!(tumble["subtasks"][1]["key_groups"], serde_json::json!([64, 128]));
    let windows = &tumble["states"][0];
    assert_eq!(windows["name"], "windows");
    assert!(windows["type"].as_str().unwrap().starts_with("tumbling(size=10s)"), "{windows}");
    assert!(windows["entries"].as_u64() > Some(0));
    let gen = ops.iter().find(|o| o["uid"] == "gen").unwrap();
    assert_eq!(gen["states"][0]["name"], "position");

    // The window redefined under the same uid: refused, saying why.
    let longer = Version { window: ("tumble", "20s"), ..V1 };
    let err = s.refused(&longer, &sp1, true);
    assert!(err.contains("`tumble`") && err.contains("size=10s") && err.contains("size=20s"), "{err}");

    // Version 2: a filter added, parallelism 2 -> 3.
    let v2 = Version { filter: true, ..V1 };
    let second = s.run(&v2, 3, Some(&sp1), false)?;
    s.wait_checkpoints(&second, 1)?;
    let status = s.cluster.weir_json(&["status", &second])?;
    assert!(status["restored_from"].as_u64() > Some(0), "{status:#}");
    // A savepoint of the running job leaves it running.
    let taken =
        s.cluster.weir_json(&["savepoint", &second, "--target", &format!("file://{}", s.savepoints.display())])?;
    let sp_running = taken["location"].as_str().unwrap().to_string();
    assert_eq!(s.cluster.weir_json(&["status", &second])?["state"], "RUNNING");
    let history = s.cluster.weir_json(&["checkpoints", &second])?;
    assert!(
        history["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["savepoint"] == true && c["location"] == sp_running.as_str()),
        "{history:#}"
    );
    s.wait_checkpoints(&second, 2)?;
    let sp2 = s.stop(&second)?;

    // Version 1 again, parallelism 3 -> 1, to the end of the input.
    let third = s.run(&Version { rate: None, ..V1 }, 1, Some(&sp2), false)?;
    s.finish(&third)?;
    assert_same(&s.output(), &expected, "2 -> 3 -> 1", &s.cluster);

    // Disposing deletes the savepoint; a disposed savepoint cannot be used.
    let d = s.cluster.weir_json(&["savepoint", "dispose", &sp_running])?;
    assert_eq!(d["disposed"], true);
    let err = s.refused(&V1, &sp_running, false);
    assert!(err.contains("no such directory"), "{err}");
    Ok(())
}

/// State of an operator the new version no longer has: refused, naming it,
/// unless `--allow-non-restored-state`; the rest restores exactly. The
/// savepoint is taken with the heap backend, moved to another directory,
/// and restored into RocksDB.
#[test]
fn removed_operators_need_the_flag_and_a_moved_heap_savepoint_restores_into_rocksdb() -> anyhow::Result<()> {
    let mut s = Scenario::start()?;
    let expected = reference(&s.scratch);
    let with_side = Version { side: true, ..V1 };
    let first = s.run(&with_side, 2, None, false)?;
    s.wait_checkpoints(&first, 2)?;
    let sp = s.stop(&first)?;

    // Moved: the copy alone is a valid savepoint.
    let from = PathBuf::from(sp.strip_prefix("file://").unwrap());
    let moved = s.scratch.join("elsewhere").join("moved-savepoint");
    std::fs::create_dir_all(moved.parent().unwrap())?;
    std::fs::rename(&from, &moved)?;
    let moved_uri = format!("file://{}", moved.display());

    let rocks = Version { backend: "rocksdb", rate: None, ..V1 };
    let err = s.refused(&rocks, &moved_uri, false);
    assert!(err.contains("`per-bidder`") && err.contains("--allow-non-restored-state"), "{err}");

    // A truncated state file is named, and nothing runs.
    let damaged = s.scratch.join("damaged-savepoint");
    copy_dir(&moved, &damaged)?;
    let victim = damaged.join("tumble-0.state");
    let bytes = std::fs::read(&victim)?;
    std::fs::write(&victim, &bytes[..bytes.len() / 2])?;
    let err = s.refused(&rocks, &format!("file://{}", damaged.display()), true);
    assert!(err.contains("tumble-0.state") && err.contains("bytes"), "{err}");
    let jobs = s.cluster.weir_json(&["list"])?;
    assert_eq!(jobs.as_array().map(Vec::len), Some(1), "refused jobs are not scheduled: {jobs:#}");

    let second = s.run(&rocks, 2, Some(&moved_uri), true)?;
    s.finish(&second)?;
    assert_same(&s.output(), &expected, "heap -> rocksdb, moved, side branch dropped", &s.cluster);
    assert!(s.cluster.jobmanager.log().contains("per-bidder"), "the dropped state is logged");
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)?.flatten() {
        std::fs::copy(e.path(), to.join(e.file_name()))?;
    }
    Ok(())
}

/// A cancelled job's retained checkpoint works like a savepoint: a changed
/// job (a filter added, parallelism 2 -> 3, RocksDB -> heap) starts from its
/// directory and the output is exact; a checkpoint naming an operator the
/// job lacks needs the flag.
#[test]
fn a_retained_checkpoint_starts_a_changed_job() -> anyhow::Result<()> {
    let mut s = Scenario::start()?;
    let expected = reference(&s.scratch);
    let rocks = Version { backend: "rocksdb", ..V1 };
    let first = s.run(&rocks, 2, None, false)?;
    s.wait_checkpoints(&first, 4)?;
    s.cluster.weir_json(&["cancel", &first])?;
    s.cluster.wait_state(&first, &["CANCELED"], LONG)?;
    let newest = std::fs::read_dir(s.storage.join(&first))?
        .flatten()
        .filter_map(|e| {
            let id: u64 = e.file_name().to_string_lossy().strip_prefix("chk-")?.parse().ok()?;
            e.path().join("_metadata").exists().then_some((id, e.path()))
        })
        .max_by_key(|(id, _)| *id)
        .expect("a retained checkpoint");
    let uri = format!("file://{}", newest.1.display());

    let renamed = Version { window: ("tumble-2", "10s"), ..V1 };
    let err = s.refused(&renamed, &uri, false);
    assert!(err.contains("`tumble`") && err.contains("--allow-non-restored-state"), "{err}");

    let v2 = Version { filter: true, rate: None, ..V1 };
    let second = s.run(&v2, 3, Some(&uri), false)?;
    let status = s.finish(&second)?;
    assert_eq!(status["restored_from"].as_u64(), Some(newest.0), "{status:#}");
    assert_same(&s.output(), &expected, "retained checkpoint, rocksdb -> heap, 2 -> 3", &s.cluster);
    Ok(())
}

/// A savepoint written by Weir 0.1 before the core was reshaped (commit
/// 6c0cff6: snapshot metadata as JSON, the earlier state layouts), checked
/// into `tests/fixtures/savepoint-0.1-heap` with the output its run had
/// committed, restores today — into the heap backend and into RocksDB —
/// and the two runs together write exactly what one uninterrupted run does.
#[test]
fn a_savepoint_of_the_previous_format_restores() -> anyhow::Result<()> {
    let fixture = weir_tests::repo().join("tests/fixtures/savepoint-0.1-heap");
    let cluster = Cluster::start(1, 4, "2s")?;
    let scratch = cluster.dir.path().to_path_buf();
    let template = std::fs::read_to_string(fixture.join("job.yaml"))?;
    let job = |name: &str, out: &Path, backend: &str, rate: bool| {
        let mut text = template
            .replace("OUT", &out.display().to_string())
            .replace("CHECKPOINTS", &scratch.join(format!("{name}-checkpoints")).display().to_string())
            .replace("backend: heap", &format!("backend: {backend}"));
        if !rate {
            text = text.replace(", rate: 30000", "");
        }
        cluster.write(&format!("{name}.yaml"), &text)
    };

    // One run without interruption.
    let reference_out = scratch.join("reference-out");
    let run = std::process::Command::new(bin("weir"))
        .args(["local", "-p", "2"])
        .arg(job("reference", &reference_out, "heap", false))
        .output()?;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let expected = committed(&reference_out);
    assert_eq!(expected.len(), 12, "3 windows of 4 channels: {expected:?}");

    for backend in ["heap", "rocksdb"] {
        // The old run's output and savepoint, as an upgrade finds them.
        let out = scratch.join(format!("{backend}-out"));
        copy_dir(&fixture.join("out"), &out)?;
        let savepoint = scratch.join(format!("{backend}-savepoint"));
        copy_dir(&fixture.join("savepoint"), &savepoint)?;
        let sp = format!("file://{}", savepoint.display());
        let file = job(backend, &out, backend, false);
        let id = cluster.submit(&file, &["--from-savepoint", &sp])?;
        let s = cluster.wait_state(&id, &["FINISHED", "FAILED", "CANCELED"], LONG)?;
        assert_eq!(s["state"], "FINISHED", "{s:#}\n{}", cluster.logs());
        assert_eq!(s["restored_from"].as_u64().map(|c| c > 0), Some(true), "restored: {s:#}");
        assert_same(&committed(&out), &expected, &format!("the 0.1 savepoint restored into {backend}"), &cluster);
    }
    Ok(())
}

/// `weir stop --timeout` gives up waiting and says what is known; the job
/// manager goes on with the stop, and the job ends with its savepoint.
#[test]
fn a_stop_past_its_timeout_reports_and_the_job_manager_carries_on() -> anyhow::Result<()> {
    let mut s = Scenario::start()?;
    let id = s.run(&V1, 2, None, false)?;
    s.wait_checkpoints(&id, 2)?;
    let target = format!("file://{}", s.savepoints.display());
    let out = s.cluster.weir(&["stop", &id, "--savepoint", &target, "--timeout", "1ms"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a stop past its timeout succeeded: {stderr}");
    assert!(stderr.contains(&format!("no savepoint of job {id} within 1ms")), "{stderr}");
    s.finish(&id)?;
    let c = s.cluster.weir_json(&["checkpoints", &id])?;
    let savepoints: Vec<&serde_json::Value> =
        c["checkpoints"].as_array().into_iter().flatten().filter(|c| c["savepoint"] == true).collect();
    assert!(
        savepoints
            .iter()
            .any(|c| c["status"] == "COMPLETED" && c["location"].as_str().is_some_and(|l| l.starts_with(&target))),
        "the stop's savepoint completed: {c:#}"
    );
    Ok(())
}
