//! Scripts compiled and planned by the runtime (schemas, expression types,
//! partitioning): what `weir validate` checks.

use weir_runtime::graph::{JobGraph, Partitioning};
use weir_runtime::plan::Plan;

use super::*;

pub(crate) const DATAGEN: &str = "
CREATE TABLE bids (
  auction BIGINT,
  price BIGINT,
  event_time_ms BIGINT,
  channel STRING,
  ts AS TO_TIMESTAMP_LTZ(event_time_ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'datagen', 'number-of-rows' = '1000');
";

pub(crate) fn compiled(text: &str) -> JobGraph {
    let script = compile(text, "test").unwrap_or_else(|e| panic!("{e}"));
    let plan = Plan::new(&script.graph, &weir_connectors::registry(), 2);
    if let Err(e) = plan {
        panic!("the runtime refused the compiled job: {e}\n{:#?}", script.graph);
    }
    script.graph
}

pub(crate) fn error(text: &str) -> String {
    compile(text, "test").map(|s| format!("{:#?}", s.graph)).expect_err("the script should be refused").to_string()
}

pub(crate) fn kinds(g: &JobGraph) -> Vec<(&str, &str)> {
    g.operators.iter().map(|o| (o.uid.as_str(), o.kind.as_str())).collect()
}

#[test]
fn a_tumbling_window_aggregation_becomes_source_watermark_window_and_sink() {
    let g = compiled(&format!(
        "{DATAGEN}
SET 'parallelism.default' = '2';
CREATE TABLE out (auction BIGINT, window_start TIMESTAMP(3), bids BIGINT, total BIGINT, avg_price BIGINT)
  WITH ('connector' = 'blackhole');
INSERT INTO out
SELECT auction, window_start, COUNT(*) AS bids, SUM(price), AVG(price)
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND))
WHERE channel <> 'baidu'
GROUP BY auction, window_start, window_end;"
    ));
    let k = kinds(&g);
    assert_eq!(k[0], ("bids", "datagen"));
    assert_eq!(k[1], ("bids.columns", "project"));
    assert_eq!(k[2], ("bids.computed", "map"));
    assert_eq!(k[3], ("bids.watermark", "watermark"));
    assert_eq!(k[4], ("out.filter", "filter"));
    assert!(k[5].0.starts_with("bids.tumbling-") && k[5].1 == "window", "{k:?}");
    assert_eq!(&k[6..], [("out.project", "project"), ("out.columns", "project"), ("out", "discard")]);
    let window = &g.operators[5];
    assert_eq!(window.config["window"], serde_json::json!({"type": "tumbling", "size": "10000ms"}));
    assert_eq!(window.config["key"], serde_json::json!(["auction"]));
    let into_window = g.edges.iter().find(|e| e.to == window.uid).unwrap();
    assert_eq!((into_window.partitioning, into_window.key.clone()), (Partitioning::Hash, vec!["auction".to_string()]));
    // Flink's watermark max(ts) - 1 s equals Weir's max - 999 ms - 1.
    assert_eq!(g.operators[3].config["max_out_of_orderness"], "999ms");
    assert_eq!(g.default_parallelism, 2);
    assert!(g.checkpoint.is_none());
}

#[test]
fn hop_session_and_legacy_group_windows() {
    let hop = compiled(&format!(
        "{DATAGEN} CREATE TABLE o (c STRING, n BIGINT) WITH ('connector' = 'print');
         INSERT INTO o SELECT channel, COUNT(auction) FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND))
         GROUP BY channel, window_start, window_end;"
    ));
    let w = hop.operators.iter().find(|o| o.kind == "window").unwrap();
    assert_eq!(w.config["window"], serde_json::json!({"type": "sliding", "slide": "5000ms", "size": "10000ms"}));
    let legacy = compiled(&format!(
        "{DATAGEN} CREATE TABLE o (c STRING, s TIMESTAMP(3), e TIMESTAMP(3), m BIGINT) WITH ('connector' = 'print');
         INSERT INTO o SELECT channel, SESSION_START(ts, INTERVAL '3' SECOND), SESSION_END(ts, INTERVAL '3' SECOND), MAX(price * 2)
         FROM bids GROUP BY SESSION(ts, INTERVAL '3' SECOND), channel;"
    ));
    let w = legacy.operators.iter().find(|o| o.kind == "window").unwrap();
    assert_eq!(w.config["window"], serde_json::json!({"type": "session", "gap": "3000ms"}));
    assert_eq!(w.config["aggregates"][0]["column"], "__in0");
}

#[test]
fn cumulate_windows_and_window_offsets() {
    let window = |tvf: &str| {
        let g = compiled(&format!(
            "{DATAGEN} SELECT channel, window_start, window_end, COUNT(*) AS n FROM TABLE({tvf}) GROUP BY channel, window_start, window_end;"
        ));
        let w = g.operators.iter().find(|o| o.kind == "window").unwrap();
        (w.uid.clone(), w.config["window"].clone())
    };
    let (uid, spec) = window("CUMULATE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND, INTERVAL '1' MINUTE)");
    assert!(uid.starts_with("bids.cumulate-"), "{uid}");
    assert_eq!(spec, serde_json::json!({"type": "cumulate", "step": "1000ms", "size": "60000ms"}));
    // An offset counts modulo the alignment: -1 s of a 10 s tumble is 9 s.
    let (_, spec) = window("TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND, INTERVAL '-1' SECOND)");
    assert_eq!(spec, serde_json::json!({"type": "tumbling", "size": "10000ms", "offset": "9000ms"}));
    let (_, spec) = window("HOP(DATA => TABLE bids, TIMECOL => DESCRIPTOR(ts), SLIDE => INTERVAL '5' SECOND, SIZE => INTERVAL '10' SECOND, OFFSET => INTERVAL '12' SECOND)");
    assert_eq!(spec, serde_json::json!({"type": "sliding", "slide": "5000ms", "size": "10000ms", "offset": "2000ms"}));
    let (_, spec) = window("TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND, INTERVAL '20' SECOND)");
    assert_eq!(
        spec,
        serde_json::json!({"type": "tumbling", "size": "10000ms"}),
        "a whole number of sizes shifts nothing"
    );
    let e = error(&format!(
        "{DATAGEN} SELECT COUNT(*) FROM TABLE(CUMULATE(TABLE bids, DESCRIPTOR(ts), INTERVAL '7' SECOND, INTERVAL '1' MINUTE)) GROUP BY window_start, window_end;"
    ));
    assert!(e.contains("must be a whole number of steps"), "{e}");
}

#[test]
fn a_window_over_everything_runs_on_one_key() {
    let g = compiled(&format!(
        "{DATAGEN} CREATE TABLE o (s TIMESTAMP(3), n BIGINT) WITH ('connector' = 'blackhole');
         INSERT INTO o SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND))
         GROUP BY window_start, window_end HAVING COUNT(*) > 1;"
    ));
    let w = g.operators.iter().find(|o| o.kind == "window").unwrap();
    assert_eq!(w.config["key"], serde_json::json!(["__all"]));
    assert!(g.operators.iter().any(|o| o.uid == "o.having"));
}

#[test]
fn projections_filters_views_and_statement_sets() {
    let g = compiled(&format!(
        "{DATAGEN}
CREATE TEMPORARY VIEW cheap AS SELECT auction, price * 2 AS doubled, UPPER(channel) AS ch FROM bids WHERE price < 500;
CREATE TABLE a (auction BIGINT, doubled BIGINT, ch STRING) WITH ('connector' = 'blackhole');
CREATE TABLE b (ch STRING) WITH ('connector' = 'print');
EXECUTE STATEMENT SET BEGIN
INSERT INTO a SELECT * FROM cheap;
INSERT INTO b SELECT ch FROM (SELECT ch FROM cheap WHERE auction > 10);
END;"
    ));
    let sinks: Vec<_> =
        g.operators.iter().filter(|o| o.kind == "discard" || o.kind == "stdout").map(|o| o.uid.as_str()).collect();
    assert_eq!(sinks, ["a", "b"]);
    // Each insert reads the table with its own source.
    assert_eq!(g.operators.iter().filter(|o| o.kind == "datagen").count(), 2);
}

#[test]
fn settings_become_the_jobs_checkpointing() {
    let g = compiled(&format!(
        "{DATAGEN}
SET 'execution.checkpointing.interval' = '1s';
SET 'state.backend.type' = 'rocksdb';
SET 'pipeline.name' = 'bids-job';
CREATE TABLE o (auction BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO o SELECT auction FROM bids;"
    ));
    assert_eq!(g.name, "bids-job");
    let c = g.checkpoint.unwrap();
    assert_eq!(c.interval, std::time::Duration::from_secs(1));
}

#[test]
fn kafka_tables_map_flinks_options() {
    let g = compiled(
        "CREATE TABLE clicks (
  page STRING,
  `user` BIGINT NOT NULL,
  ts TIMESTAMP(3),
  part INT METADATA FROM 'partition' VIRTUAL,
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (
  'connector' = 'kafka', 'topic' = 'clicks', 'properties.bootstrap.servers' = '127.0.0.1:9092',
  'properties.group.id' = 'g1', 'properties.fetch.min.bytes' = '1',
  'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset', 'format' = 'json'
);
SET 'table.exec.source.idle-timeout' = '5 s';
SET 'execution.checkpointing.interval' = '1s';
CREATE TABLE counts (page STRING, window_end TIMESTAMP(3), clicks BIGINT) WITH (
  'connector' = 'kafka', 'topic' = 'counts', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'format' = 'json',
  'key.fields' = 'page', 'key.format' = 'raw', 'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = 'counts', 'sink.partitioner' = 'default'
);
INSERT INTO counts SELECT page, window_end, COUNT(*) FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY page, window_start, window_end;",
    );
    let src = &g.operators[0];
    assert_eq!(src.kind, "kafka_source");
    let c = &src.config;
    assert_eq!(c["topic"], "clicks");
    assert_eq!(c["group_id"], "g1");
    assert_eq!(c["start"], "earliest");
    assert_eq!(c["stop"], "latest");
    assert_eq!(c["properties"]["fetch.min.bytes"], "1");
    assert_eq!(c["schema"][1], serde_json::json!({"name": "user", "type": "int64", "nullable": false}));
    assert_eq!(c["metadata"]["partition"], "part");
    assert_eq!(
        c["watermark"],
        serde_json::json!({"column": "ts", "max_out_of_orderness": "1999ms", "idle_timeout": "5000ms"})
    );
    let sink = g.operators.last().unwrap();
    assert_eq!(sink.kind, "kafka_sink");
    assert_eq!(sink.config["key_column"], "page");
    assert_eq!(sink.config["delivery"], "exactly_once");
    assert_eq!(sink.config["transactional_id_prefix"], "counts");
}

#[test]
fn jdbc_tables_map_flinks_options_and_upsert_by_the_primary_key() {
    let g = compiled(&format!(
        "{DATAGEN}
SET 'execution.checkpointing.interval' = '1s';
CREATE TABLE counts (channel STRING, window_start TIMESTAMP(3), bids BIGINT, PRIMARY KEY (channel, window_start) NOT ENFORCED)
WITH ('connector' = 'jdbc', 'url' = 'jdbc:postgresql://127.0.0.1:5432/app', 'table-name' = 'bid_counts',
  'username' = 'weir', 'password-env' = 'DB_PASSWORD', 'sink.buffer-flush.max-rows' = '0',
  'sink.buffer-flush.interval' = '2s', 'sink.max-retries' = '5', 'sink.delivery-guarantee' = 'exactly-once');
INSERT INTO counts SELECT channel, window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY channel, window_start, window_end;"
    ));
    let sink = g.operators.last().unwrap();
    assert_eq!(sink.kind, "jdbc_sink");
    assert_eq!(
        sink.config,
        serde_json::json!({
            "url": "jdbc:postgresql://127.0.0.1:5432/app", "table": "bid_counts", "username": "weir",
            "password_env": "DB_PASSWORD", "key": ["channel", "window_start"], "buffer_flush_max_rows": 1,
            "buffer_flush_interval": "2s", "max_retries": 5, "delivery": "exactly_once"
        })
    );
    let e = error(&format!("{DATAGEN} CREATE TABLE o (a BIGINT) WITH ('connector' = 'jdbc', 'url' = 'jdbc:mysql://h/d', 'table-name' = 't', 'sink.parallelism' = '3');\nINSERT INTO o SELECT auction FROM bids;"));
    assert!(e.contains("not supported: sink.parallelism"), "{e}");
    let e = error(&format!("{DATAGEN} CREATE TABLE o (a BIGINT) WITH ('connector' = 'jdbc', 'url' = 'jdbc:mysql://h/d');\nINSERT INTO o SELECT auction FROM bids;"));
    assert!(e.contains("table-name"), "{e}");
}

#[test]
fn mongodb_tables_map_flinks_options_and_key_documents_by_the_primary_key() {
    let g = compiled(&format!(
        "{DATAGEN}
CREATE TABLE keywords (channel STRING, window_start TIMESTAMP(3), bids BIGINT, PRIMARY KEY (channel, window_start) NOT ENFORCED)
WITH ('connector' = 'mongodb', 'uri' = 'mongodb://127.0.0.1:27017', 'database' = 'kappa', 'collection' = 'keywords',
  'sink.buffer-flush.max-rows' = '500', 'sink.buffer-flush.interval' = '2s', 'sink.max-retries' = '5',
  'sink.retry.interval' = '300ms', 'sink.delivery-guarantee' = 'at-least-once');
INSERT INTO keywords SELECT channel, window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY channel, window_start, window_end;"
    ));
    let sink = g.operators.last().unwrap();
    assert_eq!(sink.kind, "mongodb_sink");
    assert_eq!(
        sink.config,
        serde_json::json!({
            "uri": "mongodb://127.0.0.1:27017", "database": "kappa", "collection": "keywords",
            "retry_interval": "300ms", "key": ["channel", "window_start"], "buffer_flush_max_rows": 500,
            "buffer_flush_interval": "2s", "max_retries": 5
        })
    );
    // Window bounds stay timestamps (BSON dates), not text.
    let columns = &g.operators[g.operators.len() - 2];
    assert!(!columns.config.to_string().contains("to_char"), "{}", columns.config);
    let e = error(&format!("{DATAGEN} CREATE TABLE o (a BIGINT) WITH ('connector' = 'mongodb', 'uri' = 'mongodb://h', 'database' = 'd', 'collection' = 'c', 'sink.delivery-guarantee' = 'exactly-once');\nINSERT INTO o SELECT auction FROM bids;"));
    assert!(e.contains("at-least-once or none"), "{e}");
    let e = error(&format!("{DATAGEN} CREATE TABLE o (a BIGINT) WITH ('connector' = 'mongodb', 'uri' = 'mongodb://h', 'database' = 'd');\nINSERT INTO o SELECT auction FROM bids;"));
    assert!(e.contains("collection"), "{e}");
}

#[test]
fn elasticsearch_tables_map_flinks_options_and_id_documents_by_the_primary_key() {
    let g = compiled(&format!(
        "{DATAGEN}
CREATE TABLE bid_docs (channel STRING, window_start TIMESTAMP(3), bids BIGINT, PRIMARY KEY (channel, window_start) NOT ENFORCED)
WITH ('connector' = 'elasticsearch-7', 'hosts' = 'http://a:9200;http://b:9200', 'index' = 'bids-{{window_start|yyyy-MM-dd}}',
  'document-id.key-delimiter' = '$', 'sink.bulk-flush.max-actions' = '500', 'sink.bulk-flush.max-size' = '2mb',
  'sink.bulk-flush.interval' = '2s', 'sink.bulk-flush.backoff.strategy' = 'CONSTANT',
  'sink.bulk-flush.backoff.max-retries' = '3', 'sink.bulk-flush.backoff.delay' = '200ms');
INSERT INTO bid_docs SELECT channel, window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY channel, window_start, window_end;"
    ));
    let sink = g.operators.last().unwrap();
    assert_eq!(sink.kind, "elasticsearch_sink");
    assert_eq!(
        sink.config,
        serde_json::json!({
            "hosts": ["http://a:9200", "http://b:9200"], "index": "bids-{window_start|yyyy-MM-dd}",
            "key_delimiter": "$", "bulk_flush_interval": "2s", "key": ["channel", "window_start"],
            "bulk_flush_max_actions": 500, "bulk_flush_max_bytes": 2 << 20,
            "backoff": {"strategy": "constant", "max_retries": 3, "delay": "200ms"}
        })
    );
    let e = error(&format!("{DATAGEN} CREATE TABLE o (a BIGINT) WITH ('connector' = 'opensearch', 'hosts' = 'http://h:9200', 'index' = 'o', 'failure-handler' = 'ignore');\nINSERT INTO o SELECT auction FROM bids;"));
    assert!(e.contains("not supported: failure-handler 'ignore'"), "{e}");
}

#[test]
fn kafka_sources_read_topics_by_pattern() {
    let g = compiled(
        "CREATE TABLE t (id BIGINT) WITH ('connector' = 'kafka', 'topic-pattern' = 'orders-.*', 'properties.bootstrap.servers' = 'k:9092', 'format' = 'json');
CREATE TABLE o (id BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO o SELECT id FROM t;",
    );
    let source = &g.operators[0];
    assert_eq!(source.config["topic_pattern"], "orders-.*");
    assert!(source.config.get("topic").is_none());
    let e = error("CREATE TABLE t (id BIGINT) WITH ('connector' = 'kafka', 'topic' = 'a', 'topic-pattern' = 'b.*', 'properties.bootstrap.servers' = 'k:9092', 'format' = 'json');
CREATE TABLE o (id BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO o SELECT id FROM t;");
    assert!(e.contains("either 'topic' or 'topic-pattern'"), "{e}");
}

#[test]
fn kafka_security_options_of_flinks_java_client_become_librdkafkas() {
    let table = |props: &str| {
        format!(
            "CREATE TABLE t (id BIGINT) WITH ('connector' = 'kafka', 'topic' = 'a', 'properties.bootstrap.servers' = 'k:9094', 'format' = 'json', {props});
CREATE TABLE o (id BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO o SELECT id FROM t;"
        )
    };
    let g = compiled(&table(
        "'properties.security.protocol' = 'SASL_SSL', 'properties.sasl.mechanism' = 'SCRAM-SHA-256',
         'properties.sasl.jaas.config' = 'org.apache.kafka.common.security.scram.ScramLoginModule required username=\"weir\" password=\"s3cret\";',
         'properties.ssl.truststore.type' = 'PEM', 'properties.ssl.truststore.location' = '/etc/ca.pem',
         'properties.ssl.endpoint.identification.algorithm' = ''",
    ));
    let p = &g.operators[0].config["properties"];
    assert_eq!(p["security.protocol"], "SASL_SSL");
    assert_eq!(p["sasl.mechanism"], "SCRAM-SHA-256");
    assert_eq!(p["sasl.username"], "weir");
    assert_eq!(p["sasl.password"], "s3cret");
    assert_eq!(p["ssl.ca.location"], "/etc/ca.pem");
    assert_eq!(p["ssl.endpoint.identification.algorithm"], "none");
    assert!(p.get("sasl.jaas.config").is_none() && p.get("ssl.truststore.location").is_none(), "{p}");
    let e = error(&table("'properties.ssl.truststore.location' = '/etc/truststore.jks'"));
    assert!(e.contains("JKS store, which librdkafka cannot read"), "{e}");
    let e = error(&table("'properties.sasl.jaas.config' = 'x required;'"));
    assert!(e.contains("needs username="), "{e}");
}

#[test]
fn errors_name_the_place_and_the_closest_name() {
    let e = error(&format!("{DATAGEN} CREATE TABLE o (a BIGINT) WITH ('connector' = 'blackhole');\nINSERT INTO o SELECT auctoin FROM bids;"));
    assert!(e.contains("unknown column `auctoin` (did you mean `auction`?)"), "{e}");
    assert!(e.contains("INSERT INTO o SELECT auctoin FROM bids;\n") && e.ends_with("^"), "{e}");
    let e = error(&format!(
        "{DATAGEN} CREATE TABLE o (a BIGINT) WITH ('connector' = 'blackhole');\nINSERT INTO o SELECT auction FROM bid;"
    ));
    assert!(e.contains("unknown table or view `bid` (did you mean `bids`?)"), "{e}");
    let e = error("CREATE TABLE t (a INT) WITH ('connector' = 'kafak');");
    assert!(e.contains("unknown connector 'kafak' (did you mean `kafka`?)"), "{e}");
    let e = error(&format!("{DATAGEN} CREATE TABLE o (a BIGINT) WITH ('connector' = 'blackhole', 'pth' = 'x');\nINSERT INTO o SELECT auction FROM bids;"));
    assert!(e.contains("unknown option 'pth' for the blackhole connector"), "{e}");
    let e = error(&format!("{DATAGEN} CREATE TABLE o (a BIGINT, b BIGINT) WITH ('connector' = 'blackhole');\nINSERT INTO o SELECT auction FROM bids;"));
    assert!(e.contains("the query gives 1 columns (auction) and table `o` takes 2 (a, b)"), "{e}");
    let e = error(&format!("{DATAGEN} CREATE TABLE o (a BIGINT) WITH ('connector' = 'filesystem', 'path' = '/tmp/o', 'format' = 'json');\nINSERT INTO o SELECT COUNT(*) FROM bids GROUP BY auction;"));
    assert!(e.contains("the query's result is updating") && e.contains("only appends rows"), "{e}");
    let g = compiled(&format!("{DATAGEN} CREATE TABLE o (a BIGINT) WITH ('connector' = 'blackhole');\nINSERT INTO o SELECT COUNT(DISTINCT price) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY window_start, window_end;"));
    let w = g.operators.iter().find(|o| o.kind == "window").unwrap();
    assert_eq!(w.config["aggregates"][0]["fn"], "count_distinct");
    let e = error(&format!("{DATAGEN} CREATE TABLE o (a BIGINT) WITH ('connector' = 'blackhole');\nINSERT INTO o SELECT price FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY auction, window_start, window_end;"));
    assert!(e.contains("column `price` is neither grouped nor inside an aggregate"), "{e}");
    let e = error(&format!("{DATAGEN} CREATE TABLE o (a BIGINT, n BIGINT) WITH ('connector' = 'blackhole');\nINSERT INTO o SELECT auctoin, COUNT(*) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY auction, window_start, window_end;"));
    assert!(e.contains("unknown column `auctoin` (did you mean `auction`?)"), "{e}");
    let e = error(&format!("{DATAGEN} CREATE TABLE o (a BIGINT) WITH ('connector' = 'blackhole');\nINSERT INTO o SELECT COUNT(*) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(event_time_ms), INTERVAL '1' SECOND)) GROUP BY window_start, window_end;"));
    assert!(e.contains("`event_time_ms` is not a time attribute: declare `WATERMARK FOR event_time_ms AS ...`"), "{e}");
    let e = error(&format!("{DATAGEN} SET 'parallelism.default' = '2';"));
    assert!(e.contains("nothing to run"), "{e}");
    let e = error(&format!("{DATAGEN} CREATE TABLE o (a BIGINT) WITH ('connector' = 'blackhole');\nINSERT INTO o SELECT auction FROM bids;\nINSERT INTO o SELECT auction FROM bids;"));
    assert!(e.contains("a script runs one job"), "{e}");
    let e = error("CREATE TABLE t (auction BIGINT, z STRING) WITH ('connector' = 'datagen');\nCREATE TABLE o (a BIGINT) WITH ('connector' = 'blackhole');\nINSERT INTO o SELECT auction FROM t;");
    assert!(e.contains("datagen has no column `z`"), "{e}");
}

#[test]
fn window_uids_keep_state_across_projection_filter_and_sink_edits_and_change_with_its_meaning() {
    let uid = |text: String| {
        let g = compiled(&text);
        g.operators.iter().find(|o| o.kind == "window").unwrap().uid.clone()
    };
    let q = |select: &str, filter: &str, sink: &str, group: &str| {
        format!(
            "{DATAGEN} CREATE TABLE {sink} (a BIGINT, n BIGINT) WITH ('connector' = 'blackhole');
             INSERT INTO {sink} SELECT {select} FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND)) {filter}
             GROUP BY {group}, window_start, window_end;"
        )
    };
    let base = uid(q("auction, COUNT(*)", "", "o", "auction"));
    assert_eq!(base, uid(q("auction * 10, COUNT(*) + 1", "", "o", "auction")), "a changed projection");
    assert_eq!(base, uid(q("auction, COUNT(*)", "WHERE price > 10", "o", "auction")), "a filter");
    assert_eq!(base, uid(q("auction, COUNT(*)", "", "other", "auction")), "another sink");
    assert_ne!(base, uid(q("price, COUNT(*)", "", "o", "price")), "other keys");
    assert_ne!(base, uid(q("auction, SUM(price)", "", "o", "auction")), "other aggregates");
}

#[test]
fn union_all_feeds_both_sides_into_one_operator_under_the_left_names() {
    let g = compiled(&format!(
        "{DATAGEN}
CREATE TABLE asks (auction BIGINT, bidder BIGINT, event_time_ms BIGINT, channel STRING)
  WITH ('connector' = 'datagen', 'number-of-rows' = '500');
CREATE TABLE out (auction BIGINT, price BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out
SELECT auction, price FROM bids WHERE channel = 'apple'
UNION ALL
SELECT auction, bidder FROM asks;"
    ));
    let union = g.operators.iter().find(|o| o.uid == "out.union").expect("a union operator");
    let into: Vec<&str> = g.edges.iter().filter(|e| e.to == union.uid).map(|e| e.from.as_str()).collect();
    assert_eq!(into.len(), 2, "{into:?}");
    assert!(into.iter().any(|f| f.starts_with("out.union-rename")), "the right side is renamed: {into:?}");
}

#[test]
fn union_all_of_different_widths_or_types_is_refused() {
    let e = error(&format!(
        "{DATAGEN}
CREATE TABLE out (auction BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out SELECT auction FROM bids UNION ALL SELECT auction, price FROM bids;"
    ));
    assert!(e.contains("as many columns on both sides: (auction) against (auction, price)"), "{e}");
    let e = error(&format!(
        "{DATAGEN}
CREATE TABLE out (auction BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out SELECT auction FROM bids UNION ALL SELECT channel FROM bids;"
    ));
    assert!(e.contains("CAST one side"), "{e}");
    let e = error(&format!(
        "{DATAGEN}
CREATE TABLE out (auction BIGINT) WITH ('connector' = 'filesystem', 'path' = '/tmp/out', 'format' = 'json');
INSERT INTO out SELECT auction FROM bids UNION SELECT auction FROM bids;"
    ));
    assert!(e.contains("the query's result is updating"), "UNION without ALL is distinct, an updating result: {e}");
}

#[test]
fn with_names_queries_that_the_main_query_and_later_ones_read() {
    let g = compiled(&format!(
        "{DATAGEN}
CREATE TABLE out (auction BIGINT, window_start TIMESTAMP(3), bids BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out
WITH apple AS (SELECT * FROM bids WHERE channel = 'apple'),
     pricey AS (SELECT * FROM apple WHERE price > 5000)
SELECT auction, window_start, COUNT(*) AS bids
FROM TABLE(TUMBLE(TABLE pricey, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end;"
    ));
    let filters = g.operators.iter().filter(|o| o.kind == "filter").count();
    assert_eq!(filters, 2, "{:?}", kinds(&g));
    assert!(g.operators.iter().any(|o| o.kind == "window"));
    let e = error(&format!(
        "{DATAGEN}
CREATE TABLE out (auction BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out WITH a AS (SELECT auction FROM a) SELECT auction FROM a;"
    ));
    assert!(e.contains("unknown table or view `a`"), "a WITH query does not see itself: {e}");
    let e = error(&format!(
        "{DATAGEN}
CREATE TABLE out (auction BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out WITH a AS (SELECT auction FROM bids) SELECT auction FROM b;"
    ));
    assert!(e.contains("unknown table or view `b`"), "{e}");
}

const ASKS: &str = "
CREATE TABLE asks (
  auction BIGINT,
  bidder BIGINT,
  event_time_ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(event_time_ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'datagen', 'number-of-rows' = '500');
";

#[test]
fn an_interval_join_hashes_both_inputs_by_key_and_bounds_the_right_time() {
    let g = compiled(&format!(
        "{DATAGEN}{ASKS}
CREATE TABLE out (auction BIGINT, price BIGINT, bidder BIGINT, auction0 BIGINT, ts TIMESTAMP(3))
  WITH ('connector' = 'blackhole');
INSERT INTO out
SELECT b.auction, b.price, a.bidder, a.auction AS auction0, b.ts
FROM bids AS b
LEFT JOIN asks a ON b.auction = a.auction AND a.ts BETWEEN b.ts - INTERVAL '5' SECOND AND b.ts + INTERVAL '1' MINUTE;"
    ));
    let join = g.operators.iter().find(|o| o.kind == "interval_join").expect("an interval join");
    assert!(join.uid.starts_with("bids-asks.interval-join-"), "{}", join.uid);
    assert_eq!(join.config["lower"], -5000);
    assert_eq!(join.config["upper"], 60000);
    assert_eq!(join.config["join_type"], "left");
    assert_eq!(join.config["left_key"], serde_json::json!(["auction"]));
    assert_eq!(join.config["right_key"], serde_json::json!(["auction"]));
    assert_eq!(join.config["left_time"], "ts");
    assert_eq!(join.config["right_time"], "ts");
    let names = join.config["names"].as_array().expect("names");
    let names: Vec<&str> = names.iter().filter_map(|n| n.as_str()).filter(|n| !n.starts_with("__")).collect();
    assert!(names.contains(&"auction0") && names.contains(&"ts0"), "right columns are numbered: {names:?}");
    let mut into: Vec<(u32, &str, Partitioning, &[String])> = g
        .edges
        .iter()
        .filter(|e| e.to == join.uid)
        .map(|e| (e.input, e.from.as_str(), e.partitioning, e.key.as_slice()))
        .collect();
    into.sort_by_key(|e| e.0);
    assert_eq!(into.len(), 2, "{into:?}");
    assert_eq!((into[0].0, into[0].1), (0, "bids.watermark"));
    assert_eq!((into[1].0, into[1].1), (1, "asks.watermark"));
    assert!(into.iter().all(|e| e.2 == Partitioning::Hash && e.3 == ["auction".to_string()]), "{into:?}");
}

#[test]
fn comparisons_in_either_order_make_the_same_bounds_and_extra_inner_conditions_filter() {
    let g = compiled(&format!(
        "{DATAGEN}{ASKS}
CREATE TABLE out (price BIGINT, bidder BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out
SELECT price, bidder FROM bids b JOIN asks a
  ON a.auction = b.auction AND b.ts >= a.ts - INTERVAL '2' SECOND AND a.ts > b.ts AND b.price > a.bidder;"
    ));
    let join = g.operators.iter().find(|o| o.kind == "interval_join").expect("an interval join");
    // b.ts >= a.ts - 2s: a.ts - b.ts <= 2000; a.ts > b.ts: a.ts - b.ts >= 1.
    assert_eq!((join.config["lower"].as_i64(), join.config["upper"].as_i64()), (Some(1), Some(2000)));
    assert_eq!(join.config["join_type"], "inner");
    let filter = g.operators.iter().find(|o| o.uid.ends_with(".join-filter")).expect("the extra condition filters");
    assert_eq!(filter.config["predicate"], "\"price\" > \"bidder\"");
}

#[test]
fn joins_the_runtime_cannot_run_are_refused_with_the_reason() {
    let out = "CREATE TABLE out (price BIGINT) WITH ('connector' = 'blackhole');";
    let e = error(&format!(
        "{DATAGEN}{ASKS}{out} INSERT INTO out SELECT price FROM bids b JOIN asks a ON b.auction = a.auction AND a.ts > b.ts;"
    ));
    assert!(e.contains("bounding the event times on one side only"), "{e}");
    let e = error(&format!(
        "{DATAGEN}{ASKS}{out} INSERT INTO out SELECT price FROM bids b JOIN asks a ON b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' SECOND;"
    ));
    assert!(e.contains("without an equality of a column of each side"), "{e}");
    let e = error(&format!(
        "{DATAGEN}{ASKS}{out} INSERT INTO out SELECT price FROM bids b JOIN asks a ON b.auction = a.auction AND a.ts BETWEEN b.ts AND b.ts - INTERVAL '1' SECOND;"
    ));
    assert!(e.contains("exclude every pair"), "{e}");
    let e = error(&format!(
        "{DATAGEN}{ASKS}{out} INSERT INTO out SELECT price FROM bids b FULL JOIN asks a ON b.auction = a.auction AND a.ts BETWEEN b.ts AND b.ts + INTERVAL '1' SECOND AND b.price > 3;"
    ));
    assert!(e.contains("outer join"), "{e}");
    let e = error(&format!(
        "{DATAGEN}{ASKS}{out} INSERT INTO out SELECT price FROM bids b JOIN asks a ON b.auction = a.auction AND a.ts BETWEEN b.ts AND b.ts + INTERVAL '1' SECOND WHERE auction > 3;"
    ));
    assert!(e.contains("column `auction` is ambiguous"), "{e}");
    let e = error(&format!(
        "{DATAGEN}{ASKS}{out} INSERT INTO out SELECT price FROM bids b JOIN asks a ON b.auction = c.auction AND a.ts BETWEEN b.ts AND b.ts + INTERVAL '1' SECOND;"
    ));
    assert!(e.contains("no input of the join is called `c`"), "{e}");
    let e = error(&format!("{DATAGEN}{ASKS}{out} INSERT INTO out SELECT price FROM bids b CROSS JOIN asks a;"));
    assert!(e.contains("CROSS JOIN"), "{e}");
    let e = error(&format!(
        "{DATAGEN}{out} INSERT INTO out SELECT b.price FROM bids b JOIN bids b ON b.auction = b.auction;"
    ));
    assert!(e.contains("names two inputs"), "{e}");
}

#[test]
fn a_join_without_time_bounds_is_a_regular_join_updating_when_outer() {
    let out = |name: &str| format!("CREATE TABLE {name} (price BIGINT, ask BIGINT) WITH ('connector' = 'blackhole');");
    let g = compiled(&format!(
        "{DATAGEN}{ASKS}{} SET 'table.exec.state.ttl' = '10 min';
INSERT INTO o SELECT b.price, a.bidder FROM bids b JOIN asks a ON b.auction = a.auction AND a.bidder > b.price;",
        out("o")
    ));
    let join = g.operators.iter().find(|o| o.kind == "regular_join").expect("a regular join");
    assert!(join.uid.starts_with("bids-asks.join-"), "{}", join.uid);
    assert_eq!(join.config["join_type"], "inner");
    assert_eq!(join.config["state_ttl"], "600000ms");
    assert!(join.config.get("op_column").is_none(), "an inner join of appending inputs appends");
    assert!(g.operators.iter().any(|o| o.kind == "filter" && o.uid.ends_with(".join-filter")));
    let inputs: Vec<_> = g.edges.iter().filter(|e| e.to == join.uid).map(|e| (e.input, e.key.clone())).collect();
    assert_eq!(inputs, [(0, vec!["auction".to_string()]), (1, vec!["auction".to_string()])]);
    // A left join's result is updating: into a table without a key it is refused.
    let e = error(&format!(
        "{DATAGEN}{ASKS} CREATE TABLE o (price BIGINT, ask BIGINT) WITH ('connector' = 'filesystem', 'path' = '/tmp/o', 'format' = 'json');
INSERT INTO o SELECT b.price, a.bidder FROM bids b LEFT JOIN asks a ON b.auction = a.auction;"
    ));
    assert!(e.contains("the query's result is updating"), "{e}");
    let g = compiled(&format!(
        "{DATAGEN}{ASKS} SELECT b.price, a.bidder FROM bids b LEFT JOIN asks a ON b.auction = a.auction;"
    ));
    let join = g.operators.iter().find(|o| o.kind == "regular_join").unwrap();
    assert_eq!(join.config["op_column"], "__op");
    // Its rows have no event-time attribute for a window.
    let e = error(&format!(
        "{DATAGEN}{ASKS} CREATE VIEW j AS SELECT b.ts, b.price FROM bids b JOIN asks a ON b.auction = a.auction;
SELECT COUNT(*) FROM TABLE(TUMBLE(TABLE j, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY window_start, window_end;"
    ));
    assert!(e.contains("is not a time attribute"), "{e}");
}

#[test]
fn a_statement_is_complete_at_a_semicolon_outside_quotes_and_declarations_run_no_job() {
    assert!(is_complete("SELECT 1\n  FROM t;\n"));
    assert!(is_complete("SET 'a' = 'b'; -- done\n"));
    assert!(!is_complete("SELECT ';' FROM t"));
    assert!(!is_complete("SELECT 'open;"));
    assert!(!is_complete(""));
    assert!(declare(&format!("{DATAGEN} SET 'parallelism.default' = '2';")).is_ok());
    let e = declare(&format!("{DATAGEN} SELECT * FROM bids;")).unwrap_err().to_string();
    assert!(e.contains("only CREATE and SET statements declare"), "{e}");
    let e = declare("SET 'no.such.key' = '1';").unwrap_err().to_string();
    assert!(e.contains("no.such.key"), "{e}");
}

#[test]
fn filesystem_partition_commit_options_become_the_sinks_success_files() {
    let sink = |options: &str| {
        format!(
            "{DATAGEN} CREATE TABLE lake (auction BIGINT, dt STRING, hm STRING) PARTITIONED BY (dt, hm)
  WITH ('connector' = 'filesystem', 'path' = '/tmp/lake', 'format' = 'csv'{options});
INSERT INTO lake SELECT auction, DATE_FORMAT(ts, 'yyyy-MM-dd'), DATE_FORMAT(ts, 'HH:mm') FROM bids;"
        )
    };
    let g = compiled(&sink(
        ", 'sink.partition-commit.trigger' = 'partition-time', 'sink.partition-commit.delay' = '1 min',
  'sink.partition-commit.policy.kind' = 'success-file', 'partition.time-extractor.timestamp-pattern' = '$dt $hm:00',
  'sink.rolling-policy.rollover-interval' = '1min', 'sink.rolling-policy.check-interval' = '1min'",
    ));
    let lake = g.operators.iter().find(|o| o.kind == "file_sink").expect("the sink");
    assert_eq!(
        lake.config["partition_commit"],
        serde_json::json!({"trigger": "partition_time", "delay": "1m", "timestamp_pattern": "$dt $hm:00"})
    );
    assert_eq!(lake.config["rollover_interval"], "1m");
    assert_eq!(lake.config["csv"], serde_json::json!({"header": false}));
    let g = compiled(&sink(", 'sink.partition-commit.policy.kind' = 'success-file', 'partition.time-extractor.timestamp-formatter' = 'yyyyMMdd'"));
    let lake = g.operators.iter().find(|o| o.kind == "file_sink").expect("the sink");
    assert_eq!(lake.config["partition_commit"], serde_json::json!({"timestamp_format": "%Y%m%d"}));
    let e = error(&sink(", 'sink.partition-commit.policy.kind' = 'metastore,success-file'"));
    assert!(e.contains("not supported: sink.partition-commit.policy.kind 'metastore'"), "{e}");
    let e = error(&sink(
        ", 'sink.partition-commit.policy.kind' = 'success-file', 'sink.partition-commit.trigger' = 'never'",
    ));
    assert!(e.contains("'process-time' or 'partition-time', not 'never'"), "{e}");
}

#[test]
fn a_window_by_a_proctime_column_runs_by_the_clock() {
    let table = "CREATE TABLE clicks (channel STRING, proc AS PROCTIME()) WITH ('connector' = 'datagen');\n";
    let g = compiled(&format!(
        "{table} SELECT channel, window_start, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(proc), INTERVAL '1' MINUTE))
  GROUP BY channel, window_start, window_end;"
    ));
    let w = g.operators.iter().find(|o| o.kind == "window").expect("a window");
    assert_eq!(w.config["processing_time"], true);
    assert!(w.config.get("timestamp_column").is_none());
    // The attribute passes through a subquery under another name, and the
    // legacy syntax takes it too.
    let g = compiled(&format!(
        "{table} SELECT TUMBLE_START(p, INTERVAL '1' MINUTE) AS s, COUNT(*) AS n
  FROM (SELECT channel, proc AS p FROM clicks) GROUP BY TUMBLE(p, INTERVAL '1' MINUTE);"
    ));
    let w = g.operators.iter().find(|o| o.kind == "window").expect("a window");
    assert_eq!(w.config["processing_time"], true);
    let g = compiled(&format!(
        "{table} CREATE VIEW v AS SELECT channel, PROCTIME() AS t FROM clicks;
SELECT window_start, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE v, DESCRIPTOR(t), INTERVAL '1' MINUTE))
  GROUP BY window_start, window_end;"
    ));
    assert!(g.operators.iter().any(|o| o.kind == "window" && o.config["processing_time"] == true));
    let e =
        error(&format!("{table} SELECT * FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(proc), INTERVAL '1' MINUTE));"));
    assert!(e.contains("not supported: a processing-time window function read as a table"), "{e}");
}
