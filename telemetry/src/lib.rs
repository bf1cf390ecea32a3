//! What Weir's processes tell the people who run them: logging
//! ([`init_logging`]), Prometheus metrics ([`metrics::Exposition`]) and the
//! HTTP server their probes, metrics and REST routes are served on
//! ([`serve`]). The routes themselves belong to each process.

pub mod metrics;

use tokio_util::sync::CancellationToken;

/// Sends `tracing` events to stderr, filtered by `WEIR_LOG` (e.g. `info`,
/// `weir_runtime=debug`), or at `default` when it is unset.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// Serves `router` on `listener` in a task of its own until `shutdown`.
pub fn serve<L>(listener: L, router: axum::Router, shutdown: CancellationToken, what: &'static str)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(?addr, endpoint = what, "serving HTTP");
    }
    tokio::spawn(async move {
        let served = axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::warn!(endpoint = what, error = %e, "the HTTP server stopped");
        }
    });
}

/// The resident memory of this process (its RSS), where the system tells it
/// (Linux's `/proc/self/status`).
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// `text/plain` content type of Prometheus' text exposition.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
