//! Queries as operators: `FROM` (tables, views, subqueries, window
//! table-valued functions), `WHERE` → `filter`, window aggregations →
//! `window`, `HAVING` → `filter`, the select list → `project`.

use std::collections::HashMap;

use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, LimitClause, ObjectName,
    Query, Select, SelectItem, SetExpr, SetOperator, SetQuantifier, Spanned, TableFactor, TableWithJoins,
};
use datafusion::sql::sqlparser::tokenizer::Location;
use serde_json::{json, Value};
use weir_runtime::graph::Partitioning;

use crate::builder::{fingerprint, quoted, Builder, Col, Rel, WindowBounds, OP};
use crate::connectors;
use crate::error::{did_you_mean, SqlError};
use crate::expr::{interval_ms, interval_or_zero_ms, resolve_column, struct_field, to_sql};
use crate::join::qualify_select;
use crate::parse::TableDef;
use crate::settings::Settings;
use crate::types::SqlType;

mod aggregates;
mod group;
mod over;
mod top_n;
mod union;
mod window_fn;
mod window_table;

use aggregates::{contains_aggregate, finish, placeholders, specs, Aggregate, Bounds, GroupKeys, AGG, WINDOW};

/// Tables and views declared so far.
#[derive(Debug, Default)]
pub struct Catalog {
    /// `CREATE TABLE`s by name.
    pub tables: HashMap<String, TableDef>,
    /// `CREATE VIEW`s by name.
    pub views: HashMap<String, Box<Query>>,
}

impl Catalog {
    fn names(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().chain(self.views.keys()).map(String::as_str)
    }
}

/// Plans the queries of one job.
pub struct Planner<'a> {
    /// Declared tables and views.
    pub catalog: &'a Catalog,
    /// `SET` values.
    pub settings: &'a Settings,
    /// The job being built.
    pub b: &'a mut Builder,
    /// Prefix of the uids of stateless operators (the sink's name).
    pub context: String,
    /// The `WITH` queries in scope, innermost last.
    pub ctes: Vec<(String, Query)>,
}

/// A window table-valued function of a `FROM`.
#[derive(Debug, Clone)]
pub(crate) struct WindowFn {
    /// `tumbling`, `sliding` or `session`, with their sizes, as the window
    /// operator's config.
    spec: Value,
    /// The time attribute.
    column: String,
    /// Where it is written.
    at: Location,
    /// Whether `column` is the processing-time attribute: windows by the
    /// clock of the task managers.
    processing: bool,
}

/// Whether `e` is a call of `PROCTIME()`: the processing-time attribute.
pub(crate) fn is_proctime_call(e: &Expr) -> bool {
    matches!(e, Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("PROCTIME"))
}

/// A count of rows in LIMIT or OFFSET.
fn whole_rows(e: &Expr) -> Result<u64, SqlError> {
    e.to_string()
        .parse::<u64>()
        .map_err(|_| SqlError::at(e.span().start, "LIMIT and OFFSET take a whole number of rows"))
}

impl Planner<'_> {
    /// Plans a query.
    pub fn query(&mut self, q: &Query) -> Result<Rel, SqlError> {
        // `LIMIT n [OFFSET m]`: of a stream sorted by its event time, its
        // first rows; of another, the first rows to arrive.
        let (limit, offset) = match &q.limit_clause {
            None => (None, 0),
            Some(LimitClause::LimitOffset { limit, offset, limit_by }) if limit_by.is_empty() => {
                let offset = offset.as_ref().map(|o| whole_rows(&o.value)).transpose()?.unwrap_or(0);
                (limit.as_ref().map(whole_rows).transpose()?, offset)
            }
            Some(l) => {
                return Err(SqlError::at(l.span().start, "not supported: this form of LIMIT (BY, or `LIMIT m, n`)"))
            }
        };
        let rel = self.unordered(q)?;
        match &q.order_by {
            Some(o) => self.order_by_time(o, rel, limit, offset),
            None if limit.is_some() || offset > 0 => self.limit(rel, limit, offset, q),
            None => Ok(rel),
        }
    }

    /// The first `limit` rows after `offset` of a stream in arrival order:
    /// `limit`, at parallelism 1.
    fn limit(&mut self, rel: Rel, limit: Option<u64>, offset: u64, q: &Query) -> Result<Rel, SqlError> {
        if rel.changelog {
            let at = q.limit_clause.as_ref().map_or(q.body.span().start, |l| l.span().start);
            return Err(SqlError::at(at, "not supported: LIMIT or OFFSET of an updating input"));
        }
        let mut config = json!({"offset": offset});
        if let Some(n) = limit {
            config["limit"] = json!(n);
        }
        let limit = self.b.add(&format!("{}.limit", rel.origin), "limit", config, 1);
        self.b.connect(&rel.uid, &limit, Partitioning::Rebalance, Vec::new());
        // Back to the job's parallelism, so that what follows may chain.
        let cols: Vec<Value> = rel.names().map(|n| json!(n)).collect();
        let uid = self.b.add(&format!("{}.limit-output", rel.origin), "project", json!({"columns": cols}), 0);
        self.b.connect(&limit, &uid, Partitioning::Rebalance, Vec::new());
        Ok(Rel { uid, ..rel })
    }

    fn unordered(&mut self, q: &Query) -> Result<Rel, SqlError> {
        let Some(with) = &q.with else { return self.body(&q.body) };
        // `WITH name AS (query)`: each name is a view of this query only,
        // planned where it is read; later ones may read earlier ones.
        if with.recursive {
            return Err(SqlError::at(with.span().start, "not supported: WITH RECURSIVE"));
        }
        let scope = self.ctes.len();
        for cte in &with.cte_tables {
            if !cte.alias.columns.is_empty() {
                return Err(SqlError::at(
                    cte.alias.name.span.start,
                    "not supported: column names after a WITH name (alias them in its SELECT)",
                ));
            }
            self.ctes.push((cte.alias.name.value.clone(), (*cte.query).clone()));
        }
        let planned = self.body(&q.body);
        self.ctes.truncate(scope);
        planned
    }

    fn body(&mut self, body: &SetExpr) -> Result<Rel, SqlError> {
        match body {
            SetExpr::Select(s) => self.select(s),
            SetExpr::Query(q) => self.query(q),
            SetExpr::SetOperation { op: SetOperator::Union, set_quantifier: SetQuantifier::All, left, right } => {
                self.union_all(left, right)
            }
            SetExpr::SetOperation {
                op: SetOperator::Union,
                set_quantifier: SetQuantifier::None | SetQuantifier::Distinct,
                left,
                right,
            } => {
                // UNION: the rows of both, each once.
                let all = self.union_all(left, right)?;
                self.distinct(all)
            }
            SetExpr::SetOperation {
                op: op @ (SetOperator::Intersect | SetOperator::Except | SetOperator::Minus),
                set_quantifier: q @ (SetQuantifier::None | SetQuantifier::Distinct | SetQuantifier::All),
                left,
                right,
            } => self.intersect(left, right, !matches!(op, SetOperator::Intersect), *q == SetQuantifier::All),
            SetExpr::SetOperation { left, .. } => {
                Err(SqlError::at(left.span().end, "not supported: this kind of set operation (BY NAME)"))
            }
            SetExpr::Values(v) => {
                Err(SqlError::at(v.span().start, "not supported: VALUES as a query (declare a table)"))
            }
            other => Err(SqlError::at(other.span().start, "not supported: this kind of query")),
        }
    }

    fn relation(&mut self, from: &TableWithJoins) -> Result<(Rel, Option<WindowFn>), SqlError> {
        if !from.joins.is_empty() {
            return Ok((self.joined(from)?, None));
        }
        match &from.relation {
            TableFactor::Table { name, args: None, version: None, .. } => Ok((self.named(name)?, None)),
            TableFactor::Table { version: Some(_), name, .. } => Err(SqlError::at(
                name.span().start,
                "FOR SYSTEM_TIME AS OF names the versioned table of a temporal join: orders o JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON ...",
            )),
            TableFactor::Derived { subquery, .. } => Ok((self.query(subquery)?, None)),
            TableFactor::TableFunction { expr: Expr::Function(f), .. } => self.window_function(f),
            other => Err(SqlError::at(other.span().start, format!("not supported: `{other}` in FROM"))),
        }
    }

    /// A table (a source) or a view (its query, planned in place).
    pub(crate) fn named(&mut self, name: &ObjectName) -> Result<Rel, SqlError> {
        let ident = name.0.last().and_then(|p| p.as_ident()).cloned().unwrap_or_else(|| Ident::new(name.to_string()));
        self.named_ident(&ident)
    }

    fn named_ident(&mut self, ident: &Ident) -> Result<Rel, SqlError> {
        if let Some(i) = self.ctes.iter().rposition(|(name, _)| *name == ident.value) {
            // A WITH query sees the names declared before it, not itself.
            let query = self.ctes[i].1.clone();
            let hidden = self.ctes.split_off(i);
            let planned = self.query(&query);
            self.ctes.extend(hidden);
            return planned;
        }
        if let Some(t) = self.catalog.tables.get(&ident.value) {
            return connectors::source(self.b, t, self.settings);
        }
        if let Some(v) = self.catalog.views.get(&ident.value) {
            let v = v.clone();
            return self.query(&v);
        }
        Err(SqlError::at(
            ident.span.start,
            format!("unknown table or view `{}`{}", ident.value, did_you_mean(&ident.value, self.catalog.names())),
        ))
    }

    fn select(&mut self, s: &Select) -> Result<Rel, SqlError> {
        let joined;
        let s = match comma_join(s) {
            Some(j) => {
                joined = j;
                &joined
            }
            None => s,
        };
        let at = s.select_token.0.span.start;
        if let Some(d) = &s.distinct {
            if !matches!(d, datafusion::sql::sqlparser::ast::Distinct::Distinct) {
                return Err(SqlError::at(at, "not supported: SELECT DISTINCT ON"));
            }
        }
        let from = match &s.from[..] {
            [one] => one,
            [] => return Err(SqlError::at(at, "not supported: SELECT without FROM")),
            [_, second, ..] => return Err(SqlError::at(second.span().start, "not supported: joins (a comma in FROM)")),
        };
        // A Top-N subquery takes the outer WHERE's condition on its rank.
        let (mut rel, mut window, selection) = match self.top_n(s)? {
            Some((rel, rest)) => (rel, None, rest),
            None => {
                let (rel, window) = self.relation(from)?;
                (rel, window, s.selection.clone())
            }
        };
        let group: &[Expr] = match &s.group_by {
            GroupByExpr::Expressions(e, _) => e,
            GroupByExpr::All(_) => return Err(SqlError::at(at, "not supported: GROUP BY ALL")),
        };
        let has_aggregates = s.projection.iter().any(|i| item_expr(i).is_some_and(contains_aggregate))
            || s.having.as_ref().is_some_and(contains_aggregate);
        // A window table-valued function read as a table: its rows with
        // their window bounds (for a window join or window Top-N).
        if group.is_empty() && !has_aggregates {
            if let Some(w) = window.take() {
                rel = self.window_table(rel, &w)?;
            }
        }
        let qualified;
        let s = if rel.qualifiers.is_empty() {
            s
        } else {
            qualified = qualify_select(s, &rel)?;
            &qualified
        };
        let selection = if rel.qualifiers.is_empty() { selection } else { s.selection.clone() };
        if let Some(w) = &selection {
            let predicate = to_sql(w, &rel)?;
            rel.uid = self.stateless(&rel, "filter", "filter", json!({"predicate": predicate}));
        }
        let legacy = group.iter().find_map(legacy_window);
        if over::has_over(s) {
            if !group.is_empty() || window.is_some() {
                return Err(SqlError::at(at, "not supported: OVER aggregations with GROUP BY or a window function"));
            }
            let planned = self.over_aggregate(s, rel)?;
            return match s.distinct {
                Some(_) => self.distinct(planned),
                None => Ok(planned),
            };
        }
        // Rows of a window table function (a view of one, say) grouped by
        // their window bounds make a window aggregation, as in Flink.
        if window.is_none() && legacy.is_none() {
            if let (Some(w), Some(time)) = (&rel.window, &rel.rowtime) {
                let named = |c: &str| group.iter().any(|g| window_column(g).is_some_and(|n| n == c));
                if let (Some(spec), true) = (&w.spec, named(&w.start) && named(&w.end)) {
                    window = Some(WindowFn { spec: spec.clone(), column: time.clone(), at, processing: false });
                }
            }
        }
        let planned = if window.is_some() || legacy.is_some() {
            if group.is_empty() {
                let at = window.as_ref().map_or(at, |w| w.at);
                return Err(SqlError::at(at, "a window aggregation groups by window_start and window_end"));
            }
            self.window_aggregate(s, rel, window, group)?
        } else if !group.is_empty() || has_aggregates || s.having.is_some() {
            self.group_aggregate(s, rel, group)?
        } else {
            self.projection(s, rel)?
        };
        match s.distinct {
            Some(_) => self.distinct(planned),
            None => Ok(planned),
        }
    }

    /// An operator of no state, named after the query's sink.
    fn stateless(&mut self, input: &Rel, role: &str, kind: &str, config: Value) -> String {
        let base = format!("{}.{role}", self.context);
        self.b.then(input, &base, kind, config)
    }

    fn projection(&mut self, s: &Select, rel: Rel) -> Result<Rel, SqlError> {
        let mut cols = Vec::new();
        let mut out = Vec::new();
        let (mut rowtime, mut proctime) = (None, None);
        // Where the window bounds went, if they pass through.
        let (mut start, mut end) = (None, None);
        for (i, item) in s.projection.iter().enumerate() {
            match item {
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(_, _) => {
                    for c in &rel.columns {
                        cols.push(json!(c.name));
                        out.push(c.clone());
                    }
                    if let Some(w) = &rel.window {
                        (start, end) = (Some(w.start.clone()), Some(w.end.clone()));
                    }
                    if rel.rowtime.is_some() {
                        rowtime = rel.rowtime.clone();
                    }
                    if rel.proctime.is_some() {
                        proctime = rel.proctime.clone();
                    }
                }
                SelectItem::ExprWithAliases { expr, .. } => {
                    return Err(SqlError::at(expr.span().start, "not supported: several aliases for one column"));
                }
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    let alias = match item {
                        SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
                        _ => None,
                    };
                    let sql = to_sql(e, &rel)?;
                    let field = match e {
                        Expr::CompoundIdentifier(parts) => struct_field(&rel, parts),
                        _ => None,
                    };
                    let source = match field {
                        Some(_) => None,
                        None => plain_column(e).map(|c| resolve_column(&rel, &c.value, c.span.start)).transpose()?,
                    };
                    let (field_name, field_ty) = field.unzip();
                    let named = alias.is_some();
                    let mut name =
                        alias.or(field_name).or_else(|| source.clone()).unwrap_or_else(|| format!("EXPR${i}"));
                    // A second `dateTime` (of another input of a join) is
                    // `dateTime0`, as Flink names it.
                    if !named && out.iter().any(|c: &Col| c.name == name) {
                        let base = name.clone();
                        let mut n = 0;
                        while out.iter().any(|c: &Col| c.name == name) {
                            name = format!("{base}{n}");
                            n += 1;
                        }
                    }
                    let ty = match field_ty {
                        Some(t) => t,
                        None => source.as_deref().and_then(|c| rel.column(c)).and_then(|c| c.ty.clone()),
                    };
                    if source.is_some() && source == rel.rowtime {
                        rowtime = Some(name.clone());
                    }
                    if (source.is_some() && source == rel.proctime) || is_proctime_call(e) {
                        proctime = Some(name.clone());
                    }
                    if let (Some(c), Some(w)) = (&source, &rel.window) {
                        if *c == w.start {
                            start = Some(name.clone());
                        } else if *c == w.end {
                            end = Some(name.clone());
                        }
                    }
                    cols.push(json!({"name": name, "expr": sql}));
                    out.push(Col { name, ty });
                }
            }
        }
        let spec = rel.window.as_ref().and_then(|w| w.spec.clone());
        let window = start.zip(end).map(|(start, end)| WindowBounds { start, end, spec });
        if out == rel.columns {
            return Ok(Rel { rowtime, proctime, qualifiers: Vec::new(), window, ..rel });
        }
        if rel.changelog {
            cols.push(json!(OP));
        }
        let uid = self.stateless(&rel, "project", "project", json!({"columns": cols}));
        Ok(Rel {
            uid,
            columns: out,
            rowtime,
            proctime,
            origin: rel.origin,
            qualifiers: Vec::new(),
            changelog: rel.changelog,
            window,
        })
    }

    fn window_aggregate(
        &mut self,
        s: &Select,
        rel: Rel,
        tvf: Option<WindowFn>,
        group: &[Expr],
    ) -> Result<Rel, SqlError> {
        // The window and the grouping keys.
        let mut gk = GroupKeys::default();
        let window = match &tvf {
            Some(w) => {
                let (mut start, mut end) = (false, false);
                for g in group {
                    match window_column(g) {
                        Some("window_start") => start = true,
                        Some("window_end") => end = true,
                        Some(_) => return Err(SqlError::at(g.span().start, "not supported: GROUP BY window_time")),
                        None => gk.add(&rel, g)?,
                    }
                }
                if !(start && end) {
                    return Err(SqlError::at(w.at, "a window aggregation groups by both window_start and window_end"));
                }
                w.clone()
            }
            None => {
                let mut window = None;
                for g in group {
                    match legacy_window(g) {
                        Some(f) => {
                            if window.is_some() {
                                return Err(SqlError::at(g.span().start, "a GROUP BY has at most one group window"));
                            }
                            window = Some(self.legacy_spec(f, &rel)?);
                        }
                        None => gk.add(&rel, g)?,
                    }
                }
                window.expect("a legacy window was found")
            }
        };
        let keys = gk.keys.clone();
        let legacy = tvf.is_none();
        let bounds = if legacy { Bounds::Legacy } else { Bounds::Tvf };
        // Aggregate calls and window bounds become placeholders; the
        // aggregates' arguments are computed before the window.
        let mut aggs: Vec<Aggregate> = Vec::new();
        let mut items = Vec::new();
        for (i, item) in s.projection.iter().enumerate() {
            let (e, alias) = match item {
                SelectItem::UnnamedExpr(e) => (e, None),
                SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
                _ => {
                    return Err(SqlError::at(
                        s.select_token.0.span.start,
                        "not supported: * in a window aggregation; list the keys, window bounds and aggregates",
                    ))
                }
            };
            let mut x = e.clone();
            placeholders(&mut x, &rel, bounds, &mut aggs)?;
            gk.replace(&mut x);
            let name = alias.unwrap_or_else(|| match (e, &x) {
                (Expr::Identifier(id), _) => id.value.clone(),
                (_, Expr::Identifier(p)) if p.value.starts_with(WINDOW) && !legacy => {
                    p.value[WINDOW.len()..].to_string()
                }
                _ => format!("EXPR${i}"),
            });
            items.push((name, x));
        }
        let mut having = s.having.clone();
        if let Some(h) = &mut having {
            placeholders(h, &rel, bounds, &mut aggs)?;
            gk.replace(h);
        }
        // Key expressions, inputs of the aggregates that are expressions,
        // and the key of a window over everything.
        let (mut specs, agg_inputs) = specs(&aggs, &rel)?;
        // A window of keys only (as Nexmark's q8 groups): the operator
        // counts rows, and the count is not selected.
        let hidden_count = specs.is_empty();
        if hidden_count {
            specs.push(json!({"fn": "count", "as": "__rows"}));
        }
        let mut pre = gk.pre.clone();
        pre.extend(agg_inputs);
        let global = keys.is_empty();
        if global {
            pre.push(json!({"name": "__all", "expr": "0"}));
        }
        let mut input = rel.clone();
        if !pre.is_empty() {
            input.uid = self.stateless(&rel, "aggregate-input", "map", json!({"columns": pre}));
        }
        let key: Vec<String> = if global { vec!["__all".into()] } else { keys.iter().map(|k| k.0.clone()).collect() };
        // The uid changes with what the state means (keys, window,
        // aggregates), so a changed query does not restore old state into it.
        let clock = if window.processing { "|processing time" } else { "" };
        let meaning = format!("{key:?}{}|{}{clock}|{}|{specs:?}", gk.expressions(), window.column, window.spec);
        let kind = window.spec["type"].as_str().unwrap_or("window").to_string();
        let uid_base = format!("{}.{kind}-{}", rel.origin, fingerprint(&meaning));
        let mut config = json!({"key": key, "window": window.spec, "aggregates": specs});
        match window.processing {
            true => config["processing_time"] = json!(true),
            false => config["timestamp_column"] = json!(window.column),
        }
        let uid = self.b.add(&uid_base, "window", config, 0);
        self.b.connect(&input.uid, &uid, Partitioning::Hash, key.clone());
        let mut columns: Vec<Col> = Vec::new();
        for k in &key {
            columns.push(rel.column(k).cloned().unwrap_or_else(|| Col::typed(k.clone(), SqlType::Int)));
        }
        columns.push(Col::typed("window_start", SqlType::BigInt));
        columns.push(Col::typed("window_end", SqlType::BigInt));
        for (i, a) in aggs.iter().enumerate() {
            let ty = match a.function.as_str() {
                "COUNT" => Some(SqlType::BigInt),
                _ => None,
            };
            columns.push(Col { name: format!("__agg{i}"), ty });
        }
        if hidden_count {
            columns.push(Col::typed("__rows", SqlType::BigInt));
        }
        let mut out = Rel {
            uid,
            columns,
            rowtime: None,
            proctime: None,
            origin: rel.origin.clone(),
            qualifiers: Vec::new(),
            changelog: false,
            window: None,
        };
        let key_names: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        if let Some(mut h) = having {
            finish(&mut h, &key_names, &aggs, &rel)?;
            out.uid = self.stateless(&out, "having", "filter", json!({"predicate": h.to_string()}));
        }
        // The select list over the window's output.
        let mut cols = Vec::new();
        let mut result = Vec::new();
        let mut rowtime = None;
        let (mut start, mut end) = (None, None);
        for (name, mut x) in items {
            let ty = match &x {
                Expr::Identifier(p) if p.value == format!("{WINDOW}window_start") && !legacy => {
                    start = Some(name.clone());
                    Some(SqlType::Timestamp)
                }
                Expr::Identifier(p) if p.value == format!("{WINDOW}window_end") && !legacy => {
                    end = Some(name.clone());
                    Some(SqlType::Timestamp)
                }
                Expr::Identifier(p)
                    if p.value == format!("{WINDOW}window_start") || p.value == format!("{WINDOW}window_end") =>
                {
                    Some(SqlType::Timestamp)
                }
                Expr::Identifier(p) if p.value == format!("{WINDOW}window_time") => {
                    rowtime = Some(name.clone());
                    Some(SqlType::Timestamp)
                }
                Expr::Identifier(p) if p.value.starts_with(AGG) => {
                    let i: usize = p.value[AGG.len()..].parse().unwrap_or(usize::MAX);
                    aggs.get(i).and_then(|a| a.result_type(&rel))
                }
                Expr::Identifier(p) => keys
                    .iter()
                    .find(|k| k.0 == p.value || (k.0.eq_ignore_ascii_case(&p.value)))
                    .and_then(|k| k.1.clone()),
                _ => None,
            };
            finish(&mut x, &key_names, &aggs, &rel)?;
            cols.push(json!({"name": name, "expr": x.to_string()}));
            result.push(Col { name, ty });
        }
        let uid = self.stateless(&out, "project", "project", json!({"columns": cols}));
        // `window_time` of a processing-time window is a processing time.
        let (rowtime, proctime) = if window.processing { (None, rowtime) } else { (rowtime, None) };
        Ok(Rel {
            uid,
            columns: result,
            rowtime,
            proctime,
            origin: rel.origin,
            qualifiers: Vec::new(),
            changelog: false,
            window: start.zip(end).map(|(start, end)| WindowBounds { start, end, spec: None }),
        })
    }
}

/// `window_start` / `window_end` / `window_time` in a GROUP BY.
fn window_column(g: &Expr) -> Option<&'static str> {
    let c = plain_column(g)?;
    ["window_start", "window_end", "window_time"].into_iter().find(|w| c.value.eq_ignore_ascii_case(w))
}

/// `TUMBLE(...)`, `HOP(...)` or `SESSION(...)` in a GROUP BY.
fn legacy_window(g: &Expr) -> Option<&Function> {
    match g {
        Expr::Function(f)
            if ["TUMBLE", "HOP", "SESSION"].contains(&f.name.to_string().to_ascii_uppercase().as_str()) =>
        {
            Some(f)
        }
        _ => None,
    }
}

/// `FROM a, b WHERE c` as `FROM a JOIN b ON c`, which it means: an inner
/// join whose conditions the WHERE states. (Without a WHERE it would be a
/// cross join, which the join planner refuses.)
fn comma_join(s: &Select) -> Option<Select> {
    use datafusion::sql::sqlparser::ast::{Join, JoinConstraint, JoinOperator};
    let [first, second] = &s.from[..] else { return None };
    if !second.joins.is_empty() {
        return None;
    }
    let on = s.selection.clone()?;
    let mut from = first.clone();
    from.joins.push(Join {
        relation: second.relation.clone(),
        global: false,
        join_operator: JoinOperator::Inner(JoinConstraint::On(on)),
    });
    Some(Select { from: vec![from], selection: None, ..s.clone() })
}

/// A bare column reference (`c` or `t.c`).
pub(super) fn plain_column(e: &Expr) -> Option<&Ident> {
    match e {
        Expr::Identifier(id) => Some(id),
        Expr::CompoundIdentifier(parts) => parts.last(),
        Expr::Nested(inner) => plain_column(inner),
        _ => None,
    }
}

fn item_expr(i: &SelectItem) -> Option<&Expr> {
    match i {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        _ => None,
    }
}

fn ms(n: u64) -> String {
    format!("{n}ms")
}
