//! Kafka end to end, against a real broker (KRaft) started by the suite:
//! exactly-once Kafka→Kafka under `kill -9` of task managers at seeded
//! random moments and at the worst moment (checkpoint complete, transaction
//! not yet committed), offsets rewound from checkpoints rather than the
//! consumer group, partition discovery, idle partitions, dead letters, an
//! unreachable broker and a broker restart; the Kappa pipeline into MySQL
//! and MongoDB. Output is always read with
//! `isolation.level=read_committed` and checked by counting.
//!
//! The chaos test runs 20 kill trials (`WEIR_KAFKA_TRIALS` sets another
//! number, e.g. for a quick local run).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use weir_tests::broker::{shared_kafka, KafkaBroker};
use weir_tests::{unique, wait_until, Cluster, Rng};

const LONG: Duration = Duration::from_secs(180);

fn producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("creating a test producer")
}

/// Produces `records` (partition, key, value) and waits until all are acknowledged.
fn produce(bootstrap: &str, topic: &str, records: &[(Option<i32>, Option<String>, String)]) -> anyhow::Result<()> {
    produce_with(&producer(bootstrap), topic, records)
}

/// [`produce`] with a producer of the caller's.
fn produce_with(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    records: &[(Option<i32>, Option<String>, String)],
) -> anyhow::Result<()> {
    for (partition, key, value) in records {
        let mut r: BaseRecord<'_, str, str> = BaseRecord::to(topic).payload(value.as_str());
        if let Some(k) = key {
            r = r.key(k.as_str());
        }
        if let Some(part) = partition {
            r = r.partition(*part);
        }
        let mut r = r;
        loop {
            match p.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    r = back;
                    p.flush(Duration::from_secs(30))?;
                }
            }
        }
    }
    p.flush(Duration::from_secs(60))?;
    Ok(())
}

/// A record read back.
#[derive(Debug, Clone)]
struct Read {
    key: Option<String>,
    value: String,
    headers: BTreeMap<String, String>,
}

/// Every committed record of `topic` (read_committed, from the start),
/// once the consumer has reached the last stable offset of every partition
/// and at least `min` records were read.
fn read_committed(bootstrap: &str, topic: &str, min: usize, timeout: Duration) -> anyhow::Result<Vec<Read>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader", '-'))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    loop {
        while let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            let mut headers = BTreeMap::new();
            if let Some(h) = m.headers() {
                for hd in h.iter() {
                    headers
                        .insert(hd.key.to_string(), String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned());
                }
            }
            out.push(Read {
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                headers,
            });
        }
        // Caught up when every partition's position reached its end.
        let positions = consumer.position()?;
        let mut caught_up = true;
        for &p in &partitions {
            let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
            let pos = match positions.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            };
            if pos < high {
                caught_up = false;
            }
        }
        if caught_up && out.len() >= min {
            return Ok(out);
        }
        if Instant::now() > deadline {
            bail!("read {} committed records of `{topic}` in {timeout:?}, wanted at least {min}", out.len());
        }
    }
}

fn values(reads: &[Read]) -> Vec<serde_json::Value> {
    reads.iter().map(|r| serde_json::from_str(&r.value).expect("JSON output")).collect()
}

/// Ids of the output, checked to be exactly `0..n` once each.
fn assert_exactly_once(reads: &[Read], n: u64, what: &str) {
    let mut seen = vec![0u32; n as usize];
    for v in values(reads) {
        let id = v["id"].as_u64().expect("id");
        assert!(id < n, "{what}: unexpected id {id}");
        seen[id as usize] += 1;
    }
    let missing: Vec<usize> = seen.iter().enumerate().filter(|(_, &c)| c == 0).map(|(i, _)| i).take(10).collect();
    let doubled: Vec<usize> = seen.iter().enumerate().filter(|(_, &c)| c > 1).map(|(i, _)| i).take(10).collect();
    assert!(
        missing.is_empty() && doubled.is_empty(),
        "{what}: {} records read for {n} ids; missing (first 10) {missing:?}, duplicated (first 10) {doubled:?}",
        reads.len()
    );
}

/// Input records `{"id": i, "k": "key-(i%50)", "ts": BASE + i}` over the partitions.
fn input(n: u64, partitions: i32) -> Vec<(Option<i32>, Option<String>, String)> {
    (0..n)
        .map(|i| {
            (
                Some((i % partitions as u64) as i32),
                Some(format!("key-{}", i % 50)),
                format!(r#"{{"id":{i},"k":"key-{}","ts":{}}}"#, i % 50, 1_700_000_000_000u64 + i),
            )
        })
        .collect()
}

/// Kafka → filter-free pass-through → Kafka, exactly once.
fn pass_through_job(bootstrap: &str, input: &str, output: &str, extra_source: &str, interval: &str) -> String {
    format!(
        "name: kafka-pass-through
parallelism: 2
operators:
  - uid: in
    kind: kafka_source
    config:
      bootstrap_servers: {bootstrap}
      topic: {input}
      schema: [{{name: id, type: int64}}, {{name: k, type: string}}, {{name: ts, type: int64}}]
      metadata: {{key: key}}
      connect_timeout: 10s
{extra_source}  - uid: out
    kind: kafka_sink
    config:
      bootstrap_servers: {bootstrap}
      topic: {output}
      key_column: key
      delivery: exactly_once
      transactional_id_prefix: {output}
      connect_timeout: 10s
edges:
  - {{from: in, to: out}}
checkpoints:
  interval: {interval}
  restart: {{strategy: fixed_delay, attempts: 10, delay: 300ms}}
"
    )
}

/// The id of the job's newest completed checkpoint (0: none yet).
fn completed_checkpoints(cluster: &Cluster, job: &str) -> anyhow::Result<u64> {
    let s = cluster.weir_json(&["status", job])?;
    let list = s["checkpoints"].as_array().cloned().unwrap_or_default();
    Ok(list.iter().filter(|c| c["status"] == "COMPLETED").filter_map(|c| c["id"].as_u64()).max().unwrap_or(0))
}

/// The shared broker, its address, and fresh input and output topics.
fn setup(
    name: &str,
    in_partitions: u32,
    out_partitions: u32,
) -> anyhow::Result<(&'static KafkaBroker, String, String, String)> {
    let kafka = shared_kafka();
    let (inp, out) = (unique(&format!("{name}-in"), '-'), unique(&format!("{name}-out"), '-'));
    kafka.create_topic(&inp, in_partitions)?;
    kafka.create_topic(&out, out_partitions)?;
    Ok((kafka, kafka.bootstrap(), inp, out))
}

/// Once at least `min` records are committed: waits until two more
/// checkpoints completed (anything still to come would be in them) and
/// reads the whole output again.
fn settle_and_read(cluster: &Cluster, job: &str, bootstrap: &str, out: &str, min: usize) -> anyhow::Result<Vec<Read>> {
    let reads = read_committed(bootstrap, out, min, LONG).with_context(|| cluster.logs())?;
    let done = completed_checkpoints(cluster, job)?;
    wait_until("two more checkpoints", LONG, || Ok((completed_checkpoints(cluster, job)? >= done + 2).then_some(())))?;
    read_committed(bootstrap, out, reads.len(), LONG)
}

#[test]
fn exactly_once_under_task_manager_kills() -> anyhow::Result<()> {
    let trials: u64 = std::env::var("WEIR_KAFKA_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let mut rng = Rng(0x5eed_0001);
    const N: u64 = 60_000;
    let records = input(N, 4);
    let mut cluster = Cluster::start(2, 2, "1s")?;
    for trial in 0..trials {
        let (_, bootstrap, inp, out) = setup("chaos", 4, 3)?;
        produce(&bootstrap, &inp, &records)?;
        let job_file =
            cluster.write(&format!("chaos-{trial}.yaml"), &pass_through_job(&bootstrap, &inp, &out, "", "150ms"));
        let job = cluster.submit(&job_file, &[])?;
        cluster.wait_state(&job, &["RUNNING"], LONG)?;
        // Kill at a seeded moment: anywhere from before the first checkpoint
        // to well into the run.
        let delay = Duration::from_millis(100 + rng.next_u64() % 1500);
        std::thread::sleep(delay); // the moment of the crash, not a synchronisation
        let victim = if rng.next_u64().is_multiple_of(2) { "tm-a" } else { "tm-b" };
        cluster.taskmanager(victim).kill9();
        let reads = settle_and_read(&cluster, &job, &bootstrap, &out, N as usize)
            .with_context(|| format!("trial {trial}, {victim} killed after {delay:?}"))?;
        assert_exactly_once(&reads, N, &format!("trial {trial} ({victim} killed after {delay:?})"));
        cluster.weir(&["cancel", &job])?;
        cluster.wait_state(&job, &["CANCELED"], LONG)?;
        cluster.restart_taskmanager(victim)?;
    }
    Ok(())
}

#[test]
fn crash_between_checkpoint_completion_and_commit_loses_and_repeats_nothing() -> anyhow::Result<()> {
    const N: u64 = 20_000;
    let (_, bootstrap, inp, out) = setup("commit-window", 2, 1)?;
    produce(&bootstrap, &inp, &input(N, 2))?;
    // An earlier job with the same transactional ids left a high commit
    // marker behind; a fresh start must not let it hide this job's epochs.
    let stale: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", format!("{out}-1")).create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&out, 0, Offset::Offset(1000))?;
    stale.commit(&tpl, CommitMode::Sync)?;
    // tm-b aborts in the commit window of the first checkpoint it completes.
    let mut cluster = Cluster::start(1, 2, "1s")?;
    cluster.start_taskmanager("tm-b", 2, &[("WEIR_FAILPOINT", "kafka_sink_before_commit")])?;
    let job_file = cluster.write("window.yaml", &pass_through_job(&bootstrap, &inp, &out, "", "300ms"));
    let job = cluster.submit(&job_file, &[])?;
    wait_until("tm-b to crash at the failpoint", LONG, || Ok(cluster.taskmanager("tm-b").child.try_wait()?))?;
    assert!(cluster.taskmanager("tm-b").log().contains("failpoint reached"), "{}", cluster.logs());
    let reads = settle_and_read(&cluster, &job, &bootstrap, &out, N as usize)?;
    assert_exactly_once(&reads, N, "after a crash in the commit window");
    // The restored subtask found its epoch uncommitted and replayed it.
    let logs = cluster.logs();
    let recovered: Vec<&str> = logs.lines().filter(|l| l.contains("kafka sink recovered its transactions")).collect();
    assert!(recovered.iter().any(|l| !l.contains("replayed_epochs=0")), "no epoch was replayed:\n{logs}");
    eprintln!("{}", recovered.join("\n"));
    Ok(())
}

#[test]
fn restore_seeks_to_checkpointed_offsets_not_the_groups() -> anyhow::Result<()> {
    const N: u64 = 30_000;
    let (_, bootstrap, inp, out) = setup("rewind", 2, 1)?;
    let group = unique("rewind-group", '-');
    let mut cluster = Cluster::start(2, 2, "1s")?;
    let extra = format!("      group_id: {group}\n");
    let job_file = cluster.write("rewind.yaml", &pass_through_job(&bootstrap, &inp, &out, &extra, "200ms"));
    let job = cluster.submit(&job_file, &[])?;
    cluster.wait_state(&job, &["RUNNING"], LONG)?;
    produce(&bootstrap, &inp, &input(N / 2, 2))?;
    wait_until("a checkpoint", LONG, || Ok((completed_checkpoints(&cluster, &job)? >= 1).then_some(())))?;
    // Move the group's committed offsets far ahead: a restore that trusted
    // them would skip records.
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", &group).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset(&inp, p, Offset::Offset(1_000_000))?;
    }
    c.commit(&tpl, CommitMode::Sync)?;
    cluster.taskmanager("tm-b").kill9();
    produce(&bootstrap, &inp, &input(N, 2)[N as usize / 2..])?;
    let reads = settle_and_read(&cluster, &job, &bootstrap, &out, N as usize)?;
    assert_exactly_once(&reads, N, "after a restore");
    let status = cluster.weir_json(&["status", &job])?;
    assert!(status["restarts"].as_u64().unwrap_or(0) >= 1, "the job did not restart: {status}");
    Ok(())
}

#[test]
fn new_partitions_are_discovered() -> anyhow::Result<()> {
    let (_, bootstrap, inp, out) = setup("grow", 1, 1)?;
    let cluster = Cluster::start(1, 2, "2s")?;
    let job_file = cluster
        .write("grow.yaml", &pass_through_job(&bootstrap, &inp, &out, "      partition_discovery: 300ms\n", "200ms"));
    let job = cluster.submit(&job_file, &[])?;
    cluster.wait_state(&job, &["RUNNING"], LONG)?;
    let records = input(1000, 3);
    produce(&bootstrap, &inp, &records.iter().filter(|r| r.0 == Some(0)).cloned().collect::<Vec<_>>())?;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &bootstrap).create()?;
    let grow = [NewPartitions::new(&inp, 3)];
    let options = AdminOptions::new();
    let res = block_on(admin.create_partitions(&grow, &options))?;
    for r in res {
        r.map_err(|(t, e)| anyhow::anyhow!("adding partitions to {t}: {e}"))?;
    }
    produce(&bootstrap, &inp, &records.iter().filter(|r| r.0 != Some(0)).cloned().collect::<Vec<_>>())?;
    let reads = settle_and_read(&cluster, &job, &bootstrap, &out, 1000)?;
    assert_exactly_once(&reads, 1000, "with partitions added while running");
    assert!(cluster.logs().contains("found a new partition"), "{}", cluster.logs());
    Ok(())
}

/// A source subscribed by `topic_pattern` reads every matching topic, one
/// created while the job runs among them, and none that does not match.
#[test]
fn topics_matching_a_pattern_are_read_and_new_ones_found() -> anyhow::Result<()> {
    let (kafka, bootstrap, first, out) = setup("pattern-a", 2, 1)?;
    let other = unique("unmatched-in", '-');
    kafka.create_topic(&other, 1)?;
    let records = input(900, 2);
    produce(&bootstrap, &first, &records[..300])?;
    produce(&bootstrap, &other, &input(50, 1))?;
    let cluster = Cluster::start(1, 2, "2s")?;
    // `pattern-a-in-<pid>-<n>` now and `pattern-b-in-<pid>-<n>` later match;
    // `unmatched-in-…` does not.
    let pattern = format!("pattern-[ab]-in-{}-[0-9]+", std::process::id());
    let job = pass_through_job(&bootstrap, &first, &out, "      partition_discovery: 300ms\n", "200ms")
        .replace(&format!("topic: {first}\n"), &format!("topic_pattern: \"{pattern}\"\n"));
    let job = cluster.submit(&cluster.write("pattern.yaml", &job), &[])?;
    cluster.wait_state(&job, &["RUNNING"], LONG)?;
    read_committed(&bootstrap, &out, 300, LONG).with_context(|| cluster.logs())?;
    let second = unique("pattern-b-in", '-');
    kafka.create_topic(&second, 2)?;
    produce(&bootstrap, &second, &records[300..])?;
    let reads = settle_and_read(&cluster, &job, &bootstrap, &out, 900)?;
    assert_exactly_once(&reads, 900, "from two topics matching a pattern");
    assert!(cluster.logs().contains("found a new partition"), "{}", cluster.logs());
    Ok(())
}

/// Runs a future to completion on a small runtime (the admin API is async).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(f)
}

#[test]
fn an_idle_partition_does_not_hold_back_windows() -> anyhow::Result<()> {
    let (_, bootstrap, inp, out) = setup("idle", 2, 1)?;
    let cluster = Cluster::start(1, 2, "2s")?;
    let job = format!(
        "name: idle
parallelism: 1
operators:
  - uid: in
    kind: kafka_source
    config:
      bootstrap_servers: {bootstrap}
      topic: {inp}
      schema: [{{name: id, type: int64}}, {{name: k, type: string}}, {{name: ts, type: int64}}]
      watermark: {{column: ts, idle_timeout: 500ms, interval: 50ms}}
  - uid: count
    kind: window
    config:
      key: [k]
      timestamp_column: ts
      window: {{type: tumbling, size: 1s}}
      aggregates: [{{fn: count, as: n}}]
  - uid: out
    kind: kafka_sink
    config: {{bootstrap_servers: {bootstrap}, topic: {out}, delivery: exactly_once}}
edges:
  - {{from: in, to: count}}
  - {{from: count, to: out}}
checkpoints:
  interval: 200ms
"
    );
    let job = cluster.submit(&cluster.write("idle.yaml", &job), &[])?;
    cluster.wait_state(&job, &["RUNNING"], LONG)?;
    // Partition 1 never receives a record. Partition 0: 3 s of event time,
    // key `a`, one record per 100 ms of event time.
    let base = 1_700_000_000_000u64;
    let recs: Vec<_> =
        (0..30u64).map(|i| (Some(0), None, format!(r#"{{"id":{i},"k":"a","ts":{}}}"#, base + i * 100))).collect();
    produce(&bootstrap, &inp, &recs)?;
    // Windows [0,1s) and [1s,2s) fire once the watermark passes them, which
    // only happens if the empty partition is left out.
    let reads = read_committed(&bootstrap, &out, 2, LONG).with_context(|| cluster.logs())?;
    let counts: Vec<i64> = values(&reads).iter().map(|v| v["n"].as_i64().unwrap()).collect();
    assert_eq!(counts[..2], [10, 10], "window counts: {counts:?}");
    Ok(())
}

#[test]
fn malformed_records_go_to_the_dead_letter_topic() -> anyhow::Result<()> {
    let (kafka, bootstrap, inp, out) = setup("dlq", 1, 1)?;
    let dlq = unique("dlq", '-');
    kafka.create_topic(&dlq, 1)?;
    let mut recs = input(100, 1);
    recs.insert(10, (Some(0), Some("bad".into()), "{not json".into()));
    recs.insert(50, (Some(0), Some("bad".into()), r#"{"id":"text","k":"x","ts":1}"#.into()));
    produce(&bootstrap, &inp, &recs)?;
    let cluster = Cluster::start(1, 2, "2s")?;
    // A bounded source: the job finishes and reports its counts.
    let extra = format!("      on_error: dead_letter\n      dead_letter_topic: {dlq}\n      stop: latest\n");
    let job =
        cluster.submit(&cluster.write("dlq.yaml", &pass_through_job(&bootstrap, &inp, &out, &extra, "200ms")), &[])?;
    let status = cluster.wait_state(&job, &["FINISHED"], LONG).with_context(|| cluster.logs())?;
    assert_eq!(status["bad_records"], 2, "{status}");
    assert_eq!(status["sink_records"], 100, "{status}");
    let reads = read_committed(&bootstrap, &out, 100, LONG)?;
    assert_exactly_once(&reads, 100, "good records");
    let dead = read_committed(&bootstrap, &dlq, 2, LONG)?;
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0].value, "{not json");
    assert_eq!(dead[0].headers["weir.source.offset"], "10");
    assert!(!dead[1].headers["weir.error"].is_empty());
    assert_eq!(dead[1].key.as_deref(), Some("bad"));
    Ok(())
}

#[test]
fn empty_and_two_document_values_are_dead_lettered_and_counted_while_the_job_runs() -> anyhow::Result<()> {
    let (kafka, bootstrap, inp, out) = setup("dlq-mixed", 1, 1)?;
    let dlq = unique("dlq-mixed", '-');
    kafka.create_topic(&dlq, 1)?;
    // As many JSON documents as records: an empty value and a value of two.
    let mut recs = input(200, 1);
    recs.insert(20, (Some(0), Some("bad".into()), String::new()));
    recs.insert(60, (Some(0), Some("bad".into()), r#"{"id":1000,"k":"x","ts":1} {"id":1001,"k":"x","ts":2}"#.into()));
    produce(&bootstrap, &inp, &recs)?;
    let cluster = Cluster::start(1, 2, "2s")?;
    let extra = format!("      on_error: dead_letter\n      dead_letter_topic: {dlq}\n");
    let job = cluster
        .submit(&cluster.write("dlq-mixed.yaml", &pass_through_job(&bootstrap, &inp, &out, &extra, "200ms")), &[])?;
    let reads = read_committed(&bootstrap, &out, 200, LONG).with_context(|| cluster.logs())?;
    assert_exactly_once(&reads, 200, "good records");
    for r in &reads {
        let id = serde_json::from_str::<serde_json::Value>(&r.value)?["id"].as_u64().context("id")?;
        assert_eq!(r.key.as_deref(), Some(format!("key-{}", id % 50).as_str()), "record {id} kept its own key");
    }
    let dead = read_committed(&bootstrap, &dlq, 2, LONG)?;
    let offsets: Vec<&str> = dead.iter().map(|d| d.headers["weir.source.offset"].as_str()).collect();
    assert_eq!(offsets, ["20", "60"], "{dead:?}");
    // The job still runs (the source is unbounded) and its status counts them.
    wait_until("the running job's status to count 2 bad records", LONG, || {
        let s = cluster.weir_json(&["status", &job])?;
        Ok((s["state"] == "RUNNING" && s["bad_records"] == 2).then_some(()))
    })?;
    Ok(())
}

#[test]
fn malformed_records_fail_the_job_by_default() -> anyhow::Result<()> {
    let (_, bootstrap, inp, out) = setup("bad", 1, 1)?;
    produce(&bootstrap, &inp, &[(Some(0), None, "{oops".into())])?;
    let cluster = Cluster::start(1, 2, "2s")?;
    let job = pass_through_job(&bootstrap, &inp, &out, "", "200ms")
        .replace("{strategy: fixed_delay, attempts: 10, delay: 300ms}", "{strategy: none}");
    let job = cluster.submit(&cluster.write("bad.yaml", &job), &[])?;
    let status = cluster.wait_state(&job, &["FAILED"], LONG)?;
    let reason = status.to_string();
    assert!(reason.contains("offset 0 does not decode"), "{reason}");
    Ok(())
}

#[test]
fn unreachable_kafka_gives_a_clear_error_and_is_retried() -> anyhow::Result<()> {
    let port = weir_tests::free_port(); // nothing listens there
    let cluster = Cluster::start(1, 2, "2s")?;
    let job = pass_through_job(&format!("127.0.0.1:{port}"), "nowhere", "nowhere-out", "", "200ms")
        .replace("connect_timeout: 10s", "connect_timeout: 1s")
        .replace("attempts: 10, delay: 300ms", "attempts: 2, delay: 100ms");
    let job = cluster.submit(&cluster.write("unreachable.yaml", &job), &[])?;
    let status = cluster.wait_state(&job, &["FAILED"], LONG)?;
    let text = status.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("kafka"), "{text}");
    assert_eq!(status["restarts"].as_u64(), Some(2), "{status}");
    Ok(())
}

#[test]
fn a_broker_restart_mid_job_is_survived() -> anyhow::Result<()> {
    let mut kafka = KafkaBroker::start()?;
    let bootstrap = kafka.bootstrap();
    const N: u64 = 20_000;
    let (inp, out) = (unique("restart-in", '-'), unique("restart-out", '-'));
    kafka.create_topic(&inp, 2)?;
    kafka.create_topic(&out, 1)?;
    let cluster = Cluster::start(1, 2, "2s")?;
    let job =
        cluster.submit(&cluster.write("restart.yaml", &pass_through_job(&bootstrap, &inp, &out, "", "200ms")), &[])?;
    cluster.wait_state(&job, &["RUNNING"], LONG)?;
    produce(&bootstrap, &inp, &input(N / 2, 2))?;
    read_committed(&bootstrap, &out, N as usize / 2, LONG).with_context(|| cluster.logs())?;
    kafka.stop();
    kafka.restart()?;
    produce(&bootstrap, &inp, &input(N, 2)[N as usize / 2..])?;
    let reads = settle_and_read(&cluster, &job, &bootstrap, &out, N as usize)
        .with_context(|| format!("--- broker\n{}", kafka.log()))?;
    assert_exactly_once(&reads, N, "across a broker restart");
    Ok(())
}

/// The payment filter, as a YAML job file and as a SQL script, on the same
/// input: both route exactly the payments keyed `unknown`, keys kept.
#[test]
fn the_payment_filter_routes_unknown_payments() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, 4, "2s")?;
    for file in ["payment-filter.yaml", "payment-filter.sql"] {
        let (kafka, bootstrap, inp, out) = setup("payment", 2, 1)?;
        let dlq = unique("payment-dlq", '-');
        kafka.create_topic(&dlq, 1)?;
        let recs: Vec<_> = (0..1000u64)
            .map(|i| {
                let key = if i % 10 == 0 { "unknown" } else { "known" };
                (None, Some(key.to_string()), format!(r#"{{"id":{i},"amount":{}.5,"currency":"EUR"}}"#, i))
            })
            .collect();
        produce(&bootstrap, &inp, &recs)?;
        let replace: Vec<(String, String)> = if file.ends_with(".sql") {
            vec![
                ("127.0.0.1:9092".into(), bootstrap.clone()),
                ("'topic' = 'payment'".into(), format!("'topic' = '{inp}'")),
                ("'topic' = 'unknown-payment'".into(), format!("'topic' = '{out}'")),
                (
                    "'sink.transactional-id-prefix' = 'payment-filter'".into(),
                    format!("'sink.transactional-id-prefix' = '{out}'"),
                ),
            ]
        } else {
            vec![
                ("127.0.0.1:9092".into(), bootstrap.clone()),
                ("topic: payment\n".into(), format!("topic: {inp}\n")),
                ("topic: unknown-payment".into(), format!("topic: {out}")),
                ("payment-dead-letters".into(), dlq.clone()),
                ("transactional_id_prefix: payment-filter".into(), format!("transactional_id_prefix: {out}")),
            ]
        };
        let replace: Vec<(&str, &str)> = replace.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let job = weir_tests::job_file(file, &replace);
        let job = cluster.submit(&cluster.write(file, &job), &[])?;
        let reads = settle_and_read(&cluster, &job, &bootstrap, &out, 100).with_context(|| file)?;
        let mut ids: Vec<u64> = values(&reads).iter().map(|v| v["id"].as_u64().unwrap()).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..1000).step_by(10).collect::<Vec<u64>>(), "{file}");
        assert!(reads.iter().all(|r| r.key.as_deref() == Some("unknown")), "{file}");
        assert!(values(&reads).iter().all(|v| v["currency"] == "EUR" && v["amount"].as_f64().is_some()), "{file}");
        cluster.weir(&["cancel", &job])?;
    }
    Ok(())
}

/// Output lines of a `jsonl_file` sink's committed files (in-progress ones
/// are not visible yet), as (page, window start) -> clicks.
fn committed_clicks(dir: &std::path::Path) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().ends_with(".jsonl") {
            for line in std::fs::read_to_string(e.path()).unwrap_or_default().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let key = (v["page"].as_str().unwrap().to_string(), v["window_start"].as_str().unwrap().to_string());
                let n = v["clicks"].as_u64().unwrap();
                assert!(out.insert(key.clone(), n).is_none(), "window {key:?} written twice");
            }
        }
    }
    out
}

/// Weir SQL end to end (`jobs/clicks-per-page.sql`): a Kafka table with
/// Flink's JSON timestamps, a TUMBLE window aggregate and a filesystem sink.
/// `weir local` over a bounded scan writes exactly the expected counts; the
/// same script submitted with `weir run` writes them exactly once through a
/// `kill -9` of a task manager.
#[test]
fn a_sql_tumbling_window_from_kafka_to_files_is_exact_locally_and_through_a_kill() -> anyhow::Result<()> {
    const N: u64 = 20_000;
    let (_, bootstrap, inp, _) = setup("sql-clicks", 2, 1)?;
    // One click every 10 ms of event time from 2026-03-01 08:00:00 (epoch
    // 1772352000000), pages p0..p4 in turn: 200 clicks per page per 10 s.
    const BASE: u64 = 1_772_352_000_000;
    let stamp = |ms: u64| {
        let (s, milli) = (ms / 1000 - 1_772_352_000, ms % 1000);
        format!("2026-03-01 {:02}:{:02}:{:02}.{milli:03}", 8 + s / 3600, s / 60 % 60, s % 60)
    };
    let clicks: Vec<_> = (0..N)
        .map(|i| {
            (
                Some((i % 2) as i32),
                None,
                format!(r#"{{"page":"p{}","user":{i},"ts":"{}"}}"#, i % 5, stamp(BASE + i * 10)),
            )
        })
        .collect();
    produce(&bootstrap, &inp, &clicks)?;
    let expected: BTreeMap<(String, String), u64> = (0..N / 1000)
        .flat_map(|w| (0..5).map(move |p| (format!("p{p}"), w)))
        .map(|(p, w)| ((p, stamp(BASE + w * 10_000)), 200))
        .collect();
    let cluster = Cluster::start(2, 2, "1s")?;
    let script = |dir: &std::path::Path, bounded: bool| {
        let scan = if bounded {
            "'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset'".to_string()
        } else {
            "'scan.startup.mode' = 'earliest-offset'".to_string()
        };
        weir_tests::job_file(
            "clicks-per-page.sql",
            &[
                ("127.0.0.1:9092", &bootstrap),
                ("'topic' = 'clicks'", &format!("'topic' = '{inp}'")),
                ("/tmp/clicks-per-page", dir.to_str().unwrap()),
                ("'scan.startup.mode' = 'earliest-offset'", &scan),
            ],
        )
    };

    // Embedded, bounded: the job ends when the topic's end is reached.
    let local_dir = cluster.dir.path().join("local-out");
    let file = cluster.write("clicks-local.sql", &script(&local_dir, true));
    let mut local = weir_tests::spawn(
        "weir-local",
        std::process::Command::new(weir_tests::bin("weir")).args(["local", file.to_str().unwrap()]),
        cluster.dir.path(),
    )?;
    let status = local.wait_exit(LONG)?;
    assert!(status.success(), "weir local failed:\n{}", local.log());
    assert_eq!(committed_clicks(&local_dir), expected, "weir local");
    assert!(weir_tests::committed(&local_dir).len() == expected.len());

    let mut cluster = cluster;
    let run_dir = cluster.dir.path().join("run-out");
    let job = cluster.submit(&cluster.write("clicks-run.sql", &script(&run_dir, false)), &[])?;
    cluster.wait_state(&job, &["RUNNING"], LONG)?;
    wait_until("a completed checkpoint", LONG, || Ok((completed_checkpoints(&cluster, &job)? >= 1).then_some(())))?;
    cluster.taskmanager("tm-a").kill9();
    cluster.restart_taskmanager("tm-a")?;
    // One click an hour later in each partition, once the job runs again,
    // moves event time past every window of the data.
    let restored = completed_checkpoints(&cluster, &job)?;
    wait_until("a checkpoint after the restore", LONG, || {
        Ok((completed_checkpoints(&cluster, &job)? > restored).then_some(()))
    })?;
    let late: Vec<_> = (0..2)
        .map(|p| (Some(p), None, format!(r#"{{"page":"p0","user":0,"ts":"{}"}}"#, stamp(BASE + 3_600_000))))
        .collect();
    produce(&bootstrap, &inp, &late)?;
    wait_until("every window committed", LONG, || {
        Ok((committed_clicks(&run_dir).len() >= expected.len()).then_some(()))
    })
    .with_context(|| cluster.logs())?;
    let done = completed_checkpoints(&cluster, &job)?;
    wait_until(
        "two more checkpoints",
        LONG,
        || Ok((completed_checkpoints(&cluster, &job)? >= done + 2).then_some(())),
    )?;
    assert_eq!(committed_clicks(&run_dir), expected, "weir run through a kill\n{}", cluster.logs());
    Ok(())
}

/// Event time of the Kappa scenario's first event, aligned to 5 minutes.
const KAPPA_BASE: u64 = 5_666_667 * 300_000;

/// Events `from..to` of the Kappa scenario: one every 100 ms of event time,
/// names in turn (600 per minute, 100 per name per minute).
fn kappa_events(from: u64, to: u64) -> Vec<(Option<i32>, Option<String>, String)> {
    (from..to)
        .map(|i| (None, None, format!(r#"{{"id":{i},"name_id":{},"ts":{}}}"#, i % 6, KAPPA_BASE + i * 100)))
        .collect()
}

/// Counts per (name, window start) read from a view's topic; fails on a
/// window written twice.
fn window_counts(reads: &[Read]) -> BTreeMap<(String, u64), u64> {
    let mut out = BTreeMap::new();
    for v in values(reads) {
        let key = (v["name"].as_str().unwrap().to_string(), v["window_start"].as_u64().unwrap());
        let n = v["events"].as_u64().unwrap();
        assert!(out.insert(key.clone(), n).is_none(), "window {key:?} written twice");
    }
    out
}

/// The Kappa scenario of `jobs/kappa-*.yaml`: a staging job joins `events`
/// with `names` into `events_stage`; an aggregation job counts per name in
/// 1-minute windows. It is stopped with a savepoint mid-stream and version 2
/// (a filter added, parallelism 2 -> 3, the window's uid unchanged) goes on
/// from it: every window's count is exact. A replay of the stage with
/// 5-minute windows at parallelism 3 reaches the same totals. Redefining the
/// window (1 -> 5 minutes) under its uid is refused; under a new uid it
/// needs --allow-non-restored-state.
#[test]
fn kappa_upgrade_through_a_savepoint_and_replay_keep_every_count_exact() -> anyhow::Result<()> {
    let kafka = shared_kafka();
    let bootstrap = kafka.bootstrap();
    let [events, names, stage, counts, replay, other] =
        ["events", "names", "events-stage", "name-counts", "name-counts-5m", "name-counts-other"]
            .map(|t| unique(t, '-'));
    for (t, n) in [(&events, 1), (&names, 1), (&stage, 2), (&counts, 1), (&replay, 1), (&other, 1)] {
        kafka.create_topic(t, n)?;
    }
    let table: Vec<_> =
        (0..6).map(|n| (None, Some(n.to_string()), format!(r#"{{"name_id":{n},"name":"name-{n}"}}"#))).collect();
    produce(&bootstrap, &names, &table)?;
    produce(&bootstrap, &events, &kappa_events(0, 3000))?;

    let cluster = Cluster::start(2, 4, "2s")?;
    let staging = weir_tests::job_file(
        "kappa-staging.yaml",
        &[
            ("127.0.0.1:9092", &bootstrap),
            ("topic: events\n", &format!("topic: {events}\n")),
            ("topic: names\n", &format!("topic: {names}\n")),
            ("topic: events_stage", &format!("topic: {stage}")),
            ("transactional_id_prefix: kappa-staging", &format!("transactional_id_prefix: {stage}")),
        ],
    );
    cluster.submit(&cluster.write("staging.yaml", &staging), &[])?;
    read_committed(&bootstrap, &stage, 3000, LONG).with_context(|| cluster.logs())?;

    let counts_job = |file: &str, out: &str, extra: &[(&str, &str)]| {
        let owned = [
            ("127.0.0.1:9092".to_string(), bootstrap.clone()),
            ("topic: events_stage".into(), format!("topic: {stage}")),
            ("topic: name_counts".into(), format!("topic: {out}")),
            ("transactional_id_prefix: kappa-counts".into(), format!("transactional_id_prefix: {out}")),
        ];
        let mut replace: Vec<(&str, &str)> = owned.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        replace.extend_from_slice(extra);
        weir_tests::job_file(file, &replace)
    };
    let v1 = cluster.submit(&cluster.write("counts-v1.yaml", &counts_job("kappa-counts.yaml", &counts, &[])), &[])?;
    // Minutes 0-3 fire within the first 3,000 events; minute 4 stays open.
    read_committed(&bootstrap, &counts, 24, LONG).with_context(|| cluster.logs())?;
    let target = format!("file://{}", cluster.dir.path().join("savepoints").display());
    let stopped = cluster.weir_json(&["stop", &v1, "--savepoint", &target])?;
    assert_eq!(stopped["job_state"], "FINISHED", "{stopped:#}\n{}", cluster.logs());
    let sp = stopped["location"].as_str().unwrap().to_string();
    let before = window_counts(&read_committed(&bootstrap, &counts, 24, LONG)?);
    assert!(before.len() >= 24 && before.len() < 60, "stopped mid-stream: {} windows", before.len());

    // The savepoint names the source's Kafka positions and the open windows.
    let inspect = cluster.weir_json(&["savepoint", "inspect", &sp])?;
    let ops = inspect["operators"].as_array().unwrap();
    let source = ops.iter().find(|o| o["uid"] == "staged").unwrap();
    let positions: Vec<&serde_json::Value> = source["states"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "offsets")
        .flat_map(|s| s["values"].as_array().unwrap())
        .collect();
    assert_eq!(positions.len(), 2, "one position per partition of the stage: {source:#}");
    assert!(positions.iter().all(|p| p["topic"] == stage.as_str() && p["offset"].as_u64() > Some(0)), "{source:#}");
    let window = ops.iter().find(|o| o["uid"] == "per-name").unwrap();
    assert!(window["states"][0]["entries"].as_u64() > Some(0), "open windows in the savepoint: {window:#}");

    // 1 -> 5 minutes under the same uid: refused, saying why.
    let five = counts_job("kappa-counts.yaml", &other, &[("size: 1m", "size: 5m")]);
    let file = cluster.write("counts-5m-same-uid.yaml", &five);
    let out = cluster.weir(&["run", file.to_str().unwrap(), "--from-savepoint", &sp])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("size=1m") && err.contains("size=5m"), "{err}");

    // Version 2 from the savepoint: a filter added, parallelism 3.
    let v2 = cluster.submit(
        &cluster.write("counts-v2.yaml", &counts_job("kappa-counts-v2.yaml", &counts, &[])),
        &["--from-savepoint", &sp],
    )?;
    produce(&bootstrap, &events, &kappa_events(3000, 6000))?;
    read_committed(&bootstrap, &stage, 6000, LONG).with_context(|| cluster.logs())?;
    // An event an hour later moves event time past every window of the data.
    produce(
        &bootstrap,
        &events,
        &[(None, None, format!(r#"{{"id":6000,"name_id":0,"ts":{}}}"#, KAPPA_BASE + 3_600_000))],
    )?;
    let all = window_counts(&settle_and_read(&cluster, &v2, &bootstrap, &counts, 60)?);
    let expected: BTreeMap<(String, u64), u64> =
        (0..10u64).flat_map(|m| (0..6).map(move |n| ((format!("name-{n}"), KAPPA_BASE + m * 60_000), 100))).collect();
    assert_eq!(all, expected, "every 1-minute window exactly once, counted exactly\n{}", cluster.logs());
    let status = cluster.weir_json(&["status", &v2])?;
    assert!(
        status["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["vertex"].as_str().unwrap().contains("per-name"))
            .count()
            == 3
    );

    // Replay: the same job file, 5-minute windows, parallelism 3, from the earliest offset.
    let replayed =
        counts_job("kappa-counts.yaml", &replay, &[("size: 1m", "size: 5m"), ("parallelism: 2", "parallelism: 3")]);
    let r = cluster.submit(&cluster.write("replay.yaml", &replayed), &[])?;
    let five_minutes = window_counts(&settle_and_read(&cluster, &r, &bootstrap, &replay, 12)?);
    let totals = |w: &BTreeMap<(String, u64), u64>| {
        let mut t: BTreeMap<String, u64> = BTreeMap::new();
        for ((name, _), n) in w {
            *t.entry(name.clone()).or_default() += n;
        }
        t
    };
    assert_eq!(five_minutes.len(), 12, "{five_minutes:?}");
    assert_eq!(totals(&five_minutes), totals(&all), "the replay catches up to the same totals");

    // Under a new uid the 5-minute window starts empty, once the old state is let go.
    cluster.weir_json(&["cancel", &v2])?;
    cluster.wait_state(&v2, &["CANCELED"], LONG)?;
    let renamed = counts_job("kappa-counts.yaml", &other, &[("size: 1m", "size: 5m"), ("per-name", "per-name-5m")]);
    let file = cluster.write("counts-5m-new-uid.yaml", &renamed);
    let out = cluster.weir(&["run", file.to_str().unwrap(), "--from-savepoint", &sp])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("`per-name`") && err.contains("--allow-non-restored-state"), "{err}");
    let id = cluster.submit(&file, &["--from-savepoint", &sp, "--allow-non-restored-state"])?;
    cluster.wait_state(&id, &["RUNNING"], LONG)?;
    assert!(cluster.jobmanager.log().contains("per-name"), "the dropped state is logged");
    Ok(())
}

/// A SQL job upgraded through a savepoint: a changed projection, an added
/// filter and another sink path keep the window state (every window's count
/// is exact across the two versions); other grouping keys give the window
/// another uid, so the restore is refused without
/// `--allow-non-restored-state`.
#[test]
fn a_sql_job_keeps_its_window_state_across_query_edits_through_a_savepoint() -> anyhow::Result<()> {
    const BASE: u64 = 1_772_352_000_000; // 2026-03-01 08:00:00 UTC
    let (_, bootstrap, inp, _) = setup("sql-upgrade", 1, 1)?;
    let click = |i: u64| {
        let ms = BASE + i * 10;
        let s = ms / 1000 - 1_772_352_000;
        let ts = format!("2026-03-01 08:{:02}:{:02}.{:03}", s / 60, s % 60, ms % 1000);
        (Some(0), None, format!(r#"{{"page":"p{}","user":{},"ts":"{ts}"}}"#, i % 2, i % 3))
    };
    // 4,000 clicks: 40 s of event time, 4 windows, 500 per page per window.
    produce(&bootstrap, &inp, &(0..1500).map(click).collect::<Vec<_>>())?;
    let cluster = Cluster::start(1, 4, "2s")?;
    let version = |dir: &str, edits: &[(&str, &str)]| {
        let path = cluster.dir.path().join(dir);
        let mut replace = vec![
            ("127.0.0.1:9092", bootstrap.as_str()),
            ("'topic' = 'clicks'", ""),
            ("/tmp/clicks-per-page", path.to_str().unwrap()),
        ];
        let topic = format!("'topic' = '{inp}'");
        replace[1].1 = &topic;
        replace.extend_from_slice(edits);
        let text = weir_tests::job_file("clicks-per-page.sql", &replace);
        (cluster.write(&format!("{dir}.sql"), &text), path)
    };
    let (v1_file, v1_dir) = version("v1", &[]);
    let v1 = cluster.submit(&v1_file, &[])?;
    // Window 0 (clicks 0..1000) fires once the watermark passes 08:00:10.
    wait_until("the first window committed", LONG, || Ok((committed_clicks(&v1_dir).len() >= 2).then_some(())))
        .with_context(|| cluster.logs())?;
    let target = format!("file://{}", cluster.dir.path().join("savepoints").display());
    let stopped = cluster.weir_json(&["stop", &v1, "--savepoint", &target])?;
    assert_eq!(stopped["job_state"], "FINISHED", "{stopped:#}");
    let sp = stopped["location"].as_str().unwrap().to_string();

    // Other grouping keys: the window's uid changes and its state would be lost.
    let (by_user, _) = version(
        "by-user",
        &[("SELECT page,", "SELECT CAST(`user` AS STRING),"), ("GROUP BY page,", "GROUP BY `user`,")],
    );
    let out = cluster.weir(&["run", by_user.to_str().unwrap(), "--from-savepoint", &sp])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("clicks.tumbling-") && err.contains("--allow-non-restored-state"),
        "{err}"
    );

    // Projection, filter and sink path changed: the state carries over.
    let (v2_file, v2_dir) = version(
        "v2",
        &[
            ("SELECT page, window_start", "SELECT UPPER(page) AS page, window_start"),
            ("INTERVAL '10' SECOND))\n", "INTERVAL '10' SECOND))\nWHERE `user` >= 0\n"),
        ],
    );
    let v2 = cluster.submit(&v2_file, &["--from-savepoint", &sp])?;
    cluster.wait_state(&v2, &["RUNNING"], LONG)?;
    let mut rest: Vec<_> = (1500..4000).map(click).collect();
    rest.push(click(300_000)); // 50 minutes later: every window of the data fires
    produce(&bootstrap, &inp, &rest)?;
    wait_until("every window committed", LONG, || {
        Ok((committed_clicks(&v1_dir).len() + committed_clicks(&v2_dir).len() >= 8).then_some(()))
    })
    .with_context(|| cluster.logs())?;
    let mut all = committed_clicks(&v1_dir);
    for ((page, start), n) in committed_clicks(&v2_dir) {
        assert!(
            all.insert((page.to_lowercase(), start.clone()), n).is_none(),
            "{page} {start} written by both versions"
        );
    }
    let expected: BTreeMap<(String, String), u64> = (0..4)
        .flat_map(|w| (0..2).map(move |p| ((format!("p{p}"), format!("2026-03-01 08:00:{:02}.000", w * 10)), 500)))
        .collect();
    assert_eq!(all, expected, "{}", cluster.logs());
    Ok(())
}

/// `jobs/kappa-counts.sql`, the SQL form of the Kappa counting job, over a
/// staged topic: every (name, minute) counted exactly once, exactly the
/// counts of the YAML version (100 per name per minute).
#[test]
fn the_kappa_counting_job_in_sql_counts_every_window_exactly() -> anyhow::Result<()> {
    let kafka = shared_kafka();
    let bootstrap = kafka.bootstrap();
    let [stage, counts] = ["events-stage-sql", "name-counts-sql"].map(|t| unique(t, '-'));
    kafka.create_topic(&stage, 2)?;
    kafka.create_topic(&counts, 1)?;
    // Five minutes of staged events, then one an hour later in each
    // partition to move event time past them.
    let mut staged: Vec<_> = (0..3000u64)
        .map(|i| {
            let v =
                format!(r#"{{"id":{i},"name_id":{},"ts":{},"name":"name-{}"}}"#, i % 6, KAPPA_BASE + i * 100, i % 6);
            (Some((i % 2) as i32), None, v)
        })
        .collect();
    for p in 0..2 {
        let v = format!(r#"{{"id":9999,"name_id":0,"ts":{},"name":"name-0"}}"#, KAPPA_BASE + 3_600_000);
        staged.push((Some(p), None, v));
    }
    produce(&bootstrap, &stage, &staged)?;
    let script = weir_tests::job_file(
        "kappa-counts.sql",
        &[
            ("127.0.0.1:9092", &bootstrap),
            ("'topic' = 'events_stage'", &format!("'topic' = '{stage}'")),
            ("'topic' = 'name_counts'", &format!("'topic' = '{counts}'")),
            (
                "'sink.transactional-id-prefix' = 'kappa-counts'",
                &format!("'sink.transactional-id-prefix' = '{counts}'"),
            ),
        ],
    );
    let cluster = Cluster::start(1, 4, "2s")?;
    let job = cluster.submit(&cluster.write("kappa-counts.sql", &script), &[])?;
    let reads = settle_and_read(&cluster, &job, &bootstrap, &counts, 30)?;
    let mut got: BTreeMap<(String, String), u64> = BTreeMap::new();
    for v in values(&reads) {
        let key = (v["name"].as_str().unwrap().to_string(), v["window_start"].as_str().unwrap().to_string());
        assert!(got.insert(key.clone(), v["events"].as_u64().unwrap()).is_none(), "window {key:?} written twice");
    }
    // KAPPA_BASE is 2023-11-14 22:15:00 UTC.
    let expected: BTreeMap<(String, String), u64> = (0..5)
        .flat_map(|m| (0..6).map(move |n| ((format!("name-{n}"), format!("2023-11-14 22:{:02}:00.000", 15 + m)), 100)))
        .collect();
    assert_eq!(got, expected, "{}", cluster.logs());
    assert!(reads.iter().all(|r| r.key.as_deref().is_some_and(|k| k.starts_with("name-"))));
    Ok(())
}

/// The source's consumer lag is exported per partition and falls to zero
/// once the job has read everything.
#[test]
fn consumer_lag_is_exported_per_partition() -> anyhow::Result<()> {
    let (_kafka, bootstrap, inp, out) = setup("lag", 3, 1)?;
    produce(&bootstrap, &inp, &input(3000, 3))?;
    let mut cluster = Cluster::start(0, 2, "2s")?;
    let metrics = format!("127.0.0.1:{}", weir_tests::free_port());
    cluster.start_taskmanager("tm-a", 4, &[("WEIR_TASKMANAGER_METRICS_ADDR", metrics.as_str())])?;
    let job =
        cluster.submit(&cluster.write("lag.yaml", &pass_through_job(&bootstrap, &inp, &out, "", "500ms")), &[])?;
    read_committed(&bootstrap, &out, 3000, LONG).with_context(|| cluster.logs())?;
    wait_until("zero lag on every partition", LONG, || {
        let (_, text) = weir_tests::http_get(&metrics, "/metrics")?;
        let lags: Vec<f64> = (0..3)
            .flat_map(|p| {
                let p = p.to_string();
                weir_tests::metric_values(
                    &text,
                    "weir_kafka_consumer_lag_records",
                    &[("job_id", job.as_str()), ("topic", inp.as_str()), ("partition", p.as_str())],
                )
            })
            .collect();
        Ok((lags.len() == 3 && lags.iter().all(|l| *l == 0.0)).then_some(()))
    })?;
    Ok(())
}

/// Purchases for the purchase topology: customer `c{i % 7}`, item
/// `item-{i}`, with a card number and amount derived from `i`; keyed by
/// customer, so that each customer's purchases keep their order.
fn purchases(from: u64, n: u64) -> Vec<(Option<i32>, Option<String>, String)> {
    (from..from + n)
        .map(|i| {
            let customer = format!("c{}", i % 7);
            let value = serde_json::json!({
                "customer_id": customer,
                "item": format!("item-{i}"),
                "quantity": 1 + (i % 3) as i64,
                "total_cents": 150 + (i * 37 % 10_000) as i64,
                "zip_code": format!("{:05}", 10_000 + i % 5),
                "purchased_at": format!("2026-03-{:02}T08:00:00Z", 1 + i % 28),
                "card_number": format!("1234-5678-{:04}-{:04}", i % 10_000, (i * 7) % 10_000),
            });
            (None, Some(customer), value.to_string())
        })
        .collect()
}

/// The purchase topology of `examples/purchase-topology`, as an
/// application image runs it: the Helm chart rendered with `application`
/// set, its job manager, task managers and submission run as rendered,
/// exactly-once through a task manager's kill -9.
#[test]
fn the_purchase_topology_application_is_exactly_once_through_a_kill() -> anyhow::Result<()> {
    use std::collections::HashMap;
    use std::process::Command;
    use weir_tests::chart::{find, render, strings, Local, Pod};
    use weir_tests::{bin, free_ports};

    const N: u64 = 6_000;
    let kafka = shared_kafka();
    let bootstrap = kafka.bootstrap();
    let input = unique("transactions", '-');
    let topics: Vec<(&str, String)> =
        ["patterns", "rewards", "purchases"].into_iter().map(|t| (t, unique(t, '-'))).collect();
    kafka.create_topic(&input, 2)?;
    for (_, t) in &topics {
        kafka.create_topic(t, 2)?;
    }
    let dir = tempfile::tempdir()?;
    let mut set = vec![
        format!("storage.checkpoints=file://{}", dir.path().join("checkpoints").display()),
        "taskmanager.replicas=2".into(),
        "application=purchase-topology".into(),
        "job.enabled=true".into(),
        "job.name=purchases".into(),
        format!("job.args.bootstrap={bootstrap}"),
        format!("job.args.input={input}"),
        "job.args.parallelism=2".into(),
        "job.args.checkpoint-interval=200ms".into(),
    ];
    set.extend(topics.iter().map(|(arg, t)| format!("job.args.{arg}={t}")));
    let args: Vec<String> = set.iter().flat_map(|s| ["--set".to_string(), s.clone()]).collect();
    let docs = render(&args.iter().map(String::as_str).collect::<Vec<_>>())?;

    let config = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["data"]["weir.yaml"].is_string())
        .context("the ConfigMap holding weir.yaml")?;
    let config_path = dir.path().join("weir.yaml");
    let state = dir.path().join("state");
    let weir_yaml = config["data"]["weir.yaml"].as_str().unwrap_or_default();
    std::fs::write(&config_path, weir_yaml.replace("/var/lib/weir/state", &state.display().to_string()))?;
    let mut local = Local {
        jm_url: String::new(),
        mounts: vec![("/etc/weir/weir.yaml".into(), config_path.display().to_string())],
    };
    let mut free = free_ports(16);
    let jm = Pod::from(find(&docs, "Deployment", "jobmanager")?, "weir-jobmanager-0", &local, &mut free);
    assert_eq!(jm.command[..2], ["purchase-topology", "jobmanager"], "the application's binary in its role");
    local.jm_url = format!("http://{}", jm.addr("rpc"));
    let mut jm_proc = jm.start("jobmanager", dir.path())?;
    jm.probe("readinessProbe", &mut jm_proc)?;
    let tm_workload = find(&docs, "StatefulSet", "taskmanager")?;
    let tms: Vec<Pod> =
        (0..2).map(|i| Pod::from(tm_workload, &format!("weir-taskmanager-{i}"), &local, &mut free)).collect();
    let mut tm_procs: Vec<_> = tms
        .iter()
        .enumerate()
        .map(|(i, t)| t.start(&format!("taskmanager-{i}"), dir.path()))
        .collect::<Result<_, _>>()?;
    for (t, p) in tms.iter().zip(&mut tm_procs) {
        t.probe("readinessProbe", p)?;
    }

    // The rendered submission: `purchase-topology run purchases --arg ...`.
    let submit = &find(&docs, "Job", "submit")?["spec"]["template"]["spec"]["containers"][0];
    let command = strings(&submit["command"]);
    assert_eq!(command, ["purchase-topology"]);
    let no_ports = HashMap::new();
    let run_args: Vec<String> = strings(&submit["args"]).iter().map(|a| local.fix(a, &no_ports)).collect();
    let out = Command::new(bin("purchase-topology")).args(&run_args).args(["--output", "json"]).output()?;
    assert!(out.status.success(), "submission: {}", String::from_utf8_lossy(&out.stderr));
    let job = serde_json::from_slice::<serde_json::Value>(&out.stdout)?["job_id"].as_str().unwrap().to_string();
    let status = |job: &str| -> anyhow::Result<serde_json::Value> {
        let out = Command::new(bin("purchase-topology"))
            .args(["status", job, "--jobmanager", &local.jm_url, "--output", "json"])
            .output()?;
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let completed = |job: &str| -> anyhow::Result<u64> {
        let s = status(job)?;
        let list = s["checkpoints"].as_array().cloned().unwrap_or_default();
        Ok(list.iter().filter(|c| c["status"] == "COMPLETED").filter_map(|c| c["id"].as_u64()).max().unwrap_or(0))
    };
    let logs = |procs: &[weir_tests::Proc]| procs.iter().map(|p| p.log()).collect::<Vec<_>>().join("\n");

    // Half the purchases, a checkpoint, a kill -9, the pod back, the rest.
    produce(&bootstrap, &input, &purchases(0, N / 2))?;
    wait_until("a checkpoint", LONG, || Ok((completed(&job)? >= 2).then_some(()))).with_context(|| logs(&tm_procs))?;
    tm_procs[1].kill9();
    tm_procs[1] = tms[1].start("taskmanager-1-restarted", dir.path())?;
    produce(&bootstrap, &input, &purchases(N / 2, N / 2))?;

    read_committed(&bootstrap, &topics[2].1, N as usize, LONG).with_context(|| logs(&tm_procs))?;
    let done = completed(&job)?;
    wait_until("two more checkpoints", LONG, || Ok((completed(&job)? >= done + 2).then_some(())))?;
    let read = |t: &str| read_committed(&bootstrap, t, N as usize, LONG);
    let (patterns, rewards, purchased) = (read(&topics[0].1)?, read(&topics[1].1)?, read(&topics[2].1)?);
    assert!(status(&job)?["restarts"].as_u64().unwrap_or(0) >= 1, "the kill restarted the job");

    // Purchases: each once, masked.
    let input_rows = purchases(0, N);
    let values = |reads: &[Read]| -> Vec<serde_json::Value> {
        reads.iter().map(|r| serde_json::from_str(&r.value).expect("JSON")).collect()
    };
    let got = values(&purchased);
    assert_eq!(got.len(), N as usize, "each purchase once in the purchases topic");
    let mut items: Vec<&str> = got.iter().map(|v| v["item"].as_str().unwrap()).collect();
    items.sort_unstable();
    items.dedup();
    assert_eq!(items.len(), N as usize);
    for v in &got {
        let card = v["card_number"].as_str().unwrap();
        assert!(card.starts_with("xxxx-xxxx-xxxx-") && card.len() == 19, "masked: {card}");
    }
    // Patterns: one per purchase, with the date only.
    let pats = values(&patterns);
    assert_eq!(pats.len(), N as usize, "each purchase once in the patterns topic");
    assert!(pats.iter().all(|p| p["date"].as_str().is_some_and(|d| d.len() == 10)));
    // Rewards: per customer, running totals of points in purchase order,
    // without a gap or a repeat across the kill.
    let mut want: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (_, customer, value) in &input_rows {
        let v: serde_json::Value = serde_json::from_str(value)?;
        let totals = want.entry(customer.clone().unwrap()).or_default();
        let before = totals.last().copied().unwrap_or(0);
        totals.push(before + v["total_cents"].as_i64().unwrap() / 100);
    }
    let mut got_rewards: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in values(&rewards) {
        got_rewards
            .entry(r["customer_id"].as_str().unwrap().to_string())
            .or_default()
            .push(r["total_points"].as_i64().unwrap());
    }
    assert_eq!(got_rewards, want, "reward points per customer, exactly once");
    drop(tm_procs);
    drop(jm_proc);
    Ok(())
}

/// Rows of a Kappa view table in a database: (name, window start) -> events.
fn table_counts(
    db: &weir_tests::databases::Database,
    name: &str,
    table: &str,
) -> anyhow::Result<BTreeMap<(String, u64), u64>> {
    let text = db.execute(name, &format!("SELECT name, window_start, events FROM {table}"))?;
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        out.insert((f[0].to_string(), f[1].parse()?), f[2].parse()?);
    }
    Ok(out)
}

/// The Kappa pipeline ending in MySQL (`jobs/kappa-mysql.yaml`, on MariaDB):
/// staged events counted per name and minute, upserted exactly once through
/// a `kill -9` of a task manager mid-run; then the replay of the stage with
/// 5-minute windows into a second table while the first job keeps running.
/// Both tables hold exactly the counts computed from the input.
#[test]
fn kappa_counts_into_mysql_stay_exact_through_a_kill_and_replay_into_a_new_table() -> anyhow::Result<()> {
    use weir_tests::databases::{shared, Flavor, MARIADB_PASSWORD};
    let kafka = shared_kafka();
    let bootstrap = kafka.bootstrap();
    let [events, names, stage] = ["mysql-events", "mysql-names", "mysql-stage"].map(|t| unique(t, '-'));
    for (t, n) in [(&events, 1), (&names, 1), (&stage, 2)] {
        kafka.create_topic(t, n)?;
    }
    let table: Vec<_> =
        (0..6).map(|n| (None, Some(n.to_string()), format!(r#"{{"name_id":{n},"name":"name-{n}"}}"#))).collect();
    produce(&bootstrap, &names, &table)?;
    produce(&bootstrap, &events, &kappa_events(0, 3000))?;
    let db = shared(Flavor::MariaDb);
    let dbname = format!("kappa_{}", std::process::id());
    db.create_database(&dbname)?;
    for t in ["name_counts", "name_counts_5m"] {
        db.execute(
            &dbname,
            &format!("CREATE TABLE {t} (name VARCHAR(64) NOT NULL, window_start BIGINT NOT NULL, window_end BIGINT NOT NULL, events BIGINT NOT NULL, PRIMARY KEY (name, window_start))"),
        )?;
    }

    // The task managers read the database password from their environment.
    let env = [("WEIR_MYSQL_PASSWORD", MARIADB_PASSWORD)];
    let mut cluster = Cluster::start(0, 2, "1s")?;
    cluster.start_taskmanager("tm-a", 4, &env)?;
    cluster.start_taskmanager("tm-b", 4, &env)?;
    let staging = weir_tests::job_file(
        "kappa-staging.yaml",
        &[
            ("127.0.0.1:9092", &bootstrap),
            ("topic: events\n", &format!("topic: {events}\n")),
            ("topic: names\n", &format!("topic: {names}\n")),
            ("topic: events_stage", &format!("topic: {stage}")),
            ("transactional_id_prefix: kappa-staging", &format!("transactional_id_prefix: {stage}")),
        ],
    );
    cluster.submit(&cluster.write("staging.yaml", &staging), &[])?;
    read_committed(&bootstrap, &stage, 3000, LONG).with_context(|| cluster.logs())?;

    let url = db.url(&dbname);
    let counts_job = |extra: &[(&str, &str)]| {
        let mut replace = vec![
            ("127.0.0.1:9092", bootstrap.as_str()),
            ("topic: events_stage", ""),
            ("jdbc:mysql://127.0.0.1:3306/kappa", url.as_str()),
        ];
        let topic = format!("topic: {stage}");
        replace[1].1 = &topic;
        replace.extend_from_slice(extra);
        weir_tests::job_file("kappa-mysql.yaml", &replace)
    };
    let v1 = cluster.submit(&cluster.write("counts.yaml", &counts_job(&[])), &[])?;
    // Minutes 0-3 fire within the first 3,000 events.
    wait_until("the first windows in MySQL", LONG, || {
        Ok((table_counts(db, &dbname, "name_counts")?.len() >= 12).then_some(()))
    })
    .with_context(|| cluster.logs())?;
    cluster.taskmanager("tm-b").kill9();
    cluster.start_taskmanager("tm-b", 4, &env)?;
    produce(&bootstrap, &events, &kappa_events(3000, 6000))?;
    // An event an hour later moves event time past every window of the data.
    produce(
        &bootstrap,
        &events,
        &[(None, None, format!(r#"{{"id":6000,"name_id":0,"ts":{}}}"#, KAPPA_BASE + 3_600_000))],
    )?;
    let expected: BTreeMap<(String, u64), u64> =
        (0..10u64).flat_map(|m| (0..6).map(move |n| ((format!("name-{n}"), KAPPA_BASE + m * 60_000), 100))).collect();
    wait_until("every minute in MySQL", LONG, || {
        Ok((table_counts(db, &dbname, "name_counts")?.len() >= 60).then_some(()))
    })
    .with_context(|| cluster.logs())?;
    assert_eq!(table_counts(db, &dbname, "name_counts")?, expected, "{}", cluster.logs());
    let status = cluster.weir_json(&["status", &v1])?;
    assert!(status["restarts"].as_u64().unwrap_or(0) >= 1, "the kill did not restart the job: {status}");

    // The replay: 5-minute windows into a second table, from the earliest
    // offset, while the first job keeps running.
    let replay = counts_job(&[("size: 1m", "size: 5m"), ("table: name_counts", "table: name_counts_5m")]);
    let r = cluster.submit(&cluster.write("replay.yaml", &replay), &[])?;
    let five: BTreeMap<(String, u64), u64> =
        (0..2u64).flat_map(|m| (0..6).map(move |n| ((format!("name-{n}"), KAPPA_BASE + m * 300_000), 500))).collect();
    wait_until("the replay in MySQL", LONG, || {
        Ok((table_counts(db, &dbname, "name_counts_5m")?.len() >= 12).then_some(()))
    })
    .with_context(|| cluster.logs())?;
    assert_eq!(table_counts(db, &dbname, "name_counts_5m")?, five, "{}", cluster.logs());
    for job in [&v1, &r] {
        assert_eq!(cluster.weir_json(&["status", job])?["state"], "RUNNING");
    }
    Ok(())
}

/// The Kappa pipeline's keyword extension (`jobs/kappa-keywords.yaml`): the
/// names seen in `events_stage` per 30-minute window land in a
/// MongoDB-compatible server (FerretDB), one document per name and window,
/// through a `kill -9` of a task manager mid-run. Events come every second
/// for 100 minutes, so four windows close; the collection holds exactly
/// their counts.
#[test]
fn kappa_keywords_land_in_mongodb_once_per_window_through_a_kill() -> anyhow::Result<()> {
    let kafka = shared_kafka();
    let bootstrap = kafka.bootstrap();
    let mongo = weir_tests::mongo::shared();
    let [events, names, stage] = ["kw-events", "kw-names", "kw-stage"].map(|t| unique(t, '-'));
    for (t, n) in [(&events, 1), (&names, 1), (&stage, 2)] {
        kafka.create_topic(t, n)?;
    }
    let table: Vec<_> =
        (0..6).map(|n| (None, Some(n.to_string()), format!(r#"{{"name_id":{n},"name":"name-{n}"}}"#))).collect();
    produce(&bootstrap, &names, &table)?;
    let event = |i: u64| (None, None, format!(r#"{{"id":{i},"name_id":{},"ts":{}}}"#, i % 6, KAPPA_BASE + i * 1000));
    produce(&bootstrap, &events, &(0..3000).map(event).collect::<Vec<_>>())?;

    let mut cluster = Cluster::start(2, 4, "1s")?;
    let staging = weir_tests::job_file(
        "kappa-staging.yaml",
        &[
            ("127.0.0.1:9092", &bootstrap),
            ("topic: events\n", &format!("topic: {events}\n")),
            ("topic: names\n", &format!("topic: {names}\n")),
            ("topic: events_stage", &format!("topic: {stage}")),
            ("transactional_id_prefix: kappa-staging", &format!("transactional_id_prefix: {stage}")),
        ],
    );
    cluster.submit(&cluster.write("staging.yaml", &staging), &[])?;
    let database = format!("kappa_{}", std::process::id());
    let keywords = weir_tests::job_file(
        "kappa-keywords.yaml",
        &[
            ("127.0.0.1:9092", &bootstrap),
            ("topic: events_stage", &format!("topic: {stage}")),
            ("mongodb://127.0.0.1:27017", &mongo.uri()),
            ("database: kappa", &format!("database: {database}")),
        ],
    );
    let job = cluster.submit(&cluster.write("keywords.yaml", &keywords), &[])?;
    // The first window closes 15 minutes of event time in (KAPPA_BASE is
    // 15 minutes into a 30-minute window).
    wait_until("the first window in MongoDB", LONG, || {
        Ok((mongo.documents(&database, "keywords")?.len() >= 6).then_some(()))
    })
    .with_context(|| cluster.logs())?;
    cluster.taskmanager("tm-b").kill9();
    cluster.start_taskmanager("tm-b", 4, &[])?;
    let mut rest: Vec<_> = (3000..6000).map(event).collect();
    // An event hours later moves event time past every window of the data.
    rest.push((None, None, format!(r#"{{"id":6000,"name_id":0,"ts":{}}}"#, KAPPA_BASE + 3 * 3_600_000)));
    produce(&bootstrap, &events, &rest)?;
    let mut expected: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for i in 0..6000u64 {
        let ts = (KAPPA_BASE + i * 1000) as i64;
        *expected.entry((format!("name-{}", i % 6), ts - ts % 1_800_000)).or_default() += 1;
    }
    assert_eq!(expected.len(), 6 * 4);
    let read = || -> anyhow::Result<BTreeMap<(String, i64), i64>> {
        let mut out = BTreeMap::new();
        for d in mongo.documents(&database, "keywords")? {
            let (name, start) = (d.get_str("name")?.to_string(), d.get_i64("window_start")?);
            let id = d.get_document("_id")?;
            anyhow::ensure!(id.get_str("name")? == name && id.get_i64("window_start")? == start, "{d}");
            anyhow::ensure!(d.get_i64("window_end")? == start + 1_800_000, "{d}");
            out.insert((name, start), d.get_i64("events")?);
        }
        Ok(out)
    };
    wait_until("every window in MongoDB", LONG, || Ok((read()?.len() >= expected.len()).then_some(())))
        .with_context(|| cluster.logs())?;
    assert_eq!(read()?, expected, "{}", cluster.logs());
    let status = cluster.weir_json(&["status", &job])?;
    assert!(status["restarts"].as_u64().unwrap_or(0) >= 1, "the kill did not restart the job: {status}");
    Ok(())
}

/// Rows of the Parquet files under `dir` (recursively, hidden parts
/// skipped): (relative directory, id, ts) per row.
fn parquet_rows(dir: &std::path::Path) -> anyhow::Result<Vec<(String, i64, i64)>> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".parquet") && !name.starts_with('.') {
                let rel = d.strip_prefix(dir)?.to_string_lossy().to_string();
                let bytes = bytes::Bytes::from(std::fs::read(&path)?);
                for batch in ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()? {
                    let batch = batch?;
                    let col = |n: &str| -> anyhow::Result<Vec<i64>> {
                        let c = batch.column_by_name(n).context("a column is missing")?;
                        let c = c.as_any().downcast_ref::<arrow::array::Int64Array>().context("not int64")?;
                        Ok(c.values().to_vec())
                    };
                    for (id, ts) in col("id")?.into_iter().zip(col("ts")?) {
                        out.push((rel.clone(), id, ts));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The web-events pipeline (`jobs/web-events-parquet.yaml`): JSON events
/// from Kafka into hour-partitioned Parquet files on an S3-compatible
/// server, through a `kill -9` of a task manager mid-run. Read back with a
/// Parquet reader, every event is there exactly once, in its hour.
#[test]
fn web_events_land_in_hourly_parquet_files_on_s3_exactly_once_through_a_kill() -> anyhow::Result<()> {
    use weir_tests::s3::shared_s3;
    const N: i64 = 20_000;
    const BASE: i64 = 1_772_352_000_000; // 2026-03-01 08:00:00 UTC
    let s3 = shared_s3();
    let kafka = shared_kafka();
    let bootstrap = kafka.bootstrap();
    let topic = unique("web-events", '-');
    kafka.create_topic(&topic, 2)?;
    // 0.54 s of event time apart: three hours in all.
    let event = |i: i64| {
        let body = format!(
            r#"{{"id":{i},"name":"user-{}","color":"{}","user_agent":"Mozilla/5.0 (X11; Linux x86_64)","ts":{}}}"#,
            i % 97,
            ["red", "green", "blue"][(i % 3) as usize],
            BASE + i * 540
        );
        (Some((i % 2) as i32), Some(i.to_string()), body)
    };
    produce(&bootstrap, &topic, &(0..N / 2).map(event).collect::<Vec<_>>())?;
    let prefix = unique("web-events", '-');
    let env = s3.env();
    let mut cluster = Cluster::start(0, 2, "1s")?;
    cluster.start_taskmanager("tm-a", 2, &env)?;
    cluster.start_taskmanager("tm-b", 2, &env)?;
    let job = weir_tests::job_file(
        "web-events-parquet.yaml",
        &[
            ("127.0.0.1:9092", &bootstrap),
            ("topic: web-events", &format!("topic: {topic}")),
            ("s3://weir-lake/web-events", &format!("s3://weir-lake/{prefix}")),
            ("http://127.0.0.1:9000", &s3.endpoint()),
        ],
    );
    let id = cluster.submit(&cluster.write("web-events.yaml", &job), &[])?;
    let dir = s3.local("weir-lake", &prefix);
    wait_until("the first Parquet files", LONG, || Ok((!parquet_rows(&dir)?.is_empty()).then_some(())))
        .with_context(|| cluster.logs())?;
    cluster.taskmanager("tm-b").kill9();
    cluster.start_taskmanager("tm-b", 2, &env)?;
    produce(&bootstrap, &topic, &(N / 2..N).map(event).collect::<Vec<_>>())?;
    wait_until("every event in Parquet", LONG, || Ok((parquet_rows(&dir)?.len() >= N as usize).then_some(())))
        .with_context(|| cluster.logs())?;
    // Two more checkpoints: anything still to come would be in them.
    let done = completed_checkpoints(&cluster, &id)?;
    wait_until("two more checkpoints", LONG, || Ok((completed_checkpoints(&cluster, &id)? >= done + 2).then_some(())))?;
    let rows = parquet_rows(&dir)?;
    let mut ids: Vec<i64> = rows.iter().map(|r| r.1).collect();
    ids.sort();
    let dupes = ids.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!((ids.len(), dupes), (N as usize, 0), "every event exactly once\n{}", cluster.logs());
    assert_eq!(ids.first().zip(ids.last()), Some((&0, &(N - 1))));
    for (rel, id, ts) in &rows {
        let hour = (ts - BASE) / 3_600_000 + 8;
        assert_eq!(rel, &format!("dt=2026-03-01/hour={hour:02}"), "event {id} at {ts} in the wrong directory");
    }
    let hours: std::collections::BTreeSet<&String> = rows.iter().map(|r| &r.0).collect();
    assert_eq!(hours.len(), 3, "{hours:?}");
    let status = cluster.weir_json(&["status", &id])?;
    assert!(status["restarts"].as_u64().unwrap_or(0) >= 1, "the kill did not restart the job: {status}");
    Ok(())
}

/// The web-events pipeline into the lake and the search index in one job
/// (`jobs/web-events-lake-and-search.yaml`): JSON events from Kafka into
/// hour-partitioned JSON-lines files on HDFS and into a daily OpenSearch
/// index, through a `kill -9` of a task manager mid-run. The files hold
/// every event once; the index holds every event once (count and ids).
#[test]
fn web_events_land_in_the_lake_and_the_search_index_once_through_a_kill() -> anyhow::Result<()> {
    const N: i64 = 9_000;
    const BASE: i64 = 1_772_352_000_000; // 2026-03-01 08:00:00 UTC
    let dfs = weir_tests::dfs::shared();
    let search = weir_tests::search::shared();
    let kafka = shared_kafka();
    let bootstrap = kafka.bootstrap();
    let topic = unique("web-events-both", '-');
    kafka.create_topic(&topic, 2)?;
    // 0.9 s of event time apart: parts of three hours.
    let event = |i: i64| {
        let body = format!(
            r#"{{"id":{i},"name":"user-{}","color":"{}","user_agent":"Mozilla/5.0","ts":{}}}"#,
            i % 97,
            ["red", "green", "blue"][(i % 3) as usize],
            BASE + i * 900
        );
        (Some((i % 2) as i32), Some(i.to_string()), body)
    };
    produce(&bootstrap, &topic, &(0..N / 2).map(event).collect::<Vec<_>>())?;
    let prefix = unique("web-events-json", '-');
    let index_prefix = unique("web-events", '-');
    let index = format!("{index_prefix}-2026-03-01");
    let mut cluster = Cluster::start(2, 2, "1s")?;
    let job = weir_tests::job_file(
        "web-events-lake-and-search.yaml",
        &[
            ("127.0.0.1:9092", &bootstrap),
            ("topic: web-events", &format!("topic: {topic}")),
            ("hdfs://127.0.0.1:8020/weir-lake/web-events-json", &format!("{}/weir-lake/{prefix}", dfs.url())),
            ("http://127.0.0.1:9200", &search.url()),
            ("web-events-{ts", &format!("{index_prefix}-{{ts")),
        ],
    );
    let id = cluster.submit(&cluster.write("web-events.yaml", &job), &[])?;
    let dir = format!("weir-lake/{prefix}");
    wait_until("the first documents", LONG, || Ok((!search.documents(&index)?.is_empty()).then_some(())))
        .with_context(|| cluster.logs())?;
    cluster.taskmanager("tm-b").kill9();
    cluster.start_taskmanager("tm-b", 2, &[])?;
    produce(&bootstrap, &topic, &(N / 2..N).map(event).collect::<Vec<_>>())?;
    // Committed files only: hidden in-progress parts are not the lake's.
    let lines = |dir: &str| -> anyhow::Result<Vec<(String, serde_json::Value)>> {
        let mut out = Vec::new();
        for (rel, bytes) in dfs.files(dir)? {
            let hour_dir = rel.rsplit_once('/').map_or("", |(d, _)| d).to_string();
            for l in String::from_utf8_lossy(&bytes).lines() {
                out.push((hour_dir.clone(), serde_json::from_str(l).expect("a JSON line")));
            }
        }
        Ok(out)
    };
    wait_until("every event in the files and the index", LONG, || {
        Ok((lines(&dir)?.len() >= N as usize && search.documents(&index)?.len() >= N as usize).then_some(()))
    })
    .with_context(|| cluster.logs())?;
    let done = completed_checkpoints(&cluster, &id)?;
    wait_until("two more checkpoints", LONG, || Ok((completed_checkpoints(&cluster, &id)? >= done + 2).then_some(())))?;
    let rows = lines(&dir)?;
    let mut ids: Vec<i64> = rows.iter().map(|(_, v)| v["id"].as_i64().unwrap()).collect();
    ids.sort();
    let dupes = ids.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!((ids.len(), dupes), (N as usize, 0), "every event once in the files\n{}", cluster.logs());
    for (rel, v) in &rows {
        let hour = (v["ts"].as_i64().unwrap() - BASE) / 3_600_000 + 8;
        assert_eq!(rel, &format!("dt=2026-03-01/hour={hour:02}"), "{v} in the wrong directory");
    }
    let docs = search.documents(&index)?;
    let expected: Vec<String> = {
        let mut v: Vec<String> = (0..N).map(|i| i.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(docs.keys().cloned().collect::<Vec<_>>(), expected, "every event once in the index");
    let (_, count) = weir_tests::http_json("GET", &format!("{}/{index}/_count", search.url()), None)?;
    assert_eq!(count["count"], N, "{count}");
    let status = cluster.weir_json(&["status", &id])?;
    assert!(status["restarts"].as_u64().unwrap_or(0) >= 1, "the kill did not restart the job: {status}");
    Ok(())
}

/// Flink's `upsert-kafka` sink end to end: a `GROUP BY` whose `HAVING`
/// drops groups again, written exactly once through a `kill -9` of a task
/// manager. Read as a compacted topic (the last record of each key; a
/// tombstone removes it), the topic holds exactly the groups that qualify
/// at the end, keyed by their primary key as JSON.
#[test]
fn a_sql_group_by_into_upsert_kafka_compacts_to_the_final_groups_through_a_kill() -> anyhow::Result<()> {
    const N: i64 = 205_000;
    let (_, bootstrap, _, out) = setup("sql-upsert", 1, 2)?;
    let script = format!(
        "SET 'parallelism.default' = '2';
SET 'execution.checkpointing.interval' = '300ms';
CREATE TABLE bids (auction BIGINT, price BIGINT)
  WITH ('connector' = 'datagen', 'number-of-rows' = '{N}', 'rows-per-second' = '20000');
CREATE TABLE per_auction (auction BIGINT, bids BIGINT, top BIGINT, PRIMARY KEY (auction) NOT ENFORCED) WITH (
  'connector' = 'upsert-kafka', 'topic' = '{out}', 'properties.bootstrap.servers' = '{bootstrap}',
  'key.format' = 'json', 'value.format' = 'json', 'sink.delivery-guarantee' = 'exactly-once');
INSERT INTO per_auction SELECT auction, COUNT(*), MAX(price) FROM bids GROUP BY auction HAVING COUNT(*) <= 20;"
    );
    // One slot each: a subtask of every operator runs on tm-b.
    let mut cluster = Cluster::start(2, 1, "1s")?;
    let job = cluster.submit(&cluster.write("upsert.sql", &script), &[])?;
    wait_until("two completed checkpoints", LONG, || Ok((completed_checkpoints(&cluster, &job)? >= 2).then_some(())))
        .with_context(|| cluster.logs())?;
    cluster.taskmanager("tm-b").kill9();
    cluster.restart_taskmanager("tm-b")?;
    let status = cluster.wait_state(&job, &["FINISHED"], LONG).with_context(|| cluster.logs())?;
    assert!(status["restarts"].as_u64() >= Some(1), "the kill restarted the job: {status:#}");
    // The generator's formula: auction (i * 7919) % 10000, price 100 + (i * 31) % 10000.
    let mut groups: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for i in 0..N {
        let g = groups.entry((i * 7919) % 10_000).or_insert((0, 0));
        *g = (g.0 + 1, g.1.max(100 + (i * 31) % 10_000));
    }
    let expected: BTreeMap<String, serde_json::Value> = groups
        .iter()
        .filter(|(_, (n, _))| *n <= 20)
        .map(|(a, (n, top))| {
            (format!(r#"{{"auction":{a}}}"#), serde_json::json!({"auction": a, "bids": n, "top": top}))
        })
        .collect();
    assert!(expected.len() < groups.len(), "some groups stop qualifying");
    let compacted = compacted(&bootstrap, &out)?;
    assert_eq!(compacted.len(), expected.len(), "keys left after compaction");
    assert!(compacted == expected, "the compacted topic differs from the groups");
    Ok(())
}

/// The latest row of each key of an upsert topic (records read in order;
/// a tombstone removes its key).
fn compacted(bootstrap: &str, topic: &str) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
    let mut out = BTreeMap::new();
    for r in read_committed(bootstrap, topic, 0, LONG)? {
        let key = r.key.context("an upsert record has a key")?;
        if r.value.is_empty() {
            out.remove(&key);
        } else {
            out.insert(key, serde_json::from_str(&r.value)?);
        }
    }
    Ok(out)
}

/// A SQL group aggregation upgraded through a savepoint: a changed
/// projection, an added filter and another sink topic keep the per-key
/// counts (the new version's topic ends with the counts of all the clicks,
/// not only of those after the upgrade); other grouping keys give the
/// aggregation another uid, so the restore is refused without
/// `--allow-non-restored-state`.
#[test]
fn a_sql_group_by_keeps_its_state_across_query_edits_through_a_savepoint() -> anyhow::Result<()> {
    let (_, bootstrap, inp, out1) = setup("sql-group-upgrade", 1, 1)?;
    let out2 = unique("sql-group-upgrade-v2", '-');
    shared_kafka().create_topic(&out2, 1)?;
    let click = |i: u64| (Some(0), None, format!(r#"{{"page":"p{}","user":{}}}"#, i % 2, i % 3));
    produce(&bootstrap, &inp, &(0..1500).map(click).collect::<Vec<_>>())?;
    let cluster = Cluster::start(1, 4, "2s")?;
    let script = |out: &str, select: &str, filter: &str, group: &str| {
        format!(
            "SET 'execution.checkpointing.interval' = '300ms';
CREATE TABLE clicks (page STRING, `user` BIGINT) WITH ('connector' = 'kafka', 'topic' = '{inp}',
  'properties.bootstrap.servers' = '{bootstrap}', 'scan.startup.mode' = 'earliest-offset', 'format' = 'json');
CREATE TABLE per_page (page STRING, clicks BIGINT, PRIMARY KEY (page) NOT ENFORCED) WITH ('connector' = 'upsert-kafka',
  'topic' = '{out}', 'properties.bootstrap.servers' = '{bootstrap}', 'key.format' = 'raw', 'value.format' = 'json',
  'sink.delivery-guarantee' = 'exactly-once');
INSERT INTO per_page SELECT {select}, COUNT(*) FROM clicks {filter} GROUP BY {group};"
        )
    };
    let v1 = cluster.submit(&cluster.write("v1.sql", &script(&out1, "page", "", "page")), &[])?;
    let counts = |topic: &str| -> anyhow::Result<Vec<(String, i64)>> {
        Ok(compacted(&bootstrap, topic)?.into_iter().map(|(k, v)| (k, v["clicks"].as_i64().unwrap_or(-1))).collect())
    };
    let half = vec![("p0".to_string(), 750), ("p1".to_string(), 750)];
    wait_until("v1 counted the first clicks", LONG, || Ok((counts(&out1)? == half).then_some(())))
        .with_context(|| cluster.logs())?;
    let target = format!("file://{}", cluster.dir.path().join("savepoints").display());
    let stopped = cluster.weir_json(&["stop", &v1, "--savepoint", &target])?;
    assert_eq!(stopped["job_state"], "FINISHED", "{stopped:#}");
    let sp = stopped["location"].as_str().unwrap().to_string();

    // Other grouping keys: the aggregation's uid changes and its state would be lost.
    let by_user = cluster.write("by-user.sql", &script(&out2, "CAST(`user` AS STRING)", "", "`user`"));
    let run = cluster.weir(&["run", by_user.to_str().unwrap(), "--from-savepoint", &sp])?;
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("clicks.group-aggregate-") && err.contains("--allow-non-restored-state"),
        "{err}"
    );

    // Projection, filter and sink topic changed: the counts carry over.
    let v2_file = cluster.write("v2.sql", &script(&out2, "UPPER(page)", "WHERE `user` >= 0", "page"));
    let v2 = cluster.submit(&v2_file, &["--from-savepoint", &sp])?;
    cluster.wait_state(&v2, &["RUNNING"], LONG)?;
    produce(&bootstrap, &inp, &(1500..4000).map(click).collect::<Vec<_>>())?;
    let all = vec![("P0".to_string(), 2000), ("P1".to_string(), 2000)];
    wait_until("v2 counted every click", LONG, || Ok((counts(&out2)? == all).then_some(())))
        .with_context(|| cluster.logs())?;
    Ok(())
}

/// Debezium change events read as a changelog by a SQL `kafka` table with
/// `'format' = 'debezium-json'` (`weir local`, parallelism 2): snapshot
/// reads, creates, updates that move a product to another category and
/// deletes followed by tombstones, in two partitions keyed by product; the
/// per-category count and total weight it prints, replayed as a
/// changelog, end in exactly the groups of the products that remain.
#[test]
fn debezium_change_events_are_read_as_a_changelog_that_aggregates_exactly() -> anyhow::Result<()> {
    let kafka = shared_kafka();
    let bootstrap = kafka.bootstrap();
    let topic = unique("products-cdc", '-');
    kafka.create_topic(&topic, 2)?;
    let row = |id: u64, category: u64, weight: u64| {
        format!(r#"{{"id":{id},"name":"p-{id}","category":"cat-{category}","weight":{weight}.0}}"#)
    };
    let mut final_rows: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let p = producer(&bootstrap);
    let send = |id: u64, value: Option<String>| {
        let key = id.to_string();
        let mut r: BaseRecord<'_, str, str> = BaseRecord::to(&topic).key(key.as_str()).partition((id % 2) as i32);
        if let Some(v) = &value {
            r = r.payload(v.as_str());
        }
        p.send(r).map_err(|(e, _)| anyhow::anyhow!("producing: {e}"))
    };
    for id in 0..200u64 {
        let op = if id % 2 == 0 { "r" } else { "c" };
        send(id, Some(format!(r#"{{"before":null,"after":{},"op":"{op}","ts_ms":1}}"#, row(id, id % 5, id))))?;
        final_rows.insert(id, (id % 5, id));
    }
    for id in (0..200u64).filter(|id| id % 3 == 0) {
        let (before, after) = (row(id, id % 5, id), row(id, (id + 1) % 5, id + 1));
        send(id, Some(format!(r#"{{"before":{before},"after":{after},"op":"u"}}"#)))?;
        final_rows.insert(id, ((id + 1) % 5, id + 1));
    }
    for id in (0..200u64).filter(|id| id % 7 == 0) {
        let (c, w) = final_rows.remove(&id).expect("inserted above");
        send(id, Some(format!(r#"{{"before":{},"after":null,"op":"d"}}"#, row(id, c, w))))?;
        send(id, None)?;
    }
    p.flush(Duration::from_secs(60))?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("cdc.sql");
    std::fs::write(
        &script,
        format!(
            "SET 'parallelism.default' = '2';
CREATE TABLE products (id BIGINT, name STRING, category STRING, weight DOUBLE) WITH (
  'connector' = 'kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{bootstrap}',
  'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset', 'format' = 'debezium-json');
SELECT category, COUNT(*) AS n, SUM(weight) AS total FROM products GROUP BY category;
"
        ),
    )?;
    let run = std::process::Command::new(weir_tests::bin("weir")).arg("local").arg(&script).output()?;
    anyhow::ensure!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let mut groups: BTreeMap<String, (i64, f64)> = BTreeMap::new();
    for line in String::from_utf8_lossy(&run.stdout).lines() {
        let json = line.split_once("> ").map_or(line, |(_, rest)| rest);
        let Ok(row) = serde_json::from_str::<serde_json::Value>(json) else { continue };
        let key = row["category"].as_str().unwrap_or_default().to_string();
        match row["__op"].as_str() {
            Some("+I" | "+U") => {
                groups.insert(key, (row["n"].as_i64().unwrap_or(-1), row["total"].as_f64().unwrap_or(-1.0)));
            }
            Some("-U" | "-D") => {
                groups.remove(&key);
            }
            other => bail!("unknown change kind {other:?} in {line}"),
        }
    }
    let mut want: BTreeMap<String, (i64, f64)> = BTreeMap::new();
    for (c, w) in final_rows.values() {
        let g = want.entry(format!("cat-{c}")).or_insert((0, 0.0));
        g.0 += 1;
        g.1 += *w as f64;
    }
    assert_eq!(groups, want);
    Ok(())
}

/// An event-time temporal join in SQL (`weir local`, parallelism 2): orders
/// LEFT JOINed with the rate of their currency valid at the order's time,
/// from a versioned table of Debezium change events (a primary key and a
/// watermark). Versions arrive in their own topic at their own pace; every
/// order still meets exactly the version its time selects, or none (before
/// the first version, after a delete) and is padded.
#[test]
fn a_sql_temporal_join_meets_the_version_valid_at_each_rows_time() -> anyhow::Result<()> {
    let kafka = shared_kafka();
    let bootstrap = kafka.bootstrap();
    let [orders, rates] = ["orders-tj", "rates-tj"].map(|t| unique(t, '-'));
    kafka.create_topic(&orders, 2)?;
    kafka.create_topic(&rates, 1)?;
    const BASE: i64 = 1_700_000_000_000;
    let currencies = ["EUR", "USD", "GBP"];
    // Versions: currency c changes every 700 + 100 c ms; USD is deleted at 5 s.
    let mut history: Vec<(&str, i64, Option<i64>)> = Vec::new();
    let mut events = Vec::new();
    for (c, cur) in currencies.iter().enumerate() {
        let step = 700 + 100 * c as i64;
        let mut previous: Option<String> = None;
        let mut t = 200 * c as i64 + 100;
        let mut rate = 100 + c as i64;
        while t < 9_000 {
            if *cur == "USD" && t >= 5_000 {
                // The delete's row carries the time it takes effect (a
                // delete counts from its row's time, as every version does).
                let before = format!(r#"{{"currency":"{cur}","rate":{},"ts":{}}}"#, rate - 10, BASE + 5_000);
                events.push((None, Some(cur.to_string()), format!(r#"{{"before":{before},"after":null,"op":"d"}}"#)));
                history.push((cur, 5_000, None));
                break;
            }
            let after = format!(r#"{{"currency":"{cur}","rate":{rate},"ts":{}}}"#, BASE + t);
            let op = if previous.is_some() { "u" } else { "c" };
            let before = previous.clone().unwrap_or_else(|| "null".into());
            events.push((None, Some(cur.to_string()), format!(r#"{{"before":{before},"after":{after},"op":"{op}"}}"#)));
            history.push((cur, t, Some(rate)));
            previous = Some(after);
            t += step;
            rate += 10;
        }
    }
    produce(&bootstrap, &rates, &events)?;
    let order_events: Vec<_> = (0..600i64)
        .map(|i| {
            let (cur, t) = (currencies[(i % 3) as usize], i * 15 + (i % 7) * 3);
            (Some((i % 2) as i32), None, format!(r#"{{"id":{i},"currency":"{cur}","ts":{}}}"#, BASE + t))
        })
        .collect();
    produce(&bootstrap, &orders, &order_events)?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("temporal.sql");
    std::fs::write(
        &script,
        format!(
            "SET 'parallelism.default' = '2';
CREATE TABLE orders (id BIGINT, currency STRING, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (
  'connector' = 'kafka', 'topic' = '{orders}', 'properties.bootstrap.servers' = '{bootstrap}',
  'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset', 'format' = 'json');
CREATE TABLE rates (currency STRING, rate BIGINT, ts TIMESTAMP(3), PRIMARY KEY (currency) NOT ENFORCED,
  WATERMARK FOR ts AS ts) WITH (
  'connector' = 'kafka', 'topic' = '{rates}', 'properties.bootstrap.servers' = '{bootstrap}',
  'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset', 'format' = 'debezium-json');
SELECT o.id, r.rate FROM orders AS o LEFT JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.currency = r.currency;
"
        ),
    )?;
    let run = std::process::Command::new(weir_tests::bin("weir")).arg("local").arg(&script).output()?;
    anyhow::ensure!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let mut got: BTreeMap<i64, Option<i64>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&run.stdout).lines() {
        let json = line.split_once("> ").map_or(line, |(_, rest)| rest);
        let Ok(row) = serde_json::from_str::<serde_json::Value>(json) else { continue };
        let id = row["id"].as_i64().context("an id")?;
        assert!(got.insert(id, row["rate"].as_i64()).is_none(), "order {id} written twice");
    }
    let mut want: BTreeMap<i64, Option<i64>> = BTreeMap::new();
    for i in 0..600i64 {
        let (cur, t) = (currencies[(i % 3) as usize], i * 15 + (i % 7) * 3);
        let version = history.iter().filter(|(c, vt, _)| *c == cur && *vt <= t).max_by_key(|(_, vt, _)| *vt);
        want.insert(i, version.and_then(|v| v.2));
    }
    assert!(want.values().any(Option::is_none) && want.values().filter(|v| v.is_some()).count() > 300);
    assert_eq!(got, want);
    Ok(())
}

/// An `upsert-kafka` table read in SQL (`weir local`, parallelism 2): stock
/// levels upserted by sku (a JSON key), moved between warehouses, repeated
/// unchanged and deleted by tombstones; the per-warehouse totals it prints,
/// replayed as a changelog, end in exactly those of the last row per sku.
#[test]
fn an_upsert_kafka_table_reads_as_a_changelog_of_each_keys_latest_row() -> anyhow::Result<()> {
    let kafka = shared_kafka();
    let bootstrap = kafka.bootstrap();
    let topic = unique("stock-upserts", '-');
    kafka.create_topic(&topic, 2)?;
    let mut latest: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let p = producer(&bootstrap);
    let send = |sku: u64, value: Option<(u64, u64)>| {
        let key = format!(r#"{{"sku":"sku-{sku}"}}"#);
        let value = value.map(|(w, q)| format!(r#"{{"sku":"sku-{sku}","warehouse":"w-{w}","qty":{q}}}"#));
        let mut r: BaseRecord<'_, str, str> = BaseRecord::to(&topic).key(key.as_str()).partition((sku % 2) as i32);
        if let Some(v) = &value {
            r = r.payload(v.as_str());
        }
        p.send(r).map_err(|(e, _)| anyhow::anyhow!("producing: {e}"))
    };
    for round in 0..4u64 {
        for sku in 0..150u64 {
            match (round, sku % 5) {
                (3, 0) => {
                    send(sku, None)?;
                    latest.remove(&sku);
                }
                // Every fifth sku's row comes again unchanged.
                (_, 1) if round > 0 => send(sku, latest.get(&sku).copied())?,
                _ => {
                    let row = ((sku + round) % 3, sku * 10 + round);
                    send(sku, Some(row))?;
                    latest.insert(sku, row);
                }
            }
        }
    }
    p.flush(Duration::from_secs(60))?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("stock.sql");
    std::fs::write(
        &script,
        format!(
            "SET 'parallelism.default' = '2';
CREATE TABLE stock (sku STRING, warehouse STRING, qty BIGINT, PRIMARY KEY (sku) NOT ENFORCED) WITH (
  'connector' = 'upsert-kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{bootstrap}',
  'key.format' = 'json', 'value.format' = 'json', 'scan.bounded.mode' = 'latest-offset');
SELECT warehouse, SUM(qty) AS total, COUNT(*) AS skus FROM stock GROUP BY warehouse;
"
        ),
    )?;
    let run = std::process::Command::new(weir_tests::bin("weir")).arg("local").arg(&script).output()?;
    anyhow::ensure!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let mut groups: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for line in String::from_utf8_lossy(&run.stdout).lines() {
        let json = line.split_once("> ").map_or(line, |(_, rest)| rest);
        let Ok(row) = serde_json::from_str::<serde_json::Value>(json) else { continue };
        let key = row["warehouse"].as_str().unwrap_or_default().to_string();
        match row["__op"].as_str() {
            Some("+I" | "+U") => {
                groups.insert(key, (row["total"].as_i64().unwrap_or(-1), row["skus"].as_i64().unwrap_or(-1)));
            }
            Some("-U" | "-D") => {
                groups.remove(&key);
            }
            other => bail!("unknown change kind {other:?} in {line}"),
        }
    }
    let mut want: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (w, q) in latest.values() {
        let g = want.entry(format!("w-{w}")).or_insert((0, 0));
        g.0 += *q as i64;
        g.1 += 1;
    }
    assert_eq!(groups, want);
    Ok(())
}

/// A processing-time lookup join in SQL (`weir local`, parallelism 2):
/// orders with a `PROCTIME()` column LEFT JOIN an upsert-kafka table of
/// rates `FOR SYSTEM_TIME AS OF o.proc`. The table is bounded, so it is
/// read whole before the first order: every order meets its currency's
/// last rate, and a currency deleted or never listed pads.
#[test]
fn a_sql_lookup_join_meets_the_table_as_it_is_when_rows_arrive() -> anyhow::Result<()> {
    let kafka = shared_kafka();
    let bootstrap = kafka.bootstrap();
    let [orders, rates] = ["orders-lj", "rates-lj"].map(|t| unique(t, '-'));
    kafka.create_topic(&orders, 2)?;
    kafka.create_topic(&rates, 2)?;
    let p = producer(&bootstrap);
    for (cur, rate) in [("EUR", Some(110)), ("USD", Some(100)), ("EUR", Some(114)), ("GBP", Some(120)), ("USD", None)] {
        let value = rate.map(|r| format!(r#"{{"currency":"{cur}","rate":{r}}}"#));
        let mut r: BaseRecord<'_, str, str> = BaseRecord::to(&rates).key(cur);
        if let Some(v) = &value {
            r = r.payload(v.as_str());
        }
        p.send(r).map_err(|(e, _)| anyhow::anyhow!("producing: {e}"))?;
    }
    p.flush(Duration::from_secs(60))?;
    let currencies = ["EUR", "USD", "GBP", "CHF"];
    let order_events: Vec<_> = (0..40i64)
        .map(|i| (Some((i % 2) as i32), None, format!(r#"{{"id":{i},"currency":"{}"}}"#, currencies[(i % 4) as usize])))
        .collect();
    produce(&bootstrap, &orders, &order_events)?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("lookup.sql");
    std::fs::write(
        &script,
        format!(
            "SET 'parallelism.default' = '2';
CREATE TABLE orders (id BIGINT, currency STRING, proc AS PROCTIME()) WITH (
  'connector' = 'kafka', 'topic' = '{orders}', 'properties.bootstrap.servers' = '{bootstrap}',
  'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset', 'format' = 'json');
CREATE TABLE rates (currency STRING, rate BIGINT, PRIMARY KEY (currency) NOT ENFORCED) WITH (
  'connector' = 'upsert-kafka', 'topic' = '{rates}', 'properties.bootstrap.servers' = '{bootstrap}',
  'key.format' = 'raw', 'value.format' = 'json', 'scan.bounded.mode' = 'latest-offset');
SELECT o.id, o.currency, r.rate, r.currency AS listed FROM orders AS o
  LEFT JOIN rates FOR SYSTEM_TIME AS OF o.proc AS r ON o.currency = r.currency;
"
        ),
    )?;
    let run = std::process::Command::new(weir_tests::bin("weir")).arg("local").arg(&script).output()?;
    anyhow::ensure!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let mut got: BTreeMap<i64, (Option<i64>, Option<String>)> = BTreeMap::new();
    for line in String::from_utf8_lossy(&run.stdout).lines() {
        let json = line.split_once("> ").map_or(line, |(_, rest)| rest);
        let Ok(row) = serde_json::from_str::<serde_json::Value>(json) else { continue };
        let id = row["id"].as_i64().context("an id")?;
        let value = (row["rate"].as_i64(), row["listed"].as_str().map(str::to_string));
        assert!(got.insert(id, value).is_none(), "order {id} written twice");
    }
    let want: BTreeMap<i64, (Option<i64>, Option<String>)> = (0..40i64)
        .map(|i| {
            let cur = currencies[(i % 4) as usize];
            let rate = match cur {
                "EUR" => Some(114),
                "GBP" => Some(120),
                _ => None,
            };
            (i, (rate, rate.map(|_| cur.to_string())))
        })
        .collect();
    assert_eq!(got, want);
    Ok(())
}

/// Over SASL_SSL with SCRAM-SHA-256 — the broker's certificate checked
/// against the test's CA, the password read from a file on the task
/// managers — the pass-through job is exactly once through a task manager
/// kill, and the password appears in no output.
#[test]
fn kafka_over_sasl_ssl_with_scram_is_exactly_once_through_a_kill() -> anyhow::Result<()> {
    const PASSWORD: &str = "scram-Pa55word-7c41e0";
    const N: u64 = 40_000;
    let pki = tempfile::tempdir()?;
    let ca = weir_tests::pki::Ca::new(pki.path(), "kafka-ca")?;
    let broker = ca.issue("kafka-broker")?;
    let keystore = pki.path().join("broker-keystore.pem");
    std::fs::write(&keystore, [std::fs::read(&broker.key)?, std::fs::read(&broker.cert)?].concat())?;
    let kafka = KafkaBroker::start_sasl_ssl(&keystore, &ca.cert, &[("weir", PASSWORD)])?;
    // The test's own clients use the PLAINTEXT listener; the job only the SASL_SSL one.
    let (plain, secure) = (kafka.bootstrap(), kafka.sasl_ssl_bootstrap().expect("a SASL_SSL listener"));
    let (inp, out) = (unique("sasl-in", '-'), unique("sasl-out", '-'));
    kafka.create_topic(&inp, 4)?;
    kafka.create_topic(&out, 3)?;
    produce(&plain, &inp, &input(N, 4))?;
    let password_file = pki.path().join("kafka-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n"))?;
    let security = format!(
        "      security:\n        protocol: SASL_SSL\n        ca_file: {}\n        sasl: {{mechanism: SCRAM-SHA-256, username: weir, password_file: {}}}\n",
        ca.cert.display(),
        password_file.display()
    );
    let job = pass_through_job(&secure, &inp, &out, &security, "150ms")
        .replace("      connect_timeout: 10s\nedges:", &format!("      connect_timeout: 10s\n{security}edges:"));
    assert_eq!(job.matches("protocol: SASL_SSL").count(), 2, "source and sink: {job}");
    let mut cluster = Cluster::start(2, 2, "1s")?;
    let id = cluster.submit(&cluster.write("sasl.yaml", &job), &[])?;
    wait_until("two completed checkpoints", LONG, || Ok((completed_checkpoints(&cluster, &id)? >= 2).then_some(())))
        .with_context(|| format!("{}\n{}", cluster.logs(), kafka.log()))?;
    cluster.taskmanager("tm-b").kill9();
    let reads = settle_and_read(&cluster, &id, &plain, &out, N as usize)?;
    assert_exactly_once(&reads, N, "over SASL_SSL through a kill");
    let status = cluster.weir_json(&["status", &id])?;
    assert!(status["restarts"].as_u64() >= Some(1), "{status:#}");
    let weir = format!("{}{status}", cluster.logs());
    assert!(!weir.contains(PASSWORD), "the password leaked into Weir's output");
    Ok(())
}

/// Resident memory of process `pid` in MiB (0 if it is gone).
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kib.unwrap_or(0.0) / 1024.0
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Mean of the samples of the first and of the last third of `series`.
fn thirds(series: &[f64]) -> (f64, f64) {
    let n = (series.len() / 3).max(1);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    (mean(&series[..n.min(series.len())]), mean(&series[series.len().saturating_sub(n)..]))
}

/// The soak run of issue "reliability" (`scripts/soak.sh`, not part of CI:
/// `WEIR_SOAK_MINUTES`, default 30; `WEIR_SOAK_KILL_EVERY`, default 120 s).
/// The payment filter and the windowed count of `jobs/` read a steady stream
/// of payments and clicks while a task manager running their tasks is killed
/// with SIGKILL every two minutes and started again. Afterwards the routed
/// payments and every window's count are exact, the memory of the cluster's
/// processes (after a two-minute warm-up) and the size of the checkpoint
/// storage are flat: the mean of the last third of the samples at most 30 %
/// (memory) or 50 % (storage) above the mean of the first third.
#[test]
#[ignore = "a soak of 30 minutes: scripts/soak.sh"]
fn soak_two_jobs_through_a_kill_every_two_minutes() -> anyhow::Result<()> {
    let minutes: u64 = std::env::var("WEIR_SOAK_MINUTES").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let kill_every =
        Duration::from_secs(std::env::var("WEIR_SOAK_KILL_EVERY").ok().and_then(|v| v.parse().ok()).unwrap_or(120));
    // Two minutes of warm-up (a quarter of a shorter run).
    let warm_up = Duration::from_secs(120).min(Duration::from_secs(minutes * 15));
    const RATE: u64 = 2_000;
    let mut cluster = Cluster::start(2, 4, "1s")?;
    let (kafka, bootstrap, payments, routed) = setup("soak-payments", 2, 1)?;
    let (_, _, clicks, counts) = setup("soak-clicks", 2, 1)?;
    let dlq = unique("soak-dlq", '-');
    kafka.create_topic(&dlq, 1)?;
    let restart = "  restart: {strategy: fixed_delay, attempts: 1000, delay: 1s}\n";
    let filter = weir_tests::job_file(
        "payment-filter.yaml",
        &[
            ("127.0.0.1:9092", &bootstrap),
            ("topic: payment\n", &format!("topic: {payments}\n")),
            ("topic: unknown-payment", &format!("topic: {routed}")),
            ("payment-dead-letters", &dlq),
            ("transactional_id_prefix: payment-filter", &format!("transactional_id_prefix: {routed}")),
        ],
    );
    let filter = filter.lines().filter(|l| !l.trim_start().starts_with("restart:")).collect::<Vec<_>>().join("\n");
    let windowed = weir_tests::job_file(
        "kafka-windowed-count.yaml",
        &[
            ("127.0.0.1:9092", &bootstrap),
            ("topic: clicks\n", &format!("topic: {clicks}\n")),
            ("topic: clicks-per-page", &format!("topic: {counts}")),
            ("transactional_id_prefix: clicks-per-page", &format!("transactional_id_prefix: {counts}")),
        ],
    );
    let filter_job = cluster.submit(&cluster.write("filter.yaml", &format!("{filter}\n{restart}")), &[])?;
    let windowed_job = cluster.submit(&cluster.write("windowed.yaml", &format!("{windowed}{restart}")), &[])?;
    for job in [&filter_job, &windowed_job] {
        cluster.wait_state(job, &["RUNNING"], LONG)?;
    }
    // A steady stream: payment i (every tenth keyed `unknown`) and click i
    // (pages p0..p4 in turn, 10 ms of event time apart), RATE of each per second.
    const BASE: u64 = 1_772_352_000_000;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let (bootstrap, payments, clicks, stop) = (bootstrap.clone(), payments.clone(), clicks.clone(), stop.clone());
        std::thread::spawn(move || -> anyhow::Result<u64> {
            let p = producer(&bootstrap);
            let started = Instant::now();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let due = started.elapsed().as_millis() as u64 * RATE / 1000;
                let batch: Vec<u64> = (i..due.max(i)).collect();
                let pay: Vec<_> = batch
                    .iter()
                    .map(|i| {
                        let key = if i % 10 == 0 { "unknown" } else { "known" };
                        (
                            Some((i % 2) as i32),
                            Some(key.to_string()),
                            format!(r#"{{"id":{i},"amount":{i}.5,"currency":"EUR"}}"#),
                        )
                    })
                    .collect();
                let clk: Vec<_> = batch
                    .iter()
                    .map(|i| {
                        (
                            Some((i % 2) as i32),
                            None,
                            format!(r#"{{"page":"p{}","user":{i},"ts":{}}}"#, i % 5, BASE + i * 10),
                        )
                    })
                    .collect();
                produce_with(&p, &payments, &pay)?;
                produce_with(&p, &clicks, &clk)?;
                i = due.max(i);
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(i)
        })
    };
    let started = Instant::now();
    let (mut rss, mut jm_rss, mut storage) = (Vec::new(), Vec::new(), Vec::new());
    let mut next_kill = started + kill_every;
    let mut kills = 0;
    let storage_dir = cluster.dir.path().join("jobmanager-storage");
    while started.elapsed() < Duration::from_secs(minutes * 60) {
        if Instant::now() >= next_kill {
            // The task manager running the most tasks of the two jobs.
            let mut load: BTreeMap<String, usize> = BTreeMap::new();
            for job in [&filter_job, &windowed_job] {
                for t in cluster.weir_json(&["status", job])?["tasks"].as_array().cloned().unwrap_or_default() {
                    *load.entry(t["task_manager"].as_str().unwrap_or("").to_string()).or_default() += 1;
                }
            }
            let victim = load.into_iter().max_by_key(|(_, n)| *n).map(|(tm, _)| tm).context("no task runs")?;
            cluster.taskmanager(&victim).kill9();
            kills += 1;
            for job in [&filter_job, &windowed_job] {
                wait_until("the job to run again after the kill", LONG, || {
                    let s = cluster.weir_json(&["status", job])?;
                    let tasks = s["tasks"].as_array().cloned().unwrap_or_default();
                    anyhow::ensure!(s["state"] != "FAILED", "job {job} failed: {s:#}");
                    let on_victim = tasks.iter().any(|t| t["task_manager"] == victim.as_str());
                    Ok((s["state"] == "RUNNING" && !on_victim && tasks.iter().all(|t| t["state"] == "RUNNING"))
                        .then_some(()))
                })
                .with_context(|| cluster.logs())?;
            }
            cluster.restart_taskmanager(&victim)?;
            next_kill += kill_every;
        }
        if started.elapsed() >= warm_up {
            let jm = rss_mib(cluster.jobmanager.child.id());
            let tms: f64 = cluster.taskmanagers.iter().map(|(_, p)| rss_mib(p.child.id())).sum();
            jm_rss.push(jm);
            rss.push(jm + tms);
            storage.push(dir_bytes(&storage_dir) as f64 / (1024.0 * 1024.0));
        }
        // Pacing of the samples, not synchronisation.
        std::thread::sleep(Duration::from_secs(10));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let produced = feeder.join().expect("the feeder")?;
    // Clicks far ahead on both partitions close every window of the stream.
    let flush: Vec<_> = (0..2)
        .map(|p| (Some(p), None, format!(r#"{{"page":"flush","user":0,"ts":{}}}"#, BASE + produced * 10 + 120_000)))
        .collect();
    produce(&bootstrap, &clicks, &flush)?;
    let unknown = produced.div_ceil(10) as usize;
    let reads = settle_and_read(&cluster, &filter_job, &bootstrap, &routed, unknown)?;
    let mut ids: Vec<u64> = values(&reads).iter().map(|v| v["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    assert!(
        ids == (0..produced).step_by(10).collect::<Vec<u64>>(),
        "payments routed exactly once ({} read, {unknown} expected)",
        ids.len()
    );
    let mut expected: BTreeMap<(String, u64), u64> = BTreeMap::new();
    for i in 0..produced {
        let ts = BASE + i * 10;
        *expected.entry((format!("p{}", i % 5), ts - ts % 10_000)).or_default() += 1;
    }
    let windows = expected.len();
    let counted = wait_until("every window's count", LONG, || {
        let reads = read_committed(&bootstrap, &counts, windows, LONG)?;
        let mut got: BTreeMap<(String, u64), u64> = BTreeMap::new();
        for v in values(&reads) {
            let key = (v["page"].as_str().unwrap_or("").to_string(), v["window_start"].as_u64().unwrap_or(0));
            assert!(
                got.insert(key.clone(), v["clicks"].as_u64().unwrap_or(0)).is_none(),
                "window {key:?} written twice"
            );
        }
        got.retain(|(page, _), _| page != "flush");
        Ok((got.len() >= windows).then_some(got))
    })?;
    assert!(counted == expected, "window counts differ from the input's");
    let (mem_first, mem_last) = thirds(&rss);
    let (jm_first, jm_last) = thirds(&jm_rss);
    let (disk_first, disk_last) = thirds(&storage);
    eprintln!(
        "soak: {minutes} min, {kills} kills, {produced} payments and clicks; cluster RSS {mem_first:.0} -> {mem_last:.0} MiB, \
         job manager {jm_first:.0} -> {jm_last:.0} MiB, checkpoint storage {disk_first:.1} -> {disk_last:.1} MiB \
         (means of the first and last third of {} samples)",
        rss.len()
    );
    assert!(mem_last <= mem_first * 1.3, "the cluster's memory grew: {rss:?}");
    assert!(jm_last <= jm_first * 1.3, "the job manager's memory grew: {jm_rss:?}");
    assert!(disk_last <= disk_first * 1.5 + 1.0, "the checkpoint storage grew: {storage:?}");
    Ok(())
}
