//! The server roles of a Weir binary: a job manager or a task manager,
//! configured from a config file, environment variables and flags (in that
//! order of precedence, lowest first; see `docs/configuration.md`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use weir_config::load_section;
use weir_jobmanager::config::{ByteSize, JobManagerSection, Listen};
use weir_jobmanager::{Http, JobManager};
use weir_runtime::operators::Registry;
use weir_security::{SecuritySection, TlsArgs};
use weir_taskmanager::config::TaskManagerSection;
use weir_taskmanager::TaskManager;

/// Flags of the job manager role.
#[derive(Debug, Clone, clap::Args)]
pub struct JobManagerArgs {
    /// Address to serve gRPC on [default: 127.0.0.1:6123].
    #[arg(long, env = "WEIR_JOBMANAGER_RPC_ADDR")]
    rpc_addr: Option<SocketAddr>,
    /// Config file (its `jobmanager:` and `security:` sections are read).
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
    /// Task manager silence after which it is lost, e.g. `5s`.
    #[arg(long, env = "WEIR_JOBMANAGER_HEARTBEAT_TIMEOUT", value_parser = humantime::parse_duration)]
    heartbeat_timeout: Option<Duration>,
    /// Expected period of task manager heartbeats, e.g. `1s`.
    #[arg(long, env = "WEIR_JOBMANAGER_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration)]
    heartbeat_interval: Option<Duration>,
    /// Checkpoint storage of jobs that name none, and of job records
    /// (file:///dir, s3://bucket/prefix or hdfs://namenode:port/dir) [default:
    /// weir-checkpoints in the temp dir].
    #[arg(long, env = "WEIR_JOBMANAGER_CHECKPOINT_STORAGE")]
    checkpoint_storage: Option<String>,
    /// Directory for savepoints taken without `--target` (file:///dir,
    /// s3://bucket/prefix or hdfs://namenode:port/dir) [default: none; `weir
    /// savepoint` then needs a target].
    #[arg(long, env = "WEIR_JOBMANAGER_SAVEPOINT_DIR")]
    savepoint_dir: Option<String>,
    /// Address of the REST API and web UI (with /healthz and /readyz), or
    /// `off` [default: 127.0.0.1:8081].
    #[arg(long, env = "WEIR_JOBMANAGER_REST_ADDR")]
    rest_addr: Option<Listen>,
    /// Largest request body the REST API accepts, e.g. 4MiB [default: 4MiB].
    #[arg(long, env = "WEIR_JOBMANAGER_REST_MAX_BODY")]
    rest_max_body: Option<ByteSize>,
    /// File of `TOKEN ROLE` lines (role read or admin): the REST API then
    /// needs `Authorization: Bearer TOKEN` [default: none, open].
    #[arg(long, env = "WEIR_JOBMANAGER_REST_TOKEN_FILE")]
    rest_token_file: Option<PathBuf>,
    /// Address for the Prometheus endpoint (/metrics, also /healthz) [default: none].
    #[arg(long, env = "WEIR_JOBMANAGER_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// Flags of the task manager role.
#[derive(Debug, Clone, clap::Args)]
pub struct TaskManagerArgs {
    /// Job manager URL [default: http://127.0.0.1:6123].
    #[arg(long, env = "WEIR_TASKMANAGER_JOBMANAGER")]
    jobmanager: Option<String>,
    /// Number of slots [default: 1].
    #[arg(long, env = "WEIR_TASKMANAGER_SLOTS")]
    slots: Option<u32>,
    /// Address to serve gRPC on [default: 127.0.0.1:0].
    #[arg(long, env = "WEIR_TASKMANAGER_RPC_ADDR")]
    rpc_addr: Option<SocketAddr>,
    /// URL other processes reach this task manager at.
    #[arg(long, env = "WEIR_TASKMANAGER_ADVERTISED_ADDRESS")]
    advertised_address: Option<String>,
    /// Task manager id [default: random].
    #[arg(long, env = "WEIR_TASKMANAGER_ID")]
    id: Option<String>,
    /// Local working directory of state backends (RocksDB) [default: the temp dir].
    #[arg(long, env = "WEIR_TASKMANAGER_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Address for the HTTP endpoint serving /healthz, /readyz and /metrics
    /// (Prometheus) [default: none].
    #[arg(long, env = "WEIR_TASKMANAGER_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Config file (its `taskmanager:` and `security:` sections are read).
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// Runs a job manager until SIGTERM or Ctrl-C.
pub async fn jobmanager(args: JobManagerArgs, registry: Arc<Registry>) -> anyhow::Result<()> {
    let mut section: JobManagerSection = match &args.config {
        Some(p) => load_section(p, "jobmanager")?,
        None => JobManagerSection::default(),
    };
    section.rpc_addr = args.rpc_addr.or(section.rpc_addr);
    section.heartbeat_timeout = args.heartbeat_timeout.or(section.heartbeat_timeout);
    section.heartbeat_interval = args.heartbeat_interval.or(section.heartbeat_interval);
    section.checkpoint_storage = args.checkpoint_storage.or(section.checkpoint_storage);
    section.savepoint_dir = args.savepoint_dir.or(section.savepoint_dir);
    section.rest_addr = args.rest_addr.or(section.rest_addr);
    section.rest_max_body = args.rest_max_body.or(section.rest_max_body);
    section.rest_token_file = args.rest_token_file.or(section.rest_token_file);
    section.metrics_addr = args.metrics_addr.or(section.metrics_addr);
    let mut opts = section.options()?;
    let mut rest = section.rest_options()?;
    opts.security = security_section(args.config.as_deref(), &args.tls)?.resolve(rest.tokens.clone())?;
    let addr = section.rpc_addr.unwrap_or_else(|| JobManagerSection::DEFAULT_RPC_ADDR.parse().expect("valid default"));
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let mut jm = JobManager::start(listener, opts, registry)?;
    // REST takes SQL scripts too, compiled here: the job manager knows no SQL.
    if rest.tokens.is_none() && section.rest_listen().is_some_and(|a| !a.ip().is_loopback()) {
        tracing::warn!("the REST API listens beyond loopback without tokens: anyone who reaches it may submit and cancel jobs (see --rest-token-file)");
    }
    rest.sql = Some(Arc::new(|text: &str, name: &str| {
        let script = weir_sql::compile(text, name).map_err(|e| e.to_string())?;
        if script.explain {
            return Err("the script asks to EXPLAIN its job: run `weir explain` instead of submitting it".into());
        }
        Ok(script.graph)
    }));
    for (addr, what) in [(section.rest_listen(), Http::Rest), (section.metrics_addr, Http::Metrics)] {
        if let Some(addr) = addr {
            let flag = if what == Http::Rest { "--rest-addr ADDR|off" } else { "--metrics-addr" };
            let http = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} (set another address with {flag})"))?;
            jm.serve_http(http, what, rest.clone())?;
        }
    }
    tokio::select! {
        r = jm.wait() => r,
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            jm.shutdown().await
        }
    }
}

/// Runs a task manager until SIGTERM or Ctrl-C.
pub async fn taskmanager(args: TaskManagerArgs, registry: Arc<Registry>) -> anyhow::Result<()> {
    let mut s: TaskManagerSection = match &args.config {
        Some(p) => load_section(p, "taskmanager")?,
        None => TaskManagerSection::default(),
    };
    s.jobmanager = args.jobmanager.or(s.jobmanager);
    s.slots = args.slots.or(s.slots);
    s.rpc_addr = args.rpc_addr.or(s.rpc_addr);
    s.advertised_address = args.advertised_address.or(s.advertised_address);
    s.id = args.id.or(s.id);
    s.state_dir = args.state_dir.or(s.state_dir);
    s.metrics_addr = args.metrics_addr.or(s.metrics_addr);
    let mut opts = s.options()?;
    opts.security = security_section(args.config.as_deref(), &args.tls)?.resolve(None)?;
    let addr = s.rpc_addr.unwrap_or_else(|| "127.0.0.1:0".parse().expect("valid default"));
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let mut tm = TaskManager::start(listener, opts, registry)?;
    if let Some(addr) = s.metrics_addr {
        let http = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        tm.serve_http(http);
    }
    tokio::select! {
        r = tm.wait() => r,
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            tm.shutdown().await
        }
    }
}

/// The `security:` section of the config file (if any), under the flags.
pub(crate) fn security_section(config: Option<&std::path::Path>, tls: &TlsArgs) -> anyhow::Result<SecuritySection> {
    let mut section: SecuritySection = match config {
        Some(p) => load_section(p, "security")?,
        None => SecuritySection::default(),
    };
    section.apply(tls);
    Ok(section)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
