//! Window functions: the table-valued `TUMBLE`, `HOP`, `CUMULATE` and
//! `SESSION` of a `FROM`, and the legacy group windows of a `GROUP BY`, as
//! the window operator's spec.

use super::*;

impl Planner<'_> {
    /// `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size))`, `HOP(..., slide, size)`,
    /// `SESSION(..., gap)`, positional or named (`DATA =>`, `TIMECOL =>`, ...).
    pub(crate) fn window_function(&mut self, f: &Function) -> Result<(Rel, Option<WindowFn>), SqlError> {
        let at = f.name.span().start;
        let name = f.name.to_string().to_ascii_uppercase();
        let FunctionArguments::List(list) = &f.args else {
            return Err(SqlError::at(at, format!("{name} needs arguments")));
        };
        let (names, params): (&[&str], usize) = match name.as_str() {
            "TUMBLE" => (&["DATA", "TIMECOL", "SIZE", "OFFSET"], 3),
            "HOP" => (&["DATA", "TIMECOL", "SLIDE", "SIZE", "OFFSET"], 4),
            "SESSION" => (&["DATA", "TIMECOL", "GAP"], 3),
            "CUMULATE" => (&["DATA", "TIMECOL", "STEP", "SIZE", "OFFSET"], 4),
            other => {
                return Err(SqlError::at(
                    at,
                    format!(
                        "not supported: the table function {other} (Weir SQL has TUMBLE, HOP, CUMULATE and SESSION)"
                    ),
                ))
            }
        };
        let mut args: Vec<Option<&Expr>> = vec![None; names.len()];
        for (i, a) in list.args.iter().enumerate() {
            let (slot, e) = match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => (i, e),
                FunctionArg::Named { name: n, arg: FunctionArgExpr::Expr(e), .. } => {
                    match names.iter().position(|x| x.eq_ignore_ascii_case(&n.value)) {
                        Some(slot) => (slot, e),
                        None => {
                            return Err(SqlError::at(
                                n.span.start,
                                format!("{name} has no parameter {}; it takes {}", n.value, names.join(", ")),
                            ))
                        }
                    }
                }
                _ => return Err(SqlError::at(at, format!("{name}: unexpected argument"))),
            };
            if slot >= names.len() {
                return Err(SqlError::at(e.span().start, format!("{name} takes at most {} arguments", names.len())));
            }
            args[slot] = Some(e);
        }
        let missing = names[..params].iter().zip(&args).find(|(_, a)| a.is_none()).map(|(n, _)| *n);
        if let Some(m) = missing {
            return Err(SqlError::at(at, format!("{name} needs its {m} argument")));
        }
        let data = args[0].expect("checked");
        let rel = match data {
            Expr::Identifier(id) => self.named_ident(id)?,
            Expr::CompoundIdentifier(parts) => self.named_ident(parts.last().expect("non-empty"))?,
            other => return Err(SqlError::at(other.span().start, format!("{name} takes a table: TABLE name"))),
        };
        if rel.changelog {
            return Err(SqlError::at(
                data.span().start,
                format!("not supported: {name} over an updating input (the result of a GROUP BY without a window, or of SELECT DISTINCT)"),
            ));
        }
        let time = args[1].expect("checked");
        let column = match time {
            Expr::Function(d) if d.name.to_string().eq_ignore_ascii_case("DESCRIPTOR") => match &d.args {
                FunctionArguments::List(l) if l.args.len() == 1 => match &l.args[0] {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(id))) => {
                        resolve_column(&rel, &id.value, id.span.start)?
                    }
                    _ => return Err(SqlError::at(d.name.span().start, "DESCRIPTOR takes one column")),
                },
                _ => return Err(SqlError::at(d.name.span().start, "DESCRIPTOR takes one column")),
            },
            other => {
                return Err(SqlError::at(
                    other.span().start,
                    format!("{name}'s time column is written DESCRIPTOR(column)"),
                ))
            }
        };
        let processing = time_attribute(&rel, &column).map_err(|e| SqlError::at(time.span().start, e))?;
        let arg = |i: usize| interval_ms(args[i].expect("checked"));
        let (mut spec, align) = match name.as_str() {
            "TUMBLE" => {
                let size = arg(2)?;
                (json!({"type": "tumbling", "size": ms(size)}), size)
            }
            "HOP" => {
                let slide = arg(2)?;
                (json!({"type": "sliding", "slide": ms(slide), "size": ms(arg(3)?)}), slide)
            }
            "CUMULATE" => {
                let (step, size) = (arg(2)?, arg(3)?);
                if size % step != 0 {
                    return Err(SqlError::at(
                        args[3].expect("checked").span().start,
                        format!("a CUMULATE window's size ({size} ms) must be a whole number of steps ({step} ms)"),
                    ));
                }
                (json!({"type": "cumulate", "step": ms(step), "size": ms(size)}), size)
            }
            _ => (json!({"type": "session", "gap": ms(arg(2)?)}), 0),
        };
        // An offset shifts where windows start; it matters modulo the
        // alignment, so a negative one is its positive equivalent.
        if let Some(Some(o)) = names.iter().position(|n| *n == "OFFSET").map(|i| args[i]) {
            let shift = offset_ms(o)?.rem_euclid(align as i64);
            if shift != 0 {
                spec["offset"] = json!(ms(shift as u64));
            }
        }
        Ok((rel, Some(WindowFn { spec, column, at, processing })))
    }

    /// `TUMBLE(ts, size)`, `HOP(ts, slide, size)`, `SESSION(ts, gap)` in a GROUP BY.
    pub(super) fn legacy_spec(&self, f: &Function, rel: &Rel) -> Result<WindowFn, SqlError> {
        let at = f.name.span().start;
        let name = f.name.to_string().to_ascii_uppercase();
        let args: Vec<&Expr> = match &f.args {
            FunctionArguments::List(l) => l
                .args
                .iter()
                .filter_map(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let want = if name == "HOP" { 3 } else { 2 };
        if args.len() != want {
            return Err(SqlError::at(at, format!("{name} in GROUP BY takes {want} arguments")));
        }
        let column = match plain_column(args[0]) {
            Some(c) => resolve_column(rel, &c.value, c.span.start)?,
            None => {
                return Err(SqlError::at(
                    args[0].span().start,
                    format!("{name}'s first argument is the time attribute"),
                ))
            }
        };
        let processing = time_attribute(rel, &column).map_err(|e| SqlError::at(args[0].span().start, e))?;
        let spec = match name.as_str() {
            "TUMBLE" => json!({"type": "tumbling", "size": ms(interval_ms(args[1])?)}),
            "HOP" => json!({"type": "sliding", "slide": ms(interval_ms(args[1])?), "size": ms(interval_ms(args[2])?)}),
            _ => json!({"type": "session", "gap": ms(interval_ms(args[1])?)}),
        };
        Ok(WindowFn { spec, column, at, processing })
    }
}

/// Whether a window's time column is the processing-time attribute (a
/// `PROCTIME()` column) rather than the event-time one; an error if it is
/// neither.
fn time_attribute(rel: &Rel, column: &str) -> Result<bool, String> {
    if rel.rowtime.as_deref() == Some(column) {
        return Ok(false);
    }
    if rel.proctime.as_deref() == Some(column) {
        return Ok(true);
    }
    Err(format!(
        "`{column}` is not a time attribute: declare `WATERMARK FOR {column} AS ...` on the table (event time), or window by a `PROCTIME()` column (processing time)"
    ))
}

/// A window offset: an interval, possibly negative (`INTERVAL '-1' MINUTE`
/// or `-INTERVAL '1' MINUTE`), in milliseconds.
fn offset_ms(e: &Expr) -> Result<i64, SqlError> {
    use datafusion::sql::sqlparser::ast::{UnaryOperator, Value};
    if let Expr::UnaryOp { op: UnaryOperator::Minus, expr } = e {
        return Ok(-(interval_or_zero_ms(expr)? as i64));
    }
    if let Expr::Interval(iv) = e {
        if let Expr::Value(v) = iv.value.as_ref() {
            if let Value::SingleQuotedString(s) = &v.value {
                if let Some(positive) = s.trim().strip_prefix('-') {
                    let mut flipped = iv.clone();
                    let mut value = v.clone();
                    value.value = Value::SingleQuotedString(positive.to_string());
                    flipped.value = Box::new(Expr::Value(value));
                    return Ok(-(interval_or_zero_ms(&Expr::Interval(flipped))? as i64));
                }
            }
        }
    }
    Ok(interval_or_zero_ms(e)? as i64)
}
