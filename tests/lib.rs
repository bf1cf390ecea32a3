//! Helpers for end-to-end tests: start the real `weir-jobmanager` and
//! `weir-taskmanager` binaries on loopback, drive them with the real `weir`
//! CLI, and wait on conditions with deadlines (never bare sleeps).
//!
//! The binaries must be built first (`cargo build --bins`); the README's test
//! command does that.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub mod broker;
pub mod chart;
pub mod databases;
pub mod dfs;
pub mod mongo;
pub mod pki;
pub mod s3;
pub mod search;

/// Path of a binary of this workspace, next to the test executable's `deps/`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: build the binaries first (cargo build --bins)", path.display());
    path
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the repository").to_path_buf()
}

/// A name no other test of this run uses (a topic, a directory, an index,
/// a database): `prefix`, the process id and a counter, joined by `sep`
/// (`-`, or `_` where the name must be an SQL identifier).
pub fn unique(prefix: &str, sep: char) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}{sep}{}{sep}{n}", std::process::id())
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("binding an ephemeral port").port()
}

/// `n` distinct free TCP ports on 127.0.0.1 (held together while chosen,
/// so that no two are the same).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port")).collect();
    held.iter().map(|l| l.local_addr().expect("a local address").port()).collect()
}

/// A small deterministic generator (xorshift64) for choices a test must be
/// able to replay from its seed (kill moments, crash points). The seed must
/// not be 0.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            match last_err {
                Some(e) => bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}"),
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` on `addr` (`host:port`): the status code and body.
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no status code")?;
    Ok((status, body.to_string()))
}

/// Sends an HTTP request (with a body of the given content type, if any)
/// and answers the status and the body.
pub fn http(method: &str, url: &str, body: Option<(&str, Vec<u8>)>) -> anyhow::Result<(u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).no_proxy().build()?;
        let mut req = client.request(reqwest::Method::from_bytes(method.as_bytes())?, url);
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let res = req.send().await.with_context(|| format!("{method} {url}"))?;
        let status = res.status().as_u16();
        Ok((status, res.text().await?))
    })
}

/// [`http`] with a JSON answer.
pub fn http_json(method: &str, url: &str, body: Option<(&str, Vec<u8>)>) -> anyhow::Result<(u16, serde_json::Value)> {
    let (status, text) = http(method, url, body)?;
    let doc = serde_json::from_str(&text)
        .with_context(|| format!("{method} {url} answered {status} with no JSON: {text}"))?;
    Ok((status, doc))
}

/// Values of metric `name` in a Prometheus text document whose labels
/// include every one of `labels`.
pub fn metric_values(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse().ok())
                .flatten()
        })
        .collect()
}

/// Sorted lines of the committed part files of a `jsonl_file` sink's
/// directory; fails if uncommitted (in-progress) files remain.
pub fn committed(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for e in std::fs::read_dir(dir).expect("output directory").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".inprogress"), "uncommitted file left behind: {name}");
        if name.ends_with(".jsonl") {
            lines.extend(std::fs::read_to_string(e.path()).unwrap().lines().map(str::to_string));
        }
    }
    lines.sort();
    lines
}

/// A child process killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its name, for messages.
    pub name: String,
    log: PathBuf,
}

impl Proc {
    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        let pid = self.child.id() as i32;
        let _ = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
    }

    /// Kills with SIGKILL and reaps.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for exit within `timeout`; returns the exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let name = self.name.clone();
        wait_until(&format!("{name} to exit"), timeout, || Ok(self.child.try_wait()?))
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a server process so that it never outlives the test process,
/// without `unsafe` (no `PR_SET_PDEATHSIG`): a watcher reads this shell's
/// stdin, a pipe only the test process holds, and kills the server
/// (SIGKILL) when it closes: on [`Lifeline::stop`], on drop, on exit without
/// destructors (a server in a static) and when the test process is killed.
/// SIGINT/SIGTERM/SIGHUP to the shell kill it too (Ctrl-C reaches the whole
/// process group, and a background job of a script ignores SIGINT). The
/// shell exits once the server is gone, so waiting on it waits on the
/// server.
///
/// Arguments: `$0` a directory to remove after the server is killed (""
/// for none), then the server's command line.
const LIFELINE: &str = r#"
remove="$0"
"$@" & server=$!
exec 3<&0
{ cat <&3 >/dev/null; kill -9 $server 2>/dev/null; } &
watcher=$!
exec 3<&-
killed=
trap 'killed=1; kill -9 $server 2>/dev/null' INT TERM HUP
wait $server
status=$?
# A trapped signal cuts `wait` short: wait again until the server is reaped.
while [ -n "$killed" ] && kill -0 $server 2>/dev/null; do wait $server; done
echo "server stopped (status $status)"
# 137: SIGKILL, from the watcher.
[ $status -eq 137 ] || kill $watcher 2>/dev/null
if [ -n "$killed" ] || [ $status -eq 137 ]; then [ -z "$remove" ] || rm -rf "$remove"; fi
"#;

/// A server started through [`LIFELINE`].
#[derive(Debug)]
pub struct Lifeline {
    /// The wrapper shell; its stdin is the lifeline.
    pub proc: Proc,
}

impl Lifeline {
    /// Starts `program args` with its output in `log`; `remove` (if any) is
    /// deleted once the server is killed.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[&std::ffi::OsStr],
        env: &[(&str, &std::ffi::OsStr)],
        log: &Path,
        remove: Option<&Path>,
    ) -> anyhow::Result<Lifeline> {
        let file = std::fs::File::create(log)?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(LIFELINE)
            .arg(remove.unwrap_or(Path::new("")))
            .arg(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Lifeline { proc: Proc { child, name: name.to_string(), log: log.to_path_buf() } })
    }

    /// Kills the server (SIGKILL, no clean shutdown) and waits until it is gone.
    pub fn stop(mut self) {
        // Closing the lifeline makes the wrapper kill the server, reap it and exit.
        drop(self.proc.child.stdin.take());
        if self.proc.wait_exit(Duration::from_secs(30)).is_err() {
            self.proc.kill9();
        }
    }
}

/// A job manager and task managers, each its own process.
#[derive(Debug)]
pub struct Cluster {
    /// Job manager URL.
    pub url: String,
    /// Address of the job manager's REST API (`127.0.0.1:port`).
    pub rest: String,
    /// The job manager process.
    pub jobmanager: Proc,
    /// Task manager processes, by id.
    pub taskmanagers: Vec<(String, Proc)>,
    /// Scratch directory (logs, job files, outputs).
    pub dir: tempfile::TempDir,
    jm_args: Vec<String>,
    slots: u32,
    env: Vec<(String, String)>,
    /// Environment of the `weir` CLI runs (its certificate or token).
    pub cli_env: Vec<(String, String)>,
}

/// Starts `cmd` with its output in `<dir>/<name>.log`, killed when dropped.
pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> anyhow::Result<Proc> {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log)?;
    // `info` unless the caller asked for another level.
    if !cmd.get_envs().any(|(k, _)| k == "WEIR_LOG") {
        cmd.env("WEIR_LOG", "info");
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Proc { child, name: name.to_string(), log })
}

impl Cluster {
    /// Starts a job manager (with `heartbeat_timeout`) and `tms` task
    /// managers with `slots` slots each, and waits until all registered.
    pub fn start(tms: usize, slots: u32, heartbeat_timeout: &str) -> anyhow::Result<Cluster> {
        Self::start_with(tms, slots, heartbeat_timeout, &[])
    }

    /// [`Cluster::start`] with more flags for the job manager. Its storage
    /// is `jobmanager-storage` in the scratch directory unless the flags
    /// name one (`--checkpoint-storage`).
    pub fn start_with(tms: usize, slots: u32, heartbeat_timeout: &str, jm_flags: &[&str]) -> anyhow::Result<Cluster> {
        Self::start_with_env(tms, slots, heartbeat_timeout, jm_flags, &[])
    }

    /// [`Cluster::start_with`] with environment variables for every process
    /// of the cluster, restarted ones included (e.g. S3 credentials).
    pub fn start_with_env(
        tms: usize,
        slots: u32,
        heartbeat_timeout: &str,
        jm_flags: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Cluster> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Self::start_secure(tms, slots, heartbeat_timeout, jm_flags, env, Vec::new())
    }

    /// [`Cluster::start_with_env`] where the `weir` CLI runs with `cli_env`.
    /// With `WEIR_TLS_CA` in `env`, the cluster speaks TLS and its address
    /// is `https://`.
    pub fn start_secure(
        tms: usize,
        slots: u32,
        heartbeat_timeout: &str,
        jm_flags: &[&str],
        env: Vec<(String, String)>,
        cli_env: Vec<(String, String)>,
    ) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let ports = free_ports(2);
        let scheme = if env.iter().any(|(k, _)| k == "WEIR_TLS_CA") { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{}", ports[0]);
        let rest = format!("127.0.0.1:{}", ports[1]);
        let mut jm_args = vec![
            "--rpc-addr".to_string(),
            format!("127.0.0.1:{}", ports[0]),
            "--rest-addr".into(),
            rest.clone(),
            "--heartbeat-interval".into(),
            "250ms".into(),
            "--heartbeat-timeout".into(),
            heartbeat_timeout.into(),
        ];
        if !jm_flags.contains(&"--checkpoint-storage") {
            jm_args.push("--checkpoint-storage".into());
            jm_args.push(format!("file://{}", dir.path().join("jobmanager-storage").display()));
        }
        jm_args.extend(jm_flags.iter().map(|f| f.to_string()));
        let jobmanager =
            spawn("jobmanager", Command::new(bin("weir-jobmanager")).args(&jm_args).envs(env.clone()), dir.path())?;
        let mut taskmanagers = Vec::new();
        for i in 0..tms {
            let id = format!("tm-{}", (b'a' + i as u8) as char);
            let p = spawn(
                &id,
                Command::new(bin("weir-taskmanager"))
                    .args(["--jobmanager", &url, "--slots", &slots.to_string(), "--id", &id])
                    .arg("--state-dir")
                    .arg(dir.path().join("state"))
                    .envs(env.clone()),
                dir.path(),
            )?;
            taskmanagers.push((id, p));
        }
        let cluster = Cluster { url, rest, jobmanager, taskmanagers, dir, jm_args, slots, env, cli_env };
        wait_until("task managers to register", Duration::from_secs(30), || {
            let out = cluster.weir_json(&["taskmanagers"])?;
            let n = out["task_managers"].as_array().map(|a| a.len()).unwrap_or(0);
            Ok((n == tms).then_some(()))
        })?;
        Ok(cluster)
    }

    /// Starts task manager `id` with `slots` slots and extra environment
    /// variables (e.g. failpoints), and waits until it registered.
    pub fn start_taskmanager(&mut self, id: &str, slots: u32, env: &[(&str, &str)]) -> anyhow::Result<()> {
        self.spawn_taskmanager(id, slots, env)?;
        let want = id.to_string();
        wait_until(&format!("{id} to register"), Duration::from_secs(30), || {
            let out = self.weir_json(&["taskmanagers"])?;
            let found = out["task_managers"]
                .as_array()
                .is_some_and(|a| a.iter().any(|t| t["id"].as_str() == Some(want.as_str())));
            Ok(found.then_some(()))
        })
    }

    /// [`Cluster::start_taskmanager`] without waiting for the registration.
    pub fn spawn_taskmanager(&mut self, id: &str, slots: u32, env: &[(&str, &str)]) -> anyhow::Result<()> {
        let n = std::fs::read_dir(self.dir.path())?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(id))
            .count();
        let name = if n == 0 { id.to_string() } else { format!("{id}-{}", n + 1) };
        let mut cmd = Command::new(bin("weir-taskmanager"));
        cmd.args(["--jobmanager", &self.url, "--slots", &slots.to_string(), "--id", id])
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .envs(self.env.clone());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let p = spawn(&name, &mut cmd, self.dir.path())?;
        self.taskmanagers.retain(|(i, _)| i != id);
        self.taskmanagers.push((id.to_string(), p));
        Ok(())
    }

    /// Kills task manager `id` if it still runs and starts it again with
    /// the same slots; its log goes to `<id>-2.log` and so on.
    pub fn restart_taskmanager(&mut self, id: &str) -> anyhow::Result<()> {
        self.taskmanager(id).kill9();
        let slots = self.slots;
        self.start_taskmanager(id, slots, &[])
    }

    /// Starts the job manager again with the same arguments (after it was
    /// killed); its log goes to `jobmanager-2.log` and so on.
    pub fn restart_jobmanager(&mut self) -> anyhow::Result<()> {
        self.restart_jobmanager_with(&[])
    }

    /// [`Cluster::restart_jobmanager`] with extra environment variables
    /// for the new process (e.g. failpoints).
    pub fn restart_jobmanager_with(&mut self, env: &[(&str, &str)]) -> anyhow::Result<()> {
        self.jobmanager.kill9();
        let n = std::fs::read_dir(self.dir.path())?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("jobmanager"))
            .count();
        let name = format!("jobmanager-{}", n + 1);
        let mut cmd = Command::new(bin("weir-jobmanager"));
        cmd.args(&self.jm_args).envs(self.env.clone());
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.jobmanager = spawn(&name, &mut cmd, self.dir.path())?;
        Ok(())
    }

    /// Runs `weir ARGS --jobmanager URL`.
    pub fn weir(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(Command::new(bin("weir"))
            .args(args)
            .args(["--jobmanager", &self.url])
            .envs(self.cli_env.clone())
            .output()?)
    }

    /// Runs `weir ARGS --output json` and parses stdout; fails on a non-zero exit.
    pub fn weir_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let out = Command::new(bin("weir"))
            .args(args)
            .args(["--jobmanager", &self.url, "--output", "json"])
            .envs(self.cli_env.clone())
            .output()?;
        if !out.status.success() {
            bail!("weir {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("parsing: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Submits a job file; returns the job id.
    pub fn submit(&self, job: &Path, extra: &[&str]) -> anyhow::Result<String> {
        let mut args = vec!["run", job.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        let v = self.weir_json(&args)?;
        Ok(v["job_id"].as_str().context("job_id")?.to_string())
    }

    /// Waits for the job to reach one of `states`; returns its status.
    pub fn wait_state(&self, job: &str, states: &[&str], timeout: Duration) -> anyhow::Result<serde_json::Value> {
        wait_until(&format!("job {job} to reach {states:?}"), timeout, || {
            let s = self.weir_json(&["status", job])?;
            let state = s["state"].as_str().unwrap_or("");
            Ok(states.contains(&state).then_some(s))
        })
    }

    /// Writes a file into the scratch directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("writing a scratch file");
        p
    }

    /// The process of task manager `id`.
    pub fn taskmanager(&mut self, id: &str) -> &mut Proc {
        &mut self.taskmanagers.iter_mut().find(|(i, _)| i == id).expect("task manager id").1
    }

    /// Logs of every process, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = format!("--- jobmanager\n{}", self.jobmanager.log());
        for (id, p) in &self.taskmanagers {
            s.push_str(&format!("--- {id}\n{}", p.log()));
        }
        s
    }
}

/// A job file from `jobs/` with text substitutions applied.
pub fn job_file(name: &str, replace: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(repo().join("jobs").join(name)).expect("reading a job file");
    for (from, to) in replace {
        assert!(text.contains(from), "{name} does not contain {from:?}");
        text = text.replace(from, to);
    }
    text
}
