//! A real Apache Kafka broker for end-to-end tests of the Kafka connectors:
//! transactions, fencing and restarts only behave like production against the
//! real thing, not a mock.
//!
//! One KRaft node (broker and controller, no ZooKeeper) on loopback, started
//! with `scripts/kafka.sh start` from the jars that `scripts/kafka.sh fetch`
//! puts in a cache; `scripts/test.sh` runs the fetch and exports the directory
//! as `WEIR_KAFKA_LIBS`.

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use crate::{free_port, repo, wait_until, Lifeline, Proc};

/// What the broker logs once it serves clients (Kafka 4.x prints
/// `[KafkaRaftServer nodeId=1] Kafka Server started`).
const READY: &str = "Kafka Server started";

/// Startup takes about 5 s on an idle two-core machine; tests run in parallel.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A single-node Kafka broker on 127.0.0.1, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct KafkaBroker {
    libs: PathBuf,
    port: u16,
    controller_port: u16,
    /// Data (`data/`), one log per start (`broker-N.log`) and tool outputs.
    dir: tempfile::TempDir,
    /// The running broker.
    proc: Option<Lifeline>,
    starts: usize,
    /// Whether the wrapper removes `dir` when the broker is killed: for the
    /// shared broker, which is never dropped.
    remove_dir: bool,
    /// The SASL_SSL listener's port, if any.
    sasl_port: Option<u16>,
    /// Environment of `scripts/kafka.sh start` (the SASL_SSL settings).
    env: Vec<(String, String)>,
}

impl KafkaBroker {
    /// Starts a broker on free ports with an empty data directory and waits
    /// until it serves clients.
    pub fn start() -> anyhow::Result<KafkaBroker> {
        Self::start_with(false)
    }

    fn start_with(remove_dir: bool) -> anyhow::Result<KafkaBroker> {
        let mut broker = Self::start_later()?;
        broker.remove_dir = remove_dir;
        broker.launch()?;
        Ok(broker)
    }

    /// A broker on free ports, not started yet.
    fn start_later() -> anyhow::Result<KafkaBroker> {
        let libs = PathBuf::from(std::env::var_os("WEIR_KAFKA_LIBS").context(
            "WEIR_KAFKA_LIBS is not set: run `scripts/kafka.sh fetch` and export WEIR_KAFKA_LIBS \
             as the directory it prints (scripts/test.sh does both)",
        )?);
        if !libs.is_dir() {
            bail!("WEIR_KAFKA_LIBS={} is not a directory: run `scripts/kafka.sh fetch`", libs.display());
        }
        let port = free_port();
        let controller_port = std::iter::repeat_with(free_port).find(|&p| p != port).expect("an endless iterator");
        let broker = KafkaBroker {
            libs,
            port,
            controller_port,
            dir: tempfile::tempdir()?,
            proc: None,
            starts: 0,
            remove_dir: false,
            sasl_port: None,
            env: Vec::new(),
        };
        Ok(broker)
    }

    /// A broker that also listens for SASL over TLS: `keystore` is a PEM
    /// file of its key and certificate chain, `ca` the PEM CA, and `users`
    /// name and password pairs (each a PLAIN, SCRAM-SHA-256 and
    /// SCRAM-SHA-512 user). Its PLAINTEXT listener stays open for the
    /// test's own tools.
    pub fn start_sasl_ssl(
        keystore: &std::path::Path,
        ca: &std::path::Path,
        users: &[(&str, &str)],
    ) -> anyhow::Result<KafkaBroker> {
        let mut broker = Self::start_later()?;
        let sasl_port = std::iter::repeat_with(free_port)
            .find(|p| *p != broker.port && *p != broker.controller_port)
            .expect("an endless iterator");
        let users: Vec<String> = users.iter().map(|(n, p)| format!("{n}={p}")).collect();
        broker.sasl_port = Some(sasl_port);
        broker.env = vec![
            ("KAFKA_SASL_SSL_PORT".into(), sasl_port.to_string()),
            ("KAFKA_SSL_KEYSTORE".into(), keystore.display().to_string()),
            ("KAFKA_SSL_TRUSTSTORE".into(), ca.display().to_string()),
            ("KAFKA_SASL_USERS".into(), users.join(" ")),
        ];
        broker.launch()?;
        Ok(broker)
    }

    /// The SASL_SSL bootstrap address, `127.0.0.1:PORT` (brokers started
    /// with [`KafkaBroker::start_sasl_ssl`]).
    pub fn sasl_ssl_bootstrap(&self) -> Option<String> {
        self.sasl_port.map(|p| format!("127.0.0.1:{p}"))
    }

    /// The bootstrap servers, `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker with SIGKILL (no clean shutdown) and waits until it
    /// is gone. Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(proc) = self.proc.take() {
            proc.stop();
        }
    }

    /// Stops the broker if it runs, then starts it again with the same ports
    /// and data, and waits until it serves clients.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch()
    }

    /// Creates a topic with `partitions` partitions (one replica) and waits
    /// until the command is done; fails if it exists.
    pub fn create_topic(&self, name: &str, partitions: u32) -> anyhow::Result<()> {
        let partitions = partitions.to_string();
        self.tool(
            "org.apache.kafka.tools.TopicCommand",
            &["--create", "--topic", name, "--partitions", &partitions, "--replication-factor", "1"],
        )?;
        Ok(())
    }

    /// Runs one of Kafka's command-line tools (a class of the `kafka-tools`
    /// jar, e.g. `org.apache.kafka.tools.TransactionsCommand`) with
    /// `--bootstrap-server` and `args`; returns its output, and fails on a
    /// non-zero exit or after 60 s.
    pub fn tool(&self, class: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = tempfile::Builder::new().prefix("tool-").suffix(".log").tempfile_in(self.dir.path())?;
        let child = Command::new("java")
            .args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp"])
            .arg(self.libs.join("*"))
            .arg(class)
            .args(["--bootstrap-server", &self.bootstrap()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.as_file().try_clone()?)
            .stderr(out.as_file().try_clone()?)
            .spawn()
            .with_context(|| format!("starting java {class} (is java installed?)"))?;
        let mut proc = Proc { child, name: class.to_string(), log: out.path().to_path_buf() };
        let status = proc.wait_exit(Duration::from_secs(60)).with_context(|| format!("{class} {args:?}"))?;
        let output = proc.log();
        if !status.success() {
            bail!("{class} {args:?} failed ({status}):\n{output}");
        }
        Ok(output)
    }

    /// Everything the broker logged, over all its starts, for failure messages.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                let path = self.dir.path().join(format!("broker-{n}.log"));
                format!("--- broker-{n}.log\n{}", std::fs::read_to_string(path).unwrap_or_default())
            })
            .collect()
    }

    /// Starts the wrapper and waits until the broker accepts connections and
    /// has logged that it started.
    fn launch(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let name = format!("broker-{}", self.starts);
        let log = self.dir.path().join(format!("{name}.log"));
        let script = repo().join("scripts").join("kafka.sh");
        let data = self.dir.path().join("data");
        let (port, controller) = (self.port.to_string(), self.controller_port.to_string());
        let args = [OsStr::new("start"), data.as_os_str(), OsStr::new(&port), OsStr::new(&controller)];
        let remove = self.remove_dir.then(|| self.dir.path());
        let mut env: Vec<(&str, &OsStr)> = vec![("WEIR_KAFKA_LIBS", self.libs.as_os_str())];
        env.extend(self.env.iter().map(|(k, v)| (k.as_str(), OsStr::new(v.as_str()))));
        let started =
            Lifeline::start(&name, &script, &args, &env, &log, remove).context("starting scripts/kafka.sh")?;
        let proc = &mut self.proc.insert(started).proc;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let ready = wait_until("the Kafka broker to start", START_TIMEOUT, || {
            if let Some(status) = proc.child.try_wait()? {
                return Ok(Some(Err(anyhow!("the broker exited ({status})"))));
            }
            let up = proc.log().contains(READY) && TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok();
            Ok(up.then_some(Ok(())))
        });
        ready.and_then(|r| r).with_context(|| format!("starting Kafka; broker log:\n{}", self.log()))
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One broker shared by the tests of a test binary that neither stop nor
/// restart it (each uses its own topics); started on first use, killed when
/// the test process exits, though statics are never dropped.
pub fn shared_kafka() -> &'static KafkaBroker {
    static BROKER: OnceLock<Result<KafkaBroker, String>> = OnceLock::new();
    // A failed start is kept, so the other tests fail at once instead of
    // waiting for a broker of their own.
    match BROKER.get_or_init(|| KafkaBroker::start_with(true).map_err(|e| format!("{e:#}"))) {
        Ok(broker) => broker,
        Err(e) => panic!("the shared Kafka broker did not start: {e}"),
    }
}
