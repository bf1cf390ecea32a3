//! Expressions of a query, made ready for Weir's expression operators
//! (`map`, `project`, `filter`, which compile them with DataFusion): column
//! names are checked and quoted, and Flink's functions that DataFusion
//! names differently are renamed.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName, ObjectNamePart,
    Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Location;

use crate::builder::Rel;
use crate::error::{did_you_mean, SqlError};
use crate::types::SqlType;

/// Resolves `name` among the columns of `rel`: exactly, or ignoring case
/// when that finds exactly one.
pub fn resolve_column(rel: &Rel, name: &str, at: Location) -> Result<String, SqlError> {
    if rel.column(name).is_some() {
        return Ok(name.to_string());
    }
    let mut folded = rel.names().filter(|c| c.eq_ignore_ascii_case(name));
    if let (Some(only), None) = (folded.next(), folded.next()) {
        return Ok(only.to_string());
    }
    let names: Vec<&str> = rel.names().filter(|n| !n.starts_with("__")).collect();
    Err(SqlError::at(
        at,
        format!(
            "unknown column `{name}`{}; the input has {}",
            did_you_mean(name, names.iter().copied()),
            names.join(", ")
        ),
    ))
}

/// The expression as DataFusion SQL over the columns of `rel`.
pub fn to_sql(expr: &Expr, rel: &Rel) -> Result<String, SqlError> {
    let mut e = expr.clone();
    resolve(&mut e, |id| resolve_column(rel, &id.value, id.span.start).map(|n| Expr::Identifier(quoted_ident(&n))))?;
    Ok(e.to_string())
}

/// A column reference quoted for DataFusion.
pub fn quoted_ident(name: &str) -> Ident {
    Ident::with_quote('"', name)
}

/// Walks `expr` bottom-up: column references (a qualifier such as `t.` is
/// dropped; Weir's queries read one relation) are replaced by what `column`
/// returns; Flink's functions are renamed; constructs the runtime cannot
/// evaluate are refused.
pub fn resolve(expr: &mut Expr, mut column: impl FnMut(&Ident) -> Result<Expr, SqlError>) -> Result<(), SqlError> {
    let flow = visit_expressions_mut(expr, |e| {
        let replaced = match e {
            Expr::Identifier(id) => Some(column(id)),
            Expr::CompoundIdentifier(parts) => Some(compound(parts, &mut column)),
            Expr::Subquery(_) | Expr::InSubquery { .. } | Expr::Exists { .. } => {
                Some(Err(SqlError::at(span_start(e), "not supported: subqueries inside expressions")))
            }
            Expr::Function(f) => {
                if f.over.is_some() {
                    return ControlFlow::Break(SqlError::at(
                        name_start(&f.name),
                        "not supported: OVER windows (window Top-N and OVER aggregations are not planned yet)",
                    ));
                }
                flink_function(f).map(Ok)
            }
            _ => None,
        };
        match replaced {
            Some(Ok(new)) => *e = new,
            Some(Err(err)) => return ControlFlow::Break(err),
            None => {}
        }
        ControlFlow::Continue(())
    });
    match flow {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// `s.f` (field `f` of the `ROW` column `s`, also `t.s.f`) or `t.c` (column
/// `c` of the input `t`): the first part that is a column is read, and the
/// parts after it are fields of it (`get_field`); when none but the last is
/// a column, the qualifiers are dropped.
fn compound(parts: &[Ident], column: &mut impl FnMut(&Ident) -> Result<Expr, SqlError>) -> Result<Expr, SqlError> {
    let last = parts.last().expect("a compound identifier has parts");
    for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
        if let Ok(mut e) = column(part) {
            for field in &parts[i + 1..] {
                e = parse_expr(&format!("get_field({e}, '{}')", field.value.replace('\'', "''")));
            }
            return Ok(e);
        }
    }
    column(last)
}

/// The name and type of a `ROW` field read as `s.f` (or `t.s.f`) from
/// `rel`, when the identifier reads one.
pub fn struct_field(rel: &Rel, parts: &[Ident]) -> Option<(String, Option<SqlType>)> {
    for (i, part) in parts[..parts.len().saturating_sub(1)].iter().enumerate() {
        let Ok(name) = resolve_column(rel, &part.value, part.span.start) else { continue };
        let mut ty = rel.column(&name).and_then(|c| c.ty.clone());
        let mut field_name = name;
        for f in &parts[i + 1..] {
            let (n, t) = match ty.as_ref().and_then(|t| t.field(&f.value)) {
                Some((n, t)) => (n.to_string(), Some(t.clone())),
                None => (f.value.clone(), None),
            };
            field_name = n;
            ty = t;
        }
        return Some((field_name, ty));
    }
    None
}

/// Renames Flink's functions that DataFusion knows under another name, or
/// gives the expression that computes one DataFusion lacks (the runtime
/// adds others: `REGEXP_EXTRACT`, `SPLIT_INDEX`).
fn flink_function(f: &mut datafusion::sql::sqlparser::ast::Function) -> Option<Expr> {
    let name = f.name.to_string().to_ascii_uppercase();
    let FunctionArguments::List(list) = &mut f.args else { return None };
    let args: Vec<String> = list.args.iter().map(ToString::to_string).collect();
    // MOD(a, b): the remainder, of the dividend's sign as in Java.
    if let ("MOD", [a, b]) = (name.as_str(), &args[..]) {
        return Some(parse_expr(&format!("(({a}) % ({b}))")));
    }
    match name.as_str() {
        // TO_TIMESTAMP_LTZ(epoch, precision): 3 is milliseconds, 0 seconds.
        "TO_TIMESTAMP_LTZ" if list.args.len() == 2 => {
            let seconds = matches!(&list.args[1], FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) if v.value == Value::Number("0".into(), false));
            list.args.truncate(1);
            f.name = function_name(if seconds { "to_timestamp_seconds" } else { "to_timestamp_millis" });
        }
        // DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm:ss'): Java's pattern letters.
        "DATE_FORMAT" if list.args.len() == 2 => {
            if let FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) = &mut list.args[1] {
                if let Value::SingleQuotedString(p) = &v.value {
                    v.value = Value::SingleQuotedString(java_pattern(p));
                }
            }
            f.name = function_name("to_char");
        }
        _ => {}
    }
    None
}

fn function_name(name: &str) -> ObjectName {
    ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))])
}

/// A Java date pattern (Flink's `DATE_FORMAT`) as a chrono format.
pub(crate) fn java_pattern(p: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let run = chars[i..].iter().take_while(|&&d| d == c).count();
        let spec = match (c, run) {
            ('y', 4) | ('y', 1) => Some("%Y"),
            ('y', 2) => Some("%y"),
            ('M', 2) => Some("%m"),
            ('M', 1) => Some("%-m"),
            ('d', 2) => Some("%d"),
            ('d', 1) => Some("%-d"),
            ('H', 2) => Some("%H"),
            ('H', 1) => Some("%-H"),
            ('m', 2) => Some("%M"),
            ('s', 2) => Some("%S"),
            ('S', 3) => Some("%3f"),
            _ => None,
        };
        match spec {
            Some(s) => out.push_str(s),
            None => out.extend(std::iter::repeat_n(c, run)),
        }
        i += run;
    }
    out
}

/// Parses an expression written by the planner.
pub fn parse_expr(sql: &str) -> Expr {
    let dialect = GenericDialect {};
    Parser::new(&dialect)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .unwrap_or_else(|e| panic!("the planner wrote an invalid expression `{sql}`: {e}"))
}

pub(crate) fn span_start(e: &Expr) -> Location {
    use datafusion::sql::sqlparser::ast::Spanned;
    e.span().start
}

fn name_start(n: &ObjectName) -> Location {
    use datafusion::sql::sqlparser::ast::Spanned;
    n.span().start
}

/// An `INTERVAL 'n' UNIT` literal in milliseconds, at least one.
pub fn interval_ms(e: &Expr) -> Result<u64, SqlError> {
    let ms = interval_or_zero_ms(e)?;
    if ms == 0 {
        return Err(SqlError::at(
            span_start(e),
            format!("an interval must be a positive whole number of milliseconds, not `{e}`"),
        ));
    }
    Ok(ms)
}

/// An `INTERVAL 'n' UNIT` literal in milliseconds, zero allowed.
pub fn interval_or_zero_ms(e: &Expr) -> Result<u64, SqlError> {
    use datafusion::sql::sqlparser::ast::DateTimeField as F;
    let at = span_start(e);
    let bad = || SqlError::at(at, format!("expected an interval such as INTERVAL '10' SECOND, found `{e}`"));
    let Expr::Interval(iv) = e else { return Err(bad()) };
    let Expr::Value(v) = iv.value.as_ref() else { return Err(bad()) };
    let text = match &v.value {
        Value::SingleQuotedString(s) | Value::Number(s, _) => s.trim().to_string(),
        _ => return Err(bad()),
    };
    let (number, unit) = match &iv.leading_field {
        Some(f) => (text.as_str(), f.clone()),
        None => {
            // INTERVAL '10 seconds'
            let mut parts = text.split_whitespace();
            let n = parts.next().ok_or_else(bad)?;
            let u = parts.next().unwrap_or("second").to_ascii_lowercase();
            let f = match u.trim_end_matches('s') {
                "millisecond" => F::Millisecond,
                "second" => F::Second,
                "minute" => F::Minute,
                "hour" => F::Hour,
                "day" => F::Day,
                _ => return Err(bad()),
            };
            (n, f)
        }
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    let unit_ms = match unit {
        F::Millisecond | F::Milliseconds => 1.0,
        F::Second | F::Seconds => 1_000.0,
        F::Minute | F::Minutes => 60_000.0,
        F::Hour | F::Hours => 3_600_000.0,
        F::Day | F::Days => 86_400_000.0,
        other => {
            return Err(SqlError::at(
                at,
                format!("not supported: intervals in {other} (their length varies); use DAY or shorter"),
            ))
        }
    };
    let ms = n * unit_ms;
    if !(ms >= 0.0 && ms.fract() == 0.0) {
        return Err(SqlError::at(
            at,
            format!("an interval must be a positive whole number of milliseconds, not `{e}`"),
        ));
    }
    Ok(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::Col;

    fn rel() -> Rel {
        Rel {
            uid: "t".into(),
            columns: vec![Col::typed("Price", SqlType::BigInt), Col::typed("name", SqlType::String)],
            rowtime: None,
            proctime: None,
            origin: "t".into(),
            qualifiers: Vec::new(),
            changelog: false,
            window: None,
        }
    }

    #[test]
    fn columns_are_checked_quoted_and_flink_functions_renamed() {
        let e = parse_expr("t.price * 2 > 10 AND UPPER(name) = 'X'");
        assert_eq!(to_sql(&e, &rel()).unwrap(), "\"Price\" * 2 > 10 AND UPPER(\"name\") = 'X'");
        let e = parse_expr("DATE_FORMAT(TO_TIMESTAMP_LTZ(Price, 3), 'yyyy-MM-dd HH:mm:ss.SSS')");
        assert_eq!(to_sql(&e, &rel()).unwrap(), "to_char(to_timestamp_millis(\"Price\"), '%Y-%m-%d %H:%M:%S.%3f')");
        let e = parse_expr("MOD(Price, 123) = 0");
        assert_eq!(to_sql(&e, &rel()).unwrap(), "((\"Price\") % (123)) = 0");
        let err = to_sql(&parse_expr("nmae || 'x'"), &rel()).unwrap_err();
        assert!(err.message.contains("unknown column `nmae` (did you mean `name`?)"), "{err}");
        let err = to_sql(&parse_expr("ROW_NUMBER() OVER (ORDER BY name)"), &rel()).unwrap_err();
        assert!(err.message.starts_with("not supported: OVER"), "{err}");
    }

    #[test]
    fn fields_of_row_columns_are_read_with_get_field() {
        let mut r = rel();
        r.columns.push(Col::typed(
            "person",
            SqlType::Row(vec![("id".into(), SqlType::BigInt), ("dateTime".into(), SqlType::Timestamp)]),
        ));
        let e = parse_expr("person.id + 1 > t.Price AND datagen.person.dateTime IS NOT NULL");
        assert_eq!(
            to_sql(&e, &r).unwrap(),
            "get_field(\"person\", 'id') + 1 > \"Price\" AND get_field(\"person\", 'dateTime') IS NOT NULL"
        );
        let parts = |s: &str| match parse_expr(s) {
            Expr::CompoundIdentifier(p) => p,
            other => panic!("{other:?}"),
        };
        assert_eq!(struct_field(&r, &parts("person.datetime")), Some(("dateTime".into(), Some(SqlType::Timestamp))));
        assert_eq!(struct_field(&r, &parts("t.name")), None);
        let err = to_sql(&parse_expr("t.nope"), &r).unwrap_err();
        assert!(err.message.contains("unknown column `nope`"), "{err}");
    }

    #[test]
    fn intervals_in_milliseconds() {
        assert_eq!(interval_ms(&parse_expr("INTERVAL '10' SECOND")).unwrap(), 10_000);
        assert_eq!(interval_ms(&parse_expr("INTERVAL '1' MINUTE")).unwrap(), 60_000);
        assert_eq!(interval_ms(&parse_expr("INTERVAL '0.5' SECOND")).unwrap(), 500);
        assert_eq!(interval_ms(&parse_expr("INTERVAL '2 hours'")).unwrap(), 7_200_000);
        assert!(interval_ms(&parse_expr("INTERVAL '1' MONTH")).unwrap_err().message.contains("not supported"));
        assert!(interval_ms(&parse_expr("5")).is_err());
    }
}
