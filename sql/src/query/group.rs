//! Group aggregations (`GROUP BY` without a window, or aggregates without
//! `GROUP BY`) and `SELECT DISTINCT`: a `group_aggregate`, whose result is
//! updating. Its rows carry their change kind in [`OP`] to the operators
//! after it and to the sink, which must write by key.

use super::*;

impl Planner<'_> {
    /// `SELECT keys, aggregates FROM rel GROUP BY keys [HAVING ...]`.
    pub(super) fn group_aggregate(&mut self, s: &Select, rel: Rel, group: &[Expr]) -> Result<Rel, SqlError> {
        let mut gk = GroupKeys::default();
        for g in group {
            gk.add(&rel, g)?;
        }
        let keys = gk.keys.clone();
        let mut pre = gk.pre.clone();
        let mut aggs: Vec<Aggregate> = Vec::new();
        let mut items = Vec::new();
        for (i, item) in s.projection.iter().enumerate() {
            let (e, alias) = match item {
                SelectItem::UnnamedExpr(e) => (e, None),
                SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
                _ => {
                    return Err(SqlError::at(
                        s.select_token.0.span.start,
                        "not supported: * in an aggregation; list the keys and aggregates",
                    ))
                }
            };
            let mut x = e.clone();
            placeholders(&mut x, &rel, Bounds::None, &mut aggs)?;
            gk.replace(&mut x);
            let name = alias.unwrap_or_else(|| match plain_column(e) {
                Some(c) => c.value.clone(),
                None => format!("EXPR${i}"),
            });
            items.push((name, x));
        }
        let mut having = s.having.clone();
        if let Some(h) = &mut having {
            placeholders(h, &rel, Bounds::None, &mut aggs)?;
            gk.replace(h);
        }
        let (specs, agg_inputs) = specs(&aggs, &rel)?;
        pre.extend(agg_inputs);
        // Aggregates without GROUP BY: one key for everything.
        let global = keys.is_empty();
        if global {
            pre.push(json!({"name": "__all", "expr": "0"}));
        }
        let mut input = rel.clone();
        if !pre.is_empty() {
            input.uid = self.stateless(&rel, "aggregate-input", "map", json!({"columns": pre}));
        }
        let key: Vec<String> = if global { vec!["__all".into()] } else { keys.iter().map(|k| k.0.clone()).collect() };
        // The uid changes with what the state means (keys, aggregates, and
        // whether the input retracts), so a changed query does not restore
        // old state into it.
        let meaning = format!("{key:?}{}|{specs:?}|{}", gk.expressions(), rel.changelog);
        let uid_base = format!("{}.group-aggregate-{}", rel.origin, fingerprint(&meaning));
        let config = self.group_config(json!({"key": key, "aggregates": specs}), rel.changelog);
        let uid = self.b.add(&uid_base, "group_aggregate", config, 0);
        self.b.connect(&input.uid, &uid, Partitioning::Hash, key.clone());
        let mut columns: Vec<Col> = Vec::new();
        for k in &key {
            columns.push(rel.column(k).cloned().unwrap_or_else(|| Col::typed(k.clone(), SqlType::Int)));
        }
        for (i, a) in aggs.iter().enumerate() {
            columns.push(Col { name: format!("__agg{i}"), ty: a.result_type(&rel) });
        }
        let mut out = Rel {
            uid,
            columns,
            rowtime: None,
            proctime: None,
            origin: rel.origin.clone(),
            qualifiers: Vec::new(),
            changelog: true,
            window: None,
        };
        let key_names: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        if let Some(mut h) = having {
            finish(&mut h, &key_names, &aggs, &rel)?;
            out.uid = self.stateless(&out, "having", "filter", json!({"predicate": h.to_string()}));
        }
        // The select list over the aggregation's output.
        let mut cols = Vec::new();
        let mut result = Vec::new();
        for (name, mut x) in items {
            let ty = match &x {
                Expr::Identifier(p) if p.value.starts_with(AGG) => {
                    let i: usize = p.value[AGG.len()..].parse().unwrap_or(usize::MAX);
                    aggs.get(i).and_then(|a| a.result_type(&rel))
                }
                Expr::Identifier(p) => {
                    keys.iter().find(|k| k.0.eq_ignore_ascii_case(&p.value)).and_then(|k| k.1.clone())
                }
                _ => None,
            };
            finish(&mut x, &key_names, &aggs, &rel)?;
            cols.push(json!({"name": name, "expr": x.to_string()}));
            result.push(Col { name, ty });
        }
        cols.push(json!(OP));
        let uid = self.stateless(&out, "project", "project", json!({"columns": cols}));
        Ok(Rel {
            uid,
            columns: result,
            rowtime: None,
            proctime: None,
            origin: rel.origin,
            qualifiers: Vec::new(),
            changelog: true,
            window: None,
        })
    }

    /// `SELECT DISTINCT`: the rows of `rel`, each once, grouped by all its columns.
    pub(super) fn distinct(&mut self, rel: Rel) -> Result<Rel, SqlError> {
        let key: Vec<String> = rel.names().map(str::to_string).collect();
        let meaning = format!("distinct|{key:?}|{}", rel.changelog);
        let uid_base = format!("{}.distinct-{}", rel.origin, fingerprint(&meaning));
        let config = self.group_config(json!({"key": key}), rel.changelog);
        let uid = self.b.add(&uid_base, "group_aggregate", config, 0);
        self.b.connect(&rel.uid, &uid, Partitioning::Hash, key);
        Ok(Rel { uid, rowtime: None, proctime: None, qualifiers: Vec::new(), changelog: true, window: None, ..rel })
    }

    /// A `group_aggregate`'s config: `base` with the change-kind columns and
    /// `table.exec.state.ttl`.
    pub(super) fn group_config(&self, mut base: Value, updating_input: bool) -> Value {
        base["op_column"] = json!(OP);
        if updating_input {
            base["input_op_column"] = json!(OP);
        }
        if let Some(ttl) = self.settings.state_ttl {
            base["state_ttl"] = json!(format!("{}ms", ttl.as_millis()));
        }
        base
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weir_runtime::graph::Partitioning;

    use crate::tests::{compiled, error, kinds, DATAGEN};

    const COUNTS: &str = "CREATE TABLE counts (auction BIGINT, n BIGINT, total BIGINT, top STRING, channels BIGINT,
      PRIMARY KEY (auction) NOT ENFORCED)
    WITH ('connector' = 'jdbc', 'url' = 'jdbc:postgresql://127.0.0.1:5432/app', 'table-name' = 'counts');";

    #[test]
    fn a_group_by_becomes_an_updating_aggregation_written_by_key() {
        let g = compiled(&format!(
            "{DATAGEN} {COUNTS} SET 'parallelism.default' = '2'; SET 'table.exec.state.ttl' = '1 h';
INSERT INTO counts SELECT auction, COUNT(*) AS n, SUM(price), MAX(channel), COUNT(DISTINCT channel)
FROM bids WHERE price > 0 GROUP BY auction HAVING COUNT(*) > 1;"
        ));
        let k = kinds(&g);
        let agg = k.iter().position(|(_, kind)| *kind == "group_aggregate").expect("a group aggregation");
        assert!(k[agg].0.starts_with("bids.group-aggregate-"), "{k:?}");
        assert_eq!(
            &k[agg + 1..],
            [
                ("counts.having", "filter"),
                ("counts.project", "project"),
                ("counts.columns", "project"),
                ("counts", "jdbc_sink")
            ]
        );
        let op = &g.operators[agg];
        assert_eq!(op.config["key"], json!(["auction"]));
        assert_eq!(
            op.config["aggregates"],
            json!([
                {"fn": "count", "as": "__agg0"}, {"fn": "sum", "column": "price", "as": "__agg1"},
                {"fn": "max", "column": "channel", "as": "__agg2"},
                {"fn": "count_distinct", "column": "channel", "as": "__agg3"}
            ])
        );
        assert_eq!(op.config["op_column"], json!("__op"));
        assert_eq!(op.config["state_ttl"], json!("3600000ms"));
        assert!(op.config.get("input_op_column").is_none(), "the source appends");
        let edge = g.edges.iter().find(|e| e.to == op.uid).unwrap();
        assert_eq!((edge.partitioning, edge.key.clone()), (Partitioning::Hash, vec!["auction".to_string()]));
        assert_eq!(g.operators.last().unwrap().config["op_column"], json!("__op"));
        assert_eq!(g.operators.last().unwrap().config["key"], json!(["auction"]));
    }

    #[test]
    fn an_aggregation_of_an_aggregation_retracts_and_distinct_groups_by_every_column() {
        let g = compiled(&format!(
            "{DATAGEN} CREATE TABLE hist (n BIGINT, auctions BIGINT, PRIMARY KEY (n) NOT ENFORCED)
  WITH ('connector' = 'mongodb', 'uri' = 'mongodb://127.0.0.1:27017', 'database' = 'd', 'collection' = 'c');
INSERT INTO hist SELECT n, COUNT(*) FROM (SELECT auction, COUNT(*) AS n FROM bids GROUP BY auction) GROUP BY n;"
        ));
        let aggs: Vec<_> = g.operators.iter().filter(|o| o.kind == "group_aggregate").collect();
        assert_eq!(aggs.len(), 2);
        assert!(aggs[0].config.get("input_op_column").is_none());
        assert_eq!(aggs[1].config["input_op_column"], json!("__op"), "the second takes the first's changes");
        let g = compiled(&format!("{DATAGEN} SELECT DISTINCT channel, auction FROM bids;"));
        let d = g.operators.iter().find(|o| o.kind == "group_aggregate").unwrap();
        assert!(d.uid.starts_with("bids.distinct-"), "{}", d.uid);
        assert_eq!(d.config["key"], json!(["channel", "auction"]));
        assert!(d.config.get("aggregates").is_none());
        // Aggregates without GROUP BY: one running result.
        let g = compiled(&format!("{DATAGEN} SELECT COUNT(*), MIN(price) FROM bids;"));
        let d = g.operators.iter().find(|o| o.kind == "group_aggregate").unwrap();
        assert_eq!(d.config["key"], json!(["__all"]));
    }

    #[test]
    fn group_uids_keep_state_across_projection_filter_and_sink_edits_and_change_with_its_meaning() {
        let uid = |select: &str, filter: &str, group: &str| {
            let g = compiled(&format!(
                "{DATAGEN} CREATE TABLE o (a BIGINT, n BIGINT) WITH ('connector' = 'blackhole');
                 INSERT INTO o SELECT {select} FROM bids {filter} GROUP BY {group};"
            ));
            g.operators.iter().find(|o| o.kind == "group_aggregate").unwrap().uid.clone()
        };
        let base = uid("auction, COUNT(*)", "", "auction");
        assert_eq!(base, uid("auction * 10, COUNT(*) + 1", "", "auction"), "a changed projection");
        assert_eq!(base, uid("auction, COUNT(*)", "WHERE price > 10", "auction"), "a filter");
        assert_ne!(base, uid("price, COUNT(*)", "", "price"), "other keys");
        assert_ne!(base, uid("auction, SUM(price)", "", "auction"), "other aggregates");
    }

    #[test]
    fn updating_results_go_only_where_changes_can_be_written() {
        let q = "SELECT auction, COUNT(*) FROM bids GROUP BY auction";
        let e = error(&format!(
            "{DATAGEN} CREATE TABLE o (a BIGINT, n BIGINT) WITH ('connector' = 'kafka', 'topic' = 't', 'format' = 'json', 'properties.bootstrap.servers' = 'h:9092');\nINSERT INTO o {q};"
        ));
        assert!(e.contains("table `o` (connector 'kafka') only appends rows"), "{e}");
        let e = error(&format!(
            "{DATAGEN} CREATE TABLE o (a BIGINT, n BIGINT) WITH ('connector' = 'jdbc', 'url' = 'jdbc:mysql://h/d', 'table-name' = 't');\nINSERT INTO o {q};"
        ));
        assert!(e.contains("table `o` has no primary key"), "{e}");
        let view = format!("{DATAGEN} CREATE VIEW per_auction AS {q};");
        let e = error(&format!(
            "{view} SELECT COUNT(*) FROM TABLE(TUMBLE(TABLE per_auction, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY window_start, window_end;"
        ));
        assert!(e.contains("not supported: TUMBLE over an updating input"), "{e}");
        // An inner join takes it (and is updating); an outer one does not.
        let g = compiled(&format!("{view} SELECT * FROM per_auction a JOIN bids b ON a.auction = b.auction;"));
        let j = g.operators.iter().find(|o| o.kind == "regular_join").expect("a regular join");
        assert_eq!(j.config["left_op_column"], "__op");
        assert_eq!(j.config["op_column"], "__op");
        assert!(j.config.get("right_op_column").is_none());
        let e = error(&format!("{view} SELECT * FROM per_auction a LEFT JOIN bids b ON a.auction = b.auction;"));
        assert!(e.contains("not supported: an outer or interval join of an updating input"), "{e}");
        let e = error(&format!("{DATAGEN} SELECT auction, price FROM bids GROUP BY auction;"));
        assert!(e.contains("column `price` is neither grouped nor inside an aggregate"), "{e}");
        let g = compiled(&format!(
            "{DATAGEN} SELECT auction, SUM(DISTINCT price) AS s, AVG(DISTINCT price) AS a FROM bids GROUP BY auction;"
        ));
        let agg = g.operators.iter().find(|o| o.kind == "group_aggregate").expect("a group aggregation");
        assert_eq!(agg.config["aggregates"][0]["fn"], "sum_distinct");
        assert_eq!(agg.config["aggregates"][1]["fn"], "avg_distinct");
    }

    #[test]
    fn intersect_and_except_group_both_sides_tagged_rows() {
        let q =
            |op: &str| format!("{DATAGEN} SELECT channel FROM bids WHERE price < 10 {op} SELECT channel FROM bids;");
        let g = compiled(&q("INTERSECT"));
        let agg = g.operators.iter().find(|o| o.kind == "group_aggregate").expect("a grouping");
        assert!(agg.uid.starts_with("bids.intersect-"), "{}", agg.uid);
        assert_eq!(agg.config["key"], json!(["channel"]));
        let filter = g.operators.iter().find(|o| o.uid.ends_with("set-filter")).unwrap();
        assert_eq!(filter.config["predicate"], "\"__in_left\" > 0 AND \"__in_right\" > 0");
        let g = compiled(&q("EXCEPT"));
        let filter = g.operators.iter().find(|o| o.uid.ends_with("set-filter")).unwrap();
        assert_eq!(filter.config["predicate"], "\"__in_left\" > 0 AND \"__in_right\" = 0");
        let g = compiled(&q("INTERSECT ALL"));
        let copies = g.operators.iter().find(|o| o.uid.ends_with("set-copies")).expect("the counts");
        assert_eq!(
            copies.config["columns"][1]["expr"],
            "CASE WHEN \"__in_left\" < \"__in_right\" THEN \"__in_left\" ELSE \"__in_right\" END"
        );
        let r = g.operators.iter().find(|o| o.kind == "replicate").expect("the copies");
        assert_eq!(r.config, json!({"count_column": "__copies", "op_column": "__op"}));
        let g = compiled(&q("EXCEPT ALL"));
        assert!(g.operators.iter().any(|o| o.uid.starts_with("bids.except-all-")));
    }

    #[test]
    fn union_without_all_is_a_distinct_union() {
        let g = compiled(&format!("{DATAGEN} SELECT auction FROM bids UNION SELECT price FROM bids;"));
        let d = g.operators.iter().find(|o| o.kind == "group_aggregate").expect("a distinct");
        assert_eq!(d.config["key"], json!(["auction"]));
        assert!(g.edges.iter().filter(|e| e.to.ends_with(".union")).count() == 2, "both sides feed the union");
    }

    #[test]
    fn a_union_with_an_updating_side_is_updating() {
        let g = compiled(&format!(
            "{DATAGEN} SELECT auction, COUNT(*) FROM bids GROUP BY auction UNION ALL SELECT auction, price FROM bids;"
        ));
        let inserts =
            g.operators.iter().find(|o| o.uid.ends_with(".inserts")).expect("the appending side's rows become inserts");
        assert_eq!(
            inserts.config["columns"].as_array().unwrap().last().unwrap(),
            &json!({"name": "__op", "expr": "'+I'"})
        );
    }

    #[test]
    fn debezium_json_tables_are_changelogs_with_the_change_kind_hidden() {
        let table = |extra: &str| {
            format!(
                "CREATE TABLE p (id BIGINT, category STRING, weight DOUBLE) WITH ('connector' = 'kafka', 'topic' = 'cdc',
  'properties.bootstrap.servers' = 'h:9092', 'format' = 'debezium-json'{extra});"
            )
        };
        let g = compiled(&format!(
            "{} SELECT category, COUNT(*) FROM p WHERE weight > 1 GROUP BY category;",
            table(", 'debezium-json.schema-include' = 'true'")
        ));
        let source = &g.operators[0];
        assert_eq!(source.config["format"], "debezium_json");
        assert_eq!((&source.config["op_column"], &source.config["schema_include"]), (&json!("__op"), &json!(true)));
        let agg = g.operators.iter().find(|o| o.kind == "group_aggregate").expect("a group aggregation");
        assert_eq!(agg.config["input_op_column"], "__op", "{}", agg.config);
        let e = error(&format!(
            "{} CREATE TABLE o (category STRING) WITH ('connector' = 'kafka', 'topic' = 't', 'format' = 'json', 'properties.bootstrap.servers' = 'h:9092');
INSERT INTO o SELECT category FROM p;",
            table("")
        ));
        assert!(e.contains("only appends rows"), "{e}");
        let e = error(&format!("{} SELECT * FROM p;", table(", 'debezium-json.ignore-parse-errors' = 'true'")));
        assert!(e.contains("not supported: debezium-json.ignore-parse-errors = true"), "{e}");
    }

    #[test]
    fn upsert_kafka_keys_records_by_the_primary_key() {
        let table = |key_format: &str, extra: &str| {
            format!(
                "{DATAGEN} SET 'execution.checkpointing.interval' = '1s';
CREATE TABLE o (auction BIGINT, n BIGINT, PRIMARY KEY (auction) NOT ENFORCED) WITH (
  'connector' = 'upsert-kafka', 'topic' = 'counts', 'properties.bootstrap.servers' = '127.0.0.1:9092',
  'key.format' = '{key_format}', 'value.format' = 'json'{extra});
INSERT INTO o SELECT auction, COUNT(*) FROM bids GROUP BY auction;"
            )
        };
        let g = compiled(&table(
            "json",
            ", 'sink.delivery-guarantee' = 'exactly-once', 'value.fields-include' = 'EXCEPT_KEY'",
        ));
        let sink = g.operators.last().unwrap();
        assert_eq!(sink.kind, "kafka_sink");
        assert_eq!(
            sink.config,
            json!({"bootstrap_servers": "127.0.0.1:9092", "topic": "counts", "key_columns": ["auction"], "format": "json",
                   "value_except_key": true, "delivery": "exactly_once", "op_column": "__op"})
        );
        let g = compiled(&table("raw", ""));
        assert_eq!(g.operators.last().unwrap().config["key_column"], json!("auction"), "a one-column key as text");
        let e = error(
            &table("json", "")
                .replace(", PRIMARY KEY (auction) NOT ENFORCED", "")
                .replace("COUNT(*) FROM bids GROUP BY auction", "price FROM bids"),
        );
        assert!(e.contains("upsert-kafka table `o` needs a PRIMARY KEY"), "{e}");
        // Read, it is a changelog: upserts made full changes by key.
        let g = compiled(&format!(
            "{} SELECT auction, n FROM o WHERE n > 1;",
            table("json", "").split("INSERT").next().unwrap()
        ));
        let source = &g.operators.iter().find(|o| o.uid == "o").expect("the source").config;
        assert_eq!(
            source["upsert_key"],
            json!({"format": "json", "columns": [{"name": "auction", "type": "int64", "nullable": true}]})
        );
        assert_eq!((&source["schema"][0]["name"], &source["start"]), (&json!("n"), &json!("earliest")));
        let normalize = g.operators.iter().find(|o| o.kind == "changelog_normalize").expect("a normalize");
        assert_eq!(normalize.config, json!({"key": ["auction"], "op_column": "__op"}));
        let edge = g.edges.iter().find(|e| e.to == normalize.uid).unwrap();
        assert_eq!((edge.partitioning, &edge.key), (Partitioning::Hash, &vec!["auction".to_string()]));
    }

    #[test]
    fn expressions_as_keys_and_filtered_aggregates_as_nexmark_q15_writes_them() {
        let g = compiled(&format!(
            "{DATAGEN} SELECT DATE_FORMAT(ts, 'yyyy-MM-dd') AS `day`, COUNT(*) AS total,
  COUNT(*) FILTER (WHERE price < 10000) AS cheap, COUNT(DISTINCT auction) FILTER (WHERE price >= 10000) AS rich
FROM bids GROUP BY DATE_FORMAT(ts, 'yyyy-MM-dd') HAVING COUNT(*) FILTER (WHERE price < 10000) > 0;"
        ));
        let agg = g.operators.iter().find(|o| o.kind == "group_aggregate").unwrap();
        assert_eq!(agg.config["key"], json!(["__key0"]));
        assert_eq!(agg.config["aggregates"][1]["column"], json!("__in1"), "{:#}", agg.config);
        assert_eq!(agg.config["aggregates"][2]["fn"], json!("count_distinct"));
        let input = g.operators.iter().find(|o| o.uid.ends_with(".aggregate-input")).unwrap();
        let names: Vec<&str> =
            input.config["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["__key0", "__in1", "__in2"]);
        let project = g.operators.iter().find(|o| o.uid == "select.project").unwrap();
        assert_eq!(project.config["columns"][0], json!({"name": "day", "expr": "\"__key0\""}));
        // A filter in a window aggregation too.
        compiled(&format!(
            "{DATAGEN} SELECT window_start, COUNT(*) FILTER (WHERE channel = 'apple') FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY window_start, window_end;"
        ));
    }

    #[test]
    fn windows_group_by_expressions_and_their_uids_follow_the_expression() {
        let q = |key: &str| {
            compiled(&format!(
                "{DATAGEN} SELECT {key} AS bucket, window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND))
                 GROUP BY {key}, window_start, window_end;"
            ))
        };
        let g = q("auction % 10");
        let w = g.operators.iter().find(|o| o.kind == "window").unwrap();
        assert_eq!(w.config["key"], json!(["__key0"]));
        let other = q("auction % 20");
        let w2 = other.operators.iter().find(|o| o.kind == "window").unwrap();
        assert_ne!(w.uid, w2.uid, "another key expression is another state");
        let plain = compiled(&format!("{DATAGEN} SELECT auction, COUNT(*) FROM bids GROUP BY auction;"));
        let agg = plain.operators.iter().find(|o| o.kind == "group_aggregate").unwrap();
        let computed = compiled(&format!("{DATAGEN} SELECT auction + 0, COUNT(*) FROM bids GROUP BY auction + 0;"));
        let agg2 = computed.operators.iter().find(|o| o.kind == "group_aggregate").unwrap();
        assert_ne!(agg.uid, agg2.uid);
    }
}
