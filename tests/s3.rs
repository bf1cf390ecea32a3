//! A real S3-compatible server (`s3s-fs`, installed by `scripts/test.sh`
//! from crates.io) on loopback for end-to-end tests of what Weir writes to
//! object storage. Objects are plain files under its root directory
//! (`<root>/<bucket>/<key>`), so tests read them back from the disk.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;

use crate::{free_port, wait_until, Lifeline};

/// The access key the server accepts.
pub const ACCESS_KEY: &str = "weirkey";
/// Its secret.
pub const SECRET_KEY: &str = "weirsecret";

/// An `s3s-fs` server on 127.0.0.1.
#[derive(Debug)]
pub struct S3Server {
    port: u16,
    root: PathBuf,
    /// Logs and the root.
    dir: PathBuf,
    proc: Option<Lifeline>,
    /// Dropped after the process: an own server's directory.
    _temp: Option<tempfile::TempDir>,
}

fn s3s_fs() -> PathBuf {
    if let Some(p) = std::env::var_os("WEIR_S3S_FS") {
        return p.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    Path::new(&home).join(".cache/weir/tools/bin/s3s-fs")
}

impl S3Server {
    /// Starts a server whose root holds the buckets `buckets`; it and its
    /// root go when the test process exits.
    fn start(buckets: &[&str]) -> anyhow::Result<S3Server> {
        let dir = tempfile::tempdir()?.keep();
        let mut server = S3Server { port: free_port(), root: dir.join("root"), dir, proc: None, _temp: None };
        server.create(buckets)?;
        server.proc = Some(server.launch(true)?);
        Ok(server)
    }

    /// A server of the calling test's own, which it may stop and start
    /// again ([`S3Server::stop`], [`S3Server::resume`]); it and its root go
    /// when it is dropped.
    pub fn own(buckets: &[&str]) -> anyhow::Result<S3Server> {
        let temp = tempfile::tempdir()?;
        let dir = temp.path().to_path_buf();
        let mut server = S3Server { port: free_port(), root: dir.join("root"), dir, proc: None, _temp: Some(temp) };
        server.create(buckets)?;
        server.proc = Some(server.launch(false)?);
        Ok(server)
    }

    fn create(&self, buckets: &[&str]) -> anyhow::Result<()> {
        for b in buckets {
            std::fs::create_dir_all(self.root.join(b))?;
        }
        Ok(())
    }

    /// Starts the server process on this server's port and root; with
    /// `remove`, the process deletes the directory when it is killed.
    fn launch(&self, remove: bool) -> anyhow::Result<Lifeline> {
        let port = self.port;
        let port_s = port.to_string();
        let flags = ["--host", "127.0.0.1", "--port", &port_s, "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY];
        let args: Vec<&std::ffi::OsStr> =
            flags.iter().map(std::ffi::OsStr::new).chain([self.root.as_os_str()]).collect();
        let program = s3s_fs();
        if !program.exists() {
            anyhow::bail!(
                "{} is missing: run scripts/test.sh (it installs s3s-fs) or set WEIR_S3S_FS",
                program.display()
            );
        }
        let n = std::fs::read_dir(&self.dir)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .count();
        let log = self.dir.join(format!("s3s-fs-{}.log", n + 1));
        let remove = remove.then_some(self.dir.as_path());
        let proc = Lifeline::start("s3s-fs", &program, &args, &[], &log, remove)?;
        wait_until("s3s-fs to listen", Duration::from_secs(30), || {
            Ok(TcpStream::connect(("127.0.0.1", port)).is_ok().then_some(()))
        })
        .context("starting s3s-fs")?;
        Ok(proc)
    }

    /// Kills the server (SIGKILL): requests are refused until
    /// [`S3Server::resume`]. Objects stay on disk.
    pub fn stop(&mut self) {
        if let Some(p) = self.proc.take() {
            p.stop();
        }
    }

    /// Starts the server again on the same port over the same objects.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.proc.is_none(), "the server runs");
        self.proc = Some(self.launch(false)?);
        Ok(())
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where object `key` of `bucket` lives on disk.
    pub fn local(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// The environment a task manager needs for this server's credentials.
    pub fn env(&self) -> [(&'static str, &'static str); 3] {
        [("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY), ("AWS_REGION", "us-east-1")]
    }
}

/// One server shared by the tests of a test binary, with the bucket
/// `weir-lake`; each test writes under its own prefix.
pub fn shared_s3() -> &'static S3Server {
    static SERVER: OnceLock<Result<S3Server, String>> = OnceLock::new();
    match SERVER.get_or_init(|| S3Server::start(&["weir-lake"]).map_err(|e| format!("{e:#}"))) {
        Ok(s) => s,
        Err(e) => panic!("the shared S3 server did not start: {e}"),
    }
}
