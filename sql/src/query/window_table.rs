//! A window table-valued function read as a table, without `GROUP BY`:
//! `SELECT * FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' MINUTE))`
//! gives `t`'s rows with `window_start`, `window_end` and `window_time`, the
//! input of a window join or a window Top-N.

use serde_json::json;

use super::{Planner, WindowFn};
use crate::builder::{quoted, Col, Rel, WindowBounds};
use crate::error::SqlError;
use crate::types::SqlType;

const BOUNDS: [&str; 3] = ["window_start", "window_end", "window_time"];

impl Planner<'_> {
    /// The rows of `rel` with the bounds of their tumbling window, computed
    /// as the window operator assigns them (a window starts at a multiple
    /// of its size since the epoch). A row of a sliding or cumulating window
    /// is given once per window (`window_assign`); a session's window is
    /// known only later: refused.
    pub(crate) fn window_table(&mut self, rel: Rel, w: &WindowFn) -> Result<Rel, SqlError> {
        let kind = w.spec["type"].as_str().unwrap_or_default();
        if w.processing {
            return Err(SqlError::at(
                w.at,
                "not supported: a processing-time window function read as a table; group it by window_start and window_end",
            ));
        }
        if let Some(taken) = BOUNDS.iter().find(|b| rel.column(b).is_some()) {
            return Err(SqlError::at(
                w.at,
                format!(
                    "the table already has a column `{taken}`, which the window function adds; rename it in a subquery"
                ),
            ));
        }
        if kind == "sliding" || kind == "cumulate" {
            // A row in several windows: once per window. Grouped by the
            // bounds, these rows are a group aggregation (updating), not a
            // window one: the window operator would assign them again.
            let config = json!({"timestamp_column": w.column, "window": w.spec});
            let uid = self.stateless(&rel, "window-assign", "window_assign", config);
            let window = WindowBounds { start: BOUNDS[0].into(), end: BOUNDS[1].into(), spec: None };
            let mut out = Rel { uid, window: Some(window), ..rel };
            out.columns.extend(BOUNDS.iter().map(|b| Col::typed(*b, SqlType::Timestamp)));
            return Ok(out);
        }
        let size = w.spec["size"].as_str().and_then(|s| s.strip_suffix("ms")).and_then(|s| s.parse::<u64>().ok());
        let Some(size) = size.filter(|_| kind == "tumbling") else {
            return Err(SqlError::at(
                w.at,
                "not supported: SESSION read as a table (a row's session is known only later); aggregate it with GROUP BY window_start, window_end",
            ));
        };
        if size == 0 {
            return Err(SqlError::at(w.at, "a window's size must be at least 1 millisecond"));
        }
        let offset = w.spec["offset"].as_str().and_then(|s| s.strip_suffix("ms")).and_then(|s| s.parse::<u64>().ok());
        let t = format!("CAST({} AS BIGINT)", quoted(&w.column));
        let shifted = match offset {
            Some(o) => format!("({t} - {o})"),
            None => t.clone(),
        };
        let start = format!("({t} - (({shifted} % {size}) + {size}) % {size})");
        let columns = [
            json!({"name": "window_start", "expr": format!("to_timestamp_millis({start})")}),
            json!({"name": "window_end", "expr": format!("to_timestamp_millis({start} + {size})")}),
            json!({"name": "window_time", "expr": format!("to_timestamp_millis({start} + {})", size - 1)}),
        ];
        let uid = self.stateless(&rel, "window-bounds", "map", json!({"columns": columns}));
        let window = WindowBounds { start: BOUNDS[0].into(), end: BOUNDS[1].into(), spec: Some(w.spec.clone()) };
        let mut out = Rel { uid, window: Some(window), ..rel };
        out.columns.extend(BOUNDS.iter().map(|b| Col::typed(*b, SqlType::Timestamp)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::tests::{compiled, error, DATAGEN};

    const KAFKA_SINK: &str =
        "CREATE TABLE o (auction BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3), n BIGINT, rn BIGINT)
  WITH ('connector' = 'kafka', 'topic' = 't', 'format' = 'json', 'properties.bootstrap.servers' = 'h:9092');";

    #[test]
    fn a_top_n_per_window_of_a_window_aggregation_appends_each_windows_first_rows() {
        let top = "SELECT * FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY n DESC) AS rn FROM (
    SELECT auction, window_start, window_end, COUNT(*) AS n
    FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND))
    GROUP BY auction, window_start, window_end)
) WHERE rn <= 3";
        // It only appends, so an append-only sink takes it.
        let g = compiled(&format!("{DATAGEN} {KAFKA_SINK}\nINSERT INTO o {top};"));
        let t = g.operators.iter().find(|o| o.kind == "top_n").expect("a top_n");
        assert!(t.uid.starts_with("bids.window-top-n-"), "{}", t.uid);
        assert_eq!(
            t.config,
            json!({"partition_key": ["window_start", "window_end"], "order_by": [{"column": "n", "descending": true}],
                   "limit": 3, "rank_column": "rn", "window_end_column": "window_end"})
        );
        // Partitioned by something else, it is the updating Top-N.
        let e = error(&format!(
            "{DATAGEN} {KAFKA_SINK}\nINSERT INTO o {};",
            top.replace("window_start, window_end ORDER", "auction ORDER")
        ));
        assert!(e.contains("only appends rows"), "{e}");
    }

    #[test]
    fn a_window_table_function_read_as_a_table_gives_rows_their_window_bounds() {
        let g = compiled(&format!(
            "{DATAGEN} SELECT * FROM (
  SELECT auction, price, window_start, window_end, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY price DESC) AS rn
  FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND)) WHERE window_end > window_start
) WHERE rn <= 1;"
        ));
        let bounds = g.operators.iter().find(|o| o.uid.ends_with("window-bounds")).expect("the window bounds");
        let start = bounds.config["columns"][0]["expr"].as_str().unwrap();
        assert_eq!(
            start,
            "to_timestamp_millis((CAST(\"ts\" AS BIGINT) - ((CAST(\"ts\" AS BIGINT) % 10000) + 10000) % 10000))"
        );
        let t = g.operators.iter().find(|o| o.kind == "top_n").expect("a top_n");
        assert_eq!(t.config["window_end_column"], "window_end");
        // Grouped by its window bounds, a view of the rows is a window aggregation.
        let g = compiled(&format!(
            "{DATAGEN} CREATE VIEW w AS SELECT * FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND));
SELECT channel, window_start, window_end, COUNT(*) AS n FROM w GROUP BY channel, window_start, window_end;"
        ));
        let window = g.operators.iter().find(|o| o.kind == "window").expect("a window aggregation");
        assert_eq!(window.config["window"], json!({"type": "tumbling", "size": "10000ms"}));
        let g = compiled(&format!("{DATAGEN} SELECT * FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND, INTERVAL '10' SECOND));"));
        let assign = g.operators.iter().find(|o| o.kind == "window_assign").expect("rows once per window");
        assert_eq!(assign.config["window"], json!({"type": "sliding", "slide": "1000ms", "size": "10000ms"}));
        let e =
            error(&format!("{DATAGEN} SELECT * FROM TABLE(SESSION(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND));"));
        assert!(e.contains("not supported: SESSION read as a table"), "{e}");
    }

    #[test]
    fn window_joins_pair_rows_of_the_same_window_by_key() {
        let side =
            |n: &str| format!("(SELECT * FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND))) {n}");
        let g = compiled(&format!(
            "{DATAGEN} SELECT L.auction, L.price, R.price, L.window_start FROM {} FULL JOIN {}
  ON L.auction = R.auction AND L.window_start = R.window_start AND L.window_end = R.window_end;",
            side("L"),
            side("R")
        ));
        let j = g.operators.iter().find(|o| o.kind == "interval_join").expect("an interval join");
        assert!(j.uid.starts_with("bids-bids.window-join-"), "{}", j.uid);
        assert_eq!(j.config["left_key"], json!(["auction", "window_start", "window_end"]));
        assert_eq!((&j.config["left_time"], &j.config["right_time"]), (&json!("window_end"), &json!("window_end")));
        assert_eq!(
            (&j.config["lower"], &j.config["upper"], &j.config["join_type"]),
            (&json!(0), &json!(0), &json!("full"))
        );
        // The table function itself may be the join's input, under a name.
        let g = compiled(&format!(
            "{DATAGEN} SELECT L.auction FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND)) AS L JOIN {}
  ON L.auction = R.auction AND L.window_start = R.window_start AND L.window_end = R.window_end;",
            side("R")
        ));
        assert!(g.operators.iter().any(|o| o.kind == "interval_join"));
        let e = error(&format!(
            "{DATAGEN} SELECT L.auction FROM {} JOIN {} ON L.auction = R.auction AND L.window_start = R.window_start;",
            side("L"),
            side("R")
        ));
        assert!(e.contains("equates both window_start and window_end"), "{e}");
    }
}
