//! YAML job files: a direct mirror of [`JobGraph`]. See `docs/job-files.md`.
//!
//! ```yaml
//! name: w1-passthrough
//! parallelism: 2            # default for operators that set none
//! max_parallelism: 128      # key groups
//! operators:
//!   - uid: gen
//!     kind: datagen
//!     config: {events: 20000000}
//!   - uid: sink
//!     kind: discard
//! edges:
//!   - {from: gen, to: sink, partition: forward}
//! ```

use serde::Deserialize;

use crate::error::PlanError;
use crate::graph::{EdgeSpec, JobGraph, OperatorSpec, Partitioning, DEFAULT_MAX_PARALLELISM};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    name: String,
    #[serde(default)]
    parallelism: Option<u32>,
    #[serde(default)]
    max_parallelism: Option<u32>,
    operators: Vec<OperatorEntry>,
    #[serde(default)]
    edges: Vec<EdgeEntry>,
    #[serde(default)]
    checkpoints: Option<crate::checkpointing::CheckpointConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorEntry {
    uid: String,
    kind: String,
    #[serde(default)]
    parallelism: Option<u32>,
    #[serde(default = "yes")]
    chaining: bool,
    #[serde(default)]
    config: Option<serde_yaml_ng::Value>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeEntry {
    from: String,
    to: String,
    #[serde(default = "forward")]
    partition: Partitioning,
    #[serde(default)]
    key: Vec<String>,
    #[serde(default)]
    input: u32,
    /// A side output of `from` (e.g. a window's `late`); absent: its main output.
    #[serde(default)]
    output: Option<String>,
}

fn forward() -> Partitioning {
    Partitioning::Forward
}

/// Parses a YAML job file into a [`JobGraph`]. Syntax errors, unknown fields
/// and wrong types are reported with their line; operator lines are kept in
/// the graph so that planning errors can name them too.
pub fn parse_job_yaml(text: &str) -> Result<JobGraph, PlanError> {
    if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
        return Err(PlanError {
            operator: None,
            field: None,
            line: 0,
            message: "the job file is empty: a job needs a `name` and its `operators` (see docs/job-files.md)".into(),
        });
    }
    let file: JobFile = serde_yaml_ng::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line() as u32).unwrap_or(0);
        // serde_yaml_ng appends " at line L column C"; the line is reported separately.
        let msg = e.to_string();
        let msg = match msg.find(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        PlanError { operator: None, field: None, line, message: format!("invalid job file: {msg}") }
    })?;
    let lines = ItemLines::scan(text);
    // 0 is not "unset": a job or operator written with no subtasks is a mistake.
    for (field, value) in [("parallelism", file.parallelism), ("max_parallelism", file.max_parallelism)] {
        if value == Some(0) {
            let line = text.lines().position(|l| l.starts_with(&format!("{field}:"))).map_or(0, |i| i as u32 + 1);
            return Err(PlanError {
                operator: None,
                field: Some(field.into()),
                line,
                message: format!("{field} must be at least 1 (leave it out for the default)"),
            });
        }
    }
    let mut operators = Vec::with_capacity(file.operators.len());
    for (i, op) in file.operators.into_iter().enumerate() {
        let line = lines.operators.get(i).copied().unwrap_or(0);
        if op.parallelism == Some(0) {
            return Err(PlanError::operator(
                &op.uid,
                line,
                "parallelism must be at least 1 (leave it out for the job's default)",
            )
            .field("parallelism"));
        }
        let config = match op.config {
            None => serde_json::Value::Object(Default::default()),
            Some(v) => serde_json::to_value(v).map_err(|e| {
                PlanError::operator(&op.uid, line, format!("config is not representable as JSON: {e}")).field("config")
            })?,
        };
        if !config.is_object() {
            return Err(PlanError::operator(&op.uid, line, "config must be a mapping").field("config"));
        }
        operators.push(OperatorSpec {
            uid: op.uid,
            kind: op.kind,
            parallelism: op.parallelism.unwrap_or(0),
            config,
            chainable: op.chaining,
            line,
        });
    }
    let edges = file
        .edges
        .into_iter()
        .enumerate()
        .map(|(i, e)| EdgeSpec {
            from: e.from,
            to: e.to,
            partitioning: e.partition,
            key: e.key,
            input: e.input,
            output: e.output.unwrap_or_default(),
            line: lines.edges.get(i).copied().unwrap_or(0),
        })
        .collect();
    Ok(JobGraph {
        name: file.name,
        max_parallelism: file.max_parallelism.unwrap_or(DEFAULT_MAX_PARALLELISM),
        default_parallelism: file.parallelism.unwrap_or(0),
        operators,
        edges,
        checkpoint: file.checkpoints,
    })
}

/// Writes a graph as a job file (what `weir explain` prints): parsing it
/// back gives the same graph, line numbers aside.
pub fn job_yaml(graph: &JobGraph) -> String {
    use serde_yaml_ng::{Mapping, Value};
    fn v(x: impl serde::Serialize) -> Value {
        serde_yaml_ng::to_value(x).expect("job graph parts are plain data")
    }
    let mut file = Mapping::new();
    file.insert(v("name"), v(&graph.name));
    if graph.default_parallelism != 0 {
        file.insert(v("parallelism"), v(graph.default_parallelism));
    }
    if graph.max_parallelism != DEFAULT_MAX_PARALLELISM {
        file.insert(v("max_parallelism"), v(graph.max_parallelism));
    }
    let operators: Vec<Value> = graph
        .operators
        .iter()
        .map(|o| {
            let mut m = Mapping::new();
            m.insert(v("uid"), v(&o.uid));
            m.insert(v("kind"), v(&o.kind));
            if o.parallelism != 0 {
                m.insert(v("parallelism"), v(o.parallelism));
            }
            if !o.chainable {
                m.insert(v("chaining"), v(false));
            }
            if o.config.as_object().is_some_and(|c| !c.is_empty()) {
                m.insert(v("config"), v(&o.config));
            }
            Value::Mapping(m)
        })
        .collect();
    file.insert(v("operators"), Value::Sequence(operators));
    let edges: Vec<Value> = graph
        .edges
        .iter()
        .map(|e| {
            let mut m = Mapping::new();
            m.insert(v("from"), v(&e.from));
            m.insert(v("to"), v(&e.to));
            m.insert(v("partition"), v(e.partitioning));
            if !e.key.is_empty() {
                m.insert(v("key"), v(&e.key));
            }
            if e.input != 0 {
                m.insert(v("input"), v(e.input));
            }
            if !e.output.is_empty() {
                m.insert(v("output"), v(&e.output));
            }
            Value::Mapping(m)
        })
        .collect();
    file.insert(v("edges"), Value::Sequence(edges));
    if let Some(c) = &graph.checkpoint {
        file.insert(v("checkpoints"), v(c));
    }
    serde_yaml_ng::to_string(&Value::Mapping(file)).expect("a mapping is representable in YAML")
}

/// 1-based lines of the items of the top-level `operators:` and `edges:`
/// sequences, found by indentation (block style) or by `{` (flow items).
#[derive(Debug, Default)]
struct ItemLines {
    operators: Vec<u32>,
    edges: Vec<u32>,
}

impl ItemLines {
    fn scan(text: &str) -> Self {
        let mut out = ItemLines::default();
        let mut section: Option<bool> = None; // Some(true): operators, Some(false): edges
        let mut item_indent: Option<usize> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split(" #").next().unwrap_or("");
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let indent = line.len() - line.trim_start().len();
            if indent == 0 {
                item_indent = None;
                section = if line.starts_with("operators:") {
                    Some(true)
                } else if line.starts_with("edges:") {
                    Some(false)
                } else {
                    None
                };
                continue;
            }
            let Some(which) = section else { continue };
            let trimmed = line.trim_start();
            if trimmed.starts_with("- ") || trimmed == "-" {
                let at = *item_indent.get_or_insert(indent);
                if indent == at {
                    let target = if which { &mut out.operators } else { &mut out.edges };
                    target.push(n as u32 + 1);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W1: &str = "\
name: w1
parallelism: 2
operators:
  - uid: gen
    kind: datagen
    config:
      events: 100
  # a comment
  - uid: sink
    kind: discard
edges:
  - {from: gen, to: sink}
";

    #[test]
    fn written_job_files_parse_back_to_the_same_graph() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let mut g = parse_job_yaml(&std::fs::read_to_string(&path).unwrap()).unwrap();
                let written = job_yaml(&g);
                let mut again =
                    parse_job_yaml(&written).unwrap_or_else(|e| panic!("{}: {e}\n{written}", path.display()));
                for graph in [&mut g, &mut again] {
                    graph.operators.iter_mut().for_each(|o| o.line = 0);
                    graph.edges.iter_mut().for_each(|e| e.line = 0);
                }
                assert_eq!(g, again, "{}", path.display());
                n += 1;
            }
        }
        assert!(n >= 8);
    }

    #[test]
    fn parses_operators_edges_and_lines() {
        let g = parse_job_yaml(W1).unwrap();
        assert_eq!(g.name, "w1");
        assert_eq!(g.default_parallelism, 2);
        assert_eq!(g.max_parallelism, 128);
        assert_eq!(g.operators[0].line, 4);
        assert_eq!(g.operators[1].line, 9);
        assert_eq!(g.operators[0].config["events"], 100);
        assert_eq!(g.edges[0].line, 12);
        assert_eq!(g.edges[0].partitioning, Partitioning::Forward);
    }

    #[test]
    fn a_parallelism_of_zero_is_refused_where_it_is_written() {
        let e = parse_job_yaml(&W1.replace("parallelism: 2", "parallelism: 0")).unwrap_err();
        assert_eq!((e.field.as_deref(), e.line, e.operator.as_deref()), (Some("parallelism"), 2, None), "{e}");
        assert!(e.message.contains("at least 1"), "{e}");
        let e = parse_job_yaml(&W1.replace("kind: discard", "kind: discard\n    parallelism: 0")).unwrap_err();
        assert_eq!((e.field.as_deref(), e.line, e.operator.as_deref()), (Some("parallelism"), 9, Some("sink")), "{e}");
        let e = parse_job_yaml(&W1.replace("parallelism: 2", "parallelism: 2\nmax_parallelism: 0")).unwrap_err();
        assert_eq!((e.field.as_deref(), e.line), (Some("max_parallelism"), 3), "{e}");
        let unset = parse_job_yaml(&W1.replace("parallelism: 2\n", "")).unwrap();
        assert_eq!(unset.default_parallelism, 0, "left out: the default");
    }

    #[test]
    fn an_empty_job_file_says_so() {
        for text in ["", "\n  \n", "# just a comment\n"] {
            let e = parse_job_yaml(text).unwrap_err();
            assert!(e.message.contains("the job file is empty"), "{e}");
        }
    }

    #[test]
    fn edges_may_leave_a_side_output() {
        let text = W1.replace("{from: gen, to: sink}", "{from: gen, output: late, to: sink}");
        assert_eq!(parse_job_yaml(&text).unwrap().edges[0].output, "late");
        assert_eq!(parse_job_yaml(W1).unwrap().edges[0].output, "", "the main output");
    }

    #[test]
    fn syntax_errors_carry_their_line() {
        let e = parse_job_yaml("name: x\noperators:\n  - uid: a\n   kind: [\n").unwrap_err();
        assert!(e.line >= 3, "{e:?}");
        assert!(e.message.starts_with("invalid job file"), "{e}");
    }

    #[test]
    fn unknown_fields_are_rejected_with_line() {
        let e = parse_job_yaml("name: x\noperators:\n  - uid: a\n    kind: datagen\n    paralelism: 2\n").unwrap_err();
        assert!(e.message.contains("unknown field `paralelism`"), "{e}");
        assert_eq!(e.line, 5, "the line of the unknown field");
    }

    #[test]
    fn unknown_partitioning_is_rejected() {
        let text = W1.replace("{from: gen, to: sink}", "{from: gen, to: sink, partition: shuffle}");
        let e = parse_job_yaml(&text).unwrap_err();
        assert!(e.message.contains("unknown variant `shuffle`"), "{e}");
    }
}
