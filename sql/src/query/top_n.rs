//! Top-N: `SELECT ... FROM (SELECT ..., ROW_NUMBER() OVER (PARTITION BY k
//! ORDER BY x DESC) AS rn FROM t) WHERE rn <= N`, planned as a `top_n`
//! operator whose result is updating (each rank's row, replaced as better
//! rows arrive).

use datafusion::sql::sqlparser::ast::{BinaryOperator, Value as SqlValue, WindowType};

use super::*;

/// What a Top-N's outer condition on the rank says: the number of ranks
/// kept, and the other conditions.
fn rank_limit(selection: Option<&Expr>, rank: &str) -> Result<(Option<usize>, Option<Expr>), SqlError> {
    let Some(e) = selection else { return Ok((None, None)) };
    let mut conjuncts = Vec::new();
    split_and(e, &mut conjuncts);
    let mut limit = None;
    let mut rest: Vec<Expr> = Vec::new();
    for c in conjuncts {
        let found = match c {
            Expr::BinaryOp { left, op, right } => {
                let is_rank = |x: &Expr| plain_column(x).is_some_and(|i| i.value == rank);
                let number = |x: &Expr| match x {
                    Expr::Value(v) => match &v.value {
                        SqlValue::Number(n, _) => n.parse::<i64>().ok(),
                        _ => None,
                    },
                    _ => None,
                };
                match (is_rank(left), number(right), is_rank(right), number(left)) {
                    (true, Some(n), _, _) => match op {
                        BinaryOperator::LtEq => Some(n),
                        BinaryOperator::Lt => Some(n - 1),
                        BinaryOperator::Eq if n == 1 => Some(1),
                        _ => None,
                    },
                    (_, _, true, Some(n)) => match op {
                        BinaryOperator::GtEq => Some(n),
                        BinaryOperator::Gt => Some(n - 1),
                        BinaryOperator::Eq if n == 1 => Some(1),
                        _ => None,
                    },
                    _ => None,
                }
            }
            _ => None,
        };
        match found {
            Some(n) if n >= 1 => limit = Some(limit.map_or(n as usize, |l: usize| l.min(n as usize))),
            Some(_) => {
                return Err(SqlError::at(span_of(c), "a Top-N keeps at least the first row: `rn <= N` with N >= 1"))
            }
            None => rest.push(c.clone()),
        }
    }
    let rest = rest.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: BinaryOperator::And,
        right: Box::new(b),
    });
    Ok((limit, rest))
}

fn split_and<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            split_and(left, out);
            split_and(right, out);
        }
        Expr::Nested(inner) => split_and(inner, out),
        other => out.push(other),
    }
}

fn span_of(e: &Expr) -> Location {
    e.span().start
}

impl Planner<'_> {
    /// The Top-N of `s` if its `FROM` is a subquery numbering rows with
    /// `ROW_NUMBER() OVER (...)`: its output (the subquery's columns and the
    /// rank) and what remains of `s`'s `WHERE`.
    pub(super) fn top_n(&mut self, s: &Select) -> Result<Option<(Rel, Option<Expr>)>, SqlError> {
        let [from] = &s.from[..] else { return Ok(None) };
        let TableFactor::Derived { subquery, .. } = &from.relation else { return Ok(None) };
        if !from.joins.is_empty() || subquery.with.is_some() {
            return Ok(None);
        }
        let SetExpr::Select(inner) = subquery.body.as_ref() else { return Ok(None) };
        let numbered = inner.projection.iter().enumerate().find_map(|(i, item)| match item {
            SelectItem::ExprWithAlias { expr: Expr::Function(f), alias } if f.over.is_some() => Some((i, f, alias)),
            _ => None,
        });
        if numbered.is_none() {
            if let Some(f) = inner.projection.iter().find_map(|item| match item {
                SelectItem::UnnamedExpr(Expr::Function(f)) if f.over.is_some() => Some(f),
                _ => None,
            }) {
                return Err(SqlError::at(
                    f.name.span().start,
                    "a Top-N names its row number: ROW_NUMBER() OVER (...) AS rn",
                ));
            }
        }
        let Some((i, f, alias)) = numbered else { return Ok(None) };
        let at = f.name.span().start;
        let name = f.name.to_string().to_ascii_uppercase();
        if name != "ROW_NUMBER" {
            return Err(SqlError::at(
                at,
                format!("not supported: {name}() OVER (...); a Top-N numbers rows with ROW_NUMBER()"),
            ));
        }
        let Some(WindowType::WindowSpec(spec)) = &f.over else {
            return Err(SqlError::at(at, "not supported: a named window in OVER"));
        };
        if spec.window_frame.is_some() {
            return Err(SqlError::at(at, "not supported: a window frame in a Top-N's OVER"));
        }
        let (limit, rest) = rank_limit(s.selection.as_ref(), &alias.value)?;
        let Some(limit) = limit else {
            return Err(SqlError::at(
                alias.span.start,
                format!("not supported: ROW_NUMBER() without a condition on `{}` in the outer WHERE (a Top-N keeps `WHERE {} <= N`)", alias.value, alias.value),
            ));
        };
        if spec.order_by.is_empty() {
            return Err(SqlError::at(at, "a Top-N needs ORDER BY in its OVER"));
        }
        // The subquery without its ROW_NUMBER item.
        let mut numbered_from = (**inner).clone();
        numbered_from.projection.remove(i);
        if numbered_from.projection.is_empty() {
            numbered_from.projection.push(SelectItem::Wildcard(Default::default()));
        }
        let rel = self.select(&numbered_from)?;
        if rel.changelog {
            return Err(SqlError::at(at, "not supported: a Top-N of an updating input"));
        }
        // A column the subquery selects under another name (`B.dateTime AS
        // bid_dateTime`) is read under that name; others by their own.
        let selected = |e: &Expr| {
            numbered_from.projection.iter().find_map(|item| match item {
                SelectItem::ExprWithAlias { expr, alias } if expr.to_string() == e.to_string() => {
                    Some(alias.value.clone())
                }
                _ => None,
            })
        };
        let column = |e: &Expr| -> Result<String, SqlError> {
            if let Some(name) = selected(e) {
                return resolve_column(&rel, &name, e.span().start);
            }
            match plain_column(e) {
                Some(c) => resolve_column(&rel, &c.value, c.span.start),
                None => Err(SqlError::at(
                    e.span().start,
                    "not supported: an expression in a Top-N's OVER; compute it in the subquery",
                )),
            }
        };
        let mut key: Vec<String> = spec.partition_by.iter().map(column).collect::<Result<_, _>>()?;
        let mut input = rel.clone();
        if key.is_empty() {
            input.uid =
                self.stateless(&rel, "top-n-input", "map", json!({"columns": [{"name": "__all", "expr": "0"}]}));
            key.push("__all".into());
        }
        let mut order = Vec::new();
        for o in &spec.order_by {
            let descending = o.options.asc == Some(false);
            let mut spec = json!({"column": column(&o.expr)?, "descending": descending});
            if let Some(n) = o.options.nulls_first {
                spec["nulls_first"] = json!(n);
            }
            order.push(spec);
        }
        // Partitioned by both bounds of the window its rows carry, it is a
        // window Top-N: each window's first rows, once, when it closes.
        let window = rel.window.clone().filter(|w| key.contains(&w.start) && key.contains(&w.end));
        let meaning = format!("{key:?}|{order:?}|{limit}");
        let kind = if window.is_some() { "window-top-n" } else { "top-n" };
        let uid_base = format!("{}.{kind}-{}", rel.origin, fingerprint(&meaning));
        let mut config = json!({"partition_key": key, "order_by": order, "limit": limit, "rank_column": alias.value});
        match &window {
            Some(w) => config["window_end_column"] = json!(w.end),
            None => config["op_column"] = json!(OP),
        }
        let uid = self.b.add(&uid_base, "top_n", config, 0);
        self.b.connect(&input.uid, &uid, Partitioning::Hash, key.clone());
        let mut columns = input.columns.clone();
        columns.push(Col::typed(alias.value.clone(), SqlType::BigInt));
        let changelog = window.is_none();
        let out = Rel {
            uid,
            columns,
            rowtime: None,
            proctime: None,
            origin: rel.origin,
            qualifiers: Vec::new(),
            changelog,
            window,
        };
        // The global key column is internal: project it away.
        let out = if input.uid != rel.uid {
            let mut cols: Vec<Value> =
                out.columns.iter().filter(|c| c.name != "__all").map(|c| json!(c.name)).collect();
            cols.push(json!(OP));
            let uid = self.stateless(&out, "top-n-output", "project", json!({"columns": cols}));
            Rel { uid, columns: out.columns.into_iter().filter(|c| c.name != "__all").collect(), ..out }
        } else {
            out
        };
        Ok(Some((out, rest)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::tests::{compiled, error, DATAGEN};

    #[test]
    fn row_number_under_a_rank_condition_becomes_a_top_n() {
        let g = compiled(&format!(
            "{DATAGEN} SELECT auction, price, rn FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC, channel) AS rn FROM bids WHERE price > 0
) WHERE rn <= 3 AND price < 9000;"
        ));
        let top = g.operators.iter().find(|o| o.kind == "top_n").expect("a top_n");
        assert!(top.uid.starts_with("bids.top-n-"), "{}", top.uid);
        assert_eq!(
            top.config,
            json!({"partition_key": ["auction"], "order_by": [{"column": "price", "descending": true}, {"column": "channel", "descending": false}],
                   "limit": 3, "rank_column": "rn", "op_column": "__op"})
        );
        let edge = g.edges.iter().find(|e| e.to == top.uid).unwrap();
        assert_eq!(edge.key, ["auction"]);
        let after = g.edges.iter().find(|e| e.from == top.uid).unwrap();
        let filter = g.operators.iter().find(|o| o.uid == after.to).unwrap();
        assert_eq!(filter.kind, "filter", "the other condition filters the ranked rows");
        // rn < 2 and rn = 1 keep the first row; no partition ranks everything.
        for (cond, n) in [("rn < 2", 1), ("rn = 1", 1), ("5 >= rn", 5)] {
            let g = compiled(&format!(
                "{DATAGEN} SELECT * FROM (SELECT auction, price, ROW_NUMBER() OVER (ORDER BY price) AS rn FROM bids) WHERE {cond};"
            ));
            let top = g.operators.iter().find(|o| o.kind == "top_n").unwrap();
            assert_eq!(top.config["limit"], json!(n), "{cond}");
            assert_eq!(top.config["partition_key"], json!(["__all"]));
        }
    }

    #[test]
    fn what_a_top_n_cannot_be_is_refused() {
        let q = |inner: &str, outer: &str| {
            format!("{DATAGEN} SELECT * FROM (SELECT auction, price, {inner} FROM bids) {outer};")
        };
        let e = error(&q("RANK() OVER (PARTITION BY auction ORDER BY price) AS r", "WHERE r <= 3"));
        assert!(e.contains("not supported: RANK() OVER"), "{e}");
        let e = error(&q("ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price) AS r", ""));
        assert!(e.contains("without a condition on `r`"), "{e}");
        let e = error(&q("ROW_NUMBER() OVER (PARTITION BY auction) AS r", "WHERE r <= 3"));
        assert!(e.contains("needs ORDER BY"), "{e}");
        let e = error(&q("ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price)", "WHERE 1 = 1"));
        assert!(e.contains("names its row number"), "{e}");
        let e = error(&format!(
            "{DATAGEN} CREATE TABLE o (auction BIGINT, price BIGINT, r BIGINT) WITH ('connector' = 'filesystem', 'path' = '/tmp/o', 'format' = 'json');
INSERT INTO o {}",
            q("ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price) AS r", "WHERE r <= 3").split_once(";\n").map_or("", |x| x.1)
        ));
        assert!(e.contains("updating") || e.contains("only appends rows"), "{e}");
    }
}
