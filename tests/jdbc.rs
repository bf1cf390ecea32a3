//! End-to-end tests of `jdbc_sink` against real MariaDB and PostgreSQL
//! servers on loopback: exactly-once through a crash between checkpoint
//! completion and COMMIT, through a database restart, upserts and deletes by
//! key, and clear errors for tables that do not fit.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use weir_tests::databases::{shared, Database, Flavor, MARIADB_PASSWORD, MARIADB_USER};
use weir_tests::{bin, unique, wait_until, Cluster};

const LONG: Duration = Duration::from_secs(180);

/// 200,000 generated bids: event `i` at `i / 10` ms on channel `i % 4`, so
/// 20 one-second windows of 2,500 bids per channel.
const EVENTS: u64 = 200_000;
const WINDOWS: usize = 20;
const PER_WINDOW: u64 = 2_500;

/// A fresh database holding the append-only `bid_counts` table (no key:
/// any duplicate or lost row shows).
fn database(db: &Database, prefix: &str, keyed: bool) -> anyhow::Result<String> {
    let name = unique(prefix, '_');
    db.create_database(&name)?;
    let key = if keyed { ", PRIMARY KEY (channel, window_start)" } else { "" };
    db.execute(
        &name,
        &format!(
            "CREATE TABLE bid_counts (channel VARCHAR(16) NOT NULL, window_start BIGINT NOT NULL, window_end BIGINT NOT NULL, bids BIGINT NOT NULL{key})"
        ),
    )?;
    Ok(name)
}

/// The `config:` of the sink: where to write and how to log in (MariaDB
/// with a password read from a file, PostgreSQL as its trusted superuser).
fn sink_config(db: &Database, name: &str, password_file: &std::path::Path, extra: &str) -> String {
    let login = match db.flavor {
        Flavor::MariaDb => {
            std::fs::write(password_file, format!("{MARIADB_PASSWORD}\n")).expect("writing the password file");
            format!("      username: {MARIADB_USER}\n      password_file: {}\n", password_file.display())
        }
        Flavor::Postgres => String::new(),
    };
    format!("      url: {}\n      table: bid_counts\n{login}{extra}", db.url(name))
}

fn bids_job(sink: &str, rate: u64) -> String {
    format!(
        r#"name: bids-to-db
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
  - uid: db
    kind: jdbc_sink
    config:
{sink}
edges:
  - {{from: bids, to: timestamps}}
  - {{from: timestamps, to: per-channel, partition: hash, key: [channel]}}
  - {{from: per-channel, to: db, partition: hash, key: [channel]}}
checkpoints:
  interval: 300ms
"#
    )
}

/// The rows of `bid_counts`: (channel, window_start) -> every count written for it.
fn bid_counts(db: &Database, name: &str) -> anyhow::Result<BTreeMap<(String, i64), Vec<u64>>> {
    let text = db.execute(name, "SELECT channel, window_start, bids FROM bid_counts")?;
    let mut out: BTreeMap<(String, i64), Vec<u64>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        out.entry((f[0].to_string(), f[1].parse()?)).or_default().push(f[2].parse()?);
    }
    Ok(out)
}

/// Every (channel, window) written exactly once with its exact count.
fn assert_exact(rows: &BTreeMap<(String, i64), Vec<u64>>, what: &str) {
    let wrong: Vec<_> = rows.iter().filter(|(_, counts)| counts.as_slice() != [PER_WINDOW]).collect();
    assert!(wrong.is_empty(), "{what}: windows written more than once or with a wrong count: {wrong:?}");
    assert_eq!(rows.len(), WINDOWS * 4, "{what}: {} of {} windows written", rows.len(), WINDOWS * 4);
}

fn crash_in_the_commit_window(flavor: Flavor) -> anyhow::Result<()> {
    let db = shared(flavor);
    let name = database(db, "crash", false)?;
    // tm-b aborts between the completion of the first checkpoint its sink
    // subtask commits and the COMMIT.
    let mut cluster = Cluster::start(1, 2, "1s")?;
    cluster.start_taskmanager("tm-b", 2, &[("WEIR_FAILPOINT", "jdbc_sink_before_commit")])?;
    let sink = sink_config(db, &name, &cluster.dir.path().join("password"), "      delivery: exactly_once\n");
    let job = cluster.submit(&cluster.write("bids.yaml", &bids_job(&sink, 20_000)), &[])?;
    wait_until("tm-b to crash at the failpoint", LONG, || Ok(cluster.taskmanager("tm-b").child.try_wait()?))?;
    assert!(cluster.taskmanager("tm-b").log().contains("failpoint reached"), "{}", cluster.logs());
    cluster.wait_state(&job, &["FINISHED"], LONG).with_context(|| cluster.logs())?;
    assert_exact(&bid_counts(db, &name)?, "after a crash in the commit window");
    // The restored subtask found its epoch unrecorded and applied it.
    let logs = cluster.logs();
    let recovered: Vec<&str> = logs.lines().filter(|l| l.contains("jdbc sink recovered its epochs")).collect();
    assert!(recovered.iter().any(|l| !l.contains("replayed_epochs=0")), "no epoch was replayed:\n{logs}");
    // The password never reaches a log.
    assert!(!logs.contains(MARIADB_PASSWORD), "the password is in a log");
    let status = cluster.weir(&["status", &job, "--output", "json"])?;
    assert!(!String::from_utf8_lossy(&status.stdout).contains(MARIADB_PASSWORD));
    Ok(())
}

#[test]
fn mariadb_exactly_once_through_a_crash_between_checkpoint_and_commit() -> anyhow::Result<()> {
    crash_in_the_commit_window(Flavor::MariaDb)
}

#[test]
fn postgres_exactly_once_through_a_crash_between_checkpoint_and_commit() -> anyhow::Result<()> {
    crash_in_the_commit_window(Flavor::Postgres)
}

fn through_a_database_restart(flavor: Flavor) -> anyhow::Result<()> {
    // A server of its own: this test kills it.
    let mut db = Database::start(flavor)?;
    let name = database(&db, "restart", false)?;
    let cluster = Cluster::start(2, 2, "1s")?;
    let sink = sink_config(&db, &name, &cluster.dir.path().join("password"), "      delivery: exactly_once\n");
    let job = cluster.submit(&cluster.write("bids.yaml", &bids_job(&sink, 10_000)), &[])?;
    wait_until("some windows written", LONG, || Ok((bid_counts(&db, &name)?.len() >= 8).then_some(())))
        .with_context(|| cluster.logs())?;
    db.restart()?;
    cluster.wait_state(&job, &["FINISHED"], LONG).with_context(|| format!("{}\n{}", cluster.logs(), db.log()))?;
    assert_exact(&bid_counts(&db, &name)?, "after a database restart");
    Ok(())
}

#[test]
fn mariadb_restart_mid_run_loses_and_repeats_nothing() -> anyhow::Result<()> {
    through_a_database_restart(Flavor::MariaDb)
}

#[test]
fn postgres_restart_mid_run_loses_and_repeats_nothing() -> anyhow::Result<()> {
    through_a_database_restart(Flavor::Postgres)
}

/// `weir local` with `job`; returns (success, stdout + stderr).
fn local(dir: &std::path::Path, job: &str) -> anyhow::Result<(bool, String)> {
    let file = dir.join("job.yaml");
    std::fs::write(&file, job)?;
    let out = Command::new(bin("weir")).arg("local").arg(&file).output()?;
    Ok((
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    ))
}

fn changes_job(url: &str, login: &str, delivery: &str) -> String {
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
  - uid: db
    kind: jdbc_sink
    config:
      url: {url}
{login}      table: people
      key: [id]
      op_column: op
      delivery: {delivery}
edges:
  - {{from: changes, to: db}}
"#
    )
}

fn upserts_and_deletes(flavor: Flavor) -> anyhow::Result<()> {
    let db = shared(flavor);
    let name = unique("changes", '_');
    db.create_database(&name)?;
    db.execute(&name, "CREATE TABLE people (id BIGINT PRIMARY KEY, name VARCHAR(32), score DOUBLE PRECISION)")?;
    // A row from before the job, updated by it.
    db.execute(&name, "INSERT INTO people (id, name, score) VALUES (3, 'old', 0.5)")?;
    let dir = tempfile::tempdir()?;
    let login = match flavor {
        Flavor::MariaDb => format!("      username: {MARIADB_USER}\n      password: {MARIADB_PASSWORD}\n"),
        Flavor::Postgres => String::new(),
    };
    let (ok, out) = local(dir.path(), &changes_job(&db.url(&name), &login, "at_least_once"))?;
    assert!(ok, "{out}");
    assert!(!out.contains(MARIADB_PASSWORD), "the password is printed: {out}");
    let rows = db.execute(&name, "SELECT id, name, score FROM people ORDER BY id")?;
    let null = if flavor == Flavor::MariaDb { "NULL" } else { "" };
    assert_eq!(rows, format!("1\tada\t9.25\n3\tcy\t{null}\n"));
    Ok(())
}

#[test]
fn mariadb_upserts_by_key_and_deletes_retracted_rows() -> anyhow::Result<()> {
    upserts_and_deletes(Flavor::MariaDb)
}

#[test]
fn postgres_upserts_by_key_and_deletes_retracted_rows() -> anyhow::Result<()> {
    upserts_and_deletes(Flavor::Postgres)
}

/// Tables that do not fit, an unknown database and an unreachable server:
/// each a clear error naming the problem, with nothing written.
fn bad_configuration(flavor: Flavor) -> anyhow::Result<()> {
    let db = shared(flavor);
    let name = unique("bad", '_');
    db.create_database(&name)?;
    db.execute(&name, "CREATE TABLE wrong_type (id BIGINT PRIMARY KEY, name BIGINT, score DOUBLE PRECISION)")?;
    db.execute(&name, "CREATE TABLE missing_column (id BIGINT PRIMARY KEY, name VARCHAR(32))")?;
    db.execute(&name, "CREATE TABLE no_key (id BIGINT, name VARCHAR(32), score DOUBLE PRECISION)")?;
    let dir = tempfile::tempdir()?;
    let login = match flavor {
        Flavor::MariaDb => format!("      username: {MARIADB_USER}\n      password: {MARIADB_PASSWORD}\n"),
        Flavor::Postgres => String::new(),
    };
    let url = db.url(&name);
    let closed = format!(
        "jdbc:{}://127.0.0.1:{}/{name}",
        if flavor == Flavor::MariaDb { "mysql" } else { "postgresql" },
        weir_tests::free_port()
    );
    let cases: [(&str, &str, &str); 5] = [
        ("people", &url, "table `people` does not exist"),
        ("wrong_type", &url, "column `name` is bigint, which cannot hold the sink's text values"),
        ("missing_column", &url, "column `score` is missing"),
        ("no_key", &url, "no primary key or unique constraint on (id)"),
        ("people", &closed, "connecting to"),
    ];
    for (table, url, expected) in cases {
        let job = changes_job(url, &login, "at_least_once").replace("table: people", &format!("table: {table}"));
        let (ok, out) = local(dir.path(), &job)?;
        assert!(!ok && out.contains(expected), "{table} at {url}: expected `{expected}` in:\n{out}");
        assert!(!out.contains(MARIADB_PASSWORD), "the password is printed: {out}");
    }
    for table in ["wrong_type", "missing_column", "no_key"] {
        assert_eq!(db.execute(&name, &format!("SELECT COUNT(*) FROM {table}"))?, "0\n", "rows written into {table}");
    }
    Ok(())
}

#[test]
fn mariadb_tables_that_do_not_fit_are_refused_before_writing() -> anyhow::Result<()> {
    bad_configuration(Flavor::MariaDb)
}

#[test]
fn postgres_tables_that_do_not_fit_are_refused_before_writing() -> anyhow::Result<()> {
    bad_configuration(Flavor::Postgres)
}

/// A SQL script writes through Flink's `jdbc` connector: the declared
/// primary key makes it upsert; event-time window bounds land in a
/// timestamp column.
fn sql_into(flavor: Flavor) -> anyhow::Result<()> {
    let db = shared(flavor);
    let name = unique("sql", '_');
    db.create_database(&name)?;
    let ts = if flavor == Flavor::MariaDb { "DATETIME(3)" } else { "TIMESTAMP(3)" };
    db.execute(
        &name,
        &format!("CREATE TABLE bid_counts (channel VARCHAR(16) NOT NULL, window_start {ts} NOT NULL, bids BIGINT NOT NULL, PRIMARY KEY (channel, window_start))"),
    )?;
    let login = match flavor {
        Flavor::MariaDb => format!("  'username' = '{MARIADB_USER}',\n  'password' = '{MARIADB_PASSWORD}',\n"),
        Flavor::Postgres => String::new(),
    };
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
  'connector' = 'jdbc',
  'url' = '{url}',
  'table-name' = 'bid_counts',
{login}  'sink.buffer-flush.max-rows' = '10'
);

INSERT INTO bid_counts
SELECT channel, window_start, COUNT(*)
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY channel, window_start, window_end;
"#,
        url = db.url(&name)
    );
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("counts.sql");
    std::fs::write(&file, script)?;
    let out = Command::new(bin("weir")).arg("local").arg(&file).output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    let summary = db.execute(&name, "SELECT COUNT(*), MIN(bids), MAX(bids), MIN(window_start) FROM bid_counts")?;
    let f: Vec<&str> = summary.trim_end().split('\t').collect();
    assert_eq!(&f[..3], &["80", "2500", "2500"], "{summary}");
    // Event 0 is at 1,700,000,000,000 ms: 2023-11-14 22:13:20 UTC.
    assert!(f[3].starts_with("2023-11-14 22:13:20"), "{summary}");
    Ok(())
}

#[test]
fn mariadb_sql_jdbc_connector_upserts_windows() -> anyhow::Result<()> {
    sql_into(Flavor::MariaDb)
}

#[test]
fn postgres_sql_jdbc_connector_upserts_windows() -> anyhow::Result<()> {
    sql_into(Flavor::Postgres)
}

/// Bids of the group-aggregation scripts: `auction = (i * 7919) % 10000`
/// over 205,000 events, so half the auctions get 21 bids and half 20.
const GROUP_EVENTS: u64 = 205_000;

/// Per auction (bids, total price, top price), and per bid count the
/// number of auctions with it, computed from the generator's formula.
type Expected = (BTreeMap<i64, (i64, i64, i64)>, BTreeMap<i64, i64>);

fn expected_groups() -> Expected {
    let mut per_auction: BTreeMap<i64, (i64, i64, i64)> = BTreeMap::new();
    for i in 0..GROUP_EVENTS as i64 {
        let price = 100 + (i * 31) % 10_000;
        let e = per_auction.entry((i * 7919) % 10_000).or_insert((0, 0, i64::MIN));
        *e = (e.0 + 1, e.1 + price, e.2.max(price));
    }
    let mut histogram = BTreeMap::new();
    for (n, _, _) in per_auction.values() {
        *histogram.entry(*n).or_insert(0) += 1;
    }
    (per_auction, histogram)
}

/// A table's rows as tab-separated integers, each row once.
fn integer_rows<const N: usize>(db: &Database, name: &str, query: &str) -> anyhow::Result<Vec<[i64; N]>> {
    let text = db.execute(name, query)?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: Vec<i64> = l.split('\t').map(str::parse).collect::<Result<_, _>>()?;
            v.try_into().map_err(|v| anyhow::anyhow!("a row of {N} columns expected: {v:?}"))
        })
        .collect()
}

fn group_tables(db: &Database, prefix: &str) -> anyhow::Result<String> {
    let name = unique(prefix, '_');
    db.create_database(&name)?;
    db.execute(
        &name,
        "CREATE TABLE per_auction (auction BIGINT PRIMARY KEY, bids BIGINT NOT NULL, total BIGINT, top BIGINT)",
    )?;
    db.execute(&name, "CREATE TABLE histogram (bids BIGINT PRIMARY KEY, auctions BIGINT NOT NULL)")?;
    Ok(name)
}

fn group_script(db: &Database, name: &str, head: &str, rate: Option<u64>, inserts: &str) -> String {
    let login = match db.flavor {
        Flavor::MariaDb => format!(", 'username' = '{MARIADB_USER}', 'password' = '{MARIADB_PASSWORD}'"),
        Flavor::Postgres => String::new(),
    };
    let with = |table: &str, extra: &str| {
        format!("WITH ('connector' = 'jdbc', 'url' = '{}', 'table-name' = '{table}'{login}{extra})", db.url(name))
    };
    let rate = rate.map_or(String::new(), |r| format!(", 'rows-per-second' = '{r}'"));
    format!(
        "{head}
CREATE TABLE bids (auction BIGINT, price BIGINT)
  WITH ('connector' = 'datagen', 'number-of-rows' = '{GROUP_EVENTS}'{rate});
CREATE TABLE per_auction (auction BIGINT, bids BIGINT, total BIGINT, top BIGINT, PRIMARY KEY (auction) NOT ENFORCED)
  {};
CREATE TABLE histogram (bids BIGINT, auctions BIGINT, PRIMARY KEY (bids) NOT ENFORCED)
  {};
{inserts}",
        with("per_auction", ", 'sink.delivery-guarantee' = 'exactly-once'"),
        with("histogram", ", 'sink.delivery-guarantee' = 'exactly-once'"),
    )
}

/// A `GROUP BY` without a window, and an aggregation of its updating
/// result (how many auctions have each number of bids, whose intermediate
/// counts are updated and deleted again), through a `kill -9` of a task
/// manager: both tables end exactly as the bids say.
#[test]
fn postgres_sql_group_by_and_its_retractions_are_exactly_once_through_a_task_manager_kill() -> anyhow::Result<()> {
    let db = shared(Flavor::Postgres);
    let name = group_tables(db, "groups")?;
    // One slot each: a subtask of every operator runs on tm-b.
    let mut cluster = Cluster::start(2, 1, "1s")?;
    let head = "SET 'parallelism.default' = '2';\nSET 'execution.checkpointing.interval' = '300ms';";
    let script = group_script(
        db,
        &name,
        head,
        Some(20_000),
        "EXECUTE STATEMENT SET BEGIN
INSERT INTO per_auction SELECT auction, COUNT(*), SUM(price), MAX(price) FROM bids GROUP BY auction;
INSERT INTO histogram SELECT bids, COUNT(*) FROM (SELECT auction, COUNT(*) AS bids FROM bids GROUP BY auction) GROUP BY bids;
END;",
    );
    let job = cluster.submit(&cluster.write("groups.sql", &script), &[])?;
    wait_until("counts committed to the database", LONG, || {
        Ok((!integer_rows::<2>(db, &name, "SELECT bids, auctions FROM histogram")?.is_empty()).then_some(()))
    })
    .with_context(|| cluster.logs())?;
    cluster.taskmanager("tm-b").kill9();
    cluster.restart_taskmanager("tm-b")?;
    let status = cluster.wait_state(&job, &["FINISHED"], LONG).with_context(|| cluster.logs())?;
    // Once, or twice when a task sees tm-b gone before the job manager
    // does and the first redeployment still counts on tm-b's slots.
    assert!(status["restarts"].as_u64() >= Some(1), "the kill restarted the job: {status:#}");
    let (per_auction, histogram) = expected_groups();
    let rows = integer_rows::<4>(db, &name, "SELECT auction, bids, total, top FROM per_auction ORDER BY auction")?;
    let want: Vec<[i64; 4]> = per_auction.iter().map(|(a, (n, t, m))| [*a, *n, *t, *m]).collect();
    assert_eq!(rows.len(), want.len());
    let wrong: Vec<_> = rows.iter().zip(&want).filter(|(r, w)| r != w).take(5).collect();
    assert!(wrong.is_empty(), "per_auction rows differ (got, want): {wrong:?}");
    let rows = integer_rows::<2>(db, &name, "SELECT bids, auctions FROM histogram ORDER BY bids")?;
    let want: Vec<[i64; 2]> = histogram.iter().map(|(n, a)| [*n, *a]).collect();
    assert_eq!(rows, want, "only the final counts are left: every intermediate one was deleted");
    Ok(())
}

/// `HAVING` over an updating aggregation: a key whose new result no longer
/// qualifies is deleted from the table (its old row was written).
#[test]
fn mariadb_sql_having_deletes_the_rows_of_groups_that_stop_qualifying() -> anyhow::Result<()> {
    let db = shared(Flavor::MariaDb);
    let name = group_tables(db, "having")?;
    let script = group_script(
        db,
        &name,
        "",
        None,
        "INSERT INTO per_auction SELECT auction, COUNT(*), SUM(price), MAX(price) FROM bids GROUP BY auction HAVING COUNT(*) <= 20;",
    )
    .replace(", 'sink.delivery-guarantee' = 'exactly-once'", "");
    let dir = tempfile::tempdir()?;
    let (ok, out) = local_sql(dir.path(), &script)?;
    assert!(ok, "{out}");
    let (per_auction, _) = expected_groups();
    let want: Vec<[i64; 4]> =
        per_auction.iter().filter(|(_, v)| v.0 <= 20).map(|(a, (n, t, m))| [*a, *n, *t, *m]).collect();
    assert!(!want.is_empty() && want.len() < per_auction.len(), "some auctions qualify, some stop to");
    let rows = integer_rows::<4>(db, &name, "SELECT auction, bids, total, top FROM per_auction ORDER BY auction")?;
    assert_eq!(rows.len(), want.len(), "auctions with a 21st bid were deleted");
    assert!(rows == want, "per_auction differs from the bids");
    Ok(())
}

/// `weir local` with a SQL script; returns (success, stdout + stderr).
fn local_sql(dir: &std::path::Path, script: &str) -> anyhow::Result<(bool, String)> {
    let file = dir.join("job.sql");
    std::fs::write(&file, script)?;
    let out = Command::new(bin("weir")).arg("local").arg(&file).output()?;
    Ok((
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    ))
}

/// A regular join and a Top-N through a `kill -9` of a task manager, into
/// PostgreSQL exactly once: the inner join (which appends) writes every
/// pair once, the Top-N (updating, written by its key and rank) ends with
/// each auction's two best bids.
#[test]
fn postgres_sql_join_and_top_n_are_exactly_once_through_a_task_manager_kill() -> anyhow::Result<()> {
    let db = shared(Flavor::Postgres);
    let name = unique("joins", '_');
    db.create_database(&name)?;
    db.execute(&name, "CREATE TABLE pairs (price BIGINT NOT NULL, bidder BIGINT NOT NULL)")?;
    db.execute(
        &name,
        "CREATE TABLE best (auction BIGINT NOT NULL, price BIGINT, rn BIGINT NOT NULL, PRIMARY KEY (auction, rn))",
    )?;
    let with = |table: &str| {
        format!(
            "WITH ('connector' = 'jdbc', 'url' = '{}', 'table-name' = '{table}', 'sink.delivery-guarantee' = 'exactly-once')",
            db.url(&name)
        )
    };
    let script = format!(
        "SET 'parallelism.default' = '2';
SET 'execution.checkpointing.interval' = '300ms';
CREATE TABLE bids (auction BIGINT, price BIGINT, bucket AS auction % 100)
  WITH ('connector' = 'datagen', 'number-of-rows' = '{GROUP_EVENTS}', 'rows-per-second' = '20000');
CREATE TABLE offers (auction BIGINT, bidder BIGINT, bucket AS auction % 100)
  WITH ('connector' = 'datagen', 'number-of-rows' = '50');
CREATE TABLE pairs (price BIGINT, bidder BIGINT) {};
CREATE TABLE best (auction BIGINT, price BIGINT, rn BIGINT, PRIMARY KEY (auction, rn) NOT ENFORCED) {};
EXECUTE STATEMENT SET BEGIN
INSERT INTO pairs SELECT b.price, o.bidder FROM bids b JOIN offers o ON b.bucket = o.bucket;
INSERT INTO best SELECT auction, price, rn FROM (
  SELECT auction, price, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rn FROM bids) WHERE rn <= 2;
END;",
        with("pairs"),
        with("best")
    );
    // One slot each: a subtask of every operator runs on tm-b.
    let mut cluster = Cluster::start(2, 1, "1s")?;
    let job = cluster.submit(&cluster.write("joins.sql", &script), &[])?;
    wait_until("pairs committed to the database", LONG, || {
        let committed = integer_rows::<1>(db, &name, "SELECT COUNT(*) FROM pairs")?;
        Ok(committed.first().is_some_and(|r| r[0] > 0).then_some(()))
    })
    .with_context(|| cluster.logs())?;
    cluster.taskmanager("tm-b").kill9();
    cluster.restart_taskmanager("tm-b")?;
    let status = cluster.wait_state(&job, &["FINISHED"], LONG).with_context(|| cluster.logs())?;
    assert!(status["restarts"].as_u64() >= Some(1), "the kill restarted the job: {status:#}\n{}", cluster.logs());
    // Bid i meets offer j < 50 when i = j (mod 100) (buckets are 19 i mod 100).
    let (mut count, mut sum) = (0i64, 0i64);
    for i in 0..GROUP_EVENTS as i64 {
        if i % 100 < 50 {
            count += 1;
            sum += 100 + (i * 31) % 10_000 + ((i % 100) * 104_729) % 100_000;
        }
    }
    let got = integer_rows::<2>(db, &name, "SELECT COUNT(*), SUM(price + bidder) FROM pairs")?;
    assert_eq!(got, [[count, sum]], "every pair exactly once: {status:#}\n{}", cluster.logs());
    let (per_auction, _) = expected_groups();
    let mut want: Vec<[i64; 3]> = Vec::new();
    for (a, (n, _, top)) in &per_auction {
        // Every bid of an auction has the same price: (i + 10000 k) * 31 = i * 31 (mod 10000).
        for rn in 1..=(*n).min(2) {
            want.push([*a, *top, rn]);
        }
    }
    let rows = integer_rows::<3>(db, &name, "SELECT auction, price, rn FROM best ORDER BY auction, rn")?;
    let wrong: Vec<_> = rows.iter().zip(&want).filter(|(r, w)| r != w).take(5).collect();
    assert!(
        rows.len() == want.len() && wrong.is_empty(),
        "best has {} rows for {} (first differences, got and want: {wrong:?}): {status:#}\n{}",
        rows.len(),
        want.len(),
        cluster.logs()
    );
    Ok(())
}
