//! Statements of a SQL script. Queries are parsed by sqlparser; the parts
//! of Flink's dialect it does not know (`CREATE TABLE` with `WATERMARK` and
//! `ROW<...>`, `SET 'k' = 'v'`, statement sets, `TABLE t` arguments of
//! window functions) are parsed here with its tokenizer and parser.

use datafusion::sql::sqlparser::ast::{Expr, Ident, Query};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{IsOptional, Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};

use crate::error::SqlError;
use crate::types::SqlType;
use crate::versions::{take_versions, Versions};

/// One statement of a script.
#[derive(Debug, Clone)]
pub enum Statement {
    /// `CREATE [TEMPORARY] TABLE`.
    CreateTable(Box<TableDef>),
    /// `CREATE [TEMPORARY] VIEW name AS query`.
    CreateView { name: Ident, query: Box<Query> },
    /// `SET 'key' = 'value'`.
    Set { key: String, value: String, at: Location },
    /// `INSERT INTO`, one or several (a statement set) in one job.
    Insert(Vec<Insert>),
    /// A `SELECT` on its own: its rows are printed.
    Select { query: Box<Query>, at: Location },
    /// `EXPLAIN` of an `INSERT`, a statement set or a `SELECT`.
    Explain(Box<Statement>),
}

/// `INSERT INTO table [(columns)] query`.
#[derive(Debug, Clone)]
pub struct Insert {
    /// The sink table.
    pub table: Ident,
    /// Columns written, when listed.
    pub columns: Vec<Ident>,
    /// The query.
    pub query: Box<Query>,
}

/// A table declared with `CREATE TABLE`.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// Its name.
    pub name: Ident,
    /// Columns in declaration order.
    pub columns: Vec<ColumnDef>,
    /// `WATERMARK FOR column AS expr`.
    pub watermark: Option<(Ident, Expr)>,
    /// `PRIMARY KEY (...) NOT ENFORCED`.
    pub primary_key: Vec<Ident>,
    /// `PARTITIONED BY (...)` columns (directories of the filesystem sink).
    pub partitioned_by: Vec<Ident>,
    /// The `WITH` options, in order, with their positions.
    pub options: Vec<(String, String, Location)>,
}

/// A column of a table.
#[derive(Debug, Clone)]
pub struct ColumnDef {
    /// Its name.
    pub name: Ident,
    /// Physical (read from the connector) or computed.
    pub kind: ColumnKind,
    /// Declared `NOT NULL`.
    pub not_null: bool,
}

/// How a column gets its value.
#[derive(Debug, Clone)]
pub enum ColumnKind {
    /// Read or written by the connector.
    Physical(SqlType),
    /// `name AS expr`: computed from the physical columns.
    Computed(Box<Expr>),
    /// `name type METADATA [FROM 'key'] [VIRTUAL]`.
    Metadata { ty: SqlType, key: Option<String> },
}

/// Parses a script into its statements.
pub fn parse_script(text: &str) -> Result<Vec<Statement>, SqlError> {
    let text = unwrap_table_arguments(text)?;
    let (text, mut versions) = take_versions(&text)?;
    let dialect = GenericDialect {};
    let mut p = Parser::new(&dialect).try_with_sql(&text).map_err(SqlError::parser)?;
    let mut out = Vec::new();
    loop {
        while p.consume_token(&Token::SemiColon) {}
        if p.peek_token().token == Token::EOF {
            break;
        }
        out.push(statement(&mut p)?);
        let next = p.peek_token();
        if !p.consume_token(&Token::SemiColon) && next.token != Token::EOF {
            return Err(SqlError::at(
                next.span.start,
                format!("expected `;` after the statement, found {}", next.token),
            ));
        }
    }
    for s in &mut out {
        s.attach_versions(&mut versions);
    }
    if let Some(at) = versions.stray() {
        return Err(SqlError::at(
            at,
            "FOR SYSTEM_TIME AS OF follows the versioned table in a join (JOIN rates FOR SYSTEM_TIME AS OF o.ts)",
        ));
    }
    Ok(out)
}

impl Statement {
    fn attach_versions(&mut self, versions: &mut Versions) {
        match self {
            Statement::CreateView { query, .. } | Statement::Select { query, .. } => versions.attach(query.as_mut()),
            Statement::Insert(inserts) => inserts.iter_mut().for_each(|i| versions.attach(i.query.as_mut())),
            Statement::Explain(inner) => inner.attach_versions(versions),
            Statement::CreateTable(_) | Statement::Set { .. } => {}
        }
    }
}

fn statement(p: &mut Parser<'_>) -> Result<Statement, SqlError> {
    let start = p.peek_token();
    let at = start.span.start;
    if p.parse_keyword(Keyword::EXPLAIN) {
        let _ = p.parse_keywords(&[Keyword::PLAN, Keyword::FOR]);
        let inner = statement(p)?;
        if matches!(inner, Statement::Insert(_) | Statement::Select { .. }) {
            return Ok(Statement::Explain(Box::new(inner)));
        }
        return Err(SqlError::at(at, "EXPLAIN takes an INSERT, a statement set or a SELECT"));
    }
    if p.parse_keyword(Keyword::CREATE) {
        let _ = p.parse_keyword(Keyword::TEMPORARY);
        if p.parse_keyword(Keyword::TABLE) {
            return create_table(p).map(|t| Statement::CreateTable(Box::new(t)));
        }
        if p.parse_keyword(Keyword::VIEW) {
            let _ = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
            let name = last_name(p)?;
            if p.peek_token().token == Token::LParen {
                let t = p.peek_token();
                return Err(SqlError::at(
                    t.span.start,
                    "not supported: a column list on CREATE VIEW; name the columns in its SELECT",
                ));
            }
            p.expect_keyword_is(Keyword::AS).map_err(SqlError::parser)?;
            let query = p.parse_query().map_err(SqlError::parser)?;
            return Ok(Statement::CreateView { name, query });
        }
        let t = p.peek_token();
        return Err(SqlError::at(
            t.span.start,
            format!("not supported: CREATE {}; Weir SQL creates tables and views", t.token),
        ));
    }
    if p.parse_keyword(Keyword::SET) {
        let key = p.parse_literal_string().map_err(|_| {
            SqlError::at(p.peek_token().span.start, "SET takes a quoted key and value: SET 'key' = 'value'")
        })?;
        p.expect_token(&Token::Eq).map_err(SqlError::parser)?;
        let value = p
            .parse_literal_string()
            .map_err(|_| SqlError::at(p.peek_token().span.start, "SET takes a quoted value: SET 'key' = 'value'"))?;
        return Ok(Statement::Set { key, value, at });
    }
    if p.peek_keyword(Keyword::INSERT) {
        return Ok(Statement::Insert(vec![insert(p)?]));
    }
    if p.parse_keywords(&[Keyword::EXECUTE, Keyword::STATEMENT, Keyword::SET]) {
        p.expect_keyword_is(Keyword::BEGIN).map_err(SqlError::parser)?;
        return statement_set(p, at);
    }
    if p.parse_keywords(&[Keyword::BEGIN, Keyword::STATEMENT, Keyword::SET]) {
        // The older form: `BEGIN STATEMENT SET; INSERT ...; END;`
        let _ = p.consume_token(&Token::SemiColon);
        return statement_set(p, at);
    }
    if p.peek_keyword(Keyword::SELECT) || p.peek_keyword(Keyword::WITH) || start.token == Token::LParen {
        let query = p.parse_query().map_err(SqlError::parser)?;
        return Ok(Statement::Select { query, at });
    }
    Err(SqlError::at(
        at,
        format!("not supported: a statement starting with {}; Weir SQL runs CREATE TABLE, CREATE VIEW, SET, INSERT INTO, EXECUTE STATEMENT SET, SELECT and EXPLAIN", start.token),
    ))
}

fn statement_set(p: &mut Parser<'_>, at: Location) -> Result<Statement, SqlError> {
    let mut inserts = Vec::new();
    loop {
        while p.consume_token(&Token::SemiColon) {}
        if p.parse_keyword(Keyword::END) {
            break;
        }
        let t = p.peek_token();
        if t.token == Token::EOF {
            return Err(SqlError::at(at, "the statement set has no END"));
        }
        if !p.peek_keyword(Keyword::INSERT) {
            return Err(SqlError::at(
                t.span.start,
                format!("a statement set holds only INSERT INTO statements, found {}", t.token),
            ));
        }
        inserts.push(insert(p)?);
    }
    if inserts.is_empty() {
        return Err(SqlError::at(at, "the statement set is empty"));
    }
    Ok(Statement::Insert(inserts))
}

fn insert(p: &mut Parser<'_>) -> Result<Insert, SqlError> {
    p.expect_keyword_is(Keyword::INSERT).map_err(SqlError::parser)?;
    if !p.parse_keyword(Keyword::INTO) {
        let t = p.peek_token();
        return Err(SqlError::at(
            t.span.start,
            "not supported: INSERT without INTO (INSERT OVERWRITE is for batch jobs)",
        ));
    }
    let table = last_name(p)?;
    let columns = p.parse_parenthesized_column_list(IsOptional::Optional, false).map_err(SqlError::parser)?;
    let query = p.parse_query().map_err(SqlError::parser)?;
    Ok(Insert { table, columns, query })
}

/// A possibly qualified name (`catalog.db.table`); Weir has one catalog,
/// so the last part names the object.
fn last_name(p: &mut Parser<'_>) -> Result<Ident, SqlError> {
    let name = p.parse_object_name(false).map_err(SqlError::parser)?;
    name.0
        .last()
        .and_then(|part| part.as_ident().cloned())
        .ok_or_else(|| SqlError::at(p.peek_token().span.start, "expected a name"))
}

fn create_table(p: &mut Parser<'_>) -> Result<TableDef, SqlError> {
    let _ = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = last_name(p)?;
    let mut def = TableDef {
        name,
        columns: Vec::new(),
        watermark: None,
        primary_key: Vec::new(),
        partitioned_by: Vec::new(),
        options: Vec::new(),
    };
    p.expect_token(&Token::LParen).map_err(SqlError::parser)?;
    loop {
        table_element(p, &mut def)?;
        if p.consume_token(&Token::Comma) {
            continue;
        }
        p.expect_token(&Token::RParen).map_err(SqlError::parser)?;
        break;
    }
    if p.parse_keyword(Keyword::COMMENT) {
        p.parse_literal_string().map_err(SqlError::parser)?;
    }
    if p.parse_keywords(&[Keyword::PARTITIONED, Keyword::BY]) {
        def.partitioned_by =
            p.parse_parenthesized_column_list(IsOptional::Mandatory, false).map_err(SqlError::parser)?;
    }
    if p.parse_keyword(Keyword::WITH) {
        p.expect_token(&Token::LParen).map_err(SqlError::parser)?;
        loop {
            let at = p.peek_token().span.start;
            let key = p.parse_literal_string().map_err(|_| SqlError::at(at, "an option is written 'key' = 'value'"))?;
            p.expect_token(&Token::Eq).map_err(SqlError::parser)?;
            let vat = p.peek_token().span.start;
            let value = p
                .parse_literal_string()
                .map_err(|_| SqlError::at(vat, format!("the value of option '{key}' must be a quoted string")))?;
            if def.options.iter().any(|(k, _, _)| *k == key) {
                return Err(SqlError::at(at, format!("option '{key}' is given twice")));
            }
            def.options.push((key, value, at));
            if !p.consume_token(&Token::Comma) {
                break;
            }
        }
        p.expect_token(&Token::RParen).map_err(SqlError::parser)?;
    } else {
        return Err(SqlError::at(
            p.peek_token().span.start,
            format!("table `{}` needs WITH ('connector' = ...)", def.name.value),
        ));
    }
    Ok(def)
}

fn table_element(p: &mut Parser<'_>, def: &mut TableDef) -> Result<(), SqlError> {
    let t = p.peek_token();
    let is_word =
        |t: &Token, w: &str| matches!(t, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w));
    if is_word(&t.token, "WATERMARK")
        && matches!(p.peek_nth_token(1).token, Token::Word(ref w) if w.keyword == Keyword::FOR)
    {
        p.next_token();
        p.next_token();
        let column = p.parse_identifier().map_err(SqlError::parser)?;
        p.expect_keyword_is(Keyword::AS).map_err(SqlError::parser)?;
        let expr = p.parse_expr().map_err(SqlError::parser)?;
        if def.watermark.is_some() {
            return Err(SqlError::at(t.span.start, "a table has at most one WATERMARK"));
        }
        def.watermark = Some((column, expr));
        return Ok(());
    }
    if p.parse_keyword(Keyword::CONSTRAINT) {
        p.parse_identifier().map_err(SqlError::parser)?;
    }
    if p.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
        def.primary_key = p.parse_parenthesized_column_list(IsOptional::Mandatory, false).map_err(SqlError::parser)?;
        return not_enforced(p);
    }
    let name = p.parse_identifier().map_err(SqlError::parser)?;
    if def.columns.iter().any(|c| c.name.value == name.value) {
        return Err(SqlError::at(t.span.start, format!("column `{}` is declared twice", name.value)));
    }
    if p.parse_keyword(Keyword::AS) {
        let expr = p.parse_expr().map_err(SqlError::parser)?;
        if p.parse_keyword(Keyword::COMMENT) {
            p.parse_literal_string().map_err(SqlError::parser)?;
        }
        def.columns.push(ColumnDef { name, kind: ColumnKind::Computed(Box::new(expr)), not_null: false });
        return Ok(());
    }
    let ty = data_type(p)?;
    let mut not_null = false;
    let mut metadata = None;
    loop {
        if p.parse_keywords(&[Keyword::NOT, Keyword::NULL]) {
            not_null = true;
        } else if p.parse_keyword(Keyword::NULL) {
        } else if p.parse_keyword(Keyword::METADATA) {
            let key = if p.parse_keyword(Keyword::FROM) {
                Some(p.parse_literal_string().map_err(SqlError::parser)?)
            } else {
                None
            };
            let _ = p.parse_keyword(Keyword::VIRTUAL);
            metadata = Some(key);
        } else if p.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
            def.primary_key = vec![name.clone()];
            not_enforced(p)?;
        } else if p.parse_keyword(Keyword::COMMENT) {
            p.parse_literal_string().map_err(SqlError::parser)?;
        } else {
            break;
        }
    }
    let kind = match metadata {
        Some(key) => ColumnKind::Metadata { ty, key },
        None => ColumnKind::Physical(ty),
    };
    def.columns.push(ColumnDef { name, kind, not_null });
    Ok(())
}

fn not_enforced(p: &mut Parser<'_>) -> Result<(), SqlError> {
    if p.parse_keywords(&[Keyword::NOT, Keyword::ENFORCED]) {
        return Ok(());
    }
    Err(SqlError::at(
        p.peek_token().span.start,
        "a primary key is written PRIMARY KEY (...) NOT ENFORCED: Weir, like Flink, does not check it",
    ))
}

/// A column type; `ROW<name type, ...>` (and `ROW(name type, ...)`) by hand,
/// the rest by sqlparser.
fn data_type(p: &mut Parser<'_>) -> Result<SqlType, SqlError> {
    let mut pending = 0;
    let ty = data_type_nested(p, &mut pending)?;
    if pending > 0 {
        return Err(SqlError::at(p.peek_token().span.start, "unbalanced `>` in a type"));
    }
    Ok(ty)
}

fn data_type_nested(p: &mut Parser<'_>, pending: &mut u32) -> Result<SqlType, SqlError> {
    let t = p.peek_token();
    let is_row = matches!(&t.token, Token::Word(w) if w.value.eq_ignore_ascii_case("ROW"));
    if !is_row {
        let ty = p.parse_data_type().map_err(SqlError::parser)?;
        return Ok(SqlType::from_ast(&ty));
    }
    p.next_token();
    let close = if p.consume_token(&Token::Lt) {
        Token::Gt
    } else if p.consume_token(&Token::LParen) {
        Token::RParen
    } else {
        return Err(SqlError::at(p.peek_token().span.start, "a ROW type is written ROW<name type, ...>"));
    };
    let mut fields = Vec::new();
    loop {
        let name = p.parse_identifier().map_err(SqlError::parser)?;
        let ty = data_type_nested(p, pending)?;
        fields.push((name.value, ty));
        if close == Token::Gt && *pending > 0 {
            *pending -= 1;
            break;
        }
        if p.consume_token(&Token::Comma) {
            continue;
        }
        if p.consume_token(&close) {
            break;
        }
        if close == Token::Gt && p.consume_token(&Token::ShiftRight) {
            *pending += 1;
            break;
        }
        return Err(SqlError::parser(p.expected::<()>(&format!("`,` or `{close}`"), p.peek_token()).unwrap_err()));
    }
    Ok(SqlType::Row(fields))
}

/// Whether the last significant token of `text` is `;` (a text that does
/// not tokenize, such as an open quote, is not finished).
pub fn ends_with_semicolon(text: &str) -> bool {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, text).tokenize() else { return false };
    matches!(tokens.iter().rev().find(|t| !matches!(t, Token::Whitespace(_))), Some(Token::SemiColon))
}

/// Flink passes tables to window functions as `TABLE name`
/// (`TUMBLE(TABLE bids, ...)`), which sqlparser does not parse as a function
/// argument. The keyword is blanked out where it starts an argument, which
/// keeps every other token at its line and column.
fn unwrap_table_arguments(text: &str) -> Result<String, SqlError> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| SqlError::parser(ParserError::TokenizerError(e.to_string())))?;
    let significant: Vec<_> = tokens.iter().filter(|t| !matches!(t.token, Token::Whitespace(_))).collect();
    let mut blank = Vec::new();
    for w in significant.windows(3) {
        let starts_argument = matches!(w[0].token, Token::LParen | Token::Comma | Token::Arrow | Token::RArrow);
        let is_table = matches!(&w[1].token, Token::Word(x) if x.keyword == Keyword::TABLE && x.quote_style.is_none());
        if starts_argument && is_table && matches!(w[2].token, Token::Word(_)) {
            blank.push(w[1].span.start);
        }
    }
    if blank.is_empty() {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let at: Vec<u64> = blank.iter().filter(|l| l.line == n as u64 + 1).map(|l| l.column).collect();
        for (i, c) in line.chars().enumerate() {
            let col = i as u64 + 1;
            out.push(if at.iter().any(|&s| col >= s && col < s + 5) { ' ' } else { c });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_table_with_watermark_row_types_key_and_options() {
        let s = parse_script(
            "CREATE TABLE bids (\n  auction BIGINT NOT NULL,\n  person ROW<id BIGINT, name ROW<first STRING, last STRING>>,\n  ts AS TO_TIMESTAMP_LTZ(ms, 3),\n  ms BIGINT,\n  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND,\n  PRIMARY KEY (auction) NOT ENFORCED\n) WITH ('connector' = 'kafka', 'topic' = 'bids');",
        )
        .unwrap();
        let [Statement::CreateTable(t)] = &s[..] else { panic!("{s:?}") };
        assert_eq!(t.name.value, "bids");
        assert_eq!(t.columns.len(), 4);
        assert!(t.columns[0].not_null);
        let ColumnKind::Physical(SqlType::Row(fields)) = &t.columns[1].kind else { panic!() };
        assert_eq!(
            fields[1].1,
            SqlType::Row(vec![("first".into(), SqlType::String), ("last".into(), SqlType::String)])
        );
        assert!(matches!(t.columns[2].kind, ColumnKind::Computed(_)));
        assert_eq!(t.watermark.as_ref().unwrap().0.value, "ts");
        assert_eq!(t.primary_key[0].value, "auction");
        assert_eq!(
            t.options.iter().map(|(k, v, _)| format!("{k}={v}")).collect::<Vec<_>>(),
            ["connector=kafka", "topic=bids"]
        );
    }

    #[test]
    fn statement_sets_sets_views_and_explain() {
        let s = parse_script(
            "SET 'parallelism.default' = '2';\nCREATE TEMPORARY VIEW v AS SELECT a FROM t;\nEXECUTE STATEMENT SET BEGIN\nINSERT INTO x SELECT * FROM v;\nINSERT INTO y SELECT a FROM t;\nEND;\nEXPLAIN INSERT INTO x SELECT 1;",
        )
        .unwrap();
        assert!(matches!(&s[0], Statement::Set { key, value, .. } if key == "parallelism.default" && value == "2"));
        assert!(matches!(&s[1], Statement::CreateView { name, .. } if name.value == "v"));
        assert!(matches!(&s[2], Statement::Insert(v) if v.len() == 2 && v[1].table.value == "y"));
        assert!(matches!(&s[3], Statement::Explain(_)));
    }

    #[test]
    fn table_arguments_of_window_functions_keep_positions() {
        let text = "SELECT *\nFROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND))";
        let out = unwrap_table_arguments(text).unwrap();
        assert_eq!(out, "SELECT *\nFROM TABLE(TUMBLE(      bids, DESCRIPTOR(ts), INTERVAL '10' SECOND))");
        assert!(parse_script(text).is_ok());
    }

    #[test]
    fn syntax_errors_name_line_and_column_and_show_the_line() {
        let text = "SET 'a' = 'b';\nINSERT INTO out SELEC x FROM t;";
        let e = parse_script(text).unwrap_err().in_text(text);
        assert_eq!((e.line, e.column), (2, 17), "{e}");
        let shown = e.to_string();
        assert!(shown.starts_with("line 2, column 17: syntax error: "), "{shown}");
        assert!(shown.ends_with(" 2 | INSERT INTO out SELEC x FROM t;\n   |                 ^"), "{shown}");
    }

    #[test]
    fn malformed_ddl_is_refused_with_a_reason() {
        for (text, want) in [
            ("CREATE TABLE t (a INT)", "needs WITH"),
            ("CREATE TABLE t (a INT, PRIMARY KEY (a)) WITH ('connector' = 'x')", "NOT ENFORCED"),
            ("CREATE TABLE t (a INT, a STRING) WITH ('connector' = 'x')", "declared twice"),
            ("CREATE TABLE t (a INT) WITH ('connector' = 'x', 'connector' = 'y')", "given twice"),
            ("CREATE TABLE t (a ROW<b INT) WITH ('connector' = 'x')", "syntax error"),
            ("DELETE FROM t", "not supported: a statement starting with DELETE"),
        ] {
            let e = parse_script(text).unwrap_err();
            assert!(e.message.contains(want), "{text}: {e}");
        }
    }
}
