//! Weir for its users: the typed DataStream API over `serde` types, and
//! applications — one binary that is job manager, task manager, submitter
//! and embedded runner.
//!
//! A job is built in a [`StreamEnvironment`]: streams of records come from
//! a [`Source`], are transformed by closures ([`DataStream::map`],
//! [`DataStream::filter`], …) and by functions with keyed state and timers
//! ([`KeyedProcessFunction`]), cut into event-time windows
//! ([`KeyedStream::window`]), and end in a [`Sink`]. Every typed operator
//! compiles to an ordinary operator of the job graph — planned, deployed,
//! checkpointed and restored by uid like the built-in ones — so a typed
//! job takes savepoints, rescales and restores exactly as a YAML job does.
//!
//! Records travel as Arrow batches: a record type is any `serde` struct
//! whose fields Arrow can hold (see [`Record`]). Keyed state is kept by
//! the job's state backend (heap or RocksDB) and its types may evolve
//! between savepoints: a field added as `Option<_>` or with
//! `#[serde(default)]` restores; a real change is refused at submission,
//! naming the state and both types.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use weir::prelude::*;
//!
//! #[derive(Clone, Serialize, Deserialize)]
//! struct Purchase { customer: String, amount: i64 }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Points { customer: String, total: i64 }
//!
//! /// Reward points per customer, kept in keyed state.
//! #[derive(Clone, Default)]
//! struct Rewards { total: Option<ValueState<i64>> }
//!
//! impl KeyedProcessFunction for Rewards {
//!     type Key = String;
//!     type In = Purchase;
//!     type Out = Points;
//!     fn open(&mut self, states: &mut States) {
//!         self.total = Some(states.value("total"));
//!     }
//!     fn process_element(&mut self, p: Purchase, ctx: &mut Context<'_, String, Points>) -> weir::Result {
//!         let total = self.total.as_ref().expect("opened");
//!         let sum = total.value(ctx)?.unwrap_or(0) + p.amount;
//!         total.update(ctx, &sum)?;
//!         ctx.collect(Points { customer: p.customer, total: sum });
//!         Ok(())
//!     }
//! }
//!
//! let env = StreamEnvironment::new("rewards");
//! env.from_values("purchases", vec![Purchase { customer: "ann".into(), amount: 12 }])
//!     .key_by(|p: &Purchase| p.customer.clone())
//!     .process("rewards", Rewards::default())
//!     .sink("out", Sink::discard());
//! assert!(env.graph().is_ok());
//! ```

mod app;
mod bench;
mod connectors;
mod env;
mod evolution;
mod functions;
mod ops;
mod record;
mod state;
mod stream;

pub use app::{Application, BuildJob};
pub use connectors::{KafkaSink, KafkaSource, Sink, Source, StartFrom};
pub use env::StreamEnvironment;
pub use functions::{
    AggregateFunction, Context, Key, KeyedCoProcessFunction, KeyedProcessFunction, OutputTag, Result, TimeDomain,
    UserError,
};
pub use ops::window::Windowed;
pub use record::{fields_of, Record, KEY, TIMESTAMP};
pub use state::{KeyedScope, KeyedStore, ListState, MapState, StateResult, StateValue, States, Ttl, ValueState};
pub use stream::{
    ConnectedStreams, DataStream, EventTimeWindows, KeyedConnectedStreams, KeyedStream, WatermarkStrategy,
    WindowedStream,
};
pub use weir_cli::{JobArgs, JobStatus, LocalCluster};
pub use weir_runtime::checkpointing::{BackendKind, CheckpointConfig, RestartStrategy};
pub use weir_runtime::graph::JobGraph;
pub use weir_runtime::operators::Registry;
pub use weir_runtime::plan::Plan;

/// What a job's code usually needs, in one import.
pub mod prelude {
    pub use crate::{
        AggregateFunction, Application, CheckpointConfig, Context, DataStream, EventTimeWindows, KafkaSink,
        KafkaSource, KeyedCoProcessFunction, KeyedProcessFunction, KeyedStream, ListState, MapState, OutputTag, Sink,
        Source, StartFrom, States, StreamEnvironment, TimeDomain, Ttl, ValueState, WatermarkStrategy, Windowed,
    };
}

impl Application {
    /// The stock `weir` binary: the built-in operators, the connectors, and
    /// the typed W2 benchmark workload (`weir bench w2-typed`).
    pub fn stock() -> Self {
        Self::new("weir").workload("w2-typed", "tumble-typed", bench::w2_typed, bench::w2_expected)
    }
}
