//! A real OpenSearch node (Elasticsearch's REST API) for the search sink's
//! end-to-end tests, started from OpenSearch's jars on Maven Central by
//! `scripts/opensearch.sh` (which `scripts/test.sh` runs to fetch them), on
//! free loopback ports with a throwaway data directory.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;

use crate::{free_ports, http_json, repo, wait_until, Lifeline};

/// An OpenSearch node on 127.0.0.1, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct SearchNode {
    http: u16,
    transport: u16,
    dir: tempfile::TempDir,
    proc: Option<Lifeline>,
    starts: usize,
}

/// The directory `scripts/opensearch.sh fetch` prints (jars and launcher).
fn fetched() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("WEIR_OPENSEARCH_DIR") {
        return Ok(p.into());
    }
    let out = std::process::Command::new(repo().join("scripts/opensearch.sh"))
        .arg("fetch")
        .output()
        .context("running scripts/opensearch.sh fetch")?;
    anyhow::ensure!(
        out.status.success(),
        "scripts/opensearch.sh fetch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(PathBuf::from(text.lines().last().unwrap_or_default().trim()))
}

impl SearchNode {
    /// Starts a node with an empty data directory and waits until it answers.
    pub fn start() -> anyhow::Result<SearchNode> {
        let ports = free_ports(2);
        let mut node =
            SearchNode { http: ports[0], transport: ports[1], dir: tempfile::tempdir()?, proc: None, starts: 0 };
        node.launch()?;
        Ok(node)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let dir = fetched()?;
        self.starts += 1;
        let (http, transport) = (self.http.to_string(), self.transport.to_string());
        let data = self.dir.path().join("node");
        let args: Vec<&OsStr> =
            vec![OsStr::new("run"), dir.as_os_str(), OsStr::new(&http), OsStr::new(&transport), data.as_os_str()];
        let log = self.dir.path().join(format!("opensearch-{}.log", self.starts));
        let script = repo().join("scripts/opensearch.sh");
        self.proc = Some(Lifeline::start("opensearch", &script, &args, &[], &log, None)?);
        let url = self.url();
        wait_until("OpenSearch to answer", Duration::from_secs(120), || {
            let (status, _) = http_json("GET", &format!("{url}/_cluster/health"), None)?;
            Ok((status == 200).then_some(()))
        })
        .with_context(|| format!("starting OpenSearch; its log:\n{}", self.log()))
    }

    /// Its HTTP address, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// Kills the node (SIGKILL) and starts it again on the same ports and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(p) = self.proc.take() {
            p.stop();
        }
        self.launch()
    }

    /// Every document of `index` after a refresh: `_id` -> `_source`.
    pub fn documents(&self, index: &str) -> anyhow::Result<std::collections::BTreeMap<String, serde_json::Value>> {
        let url = self.url();
        let (status, _) = http_json("POST", &format!("{url}/{index}/_refresh"), None)?;
        if status == 404 {
            return Ok(Default::default());
        }
        let mut out = std::collections::BTreeMap::new();
        let body = serde_json::json!({"size": 10000, "query": {"match_all": {}}, "sort": ["_doc"]});
        let (status, v) = http_json(
            "POST",
            &format!("{url}/{index}/_search"),
            Some(("application/json", serde_json::to_vec(&body)?)),
        )?;
        anyhow::ensure!(status == 200, "searching {index}: {status} {v}");
        let hits = v["hits"]["hits"].as_array().cloned().unwrap_or_default();
        anyhow::ensure!(hits.len() < 10000, "more documents than one search returns");
        for h in hits {
            out.insert(h["_id"].as_str().unwrap_or_default().to_string(), h["_source"].clone());
        }
        Ok(out)
    }

    /// What the node logged.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|i| std::fs::read_to_string(self.dir.path().join(format!("opensearch-{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Its data directory.
    pub fn data(&self) -> &Path {
        self.dir.path()
    }
}

/// One node for the whole test process, started on first use.
pub fn shared() -> &'static SearchNode {
    static NODE: OnceLock<Result<SearchNode, String>> = OnceLock::new();
    match NODE.get_or_init(|| SearchNode::start().map_err(|e| format!("{e:#}"))) {
        Ok(n) => n,
        Err(e) => panic!("the shared OpenSearch node did not start: {e}"),
    }
}
