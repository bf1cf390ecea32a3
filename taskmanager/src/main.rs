//! `weir-taskmanager`: offers slots to a job manager and runs subtasks.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use weir_config::load_section;
use weir_taskmanager::config::TaskManagerSection;
use weir_taskmanager::TaskManager;

/// A Weir task manager.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
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
    metrics_addr: Option<std::net::SocketAddr>,
    /// Config file (its `taskmanager:` section is read).
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    weir_config::init_logging("info");
    let args = Args::parse();
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
    let opts = s.options()?;
    let addr = s.rpc_addr.unwrap_or_else(|| "127.0.0.1:0".parse().expect("valid default"));
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let mut tm = TaskManager::start(listener, opts)?;
    if let Some(addr) = s.metrics_addr {
        let http = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        tm.serve_http(http);
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    tokio::select! {
        r = tm.wait() => r,
        _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); tm.shutdown().await }
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted: shutting down"); tm.shutdown().await }
    }
}
