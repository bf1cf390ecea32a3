//! The `weir` command line and the process roles, as a library: the stock
//! binaries (`weir`, `weir-jobmanager`, `weir-taskmanager`) and every
//! user application are an [`Application`] — a registry of operator kinds,
//! optionally jobs built in code — run from `main`.
//!
//! The client commands talk to a job manager over gRPC only; the server
//! roles and the embedded cluster start the job manager and task manager
//! libraries in this process.

mod app;
mod bench;
mod client;
mod embedded;
mod local;
mod output;
mod progress;
mod roles;
mod savepoint;
mod shell;

pub use app::{Application, JobArgs, JobFactory};
pub use bench::BenchWorkload;
pub use local::{JobStatus, LocalCluster};
pub use roles::{JobManagerArgs, TaskManagerArgs};
