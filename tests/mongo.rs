//! A real MongoDB-compatible server for the MongoDB sink's end-to-end tests:
//! FerretDB over SQLite (built by `scripts/ferretdb.sh`, which
//! `scripts/test.sh` runs), on a free loopback port with a throwaway
//! directory, queried through the official MongoDB driver.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use mongodb::bson::{doc, Document};

use crate::{free_port, wait_until, Lifeline};

/// A FerretDB server on 127.0.0.1, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct MongoServer {
    port: u16,
    dir: tempfile::TempDir,
    proc: Option<Lifeline>,
    starts: usize,
}

fn ferretdb() -> PathBuf {
    if let Some(p) = std::env::var_os("WEIR_FERRETDB") {
        return p.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    Path::new(&home).join(".cache/weir/tools/bin/ferretdb")
}

/// The driver's calls run on a runtime of the test's own.
fn block_on<F: std::future::IntoFuture>(f: F) -> F::Output {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap())
        .block_on(f.into_future())
}

impl MongoServer {
    /// Starts a server with an empty directory and waits until it answers.
    pub fn start() -> anyhow::Result<MongoServer> {
        let mut s = MongoServer { port: free_port(), dir: tempfile::tempdir()?, proc: None, starts: 0 };
        s.launch()?;
        Ok(s)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let program = ferretdb();
        if !program.exists() {
            anyhow::bail!(
                "{} is missing: run scripts/test.sh (it builds FerretDB) or set WEIR_FERRETDB",
                program.display()
            );
        }
        self.starts += 1;
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let flags = [
            "--handler=sqlite".to_string(),
            format!("--sqlite-url=file:{}/", data.display()),
            format!("--listen-addr=127.0.0.1:{}", self.port),
            "--debug-addr=-".into(),
            "--telemetry=disable".into(),
            format!("--state-dir={}", self.dir.path().display()),
            "--log-level=warn".into(),
        ];
        let args: Vec<&OsStr> = flags.iter().map(OsStr::new).collect();
        let log = self.dir.path().join(format!("ferretdb-{}.log", self.starts));
        self.proc = Some(Lifeline::start("ferretdb", &program, &args, &[], &log, None)?);
        let uri = self.uri();
        wait_until("FerretDB to answer a ping", Duration::from_secs(30), || {
            let client = block_on(mongodb::Client::with_uri_str(&uri))?;
            block_on(client.database("admin").run_command(doc! {"ping": 1}))?;
            Ok(Some(()))
        })
        .with_context(|| format!("starting FerretDB; its log:\n{}", self.log()))
    }

    /// Its connection string.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=2000", self.port)
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(p) = self.proc.take() {
            p.stop();
        }
        self.launch()
    }

    /// Every document of `database.collection`, sorted by `_id`.
    pub fn documents(&self, database: &str, collection: &str) -> anyhow::Result<Vec<Document>> {
        let uri = self.uri();
        block_on(async move {
            let client = mongodb::Client::with_uri_str(&uri).await?;
            let mut cursor = client
                .database(database)
                .collection::<Document>(collection)
                .find(doc! {})
                .sort(doc! {"_id": 1})
                .await?;
            let mut out = Vec::new();
            while cursor.advance().await? {
                out.push(cursor.deserialize_current()?);
            }
            Ok(out)
        })
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|i| std::fs::read_to_string(self.dir.path().join(format!("ferretdb-{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One server for the whole test process, started on first use.
pub fn shared() -> &'static MongoServer {
    static SERVER: OnceLock<Result<MongoServer, String>> = OnceLock::new();
    match SERVER.get_or_init(|| MongoServer::start().map_err(|e| format!("{e:#}"))) {
        Ok(s) => s,
        Err(e) => panic!("the shared FerretDB server did not start: {e}"),
    }
}
