//! Aggregate calls in a select list: found, numbered and replaced by
//! placeholders, given to the aggregating operator as its specs, and the
//! placeholders turned into expressions over its output. Window and group
//! aggregations share them.

use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    CaseWhen, DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentClause,
    FunctionArguments, Ident, Spanned,
};
use serde_json::{json, Value};

use super::plain_column;
use crate::builder::{quoted, Rel};
use crate::error::SqlError;
use crate::expr::{parse_expr, quoted_ident, resolve, resolve_column, to_sql};
use crate::types::SqlType;

/// Names of aggregate functions the window operator computes.
pub(super) const AGGREGATES: &[&str] = &["COUNT", "SUM", "MIN", "MAX", "AVG"];

/// Placeholder prefixes: window bounds and aggregate results.
pub(super) const WINDOW: &str = "__weir_window_";
pub(super) const AGG: &str = "__weir_agg_";

/// Which window bounds a select list may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bounds {
    /// `window_start`, `window_end`, `window_time` of a window TVF.
    Tvf,
    /// `TUMBLE_START(...)` and the like of a group window.
    Legacy,
    /// None: a group aggregation.
    None,
}

/// One aggregate call of an aggregation.
#[derive(Debug, Clone)]
pub(super) struct Aggregate {
    pub(super) function: String,
    pub(super) argument: Option<Expr>,
    /// `COUNT(DISTINCT x)`.
    pub(super) distinct: bool,
    /// As written, to share one result between equal calls.
    text: String,
}

impl Aggregate {
    /// Flink's result types where the planner knows them: COUNT is BIGINT,
    /// and SUM, MIN, MAX and AVG keep the type of their column.
    pub(super) fn result_type(&self, rel: &Rel) -> Option<SqlType> {
        match self.function.as_str() {
            "COUNT" => Some(SqlType::BigInt),
            _ => plain_column(self.argument.as_ref()?).and_then(|c| rel.column(&c.value)).and_then(|c| c.ty.clone()),
        }
    }
}

/// Replaces aggregate calls and window bounds by placeholders (bottom-up,
/// so the aggregates' own arguments are never looked at as columns).
pub(super) fn placeholders(e: &mut Expr, rel: &Rel, bounds: Bounds, aggs: &mut Vec<Aggregate>) -> Result<(), SqlError> {
    use std::ops::ControlFlow;
    let flow = datafusion::sql::sqlparser::ast::visit_expressions_mut(e, |x| {
        let new = match x {
            // The bounds the window gives, also where the rows carry their
            // table function's bounds already.
            Expr::Identifier(id)
                if bounds == Bounds::Tvf
                    && (rel.column(&id.value).is_none() || rel.window.as_ref().is_some_and(|w| w.spec.is_some())) =>
            {
                match id.value.to_ascii_lowercase().as_str() {
                    w @ ("window_start" | "window_end" | "window_time") => {
                        Some(Ok(placeholder(&format!("{WINDOW}{w}"))))
                    }
                    _ => None,
                }
            }
            Expr::Function(f) => {
                let name = f.name.to_string().to_ascii_uppercase();
                if AGGREGATES.contains(&name.as_str()) {
                    Some(aggregate(f, &name, aggs).map(|i| placeholder(&format!("{AGG}{i}"))))
                } else if bounds == Bounds::Legacy {
                    let bound = ["_START", "_END", "_ROWTIME"].iter().find(|s| {
                        name.ends_with(*s) && ["TUMBLE", "HOP", "SESSION"].contains(&&name[..name.len() - s.len()])
                    });
                    bound.map(|b| {
                        let which = match *b {
                            "_START" => "window_start",
                            "_END" => "window_end",
                            _ => "window_time",
                        };
                        Ok(placeholder(&format!("{WINDOW}{which}")))
                    })
                } else {
                    None
                }
            }
            _ => None,
        };
        match new {
            Some(Ok(n)) => *x = n,
            Some(Err(e)) => return ControlFlow::Break(e),
            None => {}
        }
        ControlFlow::Continue(())
    });
    match flow {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

pub(super) fn placeholder(name: &str) -> Expr {
    Expr::Identifier(Ident::new(name))
}

/// Registers an aggregate call; returns its index.
fn aggregate(f: &Function, name: &str, aggs: &mut Vec<Aggregate>) -> Result<usize, SqlError> {
    let at = f.name.span().start;
    let FunctionArguments::List(list) = &f.args else {
        return Err(SqlError::at(at, format!("{name} needs an argument")));
    };
    // MIN and MAX of distinct values are MIN and MAX.
    let distinct = list.duplicate_treatment == Some(DuplicateTreatment::Distinct) && !["MIN", "MAX"].contains(&name);
    if distinct && !["COUNT", "SUM", "AVG"].contains(&name) {
        return Err(SqlError::at(at, format!("not supported: {name}(DISTINCT ...)")));
    }
    if list.clauses.iter().any(|c| !matches!(c, FunctionArgumentClause::IgnoreOrRespectNulls(_))) {
        return Err(SqlError::at(at, format!("not supported: clauses inside {name}(...)")));
    }
    let argument = match &list.args[..] {
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if name == "COUNT" && !distinct => None,
        // COUNT(1) counts rows too.
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(_)))] if name == "COUNT" && !distinct => None,
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] => {
            if contains_aggregate(e) {
                return Err(SqlError::at(at, "an aggregate cannot take another aggregate"));
            }
            Some(e.clone())
        }
        _ => return Err(SqlError::at(at, format!("{name} takes one argument"))),
    };
    // `agg(x) FILTER (WHERE c)` is `agg(CASE WHEN c THEN x END)`: the rows
    // the filter drops give a null, which no aggregate counts.
    let argument = match f.filter.as_deref() {
        None => argument,
        Some(condition) => {
            if contains_aggregate(condition) {
                return Err(SqlError::at(at, "an aggregate's FILTER cannot hold another aggregate"));
            }
            let result = argument
                .unwrap_or_else(|| Expr::value(datafusion::sql::sqlparser::ast::Value::Number("1".into(), false)));
            Some(Expr::Case {
                case_token: AttachedToken::empty(),
                end_token: AttachedToken::empty(),
                operand: None,
                conditions: vec![CaseWhen { condition: condition.clone(), result }],
                else_result: None,
            })
        }
    };
    let text = format!(
        "{name}({}{})",
        if distinct { "DISTINCT " } else { "" },
        argument.as_ref().map_or("*".to_string(), |a| a.to_string())
    );
    if let Some(i) = aggs.iter().position(|a| a.text == text) {
        return Ok(i);
    }
    aggs.push(Aggregate { function: name.to_string(), argument, distinct, text });
    Ok(aggs.len() - 1)
}

/// The aggregating operator's specs of `aggs` (outputs `__agg0`, ...), and
/// the columns to compute first for arguments that are expressions
/// (`__in0`, ...).
pub(super) fn specs(aggs: &[Aggregate], rel: &Rel) -> Result<(Vec<Value>, Vec<Value>), SqlError> {
    let mut pre = Vec::new();
    let mut specs = Vec::new();
    for (i, a) in aggs.iter().enumerate() {
        let func = a.function.to_ascii_lowercase() + if a.distinct { "_distinct" } else { "" };
        let mut spec = json!({"fn": func, "as": format!("__agg{i}")});
        if let Some(arg) = &a.argument {
            let column = match plain_column(arg) {
                Some(c) => resolve_column(rel, &c.value, c.span.start)?,
                None => {
                    let n = format!("__in{i}");
                    pre.push(json!({"name": n, "expr": to_sql(arg, rel)?}));
                    n
                }
            };
            spec["column"] = json!(column);
        }
        specs.push(spec);
    }
    Ok((specs, pre))
}

/// Turns placeholders into expressions over the aggregation's output: window
/// bounds as timestamps (the window operator gives milliseconds), AVG of an
/// integer column truncated to an integer as Flink's is; other columns must
/// be grouping keys.
pub(super) fn finish(e: &mut Expr, keys: &[String], aggs: &[Aggregate], rel: &Rel) -> Result<(), SqlError> {
    resolve(e, |id| {
        let v = id.value.as_str();
        if let Some(w) = v.strip_prefix(WINDOW) {
            return Ok(parse_expr(match w {
                "window_start" => "to_timestamp_millis(\"window_start\")",
                "window_end" => "to_timestamp_millis(\"window_end\")",
                _ => "to_timestamp_millis(\"window_end\" - 1)",
            }));
        }
        if let Some(i) = v.strip_prefix(AGG) {
            let i: usize = i.parse().expect("the planner numbers aggregates");
            let column = quoted(&format!("__agg{i}"));
            let a = &aggs[i];
            let integer = a.result_type(rel).is_some_and(|t| t.is_integer());
            return Ok(parse_expr(&if a.function == "AVG" && integer {
                format!("CAST({column} AS BIGINT)")
            } else {
                column
            }));
        }
        match keys.iter().find(|k| *k == v).or_else(|| keys.iter().find(|k| k.eq_ignore_ascii_case(v))) {
            Some(k) => Ok(Expr::Identifier(quoted_ident(k))),
            None => {
                // An unknown name is reported as such, with the closest column.
                resolve_column(rel, v, id.span.start)?;
                Err(SqlError::at(id.span.start, format!("column `{v}` is neither grouped nor inside an aggregate")))
            }
        }
    })
}

/// A grouping key: a column of the input.
pub(super) fn key_column(rel: &Rel, g: &Expr) -> Result<(String, Option<SqlType>), SqlError> {
    match plain_column(g) {
        Some(c) => {
            let n = resolve_column(rel, &c.value, c.span.start)?;
            let ty = rel.column(&n).and_then(|c| c.ty.clone());
            Ok((n, ty))
        }
        None => Err(SqlError::at(
            g.span().start,
            "not supported: GROUP BY an expression; compute it in a subquery and group by its name",
        )),
    }
}

/// Whether `e` calls an aggregate function.
pub(super) fn contains_aggregate(e: &Expr) -> bool {
    let mut found = false;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(e, |x| {
        if let Expr::Function(f) = x {
            if f.over.is_none() && AGGREGATES.contains(&f.name.to_string().to_ascii_uppercase().as_str()) {
                found = true;
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    found
}

/// The keys of a `GROUP BY`: columns, or expressions computed before the
/// aggregation (`__key0`, ...) that the select list and `HAVING` read by
/// their text.
#[derive(Debug, Default)]
pub(super) struct GroupKeys {
    /// Each key's column and its type where known.
    pub(super) keys: Vec<(String, Option<SqlType>)>,
    /// `(expression text, its key column)`.
    computed: Vec<(String, String)>,
    /// The `map` columns computing the expression keys.
    pub(super) pre: Vec<Value>,
}

impl GroupKeys {
    /// Adds the key `g` of `rel`.
    pub(super) fn add(&mut self, rel: &Rel, g: &Expr) -> Result<(), SqlError> {
        if plain_column(g).is_some() {
            self.keys.push(key_column(rel, g)?);
            return Ok(());
        }
        let name = format!("__key{}", self.keys.len());
        self.pre.push(json!({"name": name, "expr": to_sql(g, rel)?}));
        self.computed.push((g.to_string(), name.clone()));
        self.keys.push((name, None));
        Ok(())
    }

    /// The expressions behind computed keys, for uids (empty without any,
    /// so the uids of queries grouped by columns stay as they were).
    pub(super) fn expressions(&self) -> String {
        if self.computed.is_empty() {
            String::new()
        } else {
            format!("|{:?}", self.computed)
        }
    }

    /// Replaces each key expression in `e` by its key column.
    pub(super) fn replace(&self, e: &mut Expr) {
        if self.computed.is_empty() {
            return;
        }
        let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(e, |x| {
            let text = x.to_string();
            if let Some((_, column)) = self.computed.iter().find(|(t, _)| *t == text) {
                *x = Expr::Identifier(Ident::new(column.clone()));
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
    }
}
