//! Task manager configuration: the `taskmanager:` section of `weir.yaml`,
//! overridden by environment variables and flags (see `docs/configuration.md`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use crate::TaskManagerOptions;

/// The `taskmanager:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskManagerSection {
    /// Job manager URL (default `http://127.0.0.1:6123`).
    pub jobmanager: Option<String>,
    /// Address to serve gRPC on (default `127.0.0.1:0`, any free port).
    pub rpc_addr: Option<SocketAddr>,
    /// URL other processes reach this task manager at (default: from `rpc_addr`).
    pub advertised_address: Option<String>,
    /// Task manager id (default: `tm-` and 8 random hex digits).
    pub id: Option<String>,
    /// Slots offered (default 1).
    pub slots: Option<u32>,
    /// Longest wait of a partial output batch (default `10ms`).
    #[serde(default, with = "humantime_serde")]
    pub buffer_timeout: Option<Duration>,
    /// Rows at which an output batch is sent at once (default 1024).
    pub min_batch_rows: Option<usize>,
    /// Credits (batches in flight) per input channel (default 8).
    pub credits: Option<usize>,
    /// Local working directory of state backends (default: the system temp dir).
    pub state_dir: Option<std::path::PathBuf>,
    /// How much lower than the process's own scheduling priority task
    /// threads run (a nice increment, 0 to 19; default 10), so that
    /// checkpoint uploads, heartbeats and RPCs are not starved by busy tasks.
    pub task_nice: Option<i32>,
    /// S3 settings for checkpoint storage (default: the `AWS_*` environment).
    #[serde(default)]
    pub s3: Option<weir_state::S3Options>,
    /// Address of the HTTP endpoint for `/healthz`, `/readyz` and `/metrics`
    /// (default: none).
    pub metrics_addr: Option<SocketAddr>,
}

impl TaskManagerSection {
    /// Default job manager URL.
    pub const DEFAULT_JOBMANAGER: &'static str = "http://127.0.0.1:6123";

    /// Resolved options, checked.
    pub fn options(&self) -> anyhow::Result<TaskManagerOptions> {
        let slots = self.slots.unwrap_or(1);
        if slots == 0 {
            bail!("slots must be at least 1");
        }
        let mut o =
            TaskManagerOptions::new(self.jobmanager.clone().unwrap_or_else(|| Self::DEFAULT_JOBMANAGER.into()), slots);
        if let Some(id) = &self.id {
            if id.is_empty() {
                bail!("id must not be empty");
            }
            o.id = id.clone();
        }
        o.advertised_address = self.advertised_address.clone();
        if let Some(t) = self.buffer_timeout {
            if t.is_zero() {
                bail!("buffer_timeout must be positive");
            }
            o.task.buffer_timeout = t;
            o.task.tick = o.task.tick.min(t);
        }
        if let Some(r) = self.min_batch_rows {
            o.task.min_batch_rows = r.max(1);
        }
        if let Some(c) = self.credits {
            if c == 0 {
                bail!("credits must be at least 1");
            }
            o.credits = c;
        }
        if let Some(n) = self.task_nice {
            if !(0..=19).contains(&n) {
                bail!("task_nice must be between 0 and 19, not {n}");
            }
            o.task_nice = n;
        }
        if let Some(d) = &self.state_dir {
            o.state_dir = d.clone();
        }
        if let Some(s3) = &self.s3 {
            o.s3 = s3.clone();
        }
        Ok(o)
    }
}
