//! Weir SQL: scripts in Flink's SQL dialect compiled to the same
//! [`JobGraph`] that YAML job files and the typed API produce, so running,
//! checkpoints, savepoints and monitoring are shared. See `docs/sql.md`.
//!
//! ```sql
//! CREATE TABLE clicks (page STRING, ts TIMESTAMP(3),
//!   WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
//! ) WITH ('connector' = 'kafka', 'topic' = 'clicks', 'format' = 'json',
//!         'properties.bootstrap.servers' = '127.0.0.1:9092');
//! CREATE TABLE counts (page STRING, window_start TIMESTAMP(3), clicks BIGINT)
//!   WITH ('connector' = 'filesystem', 'path' = '/tmp/counts', 'format' = 'json');
//! INSERT INTO counts
//! SELECT page, window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '10' SECOND))
//! GROUP BY page, window_start, window_end;
//! ```

mod builder;
mod connectors;
mod error;
mod expr;
mod join;
mod parse;
mod query;
mod settings;
mod temporal;
mod types;
mod versions;

use weir_runtime::graph::{JobGraph, DEFAULT_MAX_PARALLELISM};

pub use error::SqlError;
pub use settings::KEYS as SETTING_KEYS;

use builder::Builder;
use parse::{Insert, Statement};
use query::{Catalog, Planner};
use settings::Settings;

/// A compiled script: one job.
#[derive(Debug, Clone)]
pub struct Script {
    /// The job its `INSERT`s (or `SELECT`) make.
    pub graph: JobGraph,
    /// Whether the script asked to `EXPLAIN` the job rather than run it.
    pub explain: bool,
}

/// Compiles a script of Flink SQL statements into one job. `name` is the
/// job's name unless the script sets `pipeline.name`. A script runs exactly
/// one `INSERT INTO`, statement set or `SELECT` (optionally under
/// `EXPLAIN`), after any number of `CREATE` and `SET` statements.
pub fn compile(text: &str, name: &str) -> Result<Script, SqlError> {
    compile_inner(text, name).map_err(|e| e.in_text(text))
}

/// Checks a script of declarations only (`CREATE TABLE`, `CREATE VIEW`,
/// `SET`), as an interactive session keeps them: a job statement in it is
/// an error.
pub fn declare(text: &str) -> Result<(), SqlError> {
    let run = || {
        let (_, _, job) = declarations(parse::parse_script(text)?)?;
        match job {
            Some(_) => Err(SqlError::script("only CREATE and SET statements declare; this one runs a job")),
            None => Ok(()),
        }
    };
    run().map_err(|e| e.in_text(text))
}

/// A table or view a script declares, as `SHOW TABLES` and `DESCRIBE`
/// list them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// Its name.
    pub name: String,
    /// `TABLE` (with its connector) or `VIEW`.
    pub kind: String,
    /// A table's columns: name, type (or `AS expr`), and notes (primary
    /// key, watermark, metadata).
    pub columns: Vec<(String, String, String)>,
}

/// The tables and views a script of declarations declares, by name.
pub fn declared(text: &str) -> Result<Vec<Declared>, SqlError> {
    let (catalog, _, _) = declarations(parse::parse_script(text)?).map_err(|e| e.in_text(text))?;
    let mut out: Vec<Declared> = catalog
        .tables
        .values()
        .map(|t| {
            let connector = t.options.iter().find(|o| o.0 == "connector").map_or("", |o| o.1.as_str());
            let columns = t
                .columns
                .iter()
                .map(|c| {
                    let mut notes = Vec::new();
                    if t.primary_key.iter().any(|k| k.value == c.name.value) {
                        notes.push("PRIMARY KEY".to_string());
                    }
                    if let Some((w, e)) = &t.watermark {
                        if w.value == c.name.value {
                            notes.push(format!("WATERMARK AS {e}"));
                        }
                    }
                    let ty = match &c.kind {
                        parse::ColumnKind::Physical(ty) => format!("{ty}{}", if c.not_null { " NOT NULL" } else { "" }),
                        parse::ColumnKind::Computed(e) => format!("AS {e}"),
                        parse::ColumnKind::Metadata { ty, key } => {
                            notes.push(format!(
                                "METADATA{}",
                                key.as_ref().map(|k| format!(" FROM '{k}'")).unwrap_or_default()
                            ));
                            ty.to_string()
                        }
                    };
                    (c.name.value.clone(), ty, notes.join(", "))
                })
                .collect();
            Declared { name: t.name.value.clone(), kind: format!("TABLE ({connector})"), columns }
        })
        .chain(catalog.views.keys().map(|v| Declared { name: v.clone(), kind: "VIEW".into(), columns: Vec::new() }))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Whether `text` ends a statement: its last token (comments and spaces
/// aside) is a `;` outside any quotes.
pub fn is_complete(text: &str) -> bool {
    parse::ends_with_semicolon(text)
}

/// A script's job statement, and whether it is under `EXPLAIN`.
type Job = Option<(Statement, bool)>;

/// The tables, views and settings a script declares, and its job statement.
fn declarations(statements: Vec<Statement>) -> Result<(Catalog, Settings, Job), SqlError> {
    let mut catalog = Catalog::default();
    let mut settings = Settings::default();
    let mut job: Option<(Statement, bool)> = None;
    for s in statements {
        match s {
            Statement::CreateTable(t) => {
                connectors::check_connector(&t)?;
                if catalog.tables.contains_key(&t.name.value) || catalog.views.contains_key(&t.name.value) {
                    return Err(SqlError::at(t.name.span.start, format!("`{}` is declared twice", t.name.value)));
                }
                catalog.tables.insert(t.name.value.clone(), *t);
            }
            Statement::CreateView { name, query } => {
                if catalog.tables.contains_key(&name.value) || catalog.views.contains_key(&name.value) {
                    return Err(SqlError::at(name.span.start, format!("`{}` is declared twice", name.value)));
                }
                catalog.views.insert(name.value, query);
            }
            Statement::Set { key, value, at } => settings.set(&key, &value, at)?,
            Statement::Explain(inner) => job = Some(one_job(job, *inner, true)?),
            other => job = Some(one_job(job, other, false)?),
        }
    }
    Ok((catalog, settings, job))
}

fn compile_inner(text: &str, name: &str) -> Result<Script, SqlError> {
    let (catalog, settings, job) = declarations(parse::parse_script(text)?)?;
    let Some((statement, explain)) = job else {
        return Err(SqlError::script("the script has no INSERT INTO, EXECUTE STATEMENT SET or SELECT: nothing to run"));
    };
    let mut b = Builder::default();
    match statement {
        Statement::Insert(inserts) => {
            let mut sinks = std::collections::HashMap::new();
            for Insert { table, columns, query } in &inserts {
                b.line = table.span.start.line as u32;
                let Some(sink) = catalog.tables.get(&table.value) else {
                    return Err(SqlError::at(
                        table.span.start,
                        format!(
                            "unknown table `{}`{}",
                            table.value,
                            error::did_you_mean(&table.value, catalog.tables.keys().map(String::as_str))
                        ),
                    ));
                };
                let n = sinks.entry(table.value.clone()).or_insert(0);
                *n += 1;
                let context = if *n == 1 { table.value.clone() } else { format!("{}-{n}", table.value) };
                let rel = Planner { catalog: &catalog, settings: &settings, b: &mut b, context, ctes: Vec::new() }
                    .query(query)?;
                let listed: Vec<String> = columns.iter().map(|c| c.value.clone()).collect();
                connectors::sink(&mut b, sink, rel, &listed, table.span.start)?;
            }
        }
        Statement::Select { query, at } => {
            b.line = at.line as u32;
            let rel = Planner {
                catalog: &catalog,
                settings: &settings,
                b: &mut b,
                context: "select".into(),
                ctes: Vec::new(),
            }
            .query(&query)?;
            let uid = b.add("print", "stdout", serde_json::json!({}), 0);
            b.connect(&rel.uid, &uid, weir_runtime::graph::Partitioning::Forward, Vec::new());
        }
        _ => unreachable!("one_job keeps only jobs"),
    }
    Ok(Script {
        graph: JobGraph {
            name: settings.name.clone().unwrap_or_else(|| name.to_string()),
            max_parallelism: settings.max_parallelism.unwrap_or(DEFAULT_MAX_PARALLELISM),
            default_parallelism: settings.parallelism.unwrap_or(0),
            operators: b.operators,
            edges: b.edges,
            checkpoint: settings.checkpoint()?,
        },
        explain,
    })
}

/// The script's one job: a second one is an error (Flink's SQL client runs
/// each as its own job; a Weir script is one job — use a statement set).
fn one_job(previous: Option<(Statement, bool)>, s: Statement, explain: bool) -> Result<(Statement, bool), SqlError> {
    if previous.is_some() {
        let at = match &s {
            Statement::Insert(i) => i[0].table.span.start,
            Statement::Select { at, .. } => *at,
            _ => datafusion::sql::sqlparser::tokenizer::Location { line: 0, column: 0 },
        };
        return Err(SqlError::at(
            at,
            "a script runs one job: put several INSERTs in EXECUTE STATEMENT SET BEGIN ... END;",
        ));
    }
    Ok((s, explain))
}

#[cfg(test)]
mod tests;
