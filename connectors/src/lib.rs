//! Connectors: operators that read from and write to external systems, one
//! module per system. They plug into the runtime's operator registry
//! ([`install`]) and, like every operator, see only their configuration,
//! Arrow batches and the state API — never gRPC, object stores or the
//! cluster's config files.
//!
//! - [`kafka`]: `kafka_source` (partition offsets in checkpoints, rewound on
//!   restore) and `kafka_sink` (at-least-once, or exactly-once through
//!   Kafka transactions tied to checkpoints).

use weir_runtime::operators::OperatorFactory;

pub mod failpoint;
pub mod kafka;

/// The operator factories of every connector.
pub static FACTORIES: &[&dyn OperatorFactory] = &[&kafka::source::KafkaSourceFactory, &kafka::sink::KafkaSinkFactory];

/// Adds the connectors to the runtime's operator registry. Every process
/// that plans or runs jobs (job manager, task manager, CLI) calls it once at
/// start; later calls do nothing.
pub fn install() {
    weir_runtime::operators::registry::install(FACTORIES);
}
