//! `weir sql`: an interactive SQL shell, as Flink's SQL client. Statements
//! may span lines and end with `;`. `CREATE TABLE`, `CREATE VIEW` and `SET`
//! are checked and kept for the session; `SELECT` runs on an embedded
//! cluster (started at the first query) and shows its result as a table
//! that changes while the query runs — or, with `SET
//! 'sql-client.execution.result-mode' = 'changelog'`, every change as it
//! comes; `INSERT INTO` and statement sets run to their end; `EXPLAIN`
//! prints the job graph; `SHOW TABLES` and `DESCRIBE name` list what the
//! session declared. Ctrl-C cancels the running query; `QUIT;` (or
//! Ctrl-D) leaves. Lines are kept in `~/.weir_sql_history`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustyline::error::ReadlineError;
use weir_proto::v1;
use weir_runtime::operators::Registry;

use crate::client;
use crate::embedded::Embedded;
use crate::output;
use crate::progress::Progress;

mod results;

use results::{CollectFactory, Mode, Rows, COLLECT};

const RESULT_MODE: &str = "sql-client.execution.result-mode";

const HELP: &str = "Statements end with `;` and may span lines.
  CREATE TABLE / CREATE VIEW / SET 'key' = 'value'   declared for this session
  SELECT ...                                         runs, shows its rows as they change (Ctrl-C cancels)
  INSERT INTO ... / EXECUTE STATEMENT SET ...        runs to its end
  EXPLAIN ...                                        prints the job graph
  SET 'sql-client.execution.result-mode' = 'table' | 'changelog'
  SHOW TABLES;  DESCRIBE name;                       what the session declared
  RESET;  forgets the session's declarations
  HELP;  QUIT;";

/// The shell's session: its declarations and the embedded cluster.
struct Session {
    registry: Arc<Registry>,
    collect: Arc<CollectFactory>,
    declarations: String,
    mode: Mode,
    cluster: Option<Embedded>,
    queries: u32,
}

/// Runs the shell until `QUIT;` or the end of its input.
pub async fn run(registry: Arc<Registry>) -> anyhow::Result<ExitCode> {
    let collect = results::collector();
    let mut with_sink = (*registry).clone();
    with_sink.register_shared(collect.clone()).context("registering the shell's result sink")?;
    let mut session = Session {
        registry: Arc::new(with_sink),
        collect,
        declarations: String::new(),
        mode: Mode::Table,
        cluster: None,
        queries: 0,
    };
    let mut editor = rustyline::DefaultEditor::new().context("opening the terminal")?;
    let history = std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".weir_sql_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        println!("Weir SQL: statements end with `;`. HELP; lists what it takes, QUIT; leaves.");
    }
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() { "weir> " } else { "   -> " };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading a statement"),
        };
        buffer.push_str(&line);
        buffer.push('\n');
        if !weir_sql::is_complete(&buffer) {
            continue;
        }
        let statement = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(statement.trim_end());
        if !interactive {
            // Piped input: echo what runs, so the output reads in order.
            print!("weir> {statement}");
        }
        match session.execute(statement.trim()).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => println!("error: {e:#}"),
        }
        let _ = std::io::stdout().flush();
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    if let Some(c) = session.cluster.take() {
        c.shutdown().await?;
    }
    Ok(ExitCode::SUCCESS)
}

impl Session {
    /// Runs one statement; `false` to leave.
    async fn execute(&mut self, statement: &str) -> anyhow::Result<bool> {
        let first = statement.split_whitespace().next().unwrap_or_default().trim_end_matches(';').to_ascii_uppercase();
        match first.as_str() {
            "QUIT" | "EXIT" => return Ok(false),
            "HELP" => println!("{HELP}"),
            "SHOW" => {
                let declared = weir_sql::declared(&self.declarations).map_err(|e| anyhow::anyhow!("{e}"))?;
                let mut t = comfy_table::Table::new();
                t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
                t.set_header(["name", "kind"]);
                for d in &declared {
                    t.add_row([d.name.clone(), d.kind.clone()]);
                }
                println!("{t}");
            }
            "DESCRIBE" | "DESC" => {
                let name =
                    statement.split_whitespace().nth(1).unwrap_or_default().trim_end_matches(';').trim_matches('`');
                let declared = weir_sql::declared(&self.declarations).map_err(|e| anyhow::anyhow!("{e}"))?;
                let Some(d) = declared.iter().find(|d| d.name == name) else {
                    let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
                    anyhow::bail!(
                        "no table or view `{name}` in this session; it has {}",
                        if names.is_empty() { "none".to_string() } else { names.join(", ") }
                    );
                };
                if d.columns.is_empty() {
                    println!("`{}` is a view.", d.name);
                } else {
                    let mut t = comfy_table::Table::new();
                    t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
                    t.set_header(["column", "type", ""]);
                    for (c, ty, notes) in &d.columns {
                        t.add_row([c.clone(), ty.clone(), notes.clone()]);
                    }
                    println!("{t}");
                }
            }
            "RESET" => {
                self.declarations.clear();
                self.mode = Mode::Table;
                println!("The session's tables, views and settings are forgotten.");
            }
            "SET" if statement.contains(RESULT_MODE) => {
                self.mode = match statement
                    .rsplit('=')
                    .next()
                    .map(|v| v.trim().trim_end_matches(';').trim().trim_matches('\''))
                {
                    Some(m) if m.eq_ignore_ascii_case("table") => Mode::Table,
                    Some(m) if m.eq_ignore_ascii_case("changelog") || m.eq_ignore_ascii_case("tableau") => {
                        Mode::Changelog
                    }
                    other => anyhow::bail!("{RESULT_MODE} is 'table' or 'changelog', not {other:?}"),
                };
                println!("[INFO] Result mode set.");
            }
            "CREATE" | "SET" => {
                let declared = format!("{}{statement}\n", self.declarations);
                weir_sql::declare(&declared).map_err(|e| self.relative(e))?;
                self.declarations = declared;
                println!("[INFO] {}", if first == "SET" { "Session property set." } else { "Declared." });
            }
            _ => self.run_job(statement).await?,
        }
        Ok(true)
    }

    /// An error of the session's script, counted from the statement's line.
    fn relative(&self, e: weir_sql::SqlError) -> anyhow::Error {
        anyhow::anyhow!("{}", e.after_lines(self.declarations.lines().count() as u32))
    }

    /// Compiles the session's declarations and `statement` into a job and
    /// runs it (or prints it, under `EXPLAIN`).
    async fn run_job(&mut self, statement: &str) -> anyhow::Result<()> {
        self.queries += 1;
        let script = format!("{}{statement}\n", self.declarations);
        let compiled =
            weir_sql::compile(&script, &format!("sql-shell-{}", self.queries)).map_err(|e| self.relative(e))?;
        let mut graph = compiled.graph;
        weir_runtime::plan::Plan::new(&graph, &self.registry, 0).map_err(|e| anyhow::anyhow!("{e}"))?;
        if compiled.explain {
            print!("{}", weir_runtime::spec::job_yaml(&graph));
            return Ok(());
        }
        // A SELECT's rows come to the shell instead of standard output.
        let select = graph.operators.iter().any(|o| o.kind == "stdout");
        for o in graph.operators.iter_mut().filter(|o| o.kind == "stdout") {
            o.kind = COLLECT.into();
        }
        let receiver = self.collect.receiver();
        if self.cluster.is_none() {
            let slots = std::thread::available_parallelism().map_or(4, |n| n.get() as u32).max(4);
            self.cluster =
                Some(Embedded::start(slots, self.registry.clone()).await.context("starting the embedded cluster")?);
        }
        let url = self.cluster.as_ref().expect("started").url.clone();
        let mut c = client::connect(&url, &Default::default()).await?;
        let id = client::submit(&mut c, &graph, None, &client::StartFrom::default()).await?;
        let progress = Progress::hidden();
        let mut rows = Rows::default();
        let terminal = std::io::stdout().is_terminal();
        let mut drawn = 0usize;
        let wait = client::wait_for_end(&mut c, &id, &progress);
        tokio::pin!(wait);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let details = loop {
            tokio::select! {
                d = &mut wait => break d?,
                _ = tick.tick() => {
                    rows.drain(&receiver);
                    if select {
                        drawn = show(&mut rows, self.mode, terminal, drawn, false);
                    }
                }
                _ = tokio::signal::ctrl_c() => {
                    let mut c2 = client::connect(&url, &Default::default()).await?;
                    c2.cancel_job(v1::CancelJobRequest { job_id: id.clone() }).await.map_err(client::status)?;
                    break client::wait_for_end(&mut c2, &id, &progress).await?;
                }
            }
        };
        // Every subtask sent its last batch before the job ended.
        rows.drain(&receiver);
        if select {
            show(&mut rows, self.mode, terminal, drawn, true);
        }
        match client::state(&details) {
            v1::JobState::Finished if !select => {
                println!("[INFO] Job {id} finished: {} rows written.", details.sink_records)
            }
            v1::JobState::Finished => {}
            v1::JobState::Canceled => println!("[INFO] Query cancelled."),
            _ => {
                output::details(output::Format::Text, &details);
            }
        }
        Ok(())
    }
}

/// Shows what changed: the table redrawn over its last drawing on a
/// terminal (only at the end otherwise), or the new changes. Returns the
/// lines drawn.
fn show(rows: &mut Rows, mode: Mode, terminal: bool, drawn: usize, last: bool) -> usize {
    let changed = rows.take_changed();
    let mut out = std::io::stdout().lock();
    match mode {
        Mode::Changelog => {
            if changed {
                if drawn == 0 {
                    let _ = out.write_all(rows.header().as_bytes());
                }
                let _ = out.write_all(rows.changes().as_bytes());
            }
            if last && drawn == 0 && !rows.started() {
                let _ = out.write_all(b"(no rows)\n");
            }
            drawn + usize::from(changed)
        }
        Mode::Table => {
            // While it runs, a terminal's table follows the changes; at
            // the end the table is shown unless it is there already.
            let redraw = if last { !terminal || changed || drawn == 0 } else { terminal && changed };
            if !redraw {
                return drawn;
            }
            let table = rows.table();
            if terminal && drawn > 0 {
                // Up over the last drawing, and clear it.
                let _ = write!(out, "\x1b[{drawn}A\x1b[J");
            }
            let _ = out.write_all(table.as_bytes());
            let _ = out.flush();
            table.lines().count()
        }
    }
}
