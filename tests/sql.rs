//! Weir SQL end to end: scripts run by `weir local`, their printed rows or
//! written files checked against rows computed independently (from
//! datagen's formulas or the `nexmark` crate's events).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use weir_tests::bin;

/// Lines of the committed (visible) files under `dir`, at any depth.
fn visible_lines(dir: &std::path::Path) -> Vec<String> {
    let mut lines = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if e.path().is_dir() {
            lines.extend(visible_lines(&e.path()));
        } else {
            lines.extend(std::fs::read_to_string(e.path()).unwrap_or_default().lines().map(str::to_string));
        }
    }
    lines
}

/// `UNION ALL` in SQL: both tables' rows, the right side's under the left
/// side's column names, written by `weir local`.
#[test]
fn a_sql_union_all_writes_the_rows_of_both_sides() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let script = dir.path().join("union.sql");
    std::fs::write(
        &script,
        format!(
            "SET 'parallelism.default' = '2';
CREATE TABLE bids (auction BIGINT, price BIGINT, event_time_ms BIGINT, channel STRING)
  WITH ('connector' = 'datagen', 'number-of-rows' = '3000');
CREATE TABLE offers (auction BIGINT, bidder BIGINT, event_time_ms BIGINT, channel STRING)
  WITH ('connector' = 'datagen', 'number-of-rows' = '2000');
CREATE TABLE everything (auction BIGINT, amount BIGINT, origin STRING)
  WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
INSERT INTO everything
SELECT auction, price AS amount, 'bid' AS origin FROM bids WHERE channel = 'apple'
UNION ALL
SELECT auction, bidder, 'offer' FROM offers;
",
            out.display()
        ),
    )?;
    let run = std::process::Command::new(bin("weir")).arg("local").arg(&script).output()?;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let rows: Vec<serde_json::Value> =
        visible_lines(&out).iter().map(|l| serde_json::from_str(l)).collect::<Result<_, _>>()?;
    let count = |origin: &str| rows.iter().filter(|r| r["origin"] == origin).count();
    assert_eq!((count("bid"), count("offer")), (750, 2000), "a quarter of the bids are apple's");
    assert!(rows.iter().all(|r| r["amount"].is_i64() && r.get("bidder").is_none()), "{:?}", rows.first());
    Ok(())
}

/// An interval join in SQL: every pair of rows with equal keys and event
/// times within the bounds, and each left row without a partner once,
/// padded with nulls (LEFT JOIN), at parallelism 2.
#[test]
fn a_sql_interval_join_pairs_rows_within_the_bounds_and_pads_the_rest() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let script = dir.path().join("join.sql");
    std::fs::write(
        &script,
        format!(
            "SET 'parallelism.default' = '2';
CREATE TABLE bids (auction BIGINT, price BIGINT, event_time_ms BIGINT, channel STRING,
  bucket AS auction % 100, ts AS TO_TIMESTAMP_LTZ(event_time_ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
  WITH ('connector' = 'datagen', 'number-of-rows' = '3000');
CREATE TABLE offers (auction BIGINT, bidder BIGINT, event_time_ms BIGINT, channel STRING,
  bucket AS auction % 100, ts AS TO_TIMESTAMP_LTZ(event_time_ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
  WITH ('connector' = 'datagen', 'number-of-rows' = '2000');
CREATE TABLE pairs (bid_time BIGINT, offer_time BIGINT, bidder BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
INSERT INTO pairs
SELECT b.event_time_ms AS bid_time, o.event_time_ms AS offer_time, o.bidder
FROM bids b LEFT JOIN offers o
  ON b.bucket = o.bucket AND o.ts BETWEEN b.ts - INTERVAL '30' MILLISECOND AND b.ts + INTERVAL '30' MILLISECOND;
",
            out.display()
        ),
    )?;
    let run = std::process::Command::new(bin("weir")).arg("local").arg(&script).output()?;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    // Datagen's row i has auction (i * 7919) % 10000, so the buckets of i
    // and j are equal exactly when i ≡ j (mod 100); its time is i / 10 ms.
    let (mut matched, mut padded) = (0usize, 0usize);
    for i in 0..3000i64 {
        let partners = (0..2000i64).filter(|j| (i - j) % 100 == 0 && (i / 10 - j / 10).abs() <= 30).count();
        matched += partners;
        padded += usize::from(partners == 0);
    }
    let rows: Vec<serde_json::Value> =
        visible_lines(&out).iter().map(|l| serde_json::from_str(l)).collect::<Result<_, _>>()?;
    let with_partner: Vec<&serde_json::Value> = rows.iter().filter(|r| !r["bidder"].is_null()).collect();
    assert_eq!((with_partner.len(), rows.len() - with_partner.len()), (matched, padded));
    assert!(padded > 0 && matched > 3000, "the check covers both kinds of rows: {matched} {padded}");
    for r in &with_partner {
        let (b, o) = (r["bid_time"].as_i64().unwrap_or(0), r["offer_time"].as_i64().unwrap_or(i64::MAX));
        assert!((b - o).abs() <= 30, "{r}");
    }
    assert!(rows.iter().filter(|r| r["bidder"].is_null()).all(|r| r["offer_time"].is_null()), "padding is null");
    Ok(())
}

/// A group aggregation in SQL with an expression as a key and filtered
/// aggregates (as Nexmark's q15 writes them), printed by `weir local` as a
/// changelog: replayed in order, its changes end in exactly the groups the
/// generator's rows make.
#[test]
fn a_sql_group_by_prints_a_changelog_that_ends_in_the_exact_groups() -> anyhow::Result<()> {
    const N: i64 = 20_000;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("groups.sql");
    std::fs::write(
        &script,
        format!(
            "SET 'parallelism.default' = '2';
CREATE TABLE bids (auction BIGINT, price BIGINT, channel STRING)
  WITH ('connector' = 'datagen', 'number-of-rows' = '{N}');
SELECT channel, price % 3 AS bucket, COUNT(*) AS n, COUNT(*) FILTER (WHERE price < 5000) AS cheap,
  COUNT(DISTINCT auction) FILTER (WHERE price >= 5000) AS rich_auctions, MAX(price) AS top
FROM bids GROUP BY channel, price % 3;
"
        ),
    )?;
    let run = std::process::Command::new(bin("weir")).arg("local").arg(&script).output()?;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    // Replay the changelog: +I/+U set a group's row, -U/-D take it away.
    let mut groups: BTreeMap<(String, i64), serde_json::Value> = BTreeMap::new();
    let mut changes = 0;
    for line in String::from_utf8_lossy(&run.stdout).lines() {
        let json = line.split_once("> ").map_or(line, |(_, rest)| rest);
        let Ok(mut row) = serde_json::from_str::<serde_json::Value>(json) else { continue };
        let op = row.as_object_mut().and_then(|r| r.remove("__op")).context("every row has its change kind")?;
        let key = (row["channel"].as_str().unwrap_or_default().to_string(), row["bucket"].as_i64().unwrap_or(-1));
        changes += 1;
        match op.as_str() {
            Some("+I" | "+U") => groups.insert(key, row),
            Some("-U" | "-D") => groups.remove(&key),
            other => anyhow::bail!("unknown change kind {other:?}"),
        };
    }
    // The generator's formulas (see runtime/src/operators/datagen.rs).
    let channels = ["apple", "google", "facebook", "baidu"];
    // Per (channel, bucket): rows, cheap rows, rich auctions, top price.
    type Group = (i64, i64, BTreeSet<i64>, i64);
    let mut want: BTreeMap<(String, i64), Group> = BTreeMap::new();
    for i in 0..N {
        let price = 100 + (i * 31) % 10_000;
        let g = want.entry((channels[(i % 4) as usize].to_string(), price % 3)).or_default();
        g.0 += 1;
        g.1 += i64::from(price < 5000);
        if price >= 5000 {
            g.2.insert((i * 7919) % 10_000);
        }
        g.3 = g.3.max(price);
    }
    let want: BTreeMap<(String, i64), serde_json::Value> = want
        .into_iter()
        .map(|((c, b), (n, cheap, rich, top))| {
            let row = serde_json::json!({"channel": c, "bucket": b, "n": n, "cheap": cheap, "rich_auctions": rich.len(), "top": top});
            ((c, b), row)
        })
        .collect();
    assert_eq!(groups, want);
    assert!(changes > 2 * want.len(), "groups were updated on the way: {changes} changes");
    Ok(())
}

/// A Top-N in SQL (`ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...)`
/// under `WHERE rn <= 3`), printed by `weir local` at parallelism 2:
/// replayed by (channel, rank), its changes end in each channel's three
/// highest prices.
#[test]
fn a_sql_top_n_prints_a_changelog_that_ends_in_each_partitions_first_rows() -> anyhow::Result<()> {
    const N: i64 = 20_000;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("top.sql");
    std::fs::write(
        &script,
        format!(
            "SET 'parallelism.default' = '2';
CREATE TABLE bids (auction BIGINT, price BIGINT, channel STRING)
  WITH ('connector' = 'datagen', 'number-of-rows' = '{N}');
SELECT channel, price, rn FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY channel ORDER BY price DESC) AS rn FROM bids
) WHERE rn <= 3;
"
        ),
    )?;
    let run = std::process::Command::new(bin("weir")).arg("local").arg(&script).output()?;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let mut ranks: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for line in String::from_utf8_lossy(&run.stdout).lines() {
        let json = line.split_once("> ").map_or(line, |(_, rest)| rest);
        let Ok(row) = serde_json::from_str::<serde_json::Value>(json) else { continue };
        let key = (row["channel"].as_str().unwrap_or_default().to_string(), row["rn"].as_i64().unwrap_or(-1));
        match row["__op"].as_str() {
            Some("+I" | "+U") => ranks.insert(key, row["price"].as_i64().unwrap_or(-1)),
            Some("-U" | "-D") => ranks.remove(&key),
            other => anyhow::bail!("unknown change kind {other:?} in {line}"),
        };
    }
    let channels = ["apple", "google", "facebook", "baidu"];
    let mut prices: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for i in 0..N {
        prices.entry(channels[(i % 4) as usize].to_string()).or_default().push(100 + (i * 31) % 10_000);
    }
    let mut want = BTreeMap::new();
    for (c, mut p) in prices {
        p.sort_unstable_by(|a, b| b.cmp(a));
        for (r, price) in p.into_iter().take(3).enumerate() {
            want.insert((c.clone(), r as i64 + 1), price);
        }
    }
    assert_eq!(ranks, want);
    Ok(())
}

/// Regular joins in SQL (keys equal, no time bounds) by `weir local` at
/// parallelism 2, in one statement set: the inner join appends every pair
/// to files; the left join prints a changelog whose padded rows are taken
/// back when a partner comes, and which ends in every pair plus each bid
/// without a partner once.
#[test]
fn sql_regular_joins_write_every_pair_and_take_back_padded_rows() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("pairs");
    let script = dir.path().join("joins.sql");
    std::fs::write(
        &script,
        format!(
            "SET 'parallelism.default' = '2';
CREATE TABLE bids (auction BIGINT, price BIGINT, bucket AS auction % 100)
  WITH ('connector' = 'datagen', 'number-of-rows' = '3000');
CREATE TABLE offers (auction BIGINT, bidder BIGINT, bucket AS auction % 100)
  WITH ('connector' = 'datagen', 'number-of-rows' = '50');
CREATE TABLE pairs (price BIGINT, bidder BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
CREATE TABLE shown (price BIGINT, bidder BIGINT) WITH ('connector' = 'print');
EXECUTE STATEMENT SET BEGIN
INSERT INTO pairs SELECT b.price, o.bidder FROM bids b JOIN offers o ON b.bucket = o.bucket;
INSERT INTO shown SELECT b.price, o.bidder FROM bids b LEFT JOIN offers o ON b.bucket = o.bucket;
END;
",
            out.display()
        ),
    )?;
    let run = std::process::Command::new(bin("weir")).arg("local").arg(&script).output()?;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    // Row i's bucket is (i * 7919 % 10000) % 100 = 19 i mod 100: bids i and
    // offers j meet when i = j (mod 100). Offers cover buckets of j < 50.
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..3000i64 {
        let price = 100 + (i * 31) % 10_000;
        let partners: Vec<i64> = (0..50i64).filter(|j| (i - j) % 100 == 0).map(|j| (j * 104_729) % 100_000).collect();
        if partners.is_empty() {
            *want.entry(format!(r#"{{"price":{price}}}"#)).or_default() += 1;
        }
        for bidder in partners {
            *want.entry(format!(r#"{{"price":{price},"bidder":{bidder}}}"#)).or_default() += 1;
        }
    }
    let pairs: Vec<String> = visible_lines(&out);
    assert_eq!(pairs.len(), 1500, "30 bids meet the one offer of each of 50 buckets");
    // Replay the left join's changes as a multiset of rows.
    let mut shown: BTreeMap<String, i64> = BTreeMap::new();
    let mut taken_back = 0;
    for line in String::from_utf8_lossy(&run.stdout).lines() {
        let json = line.split_once("> ").map_or(line, |(_, rest)| rest);
        let Ok(mut row) = serde_json::from_str::<serde_json::Value>(json) else { continue };
        let op = row.as_object_mut().and_then(|r| r.remove("__op")).context("every row has its change kind")?;
        let text = row.to_string();
        match op.as_str() {
            Some("+I" | "+U") => *shown.entry(text).or_default() += 1,
            Some("-U" | "-D") => {
                taken_back += 1;
                *shown.entry(text).or_default() -= 1
            }
            other => anyhow::bail!("unknown change kind {other:?}"),
        }
    }
    shown.retain(|_, n| *n != 0);
    assert_eq!(shown, want);
    assert_eq!(want.values().sum::<i64>(), 3000, "1500 pairs and 1500 bids without a partner");
    // Whether a bid met its offer before or after arriving depends on
    // timing; every bid that came first was padded and taken back.
    assert!(taken_back <= 1500, "{taken_back} padded rows taken back");
    Ok(())
}

/// The Nexmark DDL of bench/nexmark (its table's `WITH` pointed at the
/// `nexmark` connector instead of Kafka) and one of its queries, with the
/// sink printing: `weir local`'s rows, replayed as a changelog.
fn nexmark_rows(query: &str, events: u64, columns: &[&str]) -> anyhow::Result<Vec<Vec<serde_json::Value>>> {
    nexmark_rows_with(query, events, columns, "")
}

/// [`nexmark_rows`], with `side_input` as the file `${SIDE_INPUT}` names.
fn nexmark_rows_with(
    query: &str,
    events: u64,
    columns: &[&str],
    side_input: &str,
) -> anyhow::Result<Vec<Vec<serde_json::Value>>> {
    let dir = tempfile::tempdir()?;
    let run = nexmark_run(query, events, dir.path(), side_input)?;
    let mut rows: Vec<Vec<serde_json::Value>> = Vec::new();
    for line in String::from_utf8_lossy(&run.stdout).lines() {
        let json = line.split_once("> ").map_or(line, |(_, rest)| rest);
        let Ok(mut row) = serde_json::from_str::<serde_json::Value>(json) else { continue };
        let op = row.as_object_mut().and_then(|r| r.remove("__op"));
        let values: Vec<serde_json::Value> = columns.iter().map(|c| row[*c].clone()).collect();
        match op.as_ref().and_then(|o| o.as_str()).unwrap_or("+I") {
            "+I" | "+U" => rows.push(values),
            _ => {
                let i = rows.iter().position(|r| *r == values).context("a retraction of a row never written")?;
                rows.swap_remove(i);
            }
        }
    }
    rows.sort_by_key(|r| serde_json::to_string(r).unwrap_or_default());
    Ok(rows)
}

/// Runs a query of bench/nexmark over the DDL's views on the `nexmark`
/// connector with `weir local` in `dir`: `${SIDE_INPUT}` is a file holding
/// `side_input`, `${OUTPUT}` is `dir/out`, and a `blackhole` sink prints.
fn nexmark_run(
    query: &str,
    events: u64,
    dir: &std::path::Path,
    side_input: &str,
) -> anyhow::Result<std::process::Output> {
    let bench = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/nexmark");
    let ddl = std::fs::read_to_string(bench.join("ddl.sql"))?;
    let (table, rest) = ddl.split_once(") WITH (").context("ddl.sql declares one table")?;
    let (_, views) = rest.split_once(");").context("ddl.sql's WITH ends")?;
    let options = format!(
        "'connector' = 'nexmark', 'events.num' = '{events}', 'first-event.rate' = '1000', 'next-event.rate' = '1000'"
    );
    let side = dir.join("side_input.txt");
    std::fs::write(&side, side_input)?;
    let q = std::fs::read_to_string(bench.join(format!("{query}.sql")))?
        .replace("'connector' = 'blackhole'", "'connector' = 'print'")
        .replace("${SIDE_INPUT}", &side.display().to_string())
        .replace("${OUTPUT}", &dir.join("out").display().to_string());
    let script = dir.join(format!("{query}.sql"));
    std::fs::write(&script, format!("SET 'parallelism.default' = '2';\n{table}) WITH ({options});{views}\n{q}"))?;
    let run = std::process::Command::new(bin("weir")).arg("local").arg(&script).output()?;
    anyhow::ensure!(run.status.success(), "{query}: {}", String::from_utf8_lossy(&run.stderr));
    Ok(run)
}

/// The events of the `nexmark` connector at 1000 events per second of
/// event time, spelled as the reference generator spells names and states.
fn nexmark_events(events: u64) -> Vec<nexmark::event::Event> {
    let words = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
    let config = nexmark::config::NexmarkConfig {
        base_time: 1_700_000_000_000,
        first_rate: 1000,
        next_rate: 1000,
        us_states: words("AZ,CA,ID,OR,WA,WY"),
        us_cities: words("Phoenix,Los Angeles,San Francisco,Boise,Portland,Bend,Redmond,Seattle,Kent,Cheyenne"),
        first_names: words("Peter,Paul,Luke,John,Saul,Vicky,Kate,Julie,Sarah,Deiter,Walter"),
        last_names: words("Shultz,Abrams,Spencer,White,Bartels,Walton,Smith,Jones,Noris"),
        ..Default::default()
    };
    nexmark::EventGenerator::new(config).take(events as usize).collect()
}

/// Nexmark's q2 (a filter on the fields of the `bid` row, through the
/// views of bench/nexmark/ddl.sql), q3 (a regular join of the person and
/// auction views), q13 (a lookup join against a CSV file) and q10
/// (partitioned CSV files with success files) on the
/// `nexmark` connector give exactly the rows computed from the generator's
/// events.
#[test]
fn nexmark_queries_over_the_generator_give_the_rows_of_its_events() -> anyhow::Result<()> {
    use nexmark::event::Event;
    const N: u64 = 30_000;
    let events = nexmark_events(N);
    let json = |v: &[serde_json::Value]| v.to_vec();
    let mut want: Vec<Vec<serde_json::Value>> = events
        .iter()
        .filter_map(|e| match e {
            Event::Bid(b) if b.auction % 123 == 0 => Some(json(&[b.auction.into(), b.price.into()])),
            _ => None,
        })
        .collect();
    want.sort_by_key(|r| serde_json::to_string(r).unwrap_or_default());
    assert!(want.len() > 10, "q2 keeps some bids: {}", want.len());
    assert_eq!(nexmark_rows("q2", N, &["auction", "price"])?, want);

    let people: BTreeMap<usize, &nexmark::event::Person> = events
        .iter()
        .filter_map(|e| match e {
            Event::Person(p) => Some((p.id, p)),
            _ => None,
        })
        .collect();
    let mut want: Vec<Vec<serde_json::Value>> = Vec::new();
    for e in &events {
        let Event::Auction(a) = e else { continue };
        let Some(p) = people.get(&a.seller) else { continue };
        if a.category == 10 && ["OR", "ID", "CA"].contains(&p.state.as_str()) {
            want.push(json(&[p.name.clone().into(), p.city.clone().into(), p.state.clone().into(), a.id.into()]));
        }
    }
    want.sort_by_key(|r| serde_json::to_string(r).unwrap_or_default());
    assert!(want.len() > 5, "q3 finds some sellers: {}", want.len());
    assert_eq!(nexmark_rows("q3", N, &["name", "city", "state", "id"])?, want);

    // q13: a lookup join against a CSV file without a primary key. Keys
    // ≡ 3 (mod 7) are missing (those bids drop out), multiples of 1000 have
    // two rows (those bids meet both).
    let mut side = String::new();
    for k in (0..10_000).filter(|k| k % 7 != 3) {
        side.push_str(&format!("{k},side-{k}\n"));
        if k % 1000 == 0 {
            side.push_str(&format!("{k},again-{k}\n"));
        }
    }
    let mut want: Vec<Vec<serde_json::Value>> = Vec::new();
    for e in &events {
        let Event::Bid(b) = e else { continue };
        let k = b.auction % 10_000;
        if k % 7 == 3 {
            continue;
        }
        want.push(json(&[b.auction.into(), b.price.into(), format!("side-{k}").into()]));
        if k % 1000 == 0 {
            want.push(json(&[b.auction.into(), b.price.into(), format!("again-{k}").into()]));
        }
    }
    want.sort_by_key(|r| serde_json::to_string(r).unwrap_or_default());
    assert_eq!(nexmark_rows_with("q13", N, &["auction", "price", "value"], &side)?, want);

    // q10: every bid as CSV under dt=/hm= directories of its minute, each
    // marked with a success file.
    let dir = tempfile::tempdir()?;
    nexmark_run("q10", N, dir.path(), "")?;
    let mut want: BTreeMap<String, Vec<(i64, i64, i64)>> = BTreeMap::new();
    for e in &events {
        let Event::Bid(b) = e else { continue };
        let at = chrono::DateTime::from_timestamp_millis(b.date_time as i64).context("a time")?;
        let partition = format!("dt={}/hm={}", at.format("%Y-%m-%d"), at.format("%H%%3A%M"));
        want.entry(partition).or_default().push((b.auction as i64, b.bidder as i64, b.price as i64));
    }
    for (partition, rows) in &mut want {
        let path = dir.path().join("out").join(partition.as_str());
        assert!(path.join("_SUCCESS").exists(), "q10: {partition} has no success file");
        let mut got = Vec::new();
        for f in std::fs::read_dir(&path)? {
            let name = f?.file_name().to_string_lossy().to_string();
            if name.starts_with(['.', '_']) {
                continue;
            }
            for line in std::fs::read_to_string(path.join(&name))?.lines() {
                let n: Vec<i64> = line.split(',').take(3).map(|v| v.parse().unwrap_or(-1)).collect();
                got.push((n[0], n[1], n[2]));
            }
        }
        got.sort_unstable();
        rows.sort_unstable();
        assert!(got == *rows, "q10: {partition} holds {} rows, not the {} bids of its minute", got.len(), rows.len());
    }
    Ok(())
}

/// Runs a SQL script with `weir local` and returns the rows it printed.
fn printed(dir: &std::path::Path, name: &str, script: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    printed_with(dir, name, script, &[])
}

/// [`printed`], with more environment for `weir local`.
fn printed_with(
    dir: &std::path::Path,
    name: &str,
    script: &str,
    env: &[(&str, String)],
) -> anyhow::Result<Vec<serde_json::Value>> {
    let path = dir.join(name);
    std::fs::write(&path, script)?;
    let run = std::process::Command::new(bin("weir"))
        .arg("local")
        .arg(&path)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()?;
    anyhow::ensure!(run.status.success(), "{name}: {}", String::from_utf8_lossy(&run.stderr));
    Ok(String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line.split_once("> ").map_or(line, |(_, rest)| rest)).ok())
        .collect())
}

/// Datagen's bids in 500 ms tumbling windows, for the window Top-N and
/// window join tests.
const WINDOWED_BIDS: &str = "SET 'parallelism.default' = '2';
CREATE TABLE bids (auction BIGINT, price BIGINT, event_time_ms BIGINT, channel STRING,
  ts AS TO_TIMESTAMP_LTZ(event_time_ms, 3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
  WITH ('connector' = 'datagen', 'number-of-rows' = '20000');
CREATE VIEW windowed AS SELECT * FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '500' MILLISECOND));
";

/// Datagen's row `i`: (auction, price, event_time_ms, channel).
fn datagen_bid(i: i64) -> (i64, i64, i64, &'static str) {
    let channels = ["apple", "google", "facebook", "baidu"];
    ((i * 7919) % 10_000, 100 + (i * 31) % 10_000, 1_700_000_000_000 + i / 10, channels[(i % 4) as usize])
}

/// Window Top-N in SQL at parallelism 2, over a window table function's
/// rows and over a window aggregation's: each window's first rows are
/// appended once (no change kinds), and they are exactly the generator's.
#[test]
fn sql_window_top_n_appends_each_windows_first_rows_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let windows = |i: i64| {
        let t = datagen_bid(i).2;
        t - t % 500
    };
    // The three highest prices of each window (prices within a window are distinct).
    let rows = printed(
        dir.path(),
        "rows.sql",
        &format!(
            "{WINDOWED_BIDS}SELECT auction, price, rn FROM (
  SELECT auction, price, window_start, window_end,
    ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY price DESC) AS rn
  FROM windowed) WHERE rn <= 3;"
        ),
    )?;
    let mut per_window: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for i in 0..20_000 {
        let (auction, price, _, _) = datagen_bid(i);
        per_window.entry(windows(i)).or_default().push((price, auction));
    }
    let mut want: Vec<(i64, i64, i64)> = Vec::new();
    for mut bids in per_window.into_values() {
        bids.sort_unstable_by(|a, b| b.cmp(a));
        want.extend(bids.into_iter().take(3).enumerate().map(|(r, (p, a))| (a, p, r as i64 + 1)));
    }
    let mut got: Vec<(i64, i64, i64)> = rows
        .iter()
        .map(|r| {
            (r["auction"].as_i64().unwrap_or(-1), r["price"].as_i64().unwrap_or(-1), r["rn"].as_i64().unwrap_or(-1))
        })
        .collect();
    assert!(rows.iter().all(|r| r.get("__op").is_none()), "a window Top-N only appends");
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(want.len(), 12, "four windows of three rows");
    // The two channels of highest total per window, over the window aggregation.
    let rows = printed(
        dir.path(),
        "channels.sql",
        &format!(
            "{WINDOWED_BIDS}SELECT channel, total, rn FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY total DESC) AS rn FROM (
    SELECT channel, window_start, window_end, SUM(price) AS total FROM windowed
    GROUP BY channel, window_start, window_end)) WHERE rn <= 2;"
        ),
    )?;
    let mut totals: BTreeMap<(i64, &str), i64> = BTreeMap::new();
    for i in 0..20_000 {
        let (_, price, _, channel) = datagen_bid(i);
        *totals.entry((windows(i), channel)).or_default() += price;
    }
    let mut per_window: BTreeMap<i64, Vec<(i64, &str)>> = BTreeMap::new();
    for ((w, channel), total) in totals {
        per_window.entry(w).or_default().push((total, channel));
    }
    let mut want: Vec<(String, i64, i64)> = Vec::new();
    for mut totals in per_window.into_values() {
        totals.sort_unstable_by(|a, b| b.cmp(a));
        assert!(totals[1].0 != totals[2].0, "no tie decides the second place");
        want.extend(totals.into_iter().take(2).enumerate().map(|(r, (t, c))| (c.to_string(), t, r as i64 + 1)));
    }
    let mut got: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|r| {
            let channel = r["channel"].as_str().unwrap_or_default().to_string();
            (channel, r["total"].as_i64().unwrap_or(-1), r["rn"].as_i64().unwrap_or(-1))
        })
        .collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
    Ok(())
}

/// A window join in SQL at parallelism 2: the cheap bids of each window
/// LEFT JOINed with the dear bids of the same channel and window; every
/// pair once, and each cheap bid without a partner once, padded.
#[test]
fn a_sql_window_join_pairs_rows_of_the_same_window_and_pads_the_rest() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rows = printed(
        dir.path(),
        "join.sql",
        &format!(
            "{WINDOWED_BIDS}SELECT L.auction, L.price AS low, R.price AS high
FROM (SELECT * FROM windowed WHERE price < 150) L
LEFT JOIN (SELECT * FROM windowed WHERE price > 10094) R
ON L.channel = R.channel AND L.window_start = R.window_start AND L.window_end = R.window_end;"
        ),
    )?;
    let bids: Vec<(i64, i64, i64, &str)> = (0..20_000).map(datagen_bid).collect();
    let window = |t: i64| t - t % 500;
    let mut want: Vec<(i64, i64, Option<i64>)> = Vec::new();
    for l in bids.iter().filter(|b| b.1 < 150) {
        let partners: Vec<i64> =
            bids.iter().filter(|r| r.1 > 10_094 && r.3 == l.3 && window(r.2) == window(l.2)).map(|r| r.1).collect();
        if partners.is_empty() {
            want.push((l.0, l.1, None));
        }
        want.extend(partners.into_iter().map(|p| (l.0, l.1, Some(p))));
    }
    let mut got: Vec<(i64, i64, Option<i64>)> = rows
        .iter()
        .map(|r| (r["auction"].as_i64().unwrap_or(-1), r["low"].as_i64().unwrap_or(-1), r["high"].as_i64()))
        .collect();
    got.sort_unstable();
    want.sort_unstable();
    let padded = want.iter().filter(|w| w.2.is_none()).count();
    assert!(padded > 0 && want.len() > padded, "the check covers both kinds of rows: {want:?}");
    assert_eq!(got, want);
    Ok(())
}

/// A CUMULATE window in SQL with an offset, at parallelism 2: each
/// channel's running count and maximum at every 250 ms step of each
/// one-second period (periods start 100 ms past the second), exactly.
#[test]
fn a_sql_cumulate_window_reports_every_step_of_each_period() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rows = printed(
        dir.path(),
        "cumulate.sql",
        &format!(
            "{WINDOWED_BIDS}SELECT channel, CAST(window_start AS BIGINT) AS ws, CAST(window_end AS BIGINT) AS we,
  COUNT(*) AS n, MAX(price) AS top
FROM TABLE(CUMULATE(TABLE bids, DESCRIPTOR(ts), INTERVAL '250' MILLISECOND, INTERVAL '1' SECOND, INTERVAL '100' MILLISECOND))
GROUP BY channel, window_start, window_end;"
        ),
    )?;
    let mut want: BTreeMap<(String, i64, i64), (i64, i64)> = BTreeMap::new();
    for i in 0..20_000 {
        let (_, price, t, channel) = datagen_bid(i);
        let start = t - (t - 100).rem_euclid(1000);
        for end in (1..=4).map(|k| start + 250 * k).filter(|end| t < *end) {
            let e = want.entry((channel.to_string(), start, end)).or_insert((0, 0));
            e.0 += 1;
            e.1 = e.1.max(price);
        }
    }
    let got: BTreeMap<(String, i64, i64), (i64, i64)> = rows
        .iter()
        .map(|r| {
            let key = (
                r["channel"].as_str().unwrap_or_default().to_string(),
                r["ws"].as_i64().unwrap_or(-1),
                r["we"].as_i64().unwrap_or(-1),
            );
            (key, (r["n"].as_i64().unwrap_or(-1), r["top"].as_i64().unwrap_or(-1)))
        })
        .collect();
    assert_eq!(got.len(), rows.len(), "each window once");
    assert_eq!(got, want);
    Ok(())
}

/// `weir sql` with its statements piped in: a table declared over several
/// lines, a mistake reported with its line and caret (the session goes
/// on), a GROUP BY shown as the final table of its groups, the same kind of
/// query in changelog mode (its changes replay to the groups), an INSERT
/// run to its end, and QUIT.
#[test]
fn the_sql_shell_declares_queries_and_shows_results_as_tables_and_changelogs() -> anyhow::Result<()> {
    use std::io::Write;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("cheap");
    let input = format!(
        "CREATE TABLE bids (auction BIGINT, price BIGINT,
  event_time_ms BIGINT, channel STRING)
  WITH ('connector' = 'datagen', 'number-of-rows' = '1000');
SET 'parallelism.default' = '2';
SHOW TABLES;
DESCRIBE bids;
SELECT chanel FROM bids;
SELECT channel, COUNT(*) AS n, MAX(price) AS top FROM bids GROUP BY channel;
SET 'sql-client.execution.result-mode' = 'changelog';
SELECT channel, COUNT(*) AS n FROM bids WHERE auction < 300 GROUP BY channel;
CREATE TABLE cheap (auction BIGINT, price BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
INSERT INTO cheap SELECT auction, price FROM bids WHERE price < 1000;
QUIT;
SELECT 'never run' FROM bids;
",
        out.display()
    );
    let mut child = std::process::Command::new(bin("weir"))
        .arg("sql")
        .env("HOME", dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(input.as_bytes())?;
    let run = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("| bids | TABLE (datagen) |"), "{stdout}");
    assert!(stdout.contains("| channel       | STRING |"), "{stdout}");
    assert!(
        stdout.contains("error: line 1, column 8: unknown column `chanel` (did you mean `channel`?)")
            && stdout.contains("   |        ^"),
        "{stdout}"
    );
    let channels = ["apple", "google", "facebook", "baidu"];
    let bid = |i: i64| ((i * 7919) % 10_000, 100 + (i * 31) % 10_000, channels[(i % 4) as usize]);
    for c in channels {
        let top = (0..1000).map(bid).filter(|b| b.2 == c).map(|b| b.1).max().unwrap_or(0);
        let row = format!("| {c:<8} | 250 | {top} |");
        assert!(stdout.contains(&row), "no row {row} in\n{stdout}");
    }
    assert!(stdout.contains("4 rows"), "{stdout}");
    // The changelog's changes replay to the counts.
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for line in stdout.lines() {
        let cells: Vec<&str> = line.split(" | ").collect();
        match cells[..] {
            ["+I" | "+U", c, n] => {
                counts.insert(c.to_string(), n.parse()?);
            }
            ["-U" | "-D", c, _] => {
                counts.remove(c);
            }
            _ => {}
        }
    }
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for (auction, _, c) in (0..1000).map(bid) {
        if auction < 300 {
            *want.entry(c.to_string()).or_default() += 1;
        }
    }
    assert_eq!(counts, want, "{stdout}");
    let cheap = (0..1000).map(bid).filter(|b| b.1 < 1000).count();
    assert!(stdout.contains(&format!("finished: {cheap} rows written")), "{stdout}");
    assert_eq!(visible_lines(&out).len(), cheap);
    assert!(!stdout.contains("never run"), "nothing runs after QUIT: {stdout}");
    Ok(())
}

/// An OVER aggregation in SQL at parallelism 2: each bid with the count
/// and total price of its channel's bids of the last 5 ms (rows of the same
/// time included), exactly as the generator's rows give them.
#[test]
fn a_sql_over_aggregation_sums_each_rows_preceding_range() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rows = printed(
        dir.path(),
        "over.sql",
        "SET 'parallelism.default' = '2';
CREATE TABLE bids (auction BIGINT, price BIGINT, event_time_ms BIGINT, channel STRING,
  ts AS TO_TIMESTAMP_LTZ(event_time_ms, 3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
  WITH ('connector' = 'datagen', 'number-of-rows' = '3000');
SELECT auction, event_time_ms, channel,
  COUNT(*) OVER (PARTITION BY channel ORDER BY ts RANGE BETWEEN INTERVAL '5' MILLISECOND PRECEDING AND CURRENT ROW) AS n,
  SUM(price) OVER (PARTITION BY channel ORDER BY ts RANGE BETWEEN INTERVAL '5' MILLISECOND PRECEDING AND CURRENT ROW) AS total
FROM bids;",
    )?;
    let bids: Vec<(i64, i64, i64, &str)> = (0..3000).map(datagen_bid).collect();
    let mut want: Vec<(i64, i64, i64)> = bids
        .iter()
        .map(|b| {
            let frame = bids.iter().filter(|o| o.3 == b.3 && o.2 <= b.2 && o.2 >= b.2 - 5);
            (b.0, frame.clone().count() as i64, frame.map(|o| o.1).sum())
        })
        .collect();
    let mut got: Vec<(i64, i64, i64)> = rows
        .iter()
        .map(|r| {
            (r["auction"].as_i64().unwrap_or(-1), r["n"].as_i64().unwrap_or(-1), r["total"].as_i64().unwrap_or(-1))
        })
        .collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got.len(), 3000);
    assert_eq!(got, want);
    Ok(())
}

/// Window Top-N over HOP windows read as a table (each row once per
/// window), at parallelism 2: every window's two highest prices, once.
#[test]
fn a_sql_window_top_n_over_hopping_windows_ranks_each_window() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rows = printed(
        dir.path(),
        "hop.sql",
        &format!(
            "{WINDOWED_BIDS}SELECT CAST(window_start AS BIGINT) AS ws, price, rn FROM (
  SELECT price, window_start, window_end,
    ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY price DESC) AS rn
  FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '500' MILLISECOND, INTERVAL '1' SECOND))) WHERE rn <= 2;"
        ),
    )?;
    let mut per_window: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for i in 0..20_000 {
        let (_, price, t, _) = datagen_bid(i);
        let mut start = t - t.rem_euclid(500);
        while start + 1000 > t {
            per_window.entry(start).or_default().push(price);
            start -= 500;
        }
    }
    let mut want: Vec<(i64, i64, i64)> = Vec::new();
    for (start, mut prices) in per_window {
        prices.sort_unstable_by(|a, b| b.cmp(a));
        want.extend(prices.into_iter().take(2).enumerate().map(|(r, p)| (start, p, r as i64 + 1)));
    }
    let mut got: Vec<(i64, i64, i64)> = rows
        .iter()
        .map(|r| (r["ws"].as_i64().unwrap_or(-1), r["price"].as_i64().unwrap_or(-1), r["rn"].as_i64().unwrap_or(-1)))
        .collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(want.len(), 10, "five windows of two rows");
    Ok(())
}

/// INTERSECT and EXCEPT in SQL at parallelism 2: updating results whose
/// changes, replayed, end in exactly the sets the generator's rows make.
#[test]
fn sql_intersect_and_except_end_in_the_sets_of_both_sides() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bids: Vec<(i64, i64, i64, &str)> = (0..3000).map(datagen_bid).collect();
    let left: BTreeSet<i64> = bids.iter().filter(|b| b.1 < 3000).map(|b| b.0 % 50).collect();
    let right: BTreeSet<i64> = bids.iter().filter(|b| b.1 > 9800 && b.0 < 3000).map(|b| b.0 % 50).collect();
    for (op, want) in [
        ("INTERSECT", left.intersection(&right).copied().collect::<BTreeSet<i64>>()),
        ("EXCEPT", left.difference(&right).copied().collect()),
    ] {
        let rows = printed(
            dir.path(),
            "sets.sql",
            &format!(
                "SET 'parallelism.default' = '2';
CREATE TABLE bids (auction BIGINT, price BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '3000');
SELECT auction % 50 AS k FROM bids WHERE price < 3000
{op}
SELECT auction % 50 AS k FROM bids WHERE price > 9800 AND auction < 3000;"
            ),
        )?;
        let mut got: BTreeMap<i64, i64> = BTreeMap::new();
        for r in &rows {
            let k = r["k"].as_i64().context("a key")?;
            let d = if matches!(r["__op"].as_str(), Some("-U" | "-D")) { -1 } else { 1 };
            *got.entry(k).or_default() += d;
        }
        got.retain(|_, n| *n != 0);
        assert!(got.values().all(|n| *n == 1), "{op}: each row once: {got:?}");
        assert_eq!(got.keys().copied().collect::<BTreeSet<i64>>(), want, "{op}");
        assert!(!want.is_empty(), "{op}: the check covers rows");
    }
    // The ALL forms count: a row as often as the smaller of its counts on
    // both sides, or as its left count exceeds its right one.
    type Bid = (i64, i64, i64, &'static str);
    let count = |keep: &dyn Fn(&Bid) -> bool| {
        let mut m: BTreeMap<i64, i64> = BTreeMap::new();
        for b in bids.iter().filter(|b| keep(b)) {
            *m.entry(b.0 % 10).or_default() += 1;
        }
        m
    };
    let (l, r) = (count(&|b| b.1 < 5000), count(&|b| b.1 > 8000 && b.0 < 5000));
    for op in ["INTERSECT ALL", "EXCEPT ALL"] {
        let mut want: BTreeMap<i64, i64> = BTreeMap::new();
        for (k, n) in &l {
            let m = r.get(k).copied().unwrap_or(0);
            let copies = if op == "INTERSECT ALL" { (*n).min(m) } else { (*n - m).max(0) };
            if copies > 0 {
                want.insert(*k, copies);
            }
        }
        let rows = printed(
            dir.path(),
            "sets-all.sql",
            &format!(
                "SET 'parallelism.default' = '2';
CREATE TABLE bids (auction BIGINT, price BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '3000');
SELECT auction % 10 AS k FROM bids WHERE price < 5000
{op}
SELECT auction % 10 AS k FROM bids WHERE price > 8000 AND auction < 5000;"
            ),
        )?;
        let mut got: BTreeMap<i64, i64> = BTreeMap::new();
        for r in &rows {
            let k = r["k"].as_i64().context("a key")?;
            let d = if matches!(r["__op"].as_str(), Some("-U" | "-D")) { -1 } else { 1 };
            *got.entry(k).or_default() += d;
        }
        got.retain(|_, n| *n != 0);
        assert_eq!(got, want, "{op}");
        assert!(want.values().any(|n| *n > 1), "{op}: the check covers rows that come more than once");
    }
    Ok(())
}

/// A `filesystem` table read in SQL at parallelism 2: JSON lines in two
/// files of a directory (a hidden in-progress part skipped), counted in
/// tumbling windows of their event time, exactly.
#[test]
fn a_sql_filesystem_table_is_read_and_windowed_exactly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("clicks");
    std::fs::create_dir_all(input.join("dt=2026-03-01"))?;
    let pages = ["home", "cart", "search"];
    let mut want: BTreeMap<(String, i64), i64> = BTreeMap::new();
    let mut files = [String::new(), String::new()];
    for i in 0..600i64 {
        let (page, second) = (pages[(i % 3) as usize], i / 20);
        files[(i % 2) as usize].push_str(&format!(
            "{{\"page\":\"{page}\",\"ts\":\"2026-03-01 08:{:02}:{:02}.000\"}}\n",
            second / 60,
            second % 60
        ));
        *want.entry((page.to_string(), second / 10 * 10)).or_default() += 1;
    }
    std::fs::write(input.join("part-0.json"), &files[0])?;
    std::fs::write(input.join("dt=2026-03-01/part-1.json"), &files[1])?;
    std::fs::write(input.join(".part-2.inprogress"), "{\"page\":\"ghost\",\"ts\":\"2026-03-01 08:00:00.000\"}\n")?;
    let rows = printed(
        dir.path(),
        "files.sql",
        &format!(
            "SET 'parallelism.default' = '2';
CREATE TABLE clicks (page STRING, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
  WITH ('connector' = 'filesystem', 'path' = 'file://{}', 'format' = 'json');
SELECT page, CAST(window_start AS BIGINT) AS ws, COUNT(*) AS n
FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY page, window_start, window_end;",
            input.display()
        ),
    )?;
    let base = 1_772_352_000_000i64; // 2026-03-01 08:00:00 UTC
    let got: BTreeMap<(String, i64), i64> = rows
        .iter()
        .map(|r| {
            let page = r["page"].as_str().unwrap_or_default().to_string();
            ((page, (r["ws"].as_i64().unwrap_or(-1) - base) / 1000), r["n"].as_i64().unwrap_or(-1))
        })
        .collect();
    assert_eq!(got.len(), rows.len(), "each window once");
    assert_eq!(got, want);
    Ok(())
}

/// Filesystem tables on the S3-compatible server: datagen's rows written as
/// JSON, CSV (Flink's: no header, here `;`-delimited) and Parquet parts
/// partitioned by channel in one statement set, then read back by tables
/// of the same shape, the channel taken from the directories: every row
/// once, in each format.
#[test]
fn sql_filesystem_tables_round_trip_through_s3_in_every_format() -> anyhow::Result<()> {
    const N: i64 = 6_000;
    let s3 = weir_tests::s3::shared_s3();
    let mut env: Vec<(&str, String)> = s3.env().iter().map(|(k, v)| (*k, v.to_string())).collect();
    env.push(("AWS_ENDPOINT_URL", s3.endpoint()));
    let dir = tempfile::tempdir()?;
    let root = format!("s3://weir-lake/{}", weir_tests::unique("sql-files", '-'));
    let formats = [("json", ""), ("csv", ", 'csv.field-delimiter' = ';'"), ("parquet", "")];
    let table = |name: &str, format: &str, extra: &str| {
        format!(
            "CREATE TABLE {name}_{format} (auction BIGINT, price BIGINT, channel STRING) PARTITIONED BY (channel)
  WITH ('connector' = 'filesystem', 'path' = '{root}/{format}', 'format' = '{format}'{extra});\n"
        )
    };
    let mut write = format!(
        "SET 'parallelism.default' = '2';
CREATE TABLE bids (auction BIGINT, price BIGINT, event_time_ms BIGINT, channel STRING)
  WITH ('connector' = 'datagen', 'number-of-rows' = '{N}');\n"
    );
    let mut inserts = String::new();
    for (format, extra) in formats {
        write.push_str(&table("lake", format, extra));
        inserts.push_str(&format!("INSERT INTO lake_{format} SELECT auction, price, channel FROM bids;\n"));
    }
    write.push_str(&format!("EXECUTE STATEMENT SET BEGIN\n{inserts}END;\n"));
    printed_with(dir.path(), "write.sql", &write, &env)?;
    let mut want: Vec<(i64, i64, String)> = (0..N)
        .map(|i| {
            let (auction, price, _, channel) = datagen_bid(i);
            (auction, price, channel.to_string())
        })
        .collect();
    want.sort();
    for (format, extra) in formats {
        let read = format!(
            "SET 'parallelism.default' = '2';\n{}SELECT auction, price, channel FROM back_{format};",
            table("back", format, extra)
        );
        let rows = printed_with(dir.path(), &format!("read-{format}.sql"), &read, &env)?;
        let mut got: Vec<(i64, i64, String)> = rows
            .iter()
            .map(|r| {
                let n = |k: &str| r[k].as_i64().unwrap_or(-1);
                (n("auction"), n("price"), r["channel"].as_str().unwrap_or_default().to_string())
            })
            .collect();
        got.sort();
        assert_eq!(got.len(), want.len(), "{format}: every row once");
        assert!(got == want, "{format}: the rows read back differ from those written");
    }
    Ok(())
}

/// A partitioned filesystem sink with Flink's partition commit options
/// (Nexmark q10's shape: partitions named by DATE_FORMAT of the event
/// time, committed by partition time), checkpointed at parallelism 2: every
/// partition ends with its `_SUCCESS` file and holds exactly its rows, and
/// the subtasks' markers are gone.
#[test]
fn a_sql_filesystem_sink_marks_each_finished_partition_with_a_success_file() -> anyhow::Result<()> {
    const N: i64 = 30_000;
    let dir = tempfile::tempdir()?;
    let lake = dir.path().join("lake");
    let script = format!(
        "SET 'parallelism.default' = '2';
SET 'execution.checkpointing.interval' = '300ms';
CREATE TABLE bids (auction BIGINT, price BIGINT, event_time_ms BIGINT, channel STRING,
  ts AS TO_TIMESTAMP_LTZ(event_time_ms, 3), WATERMARK FOR ts AS ts)
  WITH ('connector' = 'datagen', 'number-of-rows' = '{N}', 'rows-per-second' = '10000');
CREATE TABLE lake (auction BIGINT, price BIGINT, dt STRING, hms STRING) PARTITIONED BY (dt, hms)
  WITH ('connector' = 'filesystem', 'path' = 'file://{}', 'format' = 'csv',
    'sink.partition-commit.trigger' = 'partition-time', 'sink.partition-commit.delay' = '0 s',
    'sink.partition-commit.policy.kind' = 'success-file',
    'partition.time-extractor.timestamp-pattern' = '$dt $hms');
INSERT INTO lake SELECT auction, price, DATE_FORMAT(ts, 'yyyy-MM-dd'), DATE_FORMAT(ts, 'HH:mm:ss') FROM bids;",
        lake.display()
    );
    printed(dir.path(), "commit.sql", &script)?;
    // The rows each partition should hold, by datagen's formulas.
    let mut want: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for i in 0..N {
        let (auction, price, t, _) = datagen_bid(i);
        let at = chrono::DateTime::from_timestamp_millis(t).context("a time")?;
        let dir = format!("dt={}/hms={}", at.format("%Y-%m-%d"), at.format("%H%%3A%M%%3A%S"));
        want.entry(dir).or_default().push((auction, price));
    }
    assert!(want.len() >= 2, "the rows span several seconds");
    for (partition, rows) in &mut want {
        let path = lake.join(partition.as_str());
        assert!(path.join("_SUCCESS").exists(), "{partition} has no success file");
        let mut got = Vec::new();
        for e in std::fs::read_dir(&path)? {
            let name = e?.file_name().to_string_lossy().to_string();
            if name.starts_with(['.', '_']) {
                continue;
            }
            for line in std::fs::read_to_string(path.join(&name))?.lines() {
                let (a, p) = line.split_once(',').context("two fields")?;
                got.push((a.parse::<i64>()?, p.parse::<i64>()?));
            }
        }
        got.sort_unstable();
        rows.sort_unstable();
        assert_eq!(&got, rows, "{partition}");
    }
    let markers = lake.join(".weir-commit-lake");
    assert!(!markers.exists() || std::fs::read_dir(&markers)?.next().is_none(), "markers left behind");
    Ok(())
}

/// SUM and AVG of DISTINCT values in SQL at parallelism 2: in 500 ms
/// windows, and in an updating GROUP BY (where every price of a channel
/// comes twice), each against values computed from datagen's formulas.
#[test]
fn sql_sums_and_means_of_distinct_values_count_each_value_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rows = printed(
        dir.path(),
        "windows.sql",
        &format!(
            "{WINDOWED_BIDS}SELECT CAST(window_start AS BIGINT) AS ws, SUM(DISTINCT price / 100) AS s,
  AVG(DISTINCT price / 100) AS a, COUNT(DISTINCT price / 100) AS c
FROM windowed GROUP BY window_start, window_end;"
        ),
    )?;
    let mut want: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for i in 0..20_000 {
        let (_, price, t, _) = datagen_bid(i);
        want.entry(t - t % 500).or_default().insert(price / 100);
    }
    let got: BTreeMap<i64, (i64, f64, i64)> = rows
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_i64().unwrap_or(-1);
            (n("ws"), (n("s"), r["a"].as_f64().unwrap_or(-1.0), n("c")))
        })
        .collect();
    assert_eq!(got.len(), want.len(), "one row per window");
    for (ws, values) in &want {
        let sum: i64 = values.iter().sum();
        let (s, a, c) = got[ws];
        assert_eq!((s, c), (sum, values.len() as i64), "window {ws}");
        assert!((a - sum as f64 / values.len() as f64).abs() < 1e-9, "window {ws}: mean {a}");
    }

    // Updating: the final row of each channel.
    let rows = printed(
        dir.path(),
        "groups.sql",
        &format!("{WINDOWED_BIDS}SELECT channel, SUM(price) AS total, SUM(DISTINCT price) AS distinct_total FROM bids GROUP BY channel;"),
    )?;
    let mut last: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in &rows {
        let op = r["__op"].as_str().unwrap_or("+I");
        if op == "+I" || op == "+U" {
            let n = |k: &str| r[k].as_i64().unwrap_or(-1);
            last.insert(r["channel"].as_str().unwrap_or_default().to_string(), (n("total"), n("distinct_total")));
        }
    }
    let mut want: BTreeMap<String, (i64, BTreeSet<i64>)> = BTreeMap::new();
    for i in 0..20_000 {
        let (_, price, _, channel) = datagen_bid(i);
        let e = want.entry(channel.to_string()).or_default();
        e.0 += price;
        e.1.insert(price);
    }
    let want: BTreeMap<String, (i64, i64)> = want.into_iter().map(|(c, (t, d))| (c, (t, d.iter().sum()))).collect();
    assert_eq!(last, want);
    assert!(want.values().all(|(t, d)| *t == 2 * d), "every price of a channel comes twice");
    Ok(())
}

/// `LIMIT n OFFSET m` without an order at parallelism 2: exactly n of the
/// generator's rows, whichever arrive first.
#[test]
fn a_sql_limit_without_an_order_keeps_that_many_rows_of_the_input() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rows =
        printed(dir.path(), "limit.sql", &format!("{WINDOWED_BIDS}SELECT auction, price FROM bids LIMIT 7 OFFSET 3;"))?;
    let all: BTreeSet<(i64, i64)> = (0..20_000).map(|i| (datagen_bid(i).0, datagen_bid(i).1)).collect();
    let got: Vec<(i64, i64)> =
        rows.iter().map(|r| (r["auction"].as_i64().unwrap_or(-1), r["price"].as_i64().unwrap_or(-1))).collect();
    assert_eq!(got.len(), 7, "{got:?}");
    assert!(got.iter().all(|r| all.contains(r)), "rows of the input: {got:?}");
    Ok(())
}

/// A processing-time tumbling window in SQL at parallelism 2: datagen's
/// rows, throttled over about three seconds, are counted in one-second
/// windows of the clock; every row is counted once, in a window of the
/// run's seconds.
#[test]
fn a_sql_processing_time_window_counts_rows_by_the_clock() -> anyhow::Result<()> {
    const N: i64 = 3_000;
    let dir = tempfile::tempdir()?;
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64);
    let started = now()?;
    let rows = printed(
        dir.path(),
        "proctime.sql",
        &format!(
            "SET 'parallelism.default' = '2';
CREATE TABLE bids (auction BIGINT, price BIGINT, event_time_ms BIGINT, channel STRING, proc AS PROCTIME())
  WITH ('connector' = 'datagen', 'number-of-rows' = '{N}', 'rows-per-second' = '1000');
SELECT channel, CAST(window_start AS BIGINT) AS ws, CAST(window_end AS BIGINT) AS we, COUNT(*) AS n
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(proc), INTERVAL '1' SECOND)) GROUP BY channel, window_start, window_end;"
        ),
    )?;
    let ended = now()?;
    let mut per_channel: BTreeMap<String, i64> = BTreeMap::new();
    let mut windows = BTreeSet::new();
    for r in &rows {
        let (ws, we) = (r["ws"].as_i64().unwrap_or(-1), r["we"].as_i64().unwrap_or(-1));
        assert_eq!((we - ws, ws % 1000), (1000, 0), "a one-second window of the clock: {r}");
        assert!(we > started - 1000 && ws < ended, "a window of the run's time: {r}");
        windows.insert(ws);
        *per_channel.entry(r["channel"].as_str().unwrap_or_default().to_string()).or_default() +=
            r["n"].as_i64().unwrap_or(0);
    }
    assert_eq!(per_channel.values().sum::<i64>(), N, "every row counted once");
    assert_eq!(per_channel.len(), 4);
    assert!(windows.len() >= 2, "the rows came over several seconds: {windows:?}");
    Ok(())
}

/// `ORDER BY` the event time in SQL at parallelism 2: the generator's
/// subtasks interleave their rows, the result comes out in time order.
#[test]
fn a_sql_order_by_the_event_time_emits_rows_in_time_order() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rows = printed(
        dir.path(),
        "sorted.sql",
        &format!("{WINDOWED_BIDS}SELECT auction, event_time_ms, ts FROM bids ORDER BY ts;"),
    )?;
    let times: Vec<i64> = rows.iter().map(|r| r["event_time_ms"].as_i64().unwrap_or(-1)).collect();
    assert_eq!(times.len(), 20_000);
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "rows out of time order");
    let mut auctions: Vec<i64> = rows.iter().map(|r| r["auction"].as_i64().unwrap_or(-1)).collect();
    auctions.sort_unstable();
    let mut want: Vec<i64> = (0..20_000).map(|i| datagen_bid(i).0).collect();
    want.sort_unstable();
    assert_eq!(auctions, want, "every row once");
    // With LIMIT, the first rows in time order: the 20 of the first 2 ms.
    let rows = printed(
        dir.path(),
        "first.sql",
        &format!("{WINDOWED_BIDS}SELECT auction, event_time_ms, ts FROM bids ORDER BY ts LIMIT 20;"),
    )?;
    let mut first: Vec<i64> = rows.iter().map(|r| r["auction"].as_i64().unwrap_or(-1)).collect();
    first.sort_unstable();
    let mut want: Vec<i64> = (0..20).map(|i| datagen_bid(i).0).collect();
    want.sort_unstable();
    assert_eq!(first, want);
    Ok(())
}
