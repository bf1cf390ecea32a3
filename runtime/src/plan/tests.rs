//! Planning: validation, schemas and chaining.

use super::*;
use crate::builder::JobBuilder;

fn w2(p: u32) -> JobGraph {
    let mut b = JobBuilder::new("w2");
    b.default_parallelism(p);
    b.operator("gen", "datagen", serde_json::json!({"events": 1000}));
    b.operator("ts", "watermark", serde_json::json!({"timestamp_column": "event_time_ms"}));
    b.operator(
        "win",
        "window",
        serde_json::json!({
            "key": ["auction"], "timestamp_column": "event_time_ms",
            "window": {"type": "tumbling", "size": "10s"},
            "aggregates": [{"fn": "count", "as": "count"}, {"fn": "sum", "column": "price", "as": "sum"}]
        }),
    );
    b.operator("sink", "discard", serde_json::json!({}));
    b.forward("gen", "ts");
    b.hash("ts", "win", &["auction"]);
    b.forward("win", "sink");
    b.build()
}

#[test]
fn chains_forward_edges_with_equal_parallelism() {
    let plan = Plan::new(&w2(2), &Registry::builtins(), 0).unwrap();
    let names: Vec<&str> = plan.vertices.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["gen -> ts", "win -> sink"]);
    assert_eq!(plan.vertex_edges.len(), 1);
    assert_eq!(plan.slots_needed(), 2);
    assert_eq!(plan.subtask_count(), 4);
}

#[test]
fn does_not_chain_across_parallelism_change_or_when_disabled() {
    let mut g = w2(2);
    g.operators[3].parallelism = 1;
    g.edges[2].partitioning = Partitioning::Rebalance;
    let plan = Plan::new(&g, &Registry::builtins(), 0).unwrap();
    assert_eq!(plan.vertices.len(), 3);

    let mut g = w2(2);
    g.operators[1].chainable = false;
    let plan = Plan::new(&g, &Registry::builtins(), 0).unwrap();
    let names: Vec<&str> = plan.vertices.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["gen", "ts", "win -> sink"]);
}

#[test]
fn command_line_parallelism_overrides_the_job_default_only() {
    let mut g = w2(2);
    g.operators[3].parallelism = 1;
    g.edges[2].partitioning = Partitioning::Rebalance;
    let plan = Plan::new(&g, &Registry::builtins(), 4).unwrap();
    let ps: Vec<u32> = plan.graph.operators.iter().map(|o| o.parallelism).collect();
    assert_eq!(ps, [4, 4, 4, 1]);
}

#[test]
fn rejects_unknown_kind_with_operator_and_line() {
    let mut g = w2(2);
    g.operators[1].kind = "nope".into();
    g.operators[1].line = 9;
    let e = Plan::new(&g, &Registry::builtins(), 0).unwrap_err();
    assert_eq!(e.operator.as_deref(), Some("ts"));
    assert_eq!(e.line, 9);
    assert_eq!(e.field.as_deref(), Some("kind"));
    assert!(e.message.contains("unknown operator kind `nope`"), "{e}");
}

#[test]
fn rejects_forward_with_unequal_parallelism() {
    let mut g = w2(2);
    g.operators[3].parallelism = 1;
    let e = Plan::new(&g, &Registry::builtins(), 0).unwrap_err();
    assert!(e.message.contains("forward needs equal parallelism"), "{e}");
    assert_eq!(e.operator.as_deref(), Some("edge win -> sink"));
}

#[test]
fn rejects_cycles_duplicates_dangling_edges_and_unknown_keys() {
    let mut g = w2(2);
    g.edges.push(EdgeSpec {
        from: "win".into(),
        to: "ts".into(),
        partitioning: Partitioning::Forward,
        key: vec![],
        input: 0,
        output: String::new(),
        line: 0,
    });
    g.operators[3].kind = "map".into();
    g.operators[3].config = serde_json::json!({"columns": []});
    assert!(Plan::new(&g, &Registry::builtins(), 0).is_err());

    let mut g = w2(2);
    g.operators[2].uid = "ts".into();
    assert!(Plan::new(&g, &Registry::builtins(), 0).unwrap_err().message.contains("duplicate uid"));

    let mut g = w2(2);
    g.edges[0].from = "ghost".into();
    assert!(Plan::new(&g, &Registry::builtins(), 0).unwrap_err().message.contains("no operator has uid `ghost`"));

    let mut g = w2(2);
    g.edges[1].key = vec!["nosuch".into()];
    let e = Plan::new(&g, &Registry::builtins(), 0).unwrap_err();
    assert!(e.message.contains("key column `nosuch`"), "{e}");
}

#[test]
fn rejects_unconnected_inputs_and_sink_outputs() {
    let mut g = w2(2);
    g.edges.remove(1);
    let e = Plan::new(&g, &Registry::builtins(), 0).unwrap_err();
    assert_eq!(e.operator.as_deref(), Some("win"));
    assert!(e.message.contains("not connected"), "{e}");
}

#[test]
fn an_edge_out_of_a_sink_is_named_as_such_before_the_input_it_overfeeds() {
    let mut b = JobBuilder::new("t");
    b.operator("gen", "datagen", serde_json::json!({"events": 10}));
    b.operator("last", "discard", serde_json::json!({}));
    b.operator("first", "discard", serde_json::json!({}));
    b.forward("gen", "first");
    b.forward("gen", "last");
    b.forward("first", "last");
    let e = Plan::new(&b.build(), &Registry::builtins(), 0).unwrap_err();
    assert_eq!((e.operator.as_deref(), e.field.as_deref()), (Some("edge first -> last"), Some("from")), "{e}");
    assert!(e.message.contains("`first` is a sink and has no outputs"), "{e}");
}

#[test]
fn edge_schemas_are_fixed_at_plan_time() {
    let plan = Plan::new(&w2(2), &Registry::builtins(), 0).unwrap();
    let win = plan.graph.operator_index("win").unwrap();
    let cols: Vec<&str> = plan.output_schemas[win].fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(cols, ["auction", "window_start", "window_end", "count", "sum"]);
}

#[test]
fn side_outputs_are_named_by_their_edges_and_end_the_chain() {
    let mut b = JobBuilder::new("late");
    b.default_parallelism(2);
    b.operator("gen", "datagen", serde_json::json!({"events": 10}));
    b.operator("ts", "watermark", serde_json::json!({"timestamp_column": "event_time_ms"}));
    b.operator(
        "win",
        "window",
        serde_json::json!({
            "key": ["auction"], "timestamp_column": "event_time_ms", "window": {"type": "tumbling", "size": "10s"},
            "aggregates": [{"fn": "count", "as": "count"}]
        }),
    );
    b.operator("late-out", "discard", serde_json::json!({}));
    b.forward("gen", "ts").hash("ts", "win", &["auction"]);
    b.side_output("win", "late", "late-out", Partitioning::Forward, &[], 0);
    let plan = Plan::new(&b.build(), &Registry::builtins(), 0).unwrap();
    let names: Vec<&str> = plan.vertices.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["gen -> ts", "win", "late-out"], "a side edge is never chained");
    assert_eq!(plan.edge_ports, [0, 0, 1]);
    let gen = plan.graph.operator_index("gen").unwrap();
    assert_eq!(plan.edge_schema(2), plan.output_schemas[gen], "late records keep the window's input schema");

    let mut g = b.build();
    g.edges[2].output = "early".into();
    let e = Plan::new(&g, &Registry::builtins(), 0).unwrap_err();
    assert!(e.message.contains("`win` has no side output `early`; its side outputs: late"), "{e}");
    assert_eq!(e.field.as_deref(), Some("output"));
    g.edges[2].from = "gen".into();
    g.edges[2].output = "late".into();
    let e = Plan::new(&g, &Registry::builtins(), 0).unwrap_err();
    assert!(e.message.contains("`gen` has no side output `late`; it has none"), "{e}");
}

fn two_sources_into(filter_edges: &[(&str, Partitioning, &[&str])], right_config: serde_json::Value) -> JobGraph {
    let mut b = JobBuilder::new("u");
    b.default_parallelism(2);
    b.operator("left", "datagen", serde_json::json!({"events": 10}));
    b.operator("right", "datagen", right_config);
    b.operator("all", "filter", serde_json::json!({"predicate": "true"}));
    b.operator("sink", "discard", serde_json::json!({}));
    for (from, p, key) in filter_edges {
        b.edge(from, "all", *p, key, 0);
    }
    b.forward("all", "sink");
    b.build()
}

#[test]
fn edges_into_one_input_are_its_union_when_they_carry_the_same_columns_and_routing() {
    let g = two_sources_into(
        &[("left", Partitioning::Hash, &["auction"]), ("right", Partitioning::Hash, &["auction"])],
        serde_json::json!({"events": 10}),
    );
    let plan = Plan::new(&g, &Registry::builtins(), 0).unwrap();
    let all = plan.vertices.iter().find(|v| v.name == "all -> sink").unwrap();
    assert_eq!(plan.input_ports(all.id), [0, 0]);
    assert_eq!(plan.input_channels(all.id), [2, 2]);
    let slots: Vec<Option<u32>> = (0..2).map(|e| plan.input_slot(e)).collect();
    assert_eq!(slots, [Some(0), Some(1)], "each edge of the union has its own slot");
    assert_eq!(plan.input_schemas[2].len(), 1, "one input, one schema");
}

#[test]
fn a_union_of_edges_routed_differently_is_refused_with_both_routings() {
    let g = two_sources_into(
        &[("left", Partitioning::Hash, &["auction"]), ("right", Partitioning::Rebalance, &[])],
        serde_json::json!({"events": 10}),
    );
    let e = Plan::new(&g, &Registry::builtins(), 0).unwrap_err().to_string();
    assert!(e.contains("`left` (hash on [auction]) and `right` (rebalance)"), "{e}");
    assert!(e.contains("partitioned alike"), "{e}");
}

#[test]
fn a_union_of_edges_with_different_columns_is_refused_with_both_column_lists() {
    let mut g = two_sources_into(
        &[("left", Partitioning::Rebalance, &[]), ("other", Partitioning::Rebalance, &[])],
        serde_json::json!({"events": 10}),
    );
    g.operators.push(crate::graph::OperatorSpec {
        uid: "other".into(),
        kind: "values".into(),
        parallelism: 1,
        config: serde_json::json!({"schema": [{"name": "channel", "type": "string"}], "rows": [{"channel": "x"}]}),
        chainable: true,
        line: 0,
    });
    let e = Plan::new(&g, &Registry::builtins(), 0).unwrap_err().to_string();
    assert!(e.contains("union of the edges from `left` and `other`"), "{e}");
    assert!(e.contains("against (channel Utf8)"), "{e}");
}

#[test]
fn a_bad_duration_names_the_field_and_what_is_wrong() {
    let mut g = w2(1);
    g.operators[2].config["window"]["size"] = serde_json::json!("-10s");
    let e = Plan::new(&g, &Registry::builtins(), 0).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("config.window"), "{e}");
    assert!(e.to_string().contains("a duration cannot be negative: `-10s`"), "{e}");
    g.operators[1].config["interval"] = serde_json::json!("soon");
    let e = Plan::new(&g, &Registry::builtins(), 0).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("config.interval"), "{e}");
    assert!(e.to_string().contains("write a number and a unit"), "{e}");
}
