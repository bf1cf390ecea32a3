//! A real Apache Kafka broker for end-to-end tests of the Kafka connectors:
//! transactions, fencing and restarts only behave like production against the
//! real thing, not a mock.
//!
//! One KRaft node (broker and controller, no ZooKeeper) on loopback, started
//! with `scripts/kafka.sh start` from the jars that `scripts/kafka.sh fetch`
//! puts in a cache; `scripts/test.sh` runs the fetch and exports the directory
//! as `WEIR_KAFKA_LIBS`.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use crate::{free_port, repo, wait_until, Proc};

/// What the broker logs once it serves clients (Kafka 4.x prints
/// `[KafkaRaftServer nodeId=1] Kafka Server started`).
const READY: &str = "Kafka Server started";

/// Startup takes about 5 s on an idle two-core machine; tests run in parallel.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `scripts/kafka.sh start` in the background so that the broker never
/// outlives the test process, without `unsafe` (no `PR_SET_PDEATHSIG`): a
/// watcher reads this shell's stdin, a pipe only the test process holds, and
/// kills the broker (SIGKILL) when it closes: on `stop`, on drop, on exit
/// without destructors (a broker in a static) and when the test process is
/// killed. SIGINT/SIGTERM/SIGHUP to the shell kill it too (Ctrl-C reaches the
/// whole process group, and a background job of a script ignores SIGINT). The
/// shell exits once the broker is gone, so waiting on it waits on the broker.
///
/// Arguments: kafka.sh, data dir, port, controller port, and a directory to
/// remove after the broker is killed ("" for none).
const WRAPPER: &str = r#"
"$0" start "$1" "$2" "$3" & broker=$!
exec 3<&0
{ cat <&3 >/dev/null; kill -9 $broker 2>/dev/null; } &
watcher=$!
exec 3<&-
killed=
trap 'killed=1; kill -9 $broker 2>/dev/null' INT TERM HUP
wait $broker
status=$?
# A trapped signal cuts `wait` short: wait again until the broker is reaped.
while [ -n "$killed" ] && kill -0 $broker 2>/dev/null; do wait $broker; done
echo "broker stopped (status $status)"
# 137: SIGKILL, from the watcher.
[ $status -eq 137 ] || kill $watcher 2>/dev/null
if [ -n "$killed" ] || [ $status -eq 137 ]; then [ -z "$4" ] || rm -rf "$4"; fi
"#;

/// A single-node Kafka broker on 127.0.0.1, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct KafkaBroker {
    libs: PathBuf,
    port: u16,
    controller_port: u16,
    /// Data (`data/`), one log per start (`broker-N.log`) and tool outputs.
    dir: tempfile::TempDir,
    /// The wrapper shell of the running broker; its stdin is the lifeline.
    proc: Option<Proc>,
    starts: usize,
    /// Whether the wrapper removes `dir` when the broker is killed: for the
    /// shared broker, which is never dropped.
    remove_dir: bool,
}

impl KafkaBroker {
    /// Starts a broker on free ports with an empty data directory and waits
    /// until it serves clients.
    pub fn start() -> anyhow::Result<KafkaBroker> {
        Self::start_with(false)
    }

    fn start_with(remove_dir: bool) -> anyhow::Result<KafkaBroker> {
        let libs = PathBuf::from(std::env::var_os("WEIR_KAFKA_LIBS").context(
            "WEIR_KAFKA_LIBS is not set: run `scripts/kafka.sh fetch` and export WEIR_KAFKA_LIBS \
             as the directory it prints (scripts/test.sh does both)",
        )?);
        if !libs.is_dir() {
            bail!("WEIR_KAFKA_LIBS={} is not a directory: run `scripts/kafka.sh fetch`", libs.display());
        }
        let port = free_port();
        let controller_port = std::iter::repeat_with(free_port).find(|&p| p != port).expect("an endless iterator");
        let mut broker =
            KafkaBroker { libs, port, controller_port, dir: tempfile::tempdir()?, proc: None, starts: 0, remove_dir };
        broker.launch()?;
        Ok(broker)
    }

    /// The bootstrap servers, `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker with SIGKILL (no clean shutdown) and waits until it
    /// is gone. Does nothing if it is not running.
    pub fn stop(&mut self) {
        let Some(mut proc) = self.proc.take() else { return };
        // Closing the lifeline makes the wrapper kill the broker, reap it and exit.
        drop(proc.child.stdin.take());
        if proc.wait_exit(Duration::from_secs(30)).is_err() {
            proc.kill9();
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
        let file = File::create(&log)?;
        let remove = if self.remove_dir { self.dir.path().to_path_buf() } else { PathBuf::new() };
        let child = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg(repo().join("scripts").join("kafka.sh"))
            .arg(self.dir.path().join("data"))
            .arg(self.port.to_string())
            .arg(self.controller_port.to_string())
            .arg(remove)
            .env("WEIR_KAFKA_LIBS", &self.libs)
            .stdin(Stdio::piped())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting scripts/kafka.sh")?;
        let proc = self.proc.insert(Proc { child, name, log });
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
