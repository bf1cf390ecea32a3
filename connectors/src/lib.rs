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

#[cfg(test)]
mod tests {
    /// Every example job in `jobs/` (the Kafka ones among them) plans: the
    /// files stay in step with the operators they name.
    #[test]
    fn every_example_job_plans() {
        super::install();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let graph =
                    weir_runtime::spec::parse_job_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                weir_runtime::graph::Plan::new(&graph, 1).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 8, "found only {n} job files in {}", dir.display());
    }
}
