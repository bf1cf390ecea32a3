//! The purchase topology as a Weir application: one binary that runs as
//! job manager, task manager, submitter or embedded runner.
//!
//! Purchases arrive as JSON on `transactions`. Each is masked (the card
//! number keeps its last four digits) and then goes three ways:
//!
//! - its item, zip code and date to `patterns`;
//! - per customer, the points of this purchase and all points so far, from
//!   keyed state kept across checkpoints, to `rewards`;
//! - the whole masked purchase to `purchases`.
//!
//! All three sinks are exactly-once (Kafka transactions committed with
//! checkpoints). Topics and brokers are job arguments:
//!
//! ```text
//! purchase-topology run purchases -m http://jobmanager:6123 \
//!     --arg bootstrap=kafka:9092 --arg input=transactions
//! ```

mod topology;

fn main() -> std::process::ExitCode {
    weir::Application::new("purchase-topology").job("purchases", topology::build).main()
}
