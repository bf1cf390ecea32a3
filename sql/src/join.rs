//! Joins in `FROM`. An interval join — equal keys and both event times
//! bounded against each other, e.g.
//! `ON o.id = s.order_id AND s.ts BETWEEN o.ts AND o.ts + INTERVAL '4' HOUR`
//! — becomes an `interval_join`; its output is append-only and keeps the
//! left input's event-time attribute. Qualified names (`o.id`) resolve
//! through each input's alias; a name both inputs have must be qualified.
//! A right column whose name the left side has already is renamed with a
//! number (`id` → `id0`), as Flink names them.

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, Ident, Join, JoinConstraint, JoinOperator, ObjectNamePart, Select, SelectItem,
    SelectItemQualifiedWildcardKind, Spanned, TableFactor, TableWithJoins,
};
use serde_json::json;
use weir_runtime::graph::Partitioning;

use crate::builder::{fingerprint, Col, Qualifier, Rel};
use crate::error::{did_you_mean, SqlError};
use crate::expr::{interval_or_zero_ms, span_start, to_sql};
use crate::query::Planner;

/// The kind of a join, as `interval_join` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Inner,
    Left,
    Right,
    Full,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Inner => "inner",
            Kind::Left => "left",
            Kind::Right => "right",
            Kind::Full => "full",
        }
    }
}

/// `right.time - left.time` must lie in `[lower, upper]` (milliseconds).
#[derive(Debug, Default)]
struct Bounds {
    lower: Option<i64>,
    upper: Option<i64>,
}

impl Bounds {
    /// Applies `d op c`, where `d` is `right.time - left.time`.
    fn apply(&mut self, op: &BinaryOperator, c: i64) {
        let lower = |b: &mut Self, v: i64| b.lower = Some(b.lower.map_or(v, |l| l.max(v)));
        let upper = |b: &mut Self, v: i64| b.upper = Some(b.upper.map_or(v, |u| u.min(v)));
        match op {
            BinaryOperator::GtEq => lower(self, c),
            BinaryOperator::Gt => lower(self, c.saturating_add(1)),
            BinaryOperator::LtEq => upper(self, c),
            BinaryOperator::Lt => upper(self, c.saturating_sub(1)),
            BinaryOperator::Eq => {
                lower(self, c);
                upper(self, c)
            }
            _ => {}
        }
    }
}

/// A column of one side of a join: the side (0 left, 1 right) and its name
/// in that side's relation.
pub(crate) type SideColumn = (usize, String);

impl Planner<'_> {
    /// A `FROM` with joins, planned left to right.
    pub(crate) fn joined(&mut self, from: &TableWithJoins) -> Result<Rel, SqlError> {
        let mut rel = self.factor(&from.relation)?;
        for j in &from.joins {
            rel = self.join(rel, j)?;
        }
        Ok(rel)
    }

    /// One input of a join, its columns under its alias (or table name).
    pub(crate) fn factor(&mut self, f: &TableFactor) -> Result<Rel, SqlError> {
        let (mut rel, name) = match f {
            TableFactor::Table { name, alias, args: None, version: None, .. } => {
                let rel = self.named(name)?;
                let table = name.0.last().and_then(ObjectNamePart::as_ident).map(|i| i.value.clone());
                (rel, alias.as_ref().map(|a| a.name.value.clone()).or(table).unwrap_or_default())
            }
            TableFactor::Table { version: Some(_), name, .. } => {
                return Err(SqlError::at(
                    name.span().start,
                    "FOR SYSTEM_TIME AS OF names the right side of a join: the versioned table",
                ))
            }
            TableFactor::Derived { subquery, alias, .. } => {
                let Some(alias) = alias else {
                    return Err(SqlError::at(
                        f.span().start,
                        "a subquery in a join needs a name: (SELECT ...) AS name",
                    ));
                };
                (self.query(subquery)?, alias.name.value.clone())
            }
            TableFactor::TableFunction { expr: Expr::Function(call), alias } => {
                let Some(alias) = alias else {
                    return Err(SqlError::at(
                        f.span().start,
                        "a window table function in a join needs a name: TABLE(TUMBLE(...)) AS name",
                    ));
                };
                let (rel, window) = self.window_function(call)?;
                let window = window.expect("a window function has a window");
                (self.window_table(rel, &window)?, alias.name.value.clone())
            }
            other => return Err(SqlError::at(other.span().start, format!("not supported: `{other}` in a join"))),
        };
        if rel.qualifiers.is_empty() {
            let columns = rel.names().map(|n| (n.to_string(), n.to_string())).collect();
            rel.qualifiers = vec![Qualifier { name, columns }];
        }
        Ok(rel)
    }

    fn join(&mut self, left: Rel, j: &Join) -> Result<Rel, SqlError> {
        let at = j.relation.span().start;
        let (kind, constraint) = match &j.join_operator {
            JoinOperator::Join(c) | JoinOperator::Inner(c) => (Kind::Inner, c),
            JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (Kind::Left, c),
            JoinOperator::Right(c) | JoinOperator::RightOuter(c) => (Kind::Right, c),
            JoinOperator::FullOuter(c) => (Kind::Full, c),
            JoinOperator::CrossJoin(_) => return Err(SqlError::at(at, "not supported: CROSS JOIN of two streams")),
            other => {
                let what = other_join_name(other);
                return Err(SqlError::at(at, format!("not supported: {what}")));
            }
        };
        let on = match constraint {
            JoinConstraint::On(e) => e,
            JoinConstraint::Using(_) => {
                return Err(SqlError::at(at, "not supported: JOIN ... USING; write ON a.k = b.k"));
            }
            JoinConstraint::Natural => return Err(SqlError::at(at, "not supported: NATURAL JOIN")),
            JoinConstraint::None => return Err(SqlError::at(at, "a join needs ON conditions")),
        };
        if let TableFactor::Table { version: Some(version), .. } = &j.relation {
            return self.temporal_join(left, j, kind, on, version);
        }
        let right = self.factor(&j.relation)?;
        let updating_input = left.changelog || right.changelog;
        for q in &right.qualifiers {
            if left.qualifiers.iter().any(|l| l.name == q.name) {
                return Err(SqlError::at(
                    at,
                    format!("`{}` names two inputs of the join; give one an alias (AS ...)", q.name),
                ));
            }
        }
        let sides = [&left, &right];
        let mut keys: Vec<(String, String)> = Vec::new();
        let mut bounds = Bounds::default();
        let mut rest: Vec<&Expr> = Vec::new();
        for c in conjuncts(on) {
            if !self.time_condition(&sides, c, &mut bounds)? && !key_condition(&sides, c, &mut keys)? {
                rest.push(c);
            }
        }
        if keys.is_empty() {
            return Err(SqlError::at(
                span_start(on),
                "not supported: a join without an equality of a column of each side (ON a.k = b.k)",
            ));
        }
        if updating_input && (kind != Kind::Inner || bounds.lower.is_some() || bounds.upper.is_some()) {
            return Err(SqlError::at(
                at,
                "not supported: an outer or interval join of an updating input (the result of a GROUP BY without a window, or of SELECT DISTINCT); an inner regular join takes one",
            ));
        }
        // Inputs that carry window bounds, joined on both, make a window join.
        let window_join = match (&left.window, &right.window) {
            (Some(l), Some(r)) => {
                let equal = |l: &String, r: &String| keys.iter().any(|(a, b)| a == l && b == r);
                match (equal(&l.start, &r.start), equal(&l.end, &r.end)) {
                    (true, true) => true,
                    (false, false) => false,
                    _ => {
                        return Err(SqlError::at(
                            span_start(on),
                            "a window join equates both window_start and window_end of its inputs",
                        ))
                    }
                }
            }
            _ => false,
        };
        if window_join && (bounds.lower.is_some() || bounds.upper.is_some()) {
            return Err(SqlError::at(
                span_start(on),
                "not supported: time bounds in a window join besides its windows",
            ));
        }
        // Both time bounds make an interval join; none, a regular join.
        let interval = match (bounds.lower, bounds.upper) {
            (Some(lower), Some(upper)) if lower > upper => {
                return Err(SqlError::at(span_start(on), "the time conditions of this join exclude every pair of rows"))
            }
            (Some(lower), Some(upper)) => Some((lower, upper)),
            (None, None) => None,
            _ => {
                return Err(SqlError::at(
                    span_start(on),
                    "not supported: a join bounding the event times on one side only; bound them on both for an interval join (b.ts BETWEEN a.ts - INTERVAL '5' MINUTE AND a.ts + INTERVAL '5' MINUTE), or not at all for a regular join",
                ))
            }
        };
        if !rest.is_empty() && kind != Kind::Inner {
            return Err(SqlError::at(
                span_start(rest[0]),
                "not supported: conditions besides keys and time bounds in the ON of an outer join; filter the input in a subquery",
            ));
        }
        let (names, right_names, qualifiers) = combine(&left, &right);
        let (left_time, right_time) =
            (left.rowtime.clone().unwrap_or_default(), right.rowtime.clone().unwrap_or_default());
        let (left_key, right_key): (Vec<String>, Vec<String>) = keys.into_iter().unzip();
        let (uid, rowtime, changelog) = match interval {
            // A window join pairs the rows of the same window as an interval
            // join of their window ends with no slack: a window's rows are
            // kept until the watermark closes it, and an outer side's rows
            // without a partner are padded then.
            None if window_join => {
                let end =
                    |r: &Rel| r.window.as_ref().map(|w| w.end.clone()).expect("a window join's inputs have windows");
                let (left_end, right_end) = (end(&left), end(&right));
                let meaning = format!("{left_key:?}|{right_key:?}|{}", kind.name());
                let base = format!("{}-{}.window-join-{}", left.origin, right.origin, fingerprint(&meaning));
                let config = json!({
                    "left_key": left_key, "right_key": right_key,
                    "left_time": left_end, "right_time": right_end,
                    "lower": 0, "upper": 0, "join_type": kind.name(), "names": names,
                });
                (self.b.add(&base, "interval_join", config, 0), None, false)
            }
            Some((lower, upper)) => {
                let meaning =
                    format!("{left_key:?}|{right_key:?}|{left_time}|{right_time}|{lower}|{upper}|{}", kind.name());
                let base = format!("{}-{}.interval-join-{}", left.origin, right.origin, fingerprint(&meaning));
                let config = json!({
                    "left_key": left_key, "right_key": right_key,
                    "left_time": left_time, "right_time": right_time,
                    "lower": lower, "upper": upper, "join_type": kind.name(), "names": names,
                });
                (self.b.add(&base, "interval_join", config, 0), left.rowtime.clone(), false)
            }
            None => {
                // A regular join: its rows lose their event-time attribute,
                // and an outer one's result is updating.
                let meaning = format!(
                    "{left_key:?}|{right_key:?}|{}{}",
                    kind.name(),
                    match (left.changelog, right.changelog) {
                        (false, false) => "",
                        (true, false) => "|updating-left",
                        (false, true) => "|updating-right",
                        (true, true) => "|updating",
                    }
                );
                let base = format!("{}-{}.join-{}", left.origin, right.origin, fingerprint(&meaning));
                let mut config =
                    json!({"left_key": left_key, "right_key": right_key, "join_type": kind.name(), "names": names});
                // An outer join, or one of an updating input, is updating.
                let outer = kind != Kind::Inner || updating_input;
                if outer {
                    config["op_column"] = json!(crate::builder::OP);
                }
                for (side, input) in [("left_op_column", &left), ("right_op_column", &right)] {
                    if input.changelog {
                        config[side] = json!(crate::builder::OP);
                    }
                }
                if let Some(ttl) = self.settings.state_ttl {
                    config["state_ttl"] = json!(format!("{}ms", ttl.as_millis()));
                }
                (self.b.add(&base, "regular_join", config, 0), None, outer)
            }
        };
        self.b.connect_input(&left.uid, &uid, 0, Partitioning::Hash, left_key);
        self.b.connect_input(&right.uid, &uid, 1, Partitioning::Hash, right_key);
        let mut columns = left.columns.clone();
        columns.extend(right.columns.iter().zip(&right_names).map(|(c, n)| Col { name: n.clone(), ty: c.ty.clone() }));
        let out = Rel {
            uid,
            columns,
            rowtime,
            proctime: None,
            origin: format!("{}-{}", left.origin, right.origin),
            qualifiers,
            changelog,
            window: None,
        };
        self.filter_rest(out, &rest)
    }

    /// The conditions of an inner join's `ON` besides its keys and bounds,
    /// as a filter after it.
    pub(crate) fn filter_rest(&mut self, mut out: Rel, rest: &[&Expr]) -> Result<Rel, SqlError> {
        let Some((first, others)) = rest.split_first() else { return Ok(out) };
        let mut predicate = (*first).clone();
        for r in others {
            predicate =
                Expr::BinaryOp { left: Box::new(predicate), op: BinaryOperator::And, right: Box::new((*r).clone()) };
        }
        let predicate = to_sql(&qualify(&predicate, &out)?, &out)?;
        out.uid =
            self.b.then(&out, &format!("{}.join-filter", self.context), "filter", json!({"predicate": predicate}));
        Ok(out)
    }

    /// `a.ts op b.ts [+|- INTERVAL]`, or `x BETWEEN y AND z` of such terms,
    /// over the event-time attributes of both sides: a time bound.
    fn time_condition(&self, sides: &[&Rel; 2], c: &Expr, bounds: &mut Bounds) -> Result<bool, SqlError> {
        match c {
            Expr::Nested(inner) => self.time_condition(sides, inner, bounds),
            Expr::Between { expr, negated: false, low, high } => {
                let mut b = Bounds::default();
                let low = time_bound(sides, expr, &BinaryOperator::GtEq, low, &mut b)?;
                let high = time_bound(sides, expr, &BinaryOperator::LtEq, high, &mut b)?;
                if low && high {
                    bounds.apply(&BinaryOperator::GtEq, b.lower.expect("set"));
                    bounds.apply(&BinaryOperator::LtEq, b.upper.expect("set"));
                }
                Ok(low && high)
            }
            Expr::BinaryOp { left, op, right } => time_bound(sides, left, op, right, bounds),
            _ => Ok(false),
        }
    }
}

/// The names of a join's output (the left's, then the right's, numbered
/// when the left has the name already), the right's among them, and the
/// inputs' qualifiers over them.
pub(crate) fn combine(left: &Rel, right: &Rel) -> (Vec<String>, Vec<String>, Vec<Qualifier>) {
    let mut names: Vec<String> = left.names().map(str::to_string).collect();
    let mut right_names = Vec::new();
    for c in right.names() {
        let mut n = c.to_string();
        let mut i = 0;
        while names.contains(&n) {
            n = format!("{c}{i}");
            i += 1;
        }
        names.push(n.clone());
        right_names.push(n);
    }
    let renamed = |c: &str| right.names().position(|n| n == c).map(|i| right_names[i].clone()).unwrap_or_default();
    let mut qualifiers = left.qualifiers.clone();
    qualifiers.extend(right.qualifiers.iter().map(|q| Qualifier {
        name: q.name.clone(),
        columns: q.columns.iter().map(|(input, here)| (input.clone(), renamed(here))).collect(),
    }));
    (names, right_names, qualifiers)
}

/// `a op b` when both are event-time terms of opposite sides.
fn time_bound(
    sides: &[&Rel; 2],
    a: &Expr,
    op: &BinaryOperator,
    b: &Expr,
    bounds: &mut Bounds,
) -> Result<bool, SqlError> {
    if !matches!(
        op,
        BinaryOperator::Gt | BinaryOperator::GtEq | BinaryOperator::Lt | BinaryOperator::LtEq | BinaryOperator::Eq
    ) {
        return Ok(false);
    }
    let (Some((ca, oa)), Some((cb, ob))) = (time_term(a)?, time_term(b)?) else { return Ok(false) };
    let (Some((sa, na)), Some((sb, nb))) = (side_column(sides, ca)?, side_column(sides, cb)?) else {
        return Ok(false);
    };
    let is_time = |s: usize, n: &str| sides[s].rowtime.as_deref() == Some(n);
    if sa == sb || !is_time(sa, &na) || !is_time(sb, &nb) {
        return Ok(false);
    }
    // a + oa op b + ob. With d = right - left: a right term gives
    // d op ob - oa; a left one gives -d op ob - oa, i.e. d op' oa - ob.
    if sa == 1 {
        bounds.apply(op, ob - oa);
    } else {
        let flipped = match op {
            BinaryOperator::Gt => BinaryOperator::Lt,
            BinaryOperator::GtEq => BinaryOperator::LtEq,
            BinaryOperator::Lt => BinaryOperator::Gt,
            BinaryOperator::LtEq => BinaryOperator::GtEq,
            other => other.clone(),
        };
        bounds.apply(&flipped, oa - ob);
    }
    Ok(true)
}

/// `column`, `column + INTERVAL ...` or `column - INTERVAL ...`: the column
/// and the offset in milliseconds.
fn time_term(e: &Expr) -> Result<Option<(&Expr, i64)>, SqlError> {
    Ok(match e {
        Expr::Nested(inner) => time_term(inner)?,
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => Some((e, 0)),
        Expr::BinaryOp { left, op: op @ (BinaryOperator::Plus | BinaryOperator::Minus), right }
            if matches!(right.as_ref(), Expr::Interval(_)) =>
        {
            let Some((c, o)) = time_term(left)? else { return Ok(None) };
            let ms = i64::try_from(interval_or_zero_ms(right)?).unwrap_or(i64::MAX);
            Some((c, if *op == BinaryOperator::Plus { o + ms } else { o - ms }))
        }
        _ => None,
    })
}

/// `a.k = b.k` over a column of each side: a key pair (left, right).
pub(crate) fn key_condition(sides: &[&Rel; 2], c: &Expr, keys: &mut Vec<(String, String)>) -> Result<bool, SqlError> {
    let Expr::BinaryOp { left, op: BinaryOperator::Eq, right } = strip(c) else { return Ok(false) };
    let (Some((sa, na)), Some((sb, nb))) = (side_column(sides, strip(left))?, side_column(sides, strip(right))?) else {
        return Ok(false);
    };
    match (sa, sb) {
        (0, 1) => keys.push((na, nb)),
        (1, 0) => keys.push((nb, na)),
        _ => return Ok(false),
    }
    Ok(true)
}

fn strip(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(inner) => strip(inner),
        other => other,
    }
}

/// Which side a column reference belongs to, and its name there; `None`
/// when `e` is not a column reference.
pub(crate) fn side_column(sides: &[&Rel; 2], e: &Expr) -> Result<Option<SideColumn>, SqlError> {
    match e {
        Expr::Identifier(id) => {
            let found: Vec<usize> = (0..2).filter(|&s| find(sides[s], &id.value).is_some()).collect();
            match found[..] {
                [s] => Ok(Some((s, find(sides[s], &id.value).expect("found")))),
                [_, _] => Err(ambiguous(id)),
                _ => Err(unknown_column(id, sides.iter().flat_map(|r| r.names()))),
            }
        }
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
            let (q, id) = (&parts[parts.len() - 2], &parts[parts.len() - 1]);
            for (s, rel) in sides.iter().enumerate() {
                if let Some(qualifier) = rel.qualifiers.iter().find(|x| x.name == q.value) {
                    return match column_of(qualifier, &id.value) {
                        Some(here) => Ok(Some((s, here))),
                        None => Err(unknown_column(id, qualifier.columns.iter().map(|c| c.0.as_str()))),
                    };
                }
            }
            Err(unknown_input(q, sides.iter().flat_map(|r| r.qualifiers.iter().map(|x| x.name.as_str()))))
        }
        _ => Ok(None),
    }
}

/// `name` among a relation's columns: exactly, or ignoring case when only one matches.
fn find(rel: &Rel, name: &str) -> Option<String> {
    if rel.column(name).is_some() {
        return Some(name.to_string());
    }
    let mut folded = rel.names().filter(|c| c.eq_ignore_ascii_case(name));
    match (folded.next(), folded.next()) {
        (Some(only), None) => Some(only.to_string()),
        _ => None,
    }
}

fn column_of(q: &Qualifier, name: &str) -> Option<String> {
    q.columns
        .iter()
        .find(|c| c.0 == name)
        .or_else(|| {
            let mut folded = q.columns.iter().filter(|c| c.0.eq_ignore_ascii_case(name));
            match (folded.next(), folded.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        })
        .map(|c| c.1.clone())
}

fn ambiguous(id: &Ident) -> SqlError {
    SqlError::at(
        id.span.start,
        format!("column `{}` is ambiguous: both inputs of the join have it; qualify it (alias.{0})", id.value),
    )
}

fn unknown_column<'a>(id: &Ident, names: impl Iterator<Item = &'a str>) -> SqlError {
    let names: Vec<&str> = names.filter(|n| !n.starts_with("__")).collect();
    SqlError::at(
        id.span.start,
        format!(
            "unknown column `{}`{}; the inputs have {}",
            id.value,
            did_you_mean(&id.value, names.iter().copied()),
            names.join(", ")
        ),
    )
}

fn unknown_input<'a>(q: &Ident, names: impl Iterator<Item = &'a str>) -> SqlError {
    let names: Vec<&str> = names.collect();
    SqlError::at(
        q.span.start,
        format!(
            "no input of the join is called `{}`{}; they are {}",
            q.value,
            did_you_mean(&q.value, names.iter().copied()),
            names.join(", ")
        ),
    )
}

/// The conditions of `a AND b AND ...`.
pub(crate) fn conjuncts(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            let mut v = conjuncts(left);
            v.extend(conjuncts(right));
            v
        }
        Expr::Nested(inner) if matches!(inner.as_ref(), Expr::BinaryOp { op: BinaryOperator::And, .. }) => {
            conjuncts(inner)
        }
        other => vec![other],
    }
}

/// `e` with its column references made plain names of `rel` (a join's
/// output): `b.id` → `id0`; an unqualified name both inputs have is refused.
pub(crate) fn qualify(e: &Expr, rel: &Rel) -> Result<Expr, SqlError> {
    let mut e = e.clone();
    let mut error = None;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(&mut e, |x| {
        let replaced = match x {
            Expr::Identifier(id) => {
                let holders = rel.qualifiers.iter().filter(|q| q.columns.iter().any(|c| c.0 == id.value)).count();
                if holders > 1 && rel.column(&id.value).is_some() {
                    Err(ambiguous(id))
                } else {
                    Ok(None)
                }
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let (q, id) = (&parts[parts.len() - 2], &parts[parts.len() - 1]);
                match rel.qualifiers.iter().find(|x| x.name == q.value) {
                    Some(qualifier) => match column_of(qualifier, &id.value) {
                        Some(here) => Ok(Some(Expr::Identifier(Ident::new(here)))),
                        None => Err(unknown_column(id, qualifier.columns.iter().map(|c| c.0.as_str()))),
                    },
                    None => Err(unknown_input(q, rel.qualifiers.iter().map(|x| x.name.as_str()))),
                }
            }
            _ => Ok(None),
        };
        match replaced {
            Ok(Some(new)) => *x = new,
            Ok(None) => {}
            Err(err) => {
                error = Some(err);
                return std::ops::ControlFlow::Break(());
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    match error {
        Some(err) => Err(err),
        None => Ok(e),
    }
}

/// A `SELECT` over a join with its names made plain (see [`qualify`]);
/// `alias.*` becomes that input's columns.
pub(crate) fn qualify_select(s: &Select, rel: &Rel) -> Result<Select, SqlError> {
    let mut s = s.clone();
    let mut items = Vec::new();
    for item in std::mem::take(&mut s.projection) {
        match item {
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(name), _) => {
                let q = name.0.last().and_then(ObjectNamePart::as_ident).cloned().unwrap_or_else(|| Ident::new(""));
                let Some(qualifier) = rel.qualifiers.iter().find(|x| x.name == q.value) else {
                    return Err(unknown_input(&q, rel.qualifiers.iter().map(|x| x.name.as_str())));
                };
                for (_, here) in &qualifier.columns {
                    items.push(SelectItem::UnnamedExpr(Expr::Identifier(Ident::new(here))));
                }
            }
            SelectItem::UnnamedExpr(e) => {
                // `b.id` keeps its own name (`id`), not the join's (`id0`).
                let name = match &e {
                    Expr::CompoundIdentifier(parts) => parts.last().cloned(),
                    _ => None,
                };
                let q = qualify(&e, rel)?;
                // Unless an earlier item has the name: then it stays the
                // join's (`b.dateTime, a.dateTime` give `dateTime, dateTime0`).
                let taken = |n: &Ident| {
                    items.iter().any(|i| match i {
                        SelectItem::ExprWithAlias { alias, .. } => alias.value == n.value,
                        SelectItem::UnnamedExpr(Expr::Identifier(id)) => id.value == n.value,
                        _ => false,
                    })
                };
                let item = match (name, &q) {
                    (Some(n), Expr::Identifier(here)) if here.value != n.value && !taken(&n) => {
                        SelectItem::ExprWithAlias { expr: q, alias: n }
                    }
                    _ => SelectItem::UnnamedExpr(q),
                };
                items.push(item);
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                items.push(SelectItem::ExprWithAlias { expr: qualify(&expr, rel)?, alias })
            }
            other => items.push(other),
        }
    }
    s.projection = items;
    if let Some(w) = &s.selection {
        s.selection = Some(qualify(w, rel)?);
    }
    if let Some(h) = &s.having {
        s.having = Some(qualify(h, rel)?);
    }
    if let datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(exprs, _) = &mut s.group_by {
        for g in exprs.iter_mut() {
            *g = qualify(g, rel)?;
        }
    }
    Ok(s)
}

fn other_join_name(op: &JoinOperator) -> &'static str {
    match op {
        JoinOperator::Semi(_) | JoinOperator::LeftSemi(_) | JoinOperator::RightSemi(_) => "SEMI JOIN",
        JoinOperator::Anti(_) | JoinOperator::LeftAnti(_) | JoinOperator::RightAnti(_) => "ANTI JOIN",
        JoinOperator::AsOf { .. } => "ASOF JOIN (Flink writes FOR SYSTEM_TIME AS OF)",
        JoinOperator::CrossApply | JoinOperator::OuterApply => "APPLY",
        _ => "this kind of join",
    }
}
