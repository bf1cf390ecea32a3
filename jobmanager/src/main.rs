//! `weir-jobmanager`: serves job control and task manager membership.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use weir_config::load_section;
use weir_jobmanager::config::JobManagerSection;
use weir_jobmanager::{Http, JobManager};

/// The Weir job manager.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Address to serve gRPC on [default: 127.0.0.1:6123].
    #[arg(long, env = "WEIR_JOBMANAGER_RPC_ADDR")]
    rpc_addr: Option<SocketAddr>,
    /// Config file (its `jobmanager:` section is read).
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
    /// Task manager silence after which it is lost, e.g. `5s`.
    #[arg(long, env = "WEIR_JOBMANAGER_HEARTBEAT_TIMEOUT", value_parser = humantime::parse_duration)]
    heartbeat_timeout: Option<std::time::Duration>,
    /// Expected period of task manager heartbeats, e.g. `1s`.
    #[arg(long, env = "WEIR_JOBMANAGER_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration)]
    heartbeat_interval: Option<std::time::Duration>,
    /// Checkpoint storage of jobs that name none, and of job records
    /// (file:///dir or s3://bucket/prefix) [default: weir-checkpoints in the temp dir].
    #[arg(long, env = "WEIR_JOBMANAGER_CHECKPOINT_STORAGE")]
    checkpoint_storage: Option<String>,
    /// Directory for savepoints taken without `--target` (file:///dir or
    /// s3://bucket/prefix) [default: none; `weir savepoint` then needs a target].
    #[arg(long, env = "WEIR_JOBMANAGER_SAVEPOINT_DIR")]
    savepoint_dir: Option<String>,
    /// Address for the REST endpoint (/healthz, /readyz, /v1/jobs, /v1/overview) [default: none].
    #[arg(long, env = "WEIR_JOBMANAGER_REST_ADDR")]
    rest_addr: Option<SocketAddr>,
    /// Address for the Prometheus endpoint (/metrics, also /healthz) [default: none].
    #[arg(long, env = "WEIR_JOBMANAGER_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    weir_config::init_logging("info");
    let args = Args::parse();
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
    section.metrics_addr = args.metrics_addr.or(section.metrics_addr);
    let opts = section.options()?;
    let addr = section.rpc_addr.unwrap_or_else(|| JobManagerSection::DEFAULT_RPC_ADDR.parse().expect("valid default"));
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let mut jm = JobManager::start(listener, opts)?;
    for (addr, what) in [(section.rest_addr, Http::Rest), (section.metrics_addr, Http::Metrics)] {
        if let Some(addr) = addr {
            let http = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
            jm.serve_http(http, what);
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

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
