//! `table FOR SYSTEM_TIME AS OF o.ts` (a temporal join's versioned table):
//! sqlparser reads it only in dialects unlike Flink's otherwise, so the
//! clause is blanked out before parsing (every other token keeps its line
//! and column) and put back into the parsed query's table afterwards.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, Ident, Spanned, TableFactor, TableVersion, VisitMut, VisitorMut};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};

use crate::error::SqlError;

/// The `AS OF` time of each versioned table, by where the table's name ends.
#[derive(Debug, Default)]
pub struct Versions(Vec<(Location, Expr)>);

/// `text` without its `FOR SYSTEM_TIME AS OF name[.name...]` clauses, and
/// the clauses' times. The time is a column (`o.ts`), as Flink's temporal
/// joins take it.
pub fn take_versions(text: &str) -> Result<(String, Versions), SqlError> {
    let tokens = Tokenizer::new(&GenericDialect {}, text)
        .tokenize_with_location()
        .map_err(|e| SqlError::parser(ParserError::TokenizerError(e.to_string())))?;
    let significant: Vec<_> = tokens.iter().filter(|t| !matches!(t.token, Token::Whitespace(_))).collect();
    let word =
        |i: usize, k: Keyword| matches!(significant.get(i).map(|t| &t.token), Some(Token::Word(w)) if w.keyword == k);
    let mut versions = Vec::new();
    let mut blank: Vec<(Location, Location)> = Vec::new();
    let mut i = 1;
    while i + 4 < significant.len() {
        let system_time =
            matches!(&significant[i + 1].token, Token::Word(w) if w.value.eq_ignore_ascii_case("SYSTEM_TIME"));
        if !(word(i, Keyword::FOR) && system_time && word(i + 2, Keyword::AS) && word(i + 3, Keyword::OF)) {
            i += 1;
            continue;
        }
        // The time: words joined by dots.
        let mut parts = Vec::new();
        let mut j = i + 4;
        while let Some(Token::Word(w)) = significant.get(j).map(|t| &t.token) {
            parts.push(Ident { value: w.value.clone(), quote_style: w.quote_style, span: significant[j].span });
            if !matches!(significant.get(j + 1).map(|t| &t.token), Some(Token::Period)) {
                break;
            }
            j += 2;
        }
        let Some(last) = parts.last() else {
            return Err(SqlError::at(
                significant[i + 3].span.end,
                "FOR SYSTEM_TIME AS OF takes a column of the other side (o.ts)",
            ));
        };
        blank.push((significant[i].span.start, last.span.end));
        let time = if parts.len() == 1 { Expr::Identifier(parts.remove(0)) } else { Expr::CompoundIdentifier(parts) };
        versions.push((significant[i - 1].span.end, time));
        i = j + 1;
    }
    if blank.is_empty() {
        return Ok((text.to_string(), Versions::default()));
    }
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        for (c, ch) in line.chars().enumerate() {
            let at = Location { line: n as u64 + 1, column: c as u64 + 1 };
            let inside = blank.iter().any(|(from, to)| {
                (from.line, from.column) <= (at.line, at.column) && (at.line, at.column) < (to.line, to.column)
            });
            out.push(if inside && ch != '\n' { ' ' } else { ch });
        }
    }
    Ok((out, Versions(versions)))
}

impl Versions {
    /// Gives each table of `query` written before a clause its version.
    pub fn attach<V: VisitMut>(&mut self, query: &mut V) {
        if self.0.is_empty() {
            return;
        }
        let _ = query.visit(self);
    }

    /// A clause that followed no table of any query.
    pub fn stray(&self) -> Option<Location> {
        self.0.first().map(|(_, e)| e.span().start)
    }
}

impl VisitorMut for Versions {
    type Break = ();

    fn pre_visit_table_factor(&mut self, table: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, version, .. } = table {
            let end = name.span().end;
            if let Some(i) = self.0.iter().position(|(l, _)| *l == end) {
                *version = Some(TableVersion::ForSystemTimeAsOf(self.0.remove(i).1));
            }
        }
        ControlFlow::Continue(())
    }
}
