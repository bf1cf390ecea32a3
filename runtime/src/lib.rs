//! The core of Weir: everything a job is made of, independent of how it is
//! deployed or transported.
//!
//! - [`graph`]: the `JobGraph` model (operators with stable uids, typed edges),
//!   its validation, schema planning and operator chaining;
//! - [`spec`] and [`builder`]: the YAML job files and the Rust builder API, both
//!   producing the same [`graph::JobGraph`];
//! - [`keygroup`]: key hashing and key-group assignment;
//! - [`expr`]: SQL expressions compiled to DataFusion physical expressions;
//! - [`operators`]: the operator traits, the registry and the built-in operators;
//! - [`barrier`]: checkpoint barriers and their alignment across channels;
//! - [`checkpointing`]: a job's checkpoint and restart configuration;
//! - [`state`]: operator state as snapshots see it, and keyed state types;
//! - [`channel`] and [`task`]: in-band stream elements, credit-based channels and
//!   the task loop that runs a chain of operators.
//!
//! This crate must not depend on gRPC (tonic), object stores or config files:
//! task managers and the job manager adapt their transports to [`channel`].

pub mod barrier;
pub mod builder;
pub mod channel;
pub mod checkpointing;
pub mod error;
pub mod expr;
pub mod functions;
pub mod graph;
pub mod keygroup;
pub mod operators;
pub mod plan;
pub mod spec;
pub mod state;
pub mod task;

pub use error::{OperatorError, PlanError};
