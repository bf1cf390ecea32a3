//! OVER aggregations: `agg(x) OVER (PARTITION BY k ORDER BY ts [frame])` in
//! a select list, as `over_aggregate`: each row with aggregates over its
//! preceding rows in event-time order, emitted when the watermark passes
//! it. The select list may hold several, over one window.

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, OrderBy, OrderByKind, Select, SelectItem, Spanned,
    WindowFrameBound, WindowFrameUnits, WindowSpec, WindowType,
};
use serde_json::{json, Value};
use weir_runtime::graph::Partitioning;

use super::{plain_column, Planner};
use crate::builder::{fingerprint, quoted, Col, Rel};
use crate::error::SqlError;
use crate::expr::{interval_ms, resolve_column, span_start};
use crate::types::SqlType;

/// The OVER calls of a select list: (item index, function, window).
fn over_calls(s: &Select) -> Vec<(usize, &datafusion::sql::sqlparser::ast::Function, &WindowType)> {
    s.projection
        .iter()
        .enumerate()
        .filter_map(|(i, item)| match item {
            SelectItem::UnnamedExpr(Expr::Function(f)) | SelectItem::ExprWithAlias { expr: Expr::Function(f), .. } => {
                f.over.as_ref().map(|w| (i, f, w))
            }
            _ => None,
        })
        .collect()
}

/// Whether a select list has an OVER aggregation.
pub(super) fn has_over(s: &Select) -> bool {
    !over_calls(s).is_empty()
}

impl Planner<'_> {
    /// `ORDER BY ts` of the event-time attribute, ascending, as Flink sorts a
    /// stream: every row, in event-time order (rows of one time in arrival
    /// order), each emitted when the watermark passes it — an
    /// `over_aggregate` on one key whose count is dropped.
    pub(super) fn order_by_time(
        &mut self,
        o: &OrderBy,
        rel: Rel,
        limit: Option<u64>,
        offset: u64,
    ) -> Result<Rel, SqlError> {
        let at = o.span().start;
        let time = match &o.kind {
            OrderByKind::Expressions(e) if e.len() == 1 && e[0].options.asc != Some(false) => plain_column(&e[0].expr)
                .map(|c| resolve_column(&rel, &c.value, c.span.start))
                .transpose()?
                .filter(|c| rel.rowtime.as_deref() == Some(c.as_str())),
            _ => None,
        };
        let Some(time) = time.filter(|_| !rel.changelog) else {
            return Err(SqlError::at(
                at,
                format!("not supported: ORDER BY on a stream other than by its event-time attribute{} alone, ascending, of rows that only append", rel.rowtime.as_ref().map_or_else(|| " (select it, then order by it)".to_string(), |t| format!(" (`{t}`)"))),
            ));
        };
        let input = self.stateless(&rel, "order-input", "map", json!({"columns": [{"name": "__all", "expr": "0"}]}));
        // With a LIMIT, the count runs over every row so far: each row's place.
        let frame = match (limit, offset) {
            (None, 0) => json!({"type": "rows", "preceding": 0}),
            _ => json!({"type": "unbounded"}),
        };
        let config = json!({"partition_key": ["__all"], "time_column": time, "frame": frame,
            "aggregates": [{"fn": "count", "as": "__order"}]});
        let uid = self.b.add(&format!("{}.order-by-time", rel.origin), "over_aggregate", config, 0);
        self.b.connect(&input, &uid, Partitioning::Hash, vec!["__all".into()]);
        let cols: Vec<Value> = rel.names().map(|n| json!(n)).collect();
        let mut sorted = Rel { uid, ..rel.clone() };
        let mut bounds = Vec::new();
        if offset > 0 {
            bounds.push(format!("\"__order\" > {offset}"));
        }
        if let Some(n) = limit {
            bounds.push(format!("\"__order\" <= {}", offset + n));
        }
        if !bounds.is_empty() {
            sorted.uid = self.stateless(&sorted, "limit", "filter", json!({"predicate": bounds.join(" AND ")}));
        }
        let uid = self.stateless(&sorted, "order-output", "project", json!({"columns": cols}));
        Ok(Rel { uid, ..rel })
    }

    pub(super) fn over_aggregate(&mut self, s: &Select, rel: Rel) -> Result<Rel, SqlError> {
        let calls = over_calls(s);
        let at = calls[0].1.name.span().start;
        if rel.changelog {
            return Err(SqlError::at(at, "not supported: an OVER aggregation of an updating input"));
        }
        let mut window: Option<&WindowSpec> = None;
        for (_, f, w) in &calls {
            let WindowType::WindowSpec(spec) = w else {
                return Err(SqlError::at(
                    f.name.span().start,
                    "not supported: a named window in OVER; write the window in each OVER (...)",
                ));
            };
            match window {
                None => window = Some(spec),
                Some(first) if first.to_string() == spec.to_string() => {}
                Some(_) => {
                    return Err(SqlError::at(
                        f.name.span().start,
                        "not supported: OVER aggregations over different windows in one select list",
                    ))
                }
            }
        }
        let spec = window.expect("at least one call");
        // ORDER BY the event-time attribute, ascending.
        let time = match &spec.order_by[..] {
            [o] if o.options.asc != Some(false) => plain_column(&o.expr)
                .map(|c| resolve_column(&rel, &c.value, c.span.start))
                .transpose()?
                .filter(|c| rel.rowtime.as_deref() == Some(c.as_str())),
            _ => None,
        };
        let Some(time) = time else {
            return Err(SqlError::at(
                at,
                format!(
                    "not supported: an OVER window not ordered by the event-time attribute{} alone, ascending",
                    rel.rowtime.as_ref().map(|t| format!(" (`{t}`)")).unwrap_or_default()
                ),
            ));
        };
        let frame = match &spec.window_frame {
            // With ORDER BY and no frame: every row up to this one and its peers.
            None => json!({"type": "unbounded", "peers": true}),
            Some(f) => {
                let text = |f: &datafusion::sql::sqlparser::ast::WindowFrame| {
                    format!(
                        "{} BETWEEN {} AND {}",
                        f.units,
                        f.start_bound,
                        f.end_bound.as_ref().map_or("CURRENT ROW".into(), |b| b.to_string())
                    )
                };
                if !matches!(f.end_bound, None | Some(WindowFrameBound::CurrentRow)) {
                    return Err(SqlError::at(
                        at,
                        format!("not supported: OVER frames ending after the current row ({})", text(f)),
                    ));
                }
                match (&f.units, &f.start_bound) {
                    (WindowFrameUnits::Rows, WindowFrameBound::Preceding(None)) => json!({"type": "unbounded"}),
                    (WindowFrameUnits::Range, WindowFrameBound::Preceding(None)) => {
                        json!({"type": "unbounded", "peers": true})
                    }
                    (WindowFrameUnits::Rows, WindowFrameBound::Preceding(Some(n))) => {
                        let n: u32 = n.to_string().parse().map_err(|_| {
                            SqlError::at(span_start(n), format!("ROWS {n} PRECEDING takes a whole number of rows"))
                        })?;
                        json!({"type": "rows", "preceding": n})
                    }
                    (WindowFrameUnits::Rows, WindowFrameBound::CurrentRow) => json!({"type": "rows", "preceding": 0}),
                    (WindowFrameUnits::Range, WindowFrameBound::Preceding(Some(d))) => {
                        json!({"type": "range", "preceding": format!("{}ms", interval_ms(d)?)})
                    }
                    _ => return Err(SqlError::at(at, format!("not supported: OVER frame {}", text(f)))),
                }
            }
        };
        // Partition keys (a constant one for none).
        let mut input = rel.clone();
        let mut key: Vec<String> = Vec::new();
        for p in &spec.partition_by {
            let Some(c) = plain_column(p) else {
                return Err(SqlError::at(
                    span_start(p),
                    "not supported: an expression in PARTITION BY; compute it in a subquery",
                ));
            };
            key.push(resolve_column(&rel, &c.value, c.span.start)?);
        }
        if key.is_empty() {
            input.uid = self.stateless(&rel, "over-input", "map", json!({"columns": [{"name": "__all", "expr": "0"}]}));
            key.push("__all".into());
        }
        // The aggregates, and the select list reading their results.
        let mut aggs: Vec<Value> = Vec::new();
        let mut select = s.clone();
        for (n, (i, f, _)) in calls.iter().enumerate() {
            let name = f.name.to_string().to_ascii_uppercase();
            let func = match name.as_str() {
                "COUNT" | "SUM" | "MIN" | "MAX" | "AVG" => name.to_ascii_lowercase(),
                "ROW_NUMBER" | "RANK" | "DENSE_RANK" => {
                    return Err(SqlError::at(f.name.span().start, format!("not supported: {name}() OVER outside a Top-N (SELECT ... FROM (SELECT ..., {name}() OVER (...) AS rn ...) WHERE rn <= N)")))
                }
                other => return Err(SqlError::at(f.name.span().start, format!("not supported: {other} OVER (...); OVER takes COUNT, SUM, MIN, MAX and AVG"))),
            };
            let args: Vec<&FunctionArg> = match &f.args {
                FunctionArguments::List(l) if l.duplicate_treatment.is_none() => l.args.iter().collect(),
                FunctionArguments::None => Vec::new(),
                _ => {
                    return Err(SqlError::at(
                        f.name.span().start,
                        format!("not supported: this form of {name}(...) OVER"),
                    ))
                }
            };
            let column = match args[..] {
                [] | [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if func == "count" => None,
                [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] => match plain_column(e) {
                    Some(c) => Some(resolve_column(&rel, &c.value, c.span.start)?),
                    None => {
                        return Err(SqlError::at(
                            span_start(e),
                            format!("not supported: an expression in {name}(...) OVER; compute it in a subquery"),
                        ))
                    }
                },
                _ => return Err(SqlError::at(f.name.span().start, format!("{name}(...) OVER takes one column"))),
            };
            let out = format!("__over{n}");
            let mut agg = json!({"fn": func, "as": out});
            let integer =
                column.as_ref().and_then(|c| rel.column(c)).and_then(|c| c.ty.clone()).is_some_and(|t| t.is_integer());
            if let Some(c) = &column {
                agg["column"] = json!(c);
            }
            aggs.push(agg);
            // AVG of an integer column is an integer, as in Flink.
            let read =
                if func == "avg" && integer { format!("CAST({} AS BIGINT)", quoted(&out)) } else { quoted(&out) };
            let read = crate::expr::parse_expr(&read);
            select.projection[*i] = match &s.projection[*i] {
                SelectItem::ExprWithAlias { alias, .. } => {
                    SelectItem::ExprWithAlias { expr: read, alias: alias.clone() }
                }
                _ => SelectItem::ExprWithAlias { expr: read, alias: Ident::new(format!("EXPR${i}")) },
            };
        }
        let meaning = format!("{key:?}|{time}|{frame}|{aggs:?}");
        let base = format!("{}.over-{}", rel.origin, fingerprint(&meaning));
        let config = json!({"partition_key": key, "time_column": time, "frame": frame, "aggregates": aggs});
        let uid = self.b.add(&base, "over_aggregate", config, 0);
        self.b.connect(&input.uid, &uid, Partitioning::Hash, key.clone());
        let mut columns = input.columns.clone();
        if key == ["__all"] {
            columns.push(Col::typed("__all", SqlType::Int));
        }
        for n in 0..calls.len() {
            columns.push(Col { name: format!("__over{n}"), ty: None });
        }
        let over = Rel { uid, columns, ..rel };
        self.projection(&select, over)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::tests::{compiled, error, DATAGEN};

    #[test]
    fn over_aggregations_become_over_aggregate_by_their_window() {
        let g = compiled(
            &format!(
                "{DATAGEN} SELECT channel, price, SUM(price) OVER w3 AS s, AVG(price) OVER w3
  FROM bids;"
            )
            .replace("OVER w3", "OVER (PARTITION BY channel ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW)"),
        );
        let o = g.operators.iter().find(|o| o.kind == "over_aggregate").expect("an OVER aggregation");
        assert!(o.uid.starts_with("bids.over-"), "{}", o.uid);
        assert_eq!(
            o.config,
            json!({"partition_key": ["channel"], "time_column": "ts", "frame": {"type": "rows", "preceding": 3},
                   "aggregates": [{"fn": "sum", "column": "price", "as": "__over0"}, {"fn": "avg", "column": "price", "as": "__over1"}]})
        );
        let project = g.operators.iter().find(|o| o.uid == "select.project").expect("the select list");
        assert_eq!(project.config["columns"][3], json!({"name": "EXPR$3", "expr": "CAST(\"__over1\" AS BIGINT)"}));
        for (frame, want) in [
            ("", json!({"type": "unbounded", "peers": true})),
            ("ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW", json!({"type": "unbounded"})),
            (
                "RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW",
                json!({"type": "range", "preceding": "10000ms"}),
            ),
        ] {
            let g = compiled(&format!("{DATAGEN} SELECT COUNT(*) OVER (ORDER BY ts {frame}) FROM bids;"));
            let o = g.operators.iter().find(|o| o.kind == "over_aggregate").unwrap();
            assert_eq!((&o.config["frame"], &o.config["partition_key"]), (&want, &json!(["__all"])), "{frame}");
        }
    }

    #[test]
    fn what_an_over_aggregation_cannot_be_is_refused() {
        let q = |item: &str| error(&format!("{DATAGEN} SELECT {item} FROM bids;"));
        let e = q("SUM(price) OVER (PARTITION BY channel ORDER BY price)");
        assert!(e.contains("not ordered by the event-time attribute (`ts`)"), "{e}");
        let e = q("SUM(price) OVER (ORDER BY ts), MAX(price) OVER (PARTITION BY channel ORDER BY ts)");
        assert!(e.contains("different windows"), "{e}");
        let e = q("SUM(price) OVER (ORDER BY ts ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING)");
        assert!(e.contains("ending after the current row"), "{e}");
        let e = q("ROW_NUMBER() OVER (ORDER BY ts)");
        assert!(e.contains("outside a Top-N"), "{e}");
        let e = error(&format!("{DATAGEN} SELECT price, ts FROM bids ORDER BY price;"));
        assert!(e.contains("not supported: ORDER BY on a stream other than by its event-time attribute (`ts`)"), "{e}");
    }

    #[test]
    fn order_by_the_event_time_sorts_every_row_on_one_key() {
        let g = compiled(&format!("{DATAGEN} SELECT auction, ts FROM bids ORDER BY ts;"));
        let o = g.operators.iter().find(|o| o.kind == "over_aggregate").expect("a sort");
        assert_eq!(o.uid, "bids.order-by-time");
        assert_eq!(o.config["frame"], json!({"type": "rows", "preceding": 0}));
        let g = compiled(&format!("{DATAGEN} SELECT auction, ts FROM bids ORDER BY ts LIMIT 5;"));
        let limit = g.operators.iter().find(|o| o.uid.ends_with(".limit")).expect("the limit");
        assert_eq!(limit.config["predicate"], "\"__order\" <= 5");
        assert_eq!(
            g.operators.iter().find(|o| o.uid.ends_with("order-output")).unwrap().config["columns"],
            json!(["auction", "ts"])
        );
        let g = compiled(&format!("{DATAGEN} SELECT auction, ts FROM bids ORDER BY ts LIMIT 5 OFFSET 2;"));
        let limit = g.operators.iter().find(|o| o.uid.ends_with(".limit")).expect("the limit");
        assert_eq!(limit.config["predicate"], "\"__order\" > 2 AND \"__order\" <= 7");
    }

    #[test]
    fn a_limit_without_an_order_takes_the_first_rows_to_arrive_on_one_subtask() {
        let g = compiled(&format!("{DATAGEN} SELECT auction FROM bids LIMIT 5 OFFSET 2;"));
        let l = g.operators.iter().find(|o| o.kind == "limit").expect("a limit");
        assert_eq!((l.uid.as_str(), &l.config, l.parallelism), ("bids.limit", &json!({"limit": 5, "offset": 2}), 1));
        let e = error(&format!("{DATAGEN} SELECT auction, COUNT(*) FROM bids GROUP BY auction LIMIT 5;"));
        assert!(e.contains("not supported: LIMIT or OFFSET of an updating input"), "{e}");
        let e = error(&format!("{DATAGEN} SELECT auction FROM bids LIMIT 2.5;"));
        assert!(e.contains("LIMIT and OFFSET take a whole number of rows"), "{e}");
    }
}
