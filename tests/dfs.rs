//! A real HDFS for the tests of what Weir keeps on `hdfs://`: a NameNode and
//! a DataNode in one JVM (Hadoop's MiniDFSCluster), started from Hadoop's
//! jars on Maven Central by `scripts/hdfs.sh` (which `scripts/test.sh` runs
//! to fetch them), on a free loopback port with a throwaway directory.
//! Tests read back what jobs wrote through Weir's own storage layer
//! (`hdfs-native`), over the NameNode's and DataNode's real sockets.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use crate::{free_port, repo, wait_until, Lifeline};

/// An HDFS on 127.0.0.1, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Dfs {
    port: u16,
    dir: tempfile::TempDir,
    proc: Option<Lifeline>,
    starts: usize,
}

/// The directory `scripts/hdfs.sh fetch` prints (jars and launcher).
fn fetched() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("WEIR_HDFS_DIR") {
        return Ok(p.into());
    }
    let out = std::process::Command::new(repo().join("scripts/hdfs.sh"))
        .arg("fetch")
        .output()
        .context("running scripts/hdfs.sh fetch")?;
    anyhow::ensure!(out.status.success(), "scripts/hdfs.sh fetch failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(PathBuf::from(text.lines().last().unwrap_or_default().trim()))
}

impl Dfs {
    /// Starts an empty file system and waits until it takes writes.
    pub fn start() -> anyhow::Result<Dfs> {
        let mut dfs = Dfs { port: free_port(), dir: tempfile::tempdir()?, proc: None, starts: 0 };
        dfs.launch()?;
        Ok(dfs)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let dir = fetched()?;
        self.starts += 1;
        let port = self.port.to_string();
        let base = self.dir.path().join("dfs");
        let args: Vec<&OsStr> = vec![OsStr::new("run"), dir.as_os_str(), OsStr::new(&port), base.as_os_str()];
        let log = self.log_path(self.starts);
        let script = repo().join("scripts/hdfs.sh");
        self.proc = Some(Lifeline::start("hdfs", &script, &args, &[], &log, None)?);
        // The launcher prints its line once the DataNode registered and safe mode is over.
        wait_until("HDFS to be up", Duration::from_secs(120), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Ok(text.contains("WEIR-DFS-READY").then_some(()))
        })
        .with_context(|| format!("starting HDFS; its log:\n{}", self.log()))
    }

    fn log_path(&self, start: usize) -> PathBuf {
        self.dir.path().join(format!("hdfs-{start}.log"))
    }

    /// Its URL, `hdfs://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("hdfs://127.0.0.1:{}", self.port)
    }

    /// Kills the NameNode and DataNode (SIGKILL) and starts them again on
    /// the same port and directories: the files stay.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(p) = self.proc.take() {
            p.stop();
        }
        self.launch()
    }

    /// The paths of every file under `dir` (a path inside the file system,
    /// no leading `/`), relative to `dir`, sorted.
    pub fn list(&self, dir: &str) -> anyhow::Result<Vec<String>> {
        Ok(self.collect(dir, |_| false)?.into_iter().map(|(rel, _)| rel).collect())
    }

    /// The bytes of file `rel` under `dir`. Only for files no one writes
    /// any more: the client refuses a file whose length changes under it.
    pub fn read(&self, dir: &str, rel: &str) -> anyhow::Result<Vec<u8>> {
        let found = self.collect(dir, |r| r == rel)?.into_iter().find(|(r, _)| r == rel);
        Ok(found.with_context(|| format!("no file {rel} under {dir}"))?.1.unwrap_or_default())
    }

    /// Every committed file under `dir` (see [`visible`]): its path
    /// relative to `dir` and its bytes, sorted by path.
    pub fn files(&self, dir: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        Ok(self.collect(dir, visible)?.into_iter().filter_map(|(rel, b)| Some((rel, b?))).collect())
    }

    /// The files under `dir`, sorted by path, with the bytes of those
    /// `read` picks: one store and one listing for the whole call.
    fn collect(&self, dir: &str, read: impl Fn(&str) -> bool) -> anyhow::Result<Vec<(String, Option<Vec<u8>>)>> {
        let (store, prefix) = weir_state::object_store_for(&format!("{}/{dir}", self.url()), &Default::default())?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let root = object_store::path::Path::from(prefix.as_str());
            let mut listed: Vec<object_store::ObjectMeta> = store.list(Some(&root)).try_collect().await?;
            listed.sort_by(|a, b| a.location.cmp(&b.location));
            let mut out = Vec::new();
            for m in listed {
                let rel = m.location.as_ref().strip_prefix(&format!("{prefix}/")).unwrap_or(m.location.as_ref());
                let bytes = if read(rel) { Some(store.get(&m.location).await?.bytes().await?.to_vec()) } else { None };
                out.push((rel.to_string(), bytes));
            }
            Ok(out)
        })
    }

    /// What the cluster logged.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|i| std::fs::read_to_string(self.log_path(i)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Whether a path relative to a sink's directory is a committed file: no
/// part of it hidden (`.x`) or internal (`_x`), as Hive and Spark read them.
pub fn visible(rel: &str) -> bool {
    rel.split('/').all(|p| !p.starts_with('.') && !p.starts_with('_'))
}

/// One file system shared by the tests of a test binary; each test works
/// under its own directory.
pub fn shared() -> &'static Dfs {
    static DFS: OnceLock<Result<Dfs, String>> = OnceLock::new();
    match DFS.get_or_init(|| Dfs::start().map_err(|e| format!("{e:#}"))) {
        Ok(d) => d,
        Err(e) => panic!("the shared HDFS did not start: {e}"),
    }
}
