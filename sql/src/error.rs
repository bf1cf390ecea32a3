//! Errors of SQL scripts: a position in the script and a message, shown
//! with the line they point at and a caret under the column.

use std::fmt;

use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::Location;

/// What is wrong with a SQL script, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    /// 1-based line, 0 when the error is about the script as a whole.
    pub line: u32,
    /// 1-based column, 0 when unknown.
    pub column: u32,
    /// What is wrong.
    pub message: String,
    /// The line of the script the error points at.
    source_line: Option<String>,
}

impl SqlError {
    /// An error at a position of the script.
    pub fn at(loc: Location, message: impl Into<String>) -> Self {
        Self { line: loc.line as u32, column: loc.column as u32, message: message.into(), source_line: None }
    }

    /// An error about the whole script.
    pub fn script(message: impl Into<String>) -> Self {
        Self { line: 0, column: 0, message: message.into(), source_line: None }
    }

    /// Keeps the line of `text` the error points at, to show it.
    pub(crate) fn in_text(mut self, text: &str) -> Self {
        if self.line > 0 {
            self.source_line = text.lines().nth(self.line as usize - 1).map(str::to_string);
        }
        self
    }

    /// The error counted from line `skipped + 1` of its script (the first
    /// line of a statement after `skipped` lines of others).
    pub fn after_lines(mut self, skipped: u32) -> Self {
        if self.line > skipped {
            self.line -= skipped;
        }
        self
    }

    /// A parser error: sqlparser ends its messages with "at Line: L, Column: C".
    pub(crate) fn parser(e: ParserError) -> Self {
        let msg = match e {
            ParserError::ParserError(m) | ParserError::TokenizerError(m) => m,
            ParserError::RecursionLimitExceeded => "the statement is nested too deeply".to_string(),
        };
        let (text, loc) = match msg.rfind(" at Line: ") {
            Some(i) => (msg[..i].to_string(), parse_location(&msg[i + " at Line: ".len()..])),
            None => (msg.clone(), None),
        };
        let text = text.strip_prefix("sql parser error: ").unwrap_or(&text).to_string();
        let (line, column) = loc.unwrap_or((0, 0));
        Self { line, column, message: format!("syntax error: {text}"), source_line: None }
    }
}

fn parse_location(s: &str) -> Option<(u32, u32)> {
    let (line, rest) = s.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, column.parse().ok()?))
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return f.write_str(&self.message);
        }
        write!(f, "line {}, column {}: {}", self.line, self.column, self.message)?;
        if let Some(src) = &self.source_line {
            let gutter = self.line.to_string();
            write!(f, "\n {gutter} | {src}")?;
            if self.column > 0 {
                // Tabs stay tabs so that the caret lines up under them.
                let pad: String =
                    src.chars().take(self.column as usize - 1).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
                write!(f, "\n {} | {pad}^", " ".repeat(gutter.len()))?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for SqlError {}

/// The name among `candidates` closest to `name`, if one is close enough to
/// be a likely typo.
pub(crate) fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// " (did you mean `x`?)" or nothing.
pub(crate) fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match closest(name, candidates) {
        Some(c) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}
