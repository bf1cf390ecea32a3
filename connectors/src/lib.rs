//! Connectors: operators that read from and write to external systems, one
//! module per system. A process that links them adds their kinds to the
//! registry it builds ([`register`]); like every operator they see only
//! their configuration, Arrow batches and the state API — never gRPC,
//! object stores or the cluster's config files.
//!
//! - [`kafka`]: `kafka_source` (partition offsets in checkpoints, rewound on
//!   restore) and `kafka_sink` (at-least-once, or exactly-once through
//!   Kafka transactions tied to checkpoints).
//! - [`files`]: `file_sink` (rolling JSON-lines, CSV or Parquet part files
//!   on local disk or S3-compatible storage, partitioned into directories,
//!   committed exactly once with checkpoints).
//! - [`jdbc`]: `jdbc_sink` (MySQL, MariaDB, PostgreSQL: upserts, deletes or
//!   appends; at-least-once, or exactly-once through database transactions
//!   committed with checkpoints).
//! - [`mongo`]: `mongodb_sink` (documents replaced by an `_id` made of key
//!   columns, deleted for retractions, or inserted; flushed at every
//!   barrier).
//! - [`elasticsearch`]: `elasticsearch_sink` (Elasticsearch or OpenSearch
//!   bulk API: documents indexed under ids from key columns, deleted for
//!   retractions; refused ones dead-lettered; flushed at every barrier).

use weir_runtime::operators::registry::DuplicateKind;
use weir_runtime::operators::Registry;

pub mod blocking;
mod changes;
mod delivery;
pub mod elasticsearch;
pub mod files;
pub mod jdbc;
pub mod kafka;
pub mod mongo;
mod secret;

pub use delivery::Delivery;

/// Adds every connector's operator kinds (`kafka_source`, `kafka_sink`,
/// `jdbc_sink`, `mongodb_sink`, `elasticsearch_sink`, `file_sink`) to `registry`.
pub fn register(registry: &mut Registry) -> Result<(), DuplicateKind> {
    registry
        .register(kafka::source::KafkaSourceFactory)?
        .register(kafka::sink::KafkaSinkFactory)?
        .register(jdbc::JdbcSinkFactory)?
        .register(mongo::MongoSinkFactory)?
        .register(elasticsearch::ElasticsearchSinkFactory)?
        .register(files::FileSinkFactory)?
        .register(files::FileSourceFactory)?;
    Ok(())
}

/// The built-in operators and every connector: what the stock binaries run.
pub fn registry() -> Registry {
    let mut r = Registry::builtins();
    register(&mut r).expect("connector kinds differ from the built-in ones");
    r
}

#[cfg(test)]
mod tests {
    /// Every example job in `jobs/` (the Kafka ones among them) plans: the
    /// files stay in step with the operators they name.
    #[test]
    fn every_example_job_plans() {
        let registry = super::registry();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let graph =
                    weir_runtime::spec::parse_job_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                weir_runtime::plan::Plan::new(&graph, &registry, 1)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 8, "found only {n} job files in {}", dir.display());
    }
}
